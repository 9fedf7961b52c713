"""Beam search and beam sampling: transformers 5.x ``_beam_search``, recording the beam tree.

Every step keeps the top ``beams_to_keep`` (at least 2 * K) continuations of all K running beams of a batch
row, by accumulated log-probability (or sampled without replacement from it, ``do_sample=True``), then
1. the best K that did not hit a stopping criterion become the running beams of the next step;
2. those of the top K that did hit one (EOS, max length) compete, by ``score / length ** length_penalty``,
   for the K slots of the finished hypotheses; the best of these are returned.
The three selections are the functions below; they are transformers' own, except that each also returns the
indices it chose, so the beam tree records parents and fates where they are decided.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from transformers.generation.utils import GenerationMixin, GenerationMode

from ..records import BeamNode
from . import register
from .beam_tree import (ROOT, Best, BeamTree, flatten_beams, gather_beams, normalized_score, split_flat_indices,
                        unflatten_beams)
from .steps import Forward, reorder_cache


def top_k_continuations(*, accumulated_log_probs, running_sequences, running_beam_indices, cur_len,
                        decoder_prompt_len, do_sample, beams_to_keep, num_beams, batch_size,
                        multinomial=torch.multinomial):
    """transformers' ``_get_top_k_continuations``, also returning each continuation's source beam and token
    (``multinomial(probs, n)``: how beam sampling draws, ``RunContext.multinomial`` from the run's generator).
    accumulated_log_probs [B, K*V] -> (log_probs, sequences, beam_indices, source_beams, tokens), 2K = beams_to_keep:
    [B, 2K], [B, 2K, S_max], [B, 2K, S_max - prompt], [B, 2K], [B, 2K]."""
    if do_sample:  # sampled without replacement, then sorted: the same RNG draws as transformers
        probs = nn.functional.softmax(accumulated_log_probs, dim=-1)
        topk_indices = multinomial(probs, beams_to_keep)
        topk_log_probs = torch.gather(input=accumulated_log_probs, dim=1, index=topk_indices)
        topk_log_probs, order = topk_log_probs.sort(dim=-1, descending=True)
        topk_indices = topk_indices.gather(dim=-1, index=order)
    else:
        topk_log_probs, topk_indices = torch.topk(accumulated_log_probs, k=beams_to_keep)

    vocab_size = accumulated_log_probs.shape[-1] // num_beams
    source_beams, topk_ids = split_flat_indices(topk_indices, vocab_size)  # [B, 2K] each
    topk_running_beam_indices = gather_beams(running_beam_indices, source_beams)
    topk_running_sequences = gather_beams(running_sequences, source_beams)
    topk_running_sequences[:, :, cur_len] = topk_ids

    # beam indices are stored with the batch offset: real beam index = beam index % num_beams
    batch_offset = torch.arange(batch_size, device=topk_ids.device).view(-1, 1) * num_beams
    topk_running_beam_indices[:, :, cur_len - decoder_prompt_len] = source_beams + batch_offset
    return topk_log_probs, topk_running_sequences, topk_running_beam_indices, source_beams, topk_ids


def running_beams_for_next_iteration(*, topk_log_probs, topk_running_sequences, topk_running_beam_indices,
                                     next_token_hits_stopping_criteria, num_beams):
    """transformers' ``_get_running_beams_for_next_iteration``, also returning the chosen continuations [B, K]
    (indices into the 2K)."""
    # just-finished continuations must not run on: a very large negative score
    topk_running_log_probs = topk_log_probs + next_token_hits_stopping_criteria.to(torch.float32) * -1.0e9
    next_topk_indices = torch.topk(topk_running_log_probs, k=num_beams)[1]  # [B, K]
    running_sequences = gather_beams(topk_running_sequences, next_topk_indices)
    running_beam_scores = gather_beams(topk_running_log_probs, next_topk_indices)
    running_beam_indices = gather_beams(topk_running_beam_indices, next_topk_indices)
    return running_sequences, running_beam_scores, running_beam_indices, next_topk_indices


def update_finished_beams(*, sequences, topk_running_sequences, beam_scores, topk_log_probs, beam_indices,
                          topk_running_beam_indices, is_early_stop_heuristic_unsatisfied, is_sent_finished,
                          next_token_hits_stopping_criteria, top_num_beam_mask, num_beams, cur_len, decoder_prompt_len,
                          length_penalty, early_stopping):
    """transformers' ``_update_finished_beams``, also returning the selection [B, K] from the K finished
    hypotheses followed by the 2K continuations (index >= K: continuation ``index - K`` just finished)."""
    # only the top K continuations may finish; the rest only back up the running beams
    did_top_num_beams_just_finished = next_token_hits_stopping_criteria & top_num_beam_mask[None, :]

    topk_log_probs = normalized_score(topk_log_probs, cur_len + 1 - decoder_prompt_len, length_penalty)
    # no new hypothesis when the batch is full under early_stopping=True, or cannot improve any more
    beams_in_batch_are_full = torch.all(is_sent_finished, axis=-1, keepdims=True) & (early_stopping is True)
    topk_log_probs += beams_in_batch_are_full.to(torch.float32) * -1.0e9
    topk_log_probs += (~is_early_stop_heuristic_unsatisfied).to(torch.float32) * -1.0e9
    topk_log_probs += (~did_top_num_beams_just_finished) * -1.0e9

    merged_sequences = torch.cat((sequences, topk_running_sequences), dim=1)  # [B, 3K, S_max]
    merged_scores = torch.cat((beam_scores, topk_log_probs), dim=1)  # [B, 3K]
    merged_beam_indices = torch.cat((beam_indices, topk_running_beam_indices), dim=1)
    merged_is_sent_finished = torch.cat((is_sent_finished, did_top_num_beams_just_finished), dim=1)
    topk_merged_indices = torch.topk(merged_scores, k=num_beams)[1]  # [B, K]
    sequences = gather_beams(merged_sequences, topk_merged_indices)
    beam_scores = gather_beams(merged_scores, topk_merged_indices)
    beam_indices = gather_beams(merged_beam_indices, topk_merged_indices)
    is_sent_finished = gather_beams(merged_is_sent_finished, topk_merged_indices)
    return sequences, beam_scores, beam_indices, is_sent_finished, topk_merged_indices


@register(GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE, family="beam")
def beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. beam search values
    pad_token_id = generation_config._pad_token_tensor
    eos_token_id = generation_config._eos_token_tensor
    do_sample = generation_config.do_sample
    early_stopping = generation_config.early_stopping
    length_penalty = generation_config.length_penalty
    max_length = generation_config.max_length
    num_beams = generation_config.num_beams
    num_return_sequences = generation_config.num_return_sequences
    if generation_config.low_memory:
        raise ValueError("`low_memory` must be False or None for beam search (transformers 5.x dropped sequential "
                         "beam search); got True")

    batch_size_unflattened, cur_len = input_ids.shape[:2]  # [B*K, S]
    batch_size = batch_size_unflattened // num_beams
    decoder_prompt_len = cur_len
    this_peer_finished = False

    # Keep the top (n_eos + 1) * K continuations, so that K of them run on even if the top K all end in an EOS.
    n_eos_tokens = eos_token_id.shape[0] if eos_token_id is not None else 0
    beams_to_keep = max(2, 1 + n_eos_tokens) * num_beams
    top_num_beam_mask = torch.cat((torch.ones((num_beams), dtype=torch.bool),
                                   torch.zeros((beams_to_keep - num_beams), dtype=torch.bool)), dim=0)
    top_num_beam_mask = top_num_beam_mask.to(input_ids.device)  # [2K]: the top K may finish

    # 2. running tensors and static-shaped placeholders
    output_fill_value = pad_token_id or eos_token_id[0] if eos_token_id is not None else -1
    running_sequences = torch.full((batch_size, num_beams, max_length), fill_value=output_fill_value,
                                   dtype=torch.int64, device=input_ids.device)  # [B, K, S_max]
    running_sequences[:, :, :cur_len] = unflatten_beams(input_ids, batch_size, num_beams)
    sequences = running_sequences.detach().clone()  # finished hypotheses [B, K, S_max]

    # Only the first beam starts at 0: the others would repeat its tokens.
    running_beam_scores = torch.zeros((batch_size, num_beams), dtype=torch.float, device=input_ids.device)  # [B, K]
    running_beam_scores[:, 1:] = -1e9
    beam_scores = torch.full((batch_size, num_beams), fill_value=-1e9, dtype=torch.float, device=input_ids.device)
    is_sent_finished = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=input_ids.device)  # [B, K]
    is_early_stop_heuristic_unsatisfied = torch.ones((batch_size, 1), dtype=torch.bool, device=input_ids.device)
    next_token_hits_stopping_criteria = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=input_ids.device)
    running_beam_indices = torch.full((batch_size, num_beams, max_length - cur_len), fill_value=-1, dtype=torch.int32,
                                      device=input_ids.device)  # [B, K, S_max - prompt]
    beam_indices = running_beam_indices.detach().clone()

    # 3. recording state: the tree, and per batch the node of each finished-hypothesis slot (None: not recorded)
    observer = ctx.observer
    recording = observer.record(lambda rec: _Recording(batch_size, num_beams, num_return_sequences, length_penalty,
                                                       top_num_beam_mask, rec.texts))

    # 4. prefill: the whole prompt in one forward
    forward = Forward(model, input_ids, generation_config, model_kwargs,
                      is_first_iteration=not generation_config.is_assistant)

    # 5. the generation loop
    while not this_peer_finished:
        # a. the last token of every beam (the prefill's outputs on the first step)
        flat_running_sequences = flatten_beams(running_sequences[:, :, :cur_len])  # [B*K, S]
        model_outputs, model_kwargs = forward(flat_running_sequences, model_kwargs)
        logits = model_outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=input_ids.device)  # [B*K, V]
        del model_outputs  # the first step's logits cover the whole prompt

        # b. log-probs through the processors, accumulated onto each beam's score
        log_probs_raw = nn.functional.log_softmax(logits, dim=-1)  # [B*K, V]
        log_probs, stages = observer.process(flat_running_sequences, log_probs_raw, logits_processor)  # [B*K, V]
        processed = log_probs
        log_probs = unflatten_beams(log_probs, batch_size, num_beams)  # [B, K, V]
        log_probs = log_probs + running_beam_scores[:, :, None]
        log_probs = torch.reshape(log_probs, (batch_size, -1))  # [B, K*V]

        # c. top 2K continuations over all beams of a batch row
        topk_log_probs, topk_running_sequences, topk_running_beam_indices, source_beams, topk_ids = top_k_continuations(
            accumulated_log_probs=log_probs,
            running_sequences=running_sequences,
            running_beam_indices=running_beam_indices,
            cur_len=cur_len,
            decoder_prompt_len=decoder_prompt_len,
            do_sample=do_sample,
            beams_to_keep=beams_to_keep,
            num_beams=num_beams,
            batch_size=batch_size,
            multinomial=ctx.multinomial,
        )  # [B, 2K], [B, 2K, S_max], [B, 2K, S_max - prompt], [B, 2K], [B, 2K]

        # d. which continuations hit a stopping criterion
        next_token_hits_stopping_criteria = stopping_criteria(
            flatten_beams(topk_running_sequences[:, :, : cur_len + 1]), None)  # [B*2K]
        next_token_hits_stopping_criteria = unflatten_beams(next_token_hits_stopping_criteria, batch_size,
                                                            beams_to_keep)  # [B, 2K]

        # e. the best K unfinished continuations run on
        running_sequences, running_beam_scores, running_beam_indices, next_running = running_beams_for_next_iteration(
            topk_log_probs=topk_log_probs,
            topk_running_sequences=topk_running_sequences,
            topk_running_beam_indices=topk_running_beam_indices,
            next_token_hits_stopping_criteria=next_token_hits_stopping_criteria,
            num_beams=num_beams,
        )  # [B, K, S_max], [B, K], [B, K, S_max - prompt], [B, K]

        # f. finished continuations replace worse finished hypotheses
        sequences, beam_scores, beam_indices, is_sent_finished, finished_choice = update_finished_beams(
            sequences=sequences,
            topk_running_sequences=topk_running_sequences,
            beam_scores=beam_scores,
            topk_log_probs=topk_log_probs,
            beam_indices=beam_indices,
            topk_running_beam_indices=topk_running_beam_indices,
            is_early_stop_heuristic_unsatisfied=is_early_stop_heuristic_unsatisfied,
            is_sent_finished=is_sent_finished,
            next_token_hits_stopping_criteria=next_token_hits_stopping_criteria,
            top_num_beam_mask=top_num_beam_mask,
            num_beams=num_beams,
            cur_len=cur_len,
            decoder_prompt_len=decoder_prompt_len,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
        )  # [B, K, S_max], [B, K], [B, K, S_max - prompt], [B, K], [B, K]

        # g. reorder the cache to the running beams; stop when no beam can improve the finished ones
        reorder_cache(model, model_kwargs, flatten_beams(running_beam_indices[..., cur_len - decoder_prompt_len]))
        cur_len = cur_len + 1
        is_early_stop_heuristic_unsatisfied = GenerationMixin._check_early_stop_heuristic(
            is_early_stop_heuristic_unsatisfied=is_early_stop_heuristic_unsatisfied,
            running_beam_scores=running_beam_scores, beam_scores=beam_scores, is_sent_finished=is_sent_finished,
            cur_len=cur_len, max_length=max_length, decoder_prompt_len=decoder_prompt_len,
            early_stopping=early_stopping, length_penalty=length_penalty)
        this_peer_finished = not GenerationMixin._beam_search_has_unfinished_sequences(
            is_early_stop_heuristic_unsatisfied, is_sent_finished, next_token_hits_stopping_criteria, early_stopping)

        # h. record the step: the tree nodes, each beam's candidates, the current best hypotheses
        def record(rec):
            nodes, chosen, best = recording.step(
                topk_log_probs=topk_log_probs, source_beams=source_beams, topk_ids=topk_ids,
                hits=next_token_hits_stopping_criteria,
                next_running=next_running, finished_choice=finished_choice, beam_scores=beam_scores,
                generated_len=cur_len - decoder_prompt_len,
                closed=_closed_batches(is_early_stop_heuristic_unsatisfied=is_early_stop_heuristic_unsatisfied,
                                       is_sent_finished=is_sent_finished, early_stopping=early_stopping,
                                       finished=this_peer_finished))
            rows = rec.row_steps(logits, processed, stages, chosen, inputs=log_probs_raw)
            rec.emit(rows, cache=model_kwargs.get("cache"), beam=nodes, best=best.paths, best_nodes=best.nodes)

        observer.record(record)

    # 6. outputs: the best finished hypotheses of each batch row, cropped to the longest
    sequences = flatten_beams(sequences[:, :num_return_sequences, :])
    beam_indices = flatten_beams(beam_indices[:, :num_return_sequences, :])
    # beam_indices stay -1 past a hypothesis' end, which may come before cur_len
    max_generated_length = ((beam_indices + 1).bool()).sum(dim=1).max()
    sequences = sequences[:, : decoder_prompt_len + max_generated_length]

    # transformers refuses streamers for beam search; here the streamer gets the returned best row at the end
    observer.put(sequences[0, decoder_prompt_len:])
    observer.end()
    return sequences


def _closed_batches(*, is_early_stop_heuristic_unsatisfied, is_sent_finished, early_stopping,
                    finished) -> list[bool]:
    """Per batch row: can no new hypothesis enter its finished set (step f's conditions), or has the loop ended?"""
    full = torch.all(is_sent_finished, dim=-1) & (early_stopping is True)  # [B]
    return (~is_early_stop_heuristic_unsatisfied[:, 0] | full | finished).tolist()


class Recorded(NamedTuple):
    nodes: list[BeamNode]  # this step's 2K continuations per batch row, with their fates
    chosen: list[list[int]]  # per running beam [B*K]: the tokens its continuations kept
    best: Best  # the current best hypothesis of each returned row


class _Recording:
    """The beam tree of one run, and per batch row the node in each finished-hypothesis slot."""

    def __init__(self, batch_size, num_beams, num_return_sequences, length_penalty, top_num_beam_mask, text):
        self.tree = BeamTree(batch_size, num_beams, text)
        self.finished_nodes = [[ROOT] * num_beams for _ in range(batch_size)]
        self.num_beams, self.num_return_sequences = num_beams, num_return_sequences
        self.length_penalty, self.top_num_beam_mask = length_penalty, top_num_beam_mask

    def step(self, *, topk_log_probs, source_beams, topk_ids, hits, next_running, finished_choice, beam_scores,
             generated_len: int, closed: list[bool]) -> Recorded:
        """Nodes for the 2K continuations [B, 2K] of each batch row, with the fates steps e (``next_running``
        [B, K]) and f (``finished_choice`` [B, K], final ``beam_scores``) gave them. The best rows are the best
        finished hypotheses and, while a batch row may still admit new ones (not ``closed``), its running beams."""
        tree, num_beams = self.tree, self.num_beams
        normalized = normalized_score(topk_log_probs, generated_len, self.length_penalty)  # [B, 2K], as step f
        just_finished = (hits & self.top_num_beam_mask[None, :]).tolist()
        scores, normalized = topk_log_probs.tolist(), normalized.tolist()
        beams, tokens = source_beams.tolist(), topk_ids.tolist()
        hits, next_running, finished_choice = hits.tolist(), next_running.tolist(), finished_choice.tolist()
        final_scores = beam_scores.tolist()
        chosen = [[] for _ in range(len(beams) * num_beams)]
        pools = []
        for b in range(len(beams)):
            ids = [tree.expand(b, beams[b][c], tokens[b][c], scores[b][c], normalized[b][c])
                   for c in range(len(beams[b]))]
            running_pool = []
            for slot, c in enumerate(next_running[b]):
                tree.set_running(b, slot, ids[c])
                if not hits[b][c]:
                    tree.mark(ids[c], "kept")
                    chosen[b * num_beams + beams[b][c]].append(tokens[b][c])
                    running_pool.append((normalized[b][c], ids[c]))
            previous = self.finished_nodes[b]
            self.finished_nodes[b] = [previous[i] if i < num_beams else ids[i - num_beams] for i in finished_choice[b]]
            for slot, i in enumerate(finished_choice[b]):
                if i >= num_beams and just_finished[b][i - num_beams]:
                    c = i - num_beams
                    tree.mark(ids[c], "finished", final_scores[b][slot])
                    chosen[b * num_beams + beams[b][c]].append(tokens[b][c])
            finished_pool = [(final_scores[b][slot], node) for slot, node in enumerate(self.finished_nodes[b])
                             if node != ROOT]
            pools.append(finished_pool + ([] if closed[b] else running_pool))
        best = tree.best(pools, self.num_return_sequences)
        return Recorded(tree.flush(), chosen, best)
