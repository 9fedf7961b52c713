"""One ``BeamIndex`` for every walk from a beam node to the prompt, checked once when a trace or a branch tree is
read: a node that is its own parent, a cycle, a parent never recorded or recorded after its child is refused with a
``ValueError`` at once instead of holding a worker for ever; a valid tree walks as before. A loaded trace's ids are
checked against the model's vocabulary before they feed a run."""

from __future__ import annotations

import json
import threading

import pytest
import torch

import core
from core.beam_index import ROOT, BeamIndex
from core.records import BeamNode, Origin, StepRecord, Trace
from core.steer import MAX_CONTINUED_TOKENS, branch, node_path
from playground import persist, steering
from playground.branches import Branches, _best_path, pieces, samples, series
from playground.figures.beam_tree import beam_graph, beam_tree_figure, node_count, returned_paths
from playground.runs import Run, load_runs

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])
VOCAB = 64  # tests/conftest.py's tiny_llama


def finishes(fn, seconds: float = 5.0):
    """``fn()``'s exception (or None), failing the test if it has not returned within ``seconds`` (a walk that
    loops would never return: the thread is a daemon, left behind)."""
    out = {}

    def target():
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - handed to the test
            out["err"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a walk loops"
    return out.get("err")


def node(node_id: int, parent: int, token_id: int = 3) -> dict:
    return {"node_id": node_id, "parent": parent, "batch": 0, "token_id": token_id, "text": "a", "score": -1.0,
            "normalized_score": -1.0, "fate": "kept"}


def beam_trace(*steps: list[dict], best: list[int] | None = None) -> dict:
    """A trace's dict whose step ``i`` expanded the nodes ``steps[i]``; the last step names ``best``."""
    recs = [{"step": i, "strategy": "beam", "rows": [], "beam": nodes, "best_nodes": None} for i, nodes in
            enumerate(steps)]
    recs[-1]["best_nodes"] = best if best is not None else [steps[-1][0]["node_id"]]
    return {"strategy": "beam", "config": {}, "prompt_ids": [[1, 5]], "steps": recs, "run_id": "r"}


BAD = {  # what is wrong -> (the trace's steps, what the message says)
    "its own parent": ([[node(7, 7)]], r"beam node 7's parent 7 is not an earlier node"),
    "a 2-cycle": ([[node(0, 1), node(1, 0)]], r"beam node 0's parent 1 is not an earlier node"),
    "a dangling parent": ([[node(0, ROOT)], [node(1, 99)]], r"beam node 1's parent 99 is not an earlier node"),
    "a parent after its child": ([[node(0, 1)], [node(1, ROOT)]], r"beam node 0's parent 1 is not an earlier node"),
    "an id twice": ([[node(0, ROOT)], [node(0, ROOT)]], r"beam node 0 is recorded twice"),
    "a non-int id": ([[node(0, ROOT) | {"node_id": "0"}]], r"a beam node id must be an int >= 0; got '0'"),
}


def records(steps: list[list[dict]]) -> list[StepRecord]:
    """Records built directly (no ``Trace.from_dict`` check): what a walk would get if nothing had checked them."""
    return [StepRecord(step=i, strategy="beam", rows=[], beam=[BeamNode(**n) for n in nodes],
                       best_nodes=[nodes[0]["node_id"]]) for i, nodes in enumerate(steps)]


@pytest.mark.parametrize("what", list(BAD))
def test_a_trace_that_is_not_a_tree_is_refused_when_read(what):
    steps, message = BAD[what]
    text = json.dumps(beam_trace(*steps))
    err = finishes(lambda: Trace.from_json(text))
    assert isinstance(err, ValueError) and err.args[0].startswith("trace: "), err
    assert pytest.raises(ValueError, Trace.from_json, text).match(message)


@pytest.mark.parametrize("what", list(BAD))
def test_every_walk_refuses_records_that_are_not_a_tree(what):
    """Records that skipped the read check still cannot loop a walk: each builds the same index."""
    recs = records(BAD[what][0])
    trace = Trace("beam", {}, [[1, 5]], steps=recs, run_id="r")
    walks = {"node_path": lambda: node_path(recs, recs[-1].beam[0].node_id),
             "figure": lambda: beam_tree_figure(recs), "best path": lambda: _best_path(trace, 0),
             "samples": lambda: samples(recs)}
    for name, walk in walks.items():
        assert isinstance(finishes(walk), ValueError), name


def test_load_runs_refuses_a_small_file_whose_node_is_its_own_parent(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(beam_trace([node(7, 7)])))
    assert len(path.read_bytes()) < 400
    err = finishes(lambda: load_runs(str(path)))
    assert isinstance(err, ValueError) and "beam node 7's parent 7 is not an earlier node" in str(err), err
    several = tmp_path / "runs.json"
    several.write_text(json.dumps({"tab": "beam", "runs": {"main": beam_trace([node(0, 1), node(1, 0)])}}))
    assert isinstance(finishes(lambda: load_runs(str(several))), ValueError)


def old_path_to(nodes: dict[int, BeamNode], node_id: int) -> list[int]:
    """The walk the figure did before ``BeamIndex`` (parents followed while recorded): the reference."""
    path = [node_id]
    while nodes[path[-1]].parent in nodes:
        path.append(nodes[path[-1]].parent)
    return path[::-1]


@pytest.mark.parametrize("kwargs", [dict(num_beams=3), dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5),
                                    dict(num_beams=2, do_sample=True)], ids=["beam", "diverse", "beam_sample"])
def test_a_recorded_beam_tree_walks_as_before(tiny_model, kwargs):
    result = core.generate(tiny_model, PROMPT, recorder=core.ListRecorder(), max_new_tokens=6,
                           num_return_sequences=2, generator=torch.Generator().manual_seed(0), **kwargs)
    trace = Trace.from_json(result.trace.to_json())  # read back: checked, and equal
    assert trace.steps == result.trace.steps
    index = BeamIndex.of(trace.steps)
    nodes = {n.node_id: n for rec in trace.steps for n in rec.beam}
    assert set(index.nodes) == set(nodes) and len(index) == len(nodes)
    for node_id in nodes:
        assert index.path(node_id) == old_path_to(nodes, node_id)
        assert index.tokens(node_id) == [nodes[n].token_id for n in old_path_to(nodes, node_id)]
        assert node_path(trace.steps, node_id) == index.tokens(node_id)
        assert all(nodes[c].parent == node_id for c in index.children(node_id))
    assert sorted(index.children(ROOT)) == sorted(n for n in nodes if nodes[n].parent == ROOT)
    # the returned rows are the best nodes' paths: the figure's gold paths, the branch tree's texts, the samples
    paths = returned_paths(trace)
    assert paths == [old_path_to(nodes, n) for n in trace.steps[-1].best_nodes]
    prompt_len = PROMPT.shape[1]
    for row, path in enumerate(paths):
        tokens = [nodes[n].token_id for n in path]
        assert trace.sequences[row][prompt_len:prompt_len + len(tokens)] == tokens
        assert [n.node_id for n in _best_path(trace, row)] == path
        assert [s.token_id for s in samples(trace.steps)[row]] == tokens
    assert node_count(beam_tree_figure(trace)) == len(nodes)
    assert beam_graph(trace).path_to(paths[0][-1]) == paths[0]


def test_the_search_indexes_each_node_after_its_parent(tiny_model):
    """The core's own bookkeeping (``BeamTree``) grows the same index: a parent it never made is a bug it names."""
    from core.strategies.beam_tree import BeamTree

    tree = BeamTree(1, 2, text=None)  # no flush here: the texts are never read
    first = tree.expand(0, 0, 5, -1.0, -1.0)
    assert tree.index.parent[first] == ROOT and tree.path(first) == [5]
    with pytest.raises(ValueError, match="is recorded twice"):
        tree.index.add(first, ROOT, 5)
    with pytest.raises(ValueError, match=r"beam node 9's parent 8 is not an earlier node"):
        tree.index.add(9, 8, 5)


# --- the branch tree ----------------------------------------------------------------------------------------------
def greedy(model, ids=PROMPT, origin=None) -> Trace:
    return core.generate(model, ids, recorder=core.ListRecorder(), max_new_tokens=3, do_sample=False,
                         origin=origin).trace


def tree_json(runs: list[tuple[str, str | None]], trace: Trace) -> str:
    """A branch-tree file of runs (run id, origin parent) that all carry ``trace``'s records."""
    out = []
    for run_id, parent in runs:
        data = trace.to_dict() | {"run_id": run_id}
        data["origin"] = Origin(parent=parent, step=1).__dict__ if parent is not None else None
        out.append({"run_id": run_id, "tab": "greedy", "label": run_id, "prompt": "p", "trace": data})
    return json.dumps({"format": "decoding-playground/branches", "runs": out})


@pytest.mark.parametrize("runs", [[("a", "a")], [("a", "b"), ("b", "a")], [("a", None), ("b", "c"), ("c", "b")]],
                         ids=["own parent", "2-cycle", "cycle beside a root"])
def test_a_branch_tree_whose_runs_continue_themselves_is_refused(tiny_model, runs):
    text = tree_json(runs, greedy(tiny_model))
    err = finishes(lambda: Branches.from_json(text))
    assert isinstance(err, ValueError) and "continues itself" in str(err), err
    kept, problem = persist.restore_tree(text)
    assert kept is None and "continues itself" in problem


def test_a_kept_tree_that_would_close_a_cycle_with_the_session_leaves_it_as_it_was(tiny_model):
    trace = greedy(tiny_model)
    session = Branches.from_json(tree_json([("a", "b")], trace))  # "b" not kept: a run whose parent went
    kept = Branches.from_json(tree_json([("b", "a")], trace))
    before = list(session.entries)
    with pytest.raises(ValueError, match=r"continues itself \(b -> a -> b\)"):
        session.extend(kept)
    assert list(session.entries) == before
    with pytest.raises(ValueError, match="continues itself"):
        session.add("greedy", "b", "p", kept.get("b").trace)


def test_a_valid_branch_tree_reads_back_and_walks_its_parents(tiny_model):
    parent = greedy(tiny_model)
    ids, origin = branch(parent, 1, 0, 7)
    child = greedy(tiny_model, ids, origin)
    tree = Branches()
    tree.add("greedy", "parent", "p", parent)
    tree.add("greedy", "child", "p", child)
    back = Branches.from_json(tree.to_json())
    entry = back.get(child.run_id)
    assert len(series(entry, back).tokens) == len(pieces(entry, back)) == len(entry.tokens()) == 5  # prefix 2, own 3


# --- a loaded trace's ids -----------------------------------------------------------------------------------------
def loaded(trace: Trace, **changes) -> Run:
    """``trace`` as a file a visitor edited (``changes`` to its dict), loaded back as a tab's run."""
    return Run.from_trace("main", "loaded", Trace.from_dict(trace.to_dict() | changes))


def test_an_out_of_vocabulary_id_in_a_loaded_trace_is_named_before_the_branch_runs(tiny_model):
    trace = greedy(tiny_model)
    start = steering.branch_at(loaded(trace), 1, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "ok")
    steering.check_vocab(start, VOCAB)  # the trace as it was: continues
    bad_prompt = loaded(trace, prompt_ids=[[1, 99999, 9]])
    with pytest.raises(ValueError, match=r"trace prompt_ids: token id 99999 is outside the model's vocabulary "
                                         r"\[0, 64\)"):
        steering.branch_at(bad_prompt, 1, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "x")
    steps = trace.to_dict()["steps"]
    steps[0]["rows"][0]["chosen"] = [VOCAB]
    with pytest.raises(ValueError, match=r"trace chosen tokens: token id 64 is outside"):
        steering.branch_at(loaded(trace, steps=steps), 2, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "x")
    prefix = Origin(parent="p", step=1, prefix=[-3]).__dict__
    with pytest.raises(ValueError, match=r"trace origin.prefix: token id -3 is outside"):
        steering.branch_at(loaded(trace, origin=prefix), 1, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "x")
    with pytest.raises(ValueError, match=r"trace prompt_ids: a token id must be an int; got 1.5"):
        steering.branch_at(loaded(trace, prompt_ids=[[1.5]]), 1, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "x")
    long = loaded(trace, prompt_ids=[[1] * (MAX_CONTINUED_TOKENS + 1)])
    with pytest.raises(ValueError, match=rf"trace prompt_ids must hold at most {MAX_CONTINUED_TOKENS} tokens; got "):
        steering.branch_at(long, 1, 0, 7, {"max_new_tokens": 2}, 0, VOCAB, "x")


def test_a_beam_node_past_the_vocabulary_is_named_before_branching_from_it(tiny_model):
    trace = core.generate(tiny_model, PROMPT, recorder=core.ListRecorder(), max_new_tokens=3, num_beams=2).trace
    data = trace.to_dict()
    data["steps"][0]["beam"][0]["token_id"] = 50_000
    run = Run.from_trace("main", "loaded", Trace.from_dict(data))
    node_id = data["steps"][1]["beam"][0]["node_id"]
    with pytest.raises(ValueError, match=r"trace beam token_id: token id 50000 is outside"):
        steering.branch_at_node(run, node_id, {"max_new_tokens": 2}, 0, "x", VOCAB)


def test_the_last_check_refuses_any_start_past_the_vocabulary():
    start = steering.Start(torch.tensor([[1, VOCAB]]), torch.ones(1, 2, dtype=torch.long), None, {}, "x")
    with pytest.raises(ValueError, match=r"input ids: token id 64 is outside the model's vocabulary \[0, 64\)"):
        steering.check_vocab(start, VOCAB)
