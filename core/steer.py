"""Steering from records: where a run would be if it had chosen another token at some step.

Every function reads a run's recorded steps, never re-runs the algorithm:
- ``tokens_before(steps, step, row)``: what row ``row`` had generated before step ``step`` (for the beam family the
  tokens of running beam ``row`` then, followed along the beam tree's recorded slots; for assisted decoding the
  tokens of every verification round before it);
- ``branch(trace, step, row, token_id)``: the input ids and the ``Origin`` of a run that continues there with
  ``token_id`` forced (``None``: nothing forced, it resumes);
- ``node_path(steps, node_id)``: the tokens of a beam-tree node's hypothesis (branching from a node).

A branch is then an ordinary ``core.generate`` / ``core.stream`` on those input ids with ``origin=`` set, so its
trace names its parent run and step.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .records import BeamNode, Origin, StepRecord, Trace

ROOT = -1  # a beam node's parent when it extends the prompt


def _beam_nodes(steps: Sequence[StepRecord]) -> dict[int, tuple[int, BeamNode]]:
    """node id -> (the step it was expanded at, its record)."""
    return {node.node_id: (rec.step, node) for rec in steps for node in rec.beam or ()}


def node_path(steps: Sequence[StepRecord], node_id: int) -> list[int]:
    """Tokens from the first generated one to ``node_id`` (inclusive) along recorded parents."""
    nodes = _beam_nodes(steps)
    tokens = []
    while node_id != ROOT:
        if node_id not in nodes:
            raise ValueError(f"`node` must be a node of the run's beam tree; got {node_id} (not recorded)")
        _, node = nodes[node_id]
        tokens.append(node.token_id)
        node_id = node.parent
    return tokens[::-1]


def tokens_before(steps: Sequence[StepRecord], step: int, row: int = 0) -> list[int]:
    """The tokens row ``row`` (a batch row; for the beam family a running beam) had generated before ``step``."""
    if not 0 <= step <= len(steps):
        raise ValueError(f"`step` must be in [0, {len(steps)}] for this run; got {step}")
    earlier = steps[:step]
    if any(rec.beam is not None for rec in steps):
        if step == 0:
            return []
        batch_beams = max(len(rec.rows) for rec in steps)
        if not 0 <= row < batch_beams:
            raise ValueError(f"`row` must be a beam in [0, {batch_beams - 1}] of this run; got {row}")
        last = next((node for node in earlier[-1].beam or () if node.slot == row and node.batch == 0), None)
        if last is None:
            raise ValueError(f"`row` {row} ran no beam into step {step} of this run (it had finished)")
        return node_path(steps, last.node_id)
    rows = {rs.row for rec in steps for rs in rec.rows}
    if rows and row not in rows:
        raise ValueError(f"`row` must be in [0, {max(rows)}] for this run; got {row}")
    return [t for rec in earlier for rs in rec.rows if rs.row == row for t in rs.chosen]


def branch(trace: Trace, step: int, row: int = 0, token_id: int | None = None,
           vocab_size: int | None = None) -> tuple[torch.LongTensor, Origin]:
    """``(input_ids [1, S], origin)`` of a run continuing ``trace``'s row ``row`` before ``step`` with ``token_id``
    forced there (``None``: resume with nothing forced). The prompt is the trace's first prompt row."""
    if token_id is not None and (token_id < 0 or (vocab_size is not None and token_id >= vocab_size)):
        raise ValueError(f"`token` must be a token id in [0, {(vocab_size or 1) - 1}]; got {token_id}")
    if not trace.prompt_ids:
        raise ValueError("the run has no prompt ids to continue from")
    # the user's prompt: a parent that itself continued a run holds that run's prefix in its prompt ids
    carried = list(trace.origin.prefix) if trace.origin is not None else []
    prompt = list(trace.prompt_ids[0])
    prompt = prompt[:len(prompt) - len(carried)]
    prefix = carried + tokens_before(trace.steps, step, row) + ([token_id] if token_id is not None else [])
    origin = Origin(parent=trace.run_id, step=step, row=row, token_id=token_id, prefix=prefix)
    return torch.tensor([prompt + prefix]), origin
