"""Process-wide model cache: a resource cache shared by all sessions, not per-session state.

Each session keeps only the *name* of its model in a ``gr.State``; the weights live here once,
keyed by that name, so two users on the same model share it and loading one model never blocks
generation on another (each name has its own lock; the dict itself is guarded only briefly).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import core
from core.models import DEFAULT_NAME, LoadedModel


class ModelCache:
    """At most ``capacity`` loaded models, least recently used evicted first (the pinned one never)."""

    def __init__(self, capacity: int = 3, loader=core.load_model):
        self.capacity = capacity
        self.loader = loader
        self.pinned: str | None = None
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str | None) -> LoadedModel:
        """The model called ``name`` (``None``: the embedded default), loading it on first use."""
        key = name or DEFAULT_NAME
        with self._guard:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one load per name; other names load or generate meanwhile
            with self._guard:
                if key in self._models:
                    return self._models[key]
            loaded = self.loader(None if key == DEFAULT_NAME else key)
            with self._guard:
                self._models[key] = loaded
                self._evict()
            return loaded

    def pin(self, name: str) -> None:
        """Keep ``name`` (the startup model) loaded whatever else is loaded later."""
        self.pinned = name

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._models)

    def _evict(self) -> None:
        while len(self._models) > self.capacity:
            victim = next((k for k in self._models if k != self.pinned), None)
            if victim is None:
                return
            del self._models[victim]


MODELS = ModelCache()
