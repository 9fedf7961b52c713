"""The strategy registry: each module registers its entry function under the transformers
``GenerationMode`` it implements, and ``core.loop`` looks the function up by the mode the
``GenerationConfig`` selects (``GenerationConfig.get_generation_mode``), as transformers'
``GENERATION_MODES_MAPPING`` does.

Every entry function has the signature of transformers' decoding methods plus a ``ctx``:
``fn(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs)``
and returns the sequences tensor, laid out as ``model.generate`` returns it.
"""

from __future__ import annotations

import importlib
from typing import Callable

STRATEGIES: dict[str, Callable] = {}

# Modules imported on first lookup; each registers itself. Adding a strategy: one file + one line here.
_MODULES = ("sample", "beam", "group_beam", "constrained_beam", "contrastive", "dola", "assisted")


def register(*modes: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the decoding loop for each of ``modes`` (``GenerationMode`` values)."""

    def wrap(fn: Callable) -> Callable:
        for mode in modes:
            STRATEGIES[_key(mode)] = fn
        return fn

    return wrap


def _load_all() -> None:
    for name in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:  # a strategy module not written yet
            if err.name != f"{__name__}.{name}":
                raise


def get_strategy(mode: str) -> Callable:
    # load on a miss, not only when empty: importing one strategy module directly registers just that one
    if _key(mode) not in STRATEGIES:
        _load_all()
    try:
        return STRATEGIES[_key(mode)]
    except KeyError:
        raise ValueError(f"generation mode {mode!r} has no implementation; known: {sorted(STRATEGIES)}") from None


def _key(mode) -> str:
    """``GenerationMode`` members and plain strings map to the same key ("greedy_search", ...)."""
    return getattr(mode, "value", mode)
