"""Compiled kernels a KV-cache backend needs: built or loaded once, in the background, and never waited on for ever.

optimum-quanto's quantized cache unpacks its 2/4-bit values with a small C++ extension (``quanto_cpp``; on CUDA
also ``quanto_cuda``) that ``torch.utils.cpp_extension.load`` compiles on first use inside quanto's package folder.
torch guards that build folder with a lock file and waits, with no end, while the file exists; a process killed
during the build leaves it behind, and from then on every quanto-cache generation waited for ever.

So, in order:
1. ``warm_up()`` (the app calls it at start-up) builds or loads the kernels in a daemon thread, so the first
   quanto-cache click is not slow;
2. while it runs, a lock file that no live process is building behind (no process works in the build folder, and
   the file is older than ``FRESH_LOCK_S``), or that is older than ``STALE_LOCK_S`` whatever the processes, is
   removed: torch's waiting loop then ends, and the build is tried again once;
3. ``require()`` (the config validation calls it for a quanto cache) returns at once when the kernels are ready. A
   build ``warm_up`` started is never waited for: the caller gets a ``ValueError`` that says what is going on (still
   building, or failed). Without a warm-up (library use) the first caller starts the build and waits for it, at
   most ``WAIT_S`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FRESH_LOCK_S = 10.0  # a lock this young may belong to a build that has not started its compiler yet
STALE_LOCK_S = 600.0  # no build of these kernels takes this long: older locks are removed whatever the processes
POLL_S = 0.5
WAIT_S = 300.0  # how long a library call waits for a build it started itself

log = logging.getLogger(__name__)


def builders_in(folder: Path) -> list[int]:
    """Process ids working in ``folder`` (torch runs ninja and the compiler there while it builds). Linux /proc."""
    pids = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == folder:
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def stale(lock: Path, now: float | None = None) -> bool:
    """Is ``lock`` left behind: older than ``STALE_LOCK_S``, or past ``FRESH_LOCK_S`` with nobody building?"""
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_LOCK_S or (age > FRESH_LOCK_S and not builders_in(lock.parent.resolve()))


def clear_stale_lock(build_directory: Path) -> bool:
    """Remove the build folder's lock file if it is stale; True when one was removed."""
    lock = Path(build_directory) / "lock"
    if stale(lock):
        try:
            lock.unlink()
            return True
        except FileNotFoundError:  # its owner finished meanwhile
            return False
    return False


@dataclass
class Kernel:
    """One backend's extensions and where their build stands: "idle", "building", "ready" or "failed"."""

    backend: str
    state: str = "idle"
    error: str = ""
    started: float = 0.0
    recovered: int = 0  # stale lock files removed
    background: bool = False  # started by warm_up: callers get an answer at once instead of waiting
    done: threading.Event = field(default_factory=threading.Event)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def extensions(self) -> list:
        """The quanto extensions this machine uses (``Extension`` objects with ``.lib`` and ``.build_directory``)."""
        import torch
        from optimum.quanto.library.extensions import get_extension, is_extension_available

        names = ["quanto_cpp"] + (["quanto_cuda"] if torch.cuda.is_available() else [])
        return [get_extension(n) for n in names if is_extension_available(n)]

    def start(self, background: bool = False) -> None:
        """Build or load in a daemon thread (once; again after a failure)."""
        with self._guard:
            if self.state in ("building", "ready"):
                return
            self.state, self.error, self.started = "building", "", time.monotonic()
            self.background = background
            self.done.clear()
        threading.Thread(target=self._build, name=f"kernels-{self.backend}", daemon=True).start()

    def _build(self) -> None:
        try:
            for ext in self.extensions():
                self._load(ext)
            self.state = "ready"
        except Exception as err:  # noqa: BLE001 - reported by require(); the details (paths) go to the log only
            log.error("building the %s kernels failed: %s", self.backend, err)
            self.state, self.error = "failed", type(err).__name__
        finally:
            self.done.set()

    def _load(self, ext) -> None:
        """``ext.lib`` in a thread of its own, watched: a stale lock it waits on is removed, and the load is tried
        once more if it failed after that."""
        build = Path(ext.build_directory)
        for attempt in range(2):
            if clear_stale_lock(build):
                self._recovered()
            result: dict = {}

            def load():
                try:
                    result["lib"] = ext.lib
                except Exception as err:  # noqa: BLE001 - re-raised below
                    result["error"] = err

            loader = threading.Thread(target=load, daemon=True)
            loader.start()
            cleared = False
            while loader.is_alive():
                loader.join(POLL_S)
                if clear_stale_lock(build):  # torch is waiting on a lock nobody will release
                    self._recovered()
                    cleared = True
            if "error" not in result:
                return
            if not cleared or attempt:
                raise result["error"]

    def _recovered(self) -> None:
        self.recovered += 1
        log.warning("removed a stale build lock of the %s kernels (left by a killed process)", self.backend)


KERNELS = {"quanto": Kernel("quanto")}


def warm_up(backends: tuple[str, ...] = ("quanto",)) -> None:
    """Start building or loading the kernels of ``backends`` whose packages are installed (returns at once)."""
    from transformers.utils import is_optimum_quanto_available

    for name in backends:
        if name == "quanto" and is_optimum_quanto_available():
            KERNELS[name].start(background=True)


def require(backend: str) -> None:
    """Return when ``backend``'s kernels are loaded; raise a ``ValueError`` saying why not otherwise (see the module
    docstring for who waits how long)."""
    kernel = KERNELS.get(backend)
    if kernel is None:
        return
    if kernel.state == "idle":
        kernel.start()
    if kernel.state == "building" and not kernel.background:
        kernel.done.wait(WAIT_S)
    if kernel.state == "ready":
        return
    field_name = 'cache_config["backend"]'
    if kernel.state == "building":
        raise ValueError(f'`{field_name}` "{backend}" is not ready yet: its compiled kernels are being built or '
                         f"loaded ({time.monotonic() - kernel.started:.0f} s so far, usually under a minute); try "
                         'again shortly, or use "hqq" or "fp8" meanwhile')
    if kernel.state == "failed":
        kernel.start(kernel.background)  # try again for the next caller
        raise ValueError(f'`{field_name}` "{backend}" cannot run here: its compiled kernels failed to build '
                         f'({kernel.error}; the server log has the details); use "hqq" or "fp8"')
    raise ValueError(f'`{field_name}` "{backend}" is not ready: its compiled kernels took longer than {WAIT_S:.0f} s '
                     'to build; use "hqq" or "fp8"')
