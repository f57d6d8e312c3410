"""The decoded-chunk cache: bounded, single-flight, never stale, never a damaged chunk;
and parallel reads that give the same bits as decoding each chunk alone."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
import eocube.reader
from eocube import cache, shards
from eocube.chunk import decode_chunk
from eocube.errors import CorruptChunkError
from eocube.reader import ChunkReader


@pytest.fixture
def fresh_cache() -> Iterator[cache.ChunkCache]:
    """The process's cache, emptied before and after the test, at its usual budget."""
    budget = cache.CHUNKS.max_bytes
    cache.CHUNKS.clear()
    yield cache.CHUNKS
    cache.CHUNKS.clear()
    cache.CHUNKS.resize(budget)


@pytest.fixture(scope="module")
def s2_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 dates of a Sentinel-2 series in 9 chunks of 8 dates (one shard)."""
    store = tmp_path_factory.mktemp("cache") / "s2.eocube"
    cube = open_cube("s2_l2a_worldcereal_72x4x64x64")
    eocube.to_eocube(cube, store, crf=28, chunks={"time": 8}, measure=False, progress=False)
    return store


def _block(nbytes: int, value: int = 0) -> np.ndarray:
    return np.full(nbytes, value, np.uint8)


def test_least_recently_used_blocks_leave_first_within_the_budget() -> None:
    chunks = cache.ChunkCache(max_bytes=300)
    for key in "abc":
        chunks.get(key, lambda: _block(100))
    chunks.get("a", lambda: _block(100, 9))  # a hit: "a" becomes the most recent
    chunks.get("d", lambda: _block(100))
    assert chunks.nbytes == 300
    assert len(chunks) == 3
    loads: list[str] = []

    def load(key: str) -> np.ndarray:
        loads.append(key)
        return _block(100)

    chunks.get("b", lambda: load("b"))  # evicted: loaded again
    chunks.get("a", lambda: load("a"))  # kept
    assert loads == ["b"]
    assert chunks.get("a", lambda: _block(100, 7))[0] == 0  # still the first block


def test_a_block_larger_than_the_budget_is_returned_not_kept() -> None:
    chunks = cache.ChunkCache(max_bytes=100)
    assert chunks.get("big", lambda: _block(101)).nbytes == 101
    assert len(chunks) == 0
    assert chunks.nbytes == 0
    off = cache.ChunkCache(max_bytes=0)
    off.get("a", lambda: _block(1))
    assert len(off) == 0


def test_cached_blocks_are_read_only() -> None:
    chunks = cache.ChunkCache(max_bytes=1000)
    block = chunks.get("a", lambda: _block(10))
    with pytest.raises(ValueError, match="read-only"):
        block[0] = 1


def test_concurrent_requests_for_one_chunk_share_one_load() -> None:
    chunks = cache.ChunkCache(max_bytes=1000)
    loads = 0
    start = threading.Barrier(8)

    def load() -> np.ndarray:
        nonlocal loads
        loads += 1
        time.sleep(0.05)  # long enough for the other threads to arrive while loading
        return _block(10, 5)

    results: list[np.ndarray] = []

    def ask() -> None:
        start.wait()
        results.append(chunks.get("k", load))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == 1
    assert len(results) == 8
    assert all(r is results[0] for r in results)


def test_a_failed_load_is_not_cached_and_its_error_reaches_every_waiter() -> None:
    chunks = cache.ChunkCache(max_bytes=1000)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def failing() -> np.ndarray:
        time.sleep(0.05)
        raise CorruptChunkError("chunk (3,) is damaged")

    def ask() -> None:
        start.wait()
        try:
            chunks.get("k", failing)
        except CorruptChunkError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4
    assert len(chunks) == 0
    assert chunks.get("k", lambda: _block(3, 1))[0] == 1  # the next request loads again


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENVIRONMENT_VARIABLE, "1e6")
    assert cache._initial_max_bytes() == 1_000_000
    monkeypatch.setenv(cache.ENVIRONMENT_VARIABLE, "lots")
    with pytest.raises(ValueError, match="EOCUBE_CACHE_BYTES"):
        cache._initial_max_bytes()
    with pytest.raises(ValueError, match="negative"):
        cache.set_max_bytes(-1)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = eocube.reader.decode_chunk

    def counting(payload: bytes, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return real(payload, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(eocube.reader, "decode_chunk", counting)
    return calls


def test_windows_that_share_a_chunk_decode_it_once_across_threads(
    s2_store: Path, fresh_cache: cache.ChunkCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = _count_decodes(monkeypatch)
    rng = np.random.default_rng(0)
    origins = [(int(t), int(y), int(x)) for t, y, x in rng.integers(0, [64, 32, 32], (48, 3))]
    touched = {(t // 8,) for t, _, _ in origins} | {((t + 7) // 8,) for t, _, _ in origins}
    with eocube.open_dataset(s2_store) as ds:

        def window(origin: tuple[int, int, int]) -> np.ndarray:
            t, y, x = origin
            return ds.data.isel(time=slice(t, t + 8), y=slice(y, y + 32), x=slice(x, x + 32)).values

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(window, origins))
        assert len(decodes) == len(touched)  # each chunk decoded once, by one thread
        decodes.clear()
        expected = ds.data.values  # cached chunks are copied, the others decoded in place
        assert len(decodes) == 9 - len(touched)
    for (t, y, x), values in zip(origins, got, strict=True):
        np.testing.assert_array_equal(values, expected[t : t + 8, :, y : y + 32, x : x + 32])


def test_a_whole_chunk_read_decodes_in_place_and_keeps_the_cache_for_smaller_reads(
    s2_store: Path, fresh_cache: cache.ChunkCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = _count_decodes(monkeypatch)
    # cache=False: xarray itself would keep the whole array after the first read
    with eocube.open_dataset(s2_store, cache=False) as ds:
        whole = ds.data.values
        assert len(decodes) == 9
        assert len(fresh_cache) == 0  # whole chunks went straight into the result
        part = ds.data.isel(time=slice(3, 5), x=slice(0, 10)).values
        assert len(decodes) == 10
        assert len(fresh_cache) == 1
    np.testing.assert_array_equal(part, whole[3:5, ..., :10])


def test_three_dimensional_variables_read_whole_in_place(
    tmp_path: Path, fresh_cache: cache.ChunkCache
) -> None:
    cube = open_cube("era5_t2m_uk_744h").isel(time=slice(0, 80), band=0, drop=True)
    store = tmp_path / "t2m.eocube"
    eocube.to_eocube(cube, store, crf=24, chunks={"time": 16}, measure=False, progress=False)
    with eocube.open_dataset(store) as ds:
        assert ds.data.dims == ("time", "y", "x")
        whole = ds.data.values
    cache.set_max_bytes(cache.DEFAULT_MAX_BYTES)
    with eocube.open_dataset(store) as ds:  # chunk by chunk, through the cache
        parts = np.concatenate([ds.data.isel(time=slice(t, t + 8)).values for t in range(0, 80, 8)])
    np.testing.assert_array_equal(whole, parts)


def test_values_returned_are_the_callers_own(s2_store: Path, fresh_cache: cache.ChunkCache) -> None:
    with eocube.open_dataset(s2_store) as ds:
        first = ds.data.isel(time=slice(0, 8)).values
        first[...] = 0  # must not reach the cached block
        again = ds.data.isel(time=slice(0, 8)).values
    assert again.any()


def test_a_rewritten_store_is_never_read_from_the_cache(
    tmp_path: Path, fresh_cache: cache.ChunkCache
) -> None:
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    store = tmp_path / "c.eocube"
    eocube.to_eocube(cube, store, crf=30, measure=False, progress=False)
    with eocube.open_dataset(store) as ds:
        before = ds.data.values
    changed = cube.copy(deep=True)
    changed["data"] = changed.data[::-1].assign_coords(time=cube.time)  # same shape, new values
    eocube.to_eocube(changed, store, mode="w", crf=30, measure=False, progress=False)
    with eocube.open_dataset(store) as ds:
        after = ds.data.values
    with xr.open_dataset(store, engine="eocube") as ds:
        np.testing.assert_array_equal(ds.data.values, after)  # through the plugin alike
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after[0], before[-1], atol=np.abs(before).max() * 0.2)


def test_a_damaged_chunk_raises_even_after_its_store_was_read_whole(
    tmp_path: Path, fresh_cache: cache.ChunkCache
) -> None:
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    store = tmp_path / "c.eocube"
    eocube.to_eocube(cube, store, crf=30, chunks={"time": 8}, measure=False, progress=False)
    with eocube.open_dataset(store) as ds:
        assert ds.data.values.size  # every chunk decoded and cached
    group = zarr.open_group(store, mode="r")
    array = group["data"]
    assert isinstance(array, zarr.Array)
    key = shards.shard_key(array, (0, 0, 0, 0))
    shard = store / key
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # inside the first chunk's payload
    shard.write_bytes(bytes(data))
    with eocube.open_dataset(store) as ds, pytest.raises(CorruptChunkError, match="chunk"):
        _ = ds.data.isel(time=0).values


def test_parallel_reads_give_the_bits_of_each_chunk_decoded_alone(
    s2_store: Path, fresh_cache: cache.ChunkCache
) -> None:
    cache.set_max_bytes(0)  # every read decodes: the parallel path itself is compared
    group = zarr.open_group(s2_store, mode="r")
    array = group["data"]
    assert isinstance(array, zarr.Array)
    reader = ChunkReader(array, "data")
    grid = [range(math.ceil(n / c)) for n, c in zip(array.shape, array.chunks, strict=True)]
    serial = np.empty(array.shape, array.dtype)
    for coords in itertools.product(*grid):
        payload = reader.payload(coords)
        assert payload is not None
        where = tuple(slice(k * c, (k + 1) * c) for k, c in zip(coords, array.chunks, strict=True))
        serial[where] = decode_chunk(payload, threads=1)[
            tuple(slice(0, s.stop - s.start) for s in where)
        ]
    with eocube.open_dataset(s2_store, mask_and_scale=False) as ds:
        whole = ds.data.values  # all chunks at once, on the reader's thread pool
        by_dask = ds.data.chunk({"time": 8}).compute(scheduler="threads", num_workers=8).values
        odd = ds.data.isel(time=[70, 3, 4, 5, 40], x=slice(10, 60, 3)).values
    assert whole.dtype == serial.dtype
    np.testing.assert_array_equal(whole, serial)
    np.testing.assert_array_equal(by_dask, serial)
    np.testing.assert_array_equal(odd, serial[[70, 3, 4, 5, 40]][..., 10:60:3])


def test_concurrent_reads_of_one_shard_fetch_its_index_once(
    s2_store: Path, fresh_cache: cache.ChunkCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[str] = []
    real = shards.read_index

    def slow_read_index(*args: object, **kwargs: object) -> object:
        fetches.append(str(args[1]))
        time.sleep(0.05)  # a slow link: every thread arrives while the first one waits
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shards, "read_index", slow_read_index)
    start = threading.Barrier(8)
    with eocube.open_dataset(s2_store) as ds:

        def read(t: int) -> np.ndarray:
            start.wait()
            return ds.data.isel(time=slice(8 * t, 8 * t + 8)).values

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(read, range(8)))
    assert len(parts) == 8
    assert len(fetches) == 1, fetches


def test_decodes_share_the_cores_as_codec_threads() -> None:
    slots = eocube.reader._DecodeSlots(cores=4)
    with slots.slot() as alone:
        assert alone == 4  # a decode alone gets every core
        with slots.slot() as second, slots.slot() as third:
            assert (second, third) == (2, 1)  # later ones share what is left, one at least
    assert slots.active == 0
    with slots.slot() as again, slots.slot(most=1) as capped:
        assert (again, capped) == (4, 1)


# -- byte blocks on disk -------------------------------------------------------------------


def test_disk_blocks_read_longest_ago_leave_first_down_to_the_low_water_mark(
    tmp_path: Path,
) -> None:
    blocks = cache.DiskBlockCache(tmp_path, max_bytes=1000)
    for name in "abcd":
        blocks.put(name, 0, bytes([ord(name)]) * 250)
    assert blocks.get("a", 0) == b"a" * 250  # a read: "a" becomes the most recent
    blocks.put("e", 0, b"e" * 250)  # 1250 bytes > 1000: down to at most 900
    assert blocks.get("b", 0) is None
    assert blocks.get("c", 0) is None
    assert [blocks.get(name, 0) for name in "ade"] == [bytes([ord(n)]) * 250 for n in "ade"]
    assert blocks.nbytes == 750
    # an object whose blocks all left leaves no folder behind
    assert len(list(tmp_path.iterdir())) == 3


def test_disk_blocks_are_kept_per_object_and_index(tmp_path: Path) -> None:
    blocks = cache.DiskBlockCache(tmp_path, max_bytes=2**20)
    blocks.put("hf://datasets/a/b@main/x", 0, b"first")
    blocks.put("hf://datasets/a/b@main/x", 1, b"second")
    blocks.put("hf://datasets/a/b@main/y", 0, b"other")
    again = cache.DiskBlockCache(tmp_path, max_bytes=2**20)  # another process, say
    assert again.get("hf://datasets/a/b@main/x", 0) == b"first"
    assert again.get("hf://datasets/a/b@main/x", 1) == b"second"
    assert again.get("hf://datasets/a/b@main/y", 0) == b"other"
    assert again.get("hf://datasets/a/b@main/y", 1) is None
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".part-")]


def test_a_disk_block_larger_than_the_budget_or_a_zero_budget_keeps_nothing(
    tmp_path: Path,
) -> None:
    small = cache.DiskBlockCache(tmp_path / "small", max_bytes=10)
    small.put("x", 0, b"0123456789ab")
    assert small.get("x", 0) is None
    off = cache.DiskBlockCache(tmp_path / "off", max_bytes=0)
    off.put("x", 0, b"0")
    assert off.get("x", 0) is None
    assert off.nbytes == 0


def test_the_disk_budget_comes_from_the_argument_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cache.DISK_ENVIRONMENT_VARIABLE, raising=False)
    assert cache.DiskBlockCache(tmp_path).max_bytes == cache.DEFAULT_DISK_MAX_BYTES
    monkeypatch.setenv(cache.DISK_ENVIRONMENT_VARIABLE, "2e6")
    assert cache.DiskBlockCache(tmp_path).max_bytes == 2_000_000
    assert cache.DiskBlockCache(tmp_path, max_bytes=5).max_bytes == 5
    monkeypatch.setenv(cache.DISK_ENVIRONMENT_VARIABLE, "a lot")
    with pytest.raises(ValueError, match="EOCUBE_BLOCK_CACHE_BYTES='a lot' is not a number"):
        cache.DiskBlockCache(tmp_path)
    monkeypatch.setenv(cache.DISK_ENVIRONMENT_VARIABLE, "-1")
    with pytest.raises(ValueError, match="must not be negative"):
        cache.DiskBlockCache(tmp_path)
    with pytest.raises(ValueError, match="max_bytes must not be negative"):
        cache.DiskBlockCache(tmp_path, max_bytes=-1)


def test_threads_filling_one_disk_cache_keep_it_within_its_budget(tmp_path: Path) -> None:
    blocks = cache.DiskBlockCache(tmp_path, max_bytes=64 * 1000)
    errors: list[BaseException] = []

    def fill(worker: int) -> None:
        try:
            for i in range(100):
                blocks.put(f"object-{worker}", i, bytes([worker]) * 1000)
                got = blocks.get(f"object-{worker}", i)
                assert got is None or got == bytes([worker]) * 1000
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=fill, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert 0 < blocks.nbytes <= blocks.max_bytes
