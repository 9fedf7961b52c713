"""``core.limits``: each size a request controls is refused over its bound, with the field, the bound and the value
in the message, before anything is built from it; a run stopped during a long prefill ends between two chunks; the
deadline counts from the call, preparation included."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import core
from core.limits import GIB, LimitError, Limits, kv_bytes_per_token, rows_of
from core.strategies import steps
from tests.conftest import tiny_llama


class Tok:
    """Enough of a tokenizer for stop strings and words: one token per character code (mod 60, past the specials)."""

    eos_token_id = 2
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        ids = [4 + ord(c) % 60 for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else ids}


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


def refused(model, limits, prompt_len=6, batch=1, **kwargs) -> str:
    ids = torch.randint(4, 60, (batch, prompt_len))
    with pytest.raises(LimitError) as err:
        core.generate(model, ids, do_sample=False, limits=limits, **{"max_new_tokens": 4, **kwargs})
    return str(err.value)


@pytest.mark.parametrize("kwargs, limits, words", [
    ({"max_new_tokens": 10 ** 9}, Limits(new_tokens=512), ["`max_new_tokens`", "at most 512", "1,000,000,000"]),
    ({"num_beams": 40, "num_return_sequences": 1}, Limits(rows=16), ["rows", "at most 16", "40"]),
    ({"stop_strings": ["x" * 20_000]}, Limits(stop_string_chars=64), ["`stop_strings`", "64 characters", "20,000"]),
    ({"stop_strings": [str(i) for i in range(40)]}, Limits(stop_strings=16), ["`stop_strings`", "16 strings", "40"]),
    ({"bad_words_ids": [[5]] * 5000}, Limits(entries=1024), ["`bad_words_ids`", "1,024 entries", "5,000"]),
    ({"sequence_bias": [[[5] * 100, 1.0]]}, Limits(entry_tokens=64), ["`sequence_bias`", "64 tokens", "100"]),
    ({"suppress_tokens": list(range(3000))}, Limits(entries=1024), ["`suppress_tokens`", "1,024", "3,000"]),
    ({"regex": "a" * 30_000}, Limits(grammar_chars=20_000), ["`regex`", "20,000 characters", "30,000"]),
])
def test_each_size_is_refused_over_its_bound_with_the_field_named(model, kwargs, limits, words):
    message = refused(model, limits, **kwargs)
    for word in words:
        assert word in message, message


def test_the_prompt_and_the_knob_are_named(model):
    message = refused(model, Limits(context_tokens=8, knobs={"context_tokens": "PLAYGROUND_MAX_PROMPT_TOKENS"}),
                      prompt_len=20)
    assert "at most 8 tokens" in message and "20 tokens" in message and "PLAYGROUND_MAX_PROMPT_TOKENS" in message


def test_the_kv_cache_budget_counts_rows_prompt_and_new_tokens(model):
    per_token = kv_bytes_per_token(model)
    assert per_token == 2 * 2 * 2 * 8 * 4  # keys and values, 2 layers, 2 kv heads of 8, float32
    # 8 rows x (100 + 28) tokens = 1,024 token rows
    limits = Limits(kv_bytes=per_token * 1000)
    message = refused(model, limits, prompt_len=100, batch=8, max_new_tokens=28)
    assert "KV cache" in message and "8 rows" in message and "100 prompt + 28 new tokens" in message
    ids = torch.randint(4, 60, (8, 100))
    core.generate(model, ids, do_sample=False, max_new_tokens=27, limits=Limits(kv_bytes=per_token * 1016))


def test_rows_count_beams_samples_and_contrastive_candidates():
    assert rows_of(1, {"num_beams": 4, "num_return_sequences": 2}) == 4
    assert rows_of(3, {"num_return_sequences": 5}) == 15
    assert rows_of(2, {"penalty_alpha": 0.6, "top_k": 4}) == 8


def test_the_negative_prompt_is_bounded_in_tokens(model):
    message = refused(model, Limits(negative_prompt_tokens=10), guidance_scale=1.5, negative_prompt="a" * 50,
                      tokenizer=Tok())
    assert "`negative_prompt`" in message and "10 tokens" in message and "50 tokens" in message


def test_within_the_bounds_a_run_is_the_run_without_them(model):
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    bounded = core.generate(model, ids, do_sample=False, max_new_tokens=8, limits=Limits())
    free = core.generate(model, ids, do_sample=False, max_new_tokens=8)
    assert bounded.sequences.tolist() == free.sequences.tolist()


def test_the_default_bounds_hold_the_sizes_that_cost_gigabytes():
    assert Limits().kv_bytes <= 8 * GIB and Limits().stop_string_chars <= 64


# --- a stop during a long prefill -------------------------------------------------------------------------------
def test_a_long_prefill_runs_in_chunks_of_a_bounded_number_of_tokens():
    assert steps.prefill_chunk(torch.zeros(1, 100), seated=False) is None
    assert steps.prefill_chunk(torch.zeros(1, 600), seated=True) == 512
    chunk = steps.prefill_chunk(torch.zeros(32, 1000), seated=False)
    assert chunk is not None and 32 * chunk <= steps.PREFILL_TOKENS


def test_a_cancel_during_the_prefill_ends_the_run_between_two_chunks(model):
    """32 rows of 240 tokens prefill in chunks; the cancel is set by the first chunk's forward: the run ends
    before the second, with the prompt alone and ``stopped`` saying why."""
    cancel = threading.Event()
    calls = []

    def count(module, args, kwargs):
        calls.append(kwargs.get("input_ids").shape if kwargs.get("input_ids") is not None else None)
        cancel.set()

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        ids = torch.randint(4, 60, (32, 240))
        result = core.generate(model, ids, do_sample=False, max_new_tokens=4, cancel=cancel,
                               recorder=core.ListRecorder())
    finally:
        hook.remove()
    assert len(calls) == 1, calls  # the first chunk ran; the stop came before the second
    assert result.stopped == "cancelled"
    assert result.sequences.tolist() == ids.tolist()
    assert result.trace is not None and result.trace.steps == []


def test_a_deadline_passed_during_preparation_ends_the_run_before_its_prefill(model):
    """The deadline is counted from the call: a run whose time went in preparation gets no forward."""
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        result = core.generate(model, torch.randint(4, 60, (1, 12)), do_sample=False, max_new_tokens=4,
                               deadline=time.monotonic() - 1)
    finally:
        hook.remove()
    assert result.stopped == "time cap" and calls == []


def test_closing_a_stream_returns_at_once_and_the_worker_ends_on_its_own(model):
    ended = threading.Event()
    events = core.stream(model, torch.randint(4, 60, (1, 8)), do_sample=False, max_new_tokens=200, ended=ended,
                         min_new_tokens=200)
    next(events)
    started = time.monotonic()
    events.close()
    assert time.monotonic() - started < 0.5
    assert ended.wait(10)


def test_an_id_past_the_vocabulary_never_reaches_the_model(model):
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        for bad in (64, 10 ** 7, -1):
            with pytest.raises(ValueError, match=r"`input_ids` must hold token ids in \[0, 63\]"):
                core.generate(model, torch.tensor([[1, 5, bad]]), do_sample=False, max_new_tokens=2)
    finally:
        hook.remove()
    assert calls == []
