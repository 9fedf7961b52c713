"""The engine in a process of its own: the models, the busy loop (``core.engine.loop``) and every run's strategy loop
and records live there; the page's process sends each run's request and reads back the ``StreamEvent``s ``core.stream``
would have given it. So the page's Python (Gradio, figures, the token view) never holds the GIL a model's step needs,
and a run stuck in one C call can be ended the only way there is: by ending the process.

``EngineProcess`` is the page's side (one per page process):
- ``stream(model, input_ids, ...)``, as ``core.stream`` with the model named by its key (``load`` turns a key into a
  ``LoadedModel`` in the engine) and any model among the settings (``assistant_model``) named by a ``ModelRef``;
- a supervisor: when the engine process dies, every run it held ends with ``EngineStopped`` (the page says so) and a
  new process starts for the next run; when a run is still held past its deadline and ``STUCK_S`` more, the engine is
  stuck in a call nothing can interrupt: it is killed and restarted the same way.

Besides runs, the page may ``call`` a function the engine names in its ``calls`` table ("module:NAME", a dict of
name -> function): what needs a model's weights and is no run (a model's description for the page's weightless copy,
an attribution's gradients), so that the page holds no weights. A call runs in a thread of its own beside the loop;
what it reports as it goes (``progress``) comes back as it does, then its result.

``serve`` is the engine's main: a thread reads requests and cancels from the pipe, the loop's thread steps the runs,
and each run's records go back as they are made. Messages are pickled tuples over a ``multiprocessing`` pipe: both
ends are this project's own code (``docs/performance.md`` measures it against msgpack). A run's finished trace comes
back without its steps, which the page already holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .. import rng

STUCK_S = 10.0  # past a run's deadline, how long the engine may still hold it before it is restarted
START_S = 120.0  # how long a run waits for the engine process to start (its first model load included)
WATCH_S = 0.5  # how often the supervisor looks at the runs' deadlines


class EngineStopped(RuntimeError):
    """The engine process ended while it held this run (it crashed, or it was restarted because a run stuck)."""


@dataclass(frozen=True)
class ModelRef:
    """A model among a run's settings (``assistant_model``), named by the key ``load`` takes."""

    key: str


@dataclass(frozen=True)
class Request:
    """What the engine needs to run ``core.generate``: everything plain, the models by key, the generators by state."""

    model: str
    input_ids: list[list[int]]
    attention_mask: list[list[int]] | None
    settings: dict[str, Any]  # generate's keyword arguments (``ModelRef`` for a model)
    states: list[torch.Tensor] | None  # the generator's state (one per row for a list of generators), or None
    many: bool  # a list of generators, one per row
    top_n: int
    lens: bool
    watch: tuple[int, ...]
    deadline: float | None  # ``time.monotonic()``: one clock for every process of the machine


def _portable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling as itself, else a ``RuntimeError`` with its words."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any exception that does not pickle
        return RuntimeError(f"{type(err).__name__}: {err}")


# --- the engine's side ---------------------------------------------------------------------------------------------
class _Sender:
    """A run's recorder in the engine: each record goes to the page as it is made."""

    def __init__(self, send: Callable[[tuple], None], run_id: int, request: Request):
        self.send, self.run_id = send, run_id
        self.top_n, self.lens, self.watch = request.top_n, request.lens, list(request.watch)

    def on_step(self, record) -> None:
        self.send(("step", self.run_id, record))

    def on_end(self, trace) -> None:
        pass


def _named(path: str | None, default: Any = None) -> Any:
    """What "module:NAME" names (``default`` for None)."""
    if path is None:
        return default
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def serve(conn, loader: str, threads: int, exact: bool = True, calls: str | None = None,
          lease: str | None = None) -> None:
    """The engine process's main: ``loader`` ("module:function") turns a model key into a ``LoadedModel``; ``exact``:
    ``EngineLoop``'s; ``calls`` ("module:NAME"): the functions the page may ``call``, by name; ``lease``
    ("module:function"): a context manager each run and call is made in, holding the models it loads (a model cache's
    lease: none of them is evicted while it runs)."""
    torch.set_num_threads(threads)
    _Engine(conn, _named(loader), _named(calls, {}), _named(lease, contextlib.nullcontext), exact).serve()


class _Engine:
    """The engine process's side of the pipe: reads the page's messages, starts each run in the loop and each call in
    a thread of its own, and sends back what they make."""

    def __init__(self, conn, load: Callable, calls: dict[str, Callable], hold: Callable, exact: bool):
        from core.engine.loop import EngineLoop

        self.conn, self.load, self.calls, self.hold = conn, load, calls, hold
        self.loop = EngineLoop(exact=exact)
        self.lock = threading.Lock()
        self.cancels: dict[int, threading.Event] = {}

    def serve(self) -> None:
        while True:
            try:
                message = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):  # the page's process is gone: so is its engine
                os._exit(0)
            kind = message[0]
            if kind == "run":
                _, run_id, request = message
                self.cancels[run_id] = cancel = threading.Event()
                self.loop.start(functools.partial(self.run, run_id, request, cancel))
            elif kind == "cancel":
                cancel = self.cancels.get(message[1])
                if cancel is not None:
                    cancel.set()
            elif kind == "call":
                threading.Thread(target=self.call, args=message[1:], name=f"engine-call-{message[2]}",
                                 daemon=True).start()
            elif kind == "load":  # warm a model before the first run asks for it, the pipe read on meanwhile
                threading.Thread(target=self.warm, args=(message[1],), daemon=True).start()

    def send(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.conn.send_bytes(data)

    def warm(self, key: str) -> None:
        try:
            self.load(key)
        except Exception:  # noqa: BLE001 - the first run on it reports the error
            pass

    def run(self, run_id: int, request: Request, cancel: threading.Event) -> None:
        """One run, in the loop: its records, then its result (or its error), sent as they come."""
        from core.heap import trim_heap

        try:
            with self.hold():
                self.generate(run_id, request, cancel)
        except BaseException as err:  # noqa: BLE001 - the page raises it in the run's stream
            self.send(("error", run_id, _portable(err)))
        finally:
            self.cancels.pop(run_id, None)
            if not self.cancels:  # the last run ended: what the runs freed goes back to the system
                trim_heap()

    def generate(self, run_id: int, request: Request, cancel: threading.Event) -> None:
        import core
        from core.scheduler import aside

        loaded = aside(lambda: self.load(request.model))  # a first load takes seconds: the others go on
        settings = {k: aside(lambda key=v.key: self.load(key)).model if isinstance(v, ModelRef) else v
                    for k, v in request.settings.items()}
        generator = rng.rebuilt(request.states, request.many)
        mask = torch.tensor(request.attention_mask) if request.attention_mask is not None else None
        # a model's first lane probes its kernels (a second or two): beside the loop, as a load
        lane = self.loop.known(loaded.model) or aside(lambda: self.loop.lane(loaded.model))
        result = core.generate(loaded.model, torch.tensor(request.input_ids), attention_mask=mask,
                               tokenizer=loaded.tokenizer, recorder=_Sender(self.send, run_id, request),
                               cancel=cancel, deadline=request.deadline, generator=generator, scheduler=lane,
                               **settings)
        trace = dataclasses.replace(result.trace, steps=[]) if result.trace is not None else None
        self.send(("done", run_id, dataclasses.replace(result, trace=trace), rng.states(generator)))

    def call(self, call_id: int, name: str, args: tuple, kwargs: dict) -> None:
        """One call, in a thread of its own: its progress, then its result (or its error)."""
        try:
            if name not in self.calls:
                raise ValueError(f"the engine has no call {name!r}")
            with self.hold():
                result = self.calls[name](*args, progress=lambda done: self.send(("step", call_id, done)), **kwargs)
            self.send(("done", call_id, result, None))
        except BaseException as err:  # noqa: BLE001 - the page raises it where it called
            self.send(("error", call_id, _portable(err)))


# --- the page's side -----------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Held:
    """A run the engine holds: where its messages go, when it must have ended, what to give back its draws to."""

    q: queue.Queue
    deadline: float | None
    generator: Any
    ended: threading.Event | None
    cancel: threading.Event | None  # set from elsewhere: the supervisor passes it on
    steps: list = dataclasses.field(default_factory=list)  # the records so far: the finished trace's steps
    cancelled: bool = False
    call: bool = False  # a ``call``'s, not a run's: its messages are its progress and its result


class EngineProcess:
    """The page's handle on the engine process (see the module docstring). ``loader``: "module:function" the engine
    imports to load a model by key; ``threads``: its torch threads; ``warm``: model keys it loads at start; ``exact``:
    whether a batched step keeps every row's solo bits (``EngineLoop``); ``calls`` and ``lease``: ``serve``'s."""

    def __init__(self, loader: str, threads: int = 1, warm: tuple[str, ...] = (), exact: bool = True,
                 calls: str | None = None, lease: str | None = None):
        self.loader, self.threads, self.warm, self.exact = loader, threads, tuple(warm), exact
        self.calls, self.lease = calls, lease
        self._lock = threading.Lock()
        self._held: dict[int, _Held] = {}
        self._ids = itertools.count(1)
        self._proc = None
        self._conn = None
        self.restarts = 0  # processes started after the first: for tests and the status line
        self._closed = False

    # --- the process ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine process (again, after it died); not once closed."""
        if self._closed:
            return
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no page state, no inherited threads
        ours, theirs = context.Pipe()
        proc = context.Process(target=serve, name="decoding-engine", daemon=True,
                               args=(theirs, self.loader, self.threads, self.exact, self.calls, self.lease))
        proc.start()
        theirs.close()
        with self._lock:
            self._proc, self._conn = proc, ours
        if self._closed:  # closed while it started
            proc.kill()
            return
        for key in self.warm:
            self._send(("load", key))
        threading.Thread(target=self._read, args=(proc, ours), name="engine-reader", daemon=True).start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def close(self) -> None:
        self._closed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            conn = self._conn
            if conn is None:
                raise EngineStopped("the engine process is not running")
            conn.send_bytes(data)

    def _read(self, proc, conn) -> None:
        """Route the engine's messages to their runs; watch the deadlines; on the process's end, fail what it held
        and start another."""
        watched = time.monotonic()
        while True:
            try:
                if conn.poll(WATCH_S):
                    self._route(pickle.loads(conn.recv_bytes()))
                if time.monotonic() - watched >= WATCH_S:  # however busy the pipe is
                    watched = time.monotonic()
                    self._watch(proc)
            except (EOFError, OSError):
                break
            if not proc.is_alive() and not conn.poll(0):
                break
        proc.join(5)
        why = (f"the engine process stopped (exit code {proc.exitcode}) while it held this run; it has been "
               "restarted: run it again")
        with self._lock:
            held, self._held = self._held, {}
            if self._conn is conn:
                self._conn = None
        for run in held.values():
            run.q.put(("error", EngineStopped(why)))
            if run.ended is not None:
                run.ended.set()
        if not self._closed:
            self.restarts += 1
            self.start()

    def _watch(self, proc) -> None:
        """Pass on the cancels set from elsewhere; kill an engine that holds a run past its deadline and ``STUCK_S``
        more (it cannot end it)."""
        now = time.monotonic()
        with self._lock:
            held = list(self._held.items())
        for run_id, run in held:
            if run.cancel is not None and run.cancel.is_set() and not run.cancelled:
                run.cancelled = True
                self._cancel(run_id)
            if run.deadline is not None and now > run.deadline + STUCK_S:
                proc.kill()
                return

    def _cancel(self, run_id: int) -> None:
        try:
            self._send(("cancel", run_id))
        except (EngineStopped, OSError):  # gone already: the run ends with it
            pass

    def _route(self, message: tuple) -> None:
        kind, run_id = message[0], message[1]
        with self._lock:
            run = self._held.get(run_id)
            if kind in ("done", "error"):
                self._held.pop(run_id, None)
        if run is None:
            return
        if run.call:  # its progress, then its result or its error
            run.q.put((kind, message[2]))
            return
        if kind == "step":
            run.steps.append(message[2])
            run.q.put(("step", message[2]))
            return
        if kind == "done":
            result, states = message[2], message[3]
            if result.trace is not None:  # it came without the steps the page already holds
                result = dataclasses.replace(result, trace=dataclasses.replace(result.trace, steps=run.steps))
            rng.restore(run.generator, states)  # the draws made there, for a run that resumes
            run.q.put(("done", result))
        else:
            run.q.put(("error", message[2]))
        if run.ended is not None:
            run.ended.set()

    # --- runs -----------------------------------------------------------------------------------------------
    def stream(self, model: str, input_ids: torch.LongTensor, *, tokenizer=None, top_n: int = 10, lens: bool = False,
               watch=(), attention_mask: torch.LongTensor | None = None, generator=None,
               cancel: threading.Event | None = None, max_seconds: float | None = None,
               deadline: float | None = None, ended: threading.Event | None = None,
               **settings) -> Iterator:
        """``core.stream`` of the model keyed ``model`` in the engine (see the module docstring); ``tokenizer`` makes
        the events' texts here. Closing the iterator (or setting ``cancel``) cancels the run there."""
        from ..loop import GRACE_S, events

        if deadline is None and max_seconds is not None:
            deadline = time.monotonic() + max_seconds
        request = Request(model, input_ids.tolist(),
                          attention_mask.tolist() if attention_mask is not None else None,
                          settings, rng.states(generator), isinstance(generator, (list, tuple)), top_n, lens,
                          tuple(watch), deadline)
        run_id = next(self._ids)
        q: queue.Queue = queue.Queue()
        if ended is not None:
            ended.clear()
        self._submit(run_id, _Held(q, deadline, generator, ended, cancel), ("run", run_id, request), "run it again")

        def close() -> None:
            with self._lock:
                held = run_id in self._held
            if held:
                self._cancel(run_id)

        give_up = deadline + GRACE_S + STUCK_S if deadline is not None else None
        yield from events(q, tokenizer, give_up, close)

    def call(self, name: str, *args, deadline: float | None = None, wait_s: float | None = None,
             progress: Callable[[Any], None] | None = None, **kwargs) -> Any:
        """What the engine's function ``name`` returns for ``args`` and ``kwargs`` (its exception raised here),
        ``progress`` told what it reports meanwhile. ``deadline`` (``time.monotonic()``): as a run's, the engine is
        restarted when the call is still held ``STUCK_S`` past it (the call then raises ``EngineStopped``); ``wait_s``:
        how long to wait at most (default: past the deadline as long as a run's stream does, else without end), then
        ``TimeoutError``."""
        call_id = next(self._ids)
        q: queue.Queue = queue.Queue()
        self._submit(call_id, _Held(q, deadline, None, None, None, call=True), ("call", call_id, name, args, kwargs),
                     "try again")
        from ..loop import GRACE_S

        if wait_s is None and deadline is not None:  # a stuck engine is killed first, and the call told so
            wait_s = deadline + STUCK_S + GRACE_S - time.monotonic()
        give_up = None if wait_s is None else time.monotonic() + wait_s
        while True:  # held until its answer comes (``_route``) or the engine ends (``_read``)
            try:
                kind, item = q.get(timeout=None if give_up is None else max(give_up - time.monotonic(), 0.0))
            except queue.Empty:
                raise TimeoutError(f"the engine did not answer {name!r} in {wait_s:.0f} s") from None
            if kind == "done":
                return item
            if kind == "error":
                raise item
            if progress is not None:
                progress(item)

    def _submit(self, held_id: int, held: _Held, message: tuple, again: str) -> None:
        """Hold ``held`` under ``held_id`` and send ``message`` once the engine is up; ``EngineStopped`` (saying
        ``again``) when it died in between, nothing of it having reached the engine."""
        self._wait_started()
        with self._lock:
            self._held[held_id] = held
        try:
            self._send(message)
        except (EngineStopped, OSError):
            with self._lock:
                self._held.pop(held_id, None)
            raise EngineStopped(f"the engine process was restarting; {again}") from None

    def _wait_started(self) -> None:
        until = time.monotonic() + START_S
        while self._conn is None and time.monotonic() < until and not self._closed:
            time.sleep(0.05)
        if self._conn is None:
            raise EngineStopped("the engine process did not start")


def kill(engine: EngineProcess) -> None:
    """End the engine process at once, as a crash would (for tests and for an operator's signal)."""
    if engine.pid is not None:
        os.kill(engine.pid, signal.SIGKILL)
