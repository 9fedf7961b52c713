"""Process-wide model cache: a resource cache shared by all sessions, not per-session state.

Each session keeps only the *name* of its model in a ``gr.State``; the weights live here once,
keyed by that name, so two users on the same model share it and loading one model never blocks
generation on another (each name has its own lock; the dict itself is guarded only briefly).

Memory is bounded by ``capacity`` (``PLAYGROUND_MAX_MODELS``, default 2): room is made *before* a load, by
dropping the least recently used model (never the pinned startup one), so that a new model never sits in
memory beside ``capacity`` others. The cache then holds no reference to the dropped model: it is freed as
soon as the sessions still generating with it finish (a session that comes back to it loads it again).
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import core
from core.models import DEFAULT_NAME, LoadedModel

from . import engine
from .policy import PublicError, max_models, split_key

LOAD_WAIT_S = 120.0  # how long a visitor waits for another visitor's load of the same model


class ModelBusy(PublicError):
    """The cache cannot serve a model now (another visitor is loading it, or every slot is taken); try again."""


class ModelCache:
    """At most ``capacity`` loaded models (default: ``PLAYGROUND_MAX_MODELS``), least recently used evicted
    first (the pinned one never). A load waits at most ``wait_s`` for another load of the same name."""

    def __init__(self, capacity: int | None = None, loader=core.load_model, wait_s: float = LOAD_WAIT_S):
        self.capacity = max_models() if capacity is None else capacity
        self.loader = loader
        self.wait_s = wait_s
        self.pinned: str | None = None
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: set[str] = set()  # names being loaded now: each has a slot reserved
        self._locks: dict[str, threading.Lock] = {}
        # held only for a few dict operations, never across a load: acquiring it cannot wait long
        self._guard = threading.Lock()

    def get(self, name: str | None) -> LoadedModel:
        """The model called ``name`` (``None``: the embedded default; a ``policy.model_key`` such as
        ``name@bfloat16`` loads it in that precision), loading it on first use. Raises ``ModelBusy`` when another
        load of ``name`` takes longer than ``wait_s``, or when no slot can be freed."""
        key = name or DEFAULT_NAME
        with self._guard:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            lock = self._locks.setdefault(key, threading.Lock())
        # one load per name; other names load or generate meanwhile
        if not lock.acquire(timeout=self.wait_s):
            raise ModelBusy(f"model {key!r} is still loading for another visitor; try again in a moment")
        try:
            with self._guard:
                if key in self._models:  # the load we waited for
                    self._models.move_to_end(key)
                    return self._models[key]
                evicted = self._make_room(key)
                self._loading.add(key)
            if evicted:
                gc.collect()  # free the dropped weights now (if no session uses them), before new ones arrive
            try:
                loaded = self._load(key)
            finally:
                with self._guard:
                    self._loading.discard(key)
            with self._guard:
                self._models[key] = loaded  # its slot was reserved by _make_room
            return loaded
        finally:
            lock.release()

    def _load(self, key: str) -> LoadedModel:
        """``loader(name)``, or ``loader(name, dtype=...)`` for a key that names a precision."""
        name, dtype = split_key(key)
        if name in engine.served():  # served by the vLLM engine: nothing loads here, in any precision
            return engine.load(name)
        name = None if name == DEFAULT_NAME else name
        return self.loader(name) if dtype is None else self.loader(name, dtype=dtype)

    def pin(self, name: str) -> None:
        """Keep ``name`` (the startup model) loaded whatever else is loaded later."""
        self.pinned = name

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._models)

    def _make_room(self, key: str) -> int:
        """Evict (under the guard) so that the loaded models, the loads in flight and ``key`` fit in ``capacity``;
        returns how many were evicted. ``ModelBusy`` when nothing more can go (pinned, or still loading)."""
        excess = len(self._models) + len(self._loading) + 1 - self.capacity
        evicted = self._evict(excess)
        if evicted < excess:
            raise ModelBusy(
                f"model {key!r} cannot be loaded now: this server keeps at most {self.capacity} models loaded "
                f"(PLAYGROUND_MAX_MODELS) and none can be unloaded (the startup model stays; others are still "
                "loading); try again in a moment")
        return evicted

    def _evict(self, count: int) -> int:
        """Drop up to ``count`` least recently used models other than the pinned one; returns how many went."""
        evicted = 0
        while evicted < count:
            victim = next((k for k in self._models if k != self.pinned), None)
            if victim is None:
                break
            del self._models[victim]
            evicted += 1
        return evicted


MODELS = ModelCache()
