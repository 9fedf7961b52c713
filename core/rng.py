"""Randomness per run.

Every draw the core makes itself (multinomial sampling, beam sampling, prompt-lookup verification) takes the
run's ``torch.Generator``, so concurrent runs in one process never disturb each other's seeds. A CPU generator
seeded with ``s`` draws exactly what ``torch.manual_seed(s)`` makes the default generator draw, so a seeded run
keeps token parity with transformers' seeded ``generate``.

Some draws happen inside transformers' own code, which always uses the default (global) generator: the
assistant model's ``generate`` and ``_speculative_sampling`` in assisted sampling with a draft model (also the
universal kind). Those runs are isolated another way: ``global_generator`` lends the run's generator state to the
global generator under a process-wide lock, and takes the advanced state back afterwards. Only one such run
holds the global generator at a time; the others wait for it, never longer than their timeout.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

_GLOBAL = threading.Lock()  # held while a run lends its state to torch's default CPU generator
_LENDING: ContextVar[bool] = ContextVar("lending", default=False)  # the calling run holds ``_GLOBAL`` now
DEFAULT_WAIT_S = 300.0  # how long a run waits for the global generator when its caller sets no deadline


def lending() -> bool:
    """Whether the calling run holds torch's default generator now (inside ``global_generator``): a run that holds it
    must not hand its turn to another run of the same thread (``core.engine.loop``), which could wait for it."""
    return _LENDING.get()


def new_generator(seed: int | None = None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a fresh random seed when ``None``; ``generator.initial_seed()``
    tells which, so an unseeded run can be replayed)."""
    seed = secrets.randbits(63) if seed is None else int(seed)
    return torch.Generator().manual_seed(seed)


def _listed(generator) -> list[torch.Generator]:
    return list(generator) if isinstance(generator, (list, tuple)) else [generator]


def states(generator) -> list[torch.Tensor] | None:
    """The state of a run's generator, or of each of its per-row generators (a list of them); None without one. A
    generator does not cross to another process (the engine's, ZeroGPU's GPU worker); its state does."""
    if generator is None:
        return None
    return [g.get_state() for g in _listed(generator)]


def rebuilt(generator_states: list[torch.Tensor] | None, many: bool):
    """CPU generators at ``generator_states`` (``states``' answer): a list of them when the run had one per row
    (``many``), else one; None without states."""
    if generator_states is None:
        return None
    generators = [torch.Generator().set_state(state) for state in generator_states]
    return generators if many else generators[0]


def restore(generator, generator_states: list[torch.Tensor] | None) -> None:
    """Set on the caller's ``generator`` (or per-row generators) the states its copies reached elsewhere, so a run that
    resumes (step mode) draws on from there. Nothing without either."""
    if generator is None or generator_states is None:
        return
    for own, state in zip(_listed(generator), generator_states):
        own.set_state(state)


@contextmanager
def global_generator(generator: torch.Generator | None, timeout: float | None = None) -> Iterator[None]:
    """Inside, torch's default CPU generator draws what ``generator`` would, and nobody else's run touches it;
    on exit ``generator`` holds the advanced state and the default generator its state from before. With
    ``generator=None`` the run simply draws from the default generator (unseeded, as transformers does).
    Raises ``TimeoutError`` when another run holds the default generator for longer than ``timeout`` seconds."""
    if generator is None:
        yield
        return
    if not _GLOBAL.acquire(timeout=DEFAULT_WAIT_S if timeout is None else max(timeout, 0.0)):
        raise TimeoutError("another run is using torch's global random generator (assisted sampling with a draft "
                           "model draws from it); try again in a moment")
    lending = _LENDING.set(True)
    try:
        saved = torch.random.get_rng_state()
        torch.random.set_rng_state(generator.get_state())
        try:
            yield
        finally:
            generator.set_state(torch.random.get_rng_state())
            torch.random.set_rng_state(saved)
    finally:
        _LENDING.reset(lending)
        _GLOBAL.release()
