"""Top-nσ: keep the tokens whose logit is within n standard deviations of the largest logit."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, check, is_real, read_field, register

FIELDS = {"top_n_sigma": None}
RANGES = {"top_n_sigma": Range("a number > 0", lambda v: is_real(v) and v > 0)}


class TopNSigmaLogitsProcessor(LogitsProcessor):
    """Top-nσ (Tang et al. 2024, "Top-nσ: Not All Logits Are You Need", arXiv 2411.07641; computed as llama.cpp
    ``llama_sampler_top_n_sigma`` does).

    Keeps the tokens with ``logit >= max(logit) - top_n_sigma * σ`` and sets the others to -inf, where σ is the
    standard deviation of the row's finite logits (population σ, dividing by their count, as llama.cpp does;
    -inf entries, already removed, are left out of the max, the mean and σ). The paper works on the pre-softmax
    logits: it separates a few informative logits from a Gaussian-like noise region. Dividing every logit by a
    temperature divides both the gap to the maximum and σ by it, so the kept set does not depend on the
    temperature (the paper's "temperature invariance"): this processor may sit before or after ``temperature``
    or dynamic temperature with the same result, but not after additive penalties, which do change it.
    A row with all logits equal (σ = 0) keeps all of them; a row with at most one finite logit is unchanged.

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, top_n_sigma: float):
        check(RANGES, top_n_sigma=top_n_sigma)
        self.n = float(top_n_sigma)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        finite = torch.isfinite(scores)  # [B, V]
        count = finite.sum(-1, keepdim=True)  # [B, 1]
        values = torch.where(finite, scores, torch.zeros_like(scores))
        mean = values.sum(-1, keepdim=True) / count.clamp(min=1)  # [B, 1]
        deviation = torch.where(finite, scores - mean, torch.zeros_like(scores))
        sigma = (deviation.square().sum(-1, keepdim=True) / count.clamp(min=1)).sqrt()  # [B, 1]
        top = torch.where(finite, scores, torch.full_like(scores, float("-inf"))).amax(-1, keepdim=True)  # [B, 1]
        remove = (scores < top - self.n * sigma) & (count > 1)
        return scores.masked_fill(remove, float("-inf"))


@register("top_n_sigma", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    n = read_field(generation_config, "top_n_sigma")
    return None if n is None else TopNSigmaLogitsProcessor(n)
