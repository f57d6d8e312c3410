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

The checksum is verified before SPERR sees a byte: SPERR is C++ and a damaged bitstream
could take the process down instead of raising.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import dask.system
import numpy as np

from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CorruptChunkError

CHOICES = ("off", "auto", "always")
"""Whether a chunk may be coded by the wavelet coder (a profile's ``wavelet``, and
:func:`eocube.chunk.encode_chunk`'s): never, where it codes better, wherever it applies."""

CODER = "sperr"
"""The one wavelet coder; the section names it, so that others can be added."""
CODERS = (CODER,)

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
        at ``bits_per_value``, one SPERR encode a band.

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
        if split:
            blobs = _sized(values, shape, bits, valid, threads)
        else:
            blobs = [_sperr(_band(values, b, shape), bits, "bpp") for b in range(B)]
    else:
        bounds = np.broadcast_to(np.asarray(tolerance, np.float64), (B,))
        if not np.all(bounds > 0) or not np.all(np.isfinite(bounds)):
            raise ValueError(f"tolerance must be finite and > 0, got {tolerance!r}")
        blobs = [_sperr(_band(values, b, shape), float(t), "pwe") for b, t in enumerate(bounds)]
    w = ByteWriter()
    w.text(CODER)
    for blob in blobs:
        w.pack("I", zlib.crc32(blob))
        w.blob(blob)
    return w.getvalue()


def _band(values: np.ndarray, b: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(values[:, b], dtype=np.float64).reshape(shape)


def _sperr(band: np.ndarray, level: float, mode: Literal["bpp", "pwe"]) -> bytes:
    import imagecodecs

    # one thread: the bitstream must not depend on the machine
    return bytes(imagecodecs.sperr_encode(band, level, mode, numthreads=1))


def _sized(
    values: np.ndarray,
    shape: tuple[int, ...],
    bits: float,
    valid: np.ndarray | None,
    threads: int,
) -> list[bytes]:
    """Each band's bitstream at its share of ``bits`` per value (see :func:`encode`)."""
    B = values.shape[1]
    if B == 1:  # nothing to share
        return [_sperr(_band(values, 0, shape), bits, "bpp")]
    rates = [min(bits * 2.0 ** (k / 4), MAX_BITS_PER_VALUE) for k in SHARE_STEPS]

    def candidates(b: int) -> list[tuple[bytes, float]]:
        band = _band(values, b, shape)
        keep = None if valid is None else valid[:, b].reshape(shape)
        return [_coded_band(band, keep, rate) for rate in rates]

    workers = min(B, threads if threads > 0 else max(1, dask.system.CPU_COUNT))
    if workers <= 1:
        coded = [candidates(b) for b in range(B)]
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="eocube-wavelet") as pool:
            coded = list(pool.map(candidates, range(B)))
    nbytes = np.array([[len(blob) for blob, _ in band] for band in coded], np.int64)
    psnr = np.array([[db for _, db in band] for band in coded])
    pick = split_rates(nbytes, psnr, SHARE_STEPS.index(0))
    return [coded[b][k][0] for b, k in enumerate(pick)]


def _coded_band(band: np.ndarray, keep: np.ndarray | None, rate: float) -> tuple[bytes, float]:
    """A band's bitstream at ``rate`` bits per value and the PSNR of its decode (on the
    ``keep`` values, on their range, clipped to it as :func:`decode` clips)."""
    import imagecodecs

    blob = _sperr(band, rate, "bpp")
    data = band if keep is None else band[keep]
    if data.size == 0:
        return blob, EXACT_PSNR_DB
    low, high = float(data.min()), float(data.max())
    decoded = np.clip(np.asarray(imagecodecs.sperr_decode(blob, numthreads=1)), low, high)
    error = decoded - band if keep is None else (decoded - band)[keep]
    mse = float(np.mean(error**2))
    if mse == 0 or high == low:
        return blob, EXACT_PSNR_DB
    return blob, min(EXACT_PSNR_DB, 10 * math.log10((high - low) ** 2 / mse))


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


def decode(
    r: ByteReader,
    coded_shape: tuple[int, int, int, int],
    dtype: np.dtype,
    *,
    low: np.ndarray,
    high: np.ndarray,
    threads: int = 0,
) -> np.ndarray:
    """Read a wavelet section at ``r`` into a (T, B, Y, X) block of ``dtype``.

    Each band's values are clipped to ``low[b] .. high[b]`` (its range, as a video's
    decode stays within it), then integers are rounded half up (as the video's
    dequantisation rounds); floats are cast. Bands decode on up to ``threads`` threads
    (0: one per usable CPU; SPERR releases the GIL): 1.5x faster on 2 cores for the 9
    bands of ERA-Interim.

    Raises
    ------
    CorruptChunkError
        For an unknown coder, a checksum that does not match, or a bitstream of another
        shape than ``coded_shape``.
    """
    import imagecodecs

    T, B, Y, X = coded_shape
    shape = volume_shape(T, Y, X)
    coder = r.text()
    if coder not in CODERS:
        raise CorruptChunkError(
            f"payload is coded by {coder!r}, which this eocube does not know "
            f"(knows {', '.join(CODERS)}); upgrade eocube"
        )
    if shape is None:
        raise CorruptChunkError(f"a wavelet payload cannot hold blocks of {T} x {Y} x {X}")
    blobs = []
    for b in range(B):
        (crc,) = r.unpack("I")
        blob = bytes(r.blob())
        if zlib.crc32(blob) != crc:
            raise CorruptChunkError(f"the wavelet bitstream of band {b} fails its checksum")
        blobs.append(blob)

    def decode_band(b: int) -> np.ndarray:
        try:
            band = np.asarray(imagecodecs.sperr_decode(blobs[b], numthreads=1))
        except Exception as exc:  # imagecodecs raises its own error types
            raise CorruptChunkError(f"the wavelet bitstream of band {b}: {exc}") from None
        if band.shape != shape:
            raise CorruptChunkError(
                f"the wavelet bitstream of band {b} holds {band.shape}, the header {shape}"
            )
        return band

    # the first band confirms the header's shape before the block is allocated
    first = decode_band(0)
    out = np.empty(coded_shape, dtype)

    def put(b: int, band: np.ndarray) -> None:
        band = np.clip(band.reshape(T, Y, X), low[b], high[b])
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


def skip(r: ByteReader, bands: int) -> None:
    """Move ``r`` past a wavelet section of ``bands`` bitstreams, decoding nothing."""
    coder = r.text()
    if coder not in CODERS:
        raise CorruptChunkError(f"payload is coded by {coder!r}, which this eocube does not know")
    for _ in range(bands):
        r.unpack("I")
        r.blob()
