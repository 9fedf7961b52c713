"""Thin adapters between widgets and the core: values -> ``generate`` kwargs, prompt -> ids,
``StreamEvent`` -> a ``Run`` the figures draw from, traces <-> JSON files.

Nothing here builds widgets; ``playground/tabs`` does, and calls these.
"""

from __future__ import annotations

import codecs
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
from core.records import StepRecord, Trace

from . import policy, session, zerogpu
from .fields import BY_NAME as ADVANCED

# Fields whose widget gives a float but transformers expects an int.
INT_FIELDS = {"max_new_tokens", "top_k", "num_beams", "num_return_sequences", "no_repeat_ngram_size",
              "num_beam_groups", "prompt_lookup_num_tokens", "num_assistant_tokens", "max_length",
              *(f.name for f in ADVANCED.values() if f.integer)}
# Fields transformers' processors accept only as floats (TemperatureLogitsWarper refuses the int 2),
# while a slider sitting on a whole number sends an int.
FLOAT_FIELDS = {"temperature", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty",
                "length_penalty", "diversity_penalty", "penalty_alpha",
                *(f.name for f in ADVANCED.values() if f.kind in ("slider", "number") and not f.integer)}
# Fields where 0 on a slider means "off"; transformers' own "off" is None for these.
ZERO_IS_OFF = {"min_p", "epsilon_cutoff", "eta_cutoff", "no_repeat_ngram_size",
               *(f.name for f in ADVANCED.values() if f.off == 0)}


# --- field codecs: config value <-> widget value ------------------------------------------------
def parse_stop_strings(value) -> list[str] | None:
    """Comma-separated text (``\\n`` escapes allowed) or a list -> list of stop strings, None when empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return list(value) or None
    parts = [codecs.decode(p.strip(), "unicode_escape") for p in str(value).split(",")]
    return [p for p in parts if p] or None


def format_stop_strings(value) -> str:
    if not value:
        return ""
    values = [value] if isinstance(value, str) else value
    return ", ".join(v.encode("unicode_escape").decode() for v in values)


def parse_dola_layers(value) -> str | list[int] | None:
    """"low", "high", a JSON-ish list "[8, 10, 12]" / "8, 10, 12", or a list -> ``dola_layers``."""
    if value is None or value == "" or isinstance(value, list):
        return value or None
    text = str(value).strip()
    if text in ("low", "high"):
        return text
    try:
        layers = [int(p) for p in text.strip("[]").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f'`dola_layers` must be "low", "high" or a list of layer indices such as [8, 10, 12]; '
                         f"got {text!r}") from None
    return layers or None


def format_dola_layers(value) -> str:
    return value if isinstance(value, str) or value is None else json.dumps(list(value))


def parse_cache_config(value) -> dict | None:
    """JSON text or a dict -> ``cache_config``."""
    if value is None or value == "" or isinstance(value, dict):
        return value or None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"`cache_config` must be a JSON object such as {{\"backend\": \"quanto\", \"nbits\": 4}}; "
                         f"got {value!r} ({err.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"`cache_config` must be a JSON object; got {value!r}")
    return parsed


def format_cache_config(value) -> str:
    return "" if not value else json.dumps(value)


def json_codec(name: str):
    """(parse, format) for a field shown as JSON text: empty text is unset."""

    def parse(value):
        if value is None or isinstance(value, (list, dict, tuple)):
            return value or None
        text = str(value).strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            example = ADVANCED[name].info if name in ADVANCED else "a JSON value"
            raise ValueError(f"`{name}` must be JSON ({example}); got {text!r} ({err.msg})") from None

    def format_(value):
        return "" if value is None else json.dumps(value, ensure_ascii=False)

    return parse, format_


def text_codec(value):
    """A string field: empty (or only blanks) is unset."""
    return value if isinstance(value, str) and value.strip() else None


def number_codec(name: str, integer: bool = False):
    """(parse, format) for a number shown as text: empty is unset; ``integer`` fields (token ids) parse to ints."""
    kind = "an integer" if integer else "a number"

    def parse(value):
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if not text:
            return None
        try:
            return int(text) if integer else float(text)
        except ValueError:
            raise ValueError(f"`{name}` must be {kind} (or empty: unset); got {text!r}") from None

    return parse, lambda v: "" if v is None else str(v)


def parse_names(value) -> list[str] | None:
    """Comma-separated names (or a list) -> a list, None when empty."""
    if value is None or isinstance(value, (list, tuple)):
        return list(value) or None if value is not None else None
    return [p.strip() for p in str(value).split(",") if p.strip()] or None


def format_names(value) -> str:
    return ", ".join(value) if value else ""


PARSERS = {"stop_strings": parse_stop_strings, "dola_layers": parse_dola_layers, "cache_config": parse_cache_config}
FORMATTERS = {"stop_strings": format_stop_strings, "dola_layers": format_dola_layers,
              "cache_config": format_cache_config}
for _field in ADVANCED.values():  # the Advanced fields shown as text (``playground.fields``)
    if _field.kind == "json":
        PARSERS[_field.name], FORMATTERS[_field.name] = json_codec(_field.name)
    elif _field.kind in ("text", "lines"):
        PARSERS[_field.name], FORMATTERS[_field.name] = text_codec, lambda v: v or ""
    elif _field.kind == "number":
        PARSERS[_field.name], FORMATTERS[_field.name] = number_codec(_field.name, _field.integer)
    elif _field.kind == "names":
        PARSERS[_field.name], FORMATTERS[_field.name] = parse_names, format_names


def config_value(name: str, widget_value: Any) -> Any:
    """The ``GenerationConfig`` value of field ``name`` from its widget's value. An Advanced field at its widget's
    default is unset, so a saved config holds only what was changed (the core's defaults are the same)."""
    value = _config_value(name, widget_value)
    if name in ADVANCED and value is not None and value == _config_value(name, ADVANCED[name].default):
        return None
    return value


def _config_value(name: str, widget_value: Any) -> Any:
    if name in PARSERS:
        return PARSERS[name](widget_value)
    if widget_value is None:
        return None
    if name in INT_FIELDS and isinstance(widget_value, float) and widget_value.is_integer():
        widget_value = int(widget_value)
    if name in FLOAT_FIELDS and isinstance(widget_value, int) and not isinstance(widget_value, bool):
        widget_value = float(widget_value)
    if name in ZERO_IS_OFF and widget_value == 0:
        return None
    if name == "early_stopping" and widget_value in ("True", "False"):  # a radio of True / False / "never"
        return widget_value == "True"
    return widget_value


def widget_value(name: str, config_value_: Any) -> Any:
    """The widget value showing ``config_value_`` of field ``name`` (inverse of ``config_value``)."""
    if config_value_ is None and name in ADVANCED:
        return ADVANCED[name].default
    if name in FORMATTERS:
        return FORMATTERS[name](config_value_)
    if name in ZERO_IS_OFF and config_value_ is None:
        return 0
    if name == "early_stopping" and isinstance(config_value_, bool):
        return str(config_value_)
    return config_value_


def generate_kwargs(controls: dict[str, Any], extra: dict | None = None, fixed: dict | None = None) -> dict:
    """``generate`` overrides from a tab: loaded fields it has no widget for, then its widgets, then
    what defines the tab (``do_sample=False`` for greedy), which nothing may override."""
    kwargs = dict(extra or {})
    for name, value in controls.items():
        parsed = config_value(name, value)
        if parsed is None:
            kwargs.pop(name, None)
        else:
            kwargs[name] = parsed
    kwargs.update(fixed or {})
    return kwargs


# --- prompt ---------------------------------------------------------------------------------------
def encode_prompt(tokenizer, prompt: str, chat: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(input_ids [1, S], attention_mask [1, S], note)``; the chat template wraps ``prompt`` as one user
    turn when asked for and the tokenizer has one (the note says when it had none)."""
    if chat and getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        return enc["input_ids"], enc["attention_mask"], ""
    enc = tokenizer(prompt, return_tensors="pt")
    note = "this tokenizer has no chat template; the prompt was used as plain text" if chat else ""
    return enc["input_ids"], enc["attention_mask"], note


# --- runs ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One generation shown in a tab, filled as its stream events arrive (or rebuilt from a trace).

    A run may continue a paused step-mode run (``base``): its records and tokens then come first, the new ones
    after them, and the finished trace is the two joined (``joined``) under the base's run id."""

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
    prompt: str = ""  # the prompt as typed (the branch tree shows it)
    base: Trace | None = None  # the paused step-mode run this one continues from its end
    paused: bool = False  # step mode: Next token may add more
    generator_state: torch.Tensor | None = None  # where its generator stopped: step mode draws on from there
    lead: list[int] = field(default_factory=list)  # tokens before its own (a branch's prefix), shown first
    lead_texts: list[str] = field(default_factory=list)

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
                     stopped=self.stopped or "cancelled")

    @classmethod
    def from_trace(cls, name: str, label: str, trace: Trace, prompt: str = "", text_of=None) -> "Run":
        """A finished run from its trace; ``text_of(id)`` spells the prefix a branch continues from (shown first)."""
        lead = list(trace.origin.prefix) if trace.origin is not None else []
        lead_texts = [text_of(t) for t in lead] if text_of is not None else []
        texts = ["".join(lead_texts) + t for t in trace.texts] if lead_texts else list(trace.texts)
        return cls(name, label, kwargs=dict(trace.config), prompt_ids=trace.prompt_ids, steps=list(trace.steps),
                   tokens=returned_tokens(trace), texts=texts, trace=trace, model_name=trace.model_name,
                   elapsed_s=trace.elapsed_s, first_token_s=trace.steps[0].elapsed_s if trace.steps else None,
                   done=True, stopped=trace.stopped, seed=trace.seed, prompt=prompt, lead=lead, lead_texts=lead_texts)


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


def stream_run(run: Run, loaded, input_ids, attention_mask, *, generator, top_n: int = 10,
               max_seconds: float | None = None, origin: core.Origin | None = None,
               **model_kwargs) -> Iterator[Run]:
    """Iterate ``core.stream`` into ``run``, yielding it after each event (on a ZeroGPU Space inside a GPU task:
    ``zerogpu.stream``). The run draws from ``generator`` (its own: ``core.rng.new_generator(seed)``, or a list of
    them, one per row), stops at the ``max_seconds`` wall-clock cap, and names ``origin`` when it continues another
    run. Closing this generator closes the core's stream, which sets its cancel event: the worker stops within one
    step."""
    if isinstance(generator, torch.Generator):
        run.seed = generator.initial_seed() if run.base is None else run.base.seed
    run.prompt_ids, run.model_name, run.started = input_ids.tolist(), loaded.name, time.perf_counter()
    if run.base is not None:
        run.prompt_ids = run.base.prompt_ids
    events = zerogpu.stream(loaded.model, input_ids, shared=policy.shared_forward(), tokenizer=loaded.tokenizer,
                            top_n=top_n,
                            attention_mask=attention_mask, generator=generator, max_seconds=max_seconds,
                            origin=origin, **run.kwargs, **model_kwargs)
    def decode(ids):
        return loaded.tokenizer.decode(ids, skip_special_tokens=True)

    run.streaming.set()
    try:
        for event in events:
            run.feed(event, decode)
            yield run
    finally:
        events.close()  # joins the worker
        run.streaming.clear()
        if isinstance(generator, torch.Generator):
            run.generator_state = generator.get_state()
        session.trim_heap()  # the run's tensors are freed: hand their memory back


def parse_token(tokenizer, text: str | None, vocab_size: int) -> int | None:
    """``#<id>`` or a token's text -> its id (``None`` for empty). Text must be exactly one token of the model."""
    text = "" if text is None else str(text)
    if not text.strip():
        return None
    if text.strip().startswith("#") and text.strip()[1:].isdigit():
        token_id = int(text.strip()[1:])
        if not 0 <= token_id < vocab_size:
            raise ValueError(f"`token` must be a token id in [0, {vocab_size - 1}] (#<id>) or one token's text; "
                             f"got {text!r}")
        return token_id
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        pieces = " + ".join(repr(tokenizer.decode([i])) for i in ids)
        raise ValueError(f"`token` must be one token of the model's vocabulary (or #<id>); {text!r} is {len(ids)} "
                         f"tokens: {pieces}")
    return ids[0]


def wait_stopped(runs: dict[str, Run], timeout: float = 10.0) -> None:
    """Block until no run of ``runs`` is streaming (after a cancel closed its generator)."""
    deadline = time.monotonic() + timeout
    while any(r.streaming.is_set() for r in runs.values()) and time.monotonic() < deadline:
        time.sleep(0.02)


class Throttle:
    """Says when to redraw figures: never with the first token (it goes out as text alone, at once),
    then at most every ``interval`` seconds, stretched to three times the last redraw's cost so heavy
    figures never starve the text stream."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.last: float | None = None
        self.cost = 0.0

    def due(self) -> bool:
        now = time.perf_counter()
        if self.last is None:
            self.last = now
            return False
        return now - self.last >= max(self.interval, 3 * self.cost)

    def drawn(self, started: float) -> None:
        self.last = time.perf_counter()
        self.cost = self.last - started


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
    return {"main": Run.from_trace("main", main_label or trace.strategy, trace)}


# --- text ------------------------------------------------------------------------------------------
def join_texts(texts: list[str]) -> str:
    """One text as it is; several returned sequences numbered as ``generate`` ranks them."""
    if len(texts) <= 1:
        return texts[0] if texts else ""
    return "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts))


STOPPED = {"cancelled": " (stopped)", "time cap": " (stopped at the server's time limit; it ends every run there)"}


def status_line(runs: dict[str, Run], note: str = "", seeded: bool = False) -> str:
    """One line per run: mode, tokens, speed, how it ended; with ``seeded``, the seed it drew from."""
    parts = []
    for run in runs.values():
        state = (STOPPED.get(run.stopped, f" ({run.stopped})") if run.stopped else "" if run.done
                 else " (running)" if run.steps else " (waiting)")
        first = f", first token {run.first_token_s:.2f} s" if run.first_token_s is not None else ""
        mode = f" (`{run.steps[0].strategy}`)" if run.steps and run.steps[0].strategy else ""
        seed = f", seed {run.seed}" if seeded and run.seed is not None else ""
        parts.append(f"**{run.label}**{mode}: {run.new_tokens} tokens in {run.elapsed_s:.2f} s "
                     f"({run.tokens_per_s:.1f} tokens/s{first}{seed}){state}")
    if note:
        parts.append(f"_{note}_")
    return "  \n".join(parts)


def error_line(err: Exception) -> str:
    return f"Not run: {err}"
