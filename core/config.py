"""Validation at the boundary: every inconsistent or out-of-range setting raises a ``ValueError``
that names the field, the allowed range and the value given, e.g.
"`penalty_alpha` must be in [0, 1]; got 1.5".

``validate`` runs on the final ``GenerationConfig`` (the model's defaults merged with the user's
overrides, as transformers merges them), with the generation mode it selects.
"""

from __future__ import annotations

import math

import torch

BEAM_MODES = {"beam_search", "beam_sample", "group_beam_search", "constrained_beam_search"}
SAMPLING_MODES = {"sample", "beam_sample"}


def _fail(field: str, allowed: str, value) -> None:
    raise ValueError(f"`{field}` must be {allowed}; got {value!r}")


def _check(cond: bool, field: str, allowed: str, value) -> None:
    if not cond:
        _fail(field, allowed, value)


def check_prompt(input_ids, kwargs) -> None:
    """The prompt must hold at least one token (encoder-decoder models may start from ``inputs_embeds``)."""
    if input_ids is None and "inputs_embeds" not in kwargs:
        raise ValueError("`input_ids` must hold at least one token; got None (an empty prompt)")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be 2-D [batch, sequence]; got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(f"`input_ids` must hold at least one token; got shape {tuple(input_ids.shape)} (an empty prompt)")


def check_assistant(model, assistant_model, tokenizer, assistant_tokenizer) -> None:
    """An assistant with another vocabulary needs both tokenizers (universal assisted decoding)."""
    if assistant_model is None:
        if assistant_tokenizer is not None:
            raise ValueError("`assistant_tokenizer` needs `assistant_model`; got an assistant tokenizer but no assistant model")
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


def validate(cfg, mode: str, model, ctx=None) -> None:
    """Raise a ``ValueError`` naming the first field of ``cfg`` that is out of range for ``mode``."""
    sampling = mode in SAMPLING_MODES or (mode == "assisted_generation" and cfg.do_sample) or (
        mode == "dola_generation" and cfg.do_sample)
    if cfg.max_new_tokens is not None:
        _check(cfg.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", cfg.max_new_tokens)
    _check(cfg.num_beams >= 1, "num_beams", "an integer >= 1", cfg.num_beams)
    _check(cfg.num_return_sequences >= 1, "num_return_sequences", "an integer >= 1", cfg.num_return_sequences)
    if mode in BEAM_MODES:
        _check(cfg.num_return_sequences <= cfg.num_beams, "num_return_sequences",
               f"<= num_beams ({cfg.num_beams}) for beam search", cfg.num_return_sequences)
    groups = cfg.num_beam_groups or 1
    _check(groups >= 1, "num_beam_groups", "an integer >= 1", groups)
    if groups > 1:
        _check(groups <= cfg.num_beams, "num_beam_groups", f"<= num_beams ({cfg.num_beams})", groups)
        _check(cfg.num_beams % groups == 0, "num_beam_groups",
               f"a divisor of num_beams ({cfg.num_beams}) so every group has the same number of beams", groups)
        _check(not cfg.do_sample, "do_sample", "False for diverse (group) beam search", cfg.do_sample)
    if cfg.diversity_penalty is not None:
        _check(cfg.diversity_penalty >= 0, "diversity_penalty", "in [0, inf)", cfg.diversity_penalty)
    if cfg.penalty_alpha is not None:
        _check(0 <= cfg.penalty_alpha <= 1, "penalty_alpha", "in [0, 1]", cfg.penalty_alpha)
    if cfg.top_k is not None:
        _check(cfg.top_k >= 0, "top_k", "an integer >= 0 (0 disables it)", cfg.top_k)
    if mode == "contrastive_search":
        _check(cfg.top_k is not None and cfg.top_k > 1, "top_k", "an integer > 1 for contrastive search", cfg.top_k)
    if sampling:
        _check(cfg.temperature is not None and cfg.temperature > 0 and math.isfinite(cfg.temperature),
               "temperature", "> 0 when sampling (do_sample=True)", cfg.temperature)
    if cfg.top_p is not None:
        _check(0 < cfg.top_p <= 1, "top_p", "in (0, 1]", cfg.top_p)
    if cfg.min_p is not None:
        _check(0 <= cfg.min_p <= 1, "min_p", "in [0, 1]", cfg.min_p)
    if cfg.typical_p is not None:
        _check(0 < cfg.typical_p <= 1, "typical_p", "in (0, 1]", cfg.typical_p)
    if cfg.epsilon_cutoff is not None:
        _check(0 <= cfg.epsilon_cutoff < 1, "epsilon_cutoff", "in [0, 1)", cfg.epsilon_cutoff)
    if cfg.eta_cutoff is not None:
        _check(0 <= cfg.eta_cutoff < 1, "eta_cutoff", "in [0, 1)", cfg.eta_cutoff)
    if cfg.repetition_penalty is not None:
        _check(cfg.repetition_penalty > 0, "repetition_penalty", "> 0 (1.0 means no penalty)", cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size is not None:
        _check(cfg.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "an integer >= 0", cfg.no_repeat_ngram_size)
    if cfg.dola_layers is not None:
        _check(not model.config.is_encoder_decoder, "dola_layers",
               "unset for encoder-decoder models (DoLa contrasts decoder-only layers)", cfg.dola_layers)
        n_layers = model.config.get_text_config().num_hidden_layers
        if isinstance(cfg.dola_layers, str):
            _check(cfg.dola_layers in ("low", "high"), "dola_layers", '"low", "high" or a list of layer indices',
                   cfg.dola_layers)
        else:
            _check(isinstance(cfg.dola_layers, (list, tuple)) and len(cfg.dola_layers) > 0
                   and all(isinstance(i, int) and 0 <= i < n_layers for i in cfg.dola_layers),
                   "dola_layers", f'"low", "high" or a non-empty list of layer indices in [0, {n_layers - 1}]',
                   cfg.dola_layers)
    if cfg.prompt_lookup_num_tokens is not None:
        _check(cfg.prompt_lookup_num_tokens >= 1, "prompt_lookup_num_tokens", "an integer >= 1",
               cfg.prompt_lookup_num_tokens)
    if mode == "assisted_generation":
        _check(cfg.num_return_sequences == 1, "num_return_sequences", "1 for assisted decoding",
               cfg.num_return_sequences)
    if cfg.cache_implementation == "offloaded" and not torch.cuda.is_available():
        _fail("cache_implementation", '"dynamic", "static" or "quantized" on this machine: "offloaded" moves '
              "layers between GPU and CPU memory and needs CUDA, which is not available here", "offloaded")
