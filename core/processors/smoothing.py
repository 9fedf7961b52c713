"""Smoothing factor (quadratic sampling): bend the logits into a parabola below the largest one."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, check, is_real, read_field, register

FIELDS = {"smoothing_factor": None, "smoothing_curve": 1.0}
RANGES = {
    "smoothing_factor": Range("a number >= 0 (0 is off; try 0.3)", lambda v: is_real(v) and v >= 0),
    "smoothing_curve": Range("a number >= 1 (1 is the plain quadratic)", lambda v: is_real(v) and v >= 1),
}


class SmoothingFactorLogitsProcessor(LogitsProcessor):
    """Quadratic sampling with a smoothing factor and curve (kalomaze; text-generation-webui
    ``QuadraticSamplingLogitsWarper`` in ``modules/sampler_hijack.py``, whose arithmetic this follows).

    Per row, with ``m`` the largest logit and ``d = logit - m`` (<= 0), ``k = (3 - smoothing_curve) / 2`` and
    ``s = (smoothing_curve - 1) / 2``, every finite logit becomes ``-(k * f * d**2) + (s * f * d**3) + m`` with
    ``f = smoothing_factor``. With the default curve 1 that is ``-(f * d**2) + m``: the top token keeps its logit
    and a gap ``|d|`` to it becomes ``f * d**2``: tokens within ``1 / f`` of the top move closer to it (the
    runners-up share more of the probability) and those farther fall further behind (the tail is cut harder than
    by a temperature); a curve above 1 adds the cubic term, which pushes the far tail down harder still. -inf
    logits (tokens already removed) stay -inf.
    text-generation-webui takes ``m`` over the whole batch, which is its one row; here each row has its own.

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, smoothing_factor: float, smoothing_curve: float = 1.0):
        check(RANGES, smoothing_factor=smoothing_factor, smoothing_curve=smoothing_curve)
        self.factor = float(smoothing_factor)
        self.curve = float(smoothing_curve)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        top = scores.amax(-1, keepdim=True)  # [B, 1]
        diff = scores - top  # [B, V]
        k = (3 - self.curve) / 2
        s = (self.curve - 1) / 2
        bent = -(k * self.factor * diff ** 2) + (s * self.factor * diff ** 3) + top
        return torch.where(scores != float("-inf"), bent, scores)


@register("smoothing", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    factor = read_field(generation_config, "smoothing_factor")
    if not factor:  # unset or 0: off
        return None
    return SmoothingFactorLogitsProcessor(factor, read_field(generation_config, "smoothing_curve",
                                                             FIELDS["smoothing_curve"]))
