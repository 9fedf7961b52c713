"""The precision picker beside the model: model keys (``name@bfloat16``), ``PLAYGROUND_DTYPE``, the cache loading each
key in its precision, the load handler and the app's startup model; and the logit lens panel the greedy, sampling
and DoLa tabs gained."""

from __future__ import annotations

import pytest
import torch

import app
from core.models import DEFAULT_NAME, LoadedModel
from playground import policy
from playground.state import ModelCache
from playground.tabs import TABS, all_tabs
from playground.tabs.base import AppContext

from conftest import tiny_llama

NO_PROGRESS = dict(progress=lambda *a, **k: None)


def test_keys_name_a_precision_only_when_it_is_not_float32():
    assert policy.model_key("org/model", "float32") == "org/model"
    assert policy.model_key("org/model", "bfloat16") == "org/model@bfloat16"
    assert policy.model_key(None, "float16") == f"{DEFAULT_NAME}@float16"
    assert policy.model_key("m", "auto") in ("m", "m@bfloat16", "m@float16")  # "auto" resolved for this machine
    assert policy.split_key("org/model@bfloat16") == ("org/model", "bfloat16")
    assert policy.split_key("org/model") == ("org/model", None)
    assert policy.split_key("/models/a@b") == ("/models/a@b", None)  # an @ that names no precision stays
    assert policy.split_key(None) == (None, None)


def test_playground_dtype(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_DTYPE", raising=False)
    assert policy.default_dtype() == "float32"
    monkeypatch.setenv("PLAYGROUND_DTYPE", "bfloat16")
    assert policy.default_dtype() == "bfloat16"
    monkeypatch.setenv("PLAYGROUND_DTYPE", "fp16")
    with pytest.raises(ValueError, match="PLAYGROUND_DTYPE must be one of float32, bfloat16, float16, auto; got 'fp"):
        policy.default_dtype()


class Loader:
    """A fake ``core.load_model`` that records how it was called and hands out tiny models in that precision."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, dtype="float32"):
        self.calls.append((name, dtype))
        model = tiny_llama(0).to(getattr(torch, dtype))
        return LoadedModel(model, None, name or DEFAULT_NAME, dtype=dtype)


def test_the_cache_loads_each_key_in_its_precision():
    loader = Loader()
    cache = ModelCache(capacity=3, loader=loader)
    plain, low = cache.get("org/model"), cache.get("org/model@bfloat16")
    assert loader.calls == [("org/model", "float32"), ("org/model", "bfloat16")]  # float32: the one-argument call
    assert plain is not low and low.dtype == "bfloat16" and cache.get("org/model@bfloat16") is low
    assert cache.get(f"{DEFAULT_NAME}@float16").dtype == "float16" and loader.calls[-1] == (None, "float16")


def test_the_load_handler_keeps_the_key_and_says_the_precision(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    load = app.load_handler(ModelCache(capacity=2, loader=Loader()))
    key, status = load(None, "org/model", "bfloat16", **NO_PROGRESS)
    assert key == "org/model@bfloat16"
    assert "bfloat16 on cpu" in status
    key, _ = load("org/model", "", None, **NO_PROGRESS)  # no pick: PLAYGROUND_DTYPE (float32)
    assert key == "org/model"


def test_public_mode_checks_the_name_not_the_precision(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_PUBLIC", "1")
    loader = Loader()
    loaded = policy.load(ModelCache(capacity=2, loader=loader), f"{DEFAULT_NAME}@bfloat16", "model")
    assert loaded.dtype == "bfloat16" and loader.calls == [(None, "bfloat16")]
    with pytest.raises(policy.PublicError, match="cannot be loaded here"):
        policy.load(ModelCache(capacity=2, loader=loader), "./folder@bfloat16", "model")


def test_the_assistant_loads_in_the_main_models_precision():
    loader = Loader()
    cache = ModelCache(capacity=3, loader=loader)
    main = cache.get("org/main@bfloat16")
    ctx = AppContext(models=cache, model_state=None, startup=main)
    all_tabs()
    plans = TABS["speculative"].plans({}, {"assistant_model": "org/helper"}, main, ctx)
    assert loader.calls[-1] == ("org/helper", "bfloat16")
    assert plans[0].model_kwargs["assistant_model"].dtype == torch.bfloat16


def test_build_demo_starts_in_playground_dtype(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    loader = Loader()
    demo = app.build_demo("org/model", models=ModelCache(capacity=2, loader=loader), dtype="bfloat16")
    assert demo.startup_model == "org/model@bfloat16" and loader.calls == [("org/model", "bfloat16")]
    pickers = [block for block in demo.blocks.values() if getattr(block, "label", None) == "dtype"]
    assert len(pickers) == 1 and pickers[0].value == "bfloat16"
    assert list(pickers[0].choices) == [(c, c) for c in ("float32", "bfloat16", "float16", "auto")]


# --- the logit lens panel -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["greedy", "sampling", "dola"])
def test_the_lens_panel_is_in_the_greedy_sampling_and_dola_tabs(key):
    all_tabs()
    labels = [figure.label for figure in TABS[key].figures]
    assert "Logit lens" in labels and "Logit lens at the picked step" in labels
    picked = {figure.label: figure.picked for figure in TABS[key].figures}
    assert picked["Logit lens at the picked step"] and not picked["Logit lens"]


@pytest.mark.parametrize("key", ["greedy", "sampling", "dola"])
def test_their_main_run_records_the_lens_when_asked_where_the_model_allows(key):
    from transformers import BartConfig, BartForConditionalGeneration

    all_tabs()
    llama = LoadedModel(tiny_llama(0), None, "tiny")
    kwargs = {"dola_layers": "high"} if key == "dola" else {}
    side = {"defaults_only": False, "logit_lens": True}
    assert {"logit_lens"} <= set(TABS[key].side_inputs(None))  # the tab's checkbox
    (main, *_) = TABS[key].plans(dict(kwargs), {**side, "logit_lens": False}, llama, None)
    assert "lens" not in main.model_kwargs  # off unless asked
    (main, *rest) = TABS[key].plans(dict(kwargs), side, llama, None)
    assert main.model_kwargs.get("lens") is True
    assert all("lens" not in plan.model_kwargs for plan in rest)  # DoLa's greedy comparison draws no lens
    bart = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=32, decoder_ffn_dim=32))
    (main, *_) = TABS[key].plans({}, side, LoadedModel(bart, None, "bart"), None)
    assert "lens" not in main.model_kwargs  # no decoder-only final norm: the panel says what it needs instead
