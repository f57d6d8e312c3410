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

- a size: ``bits_per_value``, the same for every band (at the high rates where the
  choice matters, each bit buys a band about 6 dB whatever its content, so equal shares
  serve the mean PSNR as well as any);
- an error bound: ``tolerance`` per band, SPERR's point-wise error mode.

Section layout (after the chunk header, in place of the streams; docs/format.md)::

    str coder ("sperr") | per band: u32 crc32 | varint len | SPERR bitstream (its header on)

The checksum is verified before SPERR sees a byte: SPERR is C++ and a damaged bitstream
could take the process down instead of raising.
"""

from __future__ import annotations

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
) -> bytes:
    """The wavelet section of a (T, B, Y, X) block of finite float64 values.

    Parameters
    ----------
    values : ndarray
        The coded part of the block, missing values already filled.
    bits_per_value : float, optional
        SPERR's size mode: about this many bits per value for every band.
    tolerance : sequence of float, optional
        SPERR's point-wise error mode: the largest error of each band's values (> 0).

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
    import imagecodecs

    T, B, Y, X = values.shape
    shape = volume_shape(T, Y, X)
    if shape is None:
        raise ValueError(f"SPERR cannot code blocks of {T} x {Y} x {X} values per band")
    if (bits_per_value is None) == (tolerance is None):
        raise ValueError("give one of bits_per_value and tolerance")
    if not codable(values, tolerance if tolerance is None else np.asarray(tolerance)):
        raise ValueError("SPERR cannot code these values at this tolerance (see codable)")
    if bits_per_value is not None:
        if not 0 < bits_per_value <= MAX_BITS_PER_VALUE:
            raise ValueError(f"bits_per_value must be in (0, 64], got {bits_per_value}")
        settings: list[tuple[float, Literal["bpp", "pwe"]]] = [(float(bits_per_value), "bpp")] * B
    else:
        bounds = np.broadcast_to(np.asarray(tolerance, np.float64), (B,))
        if not np.all(bounds > 0) or not np.all(np.isfinite(bounds)):
            raise ValueError(f"tolerance must be finite and > 0, got {tolerance!r}")
        settings = [(float(b), "pwe") for b in bounds]
    w = ByteWriter()
    w.text(CODER)
    for b, (level, mode) in enumerate(settings):
        band = np.ascontiguousarray(values[:, b], dtype=np.float64).reshape(shape)
        # one thread: the bitstream must not depend on the machine
        blob = bytes(imagecodecs.sperr_encode(band, level, mode, numthreads=1))
        w.pack("I", zlib.crc32(blob))
        w.blob(blob)
    return w.getvalue()


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
