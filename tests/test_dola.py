"""DoLa on tiny Llamas: token parity with transformers 4.55.4 (greedy, sampling, repetition penalty, every
way of naming layers) and records that agree with the model's own forward pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, LlamaConfig

import core
from core.records import ListRecorder, Trace
from core.strategies.dola import candidate_layers

from conftest import tiny_llama

PROMPT = [[1, 5, 9, 13, 17, 21]]
PADDED = [[0, 0, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]  # left padding with pad_token_id 0

# What transformers 4.55.4 generates (max_new_tokens=10) on tiny_llama(0, layers=6) (and tiny_llama(0) for the
# 2-layer case), made by hand with the recipe in tests/oracle/README.md.
ORACLE_4_55_4 = [
    ("high", 6, PROMPT, None, {"dola_layers": "high"},
     [[1, 5, 9, 13, 17, 21, 41, 55, 41, 55, 41, 4, 41, 4, 7, 7]]),
    ("low-rep1.2", 6, PROMPT, None, {"dola_layers": "low", "repetition_penalty": 1.2},
     [[1, 5, 9, 13, 17, 21, 41, 55, 41, 4, 7, 7, 7, 7, 7, 7]]),
    ("list", 6, PROMPT, None, {"dola_layers": [0, 1, 3, 4]},
     [[1, 5, 9, 13, 17, 21, 41, 55, 41, 55, 41, 4, 41, 4, 7, 7]]),
    ("single-layer", 6, PROMPT, None, {"dola_layers": [2]},
     [[1, 5, 9, 13, 17, 21, 41, 55, 41, 55, 41, 4, 41, 4, 7, 7]]),
    ("padded", 6, PADDED, None, {"dola_layers": "high"},
     [[0, 0, 1, 5, 9, 13, 51, 41, 55, 41, 4, 41, 4, 7, 7, 7],
      [1, 5, 9, 13, 17, 21, 41, 55, 41, 55, 41, 4, 41, 4, 7, 7]]),
    ("sample-seed7", 6, PROMPT, 7, {"dola_layers": "high", "do_sample": True, "top_k": 0, "temperature": 0.8},
     [[1, 5, 9, 13, 17, 21, 16, 59, 4, 8, 55, 44, 8, 6, 51, 9]]),
    ("2-layers-low", 2, PROMPT, None, {"dola_layers": "low"},
     [[1, 5, 9, 13, 17, 21, 60, 33, 46, 46, 46, 47, 34, 32, 36, 33]]),
]

_MODELS: dict[int, torch.nn.Module] = {}


def _model(layers: int):
    if layers not in _MODELS:
        _MODELS[layers] = tiny_llama(0, layers=layers)
    return _MODELS[layers]


def _mask(ids: torch.Tensor) -> torch.Tensor:
    return (ids != 0).long()


def _generate(model, ids, seed=None, recorder=None, **settings):
    if seed is not None:
        torch.manual_seed(seed)
    return core.generate(model, ids, attention_mask=_mask(ids), max_new_tokens=10, recorder=recorder, **settings)


@pytest.mark.parametrize("name, layers, ids, seed, settings, expected", ORACLE_4_55_4,
                         ids=[case[0] for case in ORACLE_4_55_4])
def test_matches_transformers_4_55_4(name, layers, ids, seed, settings, expected):
    ids = torch.tensor(ids)
    assert _generate(_model(layers), ids, seed, **settings).sequences.tolist() == expected
    recorded = _generate(_model(layers), ids, seed, recorder=ListRecorder(), **settings)
    assert recorded.sequences.tolist() == expected  # recording changes nothing (not even the random stream)


@pytest.mark.parametrize("layers, tied, expected_low, expected_high", [
    (6, False, [0, 2], [3, 5]),
    (2, False, [0], [1]),
    (30, True, list(range(2, 15, 2)), list(range(15, 30, 2))),  # SmolLM2-135M: tied, the embedding layers skipped
    (2, True, [1], [1]),
    (48, False, list(range(0, 20, 2)), list(range(28, 48, 2))),  # > 40 layers: 20 layers at either end
])
def test_candidate_layers_follow_4_55_4(layers, tied, expected_low, expected_high):
    model = SimpleNamespace(config=LlamaConfig(num_hidden_layers=layers, tie_word_embeddings=tied))
    assert candidate_layers(model, "low") == expected_low
    assert candidate_layers(model, "high") == expected_high
    assert candidate_layers(model, [0, layers - 1, layers]) == [0, layers - 1]  # the final layer is no candidate


def _trace(ids, layers=6, **settings):
    recorder = ListRecorder()
    result = _generate(_model(layers), torch.tensor(ids), recorder=recorder, **settings)
    return result, recorder.trace


@pytest.mark.parametrize("dola_layers", ["high", "low", [0, 1, 3, 4], [2]])
def test_records_divergence_per_candidate_layer_and_the_layer_with_the_largest(dola_layers):
    result, trace = _trace(PROMPT, dola_layers=dola_layers)
    expected_layers = candidate_layers(_model(6), dola_layers)
    for step, record in enumerate(trace.steps):
        (dola,) = record.dola
        assert dola.candidate_layers == expected_layers
        assert len(dola.js_divergences) == len(dola.candidate_layers)
        best = max(range(len(dola.js_divergences)), key=dola.js_divergences.__getitem__)
        assert dola.chosen_layer == dola.candidate_layers[best]
        # greedy without processors: the chosen token is the contrast's best
        assert dola.contrasted[0].token_id == record.rows[0].chosen[0] == result.sequences[0, 6 + step].item()


def test_batch_shares_one_layer_chosen_by_the_mean_divergence():
    """4.55.4 averages the divergences over the batch and contrasts one layer for all rows."""
    _, trace = _trace(PADDED, dola_layers="high")
    for record in trace.steps:
        assert len(record.dola) == 2
        assert record.dola[0].chosen_layer == record.dola[1].chosen_layer
        js = torch.tensor([d.js_divergences for d in record.dola])  # [B, L]
        assert record.dola[0].candidate_layers[int(js.mean(0).argmax())] == record.dola[0].chosen_layer


def test_recorded_facts_match_the_models_forward():
    """Reference: the final-layer logits and the LM head read at each candidate layer, from one plain forward."""
    model = _model(6)
    _, trace = _trace(PROMPT, dola_layers="high")
    dola = trace.steps[0].dola[0]
    with torch.no_grad():
        out = model(torch.tensor(PROMPT), output_hidden_states=True)
    final = out.logits[0, -1].float()  # [V]
    for candidate in dola.contrasted:
        assert candidate.logit == pytest.approx(final[candidate.token_id].item(), abs=1e-5)
    final_p = final.softmax(-1)
    for layer, recorded in zip(dola.candidate_layers, dola.js_divergences):
        early_p = model.lm_head(out.hidden_states[layer][0, -1]).softmax(-1)  # no final norm, as in 4.55.4
        mid = 0.5 * (final_p + early_p)
        js = 0.5 * ((mid * (mid.log() - final_p.log())).mean() + (mid * (mid.log() - early_p.log())).mean())
        assert recorded == pytest.approx(js.item(), rel=1e-4)
    # the contrast keeps only tokens with at least 10% of the final layer's top probability
    kept = [c for c in dola.contrasted if c.score != float("-inf")]
    assert kept and all(final_p[c.token_id] >= 0.1 * final_p.max() - 1e-7 for c in kept)


def test_trace_json_round_trip():
    _, trace = _trace(PADDED, dola_layers="low", repetition_penalty=1.2)
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert again.steps[2].dola[1].contrasted[0] == trace.steps[2].dola[1].contrasted[0]


def test_rejects_encoder_decoder_models():
    torch.manual_seed(0)
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    model = BartForConditionalGeneration(config).eval()
    with pytest.raises(ValueError, match="dola_layers"):
        core.generate(model, torch.tensor(PROMPT), max_new_tokens=3, dola_layers="high")


def test_static_cache_gives_the_same_tokens():
    ids = torch.tensor(PROMPT)
    expected = ORACLE_4_55_4[0][-1]
    assert _generate(_model(6), ids, dola_layers="high", cache_implementation="static").sequences.tolist() == expected
