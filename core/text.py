"""Token text that reads as the decoded text, in every script: the token-text job of a run.

Byte-level BPE (SmolLM2) splits a character across tokens and SentencePiece's byte fallback (Gemma) spells a rare
one as ``<0xF0><0x9F>...``; decoding each token alone then prints U+FFFD. Here each token's bytes come from the
tokenizer's own machinery (``convert_ids_to_tokens`` and the ``ByteLevel`` byte decoder, or the ``<0xXX>`` pieces
of ``ByteFallback`` and the decoder for the rest), and a row's bytes are decoded as they join:

1. a token's ``Piece`` holds the characters it completes (``text``: the bytes of earlier tokens that waited for it
   merged in) and its own bytes that still wait for a character's end (``tail``, spelled ``<D8>``);
2. a tail shows only while no later token has completed anything (``shown``), so the joined texts equal the decoded
   text and bytes that never complete read as ``<D8>``, never as U+FFFD;
3. a candidate the row did not take reads as what it would have printed there (``candidate``): in the context of
   the row's waiting bytes where it completes them, else alone, its incomplete bytes as ``<XX>``.

Special and added tokens are whole strings (``<|im_end|>``); bytes still waiting before one read as ``<XX>``.
"""

from __future__ import annotations

import codecs
import json
import re

from .records import Piece

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte fallback


def hex_bytes(data: bytes) -> str:
    """``b"\\xd8\\xa8"`` -> ``"<D8><A8>"``: bytes that are no character (yet), readable."""
    return "".join(f"<{b:02X}>" for b in data)


def split_utf8(data: bytes) -> tuple[str, bytes]:
    """``data`` -> (its complete characters, invalid bytes spelled ``<XX>``; the incomplete character it ends with)."""
    text = []
    while data:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text.append(decoder.decode(data, final=False))
            return "".join(text), decoder.getstate()[0]
        except UnicodeDecodeError as err:
            text.append(data[:err.start].decode("utf-8") + hex_bytes(data[err.start:err.end]))
            data = data[err.end:]
    return "".join(text), b""


def _valid_prefix(data: bytes) -> int:
    """How many leading bytes of ``data`` are valid UTF-8 (an incomplete last character counts as valid)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError as err:
        return err.start
    return len(data)


def shown(pieces: list[Piece]) -> list[str]:
    """What each token of a row shows: its ``text``, then its ``tail`` while no later token completed anything."""
    out, open_tail = [], True
    for piece in reversed(pieces):
        out.append(piece.text + (piece.tail if open_tail else ""))
        open_tail = open_tail and not piece.text
    return out[::-1]


def _decoder_kinds(tokenizer) -> set[str]:
    """The ``type`` of the fast tokenizer's decoder and of the decoders a ``Sequence`` of it holds."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return set()
    state = json.loads(decoder.__getstate__())
    return {state.get("type", "")} | {d.get("type", "") for d in state.get("decoders", ())}


class TokenTexts:
    """One run's token text: each token's bytes (read once per id), and per row the bytes still waiting for the
    rest of their character. Calling it with an id gives that token's text alone (``<XX>`` for incomplete bytes)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        kinds = _decoder_kinds(tokenizer)
        self._byte_level = "ByteLevel" in kinds
        self._byte_fallback = "ByteFallback" in kinds
        if self._byte_level:
            from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte <-> character table

            self._byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        self._added = set(getattr(tokenizer, "added_tokens_decoder", None) or ())
        self._bytes: dict[int, bytes | str] = {}
        self.pending: dict[int, bytes] = {}  # row -> bytes of its last tokens that are no character yet

    # --- one token ------------------------------------------------------------------------------------
    def token_bytes(self, token_id: int) -> bytes | str:
        """The bytes ``token_id`` adds to the text; a ``str`` for a token that is a whole string (special or added
        tokens, no tokenizer: ``#id``)."""
        token_id = int(token_id)
        if token_id not in self._bytes:
            self._bytes[token_id] = self._read(token_id)
        return self._bytes[token_id]

    def _read(self, token_id: int) -> bytes | str:
        tok = self.tokenizer
        if tok is None:
            return str(token_id)
        piece = tok.convert_ids_to_tokens(token_id)
        if piece is None:
            return tok.decode([token_id])
        if self._byte_fallback and (match := _BYTE_PIECE.match(piece)):
            return bytes([int(match.group(1), 16)])
        if token_id in self._added:
            return tok.decode([token_id])
        if self._byte_level and all(char in self._byte_of for char in piece):
            return bytes(self._byte_of[char] for char in piece)
        if self._byte_fallback:  # a whole piece: the decoder's own replacements (``▁`` -> space)
            return tok.backend_tokenizer.decoder.decode([piece]).encode("utf-8")
        return tok.decode([token_id])

    def after(self, pending: bytes, token_id: int) -> tuple[Piece, bytes]:
        """``token_id`` printed after the waiting bytes ``pending``: its ``Piece`` and the bytes waiting then."""
        data = self.token_bytes(token_id)
        if isinstance(data, str):
            return Piece(hex_bytes(pending) + data), b""
        text, rest = split_utf8(pending + data)
        own = rest[max(len(rest) - len(data), 0):]
        return Piece(text, hex_bytes(own)), rest

    def __call__(self, token_id: int) -> str:
        """The token's text alone, its incomplete bytes as ``<XX>`` (beam nodes' neighbours, drafts, labels)."""
        piece, _ = self.after(b"", token_id)
        return piece.text + piece.tail

    def candidate(self, pending: bytes, token_id: int) -> str:
        """What ``token_id`` would print after ``pending``: with those bytes where it completes their character,
        else alone."""
        data = self.token_bytes(token_id)
        if pending and not isinstance(data, str) and _valid_prefix(pending + data) >= len(pending):
            piece, _ = self.after(pending, token_id)
            return piece.text + piece.tail
        return self(token_id)

    def pieces(self, token_ids, pending: bytes = b"") -> tuple[list[Piece], bytes]:
        """The ``Piece`` of each token of a sequence printed after ``pending``, and the bytes waiting at its end."""
        out = []
        for token_id in token_ids:
            piece, pending = self.after(pending, token_id)
            out.append(piece)
        return out, pending

    def decode(self, token_ids) -> str:
        """``tokenizer.decode(ids, skip_special_tokens=True)``; where that would print U+FFFD for bytes that are no
        character, the joined pieces of the ids instead (those bytes as ``<XX>``)."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if "\ufffd" not in text:
            return text
        special = set(self.tokenizer.all_special_ids)
        pieces, _ = self.pieces([t for t in token_ids if t not in special])
        return "".join(shown(pieces))

    # --- the rows of a run ----------------------------------------------------------------------------
    def start(self, rows: list[list[int]], window: int = 8) -> None:
        """Row ``b`` continues the text of ``rows[b]`` (a prompt, a branch's prefix): the bytes it ends with that
        wait for the rest of a character wait in the row (its last ``window`` tokens are read: a character has at
        most four bytes)."""
        for row, token_ids in enumerate(rows):
            self.pending[row] = self.pieces(token_ids[-window:])[1]

    def row_candidate(self, row: int, token_id: int) -> str:
        """``candidate`` in the context of row ``row``'s waiting bytes."""
        return self.candidate(self.pending.get(row, b""), token_id)

    def row_draft(self, row: int, token_ids) -> list[str]:
        """What each of ``token_ids`` would print, one after another in row ``row`` (a draft: each labelled on its
        own, its waiting bytes as ``<XX>``), the row left as it is."""
        return [p.text + p.tail for p in self.pieces(token_ids, self.pending.get(row, b""))[0]]

    def advance(self, row: int, token_ids) -> list[Piece]:
        """Row ``row`` takes ``token_ids``: their pieces; the row's waiting bytes move on."""
        out, self.pending[row] = self.pieces(token_ids, self.pending.get(row, b""))
        return out


__all__ = ["TokenTexts", "Piece", "shown", "split_utf8", "hex_bytes"]
