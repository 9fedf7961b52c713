"""A run as a tab shows it: ``Run``, filled from ``core.stream``'s events as they arrive (``stream_run``) or rebuilt
from a trace, and the trace files a tab downloads and loads back. Nothing here builds widgets."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

import core
from core import remote
from core.records import Piece, StepRecord, Trace
from core.text import TokenTexts, shown

from . import engine, engine_host, policy, session, zerogpu
from .facts import Facts, run_label


@dataclass
class Run:
    """One generation shown in a tab, filled as its stream events arrive (or rebuilt from a trace).

    A run may continue a paused step-mode run (``base``): its records and tokens then come first, the new ones
    after them, and the finished trace is the two joined (``joined``) under the base's run id. Its ``facts`` (the
    prompt, the chat template, Sample N's seeds, the assistant) go into its trace, so a run rebuilt from it has them
    too; ``label`` is only what the tab calls it."""

    name: str
    label: str
    kwargs: dict = field(default_factory=dict)
    prompt_ids: list[list[int]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    trace: Trace | None = None
    model_name: str = ""
    started: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    elapsed_s: float = 0.0
    done: bool = False
    stopped: str = ""  # why it ended early: "cancelled" (Stop), "time cap" (the server's wall-clock limit)
    seed: int | None = None  # the seed its generator started from (a sampled run replays with it)
    streaming: threading.Event = field(default_factory=threading.Event)  # set while core.stream runs
    ended: threading.Event = field(default_factory=threading.Event)  # set when its worker has finished
    facts: Facts = field(default_factory=Facts)  # what it started with: the prompt, chat template, seeds, assistant
    base: Trace | None = None  # the paused step-mode run this one continues from its end
    paused: bool = False  # step mode: Next token may add more
    generator_state: torch.Tensor | None = None  # where its generator stopped: step mode draws on from there
    lead: list[int] = field(default_factory=list)  # tokens before its own (a branch's prefix), shown first
    lead_texts: list[str | Piece] = field(default_factory=list)  # the lead's pieces (or, older, texts)

    @property
    def prompt(self) -> str:
        """The prompt as typed (the branch tree shows it)."""
        return self.facts.prompt

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each generator it drew from: Sample N's, or its one seed (none: a fresh random one, not yet
        drawn)."""
        return self.facts.seeds or ((self.seed,) if self.seed is not None else ())

    def feed(self, event: core.StreamEvent, decode=None) -> None:
        """One stream event. ``decode(ids)`` makes the texts when tokens come before the run's own (``lead``, the
        prefix of a branch, or a ``base`` it extends): the texts show them, the token counts do not."""
        self.elapsed_s = time.perf_counter() - self.started
        offset = len(self.base.steps) if self.base is not None else 0
        if event.record is not None:
            self.steps.append(dataclasses.replace(event.record, step=offset + event.record.step) if offset
                              else event.record)
            if self.first_token_s is None:
                self.first_token_s = self.elapsed_s
        before = returned_tokens(self.base)[0] if self.base is not None else []
        self.tokens = [before + t for t in event.tokens]
        self.texts = [decode(self.lead + t) for t in self.tokens] if decode is not None and (self.lead or before) \
            else event.texts
        if event.done:
            self.done = True
            self.stopped = event.stopped
            trace = event.result.trace if event.result is not None else None
            if trace is not None and self.base is not None:
                trace = joined(self.base, trace, self.texts)
            if trace is not None:
                trace = dataclasses.replace(trace, facts=self.facts.to_dict())
            self.trace = trace
            if self.trace is not None:  # the returned sequences, ranked as generate returns them
                self.tokens = returned_tokens(self.trace)
                self.texts = ([decode(self.lead + t) for t in self.tokens] if decode is not None and self.lead
                              else list(self.trace.texts) or self.texts)

    @property
    def new_tokens(self) -> int:
        """Tokens generated for the first returned row (what tokens/s counts)."""
        if self.tokens:
            return len(self.tokens[0])
        return sum(len(r.chosen) for s in self.steps for r in s.rows if r.row == 0)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_trace(self) -> Trace:
        """The finished trace, or one built from the records so far (a stopped run)."""
        if self.trace is not None:
            return self.trace
        return Trace(strategy=self.steps[0].strategy if self.steps else "", config=jsonable(self.kwargs),
                     prompt_ids=self.prompt_ids, steps=list(self.steps), texts=list(self.texts),
                     model_name=self.model_name, elapsed_s=self.elapsed_s, seed=self.seed,
                     stopped=self.stopped or "cancelled", facts=self.facts.to_dict())

    @classmethod
    def from_trace(cls, name: str, label: str, trace: Trace, prompt: str = "",
                   lead_pieces: list[Piece] | None = None) -> "Run":
        """A finished run from its trace, its facts checked (raises ValueError); ``prompt`` is the prompt of a trace
        written before runs carried their facts. ``lead_pieces`` spell the prefix a branch continues from, shown
        first (``playground.branches.pieces``: a split character reads whole)."""
        facts = Facts.from_dict(trace.facts)
        if not facts.prompt and prompt:
            facts = dataclasses.replace(facts, prompt=prompt)
        lead = list(trace.origin.prefix) if trace.origin is not None else []
        lead_texts = list(lead_pieces or ())
        texts = ["".join(shown(lead_texts)) + t for t in trace.texts] if lead_texts else list(trace.texts)
        return cls(name, label, kwargs=dict(trace.config), prompt_ids=trace.prompt_ids, steps=list(trace.steps),
                   tokens=returned_tokens(trace), texts=texts, trace=trace, model_name=trace.model_name,
                   elapsed_s=trace.elapsed_s, first_token_s=trace.steps[0].elapsed_s if trace.steps else None,
                   done=True, stopped=trace.stopped, seed=trace.seed, facts=facts, lead=lead, lead_texts=lead_texts)


def joined(base: Trace, segment: Trace, texts: list[str]) -> Trace:
    """A paused step-mode run (``base``) and the run that continued it from its end (``segment``), as one trace:
    the segment's records renumbered after the base's, its sequences (they start with the base's), the base's run
    id and origin, the segment's settings; ``texts`` are the whole continuation's texts."""
    offset = len(base.steps)
    return dataclasses.replace(
        base, steps=list(base.steps) + [dataclasses.replace(r, step=offset + r.step) for r in segment.steps],
        sequences=segment.sequences, texts=list(texts), config=segment.config, stopped=segment.stopped,
        elapsed_s=base.elapsed_s + segment.elapsed_s)


def returned_tokens(trace: Trace) -> list[list[int]]:
    """The NEW tokens of each returned sequence (decoder-only sequences start with the prompt)."""
    prompt = trace.prompt_ids[0] if trace.prompt_ids else []
    return [seq[len(prompt):] if seq[:len(prompt)] == prompt else list(seq) for seq in trace.sequences]


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class _Streaming:
    """How many runs ``stream_run`` is iterating in this process now: a gauge, not a session's data (the figure
    throttle splits its share of the GIL by it)."""

    def __init__(self):
        self.lock, self.count = threading.Lock(), 0

    def __enter__(self):
        with self.lock:
            self.count += 1

    def __exit__(self, *exc):
        with self.lock:
            self.count -= 1


_STREAMING = _Streaming()


def streaming() -> int:
    """The number of runs streaming in this process now (at least 1)."""
    return max(1, _STREAMING.count)


def stream_run(run: Run, loaded, input_ids, attention_mask, *, generator, top_n: int = 10,
               deadline: float | None = None, origin: core.Origin | None = None, limits: core.Limits | None = None,
               **model_kwargs) -> Iterator[Run]:
    """Iterate ``core.stream`` into ``run``, yielding it after each event that is the newest (a consumer that fell
    behind gets every record in ``run`` but one yield for the steps that queued meanwhile; on a ZeroGPU Space inside
    a GPU task: ``zerogpu.stream``). The run draws from ``generator`` (its own: ``core.rng.new_generator(seed)``,
    or a list of them, one per row), stops at ``deadline`` (``time.monotonic()``: the request's, counted from its
    arrival), is refused when over ``limits`` (``policy.limits()``), and names ``origin`` when it continues another
    run. Closing this generator closes the core's stream, which sets its cancel event and returns at once: the worker
    stops within one step or prefill chunk, and sets ``run.ended`` then."""
    if isinstance(generator, torch.Generator):
        run.seed = generator.initial_seed() if run.base is None else run.base.seed
    run.prompt_ids, run.model_name, run.started = input_ids.tolist(), loaded.name, time.perf_counter()
    if run.base is not None:
        run.prompt_ids = run.base.prompt_ids
    if engine.is_remote(loaded):  # a model the vLLM engine serves (playground.engine): the run goes to its server
        max_seconds = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        events = remote.stream(loaded.model.engine, input_ids, top_n=top_n, generator=generator,
                               max_seconds=max_seconds, origin=origin, **run.kwargs, **model_kwargs)
        run.ended.set()  # its server's run ends with the request: nothing of it runs here
    else:
        run.ended.clear()
        local = dict(tokenizer=loaded.tokenizer, top_n=top_n, attention_mask=attention_mask, generator=generator,
                     deadline=deadline, limits=limits, ended=run.ended, origin=origin, **run.kwargs, **model_kwargs)
        events = (engine_host.stream(loaded, input_ids, **local)  # the app's engine process runs it
                  if engine_host.ENGINE is not None else
                  zerogpu.stream(loaded.model, input_ids, shared=policy.shared_forward(), **local))
    decode = TokenTexts(loaded.tokenizer).decode  # as tokenizer.decode, with no U+FFFD for a split character

    run.streaming.set()
    try:
        with _STREAMING:
            for event in events:
                run.feed(event, decode)
                if not event.behind:  # the consumer fell behind the worker: show the newest step, not each
                    yield run
    finally:
        events.close()  # returns at once: the worker stops on its own (run.ended)
        run.streaming.clear()
        if isinstance(generator, torch.Generator):
            run.generator_state = generator.get_state()
        session.trim_heap()  # the run's tensors are freed: hand their memory back


def wait_stopped(runs: dict[str, Run], timeout: float = 10.0) -> None:
    """Block until no run of ``runs`` is streaming (after a cancel closed its generator)."""
    deadline = time.monotonic() + timeout
    while any(r.streaming.is_set() for r in runs.values()) and time.monotonic() < deadline:
        time.sleep(0.02)


# --- trace files -------------------------------------------------------------------------------------
def save_runs(tab: str, runs: dict[str, Run], folder: Path) -> str:
    """Write a tab's runs as JSON into the session's ``folder``: a plain ``Trace`` for one run (what
    ``Trace.from_json`` reads), ``{"tab": ..., "runs": {name: trace}}`` for several. The tab's earlier file goes:
    a session keeps one trace file per tab. Returns the file path."""
    traces = {name: run.to_trace() for name, run in runs.items()}
    if len(traces) == 1:
        text = next(iter(traces.values())).to_json()
    else:
        text = json.dumps({"tab": tab, "runs": {n: t.to_dict() for n, t in traces.items()},
                           "labels": {n: r.label for n, r in runs.items()}}, allow_nan=True)
    main = next(iter(traces.values()))
    for old in folder.glob(f"{tab}-*.json"):
        old.unlink(missing_ok=True)
    path = folder / f"{tab}-{main.strategy or 'trace'}-{uuid.uuid4().hex[:8]}.json"
    path.write_text(text)
    return str(path)


def load_runs(path: str, main_label: str = "") -> dict[str, Run]:
    """Read what ``save_runs`` wrote (or any ``Trace`` JSON) back into runs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"trace file must be JSON written by this playground; could not read it: {err}") from None
    try:
        if isinstance(data, dict) and "runs" in data:
            labels = data.get("labels", {})
            return {name: Run.from_trace(name, labels.get(name, name), Trace.from_dict(t))
                    for name, t in data["runs"].items()}
        trace = Trace.from_dict(data)
    except (KeyError, TypeError) as err:
        raise ValueError(f"trace file must hold a trace (strategy, config, prompt_ids, steps); missing {err}") from None
    run = Run.from_trace("main", "", trace)
    run.label = run_label(main_label or trace.strategy, run.facts)
    return {"main": run}
