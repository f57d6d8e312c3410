"""GeoZarr georeferencing beside CF's grid mapping, so that readers of either find it.

CF (and rioxarray, GDAL's netCDF driver) find a cube's CRS in its grid-mapping variable
(``grid_mapping`` attribute, rioxarray's ``spatial_ref`` by default: ``crs_wkt`` and
``GeoTransform``) and its pixel positions in the x/y coordinates. The GeoZarr conventions
of the Zarr conventions framework say the same in the attributes of the array itself:

- ``proj:`` (https://github.com/zarr-conventions/proj): ``proj:code`` (``EPSG:32631``:
  the code eocube's catalog gives the CRS) when the CRS has a numeric authority code,
  else ``proj:wkt2``;
- ``spatial:`` (https://github.com/zarr-conventions/spatial): ``spatial:dimensions``
  ``[y, x]``, ``spatial:shape`` ``[height, width]`` and ``spatial:transform``, the affine
  ``[a, b, c, d, e, f]`` from pixel corner indices to coordinates (rasterio's order);

both declared in ``zarr_conventions`` by their uuid (which identifies a convention), the
versioned ``schema_url`` and the ``name``: the prefix, as the conventions framework
recommends and rioxarray matches (the optional ``spec_url`` is left out: ~130 bytes
per array, and the schema names the specification).

:func:`with_georef` gives each cube variable that has a CRS these attributes when the
writer prepares a store: the CF grid mapping stays the one source of truth, and the
GeoZarr attributes are derived from it. The WKT is in the store once (``crs_wkt``), so
``proj:wkt2`` is written only when no code names the CRS. :func:`drop_derived` removes
them again on reading where they equal what the CF metadata says, so a dataset reads
back with the attributes it was written with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

if TYPE_CHECKING:  # eocube.variables brings Numba: the reader imports this module
    from eocube.variables import CubeVar

CONVENTIONS = "zarr_conventions"
"""The attribute declaring the conventions an array follows (a list of objects)."""

PROJ_CONVENTION = {
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/proj/refs/tags/v1/schema.json",
    "name": "proj:",
}
SPATIAL_CONVENTION = {
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "name": "spatial:",
}

# proj:code as the convention's schema has it ("IGNF:LAMB93" goes as WKT2 instead)
_CODE = re.compile(r"[A-Z]+:[0-9]+")

# how far (in pixels) a coordinate may stray from a regular grid, or from the GeoTransform
_GRID_TOLERANCE = 1e-6


def is_georef_key(key: Hashable) -> bool:
    """Whether an attribute name belongs to the GeoZarr conventions written here."""
    return isinstance(key, str) and (key == CONVENTIONS or key.startswith(("proj:", "spatial:")))


def grid_mapping(ds: xr.Dataset, name: Hashable) -> xr.DataArray | None:
    """The grid-mapping variable of ``ds[name]``: its CF ``grid_mapping`` attribute (or
    encoding), else rioxarray's default ``spatial_ref`` coordinate; None without one."""
    var = ds[name]
    for found in (var.attrs.get("grid_mapping"), var.encoding.get("grid_mapping")):
        if isinstance(found, str) and found in ds.variables:
            return ds[found]
    return ds["spatial_ref"] if "spatial_ref" in var.coords else None


def _regular_axis(ds: xr.Dataset, dim: Hashable) -> tuple[float, float] | None:
    """(step, first pixel centre) of a regular 1-D numeric coordinate along ``dim``."""
    if dim not in ds.coords or ds[dim].ndim != 1 or ds[dim].dtype.kind not in "iuf":
        return None
    values = np.asarray(ds[dim].values, dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        return None
    step = (values[-1] - values[0]) / (values.size - 1)
    if step == 0 or np.abs(np.diff(values) - step).max() > _GRID_TOLERANCE * abs(step):
        return None
    return float(step), float(values[0])


def _geotransform(mapping: xr.DataArray | None) -> list[float] | None:
    """GDAL's ``GeoTransform`` attribute (c a b f d e) as [a, b, c, d, e, f]."""
    text = None if mapping is None else mapping.attrs.get("GeoTransform")
    if not isinstance(text, str):
        return None
    try:
        c, a, b, f, d, e = (float(v) for v in text.split())
    except ValueError:
        return None
    return [a, b, c, d, e, f]


def affine(ds: xr.Dataset, name: Hashable, y_dim: Hashable, x_dim: Hashable) -> list[float] | None:
    """The affine ``[a, b, c, d, e, f]`` from (column, row) pixel-corner indices of
    ``ds[name]`` to coordinates, as rioxarray's ``rio.transform()`` finds it: the grid
    mapping's ``GeoTransform`` (unless regular x/y coordinates contradict it: a stale one),
    else the regular x/y coordinates (pixel centres); None when neither gives one."""
    x = _regular_axis(ds, x_dim)
    y = _regular_axis(ds, y_dim)
    given = _geotransform(grid_mapping(ds, name))
    if given is not None:
        a, b, c, d, e, f = given
        if b != 0 or d != 0 or x is None or y is None:
            return given  # rotated, or nothing to check it against
        # the centre of the first pixel is its corner plus half a pixel
        if (
            math.isclose(x[0], a, rel_tol=_GRID_TOLERANCE)
            and math.isclose(y[0], e, rel_tol=_GRID_TOLERANCE)
            and abs(x[1] - (c + a / 2)) <= _GRID_TOLERANCE * abs(a)
            and abs(y[1] - (f + e / 2)) <= _GRID_TOLERANCE * abs(e)
        ):
            return given
    if x is None or y is None:
        return None
    (a, x0), (e, y0) = x, y
    return [a, 0.0, x0 - a / 2, 0.0, e, y0 - e / 2]


def proj_attributes(ds: xr.Dataset, name: Hashable) -> dict[str, str]:
    """``proj:code`` of the CRS of ``ds[name]`` (the one eocube's catalog finds, with
    the same code: :func:`eocube.footprint.crs_of`, :func:`~eocube.footprint.authority_code`)
    or, for a CRS without a numeric authority code, ``proj:wkt2``; empty without a CRS,
    or with one pyproj cannot read (CF's grid mapping keeps it)."""
    from eocube.footprint import authority_code, crs_of  # pyproj: only when asked

    try:
        crs = crs_of(ds, ds[name])
    except ValueError:
        return {}
    if crs is None:
        return {}
    code = authority_code(crs)
    if code is not None and _CODE.fullmatch(code):
        return {"proj:code": code}
    return {"proj:wkt2": crs.to_wkt()}


def spatial_attributes(
    ds: xr.Dataset, name: Hashable, y_dim: Hashable, x_dim: Hashable
) -> dict[str, Any]:
    """``spatial:dimensions``, ``spatial:shape`` and ``spatial:transform`` of ``ds[name]``
    (y and x along ``y_dim`` and ``x_dim``); empty without a transform (:func:`affine`)."""
    transform = affine(ds, name, y_dim, x_dim)
    if transform is None:
        return {}
    return {
        "spatial:dimensions": [str(y_dim), str(x_dim)],
        "spatial:shape": [int(ds.sizes[y_dim]), int(ds.sizes[x_dim])],
        "spatial:transform": transform,
    }


def attributes(
    ds: xr.Dataset, name: Hashable, y_dim: Hashable | None, x_dim: Hashable | None
) -> dict[str, Any]:
    """The GeoZarr attributes of ``ds[name]`` derived from its CF grid mapping and
    coordinates: ``zarr_conventions``, :func:`proj_attributes` and (with ``y_dim`` and
    ``x_dim``) :func:`spatial_attributes`; empty when it has no CRS."""
    proj = proj_attributes(ds, name)
    if not proj:
        return {}
    spatial = {} if y_dim is None or x_dim is None else spatial_attributes(ds, name, y_dim, x_dim)
    conventions = [dict(PROJ_CONVENTION)] + ([dict(SPATIAL_CONVENTION)] if spatial else [])
    return {CONVENTIONS: conventions, **proj, **spatial}


def with_georef(ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar]) -> xr.Dataset:
    """``ds`` with the GeoZarr attributes (:func:`attributes`) on each cube variable
    that has a CRS and none of these attributes of its own (those are left as given).

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset as the writer stores it; not changed.
    cube_vars : mapping
        The cube variables (their y and x dims by role).

    Returns
    -------
    xarray.Dataset
        A shallow copy; the variables given new attributes are new objects.
    """
    out = ds.copy(deep=False)
    for name, cv in cube_vars.items():
        var = out[name]
        if any(is_georef_key(key) for key in var.attrs):
            continue
        found = attributes(out, name, cv.roles["y"], cv.roles["x"])
        if found:
            out[name] = var.assign_attrs(found)
    return out


def drop_derived(ds: xr.Dataset) -> None:
    """Remove, in place, the GeoZarr attributes of each data variable that equal those
    :func:`attributes` derives from its CF metadata (:func:`with_georef` wrote them);
    any other GeoZarr attributes are the data's own and stay."""
    for name in ds.data_vars:
        var = ds.variables[name]
        own = {k: v for k, v in var.attrs.items() if is_georef_key(k)}
        if not own:
            continue
        dims = own.get("spatial:dimensions")
        y_dim = x_dim = None
        if isinstance(dims, list | tuple) and len(dims) == 2 and set(dims) <= set(var.dims):
            y_dim, x_dim = dims
        derived = attributes(ds, name, y_dim, x_dim)
        if derived.keys() == own.keys() and all(_same(own[k], v) for k, v in derived.items()):
            var.attrs = {k: v for k, v in var.attrs.items() if not is_georef_key(k)}


def _same(stored: Any, derived: Any) -> bool:
    """Equality of an attribute as read back (JSON: tuples become lists) and as derived."""
    if isinstance(stored, list | tuple) and isinstance(derived, list | tuple):
        return len(stored) == len(derived) and all(
            _same(s, d) for s, d in zip(stored, derived, strict=True)
        )
    return bool(stored == derived)
