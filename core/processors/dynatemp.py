"""Dynamic temperature: a temperature between a low and a high bound, set per step by the entropy."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from .base import Range, check, fail, is_real, read_field, register

FIELDS = {"dynatemp_low": None, "dynatemp_high": None, "dynatemp_exponent": 1.0}
RANGES = {
    "dynatemp_low": Range("a number >= 0", lambda v: is_real(v) and v >= 0),
    "dynatemp_high": Range("a number >= 0", lambda v: is_real(v) and v >= 0),
    "dynatemp_exponent": Range("a number > 0", lambda v: is_real(v) and v > 0),
}


def check_pair(low, high) -> None:
    """Both bounds set, each in range, and ``low <= high``."""
    if low is None or high is None:
        missing, other = ("dynatemp_low", "dynatemp_high") if low is None else ("dynatemp_high", "dynatemp_low")
        fail(missing, f"set when `{other}` is set (dynamic temperature needs both bounds)", None)
    check(RANGES, dynatemp_low=low, dynatemp_high=high)
    if high < low:
        fail("dynatemp_high", f">= dynatemp_low ({low})", high)


class DynamicTemperatureLogitsProcessor(LogitsProcessor):
    """Dynamic temperature, entropy-based (kalomaze; llama.cpp ``llama_sampler_temp_ext_apply`` in
    ``src/llama-sampling.cpp``, text-generation-webui ``DynamicTemperatureLogitsWarper``), as llama.cpp computes it.

    Per row: ``H`` the entropy of ``softmax(scores)`` in nats (tokens with p = 0 contribute nothing),
    ``H_max = ln N`` with ``N`` the number of finite logits (llama.cpp's candidates: its truncation samplers drop
    tokens where transformers' set them to -inf), and
    ``T = dynatemp_low + (dynatemp_high - dynatemp_low) * (H / H_max) ** dynatemp_exponent``; the row becomes
    ``scores / T``. A confident (low-entropy) row gets a temperature near ``low``, a flat one near ``high``.
    As in llama.cpp, a row with at most one finite logit is left unchanged (``H_max`` would be 0), and ``T <= 0``
    is greedy: only the first largest logit is kept, the rest set to -inf (llama.cpp ``llama_sampler_temp_impl``).
    llama.cpp takes ``temp ± delta``; ``low = max(0, temp - delta)``, ``high = temp + delta`` here.

    This is a temperature: use it instead of ``temperature`` (transformers' ``TemperatureLogitsWarper`` would
    scale again).

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, dynatemp_low: float, dynatemp_high: float, dynatemp_exponent: float = 1.0):
        check_pair(dynatemp_low, dynatemp_high)
        check(RANGES, dynatemp_exponent=dynatemp_exponent)
        self.low = float(dynatemp_low)
        self.high = float(dynatemp_high)
        self.exponent = float(dynatemp_exponent)

    def temperatures(self, scores: torch.FloatTensor) -> torch.Tensor:
        """The temperature of each row of ``scores`` [B, V] -> [B] (rows with one finite logit: 1)."""
        scores = scores.to(torch.float32)
        count = torch.isfinite(scores).sum(-1)  # [B]
        log_p = scores.log_softmax(-1)
        p = log_p.exp()
        entropy = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)  # [B], nats
        max_entropy = count.clamp(min=2).to(torch.float32).log()  # [B]; ln 1 = 0 rows are left alone below
        temperature = self.low + (self.high - self.low) * (entropy / max_entropy) ** self.exponent
        return torch.where(count > 1, temperature, torch.ones_like(temperature))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        temperature = self.temperatures(scores)[:, None]  # [B, 1]
        greedy = torch.full_like(scores, float("-inf")).scatter(-1, scores.argmax(-1, keepdim=True),
                                                                scores.amax(-1, keepdim=True))
        return torch.where(temperature > 0, scores / temperature.clamp(min=torch.finfo(torch.float32).tiny), greedy)


def _rule(generation_config) -> None:
    low, high = read_field(generation_config, "dynatemp_low"), read_field(generation_config, "dynatemp_high")
    if low is not None or high is not None:
        check_pair(low, high)


@register("dynatemp", fields=FIELDS, ranges=RANGES, rule=_rule)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    low, high = read_field(generation_config, "dynatemp_low"), read_field(generation_config, "dynatemp_high")
    if low is None and high is None:
        return None
    exponent = read_field(generation_config, "dynatemp_exponent", FIELDS["dynatemp_exponent"])
    return DynamicTemperatureLogitsProcessor(low, high, exponent)
