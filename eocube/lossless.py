"""eocube's own lossless frame coder ("eocube-pred"): adaptive prediction and range coding.

Frames of up to 16-bit samples (a stream of ``F`` frames of ``H`` x ``W``, as the ``luma``
layout lays out a chunk: each band's series of dates in sequence) are coded pixel by pixel
in raster order, frame after frame, with one set of adaptive models for the whole stream.

Prediction
    Each pixel is predicted by a weighted average of sub-predictors, weighted by their
    recent errors at the neighbours (the "self-correcting" predictor of JPEG-XL's modular
    mode, extended across frames). Four spatial sub-predictors are always on: ``W + NE - N``
    and ``N`` / ``W`` / ``N`` corrected by the errors made at the neighbours. A frame may
    name up to two earlier frames of the stream as references (the encoder picks them; in
    the ``luma`` layout, typically the previous date of the band and the same date of the
    previous band): each adds two sub-predictors, ``R + (W - R_W) + (N - R_N) - (NW - R_NW)``
    and ``R + ((W - R_W) + (N - R_N)) / 2`` with ``R`` the co-located reference sample.
Residual coding
    ``e = x - prediction`` is binarised as a token (0 for zero, else the bit length of
    ``|e|``, 1 .. 16) in a 5-level binary tree of adaptive bins, a sign, the two bits below
    the leading one (adaptive bins) and the remaining low bits (equiprobable). The token and
    mantissa models are chosen by the local activity: the quantised sum of the magnitudes of
    the prediction errors (unclipped) at the left, up, up-left and up-right neighbours; the
    sign's by the signs of the left and up errors. The binary range coder and its adaptive
    probabilities are those of :mod:`eocube.rangecoder` (LZMA's coder, 16-bit probabilities,
    adaptation 1 / (n + 2) then 1 / 128).

Byte layout (one packet per stream; the stream record holds the frame size and count)::

    u8 version (1)
    F x (varint ref_a, varint ref_b)    backward distances of the frame's two reference
                                        frames (0: none; at most the frame's index)
    u32 crc32 of the frames             (F, H, W) as uint16 little-endian
    range-coded residuals               to the packet's end; the decoder must end exactly
                                        there with a zero code

The coder is lossless by construction; the CRC catches damaged packets the range coder's
end check lets through.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

import numba
import numpy as np

from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CorruptChunkError
from eocube.rangecoder import _FLUSH, _get, _get_raw, _put, _put_raw, _room, _shift_low

CODER = "eocube-pred"
"""The encoder and decoder name streams of this coder carry."""
PIX_FMT = "gray16le"
"""The only pixel format the coder takes."""
VERSION = 1

_MAXVAL = 65535
_NSPATIAL = 5
_NPRED = _NSPATIAL + 4  # 2 per reference frame
_NCTX = 48
_M_TREE = 0
_M_SIGN = _M_TREE + _NCTX * 32
_M_MANT = _M_SIGN + 9
_N_MODELS = _M_MANT + _NCTX * 17 * 4
_MAX_DISTANCES = 24  # candidate reference distances the encoder compares

_POWER = 4
# (1 << 24) // (k + 1), as JPEG-XL's weighted predictor divides
_DIV = np.array([(1 << 24) // (k + 1) for k in range(128)], np.int64)
# bit length of 0 .. 65535
_BITLEN = np.array([int(v).bit_length() for v in range(65536)], np.int64)

_DECODE_ERRORS = {
    1: "does not start a range-coded stream",
    2: "decodes to a value out of range",
    3: "is truncated",
    4: "does not end where its packet does (truncated, extended or altered)",
}


@numba.njit(nogil=True, cache=True, inline="always")
def _bitlen(v: int) -> int:  # pragma: no cover - compiled
    if v < 65536:
        return _BITLEN[v]
    if v < (1 << 32):
        return 16 + _BITLEN[v >> 16]
    return 32 + _BITLEN[min(v >> 32, 65535)]


@numba.njit(nogil=True, cache=True, inline="always")
def _inverse(x: int) -> int:  # pragma: no cover - compiled
    # about (1 << 24) / (x + 1), within 1/64
    shift = _bitlen(x + 1) - 6
    if shift < 0:
        shift = 0
    return _DIV[x >> shift] >> shift


@numba.njit(nogil=True, cache=True, inline="always")
def _context(act: int) -> int:  # pragma: no cover - compiled
    # act (prediction errors in 1/8 units) on a half-octave scale
    if act < 8:
        return act
    n = _bitlen(act)
    c = 8 + 2 * (n - 4) + ((act >> (n - 2)) & 1)
    return c if c < _NCTX else _NCTX - 1


@numba.njit(nogil=True, cache=True, inline="always")
def _causal(
    img: np.ndarray, y: int, x: int, W: int
) -> tuple[int, int, int, int]:  # pragma: no cover
    # W, N, NW, NE with JPEG-XL's edge rules
    if x > 0:
        w = int(img[y, x - 1])
    elif y > 0:
        w = int(img[y - 1, x])
    else:
        w = 0
    if y > 0:
        n = int(img[y - 1, x])
        nw = int(img[y - 1, x - 1]) if x > 0 else w
        ne = int(img[y - 1, x + 1]) if x + 1 < W else n
    else:
        n = w
        nw = w
        ne = w
    return w, n, nw, ne


@numba.njit(nogil=True, cache=True, inline="always")
def _sgn3(v: int) -> int:  # pragma: no cover - compiled
    return 0 if v == 0 else (1 if v > 0 else 2)


@numba.njit(nogil=True, cache=True, inline="always")
def _predict(
    img: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    has_a: bool,
    has_b: bool,
    y: int,
    x: int,
    W: int,
    perr: np.ndarray,
    terr: np.ndarray,
    preds: np.ndarray,
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """(prediction, prediction in 1/8 units, activity context, sign context)."""
    cur = y & 1
    prev = cur ^ 1
    w, n, nw, ne = _causal(img, y, x, W)
    te_w = terr[cur, x - 1] if x > 0 else 0
    te_n = terr[prev, x]
    xnw = x - 1 if x > 0 else x
    xne = x + 1 if x + 1 < W else x
    te_nw = terr[prev, xnw]
    te_ne = terr[prev, xne]
    sum_wn = te_n + te_w
    w8 = w << 3
    n8 = n << 3
    grad = w + n - nw
    lo = min(w, n)
    hi = max(w, n)
    preds[0] = grad << 3
    preds[1] = min(max(grad, lo), hi) << 3
    preds[2] = w8 + (ne << 3) - n8
    preds[3] = n8 - (((sum_wn + te_ne) * 16) >> 5)
    preds[4] = w8 - (((sum_wn + te_nw) * 10) >> 5)
    lo = min(lo, ne)
    hi = max(hi, ne)
    count = _NSPATIAL
    for k in range(2):
        if k == 0:
            if not has_a:
                continue
            ref = ref_a
        else:
            if not has_b:
                continue
            ref = ref_b
        rw, rn, rnw, _ = _causal(ref, y, x, W)
        r = int(ref[y, x])
        dw = w - rw
        dn = n - rn
        p = r + dw + dn - (nw - rnw)
        preds[count] = p << 3
        preds[count + 1] = (r << 3) + ((dw + dn) << 2)
        count += 2
        q = r + ((dw + dn) >> 1)
        lo = min(lo, q)
        hi = max(hi, q)
    # weights (emin / e) ** _POWER, e the errors summed at N, NE, NW (with W and WW),
    # 1 / (e + 1) from a table (no division)
    emin = 1 << 40
    for i in range(count):
        e = perr[i, prev, x] + perr[i, prev, xne] + perr[i, prev, xnw]
        preds[_NPRED + i] = e
        emin = min(emin, e)
    wsum = 0
    psum = 0
    for i in range(count):
        r = ((emin + 1) * _inverse(int(preds[_NPRED + i]))) >> 8
        wi = r
        for _ in range(_POWER - 1):
            wi = (wi * r) >> 16
        wi += 1
        wsum += wi
        psum += int(preds[i]) * wi
    p8 = (psum + (wsum >> 1)) // wsum
    if not (((te_n ^ te_w) | (te_n ^ te_nw)) > 0):
        p8 = min(max(p8, lo << 3), hi << 3)
    pred = (p8 + 3) >> 3
    if pred < 0:
        pred = 0
    elif pred > _MAXVAL:
        pred = _MAXVAL
    act = abs(te_w) + abs(te_n) + ((abs(te_nw) + abs(te_ne)) >> 1)
    return pred, p8, _context(act), _sgn3(te_w) * 3 + _sgn3(te_n)


@numba.njit(nogil=True, cache=True, inline="always")
def _update(
    v: int,
    x: int,
    y: int,
    count: int,
    p8: int,
    perr: np.ndarray,
    terr: np.ndarray,
    preds: np.ndarray,
) -> None:  # pragma: no cover - compiled
    cur = y & 1
    prev = cur ^ 1
    v8 = v << 3
    terr[cur, x] = p8 - v8
    for i in range(count):
        err = (abs(preds[i] - v8) + 3) >> 3
        perr[i, cur, x] = err
        perr[i, prev, x + 1] += err


@numba.njit(nogil=True, cache=True)
def _encode(
    frames: np.ndarray, dist_a: np.ndarray, dist_b: np.ndarray
) -> np.ndarray:  # pragma: no cover
    F, H, W = frames.shape
    model = np.full(_N_MODELS, 32768, np.int64)
    perr = np.zeros((_NPRED, 2, W + 2), np.int64)
    terr = np.zeros((2, W + 2), np.int64)
    preds = np.zeros(2 * _NPRED, np.int64)
    out = np.empty(F * H * W * 2 + 18 * H * W + 1024, np.uint8)
    low = 0
    rng = 0xFFFFFFFF
    cache = 0
    pending = 1
    pos = 0
    for f in range(F):
        img = frames[f]
        has_a = dist_a[f] > 0
        has_b = dist_b[f] > 0
        ref_a = frames[f - dist_a[f]] if has_a else img
        ref_b = frames[f - dist_b[f]] if has_b else img
        count = _NSPATIAL + 2 * (int(has_a) + int(has_b))
        perr[:] = 0
        terr[:] = 0
        # a pixel adds at most 8 adaptive bins (2 bytes each) and 14 raw bits
        need = pos + pending + 18 * H * W + 64
        if need > out.size:
            out = _room(out, need)
        for y in range(H):
            for x in range(W):
                pred, p8, c, sc = _predict(
                    img, ref_a, ref_b, has_a, has_b, y, x, W, perr, terr, preds
                )
                v = int(img[y, x])
                e = v - pred
                a = abs(e)
                tok = _bitlen(a)
                base = _M_TREE + c * 32
                node = 1
                for j in range(4, -1, -1):
                    bit = (tok >> j) & 1
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, base + node, bit
                    )
                    node = 2 * node + bit
                if tok:
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model, _M_SIGN + sc, int(e < 0)
                    )
                    mbase = _M_MANT + (c * 17 + tok) * 4
                    node = 1
                    for j in range(tok - 2, -1, -1):
                        bit = (a >> j) & 1
                        if j >= tok - 3:
                            low, rng, cache, pending, pos = _put(
                                low, rng, cache, pending, pos, out, model, mbase + node, bit
                            )
                            node = 2 * node + bit
                        else:
                            low, rng, cache, pending, pos = _put_raw(
                                low, rng, cache, pending, pos, out, bit
                            )
                _update(v, x, y, count, p8, perr, terr, preds)
    out = _room(out, pos + pending + _FLUSH)
    for _ in range(_FLUSH):
        low, cache, pending, pos = _shift_low(low, cache, pending, pos, out)
    return out[:pos]


@numba.njit(nogil=True, cache=True)
def _decode(
    data: np.ndarray, start: int, dist_a: np.ndarray, dist_b: np.ndarray, frames: np.ndarray
) -> int:  # pragma: no cover - compiled
    # 0 on success, else a key of _DECODE_ERRORS; frames is filled
    F, H, W = frames.shape
    end = data.size
    if end - start < _FLUSH or data[start] != 0:
        return 1
    code = 0
    for j in range(1, _FLUSH):
        code = (code << 8) | int(data[start + j])
    rng = 0xFFFFFFFF
    if code >= rng:
        return 1
    pos = start + _FLUSH
    model = np.full(_N_MODELS, 32768, np.int64)
    perr = np.zeros((_NPRED, 2, W + 2), np.int64)
    terr = np.zeros((2, W + 2), np.int64)
    preds = np.zeros(2 * _NPRED, np.int64)
    for f in range(F):
        img = frames[f]
        has_a = dist_a[f] > 0
        has_b = dist_b[f] > 0
        ref_a = frames[f - dist_a[f]] if has_a else img
        ref_b = frames[f - dist_b[f]] if has_b else img
        count = _NSPATIAL + 2 * (int(has_a) + int(has_b))
        perr[:] = 0
        terr[:] = 0
        for y in range(H):
            if pos > end:
                return 3
            for x in range(W):
                pred, p8, c, sc = _predict(
                    img, ref_a, ref_b, has_a, has_b, y, x, W, perr, terr, preds
                )
                base = _M_TREE + c * 32
                node = 1
                for _ in range(5):
                    bit, rng, code, pos = _get(rng, code, pos, data, model, base + node)
                    node = 2 * node + bit
                tok = node - 32
                v = pred
                if tok:
                    if tok > 16:
                        return 2
                    neg, rng, code, pos = _get(rng, code, pos, data, model, _M_SIGN + sc)
                    mbase = _M_MANT + (c * 17 + tok) * 4
                    node = 1
                    a = 1
                    for j in range(tok - 2, -1, -1):
                        if j >= tok - 3:
                            bit, rng, code, pos = _get(rng, code, pos, data, model, mbase + node)
                            node = 2 * node + bit
                        else:
                            bit, rng, code, pos = _get_raw(rng, code, pos, data)
                        a = (a << 1) | bit
                    v = pred - a if neg else pred + a
                    if v < 0 or v > _MAXVAL:
                        return 2
                img[y, x] = v
                _update(v, x, y, count, p8, perr, terr, preds)
    if pos > end:
        return 3
    if pos != end or code != 0:
        return 4
    return 0


@numba.njit(nogil=True, cache=True)
def _reference_costs(frames: np.ndarray, distances: np.ndarray) -> np.ndarray:  # pragma: no cover
    # per frame: column 0 the sum of |planar prediction error| of the frame alone, column
    # k + 1 that of its difference from the frame distances[k] back (inf if none)
    F, H, W = frames.shape
    K = distances.size
    cost = np.full((F, K + 1), np.inf)
    for f in range(F):
        img = frames[f]
        s = 0
        for y in range(1, H):
            for x in range(1, W):
                p = int(img[y, x - 1]) + int(img[y - 1, x]) - int(img[y - 1, x - 1])
                s += abs(int(img[y, x]) - p)
        cost[f, 0] = s
        for k in range(K):
            d = distances[k]
            if d > f:
                continue
            ref = frames[f - d]
            s = 0
            for y in range(1, H):
                for x in range(1, W):
                    dx = int(img[y, x]) - int(ref[y, x])
                    dw = int(img[y, x - 1]) - int(ref[y, x - 1])
                    dn = int(img[y - 1, x]) - int(ref[y - 1, x])
                    dnw = int(img[y - 1, x - 1]) - int(ref[y - 1, x - 1])
                    s += abs(dx - dw - dn + dnw)
            cost[f, k + 1] = s
    return cost


def candidate_distances(frames: int) -> np.ndarray:
    """The backward distances the encoder considers for references.

    1 and 2 (the previous dates of a band in the ``luma`` layout), then the divisors of the
    frame count (one of them is the number of dates: the same date of an earlier band).
    """
    found = [1, 2]
    for d in range(3, frames // 2 + 1):
        if frames % d == 0:
            found.append(d)
    found = [d for d in found if d < frames][:_MAX_DISTANCES]
    return np.array(found, np.int64)


def choose_references(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the backward distances of up to two reference frames (0: none).

    A reference is taken when predicting the frame's difference from it (planar
    prediction) beats predicting the frame alone; the best two are kept.
    """
    F = frames.shape[0]
    dist_a = np.zeros(F, np.int64)
    dist_b = np.zeros(F, np.int64)
    distances = candidate_distances(F)
    if F < 2 or frames.shape[1] < 2 or frames.shape[2] < 2 or distances.size == 0:
        return dist_a, dist_b
    cost = _reference_costs(frames, distances)
    for f in range(1, F):
        alone = cost[f, 0]
        order = np.argsort(cost[f, 1:], kind="stable")
        picked = [int(distances[k]) for k in order[:2] if cost[f, k + 1] < alone]
        if picked:
            dist_a[f] = picked[0]
        if len(picked) > 1:
            dist_b[f] = picked[1]
    return dist_a, dist_b


def encode(frames: np.ndarray) -> bytes:
    """Code a stack of frames (F, H, W) of uint16 samples into one packet.

    Parameters
    ----------
    frames : ndarray, shape (F, H, W)
        Samples of up to 16 bits (uint16, or an integer array within 0 .. 65535).

    Returns
    -------
    bytes
        The packet (see the module docstring); :func:`decode` returns ``frames`` from it.
    """
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 3 or 0 in frames.shape:
        raise ValueError(f"frames must have shape (F, H, W) with no empty axis, got {frames.shape}")
    if frames.dtype != np.uint16:
        if frames.dtype.kind not in "iu" or frames.min() < 0 or frames.max() > _MAXVAL:
            raise ValueError("frames must hold integers within 0 .. 65535")
        frames = frames.astype(np.uint16)
    dist_a, dist_b = choose_references(frames)
    w = ByteWriter()
    w.pack("B", VERSION)
    for a, b in zip(dist_a.tolist(), dist_b.tolist(), strict=True):
        w.varint(a)
        w.varint(b)
    w.pack("I", zlib.crc32(frames.astype("<u2", copy=False).tobytes()))
    w.raw(bytes(_encode(frames, dist_a, dist_b)))
    return w.getvalue()


def decode(packet: bytes, frames: int, height: int, width: int) -> np.ndarray:
    """The frames (F, H, W), uint16, of a packet made by :func:`encode`.

    Raises
    ------
    CorruptChunkError
        If the packet is truncated, extended, altered or of an unknown version.
    """
    r = ByteReader(packet)
    (version,) = r.unpack("B")
    if version != VERSION:
        raise CorruptChunkError(f"{CODER} packet of unknown version {version}")
    dist_a = np.empty(frames, np.int64)
    dist_b = np.empty(frames, np.int64)
    for f in range(frames):
        a, b = r.varint(), r.varint()
        if a > f or b > f:
            raise CorruptChunkError(f"{CODER} frame {f} refers to a frame before the stream")
        dist_a[f], dist_b[f] = a, b
    (crc,) = r.unpack("I")
    try:
        out = np.empty((frames, height, width), np.uint16)
    except MemoryError:
        raise CorruptChunkError(
            f"{CODER} stream of {frames} frames of {width}x{height} cannot be allocated"
        ) from None
    data = np.frombuffer(packet, np.uint8)
    status = _decode(data, r.pos, dist_a, dist_b, out)
    if status:
        raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[status]}")
    if zlib.crc32(out.astype("<u2", copy=False).tobytes()) != crc:
        raise CorruptChunkError(f"{CODER} stream decodes to frames that fail their checksum")
    return out


def encode_frames(
    frames: Iterable[Sequence[np.ndarray]], *, height: int, width: int
) -> tuple[bytes, int]:
    """Code frames given as their single gray plane, as :func:`eocube.video.encode_frames`
    feeds them; returns the packet and the frame count."""
    planes = [np.asarray(p[0])[:height, :width] for p in frames]
    if not planes:
        return b"", 0
    stack = np.stack(planes)
    return encode(stack), stack.shape[0]


def decode_frames(
    packets: Sequence[bytes], frames: int, height: int, width: int
) -> Iterator[list[np.ndarray]]:
    """Yield each frame's plane (a C-contiguous (height, width) uint16 array) of a stream."""
    if frames == 0 and not packets:
        return
    if len(packets) != 1:
        raise CorruptChunkError(f"{CODER} stream holds {len(packets)} packets, not 1")
    out = decode(packets[0], frames, height, width)
    for f in range(frames):
        yield [out[f]]
