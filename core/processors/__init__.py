"""Community samplers that transformers does not ship, as ``transformers.LogitsProcessor`` subclasses: DRY, XTC,
top-nσ, Mirostat v2, dynamic temperature, the smoothing factor (quadratic sampling), tail-free sampling, top-a,
adaptive-P and OpenAI's presence / frequency penalties. Each works on its own in
``model.generate(logits_processor=LogitsProcessorList([...]))``.

Public face:
- ``FIELDS``: every new ``GenerationConfig`` field -> its default. ``None`` means unset / off for the fields that
  switch a sampler on (``dry_multiplier``, ``xtc_probability``, ``top_n_sigma``, ``mirostat_tau``,
  ``dynatemp_low`` / ``dynatemp_high``, ``smoothing_factor``, ``tfs``, ``top_a``, ``adaptive_target``,
  ``presence_penalty``, ``frequency_penalty``); the others carry defaults.
  transformers keeps unknown keyword arguments as attributes: ``GenerationConfig(dry_multiplier=0.8)`` works.
- ``RANGES``: field -> ``Range(allowed, test)``, the shape of ``core.config.Range``, for ``core.config``'s table.
- ``validate(generation_config)``: the house ``ValueError`` for the first community field out of range, or
  inconsistent with another (``dynatemp_low`` > ``dynatemp_high``; ``adaptive_target`` with ``mirostat_tau``).
- ``community_processors(generation_config, *, tokenizer=None, generator=None, prompt_length=0)``: the active
  processors, in ``ORDER``. ``tokenizer`` maps DRY's sequence breakers and XTC's newline to token ids;
  ``generator`` is XTC's only source of randomness; ``prompt_length`` is where the generated tokens start in
  ``input_ids``, for the presence / frequency penalties (``core`` passes the prompt's ``input_ids.shape[1]``).
- ``STAGES``: stage name -> ``Stage`` (builder, fields, ranges); each module registers its builder
  ``build(generation_config, *, tokenizer=None, generator=None, prompt_length=0) -> LogitsProcessor | None``
  (None when its switch field is unset / off). Adding a sampler: one module + one entry in ``ORDER``.

The default order, ``ORDER``:
1. ``penalties`` and 2. ``dry``: additive penalties on the raw logits, where transformers puts its repetition
   penalties (they commute with each other: each subtracts from a token's own logit);
3. ``dynatemp``: a temperature, and as transformers puts ``temperature`` before its truncations (top-k, top-p,
   min-p), before the truncations here; it takes the place of ``temperature``;
4. ``smoothing``: a reshaping of the logits like a temperature, after it (text-generation-webui's order:
   temperature, dynamic temperature, quadratic sampling, then the truncations);
5. ``top_n_sigma``: a truncation on logits; it is invariant to a temperature, so it may equally come before 3;
6. ``tfs`` and ``top_a``: truncations on the probabilities, beside transformers' top-p / min-p (``core.chain``
   ranks them with those, after them), in text-generation-webui's order;
7. ``xtc``: after the truncations that remove the tail, since it works on the probabilities of the tokens
   still in play;
8. ``mirostat``: last, because it is a truncation sampler that replaces top-k / top-p and its ``mu`` update
   assumes the token is drawn from exactly the distribution it returns;
9. ``adaptive_p``: last for the same reason (its average is updated with the probability the chosen token had
   before its transform, and the token must be drawn from what it returns); it and ``mirostat`` exclude each
   other, as in llama.cpp.
llama.cpp's default chain (``common_params_sampling::samplers``) is penalties, DRY, top-nσ, top-k, typical-p,
top-p, min-p, XTC, temperature: the same except that its temperature comes last, so there XTC's threshold sees
the probabilities before the (dynamic) temperature; here it sees them after, as transformers' top-p does.
"""

from __future__ import annotations

import importlib
from typing import Any

from transformers import LogitsProcessor

from .base import STAGES, Range, Stage, fail, read_field, register
from .dry import DRYLogitsProcessor
from .dynatemp import DynamicTemperatureLogitsProcessor
from .mirostat import MirostatLogitsProcessor
from .penalties import PresenceFrequencyPenaltyLogitsProcessor
from .adaptive_p import AdaptivePLogitsProcessor
from .smoothing import SmoothingFactorLogitsProcessor
from .tfs import TailFreeLogitsProcessor
from .top_a import TopALogitsProcessor
from .top_n_sigma import TopNSigmaLogitsProcessor
from .xtc import XTCLogitsProcessor

ORDER: tuple[str, ...] = ("penalties", "dry", "dynatemp", "smoothing", "top_n_sigma", "tfs", "top_a", "xtc",
                          "mirostat", "adaptive_p")

for _name in ORDER:  # each module registers its stage on import
    importlib.import_module(f"{__name__}.{_name}")

FIELDS: dict[str, Any] = {name: default for stage in ORDER for name, default in STAGES[stage].fields.items()}
RANGES: dict[str, Range] = {name: rng for stage in ORDER for name, rng in STAGES[stage].ranges.items()}


def validate(generation_config) -> None:
    """Raise a ``ValueError`` naming the first community field of ``generation_config`` that is out of range."""
    for name, rng in RANGES.items():
        value = read_field(generation_config, name)
        if value is not None and not rng.test(value):
            fail(name, rng.allowed, value)
    for stage in ORDER:
        if STAGES[stage].rule is not None:
            STAGES[stage].rule(generation_config)


def community_processors(generation_config, *, tokenizer=None, generator=None,
                         prompt_length: int = 0) -> list[LogitsProcessor]:
    """The community processors ``generation_config`` switches on, in ``ORDER``, each with its stage name as
    ``stage``."""
    out = []
    for stage in ORDER:
        proc = STAGES[stage].build(generation_config, tokenizer=tokenizer, generator=generator,
                                   prompt_length=prompt_length)
        if proc is not None:
            proc.stage = stage  # its name in a sampler chain (``core.chain``)
            out.append(proc)
    return out


__all__ = [
    "FIELDS", "RANGES", "ORDER", "STAGES", "Stage", "Range", "register", "validate", "community_processors",
    "DRYLogitsProcessor", "XTCLogitsProcessor", "TopNSigmaLogitsProcessor", "MirostatLogitsProcessor",
    "DynamicTemperatureLogitsProcessor", "PresenceFrequencyPenaltyLogitsProcessor", "SmoothingFactorLogitsProcessor",
    "TailFreeLogitsProcessor", "TopALogitsProcessor", "AdaptivePLogitsProcessor",
]
