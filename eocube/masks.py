"""The coding of a chunk's masks (where it holds NaN or nodata): runs, range-coded.

A mask marks the elements of a chunk's coded part ``(T', B, Y', X')`` that are missing:
the footprint of a scene, a land or sea mask, gaps of a scan. Such maps are large regions
with smooth edges, often the same in every band and on every date. The mask is coded as
``F = T' * B`` frames of ``Y' x X'`` in C order (band after band, date after date):

Frames
    A frame may have a reference frame, which the encoder picks among none, the previous
    frame (the previous band of the date) and the frame ``B`` back (the same band on the
    previous date): the one it differs from least. A frame of zeros is one flag.
Rows
    A row is one flag when it equals the reference frame's row, or else the row above
    (zeros above the first). Otherwise its transitions (the columns where the value
    changes, from 0 at the left edge) follow, left to right, as in the two-dimensional
    coding of fax machines (ITU-T T.6): a transition within 3 columns of the next one of
    the same direction in the reference frame's row is coded as that offset; else one
    within 3 columns of the row above's (moved on by that transition's own move from the
    row above it when that was 4 to 16 columns: an edge's slope, where the encoder finds
    it pays); else by its run from the previous transition (an Elias-gamma-like code).
    An end-of-row flag closes the row.

Every decision is a binary one of :mod:`eocube.rangecoder`'s range coder (its primitives
and adaptive probabilities, imported), with a few contexts each. The coder works per
transition and row, not per element (a reference frame's rows are kept as transitions,
not scanned again): decoding takes 0.4 to 3.6 times zlib's time, a few tenths of a
millisecond per chunk (benchmarks/results/masks.md); zlib of the packed bits (the only
coding of chunk format 5 and earlier) takes 2 to 4 times the bytes
(a Landsat 7 scene footprint with scan gaps, 3 x 718 x 791: 5456 bytes against 1401; a
sea mask of 24 dates, 1783 against 602).
Byte layout and contexts: docs/format.md, §6.5.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from eocube.errors import CorruptChunkError
from eocube.rangecoder import (
    _FLUSH,
    _LEN_BINS,
    _EncState,
    _finish,
    _get,
    _get_length,
    _put,
    _put_length,
    _room,
    _start,
)

_I64: Any = np.int64
VERTICAL_REACH = 3
"""The farthest offset from its prediction that a transition is coded by (ITU-T T.6's)."""
MAX_SLOPE = 16
"""The largest move from one row to the next that an edge is predicted to keep (moves
within :data:`VERTICAL_REACH` are not)."""

# references of a frame
_REF_NONE, _REF_PREVIOUS, _REF_BAND_BACK = 0, 1, 2

# models: one int64 each (P(bit = 0) and a use count, as in eocube.rangecoder)
_M_EMPTY = 0  # the frame is all zeros; context: the previous frame's flag
_M_HAS_REF = _M_EMPTY + 2  # a reference frame at all; context: the previous frame's ref
_M_WHICH_REF = _M_HAS_REF + 3  # the frame B back rather than the previous one
_M_SAME_REF = _M_WHICH_REF + 3  # the row equals the reference frame's; context: last row's
_M_SAME_ROW = _M_SAME_REF + 2  # the row equals the row above; context: the last row's
_M_END = _M_SAME_ROW + 2  # no more transitions; context: index class x candidates
_M_NEAR_REF = _M_END + 12  # near the reference frame's; context: direction x last mode
_M_NEAR_ROW = _M_NEAR_REF + 6  # near the row above's; context: direction x last mode
_M_OFFSET_REF = _M_NEAR_ROW + 6  # offset 0, sign, |offset| > 1, |offset| > 2
_M_OFFSET_ROW = _M_OFFSET_REF + 4
_M_RUN = _M_OFFSET_ROW + 4  # horizontal runs' lengths, one set per direction
_M_SLOPES = _M_RUN + 2 * _LEN_BINS  # the stream predicts edges' slopes
_N_MODELS = _M_SLOPES + 1

# how the last transition of a row was coded (a context)
_BY_REF, _BY_ROW, _BY_RUN = 0, 1, 2

_DECODE_ERRORS = {
    1: "does not start a range-coded stream",
    3: "puts a transition outside its row or out of order",
    4: "does not end where its stream does (truncated, extended or altered)",
}


@numba.njit(nogil=True, cache=True)
def _transitions(row: np.ndarray, out: np.ndarray) -> int:  # pragma: no cover - compiled
    # the columns where the row's value changes, from 0 at the left edge
    n = 0
    prev = False
    for x in range(row.size):
        v = row[x]
        if v != prev:
            out[n] = x
            n += 1
            prev = v
    return n


@numba.njit(nogil=True, cache=True)
def _keep(
    kept: np.ndarray, starts: np.ndarray, row: int, transitions: np.ndarray, n: int
) -> np.ndarray:  # pragma: no cover - compiled
    # appends a decoded row's transitions to ``kept`` (grown as needed)
    first = starts[row]
    if first + n > kept.size:
        grown = np.empty(max(2 * kept.size, first + n), np.int64)
        grown[:first] = kept[:first]
        kept = grown
    for i in range(n):
        kept[first + i] = transitions[i]
    starts[row + 1] = first + n
    return kept


@numba.njit(nogil=True, cache=True, inline="always")
def _same(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> bool:  # pragma: no cover
    # whether two rows' transitions are the same
    if na != nb:
        return False
    for i in range(na):  # noqa: SIM110 - a loop, which Numba compiles; all() of a generator it does not
        if a[i] != b[i]:
            return False
    return True


@numba.njit(nogil=True, cache=True, inline="always")
def _next_candidate(ref: np.ndarray, nref: int, j: int, last: int, parity: int) -> int:
    # pragma: no cover - compiled
    # the first transition of a reference row past column ``last`` in the direction of
    # the transition being coded (the i-th of a row sets its value to 1 for even i, to 0
    # for odd i, so directions alternate with the index)
    while j < nref and (ref[j] <= last or (j & 1) != parity):
        j += 1
    return j


@numba.njit(nogil=True, cache=True, inline="always")
def _slope(
    a: int, above: np.ndarray, slope_above: np.ndarray, j: int, has: int, slopes: int
) -> int:  # pragma: no cover - compiled
    # how far a transition moved from its candidate in the row above: an edge's slope,
    # which the next row's transition is predicted to keep (within MAX_SLOPE)
    if not (has and slopes):
        return 0
    d = a - above[j]
    # small moves are what the offset codes: predicted, they made ragged edges (coasts)
    # cost more
    return d if VERTICAL_REACH < abs(d) <= MAX_SLOPE else 0


@numba.njit(nogil=True, cache=True, inline="always")
def _put_offset(
    low: int,
    rng: int,
    cache: int,
    pending: int,
    pos: int,
    out: np.ndarray,
    model: np.ndarray,
    base: int,
    d: int,
) -> _EncState:  # pragma: no cover - compiled
    low, rng, cache, pending, pos = _put(low, rng, cache, pending, pos, out, model, base, d != 0)
    if d != 0:
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, base + 1, d < 0
        )
        m = abs(d)
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, base + 2, m > 1
        )
        if m > 1:
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, base + 3, m > 2
            )
    return low, rng, cache, pending, pos


@numba.njit(nogil=True, cache=True, inline="always")
def _get_offset(
    rng: int, code: int, pos: int, data: np.ndarray, model: np.ndarray, base: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    nz, rng, code, pos = _get(rng, code, pos, data, model, base)
    if not nz:
        return 0, rng, code, pos
    neg, rng, code, pos = _get(rng, code, pos, data, model, base + 1)
    m = 1
    more, rng, code, pos = _get(rng, code, pos, data, model, base + 2)
    if more:
        m = 2
        more, rng, code, pos = _get(rng, code, pos, data, model, base + 3)
        if more:
            m = 3
    return (-m if neg else m), rng, code, pos


@numba.njit(nogil=True, cache=True)
def _encode(
    mask: np.ndarray, refs: np.ndarray, F: int, Y: int, X: int, B: int, slopes: int
) -> np.ndarray:  # pragma: no cover - compiled
    model = np.full(_N_MODELS, 32768, np.int64)
    out = np.zeros(256 + F * 4, np.uint8)
    low, rng, cache, pending, pos = 0, 0xFFFFFFFF, 0, 1, 0
    low, rng, cache, pending, pos = _put(
        low, rng, cache, pending, pos, out, model, _M_SLOPES, slopes
    )
    above = np.zeros(X + 1, np.int64)
    cur = np.zeros(X + 1, np.int64)
    tref = np.zeros(X + 1, np.int64)
    slope_above = np.zeros(X + 1, np.int64)
    slope = np.zeros(X + 1, np.int64)
    prev_empty, prev_ref = 0, 0
    for f in range(F):
        r = refs[f]
        frame = mask[f]
        empty = 0 if frame.any() else 1
        out = _room(out, pos + pending + 64)
        if f > 0:
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, _M_HAS_REF + prev_ref, r != _REF_NONE
            )
            if r != _REF_NONE and f >= B and B > 1:
                low, rng, cache, pending, pos = _put(
                    low, rng, cache, pending, pos, out, model, _M_WHICH_REF + prev_ref,
                    r == _REF_BAND_BACK,
                )  # fmt: skip
        low, rng, cache, pending, pos = _put(
            low, rng, cache, pending, pos, out, model, _M_EMPTY + prev_empty, empty
        )
        prev_empty, prev_ref = empty, r
        if empty:
            continue
        ref_frame = mask[f - 1] if r == _REF_PREVIOUS else mask[f - B]
        nabove = 0
        last_same_ref, last_same_row = 0, 0
        for y in range(Y):
            n = _transitions(frame[y], cur)
            nref = 0
            if r != _REF_NONE:
                nref = _transitions(ref_frame[y], tref)
            out = _room(out, pos + pending + 64 + n * 24)
            if r != _REF_NONE:
                same = _same(cur, n, tref, nref)
                low, rng, cache, pending, pos = _put(
                    low, rng, cache, pending, pos, out, model, _M_SAME_REF + last_same_ref, same
                )
                last_same_ref = 1 if same else 0
                if same:
                    for i in range(n):
                        above[i] = cur[i]
                        slope_above[i] = 0
                    nabove = n
                    continue
            same = _same(cur, n, above, nabove)
            low, rng, cache, pending, pos = _put(
                low, rng, cache, pending, pos, out, model, _M_SAME_ROW + last_same_row, same
            )
            last_same_row = 1 if same else 0
            if same:
                slope_above[:n] = 0
                continue
            last = -1
            jt, ja = 0, 0
            mode = _BY_REF
            for i in range(n + 1):
                parity = i & 1
                jt = _next_candidate(tref, nref, jt, last, parity)
                ja = _next_candidate(above, nabove, ja, last, parity)
                has_t = jt < nref
                has_a = ja < nabove
                index_class = 0 if i == 0 else 1 + parity
                low, rng, cache, pending, pos = _put(
                    low, rng, cache, pending, pos, out, model,
                    _M_END + 3 * (has_t + 2 * has_a) + index_class, i == n,
                )  # fmt: skip
                if i == n:
                    break
                a = cur[i]
                slope[i] = _slope(a, above, slope_above, ja, has_a, slopes)
                near_t = has_t and abs(a - tref[jt]) <= VERTICAL_REACH
                if has_t:
                    low, rng, cache, pending, pos = _put(
                        low, rng, cache, pending, pos, out, model,
                        _M_NEAR_REF + 3 * parity + mode, near_t,
                    )  # fmt: skip
                if near_t:
                    low, rng, cache, pending, pos = _put_offset(
                        low, rng, cache, pending, pos, out, model, _M_OFFSET_REF, a - tref[jt]
                    )
                    mode = _BY_REF
                else:
                    guess = above[ja] + slope_above[ja]
                    near_a = has_a and abs(a - guess) <= VERTICAL_REACH
                    if has_a:
                        low, rng, cache, pending, pos = _put(
                            low, rng, cache, pending, pos, out, model,
                            _M_NEAR_ROW + 3 * parity + mode, near_a,
                        )  # fmt: skip
                    if near_a:
                        low, rng, cache, pending, pos = _put_offset(
                            low, rng, cache, pending, pos, out, model, _M_OFFSET_ROW, a - guess
                        )
                        mode = _BY_ROW
                    else:
                        low, rng, cache, pending, pos = _put_length(
                            low, rng, cache, pending, pos, out, model,
                            _M_RUN + parity * _LEN_BINS, a - last - 1,
                        )  # fmt: skip
                        mode = _BY_RUN
                last = a
            for i in range(n):
                above[i] = cur[i]
                slope_above[i] = slope[i]
            nabove = n
    return _finish(low, cache, pending, pos, out)


@numba.njit(nogil=True, cache=True)
def _decode(
    data: np.ndarray, F: int, Y: int, X: int, B: int, mask: np.ndarray
) -> int:  # pragma: no cover - compiled
    # fills ``mask`` (F, Y, X) of zeros; returns 0, or the error code of _DECODE_ERRORS
    rng, code, pos = _start(data, 0)
    if rng == 0:
        return 1
    model = np.full(_N_MODELS, 32768, np.int64)
    slopes, rng, code, pos = _get(rng, code, pos, data, model, _M_SLOPES)
    above = np.zeros(X + 1, np.int64)
    cur = np.zeros(X + 1, np.int64)
    tref = np.zeros(X + 1, np.int64)
    slope_above = np.zeros(X + 1, np.int64)
    slope = np.zeros(X + 1, np.int64)
    # every decoded row's transitions (row f * Y + y from starts[.] to starts[. + 1]), so
    # that a reference frame's rows are not scanned again
    starts = np.zeros(F * Y + 1, np.int64)
    kept = np.zeros(1024, np.int64)
    prev_empty, prev_ref = 0, 0
    for f in range(F):
        r = _REF_NONE
        if f > 0:
            bit, rng, code, pos = _get(rng, code, pos, data, model, _M_HAS_REF + prev_ref)
            if bit:
                r = _REF_PREVIOUS
                if f >= B and B > 1:
                    bit, rng, code, pos = _get(rng, code, pos, data, model, _M_WHICH_REF + prev_ref)
                    if bit:
                        r = _REF_BAND_BACK
        empty, rng, code, pos = _get(rng, code, pos, data, model, _M_EMPTY + prev_empty)
        prev_empty, prev_ref = empty, r
        if empty:
            for y in range(Y):
                starts[f * Y + y + 1] = starts[f * Y + y]
            continue
        frame = mask[f]
        g = f - 1 if r == _REF_PREVIOUS else f - B
        ref_frame = mask[g]
        nabove = 0
        last_same_ref, last_same_row = 0, 0
        for y in range(Y):
            nref = 0
            if r != _REF_NONE:
                first = starts[g * Y + y]
                nref = starts[g * Y + y + 1] - first
                for i in range(nref):
                    tref[i] = kept[first + i]
                same, rng, code, pos = _get(
                    rng, code, pos, data, model, _M_SAME_REF + last_same_ref
                )
                last_same_ref = same
                if same:
                    for i in range(nref):
                        above[i] = tref[i]
                        slope_above[i] = 0
                    nabove = nref
                    frame[y] = ref_frame[y]
                    kept = _keep(kept, starts, f * Y + y, above, nabove)
                    continue
            same, rng, code, pos = _get(rng, code, pos, data, model, _M_SAME_ROW + last_same_row)
            last_same_row = same
            n = nabove
            if same:
                slope_above[:n] = 0
            else:
                last = -1
                jt, ja = 0, 0
                mode = _BY_REF
                n = 0
                while True:
                    parity = n & 1
                    jt = _next_candidate(tref, nref, jt, last, parity)
                    ja = _next_candidate(above, nabove, ja, last, parity)
                    has_t = 1 if jt < nref else 0
                    has_a = 1 if ja < nabove else 0
                    index_class = 0 if n == 0 else 1 + parity
                    end, rng, code, pos = _get(
                        rng, code, pos, data, model, _M_END + 3 * (has_t + 2 * has_a) + index_class
                    )
                    if end:
                        break
                    near_t = 0
                    if has_t:
                        near_t, rng, code, pos = _get(
                            rng, code, pos, data, model, _M_NEAR_REF + 3 * parity + mode
                        )
                    if near_t:
                        d, rng, code, pos = _get_offset(rng, code, pos, data, model, _M_OFFSET_REF)
                        a = tref[jt] + d
                        mode = _BY_REF
                    else:
                        near_a = 0
                        if has_a:
                            near_a, rng, code, pos = _get(
                                rng, code, pos, data, model, _M_NEAR_ROW + 3 * parity + mode
                            )
                        if near_a:
                            d, rng, code, pos = _get_offset(
                                rng, code, pos, data, model, _M_OFFSET_ROW
                            )
                            a = above[ja] + slope_above[ja] + d
                            mode = _BY_ROW
                        else:
                            run, rng, code, pos = _get_length(
                                rng, code, pos, data, model, _M_RUN + parity * _LEN_BINS
                            )
                            a = last + 1 + run
                            mode = _BY_RUN
                    if a <= last or a >= X or n >= X:
                        return 3
                    cur[n] = a
                    slope[n] = _slope(a, above, slope_above, ja, has_a, slopes)
                    n += 1
                    last = a
                for i in range(n):
                    above[i] = cur[i]
                    slope_above[i] = slope[i]
                nabove = n
            # the row: ones from each even transition to the next odd one
            row = frame[y]
            for k in range(0, n, 2):
                stop = above[k + 1] if k + 1 < n else X
                row[above[k] : stop] = True
            kept = _keep(kept, starts, f * Y + y, above, n)
    if code != 0 or pos != data.size:
        return 4
    return 0


def _references(frames: np.ndarray, bands: int) -> np.ndarray:
    """Each frame's reference, the one leaving the fewest changed elements (none first,
    then the previous frame, then the frame ``bands`` back, on ties)."""
    F = frames.shape[0]
    costs = np.full((F, 3), np.iinfo(np.int64).max, np.int64)
    costs[:, _REF_NONE] = np.count_nonzero(frames, axis=(1, 2))
    costs[1:, _REF_PREVIOUS] = np.count_nonzero(frames[1:] ^ frames[:-1], axis=(1, 2))
    if bands > 1:
        costs[bands:, _REF_BAND_BACK] = np.count_nonzero(
            frames[bands:] ^ frames[:-bands], axis=(1, 2)
        )
    return np.argmin(costs, axis=1).astype(np.int64)


def encode(mask: np.ndarray) -> bytes:
    """The coded form of a boolean ``mask`` of a coded part's shape ``(T', B, Y', X')``."""
    T, B, Y, X = mask.shape
    frames = np.ascontiguousarray(mask, dtype=np.bool_).reshape(T * B, Y, X)
    refs = _references(frames, B)
    # edges' slopes predicted or not, whichever codes smaller (straight edges of a
    # footprint gain, ragged coasts lose)
    coded = [_encode(frames, refs, T * B, Y, X, B, slopes) for slopes in (0, 1)]
    return min(coded, key=len).tobytes()


def decode(data: bytes, shape: tuple[int, int, int, int], what: str = "mask") -> np.ndarray:
    """The boolean mask of ``shape`` ``(T', B, Y', X')`` that :func:`encode` coded.

    Raises
    ------
    CorruptChunkError
        If the stream does not decode to a mask of that shape (``what`` names it).
    """
    T, B, Y, X = shape
    out = np.zeros((T * B, Y, X), np.bool_)
    buf = np.frombuffer(data, np.uint8)
    if buf.size < _FLUSH:
        raise CorruptChunkError(f"{what}: {buf.size} bytes cannot hold a coded mask")
    error = _decode(buf, T * B, Y, X, B, out)
    if error:
        raise CorruptChunkError(f"{what}: the coded mask {_DECODE_ERRORS[error]}")
    return out.reshape(shape)
