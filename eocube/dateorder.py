"""The order a chunk's dates are coded in: paths through the dates that keep like with like.

A satellite time series is not a film. A cloudy date looks less like the date before it
than like a clear one weeks away, and a snowy one like the other snowy ones; a video
codec predicts each frame from the few frames coded just before it. Coding a chunk's
dates along a short path through them (each date next to the dates it looks most like)
gives the codec better references: at equal rate, on the first 32 dates of the dev
cubes, up to +0.39 dB on ten Sentinel-2 series (+0.12 on average; the NDVI series
+0.36); hourly fields keep their time order, already the shortest path
(``benchmarks/results/date_order.md``). A path only a little shorter than time order
can lose (monthly model SST: -0.6 to -0.7 dB; Landsat 8: up to -0.2), so the writer
takes the shortest path of :func:`candidates` as it is only where it is far shorter
(:data:`CLEAR`) and otherwise tries it against time order on a window of the chunk
(:func:`eocube.chunk.encode_chunk`'s ``date_order``). The order is stored in the payload
(chunk format 9, docs/format.md section 6.11) and a reader puts each frame back at its
date.

The kernels are Numba-compiled and release the GIL; their results do not depend on the
number of threads.
"""

from __future__ import annotations

import numba
import numpy as np

CHOICES = ("auto", "time")
"""What :func:`eocube.chunk.encode_chunk`'s ``date_order`` may be: try paths through the
dates (``"auto"``), or code the dates in time order (``"time"``)."""

MIN_DATES = 3
"""The fewest coded dates for which other orders are tried: with two, either order
predicts one date from the other."""

MAX_DATES = 256
"""The most coded dates for which other orders are tried (the longest default time
chunk, :data:`eocube.layout.DENSE_TIME_MAX`); longer chunks keep their time order, and
the distances stay cheap beside the encoding (at most ``MAX_DATES ** 2`` pairs of
:data:`SAMPLE_PIXELS` pixels a band)."""

SAMPLE_PIXELS = 4096
"""Pixels a band, at most, over which two dates' distance is measured: a regular grid of
the frame, every ``k``-th row and column."""

SHORTER = 0.9
"""How much shorter than the time order (sum of the distances between consecutive dates)
a candidate path must be to be tried: paths about as long as it change little."""

CLEAR = 0.55
"""How much shorter than the time order a path must be to be coded without a trial
(:func:`clearly_shorter`). On the dev cubes (benchmarks/results/date_order.md) every
shortest path under 0.55 of time order's length gained, by +0.01 to +0.39 dB (six
Sentinel-2 and NDVI series, 0.26 to 0.48), and every one that lost was 0.75 of it or
longer (Landsat 8, model SST, gridded observations), where the writer tries the path
against time order, which kept all but 0.01 dB."""


@numba.njit(nogil=True, parallel=True, cache=True)
def _distances(samples: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    T, N = samples.shape
    D = np.zeros((T, T))
    for i in numba.prange(T):
        for j in range(i + 1, T):
            s = 0.0
            for k in range(N):
                s += abs(samples[i, k] - samples[j, k])
            D[i, j] = s / N
    for i in range(T):
        for j in range(i + 1, T):
            D[j, i] = D[i, j]
    return D


def distances(codes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mean absolute difference of band codes between every two dates.

    Parameters
    ----------
    codes : numpy.ndarray
        (T, B, H, W) band codes, as the video codes them (missing values filled); the
        block's own ``height`` x ``width`` pixels lie at the top left.
    height, width : int
        The block's frame height and width inside the codes.

    Returns
    -------
    numpy.ndarray
        (T, T) float64, symmetric, zero on the diagonal.
    """
    T = codes.shape[0]
    step = max(1, int(np.ceil(np.sqrt(height * width / SAMPLE_PIXELS))))
    sampled = codes[:, :, :height:step, :width:step]
    return _distances(np.ascontiguousarray(sampled.reshape(T, -1), dtype=np.float32))


@numba.njit(cache=True)
def _greedy(D: np.ndarray, start: int) -> np.ndarray:  # pragma: no cover - compiled
    T = D.shape[0]
    path = np.empty(T, np.int64)
    seen = np.zeros(T, np.bool_)
    path[0] = start
    seen[start] = True
    for p in range(1, T):
        last = path[p - 1]
        best, best_d = -1, np.inf
        for j in range(T):  # the earliest date on ties
            if not seen[j] and D[last, j] < best_d:
                best, best_d = j, D[last, j]
        path[p] = best
        seen[best] = True
    return path


@numba.njit(cache=True)
def _two_opt(D: np.ndarray, path: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    # reverse a stretch path[i..j] wherever that shortens the path; the first date stays
    p = path.copy()
    T = p.shape[0]
    improved = True
    while improved:
        improved = False
        for i in range(1, T - 1):
            for j in range(i + 1, T):
                before = D[p[i - 1], p[i]]
                after = D[p[i - 1], p[j]]
                if j + 1 < T:
                    before += D[p[j], p[j + 1]]
                    after += D[p[i], p[j + 1]]
                if after < before - 1e-9 * (1.0 + before):
                    p[i : j + 1] = p[i : j + 1][::-1].copy()
                    improved = True
    return p


def path_length(D: np.ndarray, order: np.ndarray) -> float:
    """Sum of the distances between consecutive dates of ``order``."""
    order = np.asarray(order)
    return float(D[order[:-1], order[1:]].sum())


def candidates(D: np.ndarray) -> list[np.ndarray]:
    """Date orders worth trying for a chunk of these distances (:func:`distances`).

    Three paths that start at the first date: the nearest date next each time (greedy),
    that path shortened by 2-opt (reversing stretches that cross), and the time order
    shortened by 2-opt. On the dev cubes each is the best of the three on some chunk
    (``benchmarks/results/date_order.md``). Paths equal to the time order, to an earlier
    candidate, or not :data:`SHORTER` than the time order are left out.

    Returns
    -------
    list of numpy.ndarray
        Each an int64 permutation of ``range(T)``: position ``p`` codes date ``order[p]``;
        the shortest path first. Empty when the chunk has fewer than :data:`MIN_DATES` or
        more than :data:`MAX_DATES` dates.
    """
    T = D.shape[0]
    if not MIN_DATES <= T <= MAX_DATES:
        return []
    time_order = np.arange(T, dtype=np.int64)
    limit = SHORTER * path_length(D, time_order)
    greedy = _greedy(D, 0)
    found: list[np.ndarray] = []
    for order in (greedy, _two_opt(D, greedy), _two_opt(D, time_order)):
        if np.array_equal(order, time_order) or any(np.array_equal(order, o) for o in found):
            continue
        if path_length(D, order) < limit:
            found.append(order)
    found.sort(key=lambda o: path_length(D, o))  # stable: the earlier candidate on ties
    return found


def clearly_shorter(D: np.ndarray, order: np.ndarray) -> bool:
    """Whether ``order`` is shorter than :data:`CLEAR` times the time order's path."""
    return path_length(D, order) < CLEAR * path_length(D, np.arange(D.shape[0]))


def is_permutation(order: np.ndarray, dates: int) -> bool:
    """Whether ``order`` holds each of ``0 .. dates - 1`` once."""
    order = np.asarray(order)
    if order.shape != (dates,):
        return False
    seen = np.zeros(dates, bool)
    inside = (order >= 0) & (order < dates)
    if not inside.all():
        return False
    seen[order] = True
    return bool(seen.all())
