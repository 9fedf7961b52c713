"""One busy loop steps every run, as vLLM's ``EngineCore`` does: no thread per run, no run waiting for another's.

A run here is a greenlet (the ``greenlet`` package: a strategy's loop, written as a plain Python loop, is suspended at
its model calls and resumed later, in the same thread), and ``EngineLoop`` is the one thread that steps them all. A
pass of the loop (``_pass``) is:

1. take the runs submitted since the last pass (``start``, from any thread);
2. resume every run that is not waiting, each until it
   a. hands in its next decode step (``LoopSeat.step``, which ``core.strategies.steps.Forward`` calls for a seated
      run): it waits for 3.;
   b. is about to make a second model call of its own in this pass (a prefill chunk, contrastive search's candidates,
      an assisted verification, a step ``batching.batchable`` refuses: the pre-forward hook ``_turn_before_forward``
      hands the turn back first), or waits on something outside (``scheduler.aside``: a grammar compile, a model's
      load): it goes on in the next pass, so every run makes at most one forward of its own a pass and a long prefill
      never holds the others, while a new run's first prefill chunk runs in the pass it starts in (its first token
      one pass sooner);
   c. ends;
3. one forward per model for every step handed in (``scheduler.forward_steps``: batched, every row keeping the bits
   of its solo step), each run getting its outputs when 2. resumes it next.

Cancels and deadlines are the runs' own (``core.generate``'s ``cancel`` and ``deadline``, read at every step and
between prefill chunks), so a run ends within one pass of either. What the loop cannot do is take back the thread
from a run stuck in one C call: ``core.engine.process`` runs the loop in a process of its own, restarted when a run
holds it past its deadline.

A run that lends its generator to torch's default one (``core.rng.global_generator``: assisted sampling with a draft
model, whose draws happen inside transformers) keeps the turn until it gives it back: another run of the thread could
be the one waiting for that generator. Such a run's forwards run alone, in its turn.

Shape legend as in ``core/loop.py``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import greenlet
import torch

from .. import batching, rng
from .. import scheduler as steps_scheduler

IDLE_S = 0.5  # an idle loop looks at its inbox this often (a submit wakes it at once)


@dataclass(eq=False)
class _Run:
    """One run the loop steps: its greenlet and what it waits for."""

    body: Callable[[], Any]
    greenlet: greenlet.greenlet | None = None
    step: dict | None = None  # the decode step handed in (``prepare_inputs_for_generation``'s output)
    lane: "Lane | None" = None  # the model the step is for
    result: Any = None  # the step's outputs (or its exception), handed over when the run is resumed
    forwarded: bool = False  # made a forward of its own in this pass


class LoopSeat:
    """A run's seat at a model of the loop (what ``core.scheduler.current_seat`` finds for it): its decode steps go to
    the loop's batched forward."""

    def __init__(self, lane: "Lane", run: _Run):
        self.scheduler = lane  # ``core.scheduler``'s hooks look for their own scheduler here
        self.lane, self.run = lane, run

    def serves(self, model) -> bool:
        return self.lane.model is model

    def step(self, model_inputs: dict):
        """The outputs of this run's decode step, made by the loop with every other run's step of the pass."""
        if rng.lending():  # it must keep the turn (module docstring): its step runs alone, now
            return self.lane.model(**model_inputs, return_dict=True)
        self.run.step, self.run.lane = model_inputs, self.lane
        result = self.lane.loop._main.switch()  # back when the loop has run the step
        if isinstance(result, BaseException):
            raise result
        return result


class Lane:
    """One model the loop serves: how its steps batch (``batching.probe``), and the hook that hands the turn back
    before a run's own forward. ``seat`` is the ``scheduler=`` ``core.generate`` takes."""

    def __init__(self, loop: "EngineLoop", model):
        self.loop = loop
        self._model = weakref.ref(model)
        self.linears = batching.probe(model) if loop.exact else batching.PLAIN
        self.stats = steps_scheduler.Stats()
        self._hook = model.register_forward_pre_hook(steps_scheduler.plain_hook(self._turn_before_forward))

    @property
    def model(self):
        return self._model()

    def _turn_before_forward(self, module, args):
        run = self.loop._current()
        if run is None or module is not self.model or rng.lending():
            return
        if run.forwarded:  # one forward of its own a pass: the others go first
            self.loop._main.switch()  # back in the next pass
        run.forwarded = True

    @contextlib.contextmanager
    def seat(self, deadline: float | None = None) -> Iterator[LoopSeat]:
        run = self.loop._current()
        if run is None:
            raise RuntimeError("a run of the engine loop takes its seat in the loop's thread (EngineLoop.start)")
        with steps_scheduler.sitting(LoopSeat(self, run)) as seat:
            yield seat


class EngineLoop:
    """The busy loop (see the module docstring), in a thread of its own, started on the first ``start``.
    ``lane(model)`` is the ``scheduler=`` a run on ``model`` passes to ``core.generate`` / ``core.stream``.

    ``exact=False`` trades the rows' solo bits for speed: a batched step's linear layers are one plain ``F.linear``
    over all rows even where ``batching.probe`` finds its bits differ from a 1-row product's (float32 on a CPU), so a
    seeded run under load may part from its solo run where two candidates nearly tie."""

    def __init__(self, max_rows: int = steps_scheduler.MAX_ROWS, name: str = "engine-loop", exact: bool = True):
        self.max_rows, self.name, self.exact = max_rows, name, exact
        self._inbox: list[_Run] = []
        self._wake = threading.Condition()
        self._runs: list[_Run] = []
        self._lanes: "weakref.WeakKeyDictionary[Any, Lane]" = weakref.WeakKeyDictionary()
        self._lanes_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._main: greenlet.greenlet | None = None  # the loop's own greenlet (its thread's main one)
        self.passes = 0

    # --- from any thread ------------------------------------------------------------------------------------
    def lane(self, model) -> Lane:
        with self._lanes_lock:
            lane = self._lanes.get(model)
            if lane is None:
                lane = self._lanes[model] = Lane(self, model)
            return lane

    def known(self, model) -> Lane | None:
        """``model``'s lane if it has one already (``lane`` makes one: ``batching.probe`` takes a second or two)."""
        with self._lanes_lock:
            return self._lanes.get(model)

    def start(self, body: Callable[[], Any]) -> None:
        """Run ``body()`` as one of the loop's runs, from the next pass on. ``body`` handles its own errors: one that
        escapes ends that run alone."""
        with self._wake:
            self._inbox.append(_Run(body))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
            self._wake.notify_all()

    @property
    def running(self) -> int:
        """Runs started and not ended."""
        with self._wake:
            return len(self._runs) + len(self._inbox)

    # --- the loop's thread ----------------------------------------------------------------------------------
    def _current(self) -> _Run | None:
        """The run the calling greenlet is (None for the loop itself and any other thread)."""
        if threading.current_thread() is not self._thread:
            return None
        return getattr(greenlet.getcurrent(), "engine_run", None)

    def _serve(self) -> None:
        self._main = greenlet.getcurrent()
        while True:
            with self._wake:
                if not self._runs and not self._inbox:
                    self._wake.wait(IDLE_S)
                    if not self._inbox:
                        continue
                self._runs += self._inbox
                self._inbox = []
            self._pass()
            self.passes += 1

    def _pass(self) -> None:
        """2. resume every run not waiting for a forward; 3. one forward per model for the steps handed in."""
        handed: dict[Lane, list[_Run]] = {}
        for run in list(self._runs):
            run.forwarded = False
            self._resume(run)
            if run.greenlet.dead:
                self._runs.remove(run)
            elif run.step is not None:
                handed.setdefault(run.lane, []).append(run)
        with torch.no_grad():
            for lane, runs in handed.items():
                model = lane.model
                outputs = ([RuntimeError("the run's model is gone")] * len(runs) if model is None else
                           steps_scheduler.forward_steps(model, lane.linears, [run.step for run in runs],
                                                         self.max_rows, lane.stats))
                for run, out in zip(runs, outputs):
                    run.step, run.result = None, out

    def _resume(self, run: _Run) -> None:
        """Switch into ``run`` until it hands its turn back (a step, a forward of its own, a wait) or ends."""
        if run.greenlet is None:
            run.greenlet = greenlet.greenlet(self._body(run), parent=self._main)
            run.greenlet.engine_run = run
        result, run.result = run.result, None
        torch.set_grad_enabled(False)  # a thread-wide flag: every run of the loop decodes without gradients
        run.greenlet.switch(result)

    def _body(self, run: _Run) -> Callable[[Any], None]:
        def body(_=None):
            steps_scheduler._turn.set(self._main.switch)  # ``pass_turn`` in this run hands the turn back
            try:
                run.body()
            except BaseException:  # noqa: BLE001 - the body reports its own errors; this one ends only its run
                pass
        return body
