"""Where a cube lies on Earth: its CRS (through pyproj) and its footprint in longitude/latitude.

The release catalog (:mod:`eocube.catalog`) searches cubes by a longitude/latitude box,
whatever each cube's own CRS: this module turns a cube's outer pixel edges in its CRS
into a WGS84 polygon and bounding box.

- :func:`crs_of` reads a cube variable's CRS from its grid mapping (the rioxarray/CF
  ``spatial_ref`` convention) or the dataset's ``crs`` attribute.
- :func:`is_lonlat` tells CF longitude/latitude coordinates, for cubes without a CRS.
- :func:`footprint` transforms the edges, densified, so that the curved outline of a UTM
  tile in longitude/latitude is followed; it splits a footprint that crosses the
  antimeridian and widens one that holds a pole to every longitude.
- :func:`to_wkb` / :func:`from_wkb` write and read the polygons as ISO WKB, the
  geometry encoding of GeoParquet.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

EDGE_POINTS = 21
"""Points per edge transformed to longitude/latitude (pyproj's ``transform_bounds``
default): between two of them a 110 km UTM tile's edge strays about a metre from a line."""

DECIMALS = 7
"""Longitudes and latitudes are rounded to 1e-7 degree (about 1 cm): every digit beyond is
noise from the transform and costs bytes in each item."""

TOLERANCE = 1e-5
"""How far (degrees: about 1 m) the stored outline may stray from the densified one: an
edge keeps the fewest of its points (1, 2, 4, 5, 10 or 20 segments) that stay this close.
A chord's gap shrinks as the square of the segments: one segment holds for a 460 m tile,
a 11 km UTM tile needs 2 on its east-west edges (2.6e-5 degrees bow at 50 N), a 110 km
tile all 20 (5e-3 degrees)."""

LONGITUDE_NAMES = frozenset({"lon", "long", "longitude"})
LATITUDE_NAMES = frozenset({"lat", "latitude"})
LONGITUDE_UNITS = frozenset({"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee"})
LATITUDE_UNITS = frozenset({"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen"})

_WKB_POLYGON = 3
_WKB_MULTIPOLYGON = 6

Bounds = tuple[float, float, float, float]
"""(xmin, ymin, xmax, ymax)."""


@dataclass(frozen=True)
class Footprint:
    """A cube's outline in longitude/latitude (WGS84).

    ``geometry`` is a GeoJSON Polygon, or a MultiPolygon of the two sides of the
    antimeridian; ``bbox`` is (west, south, east, north) with west <= east: a footprint
    that crosses the antimeridian or holds a pole spans every longitude, so that a box
    search is a plain range comparison on each side.
    """

    geometry: dict[str, Any]
    bbox: Bounds


def crs_of(ds: xr.Dataset, var: xr.DataArray) -> CRS | None:
    """The CRS of ``var``, or None when ``ds`` gives none.

    Looks at the grid-mapping variable (the ``grid_mapping`` attribute or encoding of
    ``var``, else ``spatial_ref``): its ``crs_wkt`` or ``spatial_ref`` attribute (WKT),
    else its CF grid-mapping attributes; then at ``ds.attrs["crs"]`` (any text pyproj
    reads: ``"EPSG:32631"``, WKT, PROJJSON).

    Raises
    ------
    ValueError
        When the CRS found is one pyproj cannot read (the message names where it is).
    """
    names = [var.attrs.get("grid_mapping"), var.encoding.get("grid_mapping"), "spatial_ref"]
    for name in names:
        if not isinstance(name, Hashable) or name is None or name not in ds.variables:
            continue
        attrs = ds[name].attrs
        for key in ("crs_wkt", "spatial_ref"):
            wkt = attrs.get(key)
            if isinstance(wkt, str) and wkt.strip():
                return _read_crs(wkt, f"attribute {key!r} of variable {name!r}")
        if "grid_mapping_name" in attrs:
            return _read_crs(attrs, f"the CF grid-mapping attributes of variable {name!r}")
    crs = ds.attrs.get("crs")
    return None if crs is None else _read_crs(crs, "the dataset's 'crs' attribute")


def _read_crs(source: Any, where: str) -> CRS:
    try:
        if isinstance(source, Mapping):
            return CRS.from_cf(dict(source))
        return CRS.from_user_input(source)
    except CRSError as err:
        raise ValueError(f"the CRS in {where} is not one pyproj can read: {err}") from err


def authority_code(crs: CRS) -> str | None:
    """``"AUTHORITY:CODE"`` of ``crs``, EPSG's when it has one (``"EPSG:32631"``), else
    another authority's (``"IGNF:..."``, ``"ESRI:..."``), else None (pyproj's matching)."""
    epsg = crs.to_epsg()
    found = ("EPSG", str(epsg)) if epsg is not None else crs.to_authority()
    return None if found is None else f"{found[0]}:{found[1]}"


def is_lonlat(x: xr.DataArray | None, y: xr.DataArray | None) -> bool:
    """Whether coordinates ``x`` and ``y`` are longitude and latitude.

    By CF ``standard_name`` or ``units`` (``degrees_east``/``degrees_north``), or by
    name (``lon``/``longitude``, ``lat``/``latitude``). Rotated-pole ``grid_longitude``
    is not longitude.
    """
    return _is_axis(x, "longitude", LONGITUDE_UNITS, LONGITUDE_NAMES) and _is_axis(
        y, "latitude", LATITUDE_UNITS, LATITUDE_NAMES
    )


def _is_axis(
    coord: xr.DataArray | None, standard_name: str, units: frozenset[str], names: frozenset[str]
) -> bool:
    if coord is None:
        return False
    unit = str(coord.attrs.get("units", "")).strip().lower()
    return (
        coord.attrs.get("standard_name") == standard_name
        or unit in units
        or str(coord.name).lower() in names
    )


def footprint(bounds: Bounds, crs: CRS | None) -> Footprint:
    """The longitude/latitude footprint of the box ``bounds`` given in ``crs``.

    Parameters
    ----------
    bounds : tuple of float
        (xmin, ymin, xmax, ymax): the outer pixel edges, in ``crs``.
    crs : pyproj.CRS or None
        The CRS of ``bounds``; None when they are longitude/latitude already.

    Raises
    ------
    ValueError
        When the box has no longitude/latitude in ``crs`` (outside its domain).
    """
    if crs is None:
        return _lonlat_box(*bounds)
    to_lonlat = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    if crs.is_geographic:
        # a box in longitude/latitude stays a box (shifted if the datum or prime
        # meridian differ): its corners suffice
        (west, east), (south, north) = to_lonlat.transform(bounds[::2], bounds[1::2])
        return _lonlat_box(west, south, east, north)
    lon, lat = (np.asarray(v, dtype=np.float64) for v in to_lonlat.transform(*_ring(bounds)))
    finite = np.isfinite(lon) & np.isfinite(lat)
    if finite.sum() < 3:
        raise ValueError(f"the box {bounds} has no longitude/latitude in CRS {crs.name!r}")
    # consecutive points are close: a jump of more than 180 degrees is the antimeridian
    lon, lat = np.unwrap(lon[finite], period=360.0), np.clip(lat[finite], -90.0, 90.0)
    if finite.all():
        lon, lat = _simplify(lon, lat)
    south, north = float(lat.min()), float(lat.max())
    if abs(lon[-1] - lon[0]) > 180.0:
        # a ring around a pole gains a full turn of longitude from its first point to
        # its last (the same point): the footprint spans every longitude up to the pole
        south, north = (south, 90.0) if lat.mean() > 0 else (-90.0, north)
        return _lonlat_box(-180.0, south, 180.0, north)
    lon = lon - 360.0 * np.floor((lon.min() + 180.0) / 360.0)  # west edge in [-180, 180)
    ring = np.column_stack([lon, lat])
    if lon.max() <= 180.0:
        return _footprint([ring])
    return _footprint([_clip(ring, keep_east=False), _clip(ring, keep_east=True) - [360.0, 0.0]])


def _ring(bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """The closed outline of ``bounds``, counter-clockwise (as GeoJSON asks of an outer
    ring), with :data:`EDGE_POINTS` points per edge."""
    x0, y0, x1, y1 = bounds
    t = np.linspace(0.0, 1.0, EDGE_POINTS)[:-1]
    xs = np.concatenate([x0 + (x1 - x0) * t, x1 + 0 * t, x1 - (x1 - x0) * t, x0 + 0 * t, [x0]])
    ys = np.concatenate([y0 + 0 * t, y0 + (y1 - y0) * t, y1 + 0 * t, y1 - (y1 - y0) * t, [y0]])
    return xs, ys


def _simplify(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep, along each edge of a :func:`_ring`, evenly spaced points enough to follow it
    within :data:`TOLERANCE`."""
    n = EDGE_POINTS - 1
    keep = np.ones(lon.size, dtype=bool)
    for start in range(0, 4 * n, n):
        x, y = lon[start : start + n + 1], lat[start : start + n + 1]
        dx, dy = x[-1] - x[0], y[-1] - y[0]
        # the largest gap between the edge and its chord; k chords leave about gap / k²
        gap = float(np.max(np.abs(dx * (y - y[0]) - dy * (x - x[0])))) / max(
            np.hypot(dx, dy), 1e-300
        )
        segments = next((k for k in (1, 2, 4, 5, 10) if gap / k**2 <= TOLERANCE), n)
        keep[start + 1 : start + n] = (np.arange(1, n) % (n // segments)) == 0
    return lon[keep], lat[keep]


def _lonlat_box(west: float, south: float, east: float, north: float) -> Footprint:
    """The footprint of a longitude/latitude box; ``east - west`` is its width (>= 360:
    every longitude), whatever range its longitudes are given in (-180..180, 0..360)."""
    south, north = max(south, -90.0), min(north, 90.0)
    width = east - west
    if width >= 360.0:
        west, width = -180.0, 360.0
    west -= 360.0 * np.floor((west + 180.0) / 360.0)
    east = west + width
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    if east <= 180.0:
        return _footprint([[west, south] + corners * [width, north - south]])
    return _footprint(
        [
            [west, south] + corners * [180.0 - west, north - south],
            [-180.0, south] + corners * [east - 180.0, north - south],
        ]
    )


def _footprint(rings: list[np.ndarray]) -> Footprint:
    """A Polygon of one outer ring, or a MultiPolygon of the parts on each side of the
    antimeridian; the box of all their points (every longitude when there are two)."""
    rings = [np.round(np.asarray(r, dtype=np.float64), DECIMALS) + 0.0 for r in rings]
    points = np.concatenate(rings)
    south, north = float(points[:, 1].min()), float(points[:, 1].max())
    if len(rings) == 1:
        geometry = {"type": "Polygon", "coordinates": [rings[0].tolist()]}
        west, east = float(points[:, 0].min()), float(points[:, 0].max())
    else:
        geometry = {"type": "MultiPolygon", "coordinates": [[r.tolist()] for r in rings]}
        west, east = -180.0, 180.0
    return Footprint(geometry, (west, south, east, north))


def _clip(ring: np.ndarray, *, keep_east: bool) -> np.ndarray:
    """The part of closed ``ring`` (lon, lat) east (or west) of longitude 180.

    Sutherland-Hodgman against one line: footprints are convex enough that one pass gives
    the part on each side.
    """
    inside = ring[:, 0] >= 180.0 if keep_east else ring[:, 0] <= 180.0
    out: list[np.ndarray] = []
    for i in range(len(ring) - 1):
        a, b = ring[i], ring[i + 1]
        if inside[i]:
            out.append(a)
        if inside[i] != inside[i + 1]:
            share = (180.0 - a[0]) / (b[0] - a[0])
            out.append(np.array([180.0, a[1] + share * (b[1] - a[1])]))
    out.append(out[0])
    return np.array(out)


def to_wkb(geometry: Mapping[str, Any]) -> bytes:
    """ISO WKB (little-endian) of a GeoJSON Polygon or MultiPolygon."""
    if geometry["type"] == "Polygon":
        return _polygon_wkb(geometry["coordinates"])
    if geometry["type"] == "MultiPolygon":
        polygons = geometry["coordinates"]
        head = struct.pack("<BII", 1, _WKB_MULTIPOLYGON, len(polygons))
        return head + b"".join(_polygon_wkb(p) for p in polygons)
    raise ValueError(f"geometry type {geometry['type']!r}: only Polygon and MultiPolygon")


def _polygon_wkb(rings: Any) -> bytes:
    out = [struct.pack("<BII", 1, _WKB_POLYGON, len(rings))]
    for ring in rings:
        points = np.asarray(ring, dtype="<f8")
        out += [struct.pack("<I", len(points)), points.tobytes()]
    return b"".join(out)


def from_wkb(data: bytes) -> dict[str, Any]:
    """The GeoJSON geometry of WKB ``data`` holding a Polygon or MultiPolygon."""
    geometry, _ = _read_wkb(memoryview(data), 0)
    return geometry


def _read_wkb(data: memoryview, at: int) -> tuple[dict[str, Any], int]:
    order = "<" if data[at] == 1 else ">"
    (kind,) = struct.unpack_from(f"{order}I", data, at + 1)
    at += 5
    if kind == _WKB_POLYGON:
        rings, at = _read_rings(data, at, order)
        return {"type": "Polygon", "coordinates": rings}, at
    if kind == _WKB_MULTIPOLYGON:
        (count,) = struct.unpack_from(f"{order}I", data, at)
        at += 4
        polygons = []
        for _ in range(count):
            polygon, at = _read_wkb(data, at)
            polygons.append(polygon["coordinates"])
        return {"type": "MultiPolygon", "coordinates": polygons}, at
    raise ValueError(f"WKB geometry type {kind}: only Polygon (3) and MultiPolygon (6)")


def _read_rings(data: memoryview, at: int, order: str) -> tuple[list[Any], int]:
    (count,) = struct.unpack_from(f"{order}I", data, at)
    at += 4
    rings = []
    for _ in range(count):
        (points,) = struct.unpack_from(f"{order}I", data, at)
        at += 4
        coords = np.frombuffer(data, dtype=f"{order}f8", count=2 * points, offset=at)
        rings.append(coords.reshape(points, 2).tolist())
        at += 16 * points
    return rings, at
