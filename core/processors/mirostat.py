"""Mirostat v2: truncate to the tokens whose surprise is below mu, and steer mu towards a target surprise."""

from __future__ import annotations

import math

import torch
from transformers import LogitsProcessor

from .base import Range, check, is_real, read_field, register

FIELDS = {"mirostat_tau": None, "mirostat_eta": 0.1}
RANGES = {
    "mirostat_tau": Range("a number > 0 (the target surprise in bits, e.g. 5.0)", lambda v: is_real(v) and v > 0),
    "mirostat_eta": Range("a number > 0 (the learning rate, e.g. 0.1)", lambda v: is_real(v) and v > 0),
}
DEFAULT_TAU = 5.0  # the constructor's default, llama.cpp's; the field itself is None (off) until set


class MirostatLogitsProcessor(LogitsProcessor):
    """Mirostat v2 (Basu et al. 2021, "Mirostat: A Neural Text Decoding Algorithm that Directly Controls
    Perplexity", arXiv 2007.14966), as llama.cpp ``llama_sampler_mirostat_v2_apply`` (``src/llama-sampling.cpp``)
    computes it.

    Each row keeps a threshold ``mu`` (in bits), starting at ``2 * mirostat_tau``. A call first updates ``mu``
    from the previous step, then truncates:
    1. (not on the first call) the token chosen at the previous step is ``input_ids[:, -1]``; its observed
       surprise is ``-log2 p`` under the distribution kept at that step, truncated and renormalised as llama.cpp
       computes it; ``mu -= mirostat_eta * (surprise - mirostat_tau)``. A row whose token had no probability
       there (the padding of a finished row) keeps its ``mu``;
    2. tokens with surprise ``-log2 softmax(scores) > mu`` are set to -inf, keeping at least the most probable
       token (llama.cpp keeps the first sorted candidate when none is below ``mu``).
    The caller samples from what is returned; llama.cpp updates ``mu`` right after sampling, this processor at
    the next call, which gives the same ``mu`` at every step. Mirostat is a truncation sampler that replaces
    top-k / top-p: put it last, since a processor after it would change the distribution the token is drawn
    from but not the one ``mu`` is updated with.

    State is per instance and per row: use a new processor per generation, or call ``reset()``. A call whose
    batch size differs from the previous call's, or whose sequence is not one token longer, raises a
    ``ValueError``: the state belongs to one generation that adds one token per row per step (sampling or
    greedy; not beam search, which reorders rows).

    Shapes: ``input_ids`` [B, S], ``scores`` [B, V] -> [B, V]; state ``mu`` [B] and the kept log-probs [B, V].
    """

    def __init__(self, mirostat_tau: float = DEFAULT_TAU, mirostat_eta: float = 0.1):
        check(RANGES, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta)
        self.tau = float(mirostat_tau)
        self.eta = float(mirostat_eta)
        self.reset()

    def reset(self) -> None:
        """Forget the generation: the next call starts again from ``mu = 2 * tau``."""
        self.mu: torch.Tensor | None = None  # [B] float64
        self._kept_log_probs: torch.Tensor | None = None  # [B, V], natural log, -inf outside the kept set
        self._length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        batch, length = input_ids.shape
        if self.mu is None:
            self.mu = torch.full((batch,), 2 * self.tau, dtype=torch.float64, device=scores.device)
        else:
            if batch != self.mu.shape[0] or length != self._length + 1:
                raise ValueError(
                    f"`input_ids` must continue the previous call's sequences by one token ({self.mu.shape[0]} rows "
                    f"of {self._length + 1} tokens) for a MirostatLogitsProcessor, which keeps per-row state for one "
                    f"generation; got shape {tuple(input_ids.shape)} (call reset() or build a new processor)")
            self._update_mu(input_ids[:, -1])

        # 2. truncate: surprise in bits of every token under this step's distribution
        surprise = -scores.log_softmax(-1).double() / math.log(2)  # [B, V]
        keep = surprise <= self.mu[:, None]
        keep[torch.arange(batch, device=scores.device), scores.argmax(-1)] = True
        kept = scores.masked_fill(~keep, float("-inf"))  # [B, V]
        self._kept_log_probs = kept.log_softmax(-1)
        self._length = length
        return kept

    def _update_mu(self, chosen: torch.LongTensor) -> None:
        """1. ``mu -= eta * (surprise - tau)`` from each row's chosen token under the distribution kept last step."""
        log_p = self._kept_log_probs.gather(-1, chosen[:, None].to(self._kept_log_probs.device)).squeeze(-1)  # [B]
        observed = -log_p.double() / math.log(2)
        updated = self.mu - self.eta * (observed - self.tau)
        self.mu = torch.where(torch.isfinite(observed), updated, self.mu)


@register("mirostat", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    tau = read_field(generation_config, "mirostat_tau")
    if tau is None:
        return None
    return MirostatLogitsProcessor(tau, read_field(generation_config, "mirostat_eta", FIELDS["mirostat_eta"]))
