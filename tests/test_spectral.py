"""The per-chunk KLT of the bands (eocube.spectral) and its place in the chunk format."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from legacy import as_version  # tests/legacy.py

from eocube import (
    CorruptChunkError,
    chunk,
    decode_chunk,
    encode_chunk,
    metrics,
    read_header,
    spectral,
)
from eocube.binary import ByteReader, ByteWriter
from eocube.errors import ProfileError
from eocube.profiles import get_profile

LoadCube = Callable[[str], Any]


def _smooth(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    field = rng.normal(size=shape)
    for axis in range(-2, 0):
        field = np.cumsum(field, axis=axis)
    return field


def _codes(bands: np.ndarray) -> np.ndarray:
    """(T, B, Y, X) floats to 12-bit band codes, each band over its own range."""
    lo = bands.min(axis=(0, 2, 3), keepdims=True)
    hi = bands.max(axis=(0, 2, 3), keepdims=True)
    return np.rint((bands - lo) / (hi - lo) * 4095).astype(np.uint16)


def test_basis_is_orthonormal_and_sorted_by_variance() -> None:
    rng = np.random.default_rng(0)
    base = _smooth(rng, (4, 40, 48))
    noise = rng.normal(size=(2, *base.shape))
    bands = np.stack([base, 0.5 * base + noise[0], -base, noise[1]], 1)
    codes = _codes(bands)
    basis = spectral.fit(codes, 40, 48, 12)
    v = basis.basis.astype(np.float64)
    # a product of reflections: orthonormal whatever the rounding of their vectors
    np.testing.assert_allclose(v.T @ v, np.eye(4), atol=1e-6)
    # 4 + 3 + 2 Householder values, from which the header's reader rebuilds the very basis
    assert basis.stored is not None
    assert basis.stored.shape == (9,)
    np.testing.assert_array_equal(spectral.axes_from_stored(basis.stored, 4), basis.basis)
    # the origin and step as the header stores them: float32
    np.testing.assert_array_equal(basis.origin.astype(np.float32), basis.origin)
    assert float(np.float32(basis.step)) == basis.step
    # the encoder's map is the inverse of the basis the decoder uses
    np.testing.assert_allclose(basis.forward.T @ v, np.eye(4), atol=1e-12)
    components = spectral.project(codes, basis, 12).astype(np.float64)
    per_component = components.transpose(1, 0, 2, 3).reshape(4, -1)
    # the origin is the corner of the components' ranges: their codes start at 0 and the
    # widest fills the codes
    np.testing.assert_array_equal(per_component.min(axis=1), 0)
    assert per_component.max() == 4095
    variances = per_component.var(axis=1)
    assert np.all(np.diff(variances) <= 1e-9 + 0.01 * variances[0])
    assert variances[0] > 10 * variances[-1]


@pytest.mark.parametrize(
    ("scale", "within"), [(spectral.AXIS_SCALE, 3e-3), (spectral.V13_AXIS_SCALE, 5e-5)]
)
@pytest.mark.parametrize("bands", [2, 3, 7, 40])
def test_stored_axes_rebuild_the_principal_axes_up_to_their_signs(
    bands: int, scale: int, within: float
) -> None:
    rng = np.random.default_rng(bands)
    axes, _ = np.linalg.qr(rng.normal(size=(bands, bands)))
    stored = spectral.stored_axes(axes, scale)
    assert stored.dtype == np.dtype("<i2")
    assert stored.size == bands * (bands + 1) // 2 - 1
    assert np.abs(stored).max() == scale  # each vector scaled to a largest entry of 1
    rebuilt = spectral.axes_from_stored(stored, bands, scale).astype(np.float64)
    signs = np.sign((rebuilt * axes).sum(axis=0))
    np.testing.assert_allclose(rebuilt * signs, axes, atol=within)
    np.testing.assert_allclose(rebuilt.T @ rebuilt, np.eye(bands), atol=1e-6)
    with pytest.raises(ValueError, match="beyond"):
        spectral.axes_from_stored(stored.astype(np.int64) * 2, bands, scale)
    with pytest.raises(ValueError, match="cannot be"):
        spectral.axes_from_stored(stored[:-1], bands, scale)
    zero = stored.copy()
    zero[:bands] = 0  # the first vector
    with pytest.raises(ValueError, match="is 0"):
        spectral.axes_from_stored(zero, bands, scale)


def test_project_then_mix_inverts_within_rounding() -> None:
    rng = np.random.default_rng(1)
    base = _smooth(rng, (3, 32, 40))
    bands = np.stack([base, base + 0.1 * _smooth(rng, base.shape), 2 * base], 1)
    codes = _codes(bands)
    basis = spectral.fit(codes, 32, 40, 12)
    components = spectral.project(codes, basis, 12)
    offset, scale = np.zeros(3), np.ones(3)
    shift, matrix = spectral.decoding_map(basis, offset, scale)
    out = np.empty(codes.shape, np.float64)
    spectral.mix(components, shift, matrix, offset, offset + 4095, out)
    # rounding each component to a code moves a band by at most step/2 per component
    assert np.abs(out - codes).max() <= basis.step / 2 * np.sqrt(3) + 1e-3


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_mix_on_threads_gives_the_bits_of_one_thread(dtype: type) -> None:
    rng = np.random.default_rng(3)
    B, Y, X = 13, 515, 1031  # over the threading threshold, odd sizes
    codes = rng.integers(0, 4096, (1, B, Y, X), dtype=np.uint16)
    shift = rng.normal(size=B) * 100
    matrix = rng.normal(size=(B, B))
    low, high = np.full(B, -5000.0), np.full(B, 5000.0)
    assert B * B * Y * X >= spectral._THREADED_MIX
    one = np.empty(codes.shape, dtype)
    spectral.mix(codes, shift, matrix, low, high, one, threads=1)
    for threads in (2, 3, 8):
        many = np.empty(codes.shape, dtype)
        spectral.mix(codes, shift, matrix, low, high, many, threads=threads)
        np.testing.assert_array_equal(many, one)


def test_gain_separates_shared_detail_from_independent_bands() -> None:
    rng = np.random.default_rng(2)
    detail = rng.normal(size=(4, 48, 48))
    shared = np.stack([detail, detail + 0.05 * rng.normal(size=detail.shape), -detail], 1)
    independent = rng.normal(size=(4, 3, 48, 48))
    for bands, expect_rotated in ((shared, True), (independent, False)):
        codes = _codes(bands)
        basis = spectral.fit(codes, 48, 48, 12)
        assert (spectral.gain_db(codes, basis, 48, 48) >= spectral.MIN_GAIN_DB) is expect_rotated
        payload = encode_chunk(bands.astype(np.float32), "hevc-12bit-444", quality=10)
        assert (read_header(payload).spectral is not None) is expect_rotated


def _psnr_at(points: list[tuple[float, float]], rate: float) -> float:
    points = sorted(points)
    for (r0, p0), (r1, p1) in itertools.pairwise(points):
        if r0 <= rate <= r1:
            return p0 + (p1 - p0) * np.log(rate / r0) / np.log(r1 / r0)
    raise AssertionError(f"{rate} bpppb lies outside {points}")


def test_klt_beats_plain_planes_on_a_landsat_cube(load_cube: LoadCube) -> None:
    # l8_ny18_014031: 11 Landsat 8 bands; measured +3.9 dB at equal rate
    block = load_cube("l8_ny18_014031").data
    profile = get_profile("hevc-12bit-444")
    plain = dataclasses.replace(profile, transform="none")

    def point(p: Any, crf: float) -> tuple[float, float]:
        payload = encode_chunk(block, p, quality=crf)
        return len(payload) * 8 / block.size, metrics.psnr(block, decode_chunk(payload))

    rotated = point(profile, 16)
    curve = [point(plain, crf) for crf in (16, 24, 32)]
    assert rotated[1] >= _psnr_at(curve, rotated[0]) + 2.0


def _chunk_codes(block: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A block's band codes as the default profile's encoder fits its rotations on them."""
    profile = get_profile("hevc-12bit-444")
    maps = chunk.packing.band_maps(block, profile.bits, exact=False, nodata=None)
    coding = chunk._VideoCoding(profile, maps, profile.encoder_options(16), None, False, 0)
    codes, height, width, _ = coding.frame_codes(block)
    return codes, height, width


def test_candidates_add_the_detail_axes_where_they_differ(load_cube: LoadCube) -> None:
    # 13 Sentinel-2 bands of 5 dates: their detail is predicted to gain 1.65 dB more on
    # its own axes; 4 WorldCereal bands 0.24 dB more, below DETAIL_MIN_DB
    codes, height, width = _chunk_codes(load_cube("s2_l1c_eolearn_5x13").data)
    values, detail = spectral.candidates(codes, height, width, 12)
    assert values is not None
    assert detail is not None
    for basis in (values, detail):
        v = basis.basis.astype(np.float64)
        np.testing.assert_allclose(v.T @ v, np.eye(13), atol=1e-6)
    assert (
        spectral.gain_db(codes, detail, height, width)
        >= spectral.gain_db(codes, values, height, width) + spectral.DETAIL_MIN_DB
    )
    # other axes
    assert np.abs(values.basis.T @ detail.basis).max(axis=0).min() < 0.9

    codes, height, width = _chunk_codes(load_cube("s2_l2a_worldcereal_118x4x64x64").data[:32])
    (only,) = spectral.candidates(codes, height, width, 12)
    assert only is not None


def test_candidates_offer_no_rotation_when_neither_gains_enough() -> None:
    # independent bands: no rotation predicts MIN_GAIN_DB
    rng = np.random.default_rng(3)
    codes = _codes(np.stack([_smooth(rng, (3, 40, 48)) for _ in range(3)], axis=1))
    assert spectral.candidates(codes, 40, 48, 12) == [None]


def _with_rotation(
    monkeypatch: pytest.MonkeyPatch, block: np.ndarray, pick: int, crf: float
) -> bytes:
    """``block`` coded at ``crf`` with rotation candidate ``pick`` alone."""
    shipped = spectral.candidates
    with monkeypatch.context() as patch:
        patch.setattr(spectral, "candidates", lambda *a: shipped(*a)[pick : pick + 1])
        return encode_chunk(block, "hevc-12bit-444", quality=crf)


def test_encoder_keeps_the_rotation_that_codes_the_chunk_better(
    load_cube: LoadCube, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eolearn 5 x 13: the window (4 of 5 dates) is most of the chunk, so each rotation
    # codes the whole chunk and the better payload is kept; at crf 0 the detail axes gain
    # about 2 dB at equal rate
    block = load_cube("s2_l1c_eolearn_5x13").data
    shipped = spectral.candidates
    chosen = encode_chunk(block, "hevc-12bit-444", quality=0)

    def score(payload: bytes) -> float:
        decoded = decode_chunk(payload)
        return metrics.psnr(block, decoded) - chunk.DB_PER_DOUBLING * np.log2(len(payload))

    alone = [_with_rotation(monkeypatch, block, pick, 0) for pick in (0, 1)]
    assert alone[0] != alone[1]
    assert chosen == max(alone, key=score)
    assert chosen == alone[1]
    header = read_header(chosen)
    assert header.spectral is not None
    codes, height, width = _chunk_codes(block)
    np.testing.assert_array_equal(header.spectral.basis, shipped(codes, height, width, 12)[1].basis)


def test_a_close_call_between_rotations_is_ranked_at_equal_rate(
    load_cube: LoadCube, monkeypatch: pytest.MonkeyPatch
) -> None:
    # eolearn 5 x 13 at crf 16: the detail axes take a fifth more bytes for 1.6 dB, a tie
    # weighed at 6 dB a doubling, where the curve rises about 3: at the codes' axes'
    # bytes the detail axes are 0.8 dB better, and the encoder keeps them
    block = load_cube("s2_l1c_eolearn_5x13").data
    chosen = encode_chunk(block, "hevc-12bit-444", quality=16)
    alone = {
        (pick, crf): _with_rotation(monkeypatch, block, pick, crf)
        for pick, crf in ((0, 16), (1, 16), (1, 20))
    }

    def point(payload: bytes) -> tuple[float, float]:
        return np.log(len(payload)), metrics.psnr(block, decode_chunk(payload))

    (r0, p0), (r16, p16), (r20, p20) = (point(alone[k]) for k in ((0, 16), (1, 16), (1, 20)))
    assert r20 < r0 < r16
    detail_at_codes_rate = p20 + (p16 - p20) * (r0 - r20) / (r16 - r20)
    assert detail_at_codes_rate > p0 + 0.3
    assert abs(len(alone[1, 16]) / len(alone[0, 16]) - 1) > 0.1
    assert chosen == alone[1, 16]


def test_a_window_of_a_long_chunk_chooses_its_rotation(
    load_cube: LoadCube, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 19 dates: the rotations are tried on 4 of them at x265's fastest preset, then the
    # chunk is coded once more at the profile's (in time order: the date order's trial
    # comes first otherwise, test_dateorder; one date a frame: a mosaic is a second trial)
    block = load_cube("s2_l2a_openeo_gfmap_19x4x52x46").data
    tried: list[tuple[tuple[int, ...], str, float | None]] = []
    encode = chunk._VideoCoding.payload

    def recording(coding: Any, sub: np.ndarray, *args: Any, **kwargs: Any) -> bytes:
        tried.append((sub.shape, coding.options["preset"], coding.quality))
        return encode(coding, sub, *args, **kwargs)

    monkeypatch.setattr(chunk._VideoCoding, "payload", recording)
    payload = encode_chunk(block, "hevc-12bit-444", quality=8, date_order="time", frames="time")
    window = (chunk.PROBE_FRAMES, *block.shape[1:])
    # a window's close call is not ranked again at equal rate (no quality to do it at):
    # what the window says there did not carry over to the chunk
    probe = (window, chunk.PROBE_PRESET, None)
    assert tried == [probe, probe, (block.shape, "medium", 8)]
    assert read_header(payload).spectral is not None
    assert metrics.psnr(block, decode_chunk(payload)) > 40


def test_integer_values_stay_within_each_band_range() -> None:
    rng = np.random.default_rng(3)
    base = _smooth(rng, (3, 40, 40))
    bands = np.stack([base, base * 0.8, base * 1.2 + 3], 1)
    block = np.rint(1000 + 100 * (bands - bands.min())).astype(np.uint16)
    out = decode_chunk(encode_chunk(block, "hevc-12bit-444", quality=40))
    assert read_header(encode_chunk(block, "hevc-12bit-444", quality=40)).spectral is not None
    for b in range(3):
        assert block[:, b].min() <= out[:, b].min()
        assert out[:, b].max() <= block[:, b].max()


def _rotated_payload() -> bytes:
    rng = np.random.default_rng(4)
    base = _smooth(rng, (2, 32, 40))
    block = np.stack([base, base + 0.01 * rng.normal(size=base.shape), -base], 1)
    payload = encode_chunk(block.astype(np.float32), "hevc-12bit-444", quality=20)
    assert read_header(payload).spectral is not None
    return payload


def test_a_stored_basis_with_a_zero_vector_is_corrupt() -> None:
    payload = _rotated_payload()
    header = read_header(payload)
    assert header.date_order is None
    assert header.mosaic is None
    # the header ends with the axes (3 + 2 values of 10 bits: 7 bytes) and the f32 step
    axes_at = len(header.to_bytes()) - 4 - 7
    offset = 1 << (spectral.AXIS_BITS - 1)
    stored = ByteReader(payload, pos=axes_at).bits(5, spectral.AXIS_BITS) - offset
    np.testing.assert_array_equal(stored, header.spectral.stored)

    def with_axes(values: np.ndarray, pad: int = 0) -> bytes:
        w = ByteWriter()
        w.bits(values + offset, spectral.AXIS_BITS)
        axes = bytearray(w.getvalue())
        axes[-1] |= pad
        return payload[:axes_at] + bytes(axes) + payload[axes_at + 7 :]

    np.testing.assert_array_equal(decode_chunk(with_axes(stored)), decode_chunk(payload))
    zero = stored.copy()
    zero[:3] = 0  # the first vector
    with pytest.raises(CorruptChunkError, match="KLT basis"):
        decode_chunk(with_axes(zero))
    beyond = stored.copy()
    beyond[3] = -offset  # 10 bits hold -512, which no vector scaled to 511 has
    with pytest.raises(CorruptChunkError, match=r"KLT basis.*beyond"):
        decode_chunk(with_axes(beyond))
    with pytest.raises(CorruptChunkError, match="bits set past"):
        decode_chunk(with_axes(stored, pad=1))


def test_unknown_flags_and_klt_in_version_1_are_corrupt() -> None:
    payload = _rotated_payload()
    np.testing.assert_array_equal(decode_chunk(as_version(payload, 2)), decode_chunk(payload))
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_version(payload, 1))
    # the flag byte's last bit (TRANSPOSED) is unknown before version 11
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_version(payload, 2, flags=payload[5] | 0x80))


def test_version_1_and_2_payloads_still_decode() -> None:
    block = np.arange(2 * 3 * 32 * 40, dtype=np.uint16).reshape(2, 3, 32, 40) % 1000
    payload = encode_chunk(block, "ffv1-lossless")
    assert payload[4] == chunk.FORMAT_VERSION
    assert read_header(payload).spectral is None
    for older in (1, 2):  # without a rotation or a crop, their layouts are version 3's
        np.testing.assert_array_equal(decode_chunk(as_version(payload, older)), block)


def test_lossless_profile_takes_no_transform() -> None:
    with pytest.raises(ProfileError, match="lossless profile takes no transform"):
        dataclasses.replace(get_profile("ffv1-lossless"), transform="klt")
    with pytest.raises(ProfileError, match="unknown transform"):
        dataclasses.replace(get_profile("hevc-12bit-444"), transform="pca")
