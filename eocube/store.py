"""Writing cubes: :func:`to_eocube` and its :class:`EncodeReport`."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ParamSpec, TypeVar

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath

from eocube import layout, metrics, packing, ratecontrol
from eocube.chunk import encode_chunk
from eocube.codec import VideoCodec
from eocube.dims import ROLES, check_dims_argument, recognise
from eocube.errors import EocubeError, UnsupportedDataError
from eocube.layout import MARKER, STAGING, STORE_FORMAT
from eocube.linear import LinearCodec
from eocube.profiles import Profile, get_profile
from eocube.reader import quiet_zarr

FORMAT_VERSION = STORE_FORMAT
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
"""Chunks per shard along each role, at most (so a cube is a handful of objects). Encoded
chunks wait in the store's staging area until their shard is written, so an interrupted
write loses at most the chunks being encoded, whatever the shard size."""
OTHER_CHUNK_BYTES = 16 * 2**20
"""Largest chunk of a variable stored losslessly (zstd) that shares no dims with a cube."""
FINGERPRINT_CHUNKS = 8
"""Chunks per cube variable whose values are hashed into the fingerprint that resume
checks (spread over the chunk grid; all of them in smaller cubes)."""

# CF/xarray encoding that describes values and must survive the round trip;
# the rest (netCDF4 compression settings, source paths) describes the input file.
_KEPT_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")
# errors that mean the data or the arguments are refused: the store started is removed
_REFUSALS = (EocubeError, ValueError, TypeError)


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
        PSNR (docs/format.md, "Metrics") and max abs error.
    seconds : float
        Wall time of the whole call.
    control : str
        The quality control used (``crf``, ``target_psnr``, ...).
    passes : int
        Times the cube was encoded (1, or more when a target was corrected).
    trials : int
        Trial encodes of the sample made by the search.
    stored_losslessly : dict of str to str
        The other data variables, stored losslessly with zstd, and why each is not
        coded as video (not a cube by its dims, or a categorical layer).
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
    stored_losslessly: dict[str, str] = field(default_factory=dict)

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
        for name, why in self.stored_losslessly.items():
            lines.append(f"  {name:16s} stored losslessly (zstd): {why}")
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


def _distinct_integer_values(var: xr.DataArray, roles: Mapping[str, Hashable]) -> int | None:
    """Distinct valid values in a sample of an integer variable; None if not integer or
    the sample is too small to tell a class map from data."""
    if np.dtype(var.encoding.get("dtype", var.dtype)).kind not in "iu":
        return None
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
        return None
    return int(np.unique(sample).size)


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
    """Inner chunk and shard shape of a cube variable, in (time, [band,] y, x) order."""
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


@dataclass(frozen=True)
class _CubeVar:
    """What the writer needs to know of one cube variable."""

    name: Hashable
    roles: Mapping[str, Hashable]  # role -> dim, in (time, [band,] y, x) order
    dims: tuple[Hashable, ...]  # the variable's dims as given (maybe in another order)
    inner: tuple[int, ...]  # in (time, [band,] y, x) order, as stored
    shard: tuple[int, ...]
    dtype: np.dtype  # as stored, after CF encoding
    fill: float | int
    codec_nodata: float | None
    nodata: float | None  # in the user's data, for metrics

    @property
    def order(self) -> tuple[Hashable, ...]:
        """The dims as stored: (time, [band,] y, x)."""
        return tuple(self.roles.values())

    @property
    def transposed(self) -> bool:
        """Whether the variable is stored in another order than given."""
        return self.order != self.dims


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
        Cube variables are those whose dims are time, band, y and x, or time, y and x,
        in any order and under common names (lat/lon, latitude/longitude, bands,
        date...), or recognised by their coordinates' CF ``axis`` or ``standard_name``
        (see :mod:`eocube.dims`). They are stored as (time, band, y, x) and read back
        in their own order. All other variables and every coordinate are stored
        losslessly (zstd); the report says which and why.
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
        PSNR (dB, docs/format.md "Metrics") every cube variable reaches, with as few
        bits as the search finds.
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
        Role (time, band, y, x) to dim name, for dims eocube does not recognise.
    variables : sequence, optional
        The variables to encode as video; default: every cube variable except
        categorical ones: CF ``flag_values``/``flag_masks``/``flag_meanings``, or an
        integer variable beside other cube variables with at most
        :data:`CATEGORICAL_MAX_VALUES` distinct values in a sample (a QA bit field).
        Others are stored losslessly.
    storage_options : mapping, optional
        Passed to fsspec.
    mode : {"w-", "w"}
        ``"w-"`` refuses to write over anything. ``"w"`` replaces an eocube store (or
        fills an empty folder); any other folder or file is refused, and so is a path
        that holds the input.
    resume : bool
        Finish a write that was interrupted: chunks already encoded are kept, the
        missing ones encoded. The store records a fingerprint of the input and settings
        (shapes, dtypes, coordinates, the values of a few chunks, the quality control):
        resuming with another input or other settings is refused. A store whose write
        completed is left as it is and reported. Until a write completes, no zarr
        reader can open the store (its metadata carries a field readers must refuse).
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

    Raises
    ------
    FileExistsError
        When ``store`` exists and ``mode``/``resume`` do not allow writing there.
    UnsupportedDataError
        For data eocube cannot store (the message names the variable and what to do);
        the store this call started is removed.

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
    Each encoded chunk is kept in the store's staging area until its shard is written,
    so an interrupted write loses only the chunks being encoded.
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
    cube_vars, others = _cube_variables(ds, dims, variables, chunks)
    if prof.lossless:
        for name, cv in cube_vars.items():
            if cv.dtype.kind == "f":
                raise UnsupportedDataError(
                    f"variable {name!r} is {cv.dtype}: profile {prof.name!r} (lossless) needs "
                    f"integer data. Bound the error of floats with max_abs_error= instead, "
                    f"or cast integer-valued data to an integer dtype first"
                )
    bounds = _bounds_per_variable(max_abs_error, cube_vars, ds)
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    target = layout.inspect_target(store, storage_options)
    _check_not_holding_the_input(ds, store, target)
    ds = _canonical(ds, cube_vars)
    control = given[0] if given else "default"
    settings = {"profile": prof.name, control: _plain(controls.get(control))}
    fingerprint = _fingerprint(ds, cube_vars, settings)
    if resume and target.kind == "eocube":
        return _resume(
            ds,
            store,
            target,
            cube_vars,
            others,
            fingerprint,
            storage_options,
            progress,
            per_array_metadata,
            measure,
            started,
        )
    _check_target(store, target, mode, resume)

    quality: dict[Hashable, float | None] = dict.fromkeys(cube_vars, crf)
    psnr_bounds: set[Hashable] = set()  # bounds set to reach a PSNR target, not by the user
    trials = 0
    if not prof.lossless and (target_psnr is not None or bounds or target_bpppb is not None):
        for name, cv in cube_vars.items():
            quality[name], made = _search(
                ds, cv, prof, target_psnr, target_bpppb, bounds, psnr_bounds
            )
            trials += made

    fresh = target.kind == "absent"
    write_args = (ds, store, cube_vars, prof.name, quality, bounds)

    def write(mode_now: str) -> EncodeReport:
        t0 = time.perf_counter()
        path = _write(
            *write_args,
            mode_now,
            storage_options,
            progress,
            per_array_metadata,
            fingerprint,
            fresh,
        )
        needs_metrics = measure or target_psnr is not None
        return _report(
            ds,
            path,
            cube_vars,
            others,
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
    path = layout.store_path(store, storage_options)
    _record_quality(path, report)
    nbytes = _prefix_nbytes(path)  # the recorded quality is part of the store
    return replace(
        report,
        nbytes=nbytes,
        bpppb=nbytes * 8 / report.values,
        compression_ratio=report.original_nbytes / nbytes,
        seconds=time.perf_counter() - started,
        passes=passes,
        trials=trials,
        control=control,
    )


def _search(
    ds: xr.Dataset,
    cv: _CubeVar,
    prof: Profile,
    target_psnr: float | None,
    target_bpppb: float | None,
    bounds: dict[Hashable, Any],
    psnr_bounds: set[Hashable],
) -> tuple[float | None, int]:
    """The quality for one variable's target, from trial encodes of a sample; and the
    number of trials. May set a residual bound (in ``bounds``) to reach a PSNR."""
    name = cv.name
    samples = _sample(ds, cv)
    trial = ratecontrol.make_trial(
        samples, prof, nodata=cv.codec_nodata, max_abs_error=bounds.get(name)
    )
    if target_psnr is not None:
        quality, made = ratecontrol.quality_for_psnr(trial, prof, target_psnr)
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
            quality, more = ratecontrol.quality_for_bound(trial, prof)
            made += more
    elif target_bpppb is not None:
        quality, made = ratecontrol.quality_for_bpppb(trial, prof, target_bpppb)
    elif name in bounds:
        quality, made = ratecontrol.quality_for_bound(trial, prof)
    else:  # a bound given for other variables only: this one keeps the default
        return None, 0
    return quality, len(made)


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
) -> tuple[dict[Hashable, _CubeVar], dict[str, str]]:
    """The cube variables to code as video, and the other data variables with the reason
    each is stored losslessly."""
    check_dims_argument(dims)
    absent = {r: d for r, d in (dims or {}).items() if d not in ds.dims}
    if absent:
        raise ValueError(
            f"dims= names {absent}, not dims of the dataset: {sorted(map(str, ds.dims))}"
        )
    if variables is not None:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise ValueError(
                f"variables= names {missing}, which are not in the dataset: {list(ds.data_vars)}"
            )
    recognised = {name: recognise(var, dims) for name, var in ds.data_vars.items()}
    others: dict[str, str] = {}
    if variables is None:
        # class maps and bit flags must not go through a lossy codec; the sampled guess
        # only sets aside a variable that sits beside others (a QA band next to the
        # data), never the only one
        for name, var in ds.data_vars.items():
            if _has_flag_attributes(var):
                others[str(name)] = "categorical (CF flag attributes)"
        candidates = {
            n: found.roles
            for n, found in recognised.items()
            if str(n) not in others and found.roles is not None
        }
        if len(candidates) > 1:  # a lone variable is never set aside: no sample to read
            guessed = {}
            for n, r in candidates.items():
                distinct = _distinct_integer_values(ds[n], r)
                if distinct is not None and distinct <= CATEGORICAL_MAX_VALUES:
                    guessed[n] = distinct
            if candidates.keys() - guessed.keys():
                for n, distinct in guessed.items():
                    others[str(n)] = (
                        f"categorical ({distinct} distinct integer values in a sample, "
                        f"at most {CATEGORICAL_MAX_VALUES}; name it in variables= to code "
                        f"it as video)"
                    )
    found_vars: dict[Hashable, _CubeVar] = {}
    for name, var in ds.data_vars.items():
        if variables is not None and name not in variables:
            others[str(name)] = "not named in variables="
            continue
        if str(name) in others:
            continue
        roles = recognised[name].roles
        if roles is None:
            why = recognised[name].reason
            if variables is not None:
                raise ValueError(
                    f"variable {name!r} is not a cube: {why}. A cube variable has dims "
                    f"time, band, y and x (or time, y and x) in any order: eocube recognises "
                    f"them by name ({_spellings()}) or by their coordinates' CF axis or "
                    f"standard_name; name them with dims={{'time': ..., 'band': ..., "
                    f"'y': ..., 'x': ...}}"
                )
            others[str(name)] = f"not a cube: {why}"
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
        found_vars[name] = _CubeVar(
            name, roles, tuple(var.dims), inner, shard, dtype, fill, codec_nodata, nodata
        )
    if not found_vars:
        have = "; ".join(f"{n!r} has {tuple(map(str, v.dims))}" for n, v in ds.data_vars.items())
        why = "; ".join(f"{n!r}: {r}" for n, r in others.items())
        raise ValueError(
            "no cube variable found: a cube variable has dims time, band, y and x (or time, "
            f"y and x) in any order, and {have or 'the dataset has no data variables'}"
            + (f" ({why})" if why else "")
            + ". Select or stack extra dims (ds.isel(level=0), or stack them into the band "
            "dim), or pass dims={'time': ..., 'band': ..., 'y': ..., 'x': ...} to name them"
        )
    if chunks:
        cube_dims = {d for cv in found_vars.values() for d in cv.roles.values()}
        unknown = [str(k) for k in chunks if k not in cube_dims | set(ROLES)]
        if unknown:
            raise ValueError(
                f"chunks= names {unknown}, which are neither dims of the cube variables "
                f"({sorted(map(str, cube_dims))}) nor roles (time, band, y, x)"
            )
    return found_vars, others


def _spellings() -> str:
    from eocube.dims import ALIASES

    return "; ".join(f"{role}: {', '.join(names[:4])}" for role, names in ALIASES.items())


def _canonical(ds: xr.Dataset, cube_vars: Mapping[Hashable, _CubeVar]) -> xr.Dataset:
    """``ds`` with every cube variable in (time, [band,] y, x) order (lazily)."""
    moved = {name: ds[name].transpose(*cv.order) for name, cv in cube_vars.items() if cv.transposed}
    return ds.assign(moved) if moved else ds


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
            if len(parsed) == 1:
                parsed = parsed[0]
            elif len(parsed) != bands:
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


# --- where the store goes ----------------------------------------------------------------


def _sources(ds: xr.Dataset) -> set[str]:
    found = {ds.encoding.get("source")}
    found |= {var.encoding.get("source") for var in ds.variables.values()}
    return {s for s in found if isinstance(s, str) and s}


def _check_not_holding_the_input(ds: xr.Dataset, store: Any, target: layout.TargetState) -> None:
    """Refuse a target that is, or holds, a file the cube is read from."""
    if target.kind == "absent":
        return
    root = layout.local_path(store)
    if root is None:
        return
    for source in sorted(_sources(ds)):
        found = layout.local_path(source)
        if found is not None and (found == root or found.startswith(root.rstrip(os.sep) + os.sep)):
            raise FileExistsError(
                f"{store} holds the input {source}: eocube never writes over a path that "
                f"holds its input; write to another path"
            )


def _check_target(store: Any, target: layout.TargetState, mode: str, resume: bool) -> None:
    """Refuse to write over anything but an eocube store (with mode='w') or an empty folder."""
    if target.kind in ("absent", "empty"):
        return
    if target.kind == "eocube":
        if mode == "w":
            return
        if target.complete:
            raise FileExistsError(
                f"{store} already exists; pass mode='w' to replace it (it is an eocube store)"
            )
        raise FileExistsError(
            f"{store} already exists; pass resume=True to finish its write, which did not "
            f"finish, or mode='w' to start over"
        )
    raise FileExistsError(
        f"{store} is {target.describe()}: eocube writes over nothing but its own stores "
        f"and empty folders, so it leaves it as it is; write to another path, or remove it "
        f"yourself"
    )


# --- the fingerprint that resume checks ----------------------------------------------------


def _plain(value: Any) -> Any:
    """A setting as JSON data (numbers, lists, mappings of str)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _digest(values: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{values.dtype.str}{values.shape}".encode())
    if values.dtype.kind == "O":
        h.update(repr(values.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _fingerprint(
    ds: xr.Dataset, cube_vars: Mapping[Hashable, _CubeVar], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """What identifies the input and settings of a write, cheaply: shapes, dtypes, dims,
    chunks, coordinates, and the values of up to :data:`FINGERPRINT_CHUNKS` chunks per
    variable (read from the source: a few chunks, not the cube)."""
    out: dict[str, Any] = {"settings": dict(settings), "variables": {}}
    for name, cv in cube_vars.items():
        var = ds[name]
        coords = {
            str(dim): _digest(np.asarray(var.coords[dim].values))
            for dim in cv.order
            if dim in var.coords
        }
        counts = [math.ceil(n / c) for n, c in zip(var.shape, cv.inner, strict=True)]
        grid = list(itertools.product(*(range(c) for c in counts)))
        samples = {}
        for i in _spread(len(grid), FINGERPRINT_CHUNKS):
            idx = grid[i]
            region = {
                dim: slice(k * c, (k + 1) * c)
                for dim, k, c in zip(cv.order, idx, cv.inner, strict=True)
            }
            samples[".".join(map(str, idx))] = _digest(np.asarray(var.isel(region).values))
        out["variables"][str(name)] = {
            "dims": [str(d) for d in cv.dims],
            "shape": list(var.shape),
            "dtype": str(var.dtype),
            "chunks": list(cv.inner),
            "shards": list(cv.shard),
            "coords": coords,
            "samples": samples,
        }
    return out


def _check_same_input(store: Any, recorded: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """Refuse to resume a write with another input or other settings, saying what differs."""
    differences = []
    old_settings, new_settings = recorded.get("settings", {}), now["settings"]
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            was = f"{key}={old_settings[key]!r}" if key in old_settings else f"no {key}"
            differences.append(
                f"it was started with {was}, this call has "
                + (f"{key}={new_settings[key]!r}" if key in new_settings else f"no {key}")
            )
    old_vars, new_vars = recorded.get("variables", {}), now["variables"]
    if set(old_vars) != set(new_vars):
        differences.append(
            f"it was started with the cube variables {sorted(old_vars)}, this call has "
            f"{sorted(new_vars)}"
        )
    for name in sorted(set(old_vars) & set(new_vars)):
        old, new = old_vars[name], new_vars[name]
        for key in ("dims", "shape", "dtype", "chunks", "shards"):
            if old.get(key) != new[key]:
                differences.append(
                    f"variable {name!r} was started with {key} {old.get(key)}, this call has "
                    f"{new[key]}"
                )
        changed = [
            d
            for d in sorted(set(old.get("coords", {})) | set(new["coords"]))
            if old.get("coords", {}).get(d) != new["coords"].get(d)
        ]
        if changed:
            differences.append(
                f"variable {name!r}: the coordinates of {', '.join(map(repr, changed))} differ "
                f"from those it was started with"
            )
        chunks = [k for k, v in new["samples"].items() if old.get("samples", {}).get(k) != v]
        if chunks:
            differences.append(
                f"variable {name!r}: the values of chunk {chunks[0]}"
                + (f" (and {len(chunks) - 1} more sampled)" if len(chunks) > 1 else "")
                + " differ from those it was started with"
            )
    if differences:
        raise ValueError(
            f"{store}: cannot resume: {'; '.join(differences)}. Resume with the same input "
            f"and settings, or pass mode='w' to start over"
        )


# --- writing -------------------------------------------------------------------------------


def _other_chunks(
    var: xr.Variable,
    name: Hashable,
    cube_vars: Mapping[Hashable, _CubeVar],
    *,
    coordinate: bool = False,
) -> tuple[int, ...] | None:
    """Chunks of a variable stored losslessly, the same whatever the input's own chunking.

    A data variable that shares dims with a cube variable (a QA layer) is chunked like
    the cube along them, so a window reads one of its chunks; anything else is one chunk
    up to :data:`OTHER_CHUNK_BYTES`, halved along its longest dim until it fits.
    """
    del name
    if var.ndim == 0:
        return None
    along: dict[Hashable, int] = {}
    for cv in cube_vars.values():
        for dim, size in zip(cv.order, cv.inner, strict=True):
            along.setdefault(dim, size)
    if not coordinate and any(dim in along for dim in var.dims):
        return tuple(min(along.get(d, n), n) for d, n in zip(var.dims, var.shape, strict=True))
    chunks = list(var.shape)
    while math.prod(chunks) * var.dtype.itemsize > OTHER_CHUNK_BYTES and max(chunks) > 1:
        longest = int(np.argmax(chunks))
        chunks[longest] = math.ceil(chunks[longest] / 2)
    return tuple(max(1, c) for c in chunks)


def _prepare(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, _CubeVar],
    profile: str,
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
) -> tuple[xr.Dataset, dict[Hashable, dict[str, Any]]]:
    """The dataset as written (cube variables and lossless ones chunked as stored, input
    encodings dropped) and the zarr encoding of every variable."""
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
    # the variables stored losslessly (but indexes, which xarray writes at once) are
    # written by dask in chunks of their own, whatever the input's chunking
    lossless = _lossless_part(out, cube_vars)
    for name in lossless.variables:
        var = lossless.variables[name]
        if var.chunks is not None and name not in cube_vars:
            encoding[name]["chunks"] = tuple(c[0] for c in var.chunks)
    out = lossless
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
        out[name] = ds[name].chunk(dict(zip(cv.order, cv.shard, strict=True)))

    return out, encoding


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
    fingerprint: Mapping[str, Any],
    fresh: bool,
) -> StorePath:
    """Write the store; on a refusal of the data, remove what this call wrote."""
    real = layout.store_path(store, storage_options)
    view = layout.UnfinishedView(real.store, details={"fingerprint": dict(fingerprint)})
    path = StorePath(view, real.path)
    out, encoding = _prepare(ds, cube_vars, profile, quality, bounds)
    out.attrs = dict(out.attrs)
    out.attrs[MARKER] = _marker(cube_vars, complete=False)
    try:
        with warnings.catch_warnings(), zarr.config.set({"json_indent": None}):
            # fixed-length strings (band names) and consolidated metadata are not yet in
            # the zarr v3 spec; zarr-python reads both, and so does eocube
            warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            # through the view every zarr.json is written unreadable to zarr until the
            # write finishes (eocube.layout)
            writer = out.to_zarr(
                view,
                group=real.path or None,
                mode="w" if mode == "w" else "w-",
                zarr_format=3,
                consolidated=True,
                encoding=encoding,
                compute=False,
            )
            # `writer` would store each cube variable a whole shard per task (the shard in
            # memory, twice or more): it is dropped. The other lazy variables go through
            # xarray.
            del writer
            tasks = _other_tasks(out, cube_vars, view, real.path)
            group = zarr.open_group(path, mode="r+", zarr_format=3)
            for name, cv in cube_vars.items():
                arr = group[str(name)]
                assert isinstance(arr, zarr.Array)
                tasks.extend(_cube_tasks(ds, name, cv, arr, real))
            _compute(tasks, progress)
    except _REFUSALS:
        _remove(real, store, fresh)
        raise
    layout.finish(real, _marker(cube_vars, complete=True), per_array_metadata)
    return real


def _other_tasks(
    out: xr.Dataset, cube_vars: Mapping[Hashable, _CubeVar], view: Any, group: str
) -> list[Any]:
    """Dask tasks writing the variables stored losslessly that are lazy (dask)."""
    rest = out.drop_vars(list(cube_vars))
    lazy = [n for n, v in rest.variables.items() if v.chunks is not None]
    if not lazy:
        return []
    return [
        rest[lazy].to_zarr(
            view, group=group or None, mode="r+", zarr_format=3, consolidated=False, compute=False
        )
    ]


def _marker(cube_vars: Mapping[Hashable, _CubeVar], *, complete: bool) -> dict[str, Any]:
    marker: dict[str, Any] = {"format": FORMAT_VERSION, "complete": complete}
    transposed = {str(n): [str(d) for d in cv.dims] for n, cv in cube_vars.items() if cv.transposed}
    if transposed:
        marker["dims"] = transposed
    return marker


def _remove(path: StorePath, store: Any, fresh: bool) -> None:
    """Remove what this call wrote: a folder it created goes, a folder it found stays."""
    local = layout.local_path(store)
    if local is None:
        layout.delete(path, layout.list_keys(path))
    elif fresh:
        shutil.rmtree(local, ignore_errors=True)
    elif os.path.isdir(local):
        for child in os.scandir(local):
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path, ignore_errors=True)
            else:
                os.unlink(child.path)


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


def _stage_key(name: Hashable, chunk: Sequence[int]) -> str:
    return f"{STAGING}/{name}/{'.'.join(map(str, chunk))}"


def _cube_tasks(
    ds: xr.Dataset,
    name: Hashable,
    cv: _CubeVar,
    arr: zarr.Array,
    stage: StorePath,
    shards: Sequence[Sequence[int]] | None = None,
    staged: frozenset[str] = frozenset(),
) -> list[Any]:
    """Dask tasks writing the shards of a cube variable (all, or those given).

    One task per chunk encodes it to its payload (video and checksum: a few hundred kB
    to a few MB) and keeps it in the staging area, and one task per shard assembles the
    shard object from its payloads, writes it and drops the staged payloads. A task
    holds one chunk, never a whole shard, so memory stays bounded by a few chunks per
    worker thread whatever the shard or cube size, and the chunks of one shard encode
    in parallel (on a cluster, on several workers). Chunks found in ``staged`` (keys
    relative to the store) are read back instead of encoded again.
    """
    import dask

    codec = arr.serializer
    if not isinstance(codec, VideoCodec):
        raise ValueError(f"array {arr.path!r} is not video-coded ({codec})")
    var = ds[name].chunk(dict(zip(cv.order, cv.inner, strict=True)))
    data = xr.conventions.encode_cf_variable(var.variable).data
    if data.dtype != cv.dtype:
        data = data.astype(cv.dtype)
    blocks = data.to_delayed()
    per = [s // c for s, c in zip(cv.shard, cv.inner, strict=True)]
    if shards is None:
        counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
        shards = list(itertools.product(*(range(c) for c in counts)))
    encode = dask.delayed(_encode_payload)
    load = dask.delayed(_load_staged)
    write = dask.delayed(_write_shard)
    tasks: list[Any] = []
    for shard in shards:
        chunks = [
            tuple(s * p + i for s, p, i in zip(shard, per, local, strict=True))
            for local in itertools.product(*(range(p) for p in per))
        ]
        inside = [all(i < n for i, n in zip(idx, blocks.shape, strict=True)) for idx in chunks]
        # a shard of one chunk is itself the checkpoint: nothing to stage
        staging = stage if sum(inside) > 1 else None
        payloads: list[Any] = []
        keys = []
        for idx, present in zip(chunks, inside, strict=True):
            if not present:
                payloads.append(None)
                continue
            key = _stage_key(name, idx)
            if key in staged:
                payloads.append(load(stage, key))
            else:
                payloads.append(encode(blocks[idx], codec, cv, idx, staging, key))
            keys.append(key)
        tasks.append(write(arr, tuple(shard), payloads, stage, keys if staging else []))
    return tasks


def _encode_payload(
    block: np.ndarray,
    codec: VideoCodec,
    cv: _CubeVar,
    chunk: tuple[int, ...],
    stage: StorePath | None = None,
    stage_key: str = "",
) -> bytes | None:
    """One chunk as zarr stores it inside a shard (eocube.video, then crc32c); None if
    it holds nothing but the fill value (zarr writes no such chunk either). With
    ``stage`` the payload is also kept there until its shard is written."""
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
    payload += np.uint32(google_crc32c.value(payload)).tobytes()
    if stage is not None:
        layout.write_bytes(stage, stage_key, payload)
    return payload


def _load_staged(stage: StorePath, key: str) -> bytes:
    """A staged payload (checked against its crc32c)."""
    import google_crc32c

    from eocube.errors import CorruptChunkError

    data = layout.read_bytes(stage, key)
    if data is None or len(data) < 4:
        raise CorruptChunkError(f"{stage}/{key}: the staged chunk vanished during the resume")
    if np.uint32(google_crc32c.value(data[:-4])).tobytes() != data[-4:]:
        raise CorruptChunkError(
            f"{stage}/{key}: the staged chunk is damaged (crc32c mismatch); delete it and "
            f"resume again"
        )
    return data


def _write_shard(
    arr: zarr.Array,
    shard: tuple[int, ...],
    payloads: list[bytes | None],
    stage: StorePath,
    staged: list[str],
) -> None:
    """Write one shard object: its chunks' payloads, then zarr's index of (offset, length)
    per chunk in C order (all ones for absent chunks) and the index's crc32c; then drop
    the chunks staged for it."""
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
    else:
        raw = index.tobytes()
        data = b"".join([*parts, raw, np.uint32(google_crc32c.value(raw)).tobytes()])
        zarr.core.sync.sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
    for staged_key in staged:
        zarr.core.sync.sync(stage.store.delete(f"{stage.path}/{staged_key}".lstrip("/")))


# --- resuming ------------------------------------------------------------------------------


def _shard_intact(store: Any, key: str, per_shard: int) -> bool:
    """Whether a shard object is whole: its index (read alone) checks and fits the object."""
    import google_crc32c
    from zarr.abc.store import SuffixByteRequest

    size = per_shard * 16 + 4
    try:
        total = int(zarr.core.sync.sync(store.getsize(key)))
    except FileNotFoundError:
        return False
    if total < size:
        return False
    buf = zarr.core.sync.sync(
        store.get(key, prototype=default_buffer_prototype(), byte_range=SuffixByteRequest(size))
    )
    if buf is None:
        return False
    data = buf.to_bytes()
    index, crc = data[:-4], data[-4:]
    if np.uint32(google_crc32c.value(index)).tobytes() != crc:
        return False
    entries = np.frombuffer(index, "<u8").reshape(per_shard, 2)
    present = entries[:, 1] != np.uint64(2**64 - 1)
    ends = entries[present, 0] + entries[present, 1]
    return bool(np.all(ends <= total - size))


def _resume(
    ds: xr.Dataset,
    store: Any,
    target: layout.TargetState,
    cube_vars: Mapping[Hashable, _CubeVar],
    others: Mapping[str, str],
    fingerprint: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None,
    progress: bool,
    per_array_metadata: bool,
    measure: bool,
    started: float,
) -> EncodeReport:
    """Finish an interrupted write (or report a finished one) after checking its input."""
    real = layout.store_path(store, storage_options)
    if not target.complete:
        assert target.root is not None
        recorded = (layout.incomplete_details(target.root) or {}).get("fingerprint")
        if recorded is None:
            raise ValueError(
                f"{store}: cannot resume: its write did not finish and it records no "
                f"fingerprint of its input (an older eocube wrote it); pass mode='w' to "
                f"start over"
            )
        _check_same_input(store, recorded, fingerprint)
        view = layout.UnfinishedView(real.store, details={"fingerprint": dict(fingerprint)})
        path = StorePath(view, real.path)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        staged = frozenset(
            key[len(real.path) :].lstrip("/") if real.path else key
            for key in layout.list_keys(real, STAGING)
            if not layout._TEMPORARY.search(key)
        )
        out, _ = _prepare(ds, cube_vars, *_stored_settings(group, cube_vars))
        tasks = _other_tasks(out, cube_vars, view, real.path)
        for name, cv in cube_vars.items():
            arr = group[str(name)]
            assert isinstance(arr, zarr.Array)
            per_shard = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
            counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
            missing = [
                idx
                for idx in itertools.product(*(range(c) for c in counts))
                if not _shard_intact(real.store, _object_key(arr, idx), per_shard)
            ]
            if missing:
                tasks.extend(_cube_tasks(ds, name, cv, arr, real, missing, staged))
        _compute(tasks, progress)
        marker = dict((target.root.get("attributes") or {}).get(MARKER) or {})
        marker.update(format=FORMAT_VERSION, complete=True)
        layout.finish(real, marker, per_array_metadata)
    group = zarr.open_group(real, mode="r", zarr_format=3)
    profile, quality, bounds = _stored_settings(group, cube_vars)
    report = _report(
        ds,
        real,
        cube_vars,
        others,
        profile,
        quality,
        bounds,
        time.perf_counter() - started,
        measure,
    )
    if not target.complete:
        _record_quality(real, report)
    return replace(
        report,
        nbytes=_prefix_nbytes(real),
        seconds=time.perf_counter() - started,
        control="complete" if target.complete else "resume",
    )


def _stored_settings(
    group: zarr.Group, cube_vars: Mapping[Hashable, _CubeVar]
) -> tuple[str, dict[Hashable, float | None], dict[Hashable, Any]]:
    """Profile, quality and error bound per variable, as the store's codecs record them."""
    profile, quality, bounds = "", {}, {}
    for name in cube_vars:
        arr = group[str(name)]
        assert isinstance(arr, zarr.Array)
        codec = arr.serializer
        if not isinstance(codec, VideoCodec):
            raise ValueError(f"array {name!r} of {group.store_path} is not video-coded")
        profile = codec.profile
        quality[name] = codec.quality
        if codec.max_abs_error is not None:
            bounds[name] = codec.max_abs_error
    return profile, quality, bounds


def _lossless_part(ds: xr.Dataset, cube_vars: Mapping[Hashable, _CubeVar]) -> xr.Dataset:
    """The variables stored losslessly that are not indexes, as dask arrays chunked as
    stored: a resume writes them again (they cost little beside the video)."""
    out = ds.copy(deep=False)
    for name in list(out.variables):
        var = out.variables[name]
        if name in cube_vars or name in out.indexes or var.ndim == 0:
            continue
        chunks = _other_chunks(var, name, cube_vars, coordinate=name in out.coords)
        assert chunks is not None
        chunked = out[name].chunk(dict(zip(var.dims, chunks, strict=True)))
        if name in out.coords:
            out = out.assign_coords({name: chunked})
        else:
            out = out.assign({name: chunked})
    return out


# --- measuring and reporting ---------------------------------------------------------------


def _report(
    ds: xr.Dataset,
    store_path: StorePath,
    cube_vars: Mapping[Hashable, _CubeVar],
    others: Mapping[str, str],
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
    from eocube.storage import payload_nbytes

    reports = {}
    for name, cv in cube_vars.items():
        var = ds[name]
        payload = payload_nbytes(group, str(name))
        rep: dict[str, Any] = {}
        if reopened is not None:
            stats = _measure(var, reopened[name].transpose(*cv.order), cv)
            rep = {
                "psnr": stats.psnr(),
                "psnr_per_band": tuple(float(p) for p in stats.psnr_per_band()),
                "max_abs_error": stats.max_abs_error(),
                "max_abs_error_per_band": tuple(float(e) for e in stats.max_error),
            }
        bound = bounds.get(name)
        reports[str(name)] = VariableReport(
            name=str(name),
            shape=tuple(ds[name].transpose(*cv.dims).shape),
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
        stored_losslessly=dict(others),
    )


def _as_tbyx(a: np.ndarray, cv: _CubeVar) -> np.ndarray:
    return a if "band" in cv.roles else a[:, None]


def _measure(original: xr.DataArray, decoded: xr.DataArray, cv: _CubeVar) -> metrics.ErrorStats:
    """Error statistics chunk by chunk, so memory stays bounded whatever the cube's size.

    Both arrays are in (time, [band,] y, x) order."""
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


def _prefix_nbytes(store_path: StorePath) -> int:
    return int(zarr.core.sync.sync(store_path.store.getsize_prefix(store_path.path)))


def _record_quality(store_path: StorePath, report: EncodeReport) -> None:
    """Keep the measured quality in the store, for ``eocube info``, ``verify`` and catalogs."""
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
    root = layout.read_document(store_path)
    assert root is not None
    marker = dict((root.get("attributes") or {}).get(MARKER) or {})
    marker["quality"] = measured
    root.setdefault("attributes", {})[MARKER] = marker
    layout.write_document(store_path, layout.METADATA, root)


def _finite_or_str(value: float | None) -> float | str | None:
    # JSON has no inf: an exact (lossless) PSNR is recorded as the string "inf"
    if value is None or math.isfinite(value):
        return value
    return str(value)


# --- checks on the input -------------------------------------------------------------------
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
