"""``playground.zerogpu``: a no-op unless ``SPACES_ZERO_GPU`` is true and ``spaces`` importable (a CPU Space,
``SPACE_ID`` alone, shares the forward like a local run); there, generation runs in
the ``@spaces.GPU`` function with arguments and events that survive pickling (ZeroGPU's worker boundary), a GPU time
that grows with ``max_new_tokens``, and the same tokens as ``core.stream``."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import types

import pytest
import torch

import core
from core.rng import new_generator
from playground import zerogpu

PROMPT = [[1, 5, 9, 13, 17, 21]]


@pytest.fixture
def reload_zerogpu(monkeypatch):
    """Reload the module under the environment a test sets up, and again under the real one afterwards."""
    yield lambda: importlib.reload(zerogpu)
    monkeypatch.undo()
    importlib.reload(zerogpu)


def _tokens(events) -> list[list[int]]:
    final = [e for e in events if e.done][-1]
    return final.result.sequences.tolist()


def _plain(model, **kwargs):
    return _tokens(core.stream(model, torch.tensor(PROMPT), **kwargs))


@pytest.mark.parametrize("zero_gpu, spaces_importable", [("", True), ("true", False), ("", False), ("0", True),
                                                          ("false", True)])
def test_a_no_op_unless_on_a_space_with_spaces(monkeypatch, reload_zerogpu, tiny_model, zero_gpu, spaces_importable):
    monkeypatch.setenv("SPACE_ID", "user/space")
    monkeypatch.setenv("SPACES_ZERO_GPU", zero_gpu)
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces([]))  # what a real import would be, were it made
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: real_find_spec(name, *a) if spaces_importable or name != "spaces" else None)
    module = reload_zerogpu()
    assert not module.on_zerogpu() and module._on_gpu is None
    events = list(module.stream(tiny_model, torch.tensor(PROMPT), max_new_tokens=5, generator=new_generator(3),
                                do_sample=True))
    assert _tokens(events) == _plain(tiny_model, max_new_tokens=5, generator=new_generator(3), do_sample=True)


def test_gpu_time_grows_with_max_new_tokens_and_is_capped():
    assert zerogpu.gpu_seconds(None) == zerogpu.gpu_seconds(zerogpu.DEFAULT_TOKENS)
    assert zerogpu.BASE_S < zerogpu.gpu_seconds(32) < zerogpu.gpu_seconds(512) <= zerogpu.MAX_S
    assert zerogpu.gpu_seconds(10**6) == zerogpu.MAX_S


def fake_spaces(calls: list) -> types.ModuleType:
    """A ``spaces`` whose ``GPU`` runs the function here, as ZeroGPU's worker would: its arguments and each event it
    yields go through pickle, and the duration is asked with the function's own arguments."""
    module = types.ModuleType("spaces")

    def gpu(duration):
        def wrap(fn):
            def run(*args):
                calls.append((duration(*args), args))
                args = pickle.loads(pickle.dumps(args))
                for event in fn(*args):
                    yield pickle.loads(pickle.dumps(event))
            return run
        return wrap

    module.GPU = gpu
    return module


def test_on_zerogpu_runs_inside_the_gpu_function_with_picklable_arguments_and_cpu_results(
        monkeypatch, reload_zerogpu, tiny_model, tiny_assistant):
    from conftest import tiny_llama

    calls: list[int] = []
    monkeypatch.setenv("SPACE_ID", "user/space")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "spaces"
                        else real_find_spec(name, *a))
    module = reload_zerogpu()
    assert module.on_zerogpu() and module._on_gpu is not None
    lens_model = tiny_llama(0, layers=3)
    settings = dict(max_new_tokens=40, do_sample=True, top_k=10, lens=True)
    ours, plain = new_generator(7), new_generator(7)
    events = list(module.stream(lens_model, torch.tensor(PROMPT), generator=ours, **settings))
    ((seconds, (model, ids, states, many, kwargs)),) = calls
    assert seconds == module.gpu_seconds(40) and not many
    assert torch.equal(states[0], new_generator(7).get_state())
    assert isinstance(model, module.Lent) and ids.device.type == "cpu" and "generator" not in kwargs
    assert _tokens(events) == _plain(lens_model, generator=plain, **settings)
    assert torch.equal(ours.get_state(), plain.get_state())  # the caller's generator drew what the worker's drew
    assert all(e.record.lens for e in events if e.record is not None)
    assert events[-1].result.sequences.device.type == "cpu"
    # one generator per row (Sample N) travels as a list of states and comes back into each
    rows, plain_rows = [new_generator(s) for s in (1, 2)], [new_generator(s) for s in (1, 2)]
    batch = torch.tensor(PROMPT * 2)
    sampled = list(module.stream(tiny_model, batch, generator=rows, max_new_tokens=5, do_sample=True))
    assert calls[-1][1][3] is True
    assert _tokens(sampled) == _tokens(core.stream(tiny_model, batch, generator=plain_rows, max_new_tokens=5,
                                                   do_sample=True))
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(rows, plain_rows))
    # an assistant model is lent too, not pickled
    assisted = list(module.stream(tiny_model, torch.tensor(PROMPT), assistant_model=tiny_assistant, max_new_tokens=6))
    assert _tokens(assisted) == _plain(tiny_model, assistant_model=tiny_assistant, max_new_tokens=6)
    assert isinstance(calls[-1][1][4]["assistant_model"], module.Lent)
    assert not module._LENT  # everything lent came back


@pytest.mark.parametrize("flag", ["true", "True", "1", "t", "T"])
def test_spaces_zero_gpu_decides_as_the_spaces_package_reads_it(monkeypatch, flag):
    """Read as ``spaces.config.Config.zero_gpu`` reads it, with or without ``SPACE_ID``."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setenv("SPACES_ZERO_GPU", flag)
    assert zerogpu.on_zerogpu()
    monkeypatch.setenv("SPACES_ZERO_GPU", "yes")  # not a word spaces reads as true
    assert not zerogpu.on_zerogpu()
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not zerogpu.on_zerogpu()


def test_on_a_cpu_space_with_the_real_spaces_package_runs_share_the_forward(monkeypatch, reload_zerogpu, tiny_model):
    """A CPU Space: ``SPACE_ID`` set, ``SPACES_ZERO_GPU`` unset, ``spaces`` installed. The wrapper is off and a shared
    run takes a seat at the model's scheduler, as it does locally."""
    if importlib.util.find_spec("spaces") is None:
        pytest.skip("spaces is not installed")
    from core import scheduler

    monkeypatch.setenv("SPACE_ID", "user/space")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    module = reload_zerogpu()
    assert not module.on_zerogpu() and module._on_gpu is None
    asked = []
    real_shared = scheduler.shared
    monkeypatch.setattr(scheduler, "shared", lambda model: asked.append(model) or real_shared(model))
    before = real_shared(tiny_model).stats.steps
    events = list(module.stream(tiny_model, torch.tensor(PROMPT), shared=True, max_new_tokens=5))
    assert asked == [tiny_model]
    assert real_shared(tiny_model).stats.steps > before  # its decode steps went through the scheduler
    assert _tokens(events) == _plain(tiny_model, max_new_tokens=5)
