"""The catalog of a release: one STAC item per cube, stored as stac-geoparquet.

``catalog.parquet`` follows the stac-geoparquet specification, so STAC tools read it as
items (``stac_geoparquet.arrow.stac_table_to_items``, then ``pystac.Item.from_dict``), and
DuckDB or pyarrow query it as a table: one row per cube, the item's properties as
top-level columns (:mod:`eocube.stac` says what an item holds):

- ``id``, ``geometry`` (WKB, longitude/latitude), ``bbox`` (a struct ``xmin``/``ymin``/
  ``xmax``/``ymax``: GeoParquet's covering of the geometry), ``assets`` (the store's href,
  relative to the release folder: :data:`STORE_COLUMN`), ``stac_extensions``, ``links``;
- ``datetime``/``start_datetime``/``end_datetime`` (``timestamp[us, UTC]``);
- ``proj:code``, ``proj:bbox``, ``proj:shape``, ``proj:transform`` (``proj:wkt2`` for a CRS
  without a code);
- ``cube:dimensions`` and ``cube:variables`` (structs keyed by dim and variable name);
- ``eocube:variable``, ``eocube:shape``, ``eocube:profile``, ``eocube:quality``,
  ``eocube:lossless``, ``eocube:bytes``, ``eocube:bpppb``, ``eocube:psnr``,
  ``eocube:max_abs_error``.

Rows are in Hilbert-curve order of their bbox centres, so neighbouring cubes share a row
group, and row groups are small, with min/max statistics on the columns searched
(:data:`STATISTICS`): :func:`open_catalog` reads the footer and only the row groups whose
statistics can match a box, a time range or a filter.

Catalogs written by eocube before the STAC catalog (columns ``path``, ``crs``, ``xmin``...)
still open: :func:`open_catalog` converts them to items in memory
(:mod:`eocube.catalog_legacy`), reading them whole, and warns;
``write_catalog(items(open_catalog(old)), new)`` rewrites one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyproj import CRS

from eocube.catalog_legacy import is_legacy, legacy_items
from eocube.footprint import from_wkb, to_wkb
from eocube.hubfs import filesystem
from eocube.stac import ASSET, iso_datetime

MIN_ROW_GROUP_SIZE = 16
ROW_GROUP_FACTOR = 5
"""Rows per row group are about ``ROW_GROUP_FACTOR·√rows`` (:func:`default_row_group_size`).

A box search reads the footer (pyarrow: the last 64 kB, then a larger footer whole) and
the matching row groups' columns. Measured on catalogs of 11 km UTM tiles (58 column
chunks, 5.6 kB of footer per row group, 210 bytes a row), mean bytes of a 0.1° box
search reading every column, for factors 4, 5, 7, 10: 281, 283, 294, 286 kB of 1.1 MB
(5000 rows); 696 (5), 756 (7), 943 (10) kB of 6.3 MB (30000 rows); reading only id and
href, 10 reads least at 5000 rows (111 kB against 183 at 5) and ties 7 at 30000."""

HILBERT_ORDER = 16
"""Bits per axis of the Hilbert curve that orders rows (a 0.005-degree grid)."""

GEOPARQUET_VERSION = "1.1.0"
STAC_GEOPARQUET_VERSION = "1.1.0"
STORE_COLUMN = f"assets.{ASSET}.href"
"""The store of each cube, relative to the catalog's folder: a column for
:func:`open_catalog`'s ``columns``."""

TOP_LEVEL = (
    "type",
    "stac_version",
    "stac_extensions",
    "id",
    "geometry",
    "bbox",
    "links",
    "assets",
    "collection",
)
"""The item fields that stay fields; every other column is a property."""

TIMESTAMP = pa.timestamp("us", tz="UTC")
TIME_COLUMNS = ("datetime", "start_datetime", "end_datetime")
BBOX = pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])
_TEXT = pa.string()
COLUMN_TYPES: dict[str, pa.DataType] = {
    "type": _TEXT,
    "stac_version": _TEXT,
    "stac_extensions": pa.list_(_TEXT),
    "id": _TEXT,
    "geometry": pa.binary(),
    "bbox": BBOX,
    "links": pa.list_(
        pa.struct([("href", _TEXT), ("rel", _TEXT), ("type", _TEXT), ("title", _TEXT)])
    ),
    "assets": pa.struct(
        [
            (
                ASSET,
                pa.struct(
                    [
                        ("href", _TEXT),
                        ("type", _TEXT),
                        ("title", _TEXT),
                        ("description", _TEXT),
                        ("roles", pa.list_(_TEXT)),
                    ]
                ),
            )
        ]
    ),
    **dict.fromkeys(TIME_COLUMNS, TIMESTAMP),
    "proj:code": _TEXT,
    "proj:wkt2": _TEXT,
    "proj:bbox": pa.list_(pa.float64()),
    "proj:shape": pa.list_(pa.int64()),
    "proj:transform": pa.list_(pa.float64()),
    "eocube:variable": _TEXT,
    "eocube:shape": pa.list_(pa.int64()),
    "eocube:profile": _TEXT,
    "eocube:quality": pa.float64(),
    "eocube:lossless": pa.bool_(),
    "eocube:bytes": pa.int64(),
    "eocube:bpppb": pa.float64(),
    "eocube:psnr": pa.float64(),
    "eocube:max_abs_error": pa.float64(),
}
"""Arrow types of the columns eocube writes; the others (``cube:dimensions``,
``cube:variables``: keyed by the cubes' own dim and variable names) are inferred."""

COLUMN_ORDER = (
    *TOP_LEVEL,
    *TIME_COLUMNS,
    *(name for name in COLUMN_TYPES if name.startswith("proj:")),
    "cube:dimensions",
    "cube:variables",
    *(name for name in COLUMN_TYPES if name.startswith("eocube:")),
)
"""The columns in the order written; any other property follows."""

ALWAYS = (
    "id",
    "geometry",
    "bbox",
    *TIME_COLUMNS,
    "proj:code",
    *(name for name in COLUMN_TYPES if name.startswith("eocube:")),
)
"""Columns every catalog has, even when all its values are null, so filters on them work."""

STATISTICS = (
    "id",
    "bbox.xmin",
    "bbox.ymin",
    "bbox.xmax",
    "bbox.ymax",
    *TIME_COLUMNS,
    "proj:code",
    *(
        f"eocube:{name}"
        for name in (
            "variable",
            "profile",
            "quality",
            "lossless",
            "bytes",
            "bpppb",
            "psnr",
            "max_abs_error",
        )
    ),
)
"""The columns with min/max statistics in each row group: those a search prunes by."""

Filters: TypeAlias = pc.Expression | Sequence[Any]
"""A pyarrow expression, or filters in ``pyarrow.parquet``'s list-of-tuples form."""
BBox: TypeAlias = tuple[float, float, float, float]
"""(west, south, east, north) in degrees; west > east crosses the antimeridian."""
TimeBound: TypeAlias = dt.datetime | str | None
Interval: TypeAlias = TimeBound | tuple[TimeBound, TimeBound]
"""An instant, or (start, end) with None for an open end; strings are ISO 8601, and
``"start/end"`` with ``..`` for an open end works too; naive times are UTC."""


# --- writing -------------------------------------------------------------------------------


def default_row_group_size(rows: int) -> int:
    """Rows per row group for a catalog of ``rows`` rows: about 5·√rows, at least 16.

    A row group costs its share of the footer (the metadata of its column chunks) and a
    search reads the footer plus the row groups that can match: the sum is smallest for
    √(rows · footer bytes per row group / bytes per row) rows per group.
    """
    return max(MIN_ROW_GROUP_SIZE, round(ROW_GROUP_FACTOR * math.sqrt(rows)))


def catalog_table(items: Iterable[Mapping[str, Any]]) -> pa.Table:
    """STAC items as a stac-geoparquet Arrow table, rows in Hilbert order of their bbox.

    Raises
    ------
    ValueError
        When two items share an id, or items disagree on the type of a property.
    """
    rows = [_row(item) for item in _uniform_reference_systems(list(items))]
    repeated = sorted(i for i, n in Counter(row["id"] for row in rows).items() if n > 1)
    if repeated:
        raise ValueError(f"catalog items must have distinct ids; repeated: {repeated}")
    rows = [rows[i] for i in _spatial_order(rows)]
    present = set(ALWAYS) | {key for row in rows for key in row}
    names = [n for n in COLUMN_ORDER if n in present]
    names += sorted(present - set(names))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values, type=COLUMN_TYPES.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(
                f"catalog column {name!r}: the items disagree on its type ({err})"
            ) from err
    return pa.table(columns)


def write_catalog(
    items: Iterable[Mapping[str, Any]],
    path: str | PathLike[str],
    *,
    row_group_size: int | None = None,
) -> pa.Table:
    """Write STAC items as a stac-geoparquet file; returns the table written.

    Parameters
    ----------
    items : iterable of mapping
        STAC items (see :func:`eocube.stac.cube_item`), ids distinct.
    path : str or os.PathLike
        The Parquet file to write.
    row_group_size : int, optional
        Rows per row group (default: :func:`default_row_group_size`).
    """
    table = catalog_table(items)
    kinds = {
        from_wkb(wkb)["type"] for wkb in table.column("geometry").to_pylist() if wkb is not None
    }
    geo = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                # no "crs": GeoParquet's default, OGC:CRS84, is longitude/latitude
                "encoding": "WKB",
                "geometry_types": sorted(kinds),
                "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
            }
        },
    }
    metadata = {
        b"geo": json.dumps(geo).encode(),
        b"stac-geoparquet": json.dumps({"version": STAC_GEOPARQUET_VERSION}).encode(),
    }
    table = table.replace_schema_metadata(metadata)
    leaves = set(_leaf_paths(table.schema))
    pq.write_table(
        table,
        path,
        row_group_size=row_group_size or default_row_group_size(table.num_rows),
        compression="zstd",
        write_statistics=[c for c in STATISTICS if c in leaves],
    )
    return table


def _row(item: Mapping[str, Any]) -> dict[str, Any]:
    """One table row of a STAC item: its properties at the top level, geometry as WKB,
    bbox as a struct, times as datetimes."""
    row = {k: v for k, v in item.items() if k != "properties"}
    properties = dict(item.get("properties") or {})
    clash = sorted(set(properties) & set(TOP_LEVEL))
    if clash:
        raise ValueError(f"item {item.get('id')!r}: properties {clash} clash with item fields")
    row |= properties
    if row.get("geometry") is not None:
        row["geometry"] = to_wkb(row["geometry"])
    if row.get("bbox") is not None:
        row["bbox"] = dict(zip(("xmin", "ymin", "xmax", "ymax"), row["bbox"], strict=True))
    for name in TIME_COLUMNS:
        if isinstance(row.get(name), str):
            row[name] = _as_utc(row[name])
    return row


def _uniform_reference_systems(items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Items whose spatial dims all give ``reference_system`` the same JSON type.

    An EPSG code is a number and a CRS without one is WKT2: a column holds one type, so
    when a release has both, the codes are written as the WKT2 of their CRS.
    """
    found = [
        dim.get("reference_system")
        for item in items
        for dim in ((item.get("properties") or {}).get("cube:dimensions") or {}).values()
    ]
    if not any(isinstance(r, str) for r in found) or not any(isinstance(r, int) for r in found):
        return items
    out: list[Mapping[str, Any]] = []
    for item in items:
        properties = item.get("properties") or {}
        dims = {
            name: {**dim, "reference_system": CRS.from_epsg(dim["reference_system"]).to_wkt()}
            if isinstance(dim.get("reference_system"), int)
            else dim
            for name, dim in (properties.get("cube:dimensions") or {}).items()
        }
        out.append(
            {**item, "properties": {**properties, "cube:dimensions": dims}} if dims else item
        )
    return out


def _spatial_order(rows: list[dict[str, Any]]) -> list[int]:
    """Row indices in Hilbert-curve order of bbox centres (rows without a bbox last),
    ties by id."""
    boxes = [row.get("bbox") for row in rows]
    lon = np.array([(b["xmin"] + b["xmax"]) / 2 if b else 0.0 for b in boxes])
    lat = np.array([(b["ymin"] + b["ymax"]) / 2 if b else 0.0 for b in boxes])
    cells = (1 << HILBERT_ORDER) - 1
    distance = hilbert_distance(
        np.round((lon + 180.0) / 360.0 * cells).astype(np.int64),
        np.round((lat + 90.0) / 180.0 * cells).astype(np.int64),
    )
    return sorted(
        range(len(rows)), key=lambda i: (boxes[i] is None, int(distance[i]), rows[i]["id"])
    )


def hilbert_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance along the Hilbert curve of order :data:`HILBERT_ORDER` of cells (x, y).

    Cells close on the curve are close on the map, so rows in this order share row groups
    with their neighbours, and a box search skips most row groups.
    """
    n = 1 << HILBERT_ORDER
    x, y = x.copy(), y.copy()
    distance = np.zeros(x.shape, dtype=np.int64)
    s = n >> 1
    while s > 0:
        rx, ry = (x & s) > 0, (y & s) > 0
        distance += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        # rotate the quadrant so that the curve's sub-square starts where it enters
        flip = ~ry & rx
        x, y = np.where(flip, n - 1 - x, x), np.where(flip, n - 1 - y, y)
        x, y = np.where(~ry, y, x), np.where(~ry, x, y)
        s >>= 1
    return distance


def _leaf_paths(schema: pa.Schema) -> Iterable[str]:
    """Dotted paths of the leaf columns (Parquet's column paths, lists excepted)."""
    for field in schema:
        if pa.types.is_struct(field.type):
            for child in field.type:
                yield from (f"{field.name}.{p}" for p in _leaf_paths(pa.schema([child])))
        else:
            yield field.name


# --- reading -------------------------------------------------------------------------------


def items(table: pa.Table) -> list[dict[str, Any]]:
    """The STAC items of catalog rows (JSON-ready dicts).

    A null column value means the item does not have that field (Parquet has one schema
    for all rows), except ``geometry`` and ``datetime``, which STAC requires (null: no
    footprint, a time range).
    """
    out = []
    for row in table.to_pylist():
        item: dict[str, Any] = {"type": "Feature"}
        properties: dict[str, Any] = {}
        for key, value in row.items():
            if key in TIME_COLUMNS and value is not None:
                value = iso_datetime(value)
            elif key == "geometry" and value is not None:
                value = from_wkb(value)
            elif key == "bbox" and value is not None:
                value = [value[k] for k in ("xmin", "ymin", "xmax", "ymax")]
            if value is None and key not in ("geometry", "datetime"):
                continue
            (item if key in TOP_LEVEL else properties)[key] = _without_nulls(value)
        item["properties"] = properties
        item.setdefault("links", [])
        item.setdefault("assets", {})
        out.append(item)
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def open_catalog(
    url: str | PathLike[str],
    *,
    bbox: BBox | None = None,
    datetime: Interval = None,
    filters: Filters | None = None,
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Read a release's catalog, or the cubes matching a box, a time range and filters.

    Only the Parquet footer and the row groups whose statistics can match are read (over
    ``hf://``: exact range requests). ``.to_pandas()`` gives a DataFrame, :func:`items`
    the STAC items.

    Parameters
    ----------
    url : str or os.PathLike
        ``catalog.parquet`` of a release: a path or fsspec URL
        (``hf://datasets/<repo>@<revision>/catalog.parquet``).
    bbox : tuple of float, optional
        (west, south, east, north) in degrees of longitude/latitude: the cubes whose
        footprint's box meets it, whatever their CRS; west > east crosses the antimeridian.
    datetime : datetime, str or tuple, optional
        The cubes whose time range meets this instant or range: ``(start, end)`` (None:
        open), or ``"2020-01-01/2020-12-31"`` (``..``: open); naive times are UTC.
    filters : pyarrow.compute.Expression or list of tuples, optional
        On any column, e.g. ``[("proj:code", "==", "EPSG:32631"), ("eocube:psnr", ">", 40)]``
        (``pyarrow.parquet`` list-of-tuples form, naive datetimes taken as UTC; a list of
        lists is OR of ANDs) or ``pc.field("eocube:bpppb") < 1``.
    columns : sequence of str, optional
        The columns to read (default: all); a dotted name reads a nested field, e.g.
        :data:`STORE_COLUMN` (``"assets.data.href"``).
    storage_options : mapping, optional
        Passed to the filesystem (for ``hf://``: ``endpoint``, ``token``).

    Returns
    -------
    pyarrow.Table

    Raises
    ------
    ValueError
        When ``bbox`` or ``datetime`` is not one.
    """
    expression = _all(
        [
            None if bbox is None else bbox_expression(bbox),
            None if datetime is None else datetime_expression(datetime),
            None if filters is None else _filters_expression(filters),
        ]
    )
    fs, path = filesystem(str(url), storage_options)
    fragment = pads.ParquetFileFormat().make_fragment(
        path, filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    )
    fragment.ensure_complete_metadata()  # the footer: one read (two past 64 kB)
    schema = fragment.physical_schema
    source: pads.Fragment | pads.Dataset = fragment
    if is_legacy(schema):
        warnings.warn(
            f"{url} is a catalog of eocube's first schema (columns path, crs, xmin...): it is "
            "read whole and converted to STAC items; rewrite it once with "
            "eocube.catalog.write_catalog(eocube.catalog.items(open_catalog(url)), path)",
            UserWarning,
            stacklevel=2,
        )
        table = catalog_table(legacy_items(fragment.to_table()))
        source, schema = pads.dataset(table), table.schema
    elif expression is not None:
        source = fragment.subset(filter=expression, schema=schema)  # by row-group statistics
    selected = None if columns is None else {c: _column(c, schema) for c in columns}
    if isinstance(source, pads.Dataset):
        return source.to_table(filter=expression, columns=selected)
    return source.to_table(schema=schema, filter=expression, columns=selected)


def _column(name: str, schema: pa.Schema) -> pc.Expression:
    if name in schema.names or "." not in name:
        return pc.field(name)
    return pc.field(*name.split("."))


def bbox_expression(bbox: BBox) -> pc.Expression:
    """Rows whose ``bbox`` meets ``bbox`` (west, south, east, north), as an expression that
    row-group statistics prune by."""
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"bbox must be 4 numbers (west, south, east, north), got {bbox!r}"
        ) from err
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise ValueError(f"bbox must be finite, got {bbox!r}")
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90):
        raise ValueError(
            f"bbox (west, south, east, north) must be longitudes in [-180, 180] and "
            f"latitudes in [-90, 90] with south <= north, got {bbox!r}"
        )
    xmin, ymin, xmax, ymax = (pc.field("bbox", k) for k in ("xmin", "ymin", "xmax", "ymax"))
    latitudes = (ymin <= north) & (ymax >= south)
    if west <= east:
        return latitudes & (xmin <= east) & (xmax >= west)
    # across the antimeridian: [west, 180] or [-180, east] (eocube's boxes never wrap)
    return latitudes & ((xmax >= west) | (xmin <= east))


def datetime_expression(interval: Interval) -> pc.Expression:
    """Rows whose [start_datetime, end_datetime] meets ``interval`` (see :func:`open_catalog`)."""
    start, end = _interval(interval)
    out = []
    if end is not None:
        out.append(pc.field("start_datetime") <= pa.scalar(end, TIMESTAMP))
    if start is not None:
        out.append(pc.field("end_datetime") >= pa.scalar(start, TIMESTAMP))
    if not out:  # ("..", ".."): every cube with a time
        out.append(pc.field("start_datetime").is_valid())
    expression = _all(out)
    assert expression is not None
    return expression


def _interval(interval: Interval) -> tuple[dt.datetime | None, dt.datetime | None]:
    if isinstance(interval, tuple):
        if len(interval) != 2:
            raise ValueError(f"datetime must be (start, end), got {interval!r}")
        start, end = (_bound(v) for v in interval)
    elif isinstance(interval, str) and "/" in interval:
        start, end = (_bound(v) for v in interval.split("/", 1))
    else:
        start = end = _bound(interval)
    if start is not None and end is not None and start > end:
        raise ValueError(f"datetime: the start is after the end in {interval!r}")
    return start, end


def _bound(value: TimeBound) -> dt.datetime | None:
    if value is None or value in ("", ".."):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return _as_utc(value)
        except ValueError as err:
            raise ValueError(f"datetime: {value!r} is not an ISO 8601 time") from err
    raise ValueError(f"datetime: expected a datetime or an ISO 8601 string, got {value!r}")


def _as_utc(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _filters_expression(filters: Filters) -> pc.Expression:
    if isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(_utc_filters(filters))


def _utc_filters(filters: Any) -> Any:
    """List-of-tuples filters with naive datetimes made UTC (the catalog's times are)."""
    if isinstance(filters, tuple) and len(filters) == 3 and isinstance(filters[0], str):
        name, op, value = filters
        return (name, op, _utc_value(value))
    if isinstance(filters, list | tuple):
        return type(filters)(_utc_filters(f) for f in filters)
    return filters


def _utc_value(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    if isinstance(value, list | tuple | set):
        return type(value)(_utc_value(v) for v in value)
    return value


def _all(expressions: Iterable[pc.Expression | None]) -> pc.Expression | None:
    found = [e for e in expressions if e is not None]
    if not found:
        return None
    out = found[0]
    for e in found[1:]:
        out = out & e
    return out
