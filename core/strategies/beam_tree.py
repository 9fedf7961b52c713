"""Beam bookkeeping shared by the beam family (beam search, beam sampling, diverse and constrained beam search).

Small pure helpers reshape the [B, K, ...] beam tensors (transformers' own static helpers, re-exported) and
normalise scores by length; ``BeamTree`` turns the candidates each step's top-k expands into ``BeamNode``
records. A tree exists only while recording: strategies build and step it inside ``observer.record`` (``core.observe``),
which the null observer never calls, so a run without a recorder does no extra work.

One step of a ``BeamTree``, in order:
1. ``expand`` gives each candidate the top-k considered a node id; its parent is the node of the running
   beam it extends (``ROOT`` for the prompt);
2. ``mark`` sets a candidate's fate where the algorithm decides it ("kept", "finished" with its final score;
   a candidate never marked stays "pruned"); ``set_running`` makes a node the running beam of a slot for
   the next step (the parent of that slot's next expansions);
3. ``flush`` returns the step's ``BeamNode`` list and makes the new running slots current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers.generation.utils import GenerationMixin

from ..beam_index import ROOT, BeamIndex
from ..records import BeamNode
from ..text import TokenTexts

# [B, K, ...] <-> [B*K, ...] and gathering beams along dim 1: transformers' helpers, not re-written here
flatten_beams = GenerationMixin._flatten_beam_dim
unflatten_beams = GenerationMixin._unflatten_beam_dim
gather_beams = GenerationMixin._gather_beams


def normalized_score(score, generated_len: int, length_penalty: float):
    """``score / generated_len ** length_penalty``: how transformers ranks a finished hypothesis (tensor or float).
    ``generated_len`` counts the new tokens including the last one (an EOS counts)."""
    return score / (generated_len**length_penalty)


def split_flat_indices(indices: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into a flattened [K * V] score row -> (beam index, token id), each shaped like ``indices``."""
    return indices // vocab_size, indices % vocab_size


@dataclass
class _Open:
    """A node of the current step whose fate may still change (``BeamNode`` is frozen)."""

    node_id: int
    parent: int
    batch: int
    token_id: int
    score: float
    normalized_score: float
    details: dict[str, Any] = field(default_factory=dict)  # strategy fields of ``BeamNode`` (group, forced, ...)
    fate: str = "pruned"
    final_score: float | None = None
    slot: int | None = None


class BeamTree:
    """Node ids for expanded candidates, the node of every running beam, and each node's parent and token
    (so ``path`` can spell any hypothesis). ``text`` is the run's ``TokenTexts`` (``Recording.texts``): a node's text
    is its token's ``Piece`` after its parent's path, so a character split across tokens reads as itself."""

    def __init__(self, batch_size: int, num_beams: int, text: TokenTexts):
        self.text = text
        self._waiting: dict[int, bytes] = {ROOT: b""}  # node -> bytes its path ends with that are no character yet
        self.running = [[ROOT] * num_beams for _ in range(batch_size)]  # [B][K] node of each running beam
        self._next_running = [row[:] for row in self.running]
        self._open: dict[int, _Open] = {}
        self.index = BeamIndex("beam search")  # every node's parent and token: what ``path`` walks

    def expand(self, batch: int, beam: int, token_id: int, score: float, normalized: float, **details) -> int:
        """A new candidate: running beam ``beam`` of ``batch`` extended by ``token_id``. Returns its node id.
        ``details`` are the strategy fields of ``BeamNode`` (``group``, ``diversity_penalty``, ``forced``, ``bank``)."""
        node_id = len(self.index)
        parent = self.running[batch][beam]
        self.index.add(node_id, parent, int(token_id))
        self._open[node_id] = _Open(node_id, parent, batch, int(token_id), float(score), float(normalized), details)
        return node_id

    def mark(self, node_id: int, fate: str, final_score: float | None = None) -> None:
        """Set the fate of a node expanded this step ("kept", "finished" or "pruned")."""
        node = self._open[node_id]
        node.fate = fate
        node.final_score = float(final_score) if final_score is not None else None

    def set_running(self, batch: int, slot: int, node_id: int) -> None:
        """From the next step on, running beam ``slot`` of ``batch`` continues ``node_id``."""
        self._next_running[batch][slot] = node_id
        if node_id in self._open:
            self._open[node_id].slot = slot

    def next_running(self) -> list[list[int]]:
        """[B][K] the node each running beam will continue from the next step (as set so far this step)."""
        return [row[:] for row in self._next_running]

    def flush(self) -> list[BeamNode]:
        """This step's nodes as records, in expansion order; the new running beams become current."""
        nodes = []
        for n in self._open.values():
            piece, self._waiting[n.node_id] = self.text.after(self._waiting[n.parent], n.token_id)
            nodes.append(BeamNode(node_id=n.node_id, parent=n.parent, batch=n.batch, token_id=n.token_id,
                                  text=piece.text, tail=piece.tail, score=n.score, normalized_score=n.normalized_score,
                                  fate=n.fate, final_score=n.final_score, slot=n.slot, **n.details))
        self._open = {}
        self.running = [row[:] for row in self._next_running]
        return nodes

    def path(self, node_id: int) -> list[int]:
        """Tokens from the prompt to ``node_id`` (inclusive); ``[]`` for ``ROOT``."""
        return self.index.tokens(node_id)

    def best(self, pools: list[list[tuple[float, int]]], per_batch: int) -> "Best":
        """The ``per_batch`` highest-scoring hypotheses of each batch's pool of (score, node id), laid out like
        ``generate``'s returned rows (batch-major). A pool short of hypotheses gives empty rows."""
        nodes = []
        for pool in pools:
            ranked = sorted(pool, key=lambda item: -item[0])[:per_batch]
            nodes += [node for _, node in ranked] + [ROOT] * (per_batch - len(ranked))
        return self.rows(nodes)

    def rows(self, nodes: list[int]) -> "Best":
        """The returned rows ending at ``nodes`` (``ROOT``: an empty row)."""
        return Best([self.path(node) for node in nodes], [int(node) for node in nodes])


class Best(NamedTuple):
    """The current best hypothesis of each returned row, as ``StepRecord.best`` and ``best_nodes`` hold it."""

    paths: list[list[int]]  # the tokens of each row
    nodes: list[int]  # the node each row ends at (``ROOT``, -1, for an empty row)
