"""The daily-cycle screen: its period, cycle and split do what they say
(benchmarks/periodic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import periodic


def _hours(n: int, step_h: int = 1, start: str = "2019-03-01") -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(step_h, "h")


@pytest.mark.parametrize(
    ("time", "period"),
    [
        (_hours(72), 24),
        (_hours(48, 3), 8),
        (_hours(47), None),  # under two days
        (_hours(72, 5), None),  # 5 h does not divide a day
        (np.datetime64("2001-01-16", "ns") + np.arange(24) * np.timedelta64(30, "D"), None),
        (np.arange(72), None),  # not datetimes
    ],
)
def test_daily_period(time: np.ndarray, period: int | None) -> None:
    assert periodic.daily_period(time) == period


def test_an_irregular_axis_has_no_period() -> None:
    time = _hours(72)
    time[10] += np.timedelta64(30, "m")
    assert periodic.daily_period(time) is None


def test_mean_cycle_follows_the_first_phase() -> None:
    phase_values = np.arange(4.0)[:, None, None] * np.ones((1, 2, 3))
    chunk = np.concatenate([phase_values[2:], phase_values, phase_values])  # starts at phase 2
    np.testing.assert_array_equal(periodic.mean_cycle(chunk, 4, first_phase=2), phase_values)


def _cycling_field(days: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    hour = np.arange(24 * days) % 24
    # a daily cycle whose amplitude and phase vary in space, over slow weather
    cycle = np.sin(2 * np.pi * hour[:, None, None] / 24 + xx[None] / 8.0) * (1 + yy[None] / 16)
    weather = np.cumsum(rng.normal(0, 0.05, (24 * days, 1, 1)), axis=0) * np.cos(xx / 5.0)
    return 280 + 8 * cycle + weather


def test_the_split_gains_on_a_strong_daily_cycle_and_stays_at_its_budget() -> None:
    band = _cycling_field(12)
    plain_bytes, plain = periodic.split_coded(band, 0.3, 24, 0.0)
    split_bytes, split = periodic.split_coded(band, 0.3, 24, 0.1)
    assert split_bytes <= 1.02 * plain_bytes
    assert np.mean((split - band) ** 2) < np.mean((plain - band) ** 2)


def test_measure_keeps_the_best_fraction_per_chunk() -> None:
    band = _cycling_field(6)
    (point,) = periodic.measure(band, 24, 72, [0.3], (0.0, 0.1))
    assert len(point["best"]["chosen"]) == 2
    assert point["best"]["psnr"] >= max(q["psnr"] for q in point["fractions"].values()) - 1e-9


def test_a_shared_cycle_gains_on_short_chunks_and_stays_at_its_budget() -> None:
    band = _cycling_field(12)
    plain_bytes, plain = 0, np.empty_like(band)
    for start in range(0, len(band), 96):
        nbytes, plain[start : start + 96] = periodic.sperr(band[start : start + 96], 0.3)
        plain_bytes += nbytes
    shared_bytes, shared = periodic.shared_cycle_coded(band, 0.3, 24, 0.1, chunk_dates=96)
    assert shared.shape == band.shape
    assert shared_bytes <= 1.02 * plain_bytes
    assert np.mean((shared - band) ** 2) < np.mean((plain - band) ** 2)
