"""Decoding chunk payloads on NVIDIA GPUs (NVDEC), with the CPU as the fallback.

The video streams of a payload are decoded on NVDEC through PyAV, either by the FFmpeg
decoder with the CUDA hardware accelerator (``HWAccel("cuda")``, method ``"hwaccel"``)
or by FFmpeg's CUVID wrapper (``hevc_cuvid``, method ``"cuvid"``). NVDEC returns
high-bit-depth samples MSB-aligned in 16 bits (P016, YUV444P16): they are shifted back
to the stream's bit depth, so the codes equal those of the CPU decoder, and the rest of
:func:`eocube.chunk.decode_chunk` (dequantisation, masks, residual) runs unchanged.

NVDEC cannot decode everything (monochrome HEVC, frames under 144 px a side, AV1 on
A100/H100, ...): such streams, and every stream on a machine without a usable GPU, are
decoded on the CPU; :class:`NvdecDecoder` reports the first fallback through a callback.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from eocube import chunk, video
from eocube.errors import GPUFallbackWarning, NvdecError
from eocube.pixfmt import pixel_format

METHODS = ("hwaccel", "cuvid")
"""NVDEC access paths, tried in this order by ``method="auto"``."""

# NVDEC hands 10/12-bit samples MSB-aligned in 16-bit words; 8-bit as is.
_SHIFTED = {"p010le", "p016le", "yuv444p16le", "yuv420p16le"}
_NV_8BIT = {"nv12", "yuv444p"}
_CUVID = {"hevc": "hevc_cuvid", "h264": "h264_cuvid", "libdav1d": "av1_cuvid", "vp9": "vp9_cuvid"}


def _planes(frame: Any, stream: video.EncodedStream) -> list[np.ndarray]:
    """The data planes of a (downloaded) NVDEC frame as ``uint8``/``uint16`` codes."""
    fmt = pixel_format(stream.pix_fmt)
    got = frame.format.name
    if frame.width < stream.width or frame.height < stream.height:
        raise NvdecError(
            f"NVDEC frame {frame.width}x{frame.height} < {stream.width}x{stream.height}"
        )
    n = fmt.data_planes
    if got in _SHIFTED:
        shift = 16 - fmt.bits
        out = []
        for plane in list(frame.planes)[:n]:
            view = np.frombuffer(plane, np.dtype("<u2")).reshape(-1, plane.line_size // 2)
            out.append(view[: stream.height, : stream.width] >> shift)
        return out
    if got in _NV_8BIT and fmt.itemsize == 1:
        return [
            np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: stream.height, : stream.width]
            for p in list(frame.planes)[:n]
        ]
    raise NvdecError(f"NVDEC returned {got} for a {stream.pix_fmt} stream")


# FFmpeg's CUDA device: the device's primary context (the one torch uses), retained rather
# than created per decoder. FFmpeg wants it with CU_CTX_SCHED_BLOCKING_SYNC and refuses it
# (ENOTSUP) when torch made it first with other flags: then FFmpeg takes the context that
# torch makes current on this thread.
_PRIMARY = {"primary_ctx": "1"}
_CURRENT = {"primary_ctx": "0", "current_ctx": "1"}


def _torch_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _torch_context_current(device: int) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():
        return False
    torch.cuda.set_device(device)  # makes (and binds to this thread) the primary context
    return True


def _open(name: str, device: int, hw_owned: bool) -> Any:
    import av
    from av.codec.hwaccel import HWAccel

    # torch may make the primary context at any time (and FFmpeg releases it when its last
    # decoder closes): ask for the current one first once torch has made it
    tries = [_CURRENT, _PRIMARY] if _torch_initialized() else [_PRIMARY, _CURRENT]
    error: Exception | None = None
    for options in tries:
        if options is _CURRENT and not _torch_context_current(device):
            break
        hw = HWAccel(
            "cuda",
            device=str(device) if device else None,
            allow_software_fallback=False,
            is_hw_owned=hw_owned,
            options=dict(options),
        )
        try:
            ctx = av.codec.CodecContext.create(name, "r", hwaccel=hw)
        except Exception as exc:  # PermissionError, OSError, FFmpegError... without a GPU
            error = exc
            continue
        return ctx
    assert error is not None
    raise error


def _context(stream: video.EncodedStream, method: str, device: int, hw_owned: bool = False) -> Any:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    name = stream.decoder if method == "hwaccel" else _CUVID.get(stream.decoder)
    if name is None:
        raise NvdecError(f"no CUVID decoder for {stream.decoder}")
    try:
        ctx = _open(name, device, hw_owned)
        if method == "hwaccel" and not ctx.is_hwaccel:
            raise NvdecError(f"FFmpeg's {name} decoder has no CUDA configuration")
        if stream.extradata:
            ctx.extradata = stream.extradata
        ctx.width, ctx.height = stream.width, stream.height
        ctx.thread_count = 1
    except NvdecError:
        raise
    except Exception as exc:
        raise NvdecError(f"cannot open NVDEC ({method}) for {stream.decoder}: {exc!r}") from exc
    return ctx


def _packets(stream: video.EncodedStream) -> Iterator[Any]:
    import av

    for payload in stream.packets:
        yield av.Packet(payload)
    yield None


class NvdecSession:
    """Decoder contexts kept open between streams of the same kind.

    Opening an NVDEC decoder costs about 0.3 s (measured on an H200), far more than
    decoding a chunk: a session keeps one context per (method, decoder, pixel format,
    size, extradata) and resets it between streams (``avcodec_flush_buffers``).
    """

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._idle: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _take(self, stream: video.EncodedStream, method: str, hw_owned: bool) -> tuple[Any, Any]:
        key: tuple[Any, ...] = (method, hw_owned, stream.decoder, stream.pix_fmt)
        key = (*key, stream.width, stream.height, stream.extradata)
        with self._lock:
            ctx = self._idle.pop(key, None)
        return key, ctx if ctx is not None else _context(stream, method, self.device, hw_owned)

    def _give(self, key: tuple[Any, ...], ctx: Any) -> None:
        ctx.flush_buffers()
        with self._lock:
            self._idle.setdefault(key, ctx)

    def frames(
        self, stream: video.EncodedStream, method: str, hw_owned: bool = False
    ) -> Iterator[Any]:
        """Decoded frames of ``stream`` (the context returns to the session at the end)."""
        key, ctx = self._take(stream, method, hw_owned)
        count = 0
        try:
            for packet in _packets(stream):
                for frame in ctx.decode(packet):
                    count += 1
                    yield frame
        except NvdecError:
            raise
        except Exception as exc:
            raise NvdecError(
                f"NVDEC ({method}) failed on a {stream.pix_fmt} stream: {exc!r}"
            ) from exc
        if count != stream.frames:
            raise NvdecError(
                f"NVDEC ({method}) returned {count} frames, {stream.frames} were encoded"
            )
        self._give(key, ctx)

    def decode(
        self, stream: video.EncodedStream, method: str = "hwaccel"
    ) -> list[list[np.ndarray]]:
        """Each frame's data planes, as host arrays of codes."""
        return [[np.array(p) for p in _planes(f, stream)] for f in self.frames(stream, method)]

    def decode_to_torch(self, stream: video.EncodedStream) -> list[Any]:
        """Each frame's luma codes as an ``int32`` CUDA tensor, through DLPack (4:2:0 only)."""
        import torch

        fmt = pixel_format(stream.pix_fmt)
        if fmt.data_planes != 1:
            raise NvdecError(f"DLPack export covers 4:2:0 streams only, not {stream.pix_fmt}")
        shift = 16 - fmt.bits if fmt.itemsize == 2 else 0
        out = []
        for frame in self.frames(stream, "hwaccel", hw_owned=True):
            try:
                # torch.from_dlpack would pass a CUDA stream, which PyAV refuses: take the
                # capsule (FFmpeg and torch share the legacy default stream, which orders
                # FFmpeg's copy into the frame before torch's reads)
                plane = torch.utils.dlpack.from_dlpack(frame.planes[0].__dlpack__())
                codes = plane[: stream.height, : stream.width].to(torch.int32)
            except Exception as exc:
                raise NvdecError(f"DLPack export failed: {exc!r}") from exc
            out.append(codes >> shift if shift else codes)
        return out


def decode_stream(
    stream: video.EncodedStream, *, method: str = "hwaccel", device: int = 0
) -> list[list[np.ndarray]]:
    """Decode a whole stream on NVDEC (a fresh decoder); each frame's planes as host arrays.

    Raises
    ------
    NvdecError
        When NVDEC cannot decode the stream (the caller decodes it on the CPU).
    """
    return NvdecSession(device).decode(stream, method)


def decode_stream_to_torch(stream: video.EncodedStream, *, device: int = 0) -> list[Any]:
    """Decode a 4:2:0 stream on NVDEC, frames kept on the GPU and handed to torch by DLPack.

    Returns one ``(height, width)`` ``torch.int32`` CUDA tensor of codes per frame (the
    luma plane). PyAV exports CUDA frames through DLPack for NV12/P010/P016 only, so
    4:4:4 streams raise :class:`NvdecError` (use :func:`decode_stream`).
    """
    return NvdecSession(device).decode_to_torch(stream)


class NvdecDecoder:
    """A frame decoder for :func:`eocube.chunk.decode_chunk` that uses NVDEC where it can.

    Called like :func:`eocube.video.decode_frames`. Streams NVDEC cannot take (monochrome
    leftover streams, small frames, no GPU) are decoded on the CPU; a failure that comes
    from the machine (no GPU, no driver) turns NVDEC off for this decoder. ``on_fallback``
    is called with a message the first time a stream goes to the CPU for a reason.

    Parameters
    ----------
    method : {"auto", "hwaccel", "cuvid"}
        NVDEC access path; ``"auto"`` keeps the first of :data:`METHODS` that works.
    device : int
        CUDA device ordinal.
    on_fallback : callable, optional
        Receives a message once per distinct reason.
    """

    def __init__(
        self,
        *,
        method: str = "auto",
        device: int = 0,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        if method != "auto" and method not in METHODS:
            raise ValueError(f"method must be 'auto' or one of {METHODS}, got {method!r}")
        self.methods = list(METHODS) if method == "auto" else [method]
        self.device = device
        self.on_fallback = on_fallback
        self.enabled = True
        self.gpu_frames = 0
        self.cpu_frames = 0
        self._reasons: set[str] = set()
        self._unsupported: set[tuple[str, str, int, int]] = set()
        self._lock = threading.Lock()
        self.session = NvdecSession(device)

    def _fallback(self, reason: str, message: str) -> None:
        with self._lock:
            new = reason not in self._reasons
            self._reasons.add(reason)
        if new and self.on_fallback is not None:
            self.on_fallback(message)

    def __call__(
        self, stream: video.EncodedStream, *, threads: int = 0, **options: Any
    ) -> Iterator[list[np.ndarray]]:
        """Yield each frame's data planes, decoded on NVDEC or else on the CPU.

        NVDEC planes are C-contiguous copies of exactly the frame; ``threads`` and the
        other options of :func:`eocube.video.decode_frames` serve the CPU decoder.
        """
        fmt = pixel_format(stream.pix_fmt)
        # monochrome HEVC (the gray stream of leftover bands) is no NVDEC format: the
        # profiles say so, and the CPU decodes it without a warning
        mono = not fmt.chroma_subsampled and fmt.data_planes == 1
        kind = (stream.decoder, stream.pix_fmt, stream.width, stream.height)
        if self.enabled and not mono and kind not in self._unsupported:
            errors = []
            for method in list(self.methods):
                try:
                    frames = self.session.decode(stream, method)
                except NvdecError as exc:
                    errors.append(str(exc))
                    continue
                if len(self.methods) > 1:
                    self.methods = [method]  # keep the path that works
                self.gpu_frames += len(frames)
                yield from frames
                return
            detail = "; ".join(errors)
            if not nvdec_available(self.device):
                self.enabled = False
                self._fallback(
                    "device", f"NVDEC is not usable here ({detail}): decoding on the CPU"
                )
            else:
                self._unsupported.add(kind)  # the chunks of a cube share it: ask once
                self._fallback(
                    f"stream:{stream.decoder}:{stream.pix_fmt}",
                    f"NVDEC cannot decode this {stream.pix_fmt} {stream.width}x{stream.height} "
                    f"stream ({detail}): decoding it on the CPU",
                )
        for planes in video.decode_frames(stream, threads=threads, **options):
            self.cpu_frames += 1
            yield planes


_AVAILABLE: dict[int, bool] = {}


def nvdec_available(device: int = 0) -> bool:
    """Whether PyAV can open a CUDA device for decoding (cached per process)."""
    if device not in _AVAILABLE:
        try:
            from av.codec.hwaccel import hwdevices_available

            if "cuda" not in hwdevices_available():
                raise NvdecError("PyAV's FFmpeg has no CUDA support")
            _AVAILABLE[device] = bool(_open("hevc", device, False).is_hwaccel)
        except Exception:  # PermissionError, OSError, FFmpegError, NvdecError: no device
            _AVAILABLE[device] = False
    return _AVAILABLE[device]


def decode_chunk_with(
    payload: bytes, frame_decoder: Callable[..., Iterator[list[np.ndarray]]], *, threads: int = 1
) -> np.ndarray:
    """:func:`eocube.chunk.decode_chunk` with the video frames decoded by ``frame_decoder``."""
    return chunk.decode_chunk(payload, threads=threads, frame_decoder=frame_decoder)


__all__ = [
    "METHODS",
    "GPUFallbackWarning",
    "NvdecDecoder",
    "NvdecError",
    "NvdecSession",
    "decode_chunk_with",
    "decode_stream",
    "decode_stream_to_torch",
    "nvdec_available",
]
