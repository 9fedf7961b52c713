"""The step scheduler (``core.scheduler``): runs that share one forward per step equal the same runs alone, token for
token and record for record, whatever joins and leaves mid-way; a stopped run frees its rows at once; a run that
died never holds the others."""

from __future__ import annotations

import copy
import threading
import time

import pytest
import torch

import core
from core import batching
from core.records import ListRecorder
from core.rng import new_generator
from core.scheduler import StepScheduler

from conftest import tiny_llama

# (settings, prompt, max_new_tokens): different prompt lengths and run lengths, so runs join and leave mid-way
RUNS = [
    (dict(do_sample=False), [1, 5, 9, 13, 17, 21], 24),
    (dict(do_sample=True, temperature=0.9, top_k=20, seed=3), [1, 7, 8], 9),
    (dict(num_beams=3, do_sample=False), [1, 30, 31, 32, 33], 14),
    (dict(do_sample=True, top_p=0.9, repetition_penalty=1.3, dry_multiplier=0.8, dry_allowed_length=1,
          dry_sequence_breakers=[3], seed=5),
     [1, 4, 4, 4, 9, 4, 4], 30),
    (dict(do_sample=True, temperature=1.2, seed=11, num_return_sequences=2), [1, 40, 41], 12),
    (dict(do_sample=False, repetition_penalty=1.5), [1, 50], 5),
    (dict(dola_layers="high", repetition_penalty=1.2), [1, 60, 61], 7),  # steps through the worker one at a time
    (dict(penalty_alpha=0.6, top_k=4), [1, 3, 5], 6),  # its forwards take the model lock between batched steps
]


def run(model, settings, prompt, tokens, scheduler=None, delay=0.0):
    settings = dict(settings)
    seed = settings.pop("seed", None)
    time.sleep(delay)
    recorder = ListRecorder()
    out = core.generate(model, torch.tensor([prompt]), max_new_tokens=tokens, recorder=recorder,
                        generator=new_generator(seed) if seed is not None else None, scheduler=scheduler,
                        **settings)
    return out.sequences.tolist(), [[(c.token_id, c.logit) for r in s.rows for c in r.candidates]
                                    for s in out.trace.steps]


def concurrently(model, scheduler, runs, delays):
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def one(i):
        try:
            results[i] = run(model, *runs[i], scheduler=scheduler, delay=delays[i])
        except BaseException as err:  # re-raised below
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return [results[i] for i in range(len(runs))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_runs_through_the_scheduler_equal_the_same_runs_alone(one_thread, dtype):
    model = tiny_llama(0, dtype=dtype)
    solo = [run(model, *r) for r in RUNS]
    scheduler = StepScheduler(model)
    assert scheduler.linears  # this machine batches runs in both dtypes
    shared = concurrently(model, scheduler, RUNS, delays=[0.0, 0.0, 0.02, 0.05, 0.01, 0.08, 0.03, 0.0])
    for i, (a, b) in enumerate(zip(solo, shared)):
        assert a[0] == b[0], f"run {i}: {RUNS[i][0]} tokens differ under load"
        assert a[1] == b[1], f"run {i}: {RUNS[i][0]} recorded candidates differ under load"
    assert scheduler.stats.rows > scheduler.stats.forwards  # rows of several runs did share forwards
    assert max(scheduler.stats.batch_sizes) >= 2
    assert scheduler.seated == 0


def test_every_seeded_strategy_on_the_embedded_model_equals_its_solo_run(embedded, one_thread):
    model, tok = embedded.model, embedded.tokenizer
    prompt = tok("The sea is", return_tensors="pt").input_ids[0].tolist()
    runs = [(dict(do_sample=False), prompt, 10), (dict(do_sample=True, top_k=50, seed=1), prompt[:2], 12),
            (dict(num_beams=2), prompt + prompt, 6),
            (dict(do_sample=True, seed=2, dry_multiplier=0.8, tokenizer=tok), prompt, 8)]
    solo = [run(model, *r) for r in runs]
    scheduler = StepScheduler(model)
    shared = concurrently(model, scheduler, runs, delays=[0.0, 0.1, 0.0, 0.3])
    assert [s[0] for s in shared] == [s[0] for s in solo]
    assert [s[1] for s in shared] == [s[1] for s in solo]
    assert max(scheduler.stats.batch_sizes) >= 2


def test_a_stopped_run_frees_its_rows_at_once(one_thread):
    model = tiny_llama(0)
    scheduler = StepScheduler(model)
    cancel = threading.Event()
    seated = []

    class Watch:
        top_n, lens = 3, False

        def on_step(self, record):
            seated.append(scheduler.seated)
            if record.step == 3:
                cancel.set()

        def on_end(self, trace):
            pass

    out = core.generate(model, torch.tensor([[1, 5, 9]]), max_new_tokens=50, do_sample=False, recorder=Watch(),
                        cancel=cancel, scheduler=scheduler)
    assert out.stopped == "cancelled" and seated[0] == 1
    assert scheduler.seated == 0  # gone as the run returned, not when the worker next looks


def test_the_scheduler_never_waits_for_a_run_that_died(one_thread):
    model = tiny_llama(0)
    scheduler = StepScheduler(model, gather_s=0.2)
    died = threading.Event()

    class Dies:
        top_n, lens = 3, False

        def on_step(self, record):
            if record.step == 1:
                died.set()
                raise RuntimeError("this run dies mid-way")

        def on_end(self, trace):
            pass

    def doomed():
        with pytest.raises(RuntimeError):
            core.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=40, do_sample=False, recorder=Dies(),
                          scheduler=scheduler)

    t = threading.Thread(target=doomed)
    t.start()
    started = time.monotonic()
    out = core.generate(model, torch.tensor([[1, 9, 9]]), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                        scheduler=scheduler)
    t.join(timeout=30)
    assert died.is_set() and out.sequences.shape[1] == 23
    assert time.monotonic() - started < 60  # bounded by gather_s per step, not by the dead run
    assert scheduler.seated == 0


def test_a_step_waits_a_bounded_time_for_a_worker_that_stopped(one_thread, monkeypatch):
    model = tiny_llama(0)
    scheduler = StepScheduler(model)
    monkeypatch.setattr(scheduler, "_ensure_worker", lambda: None)  # no worker ever comes
    with pytest.raises(RuntimeError, match="worker stopped"):
        core.generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=False, scheduler=scheduler)
    assert scheduler.seated == 0


def test_row_exact_linear_keeps_the_bits_of_the_one_row_product():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 64, generator=gen)
    x = torch.randn(7, 1, 64, generator=gen)
    solo = torch.cat([torch.nn.functional.linear(x[r], weight)[None] for r in range(7)])
    assert torch.equal(batching.row_exact_linear(x, weight), solo)  # tiles of 256+ rows of the weight


@pytest.mark.parametrize("k", [64, 576])
def test_a_batched_linear_keeps_every_runs_bits_whatever_its_rows(k):
    """Runs of 1, 2, 3, 4 and 5 rows side by side: each run's rows are what ``F.linear`` of its rows alone makes (its
    solo step's product), whichever kernel ``probe`` lets them share."""
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(k, 3000)
    weight, bias = layer.weight.detach(), layer.bias.detach()
    linears = batching.probe(layer)  # its own shape: a BLAS picks kernels and tiles by shape
    assert linears  # this machine batches float32 rows
    sizes = [1, 3, 4, 1, 5, 2, 1, 4]
    x = torch.randn(sum(sizes), 1, k, generator=gen)
    with batching.RowExactLinear(sizes, linears):
        batched = torch.nn.functional.linear(x, weight, bias)
    start = 0
    for size in sizes:
        assert torch.equal(batched[start:start + size], torch.nn.functional.linear(x[start:start + size], weight, bias))
        start += size


def test_a_scheduled_model_can_still_be_deep_copied():
    """A model with a step scheduler and an engine loop's lane (their hooks hold locks) deep-copies, as a test's
    assistant is made from a shared tiny model: the copy shares the hook functions, which act on the original only."""
    from core.engine import EngineLoop

    model = tiny_llama(0)
    scheduler = StepScheduler(model)
    EngineLoop().lane(model)
    twin = copy.deepcopy(model)
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        assert torch.equal(twin(ids).logits, model(ids).logits)
    assert scheduler.stats.forwards == 0


def test_work_aside_runs_in_the_callers_context_but_in_no_seat():
    """``aside`` carries the caller's context variables (a model cache's lease) into its thread, but not the caller's
    seat or turn: a thread that is no run's must neither hand in steps nor switch to the engine loop."""
    from contextvars import ContextVar

    from core import scheduler

    marker: ContextVar[str] = ContextVar("marker", default="")
    marker.set("the caller's")
    turn = scheduler._turn.set(lambda: None)  # as a run of the loop has them
    seat = scheduler._seat.set(object())
    try:
        seen = scheduler.aside(lambda: (marker.get(), scheduler._seat.get(), scheduler.pass_turn()))
    finally:
        scheduler._seat.reset(seat)
        scheduler._turn.reset(turn)
    assert seen == ("the caller's", None, False)
