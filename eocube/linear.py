"""The zarr v3 codec ``eocube.linear``: a regular 1-D axis as its start and step.

Coordinates of raster cubes are mostly arithmetic sequences (pixel centres, daily
dates); storing them as two numbers makes them nearly free. A chunk that is not
exactly ``start + arange(n) * step`` in its own dtype is stored as raw bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

from eocube.errors import CorruptChunkError

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "eocube.linear"
_LINEAR = b"L"
_RAW = b"R"


def is_regular(values: np.ndarray) -> bool:
    """Whether the codec stores ``values`` (a 1-D numeric axis) as its start and step."""
    return _arithmetic(np.asarray(values)) is not None


def _arithmetic(values: np.ndarray) -> tuple[Any, Any] | None:
    if values.ndim != 1 or values.size < 2 or values.dtype.kind not in "iuf":
        return None
    start = values[0]
    step = values[1] - values[0]
    rebuilt = start + np.arange(values.size, dtype=values.dtype) * step
    # bitwise equality, so -0.0 and NaN payloads are not smoothed over
    if rebuilt.dtype == values.dtype and rebuilt.tobytes() == values.tobytes():
        return start, step
    return None


@dataclass(frozen=True)
class LinearCodec(ArrayBytesCodec):
    """Store 1-D arithmetic sequences as (start, step), anything else as raw bytes."""

    is_fixed_size = False

    def __init__(self) -> None:
        pass

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the codec from its zarr metadata."""
        if data.get("name") != CODEC_NAME:
            raise ValueError(f"not an {CODEC_NAME} codec: {data!r}")
        return cls()

    def to_dict(self) -> dict[str, Any]:
        """The codec's zarr metadata."""
        return {"name": CODEC_NAME}

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        values = np.ascontiguousarray(chunk_array.as_numpy_array())
        values = values.astype(values.dtype.newbyteorder("<"))
        found = _arithmetic(values.reshape(-1)) if values.ndim == 1 else None
        if found is None:
            payload = _RAW + values.tobytes()
        else:
            pair = np.array(found, dtype=values.dtype)
            payload = _LINEAR + pair.tobytes()
        return chunk_spec.prototype.buffer.from_bytes(payload)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        data = chunk_bytes.to_bytes()
        dtype = np.dtype(chunk_spec.dtype.to_native_dtype()).newbyteorder("<")
        n = int(np.prod(chunk_spec.shape))
        kind, body = data[:1], data[1:]
        if kind == _LINEAR and len(body) == 2 * dtype.itemsize:
            start, step = np.frombuffer(body, dtype=dtype)
            values = start + np.arange(n, dtype=dtype) * step
        elif kind == _RAW and len(body) == n * dtype.itemsize:
            values = np.frombuffer(body, dtype=dtype).copy()
        else:
            raise CorruptChunkError(
                f"{CODEC_NAME}: chunk of {len(data)} bytes cannot hold {n} values"
            )
        native = values.astype(dtype.newbyteorder("="))
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(native.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known before encoding: the codec has a variable size."""
        raise NotImplementedError(f"{CODEC_NAME} produces variable-size payloads")
