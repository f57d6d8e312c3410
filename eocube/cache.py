"""The reader's bounded caches: decoded chunks in memory, fetched byte blocks on disk.

:class:`ChunkCache` (the process's :data:`CHUNKS`) keeps decoded chunks in memory, shared
by every reader of a process. :class:`DiskBlockCache` keeps aligned byte blocks of remote
objects in a local folder, shared by every process that names it (``hf://`` reads with
``storage_options={"cache_storage": ...}``, :mod:`eocube.hubfs`). Both drop the least
recently used entries first, within a byte budget.

Decoded chunks
--------------

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

Byte blocks on disk
-------------------
A block is a file ``<folder>/<digest of the object's key>/<block index>``, written
atomically (a reader never sees half a block). Reading a block sets its modification
time to now, so modification times order blocks by last access: when the folder outgrows
its budget, the blocks read longest ago are deleted until it holds
:data:`DISK_LOW_WATER` of the budget. The budget is :data:`DEFAULT_DISK_MAX_BYTES`
unless ``EOCUBE_BLOCK_CACHE_BYTES`` or the ``max_bytes`` argument says otherwise (0:
nothing is kept). Processes sharing a folder each evict by what they find there; the
folder can go over its budget by what the others wrote since they last looked.
Evictions are logged on the ``eocube.cache`` logger at DEBUG.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 2**20
"""Bytes of decoded chunks a process keeps by default: about six default chunks of ten
uint16 bands (32 x 10 x 256 x 256), or a few hundred of the 64 x 64 chunks of small
training cubes. DataLoader workers each keep their own."""

ENVIRONMENT_VARIABLE = "EOCUBE_CACHE_BYTES"

DEFAULT_DISK_MAX_BYTES = 10 * 2**30
"""Bytes of fetched blocks a cache folder keeps by default: room for every shard a
training run reads from a release of tens of thousands of small cubes (a 118-date, 4-band
64 x 64 px Sentinel-2 cube is 0.24 MB at 1 bpppb), yet bounded, so that streaming a
release larger than the disk does not fill it."""

DISK_ENVIRONMENT_VARIABLE = "EOCUBE_BLOCK_CACHE_BYTES"

DISK_LOW_WATER = 0.9
"""Fraction of its budget a cache folder is brought down to when it outgrows it: the
folder is then scanned again only after a tenth of the budget was written."""

_TEMPORARY = ".part-"


def budget_from_environment(variable: str, default: int, what: str) -> int:
    """The byte budget that environment variable ``variable`` sets, or ``default``.

    Parameters
    ----------
    variable : str
        The variable's name.
    default : int
        The budget when the variable is unset or blank.
    what : str
        What the budget is of, for error messages.

    Raises
    ------
    ValueError
        When the value is not a number of bytes, or is negative.
    """
    value = os.environ.get(variable)
    if value is None or not value.strip():
        return default
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(
            f"{variable}={value!r} is not a number of bytes (0 turns the {what} off)"
        ) from None
    if limit < 0:
        raise ValueError(f"{variable}={value!r} must not be negative")
    return limit


def _initial_max_bytes() -> int:
    return budget_from_environment(ENVIRONMENT_VARIABLE, DEFAULT_MAX_BYTES, "decoded-chunk cache")


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


@dataclass(frozen=True)
class _Block:
    path: str
    nbytes: int
    used_ns: int  # modification time: the last write or read


class DiskBlockCache:
    """Byte blocks of remote objects kept in a local folder, within a byte budget.

    Thread-safe; several processes may share the folder (see the module's notes).

    Parameters
    ----------
    folder : str or os.PathLike
        Where the blocks live (created when needed).
    max_bytes : int, optional
        Budget in bytes; 0 keeps nothing. Default: ``EOCUBE_BLOCK_CACHE_BYTES``, or
        :data:`DEFAULT_DISK_MAX_BYTES`.

    Examples
    --------
    >>> import tempfile
    >>> blocks = DiskBlockCache(tempfile.mkdtemp(), max_bytes=2**20)
    >>> blocks.put("hf://datasets/org/repo@main/cube.eocube/zarr.json", 0, b"{}")
    >>> blocks.get("hf://datasets/org/repo@main/cube.eocube/zarr.json", 0)
    b'{}'
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if max_bytes is None:
            max_bytes = budget_from_environment(
                DISK_ENVIRONMENT_VARIABLE, DEFAULT_DISK_MAX_BYTES, "block cache"
            )
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.folder = os.fspath(folder)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._nbytes: int | None = None  # what the folder holds, as last seen plus written

    def _path(self, key: str, index: int) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:40]
        return os.path.join(self.folder, digest, str(index))

    def get(self, key: str, index: int) -> bytes | None:
        """Block ``index`` of object ``key``, or None when the folder does not hold it."""
        path = self._path(key, index)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # never written, or evicted (by any process)
            return None
        with contextlib.suppress(FileNotFoundError):  # evicted since: the bytes are good
            _touch(path)
        return data

    def put(self, key: str, index: int, data: bytes) -> None:
        """Keep ``data`` as block ``index`` of object ``key``, evicting others if needed."""
        if len(data) > self.max_bytes:
            return
        _write_atomic(self._path(key, index), data)
        with self._lock:
            if self._nbytes is None:
                self._nbytes = sum(b.nbytes for b in self.blocks())
            else:
                self._nbytes += len(data)
            if self._nbytes > self.max_bytes:
                self._nbytes = self._evict(int(self.max_bytes * DISK_LOW_WATER))

    def blocks(self) -> list[_Block]:
        """Every block in the folder, least recently used first."""
        found = []
        try:
            objects = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        for obj in objects:
            try:
                entries = list(os.scandir(obj.path)) if obj.is_dir() else []
            except FileNotFoundError:  # emptied and removed by another process
                continue
            for entry in entries:
                if entry.name.startswith(_TEMPORARY):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                found.append(_Block(entry.path, stat.st_size, stat.st_mtime_ns))
        found.sort(key=lambda b: (b.used_ns, b.path))
        return found

    @property
    def nbytes(self) -> int:
        """Bytes of blocks in the folder now (a scan)."""
        return sum(b.nbytes for b in self.blocks())

    def _evict(self, limit: int) -> int:
        """Delete the least recently used blocks until at most ``limit`` bytes are left;
        return the bytes left."""
        blocks = self.blocks()
        found = total = sum(b.nbytes for b in blocks)
        emptied = set()
        evicted = 0
        for block in blocks:
            if total <= limit:
                break
            with contextlib.suppress(FileNotFoundError):  # another process evicted it
                os.remove(block.path)
            total -= block.nbytes
            evicted += 1
            emptied.add(os.path.dirname(block.path))
        for folder in emptied:
            with contextlib.suppress(OSError):  # not empty: other blocks of the object stay
                os.rmdir(folder)
        logger.debug(
            "block cache %s held %d bytes (budget %d): evicted %d blocks, %d bytes left",
            self.folder,
            found,
            self.max_bytes,
            evicted,
            total,
        )
        return total


def _touch(path: str) -> None:
    """Mark ``path`` used now: its modification time, to the nanosecond (the file
    system's own timestamps are coarser, and access times are often not kept)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    for attempt in range(3):
        # an eviction (any thread or process) may remove the folder once it is empty,
        # between any two of these calls: make it again and retry
        with contextlib.suppress(FileExistsError):
            os.makedirs(folder)
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=_TEMPORARY)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
            logger.debug("block cache folder %s was evicted meanwhile, made again", folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    _touch(tmp)
    os.replace(tmp, path)
