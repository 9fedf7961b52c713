"""The table of checks that look at several fields at once, at the generation mode or at the model:
``core.config.validate`` runs every one, at the boundary (before ``model.generate``) and again in the dispatch.

Each module registers its own with ``@rule``: a strategy what it cannot run with (``core.strategies.*``),
``core.config`` the rest. The table is a module of its own because ``core.config`` imports the strategies
(``family_of``): a strategy that imported ``core.config`` for the decorator would close the cycle.

Rules run in the order they were registered. ``core.config`` imports the strategies before it registers its own
rules, so a strategy's rules run first: contrastive search's cache rule must speak before ``core.config``
readies a quantized cache's backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from transformers import GenerationConfig

from .processors.base import fail


@dataclass(frozen=True)
class Env:
    """What a rule may look at besides the config."""

    cfg: GenerationConfig
    mode: str
    model: Any

    @property
    def text_config(self):
        return self.model.config.get_text_config(decoder=True)

    @property
    def vocab_size(self) -> int:
        return self.model.config.get_text_config().vocab_size


RULES: list[Callable[[Env], None]] = []


def rule(fn: Callable[[Env], None]) -> Callable[[Env], None]:
    """Register a check of fields that depend on each other, on the mode or on the model."""
    RULES.append(fn)
    return fn


def check(cond: bool, field: str, allowed: str, value) -> None:
    """The house ``ValueError`` ("`field` must be allowed; got value") unless ``cond`` holds."""
    if not cond:
        fail(field, allowed, value)
