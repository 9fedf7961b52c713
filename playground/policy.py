"""Deployment policy: what a visitor may make the server load, and how much of it.

Public mode is for a server that anonymous visitors share: a Hugging Face Space, or any host started with
``PLAYGROUND_PUBLIC=1``. There, what a visitor types never reaches the server's filesystem (only named
models and Hub ids load; the Config & Share tab uses a folder per session), a Hub model is sized from its
safetensors headers and its config.json before anything else is downloaded, and a refusal never shows a server
path. Every Hub request made for a visitor is anonymous (``token=False``): huggingface_hub would otherwise send the
server's own HF_TOKEN, lending its owner's private and gated repos to anyone. A visitor's model is downloaded into a
folder of the model cache's own, deleted when the model is evicted (``state.ModelCache``). Locally (public mode
off) every name ``core.load_model`` takes loads as before, with no size check and the owner's token.

Environment, read when asked (so that a test or a restart sees the current value):

    SPACE_ID               set by Hugging Face on every Space: public mode is on
    PLAYGROUND_PUBLIC      1 (or true / yes / on): public mode is on elsewhere
    PLAYGROUND_MAX_PARAMS  public mode: the largest Hub model loaded, in parameters (default 2e9: ~8 GB in
                           float32 on CPU), by its safetensors headers and by its config.json alike
    PLAYGROUND_MAX_DISK_GB public mode: the disk visitors' downloaded models may take together, in GB (default 20);
                           a model too large for it is refused, idle ones are evicted to make room
    PLAYGROUND_MAX_MODELS  models kept loaded at once, the startup model included (default 2)
    PLAYGROUND_MAX_SECONDS the wall-clock cap of every generation, public or not (default 120)
    PLAYGROUND_DTYPE       the precision models load in unless a visitor picks another: float32 (default),
                           bfloat16, float16 or auto (``core.models.resolve_dtype``)

and the bounds on what a visitor sends (``BOUNDS``: each size a visitor controls, its knob, its default in public
mode and in a private run), read by ``limits()`` for the core and by the handlers for the rest.

A model is asked for by a *key*: its name, with ``@bfloat16`` (or another precision) appended when it is to be
loaded in anything but float32 (``model_key``); the cache holds one model per key.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from core.limits import Limits

from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                    NotASafetensorsRepoError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
                                    RepositoryNotFoundError, RevisionNotFoundError, SafetensorsParsingError)
from huggingface_hub.utils import validate_repo_id

from core.models import (DEFAULT_NAME, DTYPE_CHOICES, EMBEDDED_HUB_ID, NAMED_GGUF, ConfigRefused, DownloadTooLarge,
                         LoadedModel, available_models, choose_device, hub_config_parameter_count, hub_weights,
                         resolve_dtype)

from . import engine

try:  # the HTTP client huggingface_hub 2.x ships with; its transport errors mean "could not reach the Hub"
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - older huggingface_hub releases use httpx
    from httpx import TransportError

PUBLIC_ENV = "PLAYGROUND_PUBLIC"
MAX_PARAMS_ENV = "PLAYGROUND_MAX_PARAMS"
MAX_MODELS_ENV = "PLAYGROUND_MAX_MODELS"
MAX_DISK_ENV = "PLAYGROUND_MAX_DISK_GB"
MAX_SECONDS_ENV = "PLAYGROUND_MAX_SECONDS"
DTYPE_ENV = "PLAYGROUND_DTYPE"
SHARED_ENV = "PLAYGROUND_SHARED_FORWARD"
THREADS_ENV = "PLAYGROUND_THREADS"
ENGINE_PROCESS_ENV = "PLAYGROUND_ENGINE_PROCESS"
EXACT_ENV = "PLAYGROUND_EXACT_BATCH"
SWITCH_ENV = "PLAYGROUND_SWITCH_MS"
FRAME_ENV = "PLAYGROUND_FRAME_MS"
DEFAULT_MAX_SECONDS = 120.0
DEFAULT_MAX_PARAMS = 2_000_000_000
DEFAULT_MAX_MODELS = 2
DEFAULT_MAX_DISK_GB = 20.0
# set aside on disk beside a visitor's weights: configs, tokenizer files and the weights files' own headers
OTHER_FILES_BYTES = 128 * 2**20
EXAMPLE_HUB_ID = "HuggingFaceTB/SmolLM2-360M-Instruct"

log = logging.getLogger(__name__)


class PublicError(ValueError):
    """A refusal written for any visitor to read: it names the field and the value typed, never a server
    path nor another library's error text (which may hold one)."""


# --- the environment ----------------------------------------------------------------------------------------
def public_mode() -> bool:
    """True when anonymous visitors share this process: on a Space (``SPACE_ID``) or with ``PLAYGROUND_PUBLIC=1``."""
    flag = os.environ.get(PUBLIC_ENV, "").strip().lower()
    return bool(os.environ.get("SPACE_ID")) or flag in ("1", "true", "yes", "on")


def max_params() -> int:
    """``PLAYGROUND_MAX_PARAMS`` (``2e9`` and ``2000000000`` both read), default 2e9."""
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"{MAX_PARAMS_ENV} must be a number of parameters such as 2e9; got {raw!r}")
    return int(value)


def max_seconds() -> float:
    """``PLAYGROUND_MAX_SECONDS``, default 120: the wall-clock cap of every generation (public mode or not)."""
    return _positive(MAX_SECONDS_ENV, DEFAULT_MAX_SECONDS, "a number of seconds > 0 such as 120")


def _positive(env: str, default: float, words: str) -> float:
    """The number > 0 in ``env`` (``default`` when unset); otherwise a ValueError naming it with ``words``."""
    raw = os.environ.get(env, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{env} must be {words}; got {raw!r}")
    return value


def max_models() -> int:
    """``PLAYGROUND_MAX_MODELS``, default 2: the model cache's capacity, the pinned startup model included."""
    raw = os.environ.get(MAX_MODELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MODELS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_MODELS_ENV} must be a whole number of models, at least 1; got {raw!r}")
    return int(raw)


def max_disk_bytes() -> int:
    """``PLAYGROUND_MAX_DISK_GB`` in bytes, default 20 GB: what visitors' downloaded models may take on disk."""
    return int(_positive(MAX_DISK_ENV, DEFAULT_MAX_DISK_GB, "a number of gigabytes > 0 such as 20") * 1e9)


def shared_forward() -> bool:
    """``PLAYGROUND_SHARED_FORWARD``, default 1: every visitor's run shares each forward with the other runs on its
    model (``core.scheduler``; each run's tokens stay those of the run alone). 0 runs each generation by itself."""
    raw = os.environ.get(SHARED_ENV, "").strip() or "1"
    if raw not in ("0", "1"):
        raise ValueError(f"{SHARED_ENV} must be 1 (share forwards) or 0 (each run alone); got {raw!r}")
    return raw == "1"


def engine_process() -> bool:
    """``PLAYGROUND_ENGINE_PROCESS``, default 1: ``python app.py`` runs the models in an engine process of their own
    (``playground.engine_host``); 0 runs them in the page's process. A ZeroGPU Space runs them in ``spaces``' own
    worker whatever it says."""
    raw = os.environ.get(ENGINE_PROCESS_ENV, "").strip() or "1"
    if raw not in ("0", "1"):
        raise ValueError(f"{ENGINE_PROCESS_ENV} must be 1 (an engine process) or 0 (models in the page's process); "
                         f"got {raw!r}")
    return raw == "1"


def exact_batch() -> bool:
    """``PLAYGROUND_EXACT_BATCH``, default 1: in the engine process, every seeded run under load keeps the bits of its
    solo run (row-exact linear layers where the precision needs them); 0 batches the linear layers plainly, faster in
    float32 on a CPU, and a seeded run under load may then part from its solo run at a near tie."""
    raw = os.environ.get(EXACT_ENV, "").strip() or "1"
    if raw not in ("0", "1"):
        raise ValueError(f"{EXACT_ENV} must be 1 (solo bits under load) or 0 (plain batched linears); got {raw!r}")
    return raw == "1"


def torch_threads() -> int:
    """``PLAYGROUND_THREADS``: torch's intra-op threads, decided once at start-up (the one knob). Default: the
    machine's cores less one, at least 1. With shared forwards one forward runs at a time, so these threads are all
    the model ever uses; the core left over serves Gradio and the runs' own work (processors, records, streaming),
    which otherwise find every core spinning in OpenMP (``core.stream`` lost 12% to it against ``generate``)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return max(1, (os.cpu_count() or 1) - 1)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{THREADS_ENV} must be a whole number of threads, at least 1; got {raw!r}")
    return int(raw)


def switch_interval() -> float:
    """``PLAYGROUND_SWITCH_MS``, default 5 (Python's own): how often (milliseconds) Python hands the GIL to another
    thread that waits for it (``sys.setswitchinterval``). A forward releases the GIL around each of its torch ops and
    takes it back after each, so a thread busy in Python can hold it up; yet measured in the app (``python
    bench/bench_load.py --switch-ms 5,1``) 1 ms gave no more tokens/s under 8 or 16 visitors and fewer to one
    visitor, so the default stays Python's; the knob is there to measure it again on other hardware."""
    return _seconds_from_ms(SWITCH_ENV, "5", 0.05, 100)


def frame_seconds() -> float:
    """``PLAYGROUND_FRAME_MS``, default 50: the least time between two streamed updates of a run (0: one per step);
    what streamed meanwhile goes out with the next, so the page redraws at most 20 times a second however fast the
    model runs. Each message costs the page's main thread work that grows with the text it redraws (the token view's
    HTML) and, in Gradio's page unmended, with every component any event has touched (``gradio_patches``)."""
    return _seconds_from_ms(FRAME_ENV, "50", 0, 5000)


def _seconds_from_ms(env: str, default: str, low: float, high: float) -> float:
    """The variable ``env`` (milliseconds, ``default`` when unset) in seconds; outside [``low``, ``high``] or not a
    number, a ValueError naming the variable and its range."""
    raw = os.environ.get(env, "").strip() or default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise ValueError(f"{env} must be a number of milliseconds from {low:g} to {high:g}; got {raw!r}")
    return value / 1000


def default_dtype() -> str:
    """``PLAYGROUND_DTYPE``, default float32: the precision models load in unless a visitor picks another."""
    raw = os.environ.get(DTYPE_ENV, "").strip() or "float32"
    if raw not in DTYPE_CHOICES:
        raise ValueError(f"{DTYPE_ENV} must be one of {', '.join(DTYPE_CHOICES)}; got {raw!r}")
    return raw


# --- the bounds on what a visitor sends --------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """One size a visitor controls: the ``core.limits.Limits`` fields it bounds (none: the playground's own, read by
    ``bound``), its knob, its defaults in public mode and in a private run, in the knob's ``unit`` (``scale`` of the
    field's own unit each), and what it bounds in words (docs/public-mode.md lists them)."""

    key: str
    env: str
    public: int
    private: int
    what: str
    fields: tuple[str, ...] = ()
    unit: str = ""
    scale: int = 1


BOUNDS: tuple[Bound, ...] = (
    Bound("prompt_tokens", "PLAYGROUND_MAX_PROMPT_TOKENS", 2048, 16_384, "prompt and negative prompt, in tokens "
          "(a branch's prompt and prefix: this plus max_new_tokens)", ("negative_prompt_tokens",)),
    Bound("new_tokens", "PLAYGROUND_MAX_NEW_TOKENS", 512, 4096, "max_new_tokens", ("new_tokens",)),
    Bound("rows", "PLAYGROUND_MAX_ROWS", 64, 256, "rows decoded at once: Sample N, num_beams or num_return_sequences, "
          "x contrastive search's top_k", ("rows",)),
    Bound("kv", "PLAYGROUND_MAX_KV_MB", 1024, 8192, "the KV cache a run needs: rows x (prompt + max_new_tokens) x "
          "the model's bytes per token", ("kv_bytes",), "MB", 2 ** 20),
    Bound("stop_strings", "PLAYGROUND_MAX_STOP_STRINGS", 8, 16, "stop_strings: how many", ("stop_strings",)),
    Bound("stop_chars", "PLAYGROUND_MAX_STOP_CHARS", 32, 64, "stop_strings: characters of each",
          ("stop_string_chars",)),
    Bound("entries", "PLAYGROUND_MAX_ENTRIES", 256, 1024, "entries of bad_words_ids, sequence_bias, "
          "force_words_ids, suppress_tokens, begin_suppress_tokens", ("entries",)),
    Bound("entry_tokens", "PLAYGROUND_MAX_ENTRY_TOKENS", 32, 64, "tokens (or a word's characters) in one entry",
          ("entry_tokens",)),
    Bound("grammar_chars", "PLAYGROUND_MAX_GRAMMAR_CHARS", 2000, 20_000, "characters of json_schema, regex or "
          "grammar", ("grammar_chars",)),
    Bound("upload", "PLAYGROUND_MAX_UPLOAD_MB", 5, 50, "an uploaded file (a trace, a config, a branch tree)", (),
          "MB", 2 ** 20),
    Bound("session_runs", "PLAYGROUND_SESSION_RUNS", 1, 8, "generations one session runs at once"),
    Bound("session_queue", "PLAYGROUND_SESSION_QUEUE", 4, 16, "requests one session has waiting in the queue"),
)
BOUND = {b.key: b for b in BOUNDS}
SEED_MAX = 2 ** 63 - 1  # torch.Generator.manual_seed takes more, but every seed shown must survive a JSON round trip


def bound(key: str) -> int:
    """The bound ``key`` of ``BOUNDS`` in its field's unit: its knob when set (a whole number >= 1), else its default
    for this mode."""
    b = BOUND[key]
    raw = os.environ.get(b.env, "").strip()
    if not raw:
        return (b.public if public_mode() else b.private) * b.scale
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{b.env} must be a whole number >= 1{f' ({b.unit})' if b.unit else ''}; got {raw!r}")
    return int(raw) * b.scale


def limits() -> Limits:
    """The core's bounds for a visitor's run (``core.generate(limits=...)``), each message naming its knob."""
    values, knobs = {}, {}
    for b in BOUNDS:
        for name in b.fields:
            values[name], knobs[name] = bound(b.key), b.env
    prompt = bound("prompt_tokens")
    values["context_tokens"] = prompt + bound("new_tokens")  # a branch starts from its prompt and prefix
    knobs["context_tokens"] = f"{BOUND['prompt_tokens'].env} + {BOUND['new_tokens'].env}"
    return Limits(**values, knobs=knobs)


def check_prompt(text: str | None, n_tokens: int | None = None, field: str = "prompt") -> None:
    """A prompt within ``PLAYGROUND_MAX_PROMPT_TOKENS``: its characters before it is tokenized (a token is rarely
    shorter than a character, so 16 per token is generous), its tokens after."""
    limit = bound("prompt_tokens")
    env = BOUND["prompt_tokens"].env
    if text is not None and len(text) > 16 * limit:
        raise ValueError(f"`{field}` must be at most {limit:,} tokens on this server (set by {env}); got "
                         f"{len(text):,} characters")
    if n_tokens is not None and n_tokens > limit:
        raise ValueError(f"`{field}` must be at most {limit:,} tokens on this server (set by {env}); got "
                         f"{n_tokens:,} tokens")


def whole(value, field: str, low: int, high: int) -> int:
    """``value`` (a number from a widget or an API call) as an int in [``low``, ``high``], or a ``ValueError`` that
    names ``field`` and the range."""
    try:
        number = float(value)
        ok = math.isfinite(number) and number == int(number) and low <= int(number) <= high
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(f"`{field}` must be a whole number in [{low:,}, {high:,}]; got {shown}")
    return int(number)


def check_seed(seed, n: int = 1) -> int | None:
    """The seed box's value: None (a fresh random seed) or a whole number that ``n`` runs can count up from within
    torch's range."""
    if seed is None or seed == "":
        return None
    return whole(seed, "seed", 0, SEED_MAX - (n - 1))


class SessionRuns:
    """How many generations each session runs now, keyed by its hash and dropped at zero: a session holds at most
    ``session_runs`` of the process's slots (``PLAYGROUND_SESSION_RUNS``), so one page or client cannot take them
    all."""

    def __init__(self):
        self._lock, self._count = threading.Lock(), {}

    @contextmanager
    def slot(self, session: str | None) -> Iterator[None]:
        limit, key = bound("session_runs"), session or ""
        with self._lock:
            if self._count.get(key, 0) >= limit:
                raise ValueError(f"this page already runs {limit} generation{'s' * (limit > 1)} at once, the most "
                                 f"one visitor may on this server (set by {BOUND['session_runs'].env}); Stop it or "
                                 "wait for it to end")
            self._count[key] = self._count.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._count[key] -= 1
                if not self._count[key]:
                    del self._count[key]

    def running(self, session: str | None) -> int:
        with self._lock:
            return self._count.get(session or "", 0)


SESSION_RUNS = SessionRuns()  # a gauge per session, not a session's data: what the slot limit reads


# --- which model, in which precision ---------------------------------------------------------------------------
def model_key(name: str | None, dtype: str | None = None) -> str:
    """The cache key of model ``name`` in precision ``dtype`` ("auto" resolved for this machine): the name alone for
    float32, ``name@bfloat16`` for the others."""
    name = name or DEFAULT_NAME
    dtype = resolve_dtype(dtype, choose_device())
    return name if dtype == "float32" else f"{name}@{dtype}"


def split_key(key: str | None) -> tuple[str | None, str | None]:
    """``(name, dtype)`` of a ``model_key``; ``dtype`` is None for a plain name (float32)."""
    if key and "@" in key:
        name, dtype = key.rsplit("@", 1)
        if dtype in DTYPE_CHOICES:
            return name, dtype
    return key, None


# --- what a visitor may load ----------------------------------------------------------------------------------
def _typed(value: str) -> str:
    """The value a visitor typed, quoted for a message (cut short: it is echoed, not stored)."""
    return repr(value if len(value) <= 100 else value[:100] + "...")


def check_model_name(name: str | None, field: str, allowed: Iterable[str] = ()) -> str:
    """``name`` stripped, when a visitor of a public server may load it: a named model, one of ``allowed`` (the
    startup model the operator chose), or a Hub id (``namespace/name``) that is not also a path on this server
    (``from_pretrained`` would read that path first). Anything else raises ``PublicError``."""
    if name is not None and not isinstance(name, str):
        raise PublicError(f"`{field}` must be a model's name; got a {type(name).__name__}")
    name = (name or "").strip()
    named = ", ".join(available_models()) or "none installed"
    if name in NAMED_GGUF and name != DEFAULT_NAME and name not in available_models():  # the default has a Hub id
        raise PublicError(f"`{field}`: the named model {_typed(name)} is not installed on this server "
                          f"(installed: {named}).")
    if name in NAMED_GGUF or name in allowed:
        return name
    if name.lower().endswith(".gguf"):
        problem = ".gguf files cannot be loaded here"
    else:
        try:
            validate_repo_id(name)
            on_disk = os.path.lexists(name) or os.path.lexists(os.path.expanduser(name))
            problem = "local files and folders cannot be loaded here" if on_disk else None
        except HFValidationError:
            problem = ("that is not a Hub id (namespace/name: letters, digits, '-', '_', '.'), and local files "
                       "and folders cannot be loaded here")
    if problem is None:
        return name
    raise PublicError(f"`{field}` takes a named model ({named}) or a Hub id such as {EXAMPLE_HUB_ID} on this "
                      f"public server; {problem}. Got {_typed(name)}.")


def hub_reason(err: BaseException | None, missing: str = "the repo has no such file") -> str | None:
    """What went wrong with the Hub, in words, found in ``err`` or the errors it was raised from (transformers
    wraps huggingface_hub's errors in its own); ``missing`` says it for a file the repo lacks. None when no
    Hub error is among them."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, GatedRepoError):
            return "the repo is gated and this server has no access to it"
        if isinstance(err, RepositoryNotFoundError):
            return "no such repo on the Hub (or it is private)"
        if isinstance(err, RevisionNotFoundError):
            return "the Hub has no such revision of the repo"
        if isinstance(err, RemoteEntryNotFoundError):
            return missing
        if isinstance(err, (OfflineModeIsEnabled, TransportError, LocalEntryNotFoundError)):
            return "the Hub could not be reached"
        if isinstance(err, HfHubHTTPError):
            status = getattr(getattr(err, "response", None), "status_code", None)
            return f"the Hub answered HTTP {status}; try again later"
        err = err.__cause__ or err.__context__
    return None


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B ({n:,})"


def _raise_hint(n: int) -> str:
    """How the owner of a server would let a model of ``n`` parameters in."""
    return (f"When you host the app yourself, raise the limit with {MAX_PARAMS_ENV} (e.g. {MAX_PARAMS_ENV}="
            f"{math.ceil(n / 1e9)}e9), or run it locally without public mode ({PUBLIC_ENV} and SPACE_ID unset).")


@dataclass(frozen=True)
class HubSize:
    """What ``check_size`` read of a Hub model: parameters by its safetensors headers and by its config.json, and the
    bytes of its weights files (what downloading them takes on disk)."""

    parameters: int
    config_parameters: int
    bytes: int


def check_size(repo_id: str, field: str, disk_bytes: int | None = None,
               weights: Callable[[str], tuple[int, int]] = hub_weights,
               config_count: Callable[[str], int] = hub_config_parameter_count) -> HubSize:
    """The size of the Hub model ``repo_id`` (``HubSize``) when it is within ``PLAYGROUND_MAX_PARAMS`` and the disk
    budget (``disk_bytes``, default ``PLAYGROUND_MAX_DISK_GB``), asked anonymously (``token=False``) before any weight
    is downloaded, in this order: its safetensors headers' parameters and bytes, then the parameters of the model its
    config.json describes (built on the meta device: what ``from_pretrained`` would allocate, whatever the headers
    claim). Over either limit, or when it cannot be sized, ``PublicError``."""
    limit = max_params()
    disk_bytes = max_disk_bytes() if disk_bytes is None else disk_bytes
    try:
        n, size = weights(repo_id, token=False)
    except (NotASafetensorsRepoError, SafetensorsParsingError):
        raise PublicError(
            f"`{field}`: {_typed(repo_id)} cannot be sized: this public server reads a model's parameter count "
            "from its safetensors weights (model.safetensors or model.safetensors.index.json) before downloading "
            "it, and this repo has none it can read. Pick a model with safetensors weights, or run the app "
            "yourself without public mode.") from None
    except Exception as err:  # noqa: BLE001 - the visitor gets our words; the log keeps the error
        log.warning("sizing %r for a visitor failed", repo_id, exc_info=err)
        reason = hub_reason(err) or "the Hub's answer could not be read"
        raise PublicError(f"`{field}`: {_typed(repo_id)} could not be sized before downloading: {reason}.") from None
    if n > limit:
        raise PublicError(
            f"`{field}`: {_typed(repo_id)} has {_count(n)} parameters, above this server's limit of "
            f"{_count(limit)}. " + _raise_hint(n))
    if size + OTHER_FILES_BYTES > disk_bytes:
        raise PublicError(
            f"`{field}`: {_typed(repo_id)} has {size / 1e9:.2f} GB of weights to download (and up to "
            f"{OTHER_FILES_BYTES / 1e9:.2f} GB of configs and tokenizer files), above this server's disk budget of "
            f"{disk_bytes / 1e9:.2f} GB for visitors' models ({MAX_DISK_ENV}).")
    try:
        n_config = config_count(repo_id, token=False)
    except ConfigRefused as err:  # our own words
        raise PublicError(f"`{field}`: {_typed(repo_id)} cannot be sized from its config.json: {err}.") from None
    except Exception as err:  # noqa: BLE001 - the Hub's errors, or transformers' (which may hold a server path)
        log.warning("sizing %r from its config for a visitor failed", repo_id, exc_info=err)
        reason = hub_reason(err, missing="the repo has no config.json")
        if reason is None:
            raise PublicError(f"`{field}`: {_typed(repo_id)} cannot be sized from its config.json: transformers "
                              "cannot build a language model from it.") from None
        raise PublicError(f"`{field}`: {_typed(repo_id)} could not be sized from its config.json: {reason}.") from None
    if n_config > limit:
        raise PublicError(
            f"`{field}`: {_typed(repo_id)} has {_count(n_config)} parameters by its config.json (its safetensors "
            f"weights declare {_count(n)}), above this server's limit of {_count(limit)}. "
            + _raise_hint(n_config))
    return HubSize(n, n_config, size)


def load(models, name: str | None, field: str) -> LoadedModel:
    """The model a visitor asked for in the field ``field`` (a ``model_key``), from the shared ``models`` cache (a
    ``ModelCache``).

    Locally this is ``models.get(name)``, every name ``core.load_model`` takes. In public mode, in this order:
    the name is checked (``check_model_name``; the pinned startup model is allowed), a Hub model not yet
    loaded is sized (``check_size``), then downloaded anonymously into a folder of the cache's own and loaded
    (``ModelCache.get``'s ``download``); a failure is told in our words (``PublicError``). Inside a
    ``Lease.taking()`` the model joins that run's lease."""
    if name is not None and not isinstance(name, str):  # a hand-made call: a list, a number, ...
        raise PublicError(f"`{field}` must be a model's name; got a {type(name).__name__}")
    if not public_mode():
        return models.get(name)
    key = name or DEFAULT_NAME
    pinned = getattr(models, "pinned", None)
    name, dtype = split_key(key)
    served = engine.served()  # the vLLM engine's models (the operator's PLAYGROUND_ENGINE), never sized
    name = check_model_name(name, field, allowed=[*([split_key(pinned)[0]] if pinned else ()), *served])
    key = model_key(name, dtype)
    # without its wheel the default model loads from its Hub id (core.load_model): a visitor's Hub load like others
    hub_id = EMBEDDED_HUB_ID if name == DEFAULT_NAME and name not in available_models() else name
    size = None
    if hub_id not in NAMED_GGUF and name not in served and key != pinned and key not in models.loaded():
        size = check_size(hub_id, field, getattr(models, "disk_bytes", None))
    try:
        # a Hub model a visitor asked for: downloaded anonymously into the cache's own folder, its bytes reserved
        return models.get(key) if size is None else models.get(key, download=size.bytes + OTHER_FILES_BYTES)
    except PublicError:  # already written for visitors (e.g. the cache's "still loading")
        raise
    except Exception as err:  # noqa: BLE001 - transformers' messages carry server paths (the cache folder)
        log.warning("loading %r for a visitor failed", name, exc_info=err)
        reason = (str(err.__cause__) if isinstance(err.__cause__, DownloadTooLarge) else hub_reason(
            err, missing="the repo lacks a file transformers needs (config.json, tokenizer or weights)")
            or "transformers could not load it as a language model with its tokenizer")
        raise PublicError(f"`{field}`: {_typed(name)} could not be loaded: {reason}.") from None
