"""Checking a store against its source: the same cube, at the quality the store recorded.

:func:`verify_store` fails a variable when the source does not match the store: another
shape or dims, other coordinates, a PSNR more than a margin below the one measured when
the store was written (for a lossless store: any difference), a broken error bound,
values missing (NaN or nodata) in one and valid in the other, or a damaged chunk. It
never calls a mismatch OK because the error happens to be small.
With ``progress=True`` it counts the stored chunks compared (:mod:`eocube.progress`),
and it logs each variable's outcome on the ``eocube.verify`` logger at INFO.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from eocube import metrics
from eocube.codec import VideoCodec
from eocube.dims import recognise
from eocube.errors import CorruptChunkError
from eocube.progress import track
from eocube.reader import CODEC_ENCODING
from eocube.variables import nodata_of

logger = logging.getLogger(__name__)

DEFAULT_PSNR_MARGIN = 0.1
"""dB the PSNR measured against a source may fall below the recorded one."""


def _coordinate_problem(dim: Hashable, stored: xr.DataArray, source: xr.DataArray) -> str | None:
    a, b = np.asarray(stored.values), np.asarray(source.values)
    if a.shape != b.shape:
        return f"coordinate {dim!r} has {a.size} values in the store, {b.size} in the source"
    same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc")
    if same:
        return None
    first = int(np.flatnonzero(a.ravel() != b.ravel())[0]) if a.size else 0
    return (
        f"coordinate {dim!r} differs from the source's (first at index {first}: "
        f"{a.ravel()[first]} in the store, {b.ravel()[first]} in the source)"
    )


def _chunk_counts(stored: xr.DataArray) -> dict[Hashable, int]:
    """Stored chunks of ``stored`` along each of its dims."""
    preferred = stored.encoding.get("preferred_chunks") or {}
    return {d: -(-n // int(preferred.get(d, n) or 1)) for d, n in stored.sizes.items()}


def stored_chunks(stored: xr.DataArray) -> int:
    """How many stored chunks :func:`verify_variable` compares for ``stored``."""
    return math.prod(_chunk_counts(stored).values())


def _stats(
    stored: xr.DataArray,
    source: xr.DataArray,
    nodata: float | None,
    advance: Callable[[int], None] | None,
) -> tuple[metrics.ErrorStats, int, int]:
    """Error statistics, a slab of stored time chunks at a time (bounded memory), and
    how many values are valid in the source but missing (NaN or nodata) in the store,
    and the other way round."""
    dim = stored.dims[0]
    preferred = stored.encoding.get("preferred_chunks") or {}
    step = int(preferred.get(dim, stored.sizes[dim]))
    per_slab = math.prod(n for d, n in _chunk_counts(stored).items() if d != dim)
    stats = None
    lost = invented = 0
    for start in range(0, stored.sizes[dim], step):
        region = {dim: slice(start, start + step)}
        original = np.asarray(source.isel(region).values)
        decoded = np.asarray(stored.isel(region).values)
        piece = metrics.ErrorStats.of(original, decoded, nodata)
        stats = piece if stats is None else stats.merge(piece)
        was = metrics.valid_mask(original, nodata)
        now = metrics.valid_mask(decoded, nodata)
        lost += int(np.count_nonzero(was & ~now))
        invented += int(np.count_nonzero(now & ~was))
        if advance is not None:
            advance(per_slab)
    assert stats is not None
    return stats, lost, invented


def verify_variable(
    name: Hashable,
    stored: xr.DataArray,
    source: xr.DataArray,
    *,
    recorded: Mapping[str, Any] | None = None,
    bound: float | tuple[float, ...] | None = None,
    psnr_margin: float = DEFAULT_PSNR_MARGIN,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Compare one video-coded variable with its source; ``problems`` lists what fails.

    ``advance``, when given, is called with the number of stored chunks compared after
    each slab of time chunks (:func:`stored_chunks` in all, unless a check fails first).
    """
    entry: dict[str, Any] = {"problems": [], "notes": []}
    problems: list[str] = entry["problems"]
    if set(source.dims) != set(stored.dims):
        problems.append(f"dims {stored.dims} in the store, {source.dims} in the source")
        return entry
    source = source.transpose(*stored.dims)
    if source.shape != stored.shape:
        problems.append(f"shape {stored.shape} in the store, {source.shape} in the source")
        return entry
    for dim in stored.dims:
        if dim in stored.coords or dim in source.coords:
            if dim not in stored.coords or dim not in source.coords:
                problems.append(f"coordinate {dim!r} is in only one of store and source")
                continue
            problem = _coordinate_problem(dim, stored.coords[dim], source.coords[dim])
            if problem:
                problems.append(problem)
    if problems:
        return entry
    roles = recognise(stored).roles
    if roles is not None:  # the metrics take (time, band, y, x)
        order = tuple(roles.values())
        stored, source = stored.transpose(*order), source.transpose(*order)
    nodata = nodata_of(source)
    try:
        stats, lost, invented = _stats(stored, source, nodata, advance)
        entry["checksums"] = "ok"
    except CorruptChunkError as exc:
        entry["checksums"] = "failed"
        problems.append(f"a chunk is damaged: {exc}")
        return entry
    missing = "NaN" if nodata is None else f"NaN or nodata {nodata:g}"
    if lost:
        # within any error bound, yet lost to the reader: writers before commit 200b469
        # could decode a valid value onto nodata (under a bound, or with a nodata inside a
        # band's range)
        problems.append(
            f"{lost} values valid in the source read as missing ({missing}) in the store"
        )
    if invented:
        problems.append(
            f"{invented} values missing in the source ({missing}) are valid in the store"
        )
    entry.update(
        psnr=stats.psnr(),
        psnr_per_band=stats.psnr_per_band().tolist(),
        max_abs_error=stats.max_abs_error(),
        max_abs_error_per_band=stats.max_error.tolist(),
    )
    if bound is not None:
        bounds = np.broadcast_to(np.asarray(bound, dtype=float), stats.max_error.shape)
        entry["bound"] = bounds.tolist()
        entry["bound_held"] = bool(np.all(stats.max_error <= bounds))
        if not entry["bound_held"]:
            problems.append(
                f"max abs error {stats.max_abs_error():.6g} breaks the bound "
                f"{bounds.tolist() if bounds.size > 1 else float(bounds[0])}"
            )
    psnr = (recorded or {}).get("psnr")
    if psnr is None:
        entry["notes"].append(
            "the store records no quality (written with measure=False): shapes, "
            "coordinates, checksums and bounds checked, not the values' fidelity"
        )
        return entry
    entry["recorded_psnr"] = psnr
    if float(psnr) == math.inf:
        if stats.max_abs_error() != 0:
            problems.append(
                f"the store is lossless, but its values differ from the source's by up to "
                f"{stats.max_abs_error():.6g}: the source is not the input of this store"
            )
    elif stats.psnr() < float(psnr) - psnr_margin:
        problems.append(
            f"PSNR {stats.psnr():.2f} dB against the source, {float(psnr):.2f} dB recorded "
            f"when the store was written (more than {psnr_margin:g} dB below): the source is "
            f"not the input of this store"
        )
    return entry


def verify_store(
    stored: xr.Dataset,
    source: xr.Dataset,
    *,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
    bound: float | tuple[float, ...] | None = None,
    psnr_margin: float = DEFAULT_PSNR_MARGIN,
    progress: bool = False,
) -> dict[str, Any]:
    """Compare every video-coded variable of an opened store with its source.

    Parameters
    ----------
    stored : xarray.Dataset
        The store, opened with ``engine="eocube"``.
    source : xarray.Dataset
        What the store is said to hold.
    recorded : mapping, optional
        The quality the store recorded per variable (its marker's ``quality``).
    bound : float or tuple of float, optional
        An error bound to check instead of the store's own ``max_abs_error``.
    psnr_margin : float
        dB the measured PSNR may fall below the recorded one.
    progress : bool
        Show progress over the stored chunks compared (:mod:`eocube.progress`).

    Returns
    -------
    dict
        ``ok`` and, per variable, its ``problems`` (empty when it matches), notes and
        measured PSNR, max abs error and bound check.
    """
    result: dict[str, Any] = {"ok": True, "variables": {}}
    coded = {
        name: (var, codec)
        for name, var in stored.data_vars.items()
        if isinstance(codec := var.encoding.get(CODEC_ENCODING), VideoCodec)
    }
    total = sum(stored_chunks(var) for var, _ in coded.values())
    with track(total, label="verify", unit="chunks", show=progress) as bar:
        for name, (var, codec) in coded.items():
            end = bar.done + stored_chunks(var)
            if name not in source.data_vars:
                entry: dict[str, Any] = {
                    "problems": [f"the source has no variable {name!r} ({list(source.data_vars)})"]
                }
            else:
                entry = verify_variable(
                    name,
                    var,
                    source[name],
                    recorded=(recorded or {}).get(str(name)),
                    bound=bound if bound is not None else codec.max_abs_error,
                    psnr_margin=psnr_margin,
                    advance=bar.advance,
                )
            bar.advance(end - bar.done)  # the chunks of a variable whose checks stopped early
            _log(name, entry)
            result["ok"] &= not entry["problems"]
            result["variables"][str(name)] = entry
    return result


def _log(name: Hashable, entry: Mapping[str, Any]) -> None:
    if entry["problems"]:
        logger.info("verify %s: FAILED: %s", name, "; ".join(entry["problems"]))
    else:
        logger.info(
            "verify %s: OK, PSNR %.2f dB, max abs error %.6g",
            name,
            entry["psnr"],
            entry["max_abs_error"],
        )
