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

HEAD_SLICE = 512  # output features per slice of the LM head's weight in ``head_rows``

# Where a decoder keeps its final norm, by the names transformers' architectures give it.
NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f")


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
    ``output_hidden_states`` (the prefill's), so that softcapping, scaling or a bias outside the head is noticed.
    Strategies that need logits for only some rows skip the model's own and apply this head to those rows."""
    head = model.get_output_embeddings()
    if head is None or model.config.is_encoder_decoder or not model._supports_logits_to_keep():
        return None
    with torch.no_grad():
        logits = outputs.logits[:, -1, :].float()  # [B, V]
        again = head(outputs.hidden_states[-1][:, -1, :].to(head.weight.device)).float().to(logits.device)  # [B, V]
    scale = float(logits.abs().max().clamp(min=1.0))
    return head if torch.allclose(again, logits, rtol=1e-3, atol=1e-3 * scale) else None


def no_logits(device) -> torch.Tensor:
    """The ``logits_to_keep`` that makes a forward compute no logits (its ``logits`` are [B, 0, V])."""
    return torch.empty(0, dtype=torch.long, device=device)
