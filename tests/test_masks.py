"""Masks coded by their runs (eocube.masks, chunk format 6): exact round trips, sizes
against zlib, damaged streams, and the payload versions that may hold them."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from legacy import as_version  # tests/legacy.py

from eocube import chunk as chunk_module
from eocube import decode_chunk, encode_chunk, masks, read_header
from eocube.errors import CorruptChunkError


def _regions(shape: tuple[int, int, int, int], seed: int) -> np.ndarray:
    """Discs and slanted half-planes, moving a little from frame to frame, and specks."""
    rng = np.random.default_rng(seed)
    T, B, Y, X = shape
    y, x = np.mgrid[:Y, :X]
    out = np.zeros(shape, bool)
    cy, cx, r = rng.uniform(0, Y), rng.uniform(0, X), rng.uniform(0.5, max(Y, X) / 2 + 1)
    slope = rng.uniform(-6, 6)
    for t in range(T):
        for b in range(B):
            drift = rng.integers(-2, 3)
            out[t, b] = ((y - cy) ** 2 + (x - cx - drift) ** 2 < r * r) | (x > slope * y + X / 2)
    out ^= rng.random(shape) < 0.002
    return out


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["regions", "noise", "empty", "full", "columns"]),
)
def test_every_mask_round_trips(shape: tuple[int, int, int, int], seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    mask = {
        "regions": lambda: _regions(shape, seed),
        "noise": lambda: rng.random(shape) < rng.uniform(0, 1),
        "empty": lambda: np.zeros(shape, bool),
        "full": lambda: np.ones(shape, bool),
        "columns": lambda: np.broadcast_to(rng.random(shape[-1]) < 0.5, shape).copy(),
    }[kind]()
    np.testing.assert_array_equal(masks.decode(masks.encode(mask), shape), mask)


def test_edges_far_apart_and_slopes_round_trip() -> None:
    # transitions beyond the vertical reach, slopes of 4 to 16 columns a row and past it
    T, B, Y, X = 2, 3, 64, 300
    y, x = np.mgrid[:Y, :X]
    mask = np.zeros((T, B, Y, X), bool)
    for b, s in enumerate((5, 16, 40)):
        mask[:, b] = (x > s * y % X) & (x < 280 - y)
    np.testing.assert_array_equal(masks.decode(masks.encode(mask), mask.shape), mask)


def test_footprints_code_far_smaller_than_zlib(load_cube: Callable[..., Any]) -> None:
    # a Landsat 7 scene: a slanted footprint with scan gaps, per band (1401 against 5456
    # bytes when measured); a sea mask on every date of 24 (602 against 1783)
    for name, test in (
        ("landsat7_rgb_byte", lambda v: v == 0),
        ("stars_cmip3_tos_24x1x170x180", np.isnan),
    ):
        mask = test(np.asarray(load_cube(name).data))
        runs = masks.encode(mask)
        packed = zlib.compress(np.packbits(mask, axis=None).tobytes(), 9)
        assert len(runs) < len(packed) / 2.5
        np.testing.assert_array_equal(masks.decode(runs, mask.shape), mask)


def test_a_mask_equal_to_its_reference_costs_a_flag() -> None:
    one = _regions((1, 1, 50, 60), seed=4)
    same = np.broadcast_to(one, (10, 3, 50, 60)).copy()
    assert len(masks.encode(same)) < len(masks.encode(one)) + 8


@pytest.fixture(scope="module")
def coded() -> tuple[bytes, np.ndarray]:
    mask = _regions((3, 2, 30, 40), seed=7)
    return masks.encode(mask), mask


def test_every_truncation_is_refused(coded: tuple[bytes, np.ndarray]) -> None:
    data, mask = coded
    for n in range(len(data)):
        with pytest.raises(CorruptChunkError, match="mask"):
            masks.decode(data[:n], mask.shape)
    with pytest.raises(CorruptChunkError, match="does not end where its stream does"):
        masks.decode(data + b"\x00", mask.shape)


def test_byte_flips_never_crash_or_hang(coded: tuple[bytes, np.ndarray]) -> None:
    # the store's crc32c catches damage; the decoder itself must only fail cleanly (or
    # decode some mask of the right shape)
    data, mask = coded
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= flip
            try:
                out = masks.decode(bytes(damaged), mask.shape)
            except CorruptChunkError:
                continue
            assert out.shape == mask.shape


# --- in chunk payloads ------------------------------------------------------------------


def _nodata_block() -> np.ndarray:
    rng = np.random.default_rng(1)
    block = rng.integers(100, 4000, (4, 3, 40, 48)).astype(np.uint16)
    block[_regions(block.shape, seed=2)] = 0
    return block


def test_payloads_with_a_runs_coded_mask_round_trip() -> None:
    block = _nodata_block()
    payload = encode_chunk(block, "hevc-12bit-444", quality=20, nodata=0, frames="time")
    # a runs-coded mask (chunk format 6) reads in any later version's layout
    np.testing.assert_array_equal(decode_chunk(as_version(payload, 6)), decode_chunk(payload))
    decoded = decode_chunk(payload)
    np.testing.assert_array_equal(decoded == 0, block == 0)
    lossless = encode_chunk(block, "ffv1-lossless", nodata=0)
    np.testing.assert_array_equal(decode_chunk(lossless), block)


def test_a_mask_zlib_codes_smaller_keeps_the_old_version() -> None:
    # scattered single elements: nothing for runs to gain, zlib kept
    rng = np.random.default_rng(3)
    block = rng.integers(100, 4000, (2, 2, 64, 64)).astype(np.uint16)
    block[rng.random(block.shape) < 0.3] = 0
    payload = encode_chunk(block, "ffv1-lossless", nodata=0)
    assert read_header(payload).version == chunk_module.FORMAT_VERSION
    np.testing.assert_array_equal(decode_chunk(payload), block)


def test_a_runs_coded_mask_in_an_older_version_is_refused() -> None:
    payload = encode_chunk(_nodata_block(), "hevc-12bit-444", quality=20, nodata=0, frames="time")
    with pytest.raises(CorruptChunkError, match="runs-coded mask in a version-5 payload"):
        decode_chunk(as_version(payload, 5))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(["float32", "uint16", "int16"]))
def test_chunks_restore_nan_and_nodata_exactly(seed: int, dtype: str) -> None:
    # both masks of a float block (NaN, then nodata where not NaN), or an integer's
    # nodata mask, whichever coding each takes, come back element for element
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 5)), int(rng.integers(1, 4)), 24, 28)
    block = rng.integers(100, 3000, shape).astype(dtype)
    nodata = 0
    block[_regions(shape, seed)] = nodata
    if dtype == "float32":
        block[_regions(shape, seed + 1) & (rng.random(shape) < 0.9)] = np.nan
    profile = "ffv1-lossless" if dtype != "float32" else "hevc-12bit-444"
    payload = encode_chunk(block, profile, nodata=nodata)
    decoded = decode_chunk(payload)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(block))
    np.testing.assert_array_equal(decoded == nodata, block == nodata)
    if dtype != "float32":
        np.testing.assert_array_equal(decoded, block)
