"""Packed stores: a finished eocube store as one ZIP file (``*.zip``, e.g. ``cube.eocube.zip``).

A folder store is the form eocube writes, appends to and resumes; a packed store is the
form to publish many small cubes in: one object per cube on the hub or an object store,
and fewer bytes. Its ZIP entries are the folder's objects under the same keys
(docs/format.md, "Packed stores"): the ``zarr.json`` documents first, deflated (JSON
shrinks to about a third, and a small cube's metadata is much of its store), every
other object stored as it is (chunk payloads are compressed already, and a stored entry
is one byte range: a read of a chunk stays one range read). Entries carry a fixed date,
so packing the same store twice gives the same bytes.

zarr-python opens a packed store with its own :class:`zarr.storage.ZipStore`; eocube
reads it through :class:`PackedStore`, which reads the central directory once and then
exactly the bytes of each object asked for, locally or over any fsspec URL (``hf://``
included: :mod:`eocube.hubfs`). A packed store is read-only: to change one, write a
folder store and pack it again.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import threading
import uuid
import weakref
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, StorePath

from eocube import lifecycle
from eocube.layout import METADATA, STAGING, is_temporary

SUFFIX = ".zip"
"""Name ending that makes a path or URL a packed store."""

ENTRY_DATE = (1980, 1, 1, 0, 0, 0)
"""Date of every entry (the earliest ZIP can write): packing is reproducible."""

COMMENT = b"eocube"
"""The comment of a packed store's first entry (in the central directory only). With it,
an entry whose central record has no extra field starts its bytes right after a local
header of its name alone (as :func:`pack` writes them): a reader reads no local header.
(An archive comment would make :mod:`zipfile` scan the last 64 kB for the end record.)"""

TAIL_READ_BYTES = 1 << 16
"""The last bytes of a remote archive read when it is opened (its central directory, in
one request for stores of up to about a thousand objects)."""

PACKING_PREFIX = ".eocube-packing-"
"""Name prefix of the folder a packed store is written in before it is packed."""

WHOLE_READ_BYTES = 1 << 20
"""A remote packed store up to this size is read in one request when opened: a small
cube's every object then costs no further request."""

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP64_LIMIT = (1 << 31) - 1  # zipfile.ZIP64_LIMIT: beyond it an entry is ZIP64


def is_packed(location: Any) -> bool:
    """Whether ``location`` (a path or URL) names a packed store: its name ends in ``.zip``
    and it is no local folder (a folder store so named stays one)."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str) or not location.rstrip("/").lower().endswith(SUFFIX):
        return False
    local = lifecycle.local_path(location)
    return local is None or not os.path.isdir(local)


def _is_metadata(key: str) -> bool:
    return key == METADATA or key.endswith("/" + METADATA)


def entry_order(keys: Iterable[str]) -> list[str]:
    """The order of a packed store's entries: metadata documents first, shallowest first
    (a reader finds the root document at the start), then every other object by key."""
    keys = list(keys)
    documents = sorted((k for k in keys if _is_metadata(k)), key=lambda k: (k.count("/"), k))
    return documents + sorted(k for k in keys if not _is_metadata(k))


def _entry(key: str) -> zipfile.ZipInfo:
    """The ZIP entry of the object ``key``: metadata deflated, the rest stored."""
    info = zipfile.ZipInfo(key, date_time=ENTRY_DATE)
    info.create_system = 3  # the same bytes on every system
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if _is_metadata(key) else zipfile.ZIP_STORED
    return info


def entry_nbytes(key: str) -> int:
    """What a ZIP entry adds to its object's bytes: its local and central headers."""
    return 30 + 46 + 2 * len(key.encode())


def packed_nbytes(objects: Mapping[str, bytes | int]) -> int:
    """The size of the ZIP :func:`pack` writes of these objects (key: bytes, or a size for
    objects that are stored as they are; metadata documents need their bytes, which are
    deflated). Exact for archives of up to 2 GiB and 65,535 objects (beyond, ZIP64 records
    add a few bytes an object)."""
    total = 22 + len(COMMENT)  # the end of central directory record
    for key, value in objects.items():
        if _is_metadata(key):
            if not isinstance(value, bytes):
                raise TypeError(f"{key}: a metadata document's size needs its bytes")
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            size = len(compressor.compress(value) + compressor.flush())
        else:
            size = value if isinstance(value, int) else len(value)
        total += size + entry_nbytes(key)
    return total


def _packs(relative: str) -> bool:
    """Whether an object of a store (its key relative to the store) goes into the pack."""
    return not relative.startswith(STAGING + "/") and not is_temporary(relative)


async def _packed_size(store: Store, prefix: str) -> int:
    prefix = prefix.strip("/")
    objects: dict[str, bytes | int] = {}
    async for key in store.list_prefix(prefix):
        relative = key[len(prefix) :].lstrip("/") if prefix else key
        if not _packs(relative):
            continue
        if _is_metadata(relative):
            data = await store.get(key, default_buffer_prototype())
            objects[relative] = b"" if data is None else data.to_bytes()
        else:
            objects[relative] = await store.getsize(key)
    return packed_nbytes(objects)


def packed_size(path: StorePath) -> int:
    """The size of the file :func:`pack` would write of the store at ``path``."""
    return int(sync(_packed_size(path.store, path.path)))


class PackingStore(LocalStore):
    """A local folder store written to be packed (``to_eocube`` to a ``.zip`` target): it
    reports its size as the size of its packed file, so that a ``target_bpppb`` is met
    by the packed store."""

    async def getsize_prefix(self, prefix: str) -> int:
        return await _packed_size(self, prefix)


@dataclass(frozen=True)
class PackReport:
    """What :func:`pack` wrote: the target, its entries, the folder's and the file's bytes."""

    target: str
    entries: int
    store_nbytes: int
    packed_nbytes: int

    def __str__(self) -> str:
        return (
            f"{self.target}: {self.entries} entries, {self.packed_nbytes} bytes "
            f"(the folder store: {self.store_nbytes} bytes)"
        )


def store_objects(path: StorePath) -> list[str]:
    """The keys (relative to ``path``) a finished store packs: every object but leftovers
    of interrupted writes and the staging area (empty in a finished store)."""
    root = path.path.strip("/")
    relative = (key[len(root) :].lstrip("/") if root else key for key in lifecycle.list_keys(path))
    return [key for key in relative if _packs(key)]


def pack(
    store: Any,
    target: str | os.PathLike[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    target_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> PackReport:
    """Pack a finished eocube store into one ZIP file.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        The folder store (a path, an fsspec URL or a zarr store); its write must have
        finished (an unfinished store or an update under way is refused).
    target : str or os.PathLike
        The file to write, a local path or an fsspec URL, its name ending in ``.zip``.
        Written under a temporary name and moved into place when complete: a failed
        pack leaves no partial file behind.
    storage_options, target_options : mapping, optional
        fsspec options of ``store`` and of ``target``.
    overwrite : bool
        Replace an existing file at ``target`` (never a folder). Off, an existing
        target is refused.

    Returns
    -------
    PackReport

    Raises
    ------
    ValueError
        If ``store`` is not a finished eocube store, or ``target`` does not end in
        ``.zip``.
    FileExistsError
        If ``target`` exists and ``overwrite`` is off, or is a folder.
    """
    target = os.fspath(target)
    if not target.rstrip("/").lower().endswith(SUFFIX):
        raise ValueError(f"{target}: a packed store's name ends in {SUFFIX!r}")
    state = lifecycle.inspect_target(store, storage_options)
    if state.kind != "eocube" or not state.complete or state.pending is not None:
        raise ValueError(
            f"{_named(store)} is {state.describe()}: only a finished eocube store packs"
        )
    fs, where = _filesystem(target, target_options)
    if fs.exists(where):
        if fs.isdir(where):
            raise FileExistsError(f"{target} is a folder: a packed store is one file")
        if not overwrite:
            raise FileExistsError(
                f"{target} exists: pass overwrite=True (eocube pack --overwrite) to replace it"
            )
    path = lifecycle.store_path(store, storage_options, read_only=True)
    keys = entry_order(store_objects(path))
    local = lifecycle.local_path(target)
    if local is not None:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        partial = f"{local}.{uuid.uuid4().hex}.partial"
    else:
        import tempfile

        partial = os.path.join(tempfile.gettempdir(), f"eocube-pack-{uuid.uuid4().hex}.zip")
    folder_nbytes = 0
    try:
        with zipfile.ZipFile(partial, "w", allowZip64=True) as archive:
            for i, key in enumerate(keys):
                data = lifecycle.read_bytes(path, key)
                if data is None:
                    raise FileNotFoundError(f"{_named(store)}: {key} vanished while packing")
                folder_nbytes += len(data)
                info = _entry(key)
                info.comment = COMMENT if i == 0 else b""
                archive.writestr(info, data, compresslevel=9)
        nbytes = os.path.getsize(partial)
        if local is not None:
            os.replace(partial, local)
        else:
            fs.put_file(partial, where)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return PackReport(target, len(keys), folder_nbytes, nbytes)


def _named(store: Any) -> str:
    return os.fspath(store) if isinstance(store, (str, os.PathLike)) else repr(store)


def _filesystem(location: str, options: Mapping[str, Any] | None) -> tuple[Any, str]:
    from eocube.hubfs import filesystem

    return filesystem(location, options)


class _Source:
    """Where an archive's bytes are: a local file (read with ``pread``), bytes in memory,
    or a file of an fsspec filesystem (read by range)."""

    remote = False

    def read(self, start: int, end: int) -> bytes:
        raise NotImplementedError


class _LocalSource(_Source):
    """A local file read with ``pread`` by any thread. The descriptor is closed when the
    source is collected, not when the store is closed: a dataset closed while its arrays
    are still read must not read a descriptor number another file got meanwhile."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._lock = threading.Lock()
        weakref.finalize(self, os.close, self._fd)

    def read(self, start: int, end: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self._fd, end - start, start)
        with self._lock:  # no pread (Windows): seek and read under a lock
            os.lseek(self._fd, start, os.SEEK_SET)
            return os.read(self._fd, end - start)


class _BytesSource(_Source):
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, start: int, end: int) -> bytes:
        return self._data[start:end]


class _RemoteSource(_Source):
    remote = True

    def __init__(self, fs: Any, path: str) -> None:
        self._fs, self._path = fs, path

    def read(self, start: int, end: int) -> bytes:
        return bytes(self._fs.cat_file(self._path, start=start, end=end))


class _TailedSource(_Source):
    """A remote source whose last bytes were read at once (the central directory)."""

    remote = True

    def __init__(self, source: _Source, size: int) -> None:
        self._source = source
        self._start = max(0, size - TAIL_READ_BYTES)
        self._tail = source.read(self._start, size)

    def read(self, start: int, end: int) -> bytes:
        if start >= self._start:
            return self._tail[start - self._start : end - self._start]
        return self._source.read(start, end)


class _SourceFile(io.RawIOBase):
    """A read-only, seekable file over a source, for :mod:`zipfile` to read the central
    directory with (a few reads at the end of the archive)."""

    def __init__(self, source: _Source, size: int) -> None:
        self._source, self._size, self._pos = source, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        end = min(self._size, self._pos + len(buffer))
        data = self._source.read(self._pos, end) if end > self._pos else b""
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _span(byte_range: ByteRequest | None, size: int) -> tuple[int, int]:
    """The ``[start, end)`` of an object of ``size`` bytes that ``byte_range`` asks for."""
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, size), min(byte_range.end, size)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, size), size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix), size
    raise TypeError(f"unexpected byte range {byte_range!r}")


class PackedStore(Store):
    """A read-only zarr store over a packed eocube store (one ZIP file).

    Open one with :func:`open_packed`. Each object read is one range read of the file
    (a deflated metadata document: its whole entry); the local header of an entry,
    which says where its bytes start, is read once, when the entry is first read.
    """

    supports_writes = False
    supports_deletes = False
    supports_listing = True
    supports_partial_writes = False

    def __init__(
        self,
        location: str,
        storage_options: Mapping[str, Any] | None,
        source: _Source,
        entries: Mapping[str, zipfile.ZipInfo],
        archive_nbytes: int,
    ) -> None:
        super().__init__(read_only=True)
        self.archive_nbytes = archive_nbytes
        """The size of the ZIP file."""
        self.location = location
        self.storage_options = dict(storage_options or {})
        self._source = source
        self._entries = dict(entries)
        self._starts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PackedStore({self.location!r})"

    def __str__(self) -> str:
        return self.location

    def __eq__(self, value: object) -> bool:
        return isinstance(value, PackedStore) and (value.location, value.storage_options) == (
            self.location,
            self.storage_options,
        )

    def __hash__(self) -> int:
        return hash(self.location)

    def __getstate__(self) -> dict[str, Any]:
        # reopened where unpickled (a dask worker): the file handle does not travel
        return {"location": self.location, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        opened = open_packed(state["location"], state["storage_options"])
        self.__dict__.update(opened.__dict__)

    def with_read_only(self, read_only: bool = False) -> PackedStore:
        if not read_only:
            raise PermissionError(self._read_only_note())
        return self

    def _read_only_note(self) -> str:
        return (
            f"{self.location} is a packed eocube store (one ZIP file) and read-only: "
            f"write to a folder store and pack it again (eocube.pack)"
        )

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        start = self._starts.get(info.filename)
        if start is None:
            header = self._source.read(info.header_offset, info.header_offset + 30)
            signature, name, extra = _LOCAL_HEADER.unpack(header)
            if signature != _LOCAL_SIGNATURE:
                raise ValueError(f"{self.location}: the entry {info.filename} is damaged")
            start = info.header_offset + 30 + name + extra
            with self._lock:
                self._starts[info.filename] = start
        return start

    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        info = self._entries.get(key)
        if info is None:
            return None
        start = self._data_start(info)
        if info.compress_type == zipfile.ZIP_STORED:
            lo, hi = _span(byte_range, info.file_size)
            return self._source.read(start + lo, start + hi) if hi > lo else b""
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise ValueError(
                f"{self.location}: {key} uses ZIP compression method {info.compress_type}; "
                f"packed stores hold stored and deflated entries"
            )
        try:
            data = zlib.decompress(self._source.read(start, start + info.compress_size), -15)
        except zlib.error as exc:
            raise ValueError(f"{self.location}: {key} is damaged ({exc})") from exc
        if zlib.crc32(data) != info.CRC or len(data) != info.file_size:
            raise ValueError(f"{self.location}: {key} is damaged (its CRC does not match)")
        lo, hi = _span(byte_range, len(data))
        return data[lo:hi]

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if self._source.remote:
            data = await asyncio.to_thread(self._read, key, byte_range)
        else:
            data = self._read(key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    async def exists(self, key: str) -> bool:
        return key in self._entries

    async def getsize(self, key: str) -> int:
        info = self._entries.get(key)
        if info is None:
            raise FileNotFoundError(f"{self.location}: no object {key}")
        return int(info.file_size)

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError(self._read_only_note())

    async def delete(self, key: str) -> None:
        raise PermissionError(self._read_only_note())

    async def list(self) -> AsyncIterator[str]:
        for key in self._entries:
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._entries:
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        seen: set[str] = set()
        for key in self._entries:
            if key.startswith(prefix):
                child = key[len(prefix) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child


def open_packed(
    location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> PackedStore:
    """Open a packed store (a local path or an fsspec URL) for reading.

    Raises
    ------
    FileNotFoundError
        If nothing is at ``location``.
    ValueError
        If the file is not a ZIP archive.
    """
    location = os.fspath(location)
    local = lifecycle.local_path(location)
    source: _Source
    try:
        if local is not None:
            if os.path.isdir(local):
                raise ValueError(f"{location} is a folder, not a packed store (one ZIP file)")
            source = _LocalSource(local)
            size = os.path.getsize(local)
        else:
            fs, path = _filesystem(location, storage_options)
            size = int(fs.size(path))
            remote = _RemoteSource(fs, path)
            if size <= WHOLE_READ_BYTES:
                source = _BytesSource(remote.read(0, size))
            else:
                source = _TailedSource(remote, size)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no packed store there") from exc
    try:
        with zipfile.ZipFile(io.BufferedReader(_SourceFile(source, size))) as archive:
            infos = archive.infolist()
            ours = bool(infos) and infos[0].comment == COMMENT
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{location} is not a packed store (not a ZIP archive: {exc})") from exc
    entries = {i.filename: i for i in infos if not i.is_dir()}
    store = PackedStore(location, storage_options, source, entries, size)
    if ours:
        store._starts.update(
            (i.filename, i.header_offset + 30 + len(i.filename.encode()))
            for i in entries.values()
            if not i.extra and i.file_size * 1.05 <= _ZIP64_LIMIT  # no ZIP64 local header
        )
    return store
