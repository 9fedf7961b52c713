"""Nothing waits for ever: the wall-clock cap of a run, a stream whose worker is stuck, and the stale build lock of
optimum-quanto's kernels (a process killed while building left it, and every quanto-cache generation waited)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import core
from core import kernels

ROOT = Path(__file__).resolve().parents[1]
PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])


class SlowStep(torch.nn.Module):
    """A forward hook that sleeps, so that a tiny model's run outlasts a short cap."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def __call__(self, module, args, output):
        time.sleep(self.seconds)


def test_a_run_stops_at_its_wall_clock_cap_with_what_it_has(tiny_model):
    handle = tiny_model.register_forward_hook(SlowStep(0.05))
    try:
        rec = core.ListRecorder()
        out = core.generate(tiny_model, PROMPT, max_new_tokens=200, min_new_tokens=200, do_sample=False,
                            max_seconds=0.5, recorder=rec)
    finally:
        handle.remove()
    assert out.stopped == "time cap" and rec.trace.stopped == "time cap"
    new = out.sequences.shape[1] - PROMPT.shape[1]
    assert 1 <= new < 200 and len(rec.trace.steps) == new  # what it had, recorded


def test_a_beam_run_stops_at_its_cap_with_finished_hypotheses(tiny_model):
    handle = tiny_model.register_forward_hook(SlowStep(0.05))
    try:
        out = core.generate(tiny_model, PROMPT, max_new_tokens=200, min_new_tokens=200, num_beams=3,
                            do_sample=False, max_seconds=0.5, recorder=core.ListRecorder())
    finally:
        handle.remove()
    assert out.stopped == "time cap" and out.trace.steps[-1].best_nodes[0] != -1
    assert out.sequences.shape[1] - PROMPT.shape[1] < 200


def test_cancel_is_told_apart_from_the_cap(tiny_model):
    cancel = threading.Event()
    cancel.set()
    out = core.generate(tiny_model, PROMPT, max_new_tokens=20, do_sample=False, cancel=cancel, max_seconds=60)
    assert out.stopped == "cancelled"
    assert core.generate(tiny_model, PROMPT, max_new_tokens=3, do_sample=False, max_seconds=60).stopped == ""


def test_a_stream_whose_worker_hangs_ends_past_the_cap(tiny_model, monkeypatch):
    """A worker stuck outside the decoding loop (here: a forward that blocks) cannot see the cap; the stream stops
    waiting for it ``GRACE_S`` after the cap and ends with what it has."""
    monkeypatch.setattr(core.loop, "GRACE_S", 0.5)
    release = threading.Event()
    handle = tiny_model.register_forward_hook(lambda *a: release.wait(30))
    started = time.monotonic()
    try:
        events = list(core.stream(tiny_model, PROMPT, max_new_tokens=5, do_sample=False, max_seconds=0.5))
    finally:
        release.set()
        handle.remove()
    assert time.monotonic() - started < 20  # far below the 30 s the forward would block
    assert events[-1].done and events[-1].result is None and events[-1].stopped == "time cap"


# --- quanto's compiled kernels -------------------------------------------------------------------------------


def test_a_lock_nobody_builds_behind_is_stale_and_a_young_or_busy_one_is_not(tmp_path):
    lock = tmp_path / "lock"
    lock.touch()
    assert not kernels.stale(lock)  # too young: its builder may not have started the compiler yet
    old = time.time() - kernels.FRESH_LOCK_S - 5
    os.utime(lock, (old, old))
    assert kernels.stale(lock)
    builder = subprocess.Popen(["sleep", "30"], cwd=tmp_path)  # a process working in the build folder
    try:
        deadline = time.monotonic() + 5
        while not kernels.builders_in(tmp_path.resolve()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert builder.pid in kernels.builders_in(tmp_path.resolve())
        assert not kernels.stale(lock)
        ancient = time.time() - kernels.STALE_LOCK_S - 5
        os.utime(lock, (ancient, ancient))
        assert kernels.stale(lock)  # no build takes this long, whoever is in the folder
    finally:
        builder.kill()
        builder.wait()
    assert kernels.clear_stale_lock(tmp_path) and not lock.exists()
    assert not kernels.clear_stale_lock(tmp_path)


QUANTO_RUN = textwrap.dedent("""
    import sys, time, torch
    sys.path[:0] = [{root!r}, {tests!r}]
    import core
    from conftest import tiny_llama
    from optimum.quanto.library.extensions import get_extension
    get_extension("quanto_cpp").build_directory = {build!r}  # the test's copy: other processes' builds stay apart
    model = tiny_llama(0)
    started = time.monotonic()
    out = core.generate(model, torch.tensor([[1, 5, 9, 13]]), max_new_tokens=4, do_sample=False,
                        cache_implementation="quantized", cache_config={{"backend": "quanto", "nbits": 4,
                                                                          "q_group_size": 16}})
    print("tokens", out.sequences.shape[1] - 4, "recovered", core.kernels.KERNELS["quanto"].recovered,
          "seconds", round(time.monotonic() - started, 1))
""")


@pytest.mark.parametrize("age", ["fresh", "old"])
def test_a_quanto_cache_generation_returns_despite_a_stale_build_lock(age, tmp_path):
    """The issue's reproduction: a killed build left ``build/lock`` in quanto's extension folder. A new process's
    quanto-cache generation must return tokens, having removed the lock, instead of waiting on it for ever. The lock
    is left in a copy of the built folder (the child process builds there), so that the other test processes, which
    load the same kernels, neither wait on it nor remove it first."""
    ext = _quanto_extension()
    _build_once(ext)  # in a process of its own, so that this one has not loaded the kernels
    build = tmp_path / "build"
    shutil.copytree(ext.build_directory, build, ignore=shutil.ignore_patterns("lock"))  # mtimes kept: ninja no-ops
    lock = build / "lock"
    lock.touch()
    if age == "old":
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    try:
        run = subprocess.run([sys.executable, "-c", QUANTO_RUN.format(root=str(ROOT), tests=str(ROOT / "tests"),
                                                                      build=str(build))],
                             capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr[-2000:]
        words = run.stdout.split()
        assert words[:4] == ["tokens", "4", "recovered", "1"], run.stdout
        assert not lock.exists()
    finally:
        lock.unlink(missing_ok=True)


def test_require_answers_at_once_while_a_background_build_runs(monkeypatch):
    """The app warms the kernels up in the background; a request meanwhile gets a clear message, not a wait."""
    kernel = kernels.Kernel("quanto")
    gate = threading.Event()
    monkeypatch.setattr(kernels.Kernel, "extensions", lambda self: [_Blocking(gate)])
    monkeypatch.setitem(kernels.KERNELS, "quanto", kernel)
    kernel.start(background=True)
    started = time.monotonic()
    with pytest.raises(ValueError, match='"quanto" is not ready yet'):
        kernels.require("quanto")
    assert time.monotonic() - started < 1
    gate.set()
    assert kernel.done.wait(10)
    kernels.require("quanto")  # ready: returns


class _Blocking:
    build_directory = "/nonexistent-build-dir"

    def __init__(self, gate: threading.Event):
        self.gate = gate

    @property
    def lib(self):
        self.gate.wait(10)
        return object()


def _quanto_extension():
    from optimum.quanto.library.extensions import get_extension

    return get_extension("quanto_cpp")


def _build_once(ext) -> None:
    """Build (or find built) quanto's CPU kernels in a child process."""
    code = "from optimum.quanto.library.extensions import get_extension; get_extension('quanto_cpp').lib"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, capture_output=True)
