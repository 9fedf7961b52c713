"""Contrastive search on the tiny Llama: token parity with transformers 4.55.4, the known equivalences
with greedy search, and records that agree with the model's own forward pass."""

from __future__ import annotations

import pytest
import torch

import core
from core.loop import RunContext
from core.records import ListRecorder, Trace
from core.strategies.contrastive import contrastive_search

from conftest import tiny_llama

PROMPT = [[1, 5, 9, 13, 17, 21]]
# Left padding. With the pad token 0 (the embedding's padding_idx) the padded positions' final hidden states
# are zero vectors, their cosine similarity is 0/0 = NaN, and 4.55.4's mask (adding finfo.min) cannot remove
# a NaN: the whole row's penalties are NaN and `max` picks candidate 0, i.e. that row decodes greedily. We
# keep that for token parity; padding with another token id (PADDED_3, same mask) is the ordinary case.
PADDED = [[0, 0, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]
PADDED_3 = [[3, 3, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]
PAD_MASK = [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]

# What transformers 4.55.4 generates (max_new_tokens=10) on tiny_llama(0), made by hand with the recipe in
# tests/oracle/README.md.
ORACLE_4_55_4 = [
    (PROMPT, None, {"penalty_alpha": 0.6, "top_k": 4},
     [[1, 5, 9, 13, 17, 21, 45, 46, 6, 40, 44, 48, 8, 50, 18, 58]]),
    (PROMPT, None, {"penalty_alpha": 0.4, "top_k": 6},
     [[1, 5, 9, 13, 17, 21, 45, 46, 28, 16, 26, 53, 31, 48, 42, 30]]),
    (PROMPT, None, {"penalty_alpha": 0.9, "top_k": 3, "repetition_penalty": 1.3},
     [[1, 5, 9, 13, 17, 21, 60, 27, 53, 41, 55, 61, 15, 12, 49, 19]]),
    (PADDED, PAD_MASK, {"penalty_alpha": 0.6, "top_k": 4},  # row 0 decodes greedily (NaN penalties, see above)
     [[0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 60, 33, 22, 60, 33],
      [1, 5, 9, 13, 17, 21, 45, 46, 6, 40, 44, 48, 8, 50, 18, 58]]),
    (PADDED_3, PAD_MASK, {"penalty_alpha": 0.6, "top_k": 4},
     [[3, 3, 1, 5, 9, 13, 20, 57, 15, 60, 27, 6, 40, 44, 47, 10],
      [1, 5, 9, 13, 17, 21, 45, 46, 6, 40, 44, 48, 8, 50, 18, 58]]),
]


def _mask(ids, mask=None) -> torch.Tensor:
    return torch.ones_like(ids) if mask is None else torch.tensor(mask)


def _greedy(model, ids, mask=None, n=10):
    return model.generate(ids, attention_mask=_mask(ids, mask), max_new_tokens=n, do_sample=False).tolist()


def _run_loop_directly(model, ids, mask=None, **settings):
    """Run the contrastive loop itself, bypassing the mode selection (which sends penalty_alpha=0 and
    top_k<=1 to greedy search), through transformers' own input preparation."""
    ctx = RunContext()

    def loop(model, input_ids, logits_processor, stopping_criteria, generation_config, inputs_tensor=None, **kw):
        return contrastive_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **kw)

    return model.generate(ids, attention_mask=_mask(ids, mask), max_new_tokens=10, custom_generate=loop,
                          **settings).tolist()


@pytest.mark.parametrize("ids, mask, settings, expected", ORACLE_4_55_4,
                         ids=["a0.6-k4", "a0.4-k6", "rep1.3", "padded-nan", "padded"])
def test_matches_transformers_4_55_4(tiny_model, ids, mask, settings, expected):
    ids = torch.tensor(ids)
    result = core.generate(tiny_model, ids, attention_mask=_mask(ids, mask), max_new_tokens=10, **settings)
    assert result.sequences.tolist() == expected
    recorded = core.generate(tiny_model, ids, attention_mask=_mask(ids, mask), max_new_tokens=10,
                             recorder=ListRecorder(), **settings)
    assert recorded.sequences.tolist() == expected  # recording changes nothing


def test_penalty_alpha_zero_is_greedy(tiny_model):
    ids = torch.tensor(PROMPT)
    greedy = _greedy(tiny_model, ids)
    # through generate, the mode selection already calls it greedy search...
    assert core.generate(tiny_model, ids, max_new_tokens=10, penalty_alpha=0.0, top_k=4).sequences.tolist() == greedy
    # ...and the contrastive loop itself agrees: with alpha 0 the score is the probability
    assert _run_loop_directly(tiny_model, ids, penalty_alpha=0.0, top_k=4) == greedy
    padded = torch.tensor(PADDED_3)
    assert _run_loop_directly(tiny_model, padded, PAD_MASK, penalty_alpha=0.0, top_k=5) == _greedy(
        tiny_model, padded, PAD_MASK)


def test_top_k_one_is_greedy(tiny_model):
    ids = torch.tensor(PROMPT)
    greedy = _greedy(tiny_model, ids)
    assert core.generate(tiny_model, ids, max_new_tokens=10, penalty_alpha=0.6, top_k=1).sequences.tolist() == greedy
    assert _run_loop_directly(tiny_model, ids, penalty_alpha=0.6, top_k=1) == greedy  # one candidate: the argmax


def _record(model, ids, mask=None, **settings):
    recorder = ListRecorder()
    result = core.generate(model, ids, attention_mask=_mask(ids, mask), max_new_tokens=10, recorder=recorder,
                           **settings)
    return result, recorder.trace


def test_records_one_chosen_candidate_per_row_the_best_score(tiny_model):
    ids = torch.tensor(PADDED_3)
    result, trace = _record(tiny_model, ids, PAD_MASK, penalty_alpha=0.6, top_k=4)
    assert len(trace.steps) == 10
    for step, record in enumerate(trace.steps):
        assert record.strategy == "contrastive_search" and len(record.contrastive) == 2
        for row, candidates in enumerate(record.contrastive):
            assert len(candidates) == 4
            chosen = [c for c in candidates if c.chosen]
            assert len(chosen) == 1
            assert chosen[0].score == max(c.score for c in candidates)
            assert chosen[0].token_id == result.sequences[row, ids.shape[1] + step].item()
            assert record.rows[row].chosen == [chosen[0].token_id]
            # the candidates are the top_k of the processed distribution, in order
            confidences = [c.confidence for c in candidates]
            assert confidences == sorted(confidences, reverse=True)
            top = {c.token_id: c.prob_after for c in record.rows[row].candidates}
            for c in candidates:
                assert c.confidence == pytest.approx(top[c.token_id], rel=1e-5)
                assert -1.0 - 1e-5 <= c.degeneration_penalty <= 1.0 + 1e-5
                assert c.score == pytest.approx(0.4 * c.confidence - 0.6 * c.degeneration_penalty, abs=1e-6)
        assert record.cache.kind == "DynamicCache"


def test_recorded_penalty_is_the_max_cosine_similarity_to_the_context(tiny_model):
    """Reference: the model's own final hidden states for prompt + candidate, compared by hand."""
    ids = torch.tensor(PROMPT)
    _, trace = _record(tiny_model, ids, penalty_alpha=0.6, top_k=4)
    for candidate in trace.steps[0].contrastive[0]:
        with torch.no_grad():
            hidden = tiny_model(torch.tensor([PROMPT[0] + [candidate.token_id]]),
                                output_hidden_states=True).hidden_states[-1][0]  # [S+1, H]
        cosine = torch.nn.functional.cosine_similarity(hidden[:-1], hidden[-1:], dim=-1)  # [S]
        assert candidate.degeneration_penalty == pytest.approx(cosine.max().item(), abs=1e-5)


def test_trace_json_round_trip(tiny_model):
    _, trace = _record(tiny_model, torch.tensor(PADDED_3), PAD_MASK, penalty_alpha=0.6, top_k=4)
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert isinstance(again.steps[3].contrastive[1][0], type(trace.steps[3].contrastive[1][0]))


def test_stream_yields_the_returned_tokens(tiny_model):
    ids = torch.tensor(PROMPT)
    events = list(core.stream(tiny_model, ids, max_new_tokens=10, penalty_alpha=0.6, top_k=4))
    final = events[-1]
    assert final.done and final.tokens == [final.result.sequences[0, ids.shape[1]:].tolist()]
    assert all(e.record.contrastive is not None for e in events[:-1])


def test_tiny_llama_factory_is_deterministic():
    """The inline oracle ids assume tiny_llama(0) is the model they were produced on."""
    a, b = tiny_llama(0), tiny_llama(0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_needs_a_cache(tiny_model):
    with pytest.raises(ValueError, match="use_cache"):
        core.generate(tiny_model, torch.tensor(PROMPT), max_new_tokens=3, penalty_alpha=0.6, top_k=4, use_cache=False)


def test_encoder_decoder_matches_transformers_4_55_4():
    """A 2+2-layer Bart (decoder hidden states, ``EncoderDecoderCache``). 4.55.4's ids below (greedy gives
    [[2, 16, 16, 16, 16, 16, 16, 16, 28]]), by the recipe in ``tests/oracle/README.md`` with this ``BartConfig``."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                        forced_bos_token_id=None, forced_eos_token_id=None)
    model = BartForConditionalGeneration(config).eval()
    recorder = ListRecorder()
    result = core.generate(model, torch.tensor(PROMPT), max_new_tokens=8, penalty_alpha=0.6, top_k=4, recorder=recorder)
    assert result.sequences.tolist() == [[2, 27, 41, 8, 5, 3, 47, 54, 15]]
    assert recorder.trace.steps[0].cache.kind == "EncoderDecoderCache"


@pytest.mark.parametrize("cache_implementation, extra", [
    ("static", {}),
    ("quantized", {"cache_config": {"backend": "quanto", "nbits": 4, "q_group_size": 16, "residual_length": 2}}),
])
def test_rejects_caches_that_cannot_repeat_rows(tiny_model, cache_implementation, extra):
    with pytest.raises(ValueError, match="cache_implementation"):
        core.generate(tiny_model, torch.tensor(PROMPT), max_new_tokens=3, penalty_alpha=0.6, top_k=4,
                      cache_implementation=cache_implementation, **extra)


# --- the cache kept one row per sequence, the head on the chosen row ------------------------------------------
def tiny_gemma2(seed: int = 0):
    """A 2-layer Gemma2: a sliding window of 4 on every other layer (``DynamicSlidingWindowLayer``) and logits
    softcapped after the LM head, so that they are not the plain head on the last hidden state."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                          sliding_window=4, final_logit_softcapping=5.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = Gemma2ForCausalLM(config).eval()
    model.generation_config.pad_token_id = 0
    return model


def _as_4_55_4(monkeypatch):
    """Contrastive search as 4.55.4 runs it: the cache repeated per candidate, the logits of every candidate."""
    from core.strategies import contrastive

    monkeypatch.setattr(contrastive.SharedPrefix, "fits", staticmethod(lambda cache, model: False))
    monkeypatch.setattr(contrastive, "plain_head", lambda model, outputs: None)


@pytest.mark.parametrize("model_name, ids, mask", [
    ("llama", PADDED_3, PAD_MASK),
    ("gemma2", [[1, 5, 9, 13, 17, 21, 25, 29]], None),  # longer than the sliding window
])
def test_same_records_as_repeating_the_cache(tiny_model, monkeypatch, model_name, ids, mask):
    """The shared prefix gives attention the very tensors 4.55.4's repeated cache gives it (penalties equal to the
    bit); the chosen row's logits come from the head on one row rather than on K, so they agree to float rounding."""
    model = tiny_model if model_name == "llama" else tiny_gemma2()
    ids = torch.tensor(ids)
    ours, ours_trace = _record(model, ids, mask, penalty_alpha=0.6, top_k=4)
    with monkeypatch.context() as patch:
        _as_4_55_4(patch)
        theirs, theirs_trace = _record(model, ids, mask, penalty_alpha=0.6, top_k=4)
    assert ours.sequences.tolist() == theirs.sequences.tolist()
    for a, b in zip(ours_trace.steps, theirs_trace.steps):
        for row_a, row_b in zip(a.contrastive, b.contrastive):
            assert [c.degeneration_penalty for c in row_a] == [c.degeneration_penalty for c in row_b]
            assert [c.token_id for c in row_a] == [c.token_id for c in row_b]
            assert [c.confidence for c in row_a] == pytest.approx([c.confidence for c in row_b], rel=1e-5, abs=1e-7)
        assert a.cache == b.cache


def test_the_cache_is_never_repeated_per_candidate(tiny_model, monkeypatch):
    from transformers.cache_utils import DynamicLayer

    def refuse(self, *args):
        raise AssertionError("the cache was copied per candidate")

    monkeypatch.setattr(DynamicLayer, "batch_repeat_interleave", refuse)
    monkeypatch.setattr(DynamicLayer, "batch_select_indices", refuse)
    result = core.generate(tiny_model, torch.tensor(PADDED_3), attention_mask=torch.tensor(PAD_MASK),
                           max_new_tokens=10, penalty_alpha=0.6, top_k=4)
    assert result.sequences.tolist() == ORACLE_4_55_4[4][-1]


def test_the_head_runs_alone_only_where_the_logits_are_the_plain_head(tiny_model):
    from core.lens import plain_head

    def prefill(model):
        with torch.no_grad():
            return model(torch.tensor(PROMPT), output_hidden_states=True)

    assert plain_head(tiny_model, prefill(tiny_model)) is tiny_model.lm_head
    assert plain_head(tiny_gemma2(), prefill(tiny_gemma2())) is None  # softcapped after the head
