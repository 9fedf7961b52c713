"""Assisted (speculative) decoding: a draft proposes several tokens, the main model scores them all in
one forward pass and keeps the drafts it agrees with plus one token of its own (transformers
``_assisted_decoding``).

Drafts come from transformers' candidate generators, chosen by ``model._get_candidate_generator``:
- ``AssistedCandidateGenerator``: an assistant model with the main model's vocabulary (``assistant_model``);
- ``PromptLookupCandidateGenerator``: n-grams of the text so far (``prompt_lookup_num_tokens``);
- universal assisted decoding: an assistant with another tokenizer, re-tokenized through text (greedy) or
  through the vocabularies' overlap (sampling), when ``tokenizer`` and ``assistant_tokenizer`` are given.

Verification: greedy keeps drafts while they equal the main model's arg-max; sampling with draft logits
accepts draft i with probability min(1, p_i / q_i) and resamples the first rejected position from
max(p - q, 0) (``_speculative_sampling``, algorithm 1 of the speculative decoding paper); sampling
without draft logits (prompt lookup) samples every position and keeps drafts while they match.

Length: nothing is appended past ``max_length`` (nor after an EOS). transformers 5.24's
``PromptLookupCandidateGenerator`` still drafts past the budget (its cap compares slice indices of the
text so far with ``max_length`` and never binds, the bug of transformers PRs #46993 / #47195), but its
``_assisted_decoding`` trims the verified tokens to the budget, so ``generate`` never returns more than
``max_new_tokens``; this loop does the same, which keeps sampled tokens identical to transformers'
(cutting the draft instead would change how many random numbers the verification draws).

Records (when recording), one per verification: ``rows`` holds one ``RowStep`` per appended token, in
order, all for batch row 0, with the main model's verification logits at that position; ``assisted``
holds one ``AssistedStep``: ``accepted + rejected == drafted`` and the appended tokens are
``accepted + corrected``; ``rejected`` starts with the ``cut`` drafts the main model agreed with but that
fell past ``max_length`` or after an EOS.

Randomness: prompt lookup's sampled verification draws from the run's generator. With a draft model, sampling
draws inside transformers (the assistant's ``generate``, ``_speculative_sampling``) from torch's default
generator, so the loop runs inside ``core.rng.global_generator``: the run's generator state is lent to the
default one under a process-wide lock, and concurrent runs never see each other's draws.

The assistant's settings (``num_assistant_tokens``, ``num_assistant_tokens_schedule``,
``assistant_confidence_threshold``) are this run's (``ctx.assistant.settings``): transformers 5.x reads them from
``assistant_model.generation_config``, so the loop drafts with a view of the assistant (the same modules and
weights, its own ``generation_config``). The caller's assistant is never changed; unlike transformers, the
"heuristic" schedule's adapted draft length is therefore not carried over to the next generation.

One difference from transformers, on purpose: universal speculative *sampling* prunes the assistant's LM
head and wraps its input embeddings in place (``AssistantToTargetTranslator``), which leaves the assistant
unusable as a model of its own; here it works on a clone of the assistant that shares its weights. (Its
tokens cannot match transformers' for a seed anyway: transformers draws random numbers while pruning, on
the first call only, and orders the vocabularies' overlap as ``get_vocab()`` returns it, a hash order that
changes from call to call; here the same seed gives the same tokens within a process.)

Under a step scheduler (``core.scheduler``) a seated run's main-model forwards run alone, between the other runs'
batched steps (the model lock): each verifies several draft tokens per row at once, not the one new token per row a
batched step carries; the drafts themselves come from transformers' own ``generate`` on the assistant. In the
engine's busy loop (``core.engine.loop``) they run in the run's turn, one forward a pass; a run that samples with a
draft model holds torch's default generator for its whole loop, so it keeps the turn until it ends (another run of
the loop's thread could be waiting for that generator).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import weakref

import torch
from transformers.generation.candidate_generator import (
    AssistedCandidateGenerator,
    AssistedCandidateGeneratorDifferentTokenizers,
    AssistantVocabTranslatorCache,
    PromptLookupCandidateGenerator,
    _prepare_attention_mask,
    _prepare_position_ids,
    _prepare_token_type_ids,
)
from transformers.generation.utils import GenerationMode, _speculative_sampling

from ..records import AssistedStep
from . import register

# Where a draft came from, by candidate generator class; the first match (in this order) names it.
SOURCES: dict[type, str] = {
    PromptLookupCandidateGenerator: "prompt_lookup",
    AssistedCandidateGeneratorDifferentTokenizers: "universal",  # also UniversalSpeculativeDecodingGenerator
    AssistedCandidateGenerator: "assistant",
}

# Caller's assistant -> the clone universal speculative sampling may prune (see the module docstring).
_SHIELDED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@register(GenerationMode.ASSISTED_GENERATION)
def assisted(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. checks transformers makes in `generate` and `_assisted_decoding`
    assistance = ctx.assistant
    _check(model, input_ids, assistance)
    cache = model_kwargs.get("cache")
    if cache is None:
        raise ValueError("`use_cache` must be True for assisted decoding: the drafts' keys and values are "
                         f"cropped from the cache when rejected; got use_cache={generation_config.use_cache}")
    cache.activate_past_recording()  # sliding-window layers keep what a crop may need to restore
    do_sample = generation_config.do_sample

    # 2. the draft source, exactly as transformers picks it, drafting with this run's assistant settings
    draws_globally = do_sample and assistance.model is not None
    with ctx.drawing_globally() if draws_globally else contextlib.nullcontext():
        assistant_model = assistance.model
        if (assistant_model is not None and do_sample
                and assistance.target_tokenizer is not None and assistance.tokenizer is not None):
            assistant_model = _shielded(model, assistant_model, assistance.target_tokenizer, assistance.tokenizer)
        if assistant_model is not None:
            assistant_model = _run_view(assistant_model, assistance.settings)
        candidate_generator = model._get_candidate_generator(
            generation_config=generation_config, input_ids=input_ids, inputs_tensor=assistance.inputs_tensor,
            assistant_model=assistant_model, logits_processor=logits_processor,
            target_tokenizer=assistance.target_tokenizer, assistant_tokenizer=assistance.tokenizer,
            model_kwargs=model_kwargs)
        input_ids = _draft_and_verify(model, input_ids, candidate_generator, logits_processor, stopping_criteria,
                                      generation_config, ctx, model_kwargs)
    ctx.observer.end()
    return input_ids


def _draft_and_verify(model, input_ids, candidate_generator, logits_processor, stopping_criteria, generation_config,
                      ctx, model_kwargs):
    """3. the loop: draft, verify in one forward, accept, append; returns the sequences [1, S']."""
    source = next((name for cls, name in SOURCES.items() if isinstance(candidate_generator, cls)), "assistant")
    observer = ctx.observer
    eos_token_id = generation_config._eos_token_tensor
    do_sample = generation_config.do_sample
    ensemble_weight = generation_config.assistant_ensemble_weight
    unfinished = torch.ones(1, dtype=torch.long, device=input_ids.device)  # [B=1]
    is_first_iteration = True
    outputs = None
    n_matches = 0
    model_forward = (model.get_compiled_call(generation_config.compile_config)
                     if model._valid_auto_compile_criteria(model_kwargs, generation_config) else model.__call__)

    while True:
        cur_len = input_ids.shape[1]

        # a. draft
        if candidate_generator.requires_model_outputs:
            candidate_input_ids, candidate_logits = candidate_generator.get_candidates(
                input_ids, model_kwargs=model_kwargs, model_outputs=outputs,
                is_first_iteration=is_first_iteration, n_last_matches=n_matches)
        else:
            candidate_input_ids, candidate_logits = candidate_generator.get_candidates(input_ids)
        candidate_input_ids = candidate_input_ids.to(model.device)  # [1, S+C]
        candidate_length = candidate_input_ids.shape[1] - cur_len
        if candidate_logits is not None:
            candidate_logits = candidate_logits.to(model.device)  # [1, C, V]

        # b. one forward of the main model over the drafts: C + 1 next-token distributions
        candidate_kwargs = copy.copy(model_kwargs)
        candidate_kwargs = _prepare_attention_mask(candidate_kwargs, candidate_input_ids.shape[1],
                                                   model.config.is_encoder_decoder)
        candidate_kwargs = _prepare_token_type_ids(candidate_kwargs, candidate_input_ids.shape[1])
        if (position_ids := candidate_kwargs.get("position_ids")) is not None and candidate_length > 0:
            candidate_kwargs = _prepare_position_ids(candidate_kwargs, candidate_length + position_ids.shape[-1],
                                                     model.config.is_encoder_decoder)
        model_inputs = model.prepare_inputs_for_generation(
            candidate_input_ids, next_sequence_length=None if is_first_iteration else candidate_length + 1,
            is_first_iteration=is_first_iteration, **candidate_kwargs)
        if "logits_to_keep" in model_inputs:
            model_inputs["logits_to_keep"] = candidate_length + 1
        if candidate_generator.requires_model_outputs:
            model_inputs |= candidate_generator.model_kwargs_overrides
        if is_first_iteration:  # the prefill is neither compiled nor optimised for decoding, as in transformers
            outputs = model(**model_inputs)
        else:
            with model._optimize_model_for_decode():
                outputs = model_forward(**model_inputs)
        if is_first_iteration and not outputs.cache.is_croppable:
            raise ValueError("assisted decoding needs a cache that can be cropped back after rejected drafts; "
                             f"got {type(outputs.cache).__name__}, which cannot")

        # c. processors, position by position, on float32 logits
        raw = outputs.logits[:, -candidate_length - 1:].to(dtype=torch.float32, device=input_ids.device)  # [1, C+1, V]
        new_logits = raw.clone()  # [1, C+1, V]
        stages = []
        for i in range(candidate_length + 1):
            new_logits[:, i], stage = observer.process(candidate_input_ids[:, :cur_len + i], new_logits[:, i],
                                                       logits_processor)
            stages.append(stage)

        # d. accept drafts
        if do_sample and candidate_logits is not None:  # speculative sampling
            valid_tokens, n_matches = _speculative_sampling(candidate_input_ids, candidate_logits, candidate_length,
                                                            new_logits, assistant_ensemble_weight=ensemble_weight)
        else:  # keep drafts while they equal the main model's choice
            if do_sample:
                selected = ctx.multinomial(new_logits.softmax(dim=-1)[0], 1).squeeze(1)[None, :]
            elif ensemble_weight is not None and candidate_logits is not None:
                p_probs = new_logits[:, :candidate_length].softmax(dim=-1)
                q_probs = candidate_logits.softmax(dim=-1)
                nu_probs = ensemble_weight * p_probs + (1.0 - ensemble_weight) * q_probs
                selected = torch.cat([nu_probs.argmax(dim=-1), new_logits[:, candidate_length:].argmax(dim=-1)], -1)
            else:
                selected = new_logits.argmax(dim=-1)  # [1, C+1]
            drafts = candidate_input_ids[:, cur_len:]  # [1, C]
            n_matches = int(((~(drafts == selected[:, :-1])).cumsum(dim=-1) < 1).sum())
            valid_tokens = selected[:, :n_matches + 1]  # [1, n+1]
        n_agreed = int(n_matches)  # drafts the main model agreed with, before the cuts below

        # e. nothing past max_length, nothing after an EOS
        valid_tokens = valid_tokens[:, :generation_config.max_length - cur_len]
        if eos_token_id is not None:
            eos_positions = torch.isin(valid_tokens[0], eos_token_id.to(valid_tokens.device)).nonzero()
            if eos_positions.numel() > 0:
                valid_tokens = valid_tokens[:, :eos_positions[0].item() + 1]
        n_accepted = min(n_agreed, valid_tokens.shape[1])  # drafts among the appended tokens
        n_matches = valid_tokens.shape[1] - 1

        # f. append, stream, roll the cache back to the appended tokens, adapt the draft length
        input_ids = torch.cat((input_ids, valid_tokens), dim=-1)  # [1, S+n+1]
        observer.put(valid_tokens)
        outputs.cache.crop(-(candidate_length - n_matches))
        candidate_generator.update_candidate_strategy(input_ids, new_logits, n_matches)
        model_kwargs = model._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder, num_new_tokens=n_matches + 1)

        # g. record, check stopping
        def record(rec):
            drafted = candidate_input_ids[0, cur_len:].tolist()
            appended = valid_tokens[0].tolist()
            rows = [rec.row_steps(raw[:, j], new_logits[:, j], stages[j], [[token]])[0]
                    for j, token in enumerate(appended)]
            step = AssistedStep(drafted=drafted, accepted=drafted[:n_accepted], rejected=drafted[n_accepted:],
                                corrected=appended[n_accepted:], drafted_text=rec.texts.row_draft(0, drafted),
                                next_draft_length=_next_draft_length(candidate_generator, generation_config),
                                source=source, cut=n_agreed - n_accepted)
            rec.emit(rows, cache=model_kwargs.get("cache"), assisted=[step])

        observer.record(record)
        unfinished = unfinished & ~stopping_criteria(input_ids, None)
        is_first_iteration = False
        if unfinished.max() == 0:
            return input_ids


def _check(model, input_ids, assistance) -> None:
    """What transformers refuses for assisted decoding (``num_return_sequences`` is checked in ``core.config``)."""
    if input_ids.shape[0] != 1:
        raise ValueError(f"`input_ids` must hold 1 row for assisted decoding; got {input_ids.shape[0]} rows")
    if model._is_stateful:
        raise ValueError(f"assisted decoding needs a model whose state can be rolled back to verify drafts; "
                         f"got the stateful {type(model).__name__}")
    assistant = assistance.model
    if assistant is not None and assistance.tokenizer is not None and (
            model.config.get_text_config().vocab_size == assistant.config.get_text_config().vocab_size):
        raise ValueError("`assistant_tokenizer` must be None when the assistant shares the main model's vocabulary "
                         f"({model.config.get_text_config().vocab_size} tokens); got a tokenizer")


def _shielded(model, assistant, tokenizer, assistant_tokenizer):
    """A clone of ``assistant`` sharing its weights, for universal speculative sampling to prune in place.
    One clone per assistant, with the translator transformers caches per tokenizer pair built for it."""
    clone = _SHIELDED.get(assistant)
    if clone is None:
        shared = {id(t): t for t in itertools.chain(assistant.parameters(), assistant.buffers())}
        clone = _SHIELDED[assistant] = copy.deepcopy(assistant, shared)
        cached = AssistantVocabTranslatorCache._cache.get(tokenizer)
        if cached is not None:  # a translator built for another assistant object would not prune this clone
            cached.pop(assistant_tokenizer, None)
        # pruning builds an nn.Linear, whose initialisation draws random numbers: build it aside, so that
        # the same seed gives the same tokens on the first call and on later ones
        with torch.random.fork_rng():
            AssistantVocabTranslatorCache.get_translator(
                tokenizer, assistant_tokenizer, model.config.get_text_config().vocab_size,
                assistant_model=clone, assistant_prune_lm_head=True)
    return clone


def _next_draft_length(candidate_generator, generation_config) -> int:
    """How many tokens the source will draft next (before the cut at ``max_length - 1``)."""
    if isinstance(candidate_generator, PromptLookupCandidateGenerator):
        return int(generation_config.prompt_lookup_num_tokens)
    return int(getattr(candidate_generator, "num_assistant_tokens", 0) or 0)


def _run_view(assistant, settings: dict):
    """The assistant as one run drafts with: the same modules and weights (a shallow copy), its own
    ``generation_config`` with the run's ``settings`` on top, so that nothing of the shared model changes."""
    view = copy.copy(assistant)
    view.generation_config = copy.deepcopy(assistant.generation_config)
    for name, value in settings.items():
        setattr(view.generation_config, name, value)
    return view
