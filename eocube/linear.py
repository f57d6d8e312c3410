"""The zarr v3 codec ``eocube.linear``: a regular 1-D axis as its start and step.

Coordinates of raster cubes are mostly arithmetic sequences (pixel centres, daily
dates); storing them as two numbers makes them nearly free. A chunk that is not
exactly ``start + arange(n) * step`` in its own dtype is *predicted*: its values, as
order-preserving integers (:func:`eocube.lorenzo.to_ordered`, floats through their bit
patterns), minus those of such a sequence (nearly regular axes are a few units in the
last place off) or of their second differences (irregular dates), coded as varints, a
zstd frame of varints or a range-coded stream. The smallest of these, the raw bytes and
a zstd frame of them is stored. Byte layout: docs/format.md, "eocube.linear".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.core.buffer import Buffer, NDBuffer

from eocube.bytecodec import NamedBytesCodec
from eocube.errors import CorruptChunkError
from eocube.lorenzo import (
    from_ordered,
    orderable,
    range_code,
    range_decode,
    to_ordered,
    unzstd,
    zstd_frame,
)

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "eocube.linear"
_LINEAR = b"L"
_RAW = b"R"
_ZSTD = b"Z"
_PREDICTED = b"P"
# predictors of kind P
_BY_SEQUENCE = 0  # start + arange(n) * step, in the dtype
_BY_SECOND_DIFFERENCES = 1
# codings of kind P's residuals
_VARINTS = 0
_ZSTD_VARINTS = 1
_RANGE = 2


def is_regular(values: np.ndarray) -> bool:
    """Whether the codec stores ``values`` (a 1-D numeric axis) as its start and step."""
    return _arithmetic(np.asarray(values)) is not None


def _steps(values: np.ndarray) -> list[Any]:
    """Candidate steps of a sequence through ``values``: the first difference and the
    mean one (first to last), in the dtype."""
    dtype = values.dtype
    with np.errstate(all="ignore"):
        steps = [values[1] - values[0]]
        if dtype.kind == "f":
            steps.append((values[-1] - values[0]) / dtype.type(values.size - 1))
        else:
            mean = (int(values[-1]) - int(values[0])) // (values.size - 1)
            info = np.iinfo(dtype)
            if info.min <= mean <= info.max:
                steps.append(dtype.type(mean))
    return [np.asarray(step).astype(dtype)[()] for step in steps]


def _sequence(start: Any, step: Any, n: int, dtype: np.dtype[Any]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return (start + np.arange(n, dtype=dtype) * step).astype(dtype)


def _arithmetic(values: np.ndarray) -> tuple[Any, Any] | None:
    if values.ndim != 1 or values.size < 2 or values.dtype.kind not in "iuf":
        return None
    for step in _steps(values):
        rebuilt = _sequence(values[0], step, values.size, values.dtype)
        # bitwise equality, so -0.0 and NaN payloads are not smoothed over
        if rebuilt.tobytes() == values.tobytes():
            return values[0], step
    return None


def _varints(residuals: np.ndarray) -> bytes:
    """Zigzag LEB128 varints of int64 residuals."""
    z = ((residuals << 1) ^ (residuals >> 63)).view(np.uint64)
    lengths = np.ones(z.size, np.int64)
    for k in range(1, 10):
        lengths += z >= np.uint64(1 << (7 * k))
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), np.uint8)
    for k in range(10):
        sel = lengths > k
        low = (z[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = (lengths[sel] > k + 1).astype(np.uint64) << np.uint64(7)
        out[starts[sel] + k] = (low | more).astype(np.uint8)
    return out.tobytes()


def _unvarints(data: bytes, n: int) -> np.ndarray:
    """The ``n`` int64 residuals of :func:`_varints`; CorruptChunkError if ``data`` holds
    other than ``n`` varints of at most 10 bytes."""
    b = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if ends.size != n or (n and ends[-1] != b.size - 1) or (not n and b.size):
        raise CorruptChunkError(f"{CODEC_NAME}: residuals are not {n} varints")
    if not n:
        return np.zeros(0, np.int64)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise CorruptChunkError(f"{CODEC_NAME}: a varint of more than 10 bytes")
    pos = np.arange(b.size) - np.repeat(starts, lengths)
    bits = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    z = np.bitwise_or.reduceat(bits, starts)
    return (z >> np.uint64(1)).view(np.int64) ^ -(z & np.uint64(1)).view(np.int64)


def _second_differences(ordered: np.ndarray) -> np.ndarray:
    # r[0] = u[0], r[1] = u[1] - u[0], r[i] = u[i] - 2 u[i-1] + u[i-2] (wrapping)
    r = np.diff(ordered, prepend=np.int64(0))
    r[2:] = np.diff(r[1:])
    return r


def _undo_second_differences(r: np.ndarray) -> np.ndarray:
    d = r.copy()
    d[1:] = np.cumsum(r[1:], dtype=np.int64)
    return np.cumsum(d, dtype=np.int64)


def _coded(residuals: np.ndarray) -> list[bytes]:
    """The residuals in every coding, each after its coding byte."""
    varints = _varints(residuals)
    return [
        bytes([_VARINTS]) + varints,
        bytes([_ZSTD_VARINTS]) + zstd_frame(varints),
        bytes([_RANGE]) + range_code(residuals, (1, 1, 1, residuals.size)),
    ]


def _predicted(values: np.ndarray) -> list[bytes]:
    """Every kind-P payload of a 1-D chunk (integers or floats)."""
    ordered = to_ordered(values)
    out = []
    if values.size >= 2:
        for step in _steps(values):
            sequence = _sequence(values[0], step, values.size, values.dtype)
            pair = np.array([values[0], step], dtype=values.dtype).tobytes()
            residuals = ordered - to_ordered(sequence)
            head = _PREDICTED + bytes([_BY_SEQUENCE])
            out += [head + coded[:1] + pair + coded[1:] for coded in _coded(residuals)]
    head = _PREDICTED + bytes([_BY_SECOND_DIFFERENCES])
    out += [head + coded for coded in _coded(_second_differences(ordered))]
    return out


def _decode_residuals(coding: int, body: bytes, n: int) -> np.ndarray:
    if coding == _VARINTS:
        return _unvarints(body, n)
    if coding == _ZSTD_VARINTS:
        return _unvarints(unzstd(body, None, CODEC_NAME), n)
    if coding == _RANGE:
        return range_decode(body, 0, (1, 1, 1, n))
    raise CorruptChunkError(f"{CODEC_NAME}: unknown residual coding {coding}")


def _decode_predicted(body: bytes, dtype: np.dtype[Any], n: int) -> np.ndarray:
    if len(body) < 2 or not orderable(dtype):
        raise CorruptChunkError(f"{CODEC_NAME}: a predicted chunk of {dtype.name} values")
    predictor, coding = body[0], body[1]
    if predictor == _BY_SEQUENCE:
        pair = 2 * dtype.itemsize
        if len(body) < 2 + pair or n < 2:
            raise CorruptChunkError(f"{CODEC_NAME}: a predicted chunk without its sequence")
        start, step = np.frombuffer(body[2 : 2 + pair], dtype=dtype)
        residuals = _decode_residuals(coding, body[2 + pair :], n)
        ordered = residuals + to_ordered(_sequence(start, step, n, dtype))
    elif predictor == _BY_SECOND_DIFFERENCES:
        ordered = _undo_second_differences(_decode_residuals(coding, body[2:], n))
    else:
        raise CorruptChunkError(f"{CODEC_NAME}: unknown predictor {predictor}")
    return from_ordered(ordered, dtype, CODEC_NAME)


@dataclass(frozen=True)
class LinearCodec(NamedBytesCodec):
    """Store 1-D arithmetic sequences as (start, step), others predicted from one."""

    codec_name = CODEC_NAME

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        values = np.ascontiguousarray(chunk_array.as_numpy_array())
        values = values.astype(values.dtype.newbyteorder("<"))
        found = _arithmetic(values) if values.ndim == 1 else None
        if found is not None:
            payload = _LINEAR + np.array(found, dtype=values.dtype).tobytes()
        else:
            raw = values.tobytes()
            candidates = [_RAW + raw, _ZSTD + zstd_frame(raw)]
            if values.ndim == 1 and values.size and orderable(values.dtype):
                candidates += _predicted(values)
            payload = min(candidates, key=len)
        return chunk_spec.prototype.buffer.from_bytes(payload)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = chunk_bytes.to_bytes()
        dtype = np.dtype(chunk_spec.dtype.to_native_dtype()).newbyteorder("<")
        n = int(np.prod(chunk_spec.shape))
        kind, body = data[:1], data[1:]
        if kind == _LINEAR and len(body) == 2 * dtype.itemsize:
            start, step = np.frombuffer(body, dtype=dtype)
            values = _sequence(start, step, n, dtype)
        elif kind == _RAW and len(body) == n * dtype.itemsize:
            values = np.frombuffer(body, dtype=dtype).copy()
        elif kind == _ZSTD:
            values = np.frombuffer(unzstd(body, n * dtype.itemsize, CODEC_NAME), dtype=dtype)
        elif kind == _PREDICTED:
            values = _decode_predicted(body, dtype, n)
        else:
            raise CorruptChunkError(
                f"{CODEC_NAME}: chunk of {len(data)} bytes cannot hold {n} values"
            )
        native: Any = values.astype(dtype.newbyteorder("="))
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(native.reshape(chunk_spec.shape))
