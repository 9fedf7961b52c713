"""Watched tokens (``Recorder.watch``): each watched token's recorded probability at every stage of the processor
chain is the softmax of that stage's scores, its rank the count of tokens scoring higher; per layer of the logit
lens likewise; nothing is recorded (or computed) when none is watched; traces round-trip through JSON and traces
written before the field still load; the tab's ``watch`` field parses ids and texts and names what it refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

import core
import core.lens
from core.observe import Recording
from core.records import MAX_WATCH, ListRecorder, Trace, WatchedLayer, WatchedToken

from conftest import tiny_llama

PROMPT = [[1, 5, 9, 13, 17, 21]]
LAYERS = 3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0, layers=LAYERS)


def _context(model, watch):
    return Recording(ListRecorder(top_n=3, watch=watch), model, tokenizer=None)


def _expected(stage: torch.Tensor, token_id: int) -> tuple[float, int]:
    """The probability and rank a watched token should have in one stage's scores [V]."""
    stage = stage.float()
    return float(stage.softmax(-1)[token_id]), int((stage > stage[token_id]).sum())


def test_synthetic_logits_through_a_processor_list(model):
    torch.manual_seed(0)
    logits = torch.randn(2, 20) * 3  # [B, V]: two rows over 20 tokens
    input_ids = torch.tensor([[4, 4, 7], [1, 2, 3]])
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.5), TemperatureLogitsWarper(0.7),
                                      TopKLogitsWarper(6), TopPLogitsWarper(0.8)])
    ctx = _context(model, watch=[4, 7, 0, 19])
    scores, stages = ctx.process(input_ids, logits, processors)
    chosen = scores.argmax(-1)
    rows = ctx.row_steps(logits, scores, stages, [[int(c)] for c in chosen])
    outputs = [logits] + [s for _, s in stages]  # what each stage of the chain saw or made, [B, V] each
    for b, rs in enumerate(rows):
        assert [w.token_id for w in rs.watched] == [4, 7, 0, 19]
        for w in rs.watched:
            assert len(w.probs) == len(w.scores) == len(w.ranks) == len(rs.effects) + 1
            for k, stage in enumerate(outputs):
                prob, rank = _expected(stage[b], w.token_id)
                assert w.probs[k] == pytest.approx(prob, rel=1e-6, abs=1e-12)
                assert w.ranks[k] == rank
                assert w.scores[k] == float(stage[b, w.token_id])
        # the last stage is the distribution the step chose from: a watched candidate's probability there is its own
        by_id = {c.token_id: c for c in rs.candidates}
        for w in rs.watched:
            if w.token_id in by_id:
                assert w.probs[-1] == pytest.approx(by_id[w.token_id].prob_after, rel=1e-6)
    # a removed token reads 0 with every surviving token ahead of it
    removed = [w for rs in rows for w in rs.watched if w.scores[-1] == float("-inf")]
    assert removed and all(w.probs[-1] == 0.0 for w in removed)


def test_nothing_watched_records_nothing(model):
    logits = torch.randn(1, 20)
    ctx = _context(model, watch=[])
    scores, stages = ctx.process(torch.tensor([[1]]), logits, LogitsProcessorList([TopKLogitsWarper(5)]))
    (rs,) = ctx.row_steps(logits, scores, stages, [[int(scores.argmax())]])
    assert rs.watched == []


def _generate(model, watch, lens=False, **settings):
    recorder = ListRecorder(lens=lens, watch=watch)
    ids = torch.tensor(PROMPT)
    core.generate(model, ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, recorder=recorder, **settings)
    return recorder.trace


SETTINGS = [{}, {"do_sample": True, "top_k": 10, "temperature": 0.7, "repetition_penalty": 1.3}, {"num_beams": 2}]


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy", "sampling", "beam"])
def test_tiny_llama_stages_are_softmaxes_of_the_recorded_logits(model, settings):
    """The first stage is the model's own distribution (its raw logits: the candidates' ``prob``), the last the one the
    step chose from (``prob_after``); the stages between follow the recorded effects, one each."""
    torch.manual_seed(0)
    watch = [3, 40, 63]
    trace = _generate(model, watch, **settings)
    assert trace.steps
    for record in trace.steps:
        for rs in record.rows:
            assert [w.token_id for w in rs.watched] == watch
            by_id = {c.token_id: c for c in rs.candidates}
            for w in rs.watched:
                assert len(w.probs) == len(rs.effects) + 1
                if w.token_id in by_id:
                    assert w.probs[0] == pytest.approx(by_id[w.token_id].prob, rel=1e-5)
                    assert w.probs[-1] == pytest.approx(by_id[w.token_id].prob_after, rel=1e-5, abs=1e-12)
                assert all(0 <= r < 64 for r in w.ranks)
                # each stage's probability is the softmax of the recorded score relative to the chosen token's
                chosen = rs.chosen[0] if rs.chosen else None  # a finished beam row chose none
                if chosen in by_id and w.scores[-1] != float("-inf"):
                    ratio = torch.tensor(w.scores[-1] - by_id[chosen].score).exp().item()
                    assert w.probs[-1] / by_id[chosen].prob_after == pytest.approx(ratio, rel=1e-4)


def test_tiny_llama_lens_layers(model):
    """Per layer, each watched token's probability and rank are what that layer's readout gives (the final layer:
    the step's raw logits, so the watched token's first stage)."""
    watch = [3, 40]
    trace = _generate(model, watch, lens=True)
    for record in trace.steps:
        (layers,) = record.lens
        rs = record.rows[0]
        for layer in layers:
            assert [w.token_id for w in layer.watched] == watch
            assert all(0.0 <= w.prob <= 1.0 for w in layer.watched)
        for w_layer, w_step in zip(layers[-1].watched, rs.watched):
            assert w_layer.prob == pytest.approx(w_step.probs[0], rel=1e-5)
            assert w_layer.rank == w_step.ranks[0]


def test_lens_watched_against_the_readout(model):
    """``layer_lens`` on given hidden states: a watched token's probability is the softmax of its layer's readout."""
    torch.manual_seed(1)
    states = torch.randn(LAYERS, 2, model.config.hidden_size)  # [L, B, H]
    final = torch.randn(2, 64)  # [B, V]
    layers = core.lens.layer_lens(model, states, final, [[1], [2]], lambda row, i: str(i), watch=[5, 9])
    with torch.no_grad():
        readouts = [core.lens.readout(model, states[i]) for i in range(LAYERS)] + [final]  # [B, V] each
    for b in range(2):
        for layer in layers[b]:
            logits = readouts[layer.layer][b]
            for w in layer.watched:
                prob, rank = _expected(logits, w.token_id)
                assert w.prob == pytest.approx(prob, rel=1e-5)
                assert w.rank == rank


def test_nothing_watched_leaves_the_records_as_before(model):
    trace = _generate(model, [], lens=True)
    assert all(rs.watched == [] for r in trace.steps for rs in r.rows)
    assert all(layer.watched == [] for r in trace.steps for layer in r.lens[0])


def test_trace_round_trip(model):
    trace = _generate(model, [3, 40], lens=True, do_sample=True, top_k=8)
    again = Trace.from_json(trace.to_json())
    assert again.steps == trace.steps
    w = again.steps[0].rows[0].watched[0]
    assert isinstance(w, WatchedToken) and isinstance(again.steps[0].lens[0][0].watched[0], WatchedLayer)


def test_traces_before_watch_still_load(model):
    data = json.loads(_generate(model, [3], lens=True).to_json())
    for step in data["steps"]:
        for rs in step["rows"]:
            del rs["watched"]
        for layer in step["lens"][0]:
            del layer["watched"]
    trace = Trace.from_dict(data)
    assert trace.steps[0].rows[0].watched == [] and trace.steps[0].lens[0][0].watched == []


@pytest.mark.parametrize("watch, message", [(list(range(MAX_WATCH + 1)), "at most 8"), ([64], "[0, 63]"),
                                             ([-1], "[0, 63]"), (["a"], "token ids")])
def test_core_refuses_bad_watch(model, watch, message):
    with pytest.raises(ValueError, match=r"`watch`") as err:
        _generate(model, watch)
    assert message in str(err.value)


def test_stream_takes_watch(model):
    ids = torch.tensor(PROMPT)
    events = list(core.stream(model, ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, watch=[7]))
    steps = [e.record for e in events if e.record is not None]
    assert steps and all([w.token_id for w in s.rows[0].watched] == [7] for s in steps)


@pytest.mark.slow
def test_embedded_model_stages_are_softmaxes(embedded):
    """On the real model, the recorded probabilities agree with the softmax of the recorded scores at each stage."""
    tokenizer = embedded.tokenizer
    watch = [tokenizer.encode(text, add_special_tokens=False)[0] for text in (" the", " Paris")]
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    recorder = ListRecorder(watch=watch, lens=True)
    core.generate(embedded.model, ids, max_new_tokens=3, recorder=recorder, tokenizer=tokenizer, do_sample=True,
                  top_k=20, temperature=0.8, generator=torch.Generator().manual_seed(0))
    for record in recorder.trace.steps:
        rs = record.rows[0]
        by_id = {c.token_id: c for c in rs.candidates}
        for w in rs.watched:
            if w.token_id in by_id:
                assert w.probs[0] == pytest.approx(by_id[w.token_id].prob, rel=1e-4)
                assert w.probs[-1] == pytest.approx(by_id[w.token_id].prob_after, rel=1e-4, abs=1e-12)
        for w_layer, w_step in zip(record.lens[0][-1].watched, rs.watched):
            assert w_layer.prob == pytest.approx(w_step.probs[0], rel=1e-4)


# --- the tab's field and figures -----------------------------------------------------------------------------------
def test_parse_watch(embedded):
    from playground.prompt import parse_watch

    tok = embedded.tokenizer
    vocab = embedded.model.config.vocab_size
    paris = tok.encode(" Paris", add_special_tokens=False)
    assert len(paris) == 1
    assert parse_watch(tok, "the, Paris, #5, #5,, ", vocab) == [tok.encode("the", add_special_tokens=False)[0],
                                                                 paris[0], 5]
    assert parse_watch(tok, "", vocab) == [] and parse_watch(tok, None, vocab) == []
    with pytest.raises(ValueError, match=r"`watch` must be a token id in \[0, \d+\] \(#<id>\) .* got ' #99999999'"):
        parse_watch(tok, "the, #99999999", vocab)
    with pytest.raises(ValueError, match=r"`watch` must be one token .* ' Pariserplatz' is \d+ tokens"):
        parse_watch(tok, "the, Pariserplatz", vocab)
    with pytest.raises(ValueError, match=r"`watch` must name at most 8 tokens \(comma-separated\); got 9"):
        parse_watch(tok, ",".join(f"#{i}" for i in range(9)), vocab)


def test_watched_figure_one_line_per_token_on_a_log_axis(model):
    from playground.figures.watch import watched_figure

    trace = _generate(model, [3, 40], do_sample=True, top_k=4, temperature=0.7)
    fig = watched_figure(trace)
    lines = [t for t in fig.data if t.meta and t.meta.startswith("watched:")]
    assert [t.meta for t in lines] == ["watched:3", "watched:40"]
    assert fig.layout.yaxis.type == "log"
    for k, line in enumerate(lines):
        finals = [r.rows[0].watched[k].probs[-1] for r in trace.steps]
        assert list(line.y) == [p if p > 0 else None for p in finals]
    removed = [t for t in fig.data if t.meta and t.meta.startswith("watched_removed:")]
    # top_k=4 over 64 tokens removes most tokens: a watched one outside the four is drawn as a cross
    assert sum(len(t.x) for t in removed) == sum(w.probs[-1] == 0 for r in trace.steps for w in r.rows[0].watched)
    assert "model" in lines[0].hovertext[0] and "top_k" in lines[0].hovertext[0]


def test_watched_figure_draws_removed_tokens_just_below_its_lines():
    """A stage between the model and the last one may leave a token nearly impossible before another removes it (the
    smoothing factor before tail-free sampling): the crosses stand below the lines drawn, not down at that stage's
    value, and two tokens removed at one step each keep a cross of their own."""
    from core.records import ProcessorEffect, RowStep, StepRecord
    from playground.figures.watch import watched_figure

    effects = [ProcessorEffect("SmoothingFactorLogitsProcessor", [], [], stage="smoothing"),
               ProcessorEffect("TailFreeLogitsProcessor", [], [], stage="tfs")]
    watched = [WatchedToken(5, "a", [-7.0, -90.0, float("-inf")], [1e-3, 1e-40, 0.0], [3, 3, 9]),
               WatchedToken(6, "b", [-8.0, -95.0, float("-inf")], [1e-4, 1e-42, 0.0], [4, 4, 9]),
               WatchedToken(7, "c", [-1.0, -1.0, -1.0], [0.2, 0.3, 0.5], [0, 0, 0])]
    steps = [StepRecord(i, "sample", [RowStep(0, [], effects, [7], watched=watched)]) for i in range(3)]
    fig = watched_figure(steps)
    crosses = {t.meta: list(t.y) for t in fig.data if t.meta.startswith("watched_removed:")}
    assert crosses == {"watched_removed:5": pytest.approx([1e-5] * 3), "watched_removed:6": pytest.approx([5e-6] * 3)}


def test_watched_figure_is_empty_without_watched_tokens(model):
    from playground.figures.common import is_empty
    from playground.figures.watch import watched_figure

    assert is_empty(watched_figure(_generate(model, [])))
    assert is_empty(watched_figure(None))


def test_lens_figure_offers_each_watched_token(model):
    from playground.figures.lens import lens_figure

    trace = _generate(model, [3, 40], lens=True)
    fig = lens_figure(trace)
    assert [t.meta for t in fig.data] == ["chosen_prob", "watched:3", "watched:40"]
    assert [t.visible for t in fig.data] == [None, False, False]
    (menu,) = fig.layout.updatemenus
    assert [b.label for b in menu.buttons] == ["chosen token", "'3'", "'40'"]
    assert menu.buttons[2].args[0]["visible"] == [False, False, True]
    z = fig.data[2].z  # layers x steps of the watched token 40
    for j, record in enumerate(trace.steps):
        for layer in record.lens[0]:
            assert z[layer.layer][j] == pytest.approx(math.log10(max(layer.watched[1].prob, 1e-10)))
    assert not lens_figure(_generate(model, [], lens=True)).layout.updatemenus


def test_the_branch_trees_bounded_form_drops_watched_tokens(model):
    """The browser's copy of the branch tree (``branches.slim``) keeps what the tree reads: watched tokens, like the
    processors' effects their stages follow, stay with the tab's run and its trace file."""
    from playground.branches import slim

    trace = _generate(model, [3, 40])
    assert all(rs.watched == [] for r in slim(trace).steps for rs in r.rows)
    assert all(rs.watched for r in trace.steps for rs in r.rows)
