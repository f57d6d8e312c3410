"""A cube as a STAC item: what the release catalog says about each cube.

:func:`summarize` reads what a catalog needs from a cube and its encode report into a
:class:`CubeSummary`; :meth:`CubeSummary.item` writes it as a STAC 1.1 item (a GeoJSON
dict, JSON-ready) with:

- ``geometry``/``bbox``: the footprint in longitude/latitude (:mod:`eocube.footprint`);
- ``start_datetime``/``end_datetime`` of the time coordinate (naive times are UTC), and
  ``datetime`` (null for a range, the instant for a single date);
- the projection extension v2: ``proj:code`` (``"EPSG:32631"``; ``proj:wkt2`` instead for
  a CRS without an authority code), ``proj:bbox`` (outer pixel edges in the CRS),
  ``proj:shape`` (y, x) and ``proj:transform`` (regular grids);
- the datacube extension: ``cube:dimensions`` (spatial, temporal, and the others with their
  labels as strings) and ``cube:variables`` (dims, ``data_type``, ``unit``, ``description``);
- eocube's own fields, prefixed ``eocube:`` (:class:`Figures`);
- one asset, :data:`ASSET`, the store: its href relative to the release folder.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from pyproj import CRS

from eocube.dims import cube_roles
from eocube.footprint import Footprint, authority_code, crs_of, footprint, is_lonlat
from eocube.profiles import get_profile
from eocube.report import EncodeReport

STAC_VERSION = "1.1.0"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
DATACUBE = "https://stac-extensions.github.io/datacube/v2.3.0/schema.json"
ASSET = "data"
"""Key of the store's asset in every item."""
ZARR_MEDIA_TYPE = "application/vnd.zarr; version=3"
PACKED_MEDIA_TYPE = "application/zip"
"""The media type of a packed store's asset (a zarr v3 store in one ZIP file)."""
PREFIX = "eocube:"
MAX_LABELS = 1000
"""Labels listed for a dimension (``values``); longer ones get their index range."""

STAC_DATA_TYPES = frozenset(
    {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64"}
)
_COMPLEX_DATA_TYPES = {"complex64": "cfloat32", "complex128": "cfloat64"}


@dataclass(frozen=True)
class SpatialAxis:
    """A numeric 1-D x or y coordinate: its lowest and highest values (pixel centres),
    its length, and its step (signed: negative for a north-up y; None if irregular)."""

    dim: str
    low: float
    high: float
    size: int
    step: float | None

    @classmethod
    def of(cls, coord: xr.DataArray | None) -> SpatialAxis | None:
        """The axis of ``coord``, or None when it is not a numeric 1-D coordinate."""
        if coord is None or coord.ndim != 1 or coord.size == 0 or coord.dtype.kind not in "iuf":
            return None
        values = np.asarray(coord.values, dtype=np.float64)
        step = None
        if values.size > 1:
            deltas = np.diff(values)
            mean = float(values[-1] - values[0]) / (values.size - 1)
            step = mean if np.allclose(deltas, mean, rtol=1e-6, atol=0.0) else None
        return cls(
            str(coord.dims[0]),
            float(np.nanmin(values)),
            float(np.nanmax(values)),
            values.size,
            step,
        )

    @property
    def edges(self) -> tuple[float, float]:
        """Outer pixel edges: half a mean spacing beyond the lowest and highest values."""
        half = (self.high - self.low) / (self.size - 1) / 2 if self.size > 1 else 0.0
        return self.low - half, self.high + half

    @property
    def origin(self) -> float | None:
        """The outer edge of the first pixel (regular axes only)."""
        if self.step is None:
            return None
        return (self.low if self.step > 0 else self.high) - self.step / 2


@dataclass(frozen=True)
class TimeAxis:
    """A datetime coordinate: first and last times (UTC) and the step as an ISO 8601
    duration (None when irregular)."""

    dim: str
    start: dt.datetime
    end: dt.datetime
    step: str | None

    @classmethod
    def of(cls, coord: xr.DataArray | None) -> TimeAxis | None:
        """The axis of ``coord``, or None when it holds no datetimes."""
        if coord is None or coord.ndim != 1 or coord.size == 0 or coord.dtype.kind != "M":
            return None
        values = coord.values.astype("datetime64[us]")
        deltas = np.unique(np.diff(values)) if values.size > 1 else np.array([])
        step = iso_duration(deltas[0]) if deltas.size == 1 and deltas[0] > 0 else None
        return cls(str(coord.dims[0]), _utc(values.min()), _utc(values.max()), step)


@dataclass(frozen=True)
class LabelAxis:
    """Any other dim: its labels as strings (the index without a coordinate), and its
    datacube ``type`` (``bands``, ``temporal`` for a time without datetimes, ...)."""

    dim: str
    kind: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Variable:
    """A data variable: dims, dtype, CF ``units`` and ``long_name``."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Figures:
    """eocube's own fields of an item (``eocube:<name>``).

    ``variable`` is the main variable (the one with the most values); ``shape``,
    ``profile`` and ``quality`` (crf; None for the profile's default) are its own;
    ``lossless`` whether its profile is; ``bytes`` and ``bpppb`` count every object of the
    store; ``psnr`` is the lowest over the video-coded variables (+inf when lossless),
    ``max_abs_error`` the largest (both None when not measured).
    """

    variable: str | None
    shape: tuple[int, ...] | None
    profile: str | None
    quality: float | None
    lossless: bool | None
    bytes: int | None
    bpppb: float | None
    psnr: float | None
    max_abs_error: float | None

    @classmethod
    def of(cls, ds: xr.Dataset, report: EncodeReport) -> Figures:
        """The figures of cube ``ds`` written with ``report``."""
        variables = list(report.variables.values())
        if not variables:
            raise ValueError(f"{report.store}: the report lists no video-coded variable")
        main = max(variables, key=lambda v: math.prod(v.shape))
        psnrs = [v.psnr for v in variables if v.psnr is not None]
        errors = [v.max_abs_error for v in variables if v.max_abs_error is not None]
        return cls(
            variable=main.name,
            shape=tuple(int(n) for n in ds[main.name].shape),
            profile=main.profile,
            quality=main.quality,
            lossless=get_profile(main.profile).lossless,
            bytes=report.nbytes,
            bpppb=report.bpppb,
            psnr=min(psnrs) if psnrs else None,
            max_abs_error=max(errors) if errors else None,
        )

    def properties(self) -> dict[str, Any]:
        """The ``eocube:`` properties of an item (JSON-ready; those unknown left out)."""
        values = {**self.__dict__, "shape": None if self.shape is None else list(self.shape)}
        return {f"{PREFIX}{name}": value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class CubeSummary:
    """What the release catalog says about one cube (see :meth:`item`).

    ``crs`` is None when the cube gives none; ``lonlat`` then says whether its x/y are CF
    longitude/latitude (its footprint is then those). ``dims`` orders ``cube:dimensions``.
    """

    id: str
    href: str
    crs: CRS | None
    lonlat: bool
    x: SpatialAxis | None
    y: SpatialAxis | None
    time: TimeAxis | None
    labels: tuple[LabelAxis, ...]
    dims: tuple[str, ...]
    variables: tuple[Variable, ...]
    figures: Figures

    def footprint(self) -> Footprint | None:
        """The cube's footprint in longitude/latitude; None without x/y, or without a CRS
        when x/y are not longitude/latitude."""
        if self.x is None or self.y is None or (self.crs is None and not self.lonlat):
            return None
        (x0, x1), (y0, y1) = self.x.edges, self.y.edges
        return footprint((x0, y0, x1, y1), self.crs)

    def item(self) -> dict[str, Any]:
        """The cube's STAC item (JSON-ready)."""
        where = self.footprint()
        projection = self._projection()
        properties = {
            **self._times(),
            **projection,
            "cube:dimensions": self._dimensions(),
            **({"cube:variables": self._variables()} if self.variables else {}),
            **self.figures.properties(),
        }
        packed = self.href.rstrip("/").lower().endswith(".zip")
        item: dict[str, Any] = {
            "type": "Feature",
            "stac_version": STAC_VERSION,
            "stac_extensions": sorted([DATACUBE, *([PROJECTION] if projection else [])]),
            "id": self.id,
            "geometry": None if where is None else where.geometry,
        }
        if where is not None:
            item["bbox"] = list(where.bbox)
        item |= {
            "properties": properties,
            "links": [],
            "assets": {
                ASSET: {
                    "href": self.href,
                    "type": PACKED_MEDIA_TYPE if packed else ZARR_MEDIA_TYPE,
                    "title": f"eocube {'packed ' if packed else ''}store of {self.id}",
                    "description": ("a zarr v3 store in one ZIP file, " if packed else "")
                    + "zarr v3 with eocube's video codecs: "
                    "xr.open_dataset(href, engine='eocube') once eocube is installed",
                    "roles": ["data"],
                }
            },
        }
        return item

    def _times(self) -> dict[str, Any]:
        if self.time is None:
            warnings.warn(
                f"cube {self.id!r} has no datetime time coordinate: its STAC item has no "
                "datetime, start_datetime or end_datetime (STAC asks for one)",
                UserWarning,
                stacklevel=3,
            )
            return {"datetime": None}
        start, end = iso_datetime(self.time.start), iso_datetime(self.time.end)
        return {
            "datetime": start if start == end else None,
            "start_datetime": start,
            "end_datetime": end,
        }

    def _projection(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.crs is not None:
            out["proj:code"] = authority_code(self.crs)
            if out["proj:code"] is None:
                out["proj:wkt2"] = self.crs.to_wkt()
        if self.x is None or self.y is None:
            return out
        (x0, x1), (y0, y1) = self.x.edges, self.y.edges
        out["proj:bbox"] = [x0, y0, x1, y1]  # in the cube's own x/y, whatever their CRS
        out["proj:shape"] = [self.y.size, self.x.size]
        if self.x.step is not None and self.y.step is not None:
            out["proj:transform"] = [
                self.x.step,
                0.0,
                self.x.origin,
                0.0,
                self.y.step,
                self.y.origin,
            ]
        return out

    def _reference_system(self) -> int | str | None:
        if self.crs is None:
            # lon/lat x/y: the datacube default, EPSG:4326, said explicitly (so that every
            # spatial dim of a release has the field); else unknown
            return 4326 if self.lonlat else None
        code = self.crs.to_epsg()
        return code if code is not None else self.crs.to_wkt()

    def _dimensions(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        reference = self._reference_system()
        for axis, name in ((self.x, "x"), (self.y, "y")):
            if axis is None:
                continue
            out[axis.dim] = {"type": "spatial", "axis": name, "extent": [axis.low, axis.high]}
            if axis.step is not None:  # irregular: no step (Parquet cannot tell null from absent)
                out[axis.dim]["step"] = axis.step
            if reference is not None:
                out[axis.dim]["reference_system"] = reference
        if self.time is not None:
            extent = [iso_datetime(self.time.start), iso_datetime(self.time.end)]
            out[self.time.dim] = {"type": "temporal", "extent": extent}
            if self.time.step is not None:
                out[self.time.dim]["step"] = self.time.step
        for label in self.labels:
            if len(label.labels) <= MAX_LABELS:
                out[label.dim] = {"type": label.kind, "values": list(label.labels)}
            else:
                out[label.dim] = {
                    "type": label.kind,
                    "extent": [0, len(label.labels) - 1],
                    "step": 1,
                }
        return {dim: out[dim] for dim in self.dims if dim in out}

    def _variables(self) -> dict[str, Any]:
        out = {}
        for var in self.variables:
            entry: dict[str, Any] = {
                "dimensions": list(var.dims),
                "type": "data",
                "data_type": stac_data_type(var.dtype),
            }
            if var.unit:
                entry["unit"] = var.unit
            if var.description:
                entry["description"] = var.description
            out[var.name] = entry
        return out


def summarize(
    cube_id: str,
    href: str,
    ds: xr.Dataset,
    report: EncodeReport,
    *,
    dims: Mapping[str, Hashable] | None = None,
) -> CubeSummary:
    """What the catalog says about cube ``ds``, written to ``href`` with ``report``.

    Parameters
    ----------
    cube_id : str
        The cube's id in the release.
    href : str
        Its store, relative to the release folder (``cubes/<id>.eocube``).
    ds : xarray.Dataset
        The cube as given to :func:`eocube.to_eocube`.
    report : EncodeReport
        What :func:`eocube.to_eocube` returned.
    dims : mapping, optional
        Role to dim name, as given to :func:`eocube.to_eocube`.

    Raises
    ------
    ValueError
        When the cube's CRS is one pyproj cannot read.
    """
    figures = Figures.of(ds, report)
    assert figures.variable is not None
    main = ds[figures.variable]
    roles = {role: str(dim) for role, dim in (cube_roles(main, dims) or {}).items()}
    coords = {role: ds[dim] if dim in ds.coords else None for role, dim in roles.items()}
    x, y = SpatialAxis.of(coords.get("x")), SpatialAxis.of(coords.get("y"))
    time = TimeAxis.of(coords.get("time"))
    crs = crs_of(ds, main)
    variables = tuple(
        Variable(
            name=str(name),
            dims=tuple(str(d) for d in var.dims),
            dtype=str(var.dtype),
            unit=_text(var.attrs.get("units")),
            description=_text(var.attrs.get("long_name") or var.attrs.get("description")),
        )
        for name, var in ds.data_vars.items()
    )
    ordered = [str(d) for d in main.dims] + [d for v in variables for d in v.dims]
    all_dims = tuple(dict.fromkeys(ordered))
    taken = {a.dim for a in (x, y, time) if a is not None}
    labels = tuple(
        LabelAxis(dim, _label_kind(dim, roles), _labels(ds, dim))
        for dim in all_dims
        if dim not in taken
    )
    return CubeSummary(
        id=cube_id,
        href=href,
        crs=crs,
        lonlat=crs is None and is_lonlat(coords.get("x"), coords.get("y")),
        x=x,
        y=y,
        time=time,
        labels=labels,
        dims=all_dims,
        variables=variables,
        figures=figures,
    )


def cube_item(
    cube_id: str,
    href: str,
    ds: xr.Dataset,
    report: EncodeReport,
    *,
    dims: Mapping[str, Hashable] | None = None,
) -> dict[str, Any]:
    """The STAC item of cube ``ds`` written to ``href`` with ``report`` (see :func:`summarize`)."""
    return summarize(cube_id, href, ds, report, dims=dims).item()


def _label_kind(dim: str, roles: Mapping[str, str]) -> str:
    if roles.get("band") == dim:
        return "bands"
    if roles.get("time") == dim:
        return "temporal"  # a time without datetimes: an additional dimension (datacube)
    return "other"


def _labels(ds: xr.Dataset, dim: str) -> tuple[str, ...]:
    if dim in ds.coords:
        return tuple(str(v) for v in ds[dim].values)
    return tuple(str(i) for i in range(ds.sizes[dim]))


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _utc(value: np.datetime64) -> dt.datetime:
    # datetime64[us] -> a naive datetime; cubes' times are taken as UTC
    naive = value.astype("datetime64[us]").item()
    return naive.replace(tzinfo=dt.UTC)


def iso_datetime(value: dt.datetime) -> str:
    """``2023-10-02T00:00:00Z`` (with microseconds when there are any)."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


def iso_duration(delta: np.timedelta64) -> str:
    """An ISO 8601 duration: ``P1D``, ``PT1H``, ``PT0.5S``..."""
    seconds = delta / np.timedelta64(1, "s")
    days, rest = divmod(seconds, 86_400)
    if rest == 0:
        return f"P{int(days)}D"
    hours, rest = divmod(rest, 3_600)
    minutes, rest = divmod(rest, 60)
    parts = [f"{int(days)}D" if days else "", "T"]
    parts += [f"{int(hours)}H" if hours else "", f"{int(minutes)}M" if minutes else ""]
    parts += [f"{rest:g}S" if rest else ""]
    return "P" + "".join(parts)


def stac_data_type(dtype: str) -> str:
    """The STAC common-metadata ``data_type`` of numpy dtype name ``dtype`` (``other`` when
    STAC has none: bool, strings, datetimes)."""
    if dtype in STAC_DATA_TYPES:
        return dtype
    return _COMPLEX_DATA_TYPES.get(dtype, "other")
