"""What a run's ``GenerationConfig`` becomes in a vLLM completion request, and what a vLLM server cannot run.

A vLLM server silently ignores fields it does not read (an old ``guided_regex`` answers HTTP 200 and constrains
nothing), so the request is built from a list of the fields it reads, never by passing a config through; and a
config that sets anything else is refused here, by name, before a request is sent. In order:
1. the mode (``GenerationConfig.get_generation_mode``): greedy, sampling and beam search map; the strategies that
   need hidden states or per-step drafts (``NEEDS_MODEL``) raise ``ValueError`` saying so;
2. every field set away from its default must be one vLLM reads (``SAMPLING``, ``WORDS``, ``STRUCTURED``, the beam
   fields) or one the server decides itself (``SERVER_SIDE``: the special token ids, output flags);
3. the request: ``max_tokens`` and the sampling fields, always sent (a server otherwise applies its model's own
   generation_config defaults), ``bad_words`` and ``stop`` as strings, ``structured_outputs`` (the current field).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from transformers import GenerationConfig

from ..chain import FIELDS as CORE_FIELDS

# GenerationConfig field -> vLLM SamplingParams field
SAMPLING = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
            "repetition_penalty": "repetition_penalty", "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty", "min_new_tokens": "min_tokens",
            "num_return_sequences": "n"}
WORDS = {"bad_words_ids": "bad_words", "stop_strings": "stop"}
STRUCTURED = {"json_schema": "json", "regex": "regex", "grammar": "grammar"}  # -> structured_outputs.<key>
BEAM = ("num_beams", "length_penalty", "early_stopping")
CONTROL = ("max_new_tokens", "do_sample")
SERVER_SIDE = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache",
               "return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
               "output_hidden_states", "transformers_version", "_from_model_config")
TAKEN = {*SAMPLING, *WORDS, *STRUCTURED, *BEAM, *CONTROL, *SERVER_SIDE}
# fields at the value that switches them off, as a tab may send them: they ask nothing of the server
NEUTRAL = {"typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "encoder_repetition_penalty": 1.0,
           "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
           "guidance_scale": 1.0, "num_beam_groups": 1, "cache_implementation": "dynamic", "dry_multiplier": 0.0,
           "xtc_probability": 0.0, "token_healing": False}
KV_CACHE = ("the KV cache variants (`cache_implementation`, `cache_config`) run in-process; a vLLM server keeps its "
            "own paged KV cache")
FIELD_NEEDS = {"cache_config": KV_CACHE, "cache_implementation": KV_CACHE}

MODES = ("greedy_search", "sample", "beam_search")
NEEDS_MODEL = {
    "contrastive_search": "contrastive search (`penalty_alpha` > 0) compares hidden states, which a vLLM server "
                          "does not return",
    "dola_generation": "DoLa (`dola_layers`) contrasts the logits of early layers, which a vLLM server does not "
                       "return",
    "assisted_generation": "speculative decoding per token shows each step's drafts, which a vLLM server does not "
                           "return (start the server with its own `--speculative-config` instead)",
    "beam_sample": "beam sampling draws per beam; vLLM's beam search is deterministic",
    "group_beam_search": "diverse beam search (`num_beam_groups` > 1) is not in vLLM",
    "constrained_beam_search": "constrained beam search (`force_words_ids`, `constraints`) is not in vLLM",
}
LENS = "the logit lens reads every layer's hidden state, which a vLLM server does not return"
WATCH = ("watched tokens (`watch`) are read from each step's whole distribution, of which a vLLM server returns only "
         "the top logprobs")


def needs_model(what: str) -> ValueError:
    return ValueError(f"{what}: it needs the in-process model; pick a model that is not served by the vLLM engine")


def merged(generation_config: GenerationConfig | None, kwargs: dict) -> GenerationConfig:
    """``generation_config`` (default: transformers' defaults) with ``kwargs`` over it, the core's own fields
    (``core.chain.FIELDS``) set as attributes, as ``core.requests.prepare`` does. Unknown keyword arguments raise."""
    cfg = GenerationConfig(**(generation_config.to_diff_dict() if generation_config is not None else {}))
    own = {k: kwargs[k] for k in kwargs if k in CORE_FIELDS}
    unused = cfg.update(**{k: v for k, v in kwargs.items() if k not in own})
    if unused:
        raise needs_model(f"`{sorted(unused)[0]}` is not a generation field the vLLM engine takes")
    for key, value in own.items():
        setattr(cfg, key, value)
    return cfg


def set_fields(cfg: GenerationConfig) -> dict[str, Any]:
    """The fields ``cfg`` sets away from their defaults (transformers' and the core's) and from ``NEUTRAL``."""
    diff = dict(cfg.to_diff_dict())
    diff.update({k: getattr(cfg, k) for k, default in CORE_FIELDS.items()
                 if getattr(cfg, k, default) not in (default, None, "")})
    return {k: v for k, v in diff.items() if k not in NEUTRAL or v != NEUTRAL[k]}


def mode_of(cfg: GenerationConfig) -> str:
    """Steps 1-2: the mode vLLM runs for ``cfg``; ``ValueError`` for what it cannot run, naming the field."""
    mode = getattr(cfg.get_generation_mode(), "value", cfg.get_generation_mode())
    if mode in NEEDS_MODEL:
        raise needs_model(NEEDS_MODEL[mode])
    for field in set_fields(cfg):
        if field in FIELD_NEEDS:
            raise needs_model(FIELD_NEEDS[field])
        if field not in TAKEN:
            taken = ", ".join(sorted(TAKEN - set(SERVER_SIDE)))
            raise needs_model(f"`{field}` is not sent to a vLLM server (it takes: {taken})")
    if mode == "beam_search":
        if any(getattr(cfg, f, None) not in (None, "") for f in STRUCTURED):
            raise needs_model("structured output with `num_beams` > 1 is not in vLLM's beam search")
        for field in (*SAMPLING, *WORDS):
            if field in set_fields(cfg) and field != "num_return_sequences":
                raise needs_model(f"`{field}` with `num_beams` > 1: vLLM's beam search takes only `num_beams`, "
                                  "`num_return_sequences`, `length_penalty` and `max_new_tokens`")
    return mode


def check_range(field: str, value, low: float, high: float | None = None, integer: bool = False) -> None:
    """``value`` of ``field`` within [low, high] (``high`` None: no upper bound), and whole when ``integer``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not integer or float(value).is_integer())
    if not ok or value < low or (high is not None and value > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"`{field}` must be {kind} {bound}; got {value!r}")


def value_or(value, default):
    return default if value is None else value


def sampling_request(cfg: GenerationConfig, mode: str, words: Callable[[list[int]], str]) -> dict[str, Any]:
    """Step 3 for greedy and sampling: the request's generation fields. ``words(ids)`` spells a banned token list
    (vLLM bans words, given as strings). Greedy is ``temperature`` 0 with every other sampling field neutral."""
    check_range("max_new_tokens", cfg.max_new_tokens, 1, integer=True)
    out: dict[str, Any] = {"max_tokens": int(cfg.max_new_tokens), "n": int(value_or(cfg.num_return_sequences, 1))}
    if mode == "greedy_search":
        out.update(temperature=0.0, top_p=1.0, top_k=-1, min_p=0.0)
    else:  # transformers' defaults where the config leaves a field unset (None)
        temperature, top_p, min_p = value_or(cfg.temperature, 1.0), value_or(cfg.top_p, 1.0), value_or(cfg.min_p, 0.0)
        check_range("temperature", temperature, 1e-5)
        check_range("top_p", top_p, 1e-9, 1.0)
        check_range("min_p", min_p, 0.0, 1.0)
        if cfg.top_k:
            check_range("top_k", cfg.top_k, 0, integer=True)
        out.update(temperature=float(temperature), top_p=float(top_p), top_k=int(cfg.top_k) if cfg.top_k else -1,
                   min_p=float(min_p))
    repetition = value_or(cfg.repetition_penalty, 1.0)
    check_range("repetition_penalty", repetition, 1e-5)
    out["repetition_penalty"] = float(repetition)
    for field in ("presence_penalty", "frequency_penalty"):
        value = getattr(cfg, field, None)
        if value is not None:
            check_range(field, value, -2.0, 2.0)
            out[field] = float(value)
    if cfg.min_new_tokens:
        check_range("min_new_tokens", cfg.min_new_tokens, 0, integer=True)
        out["min_tokens"] = int(cfg.min_new_tokens)
    if cfg.bad_words_ids:
        out["bad_words"] = [w if isinstance(w, str) else words(list(w)) for w in cfg.bad_words_ids]
    if cfg.stop_strings:
        out["stop"] = [cfg.stop_strings] if isinstance(cfg.stop_strings, str) else list(cfg.stop_strings)
    structured = {STRUCTURED[f]: getattr(cfg, f) for f in STRUCTURED if getattr(cfg, f, None) not in (None, "")}
    if len(structured) > 1:
        raise ValueError(f"`{list(structured)[1]}` must be unset when another grammar field is set; got "
                         f"{', '.join(structured)}")
    if "json" in structured and isinstance(structured["json"], str):
        structured["json"] = json.loads(structured["json"])
    if structured:
        out["structured_outputs"] = structured
    return out


__all__ = ["merged", "mode_of", "sampling_request", "needs_model", "check_range", "MODES", "NEEDS_MODEL", "LENS"]
