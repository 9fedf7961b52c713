"""4.55.4's ``BeamHypotheses``: the n-best list of finished hypotheses of one batch row (or one
(batch row, group) for diverse beam search), shared by the ports that 5.x no longer ships
(group and constrained beam search). 5.x's own beam search keeps finished beams in tensors instead.

Both ported scorers take a batch row's ranked continuations the same way, ``file_row``: EOS continuations
among the best go to the finished hypotheses, the others run on (``NextBeams.take``). It returns what it decided
as records (``Kept``, ``Finished``), which the scorers' callers read to draw the beam tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Union

import torch

from .beam_tree import normalized_score


class BeamHypotheses:
    """Finished hypotheses ranked by ``sum_logprobs / generated_len ** length_penalty``. Each entry is
    ``(score, token ids, node)``; ``node`` is its beam-tree node id (-1 when not recording)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping, max_length: int | None = None):
        if not isinstance(early_stopping, bool) and max_length is None:
            raise ValueError("`max_length` must be set when `early_stopping` is a string; got None")
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_length = max_length
        self.num_beams = num_beams
        self.beams: list[tuple[float, torch.LongTensor, int]] = []
        self.worst_score = 1e9

    def __len__(self) -> int:
        return len(self.beams)

    def copy(self) -> "BeamHypotheses":
        """A copy whose list can grow without touching this one (hypothesis tensors are shared)."""
        new = BeamHypotheses(self.num_beams, self.length_penalty, self.early_stopping, self.max_length)
        new.beams, new.worst_score = list(self.beams), self.worst_score
        return new

    def add(self, hyp: torch.LongTensor, sum_logprobs: float, generated_len: int | None = None,
            node: int = -1) -> float | None:
        """Offer a hypothesis; returns its score when it joins the list, ``None`` when it is not good enough."""
        # without generated_len, 4.55.4's retro-compatible branch counts the whole sequence
        length = generated_len if generated_len is not None else hyp.shape[-1]
        score = normalized_score(sum_logprobs, length, self.length_penalty)
        if len(self) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp, node))
            if len(self) > self.num_beams:
                sorted_next_scores = sorted([(s, idx) for idx, (s, _, _) in enumerate(self.beams)])
                del self.beams[sorted_next_scores[0][1]]
                self.worst_score = sorted_next_scores[1][0]
            else:
                self.worst_score = min(score, self.worst_score)
            return score
        return None

    def relabel(self, hyp: torch.LongTensor, node: int) -> None:
        """Name the entry holding ``hyp`` (this very tensor) by beam-tree node ``node``."""
        self.beams = [(score, tokens, node if tokens is hyp else n) for score, tokens, n in self.beams]

    def is_done(self, best_sum_logprobs: float, cur_len: int, decoder_prompt_len: int = 0) -> bool:
        """Full, and no running beam can beat the worst hypothesis (as ``early_stopping`` estimates it)."""
        if len(self) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            # False: a heuristic from cur_len; "never" with a non-positive penalty: cur_len gives the best score
            highest_attainable_score = best_sum_logprobs / (cur_len - decoder_prompt_len) ** self.length_penalty
        else:  # "never" with a positive penalty: the longest possible hypothesis has the best score
            if self.max_length <= decoder_prompt_len:
                raise ValueError("max_length is not larger than decoder prompt length")
            highest_attainable_score = best_sum_logprobs / (self.max_length - decoder_prompt_len) ** self.length_penalty
        return self.worst_score >= highest_attainable_score


def pad_hypotheses(best: list[torch.LongTensor], input_ids: torch.LongTensor, max_length: int | None,
                   pad_token_id, eos_token_id: torch.Tensor) -> torch.LongTensor:
    """Stack the returned hypotheses into [R, S'] as 4.55.4's ``finalize`` does: rows shorter than the
    longest are padded, and a row with room gets the first EOS id appended."""
    sent_lengths = [len(hyp) for hyp in best]
    sent_max_len = max(sent_lengths) + 1
    sent_max_len = min(sent_max_len, max_length) if max_length is not None else sent_max_len
    decoded = input_ids.new(len(best), sent_max_len)
    if min(sent_lengths) != max(sent_lengths):
        if pad_token_id is None:
            raise ValueError("`pad_token_id` has to be defined")
        decoded.fill_(pad_token_id)
    for i, hypo in enumerate(best):
        decoded[i, : sent_lengths[i]] = hypo
        if sent_lengths[i] < sent_max_len:
            decoded[i, sent_lengths[i]] = eos_token_id[0]  # only the first EOS id
    return decoded


# --- one batch row's continuations, as both ported scorers file them --------------------------------------------
class Filed(NamedTuple):
    """A hypothesis a step filed among the finished ones, to be named by its beam-tree node once that exists."""

    hyps: BeamHypotheses
    tokens: torch.LongTensor

    def name(self, node: int) -> None:
        self.hyps.relabel(self.tokens, node)


@dataclass(frozen=True)
class Kept:
    """A continuation that runs on as one of its batch row's next beams."""

    rank: int  # among the row's ranked continuations, best first
    slot: int  # which of the row's next beams it became


@dataclass(frozen=True)
class Finished:
    """An EOS continuation that joined the finished hypotheses."""

    rank: int
    score: float  # its normalised score in the list
    filed: Filed


Decision = Union[Kept, Finished]


@dataclass(frozen=True)
class RowStep:
    """What ``file_row`` did with one batch row's ranked continuations."""

    decisions: tuple[Decision, ...]  # in rank order; a rank it passed over, filed no better or never reached: absent

    @property
    def kept(self) -> list[Kept]:
        return [d for d in self.decisions if isinstance(d, Kept)]


def file_row(*, hyps: BeamHypotheses, input_ids: torch.LongTensor, first_row: int, scores: torch.Tensor,
             tokens: torch.LongTensor, beams: torch.LongTensor, keep: int, eos_token_id, generated_len: int,
             may_finish: Callable[[int], bool] | None = None, nodes: list[int] | None = None) -> RowStep:
    """4.55.4's scorers on one batch row's continuations, best first (``scores``/``tokens``/``beams`` [2G]): an EOS
    continuation among the best ``keep`` is offered to ``hyps`` (if ``may_finish(row)``), any other runs on, until
    ``keep`` run on. ``beams`` index the row's beams from ``first_row`` of ``input_ids``; ``nodes[rank]`` names a
    finished one in the tree when known already."""
    decisions: list[Decision] = []
    n_kept = 0
    for rank, (token, score, beam) in enumerate(zip(tokens, scores, beams)):
        row = first_row + int(beam)
        if (eos_token_id is not None) and (token.item() in eos_token_id):
            if rank >= keep:  # only the best `keep` may finish
                continue
            if may_finish is None or may_finish(row):
                hyp = input_ids[row].clone()
                final = hyps.add(hyp, score.item(), generated_len=generated_len,
                                 node=nodes[rank] if nodes is not None else -1)
                if final is not None:
                    decisions.append(Finished(rank, final, Filed(hyps, hyp)))
        else:
            decisions.append(Kept(rank, n_kept))
            n_kept += 1
        if n_kept == keep:
            break
    if n_kept < keep:
        raise ValueError(f"At most {keep} tokens in {tokens} can be equal to `eos_token_id: {eos_token_id}`. "
                         f"Make sure {tokens} are corrected.")
    return RowStep(tuple(decisions))


class NextBeams:
    """The beams a scorer picks for the next step, one row of G per batch row (or group): their scores, tokens
    and the rows of ``input_ids`` they continue, each [B, G]."""

    def __init__(self, batch_size: int, size: int, *, scores: torch.Tensor, tokens: torch.LongTensor,
                 beams: torch.LongTensor, device):
        """``scores``/``tokens``/``beams``: the ranked candidates, whose dtypes the beams take."""
        self.scores = torch.zeros((batch_size, size), dtype=scores.dtype, device=device)
        self.tokens = torch.zeros((batch_size, size), dtype=tokens.dtype, device=device)
        self.beams = torch.zeros((batch_size, size), dtype=beams.dtype, device=device)

    def take(self, batch: int, step: RowStep, *, scores: torch.Tensor, tokens: torch.LongTensor,
             beams: torch.LongTensor, first_row: int) -> None:
        """Batch row ``batch`` continues with the candidates ``step`` kept (``scores``/``tokens``/``beams`` [2G])."""
        ranks = [kept.rank for kept in step.kept]
        self.scores[batch] = scores[ranks]
        self.tokens[batch] = tokens[ranks]
        self.beams[batch] = first_row + beams[ranks]

    def idle(self, batch: int, *, pad_token_id, eos_token_id) -> None:
        """A batch row (or group) that is done idles on padding (4.55.4 points its beams at row 0 of the whole
        batch, harmlessly: they only feed padded beams)."""
        if eos_token_id is None or pad_token_id is None:
            raise ValueError("Generated beams >= num_beams -> eos_token_id and pad_token have to be defined")
        self.scores[batch, :] = 0
        self.tokens[batch, :] = pad_token_id
        self.beams[batch, :] = 0

    def flat(self) -> tuple[torch.Tensor, torch.LongTensor, torch.LongTensor]:
        """Scores, tokens and source rows, each [B*G]."""
        return self.scores.view(-1), self.tokens.view(-1), self.beams.view(-1)
