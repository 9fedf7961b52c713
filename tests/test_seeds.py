"""Seeds per run: a ``torch.Generator`` passed to ``core.generate`` gives transformers' seeded tokens, and the same
seed gives the same tokens whatever else the process is doing (other seeded runs in other threads, code drawing
from torch's global generator), for every path that samples."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

import core
from core.rng import global_generator, new_generator
from test_assisted import near_copy

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])
LOOKUP_PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21, 5, 9, 13, 17, 21, 5, 9, 13]])

# name -> (prompt, generate kwargs, uses an assistant); every one of them draws random numbers
# paths whose draws happen inside transformers' code, from torch's default generator (see core.rng)
GLOBAL_DRAWS = {"assisted_sample"}
PATHS = {
    "sample": (PROMPT, dict(do_sample=True, top_k=0, max_new_tokens=24), False),
    "sample_warpers": (PROMPT, dict(do_sample=True, temperature=0.7, top_p=0.9, num_return_sequences=2,
                                    max_new_tokens=16), False),
    "beam_sample": (PROMPT, dict(do_sample=True, num_beams=3, max_new_tokens=12), False),
    "dola_sample": (PROMPT, dict(do_sample=True, dola_layers="low", max_new_tokens=16), False),
    "assisted_sample": (PROMPT, dict(do_sample=True, top_k=0, max_new_tokens=16), True),
    "prompt_lookup_sample": (LOOKUP_PROMPT, dict(do_sample=True, top_k=0, prompt_lookup_num_tokens=4,
                                                 max_new_tokens=16), False),
}
TRANSFORMERS_RUNS = {"sample", "sample_warpers", "beam_sample", "assisted_sample", "prompt_lookup_sample"}


@pytest.fixture(scope="module")
def assistant(tiny_model):
    return near_copy(tiny_model)


def run(model, name, seed, assistant=None):
    ids, kwargs, assisted = PATHS[name]
    extra = dict(assistant_model=assistant) if assisted else {}
    return core.generate(model, ids, generator=new_generator(seed), **kwargs, **extra).sequences


@pytest.mark.parametrize("name", sorted(PATHS))
def test_a_seeded_generator_draws_what_manual_seed_draws(tiny_model, assistant, name):
    """Parity: the run's generator seeded with s gives transformers' tokens after ``torch.manual_seed(s)``
    (DoLa, which 5.x no longer runs, against the core's own global-generator path, whose tokens the 4.55.4
    fixture pins)."""
    ids, kwargs, assisted = PATHS[name]
    extra = dict(assistant_model=assistant) if assisted else {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        if name in TRANSFORMERS_RUNS:
            expected = tiny_model.generate(ids, **kwargs, **extra)
        else:
            expected = core.generate(tiny_model, ids, **kwargs, **extra).sequences
        assert torch.equal(run(tiny_model, name, seed, assistant), expected), (name, seed)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_seeded_runs_in_threads_equal_their_solo_runs(tiny_model, assistant, name):
    """Four seeded runs of one path at once, beside a thread that keeps drawing from (and reseeding) torch's
    global generator: each equals its solo run. Paths that draw inside transformers hold the global generator
    while they run, so there the other thread draws as every global draw in the process must: through
    ``core.rng.global_generator``."""
    seeds = [3, 4, 3, 5]
    solo = {seed: run(tiny_model, name, seed, assistant) for seed in set(seeds)}
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start, stop = threading.Barrier(len(seeds) + 1), threading.Event()

    def worker(i, seed):
        try:
            start.wait()
            results[i] = run(tiny_model, name, seed, assistant)
        except BaseException as err:  # re-raised below
            errors.append(err)

    def noise():
        start.wait()
        while not stop.is_set():
            with global_generator(new_generator()) if name in GLOBAL_DRAWS else contextlib.nullcontext():
                torch.manual_seed(torch.randint(0, 1000, (1,)).item())
                torch.rand(8)

    threads = [threading.Thread(target=worker, args=(i, s)) for i, s in enumerate(seeds)]
    noisy = threading.Thread(target=noise)
    for t in (*threads, noisy):
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    noisy.join(timeout=10)
    assert not errors, errors
    for i, seed in enumerate(seeds):
        assert torch.equal(results[i], solo[seed]), (name, seed)


def test_runs_mixing_paths_in_threads_equal_their_solo_runs(tiny_model, assistant):
    """Every sampling path at once, each in its own thread: none disturbs another."""
    names = sorted(PATHS)
    solo = {name: run(tiny_model, name, 7, assistant) for name in names}
    results: dict[str, torch.Tensor] = {}
    start = threading.Barrier(len(names))

    def worker(name):
        start.wait()
        results[name] = run(tiny_model, name, 7, assistant)

    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert {n: torch.equal(results[n], solo[n]) for n in names} == {n: True for n in names}


def test_an_unseeded_run_stays_random_and_tells_its_seed(tiny_model):
    """Without a seed every run draws a fresh one; the trace records it, so the run can be replayed."""
    ids, kwargs, _ = PATHS["sample"]
    traces = []
    for _ in range(3):
        rec = core.ListRecorder()
        core.generate(tiny_model, ids, generator=new_generator(), recorder=rec, **kwargs)
        traces.append(rec.trace)
    assert len({tuple(t.sequences[0]) for t in traces}) > 1
    replay = core.generate(tiny_model, ids, generator=new_generator(traces[0].seed), **kwargs).sequences
    assert replay.tolist() == traces[0].sequences


def test_global_generator_lends_its_state_and_takes_it_back():
    """Inside, the default generator draws what the run's would; outside, both continue where they were."""
    gen = new_generator(5)
    torch.manual_seed(99)
    outside = torch.rand(3)
    torch.manual_seed(99)
    with global_generator(gen):
        inside = torch.rand(4)
    assert torch.equal(inside, torch.rand(4, generator=new_generator(5)))
    assert torch.equal(torch.rand(3), outside)  # the global stream goes on as if nothing happened
    reference = new_generator(5)
    torch.rand(4, generator=reference)
    assert torch.equal(torch.rand(2, generator=gen), torch.rand(2, generator=reference))  # gen advanced by 4


def test_global_generator_waits_with_an_end():
    """A run that cannot get the global generator in time fails with a message instead of waiting for ever."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with global_generator(new_generator(1)):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(TimeoutError, match="global random generator"):
            with global_generator(new_generator(2), timeout=0.2):
                pass
    finally:
        release.set()
        t.join()


def test_loading_a_model_leaves_the_global_generator_as_it_was(embedded):
    """Building a model draws random numbers (weight initialisation); the load draws them from a throwaway state,
    so a seeded run lending its state to the global generator is never disturbed by a visitor loading a model."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    core.load_model()
    assert torch.equal(torch.rand(4), expected)
