"""The chunk payload: one block of (T, B, Y, X) values as a self-describing byte string.

Layout (little-endian)::

    magic "EOCB" | u8 format version | u8 flags | [u8 flags2]   (version 12 on)
    name dtype | size T, B, Y, X
    [size T', Y', X' | f64 fill]         (flag CROPPED, version 3) only
                                          block[:T', :, :Y', :X'] is coded, the rest of
                                          the block is ``fill`` (the padding zarr adds
                                          at the array's end); what follows describes
                                          the coded part
    u8 bits | name layout | name profile
    [f64 nodata]                          (flag NODATA)
    band maps                             per-band affine map: value = offset + code * scale;
                                          before version 13 B x (f64 offset, f64 scale),
                                          from 13 B x (min, max) in the block's dtype
                                          (min alone under EXACT: scale 1), whose map is
                                          offset = min, scale = (max - min) / (2**bits - 1)
    [f32 mean[B] | axes basis[B, B] | f32 low[B] | f64 step]   (before version 14)
    [f32 origin[B] | axes basis[B, B] | f32 step]              (from version 14)
                                          (flag KLT, version 2) the planes hold principal
                                          components of the band codes (eocube.spectral)
    [u8 rows, cols]                       (flags2 MOSAIC, version 12) the streams' frames
                                          hold rows x cols dates side by side
                                          (eocube.mosaic)
    [varint order[F]]                     (flag DATE_ORDER, version 9) the streams code
                                          the dates (F = T', or a mosaic's frames) in
                                          this order (eocube.dateorder)
                                          (flag TRANSPOSED, version 11: nothing more)
    u8 n_streams, each:
        name decoder | name pix_fmt | size height, width, frames
        varint len(extradata) | extradata | [varint len(prefix) | prefix]   (version 13)
        [varint len(head) | head]         (version 14) the first packet's parameter
                                          sets, deflated (eocube.paramsets)
        varint n_packets | varint sizes... | packets   (from version 13 each less the
                                          prefix every packet starts with, from 14 the
                                          first less its head)
    -- or, with flag WAVELET (version 5), whose band maps hold each band's (min, max),
       in place of the streams:
    str coder | per band: u32 crc32 | varint len | bitstream
                                          (eocube.wavelet: SPERR per band, of the values;
                                          coder sperr-periodic, version 10: each band
                                          led by its period and sinusoid maps)
    u8 n_masks, each:
        u8 kind (0 NaN, 1 nodata; + 0x80: runs-coded, version 6) | varint len |
        zlib(packbits(mask (T, B, Y, X))), or with 0x80 the mask's runs (eocube.masks)
    u8 n_residuals (0 or 1), each:
        varint len | residual layer (eocube.residual): the error-bounded correction

``str`` is a u8 length and ASCII text; ``name`` a ``str`` before version 14 and from it a
u8, the entry of :data:`NAMES` it is (from 1), or 0 and a ``str``; ``size`` a u32 before
version 13 and a varint of at most 32 bits from it; ``axes`` B x B f32 before version 13,
from it B(B+1)/2 - 1 values of the basis's Householder vectors
(eocube.spectral.stored_axes): int16 in version 13, 10 bits each (offset by 512) from
version 14, packed. The stream's frame
order follows from the layout (eocube.packing.plan_layout), so it is not stored. With
flag TIME_IN_FRAME (version 4) the streams code the coded part with its T and Y axes
swapped: frame ``y`` of a band
holds that row of every date, one date per frame row (masks and the residual layer keep
the (T, B, Y, X) order). With flag WAVELET (version 5) the coded part is a wavelet
coder's (eocube.wavelet), not a video's; masks and the residual layer are unchanged.
Version 6 adds masks coded by their runs (eocube.masks) to any of the above; version 7,
``eocube-pred`` streams of packet version 3 (eocube.lossless); version 8, layout
``planar3-pair`` (two leftover bands in a 4:4:4 frame of the main stream); version 9,
flag DATE_ORDER (the streams code the dates in a stored order, not in time order);
version 10, a wavelet section that models a periodic component along time (coder
``sperr-periodic``); version 11, flag TRANSPOSED (the streams' frames hold the coded
part with its Y and X axes swapped: columns as frame rows, where the codec's frame is
smaller that way); version 12, a second flag byte and its flag MOSAIC (several dates
side by side in each frame, where a chunk's frames are small); version 13, the compact
header (sizes as varints, band ranges in the block's dtype, Householder axes); version 14,
the lean header (names as entries of a vocabulary, the KLT's origin in place of its mean
and offsets, 10-bit Householder values, a float32 step, the streams' parameter sets
deflated against a fixed dictionary), which every payload is written with. Version 1
(no KLT), 2 (no crop), 3 to 13 payloads read unchanged.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from eocube import dateorder, lossless, metrics, packing, paramsets, residual, spectral, video
from eocube import masks as masks_mod
from eocube import mosaic as mosaic_mod
from eocube import wavelet as wavelet_mod
from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CodecError, CorruptChunkError, ProfileError, UnsupportedDataError
from eocube.metrics import DB_PER_DOUBLING
from eocube.pixfmt import pixel_format
from eocube.profiles import Profile, get_profile

MAGIC = b"EOCB"
MASK_RUNS_VERSION = 6
"""The first version whose masks may be coded by their runs (:mod:`eocube.masks`)."""
PRED_GAIN_VERSION = 7
"""The first version whose ``eocube-pred`` streams may be packets of version 3 (a gain
sub-predictor per reference, :mod:`eocube.lossless`): a reader of versions up to 6 would
take such a packet for a damaged one."""
PAIR_VERSION = 8
"""The first version whose layout may be ``planar3-pair`` (eocube.packing.plan_layout)."""
DATE_ORDER_VERSION = 9
"""The first version whose streams may code the dates in a stored order (flag DATE_ORDER)."""
PERIODIC_VERSION = 10
"""The first version whose wavelet section may model a periodic component along time
(coder ``sperr-periodic``, :mod:`eocube.wavelet`)."""
TRANSPOSED_VERSION = 11
"""The first version whose streams may hold the coded part with Y and X swapped (flag
TRANSPOSED)."""
MOSAIC_VERSION = 12
"""The first version with a second flag byte, whose flag MOSAIC says the streams' frames
hold several dates side by side (:mod:`eocube.mosaic`)."""
COMPACT_VERSION = 13
"""The first version with the compact header: sizes as varints, each band's range in the
block's own type (its affine map follows from it), the KLT basis as int16 Householder
vectors (:func:`eocube.spectral.stored_axes`) and the streams' frame sizes as varints
(docs/format.md §6.14; what it saves: benchmarks/results/compact_header.md)."""
LEAN_VERSION = 14
"""The first version with the lean header: dtype, layout, profile, decoder and pixel
format as entries of :data:`NAMES`, the KLT as the components' origin, 10-bit Householder
vectors and a float32 step, each stream's parameter sets deflated against a fixed
dictionary (:mod:`eocube.paramsets`; docs/format.md §6.15; what it saves:
benchmarks/results/lean_header.md)."""
FORMAT_VERSION = LEAN_VERSION
"""The version every payload is written with (versions 3 to 12 were written where a
payload needed their fields; readers read them all, :data:`READABLE_VERSIONS`)."""
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
NAMES = (
    "|u1",
    "<u2",
    "<i2",
    "<i4",
    "<f4",
    "<f8",
    "planar3",
    "planar3-pair",
    "luma",
    "bands-as-frames",
    "hevc-12bit-444",
    "hevc-12bit-444-gbr",
    "hevc-12bit-444-wavelet",
    "hevc-12bit-420-luma",
    "hevc-12bit-bands",
    "hevc-lossless",
    "av1-10bit",
    "h264-10bit",
    "vp9-8bit-444",
    "ffv1-lossless",
    "eocube-lossless",
    "hevc",
    "libdav1d",
    "h264",
    "vp9",
    "ffv1",
    "eocube-pred",
    "gray",
    "gray10le",
    "gray12le",
    "gray16le",
    "yuv420p",
    "yuv420p10le",
    "yuv420p12le",
    "yuv444p",
    "yuv444p10le",
    "yuv444p12le",
    "gbrp",
    "gbrp10le",
    "gbrp12le",
)
"""The names a version-14 payload writes as one byte, their index here plus one (the
vocabulary of docs/format.md §6.15: fixed for good, since a reader maps the bytes back
with it); any other name is written as 0 and its text."""
_U32_MAX = 0xFFFFFFFF

_FLAG_NODATA = 1
_FLAG_EXACT = 2
_FLAG_KLT = 4
_FLAG_CROPPED = 8
_FLAG_TIME_IN_FRAME = 16
_FLAG_WAVELET = 32
_FLAG_DATE_ORDER = 64
# the flag byte's last bit: a later flag needs a field of its own
_FLAG_TRANSPOSED = 128
_KNOWN_FLAGS = (
    _FLAG_NODATA
    | _FLAG_EXACT
    | _FLAG_KLT
    | _FLAG_CROPPED
    | _FLAG_TIME_IN_FRAME
    | _FLAG_WAVELET
    | _FLAG_DATE_ORDER
    | _FLAG_TRANSPOSED
)
_FLAGS_SINCE = {
    _FLAG_KLT: 2,
    _FLAG_CROPPED: 3,
    _FLAG_TIME_IN_FRAME: 4,
    _FLAG_WAVELET: 5,
    _FLAG_DATE_ORDER: DATE_ORDER_VERSION,
    _FLAG_TRANSPOSED: TRANSPOSED_VERSION,
}
# the second flag byte (version 12 on)
_FLAG2_MOSAIC = 1
_KNOWN_FLAGS2 = _FLAG2_MOSAIC
# a wavelet payload codes values, not video planes: no band maps, rotation, row frames,
# frame order or transposition
_NOT_WITH_WAVELET = (
    _FLAG_EXACT | _FLAG_KLT | _FLAG_TIME_IN_FRAME | _FLAG_DATE_ORDER | _FLAG_TRANSPOSED
)

MOSAIC_DB_PER_DOUBLING = 4.0
"""The PSNR one doubling of the bytes buys, as ``frames="auto"`` weighs a mosaic
(:func:`mosaic_grid`) against one date a frame: at one quality a mosaic often codes a
small chunk in half the bytes, a span over which the dev cubes' curves rise 3.9 to 5.5
dB per doubling rather than :data:`eocube.metrics.DB_PER_DOUBLING`'s 6; weighed by 6,
the writer kept mosaics of 52 x 46 px chunks 0.3 dB worse at equal rate
(benchmarks/results/frame_shape.md)."""
RECHECK_DB = 1.0
"""How near the decision (dB of PSNR - :data:`eocube.metrics.DB_PER_DOUBLING` x log2
bytes) two band rotations or layouts, each coded once at the asked quality, are ranked
again at equal rate (:meth:`_VideoCoding.best`), where they were coded whole (not on a
window of the chunk) and their bytes lie far enough apart
that the weight's error (up to 3 dB a doubling: these curves rise 3 to 6) could turn
the margin over: the larger coded again at the quality that should give the smaller's
bytes (:func:`_at_fewer_bytes`), its PSNR there read off the line through its two
points (:func:`_psnr_at`). On the 13-band, 5-date Sentinel-2 cube at crf 16 and 20 the
detail axes take 1.2 and 1.3 times the bytes of the codes' own for a tie by that
weight, and are 0.5 dB better at equal rate; the codes' axes were kept
(benchmarks/results/rotation_recheck/rd_ab.md)."""
MOSAIC_RECHECK_DB = 0.5
"""As :data:`RECHECK_DB`, for a mosaic against one date a frame (their weight,
:data:`MOSAIC_DB_PER_DOUBLING`, errs by up to 1.5 dB a doubling): gfmap 19 x 4 kept
mosaics at crf 4, 10 and 12 that were 0.02 to 0.20 dB worse at equal rate than its
dates one a frame (up to 0.33 by each coding's own curve), and its bytes rose from crf
4 to crf 6. On the small-frame dev cubes every decision that the ranking at equal rate
turned weighed under 0.41 dB (benchmarks/results/mosaic_recheck/rd_ab.md)."""
FRAME_AXES = ("time", "y", "mosaic", "auto")
"""What the frames of a chunk's streams follow (:func:`encode_chunk`'s ``frames``)."""
AUTO_MIN_DATES = 64
"""The fewest dates for which ``frames="auto"`` also tries dates within frames.

Only long runs of closely spaced dates gain: hourly ERA5 2 m temperature, 128 dates of
33 x 49 px, gains 2.8 dB at 0.3 bpppb and 1.8 dB at 1 bpppb; 23-32-date Sentinel-2,
monthly and daily climate cubes lose 2-5 dB (benchmarks/results/frame_axis.md)."""
PROBE_FRAMES = 4
"""Frames of the window a chunk's rotation candidates are tried on (:func:`spectral.candidates`)."""
PROBE_SIDE = 192
"""Rows and columns, at most, of that window: with 4 frames, about 1/14 of a chunk of 32
dates of 256 x 256 px per candidate."""
PROBE_PRESET = "ultrafast"
"""The x264/x265 preset of the encodes that try the rotations on a window (a window of
half the chunk or more is the whole chunk, tried at the profile's own preset and kept):
on the 7 dev cubes whose chunks are tried on a window, the choices of the profile's
preset but on one (a 13-band scene: +0.09 dB instead of +0.15), at a fraction of its
time (ERA-Interim, candidates coded in turn: 1.01 times the encoding without a trial,
against 1.64 at medium; benchmarks/results/klt_basis.md)."""
ORDER_PROBE_SIDE = 64
"""Rows and columns, at most, of the window date orders are tried on: every date of the
block, so a chunk of 32 dates of 256 x 256 px is tried on two windows of 1/16 of it."""
ORDER_PROBE_PRESET: str | None = None
"""The x264/x265 preset date orders are tried at; None: the profile's own, whose trial
coding of a whole block is then its payload. The fastest preset ranked the orders worse
on the dev cubes (three paths tried on ten Sentinel-2 series: 0.07 to 0.2 dB less on
four, within 0.02 dB on the others) for little less time
(benchmarks/results/date_order.md)."""
ORDER_CANDIDATES = 1
"""How many of :func:`eocube.dateorder.candidates` (the shortest paths first) are tried
against time order, where the shortest is not far shorter than it. On the dev cubes
(benchmarks/results/date_order.md), every path tried: the shortest alone takes most of
what the best of three gains (+0.10 dB against +0.14 on average over ten Sentinel-2
series) for two window encodes instead of four."""
LEFTOVER_PAIR = ("auto", "always", "off")
"""How a lossy ``planar3`` block of 2, 5, 8, ... bands codes its two leftover bands
(:func:`encode_chunk`'s ``leftover_pair``).

In a 4:4:4 frame of their own (``planar3-pair``) they share one coding tree, modes and
motion; as luma frames each band is coded on its own. At equal rate on 2- and 5-band
dev cubes and band pairs of Sentinel-2 series (benchmarks/results/leftover_pair.md) the
shared frame gains 0.3 to 1.05 dB at 0.1 bpppb and up to 0.9 dB at 0.3, 0.05 to 0.16 dB
at 1 bpppb on Sentinel-2 bands, and loses at high rates on fields with little in common
(two climate variables: 0.5 dB at 1 bpppb; a 5-band ocean-colour scene: 0.4 dB at 0.3,
1.1 dB at 1): ``"auto"`` tries both."""
WAVELET_MARGIN_DB = 0.25
"""What the wavelet coding must gain over the video's (dB at equal bytes; bytes at equal
bound, 3 %) to be kept: its chunks decode on the CPU only, and more slowly."""
WAVELET_SPLIT_REACH_DB = 1.5
"""How far below the margin a wavelet coding of equal shares per band may fall and still
be coded again with its bytes split among the bands (:func:`eocube.wavelet.encode`),
which gains up to about 1.3 dB (0.5 on ERA-Interim): on blocks the video codes far
better, the split's five SPERR codings a band would change nothing."""

_MASK_NAN = 0
_MASK_NODATA = 1
_MASK_RUNS = 0x80  # added to a mask's kind: coded by eocube.masks, not zlib


@dataclass(frozen=True)
class ChunkHeader:
    """What a payload says about itself (see :func:`read_header`)."""

    version: int
    dtype: np.dtype
    shape: tuple[int, int, int, int]
    bits: int
    layout: str
    profile: str
    exact: bool
    nodata: float | None
    offset: np.ndarray
    """Per band: ``value = offset + code * scale``; with ``wavelet``, the band's smallest
    valid value (and ``scale`` its largest): the range its decode is clipped to."""
    scale: np.ndarray
    spectral: spectral.SpectralBasis | None = None
    coded: tuple[int, int, int] | None = None
    """``(T', Y', X')`` when only ``block[:T', :, :Y', :X']`` is coded; the rest is ``fill``."""
    fill: float | None = None
    time_in_frame: bool = False
    """Whether the streams hold the coded part with T and Y swapped (frames are rows)."""
    wavelet: bool = False
    """Whether a wavelet coder (:mod:`eocube.wavelet`) codes the values, not a video."""
    date_order: np.ndarray | None = None
    """The coded part's dates in the order the streams code them (int64, a permutation
    of ``range(T')``); None: time order."""
    transposed: bool = False
    """Whether the streams hold the coded part with Y and X swapped (frames of X rows)."""
    mosaic: tuple[int, int] | None = None
    """(rows, cols): the streams' frames hold that grid of dates side by side
    (:mod:`eocube.mosaic`); None: one date a frame."""

    @property
    def coded_shape(self) -> tuple[int, int, int, int]:
        """Shape of the part of the block the streams hold."""
        if self.coded is None:
            return self.shape
        t, y, x = self.coded
        return (t, self.shape[1], y, x)

    @property
    def stream_shape(self) -> tuple[int, int, int, int]:
        """(frames, B, rows, columns) of the code planes the streams hold: the coded
        shape, with T and Y swapped under TIME_IN_FRAME, its dates laid out side by side
        under MOSAIC, then Y and X swapped under TRANSPOSED."""
        t, b, y, x = self.coded_shape
        if self.time_in_frame:
            return (y, b, t, x)
        if self.mosaic is not None:
            t, y, x = mosaic_mod.frame_count(t, self.mosaic), y * self.mosaic[0], x * self.mosaic[1]
        return (t, b, x, y) if self.transposed else (t, b, y, x)

    @property
    def flags(self) -> int:
        """The flag byte this header is written with."""
        return (
            (_FLAG_NODATA if self.nodata is not None else 0)
            | (_FLAG_EXACT if self.exact else 0)
            | (_FLAG_KLT if self.spectral is not None else 0)
            | (_FLAG_CROPPED if self.coded is not None else 0)
            | (_FLAG_TIME_IN_FRAME if self.time_in_frame else 0)
            | (_FLAG_WAVELET if self.wavelet else 0)
            | (_FLAG_DATE_ORDER if self.date_order is not None else 0)
            | (_FLAG_TRANSPOSED if self.transposed else 0)
        )

    @property
    def flags2(self) -> int:
        """The second flag byte (written from version 12 on)."""
        return _FLAG2_MOSAIC if self.mosaic is not None else 0

    def to_bytes(self) -> bytes:
        """The header as it starts a payload (docs/format.md, "Chunk payload")."""
        w = ByteWriter()
        w.raw(MAGIC)
        w.pack("BB", self.version, self.flags)
        if self.version >= MOSAIC_VERSION:
            w.pack("B", self.flags2)
        compact = self.version >= COMPACT_VERSION
        lean = self.version >= LEAN_VERSION
        _write_name(w, self.dtype.str, lean)
        _write_sizes(w, self.shape, compact)
        if self.coded is not None:
            assert self.fill is not None
            _write_sizes(w, self.coded, compact)
            w.pack("d", self.fill)
        w.pack("B", self.bits)
        _write_name(w, self.layout, lean)
        _write_name(w, self.profile, lean)
        if self.nodata is not None:
            w.pack("d", self.nodata)
        if compact:
            w.raw(self._stored_ranges().tobytes())
        else:
            w.raw(np.stack([self.offset, self.scale], axis=1).astype("<f8").tobytes())
        if self.spectral is not None:
            _write_basis(w, self.spectral, self.version)
        if self.mosaic is not None:
            w.pack("BB", *self.mosaic)
        if self.date_order is not None:
            for date in self.date_order.tolist():
                w.varint(date)
        return w.getvalue()

    def _stored_ranges(self) -> np.ndarray:
        """The band maps as the compact header stores them (:data:`COMPACT_VERSION`): each
        band's smallest and largest value (the smallest alone under EXACT, whose scale is
        1), in the block's own type, whose values they are. Raises if they do not give
        back :attr:`offset` and :attr:`scale` exactly."""
        stored = self.dtype.newbyteorder("<")
        low = self.offset.astype(stored)
        if self.wavelet:
            ranges = np.stack([low, self.scale.astype(stored)], axis=1)
        elif self.exact:
            ranges = low
        else:
            ranges = np.stack([low, _band_max(self.offset, self.scale, self.bits, stored)], axis=1)
        offset, scale = _maps_from_ranges(ranges, self.bits, self.exact, self.wavelet)
        if not (np.array_equal(offset, self.offset) and np.array_equal(scale, self.scale)):
            raise ValueError(
                f"band maps {self.offset.tolist()} / {self.scale.tolist()} are not those of "
                f"{stored} band ranges"
            )
        return ranges

    @classmethod
    def from_bytes(cls, data: bytes | memoryview | ByteReader) -> ChunkHeader:
        """Parse and check a header (from a payload, or a reader positioned at one).

        Raises
        ------
        CorruptChunkError
            For a bad magic, an unknown version or flag, or fields that contradict
            each other.
        """
        r = data if isinstance(data, ByteReader) else ByteReader(data)
        return _read_header(r)


def _write_name(w: ByteWriter, value: str, lean: bool) -> None:
    if lean:
        w.name(value, NAMES)
    else:
        w.text(value)


def _read_name(r: ByteReader, lean: bool) -> str:
    return r.name(NAMES) if lean else r.text()


def _write_basis(w: ByteWriter, basis: spectral.SpectralBasis, version: int) -> None:
    """The KLT fields of a version-``version`` header. Raises ValueError for a basis that
    such a header cannot hold exactly (from version 14: an origin or step that is not
    float32, axes that are not those of 10-bit Householder vectors)."""
    B = basis.bands
    if version >= LEAN_VERSION:
        origin = basis.origin.astype("<f4")
        step = np.float32(basis.step)
        if not (np.array_equal(origin, basis.origin) and float(step) == basis.step):
            raise ValueError("this KLT origin or step is not one of float32 values")
        w.raw(origin.tobytes())
        w.bits(
            _stored_axes(basis, spectral.AXIS_SCALE) + (1 << (spectral.AXIS_BITS - 1)),
            spectral.AXIS_BITS,
        )
        w.raw(step.tobytes())
        return
    # the layouts before: band means and component offsets, which an origin of float32
    # values is with offsets of 0
    mean = basis.origin.astype("<f4")
    if not np.array_equal(mean, basis.origin):
        raise ValueError("this KLT origin is not one of float32 values")
    w.raw(mean.tobytes())
    if version >= COMPACT_VERSION:
        w.raw(_stored_axes(basis, spectral.V13_AXIS_SCALE).astype("<i2").tobytes())
    else:
        w.raw(basis.basis.astype("<f4").tobytes())
    w.raw(np.zeros(B, "<f4").tobytes())
    w.pack("d", basis.step)


def _stored_axes(basis: spectral.SpectralBasis, scale: int) -> np.ndarray:
    """The basis as Householder values at ``scale``; raises if they do not give back
    :attr:`SpectralBasis.basis` exactly (a basis that no header of that scale holds)."""
    stored = basis.stored
    if stored is None or np.abs(stored).max(initial=0) > scale:
        stored = spectral.stored_axes(basis.basis, scale)
    if not np.array_equal(spectral.axes_from_stored(stored, basis.bands, scale), basis.basis):
        raise ValueError(f"this KLT basis is not one of Householder values at 1/{scale}")
    return stored.astype(np.int64)


def _write_sizes(w: ByteWriter, sizes: Sequence[int], compact: bool) -> None:
    if compact:
        for size in sizes:
            w.varint(size)
    else:
        w.pack("I" * len(sizes), *sizes)


def _read_sizes(r: ByteReader, n: int, compact: bool) -> tuple[int, ...]:
    if not compact:
        return tuple(r.unpack("I" * n))
    sizes = tuple(r.varint() for _ in range(n))
    if max(sizes) > _U32_MAX:
        raise CorruptChunkError(f"payload has a size beyond 32 bits in {sizes}")
    return sizes


def _band_max(offset: np.ndarray, scale: np.ndarray, bits: int, stored: np.dtype) -> np.ndarray:
    """Each band's largest value (in ``stored``, the block's dtype) whose map is
    ``offset, scale``: ``offset + scale * max_code`` lands within float rounding of it,
    so the neighbouring values of ``stored`` are tried until one maps back exactly."""
    max_code = float((1 << bits) - 1)
    near = offset + scale * max_code
    if stored.kind in "iu":
        return np.rint(near).astype(stored)
    high = near.astype(stored)
    for b in range(len(high)):
        candidate = high[b]
        for _ in range(8):
            if (np.float64(candidate) - offset[b]) / max_code == scale[b]:
                high[b] = candidate
                break
            # the map's top lies below the true maximum more often than above it
            below = (np.float64(candidate) - offset[b]) / max_code > scale[b]
            candidate = np.nextafter(candidate, -np.inf if below else np.inf, dtype=stored)
    return high


def _maps_from_ranges(
    ranges: np.ndarray, bits: int, exact: bool, wavelet: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, scale)`` per band (float64) from the compact header's band ranges: a
    wavelet payload keeps (min, max), an exact one maps with scale 1, any other maps its
    range onto the codes ``0 .. 2**bits - 1`` as :func:`eocube.packing.band_maps` does."""
    values = ranges.astype(np.float64).reshape(len(ranges), -1)
    if exact and not wavelet:
        return values[:, 0], np.ones(len(values))
    low, high = values[:, 0], values[:, 1]
    if wavelet:
        return low, high
    return low, packing.lossy_scale(low, high, bits)


def _resolve_nodata(dtype: np.dtype, nodata: float | None) -> float | None:
    if nodata is None:
        return None
    value = float(nodata)
    if value != value:  # NaN is always missing for floats; nothing more to declare
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (info.min <= value <= info.max) or value != int(value):
            raise UnsupportedDataError(f"nodata {nodata!r} is not a value of dtype {dtype}")
    return value


def check_encoder_options(prof: Profile) -> None:
    """Refuse a profile whose encoder would skip one of its options.

    FFmpeg leaves an AVOption it does not know unused, and x265, x264 and SVT-AV1 skip a
    name in their parameter string they do not know, with a log line at most: a misspelt
    option in a profile file would change nothing, silently. Checked once per profile and
    process (:func:`eocube.video.unknown_options`).

    Raises
    ------
    ProfileError
        Naming the options the encoder would skip.
    """
    unknown = video.unknown_options(prof.encoder, prof.pix_fmt, prof.encoder_options())
    if unknown:
        raise ProfileError(
            f"profile {prof.name!r}: encoder {prof.encoder} would skip "
            f"{', '.join(unknown)} (FFmpeg ignores what an encoder does not know); "
            "check the names and values in the profile's [options]"
        )


def encode_chunk(
    block: np.ndarray,
    profile: str | Profile | None = None,
    *,
    quality: float | None = None,
    nodata: float | None = None,
    max_abs_error: float | Sequence[float] | None = None,
    frames: str = "auto",
    wavelet: str | None = None,
    leftover_pair: str = "auto",
    date_order: str | Sequence[int] = "auto",
    threads: int = 0,
) -> bytes:
    """Encode a block of shape (T, B, Y, X) (or (T, Y, X)) into a chunk payload.

    Parameters
    ----------
    block : ndarray
        uint8, uint16, int16, int32, float32 or float64. NaN marks missing values.
    profile : str or Profile, optional
        Codec profile (default :data:`eocube.profiles.DEFAULT_PROFILE`).
    quality : float, optional
        The profile's quality option (``crf``); lossy profiles only. Below the profile's
        ``video_min`` (profiles with a wavelet coder), the video stays at ``video_min``
        and the wavelet coding gets more bytes (:meth:`eocube.profiles.Quality.wavelet_share`).
    nodata : number, optional
        A value marking missing data; it is restored exactly on decode.
    max_abs_error : float or sequence of float, optional
        A hard bound on the absolute error of every valid value (one per band, or
        one for all), kept by a residual layer over the video (eocube.residual).
    frames : {"auto", "time", "y", "mosaic"}
        What the frames of the streams follow. ``"time"``: one frame per date (a band's
        image). ``"y"``: one frame per row, holding that row of every date (chunk format
        version 4), which codes long runs of closely spaced dates of smooth fields
        better. ``"mosaic"``: several dates side by side in a frame (chunk format 12,
        :func:`mosaic_grid`, :mod:`eocube.mosaic`), which codes small frames better.
        ``"auto"``: ``"time"``, except for lossy profiles on blocks of at least
        :data:`AUTO_MIN_DATES` dates, which are also coded with rows as frames (the
        better kept by PSNR and bytes, :data:`eocube.metrics.DB_PER_DOUBLING`), and on
        blocks of small frames (:func:`mosaic_grid`), which are also coded with several
        dates a frame (a mosaic, chunk format 12, :mod:`eocube.mosaic`; not where rows
        as frames are kept), kept where it is better by PSNR and bytes
        (:data:`MOSAIC_DB_PER_DOUBLING`): two or three times the encoding time.
    wavelet : {"off", "auto", "always"}, optional
        Default: the profile's ``wavelet``. Whether the block may be coded by the
        wavelet coder (:mod:`eocube.wavelet`, chunk format version 5) instead of the
        video. ``"auto"``: lossy blocks are
        coded both ways, the wavelet at the video's bytes (or, with ``max_abs_error``,
        at :data:`eocube.wavelet.BOUND_SLACK` times the bound, the residual layer
        bringing every value within it), and the wavelet coding is kept where it gains more than
        :data:`WAVELET_MARGIN_DB` (smooth fields: +1 to +5 dB); such chunks decode on
        the CPU only. ``"always"``: the wavelet coding wherever it applies (blocks with
        two axes of (T, Y, X) longer than one), for tests and comparisons.
    leftover_pair : {"auto", "always", "off"}
        Where a lossy ``planar3`` profile codes a block of 2, 5, 8, ... bands (after
        any rotation), whose last two bands fill no 4:4:4 frame: ``"off"``, one per
        frame of a second, single-plane stream; ``"always"``, together in 4:4:4 frames
        of the main stream (layout ``planar3-pair``, chunk format version 8);
        ``"auto"`` tries both, as rotations are tried (on a window of the block), and
        keeps the better by PSNR and bytes (:data:`LEFTOVER_PAIR`).
    date_order : {"auto", "time"} or sequence of int
        The order the video codes the block's dates in (dates as frames only). ``"time"``:
        time order. ``"auto"``: for a lossy block of :data:`eocube.dateorder.MIN_DATES`
        to :data:`eocube.dateorder.MAX_DATES` dates, the shortest path of
        :func:`eocube.dateorder.candidates`: as it is where it is far shorter than time
        order (:data:`eocube.dateorder.CLEAR`), else tried against time order (on a
        window of all dates and at most :data:`ORDER_PROBE_SIDE` squared pixels, or whole
        when that window would be half of it) and the better by PSNR and bytes kept. A
        permutation of ``range(T)``: that order (dates of zarr's padding beyond the coded
        part left out). An order other than time order is stored (chunk format 9).
    threads : int
        Codec threads (0: the codec decides).

    Returns
    -------
    bytes
        The payload; :func:`decode_chunk` returns the block from it. Lossless profiles
        return integer data bit-exactly; lossy ones bound nothing unless
        ``max_abs_error`` is given.

    Raises
    ------
    UnsupportedDataError
        Unsupported dtype or shape, infinite values, or a lossless profile too shallow
        for the data's range (the message names the bits needed).
    ProfileError
        If the profile's encoder would skip one of its options (:func:`check_encoder_options`).
    ValueError
        If ``frames`` is not one of :data:`FRAME_AXES`, ``wavelet`` not one of
        :data:`eocube.wavelet.CHOICES`, ``leftover_pair`` not one of
        :data:`LEFTOVER_PAIR`, or ``date_order`` not one of :data:`eocube.dateorder.CHOICES`
        nor a permutation of the block's dates (or given with ``frames="y"``).
    """
    if frames not in FRAME_AXES:
        raise ValueError(f"frames must be one of {', '.join(FRAME_AXES)}, not {frames!r}")
    given_order = None
    if isinstance(date_order, str):
        if date_order not in dateorder.CHOICES:
            raise ValueError(
                f"date_order must be one of {', '.join(dateorder.CHOICES)} or a permutation "
                f"of the block's dates, not {date_order!r}"
            )
    else:
        given_order = np.asarray(date_order)
        if frames == "y":
            raise ValueError("date_order: a date order needs dates as frames, not frames='y'")
    if leftover_pair not in LEFTOVER_PAIR:
        raise ValueError(
            f"leftover_pair must be one of {', '.join(LEFTOVER_PAIR)}, not {leftover_pair!r}"
        )
    prof = get_profile(profile)
    check_encoder_options(prof)
    if wavelet is None:
        wavelet = prof.wavelet
    if wavelet not in wavelet_mod.CHOICES:
        raise ValueError(
            f"wavelet must be one of {', '.join(wavelet_mod.CHOICES)}, not {wavelet!r}"
        )
    block = np.asarray(block)
    if block.ndim == 3:
        block = block[:, None]
    if block.ndim != 4 or 0 in block.shape:
        raise UnsupportedDataError(
            "a chunk must have shape (T, B, Y, X) or (T, Y, X) with no empty axis, "
            f"got {block.shape}"
        )
    dtype = packing.check_dtype(block.dtype)
    block = np.ascontiguousarray(block)
    nodata = _resolve_nodata(dtype, nodata)
    exact = prof.lossless
    full_shape = block.shape
    crop = _crop(block, nodata)
    if crop is not None:
        (t_end, y_end, x_end), fill = crop
        block = np.ascontiguousarray(block[:t_end, :, :y_end, :x_end])
    try:
        maps = packing.band_maps(block, prof.bits, exact=exact, nodata=nodata)
    except UnsupportedDataError as exc:
        raise UnsupportedDataError(f"profile {prof.name!r}: {exc}") from None
    T, B, Y, X = block.shape
    if given_order is not None:
        if given_order.dtype.kind not in "iu" or not dateorder.is_permutation(
            given_order, full_shape[0]
        ):
            raise ValueError(
                f"date_order must be a permutation of range({full_shape[0]}), the block's "
                f"dates; got {np.asarray(date_order).tolist()!r}"
            )
        # zarr's padding beyond the coded part is not coded: its dates leave the order
        kept = given_order[given_order < T].astype(np.int64)
        given_order = None if np.array_equal(kept, np.arange(T)) else kept
    options = prof.encoder_options(quality)
    base = ChunkHeader(
        version=FORMAT_VERSION,
        dtype=dtype,
        shape=full_shape,
        bits=prof.bits,
        layout=prof.layout,
        profile=prof.name,
        exact=exact,
        nodata=nodata,
        offset=maps.offset,
        scale=maps.scale,
        coded=(T, Y, X) if crop is not None else None,
        fill=fill if crop is not None else None,
    )

    def without_residual(
        time_in_frame: bool, grid: tuple[int, int] | None = None, at: float | None = quality
    ) -> bytes:
        rows, cols = (Y, X) if grid is None else (grid[0] * Y, grid[1] * X)
        opts = options if at == quality else prof.encoder_options(at)
        coding = _VideoCoding(
            prof,
            maps,
            opts,
            nodata,
            time_in_frame,
            threads,
            transposed=not time_in_frame and transposes(prof, opts, rows, cols),
            mosaic=grid,
            quality=None if prof.quality is None else (prof.quality.default if at is None else at),
        )
        frame = coding.frame_codes(block)
        rotations = _rotations(frame, prof)
        layouts = _layouts(prof, B, leftover_pair)
        first: Coding = (rotations[0], layouts[0])
        ordered: tuple[float, bytes] | None = None
        if given_order is not None and not time_in_frame:
            coding = replace(coding, date_order=given_order)
        elif isinstance(date_order, str):
            # the date order first, in the first rotation and layout (whole: that payload)
            orders, clear = _date_orders(frame, prof, date_order, time_in_frame)
            if clear:  # a path far shorter than time order: no trial
                coding = replace(coding, date_order=orders[0])
            else:
                orders = orders[:ORDER_CANDIDATES]
                coding, ordered = _best_date_order(coding, block, base, frame, orders, first)
        if len(rotations) == 1 and len(layouts) == 1:
            return ordered[1] if ordered else coding.payload(block, base, first, frame)
        probe = np.ascontiguousarray(block[_probe_window(block.shape, time_in_frame)])
        # a window of half the block or more costs about as much as coding the whole
        # block with each: its best coding is then the payload
        whole = 2 * probe.size >= block.size
        if whole:
            trial, trial_block, trial_base = coding, block, base
        else:
            # a window of a few dates: in time order (the order is the block's), one date a
            # frame (a mosaic needs more dates than a window may have)
            # a close call on a window is not ranked again at equal rate: what a window
            # coded at the fastest preset says at equal rate did not carry over to the
            # chunk (the single-date 13-band scene at crf 20 and 24: 0.1 and 0.4 dB
            # worse, benchmarks/results/rotation_recheck)
            trial = replace(coding.probing(), date_order=None, quality=None)
            trial_block = probe
            if coding.mosaic is not None:
                trial = replace(trial, mosaic=None, transposed=transposes(prof, options, Y, X))
            trial_base = replace(base, shape=probe.shape, coded=None, fill=None)
        # the rotation first, in the profile's layout; then that rotation in the others
        if whole and ordered and len(rotations) == 1:
            pick, scored = 0, ordered
        elif whole and ordered:
            others = [(r, layouts[0]) for r in rotations[1:]]
            pick, scored = trial.best(trial_block, trial_base, others, against=(first, ordered))
        else:
            candidates = [(r, layouts[0]) for r in rotations]
            pick, scored = trial.best(trial_block, trial_base, candidates)
        rotation, layout = rotations[pick], layouts[0]
        if len(layouts) > 1:
            others = [(rotation, other) for other in layouts[1:]]
            pick, scored = trial.best(
                trial_block, trial_base, others, against=((rotation, layouts[0]), scored)
            )
            layout = layouts[pick]
        if whole:
            return scored[1]
        if ordered and rotation is first[0] and layout == first[1]:
            return ordered[1]
        return coding.payload(block, base, (rotation, layout), frame)

    decoded = None
    rows_too = frames == "auto" and not exact and T >= AUTO_MIN_DATES and Y > 1
    grid = None
    if frames == "auto" and given_order is None:
        grid = mosaic_grid(prof, options, T, Y, X)
    if rows_too or grid is not None:

        def decoded_and_psnr(payload: bytes) -> tuple[np.ndarray, float]:
            # decoded as decode_chunk returns it: the residual corrects what that returns
            out = decode_chunk(payload, threads=threads)[:T, :, :Y, :X]
            return out, _psnr_for_choice(block, out, nodata)

        without = without_residual(False)
        decoded, psnr = decoded_and_psnr(without)
        rows_kept = False
        if rows_too:
            rows = without_residual(True)
            rows_decoded, rows_psnr = decoded_and_psnr(rows)
            saved_db = DB_PER_DOUBLING * math.log2(len(without) / len(rows))
            if rows_psnr - psnr + saved_db > 0:
                without, decoded, psnr = rows, rows_decoded, rows_psnr
                rows_kept = True
        # rows as frames already code every date of a row together: a mosaic, which
        # codes a few dates together, is not tried against them (hourly ERA5: rows gain
        # 2.0 / 1.2 dB at 0.3 / 1 bpppb, a mosaic 1.2 / 0.1, frame_shape.md)
        if grid is not None and not rows_kept:
            tiled = without_residual(False, grid)
            tiled_decoded, tiled_psnr = decoded_and_psnr(tiled)
            saved_db = MOSAIC_DB_PER_DOUBLING * math.log2(len(without) / len(tiled))
            gain_db = tiled_psnr - psnr + saved_db
            # the weight errs by up to 1.5 dB a doubling: a margin beyond what that could
            # turn over stands
            apart = abs(math.log2(len(without) / len(tiled)))
            if abs(gain_db) < min(MOSAIC_RECHECK_DB, 1.5 * apart):
                # one point of each coding, far apart in rate, ranks them by an assumed
                # slope: near the decision, the larger coding is made again at a coarser
                # quality, to about the other's bytes, and they are ranked there
                larger = None if len(without) > len(tiled) else grid
                smaller_size, smaller_psnr = (
                    (len(tiled), tiled_psnr) if larger is None else (len(without), psnr)
                )
                coarser = _at_fewer_bytes(
                    prof, quality, max(len(without), len(tiled)) / smaller_size
                )
                if coarser is not None:
                    remade = without_residual(False, larger, coarser)
                    larger_point = (
                        (len(tiled), tiled_psnr) if larger is not None else (len(without), psnr)
                    )
                    at_smaller = _psnr_at(
                        smaller_size,
                        larger_point,
                        (len(remade), decoded_and_psnr(remade)[1]),
                        MOSAIC_DB_PER_DOUBLING,
                    )
                    gain_db = (
                        smaller_psnr - at_smaller if larger is None else at_smaller - smaller_psnr
                    )
            if gain_db > 0:
                without, decoded = tiled, tiled_decoded
    elif frames == "mosaic":
        grid = mosaic_grid(prof, options, T, Y, X)
        if grid is None or given_order is not None:
            raise ValueError(
                f"frames='mosaic' needs a lossy profile ({prof.name!r} is "
                f"{'lossless' if exact else 'lossy'}), no given date order, at least 4 dates "
                f"(the block codes {T}) and frames the codec codes in fewer than "
                f"{mosaic_mod.FILL_AREA} px (the block's are {Y} x {X})"
            )
        without = without_residual(False, grid)
    else:
        without = without_residual(frames == "y")
    bounds = None
    if max_abs_error is not None and not exact:
        bounds = residual.band_bounds(np.asarray(max_abs_error, dtype=np.float64), B)
    if wavelet == "off" or exact or wavelet_mod.volume_shape(T, Y, X) is None:
        return _with_residual(without, block, decoded, nodata, bounds, threads)
    share = 1.0 if prof.quality is None or quality is None else prof.quality.wavelet_share(quality)
    return _video_or_wavelet(
        block, without, decoded, base, maps, nodata, bounds, wavelet == "always", threads, share
    )


def _video_or_wavelet(
    block: np.ndarray,
    without: bytes,
    decoded: np.ndarray | None,
    base: ChunkHeader,
    maps: packing.BandMaps,
    nodata: float | None,
    bounds: np.ndarray | None,
    always: bool,
    threads: int,
    share: float = 1.0,
) -> bytes:
    """The (cropped) block's video payload ``without`` its residual layer (``decoded``: its
    decode, if made), or the wavelet coding where that is better (``always``: wherever
    SPERR can code it); the residual layer added under ``bounds``. See
    :func:`encode_chunk`'s ``wavelet``. Without bounds the wavelet coding gets ``share``
    times the video's bytes; above 1 (a quality below the profile's ``video_min``: a rate
    the video cannot spend) it is kept, at those bytes, where the wavelet coding at the
    video's bytes is kept: the block's coding is chosen at equal bytes."""
    T, B, Y, X = block.shape
    values, invalid = _filled_values(block, maps, base.bits, nodata)
    if not wavelet_mod.codable(values):
        return _with_residual(without, block, decoded, nodata, bounds, threads)
    lows, highs = _band_ranges(block, invalid)
    # a wavelet payload's "maps" are each band's range, which its decode keeps to
    masks, needs = _masks_part(block, invalid, nodata)
    header = replace(
        base,
        version=max(FORMAT_VERSION, needs),
        exact=False,
        offset=lows,
        scale=highs,
        wavelet=True,
    )

    def wavelet_payload(section: bytes) -> bytes:
        if wavelet_mod.is_periodic(section):
            return replace(header, version=max(header.version, PERIODIC_VERSION)).to_bytes() + (
                section + masks + b"\x00"
            )
        return header.to_bytes() + section + masks + b"\x00"

    def unbounded(payload: bytes) -> bytes:
        # the layer that keeps valid values off nodata, where one is needed
        return _with_residual(payload, block, None, nodata, None, threads)

    if bounds is None:
        video_payload = without
        # the wavelet coding gets the video's bytes, less what both payloads hold
        fixed = len(wavelet_payload(b"")) + wavelet_mod.section_overhead(B)

        def coded_at(share: float, split: bool = True) -> bytes | None:
            bits = 8 * (share * len(without) - fixed) / values.size
            if bits <= 0:
                return None
            bits = min(bits, wavelet_mod.MAX_BITS_PER_VALUE)
            keep = None if invalid is None else ~invalid
            section = wavelet_mod.encode(
                values, bits_per_value=bits, valid=keep, threads=threads, split=split
            )
            return wavelet_payload(section)

        if always:
            return unbounded(coded_at(share) or without)
        # equal shares first: one SPERR coding a band tells whether a split could matter
        candidate = coded_at(1.0, split=False)
        if candidate is None:
            return unbounded(without)
        if decoded is None:
            decoded = decode_chunk(without, threads=threads)[:T, :, :Y, :X]
        video_db = _psnr_for_choice(block, decoded, nodata)

        def psnr_gain(payload: bytes) -> float:
            wavelet_db = _psnr_for_choice(block, decode_chunk(payload)[:T, :, :Y, :X], nodata)
            return wavelet_db - video_db

        def bytes_db(payload: bytes) -> float:
            return DB_PER_DOUBLING * math.log2(len(without) / len(payload))

        gain_db = psnr_gain(candidate)
        if B > 1 and gain_db + bytes_db(candidate) > WAVELET_MARGIN_DB - WAVELET_SPLIT_REACH_DB:
            split = coded_at(1.0)
            if split is not None:
                split_gain = psnr_gain(split)
                if split_gain + bytes_db(split) > gain_db + bytes_db(candidate):
                    candidate, gain_db = split, split_gain
        if share > 1 and gain_db > WAVELET_MARGIN_DB:
            # a rate the video cannot spend, on a block the wavelet codes better at the
            # video's bytes: the wavelet spends it. Chosen at equal bytes, so that a
            # block's coding does not flip as the rate grows and bytes keep rising as
            # the quality falls (rate control searches on that)
            return unbounded(coded_at(share) or candidate)
    else:
        video_payload = _with_residual(without, block, decoded, nodata, bounds, threads)
        tolerance = wavelet_mod.BOUND_SLACK * (
            bounds if block.dtype.kind == "f" else wavelet_mod.integer_tolerance(bounds)
        )
        if not np.all(tolerance > 0) or not wavelet_mod.codable(values, tolerance):
            return video_payload
        coded = wavelet_payload(wavelet_mod.encode(values, tolerance=tolerance))
        candidate = _with_residual(coded, block, None, nodata, bounds, threads)
        if always:
            return candidate
        gain_db = 0.0
    saved_db = DB_PER_DOUBLING * math.log2(len(video_payload) / len(candidate))
    chosen = candidate if gain_db + saved_db > WAVELET_MARGIN_DB else video_payload
    return chosen if bounds is not None else unbounded(chosen)


def _with_residual(
    payload: bytes,
    block: np.ndarray,
    decoded: np.ndarray | None,
    nodata: float | None,
    bounds: np.ndarray | None,
    threads: int,
) -> bytes:
    """``payload`` (its residual count 0) with the residual layer that brings its decode
    within ``bounds`` of ``block`` (the coded part), if one is needed.

    Without bounds a layer is still needed where a valid value may decode to ``nodata``,
    which would read as missing: a lossy decode stays within each band's valid range, so
    only where nodata lies inside one (:func:`_nodata_inside_a_band`). The layer then
    holds those values exactly (its exceptions)."""
    if bounds is None and not _nodata_inside_a_band(block, nodata):
        return payload
    if bounds is None and read_header(payload).exact:
        return payload
    T, _, Y, X = block.shape
    if decoded is None:
        # the residual corrects exactly what decode_chunk returns, through the same path
        decoded = decode_chunk(payload, threads=threads)[:T, :, :Y, :X]
    valid = metrics.valid_mask(block, nodata)
    layer = residual.compute(block, decoded, valid, bounds, nodata)
    if layer is None:
        return payload
    w = ByteWriter()
    w.raw(payload[:-1])
    w.pack("B", 1)
    w.blob(residual.to_bytes(layer))
    return w.getvalue()


def shared_frame_size(
    prof: Profile, options: Mapping[str, str], rows: int, cols: int, lossless: bool
) -> tuple[int, int]:
    """The frame size of a chunk's streams for frames of ``rows`` x ``cols``: that of
    :func:`eocube.video.frame_size` for the profile's pixel format and, with a second
    stream, the larger of both sides (both streams share one frame size, so one set of
    codes serves them)."""
    height, width = video.frame_size(prof.encoder, prof.pix_fmt, rows, cols, lossless, options)
    if prof.extra_pix_fmt is not None:
        h2, w2 = video.frame_size(prof.encoder, prof.extra_pix_fmt, rows, cols, lossless, options)
        height, width = max(height, h2), max(width, w2)
    return height, width


def transposes(prof: Profile, options: Mapping[str, str], rows: int, cols: int) -> bool:
    """Whether a lossy profile codes frames of ``rows`` x ``cols`` with Y and X swapped
    (flag TRANSPOSED, chunk format 11): where the codec's frame is smaller that way.

    x265 pads a frame to whole 8 x 8 blocks, its lossy frames to more than one CTU in
    width, and frames of its unsafe widths (33 to 48) to 64 columns
    (:func:`eocube.video.frame_size`): a 52 x 46 px chunk is coded as 56 x 64, its
    transpose as 48 x 56. At equal rate on such chunks of six dev cubes (frames of 40 to 46
    columns): +0.40 to +0.69 dB at 0.3 bpppb, +0.33 to +0.56 at 1; one whose transpose is
    larger (33 x 49 px) loses 0.5 to 0.6 dB, so only a strictly smaller frame is swapped
    to (benchmarks/results/frame_shape.md). Lossless profiles keep their frames."""
    if prof.lossless or rows == cols:
        return False
    return _coded_area(prof, options, cols, rows) < _coded_area(prof, options, rows, cols)


def _coded_area(prof: Profile, options: Mapping[str, str], rows: int, cols: int) -> int:
    """Pixels of a lossy frame of ``rows`` x ``cols`` as the codec codes it: its frame
    (:func:`shared_frame_size`) in whole 8 x 8 blocks."""
    h, w = shared_frame_size(prof, options, rows, cols, False)
    return -(-h // 8) * 8 * (-(-w // 8) * 8)


def mosaic_grid(
    prof: Profile, options: Mapping[str, str], dates: int, rows: int, cols: int
) -> tuple[int, int] | None:
    """The grid of dates (rows, cols) a lossy chunk of ``dates`` dates of ``rows`` x
    ``cols`` px is tried as a mosaic with (:mod:`eocube.mosaic`, chunk format 12), or
    None: for frames the codec codes in fewer than :data:`eocube.mosaic.FILL_AREA` pixels.

    Of the grids of :func:`eocube.mosaic.grids`, the one the codec codes in the fewest
    pixels a date (transposed where that is smaller, :func:`transposes`), the squarer on
    ties. A mosaic is kept where it codes the chunk better (:func:`encode_chunk`): at
    equal rate, what the writer keeps gains +4.5 / +1.3 / +0.7 dB at 0.1 / 0.3 / 1 bpppb
    on 32 x 32 px tiles of 32 dates and +0.4 / +0.7 at 0.3 / 1 on 44 x 48 px; 52 x 46 px
    +1.5 at 0.1 and level at 0.3 (benchmarks/results/frame_shape.md)."""
    if prof.lossless or _coded_area(prof, options, rows, cols) >= mosaic_mod.FILL_AREA:
        return None
    best: tuple[tuple[float, int], tuple[int, int]] | None = None
    for grid in mosaic_mod.grids(dates, rows, cols):
        height, width = grid[0] * rows, grid[1] * cols
        area = min(
            _coded_area(prof, options, height, width), _coded_area(prof, options, width, height)
        )
        key = (area / (grid[0] * grid[1]), abs(height - width))
        if best is None or key < best[0]:
            best = (key, grid)
    return None if best is None else best[1]


def _at_fewer_bytes(prof: Profile, quality: float | None, ratio: float) -> float | None:
    """The quality that should code a chunk in ``1 / ratio`` times its bytes at
    ``quality`` (bytes halve about every 6 quality steps in x265 and SVT-AV1), or None
    where the profile gives no coarser setting."""
    scale = prof.quality
    if scale is None or ratio <= 1:
        return None
    asked = scale.default if quality is None else float(quality)
    coarser = scale.snap(asked + 6.0 * math.log2(ratio))
    if scale.setting(coarser) == scale.setting(asked):
        return None
    return coarser


def _psnr_at(
    size: int, one: tuple[int, float], other: tuple[int, float], db_per_doubling: float
) -> float:
    """The PSNR a coding's curve through two points (bytes, PSNR) gives at ``size``
    bytes: linear in log2 bytes, or ``db_per_doubling`` from the nearer point where the
    two are too close to give a slope."""
    (a, pa), (b, pb) = sorted((one, other))
    if b <= a * 1.02:
        near = min((one, other), key=lambda p: abs(math.log2(p[0] / size)))
        return near[1] + db_per_doubling * math.log2(size / near[0])
    return pa + (pb - pa) * math.log2(size / a) / math.log2(b / a)


def _nodata_inside_a_band(block: np.ndarray, nodata: float | None) -> bool:
    """Whether ``nodata`` lies strictly between the smallest and largest valid value of
    a band of ``block``, where a lossy decode of a valid value may land on it."""
    if nodata is None:
        return False
    if block.dtype.kind in "iu":
        info = np.iinfo(block.dtype)
        if not info.min < nodata < info.max:
            return False  # an integer variable's default nodata, its dtype's maximum
    valid = metrics.valid_mask(block, nodata)
    for b in range(block.shape[1]):
        band = block[:, b][valid[:, b]]
        if band.size and float(band.min()) < nodata < float(band.max()):
            return True
    return False


def _band_ranges(block: np.ndarray, invalid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each band's smallest and largest valid value (0 and 0 for a band of none)."""
    B = block.shape[1]
    lows, highs = np.zeros(B), np.zeros(B)
    for b in range(B):
        band = block[:, b] if invalid is None else block[:, b][~invalid[:, b]]
        if band.size:
            lows[b], highs[b] = float(band.min()), float(band.max())
    return lows, highs


def _filled_values(
    block: np.ndarray, maps: packing.BandMaps, bits: int, nodata: float | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The block as float64 with its missing values filled as the video's codes fill them
    (smoothly, along time then in space, for a lossy coder), and where they were (None:
    nowhere)."""
    Y, X = block.shape[2:]
    values = block.astype(np.float64)
    codes, invalid = packing.quantize(block, maps, bits, Y, X, nodata=nodata)
    if invalid is not None:
        filled = maps.offset[None, :, None, None] + codes * maps.scale[None, :, None, None]
        values[invalid] = filled[invalid]
    return values, invalid


def _psnr_for_choice(block: np.ndarray, decoded: np.ndarray, nodata: float | None) -> float:
    """PSNR to compare two codings of one block: exact counts as 200 dB, none valid as 0."""
    value = metrics.psnr(block, decoded, nodata)
    return 0.0 if math.isnan(value) else min(value, 200.0)


FrameCodes = tuple[np.ndarray, int, int, "np.ndarray | None"]
"""A block's band codes in padded frames, its frame height and width inside them, and
where its values are missing, in frame order (:meth:`_VideoCoding.frame_codes`)."""


def _probe_window(shape: tuple[int, ...], time_in_frame: bool) -> tuple[slice, ...]:
    """The centre of a (T, B, Y, X) block that rotation candidates are tried on: at most
    :data:`PROBE_FRAMES` frames of at most :data:`PROBE_SIDE` squared pixels."""
    T, _, Y, X = shape
    if time_in_frame:  # frames are rows, holding every date
        return (
            _centred(T, PROBE_SIDE),
            slice(None),
            _centred(Y, PROBE_FRAMES),
            _centred(X, PROBE_SIDE),
        )
    return _centred(T, PROBE_FRAMES), slice(None), _centred(Y, PROBE_SIDE), _centred(X, PROBE_SIDE)


def _date_orders(
    frame: FrameCodes, prof: Profile, choice: str, time_in_frame: bool
) -> tuple[list[np.ndarray], bool]:
    """The date orders besides time order for a block (its
    :meth:`_VideoCoding.frame_codes`): :func:`eocube.dateorder.candidates`, for lossy
    profiles with dates as frames and ``choice`` ``"auto"`` (else none), and whether the
    first is :func:`eocube.dateorder.clearly_shorter` than time order."""
    codes, height, width, _ = frame
    if choice != "auto" or time_in_frame or prof.lossless:
        return [], False
    if not dateorder.MIN_DATES <= codes.shape[0] <= dateorder.MAX_DATES:
        return [], False
    D = dateorder.distances(codes, height, width)
    orders = dateorder.candidates(D)
    return orders, bool(orders) and dateorder.clearly_shorter(D, orders[0])


def _best_date_order(
    coding: _VideoCoding,
    block: np.ndarray,
    base: ChunkHeader,
    frame: FrameCodes,
    orders: list[np.ndarray],
    first: Coding,
) -> tuple[_VideoCoding, tuple[float, bytes] | None]:
    """``coding`` with the best of time order and ``orders`` for ``block``, tried in the
    ``first`` rotation and layout on a window of all dates (:func:`_order_window`), or on
    the whole block when the window would be half of it or more; then also the score and
    payload of the block so coded (else None)."""
    if not orders:
        return coding, None
    codings = [coding] + [replace(coding, date_order=order) for order in orders]
    window = np.ascontiguousarray(block[_order_window(block.shape)])
    if ORDER_PROBE_PRESET is None:
        whole, trials = 2 * window.size >= block.size, codings
    else:  # a trial coding is not the payload
        whole, trials = False, [c.probing(ORDER_PROBE_PRESET) for c in codings]
    trial_block = block if whole else window
    trial_base = base if whole else replace(base, shape=window.shape, coded=None, fill=None)

    def scored(trial: _VideoCoding) -> tuple[float, bytes]:
        _, results = trial.best(trial_block, trial_base, [first])
        return results

    if coding.threads == 1:
        results = [scored(c) for c in trials]
    else:
        with ThreadPoolExecutor(len(trials) - 1, thread_name_prefix="eocube-order") as pool:
            later = [pool.submit(scored, c) for c in trials[1:]]
            results = [scored(trials[0]), *(f.result() for f in later)]
    best = max(range(len(results)), key=lambda i: (results[i][0], -i))
    return codings[best], (results[best] if whole else None)


def _order_window(shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The centre of a (T, B, Y, X) block that date orders are tried on: every date, at
    most :data:`ORDER_PROBE_SIDE` squared pixels."""
    _, _, Y, X = shape
    return slice(None), slice(None), _centred(Y, ORDER_PROBE_SIDE), _centred(X, ORDER_PROBE_SIDE)


def _centred(n: int, k: int) -> slice:
    """The middle ``k`` of ``n`` positions (all of them when ``n <= k``)."""
    start = (n - min(n, k)) // 2
    return slice(start, start + min(n, k))


def _layouts(prof: Profile, bands: int, leftover_pair: str) -> list[str]:
    """The layouts to code a lossy block of ``bands`` bands with (:data:`LEFTOVER_PAIR`)."""
    if prof.layout != "planar3" or prof.lossless or bands % 3 != 2 or leftover_pair == "off":
        return [prof.layout]
    if leftover_pair == "always":
        return ["planar3-pair"]
    return [prof.layout, "planar3-pair"]


Coding = tuple[spectral.SpectralBasis | None, str]
"""How a block's bands go into its streams: their rotation (None: none) and the layout."""


def _rotations(frame: FrameCodes, prof: Profile) -> list[spectral.SpectralBasis | None]:
    """The band rotations to code a block (its :meth:`_VideoCoding.frame_codes`) with: [None] unless
    the profile rotates (``transform = "klt"``), else :func:`eocube.spectral.candidates`."""
    codes, height, width, _ = frame
    if prof.transform != "klt" or codes.shape[1] == 1 or prof.lossless:
        return [None]
    return spectral.candidates(codes, height, width, prof.bits)


@dataclass(frozen=True)
class _VideoCoding:
    """How a (cropped) block's video payloads are coded, but for their band rotation and
    layout (a :data:`Coding`): the profile, band maps, encoder options, nodata, frame axis
    and codec threads."""

    prof: Profile
    maps: packing.BandMaps
    options: dict[str, str]
    nodata: float | None
    time_in_frame: bool
    threads: int
    date_order: np.ndarray | None = None
    """The order the streams code the block's dates in (None: time order)."""
    transposed: bool = False
    """Whether the frames hold the block with Y and X swapped (:func:`transposes`)."""
    mosaic: tuple[int, int] | None = None
    """The grid of dates a frame holds (:func:`mosaic_grid`); None: one date a frame."""
    quality: float | None = None
    """The quality ``options`` set, by which :meth:`best` ranks close calls again at equal
    rate (None: it does not)."""

    def frame_codes(self, block: np.ndarray) -> FrameCodes:
        """The block's band codes in frames padded to the codec's frame size, the block's
        own frame height and width inside them, and where values are missing (frame
        order)."""
        prof = self.prof
        frames_block = block
        if self.time_in_frame:
            frames_block = block.transpose(2, 1, 0, 3)
        else:
            if self.mosaic is not None:
                frames_block = mosaic_mod.tile(block, self.mosaic)
            if self.transposed:
                frames_block = frames_block.transpose(0, 1, 3, 2)
        frames_block = np.ascontiguousarray(frames_block)
        _, _, R, X = frames_block.shape
        height, width = shared_frame_size(prof, self.options, R, X, prof.lossless)
        codes, invalid = packing.quantize(
            frames_block,
            self.maps,
            prof.bits,
            height,
            width,
            nodata=self.nodata,
            fill="rows" if prof.lossless else "pyramid",
        )
        return codes, R, X, invalid

    def payload(
        self,
        block: np.ndarray,
        base: ChunkHeader,
        coding: Coding,
        frame: FrameCodes | None = None,
    ) -> bytes:
        """The block's payload with its bands rotated and laid out as ``coding`` says,
        without a residual layer; ``base`` holds the header's fields that do not depend
        on the coding, ``frame`` the block's :meth:`frame_codes` if already made."""
        rotation, layout = coding
        streams, invalid = _video_part(
            self.frame_codes(block) if frame is None else frame,
            self.prof,
            self.options,
            self.time_in_frame,
            self.threads,
            rotation,
            layout,
            self.date_order,
            self.transposed,
        )
        if invalid is not None and self.mosaic is not None:
            invalid = mosaic_mod.untile(invalid, self.mosaic, block.shape[0])
        masks, needs = _masks_part(block, invalid, self.nodata)
        if self.prof.encoder == lossless.CODER:
            needs = max(needs, PRED_GAIN_VERSION)
        if layout == "planar3-pair":
            needs = max(needs, PAIR_VERSION)
        if self.date_order is not None:
            needs = max(needs, DATE_ORDER_VERSION)
        if self.transposed:
            needs = max(needs, TRANSPOSED_VERSION)
        if self.mosaic is not None:
            needs = max(needs, MOSAIC_VERSION)
        header = replace(
            base,
            version=max(FORMAT_VERSION, needs),
            layout=layout,
            spectral=rotation,
            time_in_frame=self.time_in_frame,
            date_order=self.date_order,
            transposed=self.transposed,
            mosaic=self.mosaic,
        )
        return header.to_bytes() + streams + masks + b"\x00"

    def best(
        self,
        block: np.ndarray,
        base: ChunkHeader,
        codings: list[Coding],
        against: tuple[Coding, tuple[float, bytes]] | None = None,
    ) -> tuple[int, tuple[float, bytes]]:
        """Which coding codes the block best, and its score and payload: each of
        ``codings`` decoded and weighed by PSNR and bytes
        (:data:`eocube.metrics.DB_PER_DOUBLING`), the first on ties. ``against``: a
        coding already made, with its score and payload, which comes first (index 0,
        ``codings`` from 1 on).

        Where the best two scores lie within :data:`RECHECK_DB` and :attr:`quality` is
        set, the two are ranked again at equal rate: the larger coded again at the
        quality that should give the smaller's bytes (:func:`_at_fewer_bytes`).

        The codings run at once, one thread each (unless ``threads`` is 1), as a chunk's
        streams do (:func:`_encode_streams`): on small frames one encoder keeps about one
        core busy. Each payload is the one coding it alone gives."""
        T, _, Y, X = block.shape

        def psnr_of(payload: bytes) -> float:
            decoded = decode_chunk(payload, threads=self.threads)[:T, :, :Y, :X]
            return _psnr_for_choice(block, decoded, self.nodata)

        def scored(coding: Coding) -> tuple[float, bytes]:
            payload = self.payload(block, base, coding)
            return psnr_of(payload) - DB_PER_DOUBLING * math.log2(len(payload)), payload

        if self.threads == 1 or len(codings) == 1:
            results = [scored(coding) for coding in codings]
        else:
            with ThreadPoolExecutor(len(codings) - 1, thread_name_prefix="eocube-coding") as pool:
                later = [pool.submit(scored, coding) for coding in codings[1:]]
                results = [scored(codings[0]), *(f.result() for f in later)]
        if against is not None:
            codings = [against[0], *codings]
            results.insert(0, against[1])
        ranked = sorted(range(len(results)), key=lambda i: (-results[i][0], i))
        best = ranked[0]
        if len(ranked) > 1:
            second = ranked[1]
            apart = abs(math.log2(len(results[best][1]) / len(results[second][1])))
            # the weight errs by up to 3 dB a doubling: a margin beyond what that could
            # turn over stands
            if results[best][0] - results[second][0] < min(RECHECK_DB, 3.0 * apart):
                best = self._at_equal_rate(block, base, codings, results, best, second, psnr_of)
        return best, results[best]

    def _at_equal_rate(
        self,
        block: np.ndarray,
        base: ChunkHeader,
        codings: list[Coding],
        results: list[tuple[float, bytes]],
        first: int,
        second: int,
        psnr_of: Callable[[bytes], float],
    ) -> int:
        """Of codings ``first`` and ``second`` (indexes into ``codings`` and their
        ``results``), the better at the smaller one's bytes; ``first`` where that cannot
        be told (no :attr:`quality`, or no coarser quality)."""
        scale = self.prof.quality
        if self.quality is None or scale is None:
            return first
        larger, smaller = sorted((first, second), key=lambda i: -len(results[i][1]))
        small = results[smaller][1]
        coarser = _at_fewer_bytes(self.prof, self.quality, len(results[larger][1]) / len(small))
        if coarser is None:
            return first
        options = {
            k: v for k, v in self.options.items() if k not in (scale.option, scale.fine_option)
        }
        key, value = scale.setting(coarser)
        remade = replace(self, options={**options, key: value}).payload(
            block, base, codings[larger]
        )
        big = results[larger][1]
        at_small = _psnr_at(
            len(small),
            (len(big), results[larger][0] + DB_PER_DOUBLING * math.log2(len(big))),
            (len(remade), psnr_of(remade)),
            DB_PER_DOUBLING,
        )
        small_psnr = results[smaller][0] + DB_PER_DOUBLING * math.log2(len(small))
        return larger if at_small > small_psnr else smaller

    def probing(self, preset: str = PROBE_PRESET) -> _VideoCoding:
        """The coding a window is tried with: x264's and x265's ``preset`` (default their
        fastest; their own options kept), which ranks the rotations as the profile's
        preset does on the dev corpus at a fraction of its time; other encoders' options
        unchanged."""
        if self.prof.encoder in ("libx264", "libx265") and "preset" in self.options:
            return replace(self, options={**self.options, "preset": preset})
        return self


def _video_part(
    frame: FrameCodes,
    prof: Profile,
    options: dict[str, str],
    time_in_frame: bool,
    threads: int,
    rotation: spectral.SpectralBasis | None = None,
    layout: str | None = None,
    date_order: np.ndarray | None = None,
    transposed: bool = False,
) -> tuple[bytes, np.ndarray | None]:
    """The streams section and the invalid mask (in the block's (T, B, Y, X) order, or
    of its mosaic frames (F, B, rows * Y, cols * X) for a mosaic) of a
    (cropped) block from its :meth:`_VideoCoding.frame_codes`, with dates or rows as
    frames (``transposed``: dates, Y and X swapped), its bands rotated by ``rotation``,
    laid out by ``layout`` (default: the profile's) and its dates coded in
    ``date_order`` (default: time order)."""
    codes, _, _, invalid = frame
    F, B, height, width = codes.shape
    if rotation is not None:
        codes = spectral.project(codes, rotation, prof.bits)
    planes = codes.reshape(F * B, height, width)
    w = ByteWriter()
    plans = packing.plan_layout(layout or prof.layout, F, B, date_order)
    w.pack("B", len(plans))
    for stream in _encode_streams(plans, planes, prof, height, width, options, threads):
        w.name(stream.decoder, NAMES)
        w.name(stream.pix_fmt, NAMES)
        _write_sizes(w, (stream.height, stream.width, stream.frames), compact=True)
        w.blob(stream.extradata)
        prefix = shared_prefix(stream.packets)
        w.blob(prefix)
        # the first packet's parameter sets, deflated against the format's dictionary
        head = 0
        if stream.packets:
            head = paramsets.head_length(stream.decoder, stream.packets[0], len(prefix))
            w.blob(paramsets.pack(stream.packets[0][len(prefix) : len(prefix) + head]))
        else:
            w.blob(b"")
        w.varint(len(stream.packets))
        for i, p in enumerate(stream.packets):
            w.varint(len(p) - len(prefix) - (head if i == 0 else 0))
        for i, p in enumerate(stream.packets):
            w.raw(p[len(prefix) + (head if i == 0 else 0) :])
    if invalid is not None and time_in_frame:
        invalid = invalid.transpose(2, 1, 0, 3)
    elif invalid is not None and transposed:
        invalid = invalid.transpose(0, 1, 3, 2)
    return w.getvalue(), invalid


def _masks_part(
    block: np.ndarray, invalid: np.ndarray | None, nodata: float | None
) -> tuple[bytes, int]:
    """The masks section (where the block holds NaN, and nodata), and the least payload
    version it needs (0: any). Each mask is coded by its runs (:mod:`eocube.masks`) or as
    zlib of its packed bits, whichever is smaller (zlib on ties: older readers read it)."""
    masks = []
    if invalid is not None:
        if block.dtype.kind == "f":
            nan = np.isnan(block)
            masks.append((_MASK_NAN, nan))
            if nodata is not None:
                masks.append((_MASK_NODATA, invalid & ~nan))
        else:
            masks.append((_MASK_NODATA, invalid))
    masks = [(kind, m) for kind, m in masks if m.any()]
    w = ByteWriter()
    w.pack("B", len(masks))
    needs = 0
    for kind, mask in masks:
        packed = zlib.compress(np.packbits(mask, axis=None).tobytes(), 9)
        runs = masks_mod.encode(mask)
        if len(runs) < len(packed):
            w.pack("B", kind | _MASK_RUNS)
            w.blob(runs)
            needs = MASK_RUNS_VERSION
        else:
            w.pack("B", kind)
            w.blob(packed)
    return w.getvalue(), needs


def _encode_streams(
    plans: Sequence[packing.StreamPlan],
    planes: np.ndarray,
    prof: Profile,
    height: int,
    width: int,
    options: dict[str, str],
    threads: int,
) -> list[video.EncodedStream]:
    """The streams of a chunk (a lossless one checked by decoding it), in plan order.

    A chunk of several streams (three bands per frame and a gray stream of the leftover
    bands) encodes them at once, one thread each: the codec releases the GIL, and on the
    small frames of most chunks one encoder keeps about one core busy whatever threads it
    is offered (s2_l2a_openeo_gfmap_19x4x52x46: 62 -> 46 ms, benchmarks/results/
    encode_speed.md). The bitstreams are those of encoding them one after the other."""

    constant = np.zeros_like(planes[0])

    def encode(plan: packing.StreamPlan) -> video.EncodedStream:
        pix_fmt = prof.pix_fmt if plan.role == "main" else prof.extra_pix_fmt
        assert pix_fmt is not None
        stream = video.encode_frames(
            (
                [constant if i == packing.CONSTANT_PLANE else planes[i] for i in row]
                for row in plan.sources
            ),
            encoder=prof.encoder,
            decoder=prof.decoder,
            pix_fmt=pix_fmt,
            height=height,
            width=width,
            options=options,
            threads=threads,
        )
        # eocube's own coder has checked its stream as it encoded (lossless.encode)
        if prof.lossless and prof.encoder != lossless.CODER:
            _verify_lossless(stream, planes, plan, prof.name)
        return stream

    if len(plans) == 1 or threads == 1:
        return [encode(plan) for plan in plans]
    with ThreadPoolExecutor(len(plans) - 1, thread_name_prefix="eocube-stream") as pool:
        later = [pool.submit(encode, plan) for plan in plans[1:]]
        return [encode(plans[0]), *(f.result() for f in later)]


def _crop(block: np.ndarray, nodata: float | None) -> tuple[tuple[int, int, int], float] | None:
    """Where the valid values end inside ``block``, and the one value beyond; None: no crop.

    zarr hands the codec whole chunks, padding those at the array's end with the fill
    value (NaN or nodata). Copied forward by the gap filling, padded dates would cost an
    intra-only codec as much as real ones (FFV1: 0.7 bpppb on a 118-date series).
    """
    T, _, Y, X = block.shape
    end = packing.valid_extent(block, nodata)
    if end == (T, Y, X):
        return None
    t, y, x = end
    beyond = (block[t:], block[:t, :, y:], block[:t, :, :y, x:])
    if block.dtype.kind == "f" and all(np.isnan(part).all() for part in beyond):
        return end, float("nan")
    if nodata is not None and all((part == nodata).all() for part in beyond):
        return end, float(nodata)
    return None  # a mix of NaN and nodata beyond: code the block whole


def _verify_lossless(
    stream: video.EncodedStream, planes: np.ndarray, plan: packing.StreamPlan, profile: str
) -> None:
    # Lossless must mean bit-exact: an encoder/decoder mismatch is caught here, not by a user.
    for row, decoded in zip(plan.sources, video.decode_frames(stream), strict=True):
        for index, got in zip(row, decoded, strict=True):
            if index != packing.CONSTANT_PLANE and not np.array_equal(got, planes[index]):
                raise CodecError(
                    f"profile {profile!r}: the decoded stream differs from the input of the "
                    f"lossless encoder (plane {index}); please report this with the data"
                )


def _read_header(r: ByteReader) -> ChunkHeader:
    if bytes(r.take(4)) != MAGIC:
        raise CorruptChunkError("not an eocube chunk payload (bad magic)")
    version, flags = r.unpack("BB")
    if version not in READABLE_VERSIONS:
        raise CorruptChunkError(
            f"chunk format version {version} is not readable by this eocube "
            f"(reads versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade eocube"
        )
    if (
        flags & ~_KNOWN_FLAGS
        or any(flags & flag and version < since for flag, since in _FLAGS_SINCE.items())
        or (flags & _FLAG_WAVELET and flags & _NOT_WITH_WAVELET)
    ):
        raise CorruptChunkError(f"payload header has unknown flags {flags:#04x}")
    (flags2,) = r.unpack("B") if version >= MOSAIC_VERSION else (0,)
    if flags2 & ~_KNOWN_FLAGS2 or (
        flags2 & _FLAG2_MOSAIC and flags & (_FLAG_WAVELET | _FLAG_TIME_IN_FRAME)
    ):
        raise CorruptChunkError(
            f"payload header has unknown or conflicting second flags {flags2:#04x}"
        )
    lean = version >= LEAN_VERSION
    try:
        dtype = packing.check_dtype(np.dtype(_read_name(r, lean)))
    # numpy parses damaged dtype strings with ast: SyntaxError too
    except (TypeError, ValueError, SyntaxError, UnsupportedDataError) as exc:
        raise CorruptChunkError(f"payload names a bad dtype: {exc}") from None
    compact = version >= COMPACT_VERSION
    T, B, Y, X = _read_sizes(r, 4, compact)
    shape = (T, B, Y, X)
    if 0 in shape:
        raise CorruptChunkError(f"payload has an empty shape {shape}")
    coded = fill = None
    if flags & _FLAG_CROPPED:
        t_coded, y_coded, x_coded = _read_sizes(r, 3, compact)
        coded = (t_coded, y_coded, x_coded)
        (fill,) = r.unpack("d")
        if not all(0 < c <= n for c, n in zip(coded, (shape[0], shape[2], shape[3]), strict=True)):
            raise CorruptChunkError(f"payload codes {coded} of a block of shape {shape}")
        if dtype.kind in "iu" and not (
            np.iinfo(dtype).min <= fill <= np.iinfo(dtype).max and fill == int(fill)
        ):
            raise CorruptChunkError(f"payload fill {fill!r} is not a {dtype} value")
    (bits,) = r.unpack("B")
    layout = _read_name(r, lean)
    if layout == "planar3-pair" and version < PAIR_VERSION:
        raise CorruptChunkError(f"layout {layout} in a version-{version} payload")
    profile = _read_name(r, lean)
    nodata = r.unpack("d")[0] if flags & _FLAG_NODATA else None
    if nodata is not None and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not (info.min <= nodata <= info.max and nodata == int(nodata)):  # NaN fails too
            raise CorruptChunkError(f"payload nodata {nodata!r} is not a {dtype} value")
    B = shape[1]
    if compact:
        exact, wavelet = bool(flags & _FLAG_EXACT), bool(flags & _FLAG_WAVELET)
        stored = dtype.newbyteorder("<")
        per_band = 1 if exact and not wavelet else 2
        ranges = np.frombuffer(r.take(per_band * B * stored.itemsize), dtype=stored)
        ranges = ranges.reshape(B, per_band)
        if not np.isfinite(ranges.astype(np.float64)).all() or (
            per_band == 2 and (ranges[:, 0] > ranges[:, 1]).any()
        ):
            raise CorruptChunkError("payload has a band range that is not finite or not ordered")
        maps = np.stack(_maps_from_ranges(ranges, bits, exact, wavelet), axis=1)
    else:
        maps = np.frombuffer(r.take(16 * B), dtype="<f8").reshape(B, 2)
    if flags & _FLAG_WAVELET and not (np.isfinite(maps).all() and (maps[:, 0] <= maps[:, 1]).all()):
        raise CorruptChunkError("payload has a band range that is not finite or not ordered")
    basis = _read_basis(r, B, version) if flags & _FLAG_KLT else None
    if flags & _FLAG_TRANSPOSED and flags & _FLAG_TIME_IN_FRAME:
        raise CorruptChunkError("payload has flags TRANSPOSED and TIME_IN_FRAME together")
    dates = coded[0] if coded is not None else shape[0]
    grid = None
    if flags2 & _FLAG2_MOSAIC:
        grid = r.unpack("BB")
        if min(grid) < 1 or not 2 <= grid[0] * grid[1] <= dates:
            raise CorruptChunkError(f"payload has a mosaic of {grid[0]} x {grid[1]} dates")
        dates = mosaic_mod.frame_count(dates, grid)  # a date order orders the frames
    order = None
    if flags & _FLAG_DATE_ORDER:
        if flags & _FLAG_TIME_IN_FRAME:
            raise CorruptChunkError("payload has flags DATE_ORDER and TIME_IN_FRAME together")
        order = np.array([r.varint() for _ in range(dates)], dtype=np.int64)
        if not dateorder.is_permutation(order, dates):
            raise CorruptChunkError(f"payload's date order is not an order of {dates} dates")
    return ChunkHeader(
        version=version,
        dtype=dtype,
        shape=shape,
        bits=bits,
        layout=layout,
        profile=profile,
        exact=bool(flags & _FLAG_EXACT),
        nodata=nodata,
        offset=maps[:, 0].astype(np.float64),
        scale=maps[:, 1].astype(np.float64),
        spectral=basis,
        coded=coded,
        fill=fill,
        time_in_frame=bool(flags & _FLAG_TIME_IN_FRAME),
        wavelet=bool(flags & _FLAG_WAVELET),
        date_order=order,
        transposed=bool(flags & _FLAG_TRANSPOSED),
        mosaic=grid,
    )


def _read_basis(r: ByteReader, B: int, version: int) -> spectral.SpectralBasis:
    """The KLT fields of a version-``version`` header (see :func:`_write_basis`)."""
    count = B * (B + 1) // 2 - 1
    if version >= LEAN_VERSION:
        origin = np.frombuffer(r.take(4 * B), dtype="<f4").astype(np.float64)
        stored = r.bits(count, spectral.AXIS_BITS) - (1 << (spectral.AXIS_BITS - 1))
        scale = spectral.AXIS_SCALE
        (step,) = r.unpack("f")
    else:
        mean = np.frombuffer(r.take(4 * B), dtype="<f4")
        if version >= COMPACT_VERSION:
            stored = np.frombuffer(r.take(2 * count), dtype="<i2").astype(np.int64)
            scale = spectral.V13_AXIS_SCALE
        else:
            axes = np.frombuffer(r.take(4 * B * B), dtype="<f4").reshape(B, B)
            stored = None
        low = np.frombuffer(r.take(4 * B), dtype="<f4")
        (step,) = r.unpack("d")
    if stored is not None:
        try:
            axes = spectral.axes_from_stored(stored, B, scale)
        except ValueError as exc:
            raise CorruptChunkError(f"payload's KLT basis: {exc}") from None
    if version < LEAN_VERSION:
        # as decoding always computed it from the stored mean and offsets
        origin = mean.astype(np.float64) + axes.astype(np.float64) @ low.astype(np.float64)
    if not (np.isfinite(step) and step > 0 and np.isfinite(origin).all()):
        raise CorruptChunkError(f"payload has a bad component step {step!r} or origin")
    return spectral.SpectralBasis(origin=origin, basis=axes, step=float(step), stored=stored)


def read_header(payload: bytes) -> ChunkHeader:
    """Parse a payload's header without decoding the video."""
    return ChunkHeader.from_bytes(payload)


def shared_prefix(packets: Sequence[bytes]) -> bytes:
    """The bytes every one of a stream's packets starts with, which a version-13 payload
    stores once (empty for fewer than two packets): HEVC and H.264 packets all start
    with the 4-byte start code, AV1 ones with a temporal delimiter."""
    if len(packets) < 2:
        return b""
    shortest = min(len(p) for p in packets)
    first = packets[0]
    n = 0
    while n < shortest and all(p[n] == first[n] for p in packets):
        n += 1
    return bytes(first[:n])


def _read_stream(r: ByteReader, version: int) -> video.EncodedStream:
    lean, compact = version >= LEAN_VERSION, version >= COMPACT_VERSION
    decoder, pix_fmt = _read_name(r, lean), _read_name(r, lean)
    height, width, frames = _read_sizes(r, 3, compact)
    extradata = bytes(r.blob())
    prefix = bytes(r.blob()) if compact else b""
    head = paramsets.unpack(bytes(r.blob())) if lean else b""
    sizes = [r.varint() for _ in range(r.varint())]
    if head and not sizes:
        raise CorruptChunkError("payload has a stream head but no packets")
    # one copy of each packet, its prefix (and the first its head) in front
    packets = tuple(
        b"".join((prefix, head if i == 0 else b"", r.take(n))) for i, n in enumerate(sizes)
    )
    return video.EncodedStream(decoder, pix_fmt, height, width, frames, packets, extradata)


@dataclass(frozen=True)
class ChunkTail:
    """What a payload holds after its streams: masks and the residual layer.

    Attributes
    ----------
    masks : tuple of (int, ndarray)
        ``(kind, bits)`` per mask in payload order: kind 0 marks NaN, 1 nodata; ``bits``
        is the packed mask (``np.packbits`` of the coded block, uint8), size checked.
    residual : eocube.residual.Residual or None
        The error-bounded correction, decoded (on the CPU: it is range-coded).
    """

    masks: tuple[tuple[int, np.ndarray], ...]
    residual: residual.Residual | None


@dataclass(frozen=True)
class ChunkParts:
    """A payload parsed, its video still coded (see :func:`parse_chunk`)."""

    header: ChunkHeader
    plans: list[packing.StreamPlan]
    """Which (time, band) plane each frame of each stream holds (the coded part)."""
    streams: list[video.EncodedStream]
    tail: ChunkTail


def _read_streams(
    r: ByteReader, header: ChunkHeader
) -> tuple[list[packing.StreamPlan], list[video.EncodedStream]]:
    """The streams of a payload (``r`` after its header), checked against the header."""
    T, B, Y, X = header.stream_shape
    try:
        per_date = packing.plan_layout(header.layout, 1, B)
    except UnsupportedDataError as exc:
        raise CorruptChunkError(str(exc)) from None
    (n_streams,) = r.unpack("B")
    if n_streams != len(per_date):
        raise CorruptChunkError(
            f"payload holds {n_streams} streams, layout {header.layout} makes {len(per_date)}"
        )
    # Check the streams against the header before allocating anything of the header's size:
    # a damaged shape must raise, not allocate gigabytes.
    streams = []
    for one in per_date:
        stream = _read_stream(r, header.version)
        fmt = pixel_format(stream.pix_fmt) if stream.pix_fmt in _known_formats() else None
        per_frame = one.sources.shape[1]
        if fmt is None or fmt.data_planes != per_frame or stream.frames != one.frames * T:
            raise CorruptChunkError(
                f"stream {stream.pix_fmt} of {stream.frames} frames does not match layout "
                f"{header.layout} of {T} x {B} planes"
            )
        if stream.height < Y or stream.width < X:
            raise CorruptChunkError(f"frames of {stream.height}x{stream.width} cannot hold {Y}x{X}")
        if (
            stream.decoder == lossless.CODER
            and header.version < PRED_GAIN_VERSION
            and any(p[:1] and p[0] >= lossless.GAIN_VERSION for p in stream.packets)
        ):
            raise CorruptChunkError(
                f"{lossless.CODER} packet of version {lossless.GAIN_VERSION} in a "
                f"version-{header.version} payload"
            )
        streams.append(stream)
    return packing.plan_layout(header.layout, T, B, header.date_order), streams


def _read_tail(r: ByteReader, header: ChunkHeader) -> ChunkTail:
    """Masks and residual layer (``r`` after the streams); the payload must end there."""
    shape = header.coded_shape
    size = int(np.prod(shape, dtype=np.int64))
    (n_masks,) = r.unpack("B")
    masks = []
    for _ in range(n_masks):
        (kind,) = r.unpack("B")
        if kind & _MASK_RUNS:
            if header.version < MASK_RUNS_VERSION:
                raise CorruptChunkError(f"runs-coded mask in a version-{header.version} payload")
            kind &= ~_MASK_RUNS
            runs = masks_mod.decode(bytes(r.blob()), shape)
            bits = np.packbits(runs, axis=None)
        else:
            try:
                bits = np.frombuffer(zlib.decompress(r.blob()), np.uint8)
            except zlib.error as exc:
                raise CorruptChunkError(f"mask does not decompress: {exc}") from None
        if bits.size != (size + 7) // 8:
            raise CorruptChunkError("mask size does not match the block")
        if kind == _MASK_NAN:
            if header.dtype.kind != "f":
                raise CorruptChunkError("NaN mask in an integer chunk")
        elif not (kind == _MASK_NODATA and header.nodata is not None):
            raise CorruptChunkError(f"unknown mask kind {kind}")
        masks.append((int(kind), bits))
    (n_residuals,) = r.unpack("B")
    if n_residuals > 1:
        raise CorruptChunkError(f"payload holds {n_residuals} residual layers")
    layer = None
    if n_residuals:
        layer = residual.from_bytes(
            bytes(r.blob()), shape, header.dtype, legacy=header.version == 1
        )
    if r.pos != len(r.data):
        raise CorruptChunkError(f"{len(r.data) - r.pos} unexpected bytes after the payload")
    return ChunkTail(masks=tuple(masks), residual=layer)


def parse_chunk(payload: bytes) -> ChunkParts:
    """Parse a payload without decoding its video: header, streams, masks, residual layer.

    A wavelet payload (``header.wavelet``) has no streams: its section is skipped, and
    only :func:`decode_chunk` decodes it.

    The parts :func:`decode_chunk` works from, for decoders that unpack elsewhere
    (:mod:`eocube.device`, on a torch device). The checks and errors are
    :func:`decode_chunk`'s.

    Raises
    ------
    CorruptChunkError
        If the payload is truncated, altered or of an unknown format version.
    """
    r = ByteReader(payload)
    header = ChunkHeader.from_bytes(r)
    if header.wavelet:
        wavelet_mod.skip(r, header.shape[1], header.version >= PERIODIC_VERSION)
        return ChunkParts(header=header, plans=[], streams=[], tail=_read_tail(r, header))
    plans, streams = _read_streams(r, header)
    return ChunkParts(header=header, plans=plans, streams=streams, tail=_read_tail(r, header))


def mask_of(bits: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A packed mask of :class:`ChunkTail` as a boolean array of ``shape``."""
    size = int(np.prod(shape, dtype=np.int64))
    return np.unpackbits(bits, count=size).view(bool).reshape(shape)


def decode_chunk(
    payload: bytes,
    *,
    threads: int = 0,
    out: np.ndarray | None = None,
    on_codec_time: Callable[[float], None] | None = None,
    frame_decoder: Callable[..., Iterator[list[np.ndarray]]] = video.decode_frames,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Decode a chunk payload to its block of shape (T, B, Y, X) and original dtype.

    Parameters
    ----------
    payload : bytes
        As written by :func:`encode_chunk`.
    threads : int
        Decoder threads (0: the codec decides).
    out : ndarray, optional
        C-contiguous array of the block's shape and dtype to decode into.
    on_codec_time : callable, optional
        Called with the seconds spent inside the video decoder (for benchmarks).
    frame_decoder : callable, optional
        Decodes a stream to frames of planes, like :func:`eocube.video.decode_frames`
        (takes ``stream, threads=, crop=``); eocube.gpu passes its NVDEC decoder.
    shape : sequence of int, optional
        The shape of the chunk the payload stands for (a zarr array's chunk shape, in any
        of its forms: (T, B, Y, X), or (T, Y, X) for one band). A payload declaring a
        block of another size is refused before anything is allocated, so that a damaged
        shape field costs no memory.

    Raises
    ------
    CorruptChunkError
        If the payload is truncated, altered, of an unknown format version, or declares a
        block of another size than ``shape``.
    """
    import time

    r = ByteReader(payload)
    header = ChunkHeader.from_bytes(r)
    if shape is not None and math.prod(header.shape) != math.prod(shape):
        raise CorruptChunkError(
            f"payload declares a block of shape {header.shape}, where its chunk has shape "
            f"{tuple(shape)}: its header is damaged"
        )
    T, B, Y, X = header.stream_shape  # dates (or rows) as frames
    if out is not None and (
        out.shape != header.shape or out.dtype != header.dtype or not out.flags.c_contiguous
    ):
        raise ValueError(f"out must be a C-contiguous {header.dtype} array of shape {header.shape}")
    if header.wavelet:
        t0 = time.perf_counter()
        block = wavelet_mod.decode(
            r,
            header.coded_shape,
            header.dtype,
            low=header.offset,
            high=header.scale,
            threads=threads,
            periodic_allowed=header.version >= PERIODIC_VERSION,
        )
        if on_codec_time is not None:
            on_codec_time(time.perf_counter() - t0)
        return _finish(r, header, block, out)
    plans, streams = _read_streams(r, header)
    if out is None:
        try:
            out = np.empty(header.shape, header.dtype)
        except MemoryError:
            size = np.prod(header.shape, dtype=np.float64) * header.dtype.itemsize
            raise CorruptChunkError(
                f"payload declares a {header.dtype} block of shape {header.shape} "
                f"({size / 2**30:.1f} GiB) that cannot be allocated: it is damaged, or its "
                f"chunk is too large for this machine"
            ) from None
    # a cropped payload decodes its coded part apart, then lands in the filled block
    block = out if header.coded is None else np.empty(header.coded_shape, header.dtype)
    # rows as frames, columns as frame rows or dates side by side: the streams' planes
    # are decoded in their order, then put back
    swapped = header.time_in_frame or header.transposed or header.mosaic is not None
    frames_block = np.empty(header.stream_shape, header.dtype) if swapped else block
    codec_seconds = 0.0
    if header.spectral is None:
        flat = frames_block.reshape(T * B, Y, X)
        dequantize = packing.plane_dequantizer(header.dtype)
        offsets = [float(v) for v in header.offset]
        scales = [float(v) for v in header.scale]

        def put(src: np.ndarray, index: int) -> None:
            b = index % B
            dequantize(src, flat[index], offsets[b], scales[b])

    else:
        # a pixel's values mix all its components: gather the codes, then map them
        component_codes = np.empty((T * B, Y, X), np.uint8 if header.bits <= 8 else np.uint16)

        def put(src: np.ndarray, index: int) -> None:
            component_codes[index] = src[:Y, :X]

    for plan, stream in zip(plans, streams, strict=True):
        # whole decoder rows (contiguous): the kernel crops to the block's width
        frames = frame_decoder(stream, threads=threads, crop=False)
        for row in plan.sources.tolist():
            t0 = time.perf_counter()
            planes = next(frames)
            codec_seconds += time.perf_counter() - t0
            for src, index in zip(planes, row, strict=True):
                if index != packing.CONSTANT_PLANE:
                    put(src, index)
        t0 = time.perf_counter()
        for _ in frames:  # let the generator check the frame count
            pass
        codec_seconds += time.perf_counter() - t0
    if header.spectral is not None:
        shift, matrix = spectral.decoding_map(header.spectral, header.offset, header.scale)
        top = header.offset + header.scale * ((1 << header.bits) - 1)
        codes = component_codes.reshape(T, B, Y, X)
        spectral.mix(codes, shift, matrix, header.offset, top, frames_block, threads=threads)
    if header.time_in_frame:
        block[...] = frames_block.transpose(2, 1, 0, 3)
    elif header.mosaic is not None:
        upright = frames_block.transpose(0, 1, 3, 2) if header.transposed else frames_block
        block[...] = mosaic_mod.untile(upright, header.mosaic, block.shape[0])
    elif header.transposed:
        block[...] = frames_block.transpose(0, 1, 3, 2)
    if on_codec_time is not None:
        on_codec_time(codec_seconds)
    return _finish(r, header, block, out)


def _finish(
    r: ByteReader, header: ChunkHeader, block: np.ndarray, out: np.ndarray | None
) -> np.ndarray:
    """Masks and residual layer (``r`` after the coded part) applied to the decoded coded
    part ``block``, which then lands in ``out`` (a cropped payload's filled block)."""
    tail = _read_tail(r, header)
    for kind, bits in tail.masks:
        block[mask_of(bits, block.shape)] = np.nan if kind == _MASK_NAN else header.nodata
    if tail.residual is not None:
        block[...] = residual.restore(block, tail.residual)
    if header.coded is None:
        if out is None:
            return block
        if out is not block:
            out[...] = block
        return out
    if out is None:
        out = np.empty(header.shape, header.dtype)
    t, _, y, x = header.coded_shape
    out[...] = header.fill
    out[:t, :, :y, :x] = block
    return out


def _known_formats() -> frozenset[str]:
    from eocube.pixfmt import PIXEL_FORMATS

    return frozenset(PIXEL_FORMATS)
