"""Adaptive-P: favour the tokens whose probability is near a target, steering the target so that the chosen
tokens' probabilities average to it."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, between, check, fail, read_field, register

FIELDS = {"adaptive_target": None, "adaptive_decay": 0.9}
RANGES = {
    "adaptive_target": Range("in [0, 1] (the probability the chosen tokens should average, e.g. 0.5)",
                             between(0, 1)),
    "adaptive_decay": Range("in [0, 0.99] (how slowly the average forgets, e.g. 0.9)", between(0, 0.99)),
}

# llama.cpp's constants of the transform (float32 there, so float32 here: the same arithmetic gives the same logits)
DISTRIBUTION_WIDTH = 0.3
PEAK_LOGIT_VALUE = 5.0
SHARPNESS = 10.0


class AdaptivePLogitsProcessor(LogitsProcessor):
    """Adaptive-P (MrJackSpade, llama.cpp PR #17927: ``llama_sampler_adaptive_p_apply`` and ``_accept`` in
    ``src/llama-sampler.cpp``; also in koboldcpp), computed as llama.cpp computes it, in float32.

    Each row keeps an exponential moving average of the probabilities its chosen tokens had before this
    transform: ``weighted_sum`` and ``total_weight``, primed as if the target had already been met
    (``adaptive_target / (1 - adaptive_decay)`` and ``1 / (1 - adaptive_decay)``). A call:
    1. (not on the first call) the token chosen at the previous step is ``input_ids[:, -1]``; with ``q`` its
       probability under that step's input distribution, ``weighted_sum = q + decay * weighted_sum`` and
       ``total_weight = 1 + decay * total_weight`` (llama.cpp's ``accept``);
    2. ``p = softmax(scores)``, kept for 1. at the next call;
    3. the adapted target ``clamp(2 * adaptive_target - weighted_sum / total_weight, 0, 1)``: when recent choices
       were more probable than the target it aims lower, and the other way round;
    4. every finite logit becomes ``5 - 10 * x**2 / (1 + x)`` with ``x = |p - adapted| / 0.3``: a peak at the
       tokens whose probability is nearest the adapted target, quadratic near it and linear far from it, so the
       choice goes to tokens of about that probability whatever their rank. -inf logits stay -inf (llama.cpp
       skips them too: tokens an earlier truncation removed stay removed).
    The caller draws from what is returned, as llama.cpp's own draw ends its ``apply``.

    It chooses the token, like Mirostat: it must be the last sampler of the chain, since a processor after it
    would change the distribution the token is drawn from but not the one the average is updated with (llama.cpp
    always appends it at the chain's end in place of its ``dist`` sampler, and runs either it or Mirostat).

    State is per instance and per row: use a new processor per generation, or call ``reset()``. A call whose
    batch size differs from the previous call's, or whose sequence is not one token longer, raises a
    ``ValueError`` (sampling or greedy decoding; not beam search, which reorders rows).

    Shapes: ``input_ids`` [B, S], ``scores`` [B, V] -> [B, V]; state ``weighted_sum``, ``total_weight`` [B] and
    the last input probabilities [B, V].
    """

    def __init__(self, adaptive_target: float, adaptive_decay: float = 0.9):
        check(RANGES, adaptive_target=adaptive_target, adaptive_decay=adaptive_decay)
        self.target = float(adaptive_target)
        self.decay = float(adaptive_decay)
        self.reset()

    def reset(self) -> None:
        """Forget the generation: the next call starts again from the primed average."""
        self.weighted_sum: torch.Tensor | None = None  # [B] float32
        self.total_weight: torch.Tensor | None = None  # [B] float32
        self.adapted_target: torch.Tensor | None = None  # [B] float32, the last call's
        self._original_probs: torch.Tensor | None = None  # [B, V]
        self._length: int | None = None

    def _f32(self, value: float, device) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        batch, length = input_ids.shape
        device = scores.device
        decay = self._f32(self.decay, device)
        if self.weighted_sum is None:
            self.weighted_sum = (self._f32(self.target, device) / (1 - decay)).expand(batch).clone()
            self.total_weight = (1 / (1 - decay)).expand(batch).clone()
        else:
            if batch != self.weighted_sum.shape[0] or length != self._length + 1:
                raise ValueError(
                    f"`input_ids` must continue the previous call's sequences by one token "
                    f"({self.weighted_sum.shape[0]} rows of {self._length + 1} tokens) for an "
                    f"AdaptivePLogitsProcessor, which keeps per-row state for one generation; got shape "
                    f"{tuple(input_ids.shape)} (call reset() or build a new processor)")
            # 1. the average takes in the chosen token's probability before the last transform
            chosen = self._original_probs.gather(-1, input_ids[:, -1:].to(device)).squeeze(-1)  # [B]
            self.weighted_sum = chosen + decay * self.weighted_sum
            self.total_weight = 1 + decay * self.total_weight

        probs = scores.softmax(-1)  # [B, V]  2.
        target = self._f32(min(max(self.target, 0.0), 1.0), device)
        adapted = (2 * target - self.weighted_sum / self.total_weight).clamp(0, 1)  # [B]  3.
        inv_width = 1 / self._f32(DISTRIBUTION_WIDTH, device)
        dist = ((probs - adapted[:, None]) * inv_width).abs()  # [B, V]  4.
        logits = self._f32(PEAK_LOGIT_VALUE, device) - self._f32(SHARPNESS, device) * dist * dist / (1 + dist)
        self._original_probs = probs
        self.adapted_target = adapted
        self._length = length
        return torch.where(scores == float("-inf"), scores, logits)


def _rule(generation_config) -> None:
    target, tau = read_field(generation_config, "adaptive_target"), read_field(generation_config, "mirostat_tau")
    if target is not None and tau is not None:
        fail("adaptive_target", "unset when `mirostat_tau` is set (each chooses the token from the distribution it "
             "returns, so each must come last; llama.cpp runs one or the other)", target)


@register("adaptive_p", fields=FIELDS, ranges=RANGES, rule=_rule)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    target = read_field(generation_config, "adaptive_target")
    if target is None:
        return None
    return AdaptivePLogitsProcessor(target, read_field(generation_config, "adaptive_decay", FIELDS["adaptive_decay"]))
