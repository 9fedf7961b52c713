"""The engine in a process of its own (``core.engine.process``): its runs equal the same runs in this process, token
for token and record for record, with the generator's draws given back; when the process dies mid-run the run says so
and the next one works; a run stuck past its deadline gets the engine restarted."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

import core
from core.engine import process
from core.engine.process import EngineProcess, EngineStopped, ModelRef
from core.rng import new_generator

from conftest import tiny_llama
from test_scheduler import RUNS


@pytest.fixture
def engine():
    engine = EngineProcess("engine_models:load", threads=1, warm=("tiny:0",), calls="engine_models:CALLS")
    engine.start()
    yield engine
    engine.close()


def timeless(records):
    """Records without their wall-clock times (``elapsed_s``), which no two runs share."""
    return [dataclasses.replace(r, elapsed_s=0.0) for r in records]


def last(events):
    *_, end = events
    return end


def test_a_run_in_the_engine_equals_the_run_here(engine, one_thread):
    model = tiny_llama(0)
    settings = dict(do_sample=True, temperature=0.9, top_k=20, max_new_tokens=12)
    here_gen, there_gen = new_generator(5), new_generator(5)
    here = list(core.stream(model, torch.tensor([[1, 5, 9]]), generator=here_gen, top_n=4, **settings))
    there = list(engine.stream("tiny:0", torch.tensor([[1, 5, 9]]), generator=there_gen, top_n=4, **settings))
    assert [e.tokens for e in there] == [e.tokens for e in here]
    assert timeless(e.record for e in there[:-1]) == timeless(e.record for e in here[:-1])
    assert there[-1].result.sequences.tolist() == here[-1].result.sequences.tolist()
    assert timeless(there[-1].result.trace.steps) == timeless(here[-1].result.trace.steps)
    assert torch.equal(there_gen.get_state(), here_gen.get_state())  # a paused run resumes with the same draws


def test_mixed_runs_joining_and_leaving_equal_their_solo_runs(engine, one_thread):
    model, assistant = tiny_llama(0), tiny_llama(1)
    runs = [*RUNS, (dict(do_sample=False, assistant_model=assistant), [1, 9, 10], 8)]
    solo = []
    for settings, prompt, tokens in runs:
        settings = dict(settings)
        seed = settings.pop("seed", None)
        solo.append(core.generate(model, torch.tensor([prompt]), max_new_tokens=tokens,
                                  generator=new_generator(seed) if seed is not None else None,
                                  recorder=core.ListRecorder(top_n=3), **settings))
    results: dict[int, object] = {}

    def one(i: int) -> None:
        settings, prompt, tokens = runs[i]
        settings = {k: ModelRef("tiny:1") if k == "assistant_model" else v for k, v in settings.items()}
        seed = settings.pop("seed", None)
        results[i] = last(engine.stream("tiny:0", torch.tensor([prompt]), max_new_tokens=tokens, top_n=3,
                                        generator=new_generator(seed) if seed is not None else None, **settings))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, alone in enumerate(solo):
        assert results[i].result.sequences.tolist() == alone.sequences.tolist(), f"run {i}: {runs[i][0]}"
        assert timeless(results[i].result.trace.steps) == timeless(alone.trace.steps), f"run {i} records"


def test_the_engine_dies_mid_run_the_run_says_so_and_the_next_one_works(engine, one_thread):
    events = engine.stream("tiny:0", torch.tensor([[1, 5, 9]]), max_new_tokens=200, do_sample=False)
    next(events)
    process.kill(engine)
    with pytest.raises(EngineStopped, match="stopped"):
        list(events)
    again = last(engine.stream("tiny:0", torch.tensor([[1, 5, 9]]), max_new_tokens=5, do_sample=False))
    assert len(again.tokens[0]) == 5 and engine.restarts == 1


def test_a_run_stuck_past_its_deadline_gets_the_engine_restarted(engine, one_thread, monkeypatch):
    monkeypatch.setattr(process, "STUCK_S", 1.0)
    stuck = engine.stream("stuck:0", torch.tensor([[1, 5, 9]]), max_new_tokens=5, do_sample=False, max_seconds=2)
    with pytest.raises(EngineStopped):
        list(stuck)
    assert engine.restarts == 1
    again = last(engine.stream("tiny:0", torch.tensor([[1, 5, 9]]), max_new_tokens=5, do_sample=False))
    assert len(again.tokens[0]) == 5


# --- calls: what needs the weights and is no run ---------------------------------------------------------------------
def test_a_call_returns_what_the_engine_function_returns_and_reports_its_progress(engine):
    told = []
    assert engine.call("count", 3, progress=told.append) == 3 and told == [0, 1, 2]
    shape = engine.call("describe", "tiny:0")  # the page's copy of a model: its config and modules, no weights
    weightless = shape.weightless().model
    assert {p.device.type for p in weightless.parameters()} == {"meta"}
    real = tiny_llama(0)
    assert {n: p.shape for n, p in weightless.named_parameters()} == {n: p.shape for n, p in real.named_parameters()}
    assert weightless.generation_config.pad_token_id == 0 and weightless.config.vocab_size == real.config.vocab_size


def test_a_call_raises_its_error_here(engine):
    with pytest.raises(ValueError, match="no such thing"):
        engine.call("fail", "no such thing")
    with pytest.raises(ValueError, match="no call 'nope'"):
        engine.call("nope")
    assert engine.call("count", 1) == 1  # the engine goes on


def test_the_engine_dies_mid_call_the_call_says_so_and_the_next_one_works(engine):
    told = threading.Event()
    ended = {}

    def waiting():
        try:
            engine.call("wait", 60, progress=lambda _: told.set())
        except EngineStopped as err:
            ended["err"] = err

    caller = threading.Thread(target=waiting)
    caller.start()
    assert told.wait(60)
    process.kill(engine)
    caller.join(30)
    assert "stopped" in str(ended["err"])
    assert engine.call("count", 2) == 2 and engine.restarts == 1


def test_a_call_stuck_past_its_deadline_gets_the_engine_restarted(engine, monkeypatch):
    monkeypatch.setattr(process, "STUCK_S", 1.0)
    with pytest.raises(EngineStopped, match="stopped"):
        engine.call("wait", 60, deadline=time.monotonic() + 1)
    assert engine.restarts == 1 and engine.call("count", 1) == 1
