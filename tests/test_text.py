"""Token text that reads as the decoded text (``core.text``), on SmolLM2's byte-level BPE and Gemma's SentencePiece
with byte fallback: the joined pieces equal ``tokenizer.decode``, and no piece holds U+FFFD."""

from __future__ import annotations

import pytest

import core
from core.records import Piece
from core.text import TokenTexts, hex_bytes, shown, split_utf8

TEXTS = {
    "arabic": "مرحبا بالعالم، كيف حالك؟",
    "cjk": "你好世界，日本語のテキスト",
    "emoji": "👋😀🎲 🫠🪿 👩‍👩‍👧",
    "mixed": "héllo 日本 مرحبا 👍 ok 𒀀 ꙮ 𝔘𝔫𝔦",
}


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma-3-270m"])
def tokenizer(request):
    return core.load_model(request.param).tokenizer


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("script", sorted(TEXTS))
def test_joined_pieces_equal_the_decoded_text(tokenizer, script):
    ids = _ids(tokenizer, TEXTS[script])
    pieces, pending = TokenTexts(tokenizer).pieces(ids)
    texts = shown(pieces)
    assert "".join(texts) == tokenizer.decode(ids) == TEXTS[script]
    assert pending == b"" and not any("\ufffd" in t for t in texts)
    assert len(texts) == len(ids)


def test_the_scripts_do_split_characters_across_tokens(tokenizer):
    """The cases above test something: on both tokenizers some token of them alone decodes to U+FFFD."""
    ids = _ids(tokenizer, TEXTS["mixed"])
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)


def test_a_character_split_across_tokens_shows_on_the_token_that_completes_it(tokenizer):
    ids = _ids(tokenizer, "𓀀")  # four bytes: byte-level BPE and byte fallback both split it
    assert len(ids) > 1
    pieces, _ = TokenTexts(tokenizer).pieces(ids)
    assert shown(pieces) == [""] * (len(ids) - 1) + ["𓀀"]


def test_bytes_that_never_complete_read_as_bytes(tokenizer):
    ids = _ids(tokenizer, "a𓀀")
    texts = TokenTexts(tokenizer)
    pieces, pending = texts.pieces(ids[:-1])  # the character's last byte never comes
    assert pending and "".join(shown(pieces)) == "a" + hex_bytes("𓀀".encode()[:len(pending)])
    assert "\ufffd" not in "".join(shown(pieces))
    lone = texts(ids[-1])  # continuation bytes alone
    assert "\ufffd" not in lone and lone.startswith("<")


def test_a_candidate_reads_as_what_it_would_print_in_its_row(tokenizer):
    """After the waiting bytes of a character, the token that completes it reads as the character; one that cannot
    reads alone, its own incomplete bytes as <XX>."""
    ids = _ids(tokenizer, "𓀀")
    texts = TokenTexts(tokenizer)
    texts.advance(0, ids[:-1])
    assert texts.row_candidate(0, ids[-1]) == "𓀀"
    ok = _ids(tokenizer, " ok")
    assert texts.row_candidate(0, ok[0]) == tokenizer.decode(ok[:1])
    assert texts.row_candidate(1, ids[-1]) == texts(ids[-1])  # another row waits for nothing
    assert texts(ids[-1]).startswith("<")


def test_special_tokens_are_whole_and_flush_the_waiting_bytes(tokenizer):
    ids = _ids(tokenizer, "𓀀")
    eos = tokenizer.eos_token_id
    texts = TokenTexts(tokenizer)
    pieces, pending = texts.pieces([*ids[:-1], eos])
    assert pending == b""
    waiting = b"".join(texts.token_bytes(i) for i in ids[:-1])
    assert "".join(shown(pieces)) == hex_bytes(waiting) + tokenizer.decode([eos])


def test_split_utf8_spells_invalid_bytes_and_keeps_an_incomplete_end():
    assert split_utf8("ب".encode()) == ("ب", b"")
    assert split_utf8(b"a\xd8") == ("a", b"\xd8")
    assert split_utf8(b"\xd8 ok\xf0\x9f") == ("<D8> ok", b"\xf0\x9f")
    assert split_utf8(b"\xa8x") == ("<A8>x", b"")


def test_shown_opens_only_the_last_tails():
    pieces = [Piece("a", ""), Piece("", "<D8>"), Piece("ب", "<D8>"), Piece("", "<A8>")]
    assert shown(pieces) == ["a", "", "ب<D8>", "<A8>"]


def test_without_a_tokenizer_a_token_reads_as_its_id():
    texts = TokenTexts(None)
    assert texts(7) == "7" and texts.pieces([7, 8])[0] == [Piece("7"), Piece("8")]


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(num_beams=2), dict(penalty_alpha=0.6, top_k=4)],
                         ids=["greedy", "beam", "contrastive"])
def test_an_arabic_and_emoji_run_records_no_replacement_character(embedded, kwargs):
    """Every text the records hold reads without U+FFFD, and a row's pieces join into its decoded text (with any
    character the run left unfinished spelled as bytes)."""
    tok = embedded.tokenizer
    ids = tok("اكتب جملة عن القمر 🌙 والنجوم", return_tensors="pt").input_ids
    trace = core.generate(embedded.model, ids, max_new_tokens=16, recorder=core.ListRecorder(top_n=5),
                          tokenizer=tok, **kwargs).trace
    texts = [c.text for s in trace.steps for r in s.rows for c in r.candidates]
    texts += [n.text + n.tail for s in trace.steps for n in s.beam or ()]
    texts += [c.text for s in trace.steps for rows in s.contrastive or () for c in rows]
    assert texts and not any("\ufffd" in t for t in texts) and not any("\ufffd" in t for t in trace.texts)
    new = trace.sequences[0][ids.shape[1]:]
    if trace.steps[0].beam is None:
        pieces = [p for s in trace.steps for r in s.rows if r.row == 0 for p in r.pieces]
        assert len(pieces) == len(new)
        _, pending = TokenTexts(tok).pieces(new)
        decoded = tok.decode(new)
        assert "".join(shown(pieces)) == (decoded.rstrip("\ufffd") + hex_bytes(pending) if pending else decoded)
    again = core.Trace.from_json(trace.to_json())
    assert again.steps == trace.steps


def test_a_trace_saved_before_pieces_still_loads_and_shows(embedded):
    import json

    from playground.figures.tokens import tokens_html

    ids = embedded.tokenizer("Hello", return_tensors="pt").input_ids
    trace = core.generate(embedded.model, ids, max_new_tokens=3, recorder=core.ListRecorder(top_n=3),
                          tokenizer=embedded.tokenizer).trace
    data = json.loads(trace.to_json())
    for step in data["steps"]:
        for row in step["rows"]:
            del row["pieces"]
    old = core.Trace.from_dict(data)
    assert all(r.pieces is None for s in old.steps for r in s.rows)
    assert tokens_html(old) == tokens_html(trace)  # plain words: the candidates' texts read the same


def test_a_recorder_that_does_not_say_what_to_record_is_refused_by_name(tiny_model, prompt):
    class Bare:
        top_n = 3

        def on_step(self, record):
            pass

        def on_end(self, trace):
            pass

    with pytest.raises(TypeError, match="`lens`"):
        core.generate(tiny_model, prompt, max_new_tokens=2, recorder=Bare())


def test_a_token_typed_as_several_names_its_parts_without_replacement_characters(tokenizer):
    from playground.prompt import parse_token

    with pytest.raises(ValueError, match="tokens") as err:
        parse_token(tokenizer, "𓀀𓀀", len(tokenizer))
    assert "\ufffd" not in str(err.value) and "<" in str(err.value)
