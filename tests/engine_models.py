"""Models the engine process of the tests loads by key (``core.engine.process.EngineProcess(loader=...)``)."""

from __future__ import annotations

import threading
import time

from core.models import LoadedModel, ModelShape

from conftest import tiny_llama

_LOADED: dict[str, LoadedModel] = {}
_LOCK = threading.Lock()  # one load at a time: each seeds torch's global generator, as a model cache's lock would


def load(key: str) -> LoadedModel:
    """``tiny:<seed>``: ``conftest.tiny_llama(seed)``; ``stuck``: one whose forwards past the prefill never return, as
    a call nothing can interrupt."""
    with _LOCK:
        return _load(key)


def _load(key: str) -> LoadedModel:
    if key not in _LOADED:
        kind, _, seed = key.partition(":")
        model = tiny_llama(int(seed or 0))
        if kind == "stuck":
            def hang(module, args, kwargs):
                if kwargs.get("input_ids") is not None and kwargs["input_ids"].shape[1] == 1:
                    time.sleep(3600)
            model.register_forward_pre_hook(hang, with_kwargs=True)
        elif kind != "tiny":
            raise ValueError(f"no test model {key!r}")
        _LOADED[key] = LoadedModel(model, None, key)
    return _LOADED[key]


def _count(n: int, progress) -> int:
    for i in range(n):
        progress(i)
    return n


def _fail(words: str, progress) -> None:
    raise ValueError(words)


def _wait(seconds: float, progress) -> None:
    progress("waiting")
    time.sleep(seconds)


# what the page may ``call`` in the tests' engine
CALLS = {"describe": lambda key, progress: ModelShape.of(load(key)), "count": _count, "fail": _fail, "wait": _wait}
