"""Writing cubes: :func:`to_eocube`, the orchestration of a write.

Validates the arguments, finds the cube variables (:mod:`eocube.variables`), refuses
to write over anything but an eocube store or an empty folder, searches the quality
for a target (:mod:`eocube.ratecontrol`), writes the store (:mod:`eocube.encode`),
measures it (:mod:`eocube.report`), corrects a missed target at most twice, and resumes
an interrupted write (:mod:`eocube.resume`).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ParamSpec, TypeVar

import numpy as np
import xarray as xr
import zarr
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath

from eocube import encode, lifecycle, ratecontrol
from eocube.errors import EocubeError
from eocube.layout import MARKER
from eocube.lifecycle import quiet_zarr
from eocube.profiles import get_profile
from eocube.report import EncodeReport, make_report, record_quality, store_nbytes
from eocube.resume import fingerprint_of, resume_write, settings_json
from eocube.variables import (
    CubeVar,
    as_dataset,
    bounds_per_variable,
    canonical,
    check_dtypes,
    check_lossless_dtypes,
    cube_variables,
)

# errors that mean the data or the arguments are refused: the store started is removed
_REFUSALS = (EocubeError, ValueError, TypeError)


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
        daily or finer (see :data:`layout.DENSE_TIME_CHUNK`); series of 8 steps or fewer
        get 512 × 512 px, of 2 or 1 steps 1024 × 1024 (see :data:`layout.CHUNK_PIXELS`).
    dims : mapping, optional
        Role (time, band, y, x) to dim name, for dims eocube does not recognise.
    variables : sequence, optional
        The variables to encode as video; default: every cube variable except
        categorical ones: CF ``flag_values``/``flag_masks``/``flag_meanings``, or an
        integer variable beside other cube variables with at most
        :data:`~eocube.variables.CATEGORICAL_MAX_VALUES` distinct values in a sample (a QA
        bit field). Others are stored losslessly.
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
    A cube already in memory (numpy, no dask scheduler configured, no ``progress``)
    has its chunks encoded on as many threads from the start of the write, while the
    metadata is written (:class:`eocube.encode.EagerEncodes`): the same store.
    Each encoded chunk is kept in the store's staging area until its shard is written,
    so an interrupted write loses only the chunks being encoded.
    """
    control = ratecontrol.Control.parse(
        lossless=lossless,
        crf=crf,
        target_bpppb=target_bpppb,
        target_psnr=target_psnr,
        max_abs_error=max_abs_error,
    )
    if mode not in ("w-", "w"):
        raise ValueError(f"mode must be 'w-' or 'w', got {mode!r}")
    ds = as_dataset(obj)
    prof = get_profile(profile, lossless=lossless)
    control.check_profile(prof)
    started = time.perf_counter()
    check_dtypes(ds)
    cube_vars, others = cube_variables(ds, dims, variables, chunks)
    check_lossless_dtypes(cube_vars, prof)
    bounds = bounds_per_variable(max_abs_error, cube_vars, ds)
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    target = lifecycle.inspect_target(store, storage_options)
    check_not_holding_the_input(ds, store, target)
    ds = canonical(ds, cube_vars)
    settings = {"profile": prof.name, control.name: settings_json(control.value)}
    fingerprint = fingerprint_of(ds, cube_vars, settings)
    if resume and target.kind == "eocube":
        return resume_write(
            ds, store, target, cube_vars, others, fingerprint, storage_options, progress,
            per_array_metadata, measure, started,
        )  # fmt: skip
    check_target(store, target, mode, resume)

    def write(mode_now: str) -> EncodeReport:
        t0 = time.perf_counter()
        path = write_store(
            ds, store, cube_vars, prof.name, quality, bounds, mode_now, storage_options,
            progress, per_array_metadata, fingerprint, target.kind == "absent",
        )  # fmt: skip
        report = make_report(
            ds, path, cube_vars, others, prof.name, quality, bounds, time.perf_counter() - t0,
            (measure or control.target_psnr is not None) and not prof.lossless,
        )  # fmt: skip
        return lossless_quality(report, ds, cube_vars) if prof.lossless and measure else report

    # the trial encodes of sample chunks serve the write of those chunks
    with encode.reuse_payloads():
        overhead = 0.0
        if control.target_bpppb is not None:
            # the search's first trial encodes meanwhile (on the codec, outside the GIL)
            with ratecontrol.first_trials_ahead(ds, cube_vars, prof, control, bounds):
                values = sum(ds[n].size for n in cube_vars)
                overhead = estimate_overhead(ds, cube_vars, prof.name, fingerprint) * 8 / values
        quality, psnr_bounds, trials = ratecontrol.choose_qualities(
            ds, cube_vars, prof, control, bounds, overhead
        )
        report, passes = ratecontrol.write_to_target(
            write, mode, prof, control, quality, bounds, psnr_bounds
        )
    path = lifecycle.store_path(store, storage_options)
    record_quality(path, report)
    nbytes = store_nbytes(path)  # the recorded quality is part of the store
    return replace(
        report,
        nbytes=nbytes,
        bpppb=nbytes * 8 / report.values,
        compression_ratio=report.original_nbytes / nbytes,
        seconds=time.perf_counter() - started,
        passes=passes,
        trials=trials,
        control=control.name,
    )


def lossless_quality(
    report: EncodeReport, ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar]
) -> EncodeReport:
    """The report of a lossless write with its quality: exact (PSNR inf, error 0) on
    every band holding a valid value. A lossless profile decodes every stream it encodes
    and compares it with its input before the payload is written
    (:func:`eocube.chunk.encode_chunk`), so reading the store back would measure what the
    encode already checked: ``eocube verify`` reads a store back in full."""
    variables = dict(report.variables)
    for name, cv in cube_vars.items():
        da = ds[name].transpose(*cv.order)  # (time, [band,] y, x); integers (lossless)
        others = [d for i, d in enumerate(da.dims) if not (da.ndim == 4 and i == 1)]
        if cv.nodata is None or math.isnan(cv.nodata):
            bands = np.full(da.shape[1] if da.ndim == 4 else 1, da.size > 0)
        else:  # lazily, chunk by chunk, for a dask-backed cube
            bands = np.atleast_1d(np.asarray((da != cv.nodata).any(dim=others).values))
        per_band = tuple(math.inf if b else math.nan for b in bands)
        variables[str(name)] = replace(
            variables[str(name)],
            psnr=math.inf if bands.any() else math.nan,
            psnr_per_band=per_band,
            max_abs_error=0.0,
            max_abs_error_per_band=tuple(0.0 for _ in per_band),
        )
    return replace(report, variables=variables)


def estimate_overhead(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profile: str,
    fingerprint: Mapping[str, Any],
) -> int:
    """Bytes a store of ``ds`` holds outside its chunk payloads (metadata, coordinates,
    other variables, shard indexes, checksums): the store written without the cube
    variables' chunks, in memory, and what those chunks add beside their payloads."""
    import uuid

    from eocube.shards import ShardIndex

    url = f"memory://eocube-overhead-{uuid.uuid4().hex}"
    path = write_store(
        ds, url, cube_vars, profile, dict.fromkeys(cube_vars), {}, "w-", None, False, False,
        fingerprint, True, cube_data=False,
    )  # fmt: skip
    try:
        total = store_nbytes(path)
    finally:
        lifecycle.delete(path, lifecycle.list_keys(path))
    for cv in cube_vars.values():
        shape = ds[cv.name].shape
        per = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
        shards = math.prod(math.ceil(n / s) for n, s in zip(shape, cv.shard, strict=True))
        chunks = math.prod(math.ceil(n / c) for n, c in zip(shape, cv.inner, strict=True))
        # an index per shard, a checksum per chunk, the quality recorded in the metadata
        total += shards * ShardIndex.nbytes(per) + 4 * chunks + 160
    return total


def _sources(ds: xr.Dataset) -> set[str]:
    found = {ds.encoding.get("source")}
    found |= {var.encoding.get("source") for var in ds.variables.values()}
    return {s for s in found if isinstance(s, str) and s}


def check_not_holding_the_input(ds: xr.Dataset, store: Any, target: lifecycle.TargetState) -> None:
    """Refuse a target that is, or holds, a file the cube is read from."""
    if target.kind == "absent":
        return
    root = lifecycle.local_path(store)
    if root is None:
        return
    for source in sorted(_sources(ds)):
        found = lifecycle.local_path(source)
        if found is not None and (found == root or found.startswith(root.rstrip(os.sep) + os.sep)):
            raise FileExistsError(
                f"{store} holds the input {source}: eocube never writes over a path that "
                f"holds its input; write to another path"
            )


def check_target(store: Any, target: lifecycle.TargetState, mode: str, resume: bool) -> None:
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


def write_store(
    ds: xr.Dataset,
    store: Any,
    cube_vars: Mapping[Hashable, CubeVar],
    profile: str,
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    mode: str,
    storage_options: Mapping[str, Any] | None,
    progress: bool,
    per_array_metadata: bool,
    fingerprint: Mapping[str, Any],
    fresh: bool,
    *,
    cube_data: bool = True,
) -> StorePath:
    """Write the store; on a refusal of the data, remove what this call wrote. Without
    ``cube_data``, the cube variables' chunks are not written (metadata only)."""
    real = lifecycle.store_path(store, storage_options)
    view = lifecycle.UnfinishedView(real.store, details={"fingerprint": dict(fingerprint)})
    path = StorePath(view, real.path)
    out, encoding = encode.prepare(ds, cube_vars, profile, quality, bounds)
    out.attrs = dict(out.attrs)
    out.attrs[MARKER] = encode.store_marker(cube_vars, complete=False)
    # an in-memory cube's chunks encode while the metadata is written (encode.EagerEncodes)
    eager = None
    if cube_data and encode.encodes_now(ds, cube_vars, progress):
        eager = encode.EagerEncodes(ds, cube_vars, encoding)
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
            tasks = encode.lossless_tasks(out, cube_vars, view, real.path)
            group = zarr.open_group(path, mode="r+", zarr_format=3)
            for name, cv in cube_vars.items() if cube_data and eager is None else ():
                arr = group[str(name)]
                assert isinstance(arr, zarr.Array)
                tasks.extend(encode.cube_tasks(ds, name, cv, arr, real))
            encode.compute(tasks, progress)
            if eager is not None:
                eager.write(group, real)
    except _REFUSALS:
        _remove(real, store, fresh)
        raise
    finally:
        if eager is not None:
            eager.close()
    lifecycle.finish(real, encode.store_marker(cube_vars, complete=True), per_array_metadata)
    return real


def _remove(path: StorePath, store: Any, fresh: bool) -> None:
    """Remove what this call wrote: a folder it created goes, a folder it found stays."""
    local = lifecycle.local_path(store)
    if local is None:
        lifecycle.delete(path, lifecycle.list_keys(path))
    elif fresh:
        shutil.rmtree(local, ignore_errors=True)
    elif os.path.isdir(local):
        for child in os.scandir(local):
            if child.is_dir(follow_symlinks=False):
                shutil.rmtree(child.path, ignore_errors=True)
            else:
                os.unlink(child.path)
