"""Updating a finished store in xarray's shape: appending dates and writing a region.

``to_eocube(ds, store, mode="a", append_dim="time")`` adds the dates of ``ds`` after
those stored, and ``to_eocube(ds, store, region={"time": slice(8, 16)})`` writes ``ds``
over a part of the store. Both keep the store's settings (profile, quality, error bound,
chunks and shards, CF encoding), check that ``ds`` fits the store (the same variables,
dims, bands, dtypes and coordinates but along the updated part; dates that follow the
stored ones), and rewrite only the shards they touch (:mod:`eocube.rewrite`): an append
rewrites the last time shard when it is partial and adds new ones.

An update keeps the store readable all along (docs/format.md, "Appends and region
writes"). It records itself in the marker (:func:`eocube.lifecycle.begin_update`, with
the fingerprint of its input); chunks beyond the stored shapes are invisible to readers
until the update commits, and a rewritten shard keeps the bytes of its other chunks; the
new shapes go into the root document in one write at the end
(:func:`eocube.lifecycle.commit_update`). An interrupted update leaves the previous dates
readable; the same call with ``resume=True`` finishes it.

The error of an append: a chunk holding both stored and new dates (when the stored length
is not a multiple of the time chunk) is decoded and encoded again with the new dates. With
a lossless profile nothing changes; with a lossy one the stored dates of that chunk pass
the codec twice: they lose up to 0.5 dB of PSNR against a write of the whole series
(measured on those dates: 41.7 -> 41.3 dB and 36.2 -> 35.7 dB on a Sentinel-2 cube at
crf 20 and 30, 38.4 -> 38.1 dB on BCSD climate fields at crf 20; tests/test_append.py);
with an error bound the bound would no longer hold for them, so such an append is
refused. Where the stored length is a multiple of the time chunk, the append makes the
chunks a write of the whole series makes, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.storage import StorePath

from eocube import encode, lifecycle, metrics, shards
from eocube.codec import VideoCodec
from eocube.layout import MARKER, STAGING, is_temporary
from eocube.profiles import get_profile
from eocube.ratecontrol import Control
from eocube.report import (
    EncodeReport,
    VariableReport,
    lossless_codecs,
    measure_errors,
    store_nbytes,
)
from eocube.resume import check_same_input, fingerprint_of, shard_intact
from eocube.rewrite import Box, rewrite_tasks
from eocube.variables import CubeVar, VariableEncoding, nodata_of

_ROLES = {4: ("time", "band", "y", "x"), 3: ("time", "y", "x")}
"""The roles of a cube variable's stored dims, by its number of dims."""

_RESUME_ADVICE = (
    "Resume with the data and arguments of the update that did not finish (the store "
    "still reads as it was before it)"
)


@dataclass(frozen=True)
class Requested:
    """The quality settings a ``to_eocube`` call gives, which an update must not contradict:
    the store keeps its own."""

    profile: str | None
    control: Control
    own: Mapping[Hashable, VariableEncoding]


@dataclass(frozen=True)
class Stored:
    """A finished store as an update sees it: the store, its zarr group, the dataset it
    reads as (lazily), its cube variables and its marker."""

    path: StorePath
    group: zarr.Group
    dataset: xr.Dataset
    cube_vars: dict[Hashable, CubeVar]
    marker: dict[str, Any]

    def array(self, name: Hashable) -> zarr.Array:
        """The zarr array of variable ``name``."""
        arr = self.group[str(name)]
        assert isinstance(arr, zarr.Array)
        return arr

    def codec(self, name: Hashable) -> VideoCodec:
        """The video codec of cube variable ``name``."""
        codec = self.array(name).serializer
        assert isinstance(codec, VideoCodec)
        return codec


def open_stored(store: Any, storage_options: Mapping[str, Any] | None) -> Stored:
    """Open a finished eocube store for an update."""
    from eocube.backend import open_dataset

    path = lifecycle.store_path(store, storage_options)
    group = zarr.open_group(path, mode="r", zarr_format=3)
    dataset = open_dataset(store, storage_options=storage_options)
    marker = dict(dataset.encoding.get(MARKER) or {})
    transposed = marker.get("dims") or {}
    cube_vars: dict[Hashable, CubeVar] = {}
    for name, arr in group.arrays():
        codec = arr.serializer
        if not isinstance(codec, VideoCodec) or arr.shards is None:
            continue
        order = dim_names(arr)
        fill = arr.fill_value
        cube_vars[name] = CubeVar(
            name=name,
            roles=dict(zip(_ROLES[len(order)], order, strict=True)),
            dims=tuple(transposed.get(name, order)),
            inner=tuple(arr.chunks),
            shard=tuple(arr.shards),
            dtype=np.dtype(arr.dtype),
            fill=float(fill) if np.dtype(arr.dtype).kind == "f" else int(fill),
            codec_nodata=codec.nodata,
            nodata=nodata_of(dataset[name]) if name in dataset else None,
        )
    return Stored(path, group, dataset, cube_vars, marker)


def dim_names(arr: zarr.Array) -> tuple[Hashable, ...]:
    """The dims of a stored array, as its metadata names them (zarr v3)."""
    return tuple(getattr(arr.metadata, "dimension_names", None) or ())


def update_store(
    obj: xr.Dataset,
    store: Any,
    target: lifecycle.TargetState,
    *,
    append_dim: Hashable | None,
    region: Mapping[Hashable, slice] | None,
    requested: Requested,
    storage_options: Mapping[str, Any] | None,
    resume: bool,
    compute: bool,
    progress: bool,
    measure: bool,
) -> Any:
    """Append to or write a region of the finished store ``store`` (see the module's
    docstring); the report, or with ``compute=False`` a ``dask.delayed`` that makes it."""
    started = time.perf_counter()
    if not target.complete:
        raise FileExistsError(
            f"{store}: its first write did not finish; finish it first with the call that "
            f"started it and resume=True (or start over with mode='w')"
        )
    stored = open_stored(store, storage_options)
    pending = target.pending
    if pending is not None and not resume:
        raise FileExistsError(
            f"{store}: an earlier {pending.get('kind', 'update')} of this store did not "
            f"finish; repeat that call with resume=True to finish it first (the store reads "
            f"as it was before it)"
        )
    ds = _conform(obj, stored)
    _check_settings(stored, requested, store)
    if append_dim is not None:
        plan = _plan_append(ds, stored, append_dim, store, resume and pending is None)
    else:
        assert region is not None
        plan = _plan_region(ds, stored, region, store)
    if plan is None:  # resume=True of an append that finished: nothing to write
        return _report(stored.path, ds, stored, _done_plan(ds, stored, append_dim), measure,
                       started, "complete")  # fmt: skip
    fingerprint = fingerprint_of(ds, plan.cube_vars, plan.settings)
    if pending is not None:
        check_same_input(store, pending.get("fingerprint") or {}, fingerprint, _RESUME_ADVICE)
    lifecycle.begin_update(
        stored.path,
        {"kind": plan.kind, **plan.settings, "fingerprint": fingerprint},
        fresh=pending is None,
    )
    # a resumed update keeps the shards it wrote before: those are measured read back
    resuming = pending is not None
    tasks = _tasks(ds, stored, plan, resuming=resuming, measure=measure and not resuming)
    import dask

    if not compute:
        return dask.delayed(_commit, pure=False)(tasks, ds, stored, plan, measure, started)
    results = encode.compute(tasks, progress)
    return _commit(results, ds, stored, plan, measure, started)


@dataclass(frozen=True)
class Plan:
    """What an update writes: its kind (``append`` or ``region``), the settings its
    fingerprint records, the box of each cube variable it writes (stored order) and the
    shapes of the arrays once committed, the slices each other variable gets."""

    kind: str
    settings: dict[str, Any]
    cube_vars: dict[Hashable, CubeVar]
    boxes: dict[Hashable, Box]
    shapes: dict[str, tuple[int, ...]]
    others: dict[Hashable, tuple[slice, ...]]
    old_length: int | None = None


def _conform(obj: xr.Dataset, stored: Stored) -> xr.Dataset:
    """``obj`` with the store's CF encoding on every variable the store has (so the new
    values are stored as the old ones were), its cube variables in stored order."""
    out = obj.copy(deep=False)
    for name, var in out.variables.items():
        if name in stored.dataset.variables:
            kept = stored.dataset.variables[name].encoding
            var.encoding = {k: v for k, v in kept.items() if k in encode.KEPT_ENCODING}
    moved = {
        name: out[name].transpose(*cv.order)
        for name, cv in stored.cube_vars.items()
        if name in out.data_vars and set(out[name].dims) == set(cv.order)
    }
    return out.assign(moved) if moved else out


def _check_settings(stored: Stored, requested: Requested, store: Any) -> None:
    """Refuse a call whose quality settings contradict the store's (an update keeps them)."""
    problems = []
    for name in stored.cube_vars:
        codec = stored.codec(name)
        own = requested.own.get(name, VariableEncoding())
        profile = own.profile or requested.profile
        control = Control.parse(**own.control) if own.control else requested.control
        if profile is not None and get_profile(profile).name != codec.profile:
            problems.append(f"{name!r} is coded with profile {codec.profile!r}, not {profile!r}")
        if control.name == "lossless" and not get_profile(codec.profile).lossless:
            problems.append(f"{name!r} is coded with the lossy profile {codec.profile!r}")
        if control.name == "crf" and control.value != codec.quality:
            problems.append(f"{name!r} is coded at crf={codec.quality}, not {control.value}")
        if control.name == "max_abs_error":
            bound = control.value
            if isinstance(bound, Mapping):
                bound = bound.get(name)
            if _as_bound(bound) != _as_bound(codec.max_abs_error):
                problems.append(
                    f"{name!r} is coded with max_abs_error={codec.max_abs_error}, not {bound}"
                )
    if problems:
        raise ValueError(
            f"{store}: an update keeps the store's settings, and this call asks for others: "
            f"{'; '.join(problems)}. Leave the quality arguments out (the store's are used), "
            f"or write the whole cube again with mode='w'"
        )


def _as_bound(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=float)))


def _check_variables(
    ds: xr.Dataset, stored: Stored, along: Sequence[Hashable], store: Any, *, every: bool
) -> None:
    """Refuse data that does not fit the store: variables it lacks (or, with ``every``,
    variables it has that the data lacks), other dims, dtypes or sizes, and variables
    without any dim in ``along`` whose values differ from the stored ones."""
    have, want = set(ds.variables), set(stored.dataset.variables)
    extra = sorted(map(str, have - want))
    missing = sorted(map(str, want - have)) if every else []
    if extra or missing:
        raise ValueError(
            f"{store}: the data does not have the store's variables"
            + (f"; the store has no {extra}" if extra else "")
            + (f"; the data has no {missing}" if missing else "")
            + ". An update writes the variables the store has"
        )
    for name, var in ds.variables.items():
        old = stored.dataset.variables[name]
        if set(var.dims) != set(old.dims):
            raise ValueError(
                f"{store}: variable {name!r} has dims {tuple(map(str, var.dims))}, the "
                f"store's has {tuple(map(str, old.dims))}"
            )
        # dates, strings: the same kind (their resolution or width may differ)
        same_kind = var.dtype.kind in "MmUSO" and var.dtype.kind == old.dtype.kind
        if var.dtype != old.dtype and not same_kind:
            raise ValueError(
                f"{store}: variable {name!r} is {var.dtype}, the store's is {old.dtype}: "
                f"cast it first (ds[{name!r}].astype({str(old.dtype)!r}))"
            )
        for dim in var.dims:
            if dim not in along and var.sizes[dim] != old.sizes[dim]:
                raise ValueError(
                    f"{store}: variable {name!r} has {var.sizes[dim]} along {dim!r}, the "
                    f"store's has {old.sizes[dim]}"
                )
        if not any(dim in along for dim in var.dims) and not _same_values(var, old):
            what = "coordinate" if name in ds.coords else "variable"
            raise ValueError(
                f"{store}: {what} {name!r} differs from the store's: an update writes "
                f"along {', '.join(map(repr, map(str, along)))} only, and everything else "
                f"must be the same"
            )


def _same_values(a: xr.Variable, b: xr.Variable) -> bool:
    left, right = np.asarray(a.transpose(*b.dims).values), np.asarray(b.values)
    if left.shape != right.shape:
        return False
    if left.dtype.kind in "fc":
        return bool(np.array_equal(left, right, equal_nan=True))
    return bool(np.array_equal(left, right))


def _plan_append(
    ds: xr.Dataset, stored: Stored, dim: Hashable, store: Any, may_be_done: bool
) -> Plan | None:
    """The plan of an append along ``dim``; None when ``may_be_done`` (a resume without an
    update under way) and the store already ends with the data's dates."""
    for name, cv in stored.cube_vars.items():
        if cv.roles["time"] != dim:
            raise ValueError(
                f"{store}: append_dim={dim!r} is not the time dim of variable {name!r} "
                f"({cv.roles['time']!r}): eocube appends dates, along the time dim"
            )
    _check_variables(ds, stored, [dim], store, every=True)
    old_length = stored.dataset.sizes[dim]
    if may_be_done and _ends_with(stored.dataset, ds, dim):
        return None
    _check_increasing(ds, stored, dim, store)
    new_length = old_length + ds.sizes[dim]
    boxes, shapes = {}, {}
    for name, cv in stored.cube_vars.items():
        axis = cv.order.index(dim)
        codec = stored.codec(name)
        if old_length % cv.inner[axis] and codec.max_abs_error is not None:
            raise ValueError(
                f"{store}: variable {name!r} ends within a time chunk ({old_length} dates, "
                f"{cv.inner[axis]} per chunk): an append re-encodes that chunk's stored "
                f"dates from their decoded values, and max_abs_error={codec.max_abs_error} "
                f"would no longer hold for them. Append to a store whose length is a "
                f"multiple of its time chunk (e.g. one created with mode='a', whose chunks "
                f"fill as dates come), or write the whole series again"
            )
        shape = list(stored.array(name).shape)
        start = [0] * len(shape)
        start[axis], shape[axis] = old_length, new_length
        boxes[name] = Box(tuple(start), tuple(shape))
    others = {}
    for name in stored.dataset.variables:
        arr = stored.array(name)
        order = dim_names(arr)
        if dim in order:
            axis = order.index(dim)
            shape = list(arr.shape)
            shape[axis] = new_length
            shapes[str(name)] = tuple(shape)
            if name not in stored.cube_vars:
                where = [slice(None)] * len(order)
                where[axis] = slice(old_length, new_length)
                others[name] = tuple(where)
    settings = {"append_dim": str(dim), "length": old_length}
    return Plan("append", settings, stored.cube_vars, boxes, shapes, others, old_length=old_length)


def _done_plan(ds: xr.Dataset, stored: Stored, dim: Hashable | None) -> Plan:
    """The plan of an append that finished: its boxes are the store's last dates."""
    assert dim is not None
    total = stored.dataset.sizes[dim]
    boxes = {}
    for name, cv in stored.cube_vars.items():
        shape = list(stored.array(name).shape)
        start = [0] * len(shape)
        start[cv.order.index(dim)] = total - ds.sizes[dim]
        boxes[name] = Box(tuple(start), tuple(shape))
    return Plan("append", {}, stored.cube_vars, boxes, {}, {})


def _ends_with(old: xr.Dataset, new: xr.Dataset, dim: Hashable) -> bool:
    """Whether the store's coordinate along ``dim`` ends with the data's."""
    if dim not in old.coords or dim not in new.coords or new.sizes[dim] > old.sizes[dim]:
        return False
    tail = old[dim].values[old.sizes[dim] - new.sizes[dim] :]
    return bool(np.array_equal(tail, new[dim].values))


def _check_increasing(ds: xr.Dataset, stored: Stored, dim: Hashable, store: Any) -> None:
    """Refuse dates that do not follow the stored ones, strictly increasing."""
    if dim not in ds.coords or dim not in stored.dataset.coords:
        return
    new = pd.Index(np.asarray(ds[dim].values))
    if not (new.is_monotonic_increasing and new.is_unique):
        steps = np.asarray(ds[dim].values)
        at = next(i for i in range(1, len(steps)) if not steps[i] > steps[i - 1])
        raise ValueError(
            f"{store}: the data's {dim!r} is not increasing ({steps[at - 1]} then "
            f"{steps[at]} at position {at}): an append adds dates after the stored ones, "
            f"in order; sort them first (ds.sortby({str(dim)!r}))"
        )
    last = stored.dataset[dim].values[-1]
    if not new[0] > last:
        raise ValueError(
            f"{store}: the data's {dim!r} starts at {new[0]}, not after the store's last "
            f"{last}: an append adds dates after the stored ones (write over stored dates "
            f"with region=)"
        )


def _plan_region(
    ds: xr.Dataset, stored: Stored, region: Mapping[Hashable, slice], store: Any
) -> Plan:
    """The plan of a region write (``region``: dim -> slice of the store)."""
    sizes = stored.dataset.sizes
    where: dict[Hashable, tuple[int, int]] = {}
    for dim, sel in region.items():
        if dim not in sizes:
            raise ValueError(
                f"{store}: region= names {dim!r}, not a dim of the store "
                f"({sorted(map(str, sizes))})"
            )
        if not isinstance(sel, slice) or sel.step not in (None, 1):
            raise ValueError(
                f"{store}: region[{dim!r}] must be a slice with step 1 (as in "
                f"xarray's to_zarr), got {sel!r}"
            )
        start, stop, _ = sel.indices(sizes[dim])
        if stop <= start:
            raise ValueError(f"{store}: region[{dim!r}] = {sel!r} is empty in the store")
        if stop - start != ds.sizes.get(dim, -1):
            raise ValueError(
                f"{store}: region[{dim!r}] = {sel!r} spans {max(stop - start, 0)} along "
                f"{dim!r}, the data has {ds.sizes.get(dim, 'no such dim')}"
            )
        where[dim] = (start, stop)
    _check_variables(ds, stored, list(where), store, every=False)
    for name in ds.coords:
        var = ds.variables[name]
        if any(d in where for d in var.dims):
            old = stored.dataset.variables[name].isel(
                {d: slice(*where[d]) for d in var.dims if d in where}
            )
            if not _same_values(var, old):
                raise ValueError(
                    f"{store}: coordinate {name!r} of the data differs from the store's in "
                    f"region {_shown(where)}: a region write puts values at the store's "
                    f"coordinates, it does not move them"
                )
    cube_vars = {n: cv for n, cv in stored.cube_vars.items() if n in ds.data_vars}
    boxes = {}
    for name, cv in cube_vars.items():
        shape = stored.array(name).shape
        lo = [where.get(d, (0, n))[0] for d, n in zip(cv.order, shape, strict=True)]
        hi = [where.get(d, (0, n))[1] for d, n in zip(cv.order, shape, strict=True)]
        if not get_profile(stored.codec(name).profile).lossless:
            _check_aligned(name, cv, shape, lo, hi, store)
        boxes[name] = Box(tuple(lo), tuple(hi))
    others = {}
    for name in ds.data_vars:
        order = dim_names(stored.array(name))
        if name not in cube_vars and any(d in where for d in order):
            others[name] = tuple(slice(*where[d]) if d in where else slice(None) for d in order)
    settings = {"region": {str(d): list(v) for d, v in where.items()}}
    return Plan("region", settings, cube_vars, boxes, {}, others)


def _shown(where: Mapping[Hashable, tuple[int, int]]) -> str:
    return "{" + ", ".join(f"{str(d)!r}: slice({a}, {b})" for d, (a, b) in where.items()) + "}"


def _check_aligned(
    name: Hashable,
    cv: CubeVar,
    shape: Sequence[int],
    start: Sequence[int],
    stop: Sequence[int],
    store: Any,
) -> None:
    """Refuse a region that cuts through chunks of a lossy variable: the chunks it touches
    would be re-encoded from decoded values (a second coding loss for the values kept)."""
    for dim, a, b, c, n in zip(cv.order, start, stop, cv.inner, shape, strict=True):
        if a % c or (b % c and b != n):
            lo, hi = a - a % c, min(n, math.ceil(b / c) * c)
            raise ValueError(
                f"{store}: region {dim!r}=slice({a}, {b}) is not aligned with the chunks of "
                f"{name!r} ({c} per chunk along {dim!r}): a lossy variable is rewritten whole "
                f"chunks, so a region must start at a multiple of {c} and stop at one or at "
                f"the end ({n}); e.g. slice({lo}, {hi})"
            )


def _tasks(
    ds: xr.Dataset, stored: Stored, plan: Plan, *, resuming: bool, measure: bool = False
) -> list[Any]:
    """The dask tasks that write the update's chunks (none of its metadata); with
    ``measure`` they measure the values they encode."""
    import dask

    real = stored.path
    staged: frozenset[str] = frozenset()
    if resuming:
        root = real.path.strip("/")
        staged = frozenset(
            key[len(root) :].lstrip("/") if root else key
            for key in lifecycle.list_keys(real, STAGING)
            if not is_temporary(key)
        )
    tasks: list[Any] = []
    for name, cv in plan.cube_vars.items():
        arr = stored.array(name)
        shape = plan.shapes.get(str(name), tuple(arr.shape))
        box = plan.boxes[name]
        touched = box.shards(cv.shard)
        if resuming and plan.old_length is not None:
            touched = [s for s in touched if not _new_and_intact(arr, cv, s, plan.old_length)]
        tasks.extend(
            rewrite_tasks(ds[name], cv, arr, shape, box, real, touched, staged, measure=measure)
        )
    write = dask.delayed(_write_other, pure=False)
    for name, where in plan.others.items():
        arr = stored.array(name)
        shape = plan.shapes.get(str(name), tuple(arr.shape))
        values = _encoded(ds, name, dim_names(arr))
        tasks.append(write(arr, shape, where, values))
    return tasks


def _new_and_intact(arr: zarr.Array, cv: CubeVar, shard: tuple[int, ...], old: int) -> bool:
    """Whether a shard lies wholly after the stored dates and an interrupted append wrote
    it whole already (its index checks)."""
    if shard[0] * cv.shard[0] < old:
        return False
    per = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
    return shard_intact(arr.store_path.store, shards.shard_key(arr, shard), per)


def _encoded(ds: xr.Dataset, name: Hashable, order: Sequence[Hashable]) -> Any:
    """A variable's values as stored (CF-encoded with the store's encoding), in stored
    order, still lazy where they are; a date that the store's units cannot hold exactly
    is refused."""
    var = ds.variables[name].transpose(*order)
    try:
        encoded = xr.conventions.encode_cf_variable(var, name=name)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"variable {name!r} cannot be stored with the store's encoding ({var.encoding}): {exc}"
        ) from exc
    if var.dtype.kind == "M":
        back = xr.conventions.decode_cf_variable(name, encoded)
        if not np.array_equal(np.asarray(back.values), np.asarray(var.values)):
            raise ValueError(
                f"variable {name!r}: the store keeps {name!r} as {encoded.dtype} "
                f"{encoded.attrs.get('units', var.encoding.get('units'))!r}, which cannot "
                f"hold these dates exactly"
            )
    return encoded.data


def _write_other(
    arr: zarr.Array, shape: Sequence[int], where: tuple[slice, ...], values: Any
) -> None:
    """Write the values of a variable stored losslessly into its chunks (zarr rewrites a
    chunk it fills in part), through its metadata at the committed ``shape``: nothing of
    its metadata is written."""
    metadata: Any = arr.metadata.update_shape(tuple(shape))
    grown = zarr.Array(
        zarr.AsyncArray(
            metadata=metadata, store_path=arr.store_path, config=arr._async_array.config
        )
    )
    grown[where] = np.asarray(values).astype(grown.dtype, copy=False)


def _commit(
    results: Any,
    ds: xr.Dataset,
    stored: Stored,
    plan: Plan,
    measure: bool,
    started: float,
) -> EncodeReport:
    """Commit the update (:func:`eocube.lifecycle.commit_update`) and report it, once the
    store holds every shard the update's tasks reported (``results``: their results);
    else the update stays pending, for ``resume=True``. The recorded quality of lossy
    variables goes: it measured values this update changed."""
    lifecycle.check_written(stored.path, encode.written_shards(results))
    lossy = [str(n) for n in plan.cube_vars if not get_profile(stored.codec(n).profile).lossless]
    lifecycle.commit_update(stored.path, plan.shapes, lossy)
    return _report(
        stored.path, ds, stored, plan, measure, started, plan.kind, encode.tallies(results)
    )


def _report(
    path: StorePath,
    ds: xr.Dataset,
    stored: Stored,
    plan: Plan,
    measure: bool,
    started: float,
    control: str,
    tallies: Mapping[str, encode.Tally] | None = None,
) -> EncodeReport:
    """The report of an update: sizes of the whole store; PSNR and max abs error (when
    ``measure``) of the values this update wrote, as its tasks measured them
    (``tallies``), or else read back."""
    from eocube.backend import open_dataset
    from eocube.shards import payload_nbytes

    tallies = tallies or {}
    group = zarr.open_group(path, mode="r", zarr_format=3)
    unmeasured = [n for n in plan.boxes if (t := tallies.get(str(n))) is None or t.stats is None]
    reopened = open_dataset(path) if measure and unmeasured else None
    variables = {}
    values = original = 0
    for name, cv in stored.cube_vars.items():
        arr = group[str(name)]
        assert isinstance(arr, zarr.Array)
        codec = arr.serializer
        assert isinstance(codec, VideoCodec)
        payload = payload_nbytes(arr)
        size = math.prod(arr.shape)
        values += size
        original += size * stored.dataset[name].dtype.itemsize
        quality: dict[str, Any] = {}
        tally = tallies.get(str(name))
        stats = tally.stats if measure and tally is not None else None
        if stats is None and reopened is not None and name in plan.boxes:
            box = plan.boxes[name]
            where = {d: slice(a, b) for d, a, b in zip(cv.order, box.start, box.stop, strict=True)}
            stats = measure_errors(
                ds[name].transpose(*cv.order), reopened[name].transpose(*cv.order)[where], cv
            )
        if stats is not None:
            quality = {
                "psnr": stats.psnr(),
                "psnr_per_band": tuple(float(p) for p in stats.psnr_per_band()),
                "max_abs_error": stats.max_abs_error(),
                "max_abs_error_per_band": tuple(float(e) for e in stats.max_error),
            }
        variables[str(name)] = VariableReport(
            name=str(name),
            shape=tuple(arr.shape[cv.order.index(d)] for d in cv.dims),
            dtype=str(stored.dataset[name].dtype),
            profile=codec.profile,
            quality=codec.quality,
            payload_nbytes=payload,
            bpppb=metrics.bpppb(payload, tuple(arr.shape)),
            error_bound=codec.max_abs_error,
            **quality,
        )
    if reopened is not None:
        reopened.close()
    nbytes = store_nbytes(path)
    others = {
        str(n): "not video-coded in the store"
        for n in stored.dataset.data_vars
        if n not in stored.cube_vars
    }
    return EncodeReport(
        store=str(path),
        nbytes=nbytes,
        original_nbytes=int(original),
        values=int(values),
        bpppb=nbytes * 8 / values if values else math.inf,
        compression_ratio=original / nbytes if nbytes else math.inf,
        variables=variables,
        seconds=time.perf_counter() - started,
        control=control,
        stored_losslessly=others,
        lossless_codecs=lossless_codecs(group, others),
    )
