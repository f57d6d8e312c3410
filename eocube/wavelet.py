"""The wavelet coder: SPERR (through imagecodecs) for the chunks a video codes worse.

HEVC's transforms reach 32 x 32 px and its samples 12 bits; on smooth fields (model
levels, reanalysis temperature) a multi-level wavelet over the whole chunk, with no
bit-depth ceiling, spends far fewer bits for the same error: on ERA-Interim u/v/z at
0.1 bpppb SPERR is 5.4 dB ahead of the 12-bit video, on 256 hours of ERA5 2 m
temperature about 1 dB (benchmarks/results/rd). :func:`eocube.chunk.encode_chunk`
(``wavelet="auto"``) codes a chunk both ways and keeps the better one; this module
holds the wavelet side.

SPERR codes each band's (T, Y, X) values, as float64, in one 3-D volume (a 2-D image
when the chunk has one date, or one row; axes of length 1 are left out, since SPERR
fails on them). Missing values arrive filled smoothly by the caller. Two modes:

- a size: ``bits_per_value`` on average over the bands. Each band of a multi-band block
  is coded at a few rates around that share (:data:`SHARE_STEPS`) and the combination
  with the highest mean PSNR over the bands that spends no more than equal shares is
  kept: a bit buys one field more dB than another (ERA-Interim u/v/z: +0.03 to +0.47 dB
  at equal bytes, the least between 0.12 and 0.2 bits per value;
  benchmarks/results/wavelet_gap.md);
- an error bound: ``tolerance`` per band, SPERR's point-wise error mode.

Section layout (after the chunk header, in place of the streams; docs/format.md)::

    str coder ("sperr") | per band: u32 crc32 | varint len | SPERR bitstream (its header on)

or, with coder ``sperr-periodic`` (chunk format 10), each band led by ``varint period``
(0: none) and, with a period, ``u8 harmonics | u32 crc32 | varint len | SPERR bitstream``
of its (2 * harmonics, Y, X) sinusoid maps; the band's own bitstream then codes the
values less those sinusoids. Hourly fields follow the day: on ERA5 2 m temperature in
256-date chunks the daily cycle modelled apart gains 0.2 to 0.5 dB at equal bytes
(:func:`find_periods`, :data:`PERIOD_FRACTIONS`).

The checksum is verified before SPERR sees a byte: SPERR is C++ and a damaged bitstream
could take the process down instead of raising.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import dask.system
import numpy as np

from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CorruptChunkError
from eocube.metrics import DB_PER_DOUBLING

CHOICES = ("off", "auto", "always")
"""Whether a chunk may be coded by the wavelet coder (a profile's ``wavelet``, and
:func:`eocube.chunk.encode_chunk`'s): never, where it codes better, wherever it applies."""

CODER = "sperr"
"""The wavelet coder; the section names it, so that others can be added."""
PERIODIC_CODER = "sperr-periodic"
"""SPERR with a periodic component along time modelled apart, per band (chunk format
version 10, :data:`eocube.chunk.PERIODIC_VERSION`): a section with no band so modelled
is written as :data:`CODER`'s."""
CODERS = (CODER, PERIODIC_CODER)

MIN_DATES = 64
"""The fewest dates in which a period is looked for (:func:`find_periods`). In a short
series chance alone explains much: in the dev corpus's 9 cubes of 8 to 63 dates (each
whole), 14 of 39 bands find a period by :data:`MIN_EXPLAINED`, and without this floor
the wavelet profile's stores of them were unchanged (`benchmarks.rd`: only hourly ERA5
2 m temperature changed); the trials only cost time."""
MIN_CYCLES = 4
"""The least number of whole periods a block's dates must hold for a period to be
looked for (:func:`find_periods`)."""
MIN_EXPLAINED = 0.1
"""The least share of what a linear trend leaves of a band's mean over space that the
sinusoid of a period must explain for the band to be tried with it (a screen: the trial
decides). The daily cycle explains 0.14 to 0.72 of it in the 256-date chunks of hourly
ERA5 2 m temperature."""
PERIOD_FRACTIONS = (0.02, 0.04, 0.08)
"""The shares of a band's bytes its harmonic maps are tried at (``sperr-periodic``). On
hourly ERA5 2 m temperature in 256-date chunks the best share is 0.08 at 0.1 bits per
value, 0.04-0.06 at 0.3 and 0.02 at 1 (benchmarks/results/periodic.md)."""
HARMONICS = 1
"""Sinusoids per period the writer models (the section says how many): a second, at its
best share of the bytes, gains 0.01 to 0.02 dB more on hourly ERA5 2 m temperature."""

BOUND_SLACK = 2.0
"""SPERR's point-wise tolerance under an error bound, as a multiple of the bound. The
residual layer (eocube.residual) then brings the values SPERR leaves beyond the bound
within it, in fewer bytes than SPERR's own outlier coding: on ERA-Interim u/v/z, at
1e-3 of each band's range, 0.906 bpppb against 1.003 with the tolerance at the bound
(1.25x: 0.935, 1.5x: 0.910, 3x: 0.921); at 3e-3, 0.411 against 0.486."""

MAX_BITS_PER_VALUE = 64.0
"""SPERR's largest size setting (a float64 verbatim)."""

SHARE_STEPS = (-2, -1, 0, 1, 2)
"""The rates each band of a multi-band block is coded at in size mode: the equal share
times ``2 ** (k / 4)``. Two quarter-octave steps either way take most of the gain of any
split (on ERA-Interim u/v/z, one step either way gains 0 to 0.4 dB where two gain 0.03
to 0.47; benchmarks/results/wavelet_gap.md) for five SPERR encodes and decodes a band,
fast beside the video's encode."""

EXACT_PSNR_DB = 200.0
"""PSNR taken for a band decoded exactly (no error to take the log of)."""

_SPLIT_UNITS = 4096
"""Byte budgets are split in at most this many units (each rate's bytes rounded up to
whole units, so that the split never spends more than the equal shares)."""

SAFE_MAGNITUDES = (1e-200, 1e200)
"""The magnitudes SPERR (0.8) codes: nonzero values outside them are not given to it.
Near float64's subnormals it aborts the process (values of 1e-310: a C++ exception
nothing catches) or decodes garbage (1e-300: errors of 4000x the values)."""
MAX_PRECISION = 2.0**40
"""The largest ratio of a band's largest magnitude to its tolerance that SPERR's error
mode is given: it holds the tolerance up to about 1e15 (float64's precision), misses
it beyond, and crashes at 1e20."""


def volume_shape(t: int, y: int, x: int) -> tuple[int, ...] | None:
    """The shape SPERR codes a band of a (t, y, x) block in: the axes longer than one.

    None when fewer than two remain (a single row or column of a single date): SPERR
    codes 2-D and 3-D arrays only.
    """
    shape = tuple(n for n in (t, y, x) if n > 1)
    return shape if len(shape) >= 2 else None


def codable(values: np.ndarray, tolerance: np.ndarray | None = None) -> bool:
    """Whether SPERR may code this (T, B, Y, X) block of finite float64 values (at these
    per-band tolerances): within :data:`SAFE_MAGNITUDES`, and with each band's largest
    magnitude at most :data:`MAX_PRECISION` times its tolerance."""
    magnitude = np.abs(values)
    peak = magnitude.max(axis=(0, 2, 3))
    if peak.max() > SAFE_MAGNITUDES[1]:
        return False
    nonzero = magnitude[magnitude > 0]
    if nonzero.size and nonzero.min() < SAFE_MAGNITUDES[0]:
        return False
    return tolerance is None or bool(np.all(peak <= MAX_PRECISION * np.asarray(tolerance)))


def encode(
    values: np.ndarray,
    *,
    bits_per_value: float | None = None,
    tolerance: Sequence[float] | np.ndarray | None = None,
    valid: np.ndarray | None = None,
    threads: int = 0,
    split: bool = True,
    periodic: bool = True,
) -> bytes:
    """The wavelet section of a (T, B, Y, X) block of finite float64 values.

    Parameters
    ----------
    values : ndarray
        The coded part of the block, missing values already filled.
    bits_per_value : float, optional
        SPERR's size mode: about this many bits per value on average over the bands,
        split among them for the best mean PSNR (:func:`split_rates`).
    tolerance : sequence of float, optional
        SPERR's point-wise error mode: the largest error of each band's values (> 0).
    valid : ndarray of bool, optional
        Which values are data, not fill (default: all): the PSNR that splits the rate
        is measured on these, on each band's range of them.
    threads : int
        Bands coded at once in size mode (0: one per usable CPU). Each SPERR call runs on
        one thread, so the bytes are the same whatever this is.
    split : bool
        In size mode, split the bytes among the bands (the default); False: every band
        at ``bits_per_value``.
    periodic : bool
        In size mode, try a periodic component along time apart (the default): a band
        whose mean over space follows a sinusoid of an integer period (:func:`find_periods`)
        is also coded as its per-pixel sinusoids (:data:`HARMONICS` per period, at each
        of :data:`PERIOD_FRACTIONS` of its bytes) and SPERR of the rest, and the coding
        with the best PSNR for its bytes is kept (:func:`_best_band`).

    Returns
    -------
    bytes
        The section, as :func:`decode` reads it.

    Raises
    ------
    ValueError
        Without exactly one of ``bits_per_value`` and ``tolerance``, with one out of
        range, or for a block SPERR cannot code (:func:`volume_shape`, :func:`codable`).
    """
    T, B, Y, X = values.shape
    shape = volume_shape(T, Y, X)
    if shape is None:
        raise ValueError(f"SPERR cannot code blocks of {T} x {Y} x {X} values per band")
    if (bits_per_value is None) == (tolerance is None):
        raise ValueError("give one of bits_per_value and tolerance")
    if not codable(values, tolerance if tolerance is None else np.asarray(tolerance)):
        raise ValueError("SPERR cannot code these values at this tolerance (see codable)")
    if valid is not None and valid.shape != values.shape:
        raise ValueError(f"valid has shape {valid.shape}, values {values.shape}")
    if bits_per_value is not None:
        if not 0 < bits_per_value <= MAX_BITS_PER_VALUE:
            raise ValueError(f"bits_per_value must be in (0, 64], got {bits_per_value}")
        bits = float(bits_per_value)
        periods = [_band_periods(values, b) if periodic else () for b in range(B)]
        if split:
            bands = _sized(values, shape, bits, valid, threads, periods)
        else:
            bands = [
                _best_band(values, b, shape, bits, _keep(valid, b, shape), periods[b])
                for b in range(B)
            ]
    else:
        bounds = np.broadcast_to(np.asarray(tolerance, np.float64), (B,))
        if not np.all(bounds > 0) or not np.all(np.isfinite(bounds)):
            raise ValueError(f"tolerance must be finite and > 0, got {tolerance!r}")
        bands = [
            _CodedBand(_sperr(_band(values, b, shape), float(t), "pwe"))
            for b, t in enumerate(bounds)
        ]
    return _section(bands)


@dataclass(frozen=True)
class _CodedBand:
    """A band's SPERR bitstream, and with a period its harmonic maps' (the bitstream then
    codes the band less the maps' sinusoids); ``psnr`` of its decode where measured."""

    blob: bytes
    period: int = 0
    maps: bytes = b""
    psnr: float = math.nan
    fraction: float = 0.0
    """The maps' share of the band's bytes it was coded at (0 without a period)."""

    @property
    def nbytes(self) -> int:
        extra = _PERIODIC_BAND_BYTES + len(self.maps) if self.period else 0
        return len(self.blob) + extra


_PERIODIC_BAND_BYTES = 1 + 1 + 4 + 3
"""What a modelled band adds to a ``sperr-periodic`` section besides its maps: the
period's and harmonics' bytes, the maps' checksum and length (a 3-byte varint)."""


def _section(bands: Sequence[_CodedBand]) -> bytes:
    """The section of these bands: :data:`CODER`'s layout unless a band is modelled."""
    w = ByteWriter()
    periodic = any(band.period for band in bands)
    w.text(PERIODIC_CODER if periodic else CODER)
    for band in bands:
        if periodic:
            w.varint(band.period)
            if band.period:
                w.pack("B", HARMONICS)
                w.pack("I", zlib.crc32(band.maps))
                w.blob(band.maps)
        w.pack("I", zlib.crc32(band.blob))
        w.blob(band.blob)
    return w.getvalue()


def is_periodic(section: bytes) -> bool:
    """Whether a wavelet section models a periodic component (chunk format version 10)."""
    return section.startswith(_PERIODIC_PREFIX)


def _text(value: str) -> bytes:
    w = ByteWriter()
    w.text(value)
    return w.getvalue()


_PERIODIC_PREFIX = _text(PERIODIC_CODER)


def _band(values: np.ndarray, b: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(values[:, b], dtype=np.float64).reshape(shape)


def _sperr(band: np.ndarray, level: float, mode: Literal["bpp", "pwe"]) -> bytes:
    import imagecodecs

    # one thread: the bitstream must not depend on the machine
    return bytes(imagecodecs.sperr_encode(band, level, mode, numthreads=1))


def _keep(valid: np.ndarray | None, b: int, shape: tuple[int, ...]) -> np.ndarray | None:
    return None if valid is None else valid[:, b].reshape(shape)


def _sized(
    values: np.ndarray,
    shape: tuple[int, ...],
    bits: float,
    valid: np.ndarray | None,
    threads: int,
    periods: Sequence[Sequence[int]],
) -> list[_CodedBand]:
    """Each band's coding at its share of ``bits`` per value (see :func:`encode`): its
    model (a period or none) chosen at the equal share, then kept at every share tried."""
    B = values.shape[1]
    if B == 1:  # nothing to share
        return [_best_band(values, 0, shape, bits, _keep(valid, 0, shape), periods[0])]
    rates = [min(bits * 2.0 ** (k / 4), MAX_BITS_PER_VALUE) for k in SHARE_STEPS]
    equal = SHARE_STEPS.index(0)

    def candidates(b: int) -> list[_CodedBand]:
        keep = _keep(valid, b, shape)
        chosen = _best_band(values, b, shape, rates[equal], keep, periods[b], measure=True)
        out = []
        for k, rate in enumerate(rates):
            coded = chosen if k == equal else None
            if coded is None and chosen.period:
                coded = _coded_band(values, b, shape, rate, keep, chosen.period, chosen.fraction)
            out.append(coded or _plain_band(values, b, shape, rate, keep))
        return out

    workers = min(B, threads if threads > 0 else max(1, dask.system.CPU_COUNT))
    if workers <= 1:
        coded = [candidates(b) for b in range(B)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="eocube-wavelet") as pool:
            coded = list(pool.map(candidates, range(B)))
    nbytes = np.array([[c.nbytes for c in band] for band in coded], np.int64)
    psnr = np.array([[c.psnr for c in band] for band in coded])
    pick = split_rates(nbytes, psnr, equal)
    return [coded[b][k] for b, k in enumerate(pick)]


def _plain_band(
    values: np.ndarray,
    b: int,
    shape: tuple[int, ...],
    rate: float,
    keep: np.ndarray | None,
    measure: bool = True,
) -> _CodedBand:
    coded = _coded_band(values, b, shape, rate, keep, measure=measure)
    assert coded is not None  # SPERR alone always codes
    return coded


def _best_band(
    values: np.ndarray,
    b: int,
    shape: tuple[int, ...],
    rate: float,
    keep: np.ndarray | None,
    periods: Sequence[int],
    measure: bool = False,
) -> _CodedBand:
    """Band ``b`` at ``rate`` bits per value: SPERR of its values, or the best of that
    and the band coded as its sinusoids of each of ``periods`` (at each of
    :data:`PERIOD_FRACTIONS` of the bytes) and the rest, by PSNR for the bytes
    (:data:`eocube.metrics.DB_PER_DOUBLING`). ``measure``: the PSNR even without
    periods."""
    plain = _plain_band(values, b, shape, rate, keep, measure=measure or bool(periods))
    best, best_score = plain, plain.psnr
    for period, fraction in itertools.product(periods, PERIOD_FRACTIONS):
        coded = _coded_band(values, b, shape, rate, keep, period, fraction)
        if coded is None:
            continue
        score = coded.psnr + DB_PER_DOUBLING * math.log2(plain.nbytes / coded.nbytes)
        if score > best_score:
            best, best_score = coded, score
    return best


def _coded_band(
    values: np.ndarray,
    b: int,
    shape: tuple[int, ...],
    rate: float,
    keep: np.ndarray | None,
    period: int | None = None,
    fraction: float = 0.0,
    measure: bool = True,
) -> _CodedBand | None:
    """Band ``b`` of a (T, B, Y, X) block at ``rate`` bits per value, and (``measure``)
    the PSNR of its decode (on the ``keep`` values, on their range, clipped to it as
    :func:`decode` clips). With a ``period``: its sinusoids' maps at ``fraction`` of the
    bytes, SPERR of the rest at what is left (None when nothing is)."""
    import imagecodecs

    band = _band(values, b, shape)
    if period is None:
        blob = _sperr(band, rate, "bpp")
        if not measure:
            return _CodedBand(blob)
        decoded = np.asarray(imagecodecs.sperr_decode(blob, numthreads=1))
        return _CodedBand(blob, psnr=_band_psnr(band, decoded, keep))
    T, _, Y, X = values.shape
    budget = rate * band.size / 8
    maps = fit_maps(values[:, b], period, HARMONICS)
    maps_bits = min(8 * fraction * budget / maps.size, MAX_BITS_PER_VALUE)
    maps_blob = _sperr(maps.reshape(_maps_shape(Y, X)), maps_bits, "bpp")
    model = sinusoids(T, period, _decode_maps(maps_blob, HARMONICS, Y, X))
    rest_bytes = budget - len(maps_blob) - _PERIODIC_BAND_BYTES
    if rest_bytes <= 0:
        return None
    rest_bits = min(8 * rest_bytes / band.size, MAX_BITS_PER_VALUE)
    blob = _sperr((values[:, b] - model).reshape(shape), rest_bits, "bpp")
    decoded = np.asarray(imagecodecs.sperr_decode(blob, numthreads=1)).reshape(model.shape)
    psnr = _band_psnr(band, (decoded + model).reshape(shape), keep)
    return _CodedBand(blob, period, maps_blob, psnr, fraction)


def _band_psnr(band: np.ndarray, decoded: np.ndarray, keep: np.ndarray | None) -> float:
    data = band if keep is None else band[keep]
    if data.size == 0:
        return EXACT_PSNR_DB
    low, high = float(data.min()), float(data.max())
    error = np.clip(decoded, low, high) - band
    if keep is not None:
        error = error[keep]
    mse = float(np.mean(error**2))
    if mse == 0 or high == low:
        return EXACT_PSNR_DB
    return min(EXACT_PSNR_DB, 10 * math.log10((high - low) ** 2 / mse))


def find_periods(series: np.ndarray) -> tuple[int, ...]:
    """The integer periods, in steps, a band is tried with: of the sinusoids fitted to a
    1-D series beyond its linear trend, the one that explains most of what the trend
    leaves among periods of 2 .. ``len(series) // MIN_CYCLES`` (none in fewer than
    :data:`MIN_DATES` dates), and the one among those
    with at least twice as many cycles (slow weather can outweigh a daily cycle over a
    month of hours: on 744 hourly ERA5 2 m temperatures a 158-hour sinusoid explains 0.29,
    the day's less); each only where it explains at least :data:`MIN_EXPLAINED`.

    A block's periodic component is looked for on each band's mean over space: hourly
    fields follow the day (24 steps), 3-hourly ones 8."""
    x = np.asarray(series, np.float64)
    T = len(x)
    if T < MIN_DATES or not np.all(np.isfinite(x)):
        return ()
    t = np.arange(T, dtype=np.float64)
    trend = np.stack([np.ones(T), (t - t.mean()) / T], axis=1)
    left = x - least_squares_fit(trend, x[:, None])[:, 0]
    energy = float(np.sum(left**2))
    if energy <= 1e-12 * max(float(np.sum(x**2)), 1e-300):
        return ()
    shares = {}
    for period in range(2, T // MIN_CYCLES + 1):
        design = np.concatenate([trend, harmonic_basis(T, period, 1)], axis=1)
        fit = least_squares_fit(design, x[:, None])[:, 0]
        shares[period] = 1 - float(np.sum((x - fit) ** 2)) / energy
    found: list[int] = []
    for most in (T // MIN_CYCLES, T // (2 * MIN_CYCLES)):
        eligible = [p for p in shares if p <= most and shares[p] >= MIN_EXPLAINED]
        if eligible:
            best = max(eligible, key=lambda p: (shares[p], -p))
            if best not in found:
                found.append(best)
    return tuple(found)


def _band_periods(values: np.ndarray, b: int) -> tuple[int, ...]:
    """The periods band ``b`` of a (T, B, Y, X) block is tried with."""
    Y, X = values.shape[2:]
    if _maps_shape(Y, X) is None:
        return ()
    return find_periods(values[:, b].mean(axis=(1, 2)))


def harmonic_basis(dates: int, period: int, harmonics: int) -> np.ndarray:
    """(dates, 2 * harmonics): ``cos`` and ``sin`` of ``2 pi k t / period`` for
    ``k = 1 .. harmonics`` (in that order, cos first), ``t = 0 .. dates - 1``."""
    t = np.arange(dates, dtype=np.float64)
    columns = []
    for k in range(1, harmonics + 1):
        angle = 2 * np.pi * k * t / period
        columns += [np.cos(angle), np.sin(angle)]
    return np.stack(columns, axis=1)


def fit_maps(band: np.ndarray, period: int, harmonics: int) -> np.ndarray:
    """The least-squares sinusoids of a (T, Y, X) band, with a constant per pixel fitted
    beside them and left out: (2 * harmonics, Y, X) maps for :func:`sinusoids`."""
    T, Y, X = band.shape
    design = np.concatenate([np.ones((T, 1)), harmonic_basis(T, period, harmonics)], axis=1)
    coef = least_squares(design, band.reshape(T, Y * X))
    return coef[1:].reshape(2 * harmonics, Y, X)


def sinusoids(dates: int, period: int, maps: np.ndarray) -> np.ndarray:
    """The (dates, Y, X) values of the sinusoids whose (2 * harmonics, Y, X) ``maps``
    weigh :func:`harmonic_basis`'s columns."""
    basis = harmonic_basis(dates, period, maps.shape[0] // 2)
    return np.einsum("tk,kyx->tyx", basis, maps)


# The fits run in eocube's threads (bands at once) and must not call BLAS or LAPACK:
# two threads in np.linalg.lstsq at once hung in OpenBLAS in the test suite. The
# designs are a few well-scaled columns, so the normal equations, solved by hand in
# numpy's own loops (np.einsum without optimize uses no BLAS), lose nothing that matters.


def least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(K, N) least-squares coefficients of the (T, N) ``values`` on the (T, K) ``design``
    (a column that is all zero gets 0), without BLAS or LAPACK."""
    gram = np.einsum("tk,tj->kj", design, design)
    rhs = np.einsum("tk,tn->kn", design, values)
    K = len(gram)
    # a ridge of 1e-12 of the mean diagonal: columns that are zero (sin at period 2)
    gram = gram + np.eye(K) * 1e-12 * max(float(np.trace(gram)) / K, 1e-300)
    for i in range(K):  # Gaussian elimination with partial pivoting
        pivot = i + int(np.argmax(np.abs(gram[i:, i])))
        if pivot != i:
            gram[[i, pivot]] = gram[[pivot, i]]
            rhs[[i, pivot]] = rhs[[pivot, i]]
        factors = gram[i + 1 :, i] / gram[i, i]
        gram[i + 1 :] -= factors[:, None] * gram[i]
        rhs[i + 1 :] -= factors[:, None] * rhs[i]
    coef = np.empty_like(rhs)
    for i in range(K - 1, -1, -1):
        done = np.einsum("k,kn->n", gram[i, i + 1 :], coef[i + 1 :])
        coef[i] = (rhs[i] - done) / gram[i, i]
    return coef


def least_squares_fit(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The (T, N) fitted values of :func:`least_squares`."""
    return np.einsum("tk,kn->tn", design, least_squares(design, values))


def _maps_shape(Y: int, X: int, harmonics: int = HARMONICS) -> tuple[int, ...] | None:
    """The shape SPERR codes a band's maps in (their axes longer than one), or None."""
    shape = tuple(n for n in (2 * harmonics, Y, X) if n > 1)
    return shape if len(shape) >= 2 else None


def _decode_maps(blob: bytes, harmonics: int, Y: int, X: int) -> np.ndarray:
    import imagecodecs

    return np.asarray(imagecodecs.sperr_decode(blob, numthreads=1)).reshape(2 * harmonics, Y, X)


def split_rates(nbytes: np.ndarray, psnr: np.ndarray, equal: int) -> np.ndarray:
    """Which of its candidate codings each band keeps: the highest PSNR summed over the
    bands that spends no more bytes than every band's candidate ``equal`` together.

    Parameters
    ----------
    nbytes, psnr : ndarray
        (bands, candidates): each candidate's bytes and PSNR.
    equal : int
        The candidate of the equal shares (the budget, and the answer when nothing
        better fits).

    Returns
    -------
    ndarray of int
        The candidate chosen for each band. A multiple-choice knapsack solved exactly on
        bytes rounded up to :data:`_SPLIT_UNITS` units of the budget.
    """
    B, K = nbytes.shape
    fallback = np.full(B, equal)
    budget = int(nbytes[:, equal].sum())
    unit = max(1, -(-budget // _SPLIT_UNITS))
    cost = -(-nbytes.astype(np.int64) // unit)
    cap = budget // unit
    # best[s]: the highest PSNR sum of the bands so far at exactly s units
    best = np.full(cap + 1, -np.inf)
    best[0] = 0.0
    chosen = np.zeros((B, cap + 1), np.int64)
    for b in range(B):
        after = np.full(cap + 1, -np.inf)
        for k in range(K):
            c = int(cost[b, k])
            if c > cap:
                continue
            moved = np.full(cap + 1, -np.inf)
            moved[c:] = best[: cap + 1 - c] + psnr[b, k]
            better = moved > after
            after[better] = moved[better]
            chosen[b, better] = k
        best = after
    if not np.isfinite(best).any():
        return fallback
    pick = np.empty(B, np.int64)
    s = int(np.argmax(best))
    for b in range(B - 1, -1, -1):
        pick[b] = chosen[b, s]
        s -= int(cost[b, pick[b]])
    rows = np.arange(B)
    if psnr[rows, pick].sum() <= psnr[rows, fallback].sum():
        return fallback
    return pick


@dataclass(frozen=True)
class _SectionBand:
    blob: bytes
    period: int = 0
    harmonics: int = 0
    maps: bytes = b""


def _read_section(r: ByteReader, bands: int, periodic_allowed: bool) -> list[_SectionBand]:
    """Each band's bitstreams in the section at ``r``, their checksums verified."""
    coder = r.text()
    if coder not in CODERS:
        raise CorruptChunkError(
            f"payload is coded by {coder!r}, which this eocube does not know "
            f"(knows {', '.join(CODERS)}); upgrade eocube"
        )
    periodic = coder == PERIODIC_CODER
    if periodic and not periodic_allowed:
        raise CorruptChunkError(f"coder {coder!r} in a payload of a version before it")

    def checked(what: str) -> bytes:
        (crc,) = r.unpack("I")
        blob = bytes(r.blob())
        if zlib.crc32(blob) != crc:
            raise CorruptChunkError(f"the wavelet {what} fails its checksum")
        return blob

    out = []
    for b in range(bands):
        period = r.varint() if periodic else 0
        harmonics, maps = 0, b""
        if period:
            (harmonics,) = r.unpack("B")
            if period < 2 or harmonics < 1:
                raise CorruptChunkError(
                    f"band {b}'s periodic model has period {period} and {harmonics} harmonics"
                )
            maps = checked(f"maps of band {b}")
        out.append(_SectionBand(checked(f"bitstream of band {b}"), period, harmonics, maps))
    return out


def decode(
    r: ByteReader,
    coded_shape: tuple[int, int, int, int],
    dtype: np.dtype,
    *,
    low: np.ndarray,
    high: np.ndarray,
    threads: int = 0,
    periodic_allowed: bool = True,
) -> np.ndarray:
    """Read a wavelet section at ``r`` into a (T, B, Y, X) block of ``dtype``.

    Each band's values (with a periodic model, SPERR's decode plus the sinusoids of its
    maps) are clipped to ``low[b] .. high[b]`` (its range, as a video's decode stays
    within it), then integers are rounded half up (as the video's dequantisation
    rounds); floats are cast. Bands decode on up to ``threads`` threads (0: one per
    usable CPU; SPERR releases the GIL): 1.5x faster on 2 cores for the 9 bands of
    ERA-Interim. ``periodic_allowed``: whether the payload's version admits
    :data:`PERIODIC_CODER`.

    Raises
    ------
    CorruptChunkError
        For an unknown coder, a checksum that does not match, or a bitstream of another
        shape than ``coded_shape``.
    """
    import imagecodecs

    T, B, Y, X = coded_shape
    shape = volume_shape(T, Y, X)
    sections = _read_section(r, B, periodic_allowed)
    if shape is None:
        raise CorruptChunkError(f"a wavelet payload cannot hold blocks of {T} x {Y} x {X}")

    def sperr_decode(blob: bytes, expected: tuple[int, ...] | None, what: str) -> np.ndarray:
        try:
            values = np.asarray(imagecodecs.sperr_decode(blob, numthreads=1))
        except Exception as exc:  # imagecodecs raises its own error types
            raise CorruptChunkError(f"the wavelet {what}: {exc}") from None
        if values.shape != expected:
            raise CorruptChunkError(
                f"the wavelet {what} holds {values.shape}, the header {expected}"
            )
        return values

    def decode_band(b: int) -> np.ndarray:
        section = sections[b]
        band = sperr_decode(section.blob, shape, f"bitstream of band {b}").reshape(T, Y, X)
        if section.period:
            expected = _maps_shape(Y, X, section.harmonics)
            maps = sperr_decode(section.maps, expected, f"maps of band {b}")
            band = band + sinusoids(T, section.period, maps.reshape(2 * section.harmonics, Y, X))
        return band

    # the first band confirms the header's shape before the block is allocated
    first = decode_band(0)
    out = np.empty(coded_shape, dtype)

    def put(b: int, band: np.ndarray) -> None:
        band = np.clip(band, low[b], high[b])
        out[:, b] = np.floor(band + 0.5) if dtype.kind in "iu" else band

    put(0, first)
    workers = min(B - 1, threads if threads > 0 else max(1, dask.system.CPU_COUNT))
    if workers <= 1:
        for b in range(1, B):
            put(b, decode_band(b))
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="eocube-wavelet") as pool:
            for b, band in zip(range(1, B), pool.map(decode_band, range(1, B)), strict=True):
                put(b, band)
    return out


def integer_tolerance(bounds: np.ndarray) -> np.ndarray:
    """SPERR's tolerance that keeps integers within ``bounds`` once rounded.

    A decoded ``v`` within ``floor(bound) + 1/2`` (exclusive) of an integer rounds to
    within ``floor(bound)`` of it, and integer errors within ``bound`` are those."""
    return (np.floor(bounds) + 0.5) * (1 - 1e-9)


def section_overhead(bands: int) -> int:
    """The bytes of a section besides its bitstreams (their lengths' varints taken as 3)."""
    return 1 + len(CODER) + bands * (4 + 3)


def skip(r: ByteReader, bands: int, periodic_allowed: bool = True) -> None:
    """Move ``r`` past a wavelet section of ``bands`` bands, decoding nothing (checksums
    are verified)."""
    _read_section(r, bands, periodic_allowed)
