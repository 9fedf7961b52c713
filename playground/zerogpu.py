"""Generation on a Hugging Face ZeroGPU Space; elsewhere nothing changes.

A ZeroGPU Space (``SPACES_ZERO_GPU`` true and the ``spaces`` package importable) holds a GPU only while a function
decorated with ``@spaces.GPU`` runs, in a worker process forked for the call: what goes in and what comes out
crosses by pickling, and the call asks for a number of seconds of GPU time up front. So ``stream`` runs
``core.stream`` inside such a function (``_on_gpu``):

1. the model, its tokenizer and an assistant model are not pickled: they are lent under a key in a process-wide
   table (``_LENT``), which the forked worker inherits, and looked up there;
2. the run's ``torch.Generator`` (not picklable; or one per row, a list) travels as its state and is rebuilt
   inside; its state after the run comes back last (``_Drawn``) and is set on the caller's generator, so a run that
   pauses (step mode) resumes with the draws a run on the CPU would make;
3. the seconds asked for grow with ``max_new_tokens`` (``gpu_seconds``);
4. every event comes back with CPU tensors only (the records are plain Python values already).

Elsewhere ``stream`` is ``core.stream`` itself, and ``on_zerogpu()`` is False: the wrapper is a no-op.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
import uuid
from typing import Any, Iterator

BASE_S = 20  # GPU seconds every call asks for: moving the weights in, the prefill, the figures' records
PER_TOKEN_S = 0.25  # and per new token (a 1-8B model in bfloat16, the logit lens on)
MAX_S = 300  # at most (longer requests wait longer in ZeroGPU's queue)
DEFAULT_TOKENS = 20  # what transformers generates when nothing sets max_new_tokens or max_length

_LENT: dict[str, Any] = {}  # models and tokenizers lent to the GPU worker, by key
_LENT_LOCK = threading.Lock()


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space: ``SPACES_ZERO_GPU`` set as the ``spaces`` package reads it (``spaces.config``: 1, t or
    true, any case), and ``spaces`` installed. ``SPACE_ID`` does not decide: it is set on every Space, and a Space on
    CPU or on a GPU of its own runs every generation here, where runs share each forward (``core.scheduler``)."""
    flag = os.environ.get("SPACES_ZERO_GPU")
    return flag is not None and flag.lower() in ("1", "t", "true") and importlib.util.find_spec("spaces") is not None


if on_zerogpu():  # ZeroGPU asks for spaces to be imported before torch; app.py imports this module first
    import spaces


def gpu_seconds(max_new_tokens: int | None) -> int:
    """The GPU time one generation asks for: ``BASE_S`` plus ``PER_TOKEN_S`` per new token, at most ``MAX_S``."""
    tokens = DEFAULT_TOKENS if max_new_tokens is None else max(int(max_new_tokens), 0)
    return int(min(BASE_S + PER_TOKEN_S * tokens, MAX_S))


@dataclasses.dataclass(frozen=True)
class Lent:
    """Stands in for an object lent to the GPU worker (``_LENT[key]``)."""

    key: str


def _lend(value: Any) -> Any:
    """Models and tokenizers are lent by key; plain values (ids, masks, settings) go as they are."""
    if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)) or _is_tensor(value):
        return value
    key = uuid.uuid4().hex
    with _LENT_LOCK:
        _LENT[key] = value
    return Lent(key)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _borrow(value: Any) -> Any:
    return _LENT[value.key] if isinstance(value, Lent) else value


def _give_back(values: dict) -> None:
    with _LENT_LOCK:
        for value in values.values():
            if isinstance(value, Lent):
                _LENT.pop(value.key, None)


def _on_cpu(event):
    """A ``StreamEvent`` whose result's sequences are on the CPU (its records hold no tensors)."""
    result = event.result
    if result is not None and result.sequences.device.type != "cpu":
        event = dataclasses.replace(event, result=dataclasses.replace(result, sequences=result.sequences.cpu()))
    return event


@dataclasses.dataclass(frozen=True)
class _Drawn:
    """The last item of a GPU call: the states of the run's generators after it (``None`` without one)."""

    states: list | None


def _run(model, input_ids, states: list | None, many: bool, kwargs: dict) -> Iterator:
    """``core.stream`` with lent objects looked up and the generator rebuilt from its state; events on the CPU, then
    the generators' states after the run."""
    import core
    from core import rng

    kwargs = {name: _borrow(value) for name, value in kwargs.items()}
    if states is not None:
        kwargs["generator"] = rng.rebuilt(states, many)
    for event in core.stream(_borrow(model), input_ids, **kwargs):
        yield _on_cpu(event)
    yield _Drawn(rng.states(kwargs.get("generator")))


def _duration(model, input_ids, states, many, kwargs) -> int:
    """ZeroGPU's dynamic duration: called with the GPU function's own arguments."""
    return gpu_seconds(kwargs.get("max_new_tokens"))


# ``_run`` under ``@spaces.GPU``, declared at import: ZeroGPU looks for its GPU functions when the Space starts
_on_gpu = spaces.GPU(duration=_duration)(_run) if on_zerogpu() else None


def stream(model, input_ids, *, shared: bool = False, **kwargs) -> Iterator:
    """``core.stream(model, input_ids, **kwargs)``; on a ZeroGPU Space, inside ``@spaces.GPU`` (see the module).
    ``shared``: the run shares each forward with the process's other runs on the model (``core.scheduler``); a
    ZeroGPU task runs in a worker process of its own, so there it runs alone."""
    import core
    from core import rng, scheduler

    if _on_gpu is None:
        yield from core.stream(model, input_ids, scheduler=scheduler.shared(model) if shared else None, **kwargs)
        return
    generator = kwargs.pop("generator", None)
    states = rng.states(generator)
    lent = {name: _lend(value) for name, value in kwargs.items()}
    lent_model = _lend(model)
    try:
        for item in _on_gpu(lent_model, input_ids.cpu(), states, isinstance(generator, (list, tuple)), lent):
            if isinstance(item, _Drawn):
                rng.restore(generator, item.states)
            else:
                yield item
    finally:
        _give_back({**lent, "model": lent_model})
