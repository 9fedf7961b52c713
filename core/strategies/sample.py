"""Greedy search and multinomial sampling: one token per row per step (transformers ``_sample``)."""

from __future__ import annotations

import torch
from transformers.generation.utils import GenerationMode

from . import forward_last_token, register


@register(GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
def sample(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. setup
    pad_token_id = generation_config._pad_token_tensor
    has_eos_stopping_criteria = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    do_sample = generation_config.do_sample
    batch_size = input_ids.shape[0]
    unfinished = torch.ones(batch_size, dtype=torch.long, device=input_ids.device)  # [B]
    if pad_token_id is not None:
        pad_token_id = pad_token_id.to(input_ids.device)

    # 2. prefill: the whole prompt in one forward
    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    prefill_consumed = False

    with model._optimize_model_for_decode():
        while True:
            # a. one forward for the last token (the prefill already gave the first step's logits)
            if prefill_consumed:
                outputs = forward_last_token(model, input_ids, model_kwargs)
            prefill_consumed = True
            model_kwargs = model._update_model_kwargs_for_generation(
                outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder)

            # b. processors on float32 logits
            logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)  # [B, V]
            scores, stages = ctx.process(input_ids, logits, logits_processor)  # [B, V]

            # c. token selection
            if do_sample:
                probs = torch.nn.functional.softmax(scores, dim=-1)
                next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)  # [B]
            else:
                next_tokens = torch.argmax(scores, dim=-1)  # [B]
            if has_eos_stopping_criteria:  # finished rows get padding
                next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)

            # d. append, record, stream, check stopping
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)  # [B, S+1]
            if ctx.recording:
                ctx.emit(ctx.row_steps(logits, scores, stages, [[t] for t in next_tokens.tolist()]),
                         cache=model_kwargs.get("cache"))
            ctx.put(next_tokens)
            unfinished = unfinished & ~stopping_criteria(input_ids, None)
            del outputs
            if unfinished.max() == 0:
                break

    ctx.end_stream()
    return input_ids
