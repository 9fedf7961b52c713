"""How a steered run starts (no Gradio here): from the prompt, from a picked step with a forced token (a branch), one
token further (step mode), from where a paused run stopped (resume), or N seeds at once (sample many).

Each function returns a ``Start``: the input ids, the generator, the ``Origin`` naming the run it continues (from
``core.steer``, which reads the parent's records), the paused run it extends (``base``), the settings and the run's
facts (``playground.facts``: a run that continues another keeps its prompt and chat template; Sample N's seeds are
written where its generators are made). The tab then streams it like any run (``runs.stream_run``), so every steered
run is an ordinary core run with records.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

import core
from core.rng import new_generator
from core.steer import branch, check_ids, node_path

from .facts import UNKNOWN, Facts, run_label
from .runs import Run, returned_tokens

SAMPLE_MANY_MAX = 64  # "Sample N" on CPU
SAMPLE_MANY_TOP_N = 3  # its tree needs each chosen token's probability, not ten alternatives per row


class Start(NamedTuple):
    input_ids: torch.LongTensor  # [B, S]
    attention_mask: torch.LongTensor  # [B, S]
    generator: torch.Generator | list[torch.Generator]
    kwargs: dict  # the run's settings (max_new_tokens: what is left to generate)
    label: str
    origin: core.Origin | None = None
    base: core.Trace | None = None  # a paused run this one extends from its end
    lead: list[int] = []  # tokens shown before the run's own: the prefix it continues from
    paused: bool = False  # step mode: stop after this run's tokens and wait for Next token
    budget: int | None = None  # step mode: the user's max_new_tokens, the tokens the run generates itself
    top_n: int = 10  # candidates recorded per row and step
    facts: Facts = UNKNOWN  # the prompt, the chat template, Sample N's seeds, the assistant (``Run.facts``)


def ended(run: Run, budget: int | None, eos_token_ids: set[int]) -> bool:
    """Has a step-mode run met an end: an EOS, a stop, or ``budget`` tokens of its own (a branch's prefix not
    counted)?"""
    tokens = run.tokens[0] if run.tokens else []
    return bool(tokens and tokens[-1] in eos_token_ids) or bool(run.stopped) or (
        budget is not None and len(tokens) >= budget)


def _ids(ids: list[int]) -> tuple[torch.LongTensor, torch.LongTensor]:
    tensor = torch.tensor([ids])
    return tensor, torch.ones_like(tensor)


def is_paused(run: Run | None, prompt: str, model_name: str) -> bool:
    """Is ``run`` a step-mode run waiting on this prompt and model?"""
    return run is not None and run.paused and run.trace is not None and run.prompt == prompt \
        and run.model_name == model_name


def resume(run: Run, kwargs: dict, label: str, facts: Facts = UNKNOWN) -> Start:
    """Generate from where the paused step-mode ``run`` stopped to the end (``max_new_tokens`` counts the run's own
    tokens, those it already has included), drawing on from its generator's state; ``facts``: the tab's now (the
    prompt's are the run's)."""
    trace = run.trace
    done = returned_tokens(trace)[0]
    left = int(kwargs.get("max_new_tokens", 20)) - len(done)
    if left < 1:
        raise ValueError(f"`max_new_tokens` must be above {len(done)} to continue this run: it already generated "
                         f"{len(done)} tokens; got {kwargs.get('max_new_tokens')}")
    ids, mask = _ids(list(trace.prompt_ids[0]) + returned_tokens(trace)[0])
    return Start(ids, mask, _generator(run), {**kwargs, "max_new_tokens": left}, label,
                 base=trace, lead=_lead(trace), facts=facts.continuing(run.facts))


def next_token(run: Run | None, prompt_ids: torch.LongTensor, kwargs: dict, seed: int | None, label: str,
               facts: Facts = UNKNOWN) -> Start:
    """One more token: after the paused ``run`` when there is one (its generator state carried on), else the first
    token of a new step-mode run from the prompt (``facts``: its prompt's)."""
    one = {**kwargs, "max_new_tokens": 1, "num_return_sequences": 1}
    budget = kwargs.get("max_new_tokens")
    if run is None:
        return Start(prompt_ids, torch.ones_like(prompt_ids), new_generator(seed), one, label, paused=True,
                     budget=budget, facts=facts)
    trace = run.trace
    ids, mask = _ids(list(trace.prompt_ids[0]) + returned_tokens(trace)[0])
    return Start(ids, mask, _generator(run), one, label, base=trace, lead=_lead(trace), paused=True, budget=budget,
                 facts=facts.continuing(run.facts))


def branch_at(parent: Run, step: int, row: int, token_id: int, kwargs: dict, seed: int | None, vocab_size: int,
              label: str, facts: Facts = UNKNOWN) -> Start:
    """Continue ``parent``'s row ``row`` before ``step`` with ``token_id`` forced there (core.steer reads the prefix
    from the parent's records), generating ``max_new_tokens`` more, as ``generate`` would from that prefix. A paused
    parent gives a paused branch (step mode goes on from the forced token)."""
    if parent.trace is None:
        raise ValueError("the run to branch from has not finished; wait for it (or Stop it) first")
    ids, origin = branch(parent.trace, step, row, token_id, vocab_size)
    return _continue(ids, origin, kwargs, seed, label, parent.paused, facts.continuing(parent.facts))


def branch_at_node(parent: Run, node_id: int, kwargs: dict, seed: int | None, label: str,
                   vocab_size: int | None = None, facts: Facts = UNKNOWN) -> Start:
    """Continue the hypothesis of beam-tree node ``node_id`` of ``parent`` (its path is the prefix)."""
    if parent.trace is None:
        raise ValueError("the run to branch from has not finished; wait for it (or Stop it) first")
    path = check_ids(node_path(parent.trace.steps, node_id), "trace beam token_id", vocab_size)
    step = next(rec.step for rec in parent.trace.steps for n in rec.beam or () if n.node_id == node_id)
    ids, origin = branch(parent.trace, 0, 0, None, vocab_size)  # the prompt, without any token of the parent
    prefix = list(origin.prefix) + path
    origin = core.Origin(parent=parent.trace.run_id, step=step, row=0, token_id=path[-1], prefix=prefix)
    ids = torch.tensor([check_ids(ids[0].tolist() + path, "trace prompt_ids and beam path", vocab_size)])
    return _continue(ids, origin, kwargs, seed, label, False, facts.continuing(parent.facts))


def _continue(ids: torch.LongTensor, origin: core.Origin, kwargs: dict, seed: int | None, label: str,
              paused: bool, facts: Facts) -> Start:
    """A run from the prefix ``ids``: ``max_new_tokens`` more tokens (one, in step mode), as ``generate`` from it."""
    settings = {**kwargs, "max_new_tokens": 1} if paused else dict(kwargs)
    return Start(ids, torch.ones_like(ids), new_generator(seed), settings, label, origin=origin,
                 lead=list(origin.prefix), paused=paused, budget=kwargs.get("max_new_tokens"), facts=facts)


def sample_many(prompt_ids: torch.LongTensor, kwargs: dict, n: int, seed: int | None, name: str,
                facts: Facts = UNKNOWN) -> Start:
    """``n`` runs in one batch, row i drawing from its own generator seeded ``seed + i``: each equals the single run
    with that seed. The seeds go into the run's facts, and its label (the plan's ``name``, the count, the seeds) is
    drawn from them."""
    if not (isinstance(n, int) and 1 <= n <= SAMPLE_MANY_MAX):
        raise ValueError(f"`n` must be an integer in [1, {SAMPLE_MANY_MAX}]; got {n!r}")
    first = new_generator(seed).initial_seed()
    seeds = tuple(range(first, first + n))
    facts = replace(facts, seeds=seeds)
    ids = prompt_ids.expand(n, -1).contiguous()
    return Start(ids, torch.ones_like(ids), [new_generator(s) for s in seeds], {**kwargs, "num_return_sequences": 1},
                 run_label(name, facts), top_n=SAMPLE_MANY_TOP_N, facts=facts)


def check_vocab(start: Start, vocab_size: int) -> None:
    """The last check before the model: every input id of ``start`` in ``[0, vocab_size)`` (whatever record or
    file the ids were read from, an id past the embedding must not reach a forward)."""
    ids = start.input_ids  # [B, S]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"input ids: token id {bad} is outside the model's vocabulary [0, {vocab_size})")


def _generator(run: Run) -> torch.Generator:
    """The paused run's generator, where its last step left it."""
    generator = new_generator(run.seed)
    if run.generator_state is not None:
        generator.set_state(run.generator_state)
    return generator


def _lead(trace: core.Trace) -> list[int]:
    return list(trace.origin.prefix) if trace.origin is not None else []
