"""Reading eocube stores: xarray's zarr store with integrity errors that name the chunk.

The backend (eocube.backend) stays thin; this module opens the zarr group, refuses a
store whose write never finished, and wraps every array read so that a damaged chunk
or shard (checksum mismatch, truncation, an undecodable payload) raises
:class:`~eocube.errors.CorruptChunkError` naming the variable and the chunk indices,
never another exception and never silently wrong values.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import struct
import warnings
import zlib
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

import numpy as np
import xarray as xr
import zarr
from xarray.backends.zarr import ZarrArrayWrapper, ZarrStore
from xarray.core import indexing
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath, WrapperStore

from eocube.errors import CorruptChunkError, EocubeError, IncompleteStoreError
from eocube.layout import MARKER

# What zarr, numcodecs and eocube's decoders raise on damaged bytes
_DAMAGE = (ValueError, IndexError, TypeError, struct.error, zlib.error, RuntimeError, EOFError)
_MAX_SHARDS_CHECKED = 64
"""Shards whose checksums are verified to name the damaged chunk after a failed read."""


class _GuardedStore(WrapperStore[Any]):
    """A store that refuses empty and short chunk objects.

    zarr reads an empty object, or an empty byte range of one, as a missing chunk and
    returns fill values: a shard truncated to nothing would silently read as NaN. An
    eocube store never holds an empty or short chunk object (a shard ends with its
    checksummed index, every other chunk is zstd-compressed), so either means damage.
    """

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        if value is None or key.endswith("zarr.json"):
            return value
        n = len(value)
        if isinstance(byte_range, RangeByteRequest):
            expected: int | None = byte_range.end - byte_range.start
        elif isinstance(byte_range, SuffixByteRequest):
            expected = byte_range.suffix
        else:
            expected = None
        if n == 0 or (expected is not None and n != expected):
            raise CorruptChunkError(
                f"object {key!r} is truncated: {n} bytes where "
                f"{'some' if expected is None else expected} were expected"
            )
        return value


def _guarded(array: zarr.Array) -> zarr.Array:
    """The same array, read through :class:`_GuardedStore`."""
    path = array.store_path
    store = StorePath(_GuardedStore(path.store), path.path)
    return zarr.Array(
        zarr.AsyncArray(metadata=array.metadata, store_path=store, config=array._async_array.config)
    )


def _damaged_chunks(data: bytes, per_shard: int) -> list[int] | None:
    """Indices (C order) of the chunks of a shard whose checksum fails; None: the index."""
    import google_crc32c

    size = per_shard * 16 + 4
    if len(data) < size:
        return None
    index, crc = data[-size:-4], data[-4:]
    if np.uint32(google_crc32c.value(index)).tobytes() != crc:
        return None
    entries = np.frombuffer(index, "<u8").reshape(per_shard, 2)
    bad = []
    for i, (offset, length) in enumerate(entries.tolist()):
        if offset == 2**64 - 1 and length == 2**64 - 1:
            continue
        chunk = data[offset : offset + length]
        if (
            length < 4
            or offset + length > len(data) - size
            or np.uint32(google_crc32c.value(chunk[:-4])).tobytes() != chunk[-4:]
        ):
            bad.append(i)
    return bad


def _locate_damage(array: zarr.Array, key: Any) -> str | None:
    """Name the damaged chunk(s) of a failed read from checksums alone (no decoding).

    Only for sharded arrays with checksums (eocube's cube variables); None when the
    checksums hold or too many shards are involved.
    """
    from zarr.codecs import Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    codecs: tuple[Any, ...] = getattr(array.metadata, "codecs", ())  # none in zarr v2
    sharding = codecs[0] if len(codecs) == 1 else None
    if (
        not isinstance(sharding, ShardingCodec)
        or sharding.index_location != ShardingCodecIndexLocation.end
        or not any(isinstance(c, Crc32cCodec) for c in sharding.index_codecs)
    ):
        return None
    shard_shape, inner = tuple(array.shards or ()), tuple(sharding.chunk_shape)
    per = [s // c for s, c in zip(shard_shape, inner, strict=True)]
    ranges = []
    items = key if isinstance(key, tuple) else (key,)
    for k, s, n in zip(items, shard_shape, array.shape, strict=True):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
            ranges.append(range(start // s, max(stop - 1, start) // s + 1))
        elif isinstance(k, int | np.integer):
            ranges.append(range(int(k) // s, int(k) // s + 1))
        else:
            idx = np.asarray(k).reshape(-1)
            idx = np.flatnonzero(idx) if idx.dtype == bool else idx
            if idx.size == 0:
                return None
            ranges.append(range(int(idx.min()) // s, int(idx.max()) // s + 1))
    if math.prod(len(r) for r in ranges) > _MAX_SHARDS_CHECKED:
        return None
    store_path = array.store_path
    store = store_path.store
    if isinstance(store, _GuardedStore):
        store = store._store
    for shard in itertools.product(*ranges):
        name = array.metadata.encode_chunk_key(shard)
        full = f"{store_path.path.rstrip('/')}/{name}" if store_path.path else name
        data = zarr.core.sync.sync(store.get(full, prototype=default_buffer_prototype()))
        if data is None:
            continue
        bad = _damaged_chunks(data.to_bytes(), math.prod(per))
        first = [i * p for i, p in zip(shard, per, strict=True)]
        if bad is None:
            chunks = ", ".join(
                f"{f}..{f + p - 1}" if p > 1 else str(f) for f, p in zip(first, per, strict=True)
            )
            return f"chunks ({chunks}) (shard {name}: index damaged or object truncated)"
        if bad:
            local = np.unravel_index(bad[0], per)
            where = tuple(f + int(i) for f, i in zip(first, local, strict=True))
            more = f", and {len(bad) - 1} more chunk(s)" if len(bad) > 1 else ""
            return f"chunk {where} (shard {name}: checksum mismatch{more})"
    return None


def _chunk_ranges(key: Any, chunks: tuple[int, ...], shape: tuple[int, ...]) -> str:
    parts = []
    items = key if isinstance(key, tuple) else (key,)
    for k, c, n in zip(items, chunks, shape, strict=False):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
            first, last = start // c, max(stop - 1, start) // c
        elif isinstance(k, int | np.integer):
            first = last = int(k) // c
        else:
            idx = np.asarray(k).reshape(-1)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            if idx.size == 0:
                parts.append("-")
                continue
            first, last = int(idx.min()) // c, int(idx.max()) // c
        parts.append(str(first) if first == last else f"{first}..{last}")
    return "(" + ", ".join(parts) + ")"


class _CheckedArray(ZarrArrayWrapper):
    """A zarr array wrapper whose reads turn damage into CorruptChunkError."""

    def __init__(self, zarr_array: Any, name: Hashable) -> None:
        super().__init__(_guarded(zarr_array))
        self._name = name

    def _checked(self, read: Callable[[Any], Any], key: Any) -> Any:
        try:
            return read(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except EocubeError:
            raise
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc

    def _error(self, key: Any, exc: BaseException) -> CorruptChunkError:
        try:
            located = _locate_damage(self._array, key)
        except Exception:  # the diagnosis must not hide the damage it diagnoses
            located = None
        if located is None:
            where = _chunk_ranges(key, tuple(self._array.chunks), tuple(self._array.shape))
            located = f"chunk {where}"
        return CorruptChunkError(
            f"variable {self._name!r}, {located}: the stored data is damaged "
            f"({type(exc).__name__}: {exc}); restore the store from a copy or write it again"
        )

    def _oindex(self, key: Any) -> Any:
        return self._checked(super()._oindex, key)

    def _vindex(self, key: Any) -> Any:
        return self._checked(super()._vindex, key)

    def _getitem(self, key: Any) -> Any:
        return self._checked(super()._getitem, key)

    async def _checked_async(self, read: Callable[[Any], Awaitable[Any]], key: Any) -> Any:
        try:
            return await read(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except EocubeError:
            raise
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc

    async def _async_oindex(self, key: Any) -> Any:
        return await self._checked_async(super()._async_oindex, key)

    async def _async_vindex(self, key: Any) -> Any:
        return await self._checked_async(super()._async_vindex, key)

    async def _async_getitem(self, key: Any) -> Any:
        return await self._checked_async(super()._async_getitem, key)


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's warning that fixed-length strings (band names) are not yet in the
    zarr v3 spec: eocube writes and reads them with zarr-python, which handles them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        yield


class EocubeZarrStore(ZarrStore):
    """xarray's ZarrStore with checked reads of every array."""

    def open_store_variable(self, name: str) -> xr.Variable:
        """The variable, lazily indexed through :class:`_CheckedArray`."""
        var = super().open_store_variable(name)
        data = indexing.LazilyIndexedArray(_CheckedArray(self.members[name], name))
        return xr.Variable(var.dims, data, var.attrs, var.encoding)


def check_complete(attrs: dict[str, Any], where: str) -> None:
    """Raise :class:`IncompleteStoreError` unless the store's write finished."""
    marker = attrs.get(MARKER)
    if not isinstance(marker, dict):
        raise IncompleteStoreError(f"{where} is not an eocube store (no {MARKER!r} attribute)")
    if not marker.get("complete", False):
        raise IncompleteStoreError(_unfinished(where))


def _unfinished(where: str) -> str:
    return (
        f"{where} is incomplete: its write was interrupted. Re-run the same "
        f"to_eocube(...) call with resume=True to finish it, or mode='w' to start over"
    )


def explain_open_failure(store: Any, storage_options: Any, exc: BaseException) -> Exception:
    """The error to raise when zarr could not open ``store``: an unfinished eocube store
    (zarr refuses its metadata on purpose), a damaged ``zarr.json``, or ``exc`` itself."""
    from eocube import layout

    try:
        state = layout.inspect_target(store, storage_options)
    except ValueError as damaged:  # the root zarr.json is not JSON
        return CorruptChunkError(str(damaged))
    except Exception:  # the diagnosis must not hide the error it explains
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    if state.kind == "eocube" and not state.complete:
        return IncompleteStoreError(_unfinished(str(store)))
    if state.kind in ("absent", "empty", "other", "file"):
        return FileNotFoundError(f"{store} is not an eocube store: it is {state.describe()}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
