"""What a store holds: bytes of all its objects and of the chunk payloads inside shards."""

from __future__ import annotations

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

# sharding_indexed keeps, at the end of each shard, (offset u64, nbytes u64) per inner
# chunk followed by a crc32c of the index; missing chunks have both set to 2**64 - 1.
_INDEX_ENTRY = 16
_CRC = 4
_MISSING = np.uint64(2**64 - 1)


async def _collect(store: Store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def list_keys(store: Store, prefix: str = "") -> list[str]:
    """All keys under ``prefix``."""
    return sync(_collect(store, prefix))


def store_nbytes(store: Store) -> int:
    """Bytes of every object in the store."""
    return int(sync(store.getsize_prefix("")))


def _get(store: Store, key: str) -> bytes:
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        raise KeyError(key)
    return buf.to_bytes()


def payload_nbytes(group: zarr.Group, name: str) -> int:
    """Bytes of the video payloads of array ``name`` (shard indexes and checksums excluded)."""
    array = group[name]
    assert isinstance(array, zarr.Array)
    shards, chunks = array.shards, array.chunks
    if shards is None:
        raise ValueError(f"array {name!r} is not sharded")
    per_shard = int(np.prod([s // c for s, c in zip(shards, chunks, strict=True)]))
    store = array.store_path.store
    prefix = array.store_path.path.rstrip("/") + "/c"
    total = 0
    for key in list_keys(store, prefix):
        data = _get(store, key)
        index = np.frombuffer(
            data[len(data) - per_shard * _INDEX_ENTRY - _CRC : len(data) - _CRC], dtype="<u8"
        ).reshape(per_shard, 2)
        present = index[:, 1] != _MISSING
        total += int(index[present, 1].sum()) - _CRC * int(present.sum())
    return total


class ChunkPayloads:
    """Read the raw ``eocube.video`` payload of one inner chunk of an array.

    The payload is what :func:`eocube.chunk.decode_chunk` takes: the GPU path decodes it
    itself instead of letting zarr's codec pipeline decode it on the CPU. Shard indexes
    are read once (one suffix request per shard) and kept; each payload is one range
    request, checked against its crc32c.

    Parameters
    ----------
    array : zarr.Array
        An array whose codec chain is ``eocube.video`` then ``crc32c``, inside
        ``sharding_indexed`` (index at the end) or not.
    """

    def __init__(self, array: zarr.Array) -> None:
        from zarr.codecs import Crc32cCodec, ShardingCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation

        meta = array.metadata
        self.store = array.store_path.store
        self.path = array.store_path.path.rstrip("/")
        self.encode_key = meta.chunk_key_encoding.encode_chunk_key  # type: ignore[union-attr]
        codecs = meta.codecs  # type: ignore[union-attr]
        sharding = codecs[0] if len(codecs) == 1 else None
        self.sharded = isinstance(sharding, ShardingCodec)
        if isinstance(sharding, ShardingCodec):
            if sharding.index_location != ShardingCodecIndexLocation.end:
                raise ValueError("only shard indexes at the end are supported")
            self.per_shard = tuple(
                s // c
                for s, c in zip(array.shards, array.chunks, strict=True)  # type: ignore[arg-type]
            )
            inner = sharding.codecs
        else:
            self.per_shard = tuple(1 for _ in array.chunks)
            inner = codecs
        self.checksum = any(isinstance(c, Crc32cCodec) for c in inner[1:])
        self._indexes: dict[tuple[int, ...], np.ndarray | None] = {}

    def _key(self, coords: tuple[int, ...]) -> str:
        key = self.encode_key(coords)
        return f"{self.path}/{key}" if self.path else key

    def _index(self, shard: tuple[int, ...]) -> np.ndarray | None:
        if shard not in self._indexes:
            from zarr.abc.store import SuffixByteRequest

            n = int(np.prod(self.per_shard))
            size = n * _INDEX_ENTRY + _CRC
            buf = sync(
                self.store.get(
                    self._key(shard), default_buffer_prototype(), byte_range=SuffixByteRequest(size)
                )
            )
            if buf is None:
                self._indexes[shard] = None
            else:
                data = buf.to_bytes()
                _check_crc(data[:-_CRC], data[-_CRC:], f"shard index of {self._key(shard)}")
                self._indexes[shard] = np.frombuffer(data[:-_CRC], "<u8").reshape(
                    (*self.per_shard, 2)
                )
        return self._indexes[shard]

    def get(self, coords: tuple[int, ...]) -> bytes | None:
        """The payload of the inner chunk at grid position ``coords``; None if never written."""
        if not self.sharded:
            buf = sync(self.store.get(self._key(coords), default_buffer_prototype()))
            if buf is None:
                return None
            data = buf.to_bytes()
        else:
            from zarr.abc.store import RangeByteRequest

            shard = tuple(c // n for c, n in zip(coords, self.per_shard, strict=True))
            index = self._index(shard)
            if index is None:
                return None
            offset, nbytes = index[
                tuple(c % n for c, n in zip(coords, self.per_shard, strict=True))
            ]
            if offset == _MISSING and nbytes == _MISSING:
                return None
            request = RangeByteRequest(int(offset), int(offset + nbytes))
            buf = sync(
                self.store.get(self._key(shard), default_buffer_prototype(), byte_range=request)
            )
            if buf is None:
                raise KeyError(self._key(shard))
            data = buf.to_bytes()
        if self.checksum:
            _check_crc(data[:-_CRC], data[-_CRC:], f"chunk {coords} of {self.path}")
            data = data[:-_CRC]
        return data


def _check_crc(data: bytes, stored: bytes, what: str) -> None:
    import google_crc32c

    from eocube.errors import CorruptChunkError

    if np.uint32(google_crc32c.value(data)).tobytes() != stored:
        raise CorruptChunkError(f"{what}: crc32c mismatch")
