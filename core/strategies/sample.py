"""Greedy search and multinomial sampling: one token per row per step (transformers ``_sample``). With the logit
lens asked for (``ListRecorder(lens=True)``), every forward also returns the hidden states, read per layer."""

from __future__ import annotations

import torch
from transformers.generation.utils import GenerationMode

from ..lens import last_states, lens_problem
from . import register
from .steps import Forward, Rows


@register(GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
def sample(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. setup, and the prefill: the whole prompt in one forward
    observer = ctx.observer
    if observer.lens:
        problem = lens_problem(model)
        if problem:
            raise ValueError(f"`lens` must be off for this model: {problem}")
        model_kwargs["output_hidden_states"] = True
    forward = Forward(model, input_ids, generation_config, model_kwargs)
    rows = Rows(input_ids, generation_config, stopping_criteria, observer)

    with model._optimize_model_for_decode():
        while True:
            # a. the next token's logits (the prefill's on the first step)
            outputs, model_kwargs = forward(input_ids, model_kwargs)

            # b. processors on float32 logits
            logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)  # [B, V]
            states = last_states(outputs.hidden_states) if observer.lens else None  # [L, B, H]
            del outputs
            scores, stages = observer.process(input_ids, logits, logits_processor)  # [B, V]

            # c. token selection: the run's generator draws when sampling
            next_tokens = ctx.select(scores, generation_config.do_sample)  # [B]

            # d. append, record, stream, check stopping
            def record(rec, chosen):
                rec.emit(rec.row_steps(logits, scores, stages, chosen), cache=model_kwargs.get("cache"),
                         lens=rec.lens_rows(states, logits, chosen))

            input_ids, done = rows.append(input_ids, next_tokens, record)
            if done:
                break

    observer.end()
    return input_ids
