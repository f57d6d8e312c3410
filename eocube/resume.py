"""Finishing an interrupted write, once sure it is the same input with the same settings.

A write records a fingerprint of its input and settings in the unfinished store
(shapes, dtypes, dims, chunks, the coordinates' and a few chunks' hashes, the quality
control): :func:`check_same_input` refuses anything else. :func:`resume_write` keeps
every intact shard (read by its index alone) and every staged chunk, and encodes only
what is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import StorePath

from eocube import encode, lifecycle, shards
from eocube.codec import VideoCodec
from eocube.errors import CorruptChunkError
from eocube.layout import MARKER, STAGING, STORE_FORMAT, is_temporary
from eocube.report import EncodeReport, make_report, record_quality, store_nbytes
from eocube.variables import CubeVar

FINGERPRINT_CHUNKS = 8
"""Chunks per cube variable whose values are hashed into the fingerprint that resume
checks (spread over the chunk grid; all of them in smaller cubes)."""


def settings_json(value: Any) -> Any:
    """A setting as JSON data (numbers, lists, mappings of str)."""
    if isinstance(value, Mapping):
        return {str(k): settings_json(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | list | tuple):
        return [settings_json(v) for v in value]
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


def fingerprint_of(
    ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar], settings: Mapping[str, Any]
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


def check_same_input(
    store: Any,
    recorded: Mapping[str, Any],
    now: Mapping[str, Any],
    advice: str = "Resume with the same input and settings, or pass mode='w' to start over",
) -> None:
    """Refuse to resume a write with another input or other settings, saying what differs
    (and then ``advice``)."""
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
        raise ValueError(f"{store}: cannot resume: {'; '.join(differences)}. {advice}")


def shard_intact(store: Any, key: str, per_shard: int) -> bool:
    """Whether a shard object is whole: its index (read alone) checks and fits the object."""
    try:
        return shards.read_index(store, key, per_shard) is not None
    except CorruptChunkError:
        return False


def resume_write(
    ds: xr.Dataset,
    store: Any,
    target: lifecycle.TargetState,
    cube_vars: Mapping[Hashable, CubeVar],
    others: Mapping[str, str],
    fingerprint: Mapping[str, Any],
    storage_options: Mapping[str, Any] | None,
    progress: bool,
    per_array_metadata: bool,
    measure: bool,
    started: float,
) -> EncodeReport:
    """Finish an interrupted write (or report a finished one) after checking its input."""
    real = lifecycle.store_path(store, storage_options)
    if not target.complete:
        assert target.root is not None
        recorded = (lifecycle.incomplete_details(target.root) or {}).get("fingerprint")
        if recorded is None:
            raise ValueError(
                f"{store}: cannot resume: its write did not finish and it records no "
                f"fingerprint of its input (an older eocube wrote it); pass mode='w' to "
                f"start over"
            )
        check_same_input(store, recorded, fingerprint)
        view = lifecycle.UnfinishedView(real.store, details={"fingerprint": dict(fingerprint)})
        path = StorePath(view, real.path)
        group = zarr.open_group(path, mode="r+", zarr_format=3)
        staged = frozenset(
            key[len(real.path) :].lstrip("/") if real.path else key
            for key in lifecycle.list_keys(real, STAGING)
            if not is_temporary(key)
        )
        out, _ = encode.prepare(ds, cube_vars, *stored_settings(group, cube_vars))
        tasks = encode.lossless_tasks(out, cube_vars, view, real.path)
        for name, cv in cube_vars.items():
            arr = group[str(name)]
            assert isinstance(arr, zarr.Array)
            per_shard = math.prod(s // c for s, c in zip(cv.shard, cv.inner, strict=True))
            counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
            missing = [
                idx
                for idx in itertools.product(*(range(c) for c in counts))
                if not shard_intact(real.store, shards.shard_key(arr, idx), per_shard)
            ]
            if missing:
                tasks.extend(encode.cube_tasks(ds, name, cv, arr, real, missing, staged))
        results = encode.compute(tasks, progress)
        marker = dict((target.root.get("attributes") or {}).get(MARKER) or {})
        marker.update(format=STORE_FORMAT, complete=True)
        # the shards kept were checked above (their index); those written now are checked
        lifecycle.finish(real, marker, per_array_metadata, written=encode.written_shards(results))
    group = zarr.open_group(real, mode="r", zarr_format=3)
    profiles, quality, bounds = stored_settings(group, cube_vars)
    made = with_profiles(
        make_report(
            ds,
            real,
            cube_vars,
            others,
            next(iter(profiles.values())),
            quality,
            bounds,
            time.perf_counter() - started,
            measure,
        ),
        profiles,
    )
    if not target.complete:
        record_quality(real, made)
    return replace(
        made,
        nbytes=store_nbytes(real),
        seconds=time.perf_counter() - started,
        control="complete" if target.complete else "resume",
    )


def stored_settings(
    group: zarr.Group, cube_vars: Iterable[Hashable]
) -> tuple[dict[Hashable, str], dict[Hashable, float | None], dict[Hashable, Any]]:
    """Profile, quality and error bound per variable, as the store's codecs record them."""
    profiles: dict[Hashable, str] = {}
    quality: dict[Hashable, float | None] = {}
    bounds: dict[Hashable, Any] = {}
    for name in cube_vars:
        arr = group[str(name)]
        assert isinstance(arr, zarr.Array)
        codec = arr.serializer
        if not isinstance(codec, VideoCodec):
            raise ValueError(f"array {name!r} of {group.store_path} is not video-coded")
        profiles[name] = codec.profile
        quality[name] = codec.quality
        if codec.max_abs_error is not None:
            bounds[name] = codec.max_abs_error
    return profiles, quality, bounds


def with_profiles(report: EncodeReport, profiles: Mapping[Hashable, str]) -> EncodeReport:
    """``report`` with each variable's own profile (a store may use several)."""
    named = {str(k): v for k, v in profiles.items()}
    variables = {
        name: replace(v, profile=named.get(name, v.profile)) for name, v in report.variables.items()
    }
    return replace(report, variables=variables)
