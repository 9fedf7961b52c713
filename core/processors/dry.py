"""DRY, "Don't Repeat Yourself": an exponential penalty on tokens that would extend a repeated sequence."""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import LogitsProcessor

from .base import Range, check, fail, is_int, is_real, read_field, register

DEFAULT_SEQUENCE_BREAKERS = ["\n", ":", "\"", "*"]  # text-generation-webui's and llama.cpp's default
MAX_MATCH_LENGTH = 50  # the reference stops extending a match here (keeps base ** n finite, bounds the work)

FIELDS = {
    "dry_multiplier": None,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_sequence_breakers": list(DEFAULT_SEQUENCE_BREAKERS),
}


def _is_breaker(s) -> bool:
    """A non-empty string or a token id."""
    return (isinstance(s, str) and s != "") or (is_int(s) and s >= 0)


RANGES = {
    "dry_multiplier": Range("a number >= 0 (0 disables it)", lambda v: is_real(v) and v >= 0),
    "dry_base": Range("a number > 1", lambda v: is_real(v) and v > 1),
    "dry_allowed_length": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "dry_sequence_breakers": Range(
        "a list of non-empty strings (or token ids)",
        lambda v: isinstance(v, (list, tuple)) and all(_is_breaker(s) for s in v)),
}
_BREAKER_IDS = {"sequence_breaker_ids": Range("a set of token ids (integers >= 0)",
                                              lambda v: all(is_int(i) and i >= 0 for i in v))}


def repeat_lengths(ids: list[int], breakers: set[int], max_length: int = MAX_MATCH_LENGTH) -> dict[int, int]:
    """For each token that would continue an earlier occurrence of the suffix of ``ids``: the longest such suffix."""
    last = ids[-1]
    if last in breakers:  # a breaker ends every repetition
        return {}
    lengths: dict[int, int] = {}
    for i in range(len(ids) - 1):  # the last token always matches itself: skip it
        if ids[i] != last:
            continue
        following = ids[i + 1]
        if following in breakers:
            continue
        n = 1  # ids[i] == ids[-1]; extend the match backwards
        while n < max_length and i - n >= 0:
            previous = ids[-(n + 1)]
            if ids[i - n] != previous or previous in breakers:
                break
            n += 1
        lengths[following] = max(n, lengths.get(following, 0))
    return lengths


def breaker_ids(strings: Iterable[str], tokenizer) -> set[int]:
    """Token ids of sequence-breaker strings: each string's last token when it ends a text (after an "a"), as
    text-generation-webui maps them (``tokenizer.encode(f"a{s}")[-1]``)."""
    ids = set()
    for s in strings:
        tokens = tokenizer.encode(f"a{s}", add_special_tokens=False)
        if tokens:
            ids.add(int(tokens[-1]))
    return ids


class DRYLogitsProcessor(LogitsProcessor):
    """DRY ("Don't Repeat Yourself", p-e-w, text-generation-webui PR #5677: ``DRYLogitsProcessor`` in
    ``modules/sampler_hijack.py``; llama.cpp ``llama_sampler_dry``), following the text-generation-webui code.

    If the sequence ends with tokens that already occurred earlier, the token that followed the earlier
    occurrence would extend the repetition. For each such token, with ``n`` the length of the longest repeated
    suffix it would extend, ``logit -= dry_multiplier * dry_base ** (n - dry_allowed_length)`` when
    ``n >= dry_allowed_length``. Sequence breakers stop a match: when the last token is a breaker nothing is
    penalised, a breaker is never penalised, and a match does not extend backwards over a breaker. As the
    reference does, matches are extended at most ``MAX_MATCH_LENGTH`` (50) tokens back and the whole
    ``input_ids`` is searched, the prompt included (the reference's ``repetition_penalty_range`` = 0).

    Sequence breakers are token ids; ``from_strings`` maps strings with a tokenizer as the reference does.
    A penalty too large for float32 makes the logit -inf (the token is banned).

    Shapes: ``input_ids`` [B, S], ``scores`` [B, V] -> [B, V]; rows are independent and there is no state.
    """

    def __init__(self, dry_multiplier: float, dry_base: float = 1.75, dry_allowed_length: int = 2,
                 sequence_breaker_ids: Iterable[int] = ()):
        sequence_breaker_ids = set(sequence_breaker_ids)
        check(RANGES, dry_multiplier=dry_multiplier, dry_base=dry_base, dry_allowed_length=dry_allowed_length)
        check(_BREAKER_IDS, sequence_breaker_ids=sequence_breaker_ids)
        self.multiplier = float(dry_multiplier)
        self.base = float(dry_base)
        self.allowed_length = dry_allowed_length
        self.sequence_breaker_ids = sequence_breaker_ids

    @classmethod
    def from_strings(cls, dry_multiplier: float, dry_base: float = 1.75, dry_allowed_length: int = 2,
                     dry_sequence_breakers: list[str | int] = tuple(DEFAULT_SEQUENCE_BREAKERS), *,
                     tokenizer) -> DRYLogitsProcessor:
        """A DRY processor whose sequence breakers are strings, mapped to token ids with ``tokenizer``
        (token ids in the list are taken as they are; ``tokenizer`` may be None when there are no strings)."""
        check(RANGES, dry_sequence_breakers=dry_sequence_breakers)
        ids = {s for s in dry_sequence_breakers if is_int(s)}
        strings = [s for s in dry_sequence_breakers if isinstance(s, str)]
        if strings and tokenizer is None:
            fail("dry_sequence_breakers", "token ids when no tokenizer is given (strings are mapped to token ids "
                 "with the tokenizer)", dry_sequence_breakers)
        if strings:
            ids |= breaker_ids(strings, tokenizer)
        return cls(dry_multiplier, dry_base, dry_allowed_length, ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.to(torch.float32, copy=True)  # [B, V]
        if self.multiplier == 0:
            return scores
        vocab = scores.shape[-1]
        for row, ids in enumerate(input_ids.tolist()):
            lengths = {t: n for t, n in repeat_lengths(ids, self.sequence_breaker_ids).items()
                       if n >= self.allowed_length and t < vocab}
            if not lengths:
                continue
            tokens = torch.tensor(list(lengths), device=scores.device)
            exponent = torch.tensor(list(lengths.values()), dtype=torch.float64) - self.allowed_length
            # float64 pow gives inf rather than raising when the penalty overflows
            penalty = self.multiplier * torch.pow(torch.tensor(self.base, dtype=torch.float64), exponent)
            scores[row, tokens] -= penalty.to(scores.device, scores.dtype)
        return scores


@register("dry", fields=FIELDS, ranges=RANGES)
def build(generation_config, *, tokenizer=None, generator=None, prompt_length: int = 0):
    multiplier = read_field(generation_config, "dry_multiplier")
    if not multiplier:  # unset or 0: off
        return None
    base = read_field(generation_config, "dry_base", FIELDS["dry_base"])
    allowed_length = read_field(generation_config, "dry_allowed_length", FIELDS["dry_allowed_length"])
    breakers = read_field(generation_config, "dry_sequence_breakers", DEFAULT_SEQUENCE_BREAKERS)
    return DRYLogitsProcessor.from_strings(multiplier, base, allowed_length, breakers, tokenizer=tokenizer)
