"""The strategy registry: each module registers its entry function under the transformers
``GenerationMode`` it implements, and ``core.loop`` looks the function up by the mode the
``GenerationConfig`` selects (``GenerationConfig.get_generation_mode``), as transformers'
``GENERATION_MODES_MAPPING`` does.

Every entry function has the signature of transformers' decoding methods plus a ``ctx``:
``fn(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs)``
and returns the sequences tensor, laid out as ``model.generate`` returns it.

What the shared plumbing must know of a strategy travels with its registration (``register(..., family="beam")``),
so adding one is one new module plus its line in the imports at the bottom of this file. Every module is imported
unconditionally: a missing or broken one fails ``import core`` at once instead of leaving a mode without a loop.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Strategy:
    """One registered decoding loop and what ``core.loop`` and ``core.config`` read of it."""

    run: Callable
    # "beam": its rows are beams (``num_return_sequences`` <= ``num_beams``; a streamer gets the best row only);
    # None: each row is a sequence of its own
    family: str | None = None


STRATEGIES: dict[str, Strategy] = {}


def register(*modes: str, family: str | None = None) -> Callable[[Callable], Callable]:
    """Register ``fn`` as the decoding loop for each of ``modes`` (``GenerationMode`` values), in ``family``."""

    def wrap(fn: Callable) -> Callable:
        for mode in modes:
            STRATEGIES[_key(mode)] = Strategy(fn, family)
        return fn

    return wrap


def get_strategy(mode: str) -> Callable:
    """The decoding loop registered for ``mode``."""
    try:
        return STRATEGIES[_key(mode)].run
    except KeyError:
        raise ValueError(f"generation mode {mode!r} has no implementation; known: {sorted(STRATEGIES)}") from None


def family_of(mode: str) -> str | None:
    """The family ``mode``'s strategy registered with (None for a mode with no strategy, e.g. before dispatch)."""
    strategy = STRATEGIES.get(_key(mode))
    return strategy.family if strategy is not None else None


def _key(mode) -> str:
    """``GenerationMode`` members and plain strings map to the same key ("greedy_search", ...)."""
    return getattr(mode, "value", mode)


# Each module registers itself on import; adding a strategy: one file + one name here.
_MODULES = ("sample", "beam", "group_beam", "constrained_beam", "contrastive", "dola", "assisted")
for _name in _MODULES:
    importlib.import_module(f"{__name__}.{_name}")
