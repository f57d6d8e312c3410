"""Writing cubes: :func:`to_eocube`, the orchestration of a write.

Validates the arguments, finds the cube variables and their own settings
(:mod:`eocube.variables`, :mod:`eocube.quality`), refuses to write over anything but an
eocube store or an empty folder, searches the quality for a target
(:mod:`eocube.ratecontrol`), writes the store (:mod:`eocube.encode`, whose tasks measure
what they encode), reports it (:mod:`eocube.report`), corrects a missed target at most
twice (each correction staged, the best pass kept: :mod:`eocube.passes`), and resumes an
interrupted write (:mod:`eocube.resume`). Appends and region writes of an existing store
are :mod:`eocube.update`'s; ``compute=False`` writes the metadata and returns the rest as
a ``dask.delayed``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

import xarray as xr
import zarr
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath

from eocube import encode, lifecycle, packed, passes, ratecontrol, update
from eocube.errors import EocubeError
from eocube.layout import MARKER
from eocube.lifecycle import quiet_zarr
from eocube.profiles import get_profile
from eocube.quality import bounds_of, choose_per_variable, own_controls, settings_per_variable
from eocube.report import EncodeReport, make_report, record_quality, store_nbytes
from eocube.resume import fingerprint_of, resume_write, settings_json, with_profiles
from eocube.variables import (
    CubeVar,
    as_dataset,
    canonical,
    check_dtypes,
    check_lossless_dtypes,
    cube_variables,
    parse_encoding,
)

logger = logging.getLogger(__name__)

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
    encoding: Mapping[Hashable, Mapping[str, Any]] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    mode: str | None = None,
    append_dim: Hashable | None = None,
    region: Mapping[Hashable, slice] | None = None,
    resume: bool = False,
    compute: bool = True,
    progress: bool = False,
    measure: bool = True,
    per_array_metadata: bool = False,
) -> Any:
    """Write a cube to an eocube store (zarr v3, video-coded chunks inside shards).

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Cube variables are those whose dims are time, band, y and x, or time, y and x,
        in any order and under common names (lat/lon, latitude/longitude, bands,
        date...), or recognised by their coordinates' CF ``axis`` or ``standard_name``
        (see :mod:`eocube.dims`). They are stored as (time, band, y, x) and read back
        in their own order. All other variables and every coordinate are stored
        losslessly (class maps with ``eocube.labels``, other fields with
        ``eocube.lorenzo``, coordinates with ``eocube.linear``, the rest with zstd); the
        report says which, why and with what.
    store : str, os.PathLike, or zarr store
        A path or fsspec URL (``file://``, ``memory://``, ``s3://``, ``hf://``...). A
        name ending in ``.zip`` writes a packed store, one read-only ZIP file
        (:mod:`eocube.packed`): the folder store is written beside it (in the temporary
        folder for a URL), packed and removed; ``target_bpppb`` counts the file. Not with
        appends, region writes, ``resume`` or ``compute=False``; on a cluster its workers
        must reach that folder (write a folder store to shared storage and
        :func:`eocube.pack` it otherwise).
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
        daily or finer (see :data:`layout.DENSE_TIME_CHUNK`), up to 256 on grids too
        small to fill the pixel budget with 128 (:data:`layout.DENSE_TIME_MAX`);
        series of 8 steps or fewer get 512 × 512 px, of 2 or 1 steps 1024 × 1024 (see
        :data:`layout.CHUNK_PIXELS`).
    dims : mapping, optional
        Role (time, band, y, x) to dim name, for dims eocube does not recognise.
    variables : sequence, optional
        The variables to encode as video; default: every cube variable except
        categorical ones: CF ``flag_values``/``flag_masks``/``flag_meanings``, or an
        integer variable beside other cube variables with at most
        :data:`~eocube.variables.CATEGORICAL_MAX_VALUES` distinct values in a sample (a QA
        bit field). Others are stored losslessly.
    encoding : mapping, optional
        Settings of single cube variables, as in xarray's ``to_zarr``: variable name to
        a mapping of ``profile``, one quality control (``lossless``, ``crf`` or
        ``max_abs_error``) and ``chunks`` (as ``chunks=``). A variable takes the call's
        settings for what its own leave out; its profile, when it names none, is the
        call's ``profile`` if that suits its control (lossless or not), else the default
        for its control. Own quality settings cannot be combined with ``target_psnr`` or
        ``target_bpppb`` (a target is met by the cube as a whole).
    storage_options : mapping, optional
        Passed to fsspec.
    mode : {"w-", "w", "a", "r+"}, optional
        ``"w-"`` (the default) refuses to write over anything. ``"w"`` replaces an eocube
        store (or fills an empty folder); any other folder or file is refused, and so is
        a path that holds the input. ``"a"`` (the default with ``append_dim``) appends to
        an eocube store, or creates it when there is none; ``"r+"`` (the default with
        ``region``) writes a region of an eocube store.
    append_dim : str, optional
        Append the dates of ``obj`` after those of the store, along this dim (the time
        dim of the cube variables), as xarray's ``to_zarr(mode="a", append_dim=...)``
        does. The store keeps its settings (profile, quality, bound, chunks, shards);
        ``obj`` must have its variables, with the same dims, dtypes, bands and other
        coordinates, and dates after the stored ones, increasing. Only the last time
        shard, when partial, is rewritten (:mod:`eocube.update`). A store that does not
        exist yet is created, with its time chunks and shards sized for the dates to
        come (a time chunk longer than the first dates is kept, and shards hold 16 of
        them).
    region : mapping, optional
        Dim to slice of the store: write ``obj`` (the size of the region) over that
        part of the store, as xarray's ``to_zarr(region=...)`` does. The slices of a
        lossy variable must follow its chunks (start at a multiple of the chunk size,
        stop at one or at the end); the shards they touch are rewritten whole. The
        coordinates of ``obj`` must be the store's at the region.
    resume : bool
        Finish a write that was interrupted: chunks already encoded are kept, the
        missing ones encoded. The store records a fingerprint of the input and settings
        (shapes, dtypes, coordinates, the values of a few chunks, the quality control):
        resuming with another input or other settings is refused. A store whose write
        completed is left as it is and reported. Until a write completes, no zarr
        reader can open the store (its metadata carries a field readers must refuse).
        With ``append_dim`` or ``region``: finish an append or a region write that was
        interrupted (the store reads as before it meanwhile); an append whose dates the
        store already ends with is reported, not written again.
    compute : bool
        False: write the metadata now and return a ``dask.delayed`` object whose
        ``.compute()`` encodes the chunks, finishes the store and returns the report, as
        xarray's ``to_zarr(compute=False)`` does. Until then a new store is unfinished
        (unreadable) and an updated store reads as before the update. Not with
        ``target_psnr``/``target_bpppb`` (which measure the store written) nor
        ``resume``.
    progress : bool
        Show a progress bar (dask) while encoding.
    measure : bool
        Report PSNR and max abs error per variable (always done for ``target_psnr``).
        The encode tasks measure each chunk they encode, decoded as a reader decodes
        it, against the values given (:class:`eocube.encode.Measure`; on a cluster, in
        the workers): no second pass over the source, no read back. An update measures
        the values it wrote.
    per_array_metadata : bool
        Also keep a ``zarr.json`` per array. By default all metadata lives in the
        root ``zarr.json`` (consolidated), which zarr-python and xarray read in one
        request; readers that open arrays by path without the group need this.

    Returns
    -------
    EncodeReport or dask.delayed.Delayed
        The report; with ``compute=False``, a delayed object that computes to it.

    Raises
    ------
    FileExistsError
        When ``store`` exists and ``mode``/``resume`` do not allow writing there, or an
        update of it did not finish (``resume=True`` finishes it).
    FileNotFoundError
        For ``region=`` when ``store`` holds no eocube store.
    UnsupportedDataError
        For data eocube cannot store (the message names the variable and what to do);
        the store this call started is removed.
    ValueError
        For arguments that conflict, and for an update whose data does not fit the
        store (the message says what differs).
    MissingShardsError
        When the store lacks shards the workers reported writing (storage the workers
        and this process do not share): the store is left unfinished, or the update
        pending, for ``resume=True`` once the storage is shared.

    Notes
    -----
    Exactly one of ``lossless``, ``crf``, ``target_bpppb``, ``target_psnr`` and
    ``max_abs_error`` may be given. The targets are searched on a sample of at most
    three chunks per variable, with at most seven trial encodes of that sample
    (:mod:`eocube.ratecontrol`); the cube is then encoded once, measured, and
    re-encoded at most twice to correct a miss (``report.passes`` says how often).
    An update encodes at the quality the store was written at: targets are not
    searched again, and any other quality setting must be the store's.

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
    mode = parse_mode(mode, append_dim, region)
    own = parse_encoding(encoding)
    prof = get_profile(profile, lossless=lossless)
    control.check_profile(prof)
    if not compute:
        check_deferrable(control, resume)
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if packed.is_packed(store):
        check_packable(store, mode, resume, compute)
        return _to_packed(
            obj, store, storage_options, mode,
            profile=profile, lossless=lossless, crf=crf, target_bpppb=target_bpppb,
            target_psnr=target_psnr, max_abs_error=max_abs_error, chunks=chunks, dims=dims,
            variables=variables, encoding=encoding, progress=progress, measure=measure,
            per_array_metadata=per_array_metadata,
        )  # fmt: skip
    ds = as_dataset(obj)
    target = lifecycle.inspect_target(store, storage_options)
    if mode in ("a", "r+") and target.kind == "eocube" and (target.complete or region):
        check_not_holding_the_input(ds, store, target)
        return update.update_store(
            ds,
            store,
            target,
            append_dim=append_dim,
            region=region,
            requested=update.Requested(profile, control, own),
            storage_options=storage_options,
            resume=resume,
            compute=compute,
            progress=progress,
            measure=measure,
        )
    if mode == "r+":
        raise FileNotFoundError(
            f"{store} is {target.describe()}: region= writes into an eocube store that "
            f"exists; write the whole cube first"
        )
    if target.pending is not None and mode != "w":
        raise FileExistsError(
            f"{store}: an {target.pending.get('kind', 'update')} of this store did not "
            f"finish; repeat that call with resume=True to finish it, or pass mode='w' to "
            f"replace the store"
        )
    started = time.perf_counter()
    check_dtypes(ds)
    cube_vars, others = cube_variables(
        ds, dims, variables, chunks, own, growing=append_dim if mode == "a" else None
    )
    profiles, controls = settings_per_variable(cube_vars, own, profile, prof, control)
    for name, cv in cube_vars.items():
        check_lossless_dtypes({name: cv}, profiles[name])
    bounds = bounds_of(control, controls, cube_vars, ds)
    target_mode = "w-" if mode == "a" else mode
    check_not_holding_the_input(ds, store, target)
    ds = canonical(ds, cube_vars)
    settings: dict[str, Any] = {"profile": prof.name, control.name: settings_json(control.value)}
    if own:
        settings["encoding"] = {str(n): settings_json(vars(e)) for n, e in own.items()}
    fingerprint = fingerprint_of(ds, cube_vars, settings)
    if resume and target.kind == "eocube":
        return resume_write(
            ds, store, target, cube_vars, others, fingerprint, storage_options, progress,
            per_array_metadata, measure, started,
        )  # fmt: skip
    check_target(store, target, target_mode, resume)
    names = {name: p.name for name, p in profiles.items()}
    # the encode tasks measure what they encode (encode.Measure): no second pass
    measured = measure or control.target_psnr is not None

    def report_of(
        written: Written, quality: Mapping[Hashable, float | None], seconds: float
    ) -> EncodeReport:
        report = make_report(
            ds, written.path, cube_vars, others, prof.name, quality, bounds, seconds, measured,
            tallies=written.tallies,
        )  # fmt: skip
        return with_profiles(report, names)

    if not compute:
        quality, _, trials = choose_per_variable(ds, cube_vars, profiles, controls, bounds)
        real = lifecycle.store_path(store, storage_options)
        tasks = start_store(
            ds, real, cube_vars, names, quality, bounds, target_mode, fingerprint,
            measure=measured,
        ).tasks  # fmt: skip
        import dask

        return dask.delayed(_finish_deferred, pure=False)(
            tasks, real, cube_vars, per_array_metadata, report_of, quality, started, trials,
            control.name,
        )  # fmt: skip

    class StorePasses:
        """:class:`eocube.ratecontrol.Passes` of this write: the first pass in place, the
        corrections staged in the store and the one kept promoted (:mod:`eocube.passes`)."""

        def __init__(self) -> None:
            self.first_written: Written | None = None
            self.reports: dict[int, EncodeReport] = {}
            self.staged: dict[int, passes.StagedPass] = {}

        def first(self, mode_now: str) -> EncodeReport:
            t0 = time.perf_counter()
            self.first_written = write_store(
                ds, store, cube_vars, names, quality, bounds, mode_now, storage_options,
                progress, per_array_metadata, fingerprint, target.kind == "absent",
                measure=measured,
            )  # fmt: skip
            report = report_of(self.first_written, quality, time.perf_counter() - t0)
            self.reports[1] = report
            return report

        def again(self, number: int) -> EncodeReport:
            t0 = time.perf_counter()
            first = self.first_written
            assert first is not None
            staged = passes.write_pass(
                ds, first.path, cube_vars, names, quality, bounds, number,
                progress=progress, measure=measured,
            )  # fmt: skip
            self.staged[number] = staged
            # the store as it would be with this pass in place: its shards for the first's
            nbytes = self.reports[1].nbytes - first.shard_nbytes + staged.shard_nbytes
            report = make_report(
                ds, first.path, cube_vars, others, prof.name, quality, bounds,
                time.perf_counter() - t0, measured, tallies=staged.tallies, nbytes=nbytes,
            )  # fmt: skip
            self.reports[number] = with_profiles(report, names)
            return self.reports[number]

        def keep(self, number: int) -> EncodeReport:
            first = self.first_written
            assert first is not None
            if number == 1:
                if self.staged:
                    passes.discard(first.path)
                return self.reports[1]
            codecs = {
                n: passes.codec_of(cv, names[n], quality[n], bounds.get(n))
                for n, cv in cube_vars.items()
            }
            passes.promote(
                first.path, self.staged[number], cube_vars, codecs, per_array_metadata,
                fingerprint,
            )  # fmt: skip
            return replace(self.reports[number], nbytes=store_nbytes(first.path))

    # the trial encodes of sample chunks serve the write of those chunks
    with encode.reuse_payloads():
        overhead = 0.0
        if control.target_bpppb is not None:
            # the search's first trial encodes meanwhile (on the codec, outside the GIL)
            with ratecontrol.first_trials_ahead(ds, cube_vars, prof, control, bounds):
                values = sum(ds[n].size for n in cube_vars)
                packing = isinstance(store, packed.PackingStore)
                overhead = estimate_overhead(ds, cube_vars, names, fingerprint, packing)
                overhead *= 8 / values
        if own_controls(own) or any(p is not prof for p in profiles.values()):
            quality, psnr_bounds, trials = choose_per_variable(
                ds, cube_vars, profiles, controls, bounds
            )
        else:
            quality, psnr_bounds, trials = ratecontrol.choose_qualities(
                ds, cube_vars, prof, control, bounds, overhead
            )
        report, encodes = ratecontrol.write_to_target(
            StorePasses(), target_mode, prof, control, quality, bounds, psnr_bounds
        )
    path = lifecycle.store_path(store, storage_options)
    return final_report(path, report, started, encodes, trials, control.name)


def check_packable(store: str, mode: str, resume: bool, compute: bool) -> None:
    """Refuse what a packed (``.zip``) target cannot take: it is written whole, at once."""
    refused = (
        "an append" if mode == "a" else "a region write" if mode == "r+" else
        "a resume" if resume else "a deferred write (compute=False)" if not compute else None
    )  # fmt: skip
    if refused is not None:
        raise ValueError(
            f"{store}: a packed store (one ZIP file) is written whole and cannot take "
            f"{refused}; write a folder store for that, then pack it (eocube.pack)"
        )


def _to_packed(
    obj: xr.Dataset | xr.DataArray,
    store: str,
    storage_options: Mapping[str, Any] | None,
    mode: str,
    **settings: Any,
) -> EncodeReport:
    """``to_eocube`` to a packed store: the folder store written beside the target (for a
    remote target: in the temporary folder), packed, and removed. The folder sizes
    itself as its packed file (:class:`~eocube.packed.PackingStore`), so that a
    ``target_bpppb`` holds for the file."""
    import tempfile

    from eocube.hubfs import filesystem

    fs, where = filesystem(store, storage_options)
    if fs.exists(where) and fs.isdir(where):
        raise FileExistsError(
            f"{store} is a folder: a packed store is one file, and eocube writes none over a folder"
        )
    if fs.exists(where) and mode != "w":
        raise FileExistsError(f"{store} is a file: pass mode='w' to replace a packed store")
    local = lifecycle.local_path(store)
    parent = os.path.dirname(local) if local is not None else None
    if parent:
        os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=packed.PACKING_PREFIX, dir=parent)
    try:
        report = to_eocube(obj, packed.PackingStore(folder), mode="w", **settings)
        done = packed.pack(folder, store, target_options=storage_options, overwrite=mode == "w")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return replace(
        report,
        store=store,
        nbytes=done.packed_nbytes,
        bpppb=done.packed_nbytes * 8 / report.values,
        compression_ratio=report.original_nbytes / done.packed_nbytes,
    )


def parse_mode(
    mode: str | None, append_dim: Hashable | None, region: Mapping[Hashable, slice] | None
) -> str:
    """The write's mode, checked against ``append_dim`` and ``region`` (xarray's rules:
    ``append_dim`` means ``"a"``, ``region`` means ``"r+"`` or ``"a"``)."""
    if mode not in (None, "w-", "w", "a", "r+"):
        raise ValueError(f"mode must be 'w-', 'w', 'a' or 'r+', got {mode!r}")
    if append_dim is not None and region is not None:
        raise ValueError(
            "append_dim= and region= conflict: append dates, or write over a region, "
            "in one call each"
        )
    if append_dim is not None:
        if mode not in (None, "a"):
            raise ValueError(f"append_dim= appends: it needs mode='a' (or none), not {mode!r}")
        return "a"
    if region is not None:
        if not isinstance(region, Mapping):
            raise TypeError(f"region= maps dims to slices of the store, got {region!r}")
        if mode not in (None, "r+", "a"):
            raise ValueError(
                f"region= writes into a store: it needs mode='r+' (or none), not {mode!r}"
            )
        return "r+"
    if mode in ("a", "r+"):
        raise ValueError(
            f"mode={mode!r} updates a store: give append_dim= (e.g. 'time') to add dates "
            f"after the stored ones, or region= (dim -> slice) to write over a part of it"
        )
    return mode or "w-"


def check_deferrable(control: ratecontrol.Control, resume: bool) -> None:
    """Refuse what ``compute=False`` cannot defer."""
    if control.target_psnr is not None or control.target_bpppb is not None:
        raise ValueError(
            f"compute=False cannot meet {control.name}={control.value}: a target is met by "
            f"measuring the store written and writing it again; give crf= or "
            f"max_abs_error= instead, or compute the write now"
        )
    if resume:
        raise ValueError("resume=True finishes a write now: leave compute=False out")


def final_report(
    path: StorePath,
    report: EncodeReport,
    started: float,
    passes: int,
    trials: int,
    control: str,
) -> EncodeReport:
    """Record the measured quality in the store, and the report with the store's size."""
    record_quality(path, report)
    nbytes = store_nbytes(path)  # the recorded quality is part of the store
    logger.info(
        "wrote %s: %d bytes, %.4f bpppb, %d pass(es), %.1f s",
        report.store, nbytes, nbytes * 8 / report.values, passes, time.perf_counter() - started,
    )  # fmt: skip
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


def _finish_deferred(
    written: Any,
    real: StorePath,
    cube_vars: Mapping[Hashable, CubeVar],
    per_array_metadata: bool,
    report_of: Callable[[Written, Mapping[Hashable, float | None], float], EncodeReport],
    quality: Mapping[Hashable, float | None],
    started: float,
    trials: int,
    control: str,
) -> EncodeReport:
    """The end of a ``compute=False`` write, once its chunks are written: finish the store
    and report it (``written``: the results of the tasks that wrote the chunks)."""
    lifecycle.finish(
        real,
        encode.store_marker(cube_vars, complete=True),
        per_array_metadata,
        written=encode.written_shards(written),
    )
    done = Written(real, encode.tallies(written))
    report = report_of(done, quality, time.perf_counter() - started)
    return final_report(real, report, started, 1, trials, control)


def estimate_overhead(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, str],
    fingerprint: Mapping[str, Any],
    packing: bool = False,
) -> int:
    """Bytes a store of ``ds`` holds outside its chunk payloads (metadata, coordinates,
    other variables, shard indexes, checksums): the store written without the cube
    variables' chunks, in memory, and what those chunks add beside their payloads.
    ``packing``: the bytes of its packed file (:mod:`eocube.packed`)."""
    import uuid

    from eocube.shards import ShardIndex

    url = f"memory://eocube-overhead-{uuid.uuid4().hex}"
    path = write_store(
        ds, url, cube_vars, profiles, dict.fromkeys(cube_vars), {}, "w-", None, False, False,
        fingerprint, True, cube_data=False,
    ).path  # fmt: skip
    try:
        total = packed.packed_size(path) if packing else store_nbytes(path)
    finally:
        lifecycle.delete(path, lifecycle.list_keys(path))
    for cv in cube_vars.values():
        shape = ds[cv.name].shape
        per = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
        shards = math.prod(math.ceil(n / s) for n, s in zip(shape, cv.shard, strict=True))
        chunks = math.prod(math.ceil(n / c) for n, c in zip(shape, cv.inner, strict=True))
        # an index per shard, a checksum per chunk, the quality recorded in the metadata
        total += shards * ShardIndex.nbytes(per) + 4 * chunks + 160
        if packing:  # a ZIP entry per shard: two headers, each naming it
            total += shards * packed.entry_nbytes(f"{cv.name}/c" + "/0" * len(shape))
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


@dataclass(frozen=True)
class Written:
    """A store written: where, and what its encode tasks reported per cube variable
    (payload bytes, and error statistics when measured: :func:`eocube.encode.tallies`)."""

    path: StorePath
    tallies: Mapping[str, encode.Tally]
    shard_nbytes: int = 0  # bytes of the cube variables' shard objects


@dataclass
class Started:
    """A store whose metadata is written (unfinished): the tasks that write its chunks,
    and the encodes of an in-memory cube already under way (or None)."""

    group: zarr.Group
    tasks: list[Any]
    eager: encode.EagerEncodes | None


def start_store(
    ds: xr.Dataset,
    real: StorePath,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, str],
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    mode: str,
    fingerprint: Mapping[str, Any],
    *,
    cube_data: bool = True,
    eager: bool = False,
    measure: bool = False,
) -> Started:
    """Write the metadata of an unfinished store and make the tasks that write its chunks
    (with ``eager``, the chunks of an in-memory cube start encoding first; with
    ``measure``, the tasks measure the chunks they encode: :class:`eocube.encode.Measure`)."""
    view = lifecycle.UnfinishedView(real.store, details={"fingerprint": dict(fingerprint)})
    path = StorePath(view, real.path)
    out, encoding = encode.prepare(ds, cube_vars, profiles, quality, bounds)
    out.attrs = dict(out.attrs)
    out.attrs[MARKER] = encode.store_marker(cube_vars, complete=False)
    # an in-memory cube's chunks encode while the metadata is written (encode.EagerEncodes)
    encodes = (
        encode.EagerEncodes(ds, cube_vars, encoding, measure=measure)
        if cube_data and eager
        else None
    )
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
        for name, cv in cube_vars.items() if cube_data and encodes is None else ():
            arr = group[str(name)]
            assert isinstance(arr, zarr.Array)
            tasks.extend(encode.cube_tasks(ds, name, cv, arr, real, measure=measure))
    except BaseException:
        if encodes is not None:
            encodes.close()
        raise
    return Started(group, tasks, encodes)


def write_store(
    ds: xr.Dataset,
    store: Any,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, str],
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
    measure: bool = False,
) -> Written:
    """Write the store; on a refusal of the data, remove what this call wrote. Without
    ``cube_data``, the cube variables' chunks are not written (metadata only); with
    ``measure`` the encode tasks measure the chunks they write."""
    real = lifecycle.store_path(store, storage_options)
    started = None
    try:
        started = start_store(
            ds, real, cube_vars, profiles, quality, bounds, mode, fingerprint,
            cube_data=cube_data, eager=encode.encodes_now(ds, cube_vars, progress),
            measure=measure,
        )  # fmt: skip
        results: list[Any] = list(encode.compute(started.tasks, progress))
        if started.eager is not None:
            results.append(started.eager.write(started.group, real))
    except _REFUSALS:
        _remove(real, store, fresh)
        raise
    finally:
        if started is not None and started.eager is not None:
            started.eager.close()
    # outside the refusals: shards lost on the way leave the store unfinished (resumable)
    lifecycle.finish(
        real,
        encode.store_marker(cube_vars, complete=True),
        per_array_metadata,
        written=encode.written_shards(results),
    )
    shard_nbytes = sum(encode.written_shards(results).values())
    return Written(real, encode.tallies(results), shard_nbytes)


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
