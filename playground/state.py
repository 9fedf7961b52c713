"""Process-wide model cache: a resource cache shared by all sessions, not per-session state.

Each session keeps only the *name* of its model in a ``gr.State``; the weights live here once,
keyed by that name, so two users on the same model share it and loading one model never blocks
generation on another (each name has its own lock; the dict itself is guarded only briefly).

Memory is bounded by ``capacity`` (``PLAYGROUND_MAX_MODELS``, default 2): room is made *before* a load, by
dropping the least recently used model that no run is using (never the pinned startup one), so that a new model
never sits in memory beside ``capacity`` others. A run holds the models it uses for its whole length (a ``Lease``,
taken as ``get`` returns them, so that no eviction comes in between); when every slot is pinned, in use or loading,
a load is refused (``ModelBusy``), never waited for without end. A session that comes back to an evicted model loads
it again.

Disk: a visitor's Hub model (``get(key, download=bytes)``) is downloaded anonymously (``token=False``) into
a folder of its own under the cache's download root, and that folder is deleted when the model is evicted (or its
load fails). Those folders together stay within ``disk_bytes`` (``PLAYGROUND_MAX_DISK_GB``): room on disk is made as
room in memory is, by evicting idle visitors' models.
"""

from __future__ import annotations

import contextvars
import gc
import re
import shutil
import tempfile
import threading
import weakref
from collections import Counter, OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import core
from core.models import DEFAULT_NAME, LoadedModel

from . import engine
from .policy import MAX_DISK_ENV, PublicError, max_disk_bytes, max_models, split_key

LOAD_WAIT_S = 120.0  # how long a visitor waits for another visitor's load of the same model


class ModelBusy(PublicError):
    """The cache cannot serve a model now (another visitor is loading it, or every slot is taken); try again."""


class Lease:
    """The models one run uses (``ModelCache.lease``): none of them is evicted until the lease ends. Models join it as
    ``get`` returns them inside ``taking()``; ``release`` (or leaving its ``with``) lets them go, once."""

    def __init__(self, cache: "ModelCache"):
        self.cache = cache
        self.keys: list[str] = []

    @contextmanager
    def taking(self) -> Iterator["Lease"]:
        """Every model ``cache.get`` returns in this block joins the lease. Set for one stretch of code with no
        ``yield`` in it: a generator's steps may run in different threads and contexts."""
        token = _TAKING.set(self)
        try:
            yield self
        finally:
            _TAKING.reset(token)

    def release(self) -> None:
        self.cache._release(self)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_TAKING: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("playground_lease", default=None)


# the key each loaded model was loaded under, for a run that names a model among its settings (the engine process
# loads ``assistant_model`` by it): written once per load, never changed
KEYS: "weakref.WeakKeyDictionary[object, str]" = weakref.WeakKeyDictionary()


class ModelCache:
    """At most ``capacity`` loaded models (default: ``PLAYGROUND_MAX_MODELS``), least recently used evicted
    first (the pinned one never). A load waits at most ``wait_s`` for another load of the same name."""

    def __init__(self, capacity: int | None = None, loader=core.load_model, wait_s: float = LOAD_WAIT_S,
                 disk_bytes: int | None = None, downloads: str | Path | None = None):
        self.capacity = max_models() if capacity is None else capacity
        self.disk_bytes = max_disk_bytes() if disk_bytes is None else disk_bytes
        self.loader = loader
        self.wait_s = wait_s
        self.pinned: str | None = None
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: set[str] = set()  # names being loaded now: each has a slot reserved
        self._locks: dict[str, threading.Lock] = {}
        self._users: Counter[str] = Counter()  # runs using each key now (their leases)
        self._folders: dict[str, tuple[Path, int]] = {}  # a visitor's download: its folder and bytes reserved
        self._root = Path(downloads) if downloads is not None else None  # made on the first download
        # held only for a few dict operations, never across a load: acquiring it cannot wait long
        self._guard = threading.Lock()

    def lease(self) -> Lease:
        """A run's hold on the models it uses (``Lease``): ``with models.lease() as lease:``, its loads inside
        ``with lease.taking():``."""
        return Lease(self)

    def get(self, name: str | None, download: int | None = None) -> LoadedModel:
        """The model called ``name`` (``None``: the embedded default; a ``policy.model_key`` such as
        ``name@bfloat16`` loads it in that precision), loading it on first use. ``download``: a visitor's Hub model
        whose weights take that many bytes, fetched anonymously into a folder of its own that goes when the model
        does. Inside a ``Lease.taking()`` the model joins that lease. Raises ``ModelBusy`` when another load of
        ``name`` takes longer than ``wait_s``, or when no slot (or room on disk) can be freed."""
        key = name or DEFAULT_NAME
        with self._guard:
            if key in self._models:
                return self._served(key)
            lock = self._locks.setdefault(key, threading.Lock())
        # one load per name; other names load or generate meanwhile
        if not lock.acquire(timeout=self.wait_s):
            raise ModelBusy(f"model {key!r} is still loading for another visitor; try again in a moment")
        try:
            with self._guard:
                if key in self._models:  # the load we waited for
                    return self._served(key)
                dropped = self._make_room(key, download or 0)
                self._loading.add(key)
                folder = self._reserve(key, download) if download is not None else None
            if dropped:
                gc.collect()  # free the dropped weights now (if no session uses them), before new ones arrive
                for path in filter(None, dropped):
                    shutil.rmtree(path, ignore_errors=True)
            loaded = None
            try:
                loaded = self._load(key, folder)
            finally:
                with self._guard:
                    self._loading.discard(key)
                    if loaded is None:
                        self._folders.pop(key, None)
                    else:
                        self._models[key] = loaded  # its slot was reserved by _make_room
                        KEYS[loaded.model] = key
                if loaded is None and folder is not None:  # a failed load leaves nothing on disk
                    shutil.rmtree(folder, ignore_errors=True)
            with self._guard:
                return self._served(key) if key in self._models else loaded
        finally:
            lock.release()

    def _served(self, key: str) -> LoadedModel:
        """``key``'s model (under the guard), now the most recently used, held by the lease being taken if any."""
        self._models.move_to_end(key)
        lease = _TAKING.get()
        if lease is not None and lease.cache is self:
            self._users[key] += 1
            lease.keys.append(key)
        return self._models[key]

    def _release(self, lease: Lease) -> None:
        with self._guard:
            for key in lease.keys:
                self._users[key] -= 1
                if self._users[key] <= 0:
                    del self._users[key]
            lease.keys.clear()

    def in_use(self) -> dict[str, int]:
        """How many runs use each model now."""
        with self._guard:
            return dict(self._users)

    def _reserve(self, key: str, size: int) -> Path:
        """A new folder for ``key``'s download, its ``size`` counted against the disk budget (under the guard)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="playground-downloads-"))
            # the folders go with the process, also when it ends with models still loaded
            weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        self._root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=re.sub(r"[^\w.-]", "--", key)[:80] + "-", dir=self._root))
        self._folders[key] = (folder, size)
        return folder

    def download_folder(self, key: str) -> Path | None:
        """Where a visitor's download of ``key`` lies (None: not a visitor's download, or gone)."""
        with self._guard:
            entry = self._folders.get(key)
        return entry[0] if entry else None

    def _load(self, key: str, folder: Path | None = None) -> LoadedModel:
        """``loader(name)``, with ``dtype=...`` for a key that names a precision; a visitor's download (``folder``)
        also ``token=False`` (never the server's HF_TOKEN), ``cache_dir=folder`` and ``max_bytes``, its reservation."""
        name, dtype = split_key(key)
        if name in engine.served():  # served by the vLLM engine: nothing loads here, in any precision
            return engine.load(name)
        name = None if name == DEFAULT_NAME else name
        kwargs = {} if dtype is None else {"dtype": dtype}
        if folder is not None:
            kwargs.update(token=False, cache_dir=str(folder), max_bytes=self._folders[key][1])
        return self.loader(name, **kwargs)

    def pin(self, name: str) -> None:
        """Keep ``name`` (the startup model) loaded whatever else is loaded later."""
        self.pinned = name

    def loaded(self) -> list[str]:
        with self._guard:
            return list(self._models)

    def _make_room(self, key: str, size: int = 0) -> list[Path | None]:
        """Evict (under the guard) so that the loaded models, the loads in flight and ``key`` fit in ``capacity``, and
        its ``size`` bytes of download in ``disk_bytes``; returns each evicted model's download folder (None: not a
        visitor's download), to delete once the guard is let go. ``ModelBusy``, with nothing evicted, when not enough
        can go (pinned, in use by a run, or still loading)."""
        idle = [k for k in self._models if k != self.pinned and not self._users[k]]  # least recently used first
        excess = len(self._models) + len(self._loading) + 1 - self.capacity
        victims = idle[:max(excess, 0)]
        disk = self._disk_used() - sum(self._folders.get(k, (None, 0))[1] for k in victims)
        for k in idle[len(victims):]:  # more idle downloads go while this one does not fit
            if not size or disk + size <= self.disk_bytes:
                break
            if k not in self._folders:  # an operator's model takes no room in the budget
                continue
            victims.append(k)
            disk -= self._folders.get(k, (None, 0))[1]
        if len(victims) < excess:
            used = sum(1 for k in self._models if self._users[k])
            raise ModelBusy(
                f"model {key!r} cannot be loaded now: this server keeps at most {self.capacity} models loaded "
                f"(PLAYGROUND_MAX_MODELS) and is busy with {used + len(self._loading)} models in use ({used} used by "
                f"running generations, {len(self._loading)} still loading; the startup model stays); try again later")
        if size and disk + size > self.disk_bytes:
            raise ModelBusy(
                f"model {key!r} cannot be loaded now: its download takes up to {size / 1e9:.2f} GB and the disk budget "
                f"of visitors' downloads ({MAX_DISK_ENV}, {self.disk_bytes / 1e9:.2f} GB) has "
                f"{max(self.disk_bytes - disk, 0) / 1e9:.2f} GB free while the models holding the rest are in use; "
                "try again later")
        folders = []
        for victim in victims:
            del self._models[victim]
            folders.append(self._folders.pop(victim, (None, 0))[0])
        return folders

    def _disk_used(self) -> int:
        """Bytes reserved by visitors' downloads, loaded or loading (under the guard)."""
        return sum(size for _, size in self._folders.values())


MODELS = ModelCache()
