"""Shared plumbing: ``generate`` and ``stream``, and the per-generation context strategies report through.

Tensor shape legend used in comments throughout ``core/``:
B batch (rows after expansion), K beams or candidates, S sequence, V vocabulary, L layers, H hidden size.

Pipeline of ``generate``:
1. checks that need the raw call (empty prompt, stop strings, assistant tokenizers);
2. ``model.generate(custom_generate=<dispatch>)``: transformers prepares inputs, expands rows for
   beams / return sequences, builds its own logits processors, stopping criteria and KV cache, then
   hands them to ``dispatch``;
3. ``dispatch`` validates the final config (``core.config``), adds the community samplers and the grammar to
   transformers' processors in the order of ``core.chain`` (``sampler_order`` reorders them), looks the strategy
   up in the registry and runs it with a ``RunContext``; the context records steps, streams tokens and honours
   cancel.

Before 2, ``core.requests.prepare`` moves the core's own fields into the config, turns words into token ids and
heals the prompt's last token (``token_healing``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from . import chain, requests, watermark
from . import config as config_checks
from . import lens
from . import limits as bounds
from .limits import Limits
from .records import (Candidate, CacheInfo, Origin, ProcessorEffect, Recorder, RowStep, StepRecord, Trace, WatchedToken,
                      check_recorder, check_watch, watched_ids)
from .rng import global_generator
from .scheduler import StepScheduler
from .strategies import family_of, get_strategy
from .strategies.steps import Stopped, stoppable
from .text import TokenTexts


class CancelCriteria(StoppingCriteria):
    """Stops every row once the run's context is cancelled (``cancel`` set from any thread) or past its
    wall-clock deadline; checked once per step. The context remembers which of the two stopped it."""

    def __init__(self, ctx: "RunContext"):
        self.ctx = ctx

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.ctx.should_stop(), dtype=torch.bool, device=input_ids.device)


class RunContext:
    """What a strategy needs besides transformers' arguments: the recorder, the streamer, the
    assistant, the tokenizer, and helpers that turn tensors into records only when recording. The token text
    of the records is ``texts`` (``core.text.TokenTexts``: per row, so that a character split across tokens reads
    as itself)."""

    def __init__(self, model, *, recorder: Recorder | None, streamer, tokenizer, assistant_model,
                 assistant_tokenizer, cancel: threading.Event, generator: torch.Generator | None = None,
                 deadline: float | None = None, assistant_settings: dict | None = None):
        self.model = model
        self.recorder = recorder
        self.recording = recorder is not None
        self.top_n = recorder.top_n if self.recording else 0  # candidates recorded per row
        self.lens = self.recording and bool(recorder.lens)  # record the logit lens per step
        self.watch = watched_ids(recorder) if self.recording else []  # token ids followed through every stage
        self.streamer = streamer
        self.tokenizer = tokenizer
        self.assistant_model = assistant_model
        self.assistant_tokenizer = assistant_tokenizer
        self.cancel = cancel
        self.generator = generator  # every draw of the run; None: torch's default generator, as transformers
        self._device_generators: dict[tuple, torch.Generator] = {}  # its seed on the model's device (``generator_for``)
        self.deadline = deadline  # time.monotonic() past which the run ends with what it has
        self.stopped = ""  # why the run ended early: "cancelled" or "time cap"
        self.assistant_settings = dict(assistant_settings or {})  # this run's num_assistant_tokens, ...
        self.inputs_tensor: torch.Tensor | None = None
        self.mode = ""
        self.steps: list[StepRecord] = []
        self.t0 = time.perf_counter()
        self.texts = TokenTexts(tokenizer)

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

    # --- token text -----------------------------------------------------------------------------
    @property
    def text(self) -> TokenTexts:
        """The run's ``TokenTexts``; ``text(id)`` is one token's text alone (incomplete bytes as ``<XX>``)."""
        return self.texts

    def follows_rows(self) -> bool:
        """Whether a record's row ``b`` is the same sequence at every step (not for the beam family, whose rows are
        re-ranked beams: their texts follow the beam tree's paths instead)."""
        return family_of(self.mode) != "beam"

    # --- logits processing ----------------------------------------------------------------------
    def process(self, input_ids: torch.LongTensor, logits: torch.FloatTensor, processors: LogitsProcessorList):
        """Apply ``processors`` as ``LogitsProcessorList`` does. When recording, also return each
        processor's output, so that ``row_steps`` can say which candidates it removed or changed.
        Returns ``(scores [B, V], stages)``; ``stages`` is a list of (name, scores [B, V]) or None."""
        if not self.recording:
            return processors(input_ids, logits), None
        stages = []
        scores = logits
        for proc in processors:
            scores = proc(input_ids, scores.clone())
            stages.append((proc, scores))
        return scores, stages

    def candidate_ids(self, logits: torch.Tensor, scores: torch.Tensor, chosen) -> list[int]:
        """Ids worth recording for one row: top_n by raw logit, top_n by processed score, the chosen ones; none at
        -inf in both (where fewer than top_n survive, DoLa's mask, no filler at probability 0)."""
        n = min(self.top_n, logits.shape[-1])
        ids: dict[int, None] = {}
        for top in (scores.topk(n), logits.topk(n)):
            ids.update(dict.fromkeys(i for i, v in zip(top.indices.tolist(), top.values.tolist())
                                     if v != float("-inf")))
        ids.update(dict.fromkeys(int(c) for c in chosen))
        return list(ids)

    def candidates(self, logits: torch.Tensor, scores: torch.Tensor, ids: list[int], row: int = 0) -> list[Candidate]:
        """``logits`` and ``scores`` are one row, [V]; candidates sorted by processed score, each text what it would
        print in row ``row``."""
        index = torch.tensor(ids, device=logits.device)
        probs = logits.float().softmax(-1)[index].tolist()
        probs_after = scores.float().softmax(-1)[index].tolist()
        raw = logits[index].tolist()
        processed = scores[index].tolist()
        rows = [Candidate(i, self.texts.row_candidate(row, i), raw[j], probs[j], processed[j], probs_after[j])
                for j, i in enumerate(ids)]
        return sorted(rows, key=lambda c: -c.score)

    def row_steps(self, logits: torch.Tensor, scores: torch.Tensor, stages, chosen: list[list[int]],
                  inputs: torch.Tensor | None = None) -> list[RowStep]:
        """One ``RowStep`` per row of ``logits`` / ``scores`` [B, V]; ``chosen`` is the token list per row.
        ``inputs`` [B, V] is what the first processor received when that is not ``logits`` (beam search
        processes log-softmax), so that processor effects compare like with like."""
        out = []
        inputs = logits if inputs is None else inputs
        for row in range(logits.shape[0]):
            ids = self.candidate_ids(logits[row], scores[row], chosen[row])
            cut = self.grammar_cut(inputs[row], stages, row)
            ids += [i for i in cut if i not in ids]
            index = torch.tensor(ids, device=logits.device)
            model_probs = inputs[row].float().softmax(-1)  # [V]: the model's own distribution
            first = int(chosen[row][0]) if chosen[row] else None
            effects, before = [], inputs[row]
            watched = self.watched_stages(inputs[row], [stage[row] for _, stage in stages or ()], row)
            for proc, stage in stages or ():
                after = stage[row]
                changed_mask = before != after
                removed_mask = changed_mask & torch.isinf(after) & (after < 0)
                sub_changed, sub_removed = changed_mask[index].tolist(), removed_mask[index].tolist()
                alive = torch.isfinite(after)  # [V]
                effects.append(ProcessorEffect(
                    type(proc).__name__,
                    removed=[i for i, r in zip(ids, sub_removed) if r],
                    changed=[i for i, c, r in zip(ids, sub_changed, sub_removed) if c and not r],
                    removed_total=int(removed_mask.sum()),
                    stage=chain.stage_name(proc),
                    kept=int(alive.sum()),
                    mass=float(model_probs[alive].sum()),
                    chosen_prob=None if first is None else float(after.float().softmax(-1)[first]),
                ))
                before = after
            out.append(RowStep(row, self.candidates(logits[row], scores[row], ids, row), effects,
                               [int(c) for c in chosen[row]], entropy=entropy(scores[row]), watched=watched))
        return out

    def grammar_cut(self, inputs: torch.Tensor, stages, row: int) -> list[int]:
        """The top_n tokens of what the grammar stage received that it removed, for one row (``inputs`` [V]: what
        the first processor received). An earlier stage may have raised a token above the model's own top_n (a bias,
        a penalty, a reorder by ``sampler_order``), so the model's top_n alone can miss what the grammar cut; without
        a grammar stage nothing is computed."""
        before, cut = inputs, []
        for proc, stage in stages or ():
            after = stage[row]
            if chain.stage_name(proc) == "grammar":
                top = before.topk(min(self.top_n, before.shape[-1]))  # [n]
                gone = torch.isfinite(top.values) & (after[top.indices] == float("-inf"))  # [n]
                cut += top.indices[gone].tolist()
            before = after
        return cut

    def watched_stages(self, inputs: torch.Tensor, stages: list[torch.Tensor], row: int) -> list[WatchedToken]:
        """Each watched token through one row's chain: its score, probability and rank in ``inputs`` [V] (what the
        first processor received) and in each stage's output [V], in order. Nothing is computed when none is
        watched."""
        if not self.watch:
            return []
        index = torch.tensor(self.watch, device=inputs.device)  # [W]
        scores, probs, ranks = [], [], []
        for stage in (inputs, *stages):
            stage = stage.float()
            at = stage[index]  # [W]
            scores.append(at.tolist())
            probs.append(stage.softmax(-1)[index].tolist())
            ranks.append((stage[None, :] > at[:, None]).sum(-1).tolist())  # [W]: tokens scoring higher
        return [WatchedToken(t, self.texts.row_candidate(row, t), [s[k] for s in scores], [p[k] for p in probs],
                             [r[k] for r in ranks]) for k, t in enumerate(self.watch)]

    def lens_rows(self, states, final_logits, chosen):
        """The logit lens of each row (``core.lens.layer_lens``) for ``StepRecord.lens``; None when not asked."""
        if states is None:
            return None
        return lens.layer_lens(self.model, states, final_logits, chosen, self.texts.row_candidate,
                               min(self.top_n, lens.LENS_TOP_N), watch=self.watch)

    # --- reporting ------------------------------------------------------------------------------
    def emit(self, rows: list[RowStep], cache=None, **details) -> None:
        """Send one step record to the recorder (call only when ``self.recording``). The rows take their chosen
        tokens here, after every text of the step was read in the context before them."""
        if self.follows_rows():
            rows = [dataclasses.replace(rs, pieces=self.texts.advance(rs.row, rs.chosen)) for rs in rows]
        record = StepRecord(step=len(self.steps), strategy=self.mode, rows=rows,
                            elapsed_s=time.perf_counter() - self.t0,
                            cache=cache_info(cache) if cache is not None else None, **details)
        self.steps.append(record)
        self.recorder.on_step(record)

    def put(self, tokens: torch.Tensor) -> None:
        """Hand new tokens to the streamer, as transformers does after every step."""
        if self.streamer is not None:
            self.streamer.put(tokens.cpu())

    def end_stream(self) -> None:
        if self.streamer is not None:
            self.streamer.end()


def entropy(scores: torch.Tensor) -> float:
    """Entropy in nats of ``softmax(scores)`` for one row [V] (tokens at -inf hold no probability)."""
    log_p = scores.float().log_softmax(-1)
    p = log_p.exp()
    return float(-torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum())


def cache_bytes(obj, seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable from a cache's layers (quantized caches hold packed tensors)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if type(obj) is not torch.Tensor and hasattr(obj, "__tensor_flatten__"):
            # a wrapper subclass (optimum-quanto's packed QTensor): its inner tensors hold the bytes,
            # numel() * element_size() would count the dequantized float size
            return sum(cache_bytes(getattr(obj, name), seen) for name in obj.__tensor_flatten__()[0])
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(cache_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(cache_bytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith(("transformers", "optimum", "hqq")):
        return sum(cache_bytes(o, seen) for o in vars(obj).values())
    return 0


def cache_info(cache) -> CacheInfo:
    try:
        seq = int(cache.get_seq_length())
    except Exception:  # some cache kinds cannot say before their first update
        seq = 0
    return CacheInfo(kind=type(cache).__name__, bytes=cache_bytes(getattr(cache, "layers", cache)), seq_length=seq)


def config_dict(cfg: GenerationConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from the defaults, as plain JSON values (private fields dropped)."""
    diff = {k: v for k, v in cfg.to_diff_dict().items() if not k.startswith("_")}
    return json.loads(json.dumps(_str_keys(diff),
                                 default=lambda o: o.tolist() if isinstance(o, torch.Tensor) else str(o)))


def _str_keys(obj):
    """JSON keys must be strings: ``sequence_bias`` has tuple keys, as transformers' own ``to_json_string`` knows."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_str_keys(v) for v in obj]
    return obj


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
    assistant fields
    (``num_assistant_tokens``, its schedule, ``assistant_confidence_threshold``) apply to this run's assistant
    only; transformers 5.x would read them from the assistant's own ``generation_config``, which stays as it is.

    ``scheduler`` (``core.scheduler.shared(model)``): the run takes a seat there, so that its decode steps share one
    forward with every other seated run's (each row keeps the bits of its solo step) and its other model calls
    never run beside another forward."""
    if deadline is None and max_seconds is not None:
        deadline = time.monotonic() + max_seconds
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
        # transformers drops `tokenizer` on the custom_generate path, so build the criterion here
        stopping_criteria.append(StopStringCriteria(tokenizer, stop_strings))
        kwargs["stop_strings"] = None
    ctx = RunContext(model, recorder=recorder, streamer=streamer, tokenizer=tokenizer, assistant_model=assistant_model,
                     assistant_tokenizer=assistant_tokenizer, cancel=cancel or threading.Event(), generator=generator,
                     deadline=deadline, assistant_settings=assistant_settings(generation_config, kwargs))
    prompt_len = input_ids.shape[1] if input_ids is not None else 0
    if input_ids is not None and input_ids.device != model.device:  # a prompt tokenized on the CPU, a model on a GPU
        input_ids = input_ids.to(model.device)
        attention_mask = attention_mask.to(model.device) if attention_mask is not None else None

    def dispatch(model, input_ids, logits_processor, stopping_criteria, generation_config, inputs_tensor=None,
                 **model_kwargs):
        mode = generation_config.get_generation_mode(ctx.assistant_model)
        ctx.mode = getattr(mode, "value", mode)
        ctx.inputs_tensor = inputs_tensor
        config_checks.validate(generation_config, ctx.mode, model)
        strategy = get_strategy(ctx.mode)
        logits_processor = chain.sampler_chain(
            logits_processor, generation_config, mode=ctx.mode, tokenizer=ctx.tokenizer, generator=ctx.generator,
            prompt_length=input_ids.shape[1], vocab_size=model.config.get_text_config().vocab_size,
            deadline=ctx.deadline)
        stopping_criteria.append(CancelCriteria(ctx))
        ctx.generation_config = generation_config
        if ctx.recording and ctx.follows_rows():  # a branch's prefix may end inside a character
            ctx.texts.start(input_ids.tolist())
        if ctx.streamer is not None:  # the beam family streams its final best row only (row 0)
            ctx.streamer.put((input_ids[:1] if family_of(ctx.mode) == "beam" else input_ids).cpu())
        seat = scheduler.seat(ctx.deadline) if scheduler is not None else contextlib.nullcontext()
        with seat, stoppable(model, ctx.should_stop):
            return strategy(model, input_ids, logits_processor, stopping_criteria, generation_config, ctx,
                            **model_kwargs)

    ctx.t0 = time.perf_counter()
    try:
        sequences = model.generate(input_ids, generation_config=generation_config, attention_mask=attention_mask,
                                   logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                                   custom_generate=dispatch, **kwargs)
    except Stopped:  # cancelled or out of time before the prefill ended: the prompt alone, as a stop at step 0 does
        sequences = input_ids if input_ids is not None else torch.zeros((1, 0), dtype=torch.long)
        ctx.generation_config = getattr(ctx, "generation_config", None) or generation_config or model.generation_config
        ctx.mode = ctx.mode or ""
    trace = None
    if recorder is not None:
        new = sequences if model.config.is_encoder_decoder else sequences[:, prompt_len:]
        trace = Trace(
            strategy=ctx.mode,
            config=config_dict(ctx.generation_config),
            prompt_ids=input_ids.tolist() if input_ids is not None else [],
            steps=ctx.steps,
            sequences=sequences.tolist(),
            texts=[ctx.texts.decode(row) for row in new.tolist()] if tokenizer is not None else [],
            model_name=getattr(model, "name_or_path", "") or "",
            elapsed_s=time.perf_counter() - ctx.t0,
            seed=generator.initial_seed() if isinstance(generator, torch.Generator) else None,
            stopped=ctx.stopped,
            run_id=uuid.uuid4().hex[:12],
            origin=origin,
            watermark=watermark_reports(model, input_ids, sequences, ctx.generation_config),
        )
        recorder.on_end(trace)
    return GenerationResult(sequences=sequences, trace=trace, stopped=ctx.stopped)


def watermark_reports(model, input_ids, sequences, cfg):
    """Per returned sequence, the green-list membership of each token and the detector's z-score (decoder-only runs
    with ``watermarking_config``); None otherwise."""
    wm = getattr(cfg, "watermarking_config", None)
    if not watermark.detectable(wm) or model.config.is_encoder_decoder or input_ids is None:
        return None
    return watermark.reports(model, input_ids.tolist(), sequences.tolist(), cfg.watermarking_config)


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
