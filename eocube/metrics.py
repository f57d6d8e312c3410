"""Quality and size metrics; every report and benchmark uses these definitions.

PSNR
    Per band ``b``: ``peak_b`` is max − min of the original's valid values of band b
    (finite and not nodata); ``MSE_b`` is the mean squared error over those same pixels;
    ``PSNR_b = 10 log10(peak_b² / MSE_b)``. The summary is the mean over bands of the
    finite ``PSNR_b`` (a band decoded exactly has infinite PSNR and is left out of the
    mean; if every band is exact the summary is infinite; a valid value decoded to NaN
    or inf makes its band and the summary -inf). A constant band uses a peak
    of 1 data unit. This data-range peak reads about 16 dB lower than the storage-type
    peak (65535) quoted by the reference system on Sentinel-2 reflectances.
bpppb
    Bits per pixel per band: every stored byte needed to decode × 8 / (T·B·Y·X).
compression ratio
    Bytes of the original array in its dtype / stored bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DB_PER_DOUBLING = 6.0
"""The PSNR one doubling of the bytes buys, about (6.02 dB per bit per value at high
rates): how ``frames="auto"``, ``wavelet="auto"`` and the wavelet coder's periodic model
weigh one candidate's dB against another's bytes."""


def _as_tbyx(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ValueError(f"expected an array of shape (T, B, Y, X) or (T, Y, X), got {a.shape}")
    return a


def valid_mask(original: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Where ``original`` holds a valid value: finite and not ``nodata``."""
    original = np.asarray(original)
    valid = np.isfinite(original) if original.dtype.kind == "f" else np.ones(original.shape, bool)
    if nodata is not None and not math.isnan(nodata):
        valid &= original != nodata
    return valid


@dataclass(frozen=True)
class ErrorStats:
    """Per-band error statistics, accumulable over the pieces of a large cube.

    ``ErrorStats.of(original, decoded)`` measures one piece; ``a.merge(b)`` combines two;
    the PSNR and max error of the whole follow exactly as if measured in one go.
    """

    count: np.ndarray  # valid values per band
    lo: np.ndarray  # min of the original's valid values
    hi: np.ndarray  # max of the original's valid values
    sse: np.ndarray  # sum of squared errors (inf if a valid value decoded to NaN/inf)
    max_error: np.ndarray  # largest absolute error

    @classmethod
    def of(
        cls, original: np.ndarray, decoded: np.ndarray, nodata: float | None = None
    ) -> ErrorStats:
        """Statistics of one (T, B, Y, X) or (T, Y, X) piece."""
        original, decoded = _as_tbyx(original), _as_tbyx(decoded)
        if original.shape != decoded.shape:
            raise ValueError(f"shapes differ: {original.shape} vs {decoded.shape}")
        valid = valid_mask(original, nodata)
        bands = original.shape[1]
        count = np.zeros(bands, np.int64)
        lo = np.full(bands, np.inf)
        hi = np.full(bands, -np.inf)
        sse = np.zeros(bands)
        max_error = np.zeros(bands)
        for b in range(bands):
            v = valid[:, b]
            n = int(v.sum())
            if not n:
                continue
            ref = original[:, b][v].astype(np.float64)
            err = decoded[:, b][v].astype(np.float64) - ref
            count[b] = n
            lo[b], hi[b] = ref.min(), ref.max()
            finite = bool(np.isfinite(err).all())
            # not np.dot: OpenBLAS threads dot products of long vectors, and concurrent
            # threaded calls from several encode threads can hang for good (numpy issue
            # 17752; seen here with two chunks measured at once)
            sse[b] = float(np.square(err).sum()) if finite else math.inf
            max_error[b] = float(np.abs(err).max()) if finite else math.inf
        return cls(count, lo, hi, sse, max_error)

    @classmethod
    def exact(cls, original: np.ndarray, nodata: float | None = None) -> ErrorStats:
        """Statistics of a (T, B, Y, X) or (T, Y, X) piece decoded exactly (a lossless
        coder, or values stored as they are): what :meth:`of` gives for the piece against
        itself, without comparing it with itself."""
        original = _as_tbyx(original)
        bands = original.shape[1]
        count = np.zeros(bands, np.int64)
        lo = np.full(bands, np.inf)
        hi = np.full(bands, -np.inf)
        for b in range(bands):
            band = original[:, b]
            if band.dtype.kind != "f" and (nodata is None or math.isnan(nodata)):
                values = band  # every value is valid: no mask to build
            else:
                values = band[valid_mask(band, nodata)]
            if not values.size:
                continue
            count[b] = values.size
            lo[b], hi[b] = float(values.min()), float(values.max())
        return cls(count, lo, hi, np.zeros(bands), np.zeros(bands))

    def merge(self, other: ErrorStats) -> ErrorStats:
        """The statistics of both pieces together."""
        return ErrorStats(
            self.count + other.count,
            np.minimum(self.lo, other.lo),
            np.maximum(self.hi, other.hi),
            self.sse + other.sse,
            np.maximum(self.max_error, other.max_error),
        )

    def psnr_per_band(self) -> np.ndarray:
        """PSNR of each band in dB: inf where exact, NaN where the band has no valid
        value, -inf where a valid value decoded to NaN or inf."""
        out = np.full(self.count.shape, np.nan)
        for b, n in enumerate(self.count):
            if not n:
                continue
            mse = self.sse[b] / n
            peak = float(self.hi[b] - self.lo[b]) or 1.0
            if mse == 0:
                out[b] = math.inf
            elif math.isinf(mse):
                out[b] = -math.inf
            else:
                out[b] = 10 * math.log10(peak * peak / mse)
        return out

    def psnr(self) -> float:
        """Mean over bands of the finite per-band PSNR (see the module docstring)."""
        per_band = self.psnr_per_band()
        per_band = per_band[~np.isnan(per_band)]
        if per_band.size == 0:
            return math.nan
        if (per_band == -math.inf).any():
            return -math.inf
        finite = per_band[np.isfinite(per_band)]
        return float(finite.mean()) if finite.size else math.inf

    def max_abs_error(self) -> float:
        """Largest absolute error over all bands (0 if nothing is valid)."""
        return float(self.max_error.max(initial=0.0))


def psnr_per_band(
    original: np.ndarray, decoded: np.ndarray, nodata: float | None = None
) -> np.ndarray:
    """PSNR of each band (axis 1 of a (T, B, Y, X) array), in dB.

    inf where exact, NaN where the band has no valid value, -inf where a valid value
    decoded to NaN or inf.
    """
    return ErrorStats.of(original, decoded, nodata).psnr_per_band()


def psnr(original: np.ndarray, decoded: np.ndarray, nodata: float | None = None) -> float:
    """Mean over bands of the finite per-band PSNR (see the module docstring)."""
    return ErrorStats.of(original, decoded, nodata).psnr()


def max_abs_error(original: np.ndarray, decoded: np.ndarray, nodata: float | None = None) -> float:
    """Largest absolute difference over the original's valid values (0 if none).

    A decoded NaN where the original is valid counts as an infinite error.
    """
    original, decoded = np.asarray(original), np.asarray(decoded)
    valid = valid_mask(original, nodata)
    if not valid.any():
        return 0.0
    err = np.abs(decoded[valid].astype(np.float64) - original[valid].astype(np.float64))
    return math.inf if np.isnan(err).any() else float(err.max())


def bpppb(nbytes: int, shape: tuple[int, ...]) -> float:
    """Bits per pixel per band of ``nbytes`` stored for an array of ``shape``."""
    n = math.prod(shape)
    return nbytes * 8 / n if n else math.nan


def compression_ratio(nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> float:
    """Original size in ``dtype`` over ``nbytes``."""
    return math.prod(shape) * np.dtype(dtype).itemsize / nbytes if nbytes else math.inf
