"""Top-a: remove the tokens whose probability is below a times the square of the largest probability."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, between, check, read_field, register

FIELDS = {"top_a": None}
RANGES = {"top_a": Range("in [0, 1]", between(0, 1))}


class TopALogitsProcessor(LogitsProcessor):
    """Top-a (BlinkDL, the RWKV-LM "top-a" sampler; text-generation-webui ``TopALogitsWarper`` in
    ``modules/sampler_hijack.py``, which this follows).

    Per row, with ``p = softmax(scores)`` and ``p_max`` its largest value, every token with
    ``p < p_max * p_max * top_a`` is set to -inf. The cut follows the model's confidence: with ``p_max = 0.9`` and
    ``top_a = 0.2`` tokens below 0.162 go, with ``p_max = 0.3`` only those below 0.018 do, so a flat distribution
    keeps many tokens and a peaked one few. The top token always stays (``p_max >= a * p_max**2`` for ``a <= 1``);
    ``top_a = 0`` removes nothing.

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, top_a: float):
        check(RANGES, top_a=top_a)
        self.top_a = float(top_a)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        probs = scores.softmax(-1)  # [B, V]
        p_max = probs.amax(-1, keepdim=True)  # [B, 1]
        return scores.masked_fill(probs < p_max * p_max * self.top_a, float("-inf"))


@register("top_a", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    top_a = read_field(generation_config, "top_a")
    return TopALogitsProcessor(top_a) if top_a else None  # unset or 0: off
