"""The sampler lab in the playground: the Advanced fields reach the core from the tabs (through the API, on a tiny
model over the embedded tokenizer), the funnel / entropy / watermark figures draw what was recorded, structured
output comes back as JSON, rows that miss a forced word are flagged, every new field survives the Config & Share
round trip (widgets -> GenerationConfig JSON -> widgets of the matching tab), the compare tab runs any preset, and the
smoothing factor curve is the run's own processor."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationConfig

import core
from core.processors.smoothing import SmoothingFactorLogitsProcessor
from playground import config_panel, field_codecs, share
from playground.fields import BY_NAME, GROUPS
from playground.tabs.compare import all_presets
from test_ui_handlers import figure, generate, served, tiny_folder  # noqa: F401 - fixtures

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_every_advanced_field_has_a_widget_on_a_tab_and_a_core_or_transformers_name(served):
    demo, _, _ = served
    on_tabs = {name for h in demo.handles for name in h.controls}
    fields = GenerationConfig().to_dict()
    for name in BY_NAME:
        assert name in on_tabs, name
        assert name in fields or name in core.chain.FIELDS, f"{name} is neither transformers' nor the core's"


def test_sampling_tab_with_dry_and_a_reordered_chain_draws_the_funnel(served):
    _, client, _ = served
    out, _ = generate(client, "sampling", dry_multiplier=0.8, min_p=0.05, temperature=0.7, top_k=20,
                      sampler_order="min_p, temperature", seed=3)
    assert "tokens in" in out["status"], out["status"]
    funnel = figure(out, "Sampler chain at the picked step")
    stages = list(funnel.data[0].x)
    assert stages == ["model", "dry", "min_p", "top_k", "temperature"]  # min_p took temperature's place
    kept = list(funnel.data[0].y)
    assert kept[0] > kept[-1] >= 1 and kept[2] <= kept[1]
    assert all(0 <= m <= 1.0001 for m in funnel.data[1].y)
    entropy = figure(out, "Entropy per step")
    assert len(entropy.data[0].y) >= 1


def test_sampling_tab_with_the_new_samplers_draws_their_stages_and_the_smoothing_curve(served):
    """Smoothing factor, tail-free sampling, top-a and adaptive-P from the Advanced fields: each is a stage of the
    funnel (adaptive-P last), and the smoothing factor curve is the run's processor on the curve's own x values."""
    _, client, _ = served
    out, _ = generate(client, "sampling", top_k=0, smoothing_factor=0.4, smoothing_curve=2.0, tfs=0.95, top_a=0.1,
                      adaptive_target="0.5", seed=4)
    assert "tokens in" in out["status"], out["status"]
    stages = list(figure(out, "Sampler chain at the picked step").data[0].x)
    assert {"smoothing", "tfs", "top_a", "adaptive_p"} <= set(stages) and stages[-1] == "adaptive_p", stages
    line = next(t for t in figure(out, "Smoothing factor curve").data if t.meta == "curve")
    bent = SmoothingFactorLogitsProcessor(0.4, 2.0)(torch.zeros((1, 1), dtype=torch.long),
                                                     torch.tensor([line.x], dtype=torch.float32))
    assert list(line.y) == bent[0].tolist()
    plain, _ = generate(client, "sampling", max_new_tokens=2, seed=4)
    assert plain["figure:Smoothing factor curve"] is None  # no smoothing: its sub-tab stays hidden


def test_sampling_tab_json_schema_and_watermark(served):
    _, client, _ = served
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"],
              "additionalProperties": False}
    out, _ = generate(client, "sampling", json_schema=json.dumps(schema), max_new_tokens=16, seed=1)
    assert json.loads(out["text0"]).keys() == {"a"}
    entropy = figure(out, "Entropy per step")
    assert [t.meta for t in entropy.data] == ["entropy", "effective_vocabulary", "grammar_removed"]
    out, _ = generate(client, "sampling", watermarking_config='{"bias": 6.0}', max_new_tokens=10, seed=2)
    wm = figure(out, "Watermark")
    assert len(wm.data[0].x) == 10 and "z = " in wm.layout.title.text


def test_a_bad_advanced_value_names_the_field(served):
    _, client, _ = served
    out, _ = generate(client, "sampling", sampler_order="top_k, nope")
    assert "`sampler_order` must name only known stages" in out["status"]
    out, _ = generate(client, "sampling", bad_words_ids="[oops")
    assert "`bad_words_ids` must be JSON" in out["status"]


def test_beam_tab_flags_rows_that_miss_a_forced_word(served):
    _, client, _ = served
    out, _ = generate(client, "beam", num_beams=2, num_return_sequences=2, max_new_tokens=2,
                      force_words_ids='[" zebra crossing tomorrow"]')
    assert "✗ misses \" zebra crossing tomorrow\"" in out["text0"]  # 2 tokens cannot hold the 3-token phrase
    out, _ = generate(client, "beam", num_beams=2, max_new_tokens=8, force_words_ids='[" apple"]')
    assert "✗" not in out["text0"] and "apple" in out["text0"]


def test_compare_runs_presets_of_any_tab(served):
    _, client, _ = served
    picks = ["Sampling · min_p 0.1", "Sampling · top-nσ 1.0", "Sampling · XTC (probability 0.5, threshold 0.1)"]
    out, _ = generate(client, "compare", strategies=picks, seed=0)
    for name in picks:
        assert f"[{name}]" in out["text0"]
    assert all(name in all_presets() for name in picks)


# --- Config & Share round trip ------------------------------------------------------------------------------------
CHANGED = {  # a value per Advanced field, as its widget shows it, away from the widget's default
    "repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "presence_penalty": 0.5, "frequency_penalty": -0.25,
    "dry_multiplier": 0.8, "dry_base": 2.0, "dry_allowed_length": 3, "dry_sequence_breakers": '["\\n", "."]',
    "sequence_bias": '[[" sorry", -5.0]]', "bad_words_ids": '[" however", [5, 6]]', "suppress_tokens": "[7, 8]",
    "begin_suppress_tokens": "[9]", "min_new_tokens": 4, "exponential_decay_length_penalty": "[16, 1.2]",
    "renormalize_logits": True, "remove_invalid_values": True, "token_healing": True, "guidance_scale": 1.5,
    "negative_prompt": "Write badly.", "watermarking_config": '{"bias": 3.0, "greenlist_ratio": 0.3}',
    "top_h": 0.5, "top_n_sigma": 1.5, "xtc_probability": 0.4, "xtc_threshold": 0.2, "dynatemp_low": 0.5,
    "dynatemp_high": 1.5, "dynatemp_exponent": 2.0, "mirostat_tau": 4.0, "mirostat_eta": 0.2, "smoothing_factor": 0.4,
    "smoothing_curve": 2.0, "tfs": 0.9, "top_a": 0.3, "adaptive_target": 0.5, "adaptive_decay": 0.8,
    "sampler_order": "min_p, temperature", "json_schema": '{"type": "object"}', "regex": r"\d+",
    "grammar": 'root ::= "yes" | "no"', "force_words_ids": '[" paint", [" red", " blue"]]',
    "min_length": 12, "max_time": "30", "forced_eos_token_id": "2", "forced_bos_token_id": "40",
    "encoder_repetition_penalty": 1.3, "encoder_no_repeat_ngram_size": 2,
}


def test_changed_values_cover_every_field():
    assert set(CHANGED) == set(BY_NAME)
    for name, value in CHANGED.items():
        assert field_codecs.config_value(name, value) is not None, name


@pytest.mark.parametrize("key", ["sampling", "greedy", "beam"])
def test_advanced_fields_round_trip_through_save_and_load(served, tmp_path, key):
    """A tab's widgets -> the JSON Config & Share saves -> loaded back: the same tab is chosen and every widget
    shows what it showed (grammar fields one at a time: a run takes one grammar)."""
    demo, _, _ = served
    handle = next(h for h in demo.handles if h.key == key)
    widgets = {name: c.value for name, c in handle.controls.items()}
    for name in handle.controls:
        if name in CHANGED and name not in ("regex", "grammar"):
            widgets[name] = CHANGED[name]
    if "mirostat_tau" in widgets and handle.fixed.get("num_beams") != 1:
        widgets["mirostat_tau"] = 0
    cfg = share.config_from_settings(field_codecs.generate_kwargs(widgets, {}, handle.fixed))
    path = share.save_config(cfg, tmp_path, "lab.json", set(handle.controls) | set(handle.fixed))
    values = share.config_values(share.load_local(tmp_path, "lab.json"))
    chosen, overridden = config_panel.matching_tab(values, demo.handles, key)
    assert chosen.key == key and not overridden
    shown = {name: field_codecs.widget_value(name, values.get(name, share.default_value(name)))
             for name in handle.controls}
    for name in handle.controls:
        if name in BY_NAME:
            expected, got = field_codecs.config_value(name, widgets[name]), field_codecs.config_value(name, shown[name])
            if isinstance(expected, dict) and name == "watermarking_config":  # transformers adds its defaults
                assert expected.items() <= got.items(), name
            else:
                assert got == expected, name
    raw = json.loads(path.read_text())
    assert raw.get("dry_multiplier") == 0.8 and raw.get("sampler_order") == ["min_p", "temperature"]


def test_a_saved_lab_config_runs_the_same_through_from_pretrained(embedded, tmp_path):
    """What the sampling tab would save (words, JSON fields, community samplers) honoured by
    ``core.generate(generation_config=GenerationConfig.from_pretrained(folder))``."""
    handle_fields = {"dry_multiplier": 0.8, "sampler_order": "min_p, temperature", "bad_words_ids": '[" the"]',
                     "sequence_bias": '[[" cat", 3.0]]', "min_p": 0.05, "xtc_probability": 0.3,
                     "watermarking_config": '{"bias": 2.0}', "negative_prompt": "boring"}
    kwargs = field_codecs.generate_kwargs(handle_fields, {}, {"do_sample": True, "num_beams": 1, "max_new_tokens": 8})
    share.save_config(share.config_from_settings(kwargs), tmp_path, "generation_config.json")
    loaded = GenerationConfig.from_pretrained(tmp_path)
    ids = embedded.tokenizer("Tell me about cats.", return_tensors="pt")["input_ids"]
    a = core.generate(embedded.model, ids, generation_config=loaded, tokenizer=embedded.tokenizer,
                      generator=core.rng.new_generator(4))
    b = core.generate(embedded.model, ids, tokenizer=embedded.tokenizer, generator=core.rng.new_generator(4), **kwargs)
    assert a.sequences.tolist() == b.sequences.tolist()


def test_groups_name_only_declared_kinds():
    kinds = {"slider", "number", "checkbox", "json", "text", "lines", "names"}
    assert all(f.kind in kinds for g in GROUPS.values() for f in g.fields)
