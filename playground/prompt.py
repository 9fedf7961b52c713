"""What a visitor types -> token ids: the prompt (with the chat template or as plain text) and a token named by its
text or ``#<id>``, and the watched tokens (a comma-separated list of them)."""

from __future__ import annotations

import torch

from core.records import MAX_WATCH
from core.text import TokenTexts


def encode_prompt(tokenizer, prompt: str, chat: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(input_ids [1, S], attention_mask [1, S], note)``; the chat template wraps ``prompt`` as one user
    turn when asked for and the tokenizer has one (the note says when it had none)."""
    if uses_chat(tokenizer, chat):
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        return enc["input_ids"], enc["attention_mask"], ""
    enc = tokenizer(prompt, return_tensors="pt")
    note = "this tokenizer has no chat template; the prompt was used as plain text" if chat else ""
    return enc["input_ids"], enc["attention_mask"], note


def uses_chat(tokenizer, chat: bool) -> bool:
    """Whether ``encode_prompt`` wraps the prompt in the chat template: asked for, and the tokenizer has one (what a
    run's ``Facts.chat`` records)."""
    return bool(chat) and bool(getattr(tokenizer, "chat_template", None))


def parse_token(tokenizer, text: str | None, vocab_size: int, field: str = "token") -> int | None:
    """``#<id>`` or a token's text -> its id (``None`` for empty). Text must be exactly one token of the model;
    ``field`` is the name the messages give the box it came from."""
    text = "" if text is None else str(text)
    if not text.strip():
        return None
    if text.strip().startswith("#") and text.strip()[1:].isdigit():
        token_id = int(text.strip()[1:])
        if not 0 <= token_id < vocab_size:
            raise ValueError(f"`{field}` must be a token id in [0, {vocab_size - 1}] (#<id>) or one token's text; "
                             f"got {text!r}")
        return token_id
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        texts = TokenTexts(tokenizer)  # a token holding part of a character reads as its bytes, not U+FFFD
        pieces = " + ".join(repr(texts(i)) for i in ids)
        raise ValueError(f"`{field}` must be one token of the model's vocabulary (or #<id>); {text!r} is {len(ids)} "
                         f"tokens: {pieces}")
    return ids[0]


def parse_watch(tokenizer, text: str | None, vocab_size: int) -> list[int]:
    """The watched tokens: comma-separated entries, each ``#<id>`` or one token's text as ``parse_token`` reads it
    (a token's own leading space kept, "the, Paris" is "the" and " Paris"; trailing spaces dropped; a comma itself
    by its ``#<id>``), at most ``MAX_WATCH``, duplicates once. Empty entries are skipped; a bad one raises
    ``ValueError`` naming `watch` and the entry."""
    entries = [e.rstrip() for e in ("" if text is None else str(text)).split(",") if e.strip()]
    if len(entries) > MAX_WATCH:
        raise ValueError(f"`watch` must name at most {MAX_WATCH} tokens (comma-separated); got {len(entries)}")
    ids: dict[int, None] = {}
    for entry in entries:
        ids[parse_token(tokenizer, entry, vocab_size, field="watch")] = None
    return list(ids)
