"""The context-adaptive binary range coder of the residual layer (:mod:`eocube.residual`).

A quantized residual ``q`` is coded with LZMA's range coder and 16-bit adaptive
probabilities, value by value in C order over (time, band, y, x).
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

The stream starts with the steps' float64 bit patterns (adaptive bins, one context per bit
position), which seed the other models' initial probabilities, then q, then the
exceptions as signed deltas. Byte layout and models: docs/format.md, "Residual layer".
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from eocube.errors import CorruptChunkError

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

# np.int64 for kernel arithmetic on unsigned samples and stream bytes (Numba widens int()
# of an unsigned one to uint64, and mixed uint64 / int64 arithmetic goes through float64);
# Any for the type checker
_I64: Any = np.int64
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
def _renormalize(
    low: int, rng: int, cache: int, pending: int, pos: int, out: np.ndarray
) -> _EncState:  # pragma: no cover - compiled
    # each shift moves low's top byte out: the cached byte plus the carry, then the run of
    # 0xFF bytes (pending - 1 of them; pending >= 1 always) plus the carry. Written here,
    # not in a helper it calls: numba's inliner made a nested call cost ~25 ns per coded
    # bin, 4.5x the rest of the bin
    while rng < _TOP:
        rng <<= 8
        if low < 0xFF000000 or low > 0xFFFFFFFF:
            carry = low >> 32
            out[pos] = (cache + carry) & 0xFF
            pos += 1
            fill = (0xFF + carry) & 0xFF
            for _ in range(pending - 1):
                out[pos] = fill
                pos += 1
            cache = (low >> 24) & 0xFF
            pending = 0
        pending += 1
        low = (low & 0xFFFFFF) << 8
    return low, rng, cache, pending, pos


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
    # without branches on the bit: mask is all ones for a 1, zero for a 0
    s = model[m]
    p = s & 0xFFFF
    n = s >> 16
    bound = (rng >> 16) * p
    mask = -bit
    low += bound & mask
    rng = bound + ((rng - 2 * bound) & mask)
    target = 65536 - (65535 & mask)
    model[m] = (p + (((target - p) * _RATE[n]) >> 16)) | _NEXT[n]
    return _renormalize(low, rng, cache, pending, pos, out)


@numba.njit(nogil=True, cache=True, inline="always")
def _put_raw(
    low: int, rng: int, cache: int, pending: int, pos: int, out: np.ndarray, bit: int
) -> _EncState:  # pragma: no cover - compiled
    rng >>= 1
    if bit:
        low += rng
    return _renormalize(low, rng, cache, pending, pos, out)


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


@numba.njit(nogil=True, cache=True, inline="always")
def _activity_class(
    mag: np.ndarray, i: int, sy: int, sb: int, st: int
) -> int:  # pragma: no cover - compiled
    # the weighted magnitudes of the coded neighbours (see the module docstring), classed
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
    return _ACTIVITY_CLASS[act]


@numba.njit(nogil=True, cache=True, inline="always")
def _sign_context(
    sgn: np.ndarray, i: int, sy: int, sb: int, st: int
) -> int:  # pragma: no cover - compiled
    # the signs (0, +, -) of the left, up, previous-time and previous-band neighbours
    return ((sgn[i - 1] * 3 + sgn[i - sy]) * 3 + sgn[i - st]) * 3 + sgn[i - sb]


@numba.njit(nogil=True, cache=True)
def _room(out: np.ndarray, end: int) -> np.ndarray:  # pragma: no cover - compiled
    if end <= out.size:
        return out
    grown = np.empty(max(2 * out.size, end), np.uint8)
    grown[: out.size] = out
    return grown


@numba.njit(nogil=True, cache=True, inline="always")
def _finish(
    low: int, cache: int, pending: int, pos: int, out: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    # the flush: the stream's last bytes, which the decoder reads to end with code 0
    out = _room(out, pos + pending + _FLUSH)
    for _ in range(_FLUSH):  # a range one byte short of the top: exactly one shift each
        low, _, cache, pending, pos = _renormalize(low, _TOP >> 8, cache, pending, pos, out)
    return out[:pos]


@numba.njit(nogil=True, cache=True, inline="always")
def _start(data: np.ndarray, start: int) -> tuple[int, int, int]:  # pragma: no cover - compiled
    # the decoder's range, code and position at a stream starting at ``start``; a range of
    # 0 when the bytes there cannot start a stream (too short, no leading 0, code too big)
    if data.size - start < _FLUSH or data[start] != 0:
        return 0, 0, start
    code = 0
    for j in range(1, _FLUSH):
        code = (code << 8) | _I64(data[start + j])
    if code >= 0xFFFFFFFF:
        return 0, 0, start
    return 0xFFFFFFFF, code, start + _FLUSH


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
                    c = _activity_class(mag, i, sy, sb, st)
                    v = q[k]
                    k += 1
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, _M_ZERO + c, v != 0
                    )
                    if v == 0:
                        continue
                    sc = _sign_context(sgn, i, sy, sb, st)
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
    return _finish(low, cache, pending, pos, out)


@numba.njit(nogil=True, cache=True, inline="always")
def _refill(
    rng: int, code: int, pos: int, data: np.ndarray
) -> tuple[int, int, int]:  # pragma: no cover - compiled
    # the decoder's side of _renormalize; bytes past the end read as 0 (and are
    # reported). A loop: unrolled as in the encoder, the residual layer decoded 1.5x slower
    while rng < _TOP:
        rng <<= 8
        code = (code << 8) | (_I64(data[pos]) if pos < data.size else 0)
        pos += 1
    return rng, code, pos


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
    rng, code, pos = _refill(rng, code, pos, data)
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
    rng, code, pos = _start(data, start)
    if rng == 0:
        return 1
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
                    c = _activity_class(mag, i, sy, sb, st)
                    nonzero, rng, code, pos = _get(rng, code, pos, data, model, _M_ZERO + c)
                    if not nonzero:
                        q[k] = 0
                        k += 1
                        continue
                    sc = _sign_context(sgn, i, sy, sb, st)
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


def encode(
    step_bits: np.ndarray, q: np.ndarray, exc_index: np.ndarray, exc_value: np.ndarray
) -> bytes:
    """The stream of a residual: the steps (as int64 bit patterns, one per band), ``q`` of
    shape (T, B, Y, X), and the exceptions' index and value deltas (int64)."""
    T, B, Y, X = q.shape
    out = _encode(step_bits, q.reshape(-1), T, B, Y, X, exc_index, exc_value)
    return bytes(out.tobytes())


def decode(
    data: bytes, start: int, shape: tuple[int, int, int, int], exceptions: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode a stream starting at ``start`` of ``data`` (it must end with ``data``):
    the steps' bit patterns, q (flat), and the exceptions' index and value deltas.

    Raises
    ------
    CorruptChunkError
        If the stream is truncated, extended, altered or out of range.
    """
    T, B, Y, X = shape
    step = np.empty(B, np.int64)
    q = np.empty(T * B * Y * X, np.int64)
    index = np.empty(exceptions, np.int64)
    bits = np.empty(exceptions, np.int64)
    status = _decode(np.frombuffer(data, np.uint8), start, step, T, B, Y, X, q, index, bits)
    if status:
        raise CorruptChunkError(f"residual layer {_DECODE_ERRORS[status]}")
    return step, q, index, bits
