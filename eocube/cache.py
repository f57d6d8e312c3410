"""A bounded, thread-safe cache of decoded chunks, shared by every reader of a process.

Windows of a training set and the tasks of a dask graph often touch the same stored
chunk: decoding it is what costs, so the decoded block is kept (least recently used
first out, within a byte budget) and concurrent requests for a chunk being decoded wait
for that one decode instead of starting their own.

Entries are keyed by the reader that decoded them (:class:`eocube.reader.ChunkReader`,
one per variable of an opened dataset) and the chunk's grid position. A reader reads
the store as it was when the dataset was opened, so a store rewritten later and opened
again gets a new reader and never sees the old values. A chunk whose decoding failed is
never cached: its error is raised again to whoever asks next. Cached blocks are
read-only; readers copy the values they return.

The budget is :data:`DEFAULT_MAX_BYTES` unless the environment variable
``EOCUBE_CACHE_BYTES`` says otherwise (0 turns caching off), and can be changed at run
time with :func:`set_max_bytes`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future

import numpy as np

DEFAULT_MAX_BYTES = 256 * 2**20
"""Bytes of decoded chunks a process keeps by default: about six default chunks of ten
uint16 bands (32 x 10 x 256 x 256), or a few hundred of the 64 x 64 chunks of small
training cubes. DataLoader workers each keep their own."""

ENVIRONMENT_VARIABLE = "EOCUBE_CACHE_BYTES"


def _initial_max_bytes() -> int:
    value = os.environ.get(ENVIRONMENT_VARIABLE)
    if value is None or not value.strip():
        return DEFAULT_MAX_BYTES
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(
            f"{ENVIRONMENT_VARIABLE}={value!r} is not a number of bytes (0 turns the "
            f"decoded-chunk cache off)"
        ) from None
    if limit < 0:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={value!r} must not be negative")
    return limit


class ChunkCache:
    """Least-recently-used decoded chunks within a byte budget, with single-flight loads.

    Parameters
    ----------
    max_bytes : int
        Budget in bytes; 0 keeps nothing (every request decodes, concurrent requests
        for the same chunk still share one decode).
    """

    def __init__(self, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._loading: dict[Hashable, Future[np.ndarray]] = {}
        self._nbytes = 0
        self.max_bytes = max(0, int(max_bytes))
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, load: Callable[[], np.ndarray]) -> np.ndarray:
        """The block cached under ``key``, or ``load()``'s result, cached if it fits.

        While one thread loads a key, others asking for it wait for that result (or its
        exception) rather than loading it again. The block returned is read-only.
        """
        with self._lock:
            block = self._hit(key)
            if block is not None:
                return block
            self.misses += 1
            pending = self._loading.get(key)
            leader = pending is None
            if pending is None:
                pending = self._loading[key] = Future()
        if not leader:
            return pending.result()
        try:
            block = load()
            block.setflags(write=False)
        except BaseException as exc:
            with self._lock:
                del self._loading[key]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._loading[key]
            self._put(key, block)
        pending.set_result(block)
        return block

    def peek(self, key: Hashable) -> np.ndarray | None:
        """The block cached under ``key`` (read-only), or None; loads nothing."""
        with self._lock:
            return self._hit(key)

    def _hit(self, key: Hashable) -> np.ndarray | None:
        block = self._entries.get(key)
        if block is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return block

    def _put(self, key: Hashable, block: np.ndarray) -> None:
        if block.nbytes > self.max_bytes:
            return
        self._entries[key] = block
        self._nbytes += block.nbytes
        self._shrink(self.max_bytes)

    def _shrink(self, limit: int) -> None:
        while self._nbytes > limit and self._entries:
            _, old = self._entries.popitem(last=False)
            self._nbytes -= old.nbytes

    def resize(self, max_bytes: int) -> None:
        """Change the budget, dropping the least recently used blocks beyond it."""
        with self._lock:
            self.max_bytes = max(0, int(max_bytes))
            self._shrink(self.max_bytes)

    def clear(self) -> None:
        """Drop every block (and reset the hit and miss counts)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0
            self.hits = self.misses = 0


CHUNKS = ChunkCache(_initial_max_bytes())
"""The process's cache of decoded chunks, shared by all readers."""


def set_max_bytes(max_bytes: int) -> None:
    """Set the byte budget of the process's decoded-chunk cache (0 turns it off).

    Examples
    --------
    >>> import eocube.cache
    >>> eocube.cache.set_max_bytes(1 << 30)  # keep up to 1 GiB of decoded chunks
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
    CHUNKS.resize(max_bytes)
