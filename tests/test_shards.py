"""eocube.shards: the one ShardIndex, against zarr's own shards and damaged ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from cubes import open_cube

import eocube
from eocube import shards
from eocube.errors import CorruptChunkError
from eocube.shards import MISSING, ShardIndex
from eocube.testing import check_shard, shard_objects


def test_build_to_bytes_from_bytes_round_trip() -> None:
    index = ShardIndex.build([5, None, 7, None])
    assert index.entries.tolist() == [[0, 5], [MISSING, MISSING], [5, 7], [MISSING, MISSING]]
    again = ShardIndex.from_bytes(index.to_bytes(), 4)
    np.testing.assert_array_equal(again.entries, index.entries)
    assert list(again.ranges()) == [(0, (0, 5)), (2, (5, 12))]
    assert again.present.tolist() == [True, False, True, False]
    assert ShardIndex.nbytes(4) == len(index.to_bytes()) == 4 * 16 + 4


def test_assemble_and_check_payloads() -> None:
    payloads = [shards.with_checksum(b"abc"), None, shards.with_checksum(b"defgh")]
    data = shards.assemble(payloads)
    assert data is not None
    index = check_shard(data, 3)
    assert index.stored_nbytes() == 3 + 5
    assert shards.assemble([None, None]) is None
    damaged = bytearray(data)
    damaged[1] ^= 1
    assert ShardIndex.of_shard(bytes(damaged), 3).damaged(bytes(damaged)) == [0]
    with pytest.raises(AssertionError, match=r"chunks \[0\]"):
        check_shard(bytes(damaged), 3)
    with pytest.raises(CorruptChunkError, match="crc32c mismatch"):
        ShardIndex.of_shard(bytes(damaged[:-1]) + bytes([damaged[-1] ^ 1]), 3)
    with pytest.raises(CorruptChunkError, match="cannot hold its index"):
        ShardIndex.of_shard(data[:10], 3)


def test_reads_zarrs_own_shards_and_eocubes_alike(tmp_path: Path) -> None:
    # a shard written by zarr itself (zstd + crc32c inside sharding_indexed)
    values = np.arange(4 * 6 * 6, dtype="uint16").reshape(4, 6, 6)
    arr = zarr.create_array(
        tmp_path / "z.zarr",
        shape=values.shape,
        chunks=(2, 3, 3),
        shards=(4, 6, 6),
        dtype="uint16",
        compressors=[zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()],
    )
    arr[:] = values
    shard = next(p for p in (tmp_path / "z.zarr" / "c").rglob("*") if p.is_file())
    index = check_shard(shard, 8)
    assert index.present.all()
    # an eocube store: the index alone, by one suffix request, gives the payload bytes
    store = tmp_path / "c.eocube"
    eocube.to_eocube(
        open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]],
        store,
        crf=30,
        chunks={"time": 8, "y": 26, "x": 23},
        measure=False,
    )
    array = zarr.open_group(store, mode="r")["data"]
    per_shard = int(np.prod(shards.chunks_per_shard(array)))
    found = shards.read_index(
        array.store_path.store, shards.shard_key(array, (0, 0, 0, 0)), per_shard
    )
    assert found is not None
    assert found[1] == shard_objects(store)[0].stat().st_size
    total = sum(check_shard(p, per_shard).stored_nbytes() for p in shard_objects(store))
    assert shards.payload_nbytes(array) == total > 0
