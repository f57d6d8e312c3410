"""eocube.metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eocube import metrics


def test_psnr_uses_the_band_data_range_as_peak() -> None:
    # band 0: values 0..10 (peak 10), one error of 1 over 4 pixels: MSE 0.25
    # band 1: values 100..300 (peak 200), errors 2 and -2 over 4 pixels: MSE 2
    original = np.array([[[[0, 10], [5, 5]], [[100, 300], [200, 200]]]], np.float32)
    decoded = np.array([[[[1, 10], [5, 5]], [[102, 298], [200, 200]]]], np.float32)
    per_band = metrics.psnr_per_band(original, decoded)
    expected = [10 * math.log10(10**2 / 0.25), 10 * math.log10(200**2 / 2)]
    np.testing.assert_allclose(per_band, expected)
    assert metrics.psnr(original, decoded) == pytest.approx(np.mean(expected))


def test_psnr_is_not_the_storage_type_peak() -> None:
    original = np.array([[[[1000, 2000]]]], np.uint16)
    decoded = np.array([[[[1010, 2000]]]], np.uint16)
    # peak 1000 (data range), MSE 50, not peak 65535
    assert metrics.psnr(original, decoded) == pytest.approx(10 * math.log10(1000**2 / 50))


def test_psnr_exact_is_infinite_and_exact_bands_leave_the_mean() -> None:
    a = np.arange(2 * 2 * 3 * 3, dtype=np.int16).reshape(2, 2, 3, 3)
    assert metrics.psnr(a, a.copy()) == math.inf
    b = a.copy()
    b[0, 1, 0, 0] += 3
    per_band = metrics.psnr_per_band(a, b)
    assert per_band[0] == math.inf
    peak = float(a[:, 1].max() - a[:, 1].min())
    assert per_band[1] == pytest.approx(10 * math.log10(peak**2 / (9 / 18)))
    assert metrics.psnr(a, b) == pytest.approx(per_band[1])


def test_psnr_counts_only_valid_pixels() -> None:
    original = np.array([[[[np.nan, 0.0], [4.0, 2.0]]]])
    # errors where the original is NaN do not count, even if the decoded value is wild
    decoded = np.array([[[[1e9, 1.0], [4.0, 2.0]]]])
    # peak 4 (NaN left out), MSE (1 + 0 + 0) / 3
    assert metrics.psnr(original, decoded) == pytest.approx(10 * math.log10(16 / (1 / 3)))
    ints = np.array([[[[0, 10], [20, 65535]]]], np.uint16)
    dec = np.array([[[[0, 10], [22, 0]]]], np.uint16)
    # nodata 65535 left out of peak (20) and error: MSE 4 / 3
    assert metrics.psnr(ints, dec, nodata=65535) == pytest.approx(10 * math.log10(400 / (4 / 3)))
    assert metrics.psnr(ints, dec) < metrics.psnr(ints, dec, nodata=65535)


def test_psnr_empty_and_constant_bands() -> None:
    nan_band = np.full((1, 1, 2, 2), np.nan)
    assert math.isnan(metrics.psnr(nan_band, nan_band))
    assert np.isnan(metrics.psnr_per_band(nan_band, nan_band)).all()
    const = np.full((1, 1, 2, 2), 7.0)
    dec = const.copy()
    dec[0, 0, 0, 0] = 9.0
    # a constant band uses a peak of 1: MSE 4 / 4
    assert metrics.psnr(const, dec) == pytest.approx(0.0)
    # a decoded NaN where the original is valid is an infinite error
    dec[0, 0, 0, 0] = np.nan
    assert metrics.psnr(const, dec) == -math.inf


def test_psnr_summary_is_minus_inf_when_a_band_lost_values() -> None:
    original = np.array([[[[0.0, 1.0]], [[0.0, 2.0]], [[5.0, 6.0]]]])  # 3 bands
    decoded = original.copy()
    decoded[0, 1, 0, 1] = 2.5  # band 1: peak 2, MSE 0.125
    decoded[0, 2, 0, 0] = np.nan  # band 2: a valid value lost
    per_band = metrics.psnr_per_band(original, decoded)
    assert per_band[0] == math.inf
    assert per_band[1] == pytest.approx(10 * math.log10(4 / 0.125))
    assert per_band[2] == -math.inf
    # not left out of the mean like an exact band: the summary says something was lost
    assert metrics.psnr(original, decoded) == -math.inf


def test_psnr_accepts_three_dims_and_checks_shapes() -> None:
    a = np.array([[[0.0, 1.0], [2.0, 3.0]]])  # (T, Y, X)
    b = a + 0.5
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(9 / 0.25))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(a, b[:, :1])
    with pytest.raises(ValueError, match=r"\(T, B, Y, X\)"):
        metrics.psnr(a[0], b[0])


def test_max_abs_error() -> None:
    original = np.array([[[[1, 5], [65535, 9]]]], np.uint16)
    decoded = np.array([[[[4, 5], [0, 8]]]], np.uint16)
    # unsigned arithmetic must not wrap: |4 - 1| = 3, |0 - 65535| counts without nodata
    assert metrics.max_abs_error(original, decoded) == 65535
    assert metrics.max_abs_error(original, decoded, nodata=65535) == 3
    floats = np.array([np.nan, 1.0, -2.0])
    assert metrics.max_abs_error(floats, np.array([5.0, 1.5, -2.25])) == 0.5
    assert metrics.max_abs_error(floats, np.array([5.0, np.nan, -2.0])) == math.inf
    assert metrics.max_abs_error(np.full(3, np.nan), np.zeros(3)) == 0.0


def test_bpppb() -> None:
    # 1000 bytes for 2 x 4 x 10 x 25 = 2000 values: 4 bits per pixel per band
    assert metrics.bpppb(1000, (2, 4, 10, 25)) == 4.0
    assert metrics.bpppb(3, (1, 1, 2, 3)) == 4.0
    assert math.isnan(metrics.bpppb(10, (0, 4, 10, 10)))


def test_compression_ratio() -> None:
    # 2 x 4 x 10 x 25 uint16 = 4000 bytes
    assert metrics.compression_ratio(1000, (2, 4, 10, 25), np.dtype(np.uint16)) == 4.0
    assert metrics.compression_ratio(1000, (2, 4, 10, 25), np.dtype("float64")) == 16.0
    assert metrics.compression_ratio(4000, (2, 4, 10, 25), np.dtype("uint8")) == 0.5
    assert metrics.compression_ratio(0, (2, 2), np.dtype("uint8")) == math.inf
    # bpppb and ratio agree: ratio = bits of the dtype / bpppb
    shape, nbytes = (3, 5, 7, 11), 777
    assert metrics.compression_ratio(nbytes, shape, np.dtype(np.float32)) == pytest.approx(
        32 / metrics.bpppb(nbytes, shape)
    )


def test_valid_mask() -> None:
    a = np.array([np.nan, np.inf, 0.0, -9999.0])
    np.testing.assert_array_equal(metrics.valid_mask(a), [False, False, True, True])
    np.testing.assert_array_equal(metrics.valid_mask(a, -9999.0), [False, False, True, False])
    np.testing.assert_array_equal(metrics.valid_mask(a, float("nan")), [False, False, True, True])
    np.testing.assert_array_equal(metrics.valid_mask(np.array([0, 3], np.uint8), 0), [False, True])


def test_error_stats_call_no_blas_from_the_encode_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Encode threads measure chunks at once; OpenBLAS's threaded dot of long vectors,
    # called from two threads, hung the writer for good (numpy issue 17752).
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("ErrorStats must not call BLAS")

    monkeypatch.setattr(np, "dot", refuse)
    monkeypatch.setattr(np, "vdot", refuse)
    monkeypatch.setattr(np, "inner", refuse)
    rng = np.random.default_rng(0)
    original = rng.normal(size=(4, 2, 100, 100))
    decoded = original + rng.normal(scale=0.01, size=original.shape)
    stats = metrics.ErrorStats.of(original, decoded)
    sse = ((decoded - original) ** 2).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(stats.sse, sse, rtol=1e-12)
