"""The zarr plumbing of eocube's lossless array-to-bytes codecs that take no configuration.

``eocube.linear``, ``eocube.lorenzo`` and ``eocube.labels`` are each written in zarr
metadata as ``{"name": ...}`` alone, code a chunk on a worker thread (their kernels
release the GIL or are short) and produce payloads of variable size. A codec subclasses
:class:`NamedBytesCodec`, sets :attr:`~NamedBytesCodec.codec_name` and implements
``_encode_sync`` and ``_decode_sync``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from zarr.abc.codec import ArrayBytesCodec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer


@dataclass(frozen=True)
class NamedBytesCodec(ArrayBytesCodec):
    """An array-to-bytes codec known by its name only, of variable-size payloads."""

    codec_name: ClassVar[str]
    """The codec's name in zarr metadata (and in its entry point)."""
    is_fixed_size = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the codec from its zarr metadata."""
        if data.get("name") != cls.codec_name:
            raise ValueError(f"not an {cls.codec_name} codec: {data!r}")
        return cls()

    def to_dict(self) -> dict[str, Any]:
        """The codec's zarr metadata."""
        return {"name": self.codec_name}

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise NotImplementedError

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        raise NotImplementedError

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known before encoding: the codec has a variable size."""
        raise NotImplementedError(f"{self.codec_name} produces variable-size payloads")
