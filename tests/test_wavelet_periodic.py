"""The wavelet coder's periodic model (coder ``sperr-periodic``, chunk format 10): the
period found, the sinusoids fitted, the choice by PSNR for the bytes, round trips and
damaged sections."""

from __future__ import annotations

import math
import zlib

import imagecodecs
import numpy as np
import pytest
from legacy import as_version  # tests/legacy.py

from eocube import chunk as chunk_module
from eocube import decode_chunk, encode_chunk, metrics, read_header, wavelet
from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CorruptChunkError
from eocube.testing import assert_chunk_roundtrip


def _hourly(dates: int, bands: int = 1, side: int = 24, seed: int = 0) -> np.ndarray:
    """A (T, B, Y, X) float32 field with a daily cycle whose amplitude and phase vary in
    space, over slowly wandering weather and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side].astype(np.float64)
    hour = np.arange(dates)[:, None, None] % 24
    out = np.empty((dates, bands, side, side))
    for b in range(bands):
        phase = xx / 9.0 + b
        cycle = np.sin(2 * np.pi * hour / 24 + phase) * (3 + yy / side)
        weather = np.cumsum(rng.normal(0, 0.08, (dates, 1, 1)), axis=0) * np.cos(yy / 7.0)
        out[:, b] = 280 + 4 * cycle + weather + rng.normal(0, 0.05, (dates, side, side))
    return out.astype(np.float32)


def _psnr_and_bytes(block: np.ndarray, section: bytes) -> float:
    low, high = np.nanmin(block, axis=(0, 2, 3)), np.nanmax(block, axis=(0, 2, 3))
    decoded = wavelet.decode(
        ByteReader(section), block.shape, np.dtype(np.float64), low=low, high=high
    )
    return metrics.psnr(block, decoded)


# --- the period ------------------------------------------------------------------------


@pytest.mark.parametrize("period", [24, 8, 5])
def test_find_period_finds_a_sinusoid_beside_a_trend_and_noise(period: int) -> None:
    rng = np.random.default_rng(period)
    t = np.arange(120)
    series = 0.05 * t + np.sin(2 * np.pi * t / period + 1) + rng.normal(0, 0.3, t.size)
    assert wavelet.find_periods(series)[:1] == (period,)


def test_find_periods_finds_none_in_noise_a_trend_or_a_short_series() -> None:
    rng = np.random.default_rng(1)
    assert wavelet.find_periods(rng.normal(size=256)) == ()
    assert wavelet.find_periods(np.arange(100.0)) == ()  # a trend, nothing left
    assert wavelet.find_periods(np.full(100, 3.0)) == ()
    t = np.arange(wavelet.MIN_DATES - 1)
    assert wavelet.find_periods(np.sin(2 * np.pi * t / 4)) == ()
    assert wavelet.find_periods(np.sin(2 * np.pi * np.arange(wavelet.MIN_DATES) / 4)) == (4,)
    assert wavelet.find_periods(np.array([1.0, np.nan] * 40)) == ()


def test_a_period_needs_min_cycles_whole_periods() -> None:
    t = np.arange(90)  # 3.75 periods of 24, 5.6 of 16
    assert 24 not in wavelet.find_periods(np.sin(2 * np.pi * t / 24))
    assert wavelet.find_periods(np.sin(2 * np.pi * t / 16)) == (16,)


def test_a_slow_wave_does_not_hide_the_day() -> None:
    t = np.arange(744)
    series = 3 * np.sin(2 * np.pi * t / 158) + np.sin(2 * np.pi * t / 24)
    assert wavelet.find_periods(series) == (158, 24)


def test_fit_maps_and_sinusoids_recover_a_cycle_exactly() -> None:
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(2, 5, 6))
    offset = rng.normal(size=(1, 5, 6)) + 100
    band = offset + wavelet.sinusoids(100, 24, maps)
    np.testing.assert_allclose(wavelet.fit_maps(band, 24, 1), maps, atol=1e-9)
    basis = wavelet.harmonic_basis(48, 24, 2)
    assert basis.shape == (48, 4)
    np.testing.assert_allclose(basis[6], [0.0, 1.0, -1.0, 0.0], atol=1e-12)  # a quarter day


# --- the coder's choice -----------------------------------------------------------------


@pytest.mark.parametrize("bits", [0.2, 1.0])
def test_a_daily_cycle_is_modelled_and_gains_at_equal_bytes(bits: float) -> None:
    block = _hourly(96).astype(np.float64)
    plain = wavelet.encode(block, bits_per_value=bits, periodic=False)
    modelled = wavelet.encode(block, bits_per_value=bits)
    assert not wavelet.is_periodic(plain)
    assert wavelet.is_periodic(modelled)
    assert len(modelled) <= 1.03 * len(plain)
    assert _psnr_and_bytes(block, modelled) > _psnr_and_bytes(block, plain) + 0.3


def test_without_a_cycle_the_section_is_the_plain_coders_byte_for_byte() -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:20, :20]
    block = (np.sin(xx / 5.0) * np.cos(yy / 7.0))[None, None] + rng.normal(0, 0.01, (40, 1, 1, 1))
    assert wavelet.encode(block, bits_per_value=0.5) == wavelet.encode(
        block, bits_per_value=0.5, periodic=False
    )


def test_several_bands_split_their_bytes_with_their_models() -> None:
    block = _hourly(96, bands=3).astype(np.float64)
    block[:, 2] = block[0, 2]  # a band with no cycle at all
    section = wavelet.encode(block, bits_per_value=0.3, threads=1)
    assert wavelet.is_periodic(section)
    plain = wavelet.encode(block, bits_per_value=0.3, threads=1, periodic=False)
    assert len(section) <= 1.03 * len(plain)
    assert _psnr_and_bytes(block, section) > _psnr_and_bytes(block, plain)
    assert wavelet.encode(block, bits_per_value=0.3, threads=2) == section


def test_tolerance_mode_does_not_model() -> None:
    block = _hourly(96).astype(np.float64)
    assert not wavelet.is_periodic(wavelet.encode(block, tolerance=[0.1]))


# --- chunks ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def periodic_chunk() -> tuple[np.ndarray, bytes]:
    block = _hourly(96, bands=2)
    block[5, 1, :3, :4] = np.nan
    payload, decoded = assert_chunk_roundtrip(
        block, "hevc-12bit-444-wavelet", quality=30, wavelet="always"
    )
    assert metrics.psnr(block, decoded) > 35
    return block, payload


def test_a_periodic_chunk_is_version_10_and_round_trips(
    periodic_chunk: tuple[np.ndarray, bytes],
) -> None:
    block, payload = periodic_chunk
    header = read_header(payload)
    assert header.wavelet
    assert header.version == chunk_module.FORMAT_VERSION
    decoded = decode_chunk(payload)
    assert np.isnan(decoded[5, 1, :3, :4]).all()
    assert not np.isnan(decoded[~np.isnan(block)]).any()
    parts = chunk_module.parse_chunk(payload)
    assert parts.header.wavelet
    assert len(parts.tail.masks) == 1


def test_a_periodic_chunk_of_integers_rounds_and_stays_in_range() -> None:
    block = np.round(_hourly(96) * 10).astype(np.uint16)
    payload, decoded = assert_chunk_roundtrip(block, "hevc-12bit-444", wavelet="always", quality=30)
    assert read_header(payload).version == chunk_module.FORMAT_VERSION
    assert decoded.min() >= block.min()
    assert decoded.max() <= block.max()


def _section_start(payload: bytes) -> int:
    return len(read_header(payload).to_bytes())


def test_a_periodic_section_under_an_older_version_is_corrupt(
    periodic_chunk: tuple[np.ndarray, bytes],
) -> None:
    _, payload = periodic_chunk
    as_v10 = as_version(payload, chunk_module.PERIODIC_VERSION)
    np.testing.assert_array_equal(decode_chunk(as_v10), decode_chunk(payload))
    damaged = as_version(payload, chunk_module.DATE_ORDER_VERSION)
    with pytest.raises(CorruptChunkError, match="'sperr-periodic' in a payload of a version"):
        decode_chunk(damaged)
    with pytest.raises(CorruptChunkError, match="'sperr-periodic' in a payload of a version"):
        chunk_module.parse_chunk(damaged)


def _band_fields(payload: bytes) -> tuple[int, int, int, int]:
    """Where band 0's period and harmonics are, and its maps' checksum and bytes."""
    r = ByteReader(payload, pos=_section_start(payload))
    assert r.text() == wavelet.PERIODIC_CODER
    period_at = r.pos
    assert r.varint() == 24
    harmonics_at = r.pos
    assert r.unpack("B") == (1,)
    crc_at = r.pos
    r.unpack("I")
    r.varint()
    return period_at, harmonics_at, crc_at, r.pos


def test_damaged_maps_fail_their_checksum(periodic_chunk: tuple[np.ndarray, bytes]) -> None:
    _, payload = periodic_chunk
    _, _, crc_at, maps_at = _band_fields(payload)
    for at in (crc_at, maps_at, maps_at + 7):
        damaged = bytearray(payload)
        damaged[at] ^= 0x10
        with pytest.raises(CorruptChunkError, match="maps of band 0 fails its checksum"):
            decode_chunk(bytes(damaged))


@pytest.mark.parametrize(("field", "value"), [("period", 1), ("harmonics", 0)])
def test_a_period_of_one_or_no_harmonics_is_corrupt(
    periodic_chunk: tuple[np.ndarray, bytes], field: str, value: int
) -> None:
    _, payload = periodic_chunk
    period_at, harmonics_at, _, _ = _band_fields(payload)
    damaged = bytearray(payload)
    damaged[period_at if field == "period" else harmonics_at] = value
    with pytest.raises(CorruptChunkError, match="periodic model has period"):
        decode_chunk(bytes(damaged))


def test_maps_of_another_shape_are_refused() -> None:
    rng = np.random.default_rng(4)
    blob = rng.normal(size=(48, 6, 7))
    rest = bytes(imagecodecs.sperr_encode(blob, 2.0, "bpp", numthreads=1))
    wrong = bytes(imagecodecs.sperr_encode(rng.normal(size=(2, 6, 8)), 2.0, "bpp", numthreads=1))
    w = ByteWriter()
    w.text(wavelet.PERIODIC_CODER)
    w.varint(24)
    w.pack("B", 1)
    for blob_bytes in (wrong, rest):
        w.pack("I", zlib.crc32(blob_bytes))
        w.blob(blob_bytes)
    with pytest.raises(CorruptChunkError, match=r"maps of band 0 holds \(2, 6, 8\)"):
        wavelet.decode(
            ByteReader(w.getvalue()),
            (48, 1, 6, 7),
            np.dtype(np.float64),
            low=np.array([-9.0]),
            high=np.array([9.0]),
        )


def test_the_wavelet_profile_codes_an_hourly_series_with_its_cycle() -> None:
    block = _hourly(120)
    payload = encode_chunk(block, "hevc-12bit-444-wavelet", quality=24)
    header = read_header(payload)
    assert header.wavelet
    assert header.version == chunk_module.FORMAT_VERSION
    assert math.isfinite(metrics.psnr(block, decode_chunk(payload)))


def test_least_squares_matches_lapack_and_takes_a_zero_column() -> None:
    rng = np.random.default_rng(5)
    design = np.concatenate([np.ones((80, 1)), wavelet.harmonic_basis(80, 24, 2)], axis=1)
    values = rng.normal(size=(80, 9))
    expected = np.linalg.lstsq(design, values, rcond=None)[0]
    np.testing.assert_allclose(wavelet.least_squares(design, values), expected, atol=1e-10)
    with_zero = np.concatenate([design, np.zeros((80, 1))], axis=1)
    coef = wavelet.least_squares(with_zero, values)
    np.testing.assert_allclose(coef[:-1], expected, atol=1e-10)
    np.testing.assert_array_equal(coef[-1], 0.0)
