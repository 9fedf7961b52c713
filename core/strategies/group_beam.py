"""Diverse (group) beam search: transformers 4.55.4's ``_group_beam_search`` with its ``BeamSearchScorer`` and
``HammingDiversityLogitsProcessor``, which 5.x no longer ships, ported minimally onto 5.x's prefill and cache
API; every other logits processor is 5.x's own.

The K beams of a batch row form G groups of K / G beams. At each step the groups choose in turn: group g's
log-probabilities lose ``diversity_penalty`` for every time an earlier group picked the same token at this step
(the Hamming diversity), then the group runs one step of ordinary beam search over its own beams: its top
2 * K / G continuations are offered to the scorer, which keeps the best K / G that do not end in EOS and files
those that do as finished hypotheses of that group. The returned sequences are the best hypotheses over all
groups of the batch row.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (PrefixConstrainedLogitsProcessor, SequenceBiasLogitsProcessor,
                                                    UnbatchedClassifierFreeGuidanceLogitsProcessor)
from transformers.generation.utils import GenerationMode

from . import register
from .beam_tree import BeamTree, normalized_score, split_flat_indices
from .hypotheses import BeamHypotheses, Kept, NextBeams, RowStep, file_row, pad_hypotheses
from .steps import Forward, reorder_cache


# --- 4.55.4's pieces, ported -------------------------------------------------------------------------------------
class HammingDiversityLogitsProcessor(LogitsProcessor):
    """4.55.4's processor: subtracts ``diversity_penalty`` times the number of times the earlier groups of the same
    batch row picked a token at this step. ``at(current_tokens, group)`` binds it to the step and group, because
    processors are called with (input_ids, scores) only; ``penalties`` keeps what it subtracted, per batch row [V]."""

    def __init__(self, diversity_penalty: float, num_beams: int, num_beam_groups: int):
        if not isinstance(diversity_penalty, float) or not diversity_penalty > 0.0:
            raise ValueError("`diversity_penalty` must be a float > 0 for the Hamming diversity; "
                             f"got {diversity_penalty!r}")
        if not isinstance(num_beams, int) or num_beams < 2:
            raise ValueError(f"`num_beams` must be an integer >= 2 for diverse beam search; got {num_beams!r}")
        if not isinstance(num_beam_groups, int) or not 2 <= num_beam_groups <= num_beams:
            raise ValueError(f"`num_beam_groups` must be an integer in [2, num_beams ({num_beams})] for the Hamming "
                             f"diversity; got {num_beam_groups!r}")
        self._diversity_penalty = diversity_penalty
        self._num_beams = num_beams
        self._num_sub_beams = num_beams // num_beam_groups
        self.current_tokens: torch.LongTensor | None = None  # [B*K] tokens the groups picked so far this step
        self.beam_group_idx = 0
        self.penalties: list[torch.Tensor] | None = None

    def at(self, current_tokens: torch.LongTensor, beam_group_idx: int) -> "HammingDiversityLogitsProcessor":
        self.current_tokens, self.beam_group_idx = current_tokens, beam_group_idx
        return self

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        current_tokens = self.current_tokens
        batch_size = current_tokens.shape[0] // self._num_beams
        group_start_idx = self.beam_group_idx * self._num_sub_beams
        group_end_idx = min(group_start_idx + self._num_sub_beams, self._num_beams)
        group_size = group_end_idx - group_start_idx
        vocab_size = scores.shape[-1]
        self.penalties = None
        if group_start_idx == 0:
            return scores

        scores_processed = scores.clone()  # [B*G, V], G beams per group
        self.penalties = []
        for batch_idx in range(batch_size):
            # tokens the previous groups of this batch row picked at this step
            row_start = batch_idx * self._num_beams
            previous_group_tokens = current_tokens[row_start: row_start + group_start_idx]
            token_frequency = torch.bincount(previous_group_tokens, minlength=vocab_size).to(scores.device)  # [V]
            penalty = self._diversity_penalty * token_frequency
            scores_processed[batch_idx * group_size: (batch_idx + 1) * group_size] -= penalty
            self.penalties.append(penalty)
        return scores_processed


@dataclass(frozen=True)
class GroupStep:
    """One group's next beams, each [B*G], and per batch row what the scorer did with its continuations (``None``
    where the group was already done there)."""

    scores: torch.Tensor
    tokens: torch.LongTensor
    beams: torch.LongTensor  # the rows of the group's input_ids [B*G] they continue
    rows: tuple[RowStep | None, ...]


@dataclass(frozen=True)
class Offered:
    """An open beam offered to the finished hypotheses when the search stopped."""

    node: int  # its beam-tree node (-1 when not recording)
    score: float | None  # its normalised score when it joined the list, None when it was not good enough


class BeamSearchScorer:
    """4.55.4's ``BeamSearchScorer`` for G groups: one ``BeamHypotheses`` per (batch row, group). ``process`` and
    ``finalize`` also say what they did with each candidate, for the beam tree."""

    def __init__(self, batch_size: int, num_beams: int, device, length_penalty: float = 1.0, do_early_stopping=False,
                 num_beam_hyps_to_keep: int = 1, num_beam_groups: int = 1, max_length: int | None = None):
        self.num_beams = num_beams
        self.device = device
        self.num_beam_hyps_to_keep = num_beam_hyps_to_keep
        self.num_beam_groups = num_beam_groups
        self.group_size = num_beams // num_beam_groups
        # _beam_hyps[i * G + j]: the hypotheses of group j of batch row i
        self._beam_hyps = [BeamHypotheses(self.group_size, length_penalty, do_early_stopping, max_length)
                           for _ in range(batch_size * num_beam_groups)]
        self._done = torch.tensor([False] * (batch_size * num_beam_groups), dtype=torch.bool, device=device)

    @property
    def is_done(self) -> bool:
        return self._done.all()

    def group_done(self, group: int) -> list[bool]:
        """Whether ``group`` is done, per batch row [B]."""
        return self._done[group::self.num_beam_groups].tolist()

    def finished(self, batch: int, group: int) -> list[tuple[float, int]]:
        """The finished hypotheses of ``group`` in batch row ``batch``, as (normalised score, beam-tree node)."""
        return [(score, node) for score, _, node in self._beam_hyps[batch * self.num_beam_groups + group].beams]

    def process(self, input_ids, next_scores, next_tokens, next_indices, *, pad_token_id=None, eos_token_id=None,
                group_index: int = 0, decoder_prompt_len: int = 0, nodes=None) -> GroupStep:
        """One group's step. input_ids [B*G, S]; next_scores / next_tokens / next_indices [B, 2G], ranked.
        When recording, ``nodes[b][rank]`` is each candidate's beam-tree node."""
        cur_len = input_ids.shape[-1] + 1  # the length next_scores were computed at, prompt included
        batch_size = len(self._beam_hyps) // self.num_beam_groups
        if batch_size != (input_ids.shape[0] // self.group_size):
            raise ValueError(f"A group beam size of {input_ids.shape[0]} is used as the input, but a group beam "
                             f"size of {self.group_size} is expected by the beam scorer.")
        chosen = NextBeams(batch_size, self.group_size, scores=next_scores, tokens=next_tokens, beams=next_indices,
                           device=input_ids.device)
        rows: list[RowStep | None] = []
        for batch_idx in range(batch_size):
            batch_group_idx = batch_idx * self.num_beam_groups + group_index
            if self._done[batch_group_idx]:
                chosen.idle(batch_idx, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
                rows.append(None)
                continue
            step = file_row(hyps=self._beam_hyps[batch_group_idx], input_ids=input_ids,
                            first_row=batch_idx * self.group_size, scores=next_scores[batch_idx],
                            tokens=next_tokens[batch_idx], beams=next_indices[batch_idx], keep=self.group_size,
                            eos_token_id=eos_token_id, generated_len=cur_len - decoder_prompt_len,
                            nodes=nodes[batch_idx] if nodes is not None else None)
            chosen.take(batch_idx, step, scores=next_scores[batch_idx], tokens=next_tokens[batch_idx],
                        beams=next_indices[batch_idx], first_row=batch_idx * self.group_size)
            rows.append(step)
            self._done[batch_group_idx] = self._done[batch_group_idx] or self._beam_hyps[batch_group_idx].is_done(
                next_scores[batch_idx].max().item(), cur_len, decoder_prompt_len)

        return GroupStep(*chosen.flat(), tuple(rows))

    def finalize(self, input_ids, final_beam_scores, *, max_length: int, pad_token_id=None, eos_token_id=None,
                 decoder_prompt_len: int = 0, running_nodes=None):
        """Offer the running beams of unfinished groups as hypotheses, then return the best ``num_beam_hyps_to_keep``
        of each batch row over all its groups: (sequences [B*R, S'], their nodes, the ``Offered`` beams).
        ``running_nodes[row]`` is each running beam's node when recording."""
        batch_size = len(self._beam_hyps) // self.num_beam_groups
        offered: list[Offered] = []
        for batch_group_idx, beam_hyp in enumerate(self._beam_hyps):
            if self._done[batch_group_idx]:
                continue
            for index_per_group in range(self.group_size):
                batch_beam_idx = batch_group_idx * self.group_size + index_per_group
                final_tokens = input_ids[batch_beam_idx]
                node = running_nodes[batch_beam_idx] if running_nodes is not None else -1
                score = beam_hyp.add(final_tokens, final_beam_scores[batch_beam_idx].item(),
                                     generated_len=final_tokens.shape[-1] - decoder_prompt_len, node=node)
                offered.append(Offered(node, score))

        best, best_nodes = [], []
        for i in range(batch_size):
            beam_hyps_in_batch = self._beam_hyps[i * self.num_beam_groups: (i + 1) * self.num_beam_groups]
            candidate_beams = [beam for beam_hyp in beam_hyps_in_batch for beam in beam_hyp.beams]
            sorted_hyps = sorted(candidate_beams, key=lambda x: x[0])
            for _ in range(self.num_beam_hyps_to_keep):
                _, best_hyp, best_node = sorted_hyps.pop()
                best.append(best_hyp)
                best_nodes.append(best_node)

        decoded = pad_hypotheses(best, input_ids, max_length, pad_token_id, eos_token_id)
        return decoded, best_nodes, offered


def with_diversity(processors: LogitsProcessorList, diversity: LogitsProcessor | None, group_size: int):
    """5.x's processors with the Hamming diversity where 4.55.4 put it (after classifier-free guidance and
    sequence bias). A prefix constraint sees one group's rows at a time, so it counts ``group_size`` beams."""
    out = []
    for proc in processors:
        if isinstance(proc, PrefixConstrainedLogitsProcessor):
            proc = copy.copy(proc)
            proc._num_beams = group_size
        out.append(proc)
    if diversity is not None:
        head = 0
        while head < len(out) and isinstance(out[head], (UnbatchedClassifierFreeGuidanceLogitsProcessor,
                                                         SequenceBiasLogitsProcessor)):
            head += 1
        out.insert(head, diversity)
    return LogitsProcessorList(out)


# --- the loop ---------------------------------------------------------------------------------------------------
@register(GenerationMode.GROUP_BEAM_SEARCH, family="beam")
def group_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx, **model_kwargs):
    # 1. values
    pad_token_id = generation_config._pad_token_tensor
    eos_token_id = generation_config._eos_token_tensor
    num_beams = generation_config.num_beams
    num_beam_groups = generation_config.num_beam_groups
    num_sub_beams = num_beams // num_beam_groups
    length_penalty = generation_config.length_penalty
    batch_beam_size, cur_len = input_ids.shape  # [B*K, S]
    batch_size = batch_beam_size // num_beams
    decoder_prompt_len = cur_len
    device = input_ids.device
    n_eos_tokens = eos_token_id.shape[0] if eos_token_id is not None else 0
    candidates_per_group = max(2, 1 + n_eos_tokens) * num_sub_beams

    # 2. the scorer, the processors with the diversity penalty, the starting scores
    beam_scorer = BeamSearchScorer(batch_size, num_beams, device, length_penalty=length_penalty,
                                   do_early_stopping=generation_config.early_stopping,
                                   num_beam_hyps_to_keep=generation_config.num_return_sequences,
                                   num_beam_groups=num_beam_groups, max_length=generation_config.max_length)
    penalty = generation_config.diversity_penalty
    diversity = (HammingDiversityLogitsProcessor(penalty, num_beams, num_beam_groups)
                 if penalty is not None and penalty > 0.0 else None)
    processors = with_diversity(logits_processor, diversity, num_sub_beams)
    # only the first beam of each group starts at 0, so the beams of a group do not repeat each other
    beam_scores = torch.full((batch_size, num_beams), -1e9, dtype=torch.float, device=device)
    beam_scores[:, ::num_sub_beams] = 0
    beam_scores = beam_scores.view((batch_size * num_beams,))  # [B*K]

    # 3. recording state (None: not recorded)
    observer = ctx.observer
    tree = observer.record(lambda rec: BeamTree(batch_size, num_beams, rec.texts))

    # 4. prefill: the whole prompt in one forward
    forward = Forward(model, input_ids, generation_config, model_kwargs)
    this_peer_finished = False

    # 5. the generation loop
    while not this_peer_finished:
        # a. the last token of every beam (the prefill's outputs on the first step)
        outputs, model_kwargs = forward(input_ids, model_kwargs)
        current_tokens = torch.zeros(batch_size * num_beams, dtype=input_ids.dtype, device=device)  # [B*K]
        reordering_indices = torch.zeros(batch_size * num_beams, dtype=torch.long, device=device)  # [B*K]
        step = observer.record(lambda rec: _StepRecording(outputs.logits, num_beams))

        # b. the groups choose in turn, each seeing the tokens the earlier ones picked
        for beam_group_idx in range(num_beam_groups):
            group_start_idx = beam_group_idx * num_sub_beams
            group_end_idx = min(group_start_idx + num_sub_beams, num_beams)
            group_size = group_end_idx - group_start_idx

            # i. the group's rows among all batch rows: [B*G]
            batch_group_indices = [batch_idx * num_beams + idx for batch_idx in range(batch_size)
                                   for idx in range(group_start_idx, group_end_idx)]
            group_input_ids = input_ids[batch_group_indices]  # [B*G, S]

            # ii. log-probs through the processors (the diversity penalty among them), plus each beam's score
            next_token_logits = outputs.logits[batch_group_indices, -1, :].to(dtype=torch.float32, device=device)
            log_probs = nn.functional.log_softmax(next_token_logits, dim=-1)  # [B*G, V]
            vocab_size = log_probs.shape[-1]
            if diversity is not None:
                diversity.at(current_tokens, beam_group_idx)
            next_token_scores_processed, stages = observer.process(group_input_ids, log_probs, processors)
            next_token_scores = next_token_scores_processed + beam_scores[batch_group_indices].unsqueeze(-1)
            next_token_scores = next_token_scores.expand_as(next_token_scores_processed)
            next_token_scores = next_token_scores.view(batch_size, group_size * vocab_size)  # [B, G*V]

            # iii. the group's top 2G continuations (one more per EOS token, so G of them can run on)
            next_token_scores, next_tokens = torch.topk(next_token_scores, candidates_per_group, dim=1, largest=True,
                                                        sorted=True)  # [B, 2G]
            next_indices, next_tokens = split_flat_indices(next_tokens, vocab_size)  # [B, 2G] each

            # iv. the scorer files finished hypotheses and picks the group's next beams
            nodes = observer.record(lambda rec: step.expand(
                tree, done=beam_scorer.group_done(beam_group_idx), scores=next_token_scores, beams=next_indices,
                tokens=next_tokens, group=beam_group_idx, group_start=group_start_idx, diversity=diversity,
                generated_len=cur_len + 1 - decoder_prompt_len, length_penalty=length_penalty))
            chosen = beam_scorer.process(group_input_ids, next_token_scores, next_tokens, next_indices,
                                         pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                                         group_index=beam_group_idx, decoder_prompt_len=decoder_prompt_len, nodes=nodes)
            beam_scores[batch_group_indices], beam_next_tokens, beam_idx = chosen.scores, chosen.tokens, chosen.beams

            # v. the group's rows continue their chosen beams
            input_ids[batch_group_indices] = group_input_ids[beam_idx]
            group_input_ids = torch.cat([group_input_ids[beam_idx, :], beam_next_tokens.unsqueeze(-1)], dim=-1)
            current_tokens[batch_group_indices] = group_input_ids[:, -1]
            # beam_idx // group_size is the batch row, beam_idx % group_size the beam within the group
            reordering_indices[batch_group_indices] = (
                num_beams * torch.div(beam_idx, group_size, rounding_mode="floor") + group_start_idx
                + (beam_idx % group_size))
            observer.record(lambda rec: step.settle(
                tree, rows=chosen.rows, nodes=nodes, tokens=next_tokens, beams=next_indices,
                batch_group_indices=batch_group_indices, log_probs=log_probs, processed=next_token_scores_processed,
                stages=stages, group_start=group_start_idx, num_beams=num_beams))

        # c. append the step's tokens; the cache follows the beams
        input_ids = torch.cat([input_ids, current_tokens.unsqueeze(-1)], dim=-1)  # [B*K, S+1]
        del outputs
        reorder_cache(model, model_kwargs, reordering_indices)
        cur_len = cur_len + 1

        # d. stop when every group of every batch row is done, or a stopping criterion holds for all beams;
        #    then the open beams join the finished hypotheses
        this_peer_finished = bool(beam_scorer.is_done or all(stopping_criteria(input_ids, None)))
        if this_peer_finished:
            sequences, best_nodes, offered = beam_scorer.finalize(
                input_ids, beam_scores, max_length=stopping_criteria.max_length, pad_token_id=pad_token_id,
                eos_token_id=eos_token_id, decoder_prompt_len=decoder_prompt_len,
                running_nodes=observer.record(lambda rec: [n for row in tree.next_running() for n in row]))

        # e. record the step: the tree nodes, each beam's candidates, the current best hypotheses
        def record(rec):
            if this_peer_finished:
                for beam in offered:  # open beams at the end: finished if good enough, else dropped
                    tree.mark(beam.node, "finished" if beam.score is not None else "pruned", beam.score)
                best = tree.rows(best_nodes)
            else:
                best = tree.best(_pools(beam_scorer, tree, step, num_beam_groups=num_beam_groups,
                                        num_sub_beams=num_sub_beams), generation_config.num_return_sequences)
            rows = rec.row_steps(step.logits, step.processed, step.stages, step.chosen, inputs=step.log_probs)
            rec.emit(rows, cache=model_kwargs.get("cache"), beam=tree.flush(), best=best.paths, best_nodes=best.nodes)

        observer.record(record)

    # 6. the returned best row goes to the streamer (transformers streams nothing for beam search)
    observer.put(sequences[0, decoder_prompt_len:])
    observer.end()
    return sequences


# --- recording (only while recorded: ``observer.record``) ----------------------------------------------------------
class _StepRecording:
    """One step's recording, filled group by group: logits, log-probs, processed scores and processor stages
    reassembled into [B*K, V] rows, the tokens each beam's continuations kept, and the normalised score of each
    running beam."""

    def __init__(self, logits: torch.Tensor, num_beams: int):
        self.logits = logits[:, -1, :].to(dtype=torch.float32)  # [B*K, V]
        self.log_probs = torch.empty_like(self.logits)
        self.processed = torch.empty_like(self.logits)
        self.stages: list[tuple[Any, torch.Tensor]] | None = None  # (processor, its scores)
        self.chosen: list[list[int]] = [[] for _ in range(self.logits.shape[0])]
        self.normalized: dict[int, float] = {}  # node -> normalised score, this step's nodes

    def expand(self, tree, *, done, scores, beams, tokens, group, group_start, diversity, generated_len,
               length_penalty):
        """A node per candidate of the group in batch rows where it is not done (the scorer ignores those);
        returns node ids [B][2G] in rank order (``None`` for a done batch row)."""
        scores, beams, tokens = scores.tolist(), beams.tolist(), tokens.tolist()
        penalties = diversity.penalties if diversity is not None else None
        nodes = []
        for b in range(len(scores)):
            if done[b]:
                nodes.append(None)
                continue
            row = []
            for rank in range(len(scores[b])):
                token = tokens[b][rank]
                normalized = normalized_score(scores[b][rank], generated_len, length_penalty)
                node = tree.expand(b, group_start + beams[b][rank], token, scores[b][rank], normalized, group=group,
                                   diversity_penalty=float(penalties[b][token]) if penalties else 0.0)
                self.normalized[node] = normalized
                row.append(node)
            nodes.append(row)
        return nodes

    def settle(self, tree, *, rows, nodes, tokens, beams, batch_group_indices, log_probs, processed, stages,
               group_start, num_beams):
        """Apply the scorer's decisions (``rows``, per batch row) to the group's nodes; keep the group's rows of
        the step tensors."""
        tokens, beams = tokens.tolist(), beams.tolist()
        for b, row in enumerate(rows):
            for decision in row.decisions if row is not None else ():
                node = nodes[b][decision.rank]
                if isinstance(decision, Kept):
                    tree.mark(node, "kept")
                    tree.set_running(b, group_start + decision.slot, node)
                else:
                    tree.mark(node, "finished", decision.score)
                self.chosen[b * num_beams + group_start + beams[b][decision.rank]].append(tokens[b][decision.rank])
        self.log_probs[batch_group_indices] = log_probs
        self.processed[batch_group_indices] = processed
        if stages is not None:
            if self.stages is None:
                self.stages = [(name, torch.empty_like(self.logits)) for name, _ in stages]
            for (_, whole), (_, part) in zip(self.stages, stages):
                whole[batch_group_indices] = part


def _pools(beam_scorer, tree, step, *, num_beam_groups, num_sub_beams):
    """Per batch row: its finished hypotheses over all groups, and the running beams of groups not yet done."""
    done = [beam_scorer.group_done(g) for g in range(num_beam_groups)]  # [G][B]
    pools = []
    for b, running in enumerate(tree.next_running()):
        pool = []
        for g in range(num_beam_groups):
            pool += beam_scorer.finished(b, g)
            if not done[g][b]:
                slots = running[g * num_sub_beams:(g + 1) * num_sub_beams]
                pool += [(step.normalized[node], node) for node in slots if node in step.normalized]
        pools.append(pool)
    return pools
