"""The residual layer that turns a lossy decode into a hard error bound.

Given the original block and what the video decodes to, the residual
``original - decoded`` is quantized with a step of about twice the bound wherever the
video alone misses it, so that ``decoded + q * step`` lies within the bound
everywhere. Integers use integer arithmetic (step ``2 * floor(e) + 1``); floats use
float64 and then check every value after the cast to the output dtype, storing the few
values that float rounding pushes past the bound verbatim. The quantized residual is
mostly zeros and is entropy coded with Zstandard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numcodecs import Zstd

from eocube.errors import CorruptChunkError, UnsupportedDataError

_ZSTD = Zstd(level=19)
_INT_TYPES = (np.int8, np.int16, np.int32, np.int64)


@dataclass(frozen=True)
class Residual:
    """A quantized residual: ``value = decoded + q * step[band]``, then exceptions."""

    step: np.ndarray  # (B,) float64
    q: np.ndarray  # (T, B, Y, X) small signed integers
    exception_index: np.ndarray  # flat indices into the block
    exception_value: np.ndarray  # their exact values, in the block's dtype


def band_bounds(bound: float | np.ndarray | list[float], bands: int) -> np.ndarray:
    """A bound per band from a scalar or a sequence; each must be finite and >= 0."""
    arr = np.broadcast_to(np.asarray(bound, dtype=np.float64), (bands,)).copy()
    if arr.shape != (bands,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise UnsupportedDataError(
            f"max_abs_error must be a finite number >= 0 or one per band ({bands}), got {bound!r}"
        )
    return arr


def _steps(dtype: np.dtype, bounds: np.ndarray) -> np.ndarray:
    if dtype.kind in "iu":
        return 2 * np.floor(bounds) + 1
    return 2 * bounds


def compute(
    original: np.ndarray, decoded: np.ndarray, valid: np.ndarray, bounds: np.ndarray
) -> Residual | None:
    """The residual bringing ``decoded`` within ``bounds`` of ``original`` (None if not needed).

    ``valid`` marks the values the bound applies to (not NaN, not nodata).
    """
    dtype = original.dtype
    B = original.shape[1]
    step = _steps(dtype, bounds)
    shape = (1, B, 1, 1)
    if dtype.kind in "iu":
        r = original.astype(np.int64) - decoded.astype(np.int64)
        half = np.floor(bounds).astype(np.int64).reshape(shape)
        q = np.floor_divide(r + half, step.astype(np.int64).reshape(shape))
    else:
        diff = original.astype(np.float64) - decoded.astype(np.float64)
        diff[~valid] = 0.0  # NaN and nodata positions are restored by the masks
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(step.reshape(shape) > 0, np.rint(diff / step.reshape(shape)), 0.0)
        q = q.astype(np.int64)
    q[~valid] = 0
    corrected = apply(decoded, q, step)
    with np.errstate(invalid="ignore"):
        err = np.abs(corrected.astype(np.float64) - original.astype(np.float64))
    bad = valid & ~(err <= bounds.reshape(shape))
    exception_index = np.flatnonzero(bad)
    if not q.any() and exception_index.size == 0:
        return None
    return Residual(
        step=step,
        q=q,
        exception_index=exception_index,
        exception_value=original.reshape(-1)[exception_index],
    )


def apply(decoded: np.ndarray, q: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``decoded + q * step`` per band, in ``decoded``'s dtype (integers clipped to range)."""
    shape = (1, decoded.shape[1], 1, 1)
    if decoded.dtype.kind in "iu":
        info = np.iinfo(decoded.dtype)
        out = decoded.astype(np.int64) + q * step.astype(np.int64).reshape(shape)
        return np.clip(out, info.min, info.max).astype(decoded.dtype)
    return (decoded.astype(np.float64) + q * step.reshape(shape)).astype(decoded.dtype)


def to_bytes(res: Residual) -> bytes:
    """Serialise: steps, the narrowest integer type of q, q and exceptions, zstd-compressed."""
    lo, hi = int(res.q.min()), int(res.q.max())
    qtype = next(t for t in _INT_TYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    header = np.array([np.dtype(qtype).itemsize, res.exception_index.size], dtype="<u8").tobytes()
    body = b"".join(
        [
            res.step.astype("<f8").tobytes(),
            res.q.astype(np.dtype(qtype).newbyteorder("<")).tobytes(),
            res.exception_index.astype("<u8").tobytes(),
            res.exception_value.astype(res.exception_value.dtype.newbyteorder("<")).tobytes(),
        ]
    )
    return header + bytes(_ZSTD.encode(body))


def from_bytes(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype) -> Residual:
    """Inverse of :func:`to_bytes` for a block of ``shape`` and ``dtype``."""
    if len(data) < 16:
        raise CorruptChunkError("residual layer truncated")
    itemsize, n_exc = (int(v) for v in np.frombuffer(data[:16], "<u8"))
    qtype = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}.get(itemsize)
    n = math.prod(shape)
    B = shape[1]
    expected = 8 * B + itemsize * n + n_exc * (8 + dtype.itemsize) if qtype else -1
    try:
        body = bytes(_ZSTD.decode(data[16:]))
    except Exception as exc:  # numcodecs raises RuntimeError on damaged frames
        raise CorruptChunkError(f"residual layer does not decompress: {exc}") from None
    if qtype is None or len(body) != expected:
        raise CorruptChunkError("residual layer size does not match the block")
    pos = 8 * B
    step = np.frombuffer(body[:pos], "<f8").astype(np.float64)
    q = np.frombuffer(body[pos : pos + itemsize * n], np.dtype(qtype).newbyteorder("<"))
    pos += itemsize * n
    idx = np.frombuffer(body[pos : pos + 8 * n_exc], "<u8").astype(np.int64)
    pos += 8 * n_exc
    values = np.frombuffer(body[pos:], dtype.newbyteorder("<")).astype(dtype)
    if idx.size and int(idx.max()) >= n:
        raise CorruptChunkError("residual exception index outside the block")
    return Residual(
        step=step, q=q.astype(np.int64).reshape(shape), exception_index=idx, exception_value=values
    )


def restore(decoded: np.ndarray, res: Residual) -> np.ndarray:
    """Apply a residual to a decoded block (NaN and nodata positions are set afterwards)."""
    out = apply(decoded, res.q, res.step)
    flat = out.reshape(-1)
    flat[res.exception_index] = res.exception_value
    return out
