"""Constrained beam search: ``core.generate`` returns the tokens transformers 4.55.4 returned (5.x no longer
runs it) on a tiny Llama, for ``force_words_ids`` (words and disjunctive groups) and ``constraints`` objects,
with beams, return sequences, length penalty, every ``early_stopping``, ``no_repeat_ngram_size``, EOS
finishes, early stops, too-short searches (4.55.4 then returns the best unconstrained beams) and a
left-padded batch. Recording changes no token; the recorded tree spells the returned sequences; bad
settings raise a ``ValueError`` naming the field. A slow test replays one constrained entry of the
embedded-model 4.55.4 fixture (``tests/oracle``) with its record; ``tests/test_oracle.py`` replays them all.

``EXPECTED`` is what transformers 4.55.4 returned for ``CASES`` on the weights of ``tiny_llama(0)``, made by hand
with the recipe in ``tests/oracle/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

import core
from core.constraints import DisjunctiveConstraint, PhrasalConstraint

# name -> (input_ids, attention_mask, settings); constraints as ("phrasal", ids) / ("disjunctive", words).
# A pure literal: the oracle snippet above reads it with ast.literal_eval.
CASES = {
    "phrasal_word": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                     {"num_beams": 4, "max_new_tokens": 8, "force_words_ids": [[7, 8]]}),
    "two_words_nrs2": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                       {"num_beams": 4, "max_new_tokens": 10, "num_return_sequences": 2,
                        "force_words_ids": [[7, 8], [30]]}),
    "disjunctive_branching": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                              {"num_beams": 3, "max_new_tokens": 10, "force_words_ids": [[[40, 41], [40, 42], [12]]]}),
    "mixed_ngram_lp": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                       {"num_beams": 4, "max_new_tokens": 12, "num_return_sequences": 3, "no_repeat_ngram_size": 2,
                        "length_penalty": 0.5, "force_words_ids": [[7, 8], [[30], [40, 41]]]}),
    "objects_early_true": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                           {"num_beams": 5, "max_new_tokens": 12, "early_stopping": True, "num_return_sequences": 2,
                            "eos_token_id": 46,
                            "constraints": [("phrasal", [10, 11, 12]), ("disjunctive", [[30], [40, 41]])]}),
    "eos_heuristic": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                      {"num_beams": 4, "max_new_tokens": 16, "eos_token_id": 46, "num_return_sequences": 4,
                       "force_words_ids": [[33]]}),
    "eos_never_neg_lp": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                         {"num_beams": 3, "max_new_tokens": 14, "eos_token_id": 46, "early_stopping": "never",
                          "length_penalty": -0.5, "constraints": [("phrasal", [3, 4])]}),
    "eos_early_stop": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                       {"num_beams": 3, "max_new_tokens": 16, "eos_token_id": 33, "early_stopping": True,
                        "num_return_sequences": 2, "force_words_ids": [[60]]}),
    "eos_heuristic_33": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                         {"num_beams": 3, "max_new_tokens": 16, "eos_token_id": 33, "num_return_sequences": 2,
                          "force_words_ids": [[60]]}),
    "too_short": ([[1, 5, 9, 13, 17, 21]], [[1, 1, 1, 1, 1, 1]],
                  {"num_beams": 4, "max_new_tokens": 2, "num_return_sequences": 2, "force_words_ids": [[7, 8, 9, 10]]}),
    "batch_padded": ([[0, 0, 1, 5, 9, 13], [1, 22, 4, 60, 8, 31]], [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]],
                     {"num_beams": 4, "max_new_tokens": 10, "num_return_sequences": 2, "eos_token_id": 46,
                      "force_words_ids": [[7, 8], [[30], [40, 41]]]}),
}

# transformers 4.55.4 ``model.generate`` on the same weights and ids (see the module docstring)
EXPECTED = {
    "phrasal_word": [[1, 5, 9, 13, 17, 21, 60, 33, 46, 46, 46, 47, 7, 8]],
    "two_words_nrs2": [[1, 5, 9, 13, 17, 21, 60, 33, 30, 32, 36, 6, 40, 41, 55, 38],
                       [1, 5, 9, 13, 17, 21, 60, 33, 30, 32, 36, 6, 40, 41, 55, 7]],
    "disjunctive_branching": [[1, 5, 9, 13, 17, 21, 60, 33, 46, 46, 46, 47, 34, 32, 36, 12]],
    "mixed_ngram_lp": [[1, 5, 9, 13, 17, 21, 60, 33, 40, 41, 55, 38, 26, 36, 33, 51, 21, 11],
                       [1, 5, 9, 13, 17, 21, 60, 33, 40, 41, 55, 38, 26, 36, 33, 51, 21, 7],
                       [1, 5, 9, 13, 17, 21, 60, 33, 40, 41, 55, 38, 26, 36, 33, 46, 7, 8]],
    "objects_early_true": [[1, 5, 9, 13, 17, 21, 30, 32, 36, 6, 40, 41, 55, 38, 7, 10, 11, 12],
                           [1, 5, 9, 13, 17, 21, 30, 32, 36, 6, 40, 41, 55, 38, 30, 10, 11, 12]],
    "eos_heuristic": [[1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 33, 22, 60],
                      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 36, 6, 40],
                      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 33, 22, 11],
                      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 36, 6, 24]],
    "eos_never_neg_lp": [[1, 5, 9, 13, 17, 21, 60, 33, 49, 20, 57, 52, 27, 6, 40, 41, 55, 38, 3, 4]],
    "eos_early_stop": [[1, 5, 9, 13, 17, 21, 60, 36, 6, 40, 41, 55, 38, 30, 32, 36, 11, 33],
                       [1, 5, 9, 13, 17, 21, 60, 36, 6, 40, 41, 55, 38, 30, 32, 36, 33, 0]],
    "eos_heuristic_33": [[1, 5, 9, 13, 17, 21, 60, 36, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 33, 0, 0],
                         [1, 5, 9, 13, 17, 21, 60, 36, 6, 40, 41, 55, 38, 30, 32, 36, 11, 42, 56, 36, 6, 40]],
    "too_short": [[1, 5, 9, 13, 17, 21, 60, 33], [1, 5, 9, 13, 17, 21, 60, 7]],
    "batch_padded": [[0, 0, 1, 5, 9, 13, 23, 40, 41, 55, 38, 34, 44, 47, 34, 32],
                     [0, 0, 1, 5, 9, 13, 23, 40, 41, 55, 38, 34, 44, 47, 34, 7],
                     [1, 22, 4, 60, 8, 31, 48, 43, 40, 41, 55, 38, 30, 21, 11, 42],
                     [1, 22, 4, 60, 8, 31, 48, 43, 40, 41, 55, 38, 30, 21, 10, 7]],
}

# Cases whose returned rows all fulfil their constraints (in the others too few beams did, and 4.55.4
# returned the best beams regardless; the parity test checks that we do the same).
FULFILLED = ["phrasal_word", "disjunctive_branching", "objects_early_true", "eos_never_neg_lp", "eos_early_stop",
             "eos_heuristic_33"]


pytestmark = pytest.mark.usefixtures("one_thread")


# --- helpers ------------------------------------------------------------------------------------------------------
def settings(name: str) -> dict:
    """The case's settings with constraint specs built into ``core.constraints`` objects."""
    kwargs = dict(CASES[name][2])
    if "constraints" in kwargs:
        kwargs["constraints"] = [PhrasalConstraint(list(a)) if t == "phrasal"
                                 else DisjunctiveConstraint([list(w) for w in a]) for t, a in kwargs["constraints"]]
    return kwargs


def run(model, name: str, **extra) -> core.GenerationResult:
    ids, mask, _ = CASES[name]
    return core.generate(model, torch.tensor(ids), attention_mask=torch.tensor(mask), **settings(name), **extra)


def contains(seq: list[int], word: list[int]) -> bool:
    return any(seq[i:i + len(word)] == word for i in range(len(seq) - len(word) + 1))


def fulfils(seq: list[int], kwargs: dict) -> bool:
    """Whether ``seq`` holds every phrase, and one word of every group, of the case's constraints."""
    words = [("phrasal", w) if not isinstance(w[0], list) else ("disjunctive", w)
             for w in kwargs.get("force_words_ids", [])]
    for kind, word in list(kwargs.get("constraints", [])) + words:
        if kind == "phrasal" and not contains(seq, list(word)):
            return False
        if kind == "disjunctive" and not any(contains(seq, list(w)) for w in word):
            return False
    return True


# --- parity with 4.55.4 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_matches_transformers_4_55_4(tiny_model, name):
    assert run(tiny_model, name).sequences.tolist() == EXPECTED[name]


@pytest.mark.parametrize("name", ["disjunctive_branching", "eos_early_stop", "batch_padded"])
def test_recording_changes_no_token(tiny_model, name):
    result = run(tiny_model, name, recorder=core.ListRecorder())
    assert result.sequences.tolist() == EXPECTED[name]
    assert result.trace.strategy == "constrained_beam_search"


@pytest.mark.parametrize("name", FULFILLED)
def test_every_returned_sequence_fulfils_the_constraints(tiny_model, name):
    for seq in run(tiny_model, name).sequences.tolist():
        assert fulfils(seq, CASES[name][2]), seq


def test_force_words_ids_are_the_same_constraints_as_objects(tiny_model, prompt):
    """4.55.4's generate turns a word into a PhrasalConstraint and a group into a DisjunctiveConstraint."""
    common = {"num_beams": 4, "max_new_tokens": 8, "num_return_sequences": 2}
    by_ids = core.generate(tiny_model, prompt, force_words_ids=[[7, 8], [[30], [40, 41]]], **common)
    given = [PhrasalConstraint([7, 8]), DisjunctiveConstraint([[30], [40, 41]])]
    by_objects = core.generate(tiny_model, prompt, constraints=given, **common)
    assert by_ids.sequences.tolist() == by_objects.sequences.tolist()
    # the given objects are templates: never advanced, and the list is not extended
    mixed = [PhrasalConstraint([7, 8])]
    core.generate(tiny_model, prompt, constraints=mixed, force_words_ids=[[[30], [40, 41]]], **common)
    assert len(mixed) == 1 and mixed[0].fulfilled_idx == -1 and given[1].current_seq == []


# --- validation -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"force_words_ids": []}, "force_words_ids"),
    ({"force_words_ids": [7, 8]}, "force_words_ids"),
    ({"force_words_ids": "7"}, "force_words_ids"),
    ({"force_words_ids": [[]]}, "force_words_ids"),
    ({"force_words_ids": [[7, -1]]}, "force_words_ids"),
    ({"force_words_ids": [[7, 64]]}, "force_words_ids"),
    ({"force_words_ids": [["a"]]}, "force_words_ids"),
    ({"force_words_ids": [[[7], []]]}, "force_words_ids"),
    ({"force_words_ids": [[[7], [7, 8]]]}, "force_words_ids"),  # a word that is a prefix of another
    ({"constraints": []}, "constraints"),
    ({"constraints": [[7, 8]]}, "constraints"),
    ({"constraints": PhrasalConstraint([7])}, "constraints"),
    ({"constraints": [PhrasalConstraint([70])]}, "constraints"),
    ({"force_words_ids": [[7]], "do_sample": True}, "do_sample"),
    ({"constraints": [PhrasalConstraint([7])], "do_sample": True}, "do_sample"),
    ({"force_words_ids": [[7]], "num_beam_groups": 2, "diversity_penalty": 1.0}, "num_beam_groups"),
    ({"force_words_ids": [[7]], "num_beams": 1}, "num_beams"),
    ({"force_words_ids": [[7]], "num_return_sequences": 5}, "num_return_sequences"),
])
def test_bad_settings_raise_value_error_naming_the_field(tiny_model, prompt, kwargs, field):
    kwargs = {"num_beams": 4, **kwargs}
    with pytest.raises(ValueError, match=f"`{field}`"):
        core.generate(tiny_model, prompt, max_new_tokens=3, **kwargs)


def test_constraint_constructors_reject_bad_ids():
    with pytest.raises(ValueError, match="`token_ids`"):
        PhrasalConstraint([])
    with pytest.raises(ValueError, match="`nested_token_ids`"):
        DisjunctiveConstraint([[1], 2])
    with pytest.raises(ValueError, match="`nested_token_ids`"):
        DisjunctiveConstraint([[1, 2], [1]])


# --- the record ------------------------------------------------------------------------------------------------------
def path(nodes: dict[int, core.BeamNode], node_id: int) -> list[int]:
    tokens = []
    while node_id != -1:
        tokens.append(nodes[node_id].token_id)
        node_id = nodes[node_id].parent
    return tokens[::-1]


@pytest.mark.parametrize("name", ["mixed_ngram_lp", "objects_early_true", "eos_early_stop", "batch_padded"])
def test_trace_round_trips_and_its_tree_spells_the_returned_sequences(tiny_model, name):
    ids, _, case = CASES[name]
    result = run(tiny_model, name, recorder=core.ListRecorder())
    trace = result.trace
    assert core.Trace.from_json(trace.to_json()) == trace

    num_beams, lp = case["num_beams"], case.get("length_penalty", 1.0)
    num_return, prompt_len = case.get("num_return_sequences", 1), len(ids[0])
    nodes: dict[int, core.BeamNode] = {}
    for step in trace.steps:
        for node in step.beam:
            assert node.parent == -1 if step.step == 0 else node.parent in nodes  # parents come from earlier steps
            assert node.normalized_score == pytest.approx(node.score / (step.step + 1) ** lp)
            assert node.fate in ("kept", "pruned", "finished")
            assert (node.bank is not None) if node.forced else True
        nodes.update({node.node_id: node for node in step.beam})
        # every running batch row keeps K beams (at the last step they become finished hypotheses)
        last = step is trace.steps[-1]
        eos = case.get("eos_token_id", 2)
        for batch in {node.batch for node in step.beam}:
            kept = [n for n in step.beam if n.batch == batch
                    and (n.fate == "kept" or (last and n.fate == "finished" and n.token_id != eos))]
            assert len(kept) == num_beams
        assert len(step.best) == len(ids) * num_return
        # the best rows are the paths to the nodes the step names
        assert step.best == [path(nodes, n) if n != -1 else [] for n in step.best_nodes]

    # each returned row is the path of a finished node (then EOS / padding), and the last `best` is its prefix
    fill = {0, case.get("eos_token_id", 2)}
    finished = [n for n in nodes.values() if n.fate == "finished"]
    for row, seq in enumerate(result.sequences.tolist()):
        new = seq[prompt_len:]
        best = trace.steps[-1].best[row]
        assert new[:len(best)] == best and set(new[len(best):]) <= fill
        paths = [path(nodes, n.node_id) for n in finished if n.batch == row // num_return]
        assert any(new[:len(p)] == p and set(new[len(p):]) <= fill for p in paths), (new, paths)


def test_stream_shows_the_best_hypotheses_and_ends_with_the_result(tiny_model):
    ids, mask, _ = CASES["two_words_nrs2"]
    events = list(core.stream(tiny_model, torch.tensor(ids), attention_mask=torch.tensor(mask),
                              **settings("two_words_nrs2")))
    assert events[-1].done and events[-1].result.sequences.tolist() == EXPECTED["two_words_nrs2"]
    assert all(len(e.tokens) == 2 for e in events[:-1])
    final = [seq[len(ids[0]):] for seq in EXPECTED["two_words_nrs2"]]
    assert all(row[:len(best)] == best for row, best in zip(final, events[-2].tokens))  # the last step's best


def test_streamer_receives_the_prompt_then_the_best_row(tiny_model, prompt):
    class Collect(BaseStreamer):
        def __init__(self):
            self.parts, self.ended = [], False

        def put(self, value):
            self.parts.append(value.reshape(-1).tolist())

        def end(self):
            self.ended = True

    streamer = Collect()
    result = core.generate(tiny_model, prompt, streamer=streamer, num_beams=4, max_new_tokens=6,
                           force_words_ids=[[7, 8]])
    assert streamer.ended and sum(streamer.parts, []) == result.sequences[0].tolist()


# --- the embedded model against the 4.55.4 fixture ----------------------------------------------------------------
FIXTURE = Path(__file__).parent / "oracle" / "oracle_4_55_4.json"


@pytest.mark.slow
def test_embedded_model_matches_the_4_55_4_fixture_and_its_tree_spells_the_rows(embedded):
    """One constrained entry of ``tests/oracle`` (``tests/test_oracle.py`` replays them all for tokens), here
    with the record: the rows hold the forced words and the last step's best hypotheses are the rows."""
    entry = next(e for e in json.loads(FIXTURE.read_text())["entries"]
                 if e["name"] == "constrained_phrasal_and_disjunctive/france")
    settings = dict(entry["settings"])
    specs = settings.pop("constraints")
    settings["constraints"] = [PhrasalConstraint(s["token_ids"]) if s["type"] == "phrasal"
                               else DisjunctiveConstraint(s["nested_token_ids"]) for s in specs]
    result = core.generate(embedded.model, torch.tensor(entry["input_ids"]),
                           attention_mask=torch.tensor(entry["attention_mask"]), recorder=core.ListRecorder(top_n=3),
                           tokenizer=embedded.tokenizer, **settings)
    assert result.sequences.tolist() == entry["output_ids"]
    prompt_len = len(entry["input_ids"][0])
    as_specs = {"constraints": [("phrasal", s["token_ids"]) if s["type"] == "phrasal"
                                else ("disjunctive", s["nested_token_ids"]) for s in specs]}
    for seq, best in zip(entry["output_ids"], result.trace.steps[-1].best):
        assert fulfils(seq, as_specs)
        assert seq[prompt_len:prompt_len + len(best)] == best
    assert any(node.forced for step in result.trace.steps for node in step.beam)
