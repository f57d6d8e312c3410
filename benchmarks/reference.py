"""The reference approach (IPL-UV/xarrayvideo, arXiv 2506.19656), reimplemented.

Our own code, written from the paper "Video Compression for Spatiotemporal Earth System
Data" (arXiv 2506.19656) and the behaviour of its library IPL-UV/xarrayvideo, not from the
reference project's source. What it keeps of the reference, on purpose:

- the whole cube at once (no chunking): one video per group of 3 bands, every date a
  frame; the last group padded with copies of its last band (B=4 → (0,1,2), (3,3,3));
- one global min/max per band over the whole cube; values quantized to 12 bits
  (``round((x - min) / (max - min) · 4095)``); NaN (and, here, integer nodata, which
  the measurements of benchmarks.anchors also turned into NaN) become the band minimum (code 0)
  and are never restored;
- frames fed as planar GBR 12-bit (``gbrp12le``; band i of a group in plane i of the
  frame's memory, i.e. G, B, R) and converted to ``yuv444p12le`` by swscale with its
  default matrix and range, as the ffmpeg command line inserts it for
  ``-pix_fmt yuv444p12le``: BT.601, limited ("tv") range. PyAV's
  ``VideoFrame.reformat`` calls the same swscale with the same defaults. Decoding
  converts back to ``gbrp12le`` the same way. This RGB→YUV matrix is why the reference
  is off by a few codes even at crf 0;
- libx265 with its default options: preset medium, ``tune=psnr`` (as the measurements
  of benchmarks.anchors ran it), crf from the sweep. Two departures, both forced by the
  PyAV/libx265 build and identical for eocube: ``ctu=32`` (64-pixel CTUs decode
  wrongly in FFmpeg on some frames) and frames padded by edge replication to a size
  libx265 encodes safely (at least one CTU high, more than one CTU wide, widths
  33–48 padded to 64: eocube.video.frame_size), then cropped on decode.
  x265's ``info`` SEI (its version and settings, ~2 kB per video) stays in, as the
  reference writes it; its bytes are also recorded separately (``sei_bytes``);
- bpppb counts the video bitstream bytes only (packets + extradata), padded bands
  included, over T·B·Y·X of the original, which is the basis of the reference's own
  figures. Its Matroska container, metadata tag and coordinates side file are not
  counted (they would add ~9–12 kB per cube).

Encoding runs in process through PyAV (the reference pipes raw frames to the ffmpeg
command line, which costs it more time than this).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from eocube import metrics
from eocube.video import frame_size

BITS = 12
MAX_CODE = (1 << BITS) - 1
OPTIONS = {"preset": "medium", "tune": "psnr"}
X265_PARAMS = "ctu=32:log-level=error"
INPUT_FMT = "gbrp12le"
CODED_FMT = "yuv444p12le"
_SEI_TYPES = (39, 40)  # HEVC prefix / suffix SEI NAL units


@dataclass
class ReferenceVideo:
    """One encoded video: the bands it carries (padding included) and its bitstream."""

    bands: tuple[int, ...]
    packets: list[bytes]
    extradata: bytes
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.packets) + len(self.extradata)


@dataclass
class ReferenceEncoded:
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    mins: np.ndarray
    maxs: np.ndarray
    videos: list[ReferenceVideo]

    @property
    def nbytes(self) -> int:
        """Video bytes only, the reference's own basis."""
        return sum(v.nbytes for v in self.videos)

    @property
    def sei_bytes(self) -> int:
        """Bytes of SEI NAL units (x265's info SEI) within :attr:`nbytes`."""
        return sum(sei_nbytes(p) for v in self.videos for p in (*v.packets, v.extradata))


def band_groups(n_bands: int) -> list[tuple[int, ...]]:
    """3 bands per video; the last group padded with copies of its last band."""
    groups = []
    for start in range(0, n_bands, 3):
        group = list(range(start, min(start + 3, n_bands)))
        group += [group[-1]] * (3 - len(group))
        groups.append(tuple(group))
    return groups


def sei_nbytes(data: bytes) -> int:
    """Bytes of the SEI NAL units in an Annex B byte stream."""
    buf = bytes(data)
    starts = []
    i = buf.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = buf.find(b"\x00\x00\x01", i + 3)
    total = 0
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(buf)
        if s < len(buf) and (buf[s] >> 1) & 0x3F in _SEI_TYPES:
            total += end - s
    return total


def _plane(frame: av.VideoFrame, i: int, height: int) -> np.ndarray:
    plane = frame.planes[i]
    return np.frombuffer(plane, dtype="<u2").reshape(height, plane.line_size // 2)


def encode(
    values: np.ndarray, crf: float, nodata: float | None = None, *, threads: int = 0
) -> ReferenceEncoded:
    """Encode a (T, B, Y, X) cube the reference's way."""
    T, B, Y, X = values.shape
    valid = metrics.valid_mask(values, nodata)
    data = values.astype(np.float64)
    mins = np.zeros(B)
    maxs = np.zeros(B)
    codes = np.zeros(values.shape, np.uint16)
    for b in range(B):
        v = data[:, b][valid[:, b]]
        if v.size:
            mins[b], maxs[b] = v.min(), v.max()
        span = maxs[b] - mins[b]
        q = (data[:, b] - mins[b]) * (MAX_CODE / span) if span > 0 else np.zeros((T, Y, X))
        q = np.where(valid[:, b], np.rint(q), 0)  # NaN / nodata -> the band minimum
        codes[:, b] = np.clip(q, 0, MAX_CODE).astype(np.uint16)
    options = {**OPTIONS, "crf": f"{crf:g}", "x265-params": X265_PARAMS}
    height, width = frame_size("libx265", CODED_FMT, Y, X, False, options)
    videos = []
    for group in band_groups(B):
        ctx = av.codec.CodecContext.create("libx265", "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, CODED_FMT
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25, 1)
        ctx.thread_count = threads
        ctx.options = dict(options)
        ctx.open()
        packets: list[bytes] = []
        for t in range(T):
            rgb = av.VideoFrame(width, height, INPUT_FMT)
            for i, b in enumerate(group):
                _plane(rgb, i, height)[:, :width] = np.pad(
                    codes[t, b], ((0, height - Y), (0, width - X)), mode="edge"
                )
            yuv = rgb.reformat(format=CODED_FMT)  # swscale defaults: BT.601, limited range
            yuv.pts = t
            packets.extend(bytes(p) for p in ctx.encode(yuv))
        packets.extend(bytes(p) for p in ctx.encode(None))
        extradata = bytes(ctx.extradata or b"")
        videos.append(ReferenceVideo(group, [p for p in packets if p], extradata, height, width))
    return ReferenceEncoded((T, B, Y, X), values.dtype, mins, maxs, videos)


def decode(enc: ReferenceEncoded, *, threads: int = 0) -> np.ndarray:
    """Decode to the original shape and dtype; NaN/nodata are not restored (band minimum)."""
    T, _B, Y, X = enc.shape
    codes = np.zeros(enc.shape, np.uint16)
    for video in enc.videos:
        ctx = av.codec.CodecContext.create("hevc", "r")
        if video.extradata:
            ctx.extradata = video.extradata
        ctx.thread_count = threads
        ctx.thread_type = "SLICE"  # FFmpeg's HEVC frame threads can hang on short streams
        t = 0
        for payload in (*video.packets, None):
            for frame in ctx.decode(None if payload is None else av.Packet(payload)):
                rgb = frame.reformat(format=INPUT_FMT)
                seen: set[int] = set()
                for i, b in enumerate(video.bands):
                    if b not in seen:
                        seen.add(b)
                        codes[t, b] = _plane(rgb, i, video.height)[:Y, :X]
                t += 1
        if t != T:
            raise RuntimeError(f"reference video decoded {t} frames, {T} were encoded")
    span = (enc.maxs - enc.mins) / MAX_CODE
    out = codes.astype(np.float64) * span[None, :, None, None] + enc.mins[None, :, None, None]
    if enc.dtype.kind in "iu":
        info = np.iinfo(enc.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(enc.dtype)
    return out.astype(enc.dtype)


def describe() -> dict[str, object]:
    return {
        "encoder": "libx265",
        "input_pix_fmt": INPUT_FMT,
        "coded_pix_fmt": CODED_FMT,
        "options": {**OPTIONS, "x265-params": X265_PARAMS},
        "bits": BITS,
        "bands_per_video": 3,
        "bytes_counted": "video bitstream only (packets + extradata), padded bands included",
    }


def sweep(crfs: Sequence[float]) -> list[dict[str, float]]:
    return [{"crf": c} for c in crfs]
