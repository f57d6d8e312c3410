"""The residual layer that turns a lossy decode into a hard error bound.

Given the original block and what the video decodes to, the residual
``original - decoded`` is quantized with a step of about twice the bound wherever the
video alone misses it, so that ``decoded + q * step`` lies within the bound
everywhere. Integers use integer arithmetic (step ``2 * floor(e) + 1``); floats use
float64 and then check every value after the cast to the output dtype, storing the few
values that float rounding pushes past the bound verbatim.

The quantized residual ``q`` is mostly zeros at loose bounds and close to white noise at
tight ones. It is coded by a context-adaptive binary range coder (LZMA's range coder,
with 16-bit adaptive probabilities), value by value in C order over (time, band, y, x).
Each value is binarised as

- a *zero* flag, whose context is the local activity: a weighted sum of the magnitudes
  (clipped to 15) of the already coded neighbours left, left-left, up, up-up, up-left,
  up-right, the same pixel one and two time steps back and in the previous band,
  quantized to 22 classes;
- a *sign*, whose context is the signs of the left, up, previous-time and previous-band
  neighbours (81 contexts);
- the magnitude ``u = |q| - 1`` in unary up to 14 bins (context: activity class × bin),
  then an escape ``u - 14`` as an Elias-gamma-like code: its bit length in unary
  (adaptive, one context per position) and the bits below the leading one raw.

Every int64 is representable (``u`` of ``-2**63`` is ``2**63 - 1``). Probabilities adapt
at rate ``1/(n + 2)`` for a context's first observations, then at 1/128. The exceptions
(float rounding) follow in the same stream as signed deltas of their indices and of their
values' bit patterns.

Layout: ``u8 method`` then

- method 1 (range coder): ``varint n_exceptions | range-coded stream`` of the steps'
  float64 bit patterns (adaptive bins, one context per bit position), q, then the
  exceptions. The steps seed the other models' initial probabilities, so a damaged step
  derails the rest of the decode. The stream must end exactly where the layer does and
  with the decoder's code at 0, which catches truncation and, in practice, every
  alteration (every single-bit flip in the tests);
- method 0 (Zstandard, the first layout): ``u64 itemsize | u64 n_exceptions |
  zstd(B x f64 step | q as little-endian int of that itemsize | u64 indices | values)``.

:func:`to_bytes` writes whichever is smaller: the range coder, except on long exact
repeats (a constant nonzero q), where zstd (written at level 1) wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numcodecs import Zstd

from eocube.errors import CorruptChunkError, UnsupportedDataError

# zstd only wins on long exact repeats, which level 1 finds as well as level 19 (that
# costs ~100x the time on residuals, for at most ~30% fewer bytes where the range coder
# is smaller anyway)
_ZSTD = Zstd(level=1)
_INT_TYPES = (np.int8, np.int16, np.int32, np.int64)

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


def from_bytes(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype) -> Residual:
    """Inverse of :func:`to_bytes` for a block of ``shape`` and ``dtype``."""
    data = bytes(data)
    dtype = np.dtype(dtype)
    if len(shape) != 4 or any(int(s) < 0 for s in shape):
        raise ValueError(f"a residual block has 4 dimensions, got shape {shape}")
    T, B, Y, X = (int(s) for s in shape)
    if not data:
        raise CorruptChunkError("residual layer is empty")
    if data[0] == _METHOD_RC:
        res = _from_bytes_rc(data, (T, B, Y, X), dtype)
    elif data[0] == _METHOD_ZSTD:
        res = _from_bytes_zstd(data[1:], (T, B, Y, X), dtype)
    else:
        raise CorruptChunkError(f"residual layer of unknown method {data[0]}")
    if not np.all(np.isfinite(res.step)) or np.any(res.step < 0):
        raise CorruptChunkError("residual layer holds a step that is negative or not finite")
    return res


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
    T, B, Y, X = q.shape
    step = np.ascontiguousarray(res.step, dtype=np.float64).view(np.int64)
    stream = _encode(step, q.reshape(-1), T, B, Y, X, _deltas(index, -1), _deltas(bits, 0))
    return bytes([_METHOD_RC]) + _varint(index.size) + stream.tobytes()


def _from_bytes_rc(data: bytes, shape: tuple[int, int, int, int], dtype: np.dtype) -> Residual:
    T, B, Y, X = shape
    n = T * B * Y * X
    n_exc, pos = _read_varint(data, 1)
    if n_exc > n:
        raise CorruptChunkError(f"residual layer holds {n_exc} exceptions for {n} values")
    if n_exc and dtype.itemsize not in (1, 2, 4, 8):
        raise CorruptChunkError(f"residual exceptions of dtype {dtype} cannot be coded")
    step = np.empty(B, np.int64)
    q = np.empty(n, np.int64)
    index = np.empty(n_exc, np.int64)
    bits = np.empty(n_exc, np.int64)
    status = _decode(np.frombuffer(data, np.uint8), pos, step, T, B, Y, X, q, index, bits)
    if status:
        raise CorruptChunkError(f"residual layer {_DECODE_ERRORS[status]}")
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


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    v = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            raise CorruptChunkError("residual layer truncated")
        byte = data[pos]
        pos += 1
        v |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return v, pos
    raise CorruptChunkError("residual layer holds an overlong varint")


# --- the range coder --------------------------------------------------------------------
#
# LZMA's range coder: 32-bit range, 33-bit low with carry propagation through a pending
# run of 0xFF bytes (cache, cache_size), flushed by 5 shifts of low, so a stream is the
# byte 0 and then the code. The decoder reads the same number of bytes and ends with code
# 0. A model (one int64 per context) holds P(bit = 0) in its low 16 bits, in [1, 65535] by
# construction (each update moves at most half way towards 1 or 65536), so neither
# sub-range is ever empty, and above them how many times it was used (up to 126), which
# sets its adaptation rate.
#
# Numba does no bounds checks: every array index below is kept in range by construction
# (padded context planes, buffer growth before each value) or by an explicit test (input
# bytes past the end read as 0 and are reported).

_FLUSH = 5  # bytes of the flush, also the bytes the decoder reads first
_TOP = 1 << 24
_UNARY = 14  # unary magnitude bins before the escape
_ACTIVITY_CLASSES = 22
_CAP = 15  # neighbour magnitudes are clipped to this
_LEN_BINS = 63  # unary bins for the bit length of an escape (at most 63 bits)
_I64_MAX = (1 << 63) - 1

_M_ZERO = 0
_M_SIGN = _M_ZERO + _ACTIVITY_CLASSES
_M_MAG = _M_SIGN + 81
_M_ESC = _M_MAG + _ACTIVITY_CLASSES * _UNARY
_M_EXC_INDEX = _M_ESC + _LEN_BINS
_M_EXC_VALUE = _M_EXC_INDEX + 2 + _LEN_BINS
_M_STEP = _M_EXC_VALUE + 2 + _LEN_BINS
_N_MODELS = _M_STEP + 64
_MIX = -0x61C8864680B583EB  # 0x9E3779B97F4A7C15 as an int64

# adaptation rate 1 / (n + 2) for a context's n-th observation, then 1 / 128; _NEXT is
# the count field after one more use
_RATE_LIMIT = 128
_LAST_COUNT = _RATE_LIMIT - 2
_RATE = np.array([65536 // min(n + 2, _RATE_LIMIT) for n in range(_LAST_COUNT + 1)], np.int64)
_NEXT = np.array([min(n + 1, _LAST_COUNT) << 16 for n in range(_LAST_COUNT + 1)], np.int64)

# neighbour weights: left, left-left, up, up-up, up-left, up-right, t-1, t-2, band-1
_MAX_ACTIVITY = (4 + 1 + 3 + 1 + 1 + 2 + 4 + 1 + 3) * _CAP
_CLASS_EDGES = np.array(
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 17, 20, 24, 28, 34, 40, 48, 56, 64, 80]
)
_ACTIVITY_CLASS = (np.searchsorted(_CLASS_EDGES, np.arange(_MAX_ACTIVITY + 1), "right") - 1).astype(
    np.int64
)
if _CLASS_EDGES.size != _ACTIVITY_CLASSES:  # pragma: no cover
    raise AssertionError("activity classes and their edges disagree")

# bytes one value can add at most: 79 adaptive bins of at most 2 bytes, 62 raw bins of 1
_VALUE_BYTES = 256

# the encoder's state: low, range, cache, pending bytes, output position
_EncState = tuple[int, int, int, int, int]

_DECODE_ERRORS = {
    1: "does not start a range-coded stream",
    2: "decodes to a value outside int64",
    3: "is truncated",
    4: "does not end where its stream does (truncated, extended or altered)",
}


@numba.njit(nogil=True, cache=True, inline="always")
def _shift_low(
    low: int, cache: int, pending: int, pos: int, out: np.ndarray
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    if low < 0xFF000000 or low > 0xFFFFFFFF:
        carry = low >> 32
        byte = cache
        while pending:
            out[pos] = (byte + carry) & 0xFF
            pos += 1
            byte = 0xFF
            pending -= 1
        cache = (low >> 24) & 0xFF
    return (low & 0xFFFFFF) << 8, cache, pending + 1, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _put(
    low: int,
    rng: int,
    cache: int,
    pending: int,
    pos: int,
    out: np.ndarray,
    model: np.ndarray,
    m: int,
    bit: int,
) -> _EncState:  # pragma: no cover - compiled
    s = model[m]
    p = s & 0xFFFF
    n = s >> 16
    bound = (rng >> 16) * p
    if bit:
        low += bound
        rng -= bound
        p += ((1 - p) * _RATE[n]) >> 16
    else:
        rng = bound
        p += ((65536 - p) * _RATE[n]) >> 16
    model[m] = p | _NEXT[n]
    while rng < _TOP:
        rng <<= 8
        low, cache, pending, pos = _shift_low(low, cache, pending, pos, out)
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _put_raw(
    low: int, rng: int, cache: int, pending: int, pos: int, out: np.ndarray, bit: int
) -> _EncState:  # pragma: no cover - compiled
    rng >>= 1
    if bit:
        low += rng
    if rng < _TOP:
        rng <<= 8
        low, cache, pending, pos = _shift_low(low, cache, pending, pos, out)
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _put_length(
    low: int,
    rng: int,
    cache: int,
    pending: int,
    pos: int,
    out: np.ndarray,
    model: np.ndarray,
    base: int,
    v: int,
) -> _EncState:  # pragma: no cover - compiled
    # v >= 0: its bit length L in unary (adaptive), then the L - 1 bits below the top one
    length = 0
    w = v
    while w:
        w >>= 1
        length += 1
    for j in range(_LEN_BINS):
        bit = length > j
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, base + j, bit
        )
        if not bit:
            break
    for j in range(length - 2, -1, -1):
        low, rng, cache, pending, pos = _put_raw(low, rng, cache, pending, pos, out, (v >> j) & 1)
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _put_signed(
    low: int,
    rng: int,
    cache: int,
    pending: int,
    pos: int,
    out: np.ndarray,
    model: np.ndarray,
    base: int,
    d: int,
) -> _EncState:  # pragma: no cover - compiled
    low, rng, cache, pending, pos = _put(low, rng, cache, pending, pos, out, model, base, d != 0)
    if d != 0:
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, base + 1, d < 0
        )
        u = d - 1 if d > 0 else ~d
        low, rng, cache, pending, pos = _put_length(
            low, rng, cache, pending, pos, out, model, base + 2, u
        )
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True)
def _room(out: np.ndarray, end: int) -> np.ndarray:  # pragma: no cover - compiled
    if end <= out.size:
        return out
    grown = np.empty(max(2 * out.size, end), np.uint8)
    grown[: out.size] = out
    return grown


@numba.njit(nogil=True, cache=True)
def _seed(model: np.ndarray, step: np.ndarray) -> None:  # pragma: no cover - compiled
    # The steps' bits set the other models' initial probabilities (within 1/256 of 1/2):
    # a damaged step then throws the decoder off q's stream, and the end check catches it.
    h = np.int64(0)
    for b in range(step.size):
        h = (h ^ step[b]) * _MIX
        h ^= h >> 29
    for m in range(_M_STEP):
        g = (h + m) * _MIX
        model[m] = 32768 + ((g >> 33) & 511) - 256


@numba.njit(nogil=True, cache=True)
def _encode(
    step: np.ndarray,
    q: np.ndarray,
    T: int,
    B: int,
    Y: int,
    X: int,
    exc_index: np.ndarray,
    exc_value: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    # context planes, padded so that every neighbour of a value exists (zero outside)
    sy = X + 3
    sb = (Y + 2) * sy
    st = (B + 1) * sb
    mag = np.zeros((T + 2) * st, np.int8)
    sgn = np.zeros((T + 2) * st, np.int8)  # 0 zero, 1 positive, 2 negative
    model = np.full(_N_MODELS, 32768, np.int64)
    out = np.empty(q.size // 4 + 4 * _VALUE_BYTES, np.uint8)
    low = 0
    rng = 0xFFFFFFFF
    cache = 0
    pending = 1
    pos = 0
    # the steps' bit patterns, in the stream so that its end check covers them
    for b in range(B):
        out = _room(out, pos + pending + 2 * 64)
        for j in range(63, -1, -1):
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, _M_STEP + j, (step[b] >> j) & 1
            )
    _seed(model, step)
    k = 0
    for t in range(T):
        for b in range(B):
            for y in range(Y):
                i0 = (t + 2) * st + (b + 1) * sb + (y + 2) * sy + 2
                for x in range(X):
                    if pos + pending + _VALUE_BYTES > out.size:
                        out = _room(out, pos + pending + _VALUE_BYTES)
                    i = i0 + x
                    act = (
                        4 * np.int64(mag[i - 1])
                        + mag[i - 2]
                        + 3 * np.int64(mag[i - sy])
                        + mag[i - 2 * sy]
                        + mag[i - sy - 1]
                        + 2 * np.int64(mag[i - sy + 1])
                        + 4 * np.int64(mag[i - st])
                        + mag[i - 2 * st]
                        + 3 * np.int64(mag[i - sb])
                    )
                    c = _ACTIVITY_CLASS[act]
                    v = q[k]
                    k += 1
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, _M_ZERO + c, v != 0
                    )
                    if v == 0:
                        continue
                    sc = ((sgn[i - 1] * 3 + sgn[i - sy]) * 3 + sgn[i - st]) * 3 + sgn[i - sb]
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, _M_SIGN + sc, v < 0
                    )
                    u = v - 1 if v > 0 else ~v
                    m0 = _M_MAG + c * _UNARY
                    for j in range(_UNARY):
                        bit = u > j
                        low, rng, cache, pending, pos = _put(
                            low, rng, cache, pending, pos, out, model, m0 + j, bit
                        )
                        if not bit:
                            break
                    if u >= _UNARY:
                        low, rng, cache, pending, pos = _put_length(
                            low, rng, cache, pending, pos, out, model, _M_ESC, u - _UNARY
                        )
                    mag[i] = _CAP if u >= _CAP - 1 else u + 1
                    sgn[i] = 1 if v > 0 else 2
    for e in range(exc_index.size):
        out = _room(out, pos + pending + 2 * _VALUE_BYTES)
        low, rng, cache, pending, pos = _put_signed(
            low, rng, cache, pending, pos, out, model, _M_EXC_INDEX, exc_index[e]
        )
        low, rng, cache, pending, pos = _put_signed(
            low, rng, cache, pending, pos, out, model, _M_EXC_VALUE, exc_value[e]
        )
    out = _room(out, pos + pending + _FLUSH)
    for _ in range(_FLUSH):
        low, cache, pending, pos = _shift_low(low, cache, pending, pos, out)
    return out[:pos]


@numba.njit(nogil=True, cache=True, inline="always")
def _get(
    rng: int, code: int, pos: int, data: np.ndarray, model: np.ndarray, m: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    s = model[m]
    p = s & 0xFFFF
    n = s >> 16
    bound = (rng >> 16) * p
    bit = int(code >= bound)
    mask = -bit
    code -= bound & mask
    rng = (rng - bound) if bit else bound
    target = 1 if bit else 65536
    model[m] = (p + (((target - p) * _RATE[n]) >> 16)) | _NEXT[n]
    while rng < _TOP:
        rng <<= 8
        code = (code << 8) | (int(data[pos]) if pos < data.size else 0)
        pos += 1
    return bit, rng, code, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _get_raw(
    rng: int, code: int, pos: int, data: np.ndarray
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    rng >>= 1
    bit = 0
    if code >= rng:
        code -= rng
        bit = 1
    if rng < _TOP:
        rng <<= 8
        code = (code << 8) | (int(data[pos]) if pos < data.size else 0)
        pos += 1
    return bit, rng, code, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _get_length(
    rng: int, code: int, pos: int, data: np.ndarray, model: np.ndarray, base: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    length = 0
    while length < _LEN_BINS:
        bit, rng, code, pos = _get(rng, code, pos, data, model, base + length)
        if not bit:
            break
        length += 1
    v = 1 if length else 0
    for _ in range(length - 1):
        bit, rng, code, pos = _get_raw(rng, code, pos, data)
        v = (v << 1) | bit
    return v, rng, code, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _get_signed(
    rng: int, code: int, pos: int, data: np.ndarray, model: np.ndarray, base: int
) -> tuple[int, int, int, int, int]:  # pragma: no cover - compiled
    # returns ok (0 or 1), the value and the state
    nonzero, rng, code, pos = _get(rng, code, pos, data, model, base)
    if not nonzero:
        return 1, 0, rng, code, pos
    neg, rng, code, pos = _get(rng, code, pos, data, model, base + 1)
    u, rng, code, pos = _get_length(rng, code, pos, data, model, base + 2)
    if neg:
        return 1, ~u, rng, code, pos
    if u == _I64_MAX:
        return 0, 0, rng, code, pos
    return 1, u + 1, rng, code, pos


@numba.njit(nogil=True, cache=True)
def _decode(
    data: np.ndarray,
    start: int,
    step: np.ndarray,
    T: int,
    B: int,
    Y: int,
    X: int,
    q: np.ndarray,
    exc_index: np.ndarray,
    exc_value: np.ndarray,
) -> int:  # pragma: no cover - compiled
    # 0 on success, else a key of _DECODE_ERRORS; q and the exceptions are filled
    end = data.size
    if end - start < _FLUSH or data[start] != 0:
        return 1
    code = 0
    for j in range(1, _FLUSH):
        code = (code << 8) | int(data[start + j])
    rng = 0xFFFFFFFF
    if code >= rng:
        return 1
    pos = start + _FLUSH
    sy = X + 3
    sb = (Y + 2) * sy
    st = (B + 1) * sb
    mag = np.zeros((T + 2) * st, np.int8)
    sgn = np.zeros((T + 2) * st, np.int8)
    model = np.full(_N_MODELS, 32768, np.int64)
    for b in range(B):
        s = 0
        for j in range(63, -1, -1):
            bit, rng, code, pos = _get(rng, code, pos, data, model, _M_STEP + j)
            s |= bit << j
        step[b] = s
    _seed(model, step)
    k = 0
    for t in range(T):
        for b in range(B):
            for y in range(Y):
                if pos > end:
                    return 3
                i0 = (t + 2) * st + (b + 1) * sb + (y + 2) * sy + 2
                for x in range(X):
                    i = i0 + x
                    act = (
                        4 * np.int64(mag[i - 1])
                        + mag[i - 2]
                        + 3 * np.int64(mag[i - sy])
                        + mag[i - 2 * sy]
                        + mag[i - sy - 1]
                        + 2 * np.int64(mag[i - sy + 1])
                        + 4 * np.int64(mag[i - st])
                        + mag[i - 2 * st]
                        + 3 * np.int64(mag[i - sb])
                    )
                    c = _ACTIVITY_CLASS[act]
                    nonzero, rng, code, pos = _get(rng, code, pos, data, model, _M_ZERO + c)
                    if not nonzero:
                        q[k] = 0
                        k += 1
                        continue
                    sc = ((sgn[i - 1] * 3 + sgn[i - sy]) * 3 + sgn[i - st]) * 3 + sgn[i - sb]
                    neg, rng, code, pos = _get(rng, code, pos, data, model, _M_SIGN + sc)
                    m0 = _M_MAG + c * _UNARY
                    u = 0
                    while u < _UNARY:
                        bit, rng, code, pos = _get(rng, code, pos, data, model, m0 + u)
                        if not bit:
                            break
                        u += 1
                    if u == _UNARY:
                        v, rng, code, pos = _get_length(rng, code, pos, data, model, _M_ESC)
                        if v > _I64_MAX - _UNARY:
                            return 2
                        u += v
                    if neg:
                        q[k] = ~u
                        sgn[i] = 2
                    else:
                        if u == _I64_MAX:
                            return 2
                        q[k] = u + 1
                        sgn[i] = 1
                    mag[i] = _CAP if u >= _CAP - 1 else u + 1
                    k += 1
    for e in range(exc_index.size):
        if pos > end:
            return 3
        ok, d, rng, code, pos = _get_signed(rng, code, pos, data, model, _M_EXC_INDEX)
        if not ok:
            return 2
        exc_index[e] = d
        ok, d, rng, code, pos = _get_signed(rng, code, pos, data, model, _M_EXC_VALUE)
        if not ok:
            return 2
        exc_value[e] = d
    if pos > end:
        return 3
    if pos != end or code != 0:
        return 4
    return 0


def restore(decoded: np.ndarray, res: Residual) -> np.ndarray:
    """Apply a residual to a decoded block (after its NaN and nodata masks, whose positions
    carry no correction)."""
    out = apply(decoded, res.q, res.step)
    flat = out.reshape(-1)
    flat[res.exception_index] = res.exception_value
    return out
