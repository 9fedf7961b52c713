"""Steering from records: a branch forces a token at a picked step and continues exactly as transformers'
``generate`` does from that prefix; step mode run to the end equals one Generate; N samples in one batch equal N
seeded single runs."""

from __future__ import annotations

import pytest
import torch

import core
from core.rng import new_generator
from core.steer import branch, node_path, tokens_before

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])


def run(model, ids=PROMPT, seed=None, **kwargs) -> core.GenerationResult:
    return core.generate(model, ids, recorder=core.ListRecorder(),
                         generator=new_generator(seed) if seed is not None else None, **kwargs)


def other_token(rec, row=0) -> int:
    """A recorded alternative of ``rec`` that the run did not choose."""
    rs = next(r for r in rec.rows if r.row == row)
    return next(c.token_id for c in rs.candidates if c.token_id not in rs.chosen)


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_k=0)], ids=["greedy", "sample"])
def test_a_branch_forces_its_token_and_continues_like_transformers(tiny_model, kwargs):
    parent = run(tiny_model, seed=3, max_new_tokens=10, **kwargs).trace
    step = 4
    forced = other_token(parent.steps[step])
    ids, origin = branch(parent, step, 0, forced)
    generated = parent.sequences[0][PROMPT.shape[1]:]
    assert ids[0].tolist() == PROMPT[0].tolist() + generated[:step] + [forced]  # the prefix before it, unchanged
    assert origin.parent == parent.run_id and origin.step == step and origin.token_id == forced
    child = run(tiny_model, ids, seed=11, max_new_tokens=6, origin=origin, **kwargs)
    torch.manual_seed(11)
    assert torch.equal(child.sequences, tiny_model.generate(ids, max_new_tokens=6, **kwargs))
    assert child.trace.origin == origin and child.trace.run_id != parent.run_id


def test_a_branch_of_a_branch_keeps_the_whole_prefix(tiny_model):
    first = run(tiny_model, max_new_tokens=8, do_sample=False).trace
    ids, origin = branch(first, 2, 0, other_token(first.steps[2]))
    second = run(tiny_model, ids, max_new_tokens=6, do_sample=False, origin=origin).trace
    ids2, origin2 = branch(second, 3, 0, other_token(second.steps[3]))
    new = second.sequences[0][ids.shape[1]:]
    assert origin2.prefix == origin.prefix + new[:3] + [origin2.token_id]
    assert ids2[0].tolist() == PROMPT[0].tolist() + origin2.prefix


def test_a_beam_branch_starts_from_the_beams_path(tiny_model):
    """In beam search row r at step s is running beam r: its prefix is the path of the node that beam continues
    (the records' slots), and the continuation equals transformers' beam search from that prefix."""
    kwargs = dict(num_beams=3, do_sample=False, max_new_tokens=8)
    parent = run(tiny_model, **kwargs).trace
    step, row = 3, 1
    before = tokens_before(parent.steps, step, row)
    slot_node = next(n for n in parent.steps[step - 1].beam if n.slot == row)
    assert before == node_path(parent.steps, slot_node.node_id) and len(before) == step
    # the beam's candidates at that step continue exactly that hypothesis
    assert {n.parent for n in parent.steps[step].beam if n.parent == slot_node.node_id}
    forced = other_token(parent.steps[step], row)
    ids, origin = branch(parent, step, row, forced)
    child = run(tiny_model, ids, origin=origin, **{**kwargs, "max_new_tokens": 5})
    assert torch.equal(child.sequences, tiny_model.generate(ids, num_beams=3, do_sample=False, max_new_tokens=5))


def test_branching_from_a_beam_node_uses_its_path(tiny_model):
    parent = run(tiny_model, num_beams=2, do_sample=False, max_new_tokens=6).trace
    node = next(n for n in parent.steps[3].beam if n.fate == "pruned")
    path = node_path(parent.steps, node.node_id)
    assert len(path) == 4 and path[-1] == node.token_id
    with pytest.raises(ValueError, match="`node` must be a node of the run's beam tree"):
        node_path(parent.steps, 10_000)


def test_bad_steps_rows_and_tokens_are_named(tiny_model):
    parent = run(tiny_model, max_new_tokens=4, do_sample=False).trace
    with pytest.raises(ValueError, match=r"`step` must be in \[0, 4\] for this run; got 9"):
        branch(parent, 9, 0, 3)
    with pytest.raises(ValueError, match=r"`row` must be in \[0, 0\] for this run; got 2"):
        branch(parent, 1, 2, 3)
    with pytest.raises(ValueError, match=r"`token` must be a token id in \[0, 63\]; got 64"):
        branch(parent, 1, 0, 64, vocab_size=64)


@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, top_k=0),
                                    dict(penalty_alpha=0.6, top_k=4), dict(dola_layers="low", do_sample=False)],
                         ids=["greedy", "sample", "contrastive", "dola"])
def test_step_mode_to_the_end_equals_one_generate(tiny_model, kwargs):
    """Next token, again and again: each step is a run of one token from the tokens so far, drawing from the
    generator the previous step left (its state carried over), and together they equal one Generate."""
    whole = run(tiny_model, seed=5, max_new_tokens=8, **kwargs)
    ids, generator = PROMPT, new_generator(5)
    for _ in range(8):
        one = core.generate(tiny_model, ids, generator=generator, max_new_tokens=1, **kwargs)
        ids = one.sequences
    assert torch.equal(ids, whole.sequences)


@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_k=0), dict(do_sample=True, num_beams=2),
                                    dict(do_sample=True, top_k=0, xtc_probability=0.5, xtc_threshold=0.02)],
                         ids=["sample", "beam_sample", "sample_xtc"])
def test_many_samples_in_one_batch_equal_their_seeded_single_runs(tiny_model, kwargs):
    n, seed = 6, 40
    batch = core.generate(tiny_model, PROMPT.expand(n, -1), generator=[new_generator(seed + i) for i in range(n)],
                          max_new_tokens=10, **kwargs)
    for i in range(n):
        single = core.generate(tiny_model, PROMPT, generator=new_generator(seed + i), max_new_tokens=10,
                               **kwargs).sequences[0].tolist()
        row = batch.sequences[i].tolist()
        # then padding where it ended early (beam search pads with EOS when pad_token_id is 0, as transformers)
        assert row[:len(single)] == single and set(row[len(single):]) <= {0, 2}, i


def test_the_session_tree_keeps_at_most_max_runs_dropping_runs_nobody_continues(tiny_model):
    from playground.branches import MAX_RUNS, Branches

    branches = Branches()
    first = run(tiny_model, max_new_tokens=2, do_sample=False).trace
    branches.add("greedy", "first", "p", first)
    ids, origin = branch(first, 1, 0, other_token(first.steps[1]))
    child = run(tiny_model, ids, max_new_tokens=2, do_sample=False, origin=origin).trace
    branches.add("greedy", "child", "p", child)
    for i in range(MAX_RUNS + 3):
        branches.add("greedy", "more", "p", run(tiny_model, max_new_tokens=1, do_sample=False).trace)
        if i < MAX_RUNS - 2:  # the first eviction takes an unrelated run, not the parent
            assert first.run_id in branches.entries and child.run_id in branches.entries
        # a parent never goes while a run that continues it stays
        assert all(e.parent is None or e.parent in branches.entries for e in branches.entries.values())
    assert len(branches.entries) == MAX_RUNS


def test_the_session_tree_keeps_runs_without_their_logit_lens(tiny_model):
    from playground.branches import Branches

    trace = core.generate(tiny_model, PROMPT, recorder=core.ListRecorder(lens=True), max_new_tokens=4).trace
    entry = Branches().add("greedy", "Greedy", "p", trace)
    assert all(step.lens for step in trace.steps)  # the tab's own run keeps it
    assert all(step.lens is None for step in entry.trace.steps)
    assert [s.rows for s in entry.trace.steps] == [s.rows for s in trace.steps] and entry.trace.run_id == trace.run_id
