"""The logit lens (``ListRecorder(lens=True)``): on tiny Llamas, each layer's record is what the test computes from
the model's own hidden states through its final norm and LM head, the last layer is the step's own distribution,
nothing of it is computed when it is off; and ``head_rows``, the sliced LM head the readouts share with DoLa."""

from __future__ import annotations

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

import core
import core.lens
from core.lens import LENS_TOP_N, head_rows, lens_problem
from core.records import ListRecorder, Trace

from conftest import tiny_llama

PROMPT = [[1, 5, 9, 13, 17, 21]]
PADDED = [[3, 3, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]
PAD_MASK = [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]
LAYERS = 4

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0, layers=LAYERS)


def _run(model, ids=PROMPT, mask=None, lens=True, **settings):
    ids = torch.tensor(ids)
    mask = torch.ones_like(ids) if mask is None else torch.tensor(mask)
    recorder = ListRecorder(lens=lens)
    result = core.generate(model, ids, attention_mask=mask, max_new_tokens=6, recorder=recorder, **settings)
    return result, recorder.trace


@pytest.mark.parametrize("settings", [{}, {"do_sample": True, "top_k": 10, "temperature": 0.7},
                                      {"repetition_penalty": 1.5}], ids=["greedy", "sampling", "processor"])
def test_last_layer_is_the_steps_own_distribution(model, settings):
    torch.manual_seed(0)
    result, trace = _run(model, **settings)
    for record in trace.steps:
        (row,) = record.lens
        assert [layer.layer for layer in row] == list(range(LAYERS + 1))  # embeddings, then every layer
        final, step = row[-1], record.rows[0]
        assert final.kl_to_final == 0.0
        candidates = {c.token_id: c for c in step.candidates}
        for top in final.top:  # the final layer's top tokens are the step's raw logits and probabilities
            assert top.logit == candidates[top.token_id].logit
            assert top.prob == pytest.approx(candidates[top.token_id].prob, rel=1e-6)
        chosen = step.chosen[0]
        assert final.chosen_prob == pytest.approx(candidates[chosen].prob, rel=1e-6)
        assert final.chosen_rank == sum(c.logit > candidates[chosen].logit for c in step.candidates)
    if not settings:  # greedy without processors: the chosen token is the final layer's top one
        assert all(r.lens[0][-1].chosen_rank == 0 and r.lens[0][-1].top[0].token_id == r.rows[0].chosen[0]
                   for r in trace.steps)


@pytest.mark.parametrize("chunk", [8, 2], ids=["one_chunk", "chunks_of_2"])
def test_each_layer_is_read_through_the_final_norm_and_the_head(model, chunk, monkeypatch):
    """Reference: one plain forward of the prompt; layer l's distribution is softmax(lm_head(norm(hidden_l))),
    whether the layers are read in one chunk or several."""
    monkeypatch.setattr(core.lens, "LENS_CHUNK", chunk)
    _, trace = _run(model)
    first = trace.steps[0].lens[0]
    chosen = trace.steps[0].rows[0].chosen[0]
    with torch.no_grad():
        out = model(torch.tensor(PROMPT), output_hidden_states=True)
        final_p = out.logits[0, -1].float().softmax(-1)
        for layer in range(LAYERS):
            logits = model.lm_head(model.model.norm(out.hidden_states[layer][0, -1]))  # [V]
            p = logits.softmax(-1)
            record = first[layer]
            assert record.top[0].token_id == int(logits.argmax())
            assert [t.token_id for t in record.top] == logits.topk(len(record.top)).indices.tolist()
            assert record.top[0].prob == pytest.approx(float(p.max()), rel=1e-5)
            assert record.chosen_prob == pytest.approx(float(p[chosen]), rel=1e-5)
            assert record.chosen_rank == int((logits > logits[chosen]).sum())
            kl = float((final_p * (out.logits[0, -1].log_softmax(-1) - logits.log_softmax(-1))).sum())
            assert record.kl_to_final == pytest.approx(kl, rel=1e-3, abs=1e-7)  # a small sum of differences
    assert len(first[0].top) == LENS_TOP_N


def test_batch_rows_each_get_their_own_lens(model):
    result, trace = _run(model, PADDED, PAD_MASK)
    for record in trace.steps:
        assert len(record.lens) == 2
        for row, lens_row in enumerate(record.lens):
            assert lens_row[-1].top[0].token_id == record.rows[row].chosen[0]  # greedy: the final layer's top


def test_rows_that_finished_get_no_layers(model):
    """A batch whose first row reaches EOS early (as in Sample N): the rows still running keep their lens."""
    _, free = _run(model, PADDED, PAD_MASK)
    eos = free.steps[1].rows[0].chosen[0]  # the first row's second token ends it
    assert eos not in [r.chosen[0] for step in free.steps for r in step.rows if r.row == 1]
    _, trace = _run(model, PADDED, PAD_MASK, eos_token_id=eos)
    assert trace.steps[1].rows[0].chosen == [eos] and len(trace.steps) > 2
    for record in trace.steps[2:]:
        assert record.rows[0].chosen == [] and record.lens[0] == []
        assert len(record.lens[1]) == LAYERS + 1 and record.lens[1][-1].top[0].token_id == record.rows[1].chosen[0]


def test_dola_lens_agrees_with_the_final_layer_dola_contrasts():
    model = tiny_llama(0, layers=6)
    result, trace = _run(model, dola_layers="high")
    plain = core.generate(model, torch.tensor(PROMPT), max_new_tokens=6, dola_layers="high")
    assert result.sequences.tolist() == plain.sequences.tolist()  # the lens changes no token
    for record in trace.steps:
        final = record.lens[0][-1]
        contrasted = {c.token_id: c for c in record.dola[0].contrasted}
        for top in final.top:
            if top.token_id in contrasted:
                assert top.logit == contrasted[top.token_id].logit  # DoLa's final-layer logits, as recorded


def test_off_unless_asked_and_then_no_hidden_states_are_computed(model):
    asked: list[bool] = []
    hook = model.register_forward_pre_hook(lambda mod, args, kwargs: asked.append(bool(kwargs.get(
        "output_hidden_states"))), with_kwargs=True)
    try:
        result, trace = _run(model, lens=False)
        assert asked and not any(asked)
        assert all(record.lens is None for record in trace.steps)
        asked.clear()
        with_lens, _ = _run(model, lens=True)
        assert asked and all(asked)
    finally:
        hook.remove()
    assert with_lens.sequences.tolist() == result.sequences.tolist()


def test_other_strategies_leave_it_empty(model):
    _, trace = _run(model, num_beams=2)
    assert all(record.lens is None for record in trace.steps)


def test_trace_json_round_trip(model):
    _, trace = _run(model, PADDED, PAD_MASK)
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert isinstance(again.steps[1].lens[1][2], core.LayerLens)


def test_stream_carries_the_lens(model):
    events = list(core.stream(model, torch.tensor(PROMPT), max_new_tokens=4, lens=True))
    assert all(len(e.record.lens[0]) == LAYERS + 1 for e in events[:-1])
    assert all(e.record.lens is None for e in core.stream(model, torch.tensor(PROMPT), max_new_tokens=2)
               if e.record is not None)


def test_encoder_decoder_models_are_refused_with_the_reason():
    torch.manual_seed(0)
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    bart = BartForConditionalGeneration(config).eval()
    assert "encoder-decoder" in lens_problem(bart)
    with pytest.raises(ValueError, match="`lens` must be off"):
        core.generate(bart, torch.tensor(PROMPT), max_new_tokens=2, recorder=ListRecorder(lens=True))


@pytest.mark.parametrize("rows", [1, 2, 8, 31])
@pytest.mark.parametrize("bias", [False, True])
def test_head_rows_gives_the_heads_own_logits(rows, bias):
    """The head in slices of output features: each logit is the same dot product, so the same float."""
    torch.manual_seed(rows)
    head = torch.nn.Linear(48, 1200, bias=bias)
    hidden = torch.randn(rows, 48)
    with torch.no_grad():
        assert torch.equal(head_rows(head, hidden), head(hidden))


@pytest.mark.slow
def test_embedded_lens(embedded):
    model = embedded.model
    ids = embedded.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    recorder = ListRecorder(lens=True)
    core.generate(model, ids, max_new_tokens=3, recorder=recorder, tokenizer=embedded.tokenizer)
    layers = model.config.num_hidden_layers
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        middle = model.lm_head(model.model.norm(out.hidden_states[layers // 2][0, -1]))
    first = recorder.steps[0].lens[0]
    assert len(first) == layers + 1
    assert first[layers // 2].top[0].token_id == int(middle.argmax())
    assert first[-1].top[0].token_id == recorder.steps[0].rows[0].chosen[0]
    assert first[-1].top[0].text == embedded.tokenizer.decode([first[-1].top[0].token_id])
