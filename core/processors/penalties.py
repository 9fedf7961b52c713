"""OpenAI's presence and frequency penalties, counted over the generated tokens only."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, between, check, is_int, read_field, register

FIELDS = {"presence_penalty": None, "frequency_penalty": None}
RANGES = {
    "presence_penalty": Range("in [-2, 2]", between(-2, 2)),
    "frequency_penalty": Range("in [-2, 2]", between(-2, 2)),
}
_PROMPT_LENGTH = {"prompt_length": Range("an integer >= 0", lambda v: is_int(v) and v >= 0)}


class PresenceFrequencyPenaltyLogitsProcessor(LogitsProcessor):
    """Presence and frequency penalties as OpenAI defines them (platform.openai.com/docs/advanced-usage,
    "Frequency and presence penalties"): ``logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty``,
    where ``c[j]`` is how often token ``j`` occurs among the tokens generated so far.

    The count covers the generated tokens only, not the prompt: ``input_ids[:, prompt_length:]``. ``core``
    passes ``prompt_length`` as the length of the (padded) prompt ``input_ids`` that generation starts from.
    Positive values discourage repeats (the frequency term more with every repeat); negative values
    encourage them. Unlike transformers' ``RepetitionPenaltyLogitsProcessor`` the penalty is additive and
    counts the prompt out.

    Shapes: ``input_ids`` [B, S], ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, presence_penalty: float = 0.0, frequency_penalty: float = 0.0, prompt_length: int = 0):
        check(RANGES, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty)
        check(_PROMPT_LENGTH, prompt_length=prompt_length)
        self.presence_penalty = float(presence_penalty)
        self.frequency_penalty = float(frequency_penalty)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        generated = input_ids[:, self.prompt_length:]  # [B, S - prompt_length]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        penalty = counts * self.frequency_penalty + (counts > 0).to(scores.dtype) * self.presence_penalty  # [B, V]
        return scores - penalty


@register("penalties", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    presence = read_field(generation_config, "presence_penalty")
    frequency = read_field(generation_config, "frequency_penalty")
    if not presence and not frequency:  # unset or 0: no penalty
        return None
    return PresenceFrequencyPenaltyLogitsProcessor(presence or 0.0, frequency or 0.0, prompt_length)
