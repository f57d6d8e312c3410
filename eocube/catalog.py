"""The Parquet catalog of a release: one row per cube, filtered without touching the cubes.

Columns (:data:`SCHEMA`): ``id``, ``path`` (of the store, relative to the release),
``variables`` (the video-coded ones), ``dims``, ``shape``, ``bands``, ``dtype`` (of the
main variable: the largest), ``crs``, ``xmin``/``ymin``/``xmax``/``ymax`` (outer edges of
the pixels, in the CRS), ``time_start``/``time_end``, ``profile``, ``quality``,
``lossless``, ``bytes`` (every object of the store), ``bpppb``, ``psnr`` (the lowest over
the cube's variables, docs/format.md definition), ``max_abs_error``.

Rows are sorted by id and written in small row groups, each with min/max statistics, so
:func:`open_catalog` reads the footer and only the row groups a filter can match. A row
group costs about 2 kB of footer (metadata of its ~20 column chunks), about as much as
50 rows of data, so the footer plus one row group is smallest near 7·√N rows per group
for N rows: :func:`default_row_group_size` picks that, at least 16.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import xarray as xr

from eocube.dims import cube_roles
from eocube.hubfs import filesystem
from eocube.profiles import get_profile
from eocube.report import EncodeReport

MIN_ROW_GROUP_SIZE = 16

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("variables", pa.list_(pa.string())),
        ("dims", pa.list_(pa.string())),
        ("shape", pa.list_(pa.int64())),
        ("bands", pa.list_(pa.string())),
        ("dtype", pa.string()),
        ("crs", pa.string()),
        ("xmin", pa.float64()),
        ("ymin", pa.float64()),
        ("xmax", pa.float64()),
        ("ymax", pa.float64()),
        ("time_start", pa.timestamp("us")),
        ("time_end", pa.timestamp("us")),
        ("profile", pa.string()),
        ("quality", pa.float64()),
        ("lossless", pa.bool_()),
        ("bytes", pa.int64()),
        ("bpppb", pa.float64()),
        ("psnr", pa.float64()),
        ("max_abs_error", pa.float64()),
    ]
)

Filters: TypeAlias = pc.Expression | Sequence[Any]
"""A pyarrow expression, or filters in ``pyarrow.parquet``'s list-of-tuples form."""

_EPSG = re.compile(r'(?:AUTHORITY\["EPSG",\s*"(\d+)"\]|ID\["EPSG",\s*(\d+)\])\]\s*$')


def crs_of(ds: xr.Dataset, var: xr.DataArray) -> str | None:
    """The CRS of ``var`` as ``"EPSG:<code>"`` when it names one, else its WKT, else None.

    Looks at the grid-mapping variable (``grid_mapping`` attribute, or ``spatial_ref``:
    the rioxarray/CF convention, attributes ``crs_wkt`` or ``spatial_ref``), then at
    ``ds.attrs["crs"]``.
    """
    names = [var.attrs.get("grid_mapping"), var.encoding.get("grid_mapping"), "spatial_ref"]
    for name in names:
        if isinstance(name, str) and name in ds.variables:
            attrs = ds[name].attrs
            wkt = attrs.get("crs_wkt") or attrs.get("spatial_ref")
            if isinstance(wkt, str) and wkt.strip():
                match = _EPSG.search(wkt.strip())
                return f"EPSG:{match.group(1) or match.group(2)}" if match else wkt
    crs = ds.attrs.get("crs")
    return str(crs) if crs is not None else None


def _edges(coord: xr.DataArray | None) -> tuple[float | None, float | None]:
    if coord is None or coord.ndim != 1 or coord.size == 0 or coord.dtype.kind not in "iuf":
        return None, None
    values = np.asarray(coord.values, dtype=np.float64)
    half = abs(float(values[-1] - values[0])) / (values.size - 1) / 2 if values.size > 1 else 0.0
    return float(np.nanmin(values)) - half, float(np.nanmax(values)) + half


def _times(coord: xr.DataArray | None) -> tuple[Any, Any]:
    if coord is None or coord.size == 0 or coord.dtype.kind != "M":
        return None, None
    values = coord.values.astype("datetime64[us]")
    return values.min().item(), values.max().item()


def catalog_row(
    cube_id: str,
    path: str,
    ds: xr.Dataset,
    report: EncodeReport,
    *,
    dims: Mapping[str, Hashable] | None = None,
) -> dict[str, Any]:
    """The catalog row of a cube ``ds`` written to ``path`` with ``report``.

    Parameters
    ----------
    cube_id : str
        The cube's id in the release.
    path : str
        Its store, relative to the release folder (``cubes/<id>.eocube``).
    ds : xarray.Dataset
        The cube as given to :func:`eocube.to_eocube`.
    report : EncodeReport
        What :func:`eocube.to_eocube` returned.
    dims : mapping, optional
        Role to dim name, as given to :func:`eocube.to_eocube`.
    """
    variables = list(report.variables.values())
    main = max(variables, key=lambda v: math.prod(v.shape))
    var = ds[main.name]
    roles = cube_roles(var, dims) or {}
    x0, x1 = _edges(ds[roles["x"]] if roles.get("x") in ds.coords else None)
    y0, y1 = _edges(ds[roles["y"]] if roles.get("y") in ds.coords else None)
    t0, t1 = _times(ds[roles["time"]] if roles.get("time") in ds.coords else None)
    band_dim = roles.get("band")
    bands = (
        [str(b) for b in ds[band_dim].values]
        if band_dim is not None and band_dim in ds.coords
        else [str(i) for i in range(var.sizes[band_dim])]
        if band_dim is not None
        else []
    )
    psnrs = [v.psnr for v in variables if v.psnr is not None]
    errors = [v.max_abs_error for v in variables if v.max_abs_error is not None]
    return {
        "id": cube_id,
        "path": path,
        "variables": [v.name for v in variables],
        "dims": [str(d) for d in var.dims],
        "shape": list(main.shape),
        "bands": bands,
        "dtype": main.dtype,
        "crs": crs_of(ds, var),
        "xmin": x0,
        "ymin": y0,
        "xmax": x1,
        "ymax": y1,
        "time_start": t0,
        "time_end": t1,
        "profile": main.profile,
        "quality": main.quality,
        "lossless": get_profile(main.profile).lossless,
        "bytes": report.nbytes,
        "bpppb": report.bpppb,
        "psnr": min(psnrs) if psnrs else None,
        "max_abs_error": max(errors) if errors else None,
    }


def default_row_group_size(rows: int) -> int:
    """Rows per row group for a catalog of ``rows`` rows: about 7·√rows, at least 16."""
    return max(MIN_ROW_GROUP_SIZE, round(7 * math.sqrt(rows)))


def write_catalog(
    rows: Iterable[Mapping[str, Any]],
    path: str | PathLike[str],
    *,
    row_group_size: int | None = None,
) -> pa.Table:
    """Write catalog rows (sorted by id) to a Parquet file; returns the table.

    Parameters
    ----------
    rows : iterable of mapping
        Rows with the columns of :data:`SCHEMA` (see :func:`catalog_row`).
    path : str or os.PathLike
        The Parquet file to write.
    row_group_size : int, optional
        Rows per row group (default: :func:`default_row_group_size`).
    """
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=SCHEMA).sort_by("id")
    # min/max statistics where a filter can use them (not on list columns)
    stats = [f.name for f in SCHEMA if not pa.types.is_list(f.type)]
    pq.write_table(
        table,
        path,
        row_group_size=row_group_size or default_row_group_size(table.num_rows),
        compression="zstd",
        write_statistics=stats,
    )
    return table


def open_catalog(
    url: str | PathLike[str],
    *,
    filters: Filters | None = None,
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Read a release's catalog, or the rows matching ``filters``.

    Only the Parquet footer and the row groups whose statistics can match ``filters`` are
    read (over ``hf://``: exact range requests). ``.to_pandas()`` gives a DataFrame.

    Parameters
    ----------
    url : str or os.PathLike
        ``catalog.parquet`` of a release: a path or fsspec URL
        (``hf://datasets/<repo>@<revision>/catalog.parquet``).
    filters : pyarrow.compute.Expression or list of tuples, optional
        E.g. ``[("crs", "==", "EPSG:32631"), ("time_start", ">=", datetime(2020, 1, 1))]``
        (``pyarrow.parquet`` list-of-tuples form; a list of lists is OR of ANDs) or
        ``pc.field("bpppb") < 1``.
    columns : sequence of str, optional
        The columns to read (default: all).
    storage_options : mapping, optional
        Passed to the filesystem (for ``hf://``: ``endpoint``, ``token``).

    Returns
    -------
    pyarrow.Table
    """
    fs, path = filesystem(str(url), storage_options)
    expression = filters
    if filters is not None and not isinstance(filters, pc.Expression):
        expression = pq.filters_to_expression(filters)
    fragment = pads.ParquetFileFormat().make_fragment(
        path, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    )
    fragment.ensure_complete_metadata()  # the footer: one read (two past 64 kB)
    schema = fragment.physical_schema
    if expression is not None:
        fragment = fragment.subset(filter=expression, schema=schema)  # by row-group statistics
    return fragment.to_table(
        schema=schema, filter=expression, columns=list(columns) if columns else None
    )
