"""The zarr v3 codec ``eocube.labels``: categorical layers (class maps, QA bit fields).

A chunk of a label map (a scene classification, a cloud mask, a QA band: few distinct
values, in regions, often the same from one date to the next) is stored as its class
table (the distinct values, ascending) and each value's class index, range-coded value by
value in C order. The last two dims are (y, x); everything before them is a sequence of
frames, so that the previous frame is the previous date. Each index is binarised as

1. ``v == W`` (the left neighbour), context: which of the up, up-left, up-right and
   left-left neighbours equal W, how the pixel and W compare in the previous frame, and
   the parity of x and y (a map upsampled 2× by pixel replication repeats in pairs);
2. if not, ``v == N`` (up), when N exists and differs from W;
3. then ``v == T`` (the same pixel in the previous frame), when T differs from both;
4. then ``v == NE`` (up-right), when NE differs from all three;
5. then, unless a single class is left, the index itself by a binary tree (MSB first)
   whose context is the node and W's class.

The binary decisions use LZMA's range coder and adaptive probabilities of
:mod:`eocube.rangecoder` (imported, not copied: the same primitives). A chunk of one
value is stored as that value; one of more than 256 distinct values (no label map) as
zstd of its bytes. Byte layout and contexts: docs/format.md, §5.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numcodecs import Zstd
from zarr.core.buffer import Buffer, NDBuffer

from eocube.bytecodec import NamedBytesCodec
from eocube.errors import CorruptChunkError
from eocube.rangecoder import _FLUSH, _NEXT, _RATE, _finish, _get, _put, _room, _start

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "eocube.labels"
_CONSTANT = 0x43  # "C": one value
_LABELS = 0x4C  # "L": class table and range-coded class indices
_ZSTD = 0x5A  # "Z": zstd of the values' bytes
MAX_CLASSES = 256
"""The most distinct values a chunk coded as a label map holds (indices are one byte)."""
_ZSTD_CODEC = Zstd(level=9)

# Models: adaptive probabilities as in eocube.rangecoder (P(bit = 0) in the low 16 bits,
# the use count above), updated with its rates. The decision "v == W" and the class index
# bits mix three models each (logistic mixing in integers, as in lpaq); the other
# decisions use one model each. Offsets past _M_FIXED depend on the number of classes K.
_TEMPORAL = 9  # no previous frame, or (T == W, TW == W, T == TW)
_PARITY = 4
_M_SCRATCH = 0  # the mixed probability, handed to the coder
_M_W = 1  # (N, NW, NE, WW == W; TN == N, T == N) x temporal x parity
_M_N = _M_W + 64 * _TEMPORAL * _PARITY
_M_T = _M_N + 16 * _PARITY
_M_NE = _M_T + 8
_M_FIXED = _M_NE + 2
_W_SETS = _TEMPORAL * _PARITY  # mixer weight sets of "v == W": temporal state, parity
_W_INIT = 30000  # initial weight of a model input (65536 = 1; the bias input starts at 0)
_VALUE_BYTES = 32  # at most 12 adaptive bins of at most 2 bytes each

# lpaq's squash (logistic, 12-bit probability of a one from a stretch in [-2047, 2047])
# by interpolation in a table, and stretch, its inverse, as a table: integers only, so
# that every machine codes the same bits
_SQUASH = np.array(
    [1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994,
     3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094],
    np.int64,
)  # fmt: skip


def _squash_py(d: int) -> int:
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    j = (d >> 7) + 16
    return int((_SQUASH[j] * (128 - w) + _SQUASH[j + 1] * w + 64) >> 7)


def _stretch_table() -> np.ndarray:
    table = np.empty(4096, np.int64)
    low = 0
    for x in range(-2047, 2048):
        v = _squash_py(x)
        table[low : v + 1] = x
        low = max(low, v + 1)
    table[low:] = 2047
    return table


_STRETCH = _stretch_table()

_DECODE_ERRORS = {
    1: "does not start a range-coded stream",
    2: "decodes to a class index outside its table",
    3: "is truncated",
    4: "does not end where its stream does (truncated, extended or altered)",
}


@numba.njit(nogil=True, cache=True, inline="always")
def _squash(d: int) -> int:  # pragma: no cover - compiled
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    j = (d >> 7) + 16
    p = (_SQUASH[j] * (128 - w) + _SQUASH[j + 1] * w + 64) >> 7
    return max(p, 1)


@numba.njit(nogil=True, cache=True, inline="always")
def _adapt(model: np.ndarray, m: int, bit: int) -> None:  # pragma: no cover - compiled
    # eocube.rangecoder's update of one model
    s = model[m]
    p = s & 0xFFFF
    n = s >> 16
    if bit:
        p += ((1 - p) * _RATE[n]) >> 16
    else:
        p += ((65536 - p) * _RATE[n]) >> 16
    model[m] = p | _NEXT[n]


@numba.njit(nogil=True, cache=True, inline="always")
def _mix(
    model: np.ndarray, weight: np.ndarray, ws: int, m0: int, m1: int, m2: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    # the mixed 12-bit probability of a one (also set as the scratch model's P(0)) and
    # the inputs' stretches
    s0 = _STRETCH[(65536 - (model[m0] & 0xFFFF)) >> 4]
    s1 = _STRETCH[(65536 - (model[m1] & 0xFFFF)) >> 4]
    s2 = _STRETCH[(65536 - (model[m2] & 0xFFFF)) >> 4]
    dot = weight[ws] * s0 + weight[ws + 1] * s1 + weight[ws + 2] * s2 + weight[ws + 3] * 256
    pm = _squash(dot >> 16)
    model[_M_SCRATCH] = (4096 - pm) << 4
    return pm, s0, s1, s2


@numba.njit(nogil=True, cache=True, inline="always")
def _learn(
    model: np.ndarray,
    weight: np.ndarray,
    ws: int,
    m0: int,
    m1: int,
    m2: int,
    pm: int,
    s0: int,
    s1: int,
    s2: int,
    bit: int,
) -> None:  # pragma: no cover - compiled
    err = (bit << 12) - pm
    weight[ws] += (s0 * err) >> 10
    weight[ws + 1] += (s1 * err) >> 10
    weight[ws + 2] += (s2 * err) >> 10
    weight[ws + 3] += (256 * err) >> 10
    _adapt(model, m0, bit)
    _adapt(model, m1, bit)
    _adapt(model, m2, bit)


@numba.njit(nogil=True, cache=True, inline="always")
def _tree_bits(k: int) -> int:  # pragma: no cover - compiled
    nb = 1
    while (1 << nb) < k:
        nb += 1
    return nb


@numba.njit(nogil=True, cache=True)
def _init(k: int) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:  # pragma: no cover
    # the models, the mixer weights, the tree's bits and the offsets of the models that
    # depend on the number of classes k: W's class models, T's class models, the trees
    nb = _tree_bits(k)
    m_wc = _M_FIXED
    m_tc = m_wc + (k + 1) * 32
    m_tree = m_tc + (k + 1) * 8
    model = np.full(m_tree + 3 * (k + 1) * (1 << nb), 32768, np.int64)
    weight = np.zeros(4 * (_W_SETS + (1 << nb)), np.int64)
    for j in range(weight.size):
        if j % 4 != 3:
            weight[j] = _W_INIT
    return model, weight, nb, m_wc, m_tc, m_tree


@numba.njit(nogil=True, cache=True, inline="always")
def _w_models(
    cls: np.ndarray, i: int, sx: int, sf: int, first: bool, par: int, m_wc: int, m_tc: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    # the three models of "v == W" and the mixer's weight set
    w = cls[i - 1]
    n = cls[i - sx]
    eq_n = int(n == w)
    eq_nw = int(cls[i - sx - 1] == w)
    eq_ne = int(cls[i - sx + 1] == w)
    s = eq_n | (eq_nw << 1) | (eq_ne << 2) | (int(cls[i - 2] == w) << 3)
    if first:
        tc = 0
        t = np.int16(-1)
        eq_t = 0
        eq_tw = 0
    else:
        t = cls[i - sf]
        tw = cls[i - sf - 1]
        eq_t = int(t == w)
        eq_tw = int(tw == w)
        tc = 1 + eq_t + 2 * eq_tw + 4 * int(t == tw)  # 1, 2, 3, 5 or 8
        s = s * 4 + int(cls[i - sf - sx] == n) + 2 * int(t == n)
    m0 = _M_W + (s * _TEMPORAL + tc) * _PARITY + par
    eq = eq_n | (eq_nw << 1) | (eq_ne << 2) | (eq_t << 3) | (eq_tw << 4)
    m1 = m_wc + (int(w) + 1) * 32 + eq
    m2 = m_tc + (int(t) + 1) * 8 + (eq_n | (eq_t << 1) | ((par & 1) << 2))
    return m0, m1, m2, 4 * (tc * _PARITY + par)


@numba.njit(nogil=True, cache=True, inline="always")
def _n_context(
    cls: np.ndarray, i: int, sx: int, sf: int, first: bool, par: int
) -> int:  # pragma: no cover - compiled
    n = cls[i - sx]
    s = int(cls[i - sx + 1] == n) | (int(cls[i - sx - 1] == n) << 1)
    if first:
        s |= 8
    else:
        s |= int(cls[i - sf] == n) << 2
    return _M_N + s * _PARITY + par


@numba.njit(nogil=True, cache=True, inline="always")
def _t_context(cls: np.ndarray, i: int, sx: int, sf: int) -> int:  # pragma: no cover - compiled
    t = cls[i - sf]
    return (
        _M_T
        + int(cls[i - sx + 1] == t)
        + 2 * int(cls[i - sf - 1] == t)
        + 4 * int(cls[i - sf - sx] == t)
    )


@numba.njit(nogil=True, cache=True)
def _encode(idx: np.ndarray, F: int, Y: int, X: int, K: int) -> np.ndarray:  # pragma: no cover
    # class planes, padded (2 columns left, 1 right, 1 row above, 1 frame before) with -1
    sx = X + 3
    sf = (Y + 1) * sx
    cls = np.full((F + 1) * sf, -1, np.int16)
    model, weight, nb, m_wc, m_tc, m_tree = _init(K)
    tree = (K + 1) << nb  # models per tree
    out = np.empty(idx.size // 8 + 64, np.uint8)
    low = 0
    rng = 0xFFFFFFFF
    cache = 0
    pending = 1
    pos = 0
    k = 0
    for f in range(F):
        first = f == 0
        for y in range(Y):
            out = _room(out, pos + pending + X * _VALUE_BYTES + _FLUSH)
            i = (f + 1) * sf + (y + 1) * sx + 2
            for x in range(X):
                v = np.int16(idx[k])
                k += 1
                par = (x & 1) | ((y & 1) << 1)
                w = cls[i - 1]
                n = cls[i - sx]
                t = cls[i - sf]
                ne = cls[i - sx + 1]
                left = K
                done = False
                if w >= 0:
                    m0, m1, m2, ws = _w_models(cls, i, sx, sf, first, par, m_wc, m_tc)
                    pm, s0, s1, s2 = _mix(model, weight, ws, m0, m1, m2)
                    bit = int(v == w)
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, _M_SCRATCH, bit
                    )
                    _learn(model, weight, ws, m0, m1, m2, pm, s0, s1, s2, bit)
                    done = v == w
                    left -= 1
                if not done and n >= 0 and n != w:
                    m = _n_context(cls, i, sx, sf, first, par)
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, m, v == n
                    )
                    done = v == n
                    left -= 1
                if not done and t >= 0 and t != w and t != n:
                    m = _t_context(cls, i, sx, sf)
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, m, v == t
                    )
                    done = v == t
                    left -= 1
                if not done and ne >= 0 and ne != w and ne != n and ne != t:
                    m = _M_NE + int(not first and cls[i - sf + 1] == ne)
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, m, v == ne
                    )
                    done = v == ne
                    left -= 1
                if not done and left > 1:
                    b0 = m_tree + ((int(w) + 1) << nb)
                    b1 = m_tree + tree + ((int(t) + 1) << nb)
                    b2 = m_tree + 2 * tree + ((int(n) + 1) << nb)
                    node = 1
                    for j in range(nb - 1, -1, -1):
                        bit = int((v >> j) & 1)
                        ws = 4 * (_W_SETS + node)
                        pm, s0, s1, s2 = _mix(model, weight, ws, b0 + node, b1 + node, b2 + node)
                        low, rng, cache, pending, pos = _put(
                            low, rng, cache, pending, pos, out, model, _M_SCRATCH, bit
                        )
                        _learn(
                            model, weight, ws, b0 + node, b1 + node, b2 + node, pm, s0, s1, s2, bit
                        )
                        node = 2 * node + bit
                cls[i] = v
                i += 1
    return _finish(low, cache, pending, pos, out)


@numba.njit(nogil=True, cache=True)
def _decode(
    data: np.ndarray, start: int, F: int, Y: int, X: int, K: int, idx: np.ndarray
) -> int:  # pragma: no cover - compiled
    # 0 on success, else a key of _DECODE_ERRORS; idx is filled
    end = data.size
    rng, code, pos = _start(data, start)
    if rng == 0:
        return 1
    sx = X + 3
    sf = (Y + 1) * sx
    cls = np.full((F + 1) * sf, -1, np.int16)
    model, weight, nb, m_wc, m_tc, m_tree = _init(K)
    tree = (K + 1) << nb
    k = 0
    for f in range(F):
        first = f == 0
        for y in range(Y):
            if pos > end:
                return 3
            i = (f + 1) * sf + (y + 1) * sx + 2
            for x in range(X):
                par = (x & 1) | ((y & 1) << 1)
                w = cls[i - 1]
                n = cls[i - sx]
                t = cls[i - sf]
                ne = cls[i - sx + 1]
                left = K
                v = np.int16(-1)
                if w >= 0:
                    m0, m1, m2, ws = _w_models(cls, i, sx, sf, first, par, m_wc, m_tc)
                    pm, s0, s1, s2 = _mix(model, weight, ws, m0, m1, m2)
                    bit, rng, code, pos = _get(rng, code, pos, data, model, _M_SCRATCH)
                    _learn(model, weight, ws, m0, m1, m2, pm, s0, s1, s2, bit)
                    if bit:
                        v = w
                    left -= 1
                if v < 0 and n >= 0 and n != w:
                    m = _n_context(cls, i, sx, sf, first, par)
                    bit, rng, code, pos = _get(rng, code, pos, data, model, m)
                    if bit:
                        v = n
                    left -= 1
                if v < 0 and t >= 0 and t != w and t != n:
                    m = _t_context(cls, i, sx, sf)
                    bit, rng, code, pos = _get(rng, code, pos, data, model, m)
                    if bit:
                        v = t
                    left -= 1
                if v < 0 and ne >= 0 and ne != w and ne != n and ne != t:
                    m = _M_NE + int(not first and cls[i - sf + 1] == ne)
                    bit, rng, code, pos = _get(rng, code, pos, data, model, m)
                    if bit:
                        v = ne
                    left -= 1
                if v < 0:
                    if left > 1:
                        b0 = m_tree + ((int(w) + 1) << nb)
                        b1 = m_tree + tree + ((int(t) + 1) << nb)
                        b2 = m_tree + 2 * tree + ((int(n) + 1) << nb)
                        node = 1
                        for _ in range(nb):
                            ws = 4 * (_W_SETS + node)
                            pm, s0, s1, s2 = _mix(
                                model, weight, ws, b0 + node, b1 + node, b2 + node
                            )
                            bit, rng, code, pos = _get(rng, code, pos, data, model, _M_SCRATCH)
                            _learn(
                                model, weight, ws, b0 + node, b1 + node, b2 + node,
                                pm, s0, s1, s2, bit,
                            )  # fmt: skip
                            node = 2 * node + bit
                        c = node - (1 << nb)
                        if c >= K:
                            return 2
                        v = np.int16(c)
                    else:
                        # the one class not excluded: the smallest not among w, n, t, ne
                        c = K
                        for j in range(K):
                            if j != w and j != n and j != t and j != ne:
                                c = j
                                break
                        if c >= K:
                            return 2
                        v = np.int16(c)
                cls[i] = v
                idx[k] = v
                k += 1
                i += 1
    if pos > end:
        return 3
    if pos != end or code != 0:
        return 4
    return 0


def _frames(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(frames, y, x) of a chunk shape: the last two dims are y and x."""
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, 1, int(shape[0])
    return math.prod(shape[:-2]), int(shape[-2]), int(shape[-1])


def _bit_patterns(values: np.ndarray) -> np.ndarray | None:
    """The values' little-endian bit patterns as unsigned integers (flat); None for a
    dtype the label kinds do not hold."""
    dtype = values.dtype
    if dtype.kind not in "biuf" or dtype.itemsize not in (1, 2, 4, 8):
        return None
    little = values.astype(dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).view(f"<u{dtype.itemsize}").reshape(-1)


def _classes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The class table (distinct values, ascending) and each value's index (uint8), or
    None beyond :data:`MAX_CLASSES` classes."""
    if bits.dtype.itemsize <= 2:
        counts = np.bincount(bits, minlength=1 << (8 * bits.dtype.itemsize))
        table = np.flatnonzero(counts).astype(bits.dtype)
        if table.size > MAX_CLASSES:
            return None
        lut = np.zeros(counts.size, np.uint8)
        lut[table] = np.arange(table.size, dtype=np.uint8)
        return table, lut[bits]
    table, inverse = np.unique(bits, return_inverse=True)
    if table.size > MAX_CLASSES:
        return None
    return table, inverse.astype(np.uint8).reshape(-1)


def encode(values: np.ndarray) -> bytes:
    """The payload of one chunk (any shape; the last two dims are y, x)."""
    values = np.asarray(values)
    bits = _bit_patterns(values)
    found = _classes(bits) if bits is not None and bits.size else None
    if bits is None or found is None:
        little = values.astype(values.dtype.newbyteorder("<"), copy=False)
        return bytes([_ZSTD]) + bytes(_ZSTD_CODEC.encode(np.ascontiguousarray(little).tobytes()))
    table, idx = found
    if table.size == 1:
        return bytes([_CONSTANT]) + table.tobytes()
    F, Y, X = _frames(values.shape)
    stream = _encode(idx, F, Y, X, table.size)
    return bytes([_LABELS, table.size - 1]) + table.tobytes() + stream.tobytes()


def decode(data: bytes, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The values of one chunk from its payload.

    Raises
    ------
    CorruptChunkError
        If the payload is truncated, extended, altered or of an unknown kind.
    """
    dtype = np.dtype(dtype)
    little = dtype.newbyteorder("<")
    n = math.prod(shape)
    size = dtype.itemsize
    kind = data[0] if data else -1
    if kind == _ZSTD:
        try:
            raw = bytes(_ZSTD_CODEC.decode(data[1:]))
        except Exception as exc:
            raise CorruptChunkError(f"{CODEC_NAME}: damaged zstd frame ({exc})") from None
        if len(raw) != n * size:
            raise CorruptChunkError(
                f"{CODEC_NAME}: zstd frame holds {len(raw)} bytes, not {n} values of {size}"
            )
        values = np.frombuffer(raw, little)
    elif kind == _CONSTANT and len(data) == 1 + size and size in (1, 2, 4, 8):
        values = np.full(n, np.frombuffer(data[1:], f"<u{size}")[0]).view(little)
    elif kind == _LABELS and len(data) >= 2 and size in (1, 2, 4, 8):
        k = data[1] + 1
        start = 2 + k * size
        if len(data) < start:
            raise CorruptChunkError(f"{CODEC_NAME}: chunk too short for its class table")
        table = np.frombuffer(data, f"<u{size}", count=k, offset=2)
        if k < 2 or not bool(np.all(table[1:] > table[:-1])):
            raise CorruptChunkError(f"{CODEC_NAME}: class table not strictly ascending")
        F, Y, X = _frames(shape)
        idx = np.empty(n, np.uint8)
        status = _decode(np.frombuffer(data, np.uint8), start, F, Y, X, k, idx)
        if status:
            raise CorruptChunkError(f"{CODEC_NAME}: class stream {_DECODE_ERRORS[status]}")
        values = table[idx].view(little)
    else:
        raise CorruptChunkError(
            f"{CODEC_NAME}: chunk of {len(data)} bytes is no payload of {n} {dtype} values"
        )
    return values.astype(dtype.newbyteorder("="), copy=False).reshape(shape)


@dataclass(frozen=True)
class LabelsCodec(NamedBytesCodec):
    """Store label maps as a class table and context-coded class indices."""

    codec_name = CODEC_NAME

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        payload = encode(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(payload)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = np.dtype(chunk_spec.dtype.to_native_dtype())
        values: Any = decode(chunk_bytes.to_bytes(), tuple(chunk_spec.shape), dtype)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(values)
