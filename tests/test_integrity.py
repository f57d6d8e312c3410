"""Damaged stores and payloads: CorruptChunkError naming the variable and chunk, or the same values.

A real store (Sentinel-2, 4 shards of 6 x 5 chunks) has its shard objects damaged by
byte flips, truncations, insertions and appended garbage under many seeds; every read
(whole array, one chunk, dask threads and processes) either raises CorruptChunkError
naming the variable and chunk or returns exactly the intact values. The chunk decoder
is fuzzed with mutated real payloads: nothing but eocube's own errors escapes it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import eocube
from eocube.chunk import decode_chunk, encode_chunk
from eocube.errors import CorruptChunkError, EocubeError
from eocube.shards import ShardIndex
from eocube.testing import shard_objects

DATA = Path(__file__).parent / "data"
CUBE = "s2_l2a_openeo_gfmap_19x4x52x46"
CROP = {"time": slice(0, 8), "y": slice(0, 50)}  # 8 dates, 50 x 46 px
CHUNKS = {"time": 8, "y": 10, "x": 10}  # 5 x 5 chunks of 10 x 10 px, in 2 x 2 shards
SEEDS = range(60)
NAMES_CHUNK = re.compile(r"variable 'data', chunks? \(\d")

# how many mutated payloads the decoder fuzz tries (CI: a few seconds); raise it to hunt
FUZZ_EXAMPLES = int(os.environ.get("EOCUBE_FUZZ_EXAMPLES", "600"))
RANDOM_MUTATIONS = int(os.environ.get("EOCUBE_RANDOM_MUTATIONS", "3000"))


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xr.Dataset]:
    """A lossless store of a real cube and its values as read before any damage."""
    with xr.open_dataset(DATA / f"{CUBE}.nc") as ds:
        cube = ds[["data"]].isel(CROP).load()
    store = tmp_path_factory.mktemp("integrity") / "s2.eocube"
    eocube.to_eocube(cube, store, lossless=True, chunks=CHUNKS, measure=False)
    with eocube.open_dataset(store) as reopened:
        values = reopened.load()
    np.testing.assert_array_equal(values.data.values, cube.data.values)
    return store, values


@pytest.fixture
def damaged_copy(intact: tuple[Path, xr.Dataset], tmp_path: Path) -> Path:
    store = tmp_path / "copy.eocube"
    shutil.copytree(intact[0], store)
    return store


def _damage(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One kind of damage, chosen by the seed; the result always differs from ``data``."""
    b = bytearray(data)
    index = ShardIndex.nbytes(16)  # the shard index, at the end
    kind = rng.choice(["flip", "flip-index", "truncate", "insert", "append", "zero"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= rng.randrange(1, 256)
    elif kind == "flip-index":
        b[len(b) - 1 - rng.randrange(index)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.choice([0, 1, rng.randrange(len(b)), len(b) - 1, len(b) - 4])]
    elif kind == "insert":
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "append":
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        at = rng.randrange(len(b) - 64)
        b[at : at + 64] = bytes(64)
    if bytes(b) == data:  # zeroing zeros changes nothing: flip instead
        b[rng.randrange(len(b))] ^= 0xFF
    return kind, bytes(b)


def _read_or_error(read: Callable[[], np.ndarray], expected: np.ndarray) -> str | None:
    """The CorruptChunkError's message, or None after checking the values are the intact ones."""
    try:
        values = read()
    except CorruptChunkError as exc:
        message = str(exc)
        assert NAMES_CHUNK.search(message), message
        return message
    np.testing.assert_array_equal(values, expected)
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_damaged_shard_raises_corrupt_chunk_or_reads_the_same(
    intact: tuple[Path, xr.Dataset], seed: int
) -> None:
    store, reference = intact
    expected = reference.data.values
    rng = random.Random(seed)
    shard = rng.choice(shard_objects(store))
    original = shard.read_bytes()
    kind, damaged = _damage(original, rng)
    # which chunk of the whole array a partial read touches: one inside the damaged shard
    _, _, ys, xs = (int(p) for p in shard.relative_to(store / "data" / "c").parts)
    y = ys * 40 + 10 * rng.randrange(4 if ys == 0 else 1)
    x = xs * 40 + 10 * rng.randrange(4 if xs == 0 else 1)
    region = {"y": slice(y, y + 10), "x": slice(x, x + 10)}
    try:
        shard.write_bytes(damaged)
        with eocube.open_dataset(store) as ds:
            whole = _read_or_error(lambda: ds.data.values, expected)
        with eocube.open_dataset(store) as ds:
            part = _read_or_error(
                lambda: ds.data.isel(region).values, reference.data.isel(region).values
            )
        lazy = whole
        if seed % 4 == 0:  # dask's path too, now and then (the same error or the same values)
            with (
                eocube.open_dataset(store, chunks={}) as ds,
                dask.config.set(scheduler="threads"),
            ):
                lazy = _read_or_error(lambda: ds.data.values, expected)
    finally:
        shard.write_bytes(original)
    # insertions between the last chunk and the index leave every checksum whole, and the
    # values too; every other damage touches checksummed bytes and must be caught
    if kind != "insert":
        assert whole is not None, f"{kind} damage of {shard.name} read silently"
        assert lazy is not None, f"{kind} damage of {shard.name} read silently (dask)"
    assert (whole is None) == (lazy is None)
    if part is not None:
        assert "(0, 0, " in part, part


def test_error_names_the_damaged_chunk(damaged_copy: Path) -> None:
    shard = damaged_copy / "data" / "c" / "0" / "0" / "1" / "1"  # chunk (0, 0, 4, 4) alone
    data = bytearray(shard.read_bytes())
    data[5] ^= 0x10  # inside the first chunk of the shard
    shard.write_bytes(bytes(data))
    with eocube.open_dataset(damaged_copy) as ds:
        with pytest.raises(CorruptChunkError, match=r"variable 'data', chunk \(0, 0, 4, 4\)"):
            ds.data.values  # noqa: B018
        # the other shards still read
        np.testing.assert_array_equal(ds.data.isel(y=slice(0, 40)).values.shape, (8, 4, 40, 46))


def test_empty_shard_object_raises_instead_of_reading_fill_values(damaged_copy: Path) -> None:
    # zarr reads an empty object as a missing chunk: NaN/fill values, silently
    (damaged_copy / "data" / "c" / "0" / "0" / "0" / "1").write_bytes(b"")
    with eocube.open_dataset(damaged_copy) as ds:
        with pytest.raises(CorruptChunkError, match=r"variable 'data', chunks \(0, 0, 0\.\.3, 4"):
            ds.data.values  # noqa: B018
        with pytest.raises(CorruptChunkError, match="truncated"):
            ds.data.isel(x=slice(40, 46)).values  # noqa: B018


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_dask_threads_and_processes_raise_the_same(damaged_copy: Path, scheduler: str) -> None:
    shard = damaged_copy / "data" / "c" / "0" / "0" / "0" / "1"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    with eocube.open_dataset(damaged_copy) as ds, pytest.raises(CorruptChunkError) as eager:
        ds.data.values  # noqa: B018
    with (
        eocube.open_dataset(damaged_copy, chunks={}) as ds,
        dask.config.set(scheduler=scheduler, num_workers=2),
        pytest.raises(CorruptChunkError) as lazy,
    ):
        ds.data.compute()
    assert NAMES_CHUNK.search(str(lazy.value)), lazy.value
    # dask reads one stored chunk per task: the same chunk as the eager read names
    chunk = re.search(r"chunk (\([^)]*\))", str(eager.value))
    assert chunk is not None
    assert chunk.group(1) in str(lazy.value)


@pytest.mark.parametrize("seed", range(12))
def test_damaged_coordinates_raise(intact: tuple[Path, xr.Dataset], seed: int) -> None:
    # coordinates are chunks too, with checksums: damage must not decode to other dates
    store, reference = intact
    rng = random.Random(seed)
    name = ["time", "band", "y", "x"][seed % 4]
    obj = store / name / "c" / "0"
    original = obj.read_bytes()
    damaged = bytearray(original)
    damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
    try:
        obj.write_bytes(bytes(damaged))
        with (
            pytest.raises(CorruptChunkError, match=rf"variable '{name}', chunks? \("),
            eocube.open_dataset(store) as ds,
        ):
            ds.load()
    finally:
        obj.write_bytes(original)
    with eocube.open_dataset(store) as ds:
        xr.testing.assert_identical(ds.load(), reference)


# ---------------------------------------------------------------------------------------
# The chunk decoder on mutated real payloads


def _crop(name: str, t: int, b: int, y: int, x: int) -> np.ndarray:
    with xr.open_dataset(DATA / f"{name}.nc") as ds:
        return ds["data"][:t, :b, :y, :x].values


def _real_payloads() -> dict[str, bytes]:
    s2 = _crop("s2_l2a_worldcereal_72x4x64x64", 4, 4, 24, 20)  # nodata 0
    s2[0, :, :4, :5] = 0
    era = _crop("era5_t2m_uk_744h", 6, 1, 20, 24)
    tos = _crop("stars_cmip3_tos_24x1x170x180", 3, 1, 30, 30)  # NaN over land
    landsat = _crop("landsat7_rgb_byte", 1, 3, 40, 40)
    uvz = _crop("erainterim_uvz", 2, 3, 20, 20)
    return {
        "ffv1": encode_chunk(s2, "ffv1-lossless", nodata=0),
        "ffv1-int16": encode_chunk(uvz, "ffv1-lossless"),
        "hevc-444-nan": encode_chunk(tos, "hevc-12bit-444"),
        "hevc-luma-bound": encode_chunk(s2, "hevc-12bit-420-luma", nodata=0, max_abs_error=2),
        "hevc-bands-bound": encode_chunk(tos, "hevc-12bit-bands", max_abs_error=0.05),
        "av1": encode_chunk(s2, "av1-10bit", nodata=0),
        "vp9-byte": encode_chunk(landsat, "vp9-8bit-444", nodata=0),
        "h264": encode_chunk(era, "h264-10bit"),
    }


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    return _real_payloads()


_NAMES = sorted(["ffv1", "ffv1-int16", "hevc-444-nan", "hevc-luma-bound", "hevc-bands-bound",
                 "av1", "vp9-byte", "h264"])  # fmt: skip
_where = st.floats(0, 1, exclude_max=True)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _where, st.integers(1, 255)),
    st.tuples(st.just("flip-header"), st.integers(0, 160), st.integers(1, 255)),
    st.tuples(st.just("truncate"), _where),
    st.tuples(st.just("insert"), _where, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _where, st.integers(1, 64)),
    st.tuples(st.just("splice"), _where, st.sampled_from(_NAMES), _where),
    st.tuples(st.just("zero"), _where, st.integers(1, 64)),
)


def _mutate(payload: bytes, mutation: tuple, payloads: dict[str, bytes]) -> bytes:
    b = bytearray(payload)
    kind, *args = mutation
    n = len(b)
    if n == 0:
        return payload
    if kind == "flip":
        b[int(args[0] * n)] ^= args[1]
    elif kind == "flip-header":
        b[min(args[0], n - 1)] ^= args[1]
    elif kind == "truncate":
        b = b[: int(args[0] * n)]
    elif kind == "insert":
        at = int(args[0] * n)
        b[at:at] = args[1]
    elif kind == "delete":
        at = int(args[0] * n)
        del b[at : at + args[1]]
    elif kind == "splice":
        other = payloads[args[1]]
        b = b[: int(args[0] * n)] + other[int(args[2] * len(other)) :]
    else:
        at = int(args[0] * n)
        b[at : at + args[1]] = bytes(len(b[at : at + args[1]]))
    return bytes(b)


def _decode_raises_only_eocube_errors(payload: bytes) -> None:
    try:
        block = decode_chunk(payload)
    except EocubeError:
        return
    # damage the decoder cannot see (inside the video packets) may decode: the store's
    # checksums catch it; what comes out must still be a well-formed block
    assert block.ndim == 4
    assert block.dtype.kind in "iuf"


@settings(max_examples=FUZZ_EXAMPLES)
@given(
    name=st.sampled_from(_NAMES),
    mutations=st.lists(_mutation, min_size=1, max_size=3),
)
def test_decoder_fuzz_only_eocube_errors_escape(
    payloads: dict[str, bytes], name: str, mutations: list[tuple]
) -> None:
    payload = payloads[name]
    for mutation in mutations:
        payload = _mutate(payload, mutation, payloads)
    _decode_raises_only_eocube_errors(payload)


def test_decoder_many_seeded_mutations(payloads: dict[str, bytes]) -> None:
    # a broader, cheaper sweep than hypothesis: thousands of seeded random mutations
    rng = random.Random(20240806)
    for _ in range(RANDOM_MUTATIONS):
        name = rng.choice(_NAMES)
        payload = payloads[name]
        for _ in range(rng.choice([1, 1, 2, 5])):
            kind = rng.choice(["flip", "flip-header", "truncate", "insert", "delete", "splice"])
            where = rng.random()
            mutation: tuple = {
                "flip": (kind, where, rng.randrange(1, 256)),
                "flip-header": (kind, rng.randrange(160), rng.randrange(1, 256)),
                "truncate": (kind, where),
                "insert": (kind, where, rng.randbytes(rng.randint(1, 16))),
                "delete": (kind, where, rng.randint(1, 64)),
                "splice": (kind, where, rng.choice(_NAMES), rng.random()),
            }[kind]
            payload = _mutate(payload, mutation, payloads)
        _decode_raises_only_eocube_errors(payload)


def test_intact_payloads_decode(payloads: dict[str, bytes]) -> None:
    assert sorted(payloads) == _NAMES
    for payload in payloads.values():
        assert decode_chunk(payload).ndim == 4
