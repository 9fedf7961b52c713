"""Figure builders: each draws exactly what the records hold, on full, partial and empty traces.

Greedy and sampling records come from ``core.generate`` on the tiny model; beam, contrastive, DoLa and
assisted records are synthetic here (built like the strategies build them), plus real ones where the
strategy module exists.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

import core
from core.records import (AssistedStep, BeamNode, CacheInfo, Candidate, ContrastiveCandidate, DolaStep, ListRecorder,
                          RowStep, StepRecord, Trace)
from playground import figures as F
from playground.figures import beam_tree as bt
from playground.figures.common import ACCEPTED, AFTER, CHOSEN, CORRECTED, HIGHLIGHT, REJECTED, visible

CSS = Path(__file__).resolve().parents[1] / "assets" / "style.css"


# --- record builders ---------------------------------------------------------------------------------------


def run(model, prompt, **kwargs) -> Trace:
    recorder = ListRecorder(top_n=10)
    core.generate(model, prompt, recorder=recorder, **kwargs)
    return recorder.trace


def synthetic_beam(num_beams=3, length=6, groups=1, batch=1, eos_every=4, seed=0, vocab=50) -> list[StepRecord]:
    """Beam records shaped like the beam family's: per step and group, the top 2K expansions of the running
    beams; the best K non-EOS kept, EOS ones finished, the rest pruned; running beams finish at the end."""
    rng = random.Random(seed)
    per_group = num_beams // groups
    running = {(b, g): [(-1, 0.0, [])] for b in range(batch) for g in range(groups)}  # (node, score, tokens)
    finished: dict[int, list[tuple[float, list[int], int]]] = {b: [] for b in range(batch)}  # (score, tokens, node)
    next_id, out = 0, []
    for t in range(length):
        nodes = []
        for (b, g), beams in running.items():
            cands = []
            for parent, score, tokens in beams:
                for tok in rng.sample(range(3, vocab), 2 * per_group):
                    if rng.random() < 1 / eos_every / per_group:
                        tok = 2  # EOS
                    cands.append((score - rng.expovariate(1.0), parent, tokens + [tok]))
            seen, top = set(), []
            for c in sorted(cands, key=lambda c: -c[0]):
                if (c[1], c[2][-1]) not in seen:  # one node per (parent, token)
                    seen.add((c[1], c[2][-1]))
                    top.append(c)
            top = top[: 2 * per_group]
            kept = []
            for score, parent, tokens in top:
                last = t == length - 1
                if tokens[-1] == 2 or (last and len(kept) < per_group):
                    fate = "finished"
                elif len(kept) < per_group:
                    fate = "kept"
                else:
                    fate = "pruned"
                norm = score / len(tokens)
                nodes.append(BeamNode(next_id, parent, b, tokens[-1], "<eos>" if tokens[-1] == 2 else f" t{tokens[-1]}",
                                      score, norm, fate, group=g, diversity_penalty=0.5 * g,
                                      final_score=norm if fate == "finished" else None))
                if fate == "kept":
                    kept.append((next_id, score, tokens))
                if fate == "finished":
                    finished[b].append((norm, tokens, next_id))
                next_id += 1
            running[(b, g)] = kept or beams
        best = []
        for b in range(batch):
            pool = [(s / len(tk), tk, n) for (bb, _), beams in running.items() if bb == b for n, s, tk in beams]
            best.append(max(finished[b] + pool) if t == length - 1 else max(pool))
        out.append(StepRecord(step=t, strategy="beam_search", rows=[], elapsed_s=0.01 * (t + 1), beam=nodes,
                              best=[tokens for _, tokens, _ in best], best_nodes=[node for _, _, node in best]))
    return out


def synthetic_contrastive(length=5, k=4, seed=0) -> list[StepRecord]:
    rng = random.Random(seed)
    out = []
    for t in range(length):
        conf = sorted((rng.random() for _ in range(k)), reverse=True)
        pen = [rng.random() for _ in range(k)]
        score = [0.4 * c - 0.6 * p for c, p in zip(conf, pen)]
        pick = max(range(k), key=score.__getitem__)
        cands = [ContrastiveCandidate(10 + i, f" c{i}", conf[i], pen[i], score[i], i == pick) for i in range(k)]
        out.append(StepRecord(step=t, strategy="contrastive_search", rows=[], contrastive=[cands]))
    return out


def synthetic_dola(length=7, layers=(0, 2, 4, 6, 8), seed=0) -> list[StepRecord]:
    rng = random.Random(seed)
    out = []
    for t in range(length):
        js = [rng.random() for _ in layers]
        chosen = layers[max(range(len(layers)), key=js.__getitem__)]
        contrasted = [Candidate(5, " a", 3.0, 0.5, 1.2, 0.6), Candidate(6, " b", 2.0, 0.3, 0.4, 0.3)]
        out.append(StepRecord(step=t, strategy="dola_generation", rows=[],
                              dola=[DolaStep(list(layers), js, chosen, contrasted)]))
    return out


ASSISTED = [  # (accepted, rejected, corrected) per round
    ([11, 12, 13], [14, 15], [40]),
    ([16, 17, 18, 19, 20], [], [41]),
    ([], [21, 22], [42]),
]


def synthetic_assisted() -> list[StepRecord]:
    out = []
    for t, (acc, rej, cor) in enumerate(ASSISTED):
        drafted = acc + rej
        # like the assisted strategy: one RowStep per appended token, each with its own distribution
        rows = [RowStep(0, [Candidate(t, f" fix{t}" if t in cor else f" d{t}", 1.0, 0.5, 1.0, 0.5 + 0.01 * i)], [], [t])
                for i, t in enumerate(acc + cor)]
        out.append(StepRecord(step=t, strategy="assisted_generation", rows=rows, elapsed_s=0.1 * (t + 1),
                              assisted=[AssistedStep(drafted, acc, rej, cor, [f" d{i}" for i in drafted],
                                                     next_draft_length=5 if not rej else 3, source="assistant")],
                              cache=CacheInfo("DynamicCache", 1000 * (t + 1), 10 + t)))
    return out


def synthetic_cache(kind: str, per_step: int, length=6) -> list[StepRecord]:
    return [StepRecord(step=t, strategy="greedy_search", rows=[], cache=CacheInfo(kind, per_step * (t + 1), t + 7))
            for t in range(length)]


def nodes_of(steps) -> list[BeamNode]:
    return [n for r in steps for n in r.beam or ()]


def trace_of(steps) -> Trace:
    return Trace(strategy=steps[0].strategy, config={}, prompt_ids=[[1, 2]], steps=list(steps))


def _per_point(value, trace) -> list:
    """A marker property as one value per point (plotly takes a scalar where all points share it)."""
    return [value] * len(trace.x) if isinstance(value, (str, int, float)) else list(value)


def node_traces(fig) -> dict[str, go.Scatter]:
    return {t.name: t for t in fig.data if t.meta == "nodes"}


# --- beam tree ---------------------------------------------------------------------------------------------


def test_beam_tree_draws_every_node_once_with_its_fate():
    steps = synthetic_beam(num_beams=3, length=8)
    nodes = nodes_of(steps)
    fig = F.beam_tree_figure(steps)
    assert F.node_count(fig) == len(nodes)
    drawn = sorted(i for t in node_traces(fig).values() for i in t.customdata)
    assert drawn == sorted(n.node_id for n in nodes)
    traces = node_traces(fig)
    assert traces["pruned"].marker.opacity < traces["kept"].marker.opacity  # pruned branches faded
    assert traces["finished"].marker.symbol == "star" and traces["kept"].marker.symbol == "circle"
    finished = [n for n in nodes if n.fate == "finished"]
    assert len(traces["finished"].x) == len(finished)
    for node_id, label in zip(traces["finished"].customdata, traces["finished"].text):
        node = next(n for n in finished if n.node_id == node_id)
        assert f"({node.final_score:.2f})" in label
    # nodes sit at the step that recorded them
    step_of = {n.node_id: r.step for r in steps for n in r.beam}
    for t in traces.values():
        assert all(x == step_of[i] for x, i in zip(t.x, t.customdata))
    assert fig.layout.dragmode == "pan"


def test_beam_tree_edges_join_parent_and_child():
    steps = synthetic_beam(num_beams=2, length=5, seed=3)
    fig = F.beam_tree_figure(steps)
    nodes = nodes_of(steps)
    segments = sum(sum(1 for x in t.x if x is None) for t in fig.data if t.meta == "edges")
    assert segments == sum(1 for n in nodes if n.parent != -1)  # one segment per recorded parent link


def test_beam_tree_highlights_the_returned_path():
    steps = synthetic_beam(num_beams=3, length=7, seed=1)
    best = steps[-1].best[0]
    paths = F.returned_paths(steps)
    assert len(paths) == 1
    tree = bt.beam_graph(steps)
    assert [tree.nodes[n].token_id for n in paths[0]] == best  # the path spells the best hypothesis
    fig = F.beam_tree_figure(steps)
    halo = next(t for t in fig.data if t.meta == "returned")
    assert halo.marker.color == HIGHLIGHT and sorted(halo.customdata) == sorted(paths[0])
    gold = next(t for t in fig.data if t.meta == "edges" and t.name == "returned sequence")
    assert sum(1 for x in gold.x if x is None) == len(best) - 1
    assert paths[0][-1] == steps[-1].best_nodes[0]  # the path ends at the node the records name


def test_beam_tree_lights_the_recorded_node_not_a_twin_with_the_same_tokens():
    """Two diverse-beam groups may spell the same tokens; only the path to the node the records name is gold."""
    steps = synthetic_beam(num_beams=2, length=3, groups=2, seed=8)
    tree = bt.beam_graph(steps)
    last = steps[-1].best_nodes[0]
    twin_tokens = [tree.nodes[n].token_id for n in tree.path_to(last)]
    # a second hypothesis in the other group with the very same tokens, finished with a higher score
    twin = [BeamNode(1000 + i, 1000 + i - 1 if i else -1, 0, tok, f" t{tok}", -0.1, -0.1, "kept", group=1)
            for i, tok in enumerate(twin_tokens)]
    twin[-1] = BeamNode(**{**twin[-1].__dict__, "fate": "finished", "final_score": 99.0})
    steps = steps[:-1] + [StepRecord(**{**steps[-1].__dict__, "beam": steps[-1].beam + twin})]
    (path,) = F.returned_paths(steps)
    assert path == tree.path_to(last) and not set(path) & {n.node_id for n in twin}
    halo = next(t for t in F.beam_tree_figure(steps).data if t.meta == "returned")
    assert set(halo.customdata) == set(path)


def test_beam_tree_colours_diverse_groups_and_handles_batches():
    steps = synthetic_beam(num_beams=4, length=5, groups=2, batch=2, seed=2)
    fig = F.beam_tree_figure(steps)
    assert F.node_count(fig) == len(nodes_of(steps))
    colours = {c for t in node_traces(fig).values() for c in _per_point(t.marker.color, t)}
    assert len(colours) == 2
    one_group = F.beam_tree_figure(synthetic_beam(num_beams=4, length=5, batch=2, seed=2))
    assert len({c for t in node_traces(one_group).values() for c in _per_point(t.marker.color, t)}) == 1
    assert [t.name for t in fig.data if t.meta == "legend"] == ["group 0", "group 1"]
    assert len(F.returned_paths(steps)) == 2  # one best path per batch row


def test_beam_tree_marks_forced_nodes_and_shows_banks():
    steps = synthetic_beam(num_beams=2, length=4, seed=9)
    forced_id = steps[1].beam[0].node_id
    steps[1] = StepRecord(1, "constrained_beam_search", [], beam=[
        BeamNode(**{**n.__dict__, "forced": n.node_id == forced_id, "bank": 1 if n.node_id == forced_id else 0})
        for n in steps[1].beam], best=steps[1].best)
    fig = F.beam_tree_figure(steps)
    symbols = {i: s for t in node_traces(fig).values() for i, s in zip(t.customdata, _per_point(t.marker.symbol, t))}
    fate = {n.node_id: n.fate for n in nodes_of(steps)}
    assert [i for i, s in symbols.items() if s == "diamond"] == ([forced_id] if fate[forced_id] != "finished" else [])
    hover = {i: h for t in node_traces(fig).values() for i, h in zip(t.customdata, t.hovertext)}
    assert "forced by a constraint" in hover[forced_id] and "constraint bank: 1" in hover[forced_id]
    assert "forced by a constraint" in [t.name for t in fig.data if t.meta == "legend"]


def test_beam_tree_grows_with_partial_traces():
    steps = synthetic_beam(num_beams=3, length=6, seed=4)
    for i in range(1, len(steps) + 1):
        assert F.node_count(F.beam_tree_figure(steps[:i])) == len(nodes_of(steps[:i]))


def test_beam_tree_8_beams_60_steps_builds_with_kept_labels_only(tmp_path):
    steps = synthetic_beam(num_beams=8, length=60, seed=5)
    fig = F.beam_tree_figure(steps)
    assert F.node_count(fig) == len(nodes_of(steps)) == 8 * 2 * 60
    traces = node_traces(fig)
    on_path = set(F.returned_paths(steps)[0])
    assert all(lab == "" for i, lab in zip(traces["pruned"].customdata, traces["pruned"].text) if i not in on_path)
    assert all(lab for lab in traces["kept"].text)
    assert fig.layout.xaxis.range[1] - fig.layout.xaxis.range[0] < 25  # opens on the latest steps
    fig.write_html(tmp_path / "beam_tree.html")


def test_beam_tree_without_recorded_best_nodes_lights_no_path():
    """A trace that names no best nodes (written before they were recorded) draws its tree without a gold path:
    the figures never guess the returned beams by matching tokens."""
    steps = [StepRecord(r.step, r.strategy, r.rows, beam=r.beam, best=r.best) for r in synthetic_beam(length=5, seed=6)]
    assert F.returned_paths(steps) == []
    assert not next(t for t in F.beam_tree_figure(steps).data if t.meta == "returned").customdata


# --- candidates and tokens from real greedy / sampling runs ------------------------------------------------


@pytest.fixture(scope="module")
def sampled(tiny_model):
    import torch

    torch.manual_seed(0)
    return run(tiny_model, torch.tensor([[1, 5, 9, 13, 17, 21]]), do_sample=True, top_k=4, temperature=0.7,
               max_new_tokens=8)


@pytest.fixture(scope="module")
def greedy(tiny_model):
    import torch

    return run(tiny_model, torch.tensor([[1, 5, 9, 13, 17, 21]]), do_sample=False, max_new_tokens=8)


def test_candidates_figure_shows_before_after_and_removals(sampled):
    rec = sampled.steps[2]
    row = rec.rows[0]
    fig = F.candidates_figure(sampled, step=2)
    before, after = fig.data
    assert before.meta == "prob" and after.meta == "prob_after"
    shown = sorted(row.candidates, key=lambda c: -c.prob)[: len(before.y)]
    assert list(before.y) == [c.prob for c in shown]
    assert list(after.y) == [c.prob_after for c in shown]
    removed = F.candidates.removed_by(row)
    assert removed, "top_k=4 must remove some of the 10 recorded candidates"
    for c, text, shape in zip(shown, before.text, before.marker.pattern.shape):
        assert ("TopK" in text) == (c.token_id in removed) == (shape == "x")
    starred = [x for x in before.x if x.startswith("★")]
    assert len(starred) == 1 and str(row.chosen[0]) in starred[0]
    # the after bars are blue, as the caption says (a legend swatch takes the first bar's colours); the chosen one is
    # outlined in the chosen colour; the removals' labels stand upright at full size
    assert after.marker.color == AFTER
    outlined = [x for x, c, w in zip(after.x, after.marker.line.color, after.marker.line.width) if c == CHOSEN and w]
    assert outlined == starred
    assert before.textangle == -90 and before.constraintext == "none"
    summary = F.processor_summary(rec)
    assert "TopKLogitsWarper: removed" in summary and "TemperatureLogitsWarper" in summary
    assert F.candidates_figure(sampled, step=-1).layout.title.text.startswith(f"Step {sampled.steps[-1].step}")


def test_alternatives_table_names_the_processor_that_removed_each_token(sampled):
    rows = F.alternatives_table(sampled, step=1)
    rec = sampled.steps[1].rows[0]
    assert len(rows) == len(rec.candidates)
    assert all(len(r) == len(F.ALTERNATIVES_HEADERS) for r in rows)
    removed = F.candidates.removed_by(rec)
    for token, token_id, prob, prob_after, by in rows:
        cand = next(c for c in rec.candidates if c.token_id == token_id)
        assert F.tokens.visible(cand.text) == token.removeprefix("★ ")
        assert (prob, prob_after) == (round(cand.prob, 4), round(cand.prob_after, 4))
        assert ("TopKLogitsWarper" in by) == (cand.token_id in removed)
        assert (prob_after == 0) == (cand.token_id in removed)


def test_tokens_html_has_one_span_per_generated_token_with_known_classes(greedy, sampled):
    css = CSS.read_text()
    for trace in (greedy, sampled):
        out = F.tokens_html(trace)
        spans = re.findall(r'<span class="dp-tok ([^"]*)" data-step="(\d+)" data-pos="0" title="([^"]*)">', out)
        generated = trace.sequences[0][len(trace.prompt_ids[0]):]
        assert len(spans) == len(generated)
        assert [int(s) for _, s, _ in spans] == [r.step for r in trace.steps]
        for rec, (cls, _, title) in zip(trace.steps, spans):
            chosen = next(c for c in rec.rows[0].candidates if c.token_id == rec.rows[0].chosen[0])
            assert cls.split()[0] == F.tokens.bucket_class(chosen.prob_after)  # then its entropy and surprisal
            assert "alternatives" in title
        for cls in set(re.findall(r'class="([^"]+)"', out)):
            for name in cls.split():
                assert f".{name}" in css, f"CSS class {name} missing from assets/style.css"


def test_tokens_html_of_each_step_starts_with_the_last_steps(sampled):
    """The token view grows by appending (Gradio then streams only the new token's span), step after step."""
    views = [F.tokens_html(sampled.steps[:k]) for k in range(1, len(sampled.steps) + 1)]
    assert all(later.startswith(earlier) for earlier, later in zip(views, views[1:]))
    assert views[-1].count('class="dp-tok dp-p') - views[0].count('class="dp-tok dp-p') == len(sampled.steps) - 1


def test_tokens_html_and_candidates_of_multi_token_steps():
    steps = synthetic_assisted()
    out = F.tokens_html(steps)
    spans = re.findall(r'data-step="(\d+)" data-pos="(\d+)"', out)
    assert spans == [(str(t), str(p)) for t, (a, _, c) in enumerate(ASSISTED) for p in range(len(a) + len(c))]
    assert "dp-pna" not in out  # every appended token has its own recorded distribution
    fig = F.candidates_figure(steps, step=0, position=3)
    assert fig.data[0].x == ("★ ␣fix40",) and "(token 4)" in fig.layout.title.text
    assert F.alternatives_table(steps, 0, position=3) == [["★ ␣fix40", 40, 0.5, 0.53, ""]]


def test_tokens_html_of_beam_records_follows_the_best_hypothesis():
    steps = synthetic_beam(num_beams=3, length=6, seed=7)
    out = F.tokens_html(steps)
    assert out.count('class="dp-tok ') == len(steps[-1].best[0])
    for cls in set(re.findall(r'class="([^"]+)"', out)):
        for name in cls.split():
            assert f".{name}" in CSS.read_text()


def test_bucket_class_edges():
    assert F.tokens.bucket_class(0.95) == "dp-p5"
    assert F.tokens.bucket_class(0.9) == "dp-p5"
    assert F.tokens.bucket_class(0.05) == "dp-p0"
    assert F.tokens.bucket_class(None) == "dp-pna"


# --- contrastive, DoLa, speculative, cache, compare --------------------------------------------------------


def test_contrastive_figure_bars_and_heatmap():
    steps = synthetic_contrastive(length=5, k=4)
    fig = F.contrastive_figure(steps)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.meta for t in bars] == ["confidence", "degeneration penalty", "final score"]
    last = sorted(steps[-1].contrastive[0], key=lambda c: -c.confidence)
    assert list(bars[0].y) == [c.confidence for c in last]
    assert list(bars[1].y) == [c.degeneration_penalty for c in last]
    assert list(bars[2].y) == [c.score for c in last]
    heat = next(t for t in fig.data if t.meta == "scores")
    assert len(heat.z) == 4 and all(len(r) == 5 for r in heat.z)
    chosen = next(t for t in fig.data if t.meta == "chosen")
    expected = [1 + sorted(r.contrastive[0], key=lambda c: -c.confidence).index(
        next(c for c in r.contrastive[0] if c.chosen)) for r in steps]
    assert list(chosen.y) == expected


def test_dola_heatmap_cells_and_premature_layer_marks():
    layers = (0, 2, 4, 6, 8)
    steps = synthetic_dola(length=7, layers=layers)
    fig = F.dola_figure(steps)
    heat = next(t for t in fig.data if t.meta == "divergence")
    assert len(heat.z) * len(heat.z[0]) == len(layers) * len(steps)
    assert list(heat.y) == [f"layer {layer}" for layer in layers]
    assert [heat.z[i][j] for j in range(len(steps)) for i in range(len(layers))] == [
        js for r in steps for js in r.dola[0].js_divergences]
    marks = next(t for t in fig.data if t.meta == "chosen")
    assert list(marks.y) == [f"layer {r.dola[0].chosen_layer}" for r in steps]
    assert list(marks.x) == [r.step for r in steps]


@pytest.fixture(scope="module")
def lensed():
    import torch

    from conftest import tiny_llama

    recorder = ListRecorder(top_n=10, lens=True)
    core.generate(tiny_llama(0, layers=3), torch.tensor([[3, 3, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]),
                  attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]), max_new_tokens=5, recorder=recorder)
    return recorder.trace


@pytest.mark.parametrize("row", [0, 1])
def test_lens_heatmap_holds_each_layers_probability_of_the_chosen_token(lensed, row):
    (heat,) = F.lens_figure(lensed, row=row).data
    assert heat.meta == "chosen_prob" and list(heat.y) == ["embeddings", "layer 1", "layer 2", "final"]
    assert list(heat.x) == [r.step for r in lensed.steps]
    for j, record in enumerate(lensed.steps):
        for layer in record.lens[row]:
            assert heat.z[layer.layer][j] == layer.chosen_prob
            assert f"rank {layer.chosen_rank + 1}" in heat.hovertext[layer.layer][j]
            assert repr(layer.top[0].text) in heat.hovertext[layer.layer][j]


def test_lens_step_figure_shows_each_layers_top_tokens_and_marks_the_chosen_one(lensed):
    record = lensed.steps[2]
    fig = F.lens_step_figure(lensed, step=2, row=1)
    heat = next(t for t in fig.data if t.meta == "top")
    chosen = record.rows[1].chosen[0]
    assert record.lens[1][-1].top[0].token_id == chosen and heat.text[-1][0].startswith("★ ")
    for i, layer in enumerate(record.lens[1]):
        assert list(heat.z[i][:len(layer.top)]) == [c.prob for c in layer.top]
        assert [t.removeprefix("★ ") for t in heat.text[i]] == [visible(c.text) for c in layer.top]
    marks = next(t for t in fig.data if t.meta == "chosen")
    assert "final" in marks.y and marks.x[list(marks.y).index("final")] == "#1"  # greedy: the final layer's top
    assert fig.layout.title.text.startswith("Step 2 · row 1")
    again = Trace.from_json(lensed.to_json())
    assert F.lens_step_figure(again, 2, 1).to_json() == fig.to_json()
    assert F.lens_figure(again, 0).to_json() == F.lens_figure(lensed, 0).to_json()


def test_lens_figures_stop_where_a_row_finished(lensed):
    import torch

    from conftest import tiny_llama

    eos = lensed.steps[1].rows[0].chosen[0]  # the first row ends at its second token
    recorder = ListRecorder(top_n=10, lens=True)
    core.generate(tiny_llama(0, layers=3), torch.tensor([[3, 3, 1, 5, 9, 13], [1, 5, 9, 13, 17, 21]]),
                  attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6]), max_new_tokens=5, recorder=recorder,
                  eos_token_id=eos)
    trace = recorder.trace
    ran = [r.step for r in trace.steps if r.rows[0].chosen]
    assert ran == [0, 1] and len(trace.steps) > 2
    assert list(F.lens_figure(trace, row=0).data[0].x) == ran
    assert F.lens_step_figure(trace, step=-1, row=0).layout.title.text.startswith("Step 1 · row 0")
    assert list(F.lens_figure(trace, row=1).data[0].x) == [r.step for r in trace.steps]


def test_speculative_colours_each_draft_token_by_fate():
    steps = synthetic_assisted()
    fig = F.speculative_figure(steps)
    by = {t.meta: t for t in fig.data}
    assert by["accepted"].marker.color == ACCEPTED
    assert by["rejected"].marker.color == REJECTED
    assert by["corrected"].marker.color == CORRECTED
    assert len(by["accepted"].x) == sum(len(a) for a, _, _ in ASSISTED)
    assert len(by["rejected"].x) == sum(len(r) for _, r, _ in ASSISTED)
    assert len(by["corrected"].x) == len(ASSISTED)
    accepted, drafted = 8, 12
    assert F.acceptance_rate(steps) == accepted / drafted
    assert f"{accepted / drafted:.0%} of {drafted} drafted tokens accepted" in fig.layout.title.text
    # rejected tokens come right after the accepted ones of their round
    assert list(by["rejected"].y) == [3, 4, 0, 1]


def test_timing_and_compare_bars():
    fig = F.timing_figure({"assisted": 40.0, "greedy": 20.0})
    assert list(fig.data[0].y) == [40.0, 20.0] and "2.00×" in fig.layout.title.text
    assert "2.00×" in F.timing_figure({"assisted": 1.0, "greedy": 2.0}, unit="s").layout.title.text
    steps = synthetic_assisted()
    assert F.tokens_per_second(steps) == pytest.approx(sum(len(a) + len(c) for a, _, c in ASSISTED) / 0.3)
    fig = F.tokens_per_second_figure({"assisted": steps, "greedy": 12.5})
    assert list(fig.data[0].x) == ["assisted", "greedy"]
    assert fig.data[0].y[1] == 12.5


def test_cache_lines_and_divergence_index():
    traces = {"DynamicCache": synthetic_cache("DynamicCache", 4096),
              "quantized": synthetic_cache("QuantizedCache", 1024)}
    fig = F.cache_figure(traces, diverged_at=3)
    lines = [t for t in fig.data if t.type == "scatter"]
    assert [t.meta for t in lines] == ["DynamicCache", "quantized"]
    assert lines[0].y[-1] / lines[1].y[-1] == pytest.approx(4.0)
    assert [c[0] for c in lines[1].customdata] == [1024 * (t + 1) for t in range(6)]
    assert fig.layout.shapes  # the divergence marker
    assert F.divergence_index([1, 2, 3], [1, 2, 3]) is None
    assert F.divergence_index([1, 2, 3], [1, 5, 3]) == 1
    assert F.divergence_index([1, 2], [1, 2, 3]) == 2
    assert F.divergence_index([], []) is None


def test_first_difference_and_token_diff():
    from playground.branches import first_difference, token_diff

    assert first_difference([[1, 2, 3], [1, 2, 3]]) is None
    assert first_difference([[1, 2], [1, 2, 3]]) is None  # a run that stopped earlier chose nothing else
    assert first_difference([[1, 2], [1, 2, 3], [1, 2, 4]]) == 2
    assert first_difference([[5], [6]]) == 0 and first_difference([]) is None
    # a run that parts and joins again: only the replaced token differs, the rest is shared, not shifted
    assert token_diff([[1, 2, 3, 4, 5], [1, 9, 3, 4, 5]]) == [[False, True, False, False, False]] * 2
    assert token_diff([[1, 2, 3], [1, 2, 7, 3], [4]]) == [[False, False, False], [False, False, True, False], [True]]
    assert token_diff([[1, 2]]) == [[False, False]]


def test_compare_diff_on_two_known_runs(tiny_model, prompt):
    """Greedy, and greedy with its first token that is new to the run banned: they diverge exactly there; the Compare
    tab's columns and log-probability lines (the Branches tab's code) say so."""
    from xml.etree import ElementTree

    from playground.branches import first_difference, steps_series, token_diff
    from playground.figures.branches import runs_logprob_figure
    from playground.figures.tokens import Column, columns_html, run_tokens

    runs = {}
    for name, kwargs in (("greedy", {}), ("banned", None)):
        if kwargs is None:  # ban greedy's first token (past the first) that it had not written before
            tokens = runs["greedy"].trace.sequences[0][prompt.shape[1]:]
            k = next(i for i, t in enumerate(tokens) if i > 0 and t not in tokens[:i])
            kwargs = {"bad_words_ids": [[tokens[k]]]}
        runs[name] = ListRecorder()
        core.generate(tiny_model, prompt, max_new_tokens=8, do_sample=False, recorder=runs[name], **kwargs)
    ids = [r.trace.sequences[0][prompt.shape[1]:] for r in runs.values()]
    assert ids[0][:k] == ids[1][:k] and ids[0][k] != ids[1][k]
    columns = [Column(name, run_tokens(r.steps)) for name, r in runs.items()]
    assert [[t.token_id for t in c.tokens] for c in columns] == ids
    assert first_difference(ids) == k
    differs = token_diff(ids)
    assert not any(differs[0][:k] + differs[1][:k]) and differs[0][k] and differs[1][k]

    table = ElementTree.fromstring(columns_html(columns, k, "Strategies side by side"))  # well-formed: escaped
    assert [th.text for th in table.iter("th")] == ["greedy", "banned"]
    assert f"first difference at position {k}" in table.find("caption").text
    for td, marks in zip(table.iter("td"), differs):
        spans = list(td.iter("span"))
        assert [i for i, s in enumerate(spans) if "dp-diverge" in s.get("class").split()] == [k]
        assert spans[k].get("title").startswith(f"first difference (position {k})")
        assert ["dp-diff" in s.get("class").split() for s in spans] == marks

    fig = runs_logprob_figure([(n, steps_series(r.steps, i)) for (n, r), i in zip(runs.items(), ids)], k,
                              str, "Strategies compared")
    assert [t.name for t in fig.data] == ["greedy", "banned"] and fig.layout.shapes[0].x0 == k
    first = fig.data[0].y
    assert first[0] == pytest.approx(math.log(runs["greedy"].steps[0].rows[0].candidates[0].prob))


# --- the smoothing factor's curve ----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor, curve", [(0.3, 1.0), (0.3, 2.0), (2.0, 1.0), (0.5, 10.0), (0.01, 1.0)])
def test_smoothing_curve_is_the_processors_output_on_the_same_logits(factor, curve):
    """The curve's points are what ``SmoothingFactorLogitsProcessor`` gives back for a row of its x values: nothing
    of the formula is written in the figure."""
    import torch

    from core.processors.smoothing import SmoothingFactorLogitsProcessor

    fig = F.smoothing_figure({"smoothing_factor": factor, "smoothing_curve": curve, "temperature": 0.7})
    line = next(t for t in fig.data if t.meta == "curve")
    logits = torch.tensor([line.x], dtype=torch.float32)
    out = SmoothingFactorLogitsProcessor(factor, curve)(torch.zeros((1, 1), dtype=torch.long), logits)
    assert list(line.y) == out[0].tolist()
    assert line.x[-1] == 0 and line.y[-1] == 0  # the top token keeps its logit
    identity = next(t for t in fig.data if t.meta == "identity")
    assert list(identity.x) == list(identity.y) == [line.x[0], 0]


def test_smoothing_curve_marks_where_tokens_stop_gaining_on_the_top():
    """With the plain quadratic (curve 1) a gap d becomes f * d**2: tokens within 1 / f of the top gain on it (the
    processor's docstring), so the green band ends there and the red one starts."""
    fig = F.smoothing_figure({"smoothing_factor": 0.25})
    assert "tokens within 4.00 of the top gain on it" in fig.layout.title.text
    green, red = fig.layout.shapes
    assert (green.x0, green.x1) == (pytest.approx(-4.0, abs=1e-3), 0.0)
    assert (red.x0, red.x1) == (pytest.approx(-8.0, abs=1e-2), pytest.approx(-4.0, abs=1e-3))


@pytest.mark.parametrize("config", [None, {}, {"smoothing_factor": 0.0}, {"smoothing_curve": 2.0},
                                    {"smoothing_factor": None, "top_k": 4}])
def test_smoothing_curve_without_smoothing_is_a_hint(config):
    fig = F.smoothing_figure(config)
    assert not fig.data and "smoothing_factor" in fig.layout.annotations[0].text


def test_smoothing_curve_of_a_run_reads_its_trace(tiny_model, prompt):
    """A run's settings as its trace saved them (and a trace file loaded back) draw the same curve."""
    trace = run(tiny_model, prompt, do_sample=True, smoothing_factor=0.4, smoothing_curve=1.5, max_new_tokens=3)
    fig = F.smoothing_figure(Trace.from_json(trace.to_json()).config)
    assert fig.to_json() == F.smoothing_figure({"smoothing_factor": 0.4, "smoothing_curve": 1.5}).to_json()


# --- empty inputs, round trip, real traces -----------------------------------------------------------------


BUILDERS = [F.beam_tree_figure, F.candidates_figure, F.contrastive_figure, F.dola_figure, F.speculative_figure,
            F.lens_figure, F.lens_step_figure]


@pytest.mark.parametrize("empty", [[], None, Trace("greedy_search", {}, [[1]])])
def test_empty_inputs_give_a_hint(empty):
    for build in BUILDERS:
        fig = build(empty)
        assert isinstance(fig, go.Figure) and not fig.data and fig.layout.annotations
    for fig in (F.cache_figure({}), F.cache_figure({"a": empty}), F.tokens_per_second_figure({}), F.timing_figure({})):
        assert not fig.data and fig.layout.annotations
    assert "dp-empty" in F.tokens_html(empty)
    assert F.alternatives_table(empty, 0) == []
    assert F.processor_summary(None) == "No step recorded yet."
    assert F.tokens_per_second(empty) is None


def test_figures_ignore_records_of_other_strategies(greedy):
    for build in (F.beam_tree_figure, F.contrastive_figure, F.dola_figure, F.speculative_figure, F.lens_figure,
                  F.lens_step_figure):
        assert not build(greedy).data


def test_trace_json_round_trip_redraws_identical_figures(sampled):
    beam = trace_of(synthetic_beam(num_beams=3, length=6, groups=1, seed=8))
    cases = [
        (sampled, [F.candidates_figure, F.tokens_html, lambda t: F.alternatives_table(t, 1)]),
        (beam, [F.beam_tree_figure, F.tokens_html]),
        (trace_of(synthetic_contrastive()), [F.contrastive_figure]),
        (trace_of(synthetic_dola()), [F.dola_figure]),
        (trace_of(synthetic_assisted()), [F.speculative_figure, lambda t: F.cache_figure({"c": t}),
                                          lambda t: F.tokens_per_second_figure({"a": t})]),
    ]
    for trace, builders in cases:
        again = Trace.from_json(trace.to_json())
        for build in builders:
            a, b = build(trace), build(again)
            if isinstance(a, go.Figure):
                a, b = a.to_json(), b.to_json()
            assert a == b


def test_figure_json_carries_the_plot_config():
    import json

    data = json.loads(F.figure_json(F.beam_tree_figure(synthetic_beam(length=3))))
    assert data["config"]["scrollZoom"] is True and data["data"] and data["layout"]["dragmode"] == "pan"


def test_figures_import_no_gradio_and_every_module_has_a_caption():
    for path in Path(F.__file__).parent.glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+gradio", path.read_text(), re.M), path.name
    assert all(len(c) > 40 for c in F.CAPTIONS.values())
    for module in (F.beam_tree, F.candidates, F.contrastive, F.dola, F.speculative, F.cache, F.tokens, F.compare,
                   F.lens):
        assert isinstance(module.CAPTION, str)


def test_builders_follow_a_stream_step_by_step(tiny_model, prompt):
    seen = []
    for event in core.stream(tiny_model, prompt, max_new_tokens=5, do_sample=False):
        if event.done:
            break
        seen.append(event.record)
        html_now = F.tokens_html(seen)
        assert html_now.count("data-step=") == sum(len(t) for t in event.tokens)
        assert F.candidates_figure(seen).layout.title.text.startswith(f"Step {event.record.step}")
    assert len(seen) == 5


def test_real_beam_trace(tiny_model, prompt):
    trace = run(tiny_model, prompt, num_beams=3, max_new_tokens=6, do_sample=False, early_stopping=True)
    nodes = nodes_of(trace.steps)
    assert nodes
    fig = F.beam_tree_figure(trace)
    assert F.node_count(fig) == len({n.node_id for n in nodes})
    path = F.returned_paths(trace)[0]
    tree = bt.beam_graph(trace)
    returned = trace.sequences[0][prompt.shape[1]:]
    assert [tree.nodes[n].token_id for n in path] == returned  # one row, no padding: the whole sequence
    for i in range(1, len(trace.steps)):  # as while streaming
        assert F.node_count(F.beam_tree_figure(trace.steps[:i])) == len(nodes_of(trace.steps[:i]))
    again = Trace.from_json(trace.to_json())
    assert F.beam_tree_figure(again).to_json() == fig.to_json()
    assert F.tokens_html(again) == F.tokens_html(trace)


def test_real_constrained_beam_trace(tiny_model, prompt):
    trace = run(tiny_model, prompt, num_beams=3, force_words_ids=[[7, 8]], max_new_tokens=6, do_sample=False)
    nodes = nodes_of(trace.steps)
    fig = F.beam_tree_figure(trace)
    assert F.node_count(fig) == len({n.node_id for n in nodes})
    forced = {n.node_id for n in nodes if n.forced and n.fate != "finished"}
    symbols = {i: s for t in node_traces(fig).values() for i, s in zip(t.customdata, _per_point(t.marker.symbol, t))}
    assert {i for i, s in symbols.items() if s == "diamond"} == forced


def test_real_diverse_beam_trace(tiny_model, prompt):
    trace = run(tiny_model, prompt, num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=5,
                do_sample=False)
    fig = F.beam_tree_figure(trace)
    assert F.node_count(fig) == len({n.node_id for n in nodes_of(trace.steps)})


def test_real_contrastive_trace(tiny_model, prompt):
    trace = run(tiny_model, prompt, penalty_alpha=0.6, top_k=4, max_new_tokens=5)
    fig = F.contrastive_figure(trace)
    assert len(next(t for t in fig.data if t.meta == "chosen").x) == len(trace.steps)


def test_real_dola_trace(tiny_model, prompt):
    trace = run(tiny_model, prompt, dola_layers="low", max_new_tokens=5, do_sample=False)
    heat = next(t for t in F.dola_figure(trace).data if t.meta == "divergence")
    layers = {layer for r in trace.steps for layer in r.dola[0].candidate_layers}
    assert len(heat.z) * len(heat.z[0]) == len(layers) * len(trace.steps)


def test_real_assisted_trace(tiny_model, tiny_assistant, prompt):
    trace = run(tiny_model, prompt, assistant_model=tiny_assistant, max_new_tokens=8, do_sample=False)
    fig = F.speculative_figure(trace)
    drafted = sum(len(r.assisted[0].drafted) for r in trace.steps)
    by = {t.meta: t for t in fig.data}
    assert len(by["accepted"].x) + len(by["rejected"].x) == drafted
    assert math.isclose(F.acceptance_rate(trace) or 0, sum(len(r.assisted[0].accepted) for r in trace.steps) / drafted)
    out = F.tokens_html(trace)
    assert out.count('data-step=') == len(trace.sequences[0]) - prompt.shape[1]
    assert "dp-pna" not in out
