"""The sampler lab in the core: every decoding field of transformers' ``GenerationConfig`` gives transformers' own
tokens through ``core.generate`` (greedy and seeded sampling, tiny Llama), the community samplers are fields like
transformers' (``core.chain`` orders them, ``sampler_order`` reorders), every recorded stage carries the funnel
(survivors, model probability kept, the chosen token's probability), watermarks are detected per token,
the core's fields survive ``save_pretrained`` / ``from_pretrained``, and structured output (xgrammar) parses and
satisfies its schema or pattern on the embedded model with greedy decoding, sampling and beam search."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.configuration_utils import WatermarkingConfig

import core
from core import chain
from core.processors import (AdaptivePLogitsProcessor, DRYLogitsProcessor, PresenceFrequencyPenaltyLogitsProcessor,
                             SmoothingFactorLogitsProcessor, TailFreeLogitsProcessor, TopALogitsProcessor)
from core.rng import new_generator
from core.watermark import detect
from conftest import tiny_llama
from test_processors import char_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])
NEGATIVE = torch.tensor([[1, 30, 31, 32]])
STEPS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


def tokens_of(model, kwargs: dict, sample: bool, seed: int = 0, **extra) -> tuple[list, list]:
    """(transformers' tokens, the core's) for the same settings; sampling seeded the same way in both."""
    settings = dict(max_new_tokens=STEPS, do_sample=sample, **kwargs)
    if sample:
        settings.setdefault("top_k", 0)
    torch.manual_seed(seed)
    ref = model.generate(PROMPT, **settings, **extra)
    ours = core.generate(model, PROMPT, generator=new_generator(seed), **settings, **extra).sequences
    return ref.tolist(), ours.tolist()


# --- parity: every transformers field the UI exposes ----------------------------------------------------------
TRANSFORMERS_FIELDS = {
    "top_h": dict(top_h=0.5),
    "guidance_scale": dict(guidance_scale=1.5),
    "sequence_bias": dict(sequence_bias=[[[40], 5.0], [[7, 10], -3.0]]),
    "bad_words_ids": dict(bad_words_ids=[[60], [33, 46]]),
    "suppress_tokens": dict(suppress_tokens=[60, 33, 7]),
    "begin_suppress_tokens": dict(begin_suppress_tokens=[60, 7]),
    "exponential_decay_length_penalty": dict(exponential_decay_length_penalty=(2, 1.5)),
    "min_new_tokens": dict(min_new_tokens=6),
    "min_length": dict(min_length=12),
    "renormalize_logits": dict(renormalize_logits=True, temperature=0.7),
    "remove_invalid_values": dict(remove_invalid_values=True),
    "forced_bos_token_id": dict(forced_bos_token_id=40),
    "forced_eos_token_id": dict(forced_eos_token_id=2, max_new_tokens=5),
    "no_repeat_ngram_size": dict(no_repeat_ngram_size=2),
    "repetition_penalty": dict(repetition_penalty=1.3),
    "watermarking_config": dict(watermarking_config=WatermarkingConfig(bias=3.0)),
    "typical_p": dict(typical_p=0.8),
    "epsilon_cutoff": dict(epsilon_cutoff=0.01),
    "eta_cutoff": dict(eta_cutoff=0.01),
    "min_p": dict(min_p=0.05),
}
SAMPLING_ONLY = {"top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p"}


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
@pytest.mark.parametrize("field", list(TRANSFORMERS_FIELDS))
def test_every_transformers_field_gives_transformers_tokens(model, field, sample):
    if field in SAMPLING_ONLY and not sample:
        pytest.skip("a warper: transformers applies it only when sampling")
    kwargs = dict(TRANSFORMERS_FIELDS[field])
    if "max_new_tokens" in kwargs:
        steps = kwargs.pop("max_new_tokens")
        torch.manual_seed(0)
        ref = model.generate(PROMPT, max_new_tokens=steps, do_sample=sample, top_k=0, **kwargs).tolist()
        ours = core.generate(model, PROMPT, max_new_tokens=steps, do_sample=sample, top_k=0, generator=new_generator(0),
                             **kwargs).sequences.tolist()
    else:
        ref, ours = tokens_of(model, kwargs, sample)
    assert ours == ref


def test_the_fields_change_the_tokens_at_all(model):
    """A parity test is only worth something where the field does something on this model."""
    _, plain = tokens_of(model, {}, False)
    for field in ("sequence_bias", "bad_words_ids", "suppress_tokens", "guidance_scale"):
        _, ours = tokens_of(model, TRANSFORMERS_FIELDS[field], False)
        assert ours != plain, field


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
def test_guidance_with_a_negative_prompt_gives_transformers_tokens(model, sample):
    ref, ours = tokens_of(model, dict(guidance_scale=2.0), sample, negative_prompt_ids=NEGATIVE)
    assert ours == ref
    if not sample:  # the negative prompt is used (seeded draws on this tiny model happen to agree)
        _, without = tokens_of(model, dict(guidance_scale=2.0), sample)
        assert ours != without


def test_beam_search_fields_give_transformers_tokens(model):
    for kwargs in (dict(sequence_bias=[[[40], 5.0]]), dict(bad_words_ids=[[60]]), dict(min_new_tokens=6),
                   dict(exponential_decay_length_penalty=(2, 1.5)), dict(no_repeat_ngram_size=2)):
        ref, ours = tokens_of(model, dict(num_beams=3, **kwargs), False)
        assert ours == ref, kwargs


@pytest.mark.slow
def test_token_healing_gives_transformers_tokens(embedded):
    tok = embedded.tokenizer
    ids = tok('The link is <a href="http:', return_tensors="pt")["input_ids"]
    ref = embedded.model.generate(ids, max_new_tokens=4, do_sample=False, token_healing=True, tokenizer=tok)
    ours = core.generate(embedded.model, ids, max_new_tokens=4, do_sample=False, token_healing=True, tokenizer=tok)
    assert ours.sequences.tolist() == ref.tolist()
    assert ref[0, :ids.shape[1]].tolist() != ids[0].tolist()  # the prompt's last token was healed


# --- words where transformers wants token ids --------------------------------------------------------------------
def test_words_become_token_ids_with_the_tokenizer():
    tok = char_tokenizer()
    model = tiny_llama(0, vocab=len(tok))
    by_ids = core.generate(model, torch.tensor([[1, 4, 5]]), max_new_tokens=5, bad_words_ids=[[4], [5, 6]],
                           sequence_bias=[[[6], 2.0]], tokenizer=tok)
    by_words = core.generate(model, torch.tensor([[1, 4, 5]]), max_new_tokens=5, bad_words_ids=["a", "bc"],
                             sequence_bias=[["c", 2.0]], tokenizer=tok)
    assert by_words.sequences.tolist() == by_ids.sequences.tolist()
    with pytest.raises(ValueError, match="`bad_words_ids` must hold token ids when no `tokenizer=`"):
        core.generate(model, torch.tensor([[1, 4, 5]]), max_new_tokens=2, bad_words_ids=["a"])


# --- the chain ----------------------------------------------------------------------------------------------------
def chain_of(model, **kwargs) -> list[str]:
    rec = core.ListRecorder()
    core.generate(model, PROMPT, max_new_tokens=1, recorder=rec, **kwargs)
    return [e.stage for e in rec.steps[0].rows[0].effects]


def test_default_order_is_transformers_with_the_community_stages_in_their_places(model):
    assert chain_of(model, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2) == [
        "repetition_penalty", "temperature", "top_k", "top_p"]
    assert chain_of(model, do_sample=True, temperature=0.7, top_k=20, repetition_penalty=1.2, dry_multiplier=0.8,
                    dry_sequence_breakers=[], presence_penalty=0.5, top_n_sigma=2.0, xtc_probability=0.5,
                    dynatemp_low=0.5, dynatemp_high=1.5, renormalize_logits=True) == [
        "repetition_penalty", "penalties", "dry", "temperature", "dynatemp", "top_n_sigma", "top_k", "xtc",
        "renormalize_logits"]
    assert chain_of(model, do_sample=True, top_k=20, mirostat_tau=3.0,
                    watermarking_config=WatermarkingConfig()) == ["top_k", "mirostat", "watermarking_config"]


def test_sampler_order_reorders_the_stages_it_names_and_leaves_the_rest(model):
    order = chain_of(model, do_sample=True, temperature=0.7, top_k=20, min_p=0.05, repetition_penalty=1.2,
                     sampler_order=["min_p", "temperature"])
    assert order == ["repetition_penalty", "min_p", "top_k", "temperature"]
    llama = chain_of(model, do_sample=True, temperature=0.7, top_k=20, min_p=0.05, xtc_probability=0.5,
                     top_n_sigma=2.0, sampler_order=chain.LLAMA_CPP_ORDER)
    assert llama == ["top_n_sigma", "top_k", "min_p", "xtc", "temperature"]


def test_sampler_order_changes_the_tokens_as_the_reordered_list_would(model):
    """Top-k before or after min-p: the core with ``sampler_order`` equals transformers given the processors in
    that order by hand."""
    from transformers.generation.logits_process import MinPLogitsWarper, TemperatureLogitsWarper

    torch.manual_seed(0)
    procs = LogitsProcessorList([MinPLogitsWarper(0.2), TemperatureLogitsWarper(2.0)])
    ref = model.generate(PROMPT, max_new_tokens=STEPS, do_sample=True, top_k=0, logits_processor=procs)
    ours = core.generate(model, PROMPT, max_new_tokens=STEPS, do_sample=True, top_k=0, temperature=2.0, min_p=0.2,
                         sampler_order=["min_p", "temperature"], generator=new_generator(0))
    assert ours.sequences.tolist() == ref.tolist()


@pytest.mark.parametrize("order, message", [
    (["top_k", "nope"], "`sampler_order` must name only known stages .*top_k.*got unknown \\['nope'\\]"),
    (["top_k", "top_k"], "`sampler_order` must name each stage once"),
    ("top_k", "`sampler_order` must be a list of stage names"),
])
def test_sampler_order_names_the_known_stages_when_wrong(model, order, message):
    with pytest.raises(ValueError, match=message):
        core.generate(model, PROMPT, max_new_tokens=2, sampler_order=order)


def test_community_fields_reach_the_core_like_transformers_fields(model):
    """DRY and the penalties, as config fields, equal the processors given to transformers' ``generate`` (it puts a
    caller's processors where the core puts these two: after its own penalties, before the warpers)."""
    dry = DRYLogitsProcessor(0.8, 1.75, 2, sequence_breaker_ids=[])
    penalties = PresenceFrequencyPenaltyLogitsProcessor(0.5, 0.3, prompt_length=PROMPT.shape[1])
    for sample in (False, True):
        torch.manual_seed(0)
        ref = model.generate(PROMPT, max_new_tokens=12, do_sample=sample, top_k=10, repetition_penalty=1.1,
                             logits_processor=LogitsProcessorList([penalties, dry]))
        cfg = GenerationConfig(max_new_tokens=12, do_sample=sample, top_k=10, repetition_penalty=1.1,
                               presence_penalty=0.5, frequency_penalty=0.3, dry_multiplier=0.8,
                               dry_sequence_breakers=[])
        ours = core.generate(model, PROMPT, generation_config=cfg, generator=new_generator(0))
        assert ours.sequences.tolist() == ref.tolist()


def test_xtc_draws_from_the_run_generator_only(model):
    kwargs = dict(max_new_tokens=10, do_sample=True, xtc_probability=0.7, xtc_threshold=0.02, top_k=0)
    a = core.generate(model, PROMPT, generator=new_generator(5), **kwargs).sequences
    torch.manual_seed(123)  # the global generator must not matter
    b = core.generate(model, PROMPT, generator=new_generator(5), **kwargs).sequences
    assert a.tolist() == b.tolist()


def test_the_new_samplers_take_their_places_and_are_recorded_stage_by_stage(model):
    """Smoothing after the temperatures, tail-free and top-a after transformers' truncations, adaptive-P after every
    sampling stage (and before the watermark, which transformers puts after all logits processing)."""
    assert chain_of(model, do_sample=True, temperature=0.7, top_k=20, smoothing_factor=0.3, tfs=0.95, top_a=0.1,
                    xtc_probability=0.5, dynatemp_low=0.5, dynatemp_high=1.5, adaptive_target=0.5,
                    watermarking_config=WatermarkingConfig()) == [
        "temperature", "dynatemp", "smoothing", "top_k", "tfs", "top_a", "xtc", "adaptive_p", "watermarking_config"]
    assert chain_of(model, do_sample=True, top_k=20, adaptive_target=0.5, tfs=0.95,
                    sampler_order=["adaptive_p"]) == ["top_k", "tfs", "adaptive_p"]


def test_the_new_samplers_as_fields_equal_their_processors_in_transformers(model):
    """The four as config fields through the core draw what transformers' ``generate`` draws with the processors
    passed by hand, in the core's order (with no warpers on, transformers runs a caller's processors last)."""
    procs = [SmoothingFactorLogitsProcessor(0.5, 1.5), TailFreeLogitsProcessor(0.97), TopALogitsProcessor(0.05),
             AdaptivePLogitsProcessor(0.2, 0.8)]
    torch.manual_seed(3)
    ref = model.generate(PROMPT, max_new_tokens=12, do_sample=True, top_k=0,
                         logits_processor=LogitsProcessorList(procs))
    ours = core.generate(model, PROMPT, max_new_tokens=12, do_sample=True, top_k=0, smoothing_factor=0.5,
                         smoothing_curve=1.5, tfs=0.97, top_a=0.05, adaptive_target=0.2, adaptive_decay=0.8,
                         generator=new_generator(3))
    assert ours.sequences.tolist() == ref.tolist()


def test_adaptive_p_runs_only_where_each_row_grows_one_token_per_step_and_never_with_mirostat(model):
    out = core.generate(model, PROMPT, max_new_tokens=6, do_sample=True, adaptive_target=0.3,
                        generator=new_generator(0))
    assert out.sequences.shape[1] == PROMPT.shape[1] + 6
    with pytest.raises(ValueError, match="`adaptive_target` must be unset for beam_search"):
        core.generate(model, PROMPT, max_new_tokens=3, num_beams=2, adaptive_target=0.3)
    with pytest.raises(ValueError, match="`adaptive_target` must be unset when `mirostat_tau` is set"):
        core.generate(model, PROMPT, max_new_tokens=3, do_sample=True, adaptive_target=0.3, mirostat_tau=3.0)
    with pytest.raises(ValueError, match="`sampler_order` must name adaptive_p last"):
        core.generate(model, PROMPT, max_new_tokens=3, do_sample=True, adaptive_target=0.3,
                      sampler_order=["adaptive_p", "top_k"])


@pytest.mark.parametrize("name", ["smoothing factor 0.3 (quadratic sampling)", "tail-free sampling (tfs 0.95)",
                                  "top-a 0.2", "adaptive-P (target 0.5, decay 0.9)"])
def test_the_new_sampling_presets_run_and_their_stage_is_recorded(model, name):
    settings = json.loads((Path(__file__).parents[1] / "assets" / "presets" / "sampling.json").read_text())[name]
    stage = next(s for s in ("smoothing", "tfs", "top_a", "adaptive_p")
                 if core.chain.FIELDS.keys() & settings.keys() & set(core.processors.STAGES[s].fields))
    assert stage in chain_of(model, do_sample=True, **settings)


def test_mirostat_runs_only_where_each_row_grows_one_token_per_step(model):
    out = core.generate(model, PROMPT, max_new_tokens=6, do_sample=True, mirostat_tau=3.0, generator=new_generator(0))
    assert out.sequences.shape[1] == PROMPT.shape[1] + 6
    with pytest.raises(ValueError, match="`mirostat_tau` must be unset for beam_search"):
        core.generate(model, PROMPT, max_new_tokens=3, num_beams=2, mirostat_tau=3.0)


def test_community_fields_are_validated_before_transformers_runs(model):
    with pytest.raises(ValueError, match=re.escape("`xtc_threshold` must be in [0, 0.5]; got 0.9")):
        core.generate(model, PROMPT, max_new_tokens=2, xtc_probability=0.5, xtc_threshold=0.9)
    with pytest.raises(ValueError, match="`dynatemp_high` must be set when `dynatemp_low` is set"):
        core.generate(model, PROMPT, max_new_tokens=2, dynatemp_low=0.5)
    with pytest.raises(ValueError, match=re.escape("`top_h` must be in (0, 1]; got 1.5")):
        core.generate(model, PROMPT, max_new_tokens=2, do_sample=True, top_h=1.5)
    with pytest.raises(ValueError, match="`exponential_decay_length_penalty` must be a pair"):
        core.generate(model, PROMPT, max_new_tokens=2, exponential_decay_length_penalty=(2,))
    with pytest.raises(ValueError, match="`sequence_bias` must be a non-empty list of"):
        core.generate(model, PROMPT, max_new_tokens=2, sequence_bias=[[[999], 1.0]])
    with pytest.raises(ValueError, match=re.escape('`watermarking_config["greenlist_ratio"]` must be in (0, 1)')):
        core.generate(model, PROMPT, max_new_tokens=2, watermarking_config={"greenlist_ratio": 1.5})


# --- the funnel in the records -------------------------------------------------------------------------------------
def test_each_stage_records_survivors_model_mass_and_the_chosen_probability(model):
    rec = core.ListRecorder()
    core.generate(model, PROMPT, max_new_tokens=3, do_sample=True, top_k=5, top_p=0.8, temperature=0.7,
                  recorder=rec, generator=new_generator(0))
    for step in rec.steps:
        rs = step.rows[0]
        logits = {c.token_id: c for c in rs.candidates}
        top_k, top_p = rs.effects[1], rs.effects[2]
        assert [e.stage for e in rs.effects] == ["temperature", "top_k", "top_p"]
        assert rs.effects[0].kept == 64 and rs.effects[0].mass == pytest.approx(1.0)
        assert top_k.kept == 5
        five = sorted((c for c in rs.candidates), key=lambda c: -c.prob)[:5]
        assert top_k.mass == pytest.approx(sum(c.prob for c in five), rel=1e-5)
        assert 1 <= top_p.kept <= 5 and top_p.mass <= top_k.mass
        chosen = logits[rs.chosen[0]]
        assert top_p.chosen_prob == pytest.approx(chosen.prob_after, rel=1e-5)  # the last stage is what was sampled
        probs = [c.prob_after for c in rs.candidates if c.prob_after > 0]
        assert rs.entropy == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-4)


def test_traces_with_the_funnel_round_trip_through_json(model):
    rec = core.ListRecorder()
    core.generate(model, PROMPT, max_new_tokens=2, do_sample=True, top_k=5, recorder=rec, generator=new_generator(0))
    again = core.Trace.from_json(rec.trace.to_json())
    assert again.steps == rec.trace.steps
    old = json.loads(rec.trace.to_json())  # a trace saved before the funnel existed still loads
    for step in old["steps"]:
        for row in step["rows"]:
            row.pop("entropy")
            for effect in row["effects"]:
                for key in ("stage", "kept", "mass", "chosen_prob"):
                    effect.pop(key)
    assert core.Trace.from_dict(old).steps[0].rows[0].effects[0].kept == 0


# --- watermarking ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["lefthash", "selfhash"])
def test_watermark_detection_marks_green_tokens_and_scores_a_watermarked_text_high(model, scheme):
    wm = {"bias": 5.0, "greenlist_ratio": 0.25, "seeding_scheme": scheme}
    marked = core.generate(model, PROMPT, max_new_tokens=30, do_sample=True, watermarking_config=wm,
                           generator=new_generator(0)).sequences[0, PROMPT.shape[1]:].tolist()
    plain = core.generate(model, PROMPT, max_new_tokens=30, do_sample=True,
                          generator=new_generator(0)).sequences[0, PROMPT.shape[1]:].tolist()
    report = detect(model.config, PROMPT[0].tolist(), marked, wm)
    baseline = detect(model.config, PROMPT[0].tolist(), plain, wm)
    assert len(report.green) == len(marked)
    assert sum(report.green) / len(marked) > 0.7 and report.z_score > 4
    assert baseline.z_score < report.z_score
    # the per-token marks and the detector count the same tokens (those after the first context_width)
    width = 0 if scheme == "selfhash" else 1
    green_scored = sum(report.green[width:]) if scheme == "lefthash" else sum(report.green)
    assert report.z_score == pytest.approx((green_scored - 0.25 * report.scored)
                                           / math.sqrt(report.scored * 0.25 * 0.75))


# --- saved and loaded ------------------------------------------------------------------------------------------------
def test_new_fields_round_trip_through_save_pretrained_and_run_the_same(model, tmp_path):
    fields = dict(do_sample=True, top_k=20, max_new_tokens=STEPS, top_h=0.9, dry_multiplier=0.8, dry_base=2.0,
                  dry_allowed_length=3, dry_sequence_breakers=[], xtc_probability=0.5, xtc_threshold=0.05,
                  top_n_sigma=2.0, dynatemp_low=0.5, dynatemp_high=1.5, dynatemp_exponent=1.2, presence_penalty=0.2,
                  frequency_penalty=0.1, sampler_order=["top_k", "temperature"], sequence_bias=[[[40], 1.0]],
                  bad_words_ids=[[60]], suppress_tokens=[7], exponential_decay_length_penalty=[3, 1.2],
                  min_new_tokens=2, renormalize_logits=True, watermarking_config={"bias": 2.0, "greenlist_ratio": 0.3})
    GenerationConfig(**fields).save_pretrained(tmp_path)
    loaded = GenerationConfig.from_pretrained(tmp_path)
    for key, value in fields.items():
        got = getattr(loaded, key)
        got = got.to_dict() if hasattr(got, "to_dict") else got
        assert got == value or (isinstance(value, dict) and value.items() <= got.items()), key
    a = core.generate(model, PROMPT, generation_config=loaded, generator=new_generator(1))
    b = core.generate(model, PROMPT, generator=new_generator(1), **fields)
    assert a.sequences.tolist() == b.sequences.tolist()


# --- structured output on the embedded model -------------------------------------------------------------------------
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "pets": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def chat_prompt(embedded):
    enc = embedded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe a person as JSON: name, age and pets."}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def new_text(embedded, ids, out) -> str:
    return embedded.tokenizer.decode(out.sequences[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(do_sample=False), dict(do_sample=True, temperature=1.2),
                                    dict(num_beams=3), dict(num_beams=3, do_sample=True)],
                         ids=["greedy", "sampling", "beam", "beam_sample"])
def test_json_schema_output_parses_and_satisfies_the_schema(embedded, chat_prompt, kwargs):
    jsonschema = pytest.importorskip("jsonschema")
    rec = core.ListRecorder()
    out = core.generate(embedded.model, chat_prompt, max_new_tokens=60, json_schema=json.dumps(SCHEMA),
                        tokenizer=embedded.tokenizer, recorder=rec, generator=new_generator(3), **kwargs)
    text = new_text(embedded, chat_prompt, out)
    jsonschema.validate(json.loads(text), SCHEMA)
    assert ": " not in text and ", " not in text  # compact JSON by default
    grammar = [e for s in rec.steps for r in s.rows for e in r.effects if e.stage == "grammar"]
    assert grammar and all(e.kept >= 1 for e in grammar)
    assert any(e.mass < 0.5 for e in grammar)  # it removed probability somewhere (the model's first token is not "{")


@pytest.mark.slow
def test_regex_and_ebnf_outputs_match(embedded, chat_prompt):
    out = core.generate(embedded.model, chat_prompt, max_new_tokens=20, regex=r"\(\d{3}\) \d{3}-\d{4}",
                        tokenizer=embedded.tokenizer, do_sample=True, generator=new_generator(0))
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", new_text(embedded, chat_prompt, out))
    ebnf = 'root ::= "The answer is " ("yes" | "no") "."'
    for kwargs in (dict(do_sample=False), dict(num_beams=2)):
        out = core.generate(embedded.model, chat_prompt, max_new_tokens=20, grammar=ebnf, tokenizer=embedded.tokenizer,
                            **kwargs)
        assert new_text(embedded, chat_prompt, out) in ("The answer is yes.", "The answer is no.")


def grammar_rows(model, **kwargs):
    """The first step's candidates table and recorded row of a tiny-model run under ``regex="[ab]+"`` (the character
    tokenizer's "a" and "b")."""
    from playground.figures.tokens import alternatives_table

    rec = core.ListRecorder(top_n=3)
    core.generate(model, PROMPT, max_new_tokens=2, regex="[ab]+", tokenizer=char_tokenizer(), recorder=rec, **kwargs)
    return alternatives_table(rec.steps, 0), rec.steps[0].rows[0]


def test_the_grammars_cut_shows_in_the_candidates_with_the_probability_before(model):
    table, row = grammar_rows(model)
    top, *_ = table  # most probable under the model first
    forbidden = max((c for c in row.candidates if c.token_id not in (4, 5)), key=lambda c: c.prob)
    assert top[1] == forbidden.token_id and top[2] == round(forbidden.prob, 4) > 0
    assert top[3] == 0.0 and top[4] == "grammar"
    assert {r[1] for r in table if r[4] != "grammar"} <= {4, 5}  # only the grammar's tokens survive it


def test_the_grammars_cut_names_the_top_of_what_the_grammar_received_not_only_the_models_top(model):
    """A bias before the grammar lifts token 40 above the model's own top_n: the grammar removed it, so it shows."""
    table, row = grammar_rows(model, sequence_bias=[[[40], 30.0]], sampler_order=["sequence_bias", "grammar"])
    model_top = sorted(row.candidates, key=lambda c: -c.logit)[:3]
    assert 40 not in [c.token_id for c in model_top]
    (lifted,) = [r for r in table if r[1] == 40]
    assert lifted[3] == 0.0 and lifted[4] == "grammar"


def test_grammar_fields_are_validated_with_their_names(embedded):
    ids = torch.tensor([[1, 2, 3]])
    cases = [(dict(json_schema="{not json"), "`json_schema` must be a JSON Schema"),
             (dict(regex="(unclosed"), "`regex` must be a regular expression xgrammar can compile"),
             (dict(grammar="root ::= "), "`grammar` must be an EBNF grammar xgrammar can compile"),
             (dict(regex="a", json_schema={"type": "string"}), "must be unset when .* is set")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            core.generate(embedded.model, ids, max_new_tokens=2, tokenizer=embedded.tokenizer, **kwargs)
    with pytest.raises(ValueError, match="`regex` needs `tokenizer=`"):
        core.generate(embedded.model, ids, max_new_tokens=2, regex="a")


@pytest.mark.parametrize("kwargs", [dict(encoder_repetition_penalty=1.5), dict(encoder_no_repeat_ngram_size=2)],
                         ids=["encoder_repetition_penalty", "encoder_no_repeat_ngram_size"])
def test_encoder_fields_give_transformers_tokens_on_an_encoder_decoder_model(kwargs):
    """The Advanced fields for encoder-decoder models (a tiny BART), greedy and seeded sampling."""
    from test_beam import tiny_bart

    bart = tiny_bart(0)
    ids = torch.tensor([[5, 9, 13, 17, 21, 25, 9, 13]])
    for sample in (False, True):
        torch.manual_seed(3)
        ref = bart.generate(ids, max_new_tokens=8, do_sample=sample, top_k=0, **kwargs)
        ours = core.generate(bart, ids, max_new_tokens=8, do_sample=sample, top_k=0, generator=new_generator(3),
                             **kwargs).sequences
        assert ours.tolist() == ref.tolist()
