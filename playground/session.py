"""What one visitor owns, and how it is freed.

A session (Gradio's ``session_hash``, one per open page or API client) owns:
- its runs: one ``gr.State`` per tab, made with ``state()`` (a time-to-live, so that Gradio tracks and expires it);
- its files (trace downloads, saved configs): a folder of its own, ``folder(request)``, inside Gradio's cache
  folder, so that Gradio serves them as they are, without a copy in its cache.

When the session ends (Gradio's unload event: its page or client closed and the heartbeat stopped), ``end``
removes the folder and drops the session's states and Gradio's bookkeeping of it at once, rather than an hour
later. A session whose unload never comes is swept: its states expire ``TTL_S`` seconds after their last update,
and ``sweep`` removes folders untouched for as long. Nothing here is shared between sessions.

Freed is not yet returned: glibc keeps the heap a run's tensors and records used, long after their Python objects
are gone (bench/bench_load.py prints the server's RSS growth; the README quotes its latest run), so
``trim_heap`` hands it back to the system after each generation and when a session ends.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from core.heap import trim_heap

TTL_ENV = "PLAYGROUND_SESSION_TTL"
DEFAULT_TTL_S = 3600.0
ROOT_NAME = "decoding-playground-sessions"


def ttl_s() -> float:
    """``PLAYGROUND_SESSION_TTL``: seconds a session's data outlives its last use when no unload comes."""
    raw = os.environ.get(TTL_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TTL_ENV} must be a number of seconds > 0; got {raw!r}")
    return value


def state(value: Any = None) -> gr.State:
    """A per-session ``gr.State`` Gradio expires ``ttl_s()`` after its last update (and ``end`` drops at once)."""
    return gr.State(value, time_to_live=ttl_s())


def root() -> Path:
    """Where every session's folder lives: inside Gradio's cache folder, which Gradio serves files from."""
    return Path(get_upload_folder()) / ROOT_NAME


def _key(request: gr.Request | None) -> str:
    """The session's folder name: its hash, kept to safe characters ("local" outside a request, e.g. in tests)."""
    session = getattr(request, "session_hash", None) or "local"
    return re.sub(r"[^A-Za-z0-9_-]", "_", session)[:64] or "local"


def folder(request: gr.Request | None) -> Path:
    """The session's own folder (created on first use)."""
    path = root() / _key(request)
    path.mkdir(parents=True, exist_ok=True)
    return path


def end(demo: gr.Blocks, request: gr.Request) -> None:
    """The session ended: remove its folder, drop its states and Gradio's record of it. Also sweeps folders of
    sessions whose end never came."""
    shutil.rmtree(root() / _key(request), ignore_errors=True)
    holder = getattr(demo, "state_holder", None)
    session = getattr(request, "session_hash", None)
    if holder is not None and session in holder:
        holder.delete_state(session)  # runs every state's delete_callback, frees its value
        with holder.lock:
            holder.session_data.pop(session, None)  # Gradio keeps a copy of the app's config per session
            holder.time_last_used.pop(session, None)
    sweep()
    trim_heap()


def sweep(max_age_s: float | None = None) -> int:
    """Remove session folders nobody touched for ``max_age_s`` (default ``ttl_s()``); returns how many."""
    limit = ttl_s() if max_age_s is None else max_age_s
    now, removed = time.time(), 0
    for path in root().iterdir() if root().is_dir() else ():
        try:
            newest = max([path.stat().st_mtime] + [f.stat().st_mtime for f in path.iterdir()])
        except OSError:
            continue
        if now - newest > limit:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


