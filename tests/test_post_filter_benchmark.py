"""The post-filter screen: its filters fit what they should (benchmarks/post_filter.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import post_filter


def _smooth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T, B, Y, X = shape
    yy, xx = np.mgrid[:Y, :X]
    field = np.sin(yy / 5.0) * np.cos(xx / 7.0)
    return 1000 + 300 * field[None, None] + 50 * rng.standard_normal((T, B, 1, 1))


@pytest.mark.parametrize(("radius", "taps"), [(1, 5), (2, 13), (3, 25)])
def test_window_taps_are_point_symmetric_pairs(radius: int, taps: int) -> None:
    block = _smooth((2, 3, 9, 8))
    rows = post_filter.features(block, 1, radius, bands=False, dates=False)
    assert rows.shape == (2 * 9 * 8, taps + 1)  # and the offset
    with_all = post_filter.features(block, 1, radius, bands=True, dates=True)
    assert with_all.shape[1] == taps + 1 + 2 + 1


def test_a_blur_is_undone_and_noise_removed() -> None:
    original = _smooth((2, 2, 40, 40))
    rng = np.random.default_rng(1)
    noisy = original + rng.normal(0, 20, original.shape)
    valid = np.ones(original.shape, bool)
    err_before = np.mean((noisy - original) ** 2)
    out = post_filter.filtered(original, noisy, valid, 2, bands=False, dates=False)
    # a smooth field under white noise: a 5 x 5 low-pass removes most of it
    assert np.mean((out - original) ** 2) < 0.3 * err_before


def test_invalid_values_take_no_part_in_the_fit() -> None:
    original = _smooth((1, 1, 30, 30))
    decoded = original + 3.0
    valid = np.ones(original.shape, bool)
    decoded[0, 0, :5] = 1e6  # garbage where the original is missing
    valid[0, 0, :5] = False
    out = post_filter.filtered(original, decoded, valid, 1, bands=False, dates=False)
    # the offset of 3 is learnt from the valid rows alone
    np.testing.assert_allclose(out[0, 0, 10:20, 10:20], original[0, 0, 10:20, 10:20], atol=1e-6)
