"""A run's facts (``playground.facts``: the prompt, the chat template, Sample N's seeds, the assistant) travel as
fields: from where the run starts, through its trace, a trace file and the branch tree, back into a run; labels are
drawn from them, a file of an older playground (no facts) still loads, and facts of a wrong shape are refused by name.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import core
from core.rng import new_generator
from playground import steering
from playground.branches import Branches
from playground.facts import Facts, run_label, seeds_text
from playground.figures import branches as branch_figures
from playground.runs import Run, load_runs, save_runs

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])
VOCAB = 64


def finished(model, facts: Facts, seed: int = 3, **kwargs) -> Run:
    """A run fed from ``core.stream`` to its end, as ``runs.stream_run`` feeds a tab's."""
    run = Run("main", run_label("Sampling", facts), {"max_new_tokens": 4, "do_sample": True, **kwargs}, facts=facts,
              seed=seed)
    for event in core.stream(model, PROMPT, generator=new_generator(seed), **run.kwargs):
        run.feed(event)
    return run


def test_labels_are_drawn_from_the_facts():
    assert run_label("Assisted", Facts(assistant="smollm2-135m-instruct")) == "Assisted by smollm2-135m-instruct"
    assert run_label("Sampling", Facts(seeds=(5, 6, 7))) == "Sampling ×3 (seeds 5..7)"
    assert run_label("Sampling", Facts(seeds=(5,), chat=True, prompt="Hi")) == "Sampling"
    assert seeds_text((9, 2, 4, 8)) == "9, 2, 4, …" and seeds_text((7,)) == "7" and seeds_text(()) == ""


def test_a_run_writes_its_facts_into_its_trace_and_a_trace_file_reads_them_back(tiny_model, tmp_path):
    facts = Facts("Name a fruit.", chat=False, seeds=(), assistant="")
    run = finished(tiny_model, facts)
    assert Facts.from_dict(run.trace.facts) == facts and run.seeds == (3,)
    stopped = dataclasses.replace(run, trace=None, stopped="cancelled")  # a stopped run's trace is built from the run
    assert stopped.to_trace().facts == facts.to_dict()
    back = load_runs(save_runs("sampling", {"main": run}, tmp_path), main_label="Sampling")["main"]
    assert back.facts == facts and back.prompt == "Name a fruit." and back.label == "Sampling"


def test_sample_n_writes_its_seeds_where_it_makes_the_generators_and_its_label_shows_them():
    start = steering.sample_many(PROMPT, {"do_sample": True}, 3, 5, "Sampling", Facts("p", chat=True))
    assert [g.initial_seed() for g in start.generator] == [5, 6, 7]
    assert start.facts == Facts("p", chat=True, seeds=(5, 6, 7)) and start.label == "Sampling ×3 (seeds 5..7)"


def test_a_run_that_continues_another_keeps_its_prompt_and_encoding(tiny_model):
    parent = finished(tiny_model, Facts("Name a fruit.", chat=False))
    token = next(c.token_id for c in parent.steps[1].rows[0].candidates if c.token_id not in parent.tokens[0])
    now = Facts("typed since", chat=True, assistant="helper")  # the tab's boxes when Continue is clicked
    start = steering.branch_at(parent, 1, 0, token, {"max_new_tokens": 2}, 0, VOCAB, "x", now)
    assert start.facts == Facts("Name a fruit.", chat=False, seeds=(), assistant="helper")


def test_a_trace_written_before_facts_still_loads(tiny_model, tmp_path):
    data = finished(tiny_model, Facts("p", chat=True)).trace.to_dict()
    del data["facts"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    run = load_runs(str(path), main_label="Sampling")["main"]
    assert run.facts == Facts() and run.facts.chat is None and run.label == "Sampling"
    entry = Branches().add("sampling", "Sampling", "p", run.trace)
    assert Run.from_trace("main", entry.label, entry.trace, prompt=entry.prompt).prompt == "p"


@pytest.mark.parametrize("facts, field", [([1], "facts must be an object"), ({"prompt": 3}, "`prompt`"),
                                          ({"chat": "yes"}, "`chat`"), ({"seeds": [1.5]}, "`seeds`"),
                                          ({"seeds": [-1]}, "`seeds`"), ({"seeds": [True]}, "`seeds`"),
                                          ({"assistant": ["m"]}, "`assistant`"),
                                          ({"seeds": list(range(10_000))}, "`seeds` must hold at most"),
                                          ({"prompt": "word " * 1_000_000}, "`facts.prompt` must be at most")])
def test_facts_of_a_wrong_shape_are_refused_by_name(tiny_model, tmp_path, facts, field):
    trace = dataclasses.replace(finished(tiny_model, Facts("p")).trace, facts=facts)
    path = tmp_path / "bad.json"
    path.write_text(trace.to_json())
    with pytest.raises(ValueError, match=field):
        load_runs(str(path))
    with pytest.raises(ValueError, match=field):
        Branches().add("sampling", "Sampling", "p", trace)


def test_the_branch_tree_keeps_the_facts_and_names_sample_ns_seeds(tiny_model):
    facts = Facts("p", chat=True, seeds=(5, 6))
    run = finished(tiny_model, facts)
    branches = Branches()
    branches.add("sampling", run.label, run.prompt, run.trace)
    kept = Branches.from_json(branches.to_json(max_chars=10 ** 6))  # the bounded form the browser keeps
    (entry,) = kept.entries.values()
    assert entry.facts == facts and entry.seeds == (5, 6)
    fig = branch_figures.branch_tree_figure(kept, entry.prompt_key, entry.run_id)
    hovers = [h for t in fig.data if t.hovertext is not None for h in t.hovertext]
    assert any("seeds 5..6" in h for h in hovers), hovers
