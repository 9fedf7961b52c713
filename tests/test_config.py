"""Validation: every inconsistent or out-of-range setting raises one ValueError naming the field, the allowed
range and the value, before transformers' own (less specific) checks can fire."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

import core
from core import config as config_checks
from conftest import tiny_llama


def expect_error(model, prompt, *parts: str, **kwargs) -> None:
    """``core.generate`` raises a ValueError whose message holds every one of ``parts`` (field, range, value)."""
    with pytest.raises(ValueError) as info:
        core.generate(model, prompt, max_new_tokens=kwargs.pop("max_new_tokens", 3), **kwargs)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# (kwargs, field as named in the message, allowed range, value as printed)
OUT_OF_RANGE = [
    (dict(num_beams=4, num_beam_groups=3, diversity_penalty=1.0), "`num_beam_groups`", "a divisor of num_beams (4)",
     "got 3"),
    (dict(num_beams=2, num_beam_groups=4, diversity_penalty=1.0), "`num_beam_groups`", "<= num_beams (2)", "got 4"),
    (dict(penalty_alpha=1.5, top_k=4), "`penalty_alpha`", "in [0, 1]", "got 1.5"),
    (dict(penalty_alpha=-0.1, top_k=4), "`penalty_alpha`", "in [0, 1]", "got -0.1"),
    (dict(do_sample=True, top_p=1.5), "`top_p`", "in (0, 1]", "got 1.5"),
    (dict(do_sample=True, top_p=0.0), "`top_p`", "in (0, 1]", "got 0.0"),
    (dict(do_sample=True, temperature=0.0), "`temperature`", "> 0 when sampling", "got 0.0"),
    (dict(do_sample=True, temperature=-1.0), "`temperature`", "> 0 when sampling", "got -1.0"),
    (dict(max_new_tokens=0), "`max_new_tokens`", "an integer >= 1", "got 0"),
    (dict(max_new_tokens=-5), "`max_new_tokens`", "an integer >= 1", "got -5"),
    (dict(do_sample=True, top_k=-1), "`top_k`", "an integer >= 0", "got -1"),
    (dict(do_sample=True, typical_p=0.0), "`typical_p`", "in (0, 1]", "got 0.0"),
    (dict(do_sample=True, typical_p=1.2), "`typical_p`", "in (0, 1]", "got 1.2"),
    (dict(do_sample=True, min_p=1.5), "`min_p`", "in [0, 1]", "got 1.5"),
    (dict(do_sample=True, min_p=-0.1), "`min_p`", "in [0, 1]", "got -0.1"),
    (dict(do_sample=True, epsilon_cutoff=1.0), "`epsilon_cutoff`", "in [0, 1)", "got 1.0"),
    (dict(do_sample=True, epsilon_cutoff=-0.5), "`epsilon_cutoff`", "in [0, 1)", "got -0.5"),
    (dict(do_sample=True, eta_cutoff=1.5), "`eta_cutoff`", "in [0, 1)", "got 1.5"),
    (dict(do_sample=True, eta_cutoff=-0.1), "`eta_cutoff`", "in [0, 1)", "got -0.1"),
    (dict(repetition_penalty=0.0), "`repetition_penalty`", "> 0", "got 0.0"),
    (dict(repetition_penalty=-1.0), "`repetition_penalty`", "> 0", "got -1.0"),
    (dict(num_beams=2, num_return_sequences=3), "`num_return_sequences`", "<= num_beams (2)", "got 3"),
    (dict(num_return_sequences=2), "`num_return_sequences`", "1 without sampling or beams", "got 2"),
    (dict(num_beams=0), "`num_beams`", "an integer >= 1", "got 0"),
    (dict(diversity_penalty=-1.0, num_beams=4, num_beam_groups=2), "`diversity_penalty`", "in [0, inf)", "got -1.0"),
    (dict(diversity_penalty=0.0, num_beams=4, num_beam_groups=2), "`diversity_penalty`", "> 0 when num_beam_groups > 1",
     "got 0.0"),
    (dict(dola_layers=[5]), "`dola_layers`", "layer indices in [0, 1]", "got [5]"),
    (dict(dola_layers="middle"), "`dola_layers`", '"low", "high"', "got 'middle'"),
    (dict(no_repeat_ngram_size=-2), "`no_repeat_ngram_size`", "an integer >= 0", "got -2"),
    (dict(prompt_lookup_num_tokens=0), "`prompt_lookup_num_tokens`", "an integer >= 1", "got 0"),
    (dict(max_time=0), "`max_time`", "> 0", "got 0"),
    (dict(cache_implementation="foo"), "`cache_implementation`", '"dynamic", "static", "quantized"', "got 'foo'"),
    (dict(bad_words_ids=[[70]]), "`bad_words_ids`", "token ids in [0, 63]", "got [[70]]"),
    (dict(bad_words_ids=[]), "`bad_words_ids`", "non-empty list", "got []"),
    (dict(eos_token_id=[2, -1]), "`eos_token_id`", "token ids in [0, 63]", "got [2, -1]"),
    (dict(suppress_tokens=[64]), "`suppress_tokens`", "token ids in [0, 63]", "got [64]"),
    (dict(forced_eos_token_id=99), "`forced_eos_token_id`", "token ids in [0, 63]", "got 99"),
]


@pytest.mark.parametrize("kwargs, field, allowed, value", OUT_OF_RANGE,
                         ids=[f"{c[1]}={c[3][4:]}" for c in OUT_OF_RANGE])
def test_out_of_range_setting_names_field_range_and_value(tiny_model, prompt, kwargs, field, allowed, value):
    expect_error(tiny_model, prompt, field, allowed, value, **kwargs)


def test_message_format_is_field_must_be_range_got_value(tiny_model, prompt):
    with pytest.raises(ValueError, match=re.escape("`penalty_alpha` must be in [0, 1]; got 1.5")):
        core.generate(tiny_model, prompt, max_new_tokens=3, penalty_alpha=1.5, top_k=4)


def test_values_in_a_generation_config_are_checked_too(tiny_model, prompt):
    expect_error(tiny_model, prompt, "`top_p`", "in (0, 1]", "got 2.0",
                 generation_config=GenerationConfig(do_sample=True, top_p=2.0, max_new_tokens=3))


def test_integer_temperature_is_named_as_such(tiny_model, prompt):
    # transformers' TemperatureLogitsWarper rejects ints; the message says a float is expected
    expect_error(tiny_model, prompt, "`temperature`", "a float > 0", "got 2", do_sample=True, temperature=2)


def test_dola_on_encoder_decoder_model(prompt):
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    expect_error(t5, prompt, "`dola_layers`", "unset for encoder-decoder models", "got 'high'", dola_layers="high")


def test_assistant_with_another_vocabulary_needs_both_tokenizers(tiny_model, prompt):
    other = tiny_llama(2, vocab=80)
    expect_error(tiny_model, prompt, "`assistant_tokenizer`", "must both be given", "main 64 tokens, assistant 80",
                 "assistant_tokenizer=None", assistant_model=other)


def test_assistant_tokenizer_without_assistant(tiny_model, prompt):
    expect_error(tiny_model, prompt, "`assistant_tokenizer`", "needs `assistant_model`", assistant_tokenizer=object())


@pytest.mark.parametrize("ids", [torch.zeros((1, 0), dtype=torch.long), torch.zeros((0, 3), dtype=torch.long)])
def test_empty_prompt(tiny_model, ids):
    expect_error(tiny_model, ids, "`input_ids`", "at least one token", f"shape {tuple(ids.shape)}")


def test_no_prompt(tiny_model):
    expect_error(tiny_model, None, "`input_ids`", "at least one token", "got None")


def test_stop_strings_need_a_tokenizer(tiny_model, prompt):
    expect_error(tiny_model, prompt, "`stop_strings`", "tokenizer", stop_strings=["x"])


# --- caches -----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="the offloaded cache runs where CUDA is available")
@pytest.mark.parametrize("impl", ["offloaded", "offloaded_static"])
def test_offloaded_cache_without_cuda_says_why_and_what_instead(tiny_model, prompt, impl):
    expect_error(tiny_model, prompt, "`cache_implementation`", "needs CUDA", '"dynamic", "static" or "quantized"',
                 f"got {impl!r}", cache_implementation=impl)


QUANTIZED_BAD = [
    ({"backend": "quanto", "nbits": 3, "q_group_size": 8}, '`cache_config["nbits"]`',
     "one of [2, 4] for the 'quanto' backend", "got 3"),
    ({"backend": "hqq", "nbits": 5, "q_group_size": 8}, '`cache_config["nbits"]`',
     "one of [1, 2, 3, 4, 8] for the 'hqq' backend", "got 5"),
    ({"backend": "HQQ"}, '`cache_config["backend"]`', '"quanto", "hqq", "fp8" (lower case: \'hqq\')', "got 'HQQ'"),
    ({"backend": "int8"}, '`cache_config["backend"]`', 'one of "quanto", "hqq", "fp8"', "got 'int8'"),
    ({"backend": "quanto"}, '`cache_config["q_group_size"]`',
     "a divisor of num_key_value_heads * head_dim (2 * 8 = 16)", "got 64"),
    ({"backend": "fp8", "nbits": 4}, "`cache_config`", "free of nbits", "got ['nbits']"),
    ({"backend": "quanto", "q_group_size": 8, "axis_key": 1}, '`cache_config["axis_key"]`', "one of [0, -1]", "got 1"),
    ({"backend": "quanto", "q_group_size": 8, "residual_length": -1}, '`cache_config["residual_length"]`',
     "an integer >= 0", "got -1"),
    ({"backend": "quanto", "q_group_size": 8, "bits": 4}, "`cache_config`", "keys among backend", "got ['bits']"),
]


@pytest.mark.parametrize("cache_config, field, allowed, value", QUANTIZED_BAD,
                         ids=[f"{c[1]}={c[3][4:]}" for c in QUANTIZED_BAD])
def test_quantized_cache_options(tiny_model, prompt, cache_config, field, allowed, value):
    expect_error(tiny_model, prompt, field, allowed, value, cache_implementation="quantized", cache_config=cache_config)


@pytest.mark.parametrize("backend, package", [("hqq", "pip install hqq"), ("quanto", "pip install optimum-quanto")])
def test_quantized_backend_not_installed_says_why_and_what_instead(tiny_model, prompt, monkeypatch, backend, package):
    spec = config_checks.QUANT_BACKENDS[backend]
    monkeypatch.setitem(config_checks.QUANT_BACKENDS, backend,
                        config_checks.QuantBackend(lambda: False, spec.package, spec.nbits, spec.axes))
    expect_error(tiny_model, prompt, '`cache_config["backend"]`', package, "installed here:", "'fp8'",
                 f"got {backend!r}", cache_implementation="quantized",
                 cache_config={"backend": backend, "q_group_size": 8})


def test_quantized_cache_on_encoder_decoder_model(prompt):
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    expect_error(t5, prompt, "`cache_implementation`", '"dynamic" or "static" for encoder-decoder models',
                 "got 'quantized'", cache_implementation="quantized",
                 cache_config={"backend": "quanto", "q_group_size": 8})


# --- what stays valid -------------------------------------------------------------------------------------------
VALID = [
    dict(),
    dict(do_sample=True, top_k=0, top_p=1.0, typical_p=1.0, min_p=0.0, epsilon_cutoff=0.0, eta_cutoff=0.0),
    dict(do_sample=True, temperature=1),  # 1 == 1.0: transformers adds no TemperatureLogitsWarper
    dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, num_return_sequences=4),
    dict(penalty_alpha=0.0, top_k=4),
    dict(penalty_alpha=1.0, top_k=4),
    dict(do_sample=True, num_return_sequences=3),
    dict(repetition_penalty=1.3, no_repeat_ngram_size=2),
]


@pytest.mark.parametrize("kwargs", VALID, ids=[str(sorted(v)) for v in VALID])
def test_boundary_values_are_accepted(tiny_model, prompt, kwargs):
    config_checks.check_request(tiny_model, None, dict(max_new_tokens=3, **kwargs))


def test_merged_config_follows_transformers_precedence(tiny_model):
    """User kwargs > the user's GenerationConfig > the model's generation_config > global defaults: the same
    values as ``model._prepare_generation_config`` (which validates, so only valid settings are compared)."""
    user = GenerationConfig(do_sample=True, top_k=7)
    kwargs = dict(top_p=0.8, max_new_tokens=4)
    ours = config_checks.merged_config(tiny_model, user, kwargs)
    theirs, _ = tiny_model._prepare_generation_config(user, **kwargs)
    assert ours.to_dict() == theirs.to_dict()
    ours = config_checks.merged_config(tiny_model, None, {})
    theirs, _ = tiny_model._prepare_generation_config(None)
    assert ours.to_dict() == theirs.to_dict()
