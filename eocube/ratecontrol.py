"""Choosing the codec quality for a target: bits, PSNR, or a hard error bound.

Every search runs on a *sample* of at most :data:`SAMPLE_BLOCKS` chunk-shaped blocks of
the cube (spread over time and space), never on the whole cube, and makes at most
:data:`MAX_TRIALS` trial encodes of that sample for the video's quality, and as many
again for a residual layer's bound where the video alone falls short of a PSNR or rate
target. The writer then encodes the cube once
with the chosen quality, measures what it got (in the encode tasks), and corrects at most
:data:`MAX_CORRECTIONS` times (see :func:`eocube.to_eocube`), each correction staged
beside the store until the best pass is kept (:mod:`eocube.passes`): the whole cube is
encoded at most ``1 + MAX_CORRECTIONS`` times, and usually once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import dask.system
import numpy as np
import xarray as xr

from eocube import metrics
from eocube.chunk import decode_chunk
from eocube.encode import chunk_as_written, encode_block, in_memory
from eocube.packed import PACKING_PREFIX
from eocube.profiles import WAVELET_STEPS_PER_DOUBLING, Profile
from eocube.report import EncodeReport, overhead

if TYPE_CHECKING:
    from eocube.variables import CubeVar

CONTROLS = ("lossless", "crf", "target_bpppb", "target_psnr", "max_abs_error")
"""The quality controls of a write, of which one at most is given."""
SAMPLE_BLOCKS = 3
MAX_TRIALS = 7
FINE_WALK = 5
"""Trials a bound search adds on x265's six constant-QP levels (quality -6 .. -1)."""
logger = logging.getLogger(__name__)

MAX_CORRECTIONS = 2
PSNR_MARGIN = 0.15
"""dB aimed above a PSNR target on a small sample of the cube, as the sample only
estimates the cube; scaled by the share of the cube outside the sample (0.01 dB for a
sample that is the whole cube: its PSNR is then the cube's)."""
PSNR_TOLERANCE = 0.25
"""dB above the aim at which a trial ends a PSNR search (about half a crf step of x265)."""
PSNR_OVERSHOOT = 0.75
"""dB above a PSNR target at which a written store is corrected by another pass (the
sample's margin and tolerance, and what the sample misses of the cube)."""
PSNR_LINEAR_SPAN = 2.0
"""Quality steps within which a PSNR correction takes the PSNR as linear between a
quality known to meet the target and one known to miss it, and aims between them; over
a wider span it takes the one that meets (the line from crf 2.75 to 16 on a 118-date
Sentinel-2 series put 50.15 dB at crf 3.25, which got 49.87)."""
BPPPB_TOLERANCE = 0.04
"""Relative distance to a rate target at which a trial ends a bpppb search."""
QUALITY_PER_HALVING = 8.0
"""Quality steps (crf) that halve the bytes, where the trials give no slope yet: 6 is
the textbook figure for x265; 8 to 11 were measured on Sentinel-2 and ERA5 cubes
around crf 16."""
BPPPB_STORE_TOLERANCE = 0.05
"""Relative distance of the store's rate to the target at which a trial on a sample
that is the whole cube (its payload known exactly) ends a bpppb search."""
BPPPB_CORRECT = 0.08
"""Relative miss of a bpppb target (of the +-10 % promised) that a written store is
corrected for by another pass."""
PAYLOAD_FLOOR_HALVING = 2 * QUALITY_PER_HALVING
"""Quality steps per halving of the bytes beyond which a rate target out of reach does
not push the quality: past the codec's knee (bytes halving slower than this) the payload
no longer shrinks meaningfully while the quality collapses (x265 12-bit: 11 dB at crf 46
on a Sentinel-2 cube, for 10 % fewer payload bytes than at crf 42)."""
DB_PER_BIT = 20 * math.log10(2)
"""dB per bit per value a residual bound costs, where it dominates (a halving of the
bound adds about a bit per value; 6 to 8 dB per bit measured on ERA5, CMIP3 and
Sentinel-2 cubes)."""


@dataclass(frozen=True)
class Control:
    """The one quality control of a write: its name (one of :data:`CONTROLS`, or
    ``"default"``) and value, validated."""

    name: str = "default"
    value: Any = None

    @classmethod
    def parse(cls, **given: Any) -> Control:
        """The control among ``lossless``, ``crf``, ... (keyword arguments; None or False
        for those not given).

        Raises
        ------
        ValueError
            When several are given, or a target is not a positive number.
        """
        # lossless=False is no control; crf=0 is one
        named = [k for k in CONTROLS if given.get(k) is not None and given.get(k) is not False]
        if len(named) > 1:
            raise ValueError(f"{' and '.join(named)} conflict: give one quality control")
        for key in ("target_bpppb", "target_psnr"):
            value = given.get(key)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{key} must be a positive number, got {value!r}")
        return cls(named[0], given[named[0]]) if named else cls()

    @property
    def target_psnr(self) -> float | None:
        """The PSNR asked for, if that is the control."""
        return float(self.value) if self.name == "target_psnr" else None

    @property
    def target_bpppb(self) -> float | None:
        """The bits per value asked for, if that is the control."""
        return float(self.value) if self.name == "target_bpppb" else None

    @property
    def searched(self) -> bool:
        """Whether the quality is searched on a sample (a target or a bound)."""
        return self.name in ("target_psnr", "target_bpppb", "max_abs_error")

    def check_profile(self, profile: Profile) -> None:
        """Refuse a profile that cannot serve this control."""
        if self.name == "lossless" and not profile.lossless:
            raise ValueError(f"lossless=True needs a lossless profile; {profile.name!r} is lossy")
        if self.name not in ("lossless", "default") and profile.lossless:
            raise ValueError(f"profile {profile.name!r} is lossless: it takes no {self.name}")

    def met_by(self, report: EncodeReport) -> bool:
        """Whether a write's report meets the target (always, without one)."""
        if self.target_psnr is not None:
            return all(
                v.psnr is not None and v.psnr >= self.target_psnr for v in report.variables.values()
            )
        if self.target_bpppb is not None:
            return abs(report.bpppb / self.target_bpppb - 1) <= 0.1
        return True


@dataclass(frozen=True)
class Trial:
    """One trial encode of the sample at ``quality``; ``psnr`` is NaN when the search
    needed bytes only (nothing was decoded). No search needs ``max_abs_error`` (NaN)."""

    quality: float
    nbytes: int
    values: int
    psnr: float
    max_abs_error: float

    @property
    def bpppb(self) -> float:
        """Payload bits per value of the sample."""
        return self.nbytes * 8 / self.values


@dataclass
class Searched:
    """What a search decided beside the qualities, for the passes that follow.

    ``bounds``: the variables whose residual bound (in the write's ``bounds``) the search
    set, to reach a PSNR or a rate beyond what the video alone reaches; :func:`correct`
    rescales those bounds by a pass's miss, and the store reports them as the
    variables' error bounds. ``floored``: the variables whose quality stopped where
    their payload no longer shrinks meaningfully (:func:`before_the_floor`), which no
    correction makes coarser. ``video_shares``: for a bound set to reach a rate, the
    share of the sample's payload that its video held (the video alone at its finest
    quality over the video and the residual at the bound), by which :func:`correct`
    tells a pass whose video alone spends more than the rate on the cube.
    ``sample_psnrs``: for a PSNR search, its trials' ``(quality, PSNR)`` on the sample,
    which :func:`correct` takes beside the passes, at the level of the cube
    (:func:`_sample_at_cube_level`)."""

    bounds: set[Hashable] = field(default_factory=set)
    floored: set[Hashable] = field(default_factory=set)
    video_shares: dict[Hashable, float] = field(default_factory=dict)
    sample_psnrs: dict[Hashable, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    def merge(self, other: Searched) -> None:
        """Take in what another variable's search decided."""
        self.bounds |= other.bounds
        self.floored |= other.floored
        self.video_shares.update(other.video_shares)
        self.sample_psnrs.update(other.sample_psnrs)


def sample_slices(
    shape: Sequence[int], chunk: Sequence[int], count: int = SAMPLE_BLOCKS
) -> list[tuple[slice, ...]]:
    """Up to ``count`` chunk-aligned blocks: spread along time, centred in space, where
    the cube has ``count`` chunks in time or more; else spread over the whole chunk grid
    (in time, then in space), so that a cube of one or two dates still gives ``count``
    blocks where it has that many chunks.

    ``shape`` and ``chunk`` are (T, B, Y, X) or (T, Y, X). Centred in space alone, the
    sample of a one-date scene was one chunk of its eight, which spent a third of the
    cube's bits per value (an ocean-colour scene) and sent the corrections after it.
    """
    grid = [math.ceil(size / c) for size, c in zip(shape, chunk, strict=True)]
    if grid[0] >= count:
        picks = sorted({round(i * (grid[0] - 1) / max(count - 1, 1)) for i in range(count)})
        cells = [(t, *(n // 2 for n in grid[1:])) for t in picks]
    else:
        # the middle of each of ``count`` equal runs of the grid's chunks, in C order
        total = math.prod(grid)
        n = min(count, total)
        flat = sorted({math.floor((i + 0.5) * total / n) for i in range(n)})
        cells = [tuple(int(k) for k in np.unravel_index(f, grid)) for f in flat]
    return [
        tuple(
            slice(k * c, min((k + 1) * c, size))
            for k, c, size in zip(cell, chunk, shape, strict=True)
        )
        for cell in cells
    ]


def _encode_sample_block(
    raw: np.ndarray,
    coded: np.ndarray,
    profile: Profile,
    quality: float,
    nodata: float | None,
    max_abs_error: float | Sequence[float] | None,
    measure: bool,
    wavelet: str | None = None,
) -> tuple[int, np.ndarray | None]:
    """Payload bytes of one sample block and, when ``measure``, its decoded values
    (cropped to ``raw``, shaped (T, B, Y, X))."""
    payload = encode_block(
        coded,
        profile.name,
        quality=quality,
        nodata=nodata,
        max_abs_error=max_abs_error,
        keep=True,
        wavelet=wavelet,
    )
    if not measure:
        return len(payload), None
    dec = decode_chunk(payload)
    dec = dec.reshape(coded.shape[0], -1, *coded.shape[-2:])
    r4 = raw.reshape(raw.shape[0], -1, *raw.shape[-2:])
    return len(payload), dec[: r4.shape[0], :, : r4.shape[2], : r4.shape[3]]


def make_trial(
    blocks: Sequence[np.ndarray],
    profile: Profile,
    *,
    nodata: float | None = None,
    max_abs_error: float | Sequence[float] | None = None,
    coded: Sequence[np.ndarray] | None = None,
    measure: bool = True,
    wavelet: str | None = None,
) -> Callable[[float], Trial]:
    """A function encoding the sample at a quality and measuring it.

    ``blocks`` are the sample's values; ``coded`` the same blocks as the writer encodes
    them (edge chunks padded, :func:`eocube.encode.chunk_as_written`; default: the
    blocks), so that within :func:`eocube.encode.reuse_payloads` the write takes the
    trial's payloads of those chunks. The blocks encode in parallel (the codec releases
    the GIL; one block per core). Without ``measure`` only the bytes are counted.
    ``wavelet`` overrides the profile's wavelet choice (``"off"``: the video alone).
    """
    coded = list(blocks) if coded is None else list(coded)
    workers = max(1, min(len(blocks), dask.system.CPU_COUNT))

    def trial(quality: float) -> Trial:
        def one(i: int) -> tuple[int, np.ndarray | None]:
            return _encode_sample_block(
                blocks[i], coded[i], profile, quality, nodata, max_abs_error, measure, wavelet
            )

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(one, range(len(blocks))))
        else:
            done = [one(i) for i in range(len(blocks))]
        nbytes = sum(n for n, _ in done)
        values = sum(b.size for b in blocks)
        if not measure:
            return Trial(quality, nbytes, values, math.nan, math.nan)
        originals = [b.reshape(b.shape[0], -1, *b.shape[-2:]) for b in blocks]
        decodeds = [d for _, d in done]

        # per band, all sample values side by side: (1, B, 1, N) for the metrics
        def per_band(blocks: list[np.ndarray]) -> np.ndarray:
            flat = [b.transpose(1, 0, 2, 3).reshape(b.shape[1], -1) for b in blocks]
            return np.concatenate(flat, axis=1)[None, :, None, :]

        orig4, dec4 = per_band(originals), per_band(decodeds)  # type: ignore[arg-type]
        return Trial(quality, nbytes, values, metrics.psnr(orig4, dec4, nodata), math.nan)

    return trial


def _grid(profile: Profile) -> tuple[float, float]:
    assert profile.quality is not None
    return float(profile.quality.min), float(profile.quality.max)


def _snap(profile: Profile, q: float) -> float:
    assert profile.quality is not None
    return profile.quality.snap(q)


def _start(profile: Profile) -> float:
    """The first quality tried: the profile's default, where most writes land near."""
    assert profile.quality is not None
    return _snap(profile, float(profile.quality.default))


def quality_for_psnr(
    trial: Callable[[float], Trial],
    profile: Profile,
    target: float,
    margin: float = PSNR_MARGIN,
) -> tuple[float, list[Trial]]:
    """The largest quality value (fewest bits) found whose sample PSNR reaches
    ``target + margin``, within :data:`PSNR_TOLERANCE` dB above it where the steps allow.

    Secant steps on PSNR against quality from the profile's default (about 0.5 dB per
    crf step where no two trials give the slope yet), inside the bracket of a quality
    that reaches the aim and one that does not. Returns the quality and the trials made;
    the profile's best quality when no trial reaches the aim.
    """
    assert profile.quality is not None
    step = profile.quality.step
    lo, hi = _grid(profile)
    aim = target + margin
    trials: list[Trial] = []
    q = _start(profile)
    for _ in range(MAX_TRIALS):
        t = trial(q)
        trials.append(t)
        good = [x for x in trials if x.psnr >= aim]
        bad = [x for x in trials if not x.psnr >= aim]
        best = max(good, key=lambda x: x.quality) if good else None
        worst = min(bad, key=lambda x: x.quality) if bad else None
        if best is not None and best.psnr - aim <= PSNR_TOLERANCE:
            break
        a, b = (best, worst) if best is not None and worst is not None else (None, None)
        if a is not None and b is not None:
            if b.quality - a.quality <= step:
                break
            span = a.psnr - b.psnr
            nq = a.quality + (a.psnr - aim) * (b.quality - a.quality) / span if span > 0 else 0
            # kept off the bracket's outer quarters, so that it shrinks by a quarter at
            # least: where PSNR bends (the video saturating, the wavelet's rate below the
            # video's finest quality) the secant alone crept along one side
            width = b.quality - a.quality
            nq = min(max(nq, a.quality + width / 4), b.quality - width / 4)
            nq = min(max(_snap(profile, nq), a.quality + step), b.quality - step)
        else:
            near = sorted(trials, key=lambda x: abs(x.psnr - aim))[:2]
            slope = -0.5  # dB per quality step
            if len(near) == 2 and near[0].quality != near[1].quality:
                measured = (near[1].psnr - near[0].psnr) / (near[1].quality - near[0].quality)
                slope = min(measured, -0.1) if math.isfinite(measured) else slope
            # aim a little above (below, when short of the aim) to bracket in one step
            nq = t.quality + (aim + (0.1 if best is None else 0.05) - t.psnr) / slope
            nq = _snap(profile, nq)
        if any(x.quality == nq for x in trials) or not lo <= nq <= hi:
            break
        q = nq
    good = [x for x in trials if x.psnr >= aim]
    return (max(good, key=lambda x: x.quality).quality if good else lo), trials


def quality_for_bpppb(
    trial: Callable[[float], Trial],
    profile: Profile,
    target: float,
    tolerance: float = BPPPB_TOLERANCE,
) -> tuple[float, list[Trial]]:
    """The quality whose sample payload bpppb is closest to ``target`` (log scale).

    From the profile's default: log(bytes) interpolated against quality between the
    nearest trials on either side of the target once there are such, else extrapolated
    from the two nearest (bytes halve about every :data:`QUALITY_PER_HALVING` steps
    where one trial gives no slope yet), clamped to the profile's range; a trial within
    ``tolerance`` (relative) ends the search. Where the target is below every trial,
    the quality goes no coarser than the codec's knee (:func:`before_the_floor`), a step
    of at most :data:`PAYLOAD_FLOOR_HALVING` at a time, bisecting between the knee and
    the trial past it.
    """
    assert profile.quality is not None
    step = profile.quality.step
    trials: list[Trial] = []
    q = _start(profile)
    for _ in range(MAX_TRIALS):
        t = trial(q)
        trials.append(t)
        if abs(math.log(t.bpppb / target)) < math.log(1 + tolerance):
            break
        below = [x for x in trials if x.bpppb < target]
        bracket = rate_bracket([(x.quality, x.bpppb) for x in trials], target)
        near = sorted(trials, key=lambda x: abs(math.log(x.bpppb / target)))[:2]
        if bracket is not None:
            inside = inside_bracket(profile, bracket, target, [x.quality for x in trials])
            if inside is None:
                break
            nq = inside
        elif len(near) == 2 and near[0].quality != near[1].quality:
            a, b = ((x.quality, x.bpppb) for x in near)
            nq = _log_secant(a, b, target)
        else:
            nq = t.quality + math.log(t.bpppb / target) * QUALITY_PER_HALVING / math.log(2)
        if not below:
            # coarser than every trial: a step at most to where the payload must halve
            # to be worth it, and none past the codec's knee once the trials show it
            coarsest = max(trials, key=lambda x: x.quality)
            knee = before_the_floor(trials)
            if knee is coarsest:
                nq = min(nq, coarsest.quality + PAYLOAD_FLOOR_HALVING)
            else:  # the knee lies between it and the next coarser trial: bisect
                nxt = min((x for x in trials if x.quality > knee.quality), key=lambda x: x.quality)
                nq = (knee.quality + nxt.quality) / 2
                if nxt.quality - knee.quality <= 2 * step:
                    break
        nq = _snap(profile, nq)
        if any(x.quality == nq for x in trials):
            break
        q = nq
    best = min(trials, key=lambda x: abs(math.log(x.bpppb / target)))
    if all(x.bpppb > target * (1 + tolerance) for x in trials):
        best = before_the_floor(trials)
    return best.quality, trials


def rate_bracket(
    points: Sequence[tuple[float, float]], target: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Of ``(quality, bpppb)`` points, the two that bracket a rate ``target`` most
    tightly in quality: the coarsest that spends more than the target, and the finest
    coarser than it that spends less; None without such a pair.

    Taken in quality order, not by bytes: where bytes do not fall steadily as the
    quality coarsens (a chunk's trials of mosaics or rotations flipping from one quality
    to the next; PyAV 15's x265 on a 19-date Sentinel-2 series gave 0.67, then 0.60
    bits per value at crf 4.25, then 3), the pair nearest the target by bytes can lie on
    one side in quality, and a secant between them aims back at a quality tried."""
    return _bracket(points, lambda rate: rate > target, lambda rate: rate < target)


def _bracket(
    points: Sequence[tuple[float, float]],
    fine_side: Callable[[float], bool],
    coarse_side: Callable[[float], bool],
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Of ``(quality, value)`` points, the coarsest whose value lies on the fine side of
    a target and the finest coarser than it whose value lies on the coarse side; None
    without such a pair (:func:`rate_bracket`, :func:`psnr_bracket`)."""
    fine = [p for p in points if fine_side(p[1])]
    if not fine:
        return None
    finer = max(fine, key=lambda p: p[0])
    coarser = [p for p in points if coarse_side(p[1]) and p[0] > finer[0]]
    return (finer, min(coarser, key=lambda p: p[0])) if coarser else None


def inside_bracket(
    profile: Profile,
    bracket: tuple[tuple[float, float], tuple[float, float]],
    target: float,
    tried: Sequence[float],
) -> float | None:
    """The quality (snapped to the profile's steps) inside a ``bracket`` of
    ``(quality, bpppb)`` points (:func:`rate_bracket`) to try next for a rate ``target``:
    where log(bytes) through the two meets it, or the bracket's middle where that is a
    quality ``tried`` already; None once the middle is tried too (the bracket is a step
    wide: nothing between its ends is left to try).

    Bytes that do not fall steadily with the quality (a chunk's trials of layouts
    flipping between qualities) can aim the secant at a quality tried already: halving
    the bracket still closes in on the rate."""
    ends = (bracket[0][0], bracket[1][0])
    middle = (ends[0] + ends[1]) / 2
    return _untried_inside(profile, (_log_secant(*bracket, target), middle), ends, tried)


def _log_secant(a: tuple[float, float], b: tuple[float, float], target: float) -> float:
    """The quality where log(bpppb) through points ``a`` and ``b`` (quality, bpppb) meets
    ``target``; along a halving every :data:`QUALITY_PER_HALVING` steps from ``a`` where
    the two give no falling slope."""
    slope = (math.log(b[1]) - math.log(a[1])) / (b[0] - a[0])
    slope = slope if slope < -1e-3 else -math.log(2) / QUALITY_PER_HALVING
    return a[0] + (math.log(target) - math.log(a[1])) / slope


def before_the_floor(trials: Sequence[Trial]) -> Trial:
    """The coarsest trial reached from the finest by steps that each shrink the payload
    meaningfully (by at least a halving per :data:`PAYLOAD_FLOOR_HALVING` quality steps):
    where a rate target is below what the codec makes, the quality goes no further than
    the codec's knee, past which no coarser trial shrinks it meaningfully.

    A flat stretch before a coarser trial that shrinks it again is no knee: x265's crf 0
    spends about what its constant QP 5 (quality -1) does, and its crf 0.25 to 0.75 the
    same bytes (a 10 m Sentinel-2 scene); a knee found there held a 1 bpppb write of
    that scene at 1.29 bpppb, no correction allowed to make it coarser."""
    ordered = sorted(trials, key=lambda x: x.quality)
    best = ordered[0]
    for t in ordered[1:]:
        if t.bpppb <= best.bpppb * 2 ** (-(t.quality - best.quality) / PAYLOAD_FLOOR_HALVING):
            best = t
    return best


def quality_for_bound(
    trial: Callable[[float], Trial], profile: Profile
) -> tuple[float, list[Trial]]:
    """The quality that minimises video plus residual bytes under a hard error bound.

    Bytes are roughly unimodal in crf (a coarse video leaves a large residual, a fine
    one costs video bits): golden-section search over the profile's main scale. Where
    that ends at the scale's floor and the profile has a fine scale below it (x265's
    constant QP), every other level of the fine scale is tried, then the best one's
    neighbours (:data:`FINE_WALK` trials for x265's six levels).
    """
    quality = profile.quality
    assert quality is not None
    lo, hi = _grid(profile)
    fine = quality.fine_option is not None
    if fine:
        lo = 0.0
    hi = min(hi, lo + 40)
    trials: dict[float, Trial] = {}

    def cost(q: float) -> int:
        q = _snap(profile, q)
        if q not in trials:
            trials[q] = trial(q)
        return trials[q].nbytes

    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = cost(c), cost(d)
    while len(trials) < MAX_TRIALS and b - a > 2 * quality.step:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = cost(d)
    if fine and a == lo:
        # the cheapest may lie past crf's floor, on the fine scale's whole levels (each
        # about 12 % of the video's bytes), where the bytes need not be unimodal (QP 0
        # beat QP 2, which beat QP 1, on ERA-Interim at 1e-3): every other level, then
        # the best one's neighbours
        finest = int(quality.video_floor)
        for level in range(-2, finest - 1, -2):
            cost(level)
        cheapest = min((q for q in trials if q < 0), key=lambda q: trials[q].nbytes)
        for q in (cheapest - 1, cheapest + 1):
            if finest <= q < 0:
                cost(q)
    best = min(trials.values(), key=lambda t: t.nbytes)
    return best.quality, list(trials.values())


def _band_ranges(
    blocks: Sequence[np.ndarray], nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the sample's data range (1 where it has none) and largest magnitude."""
    bands = blocks[0].shape[1] if blocks[0].ndim == 4 else 1
    lo = np.full(bands, np.inf)
    hi = np.full(bands, -np.inf)
    for block in blocks:
        b4 = block if block.ndim == 4 else block[:, None]
        valid = metrics.valid_mask(b4, nodata)
        for b in range(bands):
            v = b4[:, b][valid[:, b]]
            if v.size:
                lo[b] = min(lo[b], float(v.min()))
                hi[b] = max(hi[b], float(v.max()))
    peak = np.where(hi > lo, hi - lo, 1.0)
    magnitude = np.where(np.isfinite(lo), np.maximum(np.abs(lo), np.abs(hi)), 0.0)
    return peak, magnitude


def bounds_for_psnr(
    blocks: Sequence[np.ndarray], target: float, nodata: float | None = None
) -> tuple[float, ...]:
    """Per-band error bounds whose uniform errors would give ``target`` dB.

    Errors uniform in [-e, e] have MSE e²/3, so e = peak·√3·10^(-target/20) with the
    band's range in the sample as peak; the residual layer keeps every error within e,
    and errors the video makes smaller only raise the PSNR.
    """
    peak, _ = _band_ranges(blocks, nodata)
    return tuple(float(p) * math.sqrt(3) * 10 ** (-target / 20) for p in peak)


def bound_levels(
    blocks: Sequence[np.ndarray], nodata: float | None = None
) -> tuple[Callable[[float], tuple[float, ...]], float]:
    """Residual bounds on a dB scale, for a search in log bound: the per-band bounds at
    a level of ``p`` dB (those of :func:`bounds_for_psnr`), and the level from which
    every bound is 0 (lossless).

    Integer bounds are whole numbers (``floor(e)`` is the bound the residual keeps for
    integers, and the store reports what it keeps), rounded at staggered points across
    the bands so that the rate steps through the levels between two whole bounds (from
    1 to 0, lossless, the rate of each band jumps by log2(3) bits). A float band's bound
    is 0 below half the spacing of its dtype at its largest magnitude, where no finer
    bound is meaningful."""
    peak, magnitude = _band_ranges(blocks, nodata)
    integer = blocks[0].dtype.kind in "iu"
    bands = len(peak)
    offset = (np.arange(bands) + 0.5) / bands - 0.5 if integer else np.zeros(bands)
    if integer:
        finest = 1 - offset  # the bound rounds to 1 from there
    else:
        finest = np.spacing(magnitude.astype(blocks[0].dtype)).astype(np.float64) / 2
    scale = peak * math.sqrt(3)
    top = float(np.max(20 * np.log10(scale / finest))) + 0.01

    def level(p: float) -> tuple[float, ...]:
        e = scale * 10 ** (-p / 20)
        e = np.floor(e + offset) if integer else np.where(e >= finest, e, 0.0)
        return tuple(float(b) for b in e)

    return level, top


def bound_for_bpppb(
    trial: Callable[[tuple[float, ...]], Trial],
    level: Callable[[float], tuple[float, ...]],
    top: float,
    target: float,
    saturated: Trial,
    bits: int,
    tolerance: float = BPPPB_TOLERANCE,
) -> tuple[tuple[float, ...], list[Trial]]:
    """The residual bound whose sample payload bpppb (video at its finest quality plus
    the residual) is closest to ``target``, where the video alone (``saturated``, at
    its finest quality) spends less.

    Bytes fall as the bound grows: the search runs on the bound's level in dB
    (:func:`bound_levels`; the log of the bound), the rate about linear in it, a bit
    per value every :data:`DB_PER_BIT` where no two trials give the slope yet;
    interpolating inside the bracket of a level above the target and one below once
    there are such; at most :data:`MAX_TRIALS` trial encodes; one within ``tolerance``
    (relative) ends the search. It starts from the level a ``bits``-deep video plus
    the missing bits would reach. At level ``top`` the bound is 0 (lossless): a target
    above that rate returns the lossless bound."""
    made: list[tuple[float, Trial]] = []
    tried: dict[tuple[float, ...], Trial] = {}
    p = min(DB_PER_BIT * (bits + target - saturated.bpppb) - 15, top)
    for _ in range(MAX_TRIALS):
        bound = level(p)
        t = trial(bound)
        tried[bound] = t
        made.append((p, t))
        if abs(math.log(t.bpppb / target)) < math.log(1 + tolerance):
            break
        above = [x for x in made if x[1].bpppb > target]
        below = [x for x in made if x[1].bpppb < target]
        if above and below:
            pa, ta = min(above, key=lambda x: x[0])
            pb, tb = max(below, key=lambda x: x[0])
            if abs(pa - pb) < 0.05:
                break
            nq = pb + (target - tb.bpppb) * (pa - pb) / (ta.bpppb - tb.bpppb)
            # kept off the bracket's ends, so that it shrinks
            margin = 0.1 * (pa - pb)
            nq = min(max(nq, pb + margin), pa - margin)
        else:
            if below and p >= top:
                break  # lossless, and still under the target: nothing more to spend
            slope = 1 / DB_PER_BIT
            near = sorted(made, key=lambda x: abs(math.log(x[1].bpppb / target)))[:2]
            if len(near) == 2 and near[0][0] != near[1][0]:
                (p0, t0), (p1, t1) = near
                measured = (t1.bpppb - t0.bpppb) / (p1 - p0)
                slope = max(measured, slope / 2) if math.isfinite(measured) else slope
            nq = min(p + (target - t.bpppb) / slope, top)
        if level(nq) in tried:
            break  # integer bounds: no level between those tried
        p = nq
    best = min(made, key=lambda x: abs(math.log(x[1].bpppb / target)))
    return level(best[0]), [t for _, t in made]


def sample_blocks(ds: xr.Dataset, cv: CubeVar) -> list[np.ndarray]:
    """The sample of a cube variable: its blocks at :func:`sample_slices`."""
    var = xr.conventions.encode_cf_variable(ds[cv.name].variable)
    full_chunk = [cv.inner[i] for i in range(var.ndim)]
    blocks = []
    for sl in sample_slices(var.shape, full_chunk):
        block = np.asarray(var[sl].values).astype(cv.dtype, copy=False)
        blocks.append(block)
    return blocks


def _sample(
    ds: xr.Dataset, cv: CubeVar, prof: Profile
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """The sample's blocks, the same as the writer encodes them (edge chunks padded),
    and the share of the variable's values the sample holds. Blocks of fill values only
    (which the writer does not encode) are left out unless all are."""
    raw = sample_blocks(ds, cv)
    pairs = [(b, chunk_as_written(b, cv, prof.name)) for b in raw]
    kept = [(b, c) for b, c in pairs if c is not None]
    share = sum(b.size for b in raw) / max(ds[cv.name].size, 1)
    if not kept:
        return raw, raw, share
    return [b for b, _ in kept], [c for _, c in kept if c is not None], share


def search(
    ds: xr.Dataset,
    cv: CubeVar,
    prof: Profile,
    target_psnr: float | None,
    target_bpppb: float | None,
    bounds: dict[Hashable, Any],
    searched: Searched,
    store_bpppb: float | None = None,
) -> tuple[float | None, int]:
    """The quality for one variable's target, from trial encodes of a sample; and the
    number of trials. May set a residual bound (in ``bounds``, the variable added to
    ``searched.bounds``) to reach a PSNR or a rate beyond what the video alone reaches.

    ``target_bpppb`` is the payload's share of the rate (store overhead taken off), of
    the store's ``store_bpppb``."""
    name = cv.name
    samples, coded, share = _sample(ds, cv, prof)
    whole = share >= 1

    def trial_of(bound: Any, measure: bool, wavelet: str | None = None) -> Callable[[float], Trial]:
        return make_trial(
            samples, prof, nodata=cv.codec_nodata, max_abs_error=bound, coded=coded,
            measure=measure, wavelet=wavelet,
        )  # fmt: skip

    # Under a bound the wavelet coding of a chunk does not depend on the video's quality:
    # the search looks for the video's best alone (with the choice in every trial its
    # bytes would be flat where the wavelet wins, and the search lost there), and the
    # write compares that with the wavelet coding.
    video_only = "off" if prof.wavelet != "off" else None

    if target_psnr is not None:
        # a sample that is the whole cube measures the cube's PSNR itself; one that
        # holds most of it, nearly
        margin = max(PSNR_MARGIN * (1 - share), 0.01)
        quality, made = quality_for_psnr(
            trial_of(bounds.get(name), True), prof, target_psnr, margin
        )
        searched.sample_psnrs[name] = tuple(
            (t.quality, t.psnr) for t in made if math.isfinite(t.psnr)
        )
        if not any(t.psnr >= target_psnr for t in made):
            # beyond what the codec's bit depth reaches: a residual layer with the
            # bound that uniform errors of that PSNR would have carries the rest
            bounds[name] = bounds_for_psnr(samples, target_psnr + PSNR_MARGIN, cv.codec_nodata)
            searched.bounds.add(name)
            quality, more = quality_for_bound(trial_of(bounds[name], False, video_only), prof)
            made += more
    elif target_bpppb is not None:
        # the payload of a whole-cube sample is exact: the tolerance is the store's
        tol = BPPPB_TOLERANCE
        if whole and store_bpppb is not None:
            tol = max(tol, BPPPB_STORE_TOLERANCE * store_bpppb / target_bpppb)
        trial = trial_of(bounds.get(name), False)
        quality, made = quality_for_bpppb(trial, prof, target_bpppb, tol)
        # out of reach, or reached only past the codec's knee (a store whose overhead was
        # underestimated then misses, and its payload would not shrink meaningfully)
        if (
            all(t.bpppb > target_bpppb * (1 + tol) for t in made)
            or before_the_floor(made).quality < quality
        ):
            searched.floored.add(name)
        finest = min(made, key=lambda t: t.quality)
        assert prof.quality is not None
        floor = prof.quality.video_floor
        short = finest.bpppb * (1 + tol) < target_bpppb
        if name not in bounds and finest.quality <= floor and short:
            # the video saturates at its finest quality (and a wavelet coder, where the
            # profile has one, spends no more below it, or not enough): a residual layer
            # spends the rest, its bound searched with the video at that quality
            level, top = bound_levels(samples, cv.codec_nodata)
            bound, more = bound_for_bpppb(
                lambda b: trial_of(b, False)(floor), level, top, target_bpppb, finest, prof.bits,
                tol,
            )  # fmt: skip
            bounds[name] = bound[0] if len(bound) == 1 else bound
            searched.bounds.add(name)
            kept = min(more, key=lambda t: abs(math.log(t.bpppb / target_bpppb)))
            searched.video_shares[name] = min(finest.bpppb / kept.bpppb, 1.0)
            quality = floor
            made += more
    elif name in bounds:
        quality, made = quality_for_bound(trial_of(bounds[name], False, video_only), prof)
    else:  # a bound given for other variables only: this one keeps the default
        return None, 0
    return quality, len(made)


def correct(
    prof: Any,
    quality: Mapping[Hashable, float | None],
    report: EncodeReport,
    target_psnr: float | None,
    target_bpppb: float | None,
    bounds: dict[Hashable, Any],
    searched: Searched,
    made: Sequence[
        tuple[Mapping[Hashable, float | None], Mapping[Hashable, Any], EncodeReport]
    ] = (),
) -> dict[Hashable, float | None] | None:
    """New qualities (and the bounds of ``searched.bounds``, in place) after a pass that
    missed or overshot; None when there is nothing to correct.

    ``made``: the qualities, bounds and reports of every pass so far (``report`` the
    last; by default that pass alone, at ``quality`` and ``bounds``). For a rate, a
    variable's next quality follows its passes (:func:`_next_quality`): between the two
    that bracket its aim, so that corrections close in on it even where bytes do not
    fall steadily with the quality."""
    new = dict(quality)
    if target_psnr is not None:
        for name, v in report.variables.items():
            q = quality[name]
            if q is None or v.psnr is None or not math.isfinite(v.psnr):
                # an exact pass (integers under a bound below 1: a uint8 scene asked for
                # 60 dB) gives no miss to scale by, and met the target
                continue
            if name in searched.bounds:
                # the residual's bound sets the PSNR: scale it by the miss
                if v.psnr < target_psnr or v.psnr > target_psnr + 0.5:
                    factor = 10 ** ((v.psnr - target_psnr - PSNR_MARGIN) / 20)
                    bounds[name] = tuple(b * factor for b in bounds[name])
                continue
            if target_psnr <= v.psnr <= target_psnr + PSNR_OVERSHOOT:
                continue
            passes = _video_psnrs(name, made or [(quality, bounds, report)])
            sample = searched.sample_psnrs.get(name, ())
            known = passes + _sample_at_cube_level(prof, sample, q, v.psnr, passes)
            bracket = psnr_bracket(known, target_psnr)
            per_db = _steps_per_db(prof, q, v.bpppb)
            if bracket is not None:
                # between the coarsest quality known to meet the target and the finest
                # known to miss it: near x265's finest qualities a step can move the PSNR
                # by 2 dB, and a chunk's layout can flip between two (ocean colour: 41.7
                # dB at crf 20.75, 36.8 at 21.25), where 2 steps a dB went past the
                # bracket and back
                meets, misses = bracket
                near = misses[0] - meets[0] <= PSNR_LINEAR_SPAN
                if meets[1] > target_psnr + PSNR_OVERSHOOT or near:
                    inside = psnr_inside(prof, bracket, target_psnr + PSNR_MARGIN,
                                         [t for t, _ in known])  # fmt: skip
                    meets = meets if inside is None else (inside, math.nan)
                # a quality a pass was made at is not encoded again (the pass is kept)
                new[name] = q if any(meets[0] == t for t, _ in passes) else meets[0]
            elif v.psnr < target_psnr:
                new[name] = _snap(prof, q - max((target_psnr - v.psnr) * per_db + 0.25, 0.25))
            else:
                new[name] = _snap(prof, q + (v.psnr - target_psnr - PSNR_MARGIN) * per_db)
        return new
    if target_bpppb is not None:
        payload = sum(v.payload_nbytes for v in report.variables.values())
        budget = target_bpppb * report.values / 8 - overhead(report)
        # within the promised +-10 %, another pass would cost a whole encode for little;
        # with a budget under a quarter of the payload, the store's overhead dominates the
        # rate beyond what any quality reaches
        if budget <= payload / 4 or abs(report.bpppb / target_bpppb - 1) <= BPPPB_CORRECT:
            return None
        aim = budget * 8 / report.values  # the payloads' bits per value
        for key, q in quality.items():
            got = report.variables.get(str(key))
            if got is None or not got.bpppb > 0:
                continue
            share = searched.video_shares.get(key)
            video = got.bpppb * share if share is not None and key in bounds else 0.0
            if q is not None and video > aim * (1 + BPPPB_CORRECT):
                # the video alone, at its finest quality, spends more than the aim on the
                # cube (the sample spent less: ocean colour, 84 % NaN, 0.23 bits per value
                # on the sample and 0.7 on the cube): no bound brings the rate down; the
                # residual goes, and the video is made coarser
                del bounds[key]
                new[key] = _snap(prof, q + math.log(video / aim) * 6 / math.log(2))
            elif key in searched.bounds and key in bounds:
                # the residual's bound sets the rate: about a bit per value per halving
                # where every value is valid, fewer where some are not; the passes'
                # own slope where two give it
                integer = np.dtype(got.dtype).kind in "iu"
                per_doubling = _bits_per_doubling(key, made or [(quality, bounds, report)])
                bounds[key] = _scaled(bounds[key], 2 ** ((got.bpppb - aim) / per_doubling), integer)
            elif q is not None:
                # bytes halve about every 6 crf steps in x265 and SVT-AV1
                new[key] = _next_quality(
                    prof, _video_rates(key, made or [(quality, bounds, report)], searched),
                    q, got.bpppb, aim, floored=key in searched.floored,
                )  # fmt: skip
        return new
    return None


def _video_psnrs(
    key: Hashable,
    made: Sequence[tuple[Mapping[Hashable, float | None], Mapping[Hashable, Any], EncodeReport]],
) -> list[tuple[float, float]]:
    """``(quality, PSNR)`` of variable ``key`` in each pass made (finite PSNRs only)."""
    out = []
    for qs, _, r in made:
        q, got = qs.get(key), r.variables.get(str(key))
        if q is not None and got is not None and got.psnr is not None and math.isfinite(got.psnr):
            out.append((q, got.psnr))
    return out


def _sample_at_cube_level(
    prof: Profile,
    sample: Sequence[tuple[float, float]],
    q: float,
    psnr: float,
    passes: Sequence[tuple[float, float]],
) -> list[tuple[float, float]]:
    """The sample's ``(quality, PSNR)`` trials shifted by what the cube got at ``q``
    (``psnr``) over what the sample got there (linear between the trials around it),
    less those at a quality a pass was made at; none where ``q`` lies outside the
    trials. The PSNR search's trials close in on the target, so they give the curve's
    shape where corrections look; the cube's level differs from the sample's by what
    the sample misses of it (ocean colour: +0.1 dB at 40, +0.5 at 60)."""
    points = sorted(sample)
    at = None
    for (q0, p0), (q1, p1) in itertools.pairwise(points):
        if q0 <= q <= q1 and q1 > q0:
            at = p0 + (p1 - p0) * (q - q0) / (q1 - q0)
            break
    exact = [p for t, p in points if _snap(prof, t) == _snap(prof, q)]
    at = exact[0] if exact else at
    if at is None:
        return []
    made = {_snap(prof, t) for t, _ in passes}
    return [(t, p + psnr - at) for t, p in points if _snap(prof, t) not in made]


def psnr_bracket(
    points: Sequence[tuple[float, float]], target: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Of ``(quality, PSNR)`` points, the coarsest that meets a PSNR ``target`` and the
    finest coarser than it that misses it; None without such a pair."""
    return _bracket(points, lambda psnr: psnr >= target, lambda psnr: psnr < target)


def psnr_inside(
    profile: Profile,
    bracket: tuple[tuple[float, float], tuple[float, float]],
    aim: float,
    tried: Sequence[float],
) -> float | None:
    """The quality (snapped) inside a PSNR ``bracket`` (:func:`psnr_bracket`) to try
    next for ``aim`` dB: PSNR linear in quality between the two, or the bracket's middle
    where that is a quality ``tried``; None once the middle is tried too, or where the
    end that meets the target does not reach the aim."""
    (qa, pa), (qb, pb) = bracket
    if pa <= aim:  # the end that meets the target is short of the aim already
        return None
    nq = qa + (pa - aim) * (qb - qa) / (pa - pb) if pa > pb else (qa + qb) / 2
    return _untried_inside(profile, (nq, (qa + qb) / 2), (qa, qb), tried)


def _untried_inside(
    profile: Profile,
    candidates: Sequence[float],
    ends: tuple[float, float],
    tried: Sequence[float],
) -> float | None:
    """The first of ``candidates``, snapped, that lies strictly between the snapped
    ``ends`` of a bracket and was not ``tried`` (as the encoder takes them: x265's
    constant-QP levels below 0 are whole, so that crf -1.5 codes as -2); None if none."""
    lo, hi = sorted(_snap(profile, e) for e in ends)
    done = {_snap(profile, t) for t in tried}
    for candidate in candidates:
        q = _snap(profile, candidate)
        if lo < q < hi and q not in done:
            return q
    return None


def _video_rates(
    key: Hashable,
    made: Sequence[tuple[Mapping[Hashable, float | None], Mapping[Hashable, Any], EncodeReport]],
    searched: Searched,
) -> list[tuple[float, float]]:
    """``(quality, payload bpppb)`` of variable ``key`` in each pass made; in a pass that
    added a searched residual, the video's estimated share of it
    (``searched.video_shares``)."""
    out = []
    for qs, bs, r in made:
        q, got = qs.get(key), r.variables.get(str(key))
        if q is None or got is None or not got.bpppb > 0:
            continue
        share = searched.video_shares.get(key, 1.0) if key in searched.bounds and key in bs else 1.0
        out.append((q, got.bpppb * share))
    return out


def _bits_per_doubling(
    key: Hashable,
    made: Sequence[tuple[Mapping[Hashable, float | None], Mapping[Hashable, Any], EncodeReport]],
) -> float:
    """The payload bits per value one doubling of variable ``key``'s residual bound saves,
    from the last two passes with different bounds: 1 where they do not give it (each
    halving of a bound adds about a bit per valid value), at least 1/16 (an ocean colour
    scene of 84 % NaN: 0.13 bits per value of the store)."""
    points = []
    for _, bs, r in made:
        got = r.variables.get(str(key))
        if key in bs and got is not None and got.bpppb > 0 and np.all(np.asarray(bs[key]) > 0):
            points.append((float(np.mean(np.log2(np.asarray(bs[key], dtype=float)))), got.bpppb))
    distinct = {round(level, 9): rate for level, rate in points}
    if len(distinct) < 2:
        return 1.0
    (l0, r0), (l1, r1) = list(distinct.items())[-2:]
    saved = (r0 - r1) / (l1 - l0)
    return min(max(saved, 1 / 16), 1.0) if math.isfinite(saved) and saved > 0 else 1.0


def _next_quality(
    prof: Profile,
    tried: Sequence[tuple[float, float]],
    q: float,
    rate: float,
    aim: float,
    floored: bool = False,
) -> float:
    """The quality to encode a variable at next for a payload of ``aim`` bits per value,
    from the passes' ``(quality, bpppb)`` points ``tried`` (the last at ``q``, ``rate``):
    inside the tightest bracket of the aim (:func:`rate_bracket`, :func:`inside_bracket`;
    ``q`` again once the bracket is a step wide), else halving the bytes every 6 steps
    from the last, as x265 and SVT-AV1 about do; no coarser than ``q`` where the search
    found the codec's knee there (``floored``).

    Not along the slope of two passes on one side of the aim: the curve bends (an ocean
    colour scene of 84 % NaN halved its bytes every 16 quality steps from -6 to 1.5,
    every 12 from 8 to 20 and every 6.5 from 20 to 31), and extrapolating it missed a
    0.1 bpppb target by 41 % that this rule met."""
    bracket = rate_bracket(tried, aim)
    if bracket is not None:
        inside = inside_bracket(prof, bracket, aim, [t for t, _ in tried])
        shifted = q if inside is None else inside
    else:
        shifted = _snap(prof, q + math.log(rate / aim) * 6 / math.log(2))
    return min(shifted, q) if floored else shifted


def _steps_per_db(prof: Profile, quality: float, bpppb: float | None) -> float:
    """Quality steps per dB of PSNR near ``quality`` (payload ``bpppb`` there): about 2
    on the video's scale near the targets users ask for; below the video's finest
    quality, where a wavelet coding's bytes double every
    :data:`eocube.profiles.WAVELET_STEPS_PER_DOUBLING` steps, a bit per value buying
    :data:`DB_PER_BIT` dB, fewer the more bits a value already has."""
    assert prof.quality is not None
    if quality >= prof.quality.video_floor or not bpppb or bpppb <= 0:
        return 2.0
    db_per_step = DB_PER_BIT * bpppb * math.log(2) / WAVELET_STEPS_PER_DOUBLING
    return min(2.0, 1 / db_per_step)


def _scaled(bound: float | tuple[float, ...], factor: float, integer: bool) -> Any:
    """A bound (one, or one per band) times ``factor``; floored for integer data."""

    def one(b: float) -> float:
        return float(math.floor(b * factor)) if integer else b * factor

    return tuple(one(b) for b in bound) if isinstance(bound, tuple) else one(bound)


@contextlib.contextmanager
def first_trials_ahead(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profile: Profile,
    control: Control,
    bounds: Mapping[Hashable, Any],
) -> Iterator[None]:
    """Encode the first trial of each ``target_bpppb`` search (the sample at the
    profile's default quality, where :func:`quality_for_bpppb` starts) on a thread while
    the block runs; inside :func:`eocube.encode.reuse_payloads` the search then takes
    those payloads instead of encoding them again.

    For the writer's estimate of the store overhead (xarray and zarr writing metadata,
    under the GIL), which the codec (outside it) overlaps. In-memory variables only (a
    sample read from a file or dask would be read twice). An error is left for the
    search to raise."""
    names = [n for n in cube_vars if in_memory(ds[n])]
    if profile.lossless or control.target_bpppb is None or not names:
        yield
        return

    def run() -> None:
        for name in names:
            cv = cube_vars[name]
            samples, coded, _ = _sample(ds, cv, profile)
            make_trial(
                samples, profile, nodata=cv.codec_nodata, max_abs_error=bounds.get(name),
                coded=coded, measure=False,
            )(_start(profile))  # fmt: skip

    with ThreadPoolExecutor(1, thread_name_prefix="eocube-trial") as pool:
        ahead = pool.submit(run)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                ahead.result()


def choose_qualities(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profile: Profile,
    control: Control,
    bounds: dict[Hashable, Any],
    overhead_bpppb: float = 0.0,
) -> tuple[dict[Hashable, float | None], Searched, int]:
    """The quality of each cube variable before the cube is encoded: the given crf, or
    the one the search finds on a sample for a target or a bound. Returns it, what
    else the search decided (:class:`Searched`: the bounds it set in ``bounds``), and
    the trials made.

    ``overhead_bpppb``: the store's bits per value outside the chunk payloads (an
    estimate), taken off a bpppb target to aim the payloads at."""
    crf = control.value if control.name == "crf" else None
    quality: dict[Hashable, float | None] = dict.fromkeys(cube_vars, crf)
    searched = Searched()
    trials = 0
    if not profile.lossless and control.searched:
        for name, cv in cube_vars.items():
            rate = control.target_bpppb
            if rate is not None:
                rate = max(rate - overhead_bpppb, rate / 4)
            quality[name], made = search(
                ds, cv, profile, control.target_psnr, rate, bounds, searched,
                control.target_bpppb,
            )  # fmt: skip
            trials += made
    return quality, searched, trials


def _psnrs(report: EncodeReport) -> str:
    return ", ".join(
        f"{name} {'-' if v.psnr is None else f'{v.psnr:.2f} dB'}"
        for name, v in report.variables.items()
    )


class Passes(Protocol):
    """How :func:`write_to_target` writes the cube (:mod:`eocube.passes`): each pass at the
    quality and bounds of the mappings given to it when the pass is made."""

    def first(self, mode: str) -> EncodeReport:
        """Write the store (in place), and its report."""
        ...

    def again(self, number: int) -> EncodeReport:
        """Encode correction pass ``number`` beside the store (staged), and its report."""
        ...

    def keep(self, number: int) -> EncodeReport:
        """Make pass ``number`` the store's (1: the one in place), drop the others; the
        report of the store."""
        ...


def write_to_target(
    passes: Passes,
    mode: str,
    profile: Profile,
    control: Control,
    quality: dict[Hashable, float | None],
    bounds: dict[Hashable, Any],
    searched: Searched,
) -> tuple[EncodeReport, int]:
    """Write the cube (``passes.first(mode)`` encodes it at ``quality`` and ``bounds``),
    then correct a missed target at most :data:`MAX_CORRECTIONS` times, keeping for a
    rate the pass closest to it (among those within +-10 %, where any is), for a PSNR
    the smallest pass that meets it (else the last). Returns the report
    of the pass kept and how many times the cube was encoded: at most
    ``1 + MAX_CORRECTIONS``, since keeping an earlier pass encodes nothing again.

    A correction that makes a variable coarser for a payload that no longer shrinks
    meaningfully (past the codec's knee, :data:`PAYLOAD_FLOOR_HALVING`) is undone, and
    the variable made no coarser again."""
    report = passes.first(mode)
    number = 1
    kept = [(number, dict(quality), dict(bounds), report)]  # the passes worth keeping
    targeted = control.target_psnr is not None or control.target_bpppb is not None
    made = [(dict(quality), dict(bounds), report)]  # every pass, at its settings
    for _ in range(MAX_CORRECTIONS if targeted else 0):
        old_quality, old_bounds, previous = dict(quality), dict(bounds), report
        proposal = correct(
            profile, quality, report, control.target_psnr, control.target_bpppb, bounds,
            searched, made,
        )  # fmt: skip
        if proposal is None or (proposal == quality and bounds == old_bounds):
            break
        logger.info(
            "%s=%s missed (%.4f bpppb, PSNR %s): encoding again at %s",
            control.name, control.value, report.bpppb, _psnrs(report), proposal,
        )  # fmt: skip
        quality.update(proposal)
        number += 1
        report = passes.again(number)
        made.append((dict(quality), dict(bounds), report))
        past = (
            past_the_knee(old_quality, quality, previous, report, searched)
            if control.target_bpppb is not None
            else set()
        )
        if past:
            searched.floored |= past
            quality.update({n: old_quality[n] for n in past})
            continue
        kept.append((number, dict(quality), dict(bounds), report))
    met = [k for k in kept if control.met_by(k[3])]
    if control.target_bpppb is not None:
        rate = control.target_bpppb
        keep = min(met or kept, key=lambda k: abs(math.log(k[3].bpppb / rate)))
    elif met:
        keep = min(met, key=lambda k: k[3].nbytes)
    else:
        keep = kept[-1]
    if keep[0] != 1:
        logger.info("%s: keeping pass %d (at %s)", control.name, keep[0], keep[1])
    quality.clear()
    quality.update(keep[1])
    bounds.clear()
    bounds.update(keep[2])
    report = passes.keep(keep[0])
    if not control.met_by(report):
        if control.target_bpppb is not None:
            warnings.warn(missed_rate(control.target_bpppb, report, bounds, searched), stacklevel=3)
        else:
            warnings.warn(f"target_psnr={control.value} missed: {report}", stacklevel=3)
    return report, number


def past_the_knee(
    before: Mapping[Hashable, float | None],
    after: Mapping[Hashable, float | None],
    previous: EncodeReport,
    report: EncodeReport,
    searched: Searched,
) -> set[Hashable]:
    """The variables a pass made coarser (``before`` to ``after``) whose payload shrank
    by less than a halving per :data:`PAYLOAD_FLOOR_HALVING` quality steps."""
    past = set()
    for name, q in after.items():
        q0 = before.get(name)
        if q is None or q0 is None or q <= q0 or name in searched.bounds:
            continue
        v0, v = previous.variables.get(str(name)), report.variables.get(str(name))
        if v0 is None or v is None:
            continue
        if v.payload_nbytes > v0.payload_nbytes * 2 ** (-(q - q0) / PAYLOAD_FLOOR_HALVING):
            past.add(name)
    return past


def missed_rate(
    target: float,
    report: EncodeReport,
    bounds: Mapping[Hashable, Any],
    searched: Searched,
) -> str:
    """One line on why a store misses its ``target_bpppb``: a cube stored losslessly
    that has nothing more to spend, a store whose overhead alone exceeds the target, or
    payloads that no longer shrink meaningfully."""
    outside = overhead(report) * 8 / report.values
    payload = report.bpppb - outside
    head = f"target_bpppb={target:g} missed: the store has {report.bpppb:.4f} bpppb"
    at = ", ".join(_crfs(report))
    exact = [
        str(n)
        for n in report.variables
        if n in searched.bounds and n in bounds and not np.any(bounds[n])
    ]
    if report.bpppb < target and exact:
        who = "the cube is" if len(exact) == len(report.variables) else f"{', '.join(exact)} are"
        return (
            f"{head}: {who} stored losslessly (error bound 0 on every value), nothing more to spend"
        )
    if report.bpppb > target and outside >= target:
        hint = (
            ""
            if PACKING_PREFIX in report.store
            else " (a packed store, written to a path ending in .zip, keeps about half as "
            "much outside the payloads: eocube.packed)"
        )
        return (
            f"{head}, of which {outside:.4f} is the store's overhead alone (metadata, "
            f"coordinates, chunk indexes), more than the target: the video payloads take "
            f"{payload:.4f} at {at}, where they no longer shrink meaningfully{hint}"
        )
    if report.bpppb > target and searched.floored:
        return (
            f"{head} ({outside:.4f} of it outside the video payloads): the payloads take "
            f"{payload:.4f} at {at}, where they no longer shrink meaningfully"
        )
    return (
        f"{head} ({outside:.4f} of it outside the video payloads; the payloads take "
        f"{payload:.4f} at {at})"
    )


def _crfs(report: EncodeReport) -> list[str]:
    """The qualities of a report's variables, as ``crf 12`` (with the error bound)."""
    out = []
    for v in report.variables.values():
        q = "crf -" if v.quality is None else f"crf {v.quality:g}"
        if v.error_bound is not None:
            e = v.error_bound if isinstance(v.error_bound, tuple) else (v.error_bound,)
            q += f" + residual bound {', '.join(f'{b:.3g}' for b in e)}"
        out.append(q if len(report.variables) == 1 else f"{v.name} {q}")
    return out
