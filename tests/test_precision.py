"""Precision and device: ``core.load_model(dtype=...)``, what ``"auto"`` and the device choice pick (the choice is
tested, not the hardware), and token parity with transformers 5.x in bfloat16 and float16, on tiny Llamas and on
the embedded model, with records that stay float32."""

from __future__ import annotations

import pytest
import torch

import core
from core import models
from core.records import ListRecorder

from conftest import tiny_llama

LOW = [torch.bfloat16, torch.float16]
STRATEGIES = {
    "greedy": {},
    "sample": dict(do_sample=True, top_k=20),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam_sample": dict(num_beams=3, do_sample=True),
    "repetition": dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def parity_pair(model, ids, seed=0, lens=False, **settings):
    """(core's result, transformers' sequences, core's trace) from the same seed; also run on CUDA (test_cuda)."""
    torch.manual_seed(seed)
    recorder = ListRecorder(top_n=5, lens=lens)
    ours = core.generate(model, ids, max_new_tokens=10, recorder=recorder, **settings)
    torch.manual_seed(seed)
    theirs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, **settings)
    return ours, theirs, recorder.trace


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_tiny_parity_with_transformers_in_the_same_dtype(prompt, dtype, strategy):
    model = tiny_llama(0, dtype=dtype)
    ours, theirs, trace = parity_pair(model, prompt, seed=3, **STRATEGIES[strategy])
    assert ours.sequences.tolist() == theirs.tolist()
    _assert_float32_records(trace, dtype)


def _assert_float32_records(trace, dtype, raw: bool = True):
    """Raw logits are the model's low-precision values (exact in float32); probabilities are computed from them in
    float32, so they carry more bits than ``dtype`` holds. (``raw=False``: the candidates' logits are computed
    scores, DoLa's contrast.)"""
    candidates = [c for step in trace.steps for row in step.rows for c in row.candidates]
    assert all(isinstance(c.logit, float) and isinstance(c.prob, float) for c in candidates)
    assert not raw or all(float(torch.tensor(c.logit).to(dtype)) == c.logit for c in candidates)
    assert any(float(torch.tensor(c.prob).to(dtype)) != c.prob for c in candidates)


@pytest.mark.parametrize("settings", [dict(penalty_alpha=0.6, top_k=4), dict(dola_layers="high")],
                         ids=["contrastive", "dola"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_ported_strategies_run_in_low_precision_with_float32_records(prompt, dtype, settings):
    """No 5.x reference runs these; float32 and bfloat16 of the same tiny model agree on the first tokens."""
    recorder = ListRecorder(lens=True) if "dola_layers" in settings else ListRecorder()
    low = core.generate(tiny_llama(0, layers=4, dtype=dtype), prompt, max_new_tokens=6, recorder=recorder, **settings)
    full = core.generate(tiny_llama(0, layers=4), prompt, max_new_tokens=6, **settings)
    assert low.sequences[0, :8].tolist() == full.sequences[0, :8].tolist()
    _assert_float32_records(recorder.trace, dtype, raw="dola_layers" not in settings)
    if "dola_layers" in settings:
        assert all(0.0 <= layer.chosen_prob <= 1.0 for step in recorder.trace.steps for layer in step.lens[0])


# --- the choices ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, cpu_bf16, gpu_bf16, expected", [
    ("cpu", True, None, "bfloat16"),  # AVX512-BF16 / AMX
    ("cpu", False, None, "float32"),
    ("cuda", None, True, "bfloat16"),
    ("cuda", None, False, "float16"),  # a GPU without bfloat16 (T4)
])
def test_auto_precision(device, cpu_bf16, gpu_bf16, expected):
    assert models.resolve_dtype("auto", device, cpu_bf16=cpu_bf16, gpu_bf16=gpu_bf16) == expected


def test_named_precisions_stay_as_named_and_others_are_refused():
    for name in ("float32", "bfloat16", "float16"):
        assert models.resolve_dtype(name, "cuda", gpu_bf16=False) == name
    assert models.resolve_dtype(torch.bfloat16) == "bfloat16"
    assert models.resolve_dtype(None) == "float32"
    with pytest.raises(ValueError, match=r"`dtype` must be one of 'float32', 'bfloat16', 'float16', 'auto'; got 'fp8'"):
        models.resolve_dtype("fp8")


def test_device_is_cuda_when_present():
    assert models.choose_device(cuda_available=True) == "cuda"
    assert models.choose_device(cuda_available=False) == "cpu"


@pytest.mark.parametrize("weights, free, expected", [
    (1_000, [10_000], {"": 0}),  # fits the first GPU with room for the cache
    (9_000, [10_000], "auto"),  # no room for the cache: accelerate spreads it
    (9_000, [10_000, 10_000], "auto"),  # over two GPUs
    (20_000, [10_000], "auto"),  # larger than the GPU: GPU and CPU
    (1_000, [], None),  # free memory unknown (outside a ZeroGPU task): loaded whole, then moved
])
def test_placement(weights, free, expected):
    assert models.placement(weights, free) == expected


def test_weight_bytes_counts_on_the_meta_device():
    config = tiny_llama(0).config
    n = sum(p.numel() for p in tiny_llama(0).parameters())
    assert models.weight_bytes(config, "float32") == 4 * n
    assert models.weight_bytes(config, "bfloat16") == 2 * n


def test_load_model_refuses_an_unknown_device():
    with pytest.raises(ValueError, match='`device` must be "cpu" or "cuda"'):
        core.load_model(None, device="tpu")


# --- the embedded model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def embedded_low(request):
    return core.load_model(None, dtype=request.param, device="cpu")


@pytest.mark.slow
def test_embedded_loads_in_the_precision_asked_for(embedded_low):
    model = embedded_low.model
    assert {p.dtype for p in model.parameters()} == {models.DTYPES[embedded_low.dtype]}
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # as from_pretrained keeps it
    assert embedded_low.device == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_embedded_parity_with_transformers_in_the_same_dtype(embedded_low, strategy):
    ids = embedded_low.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    settings = {"greedy": {}, "beam": dict(num_beams=4, num_return_sequences=2),
                "sample": dict(do_sample=True, top_k=50, temperature=0.8)}[strategy]
    ours, theirs, trace = parity_pair(embedded_low.model, ids, seed=1, **settings)
    assert ours.sequences.tolist() == theirs.tolist()
    _assert_float32_records(trace, models.DTYPES[embedded_low.dtype])


@pytest.mark.slow
def test_embedded_auto_is_bfloat16_where_the_cpu_has_it(embedded):
    expected = "bfloat16" if models.cpu_has_native_bf16() else "float32"
    assert models.resolve_dtype("auto", "cpu") == expected
    assert embedded.dtype == "float32"  # the default stays float32: the 4.55.4 fixture's precision
