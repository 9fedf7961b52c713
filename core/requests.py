"""What ``core.generate`` does to a request before transformers sees it, in this order:
1. the core's own fields (``core.chain.FIELDS``: community samplers, grammar, ``sampler_order``) move from the
   keyword arguments into a copy of the ``GenerationConfig``, since ``model.generate`` refuses keyword arguments it
   does not know while it keeps unknown config attributes;
2. words become token ids: ``force_words_ids``, ``bad_words_ids`` and ``sequence_bias`` may name words (strings)
   where transformers wants token lists, encoded with the run's tokenizer (``add_special_tokens=False``), so a saved
   config can say ``"bad_words_ids": [" sorry"]``;
3. a ``watermarking_config`` given as a dict becomes transformers' ``WatermarkingConfig`` (transformers converts a
   dict only in the ``GenerationConfig`` constructor, not in ``generate``'s keyword arguments);
4. ``negative_prompt`` (text) is encoded into transformers' ``negative_prompt_ids`` for classifier-free guidance;
5. ``token_healing`` is applied here with the tokenizer (``model.heal_tokens``): transformers drops the tokenizer on
   the ``custom_generate`` path the core runs on, so it would heal nothing and fail.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import GenerationConfig
from transformers.generation.configuration_utils import WatermarkingConfig

from .chain import FIELDS as CORE_FIELDS

WORD_FIELDS = ("force_words_ids", "bad_words_ids", "sequence_bias")


def effective(generation_config, kwargs: dict, field: str, model=None):
    """The value ``field`` will have: the keyword argument, else the config's, else the model's."""
    if kwargs.get(field) is not None:
        return kwargs[field]
    for cfg in (generation_config, getattr(model, "generation_config", None)):
        value = getattr(cfg, field, None) if cfg is not None else None
        if value is not None:
            return value
    return None


def has_words(value) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return any(isinstance(k, str) for k in value)
    if isinstance(value, (list, tuple)):
        return any(has_words(v) for v in value)
    return False


def encode_word(word: str, tokenizer, field: str) -> list[int]:
    if tokenizer is None:
        raise ValueError(f"`{field}` must hold token ids when no `tokenizer=` is given (words are encoded with the "
                         f"tokenizer); got the word {word!r}")
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"`{field}` must hold words that encode to at least one token; got {word!r}")
    return list(ids)


def words_to_ids(field: str, value, tokenizer):
    """``value`` with every word replaced by its token ids, in the shape transformers expects for ``field``."""
    if field == "sequence_bias":
        pairs = list(value.items()) if isinstance(value, dict) else value
        return [[encode_word(seq, tokenizer, field) if isinstance(seq, str) else list(seq), bias]
                for seq, bias in pairs]
    out = []
    for item in value:  # a word, a token list, or (force_words_ids) a group of alternatives
        if isinstance(item, str):
            out.append(encode_word(item, tokenizer, field))
        elif isinstance(item, (list, tuple)) and any(isinstance(x, (str, list, tuple)) for x in item):
            out.append([encode_word(x, tokenizer, field) if isinstance(x, str) else list(x) for x in item])
        else:
            out.append(item)
    return out


def prepare(model, input_ids, generation_config: GenerationConfig | None, kwargs: dict, tokenizer,
            attention_mask) -> tuple[Any, GenerationConfig | None, dict, Any]:
    """Steps 1-5 of the module docstring; returns ``(input_ids, generation_config, kwargs, attention_mask)``."""
    kwargs = dict(kwargs)
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in CORE_FIELDS}
    fixes: dict[str, Any] = {}
    for field in WORD_FIELDS:
        value = effective(generation_config, kwargs, field)
        if value is not None and has_words(value):
            fixes[field] = words_to_ids(field, value, tokenizer)
    negative = own.get("negative_prompt") or getattr(generation_config, "negative_prompt", None)
    if negative and kwargs.get("negative_prompt_ids") is None:
        if tokenizer is None:
            raise ValueError("`negative_prompt` needs `tokenizer=` to encode it; got no tokenizer (or pass "
                             "`negative_prompt_ids`)")
        kwargs["negative_prompt_ids"] = tokenizer(negative, return_tensors="pt")["input_ids"].to(input_ids.device)
    watermark = effective(generation_config, kwargs, "watermarking_config")
    if isinstance(watermark, dict):
        fixes["watermarking_config"] = WatermarkingConfig.from_dict(watermark)
    if effective(generation_config, kwargs, "token_healing", model):
        if tokenizer is None:
            raise ValueError("`token_healing` needs `tokenizer=` to re-tokenize the prompt's end; got no tokenizer")
        healed = model.heal_tokens(input_ids, tokenizer)
        # as transformers: an all-ones mask is dropped (the healed prompt may start with the pad id that replaced
        # BOS, and is attended as is); a mask with padding is kept, or rebuilt when the length changed
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None
        elif attention_mask is not None and attention_mask.shape != healed.shape:
            attention_mask = (healed != tokenizer.pad_token_id).long()
        input_ids = healed
        fixes["token_healing"] = False
    if own or fixes:
        if generation_config is None:  # a config of the call's own: all its fields go there (transformers warns
            generation_config = GenerationConfig()  # when a config comes with generation keyword arguments)
            defaults = generation_config.to_dict()
            own.update({k: kwargs.pop(k) for k in list(kwargs) if k in defaults and k not in fixes})
        else:
            generation_config = copy.deepcopy(generation_config)
        for key, value in own.items():
            setattr(generation_config, key, value)
        for key, value in fixes.items():
            kwargs.pop(key, None)
            setattr(generation_config, key, value)
    return input_ids, generation_config, kwargs, attention_mask


__all__ = ["prepare", "words_to_ids", "has_words", "WORD_FIELDS"]
