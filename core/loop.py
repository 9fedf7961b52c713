"""Shared plumbing: ``generate`` and ``stream``, and the run handle strategies get (``RunContext``).

Tensor shape legend used in comments throughout ``core/``:
B batch (rows after expansion), K beams or candidates, S sequence, V vocabulary, L layers, H hidden size.

Pipeline of ``generate``:
1. ``prepare_call``: the checks that need the raw call (the prompt, the recorder, the limits, the assistant, stop
   strings), then ``core.requests.prepare``, which moves the core's own fields into the config, turns words into token
   ids and heals the prompt's last token (``token_healing``);
2. the run's handle (``RunContext``) and its observer (``core.observe``: ``Recording`` with a recorder, else the null
   ``Observer``);
3. ``model.generate(custom_generate=dispatch)``: transformers prepares inputs, expands rows for beams / return
   sequences, builds its own logits processors, stopping criteria and KV cache, then hands them to ``dispatch``, which
   validates the final config (``core.config``), adds the community samplers and the grammar to transformers'
   processors in the order of ``core.chain`` (``sampler_order`` reorders them), looks the strategy up in the registry
   and runs it; the strategy reports its steps and tokens to the observer, and the handle's cancel and deadline stop it;
4. the observer's ``Trace`` (none without a recorder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from . import chain, requests
from . import config as config_checks
from . import limits as bounds
from .limits import Limits
from .observe import Observer, Recording
from .records import Origin, Recorder, StepRecord, Trace, check_recorder, check_watch, watched_ids
from .rng import global_generator
from .scheduler import StepScheduler
from .strategies import get_strategy
from .strategies.steps import Stopped, stoppable
from .text import TokenTexts


class CancelCriteria(StoppingCriteria):
    """Stops every row once the run's context is cancelled (``cancel`` set from any thread) or past its
    wall-clock deadline; checked once per step. The context remembers which of the two stopped it."""

    def __init__(self, ctx: "RunContext"):
        self.ctx = ctx

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.ctx.should_stop(), dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class Assistance:
    """What assisted decoding drafts with: the assistant model, the two tokenizers (universal assisted decoding
    re-tokenizes through text), this run's assistant settings (``assistant_settings``) and the encoder input
    transformers prepared (set when the run is dispatched)."""

    model: Any = None
    tokenizer: Any = None  # the assistant's, where it differs from the main model's
    target_tokenizer: Any = None  # the main model's
    settings: dict[str, Any] = field(default_factory=dict)
    inputs_tensor: torch.Tensor | None = None


class RunContext:
    """A run as its strategy sees it: a handle on the run (``cancel`` and ``deadline``, the ``generator`` every draw
    comes from, token selection) and the ``observer`` its steps and tokens go to (``core.observe``: the null
    ``Observer`` when nothing records, so that a strategy never asks whether it is recorded). ``assistant`` is what
    assisted decoding drafts with."""

    def __init__(self, *, cancel: threading.Event | None = None, deadline: float | None = None,
                 generator: torch.Generator | list[torch.Generator] | None = None, observer: Observer | None = None,
                 assistant: Assistance | None = None):
        self.cancel = cancel if cancel is not None else threading.Event()
        self.deadline = deadline  # time.monotonic() past which the run ends with what it has
        self.stopped = ""  # why the run ended early: "cancelled" or "time cap"
        self.generator = generator  # every draw of the run; None: torch's default generator, as transformers
        self._device_generators: dict[tuple, torch.Generator] = {}  # its seed on the model's device (``generator_for``)
        self.observer = observer if observer is not None else Observer()
        self.assistant = assistant if assistant is not None else Assistance()

    # --- stopping and waiting -----------------------------------------------------------------------
    def should_stop(self) -> bool:
        """Cancelled, or past the wall-clock deadline (noted in ``stopped``)."""
        if self.cancel.is_set():
            self.stopped = self.stopped or "cancelled"
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped = self.stopped or "time cap"
            return True
        return False

    def seconds_left(self) -> float | None:
        """Seconds until the deadline (None without one): how long the run may wait for anything."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    # --- randomness ---------------------------------------------------------------------------------
    def generator_for(self, device, generator: torch.Generator | None = None) -> torch.Generator | None:
        """The run's generator (or ``generator``, one of a per-row list) for draws on ``device``: itself on its own
        kind of device; elsewhere (a model on CUDA, the run's generator on the CPU) a generator there seeded with its
        seed, made once per run, which draws what ``torch.manual_seed(seed)`` makes that device's default generator
        draw, as transformers does."""
        generator = self.generator if generator is None else generator
        if generator is None or torch.device(device).type == generator.device.type:
            return generator
        key = (id(generator), str(device))
        if key not in self._device_generators:
            self._device_generators[key] = torch.Generator(device=device).manual_seed(generator.initial_seed())
        return self._device_generators[key]

    def multinomial(self, probs: torch.Tensor, num_samples: int) -> torch.LongTensor:
        """``torch.multinomial`` of ``probs`` [B, N] drawing from the run's generator (``generator_for`` its device);
        with one generator per batch row (a list), row b draws from its own, exactly what a run of that row alone
        would draw."""
        if isinstance(self.generator, (list, tuple)):
            return torch.cat([torch.multinomial(probs[b:b + 1], num_samples=num_samples,
                                                generator=self.generator_for(probs.device, g))
                              for b, g in enumerate(self.generator)])
        return torch.multinomial(probs, num_samples=num_samples, generator=self.generator_for(probs.device))

    @contextlib.contextmanager
    def drawing_globally(self) -> Iterator[None]:
        """For code of transformers' that draws from torch's default generator: lend it the run's generator state
        (``core.rng.global_generator``, bounded by the deadline) and make the run's own draws go there too, so
        they come in transformers' order."""
        generator = self.generator
        with global_generator(generator, self.seconds_left()):
            self.generator = None
            try:
                yield
            finally:
                self.generator = generator

    def select(self, scores: torch.Tensor, do_sample: bool) -> torch.LongTensor:
        """The next token of each row of ``scores`` [B, V]: drawn from their softmax when sampling, else the
        arg-max (transformers ``_sample``). Returns [B]."""
        if do_sample:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            return self.multinomial(probs, 1).squeeze(1)
        return torch.argmax(scores, dim=-1)


@dataclass
class GenerationResult:
    """``sequences`` is laid out exactly as ``model.generate(...)`` returns it; ``trace`` holds the records."""

    sequences: torch.LongTensor
    trace: Trace | None
    stopped: str = ""  # "" when it ran to its end; "cancelled" or "time cap" when it was cut short


def generate(model, input_ids: torch.LongTensor | None = None, generation_config: GenerationConfig | None = None, *,
             attention_mask: torch.LongTensor | None = None, recorder: Recorder | None = None, streamer=None,
             assistant_model=None, tokenizer=None, cancel: threading.Event | None = None,
             generator: torch.Generator | list[torch.Generator] | None = None, max_seconds: float | None = None,
             origin: Origin | None = None, logits_processor: LogitsProcessorList | None = None,
             stopping_criteria: StoppingCriteriaList | None = None, scheduler: StepScheduler | None = None,
             limits: Limits | None = None, deadline: float | None = None, **kwargs) -> GenerationResult:
    """Generate like ``model.generate`` with any strategy of the generation guide, recording each step
    into ``recorder`` when one is given. ``kwargs`` override fields of ``generation_config``, which
    defaults to the model's own. ``cancel`` is an event another thread may set to stop early.

    ``generator`` is the run's source of randomness (a CPU ``torch.Generator`` seeded with s draws what
    ``torch.manual_seed(s)`` would, so seeded runs equal transformers'); without one the run draws from torch's
    default generator, as transformers does. A list of generators, one per row, samples many runs in one batch:
    row i draws what a run of its own with ``generator[i]`` would (sampling and beam sampling; ``origin`` names
    the run this one continues, see ``Origin``). ``max_seconds`` caps the run's wall-clock time from this call on
    (``deadline``: a ``time.monotonic()`` time instead, e.g. counted from a request's arrival), preparation and
    prefill included: it then ends with what it has, like a cancel (``GenerationResult.stopped`` says which).
    ``limits`` (``core.limits.Limits``) bounds what the request may ask for before anything is built from it. The
    assistant fields (``num_assistant_tokens``, its schedule, ``assistant_confidence_threshold``) apply to this run's
    assistant only; transformers 5.x would read them from the assistant's own ``generation_config``, which stays as
    it is.

    ``scheduler`` (``core.scheduler.shared(model)``): the run takes a seat there, so that its decode steps share one
    forward with every other seated run's (each row keeps the bits of its solo step) and its other model calls
    never run beside another forward. The steps, in order, are the module docstring's pipeline."""
    if deadline is None and max_seconds is not None:
        deadline = time.monotonic() + max_seconds
    call = prepare_call(model, input_ids, generation_config, kwargs, attention_mask=attention_mask, recorder=recorder,
                        tokenizer=tokenizer, assistant_model=assistant_model, stopping_criteria=stopping_criteria,
                        limits=limits)
    observer = (Recording(recorder, model, tokenizer, streamer, origin=origin, generator=generator)
                if recorder is not None else Observer(streamer))
    ctx = RunContext(cancel=cancel, deadline=deadline, generator=generator, observer=observer,
                     assistant=call.assistance)
    try:
        sequences = model.generate(call.input_ids, generation_config=call.generation_config,
                                   attention_mask=call.attention_mask, logits_processor=logits_processor,
                                   stopping_criteria=call.stopping_criteria,
                                   custom_generate=dispatcher(ctx, tokenizer=tokenizer, scheduler=scheduler),
                                   **call.kwargs)
    except Stopped:  # cancelled or out of time before the prefill ended: the prompt alone, as a stop at step 0 does
        sequences = call.input_ids if call.input_ids is not None else torch.zeros((1, 0), dtype=torch.long)
    trace = observer.finish(model, call.input_ids, sequences, call.generation_config, stopped=ctx.stopped)
    return GenerationResult(sequences=sequences, trace=trace, stopped=ctx.stopped)


@dataclass(frozen=True)
class Call:
    """A ``generate`` call once checked and prepared (``prepare_call``): what goes to ``model.generate``, and what
    assisted decoding drafts with."""

    input_ids: torch.LongTensor | None  # on the model's device
    attention_mask: torch.LongTensor | None
    generation_config: GenerationConfig | None
    kwargs: dict[str, Any]  # the config overrides and model inputs left for ``model.generate``
    stopping_criteria: StoppingCriteriaList
    assistance: Assistance


def prepare_call(model, input_ids, generation_config, kwargs: dict, *, attention_mask, recorder, tokenizer,
                 assistant_model, stopping_criteria, limits) -> Call:
    """Check what the call asks for before anything is built from it (the prompt, the recorder and its watched tokens,
    ``limits``), prepare it (``core.requests.prepare``), then check it as prepared: the cache it would take, the
    assistant, the request. Stop strings become a stopping criterion here (transformers drops ``tokenizer`` on the
    ``custom_generate`` path), and a prompt tokenized on the CPU moves to the model's device."""
    config_checks.check_prompt(input_ids, kwargs)
    config_checks.check_ids(model, input_ids)
    check_recorder(recorder)
    check_watch(watched_ids(recorder), model.config.get_text_config().vocab_size)
    bounds.check(model, input_ids, generation_config, kwargs, limits)
    input_ids, generation_config, kwargs, attention_mask = requests.prepare(model, input_ids, generation_config, kwargs,
                                                                            tokenizer, attention_mask)
    bounds.check_cache(model, input_ids, generation_config, kwargs, limits)
    assistant_tokenizer = kwargs.pop("assistant_tokenizer", None)
    config_checks.check_assistant(model, assistant_model, tokenizer, assistant_tokenizer)
    config_checks.check_request(model, generation_config, kwargs, assistant_model)
    stopping_criteria = StoppingCriteriaList(stopping_criteria or [])
    base = generation_config if generation_config is not None else model.generation_config
    stop_strings = kwargs.get("stop_strings", getattr(base, "stop_strings", None))
    if stop_strings:
        if tokenizer is None:
            raise ValueError("`stop_strings` needs `tokenizer=` to match strings against tokens; got no tokenizer")
        stopping_criteria.append(StopStringCriteria(tokenizer, stop_strings))
        kwargs["stop_strings"] = None
    if input_ids is not None and input_ids.device != model.device:
        input_ids = input_ids.to(model.device)
        attention_mask = attention_mask.to(model.device) if attention_mask is not None else None
    assistance = Assistance(model=assistant_model, tokenizer=assistant_tokenizer, target_tokenizer=tokenizer,
                            settings=assistant_settings(generation_config, kwargs))
    return Call(input_ids, attention_mask, generation_config, kwargs, stopping_criteria, assistance)


def dispatcher(ctx: RunContext, *, tokenizer, scheduler: StepScheduler | None) -> Callable:
    """The decoding method ``model.generate`` calls (``custom_generate``) once it has prepared the inputs, the
    processors, the stopping criteria and the cache: it finds the strategy for the final config's mode, completes the
    processors (``core.chain``) and the stopping criteria (``CancelCriteria``), and runs the strategy seated at
    ``scheduler`` (when given), stoppable between prefill chunks."""

    def dispatch(model, input_ids, logits_processor, stopping_criteria, generation_config, inputs_tensor=None,
                 **model_kwargs):
        mode = generation_config.get_generation_mode(ctx.assistant.model)
        mode = getattr(mode, "value", mode)
        config_checks.validate(generation_config, mode, model)
        strategy = get_strategy(mode)
        logits_processor = chain.sampler_chain(
            logits_processor, generation_config, mode=mode, tokenizer=tokenizer, generator=ctx.generator,
            prompt_length=input_ids.shape[1], vocab_size=model.config.get_text_config().vocab_size,
            deadline=ctx.deadline)
        stopping_criteria.append(CancelCriteria(ctx))
        ctx.assistant = dataclasses.replace(ctx.assistant, inputs_tensor=inputs_tensor)
        ctx.observer.begin(mode, generation_config, input_ids)
        seat = scheduler.seat(ctx.deadline) if scheduler is not None else contextlib.nullcontext()
        with seat, stoppable(model, ctx.should_stop):
            return strategy(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx,
                            **model_kwargs)

    return dispatch


ASSISTANT_FIELDS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def assistant_settings(generation_config: GenerationConfig | None, kwargs: dict) -> dict[str, Any]:
    """The assistant fields this call sets (in ``kwargs``, or in ``generation_config`` where they differ from
    transformers' defaults); the others come from the assistant's own ``generation_config``."""
    defaults = GenerationConfig()
    given = {f: getattr(generation_config, f) for f in ASSISTANT_FIELDS
             if generation_config is not None and getattr(generation_config, f, None) != getattr(defaults, f)}
    given.update({f: kwargs[f] for f in ASSISTANT_FIELDS if kwargs.get(f) is not None})
    return given


@dataclass
class StreamEvent:
    """One step of a running generation, for UIs: the record and the text so far per returned row
    (for the beam family, the current best hypotheses). The last event has ``done=True`` and ``result``
    (``None`` when the worker did not finish within the wall-clock cap); ``stopped`` says why a run ended
    early ("cancelled", "time cap")."""

    record: StepRecord | None
    tokens: list[list[int]]
    texts: list[str]
    done: bool = False
    result: GenerationResult | None = None
    stopped: str = ""
    behind: int = 0  # events already waiting after this one: a consumer that fell behind may show only the last


class _QueueRecorder:
    """Hands each record to ``stream``'s consumer."""

    def __init__(self, q: queue.Queue, top_n: int, lens: bool = False, watch: list[int] | tuple[int, ...] = ()):
        self.q, self.top_n, self.lens, self.watch = q, top_n, lens, list(watch)

    def on_step(self, record: StepRecord) -> None:
        self.q.put(("step", record))

    def on_end(self, trace: Trace) -> None:
        pass


GRACE_S = 15.0  # past the cap, how long ``stream`` waits for a worker stuck outside the loop before giving up


def stream(model, input_ids: torch.LongTensor, generation_config: GenerationConfig | None = None, *,
           tokenizer=None, top_n: int = 10, lens: bool = False, watch: list[int] | tuple[int, ...] = (),
           cancel: threading.Event | None = None,
           max_seconds: float | None = None, deadline: float | None = None, ended: threading.Event | None = None,
           engine=None, **kwargs) -> Iterator[StreamEvent]:
    """Run ``generate`` in a worker thread and yield a ``StreamEvent`` per step. Closing the iterator
    (or setting ``cancel``) stops the generation within one step (or one prefill chunk); the close itself returns at
    once, waiting for nothing (a UI's event loop may be the one closing), and ``ended`` is set when the worker has
    finished. Errors are re-raised here. ``top_n``, ``lens`` and ``watch`` are what a ``ListRecorder`` takes:
    candidates per row, whether to record the logit lens, and the token ids to follow through the chain and the lens.

    With ``max_seconds`` (or ``deadline``, a ``time.monotonic()`` time) the run stops at that wall-clock cap, and
    nothing here waits much longer: a worker stuck outside the decoding loop (a lock, a kernel build) is left behind
    after ``GRACE_S`` more seconds and the stream ends with what it has (``result=None``, ``stopped="time cap"``).

    ``engine`` (a ``core.engine.EngineLoop``): the run is one of that loop's runs, stepped with all of them in its one
    thread, instead of a worker thread of its own."""
    q: queue.Queue = queue.Queue()
    cancel = cancel or threading.Event()
    if deadline is None and max_seconds is not None:
        deadline = time.monotonic() + max_seconds
    give_up = deadline + GRACE_S if deadline is not None else None

    def work():
        try:
            result = generate(model, input_ids, generation_config, recorder=_QueueRecorder(q, top_n, lens, watch),
                              tokenizer=tokenizer, cancel=cancel, deadline=deadline, **kwargs)
            q.put(("done", result))
        except BaseException as err:  # handed to the consumer, raised there
            q.put(("error", err))
        finally:
            if ended is not None:
                ended.set()

    if engine is not None:
        kwargs["scheduler"] = engine.lane(model)
        engine.start(work)
    else:
        threading.Thread(target=work, daemon=True).start()
    yield from events(q, tokenizer, give_up, cancel.set)


def events(q: queue.Queue, tokenizer, give_up: float | None, close: Callable[[], None]) -> Iterator[StreamEvent]:
    """The ``StreamEvent``s of a run whose worker puts ``("step", record)``, then ``("done", GenerationResult)`` or
    ``("error", exception)`` into ``q``; past ``give_up`` (``time.monotonic()``) without a word from it, a last event
    with what it has. ``close()`` runs when the consumer stops reading, however: it must return at once."""
    tokens: list[list[int]] = []
    decode = TokenTexts(tokenizer).decode if tokenizer is not None else str
    try:
        while True:
            try:
                kind, item = q.get(timeout=None if give_up is None else max(give_up - time.monotonic(), 0.0))
            except queue.Empty:  # the worker is stuck where the cap cannot reach it
                yield StreamEvent(None, tokens, [decode(t) for t in tokens], done=True, stopped="time cap")
                return
            if kind == "error":
                raise item
            if kind == "done":
                result: GenerationResult = item
                yield StreamEvent(None, tokens, [decode(t) for t in tokens], done=True, result=result,
                                  stopped=result.stopped)
                return
            record: StepRecord = item
            if record.best is not None:
                tokens = [list(t) for t in record.best]
            else:
                while len(tokens) < len(record.rows):
                    tokens.append([])
                for row in record.rows:
                    tokens[row.row].extend(row.chosen)
            # a copy per event: the list keeps growing, and a consumer may keep earlier events
            yield StreamEvent(record, [list(t) for t in tokens], [decode(t) for t in tokens], behind=q.qsize())
    finally:
        close()  # a worker in its loop stops within a step or a prefill chunk; nobody waits for it here
