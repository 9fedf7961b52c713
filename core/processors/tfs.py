"""Tail-free sampling: cut the sorted distribution where its curvature has run out."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, between, check, read_field, register

FIELDS = {"tfs": None}
RANGES = {"tfs": Range("in [0, 1] (1 is off)", between(0, 1))}


class TailFreeLogitsProcessor(LogitsProcessor):
    """Tail-free sampling (Trenton Bricken, "Tail Free Sampling: A simple way to choose the smallest set of tokens
    to sample from", 2019; computed as text-generation-webui ``TailFreeLogitsWarper`` in
    ``modules/sampler_hijack.py`` does).

    Per row: sort the probabilities ``softmax(scores)`` in descending order (ties by token id), take the second
    differences of that curve, ``|p[i] - 2 p[i+1] + p[i+2]|`` (V - 2 of them), normalise them to sum to 1 and
    accumulate. The tail starts where the sum first exceeds ``tfs`` (the z of the post): sorted token 0 is always
    kept, token i + 1 is kept while the sum up to difference i is ``<= tfs``, and the last sorted token is always
    removed, which centres the cut on the difference that crossed z as Bricken's code does (llama.cpp's removed
    ``llama_sampler_tail_free`` keeps one token fewer). Lower ``tfs`` cuts more; 1 keeps all but the last token,
    so 1 is treated as off. -inf tokens count as probability 0, as text-generation-webui counts them.
    Rows where the cut is undefined are left unchanged: fewer than 3 tokens (llama.cpp's rule), or all second
    differences 0 (a straight-line curve, where text-generation-webui's division by 0 would drop only the last
    token).

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, tfs: float):
        check(RANGES, tfs=tfs)
        self.z = float(tfs)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        batch, vocab = scores.shape
        if vocab < 3:
            return scores
        sorted_scores, order = scores.sort(dim=-1, descending=True, stable=True)  # [B, V]
        probs = sorted_scores.softmax(-1)
        curvature = probs.diff(dim=-1).diff(dim=-1).abs()  # [B, V - 2]
        total = curvature.sum(-1, keepdim=True)  # [B, 1]
        cdf = (curvature / total.clamp(min=torch.finfo(torch.float32).tiny)).cumsum(-1)
        first = torch.zeros(batch, 1, dtype=torch.bool, device=scores.device)
        remove_sorted = torch.cat([first, cdf > self.z, ~first], dim=-1)  # [B, V]
        remove_sorted &= total > 0
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        return scores.masked_fill(remove, float("-inf"))


@register("tfs", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    z = read_field(generation_config, "tfs")
    return None if z is None or z >= 1 else TailFreeLogitsProcessor(z)  # unset or 1: off
