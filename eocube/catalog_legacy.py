"""Catalogs of eocube's first schema, read as STAC items.

Before the STAC catalog (:mod:`eocube.catalog`), a release's ``catalog.parquet`` had one
row per cube with the columns ``id``, ``path``, ``variables``, ``dims``, ``shape``,
``bands``, ``dtype``, ``crs`` (``EPSG:<code>``, WKT or null), ``xmin``/``ymin``/``xmax``/
``ymax`` (outer pixel edges in that CRS), ``time_start``/``time_end`` (naive, UTC),
``profile``, ``quality``, ``lossless``, ``bytes``, ``bpppb``, ``psnr`` and
``max_abs_error``. :func:`legacy_items` turns such rows into the items the writer makes
now; what that schema did not record is left out: each variable's dims and dtype when a
cube has several (no ``cube:variables`` then), whether x/y without a CRS are
longitude/latitude (no geometry then), and the grid's step (no ``proj:transform``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import xarray as xr
from pyproj import CRS
from pyproj.exceptions import CRSError

from eocube.dims import cube_roles
from eocube.stac import CubeSummary, Figures, LabelAxis, SpatialAxis, TimeAxis, Variable

LEGACY_COLUMNS = frozenset({"id", "path", "dims", "shape", "crs", "xmin", "time_start"})
"""Columns that mark a catalog of eocube's first schema."""


def is_legacy(schema: pa.Schema) -> bool:
    """Whether a catalog with this schema has eocube's first (pre-STAC) columns."""
    return "stac_version" not in schema.names and set(schema.names) >= LEGACY_COLUMNS


def legacy_items(table: pa.Table) -> list[dict[str, Any]]:
    """The STAC items of the rows of a catalog of eocube's first schema.

    Raises
    ------
    ValueError
        When a row's ``crs`` is one pyproj cannot read (the message names the row).
    """
    return [_summary(row).item() for row in table.to_pylist()]


def _summary(row: Mapping[str, Any]) -> CubeSummary:
    dims, shape = [str(d) for d in row["dims"]], [int(n) for n in row["shape"]]
    sizes = dict(zip(dims, shape, strict=True))
    # the dims' roles, recognised by their names as the writer did (no data needed)
    shaped = xr.DataArray(np.broadcast_to(np.int8(0), shape), dims=dims)
    roles = {role: str(dim) for role, dim in (cube_roles(shaped) or {}).items()}
    crs = None
    if row.get("crs"):
        try:
            crs = CRS.from_user_input(row["crs"])
        except CRSError as err:
            raise ValueError(f"catalog row {row['id']!r}: crs {row['crs']!r}: {err}") from err

    def spatial(role: str) -> SpatialAxis | None:
        dim, low, high = roles.get(role), row.get(f"{role}min"), row.get(f"{role}max")
        if dim is None or low is None or high is None:
            return None
        half = (high - low) / sizes[dim] / 2  # from the outer edges to the pixel centres
        return SpatialAxis(dim, low + half, high - half, sizes[dim], None)

    x, y = spatial("x"), spatial("y")
    time = None
    if row.get("time_start") is not None and "time" in roles:
        start, end = (row[k].replace(tzinfo=dt.UTC) for k in ("time_start", "time_end"))
        time = TimeAxis(roles["time"], start, end, None)
    taken = {a.dim for a in (x, y, time) if a is not None}
    names = list(row.get("variables") or [])
    return CubeSummary(
        id=row["id"],
        href=row["path"],
        crs=crs,
        lonlat=False,
        x=x,
        y=y,
        time=time,
        labels=tuple(_labels(dim, sizes[dim], roles, row) for dim in dims if dim not in taken),
        dims=tuple(dims),
        variables=(Variable(names[0], tuple(dims), row["dtype"]),) if len(names) == 1 else (),
        figures=Figures(
            variable=names[0] if len(names) == 1 else None,
            shape=tuple(shape),
            profile=row.get("profile"),
            quality=row.get("quality"),
            lossless=row.get("lossless"),
            bytes=row.get("bytes"),
            bpppb=row.get("bpppb"),
            psnr=row.get("psnr"),
            max_abs_error=row.get("max_abs_error"),
        ),
    )


def _labels(dim: str, size: int, roles: Mapping[str, str], row: Mapping[str, Any]) -> LabelAxis:
    bands = list(row.get("bands") or [])
    if dim == roles.get("band") and len(bands) == size:
        return LabelAxis(dim, "bands", tuple(map(str, bands)))
    kind = "temporal" if dim == roles.get("time") else "other"
    return LabelAxis(dim, kind, tuple(map(str, range(size))))
