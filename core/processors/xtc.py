"""XTC, "Exclude Top Choices": now and then remove the most probable tokens, keeping the least probable of them."""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import LogitsProcessor

from .base import Range, between, check, is_int, read_field, register

FIELDS = {"xtc_probability": None, "xtc_threshold": 0.1}
RANGES = {
    "xtc_probability": Range("in [0, 1]", between(0, 1)),
    "xtc_threshold": Range("in [0, 0.5]", between(0, 0.5)),
}
_SPECIAL_IDS = {"special_token_ids": Range("a set of token ids (integers >= 0)",
                                           lambda v: all(is_int(i) and i >= 0 for i in v))}


def special_token_ids(tokenizer, eos_token_id=None) -> set[int]:
    """The tokens XTC must not remove, as text-generation-webui picks them: the newline token
    (``tokenizer.encode("\\n")[-1]``) and EOS (the tokenizer's and any in ``eos_token_id``)."""
    ids: set[int] = set()
    if tokenizer is not None:
        newline = tokenizer.encode("\n", add_special_tokens=False)
        if newline:
            ids.add(int(newline[-1]))
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
    if eos_token_id is not None:
        eos = eos_token_id.tolist() if isinstance(eos_token_id, torch.Tensor) else eos_token_id
        ids.update(int(i) for i in ([eos] if is_int(eos) else eos))
    return ids


class XTCLogitsProcessor(LogitsProcessor):
    """XTC, "Exclude Top Choices" (p-e-w, text-generation-webui PR #6335: ``XTCLogitsWarper`` in
    ``modules/sampler_hijack.py``; llama.cpp ``llama_sampler_xtc``), following the text-generation-webui code.

    With probability ``xtc_probability``, drawn per row and per step, every token whose probability (softmax of
    ``scores``) is ``>= xtc_threshold`` is set to -inf except the least probable of them, so that the choice
    moves down to a less obvious but still likely token. With fewer than two tokens at or above the threshold
    nothing is removed. As text-generation-webui does (llama.cpp does not), a row is left unchanged when the
    removal would take the newline token or EOS (``special_token_ids``): removing them would make every text
    run on. Ties are broken by token id (a stable sort): the kept token is the tied one with the highest id.
    Tokens already at -inf never count as meeting the threshold (threshold 0 would otherwise keep one of them).

    Randomness comes only from ``generator`` (a ``torch.Generator``; None uses torch's default generator, so a
    generator seeded s draws what ``torch.manual_seed(s)`` draws; a list of them, one per row, as Sample N runs).
    Each call draws one uniform number per row, on the generator's device, whatever the outcome; a row acts when its
    number is below ``xtc_probability`` (text-generation-webui draws one ``random.random()`` per call for its single
    row).

    Shapes: ``scores`` [B, V] -> [B, V]; rows are independent; the state is the generator's.
    """

    def __init__(self, xtc_probability: float, xtc_threshold: float = 0.1, special_token_ids: Iterable[int] = (),
                 generator: torch.Generator | None = None):
        special_token_ids = set(special_token_ids)
        check(RANGES, xtc_probability=xtc_probability, xtc_threshold=xtc_threshold)
        check(_SPECIAL_IDS, special_token_ids=special_token_ids)
        self.probability = float(xtc_probability)
        self.threshold = float(xtc_threshold)
        self.special_token_ids = special_token_ids
        self.generator = generator

    def _uniform(self, batch: int) -> torch.Tensor:
        """One uniform number per row [B]: from the generator, or from row b's own in a per-row list (what that row
        alone would draw)."""
        if isinstance(self.generator, (list, tuple)):
            return torch.cat([torch.rand(1, generator=g, device=g.device) for g in self.generator[:batch]])
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        return torch.rand(batch, generator=self.generator, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32)
        batch, vocab = scores.shape
        acts = self._uniform(batch).to(scores.device) < self.probability  # [B]

        probs = scores.softmax(-1)  # [B, V]
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)  # [B, V]
        meets = (sorted_probs >= self.threshold) & torch.isfinite(scores.gather(-1, order))
        # in sorted order, remove a token when the next one also meets the threshold: all of them but the last
        remove_sorted = torch.zeros_like(meets)
        remove_sorted[:, :-1] = meets[:, 1:]
        remove = torch.zeros_like(meets).scatter(-1, order, remove_sorted)  # [B, V]

        special = [i for i in self.special_token_ids if i < vocab]
        if special:
            acts &= ~remove[:, special].any(-1)
        return scores.masked_fill(remove & acts[:, None], float("-inf"))


@register("xtc", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    probability = read_field(generation_config, "xtc_probability")
    if not probability:  # unset or 0: off
        return None
    threshold = read_field(generation_config, "xtc_threshold", FIELDS["xtc_threshold"])
    special = special_token_ids(tokenizer, getattr(generation_config, "eos_token_id", None))
    return XTCLogitsProcessor(probability, threshold, special, generator)
