"""Choosing the codec quality for a target: bits, PSNR, or a hard error bound.

Every search runs on a *sample* of at most :data:`SAMPLE_BLOCKS` chunk-shaped blocks of
the cube (spread over time and space), never on the whole cube, and makes at most
:data:`MAX_TRIALS` trial encodes of that sample. The writer then encodes the cube once
with the chosen quality, measures what it got, and corrects at most
:data:`MAX_CORRECTIONS` times (see :func:`eocube.to_eocube`): the whole cube is encoded
at most ``1 + MAX_CORRECTIONS`` times, and usually once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from eocube import metrics
from eocube.chunk import decode_chunk, encode_chunk
from eocube.profiles import Profile
from eocube.report import EncodeReport, overhead

if TYPE_CHECKING:
    from eocube.variables import CubeVar

CONTROLS = ("lossless", "crf", "target_bpppb", "target_psnr", "max_abs_error")
"""The quality controls of a write, of which one at most is given."""
SAMPLE_BLOCKS = 3
MAX_TRIALS = 7
MAX_CORRECTIONS = 2
PSNR_MARGIN = 0.15
"""dB aimed above a PSNR target on the sample, as the sample only estimates the cube."""


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
    """One trial encode of the sample at ``quality``."""

    quality: float
    nbytes: int
    values: int
    psnr: float
    max_abs_error: float

    @property
    def bpppb(self) -> float:
        """Payload bits per value of the sample."""
        return self.nbytes * 8 / self.values


def sample_slices(
    shape: Sequence[int], chunk: Sequence[int], count: int = SAMPLE_BLOCKS
) -> list[tuple[slice, ...]]:
    """Up to ``count`` chunk-aligned blocks spread along time, centred in space.

    ``shape`` and ``chunk`` are (T, B, Y, X) or (T, Y, X).
    """
    n_t = math.ceil(shape[0] / chunk[0])
    picks = sorted({round(i * (n_t - 1) / max(count - 1, 1)) for i in range(min(count, n_t))})
    out = []
    for ti in picks:
        sl = [slice(ti * chunk[0], min((ti + 1) * chunk[0], shape[0]))]
        for size, c in zip(shape[1:], chunk[1:], strict=True):
            n = math.ceil(size / c)
            mid = n // 2
            sl.append(slice(mid * c, min((mid + 1) * c, size)))
        out.append(tuple(sl))
    return out


def make_trial(
    blocks: Sequence[np.ndarray],
    profile: Profile,
    *,
    nodata: float | None = None,
    max_abs_error: float | Sequence[float] | None = None,
) -> Callable[[float], Trial]:
    """A function encoding the sample at a quality and measuring it."""

    def trial(quality: float) -> Trial:
        nbytes = values = 0
        originals, decodeds = [], []
        for block in blocks:
            payload = encode_chunk(
                block, profile, quality=quality, nodata=nodata, max_abs_error=max_abs_error
            )
            nbytes += len(payload)
            values += block.size
            originals.append(block.reshape(block.shape[0], -1, *block.shape[-2:]))
            decodeds.append(decode_chunk(payload).reshape(originals[-1].shape))

        # per band, all sample values side by side: (1, B, 1, N) for the metrics
        def per_band(blocks: list[np.ndarray]) -> np.ndarray:
            flat = [b.transpose(1, 0, 2, 3).reshape(b.shape[1], -1) for b in blocks]
            return np.concatenate(flat, axis=1)[None, :, None, :]

        orig4, dec4 = per_band(originals), per_band(decodeds)
        return Trial(
            quality=quality,
            nbytes=nbytes,
            values=values,
            psnr=metrics.psnr(orig4, dec4, nodata),
            max_abs_error=metrics.max_abs_error(orig4, dec4, nodata),
        )

    return trial


def _grid(profile: Profile) -> tuple[float, float]:
    assert profile.quality is not None
    return float(profile.quality.min), float(profile.quality.max)


def _snap(profile: Profile, q: float) -> float:
    assert profile.quality is not None
    step = profile.quality.step
    return float(min(max(round(q / step) * step, profile.quality.min), profile.quality.max))


def quality_for_psnr(
    trial: Callable[[float], Trial], profile: Profile, target: float
) -> tuple[float, list[Trial]]:
    """The largest quality value (fewest bits) whose sample PSNR reaches ``target + margin``.

    Bisection: PSNR falls as crf rises. Returns the quality and the trials made.
    """
    lo, hi = _grid(profile)
    trials: list[Trial] = []
    best = lo
    for _ in range(MAX_TRIALS):
        if hi - lo < profile.quality.step:  # type: ignore[union-attr]
            break
        mid = _snap(profile, (lo + hi) / 2)
        t = trial(mid)
        trials.append(t)
        if t.psnr >= target + PSNR_MARGIN:
            best, lo = mid, mid + profile.quality.step  # type: ignore[union-attr]
        else:
            hi = mid - profile.quality.step  # type: ignore[union-attr]
    return best, trials


def quality_for_bpppb(
    trial: Callable[[float], Trial], profile: Profile, target: float
) -> tuple[float, list[Trial]]:
    """The quality whose sample payload bpppb is closest to ``target`` (log scale).

    Secant steps on log(bytes) against quality (bytes halve about every 6 crf in x265
    and SVT-AV1), clamped to the profile's range.
    """
    lo, hi = _grid(profile)
    trials: list[Trial] = []
    q = _snap(profile, (lo + hi) / 3)
    for _ in range(MAX_TRIALS):
        t = trial(q)
        trials.append(t)
        if abs(math.log(t.bpppb / target)) < math.log(1.03):
            break
        pts = sorted(trials, key=lambda x: abs(math.log(x.bpppb / target)))[:2]
        if len(pts) == 2 and pts[0].quality != pts[1].quality:
            a, b = pts
            slope = (math.log(b.bpppb) - math.log(a.bpppb)) / (b.quality - a.quality)
            slope = slope if slope < -1e-3 else -math.log(2) / 6
            nq = a.quality + (math.log(target) - math.log(a.bpppb)) / slope
        else:
            nq = t.quality + math.log(t.bpppb / target) * 6 / math.log(2)
        nq = _snap(profile, nq)
        if any(x.quality == nq for x in trials):
            break
        q = nq
    best = min(trials, key=lambda x: abs(math.log(x.bpppb / target)))
    return best.quality, trials


def quality_for_bound(
    trial: Callable[[float], Trial], profile: Profile
) -> tuple[float, list[Trial]]:
    """The quality that minimises video plus residual bytes under a hard error bound.

    Bytes are roughly unimodal in crf (a coarse video leaves a large residual, a fine
    one costs video bits): golden-section search over the profile's range.
    """
    lo, hi = _grid(profile)
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
    while len(trials) < MAX_TRIALS and b - a > 2 * profile.quality.step:  # type: ignore[union-attr]
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = cost(d)
    best = min(trials.values(), key=lambda t: t.nbytes)
    return best.quality, list(trials.values())


def bounds_for_psnr(
    blocks: Sequence[np.ndarray], target: float, nodata: float | None = None
) -> tuple[float, ...]:
    """Per-band error bounds whose uniform errors would give ``target`` dB.

    Errors uniform in [-e, e] have MSE e²/3, so e = peak·√3·10^(-target/20) with the
    band's range in the sample as peak; the residual layer keeps every error within e,
    and errors the video makes smaller only raise the PSNR.
    """
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
    return tuple(float(p) * math.sqrt(3) * 10 ** (-target / 20) for p in peak)


def sample_blocks(ds: xr.Dataset, cv: CubeVar) -> list[np.ndarray]:
    var = xr.conventions.encode_cf_variable(ds[cv.name].variable)
    full_chunk = [cv.inner[i] for i in range(var.ndim)]
    blocks = []
    for sl in sample_slices(var.shape, full_chunk):
        block = np.asarray(var[sl].values).astype(cv.dtype, copy=False)
        blocks.append(block)
    return blocks


def search(
    ds: xr.Dataset,
    cv: CubeVar,
    prof: Profile,
    target_psnr: float | None,
    target_bpppb: float | None,
    bounds: dict[Hashable, Any],
    psnr_bounds: set[Hashable],
) -> tuple[float | None, int]:
    """The quality for one variable's target, from trial encodes of a sample; and the
    number of trials. May set a residual bound (in ``bounds``) to reach a PSNR."""
    name = cv.name
    samples = sample_blocks(ds, cv)
    trial = make_trial(samples, prof, nodata=cv.codec_nodata, max_abs_error=bounds.get(name))
    if target_psnr is not None:
        quality, made = quality_for_psnr(trial, prof, target_psnr)
        if not any(t.psnr >= target_psnr for t in made):
            # beyond what the codec's bit depth reaches: a residual layer with the
            # bound that uniform errors of that PSNR would have carries the rest
            bounds[name] = bounds_for_psnr(samples, target_psnr + PSNR_MARGIN, cv.codec_nodata)
            psnr_bounds.add(name)
            trial = make_trial(samples, prof, nodata=cv.codec_nodata, max_abs_error=bounds[name])
            quality, more = quality_for_bound(trial, prof)
            made += more
    elif target_bpppb is not None:
        quality, made = quality_for_bpppb(trial, prof, target_bpppb)
    elif name in bounds:
        quality, made = quality_for_bound(trial, prof)
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
    psnr_bounds: set[Hashable],
) -> dict[Hashable, float | None] | None:
    """New qualities (and PSNR-derived bounds, in place) after a pass that missed or
    overshot; None when there is nothing to correct."""
    new = dict(quality)
    if target_psnr is not None:
        for name, v in report.variables.items():
            q = quality[name]
            if q is None or v.psnr is None:
                continue
            if name in psnr_bounds:
                # the residual's bound sets the PSNR: scale it by the miss
                if v.psnr < target_psnr or v.psnr > target_psnr + 0.5:
                    factor = 10 ** ((v.psnr - target_psnr - PSNR_MARGIN) / 20)
                    bounds[name] = tuple(b * factor for b in bounds[name])
                continue
            # about 0.5 dB per crf step near the targets users ask for
            if v.psnr < target_psnr:
                new[name] = _snap(prof, q - max((target_psnr - v.psnr) * 2 + 0.25, 0.25))
            elif v.psnr > target_psnr + 0.5:
                new[name] = _snap(prof, q + (v.psnr - target_psnr - PSNR_MARGIN) * 2)
        return new
    if target_bpppb is not None:
        payload = sum(v.payload_nbytes for v in report.variables.values())
        budget = target_bpppb * report.values / 8 - overhead(report)
        if budget <= 0 or abs(math.log(report.bpppb / target_bpppb)) < math.log(1.03):
            return None
        # bytes halve about every 6 crf steps in x265 and SVT-AV1
        shift = math.log(payload / budget) * 6 / math.log(2)
        for key, q in quality.items():
            if q is not None:
                new[key] = _snap(prof, q + shift)
        return new
    return None


def choose_qualities(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profile: Profile,
    control: Control,
    bounds: dict[Hashable, Any],
) -> tuple[dict[Hashable, float | None], set[Hashable], int]:
    """The quality of each cube variable before the cube is encoded: the given crf, or
    the one the search finds on a sample for a target or a bound. Returns it, the
    variables whose bound was set to reach a PSNR (in ``bounds``), and the trials made."""
    crf = control.value if control.name == "crf" else None
    quality: dict[Hashable, float | None] = dict.fromkeys(cube_vars, crf)
    psnr_bounds: set[Hashable] = set()
    trials = 0
    if not profile.lossless and control.searched:
        for name, cv in cube_vars.items():
            quality[name], made = search(
                ds, cv, profile, control.target_psnr, control.target_bpppb, bounds, psnr_bounds
            )
            trials += made
    return quality, psnr_bounds, trials


def write_to_target(
    write: Callable[[str], EncodeReport],
    mode: str,
    profile: Profile,
    control: Control,
    quality: dict[Hashable, float | None],
    bounds: dict[Hashable, Any],
    psnr_bounds: set[Hashable],
) -> tuple[EncodeReport, int]:
    """Write the cube (``write(mode)`` encodes it at ``quality`` and ``bounds``), then
    correct a missed target at most :data:`MAX_CORRECTIONS` times, keeping the smallest
    write that meets it. Returns the last report and how many times the cube was encoded.
    """
    report = write(mode)
    passes = 1
    best = (dict(quality), dict(bounds), report) if control.met_by(report) else None
    targeted = control.target_psnr is not None or control.target_bpppb is not None
    for _ in range(MAX_CORRECTIONS if targeted else 0):
        old_bounds = dict(bounds)
        proposal = correct(
            profile, quality, report, control.target_psnr, control.target_bpppb, bounds,
            psnr_bounds,
        )  # fmt: skip
        if proposal is None or (proposal == quality and bounds == old_bounds):
            break
        quality.update(proposal)
        report = write("w")
        passes += 1
        if control.met_by(report) and (best is None or report.nbytes < best[2].nbytes):
            best = (dict(quality), dict(bounds), report)
    if best is not None and best[2] is not report:
        quality.update(best[0])
        bounds.update(best[1])
        report = write("w")
        passes += 1
    if not control.met_by(report):
        if control.target_bpppb is not None:
            warnings.warn(
                f"target_bpppb={control.value} missed: the store has {report.bpppb:.4f} "
                f"bpppb ({overhead(report) * 8 / report.values:.4f} of it outside the video "
                f"payloads)",
                stacklevel=3,
            )
        else:
            warnings.warn(f"target_psnr={control.value} missed: {report}", stacklevel=3)
    return report, passes
