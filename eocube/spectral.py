"""Spectral decorrelation: a per-chunk Karhunen–Loève transform (KLT) of the bands.

Bands of one scene are strongly correlated (red, green and blue follow the same
brightness; so do neighbouring spectral bands). A video codec codes each plane on its
own, so correlated bands pay for the same structure several times. Lossy profiles with
``transform = "klt"`` rotate the band codes of a chunk onto their principal components
before encoding: the first component carries the shared structure, the others carry
little and cost little. The rotation is orthonormal, so a codec error of one code in
any component is an error of one code (in the bands' own, range-normalised codes)
spread over the bands: mean squared error is preserved, which is what PSNR measures.

The transform works on the band codes (each band already mapped onto
``0 .. 2**bits - 1`` by :func:`eocube.packing.band_maps`, missing values filled), so
each band weighs by its range, as in the per-band PSNR of eocube.metrics. Components
are quantized with one common step, the one that fits the widest component into the
codes. The components' origin (the band codes of component codes 0, float32) and the
basis, as Householder vectors of a few bits each (:func:`stored_axes`), are stored in the
chunk header (docs/format.md §6.14, §6.15): :func:`fit` rounds the axes and the origin
so, and the encoder projects with the inverse of the rebuilt basis
(:attr:`SpectralBasis.forward`), so that decoding, an affine map from the B component
codes of a pixel to its B values (:func:`mix`) clipped to each band's range, undoes it
with the basis as stored.

Lossless profiles never use it: the rotation is not exact in integers.

The kernels are Numba-compiled and release the GIL; the encoding ones run dates in
parallel.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numba
import numpy as np

TRANSFORMS = ("none", "klt")
"""Spectral transforms a profile may name."""

AXIS_SCALE = 511
"""The basis is stored as B - 1 Householder vectors, each scaled to a largest entry of 1
and stored as multiples of ``1 / AXIS_SCALE`` (:func:`stored_axes`), :data:`AXIS_BITS`
bits each from chunk format 14 on (16 in format 13, float32 entries before): B(B + 1)/2
- 1 values. The product of the reflections is orthonormal whatever the rounding of the
vectors, which moves each axis by about 2e-3. Side by side with 16-bit vectors, on four
corpus cubes of 9 to 40 bands and 13-band 64 px patches at crf 36, 26 and 16: -0.052 to
+0.044 dB (median +0.004; the rotation trials choose differently either way) for 0.83
to 1.00 times the payload bytes (benchmarks/results/lean_header.md)."""

AXIS_BITS = 10
"""Bits per stored Householder value at :data:`AXIS_SCALE`: ``-511 .. 511`` offset by 512."""

V13_AXIS_SCALE = 32767
"""Chunk format 13 stored the Householder values as int16 multiples of ``1 / 32767``."""

MIN_GAIN_DB = 2.0
"""The least predicted gain (:func:`gain_db`) for which a chunk is rotated.

Measured on the dev corpus (benchmarks/results/rd): reflectance cubes predict 2.4 to
11 dB and gain 1 to 6 dB at 0.1–1 bpppb; ERA-Interim u/v/z (1.4 dB predicted) lost
1.4 dB when rotated; single fields and weakly related variables predict under 0.5 dB.
"""


@dataclass(frozen=True)
class SpectralBasis:
    """The component map of one chunk: ``code = origin + basis @ (step * component_code)``
    (and so ``component_code = round(basis⁻¹ @ (code - origin) / step)``).

    Attributes
    ----------
    origin : ndarray of float64, shape (B,)
        The band codes that component codes 0 stand for: the chunk's mean band code plus
        each component's smallest value along its axis, so that component codes start at
        0. Float32 values from chunk format 14 on, which stores them so; before, the band
        means and the components' smallest values were stored apart, and the origin is
        computed from them in float64 as their decoding always did.
    basis : ndarray of float32, shape (B, B)
        Orthonormal (to within float32 rounding); column ``k`` is component ``k``, by
        decreasing variance. Decoding maps component codes back to band codes with it.
    step : float
        Component value per code, the same for every component (a float32 value from
        chunk format 14 on).
    """

    origin: np.ndarray
    basis: np.ndarray
    step: float
    stored: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The basis as the header stores it (:func:`stored_axes`), where known: the header
    writes these very values, which :attr:`basis` is rebuilt from."""

    @property
    def bands(self) -> int:
        """Number of bands (and components)."""
        return int(self.basis.shape[0])

    @cached_property
    def forward(self) -> np.ndarray:
        """The encoder's map (float64, (B, B)): ``component = forward.T @ (code - origin)``,
        the inverse of :attr:`basis` as float64 holds it, so that the float32 basis the
        decoder uses undoes exactly what was coded."""
        return np.ascontiguousarray(np.linalg.inv(self.basis.astype(np.float64)).T)


def stored_axes(axes: np.ndarray, scale: int | None = None) -> np.ndarray:
    """Orthonormal axes (B, B) as the chunk header stores them: the Householder vectors
    ``v_0 .. v_{B-2}`` (``v_k`` of length ``B - k``) whose reflections ``H_k = I - 2 v
    vᵀ / (vᵀ v)``, acting on rows ``k ..`` of a vector, multiply to axes within about
    ``1 / scale`` of ``axes`` (each column up to its sign, which a principal axis leaves
    free), each scaled to a largest entry of 1, as integer multiples of ``1 / scale``
    (:data:`AXIS_SCALE`; chunk format 13: :data:`V13_AXIS_SCALE`), one after the other
    (int16, length B(B + 1)/2 - 1). :func:`axes_from_stored` rebuilds the axes from
    them.

    Each vector is fitted to what the rounded reflections before it left, so the
    rounding does not add up from one to the next.
    """
    scale = AXIS_SCALE if scale is None else scale
    work = np.array(axes, dtype=np.float64)
    B = work.shape[0]
    stored = []
    for k in range(B - 1):
        x = work[k:, k]
        alpha = -math.copysign(float(np.linalg.norm(x)), float(x[0]))
        v = x.copy()
        v[0] -= alpha  # |v[0]| >= |x|, which is 1 for orthonormal axes: never 0
        q = np.rint(v / np.abs(v).max() * scale).astype("<i2")
        stored.append(q)
        rounded = q.astype(np.float64) / scale
        work[k:, :] -= np.outer(rounded, 2.0 * (rounded @ work[k:, :]) / (rounded @ rounded))
    return np.concatenate(stored) if stored else np.zeros(0, "<i2")


def axes_from_stored(stored: np.ndarray, bands: int, scale: int | None = None) -> np.ndarray:
    """The axes (float32, (bands, bands)) that :func:`stored_axes` output stands for:
    ``H_0 H_1 .. H_{B-2}``, computed in float64 in a fixed order (the same on every
    machine), then rounded to float32.

    Raises
    ------
    ValueError
        If ``stored`` is not ``bands (bands + 1) / 2 - 1`` values, or a vector is 0.
    """
    if stored.shape != (bands * (bands + 1) // 2 - 1,):
        raise ValueError(f"{stored.size} stored axis values cannot be {bands} bands' axes")
    scale = AXIS_SCALE if scale is None else scale
    if np.abs(stored).max(initial=0) > scale:
        raise ValueError(f"a stored Householder value is beyond {scale}")
    axes, complete = _householder_product(stored.astype(np.float64) / scale, bands)
    if not complete:
        raise ValueError("a stored Householder vector is 0")
    return axes.astype(np.float32)


@numba.njit(nogil=True, cache=True)
def _householder_product(vectors, B):  # pragma: no cover - compiled
    axes = np.eye(B)
    # H_0 (H_1 (... (H_{B-2} I))): the last reflection first
    end = vectors.shape[0]
    for k in range(B - 2, -1, -1):
        n = B - k
        v = vectors[end - n : end]
        end -= n
        vv = 0.0
        for i in range(n):
            vv += v[i] * v[i]
        if vv == 0.0:
            return axes, False
        for j in range(B):
            dot = 0.0
            for i in range(n):
                dot += v[i] * axes[k + i, j]
            f = 2.0 * dot / vv
            for i in range(n):
                axes[k + i, j] -= f * v[i]
    return axes, True


@numba.njit(nogil=True, parallel=True, cache=True)
def _band_sums(codes, Y, X):  # pragma: no cover - compiled
    T, B = codes.shape[0], codes.shape[1]
    sums = np.zeros((T, B))
    for t in numba.prange(T):
        for b in range(B):
            s = 0.0
            for y in range(Y):
                for x in range(X):
                    s += codes[t, b, y, x]
            sums[t, b] = s
    return sums.sum(axis=0)


@numba.njit(nogil=True, parallel=True, cache=True)
def _centred_products(codes, mean, Y, X):  # pragma: no cover - compiled
    T, B = codes.shape[0], codes.shape[1]
    prods = np.zeros((T, B, B))
    row = np.empty((T, B))
    for t in numba.prange(T):
        for y in range(Y):
            for x in range(X):
                for i in range(B):
                    row[t, i] = codes[t, i, y, x] - mean[i]
                for i in range(B):
                    for j in range(i, B):
                        prods[t, i, j] += row[t, i] * row[t, j]
    return prods.sum(axis=0)


@numba.njit(nogil=True, parallel=True, cache=True)
def _gradient_products(codes, Y, X):  # pragma: no cover - compiled
    T, B = codes.shape[0], codes.shape[1]
    prods = np.zeros((T, B, B))
    d = np.empty((T, B))
    for t in numba.prange(T):
        for y in range(Y):
            for x in range(X):
                for step in range(2):
                    if step == 0:
                        if x + 1 >= X:
                            continue
                        for i in range(B):
                            d[t, i] = np.float64(codes[t, i, y, x + 1]) - codes[t, i, y, x]
                    else:
                        if y + 1 >= Y:
                            continue
                        for i in range(B):
                            d[t, i] = np.float64(codes[t, i, y + 1, x]) - codes[t, i, y, x]
                    for i in range(B):
                        for j in range(i, B):
                            prods[t, i, j] += d[t, i] * d[t, j]
    return prods.sum(axis=0)


@numba.njit(nogil=True, inline="always")
def _rotate_pixel(codes, t, y, x, mean, basis, centred, components):  # pragma: no cover
    B = mean.shape[0]
    for b in range(B):
        centred[b] = np.float64(codes[t, b, y, x]) - mean[b]
    for k in range(B):
        acc = 0.0
        for b in range(B):
            acc += basis[b, k] * centred[b]
        components[k] = acc


@numba.njit(nogil=True, parallel=True, cache=True)
def _component_ranges(codes, mean, basis, Y, X):  # pragma: no cover - compiled
    T, B = codes.shape[0], codes.shape[1]
    lo = np.full((T, B), np.inf)
    hi = np.full((T, B), -np.inf)
    scratch = np.empty((T, 2, B))
    for t in numba.prange(T):
        for y in range(Y):
            for x in range(X):
                _rotate_pixel(codes, t, y, x, mean, basis, scratch[t, 0], scratch[t, 1])
                for k in range(B):
                    lo[t, k] = min(lo[t, k], scratch[t, 1, k])
                    hi[t, k] = max(hi[t, k], scratch[t, 1, k])
    out_lo = np.empty(B)
    out_hi = np.empty(B)
    for k in range(B):
        out_lo[k] = lo[:, k].min()
        out_hi[k] = hi[:, k].max()
    return out_lo, out_hi


@numba.njit(nogil=True, parallel=True, cache=True)
def _project(codes, origin, basis, inv_step, max_code, out):  # pragma: no cover
    T, B, H, W = codes.shape
    scratch = np.empty((T, 2, B))
    for t in numba.prange(T):
        for y in range(H):
            for x in range(W):
                _rotate_pixel(codes, t, y, x, origin, basis, scratch[t, 0], scratch[t, 1])
                for k in range(B):
                    c = math.floor(scratch[t, 1, k] * inv_step + 0.5)
                    out[t, k, y, x] = min(max(c, 0), max_code)


def _principal_axes(codes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Band means and the eigenvectors of the band covariance, largest first (float32)."""
    n = codes.shape[0] * height * width
    mean = _band_sums(codes, height, width) / n
    upper = _centred_products(codes, mean, height, width)
    cov = np.triu(upper) + np.triu(upper, 1).T
    _, vectors = np.linalg.eigh(cov / n)
    # eigh sorts ascending: the largest component first, where the codec's luma goes
    return mean.astype(np.float32), np.ascontiguousarray(vectors[:, ::-1]).astype(np.float32)


def _complete(
    codes: np.ndarray, mean: np.ndarray, axes: np.ndarray, height: int, width: int, bits: int
) -> SpectralBasis:
    # the axes as the header stores them: what decoding will use
    stored = stored_axes(axes)
    basis = axes_from_stored(stored, axes.shape[0])
    centred = SpectralBasis(origin=mean.astype(np.float64), basis=basis, step=1.0)
    lo, hi = _component_ranges(codes, centred.origin, centred.forward, height, width)
    # the origin and step as the header stores them (float32); the step rounded up, so
    # that the widest component still fits the codes
    origin = (centred.origin + basis.astype(np.float64) @ lo).astype(np.float32)
    step = np.float32(max((hi - lo).max(), 1.0) / ((1 << bits) - 1))
    if float(step) * ((1 << bits) - 1) < (hi - lo).max():
        step = np.nextafter(step, np.float32(np.inf))
    return SpectralBasis(
        origin=origin.astype(np.float64), basis=basis, step=float(step), stored=stored
    )


def fit(codes: np.ndarray, height: int, width: int, bits: int) -> SpectralBasis:
    """The KLT of the band codes of a chunk.

    Parameters
    ----------
    codes : ndarray, shape (T, B, H, W)
        Band codes (uint8 or uint16), missing values filled, padded to the frame size.
    height, width : int
        The block's own size inside the padded frames: statistics ignore the padding.
    bits : int
        Code bit depth: the widest component is fitted into ``0 .. 2**bits - 1``.
    """
    mean, basis = _principal_axes(codes, height, width)
    return _complete(codes, mean, basis, height, width, bits)


def candidates(codes: np.ndarray, height: int, width: int, bits: int) -> list[SpectralBasis | None]:
    """The rotations of a chunk worth coding it with (None: the bands as they are).

    Two bases are fitted: the principal axes of the band codes themselves (their
    variance: what the first frame of a series and smooth regions cost) and those of
    their detail, the horizontal and vertical differences (what a codec codes once its
    prediction has taken the rest). They differ where the bands share their broad
    structure more than their fine one, or the other way round: on a 13-band Sentinel-2
    cube of 5 dates the detail axes gain up to +2 dB at 1.5 bpppb, on 4-band WorldCereal
    series they lose 0.3 dB (benchmarks/results/klt_basis.md). Each is a candidate where
    its predicted gain (:func:`gain_db`) reaches :data:`MIN_GAIN_DB`; the first entry is
    the codes' own axes or None, the second (if any) the detail axes, when predicted to
    gain :data:`DETAIL_MIN_DB` more. :func:`eocube.chunk.encode_chunk` tries the
    candidates on a window of the chunk when there is more than one.
    """
    mean, value_axes = _principal_axes(codes, height, width)
    detail = _detail_covariance(codes, height, width)
    found: list[SpectralBasis | None] = [None]
    value_gain = _coding_gain_db(detail, value_axes)
    if value_gain >= MIN_GAIN_DB:
        found[0] = _complete(codes, mean, value_axes, height, width, bits)
    _, vectors = np.linalg.eigh(detail)
    detail_axes = np.ascontiguousarray(vectors[:, ::-1]).astype(np.float32)
    detail_gain = _coding_gain_db(detail, detail_axes)
    if detail_gain >= MIN_GAIN_DB and detail_gain - value_gain >= DETAIL_MIN_DB:
        found.append(_complete(codes, mean, detail_axes, height, width, bits))
    return found


DETAIL_MIN_DB = 0.35
"""How much more the detail axes must be predicted to gain than the codes' own axes to
be tried (:func:`candidates`); they can only be predicted to gain more, since they are
fitted to what the prediction measures. Where they were tried on the dev corpus, the
cubes whose chunks kept them were predicted 0.46 to 1.65 dB more; cubes predicted 0.09
to 0.30 dB more (WorldCereal 4-band series, ERA5 ensembles, fusets fields) kept their
own axes at every rate tried, so trying there only costs encoding time.
"""


def gain_db(codes: np.ndarray, spectral: SpectralBasis, height: int, width: int) -> float:
    """The predicted coding gain of rotating ``codes`` by ``spectral``, in dB.

    What a video codec codes is what its prediction misses, the fine detail, not the
    bands' overall variance (smooth fields that rise and fall together share little
    detail). The estimate is the transform coding gain, the ratio of geometric means
    of the variances before and after the rotation, of the horizontal and vertical
    differences of the codes.
    """
    return _coding_gain_db(_detail_covariance(codes, height, width), spectral.basis)


def _detail_covariance(codes: np.ndarray, height: int, width: int) -> np.ndarray:
    """The covariance of the bands' horizontal and vertical differences (per difference)."""
    upper = _gradient_products(codes, height, width)
    n = max(1, codes.shape[0] * height * width)
    return (np.triu(upper) + np.triu(upper, 1).T) / n


def _coding_gain_db(detail: np.ndarray, basis: np.ndarray) -> float:
    axes = basis.astype(np.float64)
    # a variance below that of rounding to codes is noise: floor both sides there
    floor = 1.0 / 12.0
    before = np.maximum(np.diag(detail), floor)
    after = np.maximum(np.einsum("bk,bc,ck->k", axes, detail, axes), floor)
    return float(10.0 * (np.log10(before).mean() - np.log10(after).mean()))


def project(codes: np.ndarray, spectral: SpectralBasis, bits: int) -> np.ndarray:
    """Band codes (T, B, H, W) to component codes of the same shape and dtype."""
    out = np.empty_like(codes)
    _project(
        codes,
        spectral.origin.astype(np.float64),
        spectral.forward,
        1.0 / spectral.step,
        (1 << bits) - 1,
        out,
    )
    return out


def decoding_map(
    spectral: SpectralBasis, offset: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The affine map from component codes to values: ``value = shift + matrix @ code``.

    ``offset`` and ``scale`` are the bands' own maps (eocube.packing.BandMaps):
    ``value_b = offset_b + scale_b * band_code_b``.
    """
    basis = spectral.basis.astype(np.float64)
    shift = offset + scale * spectral.origin
    matrix = scale[:, None] * basis * spectral.step
    return shift, np.ascontiguousarray(matrix)


# Serial on purpose, like the other decode kernels: readers decode chunks on dask threads
# (or DataLoader workers forked after a first read, which an OpenMP pool would abort).
# Rows of x are the inner loop, so the multiply-adds vectorise.
@numba.njit(nogil=True, cache=True)
def _mix(codes, shift, matrix, lo, hi, integer, out, y0, y1):  # pragma: no cover - compiled
    T, B, _, X = out.shape
    row = np.empty(X)
    for t in range(T):
        for y in range(y0, y1):
            for b in range(B):
                for x in range(X):
                    row[x] = shift[b]
                for k in range(B):
                    m = matrix[b, k]
                    src = codes[t, k, y]
                    for x in range(X):
                        row[x] += m * src[x]
                low, high = lo[b], hi[b]
                dst = out[t, b, y]
                for x in range(X):
                    v = row[x]
                    if integer:
                        v = math.floor(v + 0.5)
                    dst[x] = min(max(v, low), high)


def mix(
    codes: np.ndarray,
    shift: np.ndarray,
    matrix: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    out: np.ndarray,
    threads: int = 1,
) -> None:
    """Write ``shift + matrix @ code`` for each pixel of ``codes`` (T, B, Y, X) into ``out``.

    Values are rounded for integer ``out`` and clipped to ``low .. high`` per band. With
    ``threads`` > 1, bands of rows are mixed on that many threads at once (each pixel
    alone, so the values are the same); small blocks always mix on the calling thread.
    """
    integer = out.dtype.kind in "iu"
    T, B, Y, X = out.shape
    # B x B multiply-adds per pixel: a 13-band scene chunk of 1024 x 1024 spends a quarter
    # of its decode here, worth splitting; a 32 x 4 x 64 x 64 chunk is not
    parts = min(max(1, threads), Y) if T * B * B * Y * X >= _THREADED_MIX else 1
    if parts == 1:
        _mix(codes, shift, matrix, low, high, integer, out, 0, Y)
        return
    # row ranges of the whole arrays: slices of them would not be contiguous (no SIMD)
    rows = np.linspace(0, Y, parts + 1).astype(int)

    def part(i: int) -> None:
        _mix(codes, shift, matrix, low, high, integer, out, int(rows[i]), int(rows[i + 1]))

    with ThreadPoolExecutor(parts - 1) as pool:
        others = [pool.submit(part, i) for i in range(1, parts)]
        part(0)
        for done in others:
            done.result()


_THREADED_MIX = 64 * 2**20
"""Multiply-adds (T x B x B x Y x X) from which :func:`mix` uses the threads it is given."""
