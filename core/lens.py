"""Per-layer readouts: the LM head applied to hidden states other than the final one.

DoLa reads its candidate (premature) layers through the LM head as transformers 4.55.4 does, without the final
norm (``head_rows``). The logit lens (nostalgebraist 2020) reads every layer through the final norm and the LM
head (``readout``) and compares each layer's next-token distribution with the final one (``layer_lens``): the
probability and rank it gives the token the step chose, its top tokens, and its KL divergence from the final
layer. Shapes follow the legend in ``core.loop``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .records import Candidate, LayerLens, WatchedLayer

HEAD_SLICE = 512  # output features per slice of the LM head's weight in ``head_rows``

# Where a decoder keeps its final norm, by the names transformers' architectures give it.
NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")
LENS_TOP_N = 5  # top tokens recorded per layer (at most the recorder's ``top_n``)
LENS_CHUNK = 8  # layers read through the head at once by ``layer_lens``


def head_rows(lm_head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """``lm_head`` on a few rows of hidden states [N, H] -> [N, V]. On CPU in float32 a plain ``nn.Linear`` head is
    applied in slices of ``HEAD_SLICE`` output features: MKL's GEMM for a handful of rows against the whole
    vocabulary runs ~1.4x slower than on slices of it (measured with 8 rows on SmolLM2's 49152 x 576 head), and
    each logit is the same dot product either way, so the result is the same."""
    weight = getattr(lm_head, "weight", None)
    if (type(lm_head) is not torch.nn.Linear or hidden.shape[0] < 2 or weight.device.type != "cpu"
            or weight.dtype != torch.float32):
        return lm_head(hidden)
    bias = lm_head.bias.split(HEAD_SLICE) if lm_head.bias is not None else [None] * -(-weight.shape[0] // HEAD_SLICE)
    return torch.cat([F.linear(hidden, w, b) for w, b in zip(weight.split(HEAD_SLICE), bias)], dim=-1)  # [N, V]


def plain_head(model, outputs) -> torch.nn.Module | None:
    """The LM head of a decoder-only ``model`` when its logits are that head applied to the last hidden state and
    its forward can skip computing them (``logits_to_keep``), else None. Checked on ``outputs`` of a forward with
    ``output_hidden_states`` (the prefill's): the head on the last hidden state must give the model's logits to
    float rounding (a plain head gives them to the bit: the same GEMM on the same rows), and the config must name no
    softcapping, which small logits could hide. Strategies that need logits for only some rows skip the model's own
    and apply this head to those rows."""
    head = model.get_output_embeddings()
    if (head is None or model.config.is_encoder_decoder or not model._supports_logits_to_keep()
            or getattr(model.config.get_text_config(), "final_logit_softcapping", None) is not None):
        return None
    with torch.no_grad():
        logits = outputs.logits[:, -1, :].float()  # [B, V]
        again = head(outputs.hidden_states[-1][:, -1, :].to(head.weight.device)).float().to(logits.device)  # [B, V]
    scale = float(logits.abs().max().clamp(min=1.0))
    return head if torch.allclose(again, logits, rtol=1e-5, atol=1e-6 * scale) else None


def no_logits(device) -> torch.Tensor:
    """The ``logits_to_keep`` that makes a forward compute no logits (its ``logits`` are [B, 0, V])."""
    return torch.empty(0, dtype=torch.long, device=device)


# --- the logit lens -------------------------------------------------------------------------------------------
def final_norm(model) -> torch.nn.Module | None:
    """The norm a decoder-only ``model`` applies to its last layer's output before the LM head (None if it has
    none under a known name)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for holder in (decoder, getattr(model, "model", None), getattr(model, "transformer", None)):
        for name in NORM_NAMES:
            norm = getattr(holder, name, None) if holder is not None else None
            if isinstance(norm, torch.nn.Module):
                return norm
    return None


def lens_problem(model) -> str:
    """Why the logit lens cannot read ``model`` ("" when it can), worded for a ``ValueError``."""
    if model.config.is_encoder_decoder:
        return f"the logit lens reads a decoder-only model's layers; got the encoder-decoder {type(model).__name__}"
    if model.get_output_embeddings() is None:
        return f"the logit lens needs an LM head; {type(model).__name__} has none"
    if final_norm(model) is None:
        return (f"the logit lens needs the final norm of {type(model).__name__}'s decoder, found under none of the "
                f"names {', '.join(NORM_NAMES)}")
    return ""


def readout(model, hidden: torch.Tensor) -> torch.Tensor:
    """Hidden states [N, H] read as the model reads its last one: final norm, LM head, and the softcapping its
    config names. Returns float32 logits [N, V]."""
    head = model.get_output_embeddings()
    norm = final_norm(model)
    logits = head_rows(head, norm(hidden.to(head.weight.device))).float()  # [N, V]
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def last_states(hidden_states) -> torch.Tensor:
    """The last position of every hidden state the model returned but the final one (which the LM head already
    read): ``hidden_states`` is a tuple of L+1 tensors [B, S, H]; returns [L, B, H] (embeddings first)."""
    device = hidden_states[-1].device
    return torch.stack([h[:, -1, :].to(device) for h in hidden_states[:-1]])  # [L, B, H]


def layer_lens(model, states: torch.Tensor, final_logits: torch.Tensor, chosen: list[list[int]], text,
               top_n: int = LENS_TOP_N, watch: list[int] | tuple[int, ...] = ()) -> list[list[LayerLens]]:
    """The logit lens per row: one ``LayerLens`` per layer, embeddings first, the last one read from
    ``final_logits`` [B, V] (the logits the step chose from before its processors, so that it agrees with the step's
    candidates); the others from ``states`` [L, B, H] (``last_states``) through ``readout``, ``LENS_CHUNK`` layers at
    a time (a [L, B, V] block and its softmaxes at once would be tens of MB per step). ``chosen`` is the token list
    per row (its first token is compared; a row that had already finished chose none, and gets no layers);
    ``text(row, id)`` is a token's text in its row (``TokenTexts.row_candidate``). Each ``watch`` token id gets its
    probability and rank at every layer (``LayerLens.watched``), read from the same softmaxes."""
    n_layers, batch, hidden = states.shape
    final = final_logits.float().to(states.device)  # [B, V]
    final_log_probs = final.log_softmax(-1)  # [B, V]
    final_probs = final_log_probs.exp()  # [B, V]
    chosen_ids = torch.tensor([row[0] if row else 0 for row in chosen], device=states.device)[:, None]  # [B, 1]
    watch_ids = torch.tensor(list(watch), dtype=torch.long, device=states.device)  # [W]
    per_layer = []  # (top ids, top logits, top probs, chosen prob, rank, KL to final) per layer, each per row
    watched = []  # per layer, per row: a WatchedLayer per watched token
    for first in range(0, n_layers + 1, LENS_CHUNK):
        layers = range(first, min(first + LENS_CHUNK, n_layers + 1))
        inner = states[first:layers[-1] + 1]  # [C', B, H]: the chunk's layers before the final one
        parts = [readout(model, inner.reshape(-1, hidden)).view(len(inner), batch, -1)] if len(inner) else []
        if layers[-1] == n_layers:
            parts.append(final[None])
        logits = torch.cat(parts)  # [C, B, V]
        log_probs = logits.log_softmax(-1)  # [C, B, V]
        probs = log_probs.exp()  # [C, B, V]
        kl = (final_probs * (final_log_probs - log_probs)).sum(-1)  # [C, B]: KL(final || layer)
        top = logits.topk(top_n, dim=-1)  # [C, B, top_n]
        chosen_at = chosen_ids.expand(len(layers), batch, 1)  # [C, B, 1]
        ranks = (logits > logits.gather(-1, chosen_at)).sum(-1)  # [C, B]
        per_layer += zip(top.indices.tolist(), top.values.tolist(), probs.gather(-1, top.indices).tolist(),
                         probs.gather(-1, chosen_at)[..., 0].tolist(), ranks.tolist(), kl.tolist())
        if len(watch_ids):
            watched_logits = logits[..., watch_ids]  # [C, B, W]
            watched_ranks = (logits[..., None, :] > watched_logits[..., None]).sum(-1)  # [C, B, W]
            watched += [[[WatchedLayer(t, p, r) for t, p, r in zip(watch, p_row, r_row)]
                         for p_row, r_row in zip(p_layer, r_layer)]
                        for p_layer, r_layer in zip(probs[..., watch_ids].tolist(), watched_ranks.tolist())]
        else:
            watched += [[[] for _ in range(batch)] for _ in layers]
    return [[LayerLens(layer,
                       [Candidate(i, text(row, i), lg, p, lg, p) for i, lg, p in zip(ids[row], lgs[row], ps[row])],
                       chosen_p[row], int(rank[row]), 0.0 if layer == n_layers else max(kl_row[row], 0.0),
                       watched=watched[layer][row])
             for layer, (ids, lgs, ps, chosen_p, rank, kl_row) in enumerate(per_layer)] if chosen[row] else []
            for row in range(batch)]
