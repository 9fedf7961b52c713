"""One forward pass for every run on a model: a step scheduler, as llama.cpp's server batches its slots.

Each run keeps its own thread, strategy loop, logits processors, generator and recording; only the model call is
shared. A run takes a ``Seat`` (``with scheduler.seat():`` around its loop, what ``core.generate(scheduler=...)``
does); then

- its decode steps (``Seat.step``, called by ``core.strategies.steps.Forward``) go to the scheduler's worker thread,
  which waits until every seated run that steps has handed in its next step (or ``gather_s`` passed: a slow or dead
  run never holds the others), and runs them as one forward (``core.batching.batched_forward``: every row keeps
  its solo bits) where ``core.batching.probe`` says the model allows it, else one after another;
- every other model call its thread makes while seated (the prefill, contrastive search's candidate forward, an
  assisted step's verification, a step ``batching.batchable`` refuses) holds the scheduler's model lock for that
  call alone, through a pre/post forward hook pair on the model: those calls run between batched steps, never
  beside one, so the machine's cores are never split between two forwards. A long prompt prefills in chunks
  (transformers' ``prefill_chunk_size``, set by ``Forward`` past ``PREFILL_CHUNK`` tokens), the lock taken per
  chunk, so nobody's stream stalls for a whole long prefill.

A run joins at a step boundary (its first ``step``) and leaves when its seat closes: finished, stopped, timed out or
failed, at once. Waits are bounded: a step handed in waits for the worker at most ``STEP_WAIT_S`` (or the run's
deadline), and a worker that died fails the steps waiting on it.

``shared(model)`` is the process's scheduler for a model (made on first use, gone with the model).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
import weakref
from collections import defaultdict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from . import batching

PREFILL_CHUNK = 512  # prompts longer than this prefill in chunks of this many tokens between other runs' steps
PREFILL_TOKENS = 1024  # a prefill of more tokens (over all its rows) runs in chunks of this many, a stop between two
STEP_WAIT_S = 120.0  # the longest a handed-in step waits for the worker when its run has no deadline
MAX_ROWS = 128  # rows in one batched forward; more are split

# the calling run's seat: per thread (a thread runs one seated run at a time), and per greenlet in ``core.engine``
_seat: ContextVar["Seat | None"] = ContextVar("seat", default=None)


@dataclass
class Job:
    """A decode step handed in: the run's ``prepare_inputs_for_generation`` output, and what came back."""

    seat: "Seat"
    inputs: dict
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Any = None
    error: BaseException | None = None
    abandoned: bool = False  # its run stopped waiting: the worker skips it


@dataclass
class Stats:
    """What the worker did, for benchmarks: steps run, forwards made, rows per forward."""

    steps: int = 0
    forwards: int = 0
    rows: int = 0
    batch_sizes: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # runs per forward -> count


class Seat:
    """One run's place at the scheduler, for its thread."""

    def __init__(self, scheduler: "StepScheduler", deadline: float | None = None):
        self.scheduler = scheduler
        self.thread = threading.current_thread()
        self.stepping = False  # has handed in a step: the worker waits for its next one
        self.pending: Job | None = None
        self.direct = 0  # depth of model calls this thread makes itself (under the model lock)
        self.deadline = deadline  # the run's wall-clock cap (monotonic), bounding its waits

    def step(self, model_inputs: dict):
        """The outputs of one decode forward of this run, made by the worker, batched with the other runs' steps."""
        return self.scheduler._step(self, model_inputs)

    def serves(self, model) -> bool:
        return self.scheduler._model() is model

    def expected(self) -> bool:
        """Whether the worker should wait for this run's next step."""
        return self.stepping and self.pending is None and self.direct == 0 and self.thread.is_alive()


def plain_hook(method: Callable) -> Callable:
    """``method`` (a scheduler's hook) as a plain function to register on a model: the model keeps its scheduler alive
    through it, and a deep copy of the model shares the function instead of copying the scheduler and its locks
    (which cannot be copied); the method itself acts only on the model it was registered on."""
    @functools.wraps(method)  # named as the method is, for whoever reads a model's hooks
    def hook(module, *args, **kwargs):
        return method(module, *args, **kwargs)
    return hook


class StepScheduler:
    """The step scheduler of one model (see the module docstring). ``gather_s``: how long a step waits for the
    other seated runs' steps to join it."""

    def __init__(self, model, *, gather_s: float = 0.25, idle_s: float = 30.0, max_rows: int = MAX_ROWS):
        self._model = weakref.ref(model)  # the model owns its scheduler (through the hooks), not the other way round
        self.linears = batching.probe(model)  # how rows of several runs may share a forward
        self.gather_s, self.idle_s, self.max_rows = gather_s, idle_s, max_rows
        self.stats = Stats()
        self._cond = threading.Condition()
        self._model_lock = threading.RLock()  # one forward at a time on this model
        self._seats: dict[int, Seat] = {}  # thread id -> seat
        self._jobs: list[Job] = []
        self._worker: threading.Thread | None = None
        self._hooks = (model.register_forward_pre_hook(plain_hook(self._before_call)),
                       model.register_forward_hook(plain_hook(self._after_call), always_call=True))

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("the step scheduler's model is gone")
        return model

    # --- seats ------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def seat(self, deadline: float | None = None) -> Iterator[Seat]:
        """Seat the calling thread's run for the block; it leaves (its rows free) when the block ends, however."""
        seat = Seat(self, deadline)
        with self._cond:
            outer = self._seats.get(threading.get_ident())
            if outer is None:
                self._seats[threading.get_ident()] = seat
        if outer is not None:  # nested (a strategy calling generate): the outer seat serves
            yield outer
            return
        try:
            with sitting(seat):
                yield seat
        finally:
            with self._cond:
                self._seats.pop(threading.get_ident(), None)
                if seat.pending is not None:
                    seat.pending.abandoned = True
                self._cond.notify_all()

    @property
    def seated(self) -> int:
        """Runs seated now."""
        with self._cond:
            return len(self._seats)

    # --- direct calls: serialized with the batched steps --------------------------------------------------------
    def _calling_seat(self, module) -> "Seat | None":
        """The seat whose thread calls ``module`` now, when it is this scheduler's model and a seat of its own."""
        seat = _seat.get()
        if module is self.model and seat is not None and seat.scheduler is self \
                and threading.current_thread() is seat.thread:
            return seat
        return None

    def _before_call(self, module, args):
        seat = self._calling_seat(module)
        if seat is not None:
            if seat.direct == 0:
                self._model_lock.acquire()
            seat.direct += 1

    def _after_call(self, module, args, output):
        seat = self._calling_seat(module)
        if seat is not None and seat.direct > 0:
            seat.direct -= 1
            if seat.direct == 0:
                self._model_lock.release()
                with self._cond:
                    self._cond.notify_all()

    # --- steps ------------------------------------------------------------------------------------------------
    def _step(self, seat: Seat, model_inputs: dict):
        job = Job(seat, model_inputs)
        with self._cond:
            seat.stepping, seat.pending = True, job
            self._jobs.append(job)
            self._ensure_worker()
            self._cond.notify_all()
        wait = STEP_WAIT_S if seat.deadline is None else max(seat.deadline - time.monotonic(), 0.0) + STEP_WAIT_S / 8
        give_up = time.monotonic() + wait
        while not job.done.wait(timeout=0.25):
            worker, late = self._worker, time.monotonic() > give_up
            if worker is None or not worker.is_alive() or late:
                with self._cond:
                    if job.done.is_set():
                        break
                    job.abandoned = True
                    seat.pending = None
                raise RuntimeError("the step scheduler did not run this step in time" if late
                                   else "the step scheduler's worker stopped")
        if job.error is not None:
            raise job.error
        return job.outputs

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="step-scheduler", daemon=True)
            self._worker.start()

    def _ready(self) -> bool:
        """Every seated run the worker waits for has handed in its step."""
        return not any(seat.expected() for seat in self._seats.values())

    def _work(self) -> None:
        with torch.no_grad():
            while True:
                with self._cond:
                    idle_until = time.monotonic() + self.idle_s
                    while not self._jobs:
                        left = idle_until - time.monotonic()
                        if left <= 0:
                            self._worker = None
                            return
                        self._cond.wait(left)
                    give_up = time.monotonic() + self.gather_s
                    while not self._ready() and (left := give_up - time.monotonic()) > 0:
                        self._cond.wait(left)
                    jobs = [job for job in self._jobs if not job.abandoned]
                    self._jobs = []
                with self._model_lock:
                    try:
                        self._run(jobs)
                    except BaseException as err:  # noqa: BLE001 - the worker lives on; the runs get the error
                        for job in jobs:
                            if job.outputs is None and job.error is None:
                                job.error = err
                with self._cond:
                    for job in jobs:
                        if job.seat.pending is job:
                            job.seat.pending = None
                        job.done.set()
                    self._cond.notify_all()

    def _run(self, jobs: list[Job]) -> None:
        for job, out in zip(jobs, forward_steps(self.model, self.linears, [job.inputs for job in jobs], self.max_rows,
                                                self.stats)):
            if isinstance(out, BaseException):
                job.error = out
            else:
                job.outputs = out

    def close(self) -> None:
        """Remove the hooks from the model (a scheduler with seated runs keeps serving them until they leave)."""
        for hook in self._hooks:
            hook.remove()


def forward_steps(model, linears: batching.Linears, steps: list[dict], max_rows: int = MAX_ROWS,
                  stats: Stats | None = None) -> list:
    """The outputs of each decode step of ``steps`` (each a run's ``prepare_inputs_for_generation`` output), in order;
    an exception in place of a step whose forward failed. The ``batching.batchable`` steps run as one forward
    (``batching.batched_forward``, split at ``max_rows`` rows, grouped by ``output_hidden_states``) where ``linears``
    (``batching.probe``'s answer) allows it; the others each alone. ``stats`` counts the forwards."""
    results: list = [None] * len(steps)
    groups: dict[bool, list[int]] = defaultdict(list)
    alone: list[int] = []
    for i, inputs in enumerate(steps):
        if linears and batching.batchable(model, inputs):
            groups[bool(inputs.get("output_hidden_states"))].append(i)
        else:
            alone.append(i)
    batches = []
    for group in groups.values():
        batch, rows = [], 0
        for i in group:
            size = steps[i]["input_ids"].shape[0]
            if batch and rows + size > max_rows:
                batches.append(batch)
                batch, rows = [], 0
            batch.append(i)
            rows += size
        batches.append(batch)
    for batch in batches:
        if len(batch) == 1:
            alone.append(batch[0])
            continue
        try:
            for i, out in zip(batch, batching.batched_forward(model, [steps[i] for i in batch], linears)):
                results[i] = out
        except BaseException as err:  # noqa: BLE001 - every run of the batch gets the error
            for i in batch:
                results[i] = err
        _count(stats, [steps[i] for i in batch])
    for i in alone:
        try:
            results[i] = model(**steps[i], return_dict=True)
        except BaseException as err:  # noqa: BLE001 - handed to the run, raised there
            results[i] = err
        _count(stats, [steps[i]])
    return results


def _count(stats: Stats | None, batch: list[dict]) -> None:
    if stats is not None:
        stats.steps += len(batch)
        stats.forwards += 1
        stats.rows += sum(inputs["input_ids"].shape[0] for inputs in batch)
        stats.batch_sizes[len(batch)] += 1


@contextlib.contextmanager
def sitting(seat) -> Iterator:
    """``seat`` is the calling run's seat for the block (what ``current_seat`` finds): a ``Seat``, or any object with
    ``step(model_inputs)`` and ``serves(model)`` (``core.engine.loop``'s)."""
    token = _seat.set(seat)
    try:
        yield seat
    finally:
        _seat.reset(token)


_turn: ContextVar[Callable[[], None] | None] = ContextVar("turn", default=None)  # set in ``core.engine.loop``'s runs


def pass_turn() -> bool:
    """Let the other runs of this thread go on, when the caller is a run of ``core.engine.loop`` (which sets
    ``_turn``): back when the loop has made a pass. False (and nothing done) elsewhere, where the caller's thread
    is its own. A run waiting on something (a grammar compile in a thread) calls it instead of blocking the loop."""
    turn = _turn.get()
    if turn is None:
        return False
    turn()
    return True


class Late(TimeoutError):
    """``aside``'s work did not end by its deadline (it goes on in its thread, left to finish)."""


def aside(work: Callable[[], Any], deadline: float | None = None, name: str = "aside") -> Any:
    """``work()`` in a thread of its own, its result or its error here; the caller waits until it ends or until
    ``deadline`` (``time.monotonic()``; then ``Late``). A run of ``core.engine.loop`` passes its turns meanwhile
    (``pass_turn``), so a wait of seconds (a model's load, a grammar's compile) never stalls the loop's other runs.
    ``work`` runs in a copy of the caller's context (its ``ContextVar``s: a model cache's lease being taken, ...), less
    the caller's seat and turn: its thread is no run's, so it neither hands in steps nor switches to the loop."""
    box: dict[str, Any] = {}
    context = contextvars.copy_context()

    def unseated() -> Any:
        _seat.set(None)
        _turn.set(None)
        return work()

    def run() -> None:
        try:
            box["value"] = context.run(unseated)
        except BaseException as err:  # noqa: BLE001 - raised in the caller below
            box["error"] = err

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    while thread.is_alive() and (deadline is None or time.monotonic() < deadline) and pass_turn():
        thread.join(0.002)
    thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
    if thread.is_alive():
        raise Late(f"{name} did not end by its deadline")
    if "error" in box:
        raise box["error"]
    return box["value"]


_schedulers: "weakref.WeakKeyDictionary[Any, StepScheduler]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def current_seat(model) -> Seat | None:
    """The calling thread's seat at ``model``'s scheduler, if its run took one."""
    seat = _seat.get()
    return seat if seat is not None and seat.serves(model) else None


def shared(model) -> StepScheduler:
    """The process's scheduler for ``model``: every run that asks for it shares its forwards."""
    with _lock:
        scheduler = _schedulers.get(model)
        if scheduler is None:
            scheduler = _schedulers[model] = StepScheduler(model)
        return scheduler
