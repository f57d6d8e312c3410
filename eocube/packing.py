"""Band packing: blocks of shape (T, B, Y, X) to codec planes and back.

Each band gets its own affine map of the block's valid values onto the codes
``0 .. 2**bits - 1`` (kept exactly as float64 so decoding inverts it); NaN and a declared
nodata value are left out of the map, recorded in a mask by the caller, and filled
smoothly (first along time, then in space) so the codec spends few bits on them. Planes
are padded by edge replication to the frame size the encoder needs.

Layouts say which (time, band) plane goes to which frame and plane of which stream:

``planar3``
    three bands as the planes of a 4:4:4 frame, each group's time series in sequence;
    a leftover band or two go, one per frame, to a second single-plane stream.
``planar3-pair``
    as ``planar3``, but two leftover bands share a 4:4:4 frame of the main stream, after
    the groups, its third plane constant (:data:`CONSTANT_PLANE`): chosen per chunk by
    the encoder (eocube.chunk), for blocks of 2, 5, 8, ... bands. With one leftover band
    or none it is ``planar3``.
``luma``
    one band per frame (the luma plane of 4:2:0, or gray), each band's time series in
    sequence: temporal prediction inside a band.
``bands-as-frames``
    one band per frame, all bands of a date in sequence, then the next date: inter
    prediction sees the spectral correlation.

The kernels are Numba-compiled, release the GIL and run bands in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from eocube.errors import UnsupportedDataError

SUPPORTED_DTYPES = tuple(
    np.dtype(d) for d in ("uint8", "uint16", "int16", "int32", "float32", "float64")
)


CONSTANT_PLANE = -1
"""The source index of a plane that holds no band: the third plane of a leftover pair's
frames (``planar3-pair``), coded as zeros and ignored on decoding."""

CHUNK_LAYOUTS = ("planar3", "planar3-pair", "luma", "bands-as-frames")
"""The layouts a chunk payload may name: a profile's (eocube.profiles.LAYOUTS) and the
variants the encoder picks per chunk."""


@dataclass(frozen=True)
class StreamPlan:
    """Which (time, band) plane each data plane of each frame of one stream holds.

    Attributes
    ----------
    role : str
        ``"main"`` or ``"extra"`` (the leftover bands of ``planar3``).
    sources : ndarray of int32, shape (frames, planes)
        Flat index ``t * B + b`` of the source plane, or :data:`CONSTANT_PLANE`.
    """

    role: str
    sources: np.ndarray

    @property
    def frames(self) -> int:
        """Number of frames in the stream."""
        return int(self.sources.shape[0])


def plan_layout(
    layout: str, times: int, bands: int, order: np.ndarray | None = None
) -> list[StreamPlan]:
    """The streams a block of ``times`` × ``bands`` planes is split into by ``layout``.

    ``order`` (a permutation of the dates, :mod:`eocube.dateorder`): the dates in the
    order the streams code them, in place of time order; ``None``: time order."""
    if order is None:
        t = np.arange(times, dtype=np.int32)
    else:
        t = np.asarray(order, dtype=np.int32)
        if t.shape != (times,):
            raise ValueError(f"a date order of {t.shape} for {times} dates")
    if layout == "luma":
        src = (t[None, :] * bands + np.arange(bands, dtype=np.int32)[:, None]).reshape(-1, 1)
        return [StreamPlan("main", src)]
    if layout == "bands-as-frames":
        return [StreamPlan("main", np.arange(times * bands, dtype=np.int32).reshape(-1, 1))]
    if layout in ("planar3", "planar3-pair"):
        groups, left = divmod(bands, 3)
        pair = layout == "planar3-pair" and left == 2
        plans = []
        if groups or pair:
            g = np.arange(groups + pair, dtype=np.int32)
            # frame g*T + t holds bands 3g, 3g+1, 3g+2 of date t
            grouped = t[None, :, None] * bands + 3 * g[:, None, None] + np.arange(3, dtype=np.int32)
            if pair:
                grouped[-1, :, 2] = CONSTANT_PLANE
            plans.append(StreamPlan("main", grouped.reshape(-1, 3)))
        if left and not pair:
            e = np.arange(3 * groups, bands, dtype=np.int32)
            plans.append(StreamPlan("extra", (t[None, :] * bands + e[:, None]).reshape(-1, 1)))
        return plans
    raise UnsupportedDataError(f"unknown layout {layout!r}")


def check_dtype(dtype: np.dtype) -> np.dtype:
    """Raise unless eocube can pack ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise UnsupportedDataError(
            f"dtype {dtype} is not supported; supported: {', '.join(map(str, SUPPORTED_DTYPES))}"
        )
    return dtype


@numba.njit(nogil=True, parallel=True, cache=True)
def _band_ranges(block, nodata, has_nodata):  # pragma: no cover - compiled
    T, B, Y, X = block.shape
    lo = np.zeros(B, np.float64)
    hi = np.zeros(B, np.float64)
    valid = np.zeros(B, np.int64)
    infinite = np.zeros(B, np.int64)
    for b in numba.prange(B):
        mn = np.inf
        mx = -np.inf
        n = 0
        ninf = 0
        for t in range(T):
            for y in range(Y):
                for x in range(X):
                    v = np.float64(block[t, b, y, x])
                    if v != v or (has_nodata and v == nodata):
                        continue
                    if v == np.inf or v == -np.inf:
                        ninf += 1
                        continue
                    n += 1
                    mn = min(mn, v)
                    mx = max(mx, v)
        if n == 0:
            mn = 0.0
            mx = 0.0
        lo[b] = mn
        hi[b] = mx
        valid[b] = n
        infinite[b] = ninf
    return lo, hi, valid, infinite


@dataclass(frozen=True)
class BandMaps:
    """Per band affine maps: ``value = offset + code * scale`` (scale 0: a constant band)."""

    offset: np.ndarray
    scale: np.ndarray
    valid: np.ndarray

    @property
    def bands(self) -> int:
        """Number of bands."""
        return int(self.offset.shape[0])


def band_maps(
    block: np.ndarray, bits: int, *, exact: bool, nodata: float | None = None
) -> BandMaps:
    """The affine map of each band of ``block`` onto ``0 .. 2**bits - 1``.

    Parameters
    ----------
    block : ndarray, shape (T, B, Y, X)
    bits : int
        Code bit depth.
    exact : bool
        Map integers with scale 1 (lossless); raises if a band's range needs more bits.
    nodata : float, optional
        A value that marks missing data (besides NaN).

    Raises
    ------
    UnsupportedDataError
        For infinite values, a band whose map overflows float64, or when ``exact`` and
        a band's range exceeds ``bits``.
    """
    dtype = check_dtype(block.dtype)
    has_nodata = nodata is not None
    lo, hi, valid, infinite = _band_ranges(
        block, float(nodata) if nodata is not None else 0.0, has_nodata
    )
    if infinite.any():
        bad = int(np.flatnonzero(infinite)[0])
        raise UnsupportedDataError(
            f"band {bad} holds {int(infinite[bad])} infinite values: replace them with NaN "
            f"(missing) or finite values before encoding"
        )
    max_code = (1 << bits) - 1
    with np.errstate(over="ignore"):
        span = hi - lo
        top = lo + (span / max_code) * max_code
    if not np.isfinite(top).all():
        # decoding, offset + code * scale, would overflow: values would come back inf or NaN
        bad = int(np.flatnonzero(~np.isfinite(top))[0])
        raise UnsupportedDataError(
            f"band {bad} spans {lo[bad]:g} .. {hi[bad]:g}, beyond what float64 can map: "
            f"split or rescale it before encoding"
        )
    if exact:
        if dtype.kind == "f":
            raise UnsupportedDataError(
                "lossless encoding needs integer data; float data can be bounded with "
                "max_abs_error or encoded lossy"
            )
        widest = float(span.max(initial=0.0))
        if widest > max_code:
            needed = math.ceil(math.log2(widest + 1))
            raise UnsupportedDataError(
                f"a band spans {widest:.0f} values, which needs {needed} bits; this "
                f"profile holds {bits} bits losslessly"
            )
        scale = np.ones_like(span)
    else:
        # A constant band (or one whose span underflows) gets scale 0: it decodes to its
        # value whatever code the lossy codec returns. With scale 1, a codec error of one
        # code moved it by one data unit, out of the band's range.
        scale = lossy_scale(lo, hi, bits)
    return BandMaps(offset=lo, scale=scale, valid=valid)


def lossy_scale(low: np.ndarray, high: np.ndarray, bits: int) -> np.ndarray:
    """The scale that maps each band's range ``low .. high`` (float64) onto the codes
    ``0 .. 2**bits - 1``: the one lossy payloads quantise with, which a version-13
    header's reader derives from the stored range (eocube.chunk), bit for bit."""
    return (high - low) / ((1 << bits) - 1)


FILLS = ("pyramid", "rows")
"""How :func:`quantize` fills the pixels a block never has a valid value at:
``"pyramid"``, smooth in both directions (pull-push), which lossy transform codecs code
cheapest, together with each date's missing pixels that reach them (a footprint edge
that moves from date to date); ``"rows"``, runs along rows, then columns, between their
neighbours, which
lossless coders that predict a pixel from its left neighbour code cheapest (the pyramid
fill cost them 5 to 28 % more bytes on the Landsat cubes; benchmarks/results/fill_ab)."""


@numba.njit(nogil=True, cache=True)
def _fill_band(codes, invalid, b, Y, X, fill_code, pyramid):  # pragma: no cover - compiled
    T = codes.shape[0]
    never = np.zeros((Y, X), np.uint8)
    # along time: carry the last valid code forward, then the first one backward
    for y in range(Y):
        for x in range(X):
            last = -1
            for t in range(T):
                if invalid[t, b, y, x]:
                    if last >= 0:
                        codes[t, b, y, x] = last
                else:
                    last = codes[t, b, y, x]
            if last < 0:
                never[y, x] = 1
                continue
            first = -1
            for t in range(T):
                if not invalid[t, b, y, x]:
                    first = codes[t, b, y, x]
                    break
            for t in range(T):
                if not invalid[t, b, y, x]:
                    break
                codes[t, b, y, x] = first
    if not never.any():
        return
    if never.all():
        for t in range(T):
            for y in range(Y):
                for x in range(X):
                    codes[t, b, y, x] = fill_code
        return
    unknown = np.empty((Y, X), np.uint8)
    stack = np.empty(Y * X, np.int64)
    for t in range(T):
        if pyramid:
            # a date's missing pixels that touch the never-valid ones (a footprint's
            # edge that moves from date to date) join them: carried from another date,
            # they were that date's edge inside this date's smooth collar
            if _reaching(invalid, t, b, never, Y, X, unknown, stack) == Y * X:
                # a date missing everywhere keeps the codes carried to it: a copy of the
                # date before costs the codec nothing; the fill alone has no value to use
                _fill_pyramid(codes[t, b], never, Y, X)
            else:
                _fill_pyramid(codes[t, b], unknown, Y, X)
        else:
            _fill_rows(codes[t, b], never, Y, X)


@numba.njit(nogil=True, cache=True)
def _reaching(invalid, t, b, never, Y, X, unknown, stack):  # pragma: no cover - compiled
    """Set ``unknown`` to the ``never`` pixels and the pixels missing at date ``t`` that
    reach them through missing pixels (4-neighbours); how many they are."""
    n = 0
    for y in range(Y):
        for x in range(X):
            unknown[y, x] = never[y, x]
            if never[y, x]:
                stack[n] = y * X + x
                n += 1
    count = n
    while n > 0:
        n -= 1
        y, x = stack[n] // X, stack[n] % X
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            yy, xx = y + dy, x + dx
            if 0 <= yy < Y and 0 <= xx < X and not unknown[yy, xx] and invalid[t, b, yy, xx]:
                unknown[yy, xx] = 1
                stack[n] = yy * X + xx
                n += 1
                count += 1
    return count


@numba.njit(nogil=True, cache=True)
def _fill_rows(plane, never, Y, X):  # pragma: no cover - compiled
    """Fill the ``never`` pixels of ``plane`` (its top-left Y x X): on each row with a
    valid pixel, each run linearly between its left and right neighbours (one of them
    missing: the other's value); then each run of rows without one, column by column,
    between the rows above and below."""
    row_has = np.zeros(Y, np.uint8)
    for y in range(Y):
        for x in range(X):
            if not never[y, x]:
                row_has[y] = 1
                break
    for y in range(Y):
        if not row_has[y]:
            continue
        x = 0
        while x < X:
            if not never[y, x]:
                x += 1
                continue
            start = x
            while x < X and never[y, x]:
                x += 1
            _between(plane[y], start, x, X)
    for xx in range(X):
        y = 0
        while y < Y:
            if row_has[y]:
                y += 1
                continue
            start = y
            while y < Y and not row_has[y]:
                y += 1
            _between(plane[:, xx], start, y, Y)


@numba.njit(nogil=True, cache=True)
def _between(line, start, end, size):  # pragma: no cover - compiled
    """Fill ``line[start:end]`` linearly between its neighbours ``line[start - 1]`` and
    ``line[end]`` (round half up; one of them outside ``line[:size]``, the block's part
    of a padded frame: the other's value)."""
    before = np.float64(line[start - 1]) if start > 0 else -1.0
    after = np.float64(line[end]) if end < size else -1.0
    if before < 0:
        before = after
    if after < 0:
        after = before
    n = end - start + 1
    for k in range(start, end):
        w = (k - start + 1) / n
        line[k] = np.uint16(before + (after - before) * w + 0.5)


@numba.njit(nogil=True, cache=True)
def _fill_pyramid(plane, unknown, Y, X):  # pragma: no cover - compiled
    """Fill the ``unknown`` pixels of ``plane`` (its top-left Y x X) from the others by
    pull-push: the valid values averaged over a pyramid of 2 x 2 cells, then each level's
    empty cells taken from the coarser one, upsampled and smoothed (3 x 3 box). The fill
    is smooth in both directions, so a transform codec spends little on it; the rows fill
    left stripes that cost lossy chunks up to 1.1 dB at equal rate (Landsat 8 collars,
    model SST's land; benchmarks/results/fill_ab)."""
    # the pyramid's sizes and where each level starts in one buffer
    heights = [Y]
    widths = [X]
    while heights[-1] > 1 or widths[-1] > 1:
        heights.append((heights[-1] + 1) // 2)
        widths.append((widths[-1] + 1) // 2)
    levels = len(heights)
    starts = np.zeros(levels + 1, np.int64)
    for k in range(levels):
        starts[k + 1] = starts[k] + heights[k] * widths[k]
    total = np.zeros(starts[levels])  # each cell's mean of known values (0: none)
    weight = np.zeros(starts[levels])  # known pixels in each cell
    for y in range(Y):
        for x in range(X):
            if not unknown[y, x]:
                total[y * X + x] = plane[y, x]
                weight[y * X + x] = 1.0
    for k in range(1, levels):
        h, w = heights[k], widths[k]
        fh, fw = heights[k - 1], widths[k - 1]
        fine, coarse = starts[k - 1], starts[k]
        for y in range(fh):
            for x in range(fw):
                i = coarse + (y // 2) * w + x // 2
                # the finer level holds means: weigh each by its valid pixels
                total[i] += total[fine + y * fw + x] * weight[fine + y * fw + x]
                weight[i] += weight[fine + y * fw + x]
        for i in range(coarse, coarse + h * w):
            if weight[i] > 0:
                total[i] /= weight[i]  # from here on: the cell's mean
    estimate = np.zeros(starts[levels])
    last = starts[levels - 1]
    estimate[last] = total[last]
    for k in range(levels - 2, -1, -1):
        h, w = heights[k], widths[k]
        cw = widths[k + 1]
        here, coarse = starts[k], starts[k + 1]
        for y in range(h):
            for x in range(w):
                i = here + y * w + x
                if weight[i] > 0:
                    estimate[i] = total[i]
                    continue
                acc = 0.0
                for dy in range(-1, 2):
                    yy = min(max(y + dy, 0), h - 1) // 2
                    for dx in range(-1, 2):
                        xx = min(max(x + dx, 0), w - 1) // 2
                        acc += estimate[coarse + yy * cw + xx]
                estimate[i] = acc / 9.0
    for y in range(Y):
        for x in range(X):
            if unknown[y, x]:
                plane[y, x] = np.uint16(estimate[y * X + x] + 0.5)


@numba.njit(nogil=True, parallel=True, cache=True)
def _quantize(
    block, offset, scale, max_code, nodata, has_nodata, codes, invalid, pyramid
):  # pragma: no cover
    T, B, Y, X = block.shape
    H, W = codes.shape[2], codes.shape[3]
    missing = np.zeros(B, np.int64)
    for b in numba.prange(B):
        lo = offset[b]
        inv = 1.0 / scale[b] if scale[b] > 0 else 0.0
        n = 0
        for t in range(T):
            for y in range(Y):
                for x in range(X):
                    v = np.float64(block[t, b, y, x])
                    if v != v or (has_nodata and v == nodata):
                        invalid[t, b, y, x] = 1
                        codes[t, b, y, x] = 0
                        n += 1
                        continue
                    invalid[t, b, y, x] = 0
                    c = math.floor((v - lo) * inv + 0.5)
                    if c < 0:
                        c = 0
                    elif c > max_code:
                        c = max_code
                    codes[t, b, y, x] = c
        missing[b] = n
        if n:
            _fill_band(codes, invalid, b, Y, X, max_code // 2, pyramid)
        for t in range(T):
            for y in range(Y):
                edge = codes[t, b, y, X - 1]
                for x in range(X, W):
                    codes[t, b, y, x] = edge
            for y in range(Y, H):
                for x in range(W):
                    codes[t, b, y, x] = codes[t, b, Y - 1, x]
    return missing


def quantize(
    block: np.ndarray,
    maps: BandMaps,
    bits: int,
    frame_height: int,
    frame_width: int,
    *,
    nodata: float | None = None,
    fill: str = "pyramid",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Map ``block`` to codes, fill missing values and pad to the frame size.

    Missing values are filled along time first (per pixel, the last valid code carried
    forward, then the first one backward); pixels never valid in the block as ``fill``
    says (one of :data:`FILLS`: ``"pyramid"`` for lossy codecs, with each date's missing
    pixels that reach the never-valid ones through missing pixels; ``"rows"`` for
    lossless ones); a band without a valid value gets the middle code.

    Returns
    -------
    codes : ndarray, shape (T, B, frame_height, frame_width)
        uint8 for 8-bit codes, else uint16.
    invalid : ndarray of bool, shape (T, B, Y, X), or None
        Where the block held NaN or ``nodata``; None when nothing was missing.
    """
    T, B, Y, X = block.shape
    if frame_height < Y or frame_width < X:
        raise ValueError(f"frame {frame_height}x{frame_width} smaller than block {Y}x{X}")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    codes = np.empty((T, B, frame_height, frame_width), np.uint8 if bits <= 8 else np.uint16)
    invalid = np.empty((T, B, Y, X), np.uint8)
    has_nodata = nodata is not None
    missing = _quantize(
        block,
        maps.offset,
        maps.scale,
        (1 << bits) - 1,
        float(nodata) if nodata is not None else 0.0,
        has_nodata,
        codes,
        invalid,
        fill == "pyramid",
    )
    return codes, (invalid.view(bool) if missing.any() else None)


@numba.njit(nogil=True, cache=True)
def _valid_extent(block, nodata, has_nodata):  # pragma: no cover - compiled
    T, B, Y, X = block.shape
    t_end = y_end = x_end = 0
    for t in range(T):
        for b in range(B):
            for y in range(Y):
                for x in range(X):
                    v = np.float64(block[t, b, y, x])
                    if v != v or (has_nodata and v == nodata):
                        continue
                    t_end = max(t_end, t + 1)
                    y_end = max(y_end, y + 1)
                    x_end = max(x_end, x + 1)
    return t_end, y_end, x_end


def valid_extent(block: np.ndarray, nodata: float | None) -> tuple[int, int, int]:
    """The smallest ``(T', Y', X')`` with every valid value in ``block[:T', :, :Y', :X']``.

    Valid means neither NaN nor ``nodata``. zarr pads a chunk at the array's end with
    the fill value (missing), so this is where the array really ends inside the chunk.
    Each extent is at least 1.
    """
    T, _, Y, X = block.shape
    if block.dtype.kind in "iu" and nodata is None:
        return T, Y, X
    t, y, x = _valid_extent(block, float(nodata) if nodata is not None else 0.0, nodata is not None)
    return max(t, 1), max(y, 1), max(x, 1)


@numba.njit(nogil=True, cache=True)
def _dequantize_plane(src, dst, offset, scale, integer, vmin, vmax):  # pragma: no cover
    Y, X = dst.shape
    for y in range(Y):
        for x in range(X):
            v = offset + np.float64(src[y, x]) * scale
            if integer:
                v = math.floor(v + 0.5)
                if v < vmin:
                    v = vmin
                elif v > vmax:
                    v = vmax
            dst[y, x] = v


def plane_dequantizer(dtype: np.dtype) -> Callable[[np.ndarray, np.ndarray, float, float], None]:
    """A :func:`dequantize_plane` for destinations of ``dtype``, with its constants bound.

    Decoding calls it once per plane, so the per-call Python work is kept to the kernel
    dispatch.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)

        def run(src: np.ndarray, dst: np.ndarray, offset: float, scale: float) -> None:
            _dequantize_plane(src, dst, offset, scale, True, lo, hi)

    else:

        def run(src: np.ndarray, dst: np.ndarray, offset: float, scale: float) -> None:
            _dequantize_plane(src, dst, offset, scale, False, 0.0, 0.0)

    return run


def dequantize_plane(src: np.ndarray, dst: np.ndarray, offset: float, scale: float) -> None:
    """Write ``offset + src * scale`` into ``dst``, cropping ``src`` to ``dst``'s shape.

    Integer destinations are rounded and clipped to their dtype's range.
    """
    dtype = dst.dtype
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        _dequantize_plane(src, dst, offset, scale, True, float(info.min), float(info.max))
    else:
        _dequantize_plane(src, dst, offset, scale, False, 0.0, 0.0)
