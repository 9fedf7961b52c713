"""Constrained beam search: beam search whose returned sequences must contain given words
(transformers 4.55.4 ``_constrained_beam_search`` with ``ConstrainedBeamSearchScorer``; 5.x moved it
to a Hub repository, which this playground cannot download).

``force_words_ids`` (``list[list[int]]``: every word; ``list[list[list[int]]]``: one of each group)
and ``constraints`` (``core.constraints.PhrasalConstraint`` / ``DisjunctiveConstraint``) select it.

One step, for each batch row with its K beams:
1. the top 2K continuations over all K x V (beam, token) pairs by cumulative log-probability;
2. an EOS continuation among the best K finishes a hypothesis, but only if its sequence fulfils every
   constraint; the best K non-EOS continuations are the "top-k" candidates;
3. every beam proposes the token(s) that advance its constraints ("forced" candidates);
4. the candidates are put in banks by constraint progress (``ConstraintListState.get_bank``) and the
   K beams are taken round-robin across banks, best score first within a bank, so that beams which
   fulfil more of the constraints survive next to the likeliest ones.
At the end the open beams that fulfil every constraint join the finished hypotheses (all open beams
when too few do), and the best ``num_return_sequences`` by ``score / length ** length_penalty`` win.

The scorer below is a faithful port (quirks included) so the tokens equal 4.55.4's; the loop around
it uses transformers 5.x's prefill, cache and the logits processors 5.x ``generate`` built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from transformers.generation.utils import GenerationMode

from ..constraints import (Constraint, ConstraintListState, DisjunctiveConstraint, DisjunctiveTrie,
                           PhrasalConstraint)
from ..records import BeamNode
from ..rules import Env, rule
from . import register
from .beam_tree import BeamTree, normalized_score
from .hypotheses import BeamHypotheses, Filed, Finished, Kept, NextBeams, RowStep, file_row, pad_hypotheses
from .steps import Forward, reorder_cache

# --- validation and constraints from the config ---------------------------------------------------

_WORDS = "a non-empty list[list[int]] (each word) or list[list[list[int]]] (one word of each group) of token ids"


def _is_word(word, vocab_size: int) -> bool:
    return (isinstance(word, list) and len(word) > 0
            and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab_size for t in word))


@rule
def _settings(env: Env) -> None:
    """Raise a ``ValueError`` naming the first setting constrained beam search cannot run with
    (4.55.4 rejects ``do_sample`` and ``num_beam_groups``; its scorer needs ``num_beams > 1``)."""
    if env.mode != GenerationMode.CONSTRAINED_BEAM_SEARCH:
        return
    cfg, vocab_size = env.cfg, env.vocab_size
    if cfg.do_sample:
        raise ValueError("`do_sample` must be False for constrained beam search (`constraints` or "
                         f"`force_words_ids` is set); got {cfg.do_sample!r}")
    if cfg.num_beam_groups is not None and cfg.num_beam_groups != 1:
        raise ValueError("`num_beam_groups` must be 1 (or unset) for constrained beam search (`constraints` or "
                         f"`force_words_ids` is set); got {cfg.num_beam_groups!r}")
    if not isinstance(cfg.num_beams, int) or cfg.num_beams <= 1:
        raise ValueError(f"`num_beams` must be an integer > 1 for constrained beam search; got {cfg.num_beams!r}")
    words = cfg.force_words_ids
    if words is not None:
        ok = isinstance(words, list) and len(words) > 0 and all(
            _is_word(w, vocab_size) or (isinstance(w, list) and len(w) > 0 and all(_is_word(x, vocab_size) for x in w))
            for w in words)
        if not ok:
            raise ValueError(f"`force_words_ids` must be {_WORDS} in [0, {vocab_size - 1}]; got {words!r}")
        for group in (w for w in words if isinstance(w[0], list)):
            trie = DisjunctiveTrie(group, no_subsets=False)
            if trie.has_subsets(trie.trie, group):
                raise ValueError("`force_words_ids` groups must not hold a word that is a prefix of another word of "
                                 f"the group (nor the same word twice); got {group!r} in {words!r}")
    if cfg.constraints is not None:
        if not isinstance(cfg.constraints, list) or not all(isinstance(c, Constraint) for c in cfg.constraints):
            raise ValueError("`constraints` must be a list of core.constraints.Constraint objects (PhrasalConstraint, "
                             f"DisjunctiveConstraint); got {cfg.constraints!r}")
        for c in cfg.constraints:
            ids = c.token_ids if isinstance(c, PhrasalConstraint) else (
                [t for w in c.token_ids for t in w] if isinstance(c, DisjunctiveConstraint) else [])
            if any(t >= vocab_size for t in ids):
                raise ValueError(f"`constraints` token ids must be in [0, {vocab_size - 1}]; got {c!r}")
        if not cfg.constraints and not words:
            raise ValueError("`constraints` must hold at least one constraint (or set `force_words_ids`); got []")


def build_constraints(generation_config) -> list[Constraint]:
    """``constraints`` followed by one constraint per entry of ``force_words_ids``, as 4.55.4's
    ``generate`` builds them: a list of ids is a ``PhrasalConstraint``, a list of lists a
    ``DisjunctiveConstraint`` (unlike 4.55.4, the given ``constraints`` list is not mutated)."""
    constraints = list(generation_config.constraints or [])
    for word_ids in generation_config.force_words_ids or []:
        if isinstance(word_ids[0], list):
            constraints.append(DisjunctiveConstraint(word_ids))
        else:
            constraints.append(PhrasalConstraint(word_ids))
    return constraints


# --- the scorer (4.55.4 ConstrainedBeamSearchScorer; its BeamHypotheses is in hypotheses.py) ----------

@dataclass
class _Cand:
    """An expanded candidate, kept only while recording; becomes a ``BeamNode``."""

    batch: int
    row: int  # flat beam row [B*K] it extends
    token: int
    score: float
    fate: str = "pruned"
    final_score: float | None = None
    forced: bool = False
    bank: int | None = None
    position: int = -1  # when kept: which of the batch row's K new beams it became
    hypothesis: "Filed | None" = None  # when it finished: the entry it made in the finished hypotheses


class Closed(NamedTuple):
    """An open beam that entered the final ranking when the search stopped."""

    row: int  # its flat beam row [B*K]
    score: float  # its normalised score
    filed: Filed


class ConstrainedBeamScorer:
    """4.55.4's ``ConstrainedBeamSearchScorer`` (without beam groups). When ``notes`` is passed to
    ``process`` it also appends a ``_Cand`` per expanded candidate, with its fate."""

    def __init__(self, batch_size: int, num_beams: int, constraints: list[Constraint], device: torch.device,
                 length_penalty: float = 1.0, do_early_stopping=False, num_beam_hyps_to_keep: int = 1,
                 max_length: int | None = None):
        self.num_beams = num_beams
        self.group_size = num_beams
        self.device = device
        self.length_penalty = length_penalty
        self.num_beam_hyps_to_keep = num_beam_hyps_to_keep
        self.constraints = constraints
        self._beam_hyps = [BeamHypotheses(num_beams, length_penalty, do_early_stopping, max_length)
                           for _ in range(batch_size)]
        self._done = torch.tensor([False for _ in range(batch_size)], dtype=torch.bool, device=device)

    @property
    def is_done(self) -> bool:
        return self._done.all()

    def make_constraint_states(self, n: int) -> list[ConstraintListState]:
        return [ConstraintListState([constraint.copy() for constraint in self.constraints]) for _ in range(n)]

    def check_completes_constraints(self, sequence: list[int]) -> bool:
        new_state = self.make_constraint_states(1)[0]
        new_state.reset(sequence)
        return new_state.completed

    def process(self, input_ids, next_scores, next_tokens, next_indices, scores_for_all_vocab, *, pad_token_id=None,
                eos_token_id=None, decoder_prompt_len: int = 0, notes: list[_Cand] | None = None):
        """One step: finish EOS hypotheses, then pick the K beams of each batch row across constraint banks.
        ``next_*`` are [B, 2K] (top continuations), ``scores_for_all_vocab`` is [B*K, V].
        Returns the K beams' scores, tokens and source rows, each [B*K]."""
        cur_len = input_ids.shape[-1] + 1  # the length the candidates' scores are computed on
        batch_size = len(self._beam_hyps)
        if batch_size != (input_ids.shape[0] // self.group_size):
            raise ValueError(f"A beam size of {input_ids.shape[0]} is used as the input, but a beam size of "
                             f"{self.group_size} is expected by the beam scorer.")
        chosen = NextBeams(batch_size, self.group_size, scores=next_scores, tokens=next_tokens, beams=next_indices,
                           device=input_ids.device)  # [B, K] each
        if eos_token_id is not None and not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)

        for batch_idx, beam_hyp in enumerate(self._beam_hyps):
            if self._done[batch_idx]:
                if self.num_beams < len(beam_hyp):
                    raise ValueError(f"Batch can only be done if at least {self.num_beams} beams have been generated")
                chosen.idle(batch_idx, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
                continue

            # an EOS continuation finishes only a sequence that fulfils every constraint
            step = file_row(hyps=beam_hyp, input_ids=input_ids, first_row=batch_idx * self.group_size,
                            scores=next_scores[batch_idx], tokens=next_tokens[batch_idx],
                            beams=next_indices[batch_idx], keep=self.group_size, eos_token_id=eos_token_id,
                            generated_len=cur_len - decoder_prompt_len,
                            may_finish=lambda row: self.check_completes_constraints(input_ids[row].tolist()))
            chosen.take(batch_idx, step, scores=next_scores[batch_idx], tokens=next_tokens[batch_idx],
                        beams=next_indices[batch_idx], first_row=batch_idx * self.group_size)
            slots: list[_Cand] = []  # recording: the top-k candidates in beam order
            if notes is not None:
                slots = _note_row(notes, step=step, batch=batch_idx, first_row=batch_idx * self.group_size,
                                  scores=next_scores[batch_idx], tokens=next_tokens[batch_idx],
                                  beams=next_indices[batch_idx])

            new_scores, new_tokens, new_indices = self.step_sentence_constraint(
                batch_idx, input_ids, scores_for_all_vocab, chosen.scores[batch_idx], chosen.tokens[batch_idx],
                chosen.beams[batch_idx], notes=notes, slots=slots)
            chosen.scores[batch_idx] = new_scores
            chosen.tokens[batch_idx] = new_tokens
            chosen.beams[batch_idx] = new_indices

            self._done[batch_idx] = self._done[batch_idx] or beam_hyp.is_done(
                next_scores[batch_idx].max().item(), cur_len, decoder_prompt_len)

        return chosen.flat()  # [B*K] each

    def step_sentence_constraint(self, batch_idx, input_ids, vocab_scores, sent_beam_scores, sent_beam_tokens,
                                 sent_beam_indices, notes=None, slots=()):
        """Add each beam's constraint-advancing tokens to the K top-k candidates of batch row
        ``batch_idx``, then keep K of them round-robin across constraint banks (best score first)."""
        orig_len = sent_beam_indices.size(0)  # K
        device = sent_beam_indices.device
        topk_contraint_states = self.make_constraint_states(orig_len)
        advance_constraint_states = self.make_constraint_states(orig_len)

        sidx, eidx = batch_idx * orig_len, (batch_idx + 1) * orig_len
        this_batch_input_ids = input_ids[sidx:eidx]  # [K, S]
        this_batch_token_scores = vocab_scores[sidx:eidx]  # [K, V]
        full_hypotheses = torch.cat((input_ids[sent_beam_indices], sent_beam_tokens.unsqueeze(-1)), dim=-1)  # [K, S+1]

        track_new = {"new_seqs": full_hypotheses.tolist(), "new_states": [], "new_indices": [], "new_tokens": [],
                     "new_scores": []}
        for seq_idx, pre_seq in enumerate(this_batch_input_ids):
            topk_state = topk_contraint_states[seq_idx]
            topk_state.reset(full_hypotheses[seq_idx].tolist())

            advance_state = advance_constraint_states[seq_idx]
            advance_state.reset(pre_seq.tolist())

            if not advance_state.completed:
                advance_tokens = torch.tensor(advance_state.advance(), dtype=torch.long, device=device)
                for advance_token in advance_tokens:
                    # each forced token makes its own hypothesis, with its own constraint state
                    new_state = advance_state.copy(stateful=True)
                    new_state.add(advance_token.tolist())
                    advance_seq = torch.cat((pre_seq, advance_token.unsqueeze(0)), -1).tolist()
                    if advance_seq not in track_new["new_seqs"]:  # a top-k candidate may be the same sequence
                        track_new["new_seqs"].append(advance_seq)
                        track_new["new_indices"].append(sidx + seq_idx)
                        track_new["new_tokens"].append(advance_token)
                        track_new["new_scores"].append(this_batch_token_scores[seq_idx].take(advance_token))
                        track_new["new_states"].append(new_state)
            # 4.55.4's `push_progress` branch is never enabled by generate, so it is not ported

        forced: list[_Cand] = []
        if notes is not None:
            forced = _note_forced(notes, batch=batch_idx, slots=slots, slot_states=topk_contraint_states,
                                  track_new=track_new)

        if len(track_new["new_indices"]) > 0:
            new_indices = torch.tensor(track_new["new_indices"], device=device)
            new_tokens = torch.stack(track_new["new_tokens"]).to(device)
            new_scores = torch.stack(track_new["new_scores"]).to(device)

            all_states = topk_contraint_states + track_new["new_states"]
            all_tokens = torch.cat((sent_beam_tokens, new_tokens), -1)  # [K + F]
            all_scores = torch.cat((sent_beam_scores, new_scores), -1)
            all_banks = torch.tensor([one.get_bank() for one in all_states], device=device)

            indices = _round_robin(banks=all_banks, scores=all_scores, keep=orig_len)  # [K]

            sent_beam_scores = all_scores[indices]
            sent_beam_tokens = all_tokens[indices]
            sent_beam_indices = torch.cat((sent_beam_indices, new_indices))[indices]
            chosen = indices.tolist()
        else:
            chosen = list(range(orig_len))

        if notes is not None:
            candidates = list(slots) + forced
            for position, j in enumerate(chosen):
                if j < len(candidates):
                    candidates[j].fate, candidates[j].position = "kept", position
        return sent_beam_scores, sent_beam_tokens, sent_beam_indices

    def close(self, input_ids, final_beam_scores, decoder_prompt_len: int = 0, hyps=None,
              nodes: list[int] | None = None) -> list[Closed]:
        """Add the open beams to the finished hypotheses (``hyps``, default the scorer's own): those
        that fulfil every constraint, or all of them if too few do. ``nodes`` names each row's beam-tree node
        when known. Returns each beam that entered a list."""
        hyps = self._beam_hyps if hyps is None else hyps
        added: list[Closed] = []
        for batch_idx, beam_hyp in enumerate(hyps):
            if self._done[batch_idx]:
                continue

            def offer(beam_id: int) -> None:
                row = batch_idx * self.num_beams + beam_id
                tokens = input_ids[row]
                score = beam_hyp.add(tokens, final_beam_scores[row].item(),
                                     generated_len=tokens.shape[-1] - decoder_prompt_len,
                                     node=nodes[row] if nodes is not None else -1)
                if score is not None:
                    added.append(Closed(row, score, Filed(beam_hyp, tokens)))

            ids_collect = []
            for beam_id in range(self.num_beams):
                if self.check_completes_constraints(input_ids[batch_idx * self.num_beams + beam_id].tolist()):
                    offer(beam_id)
                    ids_collect.append(beam_id)
            # constraints too hard for this search: return the best open beams anyway
            if len(ids_collect) < self.num_beam_hyps_to_keep:
                for beam_id in range(self.num_beams):
                    if beam_id not in ids_collect:
                        offer(beam_id)
                    if len(ids_collect) >= self.num_beam_hyps_to_keep:  # sic (4.55.4): never true here
                        break
        return added

    def ranked(self, hyps=None) -> list[tuple[torch.Tensor, int]]:
        """The ``num_beam_hyps_to_keep`` best hypotheses of each batch row, best first (flat list), each with
        its beam-tree node (-1 when not recording)."""
        best = []
        for beam_hyp in self._beam_hyps if hyps is None else hyps:
            sorted_hyps = sorted(beam_hyp.beams, key=lambda x: x[0])
            for _ in range(self.num_beam_hyps_to_keep):
                _, tokens, node = sorted_hyps.pop()
                best.append((tokens, node))
        return best

    def peek(self, input_ids, beam_scores, decoder_prompt_len: int, nodes: list[int]) -> list[int]:
        """What ``finalize`` would return if the search stopped now, as the node of each returned row; ``nodes``
        is the beam-tree node of each running beam [B*K]."""
        hyps = [h.copy() for h in self._beam_hyps]
        self.close(input_ids, beam_scores, decoder_prompt_len, hyps, nodes)
        return [node for _, node in self.ranked(hyps)]

    def finalize(self, input_ids, max_length: int, pad_token_id=None, eos_token_id=None) -> torch.LongTensor:
        """The returned sequences [B * num_return_sequences, S'], padded, EOS appended where it fits
        (4.55.4's ``finalize`` after ``close``, which the loop calls when it stops)."""
        if eos_token_id is not None and not isinstance(eos_token_id, torch.Tensor):
            eos_token_id = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id)
        return pad_hypotheses([tokens for tokens, _ in self.ranked()], input_ids, max_length, pad_token_id,
                              eos_token_id)


def _round_robin(*, banks: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The ``keep`` candidates 4.55.4 takes across constraint banks: sorted by bank, then score, and interleaved
    (rank 0 of every bank, rank 1 of every bank, ...). Returns their indices [keep]."""
    zipped = banks * 100 + scores
    indices = zipped.sort(descending=True).indices
    sorted_banks = banks[indices]
    counter, cur_bank, increments = -1, sorted_banks[0], []
    for bank in sorted_banks:
        if bank == cur_bank:
            counter += 1
        else:
            counter, cur_bank = 0, bank
        increments.append(counter)
    # a stable sort, as 4.55.4's np.argsort(kind="mergesort")
    rearrangers = torch.tensor(increments).sort(stable=True).indices
    return indices[rearrangers][:keep]


def _note_row(notes: list[_Cand], *, step: RowStep, batch: int, first_row: int, scores: torch.Tensor,
              tokens: torch.LongTensor, beams: torch.LongTensor) -> list[_Cand]:
    """Append a ``_Cand`` per ranked continuation of batch row ``batch`` with what ``file_row`` did with it (one it
    passed over, or never reached, stays "pruned"); returns the kept ones, in beam order."""
    decided = {decision.rank: decision for decision in step.decisions}
    slots = []
    for rank in range(tokens.shape[0]):
        cand = _Cand(batch, first_row + int(beams[rank]), int(tokens[rank]), float(scores[rank]))
        decision = decided.get(rank)
        if isinstance(decision, Finished):
            cand.fate, cand.final_score, cand.hypothesis = "finished", decision.score, decision.filed
        elif isinstance(decision, Kept):
            slots.append(cand)
        notes.append(cand)
    return slots


def _note_forced(notes: list[_Cand], *, batch: int, slots: list[_Cand], slot_states, track_new: dict) -> list[_Cand]:
    """Give the top-k candidates their banks and append a ``_Cand`` per forced candidate; returns the forced ones."""
    for cand, state in zip(slots, slot_states):
        cand.bank = state.get_bank()
    forced = [_Cand(batch, row, int(token), float(score), forced=True, bank=state.get_bank())
              for row, token, score, state in zip(track_new["new_indices"], track_new["new_tokens"],
                                                  track_new["new_scores"], track_new["new_states"])]
    notes.extend(forced)
    return forced


# --- the decoding loop -----------------------------------------------------------------------------

@register(GenerationMode.CONSTRAINED_BEAM_SEARCH, family="beam")
def constrained_beam_search(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx,
                            **model_kwargs):
    # 1. build the constraints and the scorer (the settings were checked at the boundary, ``_settings``)
    constraints = build_constraints(generation_config)
    pad_token_id = generation_config._pad_token_tensor
    eos_token_id = generation_config._eos_token_tensor
    num_beams = generation_config.num_beams
    batch_beam_size, cur_len = input_ids.shape[:2]  # rows arrive expanded to B*K by 5.x generate
    batch_size = batch_beam_size // num_beams
    decoder_prompt_len = cur_len
    scorer = ConstrainedBeamScorer(
        batch_size, num_beams, constraints, input_ids.device, length_penalty=generation_config.length_penalty,
        do_early_stopping=generation_config.early_stopping,
        num_beam_hyps_to_keep=generation_config.num_return_sequences, max_length=generation_config.max_length)
    observer = ctx.observer
    tree = observer.record(lambda rec: BeamTree(batch_size, num_beams, rec.texts))  # None: not recorded

    # 2. only beam 0 starts with score 0, so the first step does not expand K copies of the prompt
    beam_scores = torch.zeros((batch_size, num_beams), dtype=torch.float, device=input_ids.device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view((batch_size * num_beams,))  # [B*K]

    # 3. prefill, then one token per beam per step
    forward = Forward(model, input_ids, generation_config, model_kwargs)
    while True:
        # a. the last token of every beam (the prefill's outputs on the first step)
        outputs, model_kwargs = forward(input_ids, model_kwargs)

        # b. log-probs, processors, plus each beam's running score
        logits = outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32, device=input_ids.device)  # [B*K, V]
        log_probs = nn.functional.log_softmax(logits, dim=-1)
        processed, stages = observer.process(input_ids, log_probs, logits_processor)  # [B*K, V]
        next_token_scores = processed + beam_scores[:, None].expand_as(processed)
        scores_for_all_vocab = next_token_scores.clone()  # [B*K, V]

        # c. the top 2K (or (1 + n_eos) * K) continuations over all beams of each batch row
        vocab = next_token_scores.shape[-1]
        next_token_scores = next_token_scores.view(batch_size, num_beams * vocab)  # [B, K*V]
        n_eos_tokens = eos_token_id.shape[0] if eos_token_id is not None else 0
        next_token_scores, next_tokens = torch.topk(
            next_token_scores, max(2, 1 + n_eos_tokens) * num_beams, dim=1, largest=True, sorted=True)  # [B, 2K]
        next_indices = next_tokens // vocab  # beam within the batch row
        next_tokens = next_tokens % vocab

        # d. the scorer: finished hypotheses, forced tokens, banks, the K beams kept
        notes: list[_Cand] | None = observer.record(lambda rec: [])  # the scorer notes each candidate's fate there
        beam_scores, beam_next_tokens, beam_idx = scorer.process(
            input_ids, next_token_scores, next_tokens, next_indices, scores_for_all_vocab,
            pad_token_id=pad_token_id, eos_token_id=eos_token_id, decoder_prompt_len=decoder_prompt_len, notes=notes)

        # e. append, and reorder the cache to the beams' new parents
        input_ids = torch.cat([input_ids[beam_idx, :], beam_next_tokens.unsqueeze(-1)], dim=-1)  # [B*K, S+1]
        del outputs
        reorder_cache(model, model_kwargs, beam_idx)

        # f. stop when every batch row is done or a stopping criterion holds for every beam
        done = bool(scorer.is_done) or all(stopping_criteria(input_ids, None))
        closed = scorer.close(input_ids, beam_scores, decoder_prompt_len) if done else []
        def record(rec):
            chosen: list[list[int]] = [[] for _ in range(batch_beam_size)]  # tokens each row passed on
            for cand in notes:
                if cand.fate == "kept":
                    chosen[cand.row].append(cand.token)
            rows = rec.row_steps(logits, processed, stages, chosen, inputs=log_probs)
            nodes = _record_step(tree, notes, closed, num_beams, input_ids.shape[1] - decoder_prompt_len,
                                 generation_config.length_penalty)
            best = tree.rows([node for _, node in scorer.ranked()] if done else scorer.peek(
                input_ids, beam_scores, decoder_prompt_len, [node for row in tree.running for node in row]))
            rec.emit(rows, cache=model_kwargs.get("cache"), beam=nodes, best=best.paths, best_nodes=best.nodes)

        observer.record(record)
        if done:
            break

    # 4. the best hypotheses (``close`` added the open beams when the loop stopped)
    sequences = scorer.finalize(input_ids, max_length=stopping_criteria.max_length, pad_token_id=pad_token_id,
                                eos_token_id=eos_token_id)
    observer.put(sequences[0, decoder_prompt_len:])  # streamers take one row: the best hypothesis, once known
    observer.end()
    return sequences


# --- recording ---------------------------------------------------------------------------------------

def _record_step(tree: BeamTree, notes: list[_Cand], closed: list[Closed], num_beams: int, generated: int,
                 length_penalty: float) -> list[BeamNode]:
    """This step's candidates as ``BeamNode``s; ``closed`` holds the open beams that entered the final
    ranking because the search stopped (they become "finished"). Every hypothesis this step filed is named by
    its node, so the ranking says which nodes it returns."""
    final = {c.row: c for c in closed}
    for cand in notes:
        node = tree.expand(cand.batch, cand.row % num_beams, cand.token, cand.score,
                           normalized_score(cand.score, generated, length_penalty), forced=cand.forced, bank=cand.bank)
        if cand.fate == "kept":
            row = cand.batch * num_beams + cand.position
            tree.set_running(cand.batch, cand.position, node)
            if row in final:
                tree.mark(node, "finished", final[row].score)
                final[row].filed.name(node)
            else:
                tree.mark(node, "kept")
        elif cand.fate == "finished":
            tree.mark(node, "finished", cand.final_score)
            cand.hypothesis.name(node)
    return tree.flush()
