"""What every community sampler module shares: the stage registry, the field ranges and their check.

Each module registers one builder under its stage name with ``@register(name, fields=..., ranges=...)``;
``core.processors`` imports the modules in its ``ORDER`` and collects their fields and ranges.

``Range`` and the value tests (``is_int``, ``is_real``, ``between``) and ``fail`` are the house's one copy:
``core.config`` builds its own table from them and merges these modules' ``RANGES`` into it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional

from transformers import LogitsProcessor

# build(generation_config, *, tokenizer=None, generator=None, prompt_length=0) -> LogitsProcessor | None
Builder = Callable[..., Optional[LogitsProcessor]]


@dataclass(frozen=True)
class Range:
    """The values a field may take when it is set (``None`` is always allowed: unset)."""

    allowed: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class Stage:
    """One community sampler: its builder, its GenerationConfig fields (name -> default) and their ranges."""

    name: str
    build: Builder
    fields: dict[str, Any]
    ranges: dict[str, Range]
    rule: Callable[[Any], None] | None = None  # checks fields that depend on each other


STAGES: dict[str, Stage] = {}


def register(name: str, *, fields: dict[str, Any], ranges: dict[str, Range],
             rule: Callable[[Any], None] | None = None) -> Callable[[Builder], Builder]:
    """Register ``build`` as the builder of stage ``name``."""

    def wrap(build: Builder) -> Builder:
        STAGES[name] = Stage(name, build, fields, ranges, rule)
        return build

    return wrap


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    """Test for a finite number in the interval from lo to hi (closed at each end unless that end is open)."""
    return lambda v: is_real(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)


def fail(field: str, allowed: str, value) -> None:
    raise ValueError(f"`{field}` must be {allowed}; got {value!r}")


def check(ranges: dict[str, Range], **values) -> None:
    """Raise the house ``ValueError`` for the first of ``values`` outside its range in ``ranges``."""
    for field, value in values.items():
        rng = ranges[field]
        if not rng.test(value):
            fail(field, rng.allowed, value)


def read_field(generation_config, name: str, default=None):
    """A community field of ``generation_config``, or ``default`` when unset: transformers keeps unknown
    keyword arguments of ``GenerationConfig(...)`` as attributes, and ``None`` means unset."""
    value = getattr(generation_config, name, None)
    return default if value is None else value
