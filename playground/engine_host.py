"""The app's engine process (``core.engine.process``): ``python app.py`` starts one (``policy.engine_process()``,
on by default) that owns the models' runs, and every run of the page on a local model goes there
(``runs.stream_run`` -> ``stream``). The page holds no weights: its model cache loads each model as the engine's
description of it (``page_loader``: a ``core.models.ModelShape``, the model built on the meta device for its config and
modules, with its tokenizer), and an attribution, which needs gradients, is made in the engine (``attribute``).

In the engine, a model is loaded by the key the page's cache holds it under (``policy.load``: public mode's names,
sizes and anonymous downloads alike), in a cache of the engine's own. Not on a ZeroGPU Space: there a run must run in
``spaces``' GPU worker (``playground.zerogpu``).

``ENGINE`` is set once, at start-up, and read by every session; the process behind it is the server's, not a
session's.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch

import core
from core import attribution
from core import scheduler as step_scheduler
from core.engine.process import EngineProcess, ModelRef
from core.models import LoadedModel, ModelShape

from . import policy, state, zerogpu

LOADER = "playground.engine_host:load"
CALLS = "playground.engine_host:ENGINE_CALLS"
LEASE = "playground.engine_host:lease"
DESCRIBE_WAIT_S = 900.0  # how long the page waits for the engine to load a model it asks about (downloads included)
ENGINE: EngineProcess | None = None
_MODELS: state.ModelCache | None = None  # the engine process's own cache
_MODELS_LOCK = threading.Lock()


# --- the page's side -----------------------------------------------------------------------------------------------
def start(warm: tuple[str, ...] = (), threads: int | None = None) -> EngineProcess | None:
    """Start the engine process when the policy says so (and not on ZeroGPU); ``warm``: model keys it loads first and
    keeps, as the page's cache keeps its pinned startup model."""
    global ENGINE
    if not policy.engine_process() or zerogpu.on_zerogpu():
        return None
    ENGINE = EngineProcess(LOADER, threads=policy.torch_threads() if threads is None else threads,
                           exact=policy.exact_batch(), calls=CALLS, lease=LEASE)
    ENGINE.start()
    for key in warm:  # the page goes on building meanwhile; its first description of the model waits for the load
        threading.Thread(target=_pin, args=(key,), name="engine-warm", daemon=True).start()
    return ENGINE


def _pin(key: str) -> None:
    try:
        ENGINE.call("pin", key, wait_s=DESCRIBE_WAIT_S)
    except Exception:  # noqa: BLE001 - the page's own load of it says what went wrong
        pass


def page_loader() -> Callable[..., LoadedModel]:
    """The page's model cache's loader: with the engine running, the engine's description of each model (``describe``,
    the page holding no weights); without it, ``core.load_model``."""
    return _described if ENGINE is not None else core.load_model


def _described(name: str | None = None, dtype: str | None = None, **_download) -> LoadedModel:
    # a visitor's download (``_download``) is the engine's: its own cache sizes, fetches and deletes it
    return ENGINE.call("describe", policy.model_key(name, dtype), wait_s=DESCRIBE_WAIT_S).weightless()


def stream(loaded: LoadedModel, input_ids, **kwargs) -> Iterator:
    """``core.stream``'s events of a run of ``loaded`` made in the engine process; a model among the settings goes
    by its key."""
    settings = {name: ModelRef(state.KEYS[value]) if isinstance(value, torch.nn.Module) else value
                for name, value in kwargs.items()}
    return ENGINE.stream(_key(loaded), input_ids, **settings)


def attribute(loaded: LoadedModel, ids: list[int], target: int, *, steps: int, deadline: float, prompt_tokens: int,
              progress: Callable[[float], None]) -> attribution.Attribution:
    """``core.attribution.attribute`` of every method for ``loaded``'s step, where the weights are: in the engine
    process when it runs (the page's model has none); here otherwise, seated at the model's step scheduler, so that
    each of its forwards goes between the runs' batched steps, never beside one."""
    if ENGINE is not None:
        return ENGINE.call("attribute", _key(loaded), ids, target, steps=steps, deadline_at=deadline,
                           prompt_tokens=prompt_tokens, deadline=deadline, progress=progress)
    seated = step_scheduler.shared(loaded.model).seat(deadline) if policy.shared_forward() \
        else contextlib.nullcontext()
    with seated:
        return _attributed(loaded, ids, target, steps=steps, deadline=deadline, prompt_tokens=prompt_tokens,
                           progress=progress)


def _attributed(loaded: LoadedModel, ids: list[int], target: int, **kwargs) -> attribution.Attribution:
    return attribution.attribute(loaded.model, loaded.tokenizer, ids, target, "all", **kwargs)


def _key(loaded: LoadedModel) -> str:
    return state.KEYS.get(loaded.model) or policy.model_key(loaded.name, loaded.dtype)


# --- in the engine process -----------------------------------------------------------------------------------------
def _models() -> state.ModelCache:
    global _MODELS
    with _MODELS_LOCK:  # the first run and the first call may ask at once
        if _MODELS is None:
            _MODELS = state.ModelCache(policy.max_models())
        return _MODELS


def load(key: str) -> LoadedModel:
    """The model keyed ``key``, loaded as the page loads it (joining the lease being taken)."""
    return policy.load(_models(), key, "model")


@contextlib.contextmanager
def lease() -> Iterator[None]:
    """What a run or a call is made in: the models it loads stay loaded until it ends."""
    with _models().lease() as held, held.taking():
        yield


def pin(key: str, progress=None) -> None:
    """Load ``key`` and keep it loaded whatever else is (the startup model)."""
    load(key)
    _models().pin(key)


def describe(key: str, progress=None) -> ModelShape:
    """The model keyed ``key`` (loaded here, as a run would load it) without its weights."""
    return ModelShape.of(load(key))


def attribute_here(key: str, ids: list[int], target: int, *, steps: int, deadline_at: float, prompt_tokens: int,
                   progress) -> attribution.Attribution:
    """``attribute`` of the model keyed ``key``, beside the loop's runs (it writes nothing on the model, and the loop's
    pre-forward hook passes over any thread but the loop's)."""
    return _attributed(load(key), ids, target, steps=steps, deadline=deadline_at, prompt_tokens=prompt_tokens,
                       progress=progress)


def models(progress=None) -> dict:
    """Its cache's models, those runs hold now and the pinned one."""
    cache = _models()
    return {"loaded": cache.loaded(), "in_use": cache.in_use(), "pinned": cache.pinned}


# what the page may ``call`` (``EngineProcess.call``), by name
ENGINE_CALLS = {"describe": describe, "attribute": attribute_here, "pin": pin, "models": models}
