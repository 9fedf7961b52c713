"""Bounds on what one request may ask of the process: the sizes a caller controls, checked before anything is built
from them (the stop-string tables, the words' token ids, the grammar, the KV cache), so that a request over a bound
costs a message, not memory or minutes.

``core.generate(limits=...)`` runs ``check`` first of all; without ``limits`` nothing is bounded (a script's own
call). Each refusal is a ``LimitError`` (a ``ValueError``) naming the field, the bound and the value, and the knob
that sets the bound when the caller named one (``Limits.knobs``: the playground's environment variables).

The KV-cache estimate is an upper bound of what the run's caches hold at their longest: rows x (prompt + new tokens)
x 2 (keys and values) x layers x key-value heads x head size x bytes per value. Rows are the batch times
``num_beams`` (or ``num_return_sequences`` when sampling), times contrastive search's ``top_k`` candidates (its
candidate forward expands the cache that many times); classifier-free guidance keeps a second cache for the
negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from . import grammar
from .requests import effective

GIB = 1024 ** 3
ROW_FIELDS = ("num_beams", "num_return_sequences", "penalty_alpha", "top_k")  # what ``rows_of`` reads
DEFAULT_NEW_TOKENS = 20  # transformers' max_length default, when nothing sets a length
# the fields whose entries are token lists (or words), one entry each
ENTRY_FIELDS = ("bad_words_ids", "force_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens")


class LimitError(ValueError):
    """A request over one of the process's bounds."""


@dataclass(frozen=True)
class Limits:
    """The bounds of one request. ``knobs`` names, per field of this class, what sets it (shown in messages)."""

    context_tokens: int = 32_768  # the ids a run starts from: the prompt, or a branch's prompt and prefix
    new_tokens: int = 4096  # max_new_tokens
    rows: int = 256  # rows decoded at once: batch x num_beams (or num_return_sequences), x contrastive's top_k
    negative_prompt_tokens: int = 16_384
    stop_strings: int = 16  # how many stop strings
    stop_string_chars: int = 64  # characters of each
    entries: int = 1024  # entries of each of ENTRY_FIELDS
    entry_tokens: int = 64  # tokens (or characters of a word) in one entry
    grammar_chars: int = 20_000  # characters of json_schema, regex or grammar
    kv_bytes: int = 8 * GIB
    knobs: Mapping[str, str] = field(default_factory=dict)

    def fail(self, what: str, bound: str, got: str, bound_field: str, hint: str = "") -> None:
        knob = self.knobs.get(bound_field)
        where = f" (set by {knob})" if knob else ""
        raise LimitError(f"{what} must be {bound} on this server{where}; got {got}{'; ' + hint if hint else ''}")


def _count(n: float) -> str:
    return f"{int(n):,}"


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:,.0f} MB"


def kv_bytes_per_token(model, dtype: torch.dtype | None = None) -> int:
    """Bytes one token of one row adds to the model's KV cache (keys and values of every layer)."""
    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    layers = getattr(cfg, "num_hidden_layers", 1)
    dtype = dtype or next(model.parameters()).dtype
    return 2 * layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def rows_of(batch: int, cfg: Mapping[str, Any]) -> int:
    """Rows a run decodes at once (see the module docstring)."""
    beams = int(cfg.get("num_beams") or 1)
    rows = batch * (beams if beams > 1 else int(cfg.get("num_return_sequences") or 1))
    if cfg.get("penalty_alpha") and int(cfg.get("top_k") or 0) > 1 and beams == 1:  # contrastive search's candidates
        rows *= int(cfg["top_k"])
    return rows


def _entries(value) -> list:
    if isinstance(value, Mapping):  # sequence_bias as {word or ids: bias}
        return list(value)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [[v] for v in value]  # suppress_tokens: plain ids
        return list(value)
    return [value]


def _size(entry) -> int:
    """Tokens in an entry (characters for a word; a group of alternatives counts all of them)."""
    if isinstance(entry, str):
        return len(entry)
    if isinstance(entry, (list, tuple)):
        if len(entry) == 2 and isinstance(entry[1], (int, float)) and isinstance(entry[0], (list, tuple, str)):
            return _size(entry[0])  # a sequence_bias pair [ids or word, bias]
        return sum(_size(e) if isinstance(e, (list, tuple, str)) else 1 for e in entry)
    return 1


def check(model, input_ids: torch.Tensor | None, generation_config, kwargs: dict, limits: Limits | None) -> None:
    """Before anything is built from the request: raise ``LimitError`` when a size it asks for is over ``limits``
    (nothing without them). ``check_cache`` follows once the negative prompt is encoded."""
    if limits is None:
        return
    get, (batch, length) = _reader(model, generation_config, kwargs), _shape(input_ids)
    if length > limits.context_tokens:
        limits.fail("the prompt (`input_ids`)", f"at most {_count(limits.context_tokens)} tokens",
                    f"{_count(length)} tokens", "context_tokens", "shorten the prompt")
    new = new_tokens(get, length)
    if new > limits.new_tokens:
        limits.fail("`max_new_tokens`", f"at most {_count(limits.new_tokens)}", _count(new), "new_tokens")
    for name in ROW_FIELDS:
        value = get(name)
        if value is not None and not (isinstance(value, (int, float)) and abs(value) < 2 ** 31):
            limits.fail(f"`{name}`", f"a number of at most {_count(limits.rows)} rows", repr(value)[:40], "rows")
    rows = rows_of(batch, {name: get(name) for name in ROW_FIELDS})
    if rows > limits.rows:
        limits.fail("the rows decoded at once (batch x `num_beams` or `num_return_sequences`, x contrastive's "
                    "`top_k`)", f"at most {_count(limits.rows)}", _count(rows), "rows")
    _check_texts(get, limits)


def check_cache(model, input_ids: torch.Tensor | None, generation_config, kwargs: dict, limits: Limits | None) -> None:
    """Once words are token ids: the encoded negative prompt and the KV cache the run needs within ``limits``."""
    if limits is None:
        return
    get, (batch, length) = _reader(model, generation_config, kwargs), _shape(input_ids)
    negative = get("negative_prompt_ids")
    negative = int(negative.shape[-1]) if isinstance(negative, torch.Tensor) else 0
    if negative > limits.negative_prompt_tokens:
        limits.fail("`negative_prompt`", f"at most {_count(limits.negative_prompt_tokens)} tokens",
                    f"{_count(negative)} tokens", "negative_prompt_tokens")
    new = new_tokens(get, length)
    rows = rows_of(batch, {name: get(name) for name in ROW_FIELDS})
    need = kv_bytes_per_token(model) * rows * (length + new + (negative + new if negative else 0))
    if need > limits.kv_bytes:
        limits.fail("the KV cache this run needs", f"at most {_mb(limits.kv_bytes)}",
                    f"{_mb(need)}: {_count(rows)} rows x ({_count(length)} prompt + {_count(new)} new tokens"
                    f"{f' + {_count(negative + new)} for the negative prompt' if negative else ''})", "kv_bytes",
                    "lower Sample N, `num_beams`, `num_return_sequences` or `max_new_tokens`, or shorten the prompt")


def _reader(model, generation_config, kwargs):
    """``get(field)``: the value each field will have for this request (``requests.effective``)."""
    return lambda name: effective(generation_config, kwargs, name, model)


def _shape(input_ids) -> tuple[int, int]:
    """``(batch, length)`` of the prompt ids [B, S]; ``(1, 0)`` without them."""
    return tuple(input_ids.shape) if input_ids is not None and input_ids.dim() == 2 else (1, 0)


def new_tokens(get, length: int) -> int:
    """The most tokens the run may add: ``max_new_tokens``, else what ``max_length`` leaves after the prompt."""
    new = get("max_new_tokens")
    if new is None:
        max_length = get("max_length")
        new = max(int(max_length) - length, 0) if _finite(max_length) else DEFAULT_NEW_TOKENS
    if not _finite(new):
        raise LimitError(f"`max_new_tokens` must be a whole number; got {new!r}")
    return int(new)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 2 ** 62


def _check_texts(get, limits: Limits) -> None:
    """Stop strings, the entry fields, the grammar and the negative prompt's characters."""
    stops = get("stop_strings")
    if stops:
        stops = [stops] if isinstance(stops, str) else list(stops) if isinstance(stops, (list, tuple)) else [stops]
        if len(stops) > limits.stop_strings:
            limits.fail("`stop_strings`", f"at most {limits.stop_strings} strings", f"{len(stops):,}", "stop_strings")
        longest = max(len(s) if isinstance(s, str) else 0 for s in stops)
        if longest > limits.stop_string_chars:
            limits.fail("each of `stop_strings`", f"at most {limits.stop_string_chars} characters",
                        f"one of {longest:,}", "stop_string_chars")
    for name in ENTRY_FIELDS:
        value = get(name)
        if value is None or value == []:
            continue
        entries = _entries(value)
        if len(entries) > limits.entries:
            limits.fail(f"`{name}`", f"at most {limits.entries:,} entries", f"{len(entries):,}", "entries")
        longest = max((_size(e) for e in entries), default=0)
        if longest > limits.entry_tokens:
            limits.fail(f"each entry of `{name}`", f"at most {limits.entry_tokens} tokens (or characters of a word)",
                        f"one of {longest:,}", "entry_tokens")
    for name in grammar.FIELDS:
        value = get(name)
        size = len(value) if isinstance(value, str) else len(str(value)) if value is not None else 0
        if size > limits.grammar_chars:
            limits.fail(f"`{name}`", f"at most {limits.grammar_chars:,} characters", f"{size:,}", "grammar_chars")
    negative = get("negative_prompt")
    # a word is at least one character: the characters bound the tokens before anything is encoded
    if isinstance(negative, str) and len(negative) > 16 * limits.negative_prompt_tokens:
        limits.fail("`negative_prompt`", f"at most {_count(limits.negative_prompt_tokens)} tokens",
                    f"{len(negative):,} characters", "negative_prompt_tokens")
