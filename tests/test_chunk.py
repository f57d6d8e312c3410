"""Chunk payloads: lossless identity on real cubes, properties of every profile, corruption."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from legacy import as_version  # tests/legacy.py

from eocube import (
    CodecError,
    CorruptChunkError,
    EocubeError,
    UnsupportedDataError,
    available_profiles,
    decode_chunk,
    encode_chunk,
    metrics,
    packing,
    read_header,
)
from eocube import chunk as chunk_module
from eocube.binary import ByteReader, ByteWriter, varint
from eocube.chunk import MAGIC
from eocube.testing import assert_chunk_roundtrip

LoadCube = Callable[[str], Any]  # the load_cube fixture of conftest.py

LOSSY = sorted(name for name, p in available_profiles().items() if not p.lossless)


def _roundtrip(block: np.ndarray, profile: str, **kwargs: object) -> np.ndarray:
    """The decoded block, after checking every promise of eocube.testing."""
    return assert_chunk_roundtrip(block, profile, **kwargs)[1]


def _band_spans(block: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = metrics.valid_mask(block, nodata)
    spans = []
    for b in range(block.shape[1]):
        v = block[:, b][valid[:, b]].astype(np.float64)
        spans.append(v.max() - v.min() if v.size else 0.0)
    return np.array(spans)


# --------------------------------------------------------------- lossless, real cubes

REAL_LOSSLESS = [
    # (cube, crop, profile): integer cubes of each dtype; crops keep the suite fast
    ("landsat7_rgb_byte", np.s_[:, :, 300:396, :128], "ffv1-lossless"),
    ("landsat7_rgb_byte", np.s_[:, :, 300:396, :128], "hevc-lossless"),
    ("s2_l2a_worldcereal_12x9x100x100", np.s_[:4, :, :48, :40], "ffv1-lossless"),
    ("s2_l2a_worldcereal_12x9x100x100", np.s_[:4, :6, :32, :32], "hevc-lossless"),
    ("s2_l2a_worldcereal_118x4x64x64", np.s_[:6], "ffv1-lossless"),
    ("s2_l2a_openeo_gfmap_12x5x66x64", np.s_[:4], "ffv1-lossless"),
    ("s2_l2a_openeo_gfmap_19x4x52x46", np.s_[:5], "ffv1-lossless"),
    ("l8_ny18_014031", np.s_[:3], "ffv1-lossless"),
    ("erainterim_uvz", np.s_[:, :, :60, :90], "ffv1-lossless"),
]


@pytest.mark.parametrize(("name", "crop", "profile"), REAL_LOSSLESS)
def test_lossless_real_cube_is_bit_exact(
    load_cube: LoadCube, name: str, crop: tuple[slice, ...], profile: str
) -> None:
    cube = load_cube(name)
    block = cube.data[crop]
    payload = encode_chunk(block, profile, nodata=cube.nodata)
    decoded = decode_chunk(payload)
    assert decoded.dtype == block.dtype
    np.testing.assert_array_equal(decoded, block)
    if cube.nodata is not None:
        np.testing.assert_array_equal(decoded == cube.nodata, block == cube.nodata)
    header = read_header(payload)
    assert header.exact
    assert header.profile == profile
    assert header.nodata == cube.nodata
    # the video stores the data, not a copy of it
    assert len(payload) < block.nbytes


@pytest.mark.parametrize(
    ("name", "nodata"), [("s2_l2a_worldcereal_12x9x100x100", 65535), ("l8_ny18_014031", 0)]
)
def test_real_nodata_is_declared_and_restored(load_cube: LoadCube, name: str, nodata: int) -> None:
    cube = load_cube(name)
    assert cube.nodata == nodata
    block = cube.data[:3, :4, :40, :40]
    missing = block == nodata
    assert missing.any()
    assert not missing.all()
    for profile in ("ffv1-lossless", "hevc-12bit-444"):
        decoded = _roundtrip(block, profile, nodata=nodata)
        np.testing.assert_array_equal(decoded == nodata, missing)


def test_too_deep_data_names_profile_and_bits(load_cube: LoadCube) -> None:
    cube = load_cube("s2_l2a_worldcereal_12x9x100x100")
    block = cube.data[:2]
    widest = _band_spans(block, cube.nodata).max()
    assert widest > 4095
    needed = math.ceil(math.log2(widest + 1))
    with pytest.raises(UnsupportedDataError) as info:
        encode_chunk(block, "hevc-lossless", nodata=cube.nodata)
    message = str(info.value)
    assert "'hevc-lossless'" in message
    assert f"needs {needed} bits" in message
    assert "holds 12 bits" in message
    # without the nodata declaration, 65535 widens the range to 16 bits
    with pytest.raises(UnsupportedDataError, match="needs 16 bits"):
        encode_chunk(block, "hevc-lossless")


def test_too_deep_for_ffv1() -> None:
    block = np.zeros((1, 2, 4, 4), np.int32)
    block[0, 1, 0, 0] = 70000
    with pytest.raises(
        UnsupportedDataError, match=r"'ffv1-lossless'.*needs 17 bits.*holds 16 bits"
    ):
        encode_chunk(block, "ffv1-lossless")
    with pytest.raises(UnsupportedDataError, match=r"'ffv1-lossless'.*needs integer data"):
        encode_chunk(block.astype(np.float32), "ffv1-lossless")


# ------------------------------------------------------------------------ lossy, real


def test_psnr_falls_as_crf_rises(load_cube: LoadCube) -> None:
    block = load_cube("s2_l2a_worldcereal_118x4x64x64").data[:8]
    psnrs, sizes = [], []
    for crf in (0, 8, 16, 24, 32, 40):
        payload = encode_chunk(block, "hevc-12bit-444", quality=crf)
        decoded = decode_chunk(payload)
        psnrs.append(metrics.psnr(block, decoded))
        sizes.append(len(payload))
    assert all(a > b for a, b in itertools.pairwise(psnrs)), psnrs
    assert all(a >= b for a, b in itertools.pairwise(sizes)), sizes
    assert psnrs[0] > 45


@pytest.mark.parametrize("profile", LOSSY)
def test_lossy_real_float_cube_with_nan(load_cube: LoadCube, profile: str) -> None:
    block = load_cube("s2_l2a_fusets_field_33x3x57x56").data[:8]
    nan = np.isnan(block)
    assert nan.any()
    decoded = _roundtrip(block, profile)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(decoded), nan)
    assert metrics.psnr(block, decoded) > 35


# ------------------------------------------------------------------ property tests

SIDES = st.one_of(st.sampled_from([1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 34, 48]), st.integers(1, 40))
INT_DTYPES = ["uint8", "uint16", "int16", "int32"]
FLOAT_DTYPES = ["float32", "float64"]


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, int, int, int]:
    times = draw(st.integers(1, 8))
    bands = draw(st.integers(1, min(7, 64 // times)))
    return times, bands, draw(SIDES), draw(SIDES)


def _fill_band(
    rng: np.random.Generator, kind: str, lo: float, hi: float, shape: tuple[int, ...]
) -> np.ndarray:
    T, Y, X = shape
    if kind == "constant":
        return np.full(shape, lo)
    if kind == "extremes":
        return rng.choice(np.array([lo, hi]), size=shape)
    if kind == "smooth":
        t, y, x = np.meshgrid(np.arange(T), np.arange(Y), np.arange(X), indexing="ij")
        ramp = (t + y + x) / max(T + Y + X - 3, 1)
        return lo + (hi - lo) * ramp
    return rng.uniform(lo, hi, size=shape)


@st.composite
def cubes(
    draw: st.DrawFn, dtypes: list[str], max_span: float | None = None
) -> tuple[np.ndarray, float | None]:
    """A block of one of ``dtypes`` with varied bands, and its nodata (None for floats).

    Bulk values come from a seeded generator; hypothesis picks shape, dtype, value ranges
    (constant, extremes, smooth, noise; negatives, huge values) and the missing pattern.
    """
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(shapes())
    T, B, Y, X = shape
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    block = np.empty(shape, dtype)
    if dtype.kind == "f":
        big = float(dtype.type(1e30))  # exactly representable in dtype
        values = st.one_of(
            st.sampled_from([0.0, -1.0, 1e-3, 273.15, -big, big, 1e-30]),
            st.floats(-big, big, width=32 if dtype == np.float32 else 64),
        )
    else:
        info = np.iinfo(dtype)
        values = st.one_of(
            st.sampled_from([int(info.min), int(info.max), 0, -1 if info.min < 0 else 1]),
            st.integers(int(info.min), int(info.max)),
        )
    for b in range(B):
        kind = draw(st.sampled_from(["noise", "constant", "extremes", "smooth"]))
        lo, hi = sorted([draw(values), draw(values)])
        hi = lo if hi == lo else hi  # not 0.0 .. -0.0
        if max_span is not None and hi - lo > max_span:
            hi = lo + max_span
        band = _fill_band(rng, kind, float(lo), float(hi), (T, Y, X))
        if dtype.kind == "f":
            block[:, b] = band
        else:
            block[:, b] = np.clip(np.round(band), lo, hi)
    nodata: float | None = None
    if dtype.kind in "iu" and draw(st.booleans()):
        info = np.iinfo(dtype)
        nodata = draw(st.sampled_from([int(info.min), int(info.max), 0]))
    missing = draw(st.sampled_from(["none", "some", "band", "block", "pixels", "date"]))
    holes = np.zeros(shape, bool)
    if missing == "some":
        holes = rng.random(shape) < draw(st.sampled_from([0.01, 0.3, 0.9]))
    elif missing == "band":
        holes[:, draw(st.integers(0, B - 1))] = True
    elif missing == "block":
        holes[:] = True
    elif missing == "pixels":
        holes[:, :, : draw(st.integers(1, Y)), : draw(st.integers(1, X))] = True
    elif missing == "date":
        holes[draw(st.integers(0, T - 1))] = True
    if dtype.kind == "f":
        block[holes] = np.nan
    elif nodata is not None:
        block[holes] = nodata
    return block, nodata


def _check_common(block: np.ndarray, nodata: float | None, decoded: np.ndarray) -> None:
    assert decoded.shape == block.shape
    assert decoded.dtype == block.dtype
    if block.dtype.kind == "f":
        np.testing.assert_array_equal(np.isnan(decoded), np.isnan(block))
    if nodata is not None:
        np.testing.assert_array_equal(decoded[block == nodata], nodata)


@given(cubes(INT_DTYPES, max_span=65535))
@example((np.zeros((1, 1, 1, 1), np.uint16), None))
@example((np.array([[[[np.iinfo(np.int32).max]]]], np.int32), None))
def test_ffv1_is_bit_exact_for_integers_within_16_bits(
    case: tuple[np.ndarray, float | None],
) -> None:
    block, nodata = case
    decoded = _roundtrip(block, "ffv1-lossless", nodata=nodata)
    _check_common(block, nodata, decoded)
    np.testing.assert_array_equal(decoded, block)


@given(cubes(["uint8", "uint16", "int16"], max_span=8191))
@example((np.zeros((1, 1, 1, 1), np.uint8), None))
@example((np.array([[[[0, 4095]], [[-32768, -28673]]]], np.int16), None))
def test_hevc_lossless_is_exact_or_refuses(case: tuple[np.ndarray, float | None]) -> None:
    block, nodata = case
    spans = _band_spans(block, nodata)
    if spans.max() > 4095:
        needed = math.ceil(math.log2(spans.max() + 1))
        with pytest.raises(UnsupportedDataError, match=f"'hevc-lossless'.*needs {needed} bits"):
            encode_chunk(block, "hevc-lossless", nodata=nodata)
        return
    decoded = _roundtrip(block, "hevc-lossless", nodata=nodata)
    _check_common(block, nodata, decoded)
    np.testing.assert_array_equal(decoded, block)


@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(cubes(INT_DTYPES))
@example((np.array([0, 70_000], dtype=np.int32).reshape(2, 1, 1, 1), None))
def test_lossless_refuses_ranges_beyond_16_bits(case: tuple[np.ndarray, float | None]) -> None:
    block, nodata = case
    spans = _band_spans(block, nodata)
    assume(spans.max() > 65535)
    needed = math.ceil(math.log2(spans.max() + 1))
    with pytest.raises(UnsupportedDataError, match=f"'ffv1-lossless'.*needs {needed} bits"):
        encode_chunk(block, "ffv1-lossless", nodata=nodata)


def _check_lossy(block: np.ndarray, nodata: float | None, decoded: np.ndarray) -> None:
    _check_common(block, nodata, decoded)
    valid = metrics.valid_mask(block, nodata)
    for b in range(block.shape[1]):
        v = valid[:, b]
        if not v.any():
            continue
        orig = block[:, b][v].astype(np.float64)
        got = decoded[:, b][v].astype(np.float64)
        lo, hi = orig.min(), orig.max()
        # floats: offset + code * scale may miss the band's ends by a rounding error of
        # the largest magnitude (-1e30 + 1023 * (1e30 + 7e13) / 1023 is 1.4e14, not 7e13)
        tol = 4 * np.finfo(block.dtype).eps * max(-lo, hi) if block.dtype.kind == "f" else 0
        assert np.isfinite(got).all(), f"band {b}: valid values decoded to NaN/inf"
        with np.errstate(over="ignore"):  # bounds near the float64 limit overflow to inf
            assert got.min() >= lo - tol, f"band {b}: {got.min()} < band min {lo}"
            assert got.max() <= hi + tol, f"band {b}: {got.max()} > band max {hi}"
            assert np.abs(got - orig).max() <= hi - lo + tol
        if lo == hi:
            np.testing.assert_array_equal(got, orig)


@pytest.mark.parametrize("profile", LOSSY)
@given(case=cubes(INT_DTYPES + FLOAT_DTYPES), data=st.data())
@example(case=(np.ones((1, 1, 1, 1), np.float32), None), data=None)
def test_lossy_decodes_within_band_range(
    profile: str, case: tuple[np.ndarray, float | None], data: st.DataObject | None
) -> None:
    block, nodata = case
    quality = available_profiles()[profile].quality
    assert quality is not None
    crfs = st.integers(math.ceil(quality.min), math.floor(quality.max))
    crf = None if data is None else data.draw(crfs, label="crf")
    decoded = _roundtrip(block, profile, nodata=nodata, quality=crf)
    _check_lossy(block, nodata, decoded)


@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
        elements=st.floats(allow_nan=False, allow_infinity=False),
    )
)
@example(np.array([[[[-1e308, 1e308]]]]))
@example(np.array([[[[0.0, 1.7e308]], [[1e-310, 3e-310]]]]))
def test_any_finite_float64_decodes_finite_or_is_refused(block: np.ndarray) -> None:
    try:
        payload = encode_chunk(block, "hevc-12bit-444")
    except UnsupportedDataError as exc:
        refused = str(exc)
    else:
        _check_lossy(block, None, decode_chunk(payload))
        return
    # only a band whose map overflows float64 (a range near or past its limits) is refused
    assert "beyond what float64 can map" in refused
    with np.errstate(over="ignore"):
        spans = block.max(axis=(0, 2, 3)) - block.min(axis=(0, 2, 3))
    assert (spans > 1.79e308).any()


# --------------------------------------------------------------------------- header


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64"]),
    seed=st.integers(0, 2**32 - 1),
    bits=st.sampled_from([8, 10, 12, 16]),
    exponent=st.integers(-30, 30),
    constant_band=st.booleans(),
)
def test_compact_band_ranges_give_back_the_maps_bit_for_bit(
    dtype: str, seed: int, bits: int, exponent: int, constant_band: bool
) -> None:
    # version 13 stores each band's (min, max) in the dtype and derives its map: the map
    # the reader derives must be the writer's to the last bit, or every value shifts
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        spread = 10.0**exponent
        block = (rng.normal(size=(2, 3, 4, 5)) * spread + rng.normal() * 8 * spread).astype(kind)
    else:
        info = np.iinfo(kind)
        block = rng.integers(info.min, info.max, (2, 3, 4, 5), endpoint=True).astype(kind)
    if constant_band:
        block[:, 1] = block[0, 1, 0, 0]
    maps = packing.band_maps(block, bits, exact=False)
    for wavelet in (False, True):
        header = chunk_module.ChunkHeader(
            version=chunk_module.COMPACT_VERSION,
            dtype=kind,
            shape=block.shape,
            bits=bits,
            layout="planar3",
            profile="test",
            exact=False,
            nodata=None,
            offset=maps.offset,
            scale=block.max(axis=(0, 2, 3)).astype(np.float64) if wavelet else maps.scale,
            wavelet=wavelet,
        )
        data = header.to_bytes()
        # 4 one-byte sizes and two values of the dtype per band, where 16 + 48 were
        assert len(data) == len(replace(header, version=12).to_bytes()) - 12 - (
            2 * (8 - kind.itemsize) * 3
        )
        again = read_header(data)
        np.testing.assert_array_equal(again.offset, header.offset)
        np.testing.assert_array_equal(again.scale, header.scale)


def test_compact_header_refuses_maps_no_band_range_gives() -> None:
    header = chunk_module.ChunkHeader(
        version=chunk_module.COMPACT_VERSION,
        dtype=np.dtype("uint16"),
        shape=(1, 1, 4, 4),
        bits=12,
        layout="luma",
        profile="test",
        exact=False,
        nodata=None,
        offset=np.array([10.0]),
        scale=np.array([0.3]),  # (10 + 0.3 * 4095) is no uint16 value's map
    )
    with pytest.raises(ValueError, match="not those of"):
        header.to_bytes()


def test_compact_header_refuses_a_band_range_out_of_order() -> None:
    block = np.arange(2 * 2 * 8 * 8, dtype=np.uint16).reshape(2, 2, 8, 8)
    payload = encode_chunk(block, "hevc-12bit-bands", quality=20, date_order="time")
    header = read_header(payload)
    assert header.spectral is None
    assert header.mosaic is None
    at = len(header.to_bytes()) - 2 * 2 * 2  # the last field: 2 bands' (min, max), u16
    low, high = np.frombuffer(payload[at : at + 4], "<u2")
    swapped = payload[:at] + np.array([high, low], "<u2").tobytes() + payload[at + 4 :]
    with pytest.raises(CorruptChunkError, match="band range"):
        decode_chunk(swapped)


def test_shared_prefix_is_what_every_packet_starts_with() -> None:
    assert chunk_module.shared_prefix([]) == b""
    assert chunk_module.shared_prefix([b"\x00\x00\x00\x01abc"]) == b""  # one packet
    packets = [b"\x00\x00\x00\x01\x40\x01", b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x01"]
    assert chunk_module.shared_prefix(packets) == b"\x00\x00\x00\x01"
    assert chunk_module.shared_prefix([b"ab", b"cd"]) == b""


def test_packets_are_stored_without_their_shared_start_code() -> None:
    block = np.random.default_rng(5).integers(500, 1500, (6, 1, 40, 48)).astype(np.uint16)
    payload = encode_chunk(block, "hevc-12bit-420-luma", quality=24, frames="time")
    (stream,) = chunk_module.parse_chunk(payload).streams
    assert len(stream.packets) == 6
    # the reader gives the decoder the encoder's packets, start codes in front
    assert all(p[:4] == b"\x00\x00\x00\x01" for p in stream.packets)
    legacy = as_version(payload, 12)
    # 5 start codes fewer, 1 byte of prefix length, 4 of the prefix itself, and
    # varints where version 12 has 12 bytes of u32 sizes in the stream and 16 in the header
    assert len(legacy) - len(payload) >= 5 * 4 - 5 + 12 - 3
    np.testing.assert_array_equal(decode_chunk(legacy), decode_chunk(payload))
    # the stream's prefix is the blob before its packet count: damage its length
    at = payload.index(b"\x04\x00\x00\x00\x01")  # len(prefix) and the prefix
    damaged = payload[:at] + b"\x7f" + payload[at + 1 :]
    with pytest.raises(CorruptChunkError):
        decode_chunk(damaged)


def test_the_name_vocabulary_holds_every_name_the_shipped_profiles_write() -> None:
    # a name outside it is still written, as text (below); this checks that the shipped
    # profiles pay one byte a name, and that no entry is there twice
    assert len(set(chunk_module.NAMES)) == len(chunk_module.NAMES)
    assert len(chunk_module.NAMES) < 256
    names = {d.str for d in packing.SUPPORTED_DTYPES} | set(packing.CHUNK_LAYOUTS)
    for profile in available_profiles().values():
        names |= {profile.name, profile.decoder, profile.pix_fmt, profile.layout}
        names |= {profile.extra_pix_fmt} - {None}
    assert names <= set(chunk_module.NAMES), names - set(chunk_module.NAMES)


def test_names_outside_the_vocabulary_are_written_as_text() -> None:
    w = ByteWriter()
    w.name("hevc", chunk_module.NAMES)
    w.name("my-profile", chunk_module.NAMES)
    data = w.getvalue()
    assert data == bytes([chunk_module.NAMES.index("hevc") + 1, 0, 10]) + b"my-profile"
    r = ByteReader(data)
    assert (r.name(chunk_module.NAMES), r.name(chunk_module.NAMES)) == ("hevc", "my-profile")
    # a payload whose header names a profile the vocabulary lacks reads it back
    block = np.random.default_rng(6).integers(0, 900, (2, 3, 16, 16)).astype(np.uint16)
    custom = replace(available_profiles()["hevc-12bit-444"], name="my-profile")
    payload = encode_chunk(block, custom, quality=20)
    assert read_header(payload).profile == "my-profile"
    assert decode_chunk(payload).shape == block.shape


def test_a_name_beyond_the_vocabulary_is_corrupt() -> None:
    block = np.random.default_rng(7).integers(0, 900, (2, 1, 16, 16)).astype(np.uint16)
    payload = encode_chunk(block, "ffv1-lossless")
    at = 4 + 3  # the dtype's name byte, after magic, version and both flag bytes
    assert chunk_module.NAMES[payload[at] - 1] == "<u2"
    damaged = payload[:at] + bytes([len(chunk_module.NAMES) + 1]) + payload[at + 1 :]
    with pytest.raises(CorruptChunkError, match=f"entry {len(chunk_module.NAMES) + 1} of"):
        decode_chunk(damaged)


def test_read_header_reports_what_was_encoded() -> None:
    block = np.arange(2 * 5 * 9 * 11, dtype=np.int16).reshape(2, 5, 9, 11) - 300
    payload = encode_chunk(block, "hevc-12bit-444", nodata=-300, leftover_pair="off")
    header = read_header(payload)
    assert header.version == chunk_module.FORMAT_VERSION
    assert header.shape == (2, 5, 9, 11)
    assert header.dtype == np.dtype("int16")
    assert header.profile == "hevc-12bit-444"
    assert header.layout == "planar3"
    assert header.bits == 12
    assert not header.exact
    assert header.nodata == -300
    # band b holds -300 + 99 b + (0..98) at t = 0, and 495 more at t = 1; -300 is nodata
    assert header.offset[0] == -299
    np.testing.assert_array_equal(header.offset[1:], -300 + 99 * np.arange(1, 5))
    np.testing.assert_allclose(header.scale, np.array([592, 593, 593, 593, 593]) / 4095)


def test_three_dimensional_blocks_gain_a_band_axis() -> None:
    block = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    payload = encode_chunk(block, "ffv1-lossless")
    header = read_header(payload)
    assert header.shape == (3, 1, 8, 8)
    assert header.profile == "ffv1-lossless"
    assert header.layout == "luma"
    assert header.nodata is None
    np.testing.assert_array_equal(decode_chunk(payload), block[:, None])


def test_default_profile_and_decode_options() -> None:
    block = np.linspace(0, 1, 2 * 3 * 16 * 16, dtype=np.float32).reshape(2, 3, 16, 16)
    payload = encode_chunk(block)
    assert read_header(payload).profile == "hevc-12bit-444"
    out = np.empty_like(block)
    seconds: list[float] = []
    result = decode_chunk(payload, out=out, threads=1, on_codec_time=seconds.append)
    assert result is out
    assert len(seconds) == 1
    assert seconds[0] >= 0
    assert np.abs(out - block).max() < 0.01
    with pytest.raises(ValueError, match="C-contiguous float32 array of shape"):
        decode_chunk(payload, out=np.empty((2, 3, 16, 16), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        decode_chunk(payload, out=np.empty((2, 3, 16, 32), np.float32)[..., ::2])


@pytest.mark.parametrize(
    ("block", "kwargs", "message"),
    [
        (np.zeros((2, 2, 2, 2), np.int64), {}, "dtype int64 is not supported"),
        (np.zeros((2, 0, 2, 2), np.uint8), {}, "no empty axis"),
        (np.zeros((2, 2), np.uint8), {}, r"shape \(T, B, Y, X\) or \(T, Y, X\)"),
        (np.zeros((1, 1, 1, 2, 2), np.uint8), {}, r"shape \(T, B, Y, X\)"),
        (
            np.zeros((1, 1, 2, 2), np.uint16),
            {"nodata": -1},
            "nodata -1 is not a value of dtype uint16",
        ),
        (np.zeros((1, 1, 2, 2), np.int16), {"nodata": 1.5}, "nodata 1.5 is not a value"),
        (np.array([[[[0.0, np.inf]]]]), {}, "'hevc-12bit-444': band 0 holds 1 infinite"),
    ],
)
def test_encode_rejects_unsupported_data(
    block: np.ndarray, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(UnsupportedDataError, match=message):
        encode_chunk(block, "hevc-12bit-444", **kwargs)  # type: ignore[arg-type]


def test_float_nodata_is_restored_besides_nan() -> None:
    block = np.full((2, 2, 8, 8), 5.0, np.float32)
    block[0, 0, 0, :4] = -9999.0
    block[1, 1, 3, 3] = np.nan
    block[1, 0] = np.linspace(0, 10, 64).reshape(8, 8)
    decoded = _roundtrip(block, "hevc-12bit-444", nodata=-9999.0)
    np.testing.assert_array_equal(decoded == -9999.0, block == -9999.0)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(block))
    # NaN as nodata means nothing more than NaN
    payload = encode_chunk(block, "hevc-12bit-444", nodata=float("nan"))
    assert read_header(payload).nodata is None
    np.testing.assert_array_equal(np.isnan(decode_chunk(payload)), np.isnan(block))


def test_lossless_encode_verifies_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    real = chunk_module.video.decode_frames

    def damaged(stream: object, **kwargs: object) -> Iterator[list[np.ndarray]]:
        for planes in real(stream, **kwargs):  # type: ignore[arg-type]
            yield [p ^ 1 for p in planes]

    monkeypatch.setattr(chunk_module.video, "decode_frames", damaged)
    with pytest.raises(CodecError, match="differs from the input of the lossless encoder"):
        encode_chunk(np.zeros((1, 1, 4, 4), np.uint16), "ffv1-lossless")


# ----------------------------------------------------------------------- corruption


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    ints = rng.integers(100, 3000, (2, 4, 20, 24)).astype(np.uint16)
    ints[0, 0, :3, :3] = 0
    floats = rng.normal(size=(2, 2, 20, 24)).astype(np.float32)
    floats[1, 1, 5:9] = np.nan
    padded = np.full((3, 4, 24, 24), 0, np.uint16)  # zarr's padding of an edge chunk
    padded[:2, :, :20, :] = ints
    tall = rng.integers(100, 3000, (2, 3, 52, 44)).astype(np.uint16)  # coded transposed
    tall[1, :, 40:, :6] = 0
    tiles = rng.integers(100, 3000, (9, 3, 20, 24)).astype(np.uint16)  # a mosaic of 2 x 2
    tiles[4, :, :5, :5] = 0
    return {
        "ffv1": encode_chunk(ints, "ffv1-lossless", nodata=0),
        "cropped": encode_chunk(padded, "hevc-12bit-444", nodata=0, quality=20),
        "hevc-444": encode_chunk(floats, "hevc-12bit-444", nodata=-9999.0),
        "hevc-luma": encode_chunk(ints, "hevc-12bit-420-luma", nodata=0),
        "rows": encode_chunk(padded, "hevc-12bit-444", nodata=0, quality=20, frames="y"),
        "wavelet": encode_chunk(padded, "hevc-12bit-444", nodata=0, quality=20, wavelet="always"),
        "wavelet-nan": encode_chunk(floats, "hevc-12bit-444", max_abs_error=0.1, wavelet="always"),
        "transposed": encode_chunk(tall, "hevc-12bit-444", nodata=0, quality=20, max_abs_error=40),
        "mosaic": encode_chunk(
            tiles, "hevc-12bit-444", nodata=0, quality=20, frames="mosaic", date_order="time"
        ),
    }


PAYLOAD_NAMES = (
    "ffv1",
    "hevc-444",
    "hevc-luma",
    "cropped",
    "rows",
    "wavelet",
    "wavelet-nan",
    "transposed",
    "mosaic",
)
"""The payloads of the ``payloads`` fixture, each truncated and damaged by the tests below."""


def _header_length(payload: bytes) -> int:
    return len(chunk_module.read_header(payload).to_bytes())


def _cuts(n: int, header: int) -> Iterator[int]:
    yield from range(header + 40)
    yield from range(header + 40, n, max(1, (n - header) // 60))
    yield n - 1


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_truncated_payloads_are_corrupt(payloads: dict[str, bytes], name: str) -> None:
    payload = payloads[name]
    for cut in _cuts(len(payload), _header_length(payload)):
        with pytest.raises(CorruptChunkError):
            decode_chunk(payload[:cut])


def test_bad_magic_version_and_trailing_bytes(payloads: dict[str, bytes]) -> None:
    payload = payloads["ffv1"]
    assert payload.startswith(MAGIC)
    with pytest.raises(CorruptChunkError, match="bad magic"):
        decode_chunk(b"EOCX" + payload[4:])
    with pytest.raises(CorruptChunkError, match="bad magic"):
        read_header(b"\x89PNG" + payload[4:])
    with pytest.raises(CorruptChunkError, match="format version 99"):
        decode_chunk(payload[:4] + bytes([99]) + payload[5:])
    with pytest.raises(CorruptChunkError, match="3 unexpected bytes"):
        decode_chunk(payload + b"abc")
    with pytest.raises(CorruptChunkError):
        decode_chunk(b"")


def _decodes_or_raises_eocube_error(payload: bytes, shape: tuple[int, ...] | None = None) -> None:
    try:
        decoded = decode_chunk(payload, shape=shape)
    except EocubeError:
        return
    assert decoded.ndim == 4
    if shape is not None:
        assert decoded.size == np.prod(shape)


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_every_header_byte_flip_raises_eocube_error_or_decodes(
    payloads: dict[str, bytes], name: str
) -> None:
    # as eocube's readers decode: knowing the chunk's shape (without it, a flipped shape
    # field of a cropped payload declares a block of gigabytes, all fill but the corner)
    payload = payloads[name]
    shape = chunk_module.read_header(payload).shape
    for i in range(_header_length(payload)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(payload)
            damaged[i] ^= mask
            _decodes_or_raises_eocube_error(bytes(damaged), shape)


def test_a_payload_of_another_chunk_size_is_refused_before_decoding(
    payloads: dict[str, bytes],
) -> None:
    payload = payloads["cropped"]
    assert decode_chunk(payload, shape=(3, 4, 24, 24)).shape == (3, 4, 24, 24)
    assert decode_chunk(payload, shape=(3, 4 * 24, 24)).shape == (3, 4, 24, 24)
    damaged = bytearray(payload)
    # magic, version, flags, flags2, the dtype as one name byte, then T, B, Y, X as
    # one-byte varints
    x_at = 4 + 3 + 1 + 3
    assert damaged[x_at] == 24
    damaged[x_at] ^= 0x40
    with pytest.raises(CorruptChunkError, match=r"shape \(3, 4, 24, 88\), where its chunk"):
        decode_chunk(bytes(damaged), shape=(3, 4, 24, 24))


@given(
    name=st.sampled_from(["ffv1", "hevc-444", "hevc-luma", "cropped", "wavelet"]),
    where=st.floats(0, 1),
    mask=st.integers(1, 255),
)
def test_random_header_byte_flip(
    payloads: dict[str, bytes], name: str, where: float, mask: int
) -> None:
    payload = payloads[name]
    i = min(int(where * _header_length(payload)), _header_length(payload) - 1)
    damaged = bytearray(payload)
    damaged[i] ^= mask
    _decodes_or_raises_eocube_error(bytes(damaged))


def test_header_flip_of_the_shape_does_not_allocate(payloads: dict[str, bytes]) -> None:
    payload = payloads["ffv1"]
    # T is the first varint after magic, version, both flag bytes and the dtype's name byte
    t_at = 4 + 3 + 1
    assert payload[t_at] == 2
    damaged = payload[:t_at] + varint(2**30 + 2) + payload[t_at + 1 :]  # a 10 TB block
    with pytest.raises(CorruptChunkError, match="does not match layout"):
        decode_chunk(damaged)
    beyond = payload[:t_at] + varint(2**32) + payload[t_at + 1 :]
    with pytest.raises(CorruptChunkError, match="beyond 32 bits"):
        decode_chunk(beyond)


def test_integer_nodata_out_of_range_is_corrupt(payloads: dict[str, bytes]) -> None:
    payload = bytearray(payloads["ffv1"])
    # nodata precedes the 4 bands' smallest values (uint16: lossless maps need no more)
    at = _header_length(bytes(payload)) - 4 * 2 - 8
    assert payload[at : at + 8] == np.float64(0).tobytes()
    payload[at : at + 8] = np.float64(np.nan).tobytes()
    with pytest.raises(CorruptChunkError, match="nodata"):
        decode_chunk(bytes(payload))
    payload[at : at + 8] = np.float64(1e300).tobytes()
    with pytest.raises(CorruptChunkError, match="nodata"):
        decode_chunk(bytes(payload))


def test_ffv1_keeps_its_context_states_across_the_chunk(load_cube: LoadCube) -> None:
    # one GOP per chunk and one slice per frame: 8.97 bpppb measured on these 32 dates,
    # 12.47 with a keyframe per frame, 4 slices and the large context model
    cube = load_cube("s2_l2a_worldcereal_118x4x64x64")
    block = cube.data[:32]
    payload = encode_chunk(block, "ffv1-lossless", nodata=cube.nodata)
    np.testing.assert_array_equal(decode_chunk(payload), block)
    assert len(payload) * 8 / block.size < 9.5


# ------------------------------------------------------------- edge chunks (cropped)


def _pad(block: np.ndarray, shape: tuple[int, ...], fill: float) -> np.ndarray:
    """``block`` at the start of a ``shape`` array of ``fill``, as zarr pads an edge chunk."""
    padded = np.full(shape, fill, block.dtype)
    padded[tuple(slice(0, n) for n in block.shape)] = block
    return padded


def test_edge_chunk_padding_costs_no_bits(load_cube: LoadCube) -> None:
    # the last 22 of 118 dates in a 32-date chunk: before the crop, FFV1 coded the 10
    # padding dates as copies of the last real one (+46 % bytes)
    cube = load_cube("s2_l2a_worldcereal_118x4x64x64")
    block = cube.data[96:]
    padded = _pad(block, (32, *block.shape[1:]), cube.nodata)
    alone = encode_chunk(block, "ffv1-lossless", nodata=cube.nodata)
    payload = encode_chunk(padded, "ffv1-lossless", nodata=cube.nodata)
    np.testing.assert_array_equal(decode_chunk(payload), padded)
    header = read_header(payload)
    assert header.shape == padded.shape
    assert header.coded_shape == block.shape
    assert len(payload) <= len(alone) + 32  # the crop fields only


@pytest.mark.parametrize("profile", ["hevc-12bit-444", "hevc-12bit-bands", "ffv1-lossless"])
def test_edge_chunk_padding_in_space_and_time(profile: str) -> None:
    rng = np.random.default_rng(3)
    block = (1000 + 50 * rng.normal(size=(3, 3, 40, 36)).cumsum(-1)).clip(1, 60000)
    block = block.astype(np.uint16)
    padded = _pad(block, (4, 3, 64, 64), 0)
    kwargs = {} if profile == "ffv1-lossless" else {"quality": 10}
    payload = encode_chunk(padded, profile, nodata=0, **kwargs)  # type: ignore[arg-type]
    assert read_header(payload).coded == (3, 40, 36)
    decoded = decode_chunk(payload)
    assert (decoded[3:] == 0).all()
    assert (decoded[:, :, 40:] == 0).all()
    assert (decoded[:, :, :, 36:] == 0).all()
    inside = decoded[:3, :, :40, :36]
    if profile == "ffv1-lossless":
        np.testing.assert_array_equal(inside, block)
    else:
        assert metrics.psnr(block, inside) > 40
        assert len(payload) < len(encode_chunk(block, profile, nodata=0, quality=10)) * 1.05


def test_float_edge_chunk_restores_nan_padding_and_keeps_the_error_bound() -> None:
    rng = np.random.default_rng(5)
    block = rng.normal(size=(2, 2, 30, 20)).cumsum(-2).astype(np.float32)
    padded = _pad(block, (2, 2, 32, 32), np.nan)
    payload = encode_chunk(padded, "hevc-12bit-444", quality=30, max_abs_error=0.05)
    assert read_header(payload).coded == (2, 30, 20)
    decoded = decode_chunk(payload)
    assert np.isnan(decoded[:, :, 30:]).all()
    assert np.isnan(decoded[:, :, :, 20:]).all()
    assert np.abs(decoded[:, :, :30, :20] - block).max() <= 0.05


def test_mixed_nan_and_nodata_beyond_the_data_is_coded_whole() -> None:
    block = np.ones((2, 1, 16, 16), np.float32)
    block[:, :, :, 8:] = np.nan
    block[:, :, 0, 8:] = -1.0  # nodata, not NaN: no single fill value beyond x=8
    payload = encode_chunk(block, "hevc-12bit-444", nodata=-1.0)
    assert read_header(payload).coded is None
    decoded = decode_chunk(payload)
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(block))
    assert (decoded[:, :, 0, 8:] == -1.0).all()


def test_a_block_of_nothing_but_padding_round_trips() -> None:
    block = np.full((2, 2, 8, 8), np.nan, np.float32)
    payload = encode_chunk(block, "hevc-12bit-444", quality=20)
    assert read_header(payload).coded == (1, 1, 1)
    assert np.isnan(decode_chunk(payload)).all()


def test_crop_flag_is_unknown_before_version_3(payloads: dict[str, bytes]) -> None:
    payload = payloads["cropped"]
    assert read_header(payload).coded is not None
    as_v2 = payload[:4] + b"\x02" + payload[5:]
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_v2)


# ------------------------------------------------------------------ rows as frames


def _hourly(dates: int) -> np.ndarray:
    """A smooth field sampled hourly: a diurnal cycle over a spatial gradient, 33 x 49 px."""
    t = np.arange(dates)[:, None, None, None]
    y = np.arange(33)[None, None, :, None]
    x = np.arange(49)[None, None, None, :]
    rng = np.random.default_rng(3)
    field = 280 + 0.2 * y - 0.1 * x + 6 * np.sin(2 * np.pi * (t / 24 + x / 200))
    return (field + rng.normal(0, 0.05, field.shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("profile", "kwargs"),
    [
        ("hevc-12bit-444", {"quality": 20}),
        ("hevc-12bit-444", {"quality": 30, "max_abs_error": 0.05}),
        ("hevc-12bit-420-luma", {"quality": 20}),
        ("hevc-12bit-bands", {"quality": 20}),
        ("av1-10bit", {"quality": 30}),
    ],
)
def test_rows_as_frames_round_trip_with_masks_crop_and_bound(
    load_cube: LoadCube, profile: str, kwargs: dict
) -> None:
    # a real 4-band series (KLT), NaN holes and padding beyond the data (crop)
    cube = load_cube("s2_l2a_fusets_field_33x3x57x56")
    data = np.asarray(cube.data[:12], dtype=np.float32)
    block = np.full((16, data.shape[1], 64, 64), np.nan, np.float32)
    block[:12, :, :57, :56] = data
    block[3, 1, 10:20, 5:9] = np.nan
    rows = encode_chunk(block, profile, frames="y", **kwargs)
    header = read_header(rows)
    assert header.version == chunk_module.FORMAT_VERSION
    assert header.time_in_frame
    assert header.coded is not None
    t, y, x = header.coded
    assert t == 12
    assert header.stream_shape == (y, data.shape[1], t, x)
    decoded = decode_chunk(rows)
    assert decoded.shape == block.shape
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(block))
    dates = decode_chunk(encode_chunk(block, profile, frames="time", **kwargs))
    # the same content, coded the other way round: a like quality
    assert abs(metrics.psnr(block, decoded) - metrics.psnr(block, dates)) < 6
    if "max_abs_error" in kwargs:
        assert metrics.max_abs_error(block, decoded) <= kwargs["max_abs_error"]


def test_rows_as_frames_of_integers_with_nodata_and_lossless() -> None:
    rng = np.random.default_rng(5)
    block = rng.integers(200, 4000, (6, 3, 40, 36)).astype(np.uint16)
    block[2, :, :4, :4] = 0
    for profile, kwargs in (("hevc-12bit-444", {"quality": 10}), ("ffv1-lossless", {})):
        payload = encode_chunk(block, profile, nodata=0, frames="y", **kwargs)
        assert read_header(payload).time_in_frame
        decoded = decode_chunk(payload)
        assert (decoded[2, :, :4, :4] == 0).all()
        if profile == "ffv1-lossless":
            np.testing.assert_array_equal(decoded, block)


def test_auto_keeps_dates_as_frames_below_the_threshold_byte_for_byte() -> None:
    block = _hourly(chunk_module.AUTO_MIN_DATES - 1)
    # in time order: which order the dates go in is the date order's choice (test_dateorder)
    auto = encode_chunk(block, "hevc-12bit-444", quality=20, date_order="time")
    assert auto == encode_chunk(
        block, "hevc-12bit-444", quality=20, frames="time", date_order="time"
    )
    assert read_header(auto).version == chunk_module.FORMAT_VERSION


def test_auto_codes_a_long_hourly_series_with_rows_as_frames_when_it_pays() -> None:
    block = _hourly(chunk_module.AUTO_MIN_DATES)
    time_way = encode_chunk(block, "hevc-12bit-444", quality=22, frames="time")
    rows_way = encode_chunk(block, "hevc-12bit-444", quality=22, frames="y")
    auto = encode_chunk(block, "hevc-12bit-444", quality=22)
    gains = {
        way: metrics.psnr(block, decode_chunk(p)) - chunk_module.DB_PER_DOUBLING * np.log2(len(p))
        for way, p in (("time", time_way), ("y", rows_way))
    }
    # auto keeps the one with the better dB-for-bytes balance, whichever it is
    assert auto == (rows_way if gains["y"] > gains["time"] else time_way)
    assert gains["y"] > gains["time"]  # on this smooth diurnal field, rows win


def test_auto_never_tries_rows_for_lossless_profiles() -> None:
    block = np.round(_hourly(chunk_module.AUTO_MIN_DATES) * 10).astype(np.uint16)
    payload = encode_chunk(block, "ffv1-lossless")
    assert not read_header(payload).time_in_frame
    np.testing.assert_array_equal(decode_chunk(payload), block)


def test_frames_must_be_a_known_axis() -> None:
    with pytest.raises(ValueError, match="frames must be one of"):
        encode_chunk(np.zeros((2, 1, 8, 8), np.uint16), frames="x")


def test_rows_flag_is_unknown_before_version_4(payloads: dict[str, bytes]) -> None:
    payload = payloads["rows"]
    assert read_header(payload).time_in_frame
    as_v3 = payload[:4] + b"\x03" + payload[5:]
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_v3)


# ---------------------------------------------------------------- transposed frames


@pytest.mark.parametrize(
    ("rows", "cols", "profile", "swapped"),
    [
        (52, 46, "hevc-12bit-444", True),  # 56 x 64 coded (46 is an unsafe width), 48 x 56
        (52, 46, "hevc-12bit-420-luma", True),
        (46, 52, "hevc-12bit-444", False),  # already the smaller way round
        (33, 49, "hevc-12bit-444", False),  # its transpose, 49 x 64, is larger
        (40, 48, "hevc-12bit-444", False),  # 40 x 64 either way: equal is not smaller
        (64, 64, "hevc-12bit-444", False),
        (52, 46, "hevc-lossless", False),  # lossless frames are not padded to 64
        (52, 46, "ffv1-lossless", False),
    ],
)
def test_frames_are_transposed_where_the_codec_frame_is_smaller(
    rows: int, cols: int, profile: str, swapped: bool
) -> None:
    prof = chunk_module.get_profile(profile)
    options = prof.encoder_options(None if prof.lossless else 20)
    assert chunk_module.transposes(prof, options, rows, cols) is swapped
    block = np.random.default_rng(1).integers(500, 1500, (2, 3, rows, cols)).astype(np.uint16)
    quality = None if prof.lossless else 20
    payload = encode_chunk(block, profile, quality=quality)
    header = read_header(payload)
    assert header.transposed is swapped
    assert header.version >= (chunk_module.TRANSPOSED_VERSION if swapped else 1)
    assert header.stream_shape == ((2, 3, cols, rows) if swapped else (2, 3, rows, cols))
    if prof.lossless:
        np.testing.assert_array_equal(decode_chunk(payload), block)


def _assert_nodata_exact_and_bounded(payload: bytes, block: np.ndarray, bound: int) -> None:
    """The payload decodes to the block's shape, its nodata (0) and zarr's padding exact
    and every other value within ``bound``."""
    decoded = decode_chunk(payload)
    assert decoded.shape == block.shape
    np.testing.assert_array_equal(decoded == 0, block == 0)
    valid = block != 0
    assert np.abs(decoded.astype(np.int64) - block)[valid].max() <= bound


def _tall_series(load_cube: LoadCube) -> np.ndarray:
    # a real 52 x 46 px Sentinel-2 series: 4 bands (KLT, a leftover band)
    return np.asarray(load_cube("s2_l2a_openeo_gfmap_19x4x52x46").data[:6], dtype=np.uint16)


def test_transposed_frames_round_trip_with_masks_crop_and_bound(load_cube: LoadCube) -> None:
    data = _tall_series(load_cube)
    block = np.zeros((8, 4, 64, 64), np.uint16)  # zarr's padding beyond the data
    block[:6, :, :52, :46] = data
    block[2, :, 10:20, 3:9] = 0
    payload = encode_chunk(block, "hevc-12bit-444", quality=24, nodata=0, max_abs_error=25)
    header = read_header(payload)
    assert header.transposed
    assert header.coded == (6, 52, 46)
    assert header.stream_shape == (6, 4, 46, 52)
    _assert_nodata_exact_and_bounded(payload, block, 25)
    floats = (data / 10000).astype(np.float32)
    floats[1, 2, 30:40, 4:12] = np.nan
    for profile in ("hevc-12bit-420-luma", "hevc-12bit-444"):
        payload = encode_chunk(floats, profile, quality=20)
        assert read_header(payload).transposed
        decoded = decode_chunk(payload)
        np.testing.assert_array_equal(np.isnan(decoded), np.isnan(floats))
        assert metrics.psnr(floats, decoded) > 35  # swapped wrong: scrambled pixels


def test_transposed_frames_code_better_for_their_bytes(
    load_cube: LoadCube, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = _tall_series(load_cube)
    swapped = encode_chunk(block, "hevc-12bit-444", quality=16)
    monkeypatch.setattr(chunk_module, "transposes", lambda *args: False)
    upright = encode_chunk(block, "hevc-12bit-444", quality=16)
    assert read_header(swapped).transposed
    assert not read_header(upright).transposed

    def score(payload: bytes) -> float:
        psnr = metrics.psnr(block, decode_chunk(payload))
        return psnr - chunk_module.DB_PER_DOUBLING * math.log2(len(payload))

    # x265 codes 46 x 52 frames in place of 52 x 64 (docs/benchmarks.md: +0.3 to +0.5 dB)
    assert score(swapped) > score(upright) + 0.1


def test_transposed_flag_is_damage_before_version_11_and_with_rows_or_wavelet(
    payloads: dict[str, bytes],
) -> None:
    payload = payloads["transposed"]
    header = read_header(payload)
    assert header.transposed
    assert header.version == chunk_module.FORMAT_VERSION
    assert decode_chunk(as_version(payload, 11)).shape == header.shape
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_version(payload, 10))
    for other in (16, 32):  # TIME_IN_FRAME, WAVELET
        damaged = payload[:5] + bytes([payload[5] | other]) + payload[6:]
        with pytest.raises(CorruptChunkError):
            decode_chunk(damaged)


def test_rows_as_frames_are_never_transposed() -> None:
    block = np.random.default_rng(2).integers(500, 1500, (70, 1, 52, 46)).astype(np.uint16)
    payload = encode_chunk(block, "hevc-12bit-444", quality=20, frames="y")
    header = read_header(payload)
    assert header.time_in_frame
    assert not header.transposed


# ------------------------------------------------------------------- leftover pair


def _two_band_series(dates: int = 6, bands: int = 2) -> np.ndarray:
    """Correlated smooth bands over drifting texture, 40 x 48 px: a small optical series."""
    rng = np.random.default_rng(11)
    t = np.arange(dates)[:, None, None]
    y = np.arange(40)[None, :, None]
    x = np.arange(48)[None, None, :]
    base = 2000 + 400 * np.sin((x + 2 * t) / 7) * np.cos(y / 9) + rng.normal(0, 30, (dates, 40, 48))
    out = [base * (1 + 0.3 * b) + 150 * b * np.sin(y / 5 + b) for b in range(bands)]
    return np.stack(out, axis=1).clip(0, 10000).astype(np.uint16)


@pytest.mark.parametrize("bands", [2, 5])
def test_leftover_pair_shares_a_444_frame_of_the_main_stream(bands: int) -> None:
    block = _two_band_series(bands=bands)
    # one date a frame: the frame counts below are those of dates, not of a mosaic's
    off = encode_chunk(block, quality=20, leftover_pair="off", frames="time")
    pair = encode_chunk(block, quality=20, leftover_pair="always", frames="time")
    parts_off, parts_pair = chunk_module.parse_chunk(off), chunk_module.parse_chunk(pair)
    assert parts_off.header.layout == "planar3"
    assert [s.pix_fmt for s in parts_off.streams][-1] == "yuv420p12le"
    assert parts_pair.header.layout == "planar3-pair"
    assert parts_pair.header.version == chunk_module.FORMAT_VERSION
    # one 4:4:4 stream: a frame per date for each group of three, and one for the pair
    [stream] = parts_pair.streams
    assert stream.pix_fmt == "yuv444p12le"
    assert stream.frames == (bands // 3 + 1) * block.shape[0]
    quality = []
    for payload in (off, pair):
        decoded = decode_chunk(payload)
        assert decoded.shape == block.shape
        quality.append(metrics.psnr(block, decoded))
    # a band in the wrong place would cost tens of dB; the two codings differ by little
    assert min(quality) > 35
    assert abs(quality[0] - quality[1]) < 2


def test_leftover_pair_auto_keeps_the_better_coding() -> None:
    block = _two_band_series()
    for quality in (8, 36):
        # one date a frame: a mosaic's trial would weigh these codings apart
        ways = {
            way: encode_chunk(block, quality=quality, leftover_pair=way, frames="time")
            for way in ("off", "always")
        }
        score = {
            way: metrics.psnr(block, decode_chunk(p))
            - chunk_module.DB_PER_DOUBLING * math.log2(len(p))
            for way, p in ways.items()
        }
        auto = encode_chunk(block, quality=quality, frames="time")  # "auto" pair: default
        # the block is small: both codings are made whole, and the better one is the payload
        assert auto == ways[max(score, key=score.__getitem__)]


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_leftover_pair_changes_nothing_without_two_leftover_bands(bands: int) -> None:
    block = _two_band_series(bands=bands)
    always = encode_chunk(block, quality=20, leftover_pair="always")
    assert always == encode_chunk(block, quality=20, leftover_pair="off")
    assert read_header(always).layout == "planar3"


def test_leftover_pair_leaves_lossless_and_other_layouts_alone() -> None:
    block = _two_band_series(dates=2)
    for profile, layout in (("ffv1-lossless", "luma"), ("hevc-12bit-420-luma", "luma")):
        payload = encode_chunk(block, profile, leftover_pair="always")
        assert read_header(payload).layout == layout
    exact = encode_chunk(block, "ffv1-lossless", leftover_pair="always")
    np.testing.assert_array_equal(decode_chunk(exact), block)


def test_leftover_pair_must_be_a_known_choice() -> None:
    with pytest.raises(ValueError, match="leftover_pair must be one of"):
        encode_chunk(np.zeros((2, 2, 8, 8), np.uint16), leftover_pair="sometimes")


def test_pair_layout_is_damage_before_version_8() -> None:
    block = _two_band_series()
    payload = encode_chunk(block, quality=20, leftover_pair="always", frames="time")
    assert read_header(payload).layout == "planar3-pair"
    np.testing.assert_array_equal(decode_chunk(as_version(payload, 8)), decode_chunk(payload))
    with pytest.raises(CorruptChunkError, match="layout planar3-pair in a version-7 payload"):
        decode_chunk(as_version(payload, 7))


# ------------------------------------------------------------------- mosaic frames


@pytest.mark.parametrize(
    ("dates", "rows", "cols", "profile", "grid"),
    [
        (32, 32, 32, "hevc-12bit-444", (2, 2)),  # 64 x 64: no padding, square
        (32, 44, 48, "hevc-12bit-444", (2, 1)),  # 88 x 48, coded transposed as 48 x 88
        (19, 52, 46, "hevc-12bit-444", (2, 1)),
        (32, 64, 64, "hevc-12bit-444", None),  # a frame of 4096 px already
        (3, 32, 32, "hevc-12bit-444", None),  # too few dates
        (32, 32, 32, "ffv1-lossless", None),
        (32, 32, 32, "hevc-lossless", None),
    ],
)
def test_mosaic_grid_is_tried_on_small_lossy_frames(
    dates: int, rows: int, cols: int, profile: str, grid: tuple[int, int] | None
) -> None:
    prof = chunk_module.get_profile(profile)
    options = prof.encoder_options(None if prof.lossless else 20)
    assert chunk_module.mosaic_grid(prof, options, dates, rows, cols) == grid


def _small_tiles(load_cube: LoadCube, dates: int = 32) -> np.ndarray:
    # a real 32 x 32 px crop of a 4-band Sentinel-2 series: the tiles of ML releases
    return np.asarray(load_cube("s2_l2a_worldcereal_72x4x64x64").data[:dates, :, 16:48, 8:40])


def test_mosaic_round_trips_with_crop_nodata_and_bound(load_cube: LoadCube) -> None:
    tiles = _small_tiles(load_cube, 9)  # 9 dates in 3 frames of 2 x 2: three repeated
    block = np.zeros((10, 4, 40, 32), np.uint16)  # zarr's padding beyond the data
    block[:9, :, :32] = tiles
    block[2, :, 10:20, 3:9] = 0
    payload = encode_chunk(
        block, "hevc-12bit-444", quality=24, nodata=0, max_abs_error=30, frames="mosaic"
    )
    header = read_header(payload)
    assert header.mosaic == (2, 2)
    assert header.version == chunk_module.FORMAT_VERSION
    assert header.coded == (9, 32, 32)
    assert header.stream_shape == (3, 4, 64, 64)
    _assert_nodata_exact_and_bounded(payload, block, 30)
    floats = (tiles / 10000).astype(np.float32)
    floats[1, 2, 3:9, 4:12] = np.nan
    for profile in ("hevc-12bit-420-luma", "hevc-12bit-444", "av1-10bit", "h264-10bit"):
        payload = encode_chunk(floats, profile, quality=20, frames="mosaic")
        assert read_header(payload).mosaic is not None
        decoded = decode_chunk(payload)
        np.testing.assert_array_equal(np.isnan(decoded), np.isnan(floats))
        assert metrics.psnr(floats, decoded) > 33  # tiles misplaced: scrambled dates


def test_mosaic_with_transposed_frames_round_trips(load_cube: LoadCube) -> None:
    # 44 x 48 px: a 2 x 1 mosaic of 88 x 48, coded transposed (48 is an unsafe width)
    data = np.asarray(load_cube("s2_l2a_openeo_gfmap_19x4x52x46").data[:9, :3, :44, :46])
    block = np.pad(data, ((0, 0), (0, 0), (0, 0), (0, 2)), mode="edge")
    payload = encode_chunk(block, "hevc-12bit-444", quality=20, frames="mosaic")
    header = read_header(payload)
    assert header.mosaic == (2, 1)
    assert header.transposed
    assert header.stream_shape == (5, 3, 48, 88)
    assert metrics.psnr(block, decode_chunk(payload)) > 38


def test_auto_keeps_a_mosaic_where_it_codes_better(load_cube: LoadCube) -> None:
    block = _small_tiles(load_cube)
    scores = {}
    for frames in ("time", "mosaic", "auto"):
        payload = encode_chunk(block, quality=32, frames=frames)
        psnr = metrics.psnr(block, decode_chunk(payload))
        scores[frames] = (psnr - chunk_module.DB_PER_DOUBLING * math.log2(len(payload)), payload)
    # one frame of 32 x 32 px costs x265 a 64-column frame and its headers: four in a
    # 64 x 64 frame cost far less (docs/benchmarks.md: +1.3 dB at 0.3 bpppb)
    assert scores["mosaic"][0] > scores["time"][0] + 1.0
    assert scores["auto"][1] == scores["mosaic"][1]
    assert read_header(scores["auto"][1]).mosaic == (2, 2)


def test_a_close_call_between_mosaic_and_dates_is_ranked_at_equal_rate(
    load_cube: LoadCube,
) -> None:
    # gfmap 19 x 4 (52 x 46 px) at crf 4: the mosaic saved a quarter of the bytes for
    # 1.6 dB, a win weighed at 4 dB a doubling, but 0.3 dB worse at equal rate than the
    # dates one a frame, whose bytes then rose from crf 4 to crf 6 (mosaic_recheck/rd_ab.md)
    block = np.asarray(load_cube("s2_l2a_openeo_gfmap_19x4x52x46").data)
    coded = {crf: encode_chunk(block, quality=crf) for crf in (4, 6)}
    assert read_header(coded[4]).mosaic is None
    assert len(coded[4]) > len(coded[6])
    time_frames = encode_chunk(block, quality=4, frames="time")
    assert coded[4] == time_frames


def test_at_fewer_bytes_coarsens_the_quality_six_steps_a_halving() -> None:
    prof = chunk_module.get_profile("hevc-12bit-444")
    assert prof.quality is not None
    assert chunk_module._at_fewer_bytes(prof, 10, 2.0) == 16
    assert chunk_module._at_fewer_bytes(prof, None, 2.0) == prof.quality.default + 6
    assert chunk_module._at_fewer_bytes(prof, -3, 1.4) == 0  # QP levels below crf 0: whole
    assert chunk_module._at_fewer_bytes(prof, 10, 1.0) is None  # not larger
    assert chunk_module._at_fewer_bytes(prof, prof.quality.max, 2.0) is None  # none coarser
    lossless = chunk_module.get_profile("ffv1-lossless")
    assert chunk_module._at_fewer_bytes(lossless, None, 2.0) is None


def test_a_chunk_kept_in_rows_is_not_tried_as_a_mosaic(
    load_cube: LoadCube, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = np.asarray(load_cube("era5_t2m_uk_744h").data[:64])  # 64 hours of 33 x 49 px
    prof = chunk_module.get_profile(None)
    assert chunk_module.mosaic_grid(prof, prof.encoder_options(24), 64, 33, 49) == (2, 2)
    tiled: list[tuple[int, int]] = []
    tile = chunk_module.mosaic_mod.tile

    def counting(block: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        tiled.append(grid)
        return tile(block, grid)

    monkeypatch.setattr(chunk_module.mosaic_mod, "tile", counting)
    payload = encode_chunk(block, quality=24)
    assert read_header(payload).time_in_frame  # hourly: rows as frames win
    assert tiled == []
    # one date a frame kept: the mosaic is tried
    encode_chunk(_small_tiles(load_cube, 8), quality=24)
    assert tiled


def test_time_frames_lossless_and_given_orders_are_never_mosaics(load_cube: LoadCube) -> None:
    block = _small_tiles(load_cube, 8)
    assert read_header(encode_chunk(block, quality=32, frames="time")).mosaic is None
    exact = encode_chunk(block, "ffv1-lossless")
    assert read_header(exact).mosaic is None
    np.testing.assert_array_equal(decode_chunk(exact), block)
    ordered = encode_chunk(block, quality=32, date_order=[1, 0, 2, 3, 4, 5, 6, 7])
    assert read_header(ordered).mosaic is None
    with pytest.raises(ValueError, match="frames='mosaic' needs a lossy profile"):
        encode_chunk(block, "ffv1-lossless", frames="mosaic")
    with pytest.raises(ValueError, match="at least 4 dates"):
        encode_chunk(block[:3], quality=32, frames="mosaic")


def test_mosaic_header_is_damage_before_version_12_or_with_rows_or_wavelet(
    payloads: dict[str, bytes],
) -> None:
    payload = payloads["mosaic"]
    header = read_header(payload)
    assert header.mosaic == (2, 2)
    # version 11 reads no second flag byte: the dtype's length byte is off by one
    with pytest.raises(CorruptChunkError):
        decode_chunk(payload[:4] + b"\x0b" + payload[5:])
    np.testing.assert_array_equal(decode_chunk(as_version(payload, 12)), decode_chunk(payload))
    with pytest.raises(CorruptChunkError):
        decode_chunk(as_version(payload, 11))
    for other in (16, 32):  # TIME_IN_FRAME, WAVELET
        damaged = payload[:5] + bytes([payload[5] | other]) + payload[6:]
        with pytest.raises(CorruptChunkError):
            decode_chunk(damaged)
    with pytest.raises(CorruptChunkError, match="unknown or conflicting second flags"):
        decode_chunk(payload[:6] + b"\x03" + payload[7:])
    assert header.date_order is None
    grid_at = len(header.to_bytes()) - 2  # the grid ends this header
    assert payload[grid_at : grid_at + 2] == b"\x02\x02"
    for grid in (b"\x00\x02", b"\x01\x01", b"\x08\x02"):  # none, one date, more than T
        damaged = payload[:grid_at] + grid + payload[grid_at + 2 :]
        with pytest.raises(CorruptChunkError, match="mosaic of"):
            decode_chunk(damaged)


def test_one_date_a_frame_leaves_the_second_flags_clear(load_cube: LoadCube) -> None:
    block = _small_tiles(load_cube, 8)
    payload = encode_chunk(block, quality=12, frames="time")
    header = read_header(payload)
    assert header.mosaic is None
    assert payload[6] == header.flags2 == 0
    assert header.to_bytes() == payload[: len(header.to_bytes())]
