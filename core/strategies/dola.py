"""DoLa, Decoding by Contrasting Layers (Chuang et al. 2024): the next-token scores are the final
layer's log-probabilities minus those of an earlier ("premature") layer read through the LM head,
keeping only tokens the final layer finds plausible. Of several candidate layers, the one whose
distribution is furthest from the final layer's (Jensen-Shannon divergence, averaged over the batch)
is contrasted. Then greedy or sampling as usual. A port of transformers 4.55.4 ``_dola_decoding``,
``_dola_select_contrast`` and ``_relative_top_filter`` onto 5.x's prefill / cache loop; tokens are
identical to 4.55.4.

Where 4.55.4 applies the LM head once per candidate layer, and the model once more for the final layer, each step
here reads the LM head's weights once: the candidate layers' last hidden states and (after the prefill, for models
whose logits are the plain head on the final hidden state) the final one go through it in one call, and the
model's forward computes no logits. The logits then differ from 4.55.4's in the last bits (another GEMM shape).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.generation.utils import GenerationMode

from ..lens import head_rows, last_states, lens_problem, no_logits, plain_head
from ..processors.base import is_int
from ..records import DolaStep
from ..rules import Env, check, rule
from . import register
from .steps import Forward, Rows


def candidate_layers(model, dola_layers) -> list[int]:
    """The premature layers ``dola_layers`` names, as 4.55.4 picks them. Index 0 is the embedding output;
    with tied embeddings the lowest layers are skipped, since the LM head read there is nearly the identity."""
    final_layer = model.config.get_text_config().num_hidden_layers
    tied = getattr(model.config.get_text_config(), "tie_word_embeddings", False)
    if not tied:
        start_layer = 0
    elif final_layer > 2:
        start_layer = 2
    elif final_layer == 2:
        start_layer = 1
    else:
        start_layer = 0
    # N <= 40 layers: 'low' = range(start, N // 2, 2), 'high' = range(N // 2, N, 2); deeper models use 20 layers
    if dola_layers == "low":
        if start_layer == final_layer // 2:
            return [start_layer]
        return list(range(start_layer, final_layer // 2, 2)) if final_layer <= 40 else list(range(start_layer, 20, 2))
    if dola_layers == "high":
        start = final_layer // 2 if final_layer <= 40 else final_layer - 20
        return list(range(start, final_layer, 2))
    if isinstance(dola_layers, (list, tuple)):
        return [i for i in dola_layers if i < final_layer]
    raise ValueError(f'`dola_layers` must be "low", "high" or a list of layer indices; got {dola_layers!r}')


def _relative_top_filter(scores: torch.Tensor, baseline_scores: torch.Tensor, relative_top: float = 0.1,
                         filter_value: float = -float("Inf"), base_filter_value=-1e-3, min_tokens_to_keep: int = 1):
    """Log-softmax both [B, V]; tokens below ``relative_top`` times the final layer's top probability get
    ``filter_value`` (final) and ``base_filter_value`` (premature), so their difference stays -inf."""
    scores_normalized = scores.log_softmax(dim=-1)  # [B, V]
    baseline_scores_normalized = baseline_scores.log_softmax(dim=-1)  # [B, V]
    # the value 4.55.4 reads from a full sort of the vocabulary; topk finds the same value without sorting it all
    min_thresh = scores_normalized.topk(min_tokens_to_keep, dim=-1).values[..., min_tokens_to_keep - 1]
    probs_max = torch.max(scores_normalized, dim=-1).values
    probs_thresh = probs_max + np.log(relative_top)
    probs_thresh = torch.min(min_thresh, probs_thresh).unsqueeze(-1)  # [B, 1]
    baseline_scores_normalized[scores_normalized < probs_thresh] = base_filter_value
    scores_normalized[scores_normalized < probs_thresh] = filter_value
    return scores_normalized, baseline_scores_normalized


def js_divergences(final_logits: torch.Tensor, premature_logits: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence of each premature layer's distribution from the final layer's, as 4.55.4
    computes it (KL terms averaged over the vocabulary). ``final_logits`` [B, V], ``premature_logits``
    [L, B, V] -> [L, B]."""
    softmax_mature = F.softmax(final_logits, dim=-1)  # [B, V]
    softmax_premature = F.softmax(premature_logits, dim=-1)  # [L, B, V]
    avg_dist = 0.5 * (softmax_mature[None, :, :] + softmax_premature)  # [L, B, V]
    log_softmax_mature = F.log_softmax(final_logits, dim=-1)  # [B, V]
    log_softmax_premature = F.log_softmax(premature_logits, dim=-1)  # [L, B, V]
    # 4.55.4 calls F.kl_div(input, target), which is xlogy(target, target) - target * input, twice with the same
    # target: its first term is computed once here, as p * log p with 0 where p = 0 (xlogy's values, to the last
    # bit or so: torch's vectorised log may round differently), several times faster on CPU
    avg_log_avg = (avg_dist * avg_dist.log()).masked_fill_(avg_dist == 0, 0.0)  # [L, B, V]
    kl1 = (avg_log_avg - avg_dist * log_softmax_mature[None, :, :]).mean(-1)  # [L, B]
    kl2 = (avg_log_avg - avg_dist * log_softmax_premature).mean(-1)  # [L, B]
    return 0.5 * (kl1 + kl2)  # [L, B]


def layer_logits(lm_head, hidden_states, layers: list[int], device) -> torch.Tensor:
    """The LM head read at each of ``layers``' last position, as 4.55.4 reads the candidate layers (no final norm;
    ``-1``, the final hidden state, is already normed), in one call: the head's weights are read once per step,
    not once per layer. ``hidden_states`` is the model's tuple of [B, S, H]; returns [L, B, V] on ``device``."""
    weight_device = lm_head.weight.device  # with device_map="auto" the layers may sit on other devices
    stacked = torch.stack([hidden_states[layer][:, -1, :].to(weight_device) for layer in layers])  # [L, B, H]
    n_layers, batch, hidden = stacked.shape
    return head_rows(lm_head, stacked.view(n_layers * batch, hidden)).view(n_layers, batch, -1).to(device)  # [L, B, V]


def select_contrast(layers: list[int], premature: torch.Tensor, final_logits: torch.Tensor):
    """4.55.4 ``_dola_select_contrast``: pick the premature layer (one for the whole batch: the largest
    batch-mean JS divergence) and contrast it with the final layer. ``premature`` [L, B, V] holds the candidate
    layers' logits in ``layers`` order. Returns ``(contrasted [B, V], layer, js [L, B] or None)``; with a single
    candidate layer no divergence is needed to choose, so none is computed (``None``)."""
    js = None
    if len(layers) == 1:
        index = 0
    else:
        js = js_divergences(final_logits, premature)  # [L, B]
        index = int(js.mean(-1).argmax().item())
    final_normalized, base_normalized = _relative_top_filter(final_logits, premature[index])
    return final_normalized - base_normalized, layers[index], js


@rule
def _settings(env: Env) -> None:
    """``dola_layers`` wherever it is set (transformers ignores it, with a warning, outside greedy search and
    sampling); where DoLa runs, what its loop needs of the model."""
    layers = env.cfg.dola_layers
    if layers is None:
        return
    model = env.model
    check(not model.config.is_encoder_decoder, "dola_layers",
          "unset for encoder-decoder models (DoLa contrasts the layers of a decoder-only model)", layers)
    n_layers = env.text_config.num_hidden_layers
    if isinstance(layers, str):
        check(layers in ("low", "high"), "dola_layers", '"low", "high" or a list of layer indices', layers)
    else:
        check(isinstance(layers, (list, tuple)) and len(layers) > 0
              and all(is_int(i) and 0 <= i < n_layers for i in layers),
              "dola_layers", f'"low", "high" or a non-empty list of layer indices in [0, {n_layers - 1}]', layers)
    if env.mode != GenerationMode.DOLA_GENERATION:
        return
    if getattr(model, "_is_stateful", False):
        raise ValueError(f"DoLa decoding is not supported with stateful models; got {type(model).__name__}")
    if model.get_output_embeddings() is None:
        raise ValueError(f"DoLa needs a model with an output embedding (LM head); {type(model).__name__} has none")
    if not candidate_layers(model, layers):
        raise ValueError(f"`dola_layers` must name at least one layer below the final one "
                         f"({model.config.get_text_config().num_hidden_layers}); got {layers!r}")


@register(GenerationMode.DOLA_GENERATION)
def dola(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. setup (the settings and the model were checked at the boundary, ``_settings``; the lens is this run's)
    lm_head = model.get_output_embeddings()
    layers = candidate_layers(model, generation_config.dola_layers)
    observer = ctx.observer
    if observer.lens and lens_problem(model):
        raise ValueError(f"`lens` must be off for this model: {lens_problem(model)}")
    # every forward returns the hidden states, which the candidate layers are read from
    model_kwargs["output_hidden_states"] = True
    head, prefill = None, True  # head, after the prefill: the LM head, when the final layer is read with the others

    # 2. prefill: the whole prompt in one forward
    forward = Forward(model, input_ids, generation_config, model_kwargs)
    rows = Rows(input_ids, generation_config, stopping_criteria, observer)

    with model._optimize_model_for_decode():
        while True:
            # a. the next token's outputs (the prefill's on the first step)
            outputs, model_kwargs = forward(input_ids, model_kwargs)

            # b. final-layer logits and the LM head read at every candidate layer at once (as 4.55.4: no final norm);
            #    after the prefill, where the model's logits are its plain head on the final hidden state, the final
            #    layer is read in the same call and the model computes no logits of its own
            if head is None:
                final_logits = outputs.logits[:, -1, :].float()  # [B, V]
                premature = layer_logits(lm_head, outputs.hidden_states, layers, final_logits.device)  # [L, B, V]
                if prefill and "logits_to_keep" in model_kwargs and plain_head(model, outputs) is not None:
                    head, model_kwargs["logits_to_keep"] = lm_head, no_logits(input_ids.device)
                prefill = False
            else:
                both = layer_logits(head, outputs.hidden_states, [*layers, -1], input_ids.device)  # [L+1, B, V]
                premature, final_logits = both[:-1], both[-1].float()  # [L, B, V], [B, V]
            states = last_states(outputs.hidden_states) if observer.lens else None  # [L, B, H]
            del outputs

            # c. contrast, then the processors on the contrasted scores
            contrasted, chosen_layer, js = select_contrast(layers, premature, final_logits)  # [B, V]
            contrasted = contrasted.to(input_ids.device)
            scores, stages = observer.process(input_ids, contrasted, logits_processor)  # [B, V]

            # d. token selection: the run's generator draws when sampling
            next_tokens = ctx.select(scores, generation_config.do_sample)  # [B]

            # e. append, record, stream, check stopping
            def record(rec, chosen):
                divergences = js if js is not None else js_divergences(final_logits, premature)  # [L, B]
                rec.emit(rec.row_steps(contrasted, scores, stages, chosen), cache=model_kwargs.get("cache"),
                         dola=_steps(rec, layers, divergences, chosen_layer, final_logits, contrasted, chosen),
                         lens=rec.lens_rows(states, final_logits, chosen))

            input_ids, done = rows.append(input_ids, next_tokens, record)
            if done:
                break

    observer.end()
    return input_ids


def _steps(rec, layers, js, chosen_layer, final_logits, contrasted, chosen) -> list[DolaStep]:
    """One ``DolaStep`` per row: the divergences of the candidate layers (``js`` [L, B]) and the top tokens of the
    contrast (``logit``/``prob``: final layer; ``score``/``prob_after``: contrasted)."""
    per_row = js.T.tolist()  # [B, L]
    out = []
    for row in range(final_logits.shape[0]):
        ids = rec.candidate_ids(final_logits[row], contrasted[row], chosen[row])
        out.append(DolaStep(list(layers), per_row[row], chosen_layer,
                            rec.candidates(final_logits[row], contrasted[row], ids, row)))
    return out
