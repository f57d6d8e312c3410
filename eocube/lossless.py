"""eocube's own lossless frame coder ("eocube-pred"): adaptive prediction and range coding.

Frames of up to 16-bit samples (a stream of ``F`` frames of ``H`` x ``W``, as the ``luma``
layout lays out a chunk: each band's series of dates in sequence) are coded pixel by pixel
in raster order, frame after frame, with one set of adaptive models for the whole stream.

Prediction
    Each pixel is predicted by a weighted average of sub-predictors, weighted by their
    recent errors at the neighbours (the "self-correcting" predictor of JPEG-XL's modular
    mode, extended across frames). Five spatial sub-predictors are always on: ``W + N - NW``,
    its median clamp (LOCO-I's MED), ``W + NE - N`` and ``N`` / ``W`` corrected by the
    errors made at the neighbours. A frame may
    name up to two earlier frames of the stream as references (the encoder picks them; in
    the ``luma`` layout, typically the previous date of the band and the same date of the
    previous band): each adds three sub-predictors, ``R + (W - R_W) + (N - R_N) - (NW -
    R_NW)``, ``R + ((W - R_W) + (N - R_N)) / 2`` and ``R`` times the neighbours' gain over
    the reference's, ``(2 (W + N) + NW + NE) / (2 (R_W + R_N) + R_NW + R_NE)``, with ``R``
    the co-located reference sample (packets of version 2, still read, lack the third).
Value tables
    A frame whose values are sparse (at most two thirds of its span occur, as when an
    integer band is stretched onto 16-bit codes) is coded as the ranks of its values in a
    sorted table; consecutive frames sharing most values share the table, which is coded
    once (size, first value, gaps) before its first frame. Predictions and references then
    work on ranks.
Pixel blocks
    A frame whose pixels (mostly) repeat over blocks of ``ky`` x ``kx`` (a coarser band
    resampled to a finer grid; blocks start at rows ``py + j ky`` and row 0, columns
    ``px + j kx`` and column 0) is coded as its blocks' first pixels (a smaller frame, its
    references sampled alike), then, for every other pixel, a flag (does it differ from its
    block's first pixel; context: the flags at its W, N, NW and NE) and the difference.
Residual coding
    ``e = x - prediction`` is binarised as a token (0 for zero, else the bit length of
    ``|e|``, 1 .. 16) in a 5-level binary tree of adaptive bins, a sign, the two bits below
    the leading one (adaptive bins) and the remaining low bits (equiprobable, coded at
    once). The token and mantissa models are chosen by the local activity: the quantised
    sum of the magnitudes of the prediction errors (unclipped) at the left, up, up-left and
    up-right neighbours; the sign's by the signs of the left and up errors. The binary
    range coder and its adaptive probabilities are those of :mod:`eocube.rangecoder`
    (LZMA's coder, 16-bit probabilities, adaptation 1 / (n + 2) then 1 / 128), in copies
    written without branches on the coded bit (the same arithmetic, twice as fast).

Byte layout (one packet per stream; the stream record holds the frame size and count)::

    u8 version (3; 2 is read too)
    F x frame header:
        varint ref_a, varint ref_b      backward distances of the frame's two reference
                                        frames (0: none; at most the frame's index)
        u8 mode                         bits 0-1: value table (0 none, 1 a new one, 2 the
                                        previous frame's); bit 2: pixel blocks
        [u8 (ky - 1) << 4 | (kx - 1), u8 py << 4 | px]   with pixel blocks (py < ky, px < kx)
    u32 crc32 of the frames             (F, H, W) as uint16 little-endian
    range-coded, frame after frame:     [value table], the frame (or its blocks' first
                                        pixels) as residuals, [block corrections]; to the
                                        packet's end, where the decoder must end exactly
                                        with a zero code

The coder is lossless by construction; the CRC catches damaged packets the range coder's
end check lets through.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dask.system
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from eocube.binary import ByteReader, ByteWriter
from eocube.errors import CodecError, CorruptChunkError
from eocube.rangecoder import (
    _FLUSH,
    _I64,
    _finish,
    _get,
    _put,
    _refill,
    _renormalize,
    _room,
)

CODER = "eocube-pred"
"""The encoder and decoder name streams of this coder carry."""
PIX_FMT = "gray16le"
"""The only pixel format the coder takes."""
GAIN_VERSION = 3
"""The first packet version with a third sub-predictor per reference (its gain)."""
VERSION = GAIN_VERSION
"""The packet version written."""
READABLE_VERSIONS = (2, 3)

_MAXVAL = 65535
_NSPATIAL = 5
_NPRED = _NSPATIAL + 6  # up to 3 per reference frame
_NCTX = 48
_M_TREE = 0
_M_SIGN = _M_TREE + _NCTX * 32
_M_MANT = _M_SIGN + 9
_M_TABLE = _M_MANT + _NCTX * 17 * 4
_M_BLOCK = _M_TABLE + 17 * 32 + 17 * 17 * 4
_M_BLOCK_TREE = _M_BLOCK + 5
_M_BLOCK_SIGN = _M_BLOCK_TREE + 17 * 32
_M_BLOCK_MANT = _M_BLOCK_SIGN + 17
_N_MODELS = _M_BLOCK_MANT + 17 * 17 * 4
_MAX_DISTANCES = 24  # candidate reference distances the encoder compares
_MAX_BLOCK = 8  # the largest pixel block the encoder looks for
_MAX_EXCEPTIONS = 10  # blocks are taken when at most 1 / 10 of the pixels differ
_PREDICT_GROUP = 1 << 16  # pixels the encoder predicts per job, at least
# pixels predicted ahead of the coder, at most (6 bytes each), but for one job beyond
_PREDICT_AHEAD = 1 << 24
# a frame's mode byte: its value table (none, a new one, the current one), blocks
_TABLE_NONE = 0
_TABLE_NEW = 1
_TABLE_CURRENT = 2
_BLOCKS = 4

_POWER = 4
# (1 << 24) // (k + 1), as JPEG-XL's weighted predictor divides
_DIV = np.array([(1 << 24) // (k + 1) for k in range(128)], np.int64)

_DECODE_ERRORS = {
    1: "does not start a range-coded stream",
    2: "decodes to a value out of range",
    3: "is truncated",
    4: "does not end where its packet does (truncated, extended or altered)",
}


@numba.njit(nogil=True, cache=True, inline="always")
def _put_bits(
    low: int, rng: int, cache: int, pending: int, pos: int, out: np.ndarray, value: int, k: int
) -> tuple[int, int, int, int, int]:  # pragma: no cover - compiled
    # k <= 16 equiprobable bits at once
    rng >>= k
    low += value * rng
    return _renormalize(low, rng, cache, pending, pos, out)


@numba.njit(nogil=True, cache=True, inline="always")
def _get_bits(
    rng: int, code: int, pos: int, data: np.ndarray, k: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    rng >>= k
    value = min(code // rng, (1 << k) - 1)  # more only in a damaged stream
    code -= value * rng
    rng, code, pos = _refill(rng, code, pos, data)
    return value, rng, code, pos


def _ctlz(typingctx: Any, v: Any) -> Any:  # pragma: no cover - compiled
    # LLVM's ctlz: one instruction (lzcnt/bsr) where a table lookup took two branches; the
    # predictor's weights and the residual tokens take a bit length per sub-predictor
    sig = types.int64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


_leading_zeros: Any = intrinsic(_ctlz)


@numba.njit(nogil=True, cache=True, inline="always")
def _bitlen(v: int) -> int:  # pragma: no cover - compiled
    # v >= 0; 0 for 0
    return 64 - _leading_zeros(_I64(v))


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
    # W, N, NW, NE with JPEG-XL's edge rules (int64: numba widens uint16 to uint64)
    w = _I64(0)
    if x > 0:
        w = _I64(img[y, x - 1])
    elif y > 0:
        w = _I64(img[y - 1, x])
    if y > 0:
        n = _I64(img[y - 1, x])
        nw = _I64(img[y - 1, x - 1]) if x > 0 else w
        ne = _I64(img[y - 1, x + 1]) if x + 1 < W else n
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
    gain: bool,
    y: int,
    x: int,
    W: int,
    maxval: int,
    perr: np.ndarray,
    terr: np.ndarray,
    preds: np.ndarray,
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """(prediction, prediction in 1/8 units, activity context, sign context).

    With ``gain`` (packet version 3), each reference adds a third sub-predictor: ``R``
    scaled by the ratio of the neighbours to the reference's (``2 (W + N) + NW + NE``
    over the same in the reference), for bands whose values differ from their reference's
    by a factor rather than an offset.
    """
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
        rw, rn, rnw, rne = _causal(ref, y, x, W)
        r = _I64(ref[y, x])
        dw = w - rw
        dn = n - rn
        p = r + dw + dn - (nw - rnw)
        preds[count] = p << 3
        preds[count + 1] = (r << 3) + ((dw + dn) << 2)
        count += 2
        q = r + ((dw + dn) >> 1)
        lo = min(lo, q)
        hi = max(hi, q)
        if gain:
            den = 2 * (rw + rn) + rnw + rne
            if den > 0:
                g = min((r * (2 * (w + n) + nw + ne) * 8 + (den >> 1)) // den, maxval << 3)
                lo = min(lo, g >> 3)
                hi = max(hi, (g + 7) >> 3)
            else:
                g = r << 3
            preds[count] = g
            count += 1
    # weights (emin / e) ** _POWER, e the errors summed at N, NE, NW (with W and WW),
    # 1 / (e + 1) from a table (no division)
    emin = _I64(1) << 40
    for i in range(count):
        e = perr[prev, x, i] + perr[prev, xne, i] + perr[prev, xnw, i]
        preds[_NPRED + i] = e
        emin = min(emin, e)
    wsum = _I64(0)
    psum = _I64(0)
    for i in range(count):
        r = ((emin + 1) * _inverse(preds[_NPRED + i])) >> 8
        wi = r
        for _ in range(_POWER - 1):
            wi = (wi * r) >> 16
        wi += 1
        wsum += wi
        psum += preds[i] * wi
    p8 = (psum + (wsum >> 1)) // wsum
    if not (((te_n ^ te_w) | (te_n ^ te_nw)) > 0):
        p8 = min(max(p8, lo << 3), hi << 3)
    pred = (p8 + 3) >> 3
    if pred < 0:
        pred = 0
    elif pred > maxval:
        pred = maxval
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
        perr[cur, x, i] = err
        perr[prev, x + 1, i] += err


@numba.njit(nogil=True, cache=True, inline="always")
def _put_value(
    low: int,
    rng: int,
    cache: int,
    pending: int,
    pos: int,
    out: np.ndarray,
    model: np.ndarray,
    tbase: int,
    mbase: int,
    sm: int,
    e: int,
) -> tuple[int, int, int, int, int]:  # pragma: no cover - compiled
    # token (0, or the bit length of |e|) in a 5-level tree at model[tbase + 1 .. 31];
    # sign at model[sm] (none if sm < 0); 2 mantissa bins at model[mbase + 4 tok + 1 .. 3]
    a = abs(e)
    tok = _bitlen(a)
    node = 1
    for j in range(4, -1, -1):
        bit = (tok >> j) & 1
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, tbase + node, bit
        )
        node = 2 * node + bit
    if tok:
        if sm >= 0:
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, sm, int(e < 0)
            )
        mb = mbase + tok * 4
        node = 1
        for j in range(tok - 2, max(tok - 4, -1), -1):
            bit = (a >> j) & 1
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, mb + node, bit
            )
            node = 2 * node + bit
        if tok > 3:
            low, rng, cache, pending, pos = _put_bits(
                low, rng, cache, pending, pos, out, a & ((1 << (tok - 3)) - 1), tok - 3
            )
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _get_value(
    rng: int,
    code: int,
    pos: int,
    data: np.ndarray,
    model: np.ndarray,
    tbase: int,
    mbase: int,
    sm: int,
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    # (value, rng, code, pos) of _put_value; value 1 << 20 when the token is out of range
    node = 1
    for _ in range(5):
        bit, rng, code, pos = _get(rng, code, pos, data, model, tbase + node)
        node = 2 * node + bit
    tok = node - 32
    if tok == 0:
        return 0, rng, code, pos
    if tok > 16:
        return 1 << 20, rng, code, pos
    neg = 0
    if sm >= 0:
        neg, rng, code, pos = _get(rng, code, pos, data, model, sm)
    mb = mbase + tok * 4
    node = 1
    a = 1
    for _ in range(tok - 2, max(tok - 4, -1), -1):
        bit, rng, code, pos = _get(rng, code, pos, data, model, mb + node)
        node = 2 * node + bit
        a = (a << 1) | bit
    if tok > 3:
        low, rng, code, pos = _get_bits(rng, code, pos, data, tok - 3)
        a = (a << (tok - 3)) | low
    return (-a if neg else a), rng, code, pos


@numba.njit(nogil=True, cache=True)
def _predict_frame(
    img: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    has_a: bool,
    has_b: bool,
    gain: bool,
    maxval: int,
    res: np.ndarray,
    ctx: np.ndarray,
) -> None:  # pragma: no cover - compiled
    # the residual and coding context of each pixel, in raster order: they need no coder
    # state, so the encoder computes them for several frames at once (:func:`encode`)
    H, W = img.shape
    perr = np.zeros((2, W + 2, _NPRED), np.int64)
    terr = np.zeros((2, W + 2), np.int64)
    preds = np.zeros(2 * _NPRED, np.int64)
    count = _NSPATIAL + (3 if gain else 2) * (int(has_a) + int(has_b))
    i = 0
    for y in range(H):
        for x in range(W):
            pred, p8, c, sc = _predict(
                img, ref_a, ref_b, has_a, has_b, gain, y, x, W, maxval, perr, terr, preds
            )
            v = _I64(img[y, x])
            res[i] = v - pred
            ctx[i] = c * 16 + sc
            i += 1
            _update(v, x, y, count, p8, perr, terr, preds)


@numba.njit(nogil=True, cache=True)
def _code_residuals(
    res: np.ndarray, ctx: np.ndarray, model: np.ndarray, out: np.ndarray, state: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    # codes a frame's residuals (:func:`_predict_frame`), continuing the range coder of
    # state (low, range, cache, pending, position); returns the output buffer (grown if
    # needed)
    n = res.size
    low, rng, cache, pending, pos = state[0], state[1], state[2], state[3], state[4]
    # a pixel adds at most 8 adaptive bins (2 bytes each) and 14 raw bits
    out = _room(out, pos + pending + 18 * n + 64)
    for i in range(n):
        c = ctx[i] >> 4
        low, rng, cache, pending, pos = _put_value(
            low,
            rng,
            cache,
            pending,
            pos,
            out,
            model,
            _M_TREE + c * 32,
            _M_MANT + c * 17 * 4,
            _M_SIGN + (ctx[i] & 15),
            _I64(res[i]),
        )
    state[0], state[1], state[2], state[3], state[4] = low, rng, cache, pending, pos
    return out


@numba.njit(nogil=True, cache=True)
def _decode_frame(
    data: np.ndarray,
    img: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    has_a: bool,
    has_b: bool,
    gain: bool,
    maxval: int,
    model: np.ndarray,
    state: np.ndarray,
) -> int:  # pragma: no cover - compiled
    # fills img continuing the range decoder of state (range, code, position); 0 on
    # success, else a key of _DECODE_ERRORS
    H, W = img.shape
    end = data.size
    rng, code, pos = state[0], state[1], state[2]
    perr = np.zeros((2, W + 2, _NPRED), np.int64)
    terr = np.zeros((2, W + 2), np.int64)
    preds = np.zeros(2 * _NPRED, np.int64)
    count = _NSPATIAL + (3 if gain else 2) * (int(has_a) + int(has_b))
    for y in range(H):
        if pos > end:
            return 3
        for x in range(W):
            pred, p8, c, sc = _predict(
                img, ref_a, ref_b, has_a, has_b, gain, y, x, W, maxval, perr, terr, preds
            )
            e, rng, code, pos = _get_value(
                rng, code, pos, data, model, _M_TREE + c * 32, _M_MANT + c * 17 * 4, _M_SIGN + sc
            )
            v = pred + e
            if v < 0 or v > maxval:
                return 2
            img[y, x] = v
            _update(v, x, y, count, p8, perr, terr, preds)
    state[0], state[1], state[2] = rng, code, pos
    return 0


@numba.njit(nogil=True, cache=True, inline="always")
def _block_contexts(
    exc: np.ndarray, mag: np.ndarray, y: int, x: int, W: int
) -> tuple[int, int]:  # pragma: no cover - compiled
    # (flag context: corrections at W, N, NW, NE; value context: their largest size)
    cur = y & 1
    prev = cur ^ 1
    xw = x - 1 if x > 0 else x
    xe = x + 1 if x + 1 < W else x
    c = exc[cur, xw] + exc[prev, x] + exc[prev, xw] + exc[prev, xe]
    m = max(max(mag[cur, xw], mag[prev, x]), max(mag[prev, xw], mag[prev, xe]))
    return c, m


@numba.njit(nogil=True, cache=True)
def _encode_blocks(
    img: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    model: np.ndarray,
    out: np.ndarray,
    state: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    # each pixel but the blocks' first ones: whether it differs from its block's first
    # pixel (rows[y], cols[x]) and by how much
    H, W = img.shape
    low, rng, cache, pending, pos = state[0], state[1], state[2], state[3], state[4]
    out = _room(out, pos + pending + 18 * H * W + 64)
    exc = np.zeros((2, W + 1), np.int64)
    mag = np.zeros((2, W + 1), np.int64)
    for y in range(H):
        cur = y & 1
        ay = rows[y]
        for x in range(W):
            ax = cols[x]
            exc[cur, x] = 0
            mag[cur, x] = 0
            if ay == y and ax == x:
                continue
            c, m = _block_contexts(exc, mag, y, x, W)
            e = _I64(img[y, x]) - _I64(img[ay, ax])
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, _M_BLOCK + c, int(e != 0)
            )
            if e != 0:
                m = min(m, 16)
                low, rng, cache, pending, pos = _put_value(
                    low,
                    rng,
                    cache,
                    pending,
                    pos,
                    out,
                    model,
                    _M_BLOCK_TREE + m * 32,
                    _M_BLOCK_MANT + m * 17 * 4,
                    _M_BLOCK_SIGN + m,
                    e,
                )
                exc[cur, x] = 1
                mag[cur, x] = _bitlen(abs(e))
    state[0], state[1], state[2], state[3], state[4] = low, rng, cache, pending, pos
    return out


@numba.njit(nogil=True, cache=True)
def _decode_blocks(
    data: np.ndarray,
    img: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    maxval: int,
    model: np.ndarray,
    state: np.ndarray,
) -> int:  # pragma: no cover - compiled
    # img holds the blocks' first pixels spread over their blocks; corrects the others
    H, W = img.shape
    end = data.size
    rng, code, pos = state[0], state[1], state[2]
    exc = np.zeros((2, W + 1), np.int64)
    mag = np.zeros((2, W + 1), np.int64)
    for y in range(H):
        if pos > end:
            return 3
        cur = y & 1
        ay = rows[y]
        for x in range(W):
            ax = cols[x]
            exc[cur, x] = 0
            mag[cur, x] = 0
            if ay == y and ax == x:
                continue
            c, m = _block_contexts(exc, mag, y, x, W)
            flag, rng, code, pos = _get(rng, code, pos, data, model, _M_BLOCK + c)
            if flag:
                m = min(m, 16)
                e, rng, code, pos = _get_value(
                    rng,
                    code,
                    pos,
                    data,
                    model,
                    _M_BLOCK_TREE + m * 32,
                    _M_BLOCK_MANT + m * 17 * 4,
                    _M_BLOCK_SIGN + m,
                )
                v = _I64(img[ay, ax]) + e
                if e == 0 or v < 0 or v > maxval:
                    return 2
                img[y, x] = v
                exc[cur, x] = 1
                mag[cur, x] = _bitlen(abs(e))
    state[0], state[1], state[2] = rng, code, pos
    return 0


@numba.njit(nogil=True, cache=True)
def _encode_table(
    table: np.ndarray, model: np.ndarray, out: np.ndarray, state: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    # a sorted table of distinct values: its size - 1 and first value (16 raw bits each),
    # then each gap - 1 as a token (context: the previous gap's token) and mantissa
    low, rng, cache, pending, pos = state[0], state[1], state[2], state[3], state[4]
    out = _room(out, pos + pending + 18 * table.size + 64)
    low, rng, cache, pending, pos = _put_bits(
        low, rng, cache, pending, pos, out, table.size - 1, 16
    )
    low, rng, cache, pending, pos = _put_bits(
        low, rng, cache, pending, pos, out, _I64(table[0]), 16
    )
    prev_tok = 0
    for i in range(1, table.size):
        gap = _I64(table[i]) - _I64(table[i - 1]) - 1
        low, rng, cache, pending, pos = _put_value(
            low,
            rng,
            cache,
            pending,
            pos,
            out,
            model,
            _M_TABLE + prev_tok * 32,
            _M_TABLE + 17 * 32 + prev_tok * 17 * 4,
            -1,
            gap,
        )
        prev_tok = _bitlen(gap)
    state[0], state[1], state[2], state[3], state[4] = low, rng, cache, pending, pos
    return out


@numba.njit(nogil=True, cache=True)
def _decode_table(
    data: np.ndarray, model: np.ndarray, state: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    # the table of _encode_table; empty if it is not a valid one
    rng, code, pos = state[0], state[1], state[2]
    size, rng, code, pos = _get_bits(rng, code, pos, data, 16)
    first, rng, code, pos = _get_bits(rng, code, pos, data, 16)
    size += 1
    table = np.empty(size, np.int64)
    table[0] = first
    prev_tok = 0
    for i in range(1, size):
        if pos > data.size:
            return table[:0]
        gap, rng, code, pos = _get_value(
            rng,
            code,
            pos,
            data,
            model,
            _M_TABLE + prev_tok * 32,
            _M_TABLE + 17 * 32 + prev_tok * 17 * 4,
            -1,
        )
        table[i] = table[i - 1] + gap + 1
        if gap < 0 or table[i] > _MAXVAL:
            return table[:0]
        prev_tok = _bitlen(gap)
    state[0], state[1], state[2] = rng, code, pos
    return table


@numba.njit(nogil=True, cache=True)
def _flush(out: np.ndarray, state: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    return _finish(state[0], state[2], state[3], state[4], out)


@numba.njit(nogil=True, cache=True)
def _reference_costs(frames: np.ndarray, distances: np.ndarray) -> np.ndarray:  # pragma: no cover
    # per frame, column k: the sum of |planar prediction error| of its difference from the
    # frame distances[k] back (inf if none)
    F, H, W = frames.shape
    K = distances.size
    cost = np.full((F, K), np.inf)
    for f in range(F):
        img = frames[f]
        for k in range(K):
            d = distances[k]
            if d > f:
                continue
            ref = frames[f - d]
            s = _I64(0)
            for y in range(1, H):
                for x in range(1, W):
                    dx = _I64(img[y, x]) - _I64(ref[y, x])
                    dw = _I64(img[y, x - 1]) - _I64(ref[y, x - 1])
                    dn = _I64(img[y - 1, x]) - _I64(ref[y - 1, x])
                    dnw = _I64(img[y - 1, x - 1]) - _I64(ref[y - 1, x - 1])
                    s += abs(dx - dw - dn + dnw)
            cost[f, k] = s
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

    The two candidates (:func:`candidate_distances`) whose difference from the frame is
    predicted best (planar prediction) are taken, whenever there are two: the weighted
    predictor gives a reference's sub-predictors weight only where they predicted well,
    so a reference helps locally even where it loses to the frame alone overall (taking
    one only when it won: ERA-Interim 7 % and Landsat 8 1 % more bytes).
    """
    F = frames.shape[0]
    dist_a = np.zeros(F, np.int64)
    dist_b = np.zeros(F, np.int64)
    distances = candidate_distances(F)
    if F < 2 or frames.shape[1] < 2 or frames.shape[2] < 2 or distances.size == 0:
        return dist_a, dist_b
    cost = _reference_costs(frames, distances)
    for f in range(1, F):
        order = np.argsort(cost[f], kind="stable")
        picked = [int(distances[k]) for k in order[:2] if np.isfinite(cost[f, k])]
        if picked:
            dist_a[f] = picked[0]
        if len(picked) > 1:
            dist_b[f] = picked[1]
    return dist_a, dist_b


def _block_axis(same: np.ndarray) -> tuple[int, int]:
    """(factor, phase) of an axis whose line i mostly equals line i - 1 where same[i - 1]."""
    starts = np.flatnonzero(~same) + 1  # lines that start a block, besides line 0
    if starts.size == len(same):
        return 1, 0
    for k in range(_MAX_BLOCK, 1, -1):
        phase = int(starts[0]) % k if starts.size else 0
        if not np.any((starts - phase) % k):
            return k, phase
    return 1, 0


def block_structure(img: np.ndarray) -> tuple[int, int, int, int]:
    """(ky, kx, py, px): the frame's pixels (mostly) repeat over blocks of ky x kx pixels.

    Blocks start at rows ``py + j ky`` (and row 0) and columns ``px + j kx`` (and column
    0); nearly every pixel of a block equals the block's first (top-left) one, as when
    coarser bands are resampled to a finer grid. (1, 1, 0, 0) when the frame has no such
    structure.
    """
    H, W = img.shape
    if H * W < 16:
        return 1, 1, 0, 0
    ky, py = _block_axis(np.mean(img[1:] == img[:-1], axis=1) > 0.5) if H > 1 else (1, 0)
    kx, px = _block_axis(np.mean(img[:, 1:] == img[:, :-1], axis=0) > 0.5) if W > 1 else (1, 0)
    if ky == 1 and kx == 1:
        return 1, 1, 0, 0
    spread = img[_anchors(H, ky, py)][:, _anchors(W, kx, px)]
    if np.count_nonzero(spread != img) * _MAX_EXCEPTIONS > H * W:
        return 1, 1, 0, 0
    return ky, kx, py, px


def _anchors(size: int, k: int, phase: int) -> np.ndarray:
    """Each line's block's first line."""
    return np.maximum((np.arange(size) - phase) // k * k + phase, 0)


def _decimation(size: int, k: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """(the lines coded, each line's index among them)."""
    first = _anchors(size, k, phase)
    kept, index = np.unique(first, return_inverse=True)
    return kept, index


@numba.njit(nogil=True, cache=True)
def _sparse_frames(frames: np.ndarray) -> bool:  # pragma: no cover - compiled
    # whether some frame holds at most a third of the values of its span (a quick test
    # before the tables are built)
    seen = np.zeros(_MAXVAL + 1, np.bool_)
    for f in range(frames.shape[0]):
        img = frames[f]
        seen[:] = False
        lo = _MAXVAL
        hi = 0
        distinct = 0
        for y in range(img.shape[0]):
            for x in range(img.shape[1]):
                v = _I64(img[y, x])
                if not seen[v]:
                    seen[v] = True
                    distinct += 1
                    lo = min(lo, v)
                    hi = max(hi, v)
        if 3 * distinct <= 2 * (hi - lo + 1):
            return True
    return False


@numba.njit(nogil=True, cache=True)
def _value_groups(
    frames: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    # consecutive frames grouped while at least half of a frame's distinct values are
    # already in its group; returns each frame's group, and the groups' sorted values
    # (concatenated, group g at values[offsets[g]:offsets[g + 1]])
    F = frames.shape[0]
    seen = np.zeros(_MAXVAL + 1, np.bool_)
    member = np.zeros(_MAXVAL + 1, np.bool_)
    group = np.zeros(F, np.int64)
    values = np.empty(frames.size, np.int64)
    offsets = np.zeros(F + 1, np.int64)
    distinct = np.empty(frames.shape[1] * frames.shape[2], np.int64)
    groups = 0
    end = 0  # values held by the groups so far
    for f in range(F):
        img = frames[f]
        nd = 0
        for y in range(img.shape[0]):
            for x in range(img.shape[1]):
                v = _I64(img[y, x])
                if not seen[v]:
                    seen[v] = True
                    distinct[nd] = v
                    nd += 1
        shared = 0
        for i in range(nd):
            seen[distinct[i]] = False
            if member[distinct[i]]:
                shared += 1
        if groups == 0 or 2 * shared < nd:
            start = offsets[groups]
            for i in range(start, end):
                member[values[i]] = False
            if groups:
                values[start:end].sort()
                offsets[groups] = end
            groups += 1
            offsets[groups] = end
        for i in range(nd):
            if not member[distinct[i]]:
                member[distinct[i]] = True
                values[end] = distinct[i]
                end += 1
        group[f] = groups - 1
    values[offsets[groups - 1] : end].sort()
    offsets[groups] = end
    return group, values[:end], offsets[: groups + 1]


def value_tables(frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Tables of the values frames hold, when these are sparse, and each frame's table.

    Consecutive frames that share most of their values share a table; a table is used
    when it holds at most a third of the span of its values and is small next to the
    frames' pixels. Returns the tables and per frame its table's index (-1: none).
    """
    F = frames.shape[0]
    pixels = frames.shape[1] * frames.shape[2]
    which = np.full(F, -1, np.int64)
    if not _sparse_frames(frames):
        return [], which
    group, values, offsets = _value_groups(frames)
    tables: list[np.ndarray] = []
    for g in range(offsets.size - 1):
        table = values[offsets[g] : offsets[g + 1]]
        members = group == g
        span = int(table[-1]) - int(table[0]) + 1
        if 3 * table.size <= 2 * span and 8 * table.size <= pixels * int(members.sum()):
            which[members] = len(tables)
            tables.append(table)
    return tables, which


def _ranks(frame: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each value's index in ``table`` (which holds every value of ``frame``, sorted)."""
    index = np.zeros(_MAXVAL + 1, np.uint16)
    index[table] = np.arange(table.size, dtype=np.uint16)
    return index[frame]


def _new_model() -> np.ndarray:
    return np.full(_N_MODELS, 32768, np.int64)


def _frame_modes(
    ranks: np.ndarray, which: np.ndarray
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Per frame, its table mode (0 none, 1 a new table, 2 the current one) and blocks."""
    modes = []
    for f in range(ranks.shape[0]):
        if which[f] < 0:
            mode = _TABLE_NONE
        elif f and which[f - 1] == which[f]:
            mode = _TABLE_CURRENT
        else:
            mode = _TABLE_NEW
        modes.append((mode, block_structure(ranks[f])))
    return modes


def _sampled(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, full: bool) -> np.ndarray:
    return img if full else np.ascontiguousarray(img[rows][:, cols])


def encode(frames: np.ndarray, *, threads: int = 0, verify: bool = False) -> bytes:
    """Code a stack of frames (F, H, W) of uint16 samples into one packet.

    Parameters
    ----------
    frames : ndarray, shape (F, H, W)
        Samples of up to 16 bits (uint16, or an integer array within 0 .. 65535).
    threads : int
        Threads that predict frames ahead of the range coder (0: one per CPU, less one
        with ``verify``). The packet is the same whatever the count.
    verify : bool
        Decode the packet, on a thread that follows the encoder frame by frame, and check
        that it gives ``frames`` back (what :func:`decode` would return, bit for bit).

    Raises
    ------
    CodecError
        With ``verify``, if the packet does not decode to ``frames``.

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
    F, H, W = frames.shape
    tables, which = value_tables(frames)
    ranks = frames.copy() if tables else frames
    for f in range(F):
        if which[f] >= 0:
            ranks[f] = _ranks(frames[f], tables[which[f]])
    dist_a, dist_b = choose_references(ranks)
    modes = _frame_modes(ranks, which)
    w = ByteWriter()
    w.pack("B", VERSION)
    for f, (mode, (ky, kx, py, px)) in enumerate(modes):
        w.varint(int(dist_a[f]))
        w.varint(int(dist_b[f]))
        blocks = ky > 1 or kx > 1
        w.pack("B", mode | (_BLOCKS if blocks else 0))
        if blocks:
            w.pack("BB", (ky - 1) << 4 | (kx - 1), py << 4 | px)
    w.pack("I", zlib.crc32(frames.astype("<u2", copy=False).tobytes()))
    maxvals = [
        _MAXVAL if mode == _TABLE_NONE else tables[which[f]].size - 1
        for f, (mode, _) in enumerate(modes)
    ]

    def predict(f: int) -> tuple[np.ndarray, np.ndarray]:
        ky, kx, py, px = modes[f][1]
        full = ky == 1 and kx == 1
        rows, _ = _decimation(H, ky, py)
        cols, _ = _decimation(W, kx, px)
        img = _sampled(ranks[f], rows, cols, full)
        a, b = int(dist_a[f]), int(dist_b[f])
        ref_a = _sampled(ranks[f - a], rows, cols, full) if a else img
        ref_b = _sampled(ranks[f - b], rows, cols, full) if b else img
        res = np.empty(img.size, np.int32)
        ctx = np.empty(img.size, np.int16)
        _predict_frame(img, ref_a, ref_b, a > 0, b > 0, True, maxvals[f], res, ctx)
        return res, ctx

    model = _new_model()
    out = np.empty(F * H * W * 2 + 1024, np.uint8)
    state = np.array([0, 0xFFFFFFFF, 0, 1, 0], np.int64)
    follower = _Follower(w.getvalue(), frames) if verify else None
    # frames predicted together, enough pixels for each to outweigh a thread's hand-over
    per_group = -(-_PREDICT_GROUP // (H * W))
    groups = [range(f, min(f + per_group, F)) for f in range(0, F, per_group)]
    if F * H * W < 2 * _PREDICT_GROUP:
        threads = 1
    elif threads == 0:
        # the checking decode keeps a core busy too (erainterim_uvz, 2 cores: 0.51 s with
        # predictions on the coder's thread, 0.56 s with two predictor threads)
        threads = max(1, dask.system.CPU_COUNT - (1 if verify else 0))
    most = max(1, _PREDICT_AHEAD // (per_group * H * W))
    jobs = _Ahead(lambda g: [predict(f) for f in groups[g]], len(groups), threads, most)
    try:
        with jobs as predicted:
            for g, group in enumerate(groups):
                for f, (res, ctx) in zip(group, predicted(g), strict=True):
                    mode, (ky, kx, py, px) = modes[f]
                    if mode == _TABLE_NEW:
                        out = _encode_table(tables[which[f]], model, out, state)
                    out = _code_residuals(res, ctx, model, out, state)
                    if ky > 1 or kx > 1:
                        rows, ry = _decimation(H, ky, py)
                        cols, cx = _decimation(W, kx, px)
                        out = _encode_blocks(ranks[f], rows[ry], cols[cx], model, out, state)
                    if follower is not None:
                        follower.coded(out, state)
        stream = _flush(out, state)
    except BaseException:
        if follower is not None:
            follower.stop()
        raise
    if follower is not None:
        follower.check(stream)
    w.raw(bytes(stream))
    return w.getvalue()


class _Follower:
    """Decodes the stream :func:`encode` is writing, on a thread, each frame as soon as the
    bytes its decode reads are final, and compares it with the frame coded.

    A lossless encode is checked by decoding it; following the encoder, the check runs
    beside the encode instead of after it. It decodes as :func:`decode` does (the header
    the encoder wrote, :class:`_StreamDecoder`, the end and checksum checks), from the
    range coder's bytes: those before its position are final (a carry changes only its
    cached byte and the pending 0xFF bytes after it), and the decoder reads at most
    ``pending + 4`` bytes beyond them where the encoder stands.
    """

    def __init__(self, header: bytes, frames: np.ndarray) -> None:
        self._frames = frames
        F, H, W = frames.shape
        try:
            version, self._modes, self._crc, _ = _read_header(header, F)
        except CorruptChunkError as exc:
            raise CodecError(f"{CODER} wrote a header it cannot read: {exc}") from exc
        self._decoder = _StreamDecoder(self._modes, F, H, W, version)
        self._lock = threading.Condition()
        self._final = np.empty(0, np.uint8)  # the bytes final so far
        self._needs: list[int] = []  # by frame: the bytes its decode reads
        self._done = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="eocube-verify", daemon=True)
        self._thread.start()

    def coded(self, out: np.ndarray, state: np.ndarray) -> None:
        """The encoder has coded one more frame into ``out``, its coder at ``state``."""
        pending, pos = int(state[3]), int(state[4])
        with self._lock:
            self._final = out[:pos]
            self._needs.append(pos + pending + _FLUSH)
            self._lock.notify()

    def check(self, stream: np.ndarray) -> None:
        """The encoder is done (``stream``: its range-coded bytes, flushed): wait for the
        decode and raise :class:`CodecError` if it does not give the frames back."""
        with self._lock:
            self._final = stream
            self._done = True
            self._lock.notify()
        self._thread.join()
        if self._error is not None:
            raise CodecError(
                f"{CODER}: the encoded stream does not decode to its input ({self._error}); "
                "please report this with the data"
            ) from self._error

    def stop(self) -> None:
        """The encode failed: end the thread."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
        self._thread.join()

    def _bytes(self, frame: int) -> np.ndarray | None:
        # the final bytes once they hold all that frame ``frame`` reads (-1: the start);
        # None once stopped
        with self._lock:
            while not self._stopped:
                if self._done:
                    return self._final
                if frame < 0 and self._final.size >= _FLUSH:
                    return self._final
                if 0 <= frame < len(self._needs) and self._final.size >= self._needs[frame]:
                    return self._final
                self._lock.wait()
            return None

    def _run(self) -> None:
        decoder = self._decoder
        try:
            data = self._bytes(-1)
            if data is None:
                return
            decoder.start(data, 0)
            for f, original in enumerate(self._frames):
                data = self._bytes(f)
                if data is None:
                    return
                try:
                    decoder.frame(f, data)
                except CorruptChunkError as exc:
                    raise CodecError(f"frame {f}: {exc}") from exc
                if decoder.state[2] > data.size:
                    raise CodecError(f"frame {f} reads bytes the encoder has not made final")
                if not np.array_equal(decoder.out[f], original):
                    raise CodecError(f"frame {f} differs from the frame coded")
            data = self._bytes(len(self._frames))
            if data is None:
                return
            decoder.finish(data, self._crc)
        except Exception as exc:  # reported by check()
            self._error = exc


class _Ahead:
    """``job(0)``, ``job(1)``, ... computed on ``threads`` threads ahead of their use, in
    order, at most two per thread and ``most`` at a time beyond the one in use (the rest
    waits, so memory stays bounded).

    The range coder is sequential, but the predictions of a frame need only the frame and
    its references: computed ahead on other threads, they leave the coder (about 40 % of
    an encode) on the critical path (erainterim_uvz, 2 cores: 0.47 -> 0.29 s, medians of
    5 interleaved runs).
    """

    def __init__(self, job: Callable[[int], Any], count: int, threads: int, most: int) -> None:
        self._job = job
        self._count = count
        # more threads than jobs in flight would wait
        workers = min(threads, count, most + 1)
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="eocube-predict")
            if workers > 1
            else None
        )
        self._ahead = max(1, min(2 * workers, most))
        self._futures: dict[int, Future[Any]] = {}
        self._next = 0

    def __enter__(self) -> Callable[[int], Any]:
        return self._get

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            for future in self._futures.values():
                future.cancel()
            self._pool.shutdown(wait=True)

    def _get(self, i: int) -> Any:
        if self._pool is None:
            return self._job(i)
        while self._next < min(self._count, i + 1 + self._ahead):
            self._futures[self._next] = self._pool.submit(self._job, self._next)
            self._next += 1
        return self._futures.pop(i).result()


def _read_modes(r: ByteReader, frames: int) -> list[tuple[int, int, int, int, int, int, int]]:
    modes = []
    table = False
    for f in range(frames):
        a, b = r.varint(), r.varint()
        if a > f or b > f:
            raise CorruptChunkError(f"{CODER} frame {f} refers to a frame before the stream")
        (mode,) = r.unpack("B")
        if mode & ~(_BLOCKS | 3) or mode & 3 == 3 or (mode & 3 == _TABLE_CURRENT and not table):
            raise CorruptChunkError(f"{CODER} frame {f} has an unknown mode {mode}")
        table = mode & 3 != _TABLE_NONE
        ky = kx = 1
        py = px = 0
        if mode & _BLOCKS:
            k, p = r.unpack("BB")
            ky, kx, py, px = (k >> 4) + 1, (k & 15) + 1, p >> 4, p & 15
            if py >= ky or px >= kx:
                raise CorruptChunkError(f"{CODER} frame {f} has blocks out of range")
        modes.append((a, b, mode & 3, ky, kx, py, px))
    return modes


def decode(packet: bytes, frames: int, height: int, width: int) -> np.ndarray:
    """The frames (F, H, W), uint16, of a packet made by :func:`encode`.

    Raises
    ------
    CorruptChunkError
        If the packet is truncated, extended, altered or of an unknown version.
    """
    version, modes, crc, start = _read_header(packet, frames)
    data = np.frombuffer(packet, np.uint8)
    decoder = _StreamDecoder(modes, frames, height, width, version)
    decoder.start(data, start)
    for f in range(frames):
        decoder.frame(f, data)
    decoder.finish(data, crc)
    return decoder.out


def _read_header(
    packet: bytes, frames: int
) -> tuple[int, list[tuple[int, int, int, int, int, int, int]], int, int]:
    """The packet's version, the frame modes, the frames' crc32 and where the range-coded
    part starts."""
    r = ByteReader(packet)
    (version,) = r.unpack("B")
    if version not in READABLE_VERSIONS:
        raise CorruptChunkError(f"{CODER} packet of unknown version {version}")
    modes = _read_modes(r, frames)
    (crc,) = r.unpack("I")
    return version, modes, crc, r.pos


class _StreamDecoder:
    """The range-coded part of a stream, decoded frame by frame.

    Positions are those of the ``data`` each call is given (the whole packet, or the bytes
    an encoder has made final so far: :class:`_Follower`), starting at :meth:`start`'s.
    ``out`` holds the frames decoded so far.
    """

    def __init__(
        self,
        modes: list[tuple[int, int, int, int, int, int, int]],
        frames: int,
        H: int,
        W: int,
        version: int,
    ) -> None:
        try:
            self.ranks = np.empty((frames, H, W), np.uint16)
        except MemoryError:
            raise CorruptChunkError(
                f"{CODER} stream of {frames} frames of {W}x{H} cannot be allocated"
            ) from None
        self.out = self.ranks
        self.modes = modes
        self.gain = version >= GAIN_VERSION
        self.model = _new_model()
        self.table: np.ndarray | None = None
        self.state = np.zeros(3, np.int64)

    def start(self, data: np.ndarray, start: int) -> None:
        """Read the stream's first bytes, at ``start``."""
        if data.size - start < _FLUSH or data[start] != 0:
            raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[1]}")
        code = int.from_bytes(bytes(data[start + 1 : start + _FLUSH]), "big")
        if code >= 0xFFFFFFFF:
            raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[1]}")
        self.state[:] = (0xFFFFFFFF, code, start + _FLUSH)

    def frame(self, f: int, data: np.ndarray) -> None:
        """Decode frame ``f`` (the frames before it decoded) into ``out[f]``."""
        a, b, mode, ky, kx, py, px = self.modes[f]
        _, H, W = self.ranks.shape
        ranks, state = self.ranks, self.state
        maxval = _MAXVAL
        if mode == _TABLE_NEW:
            self.table = _decode_table(data, self.model, state)
            if self.table.size == 0:
                raise CorruptChunkError(f"{CODER} stream holds a damaged value table")
            if self.out is ranks:
                self.out = ranks.copy()
        if mode != _TABLE_NONE:
            assert self.table is not None
            maxval = self.table.size - 1
        full = ky == 1 and kx == 1
        rows, rindex = _decimation(H, ky, py)
        cols, cindex = _decimation(W, kx, px)
        img = ranks[f] if full else np.empty((rows.size, cols.size), np.uint16)
        ref_a = _sampled(ranks[f - a], rows, cols, full) if a else img
        ref_b = _sampled(ranks[f - b], rows, cols, full) if b else img
        status = _decode_frame(
            data, img, ref_a, ref_b, a > 0, b > 0, self.gain, maxval, self.model, state
        )
        if status:
            raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[status]}")
        if not full:
            ranks[f] = img[rindex][:, cindex]
            status = _decode_blocks(
                data, ranks[f], rows[rindex], cols[cindex], maxval, self.model, state
            )
            if status:
                raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[status]}")
        if self.out is not ranks:
            table = self.table
            self.out[f] = ranks[f] if table is None or mode == _TABLE_NONE else table[ranks[f]]

    def finish(self, data: np.ndarray, crc: int) -> None:
        """Check that the stream ends exactly where ``data`` does, with a zero code, and
        that the frames decoded match the header's checksum ``crc``."""
        _, code, pos = self.state
        if pos > data.size:
            raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[3]}")
        if pos != data.size or code != 0:
            raise CorruptChunkError(f"{CODER} stream {_DECODE_ERRORS[4]}")
        if zlib.crc32(self.out.astype("<u2", copy=False).tobytes()) != crc:
            raise CorruptChunkError(f"{CODER} stream decodes to frames that fail their checksum")


def encode_frames(
    frames: Iterable[Sequence[np.ndarray]],
    *,
    height: int,
    width: int,
    threads: int = 0,
    verify: bool = False,
) -> tuple[bytes, int]:
    """Code frames given as their single gray plane, as :func:`eocube.video.encode_frames`
    feeds them; returns the packet and the frame count (``threads``, ``verify``: as
    :func:`encode`)."""
    planes = [np.asarray(p[0])[:height, :width] for p in frames]
    if not planes:
        return b"", 0
    stack = np.stack(planes)
    return encode(stack, threads=threads, verify=verify), stack.shape[0]


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
