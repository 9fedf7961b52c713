"""The "Advanced" settings, declared once: every decoding field of transformers 5.24's ``GenerationConfig`` that the
tabs' own controls leave out, the community samplers (``core.processors``), structured output (``core.grammar``) and
``sampler_order`` (``core.chain``). Each ``Field`` names its widget kind, range and one line of help; a tab lists the
groups that apply to it (``StrategyTab.advanced``) and ``playground.tabs.advanced`` builds them. No Gradio here:
``playground.field_codecs`` reads the same list for the widget <-> config codecs, and it and ``playground.share`` read
``INT_FIELDS`` / ``FLOAT_FIELDS`` (``as_number_type``).

Widget kinds: ``slider`` (``lo``, ``hi``, ``step``; 0 means "off" where ``off`` is 0), ``number`` (a number typed as
text; empty: unset), ``checkbox``, ``json`` (JSON text, empty: unset), ``text`` (a string, empty: unset), ``lines`` (a
longer string), ``names`` (comma-separated names, a list in the config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.chain import LLAMA_CPP_ORDER, STAGE_NAMES


@dataclass(frozen=True)
class Field:
    name: str  # the GenerationConfig field (or core field) it sets
    kind: str
    default: Any = None  # the widget's value when nothing is loaded
    info: str = ""
    lo: float = 0.0
    hi: float = 1.0
    step: float = 0.01
    off: Any = None  # the widget value that means "unset" (sliders: usually 0)
    integer: bool = False


@dataclass(frozen=True)
class Group:
    title: str
    fields: tuple[Field, ...]


DEFAULT_BREAKERS = '["\\n", ":", "\\"", "*"]'

GROUPS: dict[str, Group] = {
    "penalties": Group("Penalties and banned words", (
        Field("repetition_penalty", "slider", 1.0, "1.0 = off; > 1 discourages tokens already in the text", 0.5, 2.0,
              0.05),
        Field("no_repeat_ngram_size", "slider", 0, "0 = off; no n-gram of this size twice", 0, 6, 1, off=0,
              integer=True),
        Field("presence_penalty", "slider", 0.0, "[-2, 2], OpenAI's: subtracted once from every generated token",
              -2.0, 2.0, 0.05, off=0),
        Field("frequency_penalty", "slider", 0.0, "[-2, 2], OpenAI's: subtracted per occurrence in the generated text",
              -2.0, 2.0, 0.05, off=0),
        Field("dry_multiplier", "slider", 0.0, "DRY: 0 = off; try 0.8. Penalises tokens that extend a repetition",
              0.0, 3.0, 0.05, off=0),
        Field("dry_base", "slider", 1.75, "DRY: > 1; the penalty grows as base ** (length - allowed length)", 1.01, 4.0,
              0.01),
        Field("dry_allowed_length", "slider", 2, "DRY: integer >= 1; repeats this long are free", 1, 10, 1,
              integer=True),
        Field("dry_sequence_breakers", "json", DEFAULT_BREAKERS, "DRY: JSON list of strings that end a repetition"),
        Field("sequence_bias", "json", "", 'JSON [[word or token ids, bias], ...], e.g. [[" sorry", -5.0]]'),
        Field("bad_words_ids", "json", "", 'JSON list of words or token-id lists never generated, e.g. [" sorry"]'),
        Field("suppress_tokens", "json", "", "JSON list of token ids never generated"),
        Field("begin_suppress_tokens", "json", "", "JSON list of token ids not generated as the first token"),
        Field("min_new_tokens", "slider", 0, "0 = off; EOS is banned before this many new tokens", 0, 64, 1, off=0,
              integer=True),
        Field("exponential_decay_length_penalty", "json", "",
              "JSON [start_index, decay_factor], e.g. [16, 1.2]: EOS grows likelier after start_index"),
        Field("renormalize_logits", "checkbox", False, "log-softmax after every processor"),
        Field("remove_invalid_values", "checkbox", False, "replace nan / inf scores so nothing crashes"),
        Field("token_healing", "checkbox", False,
              "re-tokenize the prompt's last token (untick the chat template: healing strips it)"),
    )),
    "guidance": Group("Guidance and watermark", (
        Field("guidance_scale", "slider", 1.0, "classifier-free guidance: 1 = off; > 1 follows the prompt more", 0.0,
              5.0, 0.1),
        Field("negative_prompt", "lines", "", "the unconditional branch of guidance (plain text; empty: the prompt's "
              "last token)"),
        Field("watermarking_config", "json", "",
              'JSON, e.g. {"greenlist_ratio": 0.25, "bias": 2.0, "seeding_scheme": "lefthash"}'),
    )),
    "samplers": Group("Samplers (truncation and temperature)", (
        Field("top_h", "slider", 0.0, "(0, 1]; 0 = off; entropy-bounded truncation (Top-H)", 0.0, 1.0, 0.01, off=0),
        Field("top_n_sigma", "slider", 0.0, "> 0; 0 = off; keep logits within n σ of the largest", 0.0, 5.0, 0.05,
              off=0),
        Field("xtc_probability", "slider", 0.0, "XTC: [0, 1]; 0 = off; how often the top choices are excluded", 0.0,
              1.0, 0.05, off=0),
        Field("xtc_threshold", "slider", 0.1, "XTC: [0, 0.5]; tokens at least this likely are top choices", 0.0, 0.5,
              0.01),
        Field("dynatemp_low", "number", None, "dynamic temperature: lower bound (empty: off; set both)"),
        Field("dynatemp_high", "number", None, "dynamic temperature: upper bound (empty: off)"),
        Field("dynatemp_exponent", "slider", 1.0, "dynamic temperature: > 0; shapes entropy -> temperature", 0.1,
              4.0, 0.1),
        Field("mirostat_tau", "slider", 0.0, "mirostat v2: target surprise in bits; 0 = off; try 5", 0.0, 10.0, 0.1,
              off=0),
        Field("mirostat_eta", "slider", 0.1, "mirostat v2: learning rate > 0", 0.01, 1.0, 0.01),
        Field("smoothing_factor", "slider", 0.0, "quadratic sampling: >= 0; 0 = off; try 0.3. Logits fall with the "
              "square of their gap to the top (after a run, the Smoothing factor curve draws it)", 0.0, 5.0, 0.01,
              off=0),
        Field("smoothing_curve", "slider", 1.0, "quadratic sampling: >= 1; 1 = plain quadratic, higher cuts the tail "
              "harder", 1.0, 10.0, 0.1),
        Field("tfs", "slider", 1.0, "tail-free sampling z: [0, 1]; 1 = off; try 0.95. Lower cuts the sorted tail "
              "sooner", 0.0, 1.0, 0.01),
        Field("top_a", "slider", 0.0, "top-a: [0, 1]; 0 = off; try 0.2. Drops tokens with p < top_a * p_max²", 0.0,
              1.0, 0.01, off=0),
        Field("adaptive_target", "number", None, "adaptive-P: [0, 1], the probability chosen tokens should average "
              "(empty: off; try 0.5). Chooses last; not with mirostat"),
        Field("adaptive_decay", "slider", 0.9, "adaptive-P: [0, 0.99]; how slowly the running average forgets", 0.0,
              0.99, 0.01),
    )),
    "order": Group("Sampler chain order", (
        Field("sampler_order", "names", "", "comma-separated stage names, reordered among their places; empty: "
              "transformers' order. llama.cpp's: " + ", ".join(LLAMA_CPP_ORDER) + ". Known: "
              + ", ".join(STAGE_NAMES)),
    )),
    "structured": Group("Structured output (xgrammar)", (
        Field("json_schema", "json", "", 'a JSON Schema; output is compact JSON, e.g. {"type": "object", '
              '"properties": {"name": {"type": "string"}}, "required": ["name"]}'),
        Field("regex", "text", "", r"the whole output matches it, e.g. \d{3}-\d{4}"),
        Field("grammar", "lines", "", 'EBNF (xgrammar / GBNF), e.g. root ::= "yes" | "no"'),
    )),
    "limits": Group("Lengths, forced tokens and encoder-decoder models", (
        Field("min_length", "slider", 0, "0 = off; EOS is banned before the whole sequence (prompt included) is this "
              "long", 0, 512, 1, off=0, integer=True),
        Field("max_time", "number", "", "seconds; empty: unset. generate stops after this long (the server also "
              "stops every run at its own limit)"),
        Field("forced_eos_token_id", "number", "", "token id; empty: unset. Forced as the last token when max_length "
              "is reached", integer=True),
        Field("forced_bos_token_id", "number", "", "token id; empty: unset. Encoder-decoder models: forced as the "
              "first generated token", integer=True),
        Field("encoder_repetition_penalty", "slider", 1.0, "encoder-decoder models: 1.0 = off; > 1 favours tokens "
              "of the input", 0.5, 2.0, 0.05),
        Field("encoder_no_repeat_ngram_size", "slider", 0, "encoder-decoder models: 0 = off; no n-gram of the input "
              "is repeated", 0, 6, 1, off=0, integer=True),
    )),
    "constraints": Group("Forced words (constrained beam search)", (
        Field("force_words_ids", "json", "", 'JSON list: every word must appear; a nested list is one of its words, '
              'e.g. [" paint", [" red", " blue"]]'),
    )),
}
BY_NAME: dict[str, Field] = {f.name: f for g in GROUPS.values() for f in g.fields}
SAMPLING_GROUPS = ("penalties", "guidance", "samplers", "order", "structured", "limits")
GREEDY_GROUPS = ("penalties", "guidance", "order", "structured", "limits")
BEAM_GROUPS = ("penalties", "constraints", "order", "structured", "limits")
# the processors run before the ported strategies choose (contrastive's top-k, DoLa's contrast, each group's beams)
PORTED_GROUPS = ("penalties", "order", "limits")
ASSISTED_GROUPS = ("penalties", "limits")


# The one table of which fields are whole numbers and which are floats, read by the widget codecs
# (``playground.handlers``) and by ``playground.share``: a slider may hand back 20.0 for 20, and a slider at 2 the
# int 2, which e.g. TemperatureLogitsWarper rejects ("`temperature` (=2) has to be a strictly positive float").
INT_FIELDS: frozenset[str] = frozenset({
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_beam_groups", "top_k",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "num_return_sequences", "num_assistant_tokens",
    "prompt_lookup_num_tokens", "max_matching_ngram_size", "pad_token_id", "bos_token_id", "eos_token_id",
    "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id", "assistant_lookbehind",
    "target_lookbehind", "max_cache_len", "prefill_chunk_size",
    *(f.name for f in BY_NAME.values() if f.integer),
})
FLOAT_FIELDS: frozenset[str] = frozenset({
    "temperature", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
    "encoder_repetition_penalty", "length_penalty", "diversity_penalty", "penalty_alpha", "guidance_scale",
    "assistant_confidence_threshold", "assistant_ensemble_weight",
    *(f.name for f in BY_NAME.values() if f.kind in ("slider", "number") and not f.integer),
})


def fields_of(groups) -> list[Field]:
    return [f for g in groups for f in GROUPS[g].fields]


def as_number_type(name: str, value: Any) -> Any:
    """``value`` as field ``name`` wants it: an int for an integer field (20.0 -> 20), a float for a float field
    (2 -> 2.0); any other value as it is."""
    if name in INT_FIELDS and isinstance(value, float) and value.is_integer():
        return int(value)
    if name in FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


__all__ = ["Field", "Group", "GROUPS", "BY_NAME", "fields_of", "SAMPLING_GROUPS", "GREEDY_GROUPS", "BEAM_GROUPS",
           "PORTED_GROUPS", "ASSISTED_GROUPS", "INT_FIELDS", "FLOAT_FIELDS", "as_number_type"]
