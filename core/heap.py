"""The process's heap: glibc keeps what a run freed (its KV cache, its records) in its arenas, one per thread that
allocated, so a process that served many runs at once stays at its peak; ``trim_heap`` hands the free part back."""

from __future__ import annotations

import ctypes
import ctypes.util


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # no glibc: nothing to trim
        return None


_LIBC = _libc()


def trim_heap() -> bool:
    """Return the heap's free memory to the system (glibc's ``malloc_trim``); False where there is no glibc."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
