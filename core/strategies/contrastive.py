"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation"):
each step takes the ``top_k`` most probable tokens, runs all of them through the model in one batch,
and keeps the one with the best ``(1 - penalty_alpha) * probability - penalty_alpha * degeneration
penalty``, where the penalty is the candidate's largest cosine similarity to the hidden states of
the context. A port of transformers 4.55.4 ``_contrastive_search`` (its ``low_memory=False`` path) and
``_ranking_fast`` onto 5.x's ``Cache`` API; tokens are identical to 4.55.4.

Two things 4.55.4 does at every step are left out where the model allows, without changing what is computed:
- copying the cache: 4.55.4 repeats the whole KV cache ``top_k`` times before the candidates' forward and cuts it
  back to the chosen rows after it. Here a decoder-only model's dynamic cache stays as it is; during the
  candidates' forward each layer hands attention its states repeated once per candidate (the same tensors 4.55.4
  attends to, built in one write) and keeps the new entries aside; then only the chosen candidate's entry is
  appended (``SharedPrefix``). Encoder-decoder models and offloaded caches take 4.55.4's way (``RepeatedRows``).
- the LM head on every candidate: only the chosen candidate's logits are used, so where the model's logits are
  its LM head applied to its last hidden state (checked on the prompt), the candidates' forward computes no
  logits and the head runs on the chosen row alone (for SmolLM2 in float32 the head on 4 rows costs ~2x one row).

Under a step scheduler (``core.scheduler``) a seated run's forwards run alone, between the other runs' batched steps
(the model lock): each step's forward carries ``top_k`` candidate rows against a cache that ``SharedPrefix`` hands
attention repeated, and asks for every layer's hidden states, which a batched step of plain rows does not carry.
In the engine's busy loop (``core.engine.loop``) it runs in the run's turn, one forward a pass.
"""

from __future__ import annotations

import copy

import torch
from transformers.cache_utils import BaseQuantizedLayer, DynamicLayer, DynamicSlidingWindowLayer
from transformers.generation.utils import GenerationMode

from ..lens import no_logits, plain_head
from ..records import ContrastiveCandidate
from ..rules import Env, check, rule
from . import register
from .steps import Rows, prefilling


def _ranking_fast(context_hidden: torch.Tensor, next_hidden: torch.Tensor, top_k_probs: torch.Tensor,
                  cosine_mask: torch.Tensor, alpha: float, top_k: int):
    """Re-rank the ``top_k`` candidates of each row (4.55.4 ``_ranking_fast``, same operations in the same
    order). Returns ``(selected [B], degeneration_penalty [B, K], contrastive_score [B, K])``."""
    norm_context = context_hidden / context_hidden.norm(dim=2, keepdim=True)  # [B*K, S, H]
    norm_next = next_hidden / next_hidden.norm(dim=2, keepdim=True)  # [B*K, 1, H]
    cosine = torch.matmul(norm_context, norm_next.transpose(1, 2)).squeeze(-1)  # [B*K, S]
    # padding positions of the context must never be the most similar one
    mask = cosine_mask.to(dtype=cosine.dtype)
    cosine = cosine + (1 - mask) * torch.finfo(cosine.dtype).min
    degeneration_penalty, _ = torch.max(cosine, dim=-1)  # [B*K]
    contrastive_score = (1.0 - alpha) * top_k_probs.view(-1) - alpha * degeneration_penalty  # [B*K]
    contrastive_score = torch.stack(torch.split(contrastive_score, top_k))  # [B, K]
    _, selected = contrastive_score.max(dim=-1)  # [B]
    return selected, degeneration_penalty.view(-1, top_k), contrastive_score


def _last_hidden(model, outputs) -> torch.Tensor:
    """Final-layer hidden states [B, S, H] (the decoder's for encoder-decoder models)."""
    states = outputs.decoder_hidden_states if model.config.is_encoder_decoder else outputs.hidden_states
    return states[-1]


# it repeats and selects cache rows per candidate: cache layers that grow by concatenation only
_CACHE_ALLOWED = "'dynamic' (or unset) for contrastive search, which repeats and selects cache rows per candidate"


@rule
def _settings(env: Env) -> None:
    """What contrastive search cannot run with, said at the boundary (a cache's kind before a quantized cache's
    backend is readied); a cache passed as ``past_key_values`` is checked in the loop (``_check_cache``)."""
    if env.mode != GenerationMode.CONTRASTIVE_SEARCH:
        return
    cfg = env.cfg
    check(cfg.top_k > 1, "top_k", "an integer > 1 for contrastive search", cfg.top_k)
    check(cfg.cache_implementation in (None, "dynamic", "offloaded"), "cache_implementation", _CACHE_ALLOWED,
          cfg.cache_implementation)
    if getattr(env.model, "_is_stateful", False):
        raise ValueError(f"contrastive search needs a model whose cache can be rolled back; got the stateful "
                         f"{type(env.model).__name__}")
    if cfg.prefill_chunk_size is not None:
        raise ValueError("`prefill_chunk_size` must be None for contrastive search, which needs the hidden state of "
                         f"every prompt token from one prefill; got {cfg.prefill_chunk_size}")


def _check_cache(cache) -> None:
    """Contrastive search reads the cache ``top_k`` times per row and then keeps one candidate's entry: it needs a
    cache whose layers grow by concatenation (dynamic ones; quantized and static layers cannot)."""
    if cache is None:
        raise ValueError("`use_cache` must be True for contrastive search (it rolls the KV cache back to the chosen "
                         "candidate); got no cache")
    caches = ([cache.self_attention_cache, cache.cross_attention_cache] if hasattr(cache, "self_attention_cache")
              else [cache])
    layers = [layer for c in caches for layer in getattr(c, "layers", [None])]
    bad = sorted({type(layer).__name__ for layer in layers
                  if not isinstance(layer, DynamicLayer) or isinstance(layer, BaseQuantizedLayer)})
    if bad:
        raise ValueError(f"`cache_implementation` must be {_CACHE_ALLOWED}; got a {type(cache).__name__} with "
                         f"{', '.join(bad)}")


def _repeated_then(prefix: torch.Tensor, new: torch.Tensor, top_k: int) -> torch.Tensor:
    """``prefix`` [B, h, S, d] repeated ``top_k`` times per row, followed by ``new`` [B*K, h, n, d]: what
    ``repeat_interleave`` then ``cat`` give, written once. Returns [B*K, h, S+n, d]."""
    batch, heads, length, dim = prefix.shape
    out = prefix.new_empty(batch, top_k, heads, length + new.shape[-2], dim)  # [B, K, h, S+n, d]
    out[:, :, :, :length] = prefix[:, None]
    out[:, :, :, length:] = new.view(batch, top_k, heads, -1, dim)
    return out.view(batch * top_k, heads, -1, dim)


class _CandidateLayer(DynamicLayer):
    """One layer of the cache as the candidates' forward sees it: attention reads the base layer's states repeated
    for each candidate plus that candidate's new entry, and nothing is stored until ``keep``."""

    def __init__(self, base: DynamicLayer, top_k: int):
        super().__init__()
        self.base, self.top_k = base, top_k
        self.is_sliding = base.is_sliding
        self.is_initialized = True
        self.new: tuple[torch.Tensor, torch.Tensor] | None = None  # the candidates' keys and values [B*K, h, 1, d]

    def update(self, key_states, value_states, *args, **kwargs):
        self.new = (key_states, value_states)
        return (_repeated_then(self.base.keys, key_states, self.top_k),
                _repeated_then(self.base.values, value_states, self.top_k))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.base.get_mask_sizes(query_length)

    def get_seq_length(self) -> int:
        return self.base.get_seq_length()

    def get_max_length(self) -> int:
        return self.base.get_max_length()

    def keep(self, rows: torch.Tensor) -> None:
        """Append the new entries of ``rows`` [B] (indices into the B*K candidates) to the base layer."""
        keys, values = self.new
        self.base.update(keys[rows], values[rows])
        self.new = None


class SharedPrefix:
    """The cache stays one row per sequence; the candidates' forward runs against a view of it (``_CandidateLayer``
    per layer), after which the chosen candidates' entries are appended to it."""

    def __init__(self, cache, top_k: int):
        self.cache = cache
        self.view = copy.copy(cache)  # the same cache object but for its layers
        self.view.layers = [_CandidateLayer(layer, top_k) for layer in cache.layers]

    @staticmethod
    def fits(cache, model) -> bool:
        """Decoder-only models with a resident cache of dynamic (or dynamic sliding-window) layers."""
        return (not model.config.is_encoder_decoder and not getattr(cache, "offloading", False)
                and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in cache.layers))

    def for_candidates(self):
        return self.view

    def keep(self, rows: torch.Tensor):
        """The cache with the entries of ``rows`` [B] appended; returns it for ``model_kwargs``."""
        for layer in self.view.layers:
            layer.keep(rows.to(layer.base.keys.device))
        return self.cache


class RepeatedRows:
    """4.55.4's way: the cache itself repeated ``top_k`` times per row for the candidates' forward, then cut back
    to the chosen rows (encoder-decoder caches, whose cross-attention layers are read directly, and offloaded ones)."""

    def __init__(self, cache, top_k: int):
        self.cache, self.top_k = cache, top_k

    def for_candidates(self):
        self.cache.batch_repeat_interleave(self.top_k)  # rows [B] -> [B*K]
        return self.cache

    def keep(self, rows: torch.Tensor):
        self.cache.batch_select_indices(rows)  # rows [B*K] -> [B]
        return self.cache


@register(GenerationMode.CONTRASTIVE_SEARCH)
def contrastive_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. setup
    top_k = generation_config.top_k
    alpha = generation_config.penalty_alpha
    enc_dec = model.config.is_encoder_decoder
    if not model_kwargs.get("use_cache", True):
        raise ValueError("`use_cache` must be True for contrastive search (it rolls the KV cache back to the chosen "
                         "candidate); got False")
    # the settings were checked at the boundary (``_settings``); the cache object only exists here
    _check_cache(model_kwargs.get("cache"))
    batch_size = input_ids.shape[0]
    observer = ctx.observer
    rows = Rows(input_ids, generation_config, stopping_criteria, observer)
    # which context positions count for the degeneration penalty (left padding does not)
    mask_key = "decoder_attention_mask" if enc_dec else "attention_mask"
    cosine_mask = model_kwargs.get(mask_key)
    if cosine_mask is None:
        cosine_mask = torch.ones_like(input_ids)
    cosine_mask = cosine_mask.repeat_interleave(top_k, dim=0)  # [B*K, S]

    # 2. prefill: the prompt once, keeping its final hidden states as the context to compare against
    with prefilling():  # one forward, not chunked (see above); a run stopped before it starts none
        outputs = model._prefill(input_ids, generation_config, {**model_kwargs, "output_hidden_states": True})
    context_hidden = _last_hidden(model, outputs)  # [B, S, H]
    next_logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=input_ids.device)  # [B, V]
    head = plain_head(model, outputs)
    model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=enc_dec)
    del outputs
    cache = model_kwargs["cache"]
    candidates_cache = (SharedPrefix if SharedPrefix.fits(cache, model) else RepeatedRows)(cache, top_k)
    # every later forward runs the K candidates of each row as one batch: attention mask, positions and
    # encoder outputs are repeated once here
    _, model_kwargs = model._expand_inputs_for_generation(input_ids=input_ids, expand_size=top_k,
                                                          is_encoder_decoder=enc_dec, **model_kwargs)
    model_kwargs["output_hidden_states"] = True
    if head is not None:  # the candidates' forward computes no logits: the head runs on the chosen rows only
        model_kwargs["logits_to_keep"] = no_logits(input_ids.device)

    with model._optimize_model_for_decode():
        while True:
            # a. recall: the top_k most probable tokens after the processors
            scores, stages = observer.process(input_ids, next_logits, logits_processor)  # [B, V]
            probs = torch.nn.functional.softmax(scores, dim=-1)
            top_k_probs, top_k_ids = torch.topk(probs, dim=-1, k=top_k)  # [B, K]

            # b. one forward for all candidates: their hidden states (and, without a plain head, their logits)
            model_kwargs["cache"] = candidates_cache.for_candidates()  # rows [B] read as [B*K]
            model_inputs = model.prepare_inputs_for_generation(top_k_ids.view(-1, 1), **model_kwargs)
            outputs = model(**model_inputs, return_dict=True)
            del model_inputs
            candidate_hidden = _last_hidden(model, outputs)  # [B*K, 1, H]

            # c. re-rank by confidence minus degeneration penalty
            selected, penalty, contrastive_score = _ranking_fast(
                context_hidden.repeat_interleave(top_k, dim=0), candidate_hidden, top_k_probs, cosine_mask, alpha,
                top_k)  # [B], [B, K], [B, K]
            cosine_mask = torch.cat([cosine_mask, cosine_mask.new_ones((cosine_mask.shape[0], 1))], dim=-1)
            selected = selected.to("cpu")
            flat_selected = torch.tensor([x + i * top_k for i, x in enumerate(selected.tolist())])  # [B] into [B*K]

            # d. keep only the chosen candidate: its token, hidden state, logits and cache entry
            next_tokens = top_k_ids[range(batch_size), selected]  # [B]
            per_row = torch.stack(torch.split(candidate_hidden.squeeze(dim=1), top_k))  # [B, K, H]
            chosen_hidden = per_row[range(batch_size), selected, :]  # [B, H]
            context_hidden = torch.cat([context_hidden, chosen_hidden.unsqueeze(1)], dim=1)  # [B, S+1, H]
            raw_next_logits = next_logits
            if head is not None:
                next_logits = head(chosen_hidden.to(head.weight.device))  # [B, V]
            else:
                next_logits = torch.stack(torch.split(outputs.logits[:, -1, :], top_k))[range(batch_size), selected, :]
            next_logits = next_logits.to(dtype=torch.float32, device=input_ids.device)  # [B, V]
            model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs, is_encoder_decoder=enc_dec)
            model_kwargs["cache"] = candidates_cache.keep(flat_selected)  # rows [B]
            del outputs

            # e. append, record, stream, check stopping
            def record(rec, chosen):
                rec.emit(rec.row_steps(raw_next_logits, scores, stages, chosen), cache=model_kwargs.get("cache"),
                         contrastive=_candidates(rec, top_k_ids, top_k_probs, penalty, contrastive_score, selected))

            input_ids, done = rows.append(input_ids, next_tokens, record)
            if done:
                break

    observer.end()
    return input_ids


def _candidates(rec, top_k_ids, top_k_probs, penalty, contrastive_score, selected) -> list[list[ContrastiveCandidate]]:
    """The K candidates of each row as ranked: the tensors ``_ranking_fast`` computed, moved to Python."""
    ids, probs = top_k_ids.tolist(), top_k_probs.tolist()
    pens, scores, chosen = penalty.tolist(), contrastive_score.tolist(), selected.tolist()
    return [[ContrastiveCandidate(ids[b][i], rec.texts.row_candidate(b, ids[b][i]), probs[b][i], pens[b][i],
                                  scores[b][i], i == chosen[b])
             for i in range(len(ids[b]))] for b in range(len(ids))]
