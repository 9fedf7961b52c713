"""The app's engine process (``core.engine.process``): ``python app.py`` starts one (``policy.engine_process()``,
on by default) that owns the models' runs, and every run of the page on a local model goes there
(``runs.stream_run`` -> ``stream``); the page keeps its own copy of each model for what it reads in-process (the
tokenizer, the config, attribution).

In the engine, a model is loaded by the key the page's cache holds it under (``policy.load``: public mode's names,
sizes and anonymous downloads alike), in a cache of the engine's own. Not on a ZeroGPU Space: there a run must run in
``spaces``' GPU worker (``playground.zerogpu``).

``ENGINE`` is set once, at start-up, and read by every session; the process behind it is the server's, not a
session's.
"""

from __future__ import annotations

from typing import Iterator

import torch

from core.engine.process import EngineProcess, ModelRef
from core.models import LoadedModel

from . import policy, state, zerogpu

LOADER = "playground.engine_host:load"
ENGINE: EngineProcess | None = None
_MODELS: state.ModelCache | None = None  # the engine process's own cache


def start(warm: tuple[str, ...] = (), threads: int | None = None) -> EngineProcess | None:
    """Start the engine process when the policy says so (and not on ZeroGPU); ``warm``: model keys it loads first."""
    global ENGINE
    if not policy.engine_process() or zerogpu.on_zerogpu():
        return None
    ENGINE = EngineProcess(LOADER, threads=policy.torch_threads() if threads is None else threads, warm=warm,
                           exact=policy.exact_batch())
    ENGINE.start()
    return ENGINE


def load(key: str) -> LoadedModel:
    """In the engine process: the model keyed ``key``, loaded as the page loads it."""
    global _MODELS
    if _MODELS is None:
        _MODELS = state.ModelCache(policy.max_models())
    return policy.load(_MODELS, key, "model")


def stream(loaded: LoadedModel, input_ids, **kwargs) -> Iterator:
    """``core.stream``'s events of a run of ``loaded`` made in the engine process; a model among the settings goes
    by its key."""
    settings = {name: ModelRef(state.KEYS[value]) if isinstance(value, torch.nn.Module) else value
                for name, value in kwargs.items()}
    key = state.KEYS.get(loaded.model) or policy.model_key(loaded.name, loaded.dtype)  # one from the cache has its own
    return ENGINE.stream(key, input_ids, **settings)
