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
