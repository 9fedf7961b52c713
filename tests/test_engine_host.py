"""The app's engine process (``playground.engine_host``): the page holds no weights, and what needs them goes there.
The page's model cache loads each model as the engine describes it (on the meta device, with its tokenizer); a run of
that weightless model is made in the engine and equals the same run here on the real model; an attribution, which
needs gradients, is made there and equals the one made here. The engine's own cache keeps the startup model, and a
model a run uses stays loaded until the run ends."""

from __future__ import annotations

import time

import pytest
import torch

import core
from core import attribution
from playground import engine_host, policy
from playground.state import ModelCache



@pytest.fixture
def host(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv(policy.ENGINE_PROCESS_ENV, "1")
    engine = engine_host.start(warm=(tiny_checkpoint,), threads=1)
    yield engine
    engine.close()
    engine_host.ENGINE = None


def test_the_page_holds_no_weights_and_its_runs_and_attributions_equal_the_real_models(host, tiny_checkpoint,
                                                                                      one_thread):
    page = ModelCache(2, loader=engine_host.page_loader()).get(tiny_checkpoint)
    assert {p.device.type for p in page.model.parameters()} == {"meta"}
    real = core.load_model(tiny_checkpoint)
    ids = torch.tensor([page.tokenizer.encode("w4 w5 w6")])
    assert ids.tolist() == [real.tokenizer.encode("w4 w5 w6")]

    *_, end = engine_host.stream(page, ids, tokenizer=page.tokenizer, max_new_tokens=6, do_sample=False)
    here = core.generate(real.model, ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(end.result.sequences, here.sequences)

    told = []
    context, target = ids[0].tolist() + end.result.sequences[0, ids.shape[1]:-1].tolist(), int(here.sequences[0, -1])
    deadline = time.monotonic() + 60
    there = engine_host.attribute(page, context, target, steps=4, deadline=deadline, prompt_tokens=ids.shape[1],
                                  progress=told.append)
    mine = attribution.attribute(real.model, real.tokenizer, context, target, "all", steps=4, deadline=deadline,
                                 prompt_tokens=ids.shape[1])
    timeless = dict(elapsed_s=0.0)  # its wall-clock time, which no two calls share
    assert {**there.to_dict(), **timeless} == {**mine.to_dict(), **timeless}
    assert told and told[-1] == pytest.approx(1.0)


def test_the_engine_keeps_the_startup_model_and_every_model_a_run_uses(host, tiny_checkpoint, one_thread):
    deadline = time.monotonic() + 120
    while host.call("models")["pinned"] != tiny_checkpoint and time.monotonic() < deadline:  # the warm-up pins it
        time.sleep(0.2)
    assert host.call("models") == {"loaded": [tiny_checkpoint], "in_use": {}, "pinned": tiny_checkpoint}
    page = ModelCache(2, loader=engine_host.page_loader()).get(tiny_checkpoint)
    events = engine_host.stream(page, torch.tensor([[4, 5, 6]]), max_new_tokens=200, do_sample=False)
    next(events)
    assert host.call("models")["in_use"] == {tiny_checkpoint: 1}  # the run's lease
    events.close()
    while host.call("models")["in_use"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host.call("models")["in_use"] == {}
