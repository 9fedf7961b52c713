"""Validation at the boundary: every inconsistent or out-of-range setting raises a ``ValueError``
that names the field, the allowed range and the value given, e.g.
"`penalty_alpha` must be in [0, 1]; got 1.5".

Order of the checks:
1. ``check_prompt`` and ``check_assistant`` look at the raw call (the prompt, the assistant and its tokenizer);
2. ``check_request`` merges the user's settings with the model's defaults as transformers will
   (``merged_config``) and runs ``validate`` on the result *before* ``model.generate`` is called, because
   transformers rejects some values earlier than our dispatch with messages that do not say the range
   (``GenerationConfig.validate``, the logits processors' constructors, the cache constructors);
3. ``validate`` runs again in the dispatch on the final config transformers hands over.

``validate`` is two tables: ``RANGES`` (a field alone: its allowed values) and ``core.rules.RULES`` (fields that
depend on each other, on the mode or on the model), each rule a small function registered with ``@rule``: a
strategy's own rules in its module (contrastive search, DoLa, constrained beam search), the others below.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS
from transformers.utils import is_hqq_available, is_optimum_quanto_available

from . import chain, grammar, kernels
from . import processors as community
from .processors.base import Range, between, fail, is_int, is_real
from .rules import RULES, Env, check, rule
from .strategies import family_of  # imports every strategy, which registers its own rules first


# --- 1. the raw call --------------------------------------------------------------------------------------------
def check_prompt(input_ids, kwargs) -> None:
    """The prompt must hold at least one token (encoder-decoder models may start from ``inputs_embeds``)."""
    if input_ids is None and "inputs_embeds" not in kwargs:
        raise ValueError("`input_ids` must hold at least one token; got None (an empty prompt)")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be 2-D [batch, sequence]; got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(f"`input_ids` must hold at least one token; got shape {tuple(input_ids.shape)} "
                             "(an empty prompt)")


def check_ids(model, input_ids) -> None:
    """Every prompt id names a row of the model's embeddings: an id past them is an ``IndexError`` on the CPU and a
    device-side assert on a GPU, which breaks CUDA for every other run in the process."""
    if input_ids is None or input_ids.numel() == 0:
        return
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    rows = max(model.config.get_text_config().vocab_size or 0, getattr(embeddings, "num_embeddings", 0) or 0)
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or (rows and high >= rows):
        bad = low if low < 0 else high
        raise ValueError(f"`input_ids` must hold token ids in [0, {rows - 1}] (the model's vocabulary); got {bad}")


def check_assistant(model, assistant_model, tokenizer, assistant_tokenizer) -> None:
    """An assistant with another vocabulary needs both tokenizers (universal assisted decoding)."""
    if assistant_model is None:
        if assistant_tokenizer is not None:
            raise ValueError("`assistant_tokenizer` needs `assistant_model`; got an assistant tokenizer but no "
                             "assistant model")
        return
    same_vocab = model.config.get_text_config().vocab_size == assistant_model.config.get_text_config().vocab_size
    if not same_vocab and (tokenizer is None or assistant_tokenizer is None):
        raise ValueError(
            "`assistant_tokenizer` and `tokenizer` must both be given when the assistant has another vocabulary "
            f"(main {model.config.get_text_config().vocab_size} tokens, assistant "
            f"{assistant_model.config.get_text_config().vocab_size}); got "
            f"tokenizer={'set' if tokenizer is not None else None}, "
            f"assistant_tokenizer={'set' if assistant_tokenizer is not None else None}"
        )


# --- 2. the merged settings, before transformers sees them ------------------------------------------------------
def merged_config(model, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """The config ``model.generate`` will run with, by the precedence of
    ``GenerationMixin._prepare_generation_config`` (the user's values > the model's > global defaults), but built
    without ``GenerationConfig.validate`` so that ``validate`` below sees, and names, the raw values."""
    cfg = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    for defaults in (model.generation_config.to_dict(), cfg._get_default_generation_params()):
        for key, value in defaults.items():
            if getattr(cfg, key, None) is None:
                setattr(cfg, key, value)
    for key, value in kwargs.items():
        if hasattr(cfg, key) or key in chain.FIELDS:
            setattr(cfg, key, value)
    if cfg.cache_implementation == "hybrid":  # transformers drops this legacy Hub default too
        cfg.cache_implementation = None
    return cfg


def check_request(model, generation_config, kwargs, assistant_model=None) -> None:
    """Validate the settings of one ``core.generate`` call before ``model.generate`` runs."""
    cfg = merged_config(model, generation_config, kwargs)
    validate(cfg, getattr(cfg.get_generation_mode(assistant_model), "value", ""), model)


# --- 3. the tables (``Range`` and its value tests are ``core.processors.base``'s) ------------------------------
# One field alone. Processors' constructors want floats where marked "a float": transformers rejects ints there.
RANGES: dict[str, Range] = {
    "max_new_tokens": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "max_length": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "min_new_tokens": Range("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "min_length": Range("an integer >= 0", lambda v: is_int(v) and v >= 0),
    "max_time": Range("a number of seconds > 0", lambda v: is_real(v) and v > 0),
    "num_beams": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "num_beam_groups": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "num_return_sequences": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "diversity_penalty": Range("in [0, inf)", lambda v: is_real(v) and v >= 0),
    "length_penalty": Range("a finite number", is_real),
    "penalty_alpha": Range("in [0, 1]", between(0, 1)),
    "top_k": Range("an integer >= 0 (0 disables it)", lambda v: is_int(v) and v >= 0),
    "top_p": Range("in (0, 1]", between(0, 1, lo_open=True)),
    "min_p": Range("in [0, 1]", between(0, 1)),
    "typical_p": Range("in (0, 1]", between(0, 1, lo_open=True)),
    "epsilon_cutoff": Range("in [0, 1)", between(0, 1, hi_open=True)),
    "eta_cutoff": Range("in [0, 1)", between(0, 1, hi_open=True)),
    "repetition_penalty": Range("a float > 0 (1.0 means no penalty)",
                                lambda v: (isinstance(v, float) or v == 1) and is_real(v) and v > 0),
    "encoder_repetition_penalty": Range("a float > 0 (1.0 means no penalty)",
                                        lambda v: (isinstance(v, float) or v == 1) and is_real(v) and v > 0),
    "no_repeat_ngram_size": Range("an integer >= 0 (0 disables it)", lambda v: is_int(v) and v >= 0),
    "prompt_lookup_num_tokens": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "max_matching_ngram_size": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "num_assistant_tokens": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "num_assistant_tokens_schedule": Range('"constant", "heuristic" or "heuristic_transient"',
                                           lambda v: v in ("constant", "heuristic", "heuristic_transient")),
    "assistant_confidence_threshold": Range("in [0, 1]", between(0, 1)),
    "top_h": Range("in (0, 1]", between(0, 1, lo_open=True)),
    "guidance_scale": Range("a finite number (1 = off; > 1 follows the prompt more, < 1 the negative prompt)", is_real),
    "exponential_decay_length_penalty": Range(
        "a pair [start_index, decay_factor]: an integer >= 0 and a number > 0",
        lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and is_int(v[0]) and v[0] >= 0 and is_real(v[1])
        and v[1] > 0),
    "renormalize_logits": Range("True or False", lambda v: isinstance(v, bool)),
    "remove_invalid_values": Range("True or False", lambda v: isinstance(v, bool)),
    "token_healing": Range("True or False", lambda v: isinstance(v, bool)),
    "cache_implementation": Range(
        "one of " + ", ".join(f'"{c}"' for c in ("dynamic", "static", "quantized", "offloaded", "offloaded_static")),
        lambda v: v in ALL_CACHE_IMPLEMENTATIONS),
}


RANGES.update(community.RANGES)  # the community samplers' fields (``core.processors``)


def validate(cfg, mode: str, model) -> None:
    """Raise a ``ValueError`` naming the first field of ``cfg`` that is out of range for ``mode``."""
    for field, rng in RANGES.items():
        value = getattr(cfg, field, None)
        if value is not None and not rng.test(value):
            fail(field, rng.allowed, value)
    env = Env(cfg, mode, model)
    for each in RULES:
        each(env)


@rule
def _temperature(env: Env) -> None:
    cfg = env.cfg
    if cfg.do_sample and cfg.temperature is not None:
        check((isinstance(cfg.temperature, float) or cfg.temperature == 1) and is_real(cfg.temperature)
              and cfg.temperature > 0, "temperature", "a float > 0 when sampling (do_sample=True)", cfg.temperature)


@rule
def _return_sequences(env: Env) -> None:
    cfg = env.cfg
    if family_of(env.mode) == "beam":
        check(cfg.num_return_sequences <= cfg.num_beams, "num_return_sequences",
              f"<= num_beams ({cfg.num_beams}) for beam search", cfg.num_return_sequences)
    elif env.mode == "assisted_generation":
        check(cfg.num_return_sequences == 1, "num_return_sequences", "1 for assisted decoding",
              cfg.num_return_sequences)
    elif not cfg.do_sample:
        check(cfg.num_return_sequences == 1, "num_return_sequences",
              "1 without sampling or beams (greedy decoding gives one sequence per prompt)", cfg.num_return_sequences)


@rule
def _beam_groups(env: Env) -> None:
    cfg = env.cfg
    groups = cfg.num_beam_groups or 1
    if groups > 1:
        check(groups <= cfg.num_beams, "num_beam_groups", f"<= num_beams ({cfg.num_beams})", groups)
        check(cfg.num_beams % groups == 0, "num_beam_groups",
              f"a divisor of num_beams ({cfg.num_beams}) so every group has the same number of beams", groups)
        check(not cfg.do_sample, "do_sample", "False for diverse (group) beam search", cfg.do_sample)
        # as transformers 4.55.4 refused it: without a penalty every group decodes the same beams
        check(cfg.diversity_penalty is not None and cfg.diversity_penalty > 0, "diversity_penalty",
              "> 0 when num_beam_groups > 1 (otherwise the groups are identical)", cfg.diversity_penalty)


def _token_ids(value) -> list:
    """Flat list of the ids in an int, a list of ints or a list of lists of ints."""
    if is_int(value):
        return [value]
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist()
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in _token_ids(v)]
    return [value]


@rule
def _token_fields(env: Env) -> None:
    vocab = env.vocab_size
    allowed = f"token ids in [0, {vocab - 1}] (the model's vocabulary)"
    for field in ("eos_token_id", "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens",
                  "begin_suppress_tokens"):
        value = getattr(env.cfg, field, None)
        if value is not None:
            check(all(is_int(i) and 0 <= i < vocab for i in _token_ids(value)), field, allowed, value)
    bad = env.cfg.bad_words_ids
    if bad is not None:
        check(isinstance(bad, list) and len(bad) > 0
              and all(isinstance(w, list) and len(w) > 0 for w in bad)
              and all(is_int(i) and 0 <= i < vocab for i in _token_ids(bad)),
              "bad_words_ids", f"a non-empty list of non-empty lists of {allowed}", bad)


def _is_bias_pair(pair, vocab: int) -> bool:
    """``[token ids in the vocabulary, a finite bias]``."""
    return (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], (list, tuple))
            and len(pair[0]) > 0 and all(is_int(i) and 0 <= i < vocab for i in pair[0]) and is_real(pair[1]))


@rule
def _sequence_bias(env: Env) -> None:
    pairs = env.cfg.sequence_bias
    if isinstance(pairs, dict):  # transformers 4.x's form: {(ids...): bias}
        pairs = list(pairs.items())
    if pairs is not None:
        vocab = env.vocab_size
        check(isinstance(pairs, (list, tuple)) and len(pairs) > 0 and all(_is_bias_pair(p, vocab) for p in pairs),
              "sequence_bias", f"a non-empty list of [token ids in [0, {vocab - 1}], bias] pairs, e.g. "
              "[[[5, 9], -2.0]]", env.cfg.sequence_bias)


# ``watermarking_config``'s keys (transformers' WatermarkingConfig), each alone
WATERMARK_RANGES: dict[str, Range] = {
    "greenlist_ratio": Range("in (0, 1)", between(0, 1, lo_open=True, hi_open=True)),
    "bias": Range("a number >= 0", lambda v: is_real(v) and v >= 0),
    "context_width": Range("an integer >= 1", lambda v: is_int(v) and v >= 1),
    "seeding_scheme": Range('"lefthash" or "selfhash"', lambda v: v in ("lefthash", "selfhash")),
    "hashing_key": Range("an integer", is_int),
}


@rule
def _watermarking(env: Env) -> None:
    wm = env.cfg.watermarking_config
    given = {} if wm is None else wm if isinstance(wm, dict) else wm.to_dict()
    for key in WATERMARK_RANGES.keys() & given.keys():
        rng = WATERMARK_RANGES[key]
        check(rng.test(given[key]), f'watermarking_config["{key}"]', rng.allowed, given[key])


@rule
def _community(env: Env) -> None:
    """The community samplers' dependent fields, the grammar fields, ``sampler_order`` and the stages that need
    one token per row per step."""
    community.validate(env.cfg)
    grammar.validate(env.cfg)
    chain.check_order(getattr(env.cfg, "sampler_order", None))
    if env.mode:
        chain.check_modes(env.cfg, env.mode)


@rule
def _offloaded_cache(env: Env) -> None:
    impl = env.cfg.cache_implementation
    if impl is not None and "offloaded" in impl and not torch.cuda.is_available():
        fail("cache_implementation", '"dynamic", "static" or "quantized" on this machine: an offloaded cache moves '
              "layers between GPU and CPU memory and needs CUDA, which is not available here", impl)


# Quantized KV cache backends (transformers ``QuantizedCache``): what each needs installed and which ``nbits`` it takes.
@dataclass(frozen=True)
class QuantBackend:
    available: Callable[[], bool]
    package: str
    nbits: tuple[int, ...] | None  # None: per-tensor (fp8), which takes none of the group-wise options
    axes: tuple[int, ...] = (0,)


QUANT_BACKENDS: dict[str, QuantBackend] = {
    "quanto": QuantBackend(lambda: is_optimum_quanto_available(), "optimum-quanto", (2, 4), (0, -1)),
    "hqq": QuantBackend(lambda: is_hqq_available(), "hqq", (1, 2, 3, 4, 8), (0, 1)),
    "fp8": QuantBackend(lambda: True, "torch", None),
}
GROUP_WISE_OPTIONS = ("nbits", "axis_key", "axis_value", "q_group_size", "residual_length")


@rule
def _quantized_cache(env: Env) -> None:
    if env.cfg.cache_implementation != "quantized":
        return
    check(not env.model.config.is_encoder_decoder, "cache_implementation",
          '"dynamic" or "static" for encoder-decoder models (transformers has no quantized cross-attention cache)',
          "quantized")
    options = dict(env.cfg.cache_config or {})
    backend = options.get("backend", "quanto")  # transformers' default
    if backend not in QUANT_BACKENDS:
        lower = backend.lower() if isinstance(backend, str) else None
        hint = f" (lower case: {lower!r})" if lower in QUANT_BACKENDS else ""
        fail('cache_config["backend"]', 'one of "quanto", "hqq", "fp8"' + hint, backend)
    spec = QUANT_BACKENDS[backend]
    others = [name for name, b in QUANT_BACKENDS.items() if name != backend and b.available()]
    check(spec.available(), 'cache_config["backend"]',
          f"a backend whose package is installed ({backend!r} needs `pip install {spec.package}`; "
          f"installed here: {', '.join(repr(o) for o in others)})", backend)
    unknown = set(options) - {"backend", *GROUP_WISE_OPTIONS}
    check(not unknown, "cache_config", f"a dict with keys among backend, {', '.join(GROUP_WISE_OPTIONS)}",
          sorted(unknown))
    if spec.nbits is None:
        given = [k for k in GROUP_WISE_OPTIONS if options.get(k) is not None]
        check(not given, "cache_config", f"free of {', '.join(GROUP_WISE_OPTIONS)} for the {backend!r} backend "
              "(it quantizes per tensor; use \"quanto\" or \"hqq\" to quantize group-wise)", given)
        return
    nbits = options.get("nbits", 4)
    check(nbits in spec.nbits, 'cache_config["nbits"]', f"one of {list(spec.nbits)} for the {backend!r} backend", nbits)
    for axis_field in ("axis_key", "axis_value"):
        axis = options.get(axis_field, 0)
        check(axis in spec.axes, f'cache_config["{axis_field}"]',
              f"one of {list(spec.axes)} for the {backend!r} backend", axis)
    residual = options.get("residual_length", 128)
    check(is_int(residual) and residual >= 0, 'cache_config["residual_length"]', "an integer >= 0", residual)
    group = options.get("q_group_size", 64)
    text = env.text_config
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    width = kv_heads * head_dim
    # With axis 0 the backends group the values of one row's [heads, seq, head_dim] block: a divisor of
    # heads * head_dim divides that block for every sequence length.
    if options.get("axis_key", 0) == 0 and options.get("axis_value", 0) == 0:
        check(is_int(group) and group >= 1 and width % group == 0, 'cache_config["q_group_size"]',
              f"a divisor of num_key_value_heads * head_dim ({kv_heads} * {head_dim} = {width}) for this model", group)
    else:
        check(is_int(group) and group >= 1, 'cache_config["q_group_size"]', "an integer >= 1", group)
    if backend == "quanto":  # its compiled kernels: ready, or a clear message at once (never a wait on a lock)
        kernels.require("quanto")
