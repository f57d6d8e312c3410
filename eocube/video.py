"""In-memory video encoding and decoding of plane stacks with PyAV.

No subprocess and no system ffmpeg: the codecs are those inside the PyAV wheel. Frames
are fed in planar GBR, planar YUV or gray pixel formats and read back in the encoder's
own pixel format, so no colour conversion ever touches the data.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import av.logging
import numpy as np
from av.video.codeccontext import VideoCodecContext

from eocube import lossless
from eocube.errors import CodecError, CorruptChunkError
from eocube.pixfmt import PixelFormat, pixel_format

# SVT-AV1 prints its configuration banner unless told otherwise (1 = errors only).
os.environ.setdefault("SVT_LOG", "1")

# SVT-AV1 (4.1) never returns a packet, and blocks the caller for good, when one side of
# the frame is under 32 pixels and the other over 64 (e.g. 206 x 24, 16 x 206).
_MIN_SIDE = {"libsvtav1": 32}
# FFV1 will not open for frames one pixel wide and more than one high (ENOSYS).
_MIN_WIDTH = {"ffv1": 2}
# libx265 refuses frames smaller than one CTU ("Picture size must be at least one CTU"):
# the minimum side is the CTU size of the options (x265-params ctu=, 64 by default). And a
# frame exactly one CTU wide (with two CTU rows or more) decodes differently from what
# x265 reconstructs (lossless: up to 146 wrong samples in 3 frames of 32 x 64..136 at
# ctu=32, with or without WPP, any preset; 64-wide frames at ctu=64 alike): libx265
# frames are made at least one CTU and one column wide.
_X265_DEFAULT_CTU = 64
# libx265 (3.x/4.x in the PyAV wheels) corrupts its heap when encoding lossy frames whose
# width lies in this range (found by scanning widths 16..304; adaptive quantisation and
# cutree on the quarter-resolution lookahead): such frames are padded to 64 columns, two
# whole CTUs at ctu=32. (valgrind: invalid writes at widths 33, 40 and 48, none at 49, 50,
# 52, 56 or 64. Padding to 56 instead, a partial second CTU, measured at equal rate on 44-
# and 46-pixel-wide series: +0.05 to +0.17 dB at crf 6 to 22, but -0.51 dB at crf 38;
# docs/benchmarks.md.)
_X265_UNSAFE_WIDTHS = range(33, 49)

# Frames of fewer pixels decode on one codec thread whatever the caller offers.
_THREADED_PIXELS = 128 * 128

# Decoders that return a different but sample-compatible format: the data plane of a
# gray stream comes back as the luma plane of 4:2:0 frames from the H.264 decoder.
_COMPATIBLE = {("gray10le", "yuv420p10le"), ("gray", "yuv420p"), ("gray12le", "yuv420p12le")}


@dataclass(frozen=True)
class EncodedStream:
    """An encoded sequence of frames: the packets in decode order and what decoding needs."""

    decoder: str
    pix_fmt: str
    height: int
    width: int
    frames: int
    packets: tuple[bytes, ...]
    extradata: bytes = b""

    @property
    def nbytes(self) -> int:
        """Bytes of bitstream and extradata."""
        return sum(len(p) for p in self.packets) + len(self.extradata)


def _x265_ctu(options: Mapping[str, str] | None) -> int:
    params = (options or {}).get("x265-params", "")
    for item in params.split(":"):
        key, _, value = item.partition("=")
        if key.strip() == "ctu" and value.strip().isdigit():
            return int(value)
    return _X265_DEFAULT_CTU


def frame_size(
    encoder: str,
    pix_fmt: str,
    height: int,
    width: int,
    lossless: bool,
    options: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """The smallest frame the encoder accepts that holds a ``height`` × ``width`` image.

    Parameters
    ----------
    encoder : str
        FFmpeg encoder name.
    pix_fmt : str
        Pixel format (4:2:0 formats need even sides).
    height, width : int
        Size of the data.
    lossless : bool
        Whether the encoder runs lossless (some constraints only bite in lossy mode).
    options : mapping, optional
        The encoder options: libx265 needs a height of at least one CTU and a width of
        more than one CTU (``x265-params`` ``ctu=``, 64 when not given).
    """
    fmt = pixel_format(pix_fmt)
    if encoder == "libx265":
        ctu = _x265_ctu(options)
        h, w = max(height, ctu), max(width, ctu + 1)
        if not lossless and w in _X265_UNSAFE_WIDTHS:
            w = 64
    else:
        min_side = _MIN_SIDE.get(encoder, 1)
        h, w = max(height, min_side), max(width, min_side, _MIN_WIDTH.get(encoder, 1))
    if fmt.chroma_subsampled:
        h, w = h + h % 2, w + w % 2
    return h, w


# FFmpeg skips what an encoder does not know with at most a warning: avcodec_open2 leaves
# unknown AVOptions unused, and the wrappers hand their parameter strings (x265-params,
# x264-params, svtav1-params) to the library name by name, logging the names it refuses
# (libx265.c, libx264.c, libsvtav1.c). A misspelt option would change nothing, silently.
_REFUSED_PARAMETER = (
    re.compile(r"Unknown option: (?P<name>.+?)\.?$"),
    re.compile(r"Invalid value for (?P<name>.+?): (?P<value>.*?)\.?$"),
    re.compile(r"Error parsing option '?(?P<name>.+?)(?: = |: )(?P<value>.*?)'?\.?$"),
)
# PyAV's log level is process-wide: one thread at a time raises it to read the warnings
_LOG_LEVEL_LOCK = threading.Lock()


def unknown_options(encoder: str, pix_fmt: str, options: Mapping[str, str]) -> tuple[str, ...]:
    """The options ``encoder`` would skip: AVOptions it does not have, and names (or
    values) in its parameter string (``x265-params``, ``x264-params``, ``svtav1-params``)
    the library refuses.

    FFmpeg skips both with at most a log line, so a misspelt option would silently
    change nothing. The encoder is opened once (on a frame of the smallest size it
    takes) per distinct set of arguments in a process.

    Parameters
    ----------
    encoder : str
        FFmpeg encoder name.
    pix_fmt : str
        Pixel format the encoder is opened with.
    options : mapping
        Encoder options (AVOptions), as :func:`encode_frames` takes them.

    Returns
    -------
    tuple of str
        One entry per skipped option, e.g. ``"presett"`` or ``"x265-params: bogus"``;
        empty when the encoder takes every option.

    Raises
    ------
    CodecError
        If the encoder does not open with these options at all.
    """
    return _unknown_options(encoder, pix_fmt, tuple(sorted(options.items())))


@functools.lru_cache(maxsize=64)
def _unknown_options(
    encoder: str, pix_fmt: str, items: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    if encoder == lossless.CODER:
        return tuple(name for name, _ in items)  # eocube's own coder takes no options
    options = dict(items)
    height, width = frame_size(encoder, pix_fmt, 1, 1, lossless=False, options=options)
    logs: list[tuple[int, str, str]] = []
    failure: Exception | None = None
    try:
        ctx = cast(VideoCodecContext, av.codec.CodecContext.create(encoder, "w"))
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        ctx.options = _frame_options(encoder, options, pixel_format(pix_fmt), height, width)
        with _LOG_LEVEL_LOCK:
            level = av.logging.get_level()
            av.logging.set_level(av.logging.WARNING)
            try:
                with av.logging.Capture() as logs:
                    ctx.open()
            finally:
                av.logging.set_level(level)
    except (av.FFmpegError, ValueError) as exc:
        failure = exc
    parameters = next((k for k in options if k.endswith("-params")), "parameters")
    refused = []
    for _level, _name, message in logs:
        for pattern in _REFUSED_PARAMETER:
            found = pattern.match(message.strip())
            if found:
                value = found.groupdict().get("value")
                detail = found["name"] if value is None else f"{found['name']}={value}"
                refused.append(f"{parameters}: {detail}")
                break
    if failure is not None:
        also = f" (it also refused {', '.join(refused)})" if refused else ""
        raise CodecError(
            f"cannot open encoder {encoder} ({pix_fmt}, {width}x{height}): {failure}{also}"
        ) from failure
    return (*ctx.options, *refused)  # ctx.options: what avcodec_open2 left unused


# How eocube runs libx265, whatever the profile: eocube encodes chunks and streams in
# parallel itself, so x265 gets no thread pool of its own and one frame thread.
# - With a pool, x265's lookahead decides slice types on a pool thread while the calling
#   thread takes the decided pictures, and x265 4.2 races there (slicetype.cpp,
#   getDecidedPicture: the output queue is popped without its lock after the wait, and
#   the waiter is not woken when a decision outputs nothing). With three or four encoders
#   at once on two cores, a stress loop of writes segfaulted inside an x265 encode once in
#   about 1,700 writes, and a CI run of the quickstart notebook hung in a write. Without a
#   pool the lookahead runs in the calling thread: neither race can occur.
# - x265 picks its frame threads from the machine's cores when not told, and more frame
#   threads change the bitstream: pinned to one, a cube encodes to the same bytes on any
#   machine.
# The bitstream changes where the pool ran WPP rows (frames of several CTU rows) or batched
# the lookahead's estimates; at crf 16 on five dev cubes: 0.97-1.00x the bytes, PSNR
# within 0.04 dB, writes 0.88-1.34x the time (1.34x: a cube of one chunk, whose rows WPP
# had coded in parallel), whole reads 0.92-1.07x (benchmarks/results/x265_threads.md).
# One large chunk decodes its rows in parallel no more: 1.57x the time on two cores for a
# 13-band 971 x 965 px chunk (same results, one large chunk). Safety first.
_X265_THREADING = {"pools": "none", "frame-threads": "1"}


@contextlib.contextmanager
def x265_own_threading() -> Iterator[None]:
    """Inside this block, libx265 runs with x265's own pool and frame threads, as eocube
    ran it before :data:`_X265_THREADING`: how :data:`eocube.paramsets.DICTIONARY` was
    made, and the benchmarks' comparison. Process-wide, and racy as described there:
    for maintainers' tools, not for writes."""
    saved = dict(_X265_THREADING)
    _X265_THREADING.clear()
    try:
        yield
    finally:
        _X265_THREADING.update(saved)


@functools.cache
def x265_version() -> str | None:
    """The version of the libx265 inside PyAV's FFmpeg, e.g. ``"4.2+1-e444744"`` (as x265
    writes it into its info SEI), or None where PyAV has no libx265. PyAV's own version
    does not tell it: PyAV 18.1.0 ships x265 4.2, 18.1.1 ships 4.3."""
    try:
        context = av.CodecContext.create("libx265", "w")
    except (av.FFmpegError, ValueError):
        return None
    assert isinstance(context, VideoCodecContext)
    context.width, context.height, context.pix_fmt = 64, 64, "gray"
    context.time_base = Fraction(1, 25)
    params = {"log-level": "none", "info": "1", **_X265_THREADING}
    context.options = {"x265-params": ":".join(f"{k}={v}" for k, v in params.items())}
    frame = av.VideoFrame.from_ndarray(np.zeros((64, 64), np.uint8), format="gray")
    stream = b"".join(bytes(p) for p in [*context.encode(frame), *context.encode(None)])
    found = re.search(rb"x265 \(build \d+\) - ([0-9A-Za-z.+_-]+)", stream)
    return found.group(1).decode("ascii") if found else None


def _frame_options(
    encoder: str, options: Mapping[str, str], fmt: PixelFormat, height: int, width: int
) -> dict[str, str]:
    """``options``, with what the frame size forces on the encoder, and how eocube runs
    libx265 (:data:`_X265_THREADING`, after the profile's own parameters)."""
    chosen = dict(options)
    if encoder == "ffv1" and "slices" in chosen:
        chosen["slices"] = str(_ffv1_slices(int(chosen["slices"]), fmt, height, width))
    if encoder == "libx265" and _X265_THREADING:
        threading_params = ":".join(f"{k}={v}" for k, v in _X265_THREADING.items())
        given = chosen.get("x265-params", "")
        chosen["x265-params"] = f"{given}:{threading_params}" if given else threading_params
    return chosen


def _ffv1_slices(wanted: int, fmt: PixelFormat, height: int, width: int) -> int:
    """The slice count FFV1 accepts for this frame closest above ``wanted``.

    FFmpeg's encoder refuses (ENOSYS) any count it cannot tile the frame with: at least
    2 x 2 slices beyond 352 x 288 pixels, and slices of at most 2**27 / (bits + 1) /
    planes samples. Its own search, replayed here, picks the count to ask for.
    """
    v = 2 if width > 352 or height > 288 else 1
    for v_slices in range(v, 32):
        for h_slices in range(v_slices, 2 * v_slices):
            count = v_slices * h_slices
            side_w, side_h = -(-width // h_slices), -(-height // v_slices)
            if side_w * side_h * (fmt.bits + 1) * fmt.data_planes > 8 << 24:
                continue
            if count >= wanted:
                return count
    return wanted  # let the encoder say what it refuses


def _plane_view(
    plane: av.video.plane.VideoPlane, fmt: PixelFormat, height: int, width: int | None
) -> np.ndarray:
    """A plane as a (height, width) view; ``width=None`` keeps whole rows (C-contiguous)."""
    dtype = np.dtype(np.uint8) if fmt.itemsize == 1 else np.dtype("<u2")
    row = plane.line_size // fmt.itemsize
    return np.frombuffer(memoryview(plane), dtype=dtype).reshape(-1, row)[:height, :width]


def _packet(payload: bytes) -> av.Packet:
    # A packet in FFmpeg-owned memory: freeing one built on Python bytes needs the GIL,
    # which a frame thread of the decoder may wait for while the calling thread holds it
    # to close the decoder: with av.Packet(bytes), HEVC streams of fewer frames than
    # frame threads deadlocked in avcodec_free_context (tests/test_video.py replays it).
    packet = av.Packet(len(payload))
    memoryview(packet)[:] = payload
    return packet


def encode_frames(
    frames: Iterable[Sequence[np.ndarray]],
    *,
    encoder: str,
    decoder: str,
    pix_fmt: str,
    height: int,
    width: int,
    options: Mapping[str, str],
    threads: int = 0,
) -> EncodedStream:
    """Encode frames given as their data planes.

    Parameters
    ----------
    frames : iterable of sequences of 2-D arrays
        One sequence per frame, holding as many ``(height, width)`` arrays as the pixel
        format has data planes (3 for 4:4:4 and GBR, 1 for gray and 4:2:0), of dtype
        uint8 (8-bit formats) or uint16, values within the format's bit depth.
    encoder, decoder : str
        FFmpeg codec names; ``decoder`` is recorded for decoding.
    pix_fmt : str
        Pixel format; the chroma planes of 4:2:0 formats are filled with the mid code.
    height, width : int
        Frame size, as returned by :func:`frame_size`.
    options : mapping
        Encoder options (AVOptions).
    threads : int
        Codec threads; 0 lets the codec choose.

    Returns
    -------
    EncodedStream
    """
    if encoder == lossless.CODER:
        return _encode_own(
            frames, decoder=decoder, pix_fmt=pix_fmt, height=height, width=width, threads=threads
        )
    fmt = pixel_format(pix_fmt)
    try:
        ctx = cast(VideoCodecContext, av.codec.CodecContext.create(encoder, "w"))
        ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        ctx.thread_count = threads
        ctx.options = _frame_options(encoder, options, fmt, height, width)
        ctx.open()
    except (av.FFmpegError, ValueError) as exc:
        raise CodecError(
            f"cannot open encoder {encoder} ({pix_fmt}, {width}x{height}): {exc}"
        ) from exc
    packets: list[bytes] = []
    count = 0
    mid = 1 << (fmt.bits - 1)
    try:
        for planes in frames:
            frame = av.VideoFrame(width, height, pix_fmt)
            for i, plane in enumerate(frame.planes):
                if fmt.chroma_subsampled and i > 0:
                    _plane_view(plane, fmt, (height + 1) // 2, (width + 1) // 2)[...] = mid
                else:
                    _plane_view(plane, fmt, height, width)[...] = planes[i]
            frame.pts = count
            count += 1
            packets.extend(bytes(p) for p in ctx.encode(frame))
        packets.extend(bytes(p) for p in ctx.encode(None))
    except av.FFmpegError as exc:
        raise CodecError(f"encoder {encoder} failed: {exc}") from exc
    return EncodedStream(
        decoder=decoder,
        pix_fmt=pix_fmt,
        height=height,
        width=width,
        frames=count,
        packets=tuple(p for p in packets if p),
        extradata=bytes(ctx.extradata or b""),
    )


def _encode_own(
    frames: Iterable[Sequence[np.ndarray]],
    *,
    decoder: str,
    pix_fmt: str,
    height: int,
    width: int,
    threads: int,
) -> EncodedStream:
    """Frames coded by eocube's own lossless coder (eocube.lossless): one packet, checked
    by a decode that follows the encoder (a lossless stream is always checked)."""
    if pix_fmt != lossless.PIX_FMT or decoder != lossless.CODER:
        raise CodecError(
            f"encoder {lossless.CODER} takes {lossless.PIX_FMT} frames and decodes with "
            f"itself, not {pix_fmt} / {decoder}"
        )
    packet, count = lossless.encode_frames(
        frames, height=height, width=width, threads=threads, verify=True
    )
    return EncodedStream(
        decoder=decoder,
        pix_fmt=pix_fmt,
        height=height,
        width=width,
        frames=count,
        packets=(packet,) if count else (),
    )


def _decode_own(stream: EncodedStream) -> Iterator[list[np.ndarray]]:
    """The frames of a stream of eocube's own lossless coder (whole rows: no padding)."""
    if stream.pix_fmt != lossless.PIX_FMT or stream.extradata:
        raise CorruptChunkError(
            f"{lossless.CODER} stream of pixel format {stream.pix_fmt} "
            f"with {len(stream.extradata)} bytes of extradata"
        )
    yield from lossless.decode_frames(stream.packets, stream.frames, stream.height, stream.width)


def decode_frames(
    stream: EncodedStream, *, threads: int = 0, crop: bool = True
) -> Iterator[list[np.ndarray]]:
    """Decode a stream, yielding each frame's data planes as 2-D views in presentation order.

    The views point into the decoder's frame buffers: copy what must outlive the loop step.
    With ``crop=False`` the views keep the decoder's whole (padded) rows, so they are
    C-contiguous; their first ``stream.width`` columns are the frame.

    Raises
    ------
    CorruptChunkError
        When the decoder rejects the bitstream, returns another pixel format or
        another number of frames than was encoded.
    """
    if stream.decoder == lossless.CODER:
        yield from _decode_own(stream)
        return
    fmt = pixel_format(stream.pix_fmt)
    try:
        ctx = cast(VideoCodecContext, av.codec.CodecContext.create(stream.decoder, "r"))
        if stream.extradata:
            ctx.extradata = stream.extradata
        ctx.width, ctx.height = stream.width, stream.height
        # threads pay only on large frames: on 64 x 64 and smaller ones they gained
        # nothing (benchmarks/read_patterns.py, decoder threads)
        small = stream.height * stream.width < _THREADED_PIXELS
        ctx.thread_count = 1 if small else threads
        # HEVC: slice threads decode the rows of WPP streams (stores written before
        # _X265_THREADING) in parallel;
        # frame threads gained nothing on chunk-sized streams and cost more on short ones
        # (benchmarks/read_patterns.py). Frame threads no longer hang (see _packet).
        ctx.thread_type = "SLICE" if stream.decoder == "hevc" else "AUTO"
    except (av.FFmpegError, ValueError) as exc:
        raise CorruptChunkError(f"cannot open decoder {stream.decoder!r}: {exc}") from exc
    seen = 0
    width = stream.width if crop else None
    sample = np.dtype(np.uint8) if fmt.itemsize == 1 else np.dtype("<u2")

    def planes_of(frame: av.VideoFrame) -> list[np.ndarray]:
        got = frame.format.name
        if got != stream.pix_fmt and (stream.pix_fmt, got) not in _COMPATIBLE:
            raise CorruptChunkError(
                f"decoder returned {got}, the stream was encoded as {stream.pix_fmt}"
            )
        if frame.width != stream.width or frame.height != stream.height:
            raise CorruptChunkError(
                f"decoded frame is {frame.width}x{frame.height}, "
                f"expected {stream.width}x{stream.height}"
            )
        # frame.planes builds its tuple on every access: once per frame
        planes = frame.planes[: fmt.data_planes]
        return [
            np.frombuffer(memoryview(plane), sample).reshape(-1, plane.line_size // fmt.itemsize)[
                : stream.height, :width
            ]
            for plane in planes
        ]

    try:
        for payload in (*stream.packets, None):
            packet = None if payload is None else _packet(payload)
            for frame in ctx.decode(packet):
                seen += 1
                if seen > stream.frames:
                    raise CorruptChunkError(f"decoder returned more than {stream.frames} frames")
                yield planes_of(frame)
    except av.FFmpegError as exc:
        raise CorruptChunkError(
            f"{stream.decoder} decoder failed after {seen} frames: {exc}"
        ) from exc
    if seen != stream.frames:
        raise CorruptChunkError(f"decoder returned {seen} frames, {stream.frames} were encoded")
