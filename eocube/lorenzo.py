"""The zarr v3 codec ``eocube.lorenzo``: smooth N-D numeric arrays, losslessly.

Auxiliary arrays of raster cubes (curvilinear latitude and longitude, angles, float
masks) are smooth fields that zstd barely compresses. This codec maps their values to
order-preserving integers (floats through their bit patterns, so every value comes back
bit for bit, NaN payloads, infinities and -0.0 included), predicts each one from its
already coded neighbours (the N-D Lorenzo predictor: a difference along every predicted
axis) and codes the residuals with eocube's range coder (:mod:`eocube.rangecoder`). A
chunk that prediction does not make smaller is stored as raw bytes or a zstd frame of
them, whichever is smaller. Byte layout: docs/format.md, "eocube.lorenzo".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numcodecs import zstd
from zarr.core.buffer import Buffer, NDBuffer

from eocube import rangecoder
from eocube.bytecodec import NamedBytesCodec
from eocube.errors import CorruptChunkError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "eocube.lorenzo"
_PREDICTED = b"P"
_RAW = b"R"
_ZSTD = b"Z"
_MAX_DIMS = 8  # the axis mask is one byte
# above this many values, only the prediction of least estimated cost is range coded
# (the estimate: the bits of the residuals' magnitudes, see _estimate)
_TRY_ALL = 2**20
# zstd level of the fallback: the strongest for the small arrays that stores are made of,
# a faster one for big chunks (the level is the encoder's choice; any frame decodes)
_ZSTD_SMALL = 256 * 1024


def zstd_frame(raw: bytes) -> bytes:
    """A zstd frame of ``raw`` (level 19 up to 256 kB, 9 above)."""
    return bytes(zstd.compress(raw, 19 if len(raw) <= _ZSTD_SMALL else 9))


def unzstd(frame: bytes, size: int | None, what: str) -> bytes:
    """The bytes in a zstd frame (``size`` of them, if given); CorruptChunkError if it is
    damaged or holds another size."""
    try:
        raw = bytes(zstd.decompress(frame))
    except Exception as exc:  # numcodecs raises RuntimeError, ValueError, ...
        raise CorruptChunkError(f"{what}: damaged zstd frame ({exc})") from exc
    if size is not None and len(raw) != size:
        raise CorruptChunkError(f"{what}: zstd frame holds {len(raw)} bytes, not {size}")
    return raw


def orderable(dtype: np.dtype[Any]) -> bool:
    """Whether :func:`to_ordered` maps values of ``dtype`` (integers and floats)."""
    return dtype.kind in "iu" or (dtype.kind == "f" and dtype.itemsize in (2, 4, 8))


def to_ordered(values: np.ndarray) -> np.ndarray:
    """``values`` (integers or floats) as int64 in the same order, one to one.

    Integers keep their value (uint64 is shifted by -2**63); a float's bit pattern ``s``
    (as a signed integer of its width) becomes ``s`` if the sign bit is clear, else
    ``s ^ (2**(w-1) - 1)``: -0.0 is -1, below +0.0, and every NaN payload differs.
    """
    dtype = values.dtype
    if dtype.kind == "f":
        bits = 8 * dtype.itemsize
        signed = values.view(f"<i{dtype.itemsize}").astype(np.int64)
        return signed ^ ((signed >> 63) & np.int64((1 << (bits - 1)) - 1))
    if dtype.kind == "u" and dtype.itemsize == 8:
        return values.astype("<u8").view(np.int64) ^ np.int64(-(2**63))
    return values.astype(np.int64)


def from_ordered(ordered: np.ndarray, dtype: np.dtype[Any], what: str) -> np.ndarray:
    """The inverse of :func:`to_ordered` into ``dtype`` (little-endian);
    CorruptChunkError if a value is out of the dtype's range."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype.kind == "f":
        bits = 8 * dtype.itemsize
        signed = ordered ^ ((ordered >> 63) & np.int64((1 << (bits - 1)) - 1))
        ints = np.dtype(f"<i{dtype.itemsize}")
        _check_range(signed, ints, what)
        return signed.astype(ints).view(dtype)
    if dtype.kind == "u" and dtype.itemsize == 8:
        return (ordered ^ np.int64(-(2**63))).view("<u8").astype(dtype)
    _check_range(ordered, dtype, what)
    return ordered.astype(dtype)


def _check_range(values: np.ndarray, dtype: np.dtype[Any], what: str) -> None:
    if dtype.itemsize == 8 or values.size == 0:
        return
    info = np.iinfo(dtype)
    if values.min() < info.min or values.max() > info.max:
        raise CorruptChunkError(f"{what}: decoded values outside {dtype.name}")


def as_4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The (T, B, Y, X) shape in which the range coder sees a chunk of ``shape``: the last
    two axes are Y and X, a third from the end is T (3-D) or B (4-D and more, the axes
    before it merged into T); 1 where a chunk has fewer axes."""
    dims = [int(n) for n in shape]
    x = dims[-1] if dims else 1
    y = dims[-2] if len(dims) >= 2 else 1
    if len(dims) <= 2:
        return 1, 1, y, x
    if len(dims) == 3:
        return dims[0], 1, y, x
    return int(np.prod(dims[:-3])), dims[-3], y, x


def range_code(residuals: np.ndarray, shape: tuple[int, int, int, int]) -> bytes:
    """The range-coder stream of int64 ``residuals`` seen as ``shape`` (T, B, Y, X): one
    band step of 0 and no exceptions."""
    empty = np.zeros(0, np.int64)
    q = np.ascontiguousarray(residuals, dtype=np.int64).reshape(shape)
    return rangecoder.encode(np.zeros(shape[1], np.int64), q, empty, empty)


def range_decode(data: bytes, start: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The int64 residuals of a :func:`range_code` stream from ``start`` to the end of
    ``data`` (flat); CorruptChunkError if it is damaged."""
    step, q, _, _ = rangecoder.decode(data, start, shape, 0)
    if np.any(step):
        raise CorruptChunkError("range-coded stream with a band step other than 0")
    return q


def lorenzo_residuals(ordered: np.ndarray, mask: int) -> np.ndarray:
    """The Lorenzo residuals of an int64 array: a first difference (zero before the first
    element, wrapping modulo 2**64) along every axis whose bit is set in ``mask``."""
    r = ordered
    for axis in range(ordered.ndim):
        if mask >> axis & 1:
            r = np.diff(r, axis=axis, prepend=np.zeros_like(r.take([0], axis=axis)))
    return r


def lorenzo_inverse(residuals: np.ndarray, mask: int) -> np.ndarray:
    """The inverse of :func:`lorenzo_residuals`: cumulative sums, wrapping."""
    u = residuals
    for axis in range(residuals.ndim):
        if mask >> axis & 1:
            u = np.cumsum(u, axis=axis, dtype=np.int64)
    return u


def _estimate(residuals: np.ndarray) -> float:
    # about the bytes of the residuals' magnitudes
    return float(np.log2(np.abs(residuals.astype(np.float64)) + 1.0).sum()) / 8


def _masks(ndim: int) -> list[int]:
    # every axis (smooth fields), the last two only (a stack of images whose steps along
    # the other axes are not smooth), none (small integers)
    full = (1 << ndim) - 1
    masks = [full]
    if ndim > 2:
        masks.append(0b11 << (ndim - 2))
    masks.append(0)
    return masks


def encode_chunk(values: np.ndarray) -> bytes:
    """The payload of one chunk: the smallest of its predicted, raw and zstd forms."""
    values = np.ascontiguousarray(values)
    values = values.astype(values.dtype.newbyteorder("<"))
    raw = values.tobytes()
    candidates = [_RAW + raw, _ZSTD + zstd_frame(raw)]
    if orderable(values.dtype) and 1 <= values.ndim <= _MAX_DIMS and values.size:
        ordered = to_ordered(values)
        shape = as_4d(values.shape)
        fallback = min(len(c) for c in candidates)
        tried = []
        for mask in _masks(values.ndim):
            residuals = lorenzo_residuals(ordered, mask)
            cost = _estimate(residuals)
            # a prediction whose residuals need more bytes than the fallback is not coded
            # (large magnitudes are slow to code)
            if cost < fallback:
                tried.append((cost, mask, residuals))
        if values.size > _TRY_ALL:  # of a big chunk, only the cheapest
            tried = sorted(tried, key=lambda entry: entry[0])[:1]
        for _, mask, residuals in tried:
            candidates.append(_PREDICTED + bytes([mask]) + range_code(residuals, shape))
    return min(candidates, key=len)


def decode_chunk(data: bytes, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """The values of a chunk payload (``dtype`` little-endian, ``shape``).

    Raises
    ------
    CorruptChunkError
        If the payload is truncated, altered or of an unknown kind.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    n = int(np.prod(shape))
    kind = data[:1]
    if kind == _RAW and len(data) == 1 + n * dtype.itemsize:
        return np.frombuffer(data, dtype, offset=1).reshape(shape).copy()
    if kind == _ZSTD:
        raw = unzstd(data[1:], n * dtype.itemsize, CODEC_NAME)
        return np.frombuffer(raw, dtype).reshape(shape).copy()
    if kind == _PREDICTED and len(data) >= 2 and orderable(dtype) and len(shape) <= _MAX_DIMS:
        mask = data[1]
        if mask >> len(shape):
            raise CorruptChunkError(f"{CODEC_NAME}: axis mask {mask:#x} for {len(shape)} axes")
        residuals = range_decode(data, 2, as_4d(shape)).reshape(shape)
        return from_ordered(lorenzo_inverse(residuals, mask), dtype, CODEC_NAME)
    raise CorruptChunkError(
        f"{CODEC_NAME}: a chunk of {len(data)} bytes of kind {kind!r} cannot hold "
        f"{n} values of {dtype.name}"
    )


@dataclass(frozen=True)
class LorenzoCodec(NamedBytesCodec):
    """Store N-D numeric arrays as range-coded Lorenzo residuals (or raw, or zstd)."""

    codec_name = CODEC_NAME

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        payload = encode_chunk(chunk_array.as_numpy_array())
        return chunk_spec.prototype.buffer.from_bytes(payload)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        dtype = np.dtype(chunk_spec.dtype.to_native_dtype())
        values = decode_chunk(chunk_bytes.to_bytes(), dtype, tuple(chunk_spec.shape))
        native: Any = values.astype(dtype.newbyteorder("="))
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(native)
