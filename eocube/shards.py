"""Shards: zarr's ``sharding_indexed`` objects, the one place their byte layout is read or written.

A shard object holds the payloads of its inner chunks one after the other, then an index
of (offset, nbytes) per inner chunk in C order, each a little-endian u64 (both
2**64 - 1 for a chunk never written), then the crc32c of the index, little-endian
(docs/format.md, "Shards"). In an eocube store every payload itself ends with its own
crc32c. :class:`ShardIndex` parses, builds and checks indexes; :func:`assemble` makes a
shard object; :func:`read_index` fetches an index alone with one suffix request;
:func:`payload_nbytes` sums an array's payloads from their indexes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from eocube.errors import CorruptChunkError
from eocube.layout import is_temporary

ENTRY_NBYTES = 16
"""Bytes of one index entry: offset and nbytes, little-endian u64."""
CHECKSUM_NBYTES = 4
"""Bytes of a crc32c."""
MISSING = 2**64 - 1
"""Offset and nbytes of an inner chunk that was never written."""


def crc32c(data: bytes | memoryview) -> bytes:
    """The crc32c of ``data``, little-endian, as zarr's ``crc32c`` codec appends it."""
    import google_crc32c

    return int(google_crc32c.value(bytes(data))).to_bytes(CHECKSUM_NBYTES, "little")


def with_checksum(data: bytes) -> bytes:
    """``data`` followed by its crc32c."""
    return data + crc32c(data)


def strip_checksum(data: bytes, what: str) -> bytes:
    """``data`` without its trailing crc32c, after checking it.

    Raises
    ------
    CorruptChunkError
        If the checksum does not match (``what`` names the object in the message).
    """
    if len(data) < CHECKSUM_NBYTES or crc32c(data[:-CHECKSUM_NBYTES]) != data[-CHECKSUM_NBYTES:]:
        raise CorruptChunkError(f"{what}: crc32c mismatch")
    return data[:-CHECKSUM_NBYTES]


@dataclass(frozen=True)
class ShardIndex:
    """The index of one shard: ``entries[i] = (offset, nbytes)`` of inner chunk ``i``.

    Parameters
    ----------
    entries : ndarray of uint64, shape (chunks, 2)
        In C order of the chunks inside the shard; :data:`MISSING` twice for a chunk
        never written.
    """

    entries: np.ndarray

    @staticmethod
    def nbytes(chunks: int) -> int:
        """Bytes of the index of a shard of ``chunks`` inner chunks (checksum included)."""
        return chunks * ENTRY_NBYTES + CHECKSUM_NBYTES

    @classmethod
    def from_bytes(cls, data: bytes, chunks: int, what: str = "shard index") -> ShardIndex:
        """Parse an index (its entries and checksum, nothing else), checking the checksum."""
        if len(data) != cls.nbytes(chunks):
            raise CorruptChunkError(
                f"{what}: {len(data)} bytes where {cls.nbytes(chunks)} were expected"
            )
        body = strip_checksum(data, what)
        return cls(np.frombuffer(body, "<u8").reshape(chunks, 2))

    @classmethod
    def of_shard(cls, shard: bytes, chunks: int, what: str = "shard") -> ShardIndex:
        """The index at the end of a whole shard object, checked against the object."""
        size = cls.nbytes(chunks)
        if len(shard) < size:
            raise CorruptChunkError(f"{what}: {len(shard)} bytes cannot hold its index")
        index = cls.from_bytes(shard[-size:], chunks, f"index of {what}")
        if not index.fits(len(shard)):
            raise CorruptChunkError(f"{what}: its index points past its chunks")
        return index

    @classmethod
    def build(cls, sizes: Sequence[int | None]) -> ShardIndex:
        """The index of payloads of these sizes laid one after the other (None: absent)."""
        entries = np.full((len(sizes), 2), MISSING, dtype="<u8")
        offset = 0
        for i, size in enumerate(sizes):
            if size is not None:
                entries[i] = (offset, size)
                offset += size
        return cls(entries)

    def to_bytes(self) -> bytes:
        """The index as it ends a shard: entries, then their crc32c."""
        return with_checksum(np.ascontiguousarray(self.entries, dtype="<u8").tobytes())

    @property
    def chunks(self) -> int:
        """Inner chunks the shard has room for."""
        return int(self.entries.shape[0])

    @property
    def present(self) -> np.ndarray:
        """Whether each inner chunk was written."""
        return ~((self.entries[:, 0] == MISSING) & (self.entries[:, 1] == MISSING))

    def range(self, chunk: int) -> tuple[int, int] | None:
        """``(start, stop)`` of inner chunk ``chunk``'s bytes in the shard; None if absent."""
        offset, nbytes = (int(v) for v in self.entries[chunk])
        if offset == MISSING and nbytes == MISSING:
            return None
        return offset, offset + nbytes

    def ranges(self) -> Iterator[tuple[int, tuple[int, int]]]:
        """``(chunk, (start, stop))`` of every inner chunk written."""
        for chunk in range(self.chunks):
            found = self.range(chunk)
            if found is not None:
                yield chunk, found

    def fits(self, shard_nbytes: int) -> bool:
        """Whether every chunk lies in a shard object of ``shard_nbytes`` before the index."""
        end = shard_nbytes - self.nbytes(self.chunks)
        return all(stop <= end for _, (_, stop) in self.ranges())

    def stored_nbytes(self, checksummed: bool = True) -> int:
        """Bytes of the payloads (without their own crc32c when ``checksummed``)."""
        present = self.present
        total = int(self.entries[present, 1].sum())
        return total - (CHECKSUM_NBYTES * int(present.sum()) if checksummed else 0)

    def damaged(self, shard: bytes) -> list[int]:
        """Inner chunks (C order) of a whole shard object whose own crc32c fails."""
        end = len(shard) - self.nbytes(self.chunks)
        bad = []
        for chunk, (start, stop) in self.ranges():
            data = shard[start:stop]
            if (
                stop - start < CHECKSUM_NBYTES
                or stop > end
                or crc32c(data[:-CHECKSUM_NBYTES]) != data[-CHECKSUM_NBYTES:]
            ):
                bad.append(chunk)
        return bad


def assemble(payloads: Sequence[bytes | None]) -> bytes | None:
    """A shard object from the payloads of its inner chunks in C order (None: absent);
    None when every chunk is absent (zarr writes no object then)."""
    if all(p is None for p in payloads):
        return None
    index = ShardIndex.build([None if p is None else len(p) for p in payloads])
    return b"".join([*(p for p in payloads if p is not None), index.to_bytes()])


def read_index(store: Store, key: str, chunks: int) -> tuple[ShardIndex, int] | None:
    """A shard's index (one suffix request) and the object's size; None if absent.

    Raises
    ------
    CorruptChunkError
        If the index fails its checksum, points past the chunks, or the object is too
        short to hold it.
    """
    size = ShardIndex.nbytes(chunks)
    try:
        total = int(sync(store.getsize(key)))
    except FileNotFoundError:
        return None
    if total < size:
        raise CorruptChunkError(f"shard {key}: {total} bytes cannot hold its index")
    buf = sync(store.get(key, default_buffer_prototype(), byte_range=SuffixByteRequest(size)))
    if buf is None:
        return None
    index = ShardIndex.from_bytes(buf.to_bytes(), chunks, f"index of shard {key}")
    if not index.fits(total):
        raise CorruptChunkError(f"shard {key}: its index points past its chunks")
    return index, total


def read_range(store: Store, key: str, start: int, stop: int) -> bytes | None:
    """Bytes ``[start, stop)`` of object ``key`` (one range request); None if absent."""
    request = RangeByteRequest(start, stop)
    buf = sync(store.get(key, default_buffer_prototype(), byte_range=request))
    return None if buf is None else buf.to_bytes()


def read_object(store: Store, key: str) -> bytes | None:
    """The bytes of object ``key``; None if absent."""
    buf = sync(store.get(key, default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def chunks_per_shard(array: Any) -> tuple[int, ...]:
    """Inner chunks along each dim of a shard of a sharded zarr array."""
    if array.shards is None:
        raise ValueError(f"array {array.path!r} is not sharded")
    return tuple(s // c for s, c in zip(array.shards, array.chunks, strict=True))


def shard_key(array: Any, shard: Sequence[int]) -> str:
    """The store key of the shard at grid position ``shard`` of a zarr array."""
    key = array.metadata.encode_chunk_key(tuple(shard))
    path = array.store_path.path.rstrip("/")
    return f"{path}/{key}" if path else key


def payload_nbytes(array: Any) -> int:
    """Bytes of the payloads of a sharded zarr array (indexes and checksums excluded),
    from one listing and the shards' indexes alone (one suffix request each)."""
    chunks = math.prod(chunks_per_shard(array))
    store = array.store_path.store
    prefix = array.store_path.path.rstrip("/") + "/c"

    async def keys() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    total = 0
    for key in sync(keys()):
        if is_temporary(key):
            continue
        found = read_index(store, key, chunks)
        if found is not None:
            total += found[0].stored_nbytes()
    return total
