"""The zarr v3 codec ``eocube.video``: a (T, B, Y, X) chunk as a video payload.

An ArrayBytesCodec wrapping :func:`eocube.chunk.encode_chunk` and
:func:`eocube.chunk.decode_chunk`; in an eocube store it is followed by ``crc32c``
inside ``sharding_indexed``. Registered with zarr by :mod:`eocube.registry`.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

from eocube.chunk import decode_chunk, encode_chunk
from eocube.profiles import DEFAULT_PROFILE, get_profile

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "eocube.video"
DECODE_THREADS = 1
"""Decoder threads per chunk: zarr decodes the chunks of a read concurrently and dask runs
tasks in parallel, so one thread per chunk wins (124 vs 81 MB/s with codec-chosen
threads on 32 x 4 x 64 x 64 Sentinel-2 chunks, 2 cores)."""


def parse_quality(value: Any) -> float | int | None:
    """Validate the codec's ``quality`` (None or a number; integers stay integers)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"quality must be a number or None, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def parse_bound(value: Any) -> float | tuple[float, ...] | None:
    """Validate ``max_abs_error``: None, a number, or one number per band (each >= 0)."""
    if value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        bounds: tuple[float, ...] = (float(value),)
    else:
        bounds = tuple(float(v) for v in value)
    if not bounds or not all(math.isfinite(b) and b >= 0 for b in bounds):
        raise ValueError(f"max_abs_error must be finite numbers >= 0, got {value!r}")
    return bounds[0] if len(bounds) == 1 and not isinstance(value, list | tuple) else bounds


def parse_nodata(value: Any) -> float | None:
    """Validate the codec's ``nodata`` (None or a finite number)."""
    if value is None:
        return None
    value = float(value)
    if value != value:
        return None
    return value


@dataclass(frozen=True)
class VideoCodec(ArrayBytesCodec):
    """Encode each chunk as video through a codec profile (see ``eocube profiles``).

    Parameters
    ----------
    profile : str
        Codec profile name.
    quality : float, optional
        The profile's quality option (crf); None for the profile's default.
    nodata : float, optional
        Value marking missing data, restored exactly; also the array's fill value, so
        that the padding of partial edge chunks costs almost no bits.
    max_abs_error : float or sequence of float, optional
        A hard bound on the absolute error of every valid value (one per band, or one
        for all), kept by a residual layer over the video.
    """

    is_fixed_size = False

    profile: str
    quality: float | int | None
    nodata: float | None
    max_abs_error: float | tuple[float, ...] | None

    def __init__(
        self,
        *,
        profile: str = DEFAULT_PROFILE,
        quality: float | None = None,
        nodata: float | None = None,
        max_abs_error: float | list[float] | tuple[float, ...] | None = None,
    ) -> None:
        prof = get_profile(profile)
        quality = parse_quality(quality)
        prof.encoder_options(quality)  # validates quality against the profile
        object.__setattr__(self, "profile", prof.name)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "nodata", parse_nodata(nodata))
        object.__setattr__(self, "max_abs_error", parse_bound(max_abs_error))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the codec from its zarr metadata."""
        if data.get("name") != CODEC_NAME:
            raise ValueError(f"not an {CODEC_NAME} codec: {data!r}")
        return cls(**data.get("configuration", {}))

    def to_dict(self) -> dict[str, Any]:
        """The codec's zarr metadata (nulls left out to keep metadata small)."""
        config: dict[str, Any] = {"profile": self.profile}
        if self.quality is not None:
            config["quality"] = self.quality
        if self.nodata is not None:
            config["nodata"] = self.nodata
        if self.max_abs_error is not None:
            bound = self.max_abs_error
            config["max_abs_error"] = list(bound) if isinstance(bound, tuple) else bound
        return {"name": CODEC_NAME, "configuration": config}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        block = decode_chunk(chunk_bytes.to_bytes(), threads=DECODE_THREADS, shape=chunk_spec.shape)
        expected = chunk_spec.dtype.to_native_dtype()
        if block.dtype != expected:
            block = block.astype(expected)
        shaped: Any = block.reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(shaped)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        block = np.ascontiguousarray(chunk_array.as_numpy_array())
        payload = encode_chunk(
            block,
            self.profile,
            quality=self.quality,
            nodata=self.nodata,
            max_abs_error=self.max_abs_error,
        )
        return chunk_spec.prototype.buffer.from_bytes(payload)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known before encoding: the codec has a variable size."""
        raise NotImplementedError(f"{CODEC_NAME} produces variable-size payloads")
