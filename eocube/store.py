"""Writing cubes: :func:`to_eocube` and its :class:`EncodeReport`."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError, UnstableSpecificationWarning
from zarr.storage import StorePath

from eocube import metrics
from eocube.codec import VideoCodec
from eocube.dims import cube_roles
from eocube.errors import EocubeError
from eocube.profiles import get_profile
from eocube.linear import LinearCodec
from eocube.storage import list_keys, payload_nbytes

FORMAT_VERSION = 1
DEFAULT_CHUNKS = {"time": 32, "y": 256, "x": 256}
"""Default chunk per role; bands always stay in one chunk."""
SHARD_CHUNKS = {"time": 16, "y": 4, "x": 4}
"""Chunks per shard along each role, at most (so a cube is a handful of objects)."""

# CF/xarray encoding that describes values and must survive the round trip;
# the rest (netCDF4 compression settings, source paths) describes the input file.
_KEPT_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


@dataclass(frozen=True)
class VariableReport:
    """Size and quality of one cube variable."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    profile: str
    quality: int | None
    payload_nbytes: int
    bpppb: float
    psnr: float | None = None
    psnr_per_band: tuple[float, ...] | None = None
    max_abs_error: float | None = None


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
    bpppb : float
        ``nbytes`` × 8 over the number of values of the cube variables.
    compression_ratio : float
        ``original_nbytes / nbytes``.
    variables : dict of str to VariableReport
        Per cube variable: payload bytes, bpppb of its payload, and when measured
        PSNR (DESIGN.md definition) and max abs error.
    seconds : float
        Wall time of the write.
    """

    store: str
    nbytes: int
    original_nbytes: int
    bpppb: float
    compression_ratio: float
    variables: dict[str, VariableReport] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        lines = [
            f"{self.store}: {self.nbytes} bytes, {self.bpppb:.4f} bpppb, "
            f"ratio {self.compression_ratio:.1f}, {self.seconds:.1f} s",
            f"  {'variable':16s} {'profile':20s} {'payload B':>10s} {'bpppb':>8s} {'PSNR dB':>8s} {'max err':>10s}",
        ]
        for v in self.variables.values():
            psnr = "-" if v.psnr is None else f"{v.psnr:.2f}"
            err = "-" if v.max_abs_error is None else f"{v.max_abs_error:.4g}"
            lines.append(
                f"  {v.name:16s} {v.profile:20s} {v.payload_nbytes:10d} {v.bpppb:8.4f} {psnr:>8s} {err:>10s}"
            )
        return "\n".join(lines)


def _as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "data")
    raise TypeError(f"to_eocube takes an xarray Dataset or DataArray, not {type(obj).__name__}")


def _is_categorical(var: xr.DataArray) -> bool:
    return any(k in var.attrs for k in ("flag_values", "flag_masks", "flag_meanings"))


def _nodata(var: xr.DataArray) -> float | None:
    for value in (var.attrs.get("nodata"), var.encoding.get("_FillValue")):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


def _chunk_shape(
    var: xr.DataArray, roles: Mapping[str, Hashable], chunks: Mapping[Hashable, int] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    requested = dict(chunks or {})
    inner, shard = [], []
    for role, dim in roles.items():
        size = var.sizes[dim]
        if role == "band":
            if requested.get(dim, requested.get("band", size)) != size:
                raise ValueError(f"variable {var.name!r}: all bands stay in one chunk ({dim}={size})")
            inner.append(size)
            shard.append(size)
            continue
        c = int(requested.get(dim, requested.get(role, DEFAULT_CHUNKS[role])))
        if c <= 0:
            raise ValueError(f"variable {var.name!r}: chunk size for {dim} must be positive, got {c}")
        c = min(c, size)
        inner.append(c)
        shard.append(c * min(SHARD_CHUNKS[role], math.ceil(size / c)))
    return tuple(inner), tuple(shard)


def _store_path(
    store: Any, storage_options: Mapping[str, Any] | None, mode: str = "r"
) -> StorePath:
    kwargs = {"storage_options": dict(storage_options)} if storage_options else {}
    return zarr.open_group(store, mode=mode, zarr_format=3, **kwargs).store_path


def to_eocube(
    obj: xr.Dataset | xr.DataArray,
    store: Any,
    *,
    profile: str | None = None,
    lossless: bool = False,
    crf: int | None = None,
    chunks: Mapping[Hashable, int] | None = None,
    dims: Mapping[str, Hashable] | None = None,
    variables: Sequence[Hashable] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    mode: str = "w-",
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
    crf : int, optional
        The lossy profile's quality; lower is better and bigger.
    chunks : mapping, optional
        Chunk size per dim (or role: time, y, x); bands always stay in one chunk.
        Default: 32 time steps × 256 × 256 px.
    dims : mapping, optional
        Role (time, band, y, x) to dim name, overriding the recognised spellings.
    variables : sequence, optional
        The variables to encode as video; default: every cube variable. Others are
        stored losslessly.
    storage_options : mapping, optional
        Passed to fsspec.
    mode : {"w-", "w"}
        ``"w-"`` refuses to overwrite an existing store; ``"w"`` overwrites.
    progress : bool
        Show a progress bar (dask) while encoding.
    measure : bool
        Read the store back to report PSNR and max abs error per variable.
    per_array_metadata : bool
        Also keep a ``zarr.json`` per array. By default all metadata lives in the
        root ``zarr.json`` (consolidated), which zarr-python and xarray read in one
        request; readers that open arrays by path without the group need this.

    Returns
    -------
    EncodeReport
    """
    if lossless and crf is not None:
        raise ValueError("lossless=True and crf= conflict: choose one")
    if mode not in ("w-", "w"):
        raise ValueError(f"mode must be 'w-' or 'w', got {mode!r}")
    ds = _as_dataset(obj)
    prof = get_profile(profile, lossless=lossless)
    if lossless and not prof.lossless:
        raise ValueError(f"lossless=True needs a lossless profile; {prof.name!r} is lossy")
    if not lossless and crf is not None and prof.lossless:
        raise ValueError(f"profile {prof.name!r} is lossless: it takes no crf")
    started = time.perf_counter()

    cube_vars: dict[Hashable, dict[str, Hashable]] = {}
    for name, var in ds.data_vars.items():
        roles = cube_roles(var, dims)
        if variables is not None and name not in variables:
            continue
        if roles is not None and variables is None and _is_categorical(var):
            continue  # class maps and bit flags must not go through a lossy codec
        if roles is None:
            if variables is not None:
                raise ValueError(
                    f"variable {name!r} has dims {var.dims}; a cube variable needs "
                    f"(time, band, y, x) or (time, y, x) (pass dims= to name them)"
                )
            continue
        cube_vars[name] = roles
    if not cube_vars:
        raise ValueError(
            "no cube variable found: none has dims (time, band, y, x) or (time, y, x); "
            "pass dims={'time': ..., 'band': ..., 'y': ..., 'x': ...} to name them"
        )

    out = ds.copy(deep=False)
    encoding: dict[Hashable, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out.variables[name]
        kept = {k: v for k, v in var.encoding.items() if k in _KEPT_ENCODING}
        var.encoding = {}
        if var.ndim == 1 and var.dtype.kind in "iufM":
            # regular axes (pixel centres, dates) cost two numbers
            kept.update(serializer=LinearCodec(), compressors=[ZstdCodec(level=19)])
        elif name not in cube_vars:
            kept.update(compressors=[ZstdCodec(level=9)])
        encoding[name] = kept
    for name, roles in cube_vars.items():
        var = ds[name]
        inner, shard = _chunk_shape(var, roles, chunks)
        dtype = np.dtype(encoding[name].get("dtype", var.dtype))
        nodata = _nodata(var)
        if dtype.kind == "f":
            fill: float | int = math.nan
            codec_nodata = nodata
        else:
            # the fill value is treated as missing, so edge-chunk padding costs no bits;
            # real values equal to it are restored exactly from the mask
            fill = int(nodata) if nodata is not None else int(np.iinfo(dtype).max)
            codec_nodata = float(fill)
        encoding[name].update(
            chunks=inner,
            shards=shard,
            serializer=VideoCodec(profile=prof.name, quality=crf, nodata=codec_nodata),
            compressors=[Crc32cCodec()],
            fill_value=fill,
        )
        # one dask task per shard: shards encode in parallel, memory stays bounded by a
        # few shards, and the progress bar counts them
        out[name] = var.chunk(dict(zip(var.dims, shard, strict=True)))

    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    out.attrs = dict(out.attrs)
    out.attrs["eocube"] = {"format": FORMAT_VERSION}
    with warnings.catch_warnings(), zarr.config.set({"json_indent": None}):
        # fixed-length strings (band names) and consolidated metadata are not yet in the
        # zarr v3 spec; zarr-python reads both, and so does eocube
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        try:
            writer = out.to_zarr(
                store,
                mode=mode,
                storage_options=dict(storage_options) if storage_options else None,
                zarr_format=3,
                consolidated=True,
                encoding=encoding,
                compute=False,
            )
        except (ContainsGroupError, ContainsArrayError, FileExistsError) as exc:
            raise FileExistsError(
                f"{store} already exists; pass mode='w' to overwrite it"
            ) from exc
    with warnings.catch_warnings(), zarr.config.set({"json_indent": None}):
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                writer.compute()
        else:
            writer.compute()
    store_path = _store_path(store, storage_options, "r+")
    if not per_array_metadata:
        _drop_per_array_metadata(store_path)
    seconds = time.perf_counter() - started
    return _report(ds, store_path, cube_vars, prof.name, crf, seconds, measure)


def _report(
    ds: xr.Dataset,
    store_path: StorePath,
    cube_vars: Mapping[Hashable, Mapping[str, Hashable]],
    profile: str,
    quality: int | None,
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
    for name in cube_vars:
        var = ds[name]
        payload = payload_nbytes(group, str(name))
        rep: dict[str, Any] = {}
        if reopened is not None:
            orig = np.asarray(var.values)
            dec = np.asarray(reopened[name].values)
            nodata = _nodata(var)
            per_band = metrics.psnr_per_band(orig, dec, nodata)
            rep = dict(
                psnr=metrics.psnr(orig, dec, nodata),
                psnr_per_band=tuple(float(p) for p in per_band),
                max_abs_error=metrics.max_abs_error(orig, dec, nodata),
            )
        reports[str(name)] = VariableReport(
            name=str(name),
            shape=tuple(var.shape),
            dtype=str(var.dtype),
            profile=profile,
            quality=quality,
            payload_nbytes=payload,
            bpppb=metrics.bpppb(payload, var.shape),
            **rep,
        )
    if reopened is not None:
        reopened.close()
    return EncodeReport(
        store=str(store_path),
        nbytes=nbytes,
        original_nbytes=int(original),
        bpppb=nbytes * 8 / values,
        compression_ratio=original / nbytes if nbytes else math.inf,
        variables=reports,
        seconds=seconds,
    )


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
