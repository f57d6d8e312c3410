"""Decoding chunk payloads on NVIDIA GPUs (NVDEC), with the CPU as the fallback.

The video streams of a payload are decoded on NVDEC through PyAV, either by the FFmpeg
decoder with the CUDA hardware accelerator (``HWAccel("cuda")``, method ``"hwaccel"``)
or by FFmpeg's CUVID wrapper (``hevc_cuvid``, method ``"cuvid"``). NVDEC returns
high-bit-depth samples MSB-aligned in 16 bits (P016, YUV444P16): they are shifted back
to the stream's bit depth, so the codes equal those of the CPU decoder, and the rest of
:func:`eocube.chunk.decode_chunk` (dequantisation, masks, residual) runs unchanged.

Decoder contexts come from a process-wide :class:`SessionPool` (:func:`default_pool`):
opened once per kind of stream and reused across chunks, cubes and epochs, at most
:data:`DEFAULT_MAX_SESSIONS` open, each used by one thread at a time, several chunks in
flight at once (:meth:`SessionPool.map`), closed at interpreter exit. For torch,
:meth:`NvdecDecoder.decode_tensor` keeps the frames on the GPU (DLPack for 4:2:0, the
CUDA array interface for 4:4:4) and :mod:`eocube.device` unpacks them there.

NVDEC cannot decode everything (monochrome HEVC, frames under 144 px a side, AV1 on
A100/H100, ...): such streams, and every stream on a machine without a usable GPU, are
decoded on the CPU; :class:`NvdecDecoder` reports the first fallback through a callback.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

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


class SessionKey(NamedTuple):
    """What an NVDEC decoder context is opened for: contexts of one key are interchangeable."""

    method: str
    decoder: str
    pix_fmt: str
    width: int
    height: int
    extradata: bytes
    device: int
    hw_owned: bool

    @classmethod
    def of(
        cls, stream: video.EncodedStream, method: str, device: int, hw_owned: bool = False
    ) -> SessionKey:
        """The key of a context that decodes ``stream``."""
        return cls(
            method,
            stream.decoder,
            stream.pix_fmt,
            stream.width,
            stream.height,
            stream.extradata,
            device,
            hw_owned,
        )


def _open_key(key: SessionKey) -> Any:
    """Open an NVDEC decoder context for ``key`` (the pool's default opener)."""
    stream = video.EncodedStream(
        key.decoder, key.pix_fmt, key.height, key.width, 0, (), key.extradata
    )
    return _context(stream, key.method, key.device, key.hw_owned)


def _reset(ctx: Any) -> None:
    ctx.flush_buffers()


def _close(ctx: Any) -> None:
    # PyAV frees the AVCodecContext (and its NVDEC decoder) when the last reference goes;
    # a context with a close() (newer PyAV, the tests' fakes) is closed at once
    close = getattr(ctx, "close", None)
    if close is not None:
        close()


def _default_max_sessions() -> int:
    value = os.environ.get(SESSIONS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_SESSIONS
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{SESSIONS_VARIABLE}={value!r} is not a number of sessions") from None
    if count < 1:
        raise ValueError(f"{SESSIONS_VARIABLE}={value!r} must be at least 1")
    return count


DEFAULT_MAX_SESSIONS = 7
"""Decoder contexts a process keeps open at most: the H200's (and H100's) NVDEC engines."""

SESSIONS_VARIABLE = "EOCUBE_NVDEC_SESSIONS"
"""Environment variable that sets the bound of the process's pool (:func:`default_pool`)."""


class SessionPool:
    """A bounded, thread-safe pool of decoder contexts, reused across chunks and cubes.

    Opening an NVDEC decoder costs 60 to 80 ms (H200), more than decoding a chunk: a
    context, once open, serves every later stream of its :class:`SessionKey` (it is
    flushed between streams). At most ``max_sessions`` contexts are open at once, in use
    or idle; a thread that needs one when all are taken waits for one to come back, and
    when the bound is reached with contexts of other keys idle, the least recently used
    of those is closed to make room. A context is used by one thread at a time; one whose
    decode raised is closed, never reused.

    Parameters
    ----------
    max_sessions : int, optional
        The bound (default :data:`DEFAULT_MAX_SESSIONS`, or ``$EOCUBE_NVDEC_SESSIONS``).
    opener : callable, optional
        Opens a context for a :class:`SessionKey` (default: an NVDEC decoder through
        PyAV). Tests pass a fake.
    reset, close : callable, optional
        Make a context ready for its next stream (default ``flush_buffers()``), and close
        one (default: ``close()`` where it has one, else drop it).
    """

    def __init__(
        self,
        max_sessions: int | None = None,
        *,
        opener: Callable[[Any], Any] | None = None,
        reset: Callable[[Any], None] | None = None,
        close: Callable[[Any], None] | None = None,
    ) -> None:
        self.max_sessions = _default_max_sessions() if max_sessions is None else int(max_sessions)
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self._opener = opener if opener is not None else _open_key
        self._reset = reset if reset is not None else _reset
        self._closer = close if close is not None else _close
        self._cond = threading.Condition()
        self._idle: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # oldest first
        self._generation: dict[int, int] = {}  # id(ctx) -> generation it was opened in
        self._current = 0
        self.open_count = 0
        """Contexts open now (in use or idle)."""
        self.in_use = 0
        """Contexts lent out now."""
        self.opened = 0
        """Contexts opened so far."""
        self.closed = 0
        """Contexts closed so far."""
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def idle(self) -> int:
        """Contexts open and waiting for a stream."""
        with self._cond:
            return len(self._idle)

    def _acquire(self, key: Any) -> Any:
        evicted = None
        with self._cond:
            while True:
                # the most recently used idle context of this key
                for token in reversed(self._idle):
                    if self._idle[token][0] == key:
                        _, ctx = self._idle.pop(token)
                        self.in_use += 1
                        return ctx
                if self.open_count < self.max_sessions:
                    break
                if self._idle:  # the bound is reached: close the least recently used
                    _, (_, evicted) = self._idle.popitem(last=False)
                    self.open_count -= 1
                    break
                self._cond.wait()
            self.open_count += 1
            self.in_use += 1
            generation = self._current
        if evicted is not None:
            self._discard(evicted)
        try:
            ctx = self._opener(key)
        except BaseException:
            with self._cond:
                self.open_count -= 1
                self.in_use -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.opened += 1
            self._generation[id(ctx)] = generation
        return ctx

    def _release(self, key: Any, ctx: Any, ok: bool) -> None:
        if ok:
            try:
                self._reset(ctx)
            except Exception:
                ok = False
        with self._cond:
            self.in_use -= 1
            keep = ok and self._generation.get(id(ctx)) == self._current
            if keep:
                self._idle[id(ctx)] = (key, ctx)
            else:
                self.open_count -= 1
                self._generation.pop(id(ctx), None)
            self._cond.notify()
        if not keep:
            self._discard(ctx)

    def _discard(self, ctx: Any) -> None:
        with self._cond:
            self._generation.pop(id(ctx), None)
            self.closed += 1
        with contextlib.suppress(Exception):  # a context that fails to close is gone all the same
            self._closer(ctx)

    @contextlib.contextmanager
    def session(self, key: Any) -> Iterator[Any]:
        """A context for ``key``, this thread's alone until the block ends.

        A context whose block raised is closed, not returned to the pool.
        """
        ctx = self._acquire(key)
        ok = False
        try:
            yield ctx
            ok = True
        finally:
            self._release(key, ctx, ok)

    def frames(
        self, stream: video.EncodedStream, method: str, device: int = 0, hw_owned: bool = False
    ) -> list[Any]:
        """Every decoded frame of ``stream``, decoded by a pooled context.

        Raises
        ------
        NvdecError
            When the context cannot be opened, the decoder fails, or it returns another
            number of frames than were encoded.
        """
        with self.session(SessionKey.of(stream, method, device, hw_owned)) as ctx:
            return _decode_all(ctx, stream, method)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, up to ``max_sessions`` at once (threads):
        several streams or chunks in flight, so that every NVDEC engine is busy."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._cond:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.max_sessions, thread_name_prefix="eocube-nvdec"
                )
            executor = self._executor
        return [f.result() for f in [executor.submit(fn, item) for item in items]]

    def close(self) -> None:
        """Close every idle context; those in use are closed when they come back.

        The pool stays usable: later sessions open new contexts.
        """
        with self._cond:
            self._current += 1
            idle = [ctx for _, ctx in self._idle.values()]
            self._idle.clear()
            self.open_count -= len(idle)
            executor, self._executor = self._executor, None
            self._cond.notify_all()
        for ctx in idle:
            self._discard(ctx)
        if executor is not None:
            executor.shutdown(wait=False)


_POOL: SessionPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> SessionPool:
    """The process's pool of NVDEC sessions (closed at interpreter exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = SessionPool()
            atexit.register(_POOL.close)
        return _POOL


def _decode_all(ctx: Any, stream: video.EncodedStream, method: str) -> list[Any]:
    frames: list[Any] = []
    try:
        for packet in _packets(stream):
            frames.extend(ctx.decode(packet))
    except NvdecError:
        raise
    except Exception as exc:
        raise NvdecError(f"NVDEC ({method}) failed on a {stream.pix_fmt} stream: {exc!r}") from exc
    if len(frames) != stream.frames:
        raise NvdecError(
            f"NVDEC ({method}) returned {len(frames)} frames, {stream.frames} were encoded"
        )
    return frames


class _CudaPlane:
    """A CUDA plane of a hardware frame, for ``torch.as_tensor`` (CUDA array interface).

    PyAV exports CUDA frames by DLPack for NV12/P010/P016 (4:2:0) only; the planes of
    4:4:4 frames (YUV444P16) are described here from their device pointer and pitch.
    """

    def __init__(self, plane: Any, height: int, width: int, itemsize: int) -> None:
        pitch = int(plane.line_size)
        self.__cuda_array_interface__ = {
            "shape": (height, width),
            "typestr": "<u2" if itemsize == 2 else "|u1",
            "data": (int(plane.buffer_ptr), False),
            "strides": (pitch, itemsize),
            "version": 3,
            # FFmpeg's copy into the frame and torch's reads share the legacy default stream
            "stream": None,
        }


class NvdecSession:
    """Decodes streams on NVDEC through a pool of reused decoder contexts.

    Opening an NVDEC decoder costs 60 to 80 ms (measured on an H200), more than decoding
    a chunk: the contexts come from a :class:`SessionPool` (the process's, by default),
    keyed by (method, decoder, pixel format, size, extradata, device) and flushed between
    streams.
    """

    def __init__(self, device: int = 0, pool: SessionPool | None = None) -> None:
        self.device = device
        self.pool = pool if pool is not None else default_pool()

    def frames(
        self, stream: video.EncodedStream, method: str, hw_owned: bool = False
    ) -> Iterator[Any]:
        """Decoded frames of ``stream`` (the context is back in the pool before the first)."""
        yield from self.pool.frames(stream, method, self.device, hw_owned)

    def decode(
        self, stream: video.EncodedStream, method: str = "hwaccel"
    ) -> list[list[np.ndarray]]:
        """Each frame's data planes, as host arrays of codes."""
        return [[np.array(p) for p in _planes(f, stream)] for f in self.frames(stream, method)]

    def decode_tensor(self, stream: video.EncodedStream, method: str = "hwaccel") -> Any:
        """The stream's codes as an ``int32`` CUDA tensor (frames, data planes, H, W),
        the frames kept on the GPU (DLPack for 4:2:0, the CUDA array interface for 4:4:4).

        Raises
        ------
        NvdecError
            When NVDEC cannot decode the stream, or its frames cannot be handed to torch.
        """
        import torch

        fmt = pixel_format(stream.pix_fmt)
        shift = 16 - fmt.bits if fmt.itemsize == 2 else 0
        n = fmt.data_planes
        h, w = stream.height, stream.width
        out = torch.empty(
            (stream.frames, n, h, w), dtype=torch.int32, device=torch.device("cuda", self.device)
        )
        for i, frame in enumerate(self.frames(stream, method, hw_owned=True)):
            try:
                planes = list(frame.planes)[:n]
                for p, plane in enumerate(planes):
                    if fmt.chroma_subsampled:
                        # torch.from_dlpack would pass a CUDA stream, which PyAV refuses:
                        # take the capsule
                        src = torch.utils.dlpack.from_dlpack(plane.__dlpack__())
                    else:
                        cai = _CudaPlane(plane, h, w, fmt.itemsize)
                        src = torch.as_tensor(cai, device=out.device)
                    out[i, p] = src[:h, :w]
            except NvdecError:
                raise
            except Exception as exc:
                raise NvdecError(
                    f"CUDA frames of {stream.pix_fmt} not handed to torch: {exc!r}"
                ) from exc
        return out >> shift if shift else out

    def decode_to_torch(self, stream: video.EncodedStream) -> list[Any]:
        """Each frame's luma codes as an ``int32`` CUDA tensor, through DLPack (4:2:0 only)."""
        fmt = pixel_format(stream.pix_fmt)
        if fmt.data_planes != 1:
            raise NvdecError(f"DLPack export covers 4:2:0 streams only, not {stream.pix_fmt}")
        return list(self.decode_tensor(stream)[:, 0])


def decode_stream(
    stream: video.EncodedStream, *, method: str = "hwaccel", device: int = 0
) -> list[list[np.ndarray]]:
    """Decode a whole stream on NVDEC with a fresh decoder (closed after); each frame's
    planes as host arrays. :class:`NvdecSession` reuses decoders instead.

    Raises
    ------
    NvdecError
        When NVDEC cannot decode the stream (the caller decodes it on the CPU).
    """
    with SessionPool(1) as pool:
        return NvdecSession(device, pool).decode(stream, method)


def decode_stream_to_torch(stream: video.EncodedStream, *, device: int = 0) -> list[Any]:
    """Decode a 4:2:0 stream on NVDEC (a fresh decoder), frames kept on the GPU and handed
    to torch by DLPack.

    Returns one ``(height, width)`` ``torch.int32`` CUDA tensor of codes per frame (the
    luma plane); 4:4:4 streams raise :class:`NvdecError` (use
    :meth:`NvdecSession.decode_tensor`).
    """
    with SessionPool(1) as pool:
        return NvdecSession(device, pool).decode_to_torch(stream)


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
    pool : SessionPool, optional
        Where the decoder contexts come from (default: the process's,
        :func:`default_pool`).
    """

    def __init__(
        self,
        *,
        method: str = "auto",
        device: int = 0,
        on_fallback: Callable[[str], None] | None = None,
        pool: SessionPool | None = None,
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
        self.session = NvdecSession(device, pool)

    def _fallback(self, reason: str, message: str) -> None:
        with self._lock:
            new = reason not in self._reasons
            self._reasons.add(reason)
        if new and self.on_fallback is not None:
            self.on_fallback(message)

    def _nvdec(self, stream: video.EncodedStream, attempt: Callable[[str], Any]) -> Any:
        """``attempt(method)`` with the first method that works; None when the stream is
        to be decoded on the CPU (the reason said once)."""
        fmt = pixel_format(stream.pix_fmt)
        # monochrome HEVC (the gray stream of leftover bands of old stores) is no NVDEC
        # format: the profiles say so, and the CPU decodes it without a warning
        mono = not fmt.chroma_subsampled and fmt.data_planes == 1
        kind = (stream.decoder, stream.pix_fmt, stream.width, stream.height)
        if not self.enabled or mono or kind in self._unsupported:
            return None
        errors = []
        for method in list(self.methods):
            try:
                result = attempt(method)
            except NvdecError as exc:
                errors.append(str(exc))
                continue
            if len(self.methods) > 1:
                self.methods = [method]  # keep the path that works
            return result
        detail = "; ".join(errors)
        if not nvdec_available(self.device):
            self.enabled = False
            self._fallback("device", f"NVDEC is not usable here ({detail}): decoding on the CPU")
        else:
            self._unsupported.add(kind)  # the chunks of a cube share it: ask once
            self._fallback(
                f"stream:{stream.decoder}:{stream.pix_fmt}",
                f"NVDEC cannot decode this {stream.pix_fmt} {stream.width}x{stream.height} "
                f"stream ({detail}): decoding it on the CPU",
            )
        return None

    def __call__(
        self, stream: video.EncodedStream, *, threads: int = 0, **options: Any
    ) -> Iterator[list[np.ndarray]]:
        """Yield each frame's data planes, decoded on NVDEC or else on the CPU.

        NVDEC planes are C-contiguous copies of exactly the frame; ``threads`` and the
        other options of :func:`eocube.video.decode_frames` serve the CPU decoder.
        """
        frames = self._nvdec(stream, lambda method: self.session.decode(stream, method))
        if frames is not None:
            self.gpu_frames += len(frames)
            yield from frames
            return
        for planes in video.decode_frames(stream, threads=threads, **options):
            self.cpu_frames += 1
            yield planes

    def decode_tensor(self, stream: video.EncodedStream, device: Any, *, threads: int = 0) -> Any:
        """A :data:`eocube.device.StreamDecoder`: the stream's codes as a tensor on
        ``device`` (frames, data planes, H, W), decoded on NVDEC and kept on the GPU when
        ``device`` is a CUDA device, else (or where NVDEC cannot) decoded on the CPU."""
        import torch

        from eocube.device import cpu_stream_decoder

        dev = torch.device(device)
        if dev.type == "cuda":
            codes = self._nvdec(stream, lambda method: self.session.decode_tensor(stream, method))
            if codes is not None:
                self.gpu_frames += int(codes.shape[0])
                return codes.to(dev)
        self.cpu_frames += stream.frames
        return cpu_stream_decoder(stream, dev, threads=threads)


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
    "DEFAULT_MAX_SESSIONS",
    "METHODS",
    "GPUFallbackWarning",
    "NvdecDecoder",
    "NvdecError",
    "NvdecSession",
    "SessionKey",
    "SessionPool",
    "decode_chunk_with",
    "decode_stream",
    "decode_stream_to_torch",
    "default_pool",
    "nvdec_available",
]
