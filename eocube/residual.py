"""The residual layer that turns a lossy decode into a hard error bound.

Given the original block and what the video decodes to, the residual
``original - decoded`` is quantized with a step of about twice the bound wherever the
video alone misses it, so that ``decoded + q * step`` lies within the bound
everywhere. Integers use integer arithmetic (step ``2 * floor(e) + 1``); floats use
float64 and then check every value after the cast to the output dtype, storing the few
values that float rounding pushes past the bound verbatim.

The quantized residual ``q`` is mostly zeros at loose bounds and close to white noise at
tight ones: :mod:`eocube.rangecoder` codes it with a context-adaptive binary range coder.

Layout: ``u8 method`` then

- method 1 (range coder): ``varint n_exceptions | range-coded stream`` of the steps'
  float64 bit patterns (adaptive bins, one context per bit position), q, then the
  exceptions. The steps seed the other models' initial probabilities, so a damaged step
  derails the rest of the decode. The stream must end exactly where the layer does and
  with the decoder's code at 0, which catches truncation and, in practice, every
  alteration (every single-bit flip in the tests);
- method 0 (Zstandard, the first layout): ``u64 itemsize | u64 n_exceptions |
  zstd(B x f64 step | q as little-endian int of that itemsize | u64 indices | values)``.
  Payloads of chunk format version 1 written before the range coder have this layout
  without the method byte; :func:`from_bytes` reads both (``legacy=True``).

:func:`to_bytes` writes whichever is smaller: the range coder, except on long exact
repeats (a constant nonzero q), where zstd (written at level 1) wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numcodecs import Zstd

from eocube import rangecoder
from eocube.binary import ByteReader, varint
from eocube.errors import CorruptChunkError, UnsupportedDataError

# zstd only wins on long exact repeats, which level 1 finds as well as level 19 (that
# costs ~100x the time on residuals, for at most ~30% fewer bytes where the range coder
# is smaller anyway)
_ZSTD = Zstd(level=1)
_INT_TYPES = (np.int8, np.int16, np.int32, np.int64)

MAX_STEPS = 2.0**40
"""The most quantisation steps a float residual is coded in; values further from their
decode go to the exceptions, stored exactly."""

_METHOD_ZSTD = 0
_METHOD_RC = 1


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
    original: np.ndarray,
    decoded: np.ndarray,
    valid: np.ndarray,
    bounds: np.ndarray | None,
    nodata: float | None = None,
) -> Residual | None:
    """The residual bringing ``decoded`` within ``bounds`` of ``original`` (None if not needed).

    ``valid`` marks the values the bound applies to (not NaN, not nodata). ``bounds``
    None: no bound, no steps; only the exceptions below are made.

    A valid value whose restored value equals ``nodata`` would read as missing: the
    restore clamps integers to the dtype's range (a dark pixel of a cube whose nodata
    is 0), and a nodata inside a band's range can be decoded to. Such values are kept
    exactly, with the exceptions, whatever the bound.
    """
    dtype = original.dtype
    B = original.shape[1]
    shape = (1, B, 1, 1)
    if bounds is None:
        step = np.zeros(B)
        q = np.zeros(original.shape, np.int64)
        corrected = decoded
        bad = np.zeros(original.shape, bool)
    else:
        step = _steps(dtype, bounds)
        if dtype.kind in "iu":
            r = original.astype(np.int64) - decoded.astype(np.int64)
            half = np.floor(bounds).astype(np.int64).reshape(shape)
            q = np.floor_divide(r + half, step.astype(np.int64).reshape(shape))
        else:
            diff = original.astype(np.float64) - decoded.astype(np.float64)
            diff[~valid] = 0.0  # NaN and nodata positions are restored by the masks
            with np.errstate(invalid="ignore", divide="ignore"):
                q = np.where(step.reshape(shape) > 0, np.rint(diff / step.reshape(shape)), 0.0)
            # a value this many steps from its decode (a range of 1e30 under a bound of
            # 1e-3) is stored verbatim with the exceptions, not as a step count int64
            # cannot hold
            q[~(np.abs(q) <= MAX_STEPS)] = 0.0
            q = q.astype(np.int64)
        q[~valid] = 0
        corrected = apply(decoded, q, step)
        with np.errstate(invalid="ignore"):
            err = np.abs(corrected.astype(np.float64) - original.astype(np.float64))
        bad = valid & ~(err <= bounds.reshape(shape))
    if nodata is not None:
        # integers compared in their dtype (a nodata that is no value of it matches
        # nothing); floats as float64, as the valid mask compares them
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if info.min <= nodata <= info.max and float(nodata).is_integer():
                bad |= valid & (corrected == dtype.type(int(nodata)))
        else:
            bad |= valid & (corrected.astype(np.float64) == float(nodata))
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


# --- serialisation --------------------------------------------------------------------


def to_bytes(res: Residual) -> bytes:
    """Serialise: the range-coded layout, or the zstd one where that is smaller."""
    q = np.ascontiguousarray(res.q, dtype=np.int64)
    if q.ndim != 4 or np.shape(res.step) != (q.shape[1],):
        raise ValueError(f"q of shape {q.shape} needs one step per band, got {np.shape(res.step)}")
    coded = _to_bytes_rc(res, q)
    header, body = _zstd_body(res, q)
    old = bytes([_METHOD_ZSTD]) + header + bytes(_ZSTD.encode(body))
    return old if coded is None or len(old) < len(coded) else coded


def from_bytes(
    data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype, *, legacy: bool = False
) -> Residual:
    """Inverse of :func:`to_bytes` for a block of ``shape`` and ``dtype``.

    ``legacy``: the layer comes from a payload of chunk format version 1, which may hold
    the first layout without its method byte.
    """
    data = bytes(data)
    dtype = np.dtype(dtype)
    if len(shape) != 4 or any(int(s) < 0 for s in shape):
        raise ValueError(f"a residual block has 4 dimensions, got shape {shape}")
    T, B, Y, X = (int(s) for s in shape)
    if not data:
        raise CorruptChunkError("residual layer is empty")
    if legacy and _is_first_layout_without_method(data):
        res = _from_bytes_zstd(data, (T, B, Y, X), dtype)
    elif data[0] == _METHOD_RC:
        res = _from_bytes_rc(data, (T, B, Y, X), dtype)
    elif data[0] == _METHOD_ZSTD:
        res = _from_bytes_zstd(data[1:], (T, B, Y, X), dtype)
    else:
        raise CorruptChunkError(f"residual layer of unknown method {data[0]}")
    if not np.all(np.isfinite(res.step)) or np.any(res.step < 0):
        raise CorruptChunkError("residual layer holds a step that is negative or not finite")
    return res


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _is_first_layout_without_method(data: bytes) -> bool:
    """Whether a layer is the zstd layout as first written, with no method byte: a u64
    itemsize of 1, 2, 4 or 8, a u64 count, then a zstd frame. The method bytes 0 and 1
    cannot start it (itemsize 0 does not exist; 1 would need seven zero bytes and a zstd
    frame at byte 16, which a range-coded stream does not make in practice)."""
    if len(data) < 20 or data[0] not in (1, 2, 4, 8) or any(data[1:8]):
        return False
    return data[16:20] == _ZSTD_MAGIC


def _zstd_body(res: Residual, q: np.ndarray) -> tuple[bytes, bytes]:
    """The first layout's uncompressed header and body."""
    lo, hi = (int(q.min()), int(q.max())) if q.size else (0, 0)
    qtype = next(t for t in _INT_TYPES if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    header = np.array([np.dtype(qtype).itemsize, res.exception_index.size], dtype="<u8").tobytes()
    value = np.asarray(res.exception_value)
    body = b"".join(
        [
            np.asarray(res.step).astype("<f8").tobytes(),
            q.astype(np.dtype(qtype).newbyteorder("<")).tobytes(),
            np.asarray(res.exception_index).astype("<u8").tobytes(),
            value.astype(value.dtype.newbyteorder("<")).tobytes(),
        ]
    )
    return header, body


def _from_bytes_zstd(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype) -> Residual:
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
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise CorruptChunkError("residual exception index outside the block")
    return Residual(
        step=step, q=q.astype(np.int64).reshape(shape), exception_index=idx, exception_value=values
    )


def _bit_patterns(values: np.ndarray) -> np.ndarray | None:
    """Values as their bit patterns, sign-extended to int64 (None: not 1, 2, 4 or 8 bytes)."""
    size = values.dtype.itemsize
    if size not in (1, 2, 4, 8):
        return None
    native = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
    return native.view(np.dtype(f"i{size}")).astype(np.int64)


def _deltas(a: np.ndarray, first: int) -> np.ndarray:
    """``a[i] - a[i - 1]`` with ``a[-1] = first``, wrapping around int64."""
    prev = np.empty(a.size, np.int64)
    prev[:1] = first
    prev[1:] = a[:-1]
    return a - prev  # integer arrays wrap silently


def _to_bytes_rc(res: Residual, q: np.ndarray) -> bytes | None:
    """Method 1 (None where the exceptions' dtype has no integer view)."""
    index = np.asarray(res.exception_index).astype(np.int64)
    bits = _bit_patterns(np.asarray(res.exception_value))
    if bits is None or bits.size != index.size:
        return None
    step = np.ascontiguousarray(res.step, dtype=np.float64).view(np.int64)
    stream = rangecoder.encode(step, q, _deltas(index, -1), _deltas(bits, 0))
    return bytes([_METHOD_RC]) + varint(index.size) + stream


def _from_bytes_rc(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype) -> Residual:
    T, B, Y, X = shape
    n = T * B * Y * X
    reader = ByteReader(data, "residual layer", pos=1)
    n_exc = reader.varint()
    if n_exc > n:
        raise CorruptChunkError(f"residual layer holds {n_exc} exceptions for {n} values")
    if n_exc and dtype.itemsize not in (1, 2, 4, 8):
        raise CorruptChunkError(f"residual exceptions of dtype {dtype} cannot be coded")
    step, q, index, bits = rangecoder.decode(data, reader.pos, shape, n_exc)
    with np.errstate(over="ignore"):
        index = np.cumsum(index) - 1
        bits = np.cumsum(bits)
    if n_exc and (int(index.min()) < 0 or int(index.max()) >= n):
        raise CorruptChunkError("residual exception index outside the block")
    if n_exc:
        values = bits.astype(np.dtype(f"i{dtype.itemsize}")).view(dtype.newbyteorder("="))
    else:
        values = np.empty(0, dtype)
    return Residual(
        step=step.view(np.float64),
        q=q.reshape(shape),
        exception_index=index,
        exception_value=values.astype(dtype),
    )


def restore(decoded: np.ndarray, res: Residual) -> np.ndarray:
    """Apply a residual to a decoded block (after its NaN and nodata masks, whose positions
    carry no correction)."""
    out = apply(decoded, res.q, res.step)
    flat = out.reshape(-1)
    flat[res.exception_index] = res.exception_value
    return out
