"""Greedy search and multinomial sampling: ``core.generate`` equals transformers 5.x ``model.generate`` token for
token (same seed for sampling), for every processor and stopping criterion the generation guide names; and the
records say what the processors did (``removed_total``) and which token was chosen (argmax for greedy)."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, StoppingCriteria, StoppingCriteriaList

import core
from conftest import VOCAB


def both(model, ids, seed: int = 0, recorder=None, **kwargs):
    """(core's sequences, transformers' sequences) for the same call, each run from the same seed."""
    torch.manual_seed(seed)
    ours = core.generate(model, ids, recorder=recorder, **kwargs)
    torch.manual_seed(seed)
    reference = model.generate(ids, **kwargs)
    return ours, reference


def assert_same(model, ids, seed: int = 0, recorder=None, **kwargs) -> core.GenerationResult:
    """Run with recording on: the recorded run must give the reference tokens too."""
    ours, reference = both(model, ids, seed, recorder=recorder or core.ListRecorder(), **kwargs)
    assert ours.sequences.tolist() == reference.tolist()
    return ours


# --- greedy and sampling on the tiny model -------------------------------------------------------------------
def test_greedy(tiny_model, prompt):
    result = assert_same(tiny_model, prompt, max_new_tokens=12, do_sample=False)
    assert result.trace.strategy == "greedy_search"
    assert len(result.trace.steps) == 12


def test_recording_off_gives_the_same_tokens(tiny_model, prompt):
    ours, reference = both(tiny_model, prompt, max_new_tokens=12, do_sample=True, top_k=10)
    assert ours.trace is None
    assert ours.sequences.tolist() == reference.tolist()


SAMPLING = [
    dict(),
    dict(temperature=0.7),
    dict(temperature=1.5, top_k=0),
    dict(top_k=5),
    dict(top_k=0, top_p=0.8),
    dict(top_k=0, min_p=0.1),
    dict(top_k=0, typical_p=0.7),
    dict(top_k=0, epsilon_cutoff=0.02),
    dict(top_k=0, eta_cutoff=0.02),
    dict(temperature=0.8, top_k=20, top_p=0.9, min_p=0.02),
    dict(num_return_sequences=3),
    dict(num_return_sequences=2, top_p=0.9, temperature=1.2),
]


@pytest.mark.parametrize("kwargs", SAMPLING,
                         ids=[",".join(f"{k}={v}" for k, v in s.items()) or "defaults" for s in SAMPLING])
def test_sampling_with_fixed_seed(tiny_model, prompt, kwargs):
    seed = SAMPLING.index(kwargs)  # a different seed per case
    result = assert_same(tiny_model, prompt, seed, max_new_tokens=10, do_sample=True, **kwargs)
    assert result.trace.strategy == "sample"
    assert result.sequences.shape[0] == kwargs.get("num_return_sequences", 1)


PROCESSORS = [
    dict(repetition_penalty=1.8),
    dict(repetition_penalty=0.6),
    dict(no_repeat_ngram_size=1),
    dict(bad_words_ids=[[60], [33, 46], [46, 46]]),
    dict(suppress_tokens=[60, 33, 46]),
    dict(begin_suppress_tokens=[60]),
    dict(forced_eos_token_id=2),
    dict(min_new_tokens=8, eos_token_id=46),
    dict(sequence_bias={(33,): -10.0, (47,): 5.0}),
]


@pytest.mark.parametrize("kwargs", PROCESSORS, ids=[",".join(map(str, p)) for p in PROCESSORS])
@pytest.mark.parametrize("do_sample", [False, True])
def test_processors(tiny_model, prompt, kwargs, do_sample):
    assert_same(tiny_model, prompt, 3, max_new_tokens=10, do_sample=do_sample, **kwargs)


def test_bad_words_and_suppressed_tokens_never_appear(tiny_model, prompt):
    greedy = core.generate(tiny_model, prompt, max_new_tokens=10).sequences[0, prompt.shape[1]:].tolist()
    banned = sorted(set(greedy))[:3]
    for kwargs in (dict(bad_words_ids=[[t] for t in banned]), dict(suppress_tokens=banned)):
        result = assert_same(tiny_model, prompt, max_new_tokens=10, **kwargs)
        assert not set(result.sequences[0, prompt.shape[1]:].tolist()) & set(banned)


def test_forced_eos_ends_at_max_length(tiny_model, prompt):
    result = assert_same(tiny_model, prompt, max_new_tokens=6, forced_eos_token_id=2)
    assert result.sequences[0, -1].item() == 2


def test_list_of_eos_token_ids(tiny_model, prompt):
    greedy = core.generate(tiny_model, prompt, max_new_tokens=12).sequences[0, prompt.shape[1]:].tolist()
    eos = [greedy[3], 63]  # the 4th greedy token (or its first occurrence) ends the generation
    assert 63 not in greedy
    result = assert_same(tiny_model, prompt, max_new_tokens=12, eos_token_id=eos)
    assert result.sequences.shape[1] == prompt.shape[1] + greedy.index(greedy[3]) + 1
    sampled = assert_same(tiny_model, prompt, 5, max_new_tokens=30, do_sample=True, eos_token_id=[2, 3, 4, 5, 6])
    assert sampled.sequences.shape[1] <= prompt.shape[1] + 30


class StopAfterToken(StoppingCriteria):
    """Stops a row once it has produced ``token`` after the prompt."""

    def __init__(self, token: int, prompt_len: int):
        self.token, self.prompt_len = token, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids[:, self.prompt_len:] == self.token).any(dim=-1)


def test_custom_stopping_criteria(tiny_model, prompt):
    greedy = core.generate(tiny_model, prompt, max_new_tokens=12).sequences[0, prompt.shape[1]:].tolist()
    criteria = StoppingCriteriaList([StopAfterToken(greedy[4], prompt.shape[1])])
    result = assert_same(tiny_model, prompt, max_new_tokens=12, stopping_criteria=criteria)
    assert result.sequences.shape[1] == prompt.shape[1] + greedy.index(greedy[4]) + 1


def test_max_time_stops_early(tiny_model, prompt):
    """``max_time`` is wall-clock, so the number of tokens varies: both stop early, and core's tokens are a
    prefix of the full greedy continuation."""
    full = core.generate(tiny_model, prompt, max_new_tokens=200).sequences[0].tolist()

    class Slow(StoppingCriteria):  # makes each step take ~10 ms so that 0.1 s is a few steps on any machine
        def __call__(self, input_ids, scores, **kwargs):
            time.sleep(0.01)
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    for run in (lambda **k: core.generate(tiny_model, prompt, **k).sequences,
                lambda **k: tiny_model.generate(prompt, **k)):
        t0 = time.perf_counter()
        out = run(max_new_tokens=200, max_time=0.1, stopping_criteria=StoppingCriteriaList([Slow()]))[0].tolist()
        assert time.perf_counter() - t0 < 5  # generous: the machine may be shared
        assert len(prompt[0]) < len(out) < len(full)
        assert out == full[:len(out)]


def test_left_padded_batch_with_attention_mask(tiny_model):
    ids = torch.tensor([[0, 0, 0, 1, 5, 9], [1, 7, 11, 13, 17, 21]])  # row 0 left-padded with pad id 0
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    greedy = assert_same(tiny_model, ids, attention_mask=mask, max_new_tokens=10)
    assert_same(tiny_model, ids, 4, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=8)
    # padding does not change a row: the padded row equals its unpadded run
    alone = core.generate(tiny_model, ids[:1, 3:], max_new_tokens=10).sequences
    assert greedy.sequences[0, 3:].tolist() == alone[0].tolist()


def test_model_default_config(tiny_model, prompt):
    """No settings: the model's generation_config and transformers' defaults apply (20 new tokens, greedy)."""
    ours, reference = both(tiny_model, prompt)
    assert ours.sequences.tolist() == reference.tolist()
    assert ours.sequences.shape[1] == prompt.shape[1] + 20


# --- record invariants -------------------------------------------------------------------------------------
def effect(row, name):
    return next(e for e in row.effects if e.processor == name)


def test_top_k_removes_exactly_vocab_minus_k(tiny_model, prompt):
    recorder = core.ListRecorder(top_n=VOCAB)
    assert_same(tiny_model, prompt, max_new_tokens=6, do_sample=True, top_k=10, recorder=recorder)
    for step in recorder.steps:
        (row,) = step.rows
        top_k = effect(row, "TopKLogitsWarper")
        assert top_k.removed_total == VOCAB - 10
        assert sorted(top_k.removed) == sorted(c.token_id for c in row.candidates if c.score == float("-inf"))
        assert sum(c.prob_after > 0 for c in row.candidates) == 10
        assert row.chosen[0] in [c.token_id for c in row.candidates if c.score > float("-inf")]


def test_top_p_and_min_p_effects_match_their_definitions(tiny_model, prompt):
    recorder = core.ListRecorder(top_n=VOCAB)
    assert_same(tiny_model, prompt, max_new_tokens=5, do_sample=True, top_k=0, top_p=0.6, recorder=recorder)
    for step in recorder.steps:
        (row,) = step.rows
        kept = sorted((c for c in row.candidates if c.score > float("-inf")), key=lambda c: -c.prob)
        # the smallest set of most probable tokens whose mass reaches top_p: without its last token it is < 0.6
        assert sum(c.prob for c in kept[:-1]) < 0.6 + 1e-6
        assert effect(row, "TopPLogitsWarper").removed_total == VOCAB - len(kept)


def test_greedy_chooses_the_argmax_of_the_processed_scores(tiny_model, prompt):
    recorder = core.ListRecorder(top_n=5)
    assert_same(tiny_model, prompt, max_new_tokens=8, repetition_penalty=1.5, recorder=recorder)
    for step in recorder.steps:
        (row,) = step.rows
        assert row.candidates[0].token_id == row.chosen[0]  # candidates are sorted by processed score
        assert row.candidates[0].score == max(c.score for c in row.candidates)
        assert [e.processor for e in row.effects] == ["RepetitionPenaltyLogitsProcessor"]


def test_suppressed_tokens_are_recorded_as_removed(tiny_model, prompt):
    recorder = core.ListRecorder(top_n=VOCAB)
    assert_same(tiny_model, prompt, max_new_tokens=4, suppress_tokens=[60, 33], recorder=recorder)
    for step in recorder.steps:
        suppress = effect(step.rows[0], "SuppressTokensLogitsProcessor")
        assert sorted(suppress.removed) == [33, 60] and suppress.removed_total == 2


def test_trace_round_trips_through_json(tiny_model, prompt):
    result = assert_same(tiny_model, prompt, max_new_tokens=4, do_sample=True, top_k=5)
    assert core.Trace.from_json(result.trace.to_json()) == result.trace


# --- encoder-decoder ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bart():
    torch.manual_seed(0)
    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                        forced_bos_token_id=None, forced_eos_token_id=None)
    return BartForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kwargs", [dict(), dict(do_sample=True, top_k=10),
                                    dict(do_sample=True, top_p=0.9, temperature=0.8),
                                    dict(forced_bos_token_id=7), dict(do_sample=True, num_return_sequences=2)])
def test_encoder_decoder(tiny_bart, prompt, kwargs):
    result = assert_same(tiny_bart, prompt, 11, max_new_tokens=8, **kwargs)
    assert result.sequences[0, 0].item() == 2  # starts from decoder_start_token_id, not the prompt
    if "forced_bos_token_id" in kwargs:
        assert result.sequences[0, 1].item() == 7


# --- the embedded model --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat(embedded):
    tok = embedded.tokenizer
    return tok.apply_chat_template([{"role": "user", "content": "Name three colours."}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)["input_ids"]


@pytest.mark.slow
def test_embedded_greedy_and_sampling(embedded, chat):
    model = embedded.model
    assert_same(model, chat, max_new_tokens=8, do_sample=False, tokenizer=embedded.tokenizer)
    assert_same(model, chat, 3, max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.9, top_k=40)
    assert_same(model, chat, 4, max_new_tokens=6, do_sample=True, min_p=0.05, num_return_sequences=2)


@pytest.mark.slow
def test_embedded_default_config(embedded, chat):
    ours, reference = both(embedded.model, chat)
    assert ours.sequences.tolist() == reference.tolist()
    assert ours.sequences.shape[1] <= chat.shape[1] + 20  # 20 new tokens unless the model ends earlier


@pytest.mark.slow
def test_embedded_stop_strings(embedded, chat):
    tok = embedded.tokenizer
    full = core.generate(embedded.model, chat, max_new_tokens=20).sequences[0, chat.shape[1]:]
    text = tok.decode(full)
    stop = text.strip().split()[1]  # the second word of the greedy answer
    result = assert_same(embedded.model, chat, max_new_tokens=20, stop_strings=[stop], tokenizer=tok)
    new_text = tok.decode(result.sequences[0, chat.shape[1]:])
    assert new_text.rstrip().endswith(stop) or stop in new_text
    assert result.sequences.shape[1] < chat.shape[1] + 20
    assert result.trace.texts[0] == tok.decode(result.sequences[0, chat.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_embedded_left_padded_batch(embedded):
    tok = embedded.tokenizer
    tok.padding_side = "left"
    batch = tok(["The capital of France is", "Once upon a time, in a land far away,"], return_tensors="pt",
                padding=True)
    assert batch["attention_mask"][0, 0] == 0  # the shorter row is padded on the left
    assert_same(embedded.model, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=6)
    assert_same(embedded.model, batch["input_ids"], 5, attention_mask=batch["attention_mask"], max_new_tokens=6,
                do_sample=True, top_k=20)
