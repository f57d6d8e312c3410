"""Unpacking chunk payloads on a torch device: the block as a tensor where it is used.

:func:`eocube.chunk.decode_chunk` decodes a payload into a NumPy block on the CPU. Here
the same payload becomes a torch tensor on any device: the payload is parsed on the CPU
(:func:`eocube.chunk.parse_chunk`: header, streams, masks, the range-coded residual
layer), the video streams are decoded by a stream decoder that hands back the frames'
code planes as a tensor (NVDEC's, :mod:`eocube.gpu`, keeps them on the GPU; the CPU's
uploads them), and everything after the codec runs in torch on the tensor's device:
dequantisation per band, the inverse KLT (:func:`eocube.spectral.mix`), mask fills,
the residual layer, cropping and filling a cropped payload's block.

The result is bit-identical to :func:`eocube.chunk.decode_chunk`: the float64
arithmetic follows the CPU kernels' operation order exactly, with one torch operation
per multiplication and per addition (a fused multiply-add, as ``torch.add(alpha=)`` or
a fused CUDA kernel may make, rounds once where the CPU rounds twice)::

    value = offset[b] + code * scale[b]                      (no KLT)
    row = shift[b]; row += matrix[b, k] * code[k] for k      (KLT, k in order)
    integers: floor(value + 0.5), clipped; floats: cast

:class:`CFDecoding` applies a variable's CF decoding (``_FillValue``/``missing_value``
to NaN, ``scale_factor``, ``add_offset``) to such tensors as xarray does it on the CPU.

torch is imported when first needed: importing this module costs nothing without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from eocube import chunk, mosaic, packing, spectral, video
from eocube.pixfmt import pixel_format

if TYPE_CHECKING:
    import torch

StreamDecoder = Callable[..., "torch.Tensor"]
"""Decodes a stream to its frames' code planes: ``decoder(stream, device, threads=)``
returns an integer tensor of shape (frames, data planes, H, W) on ``device`` with
``H >= stream.height`` rows and ``W >= stream.width`` columns of which the first are the
frame (the rest is ignored)."""

_TORCH_DTYPES = {
    "uint8": "uint8",
    "uint16": "uint16",
    "int16": "int16",
    "int32": "int32",
    "float32": "float32",
    "float64": "float64",
}


def torch_dtype(dtype: np.dtype | str) -> torch.dtype:
    """The torch dtype of a NumPy dtype eocube codes (uint16 included)."""
    import torch

    name = np.dtype(dtype).name
    try:
        found: torch.dtype = getattr(torch, _TORCH_DTYPES[name])
    except KeyError:
        raise TypeError(f"no torch dtype for {name}") from None
    return found


def as_tensor(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A NumPy array (any eocube dtype) as a tensor on ``device`` (a copy)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(device, copy=True)


def cpu_stream_decoder(
    stream: video.EncodedStream, device: torch.device | str, *, threads: int = 0
) -> torch.Tensor:
    """The CPU's :data:`StreamDecoder`: FFmpeg decodes, the codes are uploaded once."""
    import torch

    planes = [np.stack(frame) for frame in video.decode_frames(stream, threads=threads)]
    codes = np.stack(planes) if planes else np.zeros((0, 1, stream.height, stream.width))
    return torch.from_numpy(codes).to(device)


def _f64(values: Any, device: torch.device, shape: tuple[int, ...]) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.asarray(values, np.float64), device=device).reshape(shape)


def unpack_mask(bits: np.ndarray, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A packed mask (:class:`eocube.chunk.ChunkTail`) as a bool tensor: bits travel."""
    import torch

    size = int(np.prod(shape, dtype=np.int64))
    packed = torch.from_numpy(np.array(bits, np.uint8)).to(device)
    shifts = torch.arange(7, -1, -1, device=device, dtype=torch.uint8)
    flat = ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[:size]
    return flat.to(torch.bool).reshape(shape)


def _small_ints(q: np.ndarray) -> np.ndarray:
    """``q`` in the narrowest signed integer dtype that holds it (fewer bytes to upload)."""
    if q.size == 0:
        return q.astype(np.int8)
    lo, hi = int(q.min()), int(q.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return q.astype(dtype)
    return q.astype(np.int64)


def gather_codes(
    parts: chunk.ChunkParts, frames: list[torch.Tensor], device: torch.device
) -> torch.Tensor:
    """The int32 code planes of a payload from its streams' frame tensors: (T * B, Y, X),
    (Y * B, T, X) when its frames are rows, (T * B, X, Y) when they are transposed, with
    T frames of ``rows * Y`` x ``cols * X`` for a mosaic (``header.stream_shape``)."""
    import torch

    T, B, Y, X = parts.header.stream_shape
    codes = torch.empty((T * B, Y, X), dtype=torch.int32, device=device)
    for plan, stream, decoded in zip(parts.plans, parts.streams, frames, strict=True):
        n, per_frame = plan.sources.shape
        if (
            decoded.ndim != 4
            or decoded.shape[0] != n
            or decoded.shape[1] != per_frame
            or decoded.shape[2] < Y
            or decoded.shape[3] < X
        ):
            raise chunk.CorruptChunkError(
                f"decoded frames of shape {tuple(decoded.shape)} do not match the {n} frames "
                f"of {per_frame} planes of {stream.height}x{stream.width} of the stream"
            )
        planes = decoded[:, :, :Y, :X].to(device=device, dtype=torch.int32)
        flat = plan.sources.reshape(-1).astype(np.int64)
        planes = planes.reshape(n * per_frame, Y, X)
        holds = flat != packing.CONSTANT_PLANE
        if not holds.all():  # a leftover pair's constant third planes hold no band
            planes = planes[torch.as_tensor(np.flatnonzero(holds), device=device)]
            flat = flat[holds]
        codes.index_copy_(0, torch.as_tensor(flat, device=device), planes)
    return codes


def unpack(parts: chunk.ChunkParts, codes: torch.Tensor) -> torch.Tensor:
    """The block of a parsed payload from its code planes, on the codes' device.

    Parameters
    ----------
    parts : eocube.chunk.ChunkParts
        The parsed payload (:func:`eocube.chunk.parse_chunk`).
    codes : torch.Tensor
        (T * B, Y, X) integer code planes of the coded part, plane ``t * B + b`` at
        index ``t * B + b`` (:func:`gather_codes`); (Y * B, T, X) when the payload's
        frames are rows, (T * B, X, Y) when they are transposed; for a mosaic, planes of
        its frames (``header.stream_shape``).

    Returns
    -------
    torch.Tensor
        The block, of the payload's full shape (T, B, Y, X) and dtype, bit-identical to
        :func:`eocube.chunk.decode_chunk`.
    """
    import torch

    header = parts.header
    device = codes.device
    T, B, Y, X = header.coded_shape
    dtype = np.dtype(header.dtype)
    integer = dtype.kind in "iu"
    per_band = (1, B, 1, 1)
    c = codes.reshape(header.stream_shape).to(torch.float64)
    if header.time_in_frame:  # the streams' frames are rows: back to (T, B, Y, X)
        c = c.permute(2, 1, 0, 3)
    elif header.transposed:  # the streams' frames hold X rows of Y: back to (T, B, Y, X)
        c = c.permute(0, 1, 3, 2)
    if header.mosaic is not None:  # several dates a frame: back to one date each
        c = mosaic.untile(c, header.mosaic, T)
    if header.spectral is None:
        # offset + code * scale: the product rounded, then the sum
        value = c * _f64(header.scale, device, per_band)
        value = value + _f64(header.offset, device, per_band)
        if integer:
            info = np.iinfo(dtype)
            value = torch.floor(value + 0.5).clamp_(float(info.min), float(info.max))
    else:
        shift, matrix = spectral.decoding_map(header.spectral, header.offset, header.scale)
        top = header.offset + header.scale * ((1 << header.bits) - 1)
        value = _f64(shift, device, per_band).expand(T, B, Y, X)
        for k in range(B):
            # row += matrix[b, k] * code_k: each product rounded, then added, k in order
            value = value + _f64(matrix[:, k], device, per_band) * c[:, k : k + 1]
        if integer:
            value = torch.floor(value + 0.5)
        value = torch.minimum(
            torch.maximum(value, _f64(header.offset, device, per_band)), _f64(top, device, per_band)
        )
    # integers are worked on as int64 (the residual's arithmetic), cast at the end
    work_dtype = torch.int64 if integer else torch_dtype(dtype)
    block = value.to(work_dtype)
    for kind, bits in parts.tail.masks:
        mask = unpack_mask(bits, (T, B, Y, X), device)
        fill = float("nan") if kind == chunk._MASK_NAN else header.nodata
        assert fill is not None
        block = block.masked_fill(mask, int(fill) if integer else fill)
    layer = parts.tail.residual
    if layer is not None:
        q = torch.from_numpy(_small_ints(np.asarray(layer.q))).to(device).to(torch.int64)
        if integer:
            info = np.iinfo(dtype)
            step = torch.as_tensor(layer.step.astype(np.int64), device=device).reshape(per_band)
            block = (block + q * step).clamp_(int(info.min), int(info.max))
        else:
            step64 = _f64(layer.step, device, per_band)
            block = (block.to(torch.float64) + q.to(torch.float64) * step64).to(work_dtype)
        if layer.exception_index.size:
            index = torch.as_tensor(layer.exception_index.astype(np.int64), device=device)
            values = as_tensor(np.asarray(layer.exception_value, dtype), device).to(work_dtype)
            block = block.reshape(-1).index_copy(0, index, values).reshape(T, B, Y, X)
    if header.coded is not None:
        assert header.fill is not None
        fill_value: float | int = int(header.fill) if integer else float(header.fill)
        out = torch.full(header.shape, fill_value, dtype=work_dtype, device=device)
        out[:T, :, :Y, :X] = block
        block = out
    return block.to(torch_dtype(dtype)).contiguous()


def decode_chunk_tensor(
    payload: bytes,
    device: torch.device | str = "cpu",
    *,
    stream_decoder: StreamDecoder | None = None,
    threads: int = 0,
) -> torch.Tensor:
    """Decode a chunk payload into a tensor on ``device``: :func:`eocube.chunk.decode_chunk`
    with the unpacking in torch.

    Parameters
    ----------
    payload : bytes
        As written by :func:`eocube.chunk.encode_chunk`.
    device : torch.device or str
        Where the block is made (``"cuda"``, ``"cpu"``, ...).
    stream_decoder : callable, optional
        A :data:`StreamDecoder` (default: the CPU's, :func:`cpu_stream_decoder`;
        :class:`eocube.gpu.NvdecDecoder` has one that keeps the frames on the GPU).
    threads : int
        Codec threads of the CPU decoder.

    Returns
    -------
    torch.Tensor
        The block (T, B, Y, X), of the payload's dtype, bit-identical to
        :func:`eocube.chunk.decode_chunk`.

    Raises
    ------
    CorruptChunkError
        As :func:`eocube.chunk.decode_chunk`.
    """
    import torch

    dev = torch.device(device)
    parts = chunk.parse_chunk(payload)
    if parts.header.wavelet:
        # the wavelet coder (SPERR) decodes on the CPU only: its block is moved as a whole
        return as_tensor(chunk.decode_chunk(payload, threads=threads), dev)
    decode = stream_decoder if stream_decoder is not None else cpu_stream_decoder
    frames = []
    for plan, stream in zip(parts.plans, parts.streams, strict=True):
        decoded = decode(stream, dev, threads=threads)
        expected = (plan.frames, pixel_format(stream.pix_fmt).data_planes)
        if tuple(decoded.shape[:2]) != expected:
            raise chunk.CorruptChunkError(
                f"decoder returned frames of shape {tuple(decoded.shape)} for a stream of "
                f"{expected[0]} frames of {expected[1]} planes"
            )
        frames.append(decoded)
    return unpack(parts, gather_codes(parts, frames, dev))


# --- CF decoding ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CFDecoding:
    """A variable's CF decoding, applied to torch tensors as xarray applies it to arrays.

    xarray decodes a stored variable in two steps (``xarray.coding.variables``): values
    equal to ``_FillValue`` or ``missing_value`` become NaN (after a cast to a float
    dtype that holds them), then ``value * scale_factor + add_offset`` (each in place,
    in NumPy's type of the operation, cast back). The steps, the dtypes and the
    scalars' types are taken from xarray itself, and replayed here in the same order.

    Build it with :meth:`from_encoding` from the opened variable's ``encoding``.
    """

    raw_dtype: np.dtype
    fill_values: tuple[float, ...] = ()
    mask_dtype: np.dtype | None = None
    scale_dtype: np.dtype | None = None
    scale_factor: Any = None
    add_offset: Any = None

    @property
    def identity(self) -> bool:
        """Whether decoding changes nothing."""
        return self.mask_dtype is None and self.scale_dtype is None

    @property
    def dtype(self) -> np.dtype:
        """The decoded dtype."""
        if self.scale_dtype is not None:
            return self.scale_dtype
        return self.mask_dtype if self.mask_dtype is not None else self.raw_dtype

    @classmethod
    def from_encoding(
        cls, encoding: Mapping[str, Any], raw_dtype: np.dtype | str, name: Any = None
    ) -> CFDecoding:
        """The decoding xarray applied to a variable stored as ``raw_dtype`` whose
        decoded ``encoding`` holds these CF attributes (``_FillValue``, ``missing_value``,
        ``scale_factor``, ``add_offset``)."""
        from xarray.coding.variables import _check_fill_values, _choose_float_dtype
        from xarray.core import dtypes

        raw = np.dtype(raw_dtype)
        if "_Unsigned" in encoding:
            raise NotImplementedError("_Unsigned is not decoded on the device")
        attrs = {k: encoding[k] for k in ("_FillValue", "missing_value") if k in encoding}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        packing = {k: encoding.get(k) for k in ("scale_factor", "add_offset")}
        packed = any(v is not None for v in packing.values())
        fills: tuple[float, ...] = ()
        mask_dtype = None
        if attrs:
            _, encoded = _check_fill_values(dict(attrs), name, raw)
            fills = (
                tuple(float(v) for v in np.asarray(list(encoded)).reshape(-1)) if encoded else ()
            )
            if fills:
                if packed:
                    mask_dtype = np.dtype(_choose_float_dtype(raw, {**attrs, **packing}))
                else:
                    mask_dtype = np.dtype(dtypes.maybe_promote(raw)[0])
        scale_dtype = None
        scale_factor: Any = None
        add_offset: Any = None
        if packed:
            scale_factor, add_offset = packing["scale_factor"], packing["add_offset"]
            if scale_factor is not None and np.ndim(scale_factor) > 0:
                scale_factor = np.asarray(scale_factor).item()
            if add_offset is not None and np.ndim(add_offset) > 0:
                add_offset = np.asarray(add_offset).item()
            if mask_dtype is not None:
                scale_dtype = mask_dtype
            else:
                scale_dtype = np.dtype(_choose_float_dtype(raw, packing))
        return cls(
            raw_dtype=raw,
            fill_values=fills,
            mask_dtype=mask_dtype,
            scale_dtype=scale_dtype,
            scale_factor=scale_factor,
            add_offset=add_offset,
        )

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        """The decoded values of ``raw`` (stored values, of :attr:`raw_dtype`)."""
        import torch

        data = raw
        if self.mask_dtype is not None:
            data = data.to(torch_dtype(self.mask_dtype), copy=True)
            if self.fill_values:
                wide = data.to(torch.float64)
                hit = torch.zeros_like(data, dtype=torch.bool)
                for value in self.fill_values:
                    hit |= wide == value
                data = data.masked_fill(hit, float("nan"))
        if self.scale_dtype is not None:
            dtype = self.scale_dtype
            data = data.to(torch_dtype(dtype), copy=True)
            steps: tuple[tuple[Any, Any], ...] = (
                (self.scale_factor, torch.mul),
                (self.add_offset, torch.add),
            )
            for scalar, op in steps:
                if scalar is None:
                    continue
                # NumPy's in-place ``data op= scalar``: computed in the operation's type
                # (NEP 50: a Python float takes the array's), cast back
                common = np.result_type(dtype, scalar)
                operand = torch.as_tensor(np.asarray(scalar, common), device=data.device)
                data = op(data.to(torch_dtype(common)), operand).to(torch_dtype(dtype))
        return data


__all__ = [
    "CFDecoding",
    "StreamDecoder",
    "as_tensor",
    "cpu_stream_decoder",
    "decode_chunk_tensor",
    "gather_codes",
    "torch_dtype",
    "unpack",
    "unpack_mask",
]
