"""KV caches chosen with ``cache_implementation`` / ``cache_config`` (transformers builds them; the strategies use
them): the same tokens as transformers 5.x ``model.generate`` with the same settings, one ``CacheInfo`` per step,
and byte counts that follow from the cache's layout (quantized caches hold fewer bytes than the dynamic one)."""

from __future__ import annotations

import pytest
import torch

import core

from conftest import kernels_ready


@pytest.fixture(autouse=True)
def _quanto_built():
    """A background warm-up another test module started answers "not ready yet" here until it ends: wait for it."""
    kernels_ready()


# The tiny model's key/value rows are 2 heads x 8 dims = 16 values, so groups of 8 divide them at every length;
# a residual window of 4 makes the caches re-quantize during a 10-token run.
QUANT = {"q_group_size": 8, "residual_length": 4}
CACHES = {
    "dynamic": {},
    "static": dict(cache_implementation="static"),
    "quanto-2bit": dict(cache_implementation="quantized", cache_config={"backend": "quanto", "nbits": 2, **QUANT}),
    "quanto-4bit": dict(cache_implementation="quantized", cache_config={"backend": "quanto", "nbits": 4, **QUANT}),
    "hqq-2bit": dict(cache_implementation="quantized", cache_config={"backend": "hqq", "nbits": 2, **QUANT}),
    "hqq-4bit": dict(cache_implementation="quantized", cache_config={"backend": "hqq", "nbits": 4, **QUANT}),
    "fp8": dict(cache_implementation="quantized", cache_config={"backend": "fp8"}),
}
KIND = {"dynamic": "DynamicCache", "static": "StaticCache"}
STRATEGIES = {
    "greedy": dict(),
    "sample": dict(do_sample=True, top_k=20),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=3, do_sample=True),
}
NEW = 10


def run(model, ids, seed=0, recorder=None, **kwargs):
    """(core's result, transformers' sequences) from the same seed."""
    torch.manual_seed(seed)
    ours = core.generate(model, ids, recorder=recorder, max_new_tokens=NEW, **kwargs)
    torch.manual_seed(seed)
    return ours, model.generate(ids, max_new_tokens=NEW, **kwargs)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("cache", list(CACHES))
def test_same_tokens_as_transformers_and_a_cache_record_per_step(tiny_model, prompt, cache, strategy):
    recorder = core.ListRecorder(top_n=3)
    ours, reference = run(tiny_model, prompt, 5, recorder=recorder, **CACHES[cache], **STRATEGIES[strategy])
    assert ours.sequences.tolist() == reference.tolist()
    infos = [step.cache for step in recorder.steps]
    assert all(info is not None and info.kind == KIND.get(cache, "QuantizedCache") for info in infos)
    # after the forward of step i the cache holds the prompt and the i tokens chosen before it
    assert [info.seq_length for info in infos] == [prompt.shape[1] + i for i in range(len(infos))]
    assert all(info.bytes > 0 for info in infos)


def _greedy_infos(model, ids, **cache):
    recorder = core.ListRecorder(top_n=1)
    core.generate(model, ids, recorder=recorder, max_new_tokens=NEW, **cache)
    return [step.cache for step in recorder.steps]


def test_dynamic_cache_bytes_are_its_float32_keys_and_values(tiny_model, prompt):
    cfg = tiny_model.config
    per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    for info in _greedy_infos(tiny_model, prompt):
        assert info.bytes == per_token * info.seq_length


def test_static_cache_holds_its_full_length_from_the_start(tiny_model, prompt):
    infos = _greedy_infos(tiny_model, prompt, **CACHES["static"])
    cfg = tiny_model.config
    full = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4 * (
        prompt.shape[1] + NEW - 1)  # transformers sizes it to max_length - 1
    assert len({info.bytes for info in infos}) == 1
    assert full <= infos[0].bytes < full + 1024  # + the layers' small bookkeeping tensors


@pytest.mark.parametrize("backend", ["quanto", "hqq"])
def test_quantized_cache_counts_packed_bytes(tiny_model, prompt, backend):
    """After the prefill all of the prompt is quantized (no residual yet): packed integers at ``nbits`` per value
    plus one float32 scale and one zero-point per group (quanto's ``_scale``/``_shift``, HQQ's ``scale``/``zero``)."""
    cfg = tiny_model.config
    values = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * prompt.shape[1]
    for nbits in (2, 4):
        first = _greedy_infos(tiny_model, prompt, **CACHES[f"{backend}-{nbits}bit"])[0]
        per_tensor = values * nbits // 8 + (values // QUANT["q_group_size"]) * 2 * 4
        assert first.bytes >= cfg.num_hidden_layers * 2 * per_tensor
        assert first.bytes < cfg.num_hidden_layers * 2 * (values * 4)  # less than float32


@pytest.mark.parametrize("cache", [c for c in CACHES if c not in ("dynamic", "static")])
def test_quantized_caches_hold_fewer_bytes_than_the_dynamic_cache(tiny_model, prompt, cache):
    dynamic = _greedy_infos(tiny_model, prompt)
    quantized = _greedy_infos(tiny_model, prompt, **CACHES[cache])
    for d, q in zip(dynamic, quantized, strict=True):
        assert q.seq_length == d.seq_length
        assert q.bytes < d.bytes


@pytest.mark.parametrize("backend", ["quanto", "hqq"])
def test_two_bits_hold_fewer_bytes_than_four(tiny_model, prompt, backend):
    two = _greedy_infos(tiny_model, prompt, **CACHES[f"{backend}-2bit"])
    four = _greedy_infos(tiny_model, prompt, **CACHES[f"{backend}-4bit"])
    assert all(a.bytes < b.bytes for a, b in zip(two, four, strict=True))


def test_cache_record_survives_json(tiny_model, prompt):
    recorder = core.ListRecorder(top_n=2)
    core.generate(tiny_model, prompt, recorder=recorder, max_new_tokens=3, **CACHES["quanto-2bit"])
    trace = recorder.trace
    assert core.Trace.from_json(trace.to_json()).steps[-1].cache == trace.steps[-1].cache


# --- offloaded: CUDA only ---------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: the offloaded cache runs")
def test_offloaded_cache_needs_cuda_and_says_what_to_use_instead(tiny_model, prompt):
    with pytest.raises(ValueError) as info:
        core.generate(tiny_model, prompt, max_new_tokens=3, cache_implementation="offloaded")
    message = str(info.value)
    assert "`cache_implementation`" in message and "needs CUDA" in message
    assert '"dynamic", "static" or "quantized"' in message and "got 'offloaded'" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the offloaded cache moves layers between GPU and CPU")
@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_offloaded_cache_on_cuda(prompt, strategy):
    from conftest import tiny_llama

    model = tiny_llama(0).cuda()
    recorder = core.ListRecorder(top_n=3)
    ours, reference = run(model, prompt.cuda(), 5, recorder=recorder, cache_implementation="offloaded",
                          **STRATEGIES[strategy])
    assert ours.sequences.tolist() == reference.tolist()
    assert all(step.cache.kind == "DynamicCache" for step in recorder.steps)


# --- the embedded model ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_quantized_caches(embedded):
    ids = embedded.tokenizer("The quick brown fox jumps over", return_tensors="pt")["input_ids"]
    model = embedded.model
    dynamic = core.ListRecorder(top_n=1)
    core.generate(model, ids, recorder=dynamic, max_new_tokens=6)
    # transformers' defaults (groups of 64, residual 128: only the prompt is quantized), then a short residual window
    for cache_config in ({"backend": "quanto", "nbits": 4}, {"backend": "hqq", "nbits": 2, "residual_length": 2}):
        recorder = core.ListRecorder(top_n=1)
        torch.manual_seed(0)
        ours = core.generate(model, ids, recorder=recorder, max_new_tokens=6, cache_implementation="quantized",
                             cache_config=cache_config)
        reference = model.generate(ids, max_new_tokens=6, cache_implementation="quantized", cache_config=cache_config)
        assert ours.sequences.tolist() == reference.tolist()
        for d, q in zip(dynamic.steps, recorder.steps):
            assert q.cache.kind == "QuantizedCache" and q.cache.bytes < d.cache.bytes
