"""Reading eocube stores: one chunk-read path, integrity errors that name the chunk.

The backend (eocube.backend) stays thin; this module opens the zarr group, refuses a
store whose write never finished, and reads every array so that a damaged chunk or
shard (checksum mismatch, truncation, an undecodable payload) raises
:class:`~eocube.errors.CorruptChunkError` naming the variable and the chunk indices,
never another exception and never silently wrong values.

Video-coded arrays are read by :class:`ChunkReader`, the one function that fetches a
stored chunk (the shard index once, then one range request), checks its checksum and
decodes it, with the video decoder plugged in (the CPU's, or NVDEC's:
:mod:`eocube.gpu`): xarray's lazy arrays (:class:`VideoArray`) and the PyTorch datasets
both read through it, with xarray's CF decoding on top. Other arrays (coordinates,
categorical layers) are read by zarr through a store that refuses empty or short objects.

A variable opened here keeps its zarr chunks in ``encoding``, but not eocube's codec
chain: that moves to ``encoding[CODEC_ENCODING]``, so that ``to_zarr`` and ``to_netcdf``
of an opened cube write a plain, lossless copy of the values read (see
:func:`plain_encoding`).

Only xarray's public backend API is used: :class:`~xarray.backends.ZarrStore` (opening
groups, attributes and zarr's encoding), :class:`~xarray.backends.BackendArray`, and the
lazy indexing helpers of ``xarray.core.indexing`` that xarray's guide to writing a
backend prescribes (``LazilyIndexedArray``, ``explicit_indexing_adapter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.system
import numpy as np
import xarray as xr
import zarr
from xarray.backends import BackendArray, ZarrStore
from xarray.core import indexing
from zarr.abc.store import ByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync as zarr_sync
from zarr.storage import StorePath, WrapperStore

from eocube import cache, shards, video
from eocube.binary import ByteReader
from eocube.chunk import ChunkHeader, decode_chunk
from eocube.codec import VideoCodec
from eocube.errors import CorruptChunkError, EocubeError, IncompleteStoreError
from eocube.layout import MARKER
from eocube.registry import CODECS

# What zarr, numcodecs and eocube's decoders raise on damaged bytes
_DAMAGE = (ValueError, IndexError, TypeError, struct.error, zlib.error, RuntimeError, EOFError)

FrameDecoder = Callable[..., Iterator[list[np.ndarray]]]
"""Decodes a stream's frames, like :func:`eocube.video.decode_frames` (the CPU's)."""


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


class _CheckedArray(BackendArray):
    """A plain zarr array (a coordinate, a categorical layer) read lazily through zarr's
    own indexing, a damaged chunk raising CorruptChunkError that names it.

    Parameters
    ----------
    zarr_array : zarr.Array
        The stored array.
    name : hashable
        The variable's name, for messages.
    dtype : numpy.dtype
        The dtype xarray gives the variable (variable-length strings: ``object``).
    """

    def __init__(self, zarr_array: zarr.Array, name: Hashable, dtype: np.dtype) -> None:
        self._array = _guarded(zarr_array)
        self._name = name
        self.shape = tuple(zarr_array.shape)
        self.dtype = np.dtype(dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        array = self._array
        read: Callable[[Any], Any]
        if isinstance(key, indexing.VectorizedIndexer):
            read = array.vindex.__getitem__
        elif isinstance(key, indexing.OuterIndexer):
            read = array.oindex.__getitem__
        else:
            read = array.__getitem__
        value = indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.VECTORIZED, lambda k: self._checked(read, k)
        )
        # zarr answers a single element as a scalar (a str for strings): xarray wants arrays
        return np.asarray(value, dtype=self.dtype)

    async def async_getitem(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        """:meth:`__getitem__` on a worker thread, for ``Dataset.load_async``."""
        return await asyncio.to_thread(self.__getitem__, key)

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
        where = _chunk_ranges(key, tuple(self._array.chunks), self.shape)
        return CorruptChunkError(
            f"variable {self._name!r}, chunk {where}: the stored data is damaged "
            f"({type(exc).__name__}: {exc}); restore the store from a copy or write it again"
        )


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}..{last}"


class ChunkReader:
    """Reads the stored chunks of one video-coded zarr array: fetch, check, decode.

    The shard index of each shard is read once (one suffix request) and kept; each
    chunk then costs one range request, checked against its crc32c, and is decoded by
    :func:`eocube.chunk.decode_chunk` with ``frame_decoder``. Every failure is a
    :class:`~eocube.errors.CorruptChunkError` naming the variable and the chunk.

    Parameters
    ----------
    array : zarr.Array
        An array whose codec chain is ``eocube.video`` then ``crc32c``, inside
        ``sharding_indexed`` (index at the end) or not.
    name : hashable
        The variable's name, for messages.
    frame_decoder : callable, optional
        Decodes video streams to frames (default: the CPU's, eocube.video).
    """

    def __init__(
        self, array: zarr.Array, name: Hashable, frame_decoder: FrameDecoder | None = None
    ) -> None:
        from zarr.codecs import Crc32cCodec, ShardingCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation

        self.array = array
        self.name = name
        self.frame_decoder = frame_decoder
        codecs = array.metadata.codecs  # type: ignore[union-attr]
        sharding = codecs[0] if len(codecs) == 1 else None
        self.sharded = isinstance(sharding, ShardingCodec)
        if isinstance(sharding, ShardingCodec):
            if sharding.index_location != ShardingCodecIndexLocation.end:
                raise ValueError("only shard indexes at the end are supported")
            self.per_shard = shards.chunks_per_shard(array)
            inner = sharding.codecs
        else:
            self.per_shard = tuple(1 for _ in array.chunks)
            inner = codecs
        if not isinstance(inner[0], VideoCodec):
            raise ValueError(f"array {array.path!r} is not video-coded ({inner[0]})")
        self.checksum = any(isinstance(c, Crc32cCodec) for c in inner[1:])
        self.chunk_shape = tuple(array.chunks)
        self._indexes: dict[tuple[int, ...], shards.ShardIndex | None] = {}
        self._fetching: dict[tuple[int, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        # names this reader's blocks in the process's decoded-chunk cache (eocube.cache)
        self._token = uuid.uuid4().hex

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_indexes"], state["_fetching"], state["_lock"] = {}, {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex

    def _key(self, coords: Sequence[int]) -> str:
        return shards.shard_key(self.array, coords)

    def _where(self, coords: tuple[int, ...]) -> str:
        return f"variable {self.name!r}, chunk {coords}"

    def _shard_error(self, shard: tuple[int, ...], detail: str) -> CorruptChunkError:
        spans = ", ".join(
            _span(s * p, min((s + 1) * p, math.ceil(n / c)) - 1)
            for s, p, n, c in zip(
                shard, self.per_shard, self.array.shape, self.chunk_shape, strict=True
            )
        )
        return CorruptChunkError(
            f"variable {self.name!r}, chunks ({spans}) (shard {self._key(shard)}: {detail}): "
            f"the stored data is damaged; restore the store from a copy or write it again"
        )

    def _index(self, shard: tuple[int, ...]) -> shards.ShardIndex | None:
        with self._lock:
            if shard in self._indexes:
                return self._indexes[shard]
            # one fetch per shard index, however many threads want it at once (a round
            # trip each over a slow link)
            fetching = self._fetching.setdefault(shard, threading.Lock())
        with fetching:
            with self._lock:
                if shard in self._indexes:
                    return self._indexes[shard]
            key = self._key(shard)
            try:
                found = shards.read_index(
                    self.array.store_path.store, key, math.prod(self.per_shard)
                )
            except CorruptChunkError as exc:
                raise self._shard_error(shard, f"index damaged or object truncated: {exc}") from exc
            index = None if found is None else found[0]
            with self._lock:
                self._indexes[shard] = index
            return index

    def payload(self, coords: tuple[int, ...]) -> bytes | None:
        """The checked payload of the chunk at grid position ``coords``; None if never
        written (it reads as the fill value)."""
        store = self.array.store_path.store
        if self.sharded:
            shard = tuple(c // n for c, n in zip(coords, self.per_shard, strict=True))
            index = self._index(shard)
            if index is None:
                return None
            inner = tuple(c % n for c, n in zip(coords, self.per_shard, strict=True))
            found = index.range(int(np.ravel_multi_index(inner, self.per_shard)))
            if found is None:
                return None
            start, stop = found
            data = shards.read_range(store, self._key(shard), start, stop)
            if data is None:
                raise self._shard_error(shard, "object vanished")
            if len(data) != stop - start:
                raise CorruptChunkError(
                    f"{self._where(coords)}: object {self._key(shard)!r} is truncated: "
                    f"{len(data)} bytes where {stop - start} were expected; restore the "
                    f"store from a copy or write it again"
                )
        else:
            data = shards.read_object(store, self._key(coords))
            if data is None:
                return None
            if not data:
                raise CorruptChunkError(f"{self._where(coords)}: the chunk object is empty")
        if self.checksum:
            try:
                data = shards.strip_checksum(data, "payload")
            except CorruptChunkError as exc:
                raise CorruptChunkError(
                    f"{self._where(coords)}: checksum mismatch ({exc}); the stored data is "
                    f"damaged: restore the store from a copy or write it again"
                ) from None
        return data

    @contextlib.contextmanager
    def _damage_named(self, coords: tuple[int, ...]) -> Iterator[None]:
        """Turn what decoding raises on damaged bytes into a CorruptChunkError naming
        the variable and the chunk (eocube's own errors pass as they are)."""
        try:
            yield
        except CorruptChunkError as exc:
            raise CorruptChunkError(
                f"{self._where(coords)}: the stored data is damaged ({exc}); restore the "
                f"store from a copy or write it again"
            ) from exc
        except EocubeError:
            raise
        except _DAMAGE as exc:
            raise CorruptChunkError(
                f"{self._where(coords)}: the stored data is damaged ({type(exc).__name__}: "
                f"{exc}); restore the store from a copy or write it again"
            ) from exc

    def read(self, coords: tuple[int, ...], *, max_threads: int | None = None) -> np.ndarray:
        """The values of the chunk at grid position ``coords`` as stored (before CF
        decoding), cut to the array's bounds at its edges.

        The block comes from the process's decoded-chunk cache (:mod:`eocube.cache`)
        when this reader decoded it before, and is then read-only: copy what you keep.
        A decode takes the codec threads :data:`DECODE_SLOTS` gives it, ``max_threads``
        at most (1 where the caller decodes other chunks beside it).
        """
        return cache.CHUNKS.get((self._token, coords), lambda: self._decode(coords, max_threads))

    def read_into(
        self, coords: tuple[int, ...], out: np.ndarray, *, max_threads: int | None = None
    ) -> None:
        """Write the chunk at ``coords`` into ``out``, an array of exactly its shape.

        A chunk in the decoded-chunk cache is copied from there; any other is decoded
        straight into ``out`` (when C-contiguous and of the array's dtype) and not cached:
        a read that takes whole chunks copies nothing more, and a whole-cube read does
        not push the chunks of smaller reads (training windows) out of the cache.
        """
        cached = cache.CHUNKS.peek((self._token, coords))
        direct = (
            cached is None
            and out.flags.c_contiguous
            and out.dtype == self.array.dtype
            and out.shape == self.chunk_shape
        )
        if direct:
            self._decode(coords, max_threads, out=out)
        else:
            out[...] = self.read(coords, max_threads=max_threads) if cached is None else cached

    def _decode(
        self, coords: tuple[int, ...], max_threads: int | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        bounds = tuple(
            slice(c * s, min((c + 1) * s, n))
            for c, s, n in zip(coords, self.chunk_shape, self.array.shape, strict=True)
        )
        shape = tuple(b.stop - b.start for b in bounds)
        dtype = self.array.dtype
        payload = self.payload(coords)
        if payload is None:
            if out is not None:
                out[...] = self.array.fill_value
                return out
            return np.full(shape, self.array.fill_value, dtype=dtype)
        with self._damage_named(coords), DECODE_SLOTS.slot(max_threads) as threads:
            block = decode_chunk(
                payload,
                threads=threads,
                frame_decoder=video.decode_frames
                if self.frame_decoder is None
                else self.frame_decoder,
                out=_flat_out(out, payload),
                shape=self.chunk_shape,
            )
            block = block.reshape(self.chunk_shape)
        if out is not None:
            if not np.shares_memory(block, out):
                out[...] = block
            return out
        if block.dtype != dtype:
            block = block.astype(dtype)
        if shape != block.shape:  # an edge chunk: keep only its part (not a view of all)
            block = block[tuple(slice(0, n) for n in shape)].copy()
        return block

    def read_tensor(
        self,
        coords: tuple[int, ...],
        device: Any = "cpu",
        *,
        stream_decoder: Any = None,
        max_threads: int | None = None,
    ) -> Any:
        """:meth:`read` into a torch tensor on ``device``, the block unpacked there.

        The same fetch, checksum and errors as :meth:`read`; the video frames are decoded
        by ``stream_decoder`` (an :data:`eocube.device.StreamDecoder`; default: the
        plugged-in frame decoder's ``decode_tensor`` where it has one, as
        :class:`eocube.gpu.NvdecDecoder` does, which keeps NVDEC's frames on the GPU; else
        the CPU's) and unpacked in torch (:func:`eocube.device.decode_chunk_tensor`), equal
        bit for bit to :meth:`read`. Values as stored (before CF decoding); not cached.
        """
        import torch

        from eocube import device as on_device

        dev = torch.device(device)
        shape = tuple(
            min((c + 1) * s, n) - c * s
            for c, s, n in zip(coords, self.chunk_shape, self.array.shape, strict=True)
        )
        dtype = np.dtype(self.array.dtype)
        payload = self.payload(coords)
        if payload is None:
            return on_device.as_tensor(np.full(shape, self.array.fill_value, dtype=dtype), dev)
        if stream_decoder is None:
            stream_decoder = getattr(self.frame_decoder, "decode_tensor", None)
        with self._damage_named(coords), DECODE_SLOTS.slot(max_threads) as threads:
            block = on_device.decode_chunk_tensor(
                payload, dev, stream_decoder=stream_decoder, threads=threads
            )
            block = block.reshape(self.chunk_shape)
        if block.dtype != on_device.torch_dtype(dtype):
            block = block.to(on_device.torch_dtype(dtype))
        if shape != tuple(block.shape):  # an edge chunk: keep only its part
            block = block[tuple(slice(0, n) for n in shape)].contiguous()
        return block

    def read_tensors(
        self, coords: Sequence[tuple[int, ...]], device: Any = "cpu", *, stream_decoder: Any = None
    ) -> list[Any]:
        """:meth:`read_tensor` of several chunks, decoded at once on the reader's threads
        (with NVDEC, several chunks in flight keep its engines busy)."""
        if len(coords) <= 1:
            return [self.read_tensor(c, device, stream_decoder=stream_decoder) for c in coords]
        jobs = [
            _pool().submit(
                self.read_tensor, c, device, stream_decoder=stream_decoder, max_threads=1
            )
            for c in coords
        ]
        return [job.result() for job in jobs]


class _DecodeSlots:
    """Codec threads per chunk decode, so that decodes never oversubscribe the cores.

    A decode running alone gets every core (slice threads over the rows of a large
    frame); decodes running together, from the reader's pool, dask's threads or many
    readers at once, share them, one thread each at most as many as there are cores.
    """

    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self.active = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, most: int | None = None) -> Iterator[int]:
        """Codec threads for a decode starting now (``most`` at most), held until it ends."""
        with self._lock:
            self.active += 1
            threads = max(1, min(most or self.cores, self.cores // self.active))
        try:
            yield threads
        finally:
            with self._lock:
                self.active -= 1


# the CPUs this process may use (affinity and cgroup quota), as dask counts them
DECODE_SLOTS = _DecodeSlots(max(1, dask.system.CPU_COUNT))
"""Codec threads of the decodes running in this process (one pool of cores for all)."""


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads decoding the chunks of one read (decoding releases the GIL)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(DECODE_SLOTS.cores, thread_name_prefix="eocube-read")
        return _POOL


class VideoArray(BackendArray):
    """A lazily read video-coded array for xarray: every read goes through
    :class:`ChunkReader`, chunk by chunk, the chunks of one read decoded in parallel."""

    def __init__(self, reader: ChunkReader) -> None:
        self.reader = reader
        self.shape = tuple(reader.array.shape)
        self.dtype = np.dtype(reader.array.dtype)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self._read
        )

    async def async_getitem(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        """:meth:`__getitem__` on a worker thread, for ``Dataset.load_async`` (decoding
        releases the GIL, so reads awaited together decode side by side)."""
        return await asyncio.to_thread(self.__getitem__, key)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        """Values at an outer index (a slice, an integer or an integer array per dim)."""
        chunk_shape = self.reader.chunk_shape
        picks: list[np.ndarray] = []
        scalar = []
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                picks.append(np.arange(n)[k])
                scalar.append(False)
            elif isinstance(k, int | np.integer):
                picks.append(np.array([int(k) % n if n else 0]))
                scalar.append(True)
            else:
                picks.append(np.asarray(k, dtype=np.int64).reshape(-1) % max(n, 1))
                scalar.append(False)
        out = np.empty(tuple(len(p) for p in picks), self.dtype)
        if out.size == 0:
            return out[tuple(0 if s else slice(None) for s in scalar)]
        # per dim: the chunks touched, and for each the output positions and the positions
        # inside the chunk, as slices where they run in steps of one (a plain copy)
        per_dim = []
        for p, c in zip(picks, chunk_shape, strict=True):
            chunk_of = p // c
            per_dim.append(
                [
                    (
                        int(k),
                        _as_slice(np.flatnonzero(chunk_of == k)),
                        _as_slice(p[chunk_of == k] - k * c),
                    )
                    for k in np.unique(chunk_of)
                ]
            )
        touched = list(itertools.product(*per_dim))

        def fill(parts: tuple[tuple[int, _Positions, _Positions], ...]) -> None:
            coords = tuple(k for k, _, _ in parts)
            inside = [i for _, _, i in parts]
            where = _outer(o for _, o, _ in parts)
            # the chunks of one read decode side by side on the pool, one thread each
            whole = zip(inside, chunk_shape, strict=True)
            if all(isinstance(i, slice) and i == slice(0, c) for i, c in whole):
                target = out[where]
                if target.base is out or target is out:  # a view: the chunk lands in place
                    self.reader.read_into(coords, target, max_threads=threads)
                    return
            block = self.reader.read(coords, max_threads=threads)
            out[where] = block[_outer(iter(inside))]

        threads = None if len(touched) == 1 else 1
        if len(touched) == 1:
            fill(touched[0])
        else:
            for done in [_pool().submit(fill, parts) for parts in touched]:
                done.result()
        return out[tuple(0 if s else slice(None) for s in scalar)]


_Positions = slice | np.ndarray


def _flat_out(out: np.ndarray | None, payload: bytes) -> np.ndarray | None:
    """``out`` viewed as the payload's (T, B, Y, X) block to decode into, or None where
    it cannot hold it (another size or dtype, a damaged header: decoded apart, then)."""
    if out is None:
        return None
    try:
        header = ChunkHeader.from_bytes(ByteReader(payload))
    except CorruptChunkError:
        return None  # decode_chunk raises it again, naming the damage
    if header.dtype != out.dtype or math.prod(header.shape) != out.size:
        return None
    return out.reshape(header.shape)


def _as_slice(positions: np.ndarray) -> _Positions:
    """``positions`` as a slice when they run in steps of one, else as they are."""
    if len(positions) and bool(np.all(np.diff(positions) == 1)):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _outer(positions: Iterator[_Positions]) -> tuple[Any, ...]:
    """An outer index from per-dim slices or integer arrays (numpy's ix_ for the arrays)."""
    parts = list(positions)
    if all(isinstance(p, slice) for p in parts):
        return tuple(parts)
    arrays = [np.arange(p.start, p.stop) if isinstance(p, slice) else p for p in parts]
    return np.ix_(*arrays)


class EocubeZarrStore(ZarrStore):
    """xarray's ZarrStore reading video-coded arrays through :class:`ChunkReader` and every
    other array through checked zarr reads."""

    frame_decoder: FrameDecoder | None = None
    _small: dict[str, np.ndarray] | None = None

    def open_store_variable(self, name: str) -> xr.Variable:
        """The variable, lazily indexed through :class:`VideoArray` or :class:`_CheckedArray`
        (dimension coordinates and scalars, which xarray reads at once, already read), its
        encoding without eocube's codecs (:func:`plain_encoding`)."""
        var = super().open_store_variable(name)
        array = self.members[name]
        assert isinstance(array, zarr.Array)
        data: Any
        if isinstance(array.serializer, VideoCodec):
            reader = ChunkReader(array, name, self.frame_decoder)
            data = indexing.LazilyIndexedArray(VideoArray(reader))
        elif name in self._read_small():
            data = self._read_small()[name]
        else:
            data = indexing.LazilyIndexedArray(_CheckedArray(array, name, var.dtype))
        return xr.Variable(var.dims, data, var.attrs, plain_encoding(var.encoding))

    def _read_small(self) -> dict[str, np.ndarray]:
        """Values of the small arrays xarray reads when it opens a dataset (dimension
        coordinates for its indexes, scalars such as ``spatial_ref``), fetched together:
        one by one, each cost a round trip through zarr's event loop (or the network)."""
        if self._small is None:
            wanted = {
                name: _guarded(array)
                for name, array in self.members.items()
                if isinstance(array, zarr.Array)
                and not isinstance(getattr(array, "serializer", None), VideoCodec)
                and array.nbytes <= _SMALL_BYTES
                and (array.ndim == 0 or (array.ndim == 1 and _dims(array) == (name,)))
            }

            async def read_all() -> list[Any]:
                reads = (a._async_array.getitem(...) for a in wanted.values())
                return await asyncio.gather(*reads, return_exceptions=True)

            values = zarr_sync(read_all())
            # an array that failed is read lazily again, where its error names its chunk
            self._small = {
                name: np.asarray(v)
                for name, v in zip(wanted, values, strict=True)
                if not isinstance(v, BaseException)
            }
        return self._small


_SMALL_BYTES = 1 << 20
"""Largest dimension coordinate read when a dataset opens (larger ones stay lazy)."""


CODEC_ENCODING = "eocube_codec"
"""Key of an opened variable's ``encoding`` holding the eocube codec it was stored with
(e.g. the :class:`~eocube.codec.VideoCodec`, with its profile and error bound). zarr and
the netCDF writers ignore the key, so a copy never uses the codec."""

_CODEC_CHAIN = ("serializer", "compressors", "filters", "shards")
"""Encoding keys that describe how zarr coded and sharded an array, as xarray reads them."""


def plain_encoding(encoding: Mapping[str, Any]) -> dict[str, Any]:
    """``encoding`` of a stored variable, eocube's codec chain moved to CODEC_ENCODING.

    With the video codec as serializer, ``to_zarr`` of an opened cube would encode the
    values read lossily a second time, and only eocube could read the copy. The chain
    (serializer, compressors, filters) and the sharding around it were chosen for
    eocube's codec, so they all go: a copy gets its writer's default codecs, in the
    stored chunks (``chunks``, ``preferred_chunks``), with the stored dtype, fill value
    and CF encoding (``scale_factor``, ``units``...), which restore the values read
    exactly. Variables stored with zarr's own codecs keep their encoding as it is.
    """
    codec = encoding.get("serializer")
    if not isinstance(codec, tuple(CODECS.values())):
        return dict(encoding)
    plain = {key: value for key, value in encoding.items() if key not in _CODEC_CHAIN}
    plain[CODEC_ENCODING] = codec
    return plain


def _dims(array: zarr.Array) -> tuple[str | None, ...]:
    names = getattr(array.metadata, "dimension_names", None)
    return tuple(names) if names else ()


def check_complete(attrs: Mapping[str, Any], where: str, groups: Sequence[str] = ()) -> None:
    """Raise :class:`IncompleteStoreError` unless ``attrs`` (of the zarr group ``where``,
    whose child groups are ``groups``) are those of an eocube store whose write finished."""
    marker = attrs.get(MARKER)
    if not isinstance(marker, dict):
        hint = (
            f": it holds the groups {', '.join(sorted(groups))}; open one with group=<name>, "
            f"or all with xr.open_datatree(..., engine='eocube')"
            if groups
            else ""
        )
        raise IncompleteStoreError(
            f"{where} is not an eocube store (no {MARKER!r} attribute){hint}"
        )
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
    from eocube import lifecycle

    try:
        state = lifecycle.inspect_target(store, storage_options)
    except ValueError as damaged:  # the root zarr.json is not JSON
        return CorruptChunkError(str(damaged))
    except Exception:  # the diagnosis must not hide the error it explains
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    if state.kind == "eocube" and not state.complete:
        return IncompleteStoreError(_unfinished(str(store)))
    if state.kind in ("absent", "empty", "other", "file"):
        return FileNotFoundError(f"{store} is not an eocube store: it is {state.describe()}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
