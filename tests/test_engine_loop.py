"""The engine's busy loop (``core.engine.loop``): runs of every strategy, stepped as greenlets of one thread and
joining and leaving mid-way, equal the same runs alone, token for token and record for record; a cancelled run ends
within a pass; a run that fails ends alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import core
from core.engine import EngineLoop
from core.rng import new_generator

from conftest import tiny_llama
from test_scheduler import RUNS, run

MORE = [  # the strategies the scheduler's table leaves out: each goes through the loop too
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5), [1, 62, 63], 8),
    (dict(prompt_lookup_num_tokens=3, do_sample=False), [1, 5, 6, 7, 5, 6, 7, 5, 6], 10),
    (dict(do_sample=True, num_beams=2, seed=4), [1, 44], 6),
]


def through(loop: EngineLoop, model, runs, late: set[int] = frozenset()):
    """Each run as a body of ``loop``; those in ``late`` start once the others have stepped a while."""
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []
    done = threading.Semaphore(0)

    def body(i):
        def go():
            try:
                results[i] = run(model, *runs[i], scheduler=loop.lane(model))
            except BaseException as err:  # re-raised below
                errors.append(err)
            finally:
                done.release()
        return go

    for i in range(len(runs)):
        if i not in late:
            loop.start(body(i))
    passes = loop.passes
    deadline = time.monotonic() + 30
    while loop.passes < passes + 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    for i in late:
        loop.start(body(i))
    for _ in runs:
        assert done.acquire(timeout=120)
    assert not errors, errors
    return [results[i] for i in range(len(runs))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_runs_through_the_loop_equal_the_same_runs_alone(one_thread, dtype):
    model = tiny_llama(0, dtype=dtype)
    runs = RUNS + MORE
    solo = [run(model, *r) for r in runs]
    loop = EngineLoop()
    shared = through(loop, model, runs, late={2, 5, 9})
    for i, (a, b) in enumerate(zip(solo, shared)):
        assert a[0] == b[0], f"run {i}: {runs[i][0]} tokens differ in the loop"
        assert a[1] == b[1], f"run {i}: {runs[i][0]} recorded candidates differ in the loop"
    stats = loop.lane(model).stats
    assert stats.rows > stats.forwards and max(stats.batch_sizes) >= 4  # the runs did share forwards
    deadline = time.monotonic() + 10  # the last body has reported; its greenlet ends in that pass
    while loop.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert loop.running == 0


def test_seeded_runs_on_the_embedded_model_equal_their_solo_runs(embedded, one_thread):
    model, tok = embedded.model, embedded.tokenizer
    prompt = tok("The sea is", return_tensors="pt").input_ids[0].tolist()
    runs = [(dict(do_sample=False), prompt, 10), (dict(do_sample=True, top_k=50, seed=1), prompt[:2], 12),
            (dict(num_beams=2), prompt + prompt, 6), (dict(penalty_alpha=0.6, top_k=4), prompt, 5),
            (dict(do_sample=True, seed=2, dry_multiplier=0.8, tokenizer=tok), prompt, 8)]
    solo = [run(model, *r) for r in runs]
    shared = through(EngineLoop(), model, runs, late={3})
    assert [s[0] for s in shared] == [s[0] for s in solo]
    assert [s[1] for s in shared] == [s[1] for s in solo]


def test_a_stream_through_the_loop_is_core_streams_own(one_thread):
    model = tiny_llama(0)
    settings = dict(do_sample=True, temperature=0.8, max_new_tokens=9)
    alone = list(core.stream(model, torch.tensor([[1, 5, 9]]), generator=new_generator(7), **settings))
    looped = list(core.stream(model, torch.tensor([[1, 5, 9]]), generator=new_generator(7), engine=EngineLoop(),
                              **settings))
    assert [e.tokens for e in looped] == [e.tokens for e in alone]
    assert looped[-1].result.sequences.tolist() == alone[-1].result.sequences.tolist()


def test_a_cancelled_run_ends_and_the_others_go_on(one_thread):
    model = tiny_llama(0)
    loop = EngineLoop()
    cancel = threading.Event()
    long = core.stream(model, torch.tensor([[1, 5, 9]]), max_new_tokens=400, do_sample=False, cancel=cancel,
                       engine=loop)
    other = core.stream(model, torch.tensor([[1, 7]]), max_new_tokens=12, do_sample=False, engine=loop)
    next(long)
    cancel.set()
    last = list(long)[-1]
    assert last.done and last.stopped == "cancelled" and len(last.tokens[0]) < 400
    alone = core.generate(model, torch.tensor([[1, 7]]), max_new_tokens=12, do_sample=False).sequences
    assert list(other)[-1].result.sequences.tolist() == alone.tolist()


def test_a_run_that_fails_ends_alone(one_thread):
    model = tiny_llama(0)
    loop = EngineLoop()
    bad = core.stream(model, torch.tensor([[1, 5]]), max_new_tokens=5, engine=loop,
                      logits_processor=[lambda ids, scores: 1 / 0])
    good = core.stream(model, torch.tensor([[1, 7]]), max_new_tokens=6, do_sample=False, engine=loop)
    with pytest.raises(ZeroDivisionError):
        list(bad)
    alone = core.generate(model, torch.tensor([[1, 7]]), max_new_tokens=6, do_sample=False).sequences
    assert list(good)[-1].result.sequences.tolist() == alone.tolist()


def test_plain_batching_is_asked_for_and_runs(one_thread):
    model = tiny_llama(0)
    loop = EngineLoop(exact=False)
    assert loop.lane(model).linears.plain  # plain F.linear over every row, solo bits or not
    outs = [core.stream(model, torch.tensor([[1, 5 + i]]), max_new_tokens=6, do_sample=False, engine=loop)
            for i in range(3)]
    assert all(len(list(o)[-1].result.sequences[0]) == 8 for o in outs)
