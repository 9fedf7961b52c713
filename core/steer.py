"""Steering from records: where a run would be if it had chosen another token at some step.

Every function reads a run's recorded steps, never re-runs the algorithm:
- ``tokens_before(steps, step, row)``: what row ``row`` had generated before step ``step`` (for the beam family the
  tokens of running beam ``row`` then, followed along the beam tree's recorded slots; for assisted decoding the
  tokens of every verification round before it);
- ``branch(trace, step, row, token_id)``: the input ids and the ``Origin`` of a run that continues there with
  ``token_id`` forced (``None``: nothing forced, it resumes);
- ``node_path(steps, node_id)``: the tokens of a beam-tree node's hypothesis (branching from a node), walked on the
  trace's ``BeamIndex``;
- ``check_ids(ids, field, vocab_size)``: ids read from a trace, checked before they reach a model (a loaded trace is a
  visitor's file: an id outside the vocabulary is an ``IndexError`` on CPU and a device-side assert that breaks CUDA
  for every later run on a GPU).

A branch is then an ordinary ``core.generate`` / ``core.stream`` on those input ids with ``origin=`` set, so its
trace names its parent run and step.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .beam_index import BeamIndex
from .records import Origin, StepRecord, Trace

# the most tokens a continued run starts from (prompt and prefix): the app has no prompt limit of its own yet (a
# configurable table of limits is coming); a trace read from a file reaches the model through here
MAX_CONTINUED_TOKENS = 8192


def check_ids(ids, field: str, vocab_size: int | None) -> list[int]:
    """``ids`` as a list of int token ids in the model's vocabulary ``[0, vocab_size)`` (``None``: any id >= 0)."""
    if not isinstance(ids, (list, tuple)):
        raise ValueError(f"{field} must be a list of token ids; got {type(ids).__name__}")
    if len(ids) > MAX_CONTINUED_TOKENS:
        raise ValueError(f"{field} must hold at most {MAX_CONTINUED_TOKENS} tokens; got {len(ids)}")
    top = vocab_size if vocab_size is not None else "its size"
    for t in ids:
        if not isinstance(t, int) or isinstance(t, bool):
            raise ValueError(f"{field}: a token id must be an int; got {t!r}")
        if t < 0 or (vocab_size is not None and t >= vocab_size):
            raise ValueError(f"{field}: token id {t} is outside the model's vocabulary [0, {top})")
    return list(ids)


def node_path(steps: Sequence[StepRecord], node_id: int) -> list[int]:
    """Tokens from the first generated one to ``node_id`` (inclusive) along recorded parents."""
    return BeamIndex.of(steps).tokens(node_id)


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
    carried = check_ids(trace.origin.prefix, "trace origin.prefix", vocab_size) if trace.origin is not None else []
    prompt = check_ids(trace.prompt_ids[0], "trace prompt_ids", vocab_size)
    prompt = prompt[:len(prompt) - len(carried)]
    before = check_ids(tokens_before(trace.steps, step, row), "trace chosen tokens", vocab_size)
    prefix = carried + before + ([token_id] if token_id is not None else [])
    if len(prompt) + len(prefix) > MAX_CONTINUED_TOKENS:
        raise ValueError(f"trace prompt_ids and prefix must hold at most {MAX_CONTINUED_TOKENS} tokens together to "
                         f"continue the run; got {len(prompt) + len(prefix)}")
    origin = Origin(parent=trace.run_id, step=step, row=row, token_id=token_id, prefix=prefix)
    return torch.tensor([prompt + prefix]), origin
