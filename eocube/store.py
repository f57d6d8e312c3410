"""Writing cubes: :func:`to_eocube` and its :class:`EncodeReport`."""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.errors import ContainsArrayError, ContainsGroupError, UnstableSpecificationWarning
from zarr.storage import StorePath

from eocube import metrics, packing, ratecontrol
from eocube.chunk import encode_chunk
from eocube.codec import VideoCodec
from eocube.dims import ROLES, cube_roles
from eocube.errors import EocubeError, UnsupportedDataError
from eocube.linear import LinearCodec
from eocube.profiles import get_profile
from eocube.reader import MARKER, quiet_zarr
from eocube.storage import list_keys, payload_nbytes

FORMAT_VERSION = 1
DEFAULT_CHUNKS = {"time": 32, "y": 256, "x": 256}
"""Default chunk per role; bands always stay in one chunk."""
DENSE_TIME_CHUNK = 128
"""Default time chunk of series sampled daily or finer (hourly reanalysis): consecutive
steps differ little, so a longer group of pictures pays (+1.1 dB at 0.3 bpppb on hourly
ERA5 t2m against 32, benchmarks/results/rd/defaults.md); sparse satellite revisits gain
0.1 dB from 118 over 32 and keep 32, which reads one date faster."""
CHUNK_PIXELS = DEFAULT_CHUNKS["time"] * DEFAULT_CHUNKS["y"] * DEFAULT_CHUNKS["x"]
"""Pixels per band a default chunk holds at most. A short series (single scenes, a few
dates) spends this budget on space, in sides of 512 or 1024: a chunk still decodes in
the time of a default one, and the codec sees more of the scene. Against 256-px sides at
equal rate: +0.4 to +1.0 dB on single-date Sentinel-2 scenes, +0.3 dB on 2-step
ERA-Interim fields, +0.2 dB on Landsat 7 RGB; one 256-px tile of one date reads in 35-51
ms instead of 13-29 (benchmarks/results/rd/defaults.md, section 2b)."""
SPATIAL_SIDES = (1024, 512)
SHARD_CHUNKS = {"time": 16, "y": 4, "x": 4}
"""Chunks per shard along each role, at most (so a cube is a handful of objects)."""

# CF/xarray encoding that describes values and must survive the round trip;
# the rest (netCDF4 compression settings, source paths) describes the input file.
_KEPT_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


@dataclass(frozen=True)
class VariableReport:
    """Size and quality of one cube variable.

    ``psnr`` and ``max_abs_error`` follow :mod:`eocube.metrics` (valid values only);
    ``error_bound`` is the ``max_abs_error`` asked for, if any; ``quality`` the crf used.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    profile: str
    quality: float | None
    payload_nbytes: int
    bpppb: float
    psnr: float | None = None
    psnr_per_band: tuple[float, ...] | None = None
    max_abs_error: float | None = None
    max_abs_error_per_band: tuple[float, ...] | None = None
    error_bound: float | tuple[float, ...] | None = None


@dataclass(frozen=True)
class EncodeReport:
    """What :func:`to_eocube` wrote.

    Attributes
    ----------
    store : str
        Where it was written.
    nbytes : int
        Bytes of every object of the store (metadata, coordinates, indexes included).
    original_nbytes : int
        Bytes of the cube variables in their original dtype.
    values : int
        Number of values (T·B·Y·X summed over cube variables).
    bpppb : float
        ``nbytes`` × 8 / ``values``.
    compression_ratio : float
        ``original_nbytes / nbytes``.
    variables : dict of str to VariableReport
        Per cube variable: payload bytes, bpppb of its payload, and when measured
        PSNR (DESIGN.md definition) and max abs error.
    seconds : float
        Wall time of the whole call.
    control : str
        The quality control used (``crf``, ``target_psnr``, ...).
    passes : int
        Times the cube was encoded (1, or more when a target was corrected).
    trials : int
        Trial encodes of the sample made by the search.
    """

    store: str
    nbytes: int
    original_nbytes: int
    values: int
    bpppb: float
    compression_ratio: float
    variables: dict[str, VariableReport] = field(default_factory=dict)
    seconds: float = 0.0
    control: str = "default"
    passes: int = 1
    trials: int = 0

    def __str__(self) -> str:
        lines = [
            f"{self.store}: {self.nbytes} bytes, {self.bpppb:.4f} bpppb, "
            f"ratio {self.compression_ratio:.1f}, {self.seconds:.1f} s "
            f"({self.control}, {self.passes} pass(es), {self.trials} trial encodes)",
            f"  {'variable':16s} {'profile':20s} {'crf':>6s} {'payload B':>10s} {'bpppb':>8s} "
            f"{'PSNR dB':>8s} {'max err':>10s}",
        ]
        for v in self.variables.values():
            psnr = "-" if v.psnr is None else f"{v.psnr:.2f}"
            err = "-" if v.max_abs_error is None else f"{v.max_abs_error:.4g}"
            crf = "-" if v.quality is None else f"{v.quality:g}"
            lines.append(
                f"  {v.name:16s} {v.profile:20s} {crf:>6s} {v.payload_nbytes:10d} "
                f"{v.bpppb:8.4f} {psnr:>8s} {err:>10s}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON)."""
        return asdict(self)


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "data")
    raise TypeError(f"to_eocube takes an xarray Dataset or DataArray, not {type(obj).__name__}")


CATEGORICAL_MAX_VALUES = 32
"""An integer variable whose sampled valid values take at most this many distinct values
is a class map or bit field (a QA band without CF flag attributes): stored losslessly."""
_CATEGORICAL_SAMPLE_DATES = 8
_CATEGORICAL_SAMPLE_SIDE = 256


def _has_flag_attributes(var: xr.DataArray) -> bool:
    return any(k in var.attrs for k in ("flag_values", "flag_masks", "flag_meanings"))


def _few_integer_values(var: xr.DataArray, roles: Mapping[str, Hashable]) -> bool:
    """Whether a sample of an integer variable takes few distinct values (a class map)."""
    if np.dtype(var.encoding.get("dtype", var.dtype)).kind not in "iu":
        return False
    # a few dates spread over the series, a window of each: reflectance shows thousands
    # of values there, while a cloudy first date alone could look like a mask
    index: dict[Hashable, slice] = {}
    if "time" in roles:
        size = var.sizes[roles["time"]]
        index[roles["time"]] = slice(None, None, max(1, size // _CATEGORICAL_SAMPLE_DATES))
    for role in ("y", "x"):
        index[roles[role]] = slice(0, _CATEGORICAL_SAMPLE_SIDE)
    sample = np.asarray(var.isel(index).values)
    nodata = _nodata(var)
    if nodata is not None:
        sample = sample[sample != nodata]
    if sample.size < 4 * CATEGORICAL_MAX_VALUES:
        return False
    return np.unique(sample).size <= CATEGORICAL_MAX_VALUES


def _nodata(var: xr.DataArray) -> float | None:
    for value in (var.attrs.get("nodata"), var.encoding.get("_FillValue")):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


def _is_dense_series(var: xr.DataArray, dim: Hashable) -> bool:
    """Whether ``dim`` is a datetime coordinate with a median step of one day or less."""
    coord = var.coords.get(dim)
    if coord is None or coord.size < 2 or coord.dtype.kind != "M":
        return False
    steps = np.diff(coord.values).astype("timedelta64[s]").astype(np.int64)
    return bool(0 < np.median(np.abs(steps)) <= 86400)


def _time_default(var: xr.DataArray, dim: Hashable) -> int:
    return DENSE_TIME_CHUNK if _is_dense_series(var, dim) else DEFAULT_CHUNKS["time"]


def _spatial_default(
    var: xr.DataArray, roles: Mapping[str, Hashable], requested: Mapping[Hashable, Any]
) -> int:
    """The default y and x chunk: the largest side that keeps :data:`CHUNK_PIXELS`."""
    dim = roles["time"]
    steps = requested.get(dim, requested.get("time", _time_default(var, dim)))
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps <= 0:
        return DEFAULT_CHUNKS["y"]  # _chunk_shape names the bad request
    steps = min(int(steps), var.sizes[dim])
    for side in SPATIAL_SIDES:
        if steps * side * side <= CHUNK_PIXELS:
            return side
    return DEFAULT_CHUNKS["y"]


def _chunk_shape(
    var: xr.DataArray, roles: Mapping[str, Hashable], chunks: Mapping[Hashable, int] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    requested = dict(chunks or {})
    inner, shard = [], []
    spatial = _spatial_default(var, roles, requested)
    for role, dim in roles.items():
        size = var.sizes[dim]
        if role == "band":
            if requested.get(dim, requested.get("band", size)) != size:
                raise ValueError(
                    f"variable {var.name!r}: all bands stay in one chunk ({dim}={size})"
                )
            inner.append(size)
            shard.append(size)
            continue
        default = _time_default(var, dim) if role == "time" else spatial
        c = requested.get(dim, requested.get(role, default))
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise ValueError(
                f"variable {var.name!r}: chunks for {dim!r} must be one integer, got {c!r}; "
                f"eocube stores regular chunks (the last one may be shorter). An irregularly "
                f"chunked dask array needs no chunks= at all: it is rechunked as it is written"
            )
        c = int(c)
        if c <= 0:
            raise ValueError(
                f"variable {var.name!r}: chunk size for {dim} must be positive, got {c}"
            )
        c = min(c, size)
        inner.append(c)
        shard.append(c * min(SHARD_CHUNKS[role], math.ceil(size / c)))
    return tuple(inner), tuple(shard)


def _store_path(
    store: Any, storage_options: Mapping[str, Any] | None, mode: Literal["r", "r+"] = "r"
) -> StorePath:
    options = dict(storage_options) if storage_options else None
    return zarr.open_group(store, mode=mode, zarr_format=3, storage_options=options).store_path


@dataclass(frozen=True)
class _CubeVar:
    """What the writer needs to know of one cube variable."""

    name: Hashable
    roles: Mapping[str, Hashable]
    inner: tuple[int, ...]
    shard: tuple[int, ...]
    dtype: np.dtype  # as stored, after CF encoding
    fill: float | int
    codec_nodata: float | None
    nodata: float | None  # in the user's data, for metrics


P = ParamSpec("P")
R = TypeVar("R")


def _quietly(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with quiet_zarr():
            return fn(*args, **kwargs)

    return wrapper


@_quietly
def to_eocube(
    obj: xr.Dataset | xr.DataArray,
    store: Any,
    *,
    profile: str | None = None,
    lossless: bool = False,
    crf: float | None = None,
    target_bpppb: float | None = None,
    target_psnr: float | None = None,
    max_abs_error: float | Sequence[float] | Mapping[Hashable, Any] | None = None,
    chunks: Mapping[Hashable, int] | None = None,
    dims: Mapping[str, Hashable] | None = None,
    variables: Sequence[Hashable] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    mode: str = "w-",
    resume: bool = False,
    progress: bool = False,
    measure: bool = True,
    per_array_metadata: bool = False,
) -> EncodeReport:
    """Write a cube to an eocube store (zarr v3, video-coded chunks inside shards).

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Cube variables are those with dims (time, band, y, x) or (time, y, x) (also
        spelled lat/lon, latitude/longitude, bands, variable...). All other variables
        and every coordinate are stored losslessly (zstd).
    store : str, os.PathLike, or zarr store
        A path or fsspec URL (``file://``, ``memory://``, ``s3://``, ``hf://``...).
    profile : str, optional
        Codec profile (``eocube profiles`` lists them). Default: ``hevc-12bit-444``,
        or ``ffv1-lossless`` with ``lossless=True``.
    lossless : bool
        Bit-exact storage (integer data only).
    crf : float, optional
        The lossy profile's quality; lower is better and bigger.
    target_bpppb : float, optional
        Bits per pixel per band of the whole store (every byte, metadata included):
        lands within ±10 %.
    target_psnr : float, optional
        PSNR (dB, DESIGN.md definition) every cube variable reaches, with as few bits
        as the search finds.
    max_abs_error : float, sequence, or mapping, optional
        Hard bound on the absolute error of every valid value, in data units: one
        number, one per band, or a mapping of variable name to either. Guaranteed by
        a residual layer over the video.
    chunks : mapping, optional
        Chunk size per dim (or role: time, y, x); bands always stay in one chunk.
        Default: 32 time steps × 256 × 256 px; 128 time steps for series sampled
        daily or finer (see :data:`DENSE_TIME_CHUNK`); series of 8 steps or fewer
        get 512 × 512 px, of 2 or 1 steps 1024 × 1024 (see :data:`CHUNK_PIXELS`).
    dims : mapping, optional
        Role (time, band, y, x) to dim name, overriding the recognised spellings.
    variables : sequence, optional
        The variables to encode as video; default: every cube variable except
        categorical ones: CF ``flag_values``/``flag_masks``/``flag_meanings``, or an
        integer variable beside other cube variables with at most
        :data:`CATEGORICAL_MAX_VALUES` distinct values in a sample (a QA bit field).
        Others are stored losslessly.
    storage_options : mapping, optional
        Passed to fsspec.
    mode : {"w-", "w"}
        ``"w-"`` refuses to overwrite an existing store; ``"w"`` overwrites.
    resume : bool
        Finish a write that was interrupted: shards already written (and intact) are
        kept, the missing ones encoded. Re-run with the same data and arguments. A
        store whose write completed is left as it is and reported. Until a write
        completes, the store is marked incomplete and readers refuse it.
    progress : bool
        Show a progress bar (dask) while encoding.
    measure : bool
        Read the store back to report PSNR and max abs error per variable (always
        done for ``target_psnr`` and ``target_bpppb``).
    per_array_metadata : bool
        Also keep a ``zarr.json`` per array. By default all metadata lives in the
        root ``zarr.json`` (consolidated), which zarr-python and xarray read in one
        request; readers that open arrays by path without the group need this.

    Returns
    -------
    EncodeReport

    Notes
    -----
    Exactly one of ``lossless``, ``crf``, ``target_bpppb``, ``target_psnr`` and
    ``max_abs_error`` may be given. The targets are searched on a sample of at most
    three chunks per variable, with at most seven trial encodes of that sample
    (:mod:`eocube.ratecontrol`); the cube is then encoded once, measured, and
    re-encoded at most twice to correct a miss (``report.passes`` says how often).

    The values are encoded by dask tasks of one chunk each and written by one task per
    shard, so a dask-backed cube larger than memory encodes with memory bounded by a
    few chunks per worker thread; with a ``dask.distributed`` ``Client`` in scope the
    cluster's workers do it, writing shards to ``store`` (which they must all reach).
    """
    controls = {
        "lossless": lossless or None,
        "crf": crf,
        "target_bpppb": target_bpppb,
        "target_psnr": target_psnr,
        "max_abs_error": max_abs_error,
    }
    given = [k for k, v in controls.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} conflict: give one quality control")
    if mode not in ("w-", "w"):
        raise ValueError(f"mode must be 'w-' or 'w', got {mode!r}")
    for key in ("target_bpppb", "target_psnr"):
        value = controls[key]
        if value is not None and not (
            isinstance(value, int | float) and math.isfinite(value) and value > 0
        ):
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    ds = _as_dataset(obj)
    prof = get_profile(profile, lossless=lossless)
    if lossless and not prof.lossless:
        raise ValueError(f"lossless=True needs a lossless profile; {prof.name!r} is lossy")
    if given and not lossless and prof.lossless:
        raise ValueError(f"profile {prof.name!r} is lossless: it takes no {given[0]}")
    started = time.perf_counter()
    _check_dtypes(ds)
    cube_vars = _cube_variables(ds, dims, variables, chunks)
    if prof.lossless:
        for name, cv in cube_vars.items():
            if cv.dtype.kind == "f":
                raise UnsupportedDataError(
                    f"variable {name!r} is {cv.dtype}: profile {prof.name!r} (lossless) needs "
                    f"integer data. Bound the error of floats with max_abs_error= instead, "
                    f"or cast integer-valued data to an integer dtype first"
                )
    if resume:
        existing = _existing_store(store, storage_options)
        if existing is not None:
            resumed = _resume(ds, existing, cube_vars, progress, per_array_metadata)
            report = _report(
                ds,
                existing,
                cube_vars,
                prof.name,
                _stored_quality(existing, cube_vars),
                {},
                time.perf_counter() - started,
                measure,
            )
            return replace(report, control="resume" if resumed else "complete")
    bounds = _bounds_per_variable(max_abs_error, cube_vars, ds)

    quality: dict[Hashable, float | None] = dict.fromkeys(cube_vars, crf)
    psnr_bounds: set[Hashable] = set()  # bounds set to reach a PSNR target, not by the user
    trials = 0
    if not prof.lossless and (target_psnr is not None or bounds or target_bpppb is not None):
        for name, cv in cube_vars.items():
            samples = _sample(ds, cv)
            trial = ratecontrol.make_trial(
                samples, prof, nodata=cv.codec_nodata, max_abs_error=bounds.get(name)
            )
            if target_psnr is not None:
                quality[name], made = ratecontrol.quality_for_psnr(trial, prof, target_psnr)
                if not any(t.psnr >= target_psnr for t in made):
                    # beyond what the codec's bit depth reaches: a residual layer with the
                    # bound that uniform errors of that PSNR would have carries the rest
                    bounds[name] = ratecontrol.bounds_for_psnr(
                        samples, target_psnr + ratecontrol.PSNR_MARGIN, cv.codec_nodata
                    )
                    psnr_bounds.add(name)
                    trial = ratecontrol.make_trial(
                        samples, prof, nodata=cv.codec_nodata, max_abs_error=bounds[name]
                    )
                    quality[name], more = ratecontrol.quality_for_bound(trial, prof)
                    made += more
            elif bounds:
                quality[name], made = ratecontrol.quality_for_bound(trial, prof)
            else:
                assert target_bpppb is not None
                quality[name], made = ratecontrol.quality_for_bpppb(trial, prof, target_bpppb)
            trials += len(made)

    def write(mode_now: str) -> EncodeReport:
        t0 = time.perf_counter()
        store_path = _write(
            ds,
            store,
            cube_vars,
            prof.name,
            quality,
            bounds,
            mode_now,
            storage_options,
            progress,
            per_array_metadata,
        )
        needs_metrics = measure or target_psnr is not None
        return _report(
            ds,
            store_path,
            cube_vars,
            prof.name,
            quality,
            bounds,
            time.perf_counter() - t0,
            needs_metrics,
        )

    def meets(rep: EncodeReport) -> bool:
        if target_psnr is not None:
            return all(v.psnr is not None and v.psnr >= target_psnr for v in rep.variables.values())
        if target_bpppb is not None:
            return abs(rep.bpppb / target_bpppb - 1) <= 0.1
        return True

    report = write(mode)
    passes = 1
    best = (dict(quality), dict(bounds), report) if meets(report) else None
    for _ in range(ratecontrol.MAX_CORRECTIONS if target_psnr or target_bpppb else 0):
        old_bounds = dict(bounds)
        proposal = _correct(prof, quality, report, target_psnr, target_bpppb, bounds, psnr_bounds)
        if proposal is None or (proposal == quality and bounds == old_bounds):
            break
        quality.update(proposal)
        report = write("w")
        passes += 1
        if meets(report) and (best is None or report.nbytes < best[2].nbytes):
            best = (dict(quality), dict(bounds), report)
    if best is not None and best[2] is not report:
        quality.update(best[0])
        bounds.update(best[1])
        report = write("w")
        passes += 1
    if target_bpppb is not None and not meets(report):
        warnings.warn(
            f"target_bpppb={target_bpppb} missed: the store has {report.bpppb:.4f} bpppb "
            f"({_overhead(report) * 8 / report.values:.4f} of it outside the video payloads)",
            stacklevel=2,
        )
    if target_psnr is not None and not meets(report):
        warnings.warn(f"target_psnr={target_psnr} missed: {report}", stacklevel=2)
    final_path = _store_path(store, storage_options, "r+")
    _record_quality(final_path, report)
    nbytes = _prefix_nbytes(final_path)  # the recorded quality is part of the store
    return replace(
        report,
        nbytes=nbytes,
        bpppb=nbytes * 8 / report.values,
        compression_ratio=report.original_nbytes / nbytes,
        seconds=time.perf_counter() - started,
        passes=passes,
        trials=trials,
        control=given[0] if given else "default",
    )


def _overhead(report: EncodeReport) -> int:
    return report.nbytes - sum(v.payload_nbytes for v in report.variables.values())


def _correct(
    prof: Any,
    quality: Mapping[Hashable, float | None],
    report: EncodeReport,
    target_psnr: float | None,
    target_bpppb: float | None,
    bounds: dict[Hashable, Any],
    psnr_bounds: set[Hashable],
) -> dict[Hashable, float | None] | None:
    """New qualities (and PSNR-derived bounds, in place) after a pass that missed or overshot."""
    new = dict(quality)
    if target_psnr is not None:
        for name, v in report.variables.items():
            q = quality[name]
            if q is None or v.psnr is None:
                continue
            if name in psnr_bounds:
                # the residual's bound sets the PSNR: scale it by the miss
                if v.psnr < target_psnr or v.psnr > target_psnr + 0.5:
                    factor = 10 ** ((v.psnr - target_psnr - ratecontrol.PSNR_MARGIN) / 20)
                    bounds[name] = tuple(b * factor for b in bounds[name])
                continue
            # about 0.5 dB per crf step near the targets users ask for
            if v.psnr < target_psnr:
                new[name] = _clamp(prof, q - max((target_psnr - v.psnr) * 2 + 0.25, 0.25))
            elif v.psnr > target_psnr + 0.5:
                new[name] = _clamp(prof, q + (v.psnr - target_psnr - ratecontrol.PSNR_MARGIN) * 2)
        return new
    if target_bpppb is not None:
        payload = sum(v.payload_nbytes for v in report.variables.values())
        budget = target_bpppb * report.values / 8 - _overhead(report)
        if budget <= 0 or abs(math.log(report.bpppb / target_bpppb)) < math.log(1.03):
            return None
        # bytes halve about every 6 crf steps in x265 and SVT-AV1
        shift = math.log(payload / budget) * 6 / math.log(2)
        for key, q in quality.items():
            if q is not None:
                new[key] = _clamp(prof, q + shift)
        return new
    return None


def _clamp(prof: Any, q: float) -> float:
    assert prof.quality is not None
    step = prof.quality.step
    return float(min(max(round(q / step) * step, prof.quality.min), prof.quality.max))


def _cube_variables(
    ds: xr.Dataset,
    dims: Mapping[str, Hashable] | None,
    variables: Sequence[Hashable] | None,
    chunks: Mapping[Hashable, int] | None,
) -> dict[Hashable, _CubeVar]:
    found: dict[Hashable, _CubeVar] = {}
    absent = {r: d for r, d in (dims or {}).items() if d not in ds.dims}
    if absent:
        raise ValueError(
            f"dims= names {absent}, not dims of the dataset: {sorted(map(str, ds.dims))}"
        )
    if variables is not None:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise ValueError(f"variables {missing} are not in the dataset: {list(ds.data_vars)}")
    categorical = set()
    if variables is None:
        # class maps and bit flags must not go through a lossy codec; the sampled guess
        # only sets aside a variable that sits beside others (a QA band next to the
        # data), never the only one
        flagged = {n for n, v in ds.data_vars.items() if _has_flag_attributes(v)}
        candidates = {
            n: r
            for n, v in ds.data_vars.items()
            if n not in flagged and (r := cube_roles(v, dims)) is not None
        }
        guessed = set()
        if len(candidates) > 1:  # a lone variable is never set aside: no sample to read
            guessed = {n for n, r in candidates.items() if _few_integer_values(ds[n], r)}
        categorical = flagged | (guessed if candidates.keys() - guessed else set())
    for name, var in ds.data_vars.items():
        roles = cube_roles(var, dims)
        if variables is not None and name not in variables:
            continue
        if name in categorical:
            continue
        if roles is None:
            if variables is not None:
                raise ValueError(
                    f"variable {name!r} has dims {var.dims}; a cube variable needs "
                    f"(time, band, y, x) or (time, y, x) (pass dims= to name them)"
                )
            continue
        empty = [str(d) for d in var.dims if var.sizes[d] == 0]
        if empty:
            raise UnsupportedDataError(
                f"variable {name!r} has no values along {', '.join(empty)} (size 0): "
                f"nothing to encode; select a non-empty range or drop the variable"
            )
        inner, shard = _chunk_shape(var, roles, chunks)
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        _check_cube_dtype(name, dtype)
        nodata = _nodata(var)
        if dtype.kind == "f":
            fill: float | int = math.nan
            codec_nodata = nodata
        else:
            # the fill value is treated as missing, so edge-chunk padding is cropped off
            # before coding (eocube.chunk); real values equal to it come back from the mask
            fill = int(nodata) if nodata is not None else int(np.iinfo(dtype).max)
            codec_nodata = float(fill)
        found[name] = _CubeVar(name, roles, inner, shard, dtype, fill, codec_nodata, nodata)
    if not found:
        have = "; ".join(f"{n!r} has {tuple(map(str, v.dims))}" for n, v in ds.data_vars.items())
        raise ValueError(
            "no cube variable found: a cube variable has dims (time, band, y, x) or "
            f"(time, y, x), and {have or 'the dataset has no data variables'}. Select or "
            "stack extra dims (ds.isel(level=0), or stack them into the band dim), or pass "
            "dims={'time': ..., 'band': ..., 'y': ..., 'x': ...} to name them"
        )
    if chunks:
        cube_dims = {d for cv in found.values() for d in cv.roles.values()}
        unknown = [str(k) for k in chunks if k not in cube_dims | set(ROLES)]
        if unknown:
            raise ValueError(
                f"chunks names {unknown}, which are neither dims of the cube variables "
                f"({sorted(map(str, cube_dims))}) nor roles (time, band, y, x)"
            )
    return found


# what to cast each dtype that eocube cannot encode to, and why
_CASTS = {
    "int8": ("int16", "the same values"),
    "float16": ("float32", "the same values"),
    "uint32": ("int32", "if the values fit; else float64"),
    "int64": ("int32", "if the values fit; else float64"),
    "uint64": ("int32", "if the values fit; else float64"),
}


def _check_cube_dtype(name: Hashable, dtype: np.dtype) -> None:
    if dtype in packing.SUPPORTED_DTYPES:
        return
    to, why = _CASTS.get(dtype.name, ("float32", "or float64 for more precision"))
    raise UnsupportedDataError(
        f"variable {name!r} has dtype {dtype}, which eocube cannot encode as video "
        f"(it encodes {', '.join(map(str, packing.SUPPORTED_DTYPES))}): cast it first, "
        f"e.g. ds[{name!r}] = ds[{name!r}].astype({to!r}) ({why}), or leave it out of "
        f"variables= to store it losslessly with zstd"
    )


def _bounds_per_variable(
    bound: Any, cube_vars: Mapping[Hashable, _CubeVar], ds: xr.Dataset
) -> dict[Hashable, float | tuple[float, ...]]:
    if bound is None:
        return {}
    if isinstance(bound, Mapping):
        unknown = set(bound) - set(cube_vars)
        if unknown:
            raise ValueError(f"max_abs_error names {sorted(map(str, unknown))}, not cube variables")
        per_var = dict(bound)
    else:
        per_var = dict.fromkeys(cube_vars, bound)
    out: dict[Hashable, float | tuple[float, ...]] = {}
    for name, value in per_var.items():
        var = ds[name]
        if "scale_factor" in var.encoding or "add_offset" in var.encoding:
            raise ValueError(
                f"variable {name!r}: max_abs_error cannot be guaranteed through CF packing "
                f"(scale_factor/add_offset adds its own rounding); drop that encoding first"
            )
        bands = var.sizes[cube_vars[name].roles["band"]] if "band" in cube_vars[name].roles else 1
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            parsed: float | tuple[float, ...] = float(value)
            check = [float(value)]
        else:
            parsed = tuple(float(v) for v in value)
            check = list(parsed)
            if len(parsed) != bands:
                raise ValueError(
                    f"variable {name!r}: max_abs_error has {len(parsed)} values for {bands} bands"
                )
        if not all(math.isfinite(v) and v >= 0 for v in check):
            raise ValueError(
                f"variable {name!r}: max_abs_error must be finite and >= 0, got {value!r}"
            )
        out[name] = parsed
    return out


def _sample(ds: xr.Dataset, cv: _CubeVar) -> list[np.ndarray]:
    var = xr.conventions.encode_cf_variable(ds[cv.name].variable)
    full_chunk = [cv.inner[i] for i in range(var.ndim)]
    blocks = []
    for sl in ratecontrol.sample_slices(var.shape, full_chunk):
        block = np.asarray(var[sl].values).astype(cv.dtype, copy=False)
        blocks.append(block)
    return blocks


def _write(
    ds: xr.Dataset,
    store: Any,
    cube_vars: Mapping[Hashable, _CubeVar],
    profile: str,
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    mode: str,
    storage_options: Mapping[str, Any] | None,
    progress: bool,
    per_array_metadata: bool,
) -> StorePath:
    out = ds.copy(deep=False)
    encoding: dict[Hashable, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out.variables[name]
        kept = {k: v for k, v in var.encoding.items() if k in _KEPT_ENCODING}
        var.encoding = {}
        # every chunk carries a checksum (4 bytes): damaged coordinates must raise
        # CorruptChunkError on read, not decode to other dates or positions
        if var.ndim == 1 and var.dtype.kind in "iufM":
            # regular axes (pixel centres, dates) cost two numbers
            kept.update(serializer=LinearCodec(), compressors=[ZstdCodec(level=19), Crc32cCodec()])
        elif name not in cube_vars:
            kept.update(compressors=[ZstdCodec(level=9), Crc32cCodec()])
        encoding[name] = kept
    for name, cv in cube_vars.items():
        encoding[name].update(
            chunks=cv.inner,
            shards=cv.shard,
            serializer=VideoCodec(
                profile=profile,
                quality=quality[name],
                nodata=cv.codec_nodata,
                max_abs_error=bounds.get(name),
            ),
            compressors=[Crc32cCodec()],
            fill_value=cv.fill,
        )
        # xarray creates the array (metadata, CF attributes) from this lazy variable but
        # does not write its values: _cube_tasks does, chunk by chunk (see there)
        out[name] = ds[name].chunk(dict(zip(ds[name].dims, cv.shard, strict=True)))

    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    out.attrs = dict(out.attrs)
    out.attrs[MARKER] = {"format": FORMAT_VERSION, "complete": False}
    with warnings.catch_warnings(), zarr.config.set({"json_indent": None}):
        # fixed-length strings (band names) and consolidated metadata are not yet in the
        # zarr v3 spec; zarr-python reads both, and so does eocube
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        try:
            writer = out.to_zarr(
                store,
                mode="w" if mode == "w" else "w-",
                storage_options=dict(storage_options) if storage_options else None,
                zarr_format=3,
                consolidated=True,
                encoding=encoding,
                compute=False,
            )
        except (ContainsGroupError, ContainsArrayError, FileExistsError) as exc:
            raise FileExistsError(f"{store} already exists; pass mode='w' to overwrite it") from exc
        # `writer` would store each cube variable a whole shard per task (the shard in
        # memory, twice or more): it is dropped. The other lazy variables go through xarray.
        del writer
        tasks: list[Any] = []
        rest = out.drop_vars(list(cube_vars))
        lazy = [n for n, v in rest.variables.items() if v.chunks is not None]
        if lazy:
            tasks.append(
                rest[lazy].to_zarr(
                    store,
                    mode="r+",
                    storage_options=dict(storage_options) if storage_options else None,
                    zarr_format=3,
                    consolidated=False,
                    compute=False,
                )
            )
        store_path = _store_path(store, storage_options, "r+")
        group = zarr.open_group(store_path, mode="r+", zarr_format=3)
        for name, cv in cube_vars.items():
            arr = group[str(name)]
            assert isinstance(arr, zarr.Array)
            tasks.extend(_cube_tasks(ds, name, cv, arr))
        _compute(tasks, progress)
    if not per_array_metadata:
        _drop_per_array_metadata(store_path)
    _mark_complete(store_path)
    return store_path


def _report(
    ds: xr.Dataset,
    store_path: StorePath,
    cube_vars: Mapping[Hashable, _CubeVar],
    profile: str,
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    seconds: float,
    measure: bool,
) -> EncodeReport:
    group = zarr.open_group(store_path, mode="r", zarr_format=3)
    nbytes = _prefix_nbytes(store_path)
    values = sum(ds[n].size for n in cube_vars)
    original = sum(ds[n].size * ds[n].dtype.itemsize for n in cube_vars)
    reopened = None
    if measure:
        from eocube.backend import open_dataset

        reopened = open_dataset(store_path)
    reports = {}
    for name, cv in cube_vars.items():
        var = ds[name]
        payload = payload_nbytes(group, str(name))
        rep: dict[str, Any] = {}
        if reopened is not None:
            stats = _measure(var, reopened[name], cv)
            rep = {
                "psnr": stats.psnr(),
                "psnr_per_band": tuple(float(p) for p in stats.psnr_per_band()),
                "max_abs_error": stats.max_abs_error(),
                "max_abs_error_per_band": tuple(float(e) for e in stats.max_error),
            }
        bound = bounds.get(name)
        reports[str(name)] = VariableReport(
            name=str(name),
            shape=tuple(var.shape),
            dtype=str(var.dtype),
            profile=profile,
            quality=quality[name],
            payload_nbytes=payload,
            bpppb=metrics.bpppb(payload, var.shape),
            error_bound=bound,
            **rep,
        )
    if reopened is not None:
        reopened.close()
    return EncodeReport(
        store=str(store_path),
        nbytes=nbytes,
        original_nbytes=int(original),
        values=int(values),
        bpppb=nbytes * 8 / values,
        compression_ratio=original / nbytes if nbytes else math.inf,
        variables=reports,
        seconds=seconds,
    )


def _as_tbyx(a: np.ndarray, cv: _CubeVar) -> np.ndarray:
    return a if "band" in cv.roles else a[:, None]


def _measure(original: xr.DataArray, decoded: xr.DataArray, cv: _CubeVar) -> metrics.ErrorStats:
    """Error statistics chunk by chunk, so memory stays bounded whatever the cube's size."""
    import itertools

    counts = [math.ceil(n / s) for n, s in zip(original.shape, cv.inner, strict=True)]
    stats = None
    for idx in itertools.product(*(range(c) for c in counts)):
        region = {
            dim: slice(i * s, (i + 1) * s)
            for dim, i, s in zip(original.dims, idx, cv.inner, strict=True)
        }
        piece = metrics.ErrorStats.of(
            _as_tbyx(np.asarray(original.isel(region).values), cv),
            _as_tbyx(np.asarray(decoded.isel(region).values), cv),
            cv.nodata,
        )
        stats = piece if stats is None else stats.merge(piece)
    assert stats is not None
    return stats


def _drop_per_array_metadata(store_path: StorePath) -> None:
    root = store_path.path.rstrip("/")
    root_doc = f"{root}/zarr.json" if root else "zarr.json"
    store = store_path.store
    for key in list_keys(store, root):
        if key.endswith("zarr.json") and key != root_doc:
            zarr.core.sync.sync(store.delete(key))


def _prefix_nbytes(store_path: StorePath) -> int:
    return int(zarr.core.sync.sync(store_path.store.getsize_prefix(store_path.path)))


__all__ = ["EncodeReport", "EocubeError", "VariableReport", "to_eocube"]


def _check_dtypes(ds: xr.Dataset) -> None:
    for name, var in ds.data_vars.items():
        kind = var.dtype.kind
        if kind in "cbOMmSUV":
            what = {
                "c": "complex",
                "b": "bool",
                "O": "object",
                "M": "datetime64",
                "m": "timedelta64",
                "S": "bytes",
                "U": "string",
                "V": "structured",
            }[kind]
            todo = {
                "c": "store its real and imaginary parts as two variables (.real, .imag)",
                "b": f"cast it to uint8 (ds[{name!r}].astype('uint8'), then lossless=True "
                "keeps it exact)",
                "M": "store it as numbers, e.g. float64 days since an epoch",
                "m": "store it as numbers, e.g. float64 seconds",
            }.get(kind, "convert it to numbers or drop it (ds.drop_vars)")
            raise UnsupportedDataError(
                f"variable {name!r} has {'an' if what[0] in 'aeiou' else 'a'} {what} dtype "
                f"({var.dtype}), which eocube cannot store: {todo}"
            )


def _validate_block(
    block: np.ndarray,
    name: Hashable,
    profile: str,
    block_info: Any = None,
    *,
    chunk: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Checks on one chunk of a cube variable, in the encode task itself (no extra pass)."""
    where = ""
    if chunk is not None:
        where = f", chunk {chunk}"
    elif block_info and None in block_info:
        where = f", block at {tuple(s[0] for s in block_info[None]['array-location'])}"
    if block.dtype.kind == "f" and np.isinf(block).any():
        raise UnsupportedDataError(
            f"variable {name!r}{where} holds infinite values: replace them with NaN "
            f"(missing) or finite values before encoding"
        )
    try:
        packing.check_dtype(block.dtype)
    except UnsupportedDataError as exc:
        raise UnsupportedDataError(f"variable {name!r}: {exc}") from None
    prof = get_profile(profile)
    if prof.lossless and block.dtype.kind in "iu" and block.size:
        b4 = block if block.ndim == 4 else block[:, None]
        span = b4.max(axis=(0, 2, 3)).astype(np.int64) - b4.min(axis=(0, 2, 3)).astype(np.int64)
        widest = int(span.max())
        if widest > (1 << prof.bits) - 1:
            raise UnsupportedDataError(
                f"variable {name!r}{where}: a band spans {widest} values, which needs "
                f"{math.ceil(math.log2(widest + 1))} bits; profile {prof.name!r} holds "
                f"{prof.bits} bits losslessly ("
                + (
                    "use ffv1-lossless for up to 16 bits)"
                    if prof.bits < 16
                    else "no profile holds more: encode it lossy with max_abs_error=, or "
                    "split its range over two variables)"
                )
            )
    return block


def _mark_complete(store_path: StorePath) -> None:
    group = zarr.open_group(store_path, mode="r+", zarr_format=3)
    found = group.attrs.get(MARKER)
    marker: dict[str, Any] = dict(found) if isinstance(found, Mapping) else {}
    marker.update(format=FORMAT_VERSION, complete=True)
    with zarr.config.set({"json_indent": None}):
        group.update_attributes({MARKER: marker})


def _record_quality(store_path: StorePath, report: EncodeReport) -> None:
    """Keep the measured quality in the store, for ``eocube info`` and catalogs."""
    measured = {
        name: {
            "psnr": _finite_or_str(v.psnr),
            "max_abs_error": _finite_or_str(v.max_abs_error),
            "payload_bpppb": v.bpppb,
            "error_bound": list(v.error_bound)
            if isinstance(v.error_bound, tuple)
            else v.error_bound,
        }
        for name, v in report.variables.items()
        if v.psnr is not None
    }
    if not measured:
        return
    group = zarr.open_group(store_path, mode="r+", zarr_format=3)
    found = group.attrs.get(MARKER)
    marker: dict[str, Any] = dict(found) if isinstance(found, Mapping) else {}
    marker["quality"] = measured
    with zarr.config.set({"json_indent": None}):
        group.update_attributes({MARKER: marker})


def _finite_or_str(value: float | None) -> float | str | None:
    # JSON has no inf: an exact (lossless) PSNR is recorded as the string "inf"
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _existing_store(store: Any, storage_options: Mapping[str, Any] | None) -> StorePath | None:
    try:
        return _store_path(store, storage_options, "r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def _stored_quality(
    store_path: StorePath, cube_vars: Mapping[Hashable, _CubeVar]
) -> dict[Hashable, float | None]:
    group = zarr.open_group(store_path, mode="r", zarr_format=3)
    out: dict[Hashable, float | None] = {}
    for name in cube_vars:
        arr = group[str(name)]
        assert isinstance(arr, zarr.Array)
        codec = arr.serializer
        out[name] = getattr(codec, "quality", None)
    return out


def _shard_intact(data: bytes, per_shard: int) -> bool:
    import google_crc32c

    size = per_shard * 16 + 4
    if len(data) < size:
        return False
    index, crc = data[-size:-4], data[-4:]
    if np.uint32(google_crc32c.value(index)).tobytes() != crc:
        return False
    entries = np.frombuffer(index, "<u8").reshape(per_shard, 2)
    present = entries[:, 1] != np.uint64(2**64 - 1)
    ends = entries[present, 0] + entries[present, 1]
    return bool(np.all(ends <= len(data) - size))


def _resume(
    ds: xr.Dataset,
    store_path: StorePath,
    cube_vars: Mapping[Hashable, _CubeVar],
    progress: bool,
    per_array_metadata: bool,
) -> bool:
    """Write the missing shards of an interrupted store; False if it was complete."""
    import itertools

    group = zarr.open_group(store_path, mode="r+", zarr_format=3)
    marker = group.attrs.get(MARKER)
    if not isinstance(marker, dict):
        raise FileExistsError(f"{store_path} exists and is not an eocube store; pass mode='w'")
    if marker.get("complete"):
        return False
    store = store_path.store
    tasks: list[Any] = []
    for name, cv in cube_vars.items():
        try:
            arr = group[str(name)]
        except KeyError:
            raise ValueError(
                f"{store_path}: the interrupted write has no variable {name!r}; "
                f"it was started with other arguments: pass mode='w' to start over"
            ) from None
        assert isinstance(arr, zarr.Array)
        if arr.shape != ds[name].shape or arr.chunks != cv.inner or arr.shards != cv.shard:
            raise ValueError(
                f"{store_path}: variable {name!r} was started with shape {arr.shape}, chunks "
                f"{arr.chunks} and shards {arr.shards}, not {ds[name].shape}, {cv.inner}, "
                f"{cv.shard}: pass mode='w' to start over"
            )
        per_shard = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
        counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
        missing = []
        for idx in itertools.product(*(range(c) for c in counts)):
            key = _object_key(arr, idx)
            data = zarr.core.sync.sync(store.get(key, prototype=default_buffer_prototype()))
            if data is None or not _shard_intact(data.to_bytes(), per_shard):
                missing.append(idx)
        if missing:
            tasks.extend(_cube_tasks(ds, name, cv, arr, missing))
    _compute(tasks, progress)
    if not per_array_metadata:
        _drop_per_array_metadata(store_path)
    _mark_complete(store_path)
    return True


def _compute(tasks: Sequence[Any], progress: bool) -> None:
    import dask

    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            dask.compute(*tasks)
    else:
        dask.compute(*tasks)


def _object_key(arr: zarr.Array, shard: Sequence[int]) -> str:
    key = arr.metadata.encode_chunk_key(tuple(shard))
    path = arr.store_path.path.rstrip("/")
    return f"{path}/{key}" if path else key


def _cube_tasks(
    ds: xr.Dataset,
    name: Hashable,
    cv: _CubeVar,
    arr: zarr.Array,
    shards: Sequence[Sequence[int]] | None = None,
) -> list[Any]:
    """Dask tasks writing the shards of a cube variable (all, or those given).

    One task per chunk encodes it to its payload (video and checksum: a few hundred kB
    to a few MB), and one task per shard assembles the shard object from its payloads
    and writes it. A task holds one chunk, never a whole shard, so memory stays bounded
    by a few chunks per worker thread whatever the shard or cube size, and the chunks
    of one shard encode in parallel (on a cluster, on several workers).
    """
    import itertools

    import dask

    codec = arr.serializer
    if not isinstance(codec, VideoCodec):
        raise ValueError(f"array {arr.path!r} is not video-coded ({codec})")
    var = ds[name].chunk(dict(zip(ds[name].dims, cv.inner, strict=True)))
    data = xr.conventions.encode_cf_variable(var.variable).data
    if data.dtype != cv.dtype:
        data = data.astype(cv.dtype)
    blocks = data.to_delayed()
    per = [s // c for s, c in zip(cv.shard, cv.inner, strict=True)]
    if shards is None:
        counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
        shards = list(itertools.product(*(range(c) for c in counts)))
    encode = dask.delayed(_encode_payload)
    write = dask.delayed(_write_shard)
    tasks: list[Any] = []
    for shard in shards:
        payloads: list[Any] = []
        for local in itertools.product(*(range(p) for p in per)):
            idx = tuple(s * p + i for s, p, i in zip(shard, per, local, strict=True))
            inside = all(i < n for i, n in zip(idx, blocks.shape, strict=True))
            payloads.append(encode(blocks[idx], codec, cv, idx) if inside else None)
        tasks.append(write(arr, tuple(shard), payloads))
    return tasks


def _encode_payload(
    block: np.ndarray, codec: VideoCodec, cv: _CubeVar, chunk: tuple[int, ...]
) -> bytes | None:
    """One chunk as zarr stores it inside a shard (eocube.video, then crc32c); None if
    it holds nothing but the fill value (zarr writes no such chunk either)."""
    import google_crc32c

    block = _validate_block(np.asarray(block), cv.name, codec.profile, chunk=chunk)
    if block.shape != cv.inner:  # an edge chunk: zarr pads it with the fill value
        padded = np.full(cv.inner, cv.fill, dtype=block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    empty = np.isnan(block).all() if isinstance(cv.fill, float) else (block == cv.fill).all()
    if empty:
        return None
    payload = encode_chunk(
        np.ascontiguousarray(block),
        codec.profile,
        quality=codec.quality,
        nodata=codec.nodata,
        max_abs_error=codec.max_abs_error,
    )
    return payload + np.uint32(google_crc32c.value(payload)).tobytes()


def _write_shard(arr: zarr.Array, shard: tuple[int, ...], payloads: list[bytes | None]) -> None:
    """Write one shard object: its chunks' payloads, then zarr's index of (offset, length)
    per chunk in C order (all ones for absent chunks) and the index's crc32c."""
    import google_crc32c

    index = np.full((len(payloads), 2), 2**64 - 1, dtype="<u8")
    parts, offset = [], 0
    for i, payload in enumerate(payloads):
        if payload is not None:
            index[i] = (offset, len(payload))
            parts.append(payload)
            offset += len(payload)
    store = arr.store_path.store
    key = _object_key(arr, shard)
    if not parts:  # only fill values: no object, as zarr does (and none left from before)
        if zarr.core.sync.sync(store.exists(key)):
            zarr.core.sync.sync(store.delete(key))
        return
    raw = index.tobytes()
    data = b"".join([*parts, raw, np.uint32(google_crc32c.value(raw)).tobytes()])
    zarr.core.sync.sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
