"""GeoTIFF (and Cloud-Optimized GeoTIFF) input: one file per date, stacked along time.

A GeoTIFF holds one date of a cube, (band, y, x). :func:`open_geotiffs` stacks one or
more of them into a dataset with one variable of dims (time, band, y, x) that
:func:`eocube.to_eocube` writes as it is, read lazily (dask) so that a long list of files
is never in memory at once. The dates come from ``dates=`` (one per file) or from the
file names with ``date_pattern=`` (a ``strftime`` pattern such as ``"%Y%m%d"``, found
anywhere in each name); the files are stacked in date order. The CRS and transform
(rioxarray's ``spatial_ref`` grid mapping, which eocube stores as it is), nodata and band
descriptions (as band names) are kept; every file must agree with the first on all of
them, and on size, band count and dtype.

Reading GeoTIFFs needs rioxarray (and rasterio): the optional extra ``geotiff``
(``pip install 'eocube[geotiff]'``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import xarray as xr

from eocube.errors import UnsupportedDataError

EXTENSIONS = (".tif", ".tiff")
"""File name endings read as GeoTIFF (in any case)."""

DEFAULT_CHUNKS = {"y": 1024, "x": 1024}
"""Dask chunks of each file along y and x (all its bands in one chunk): 1024 × 1024 px
holds a few eocube chunks (256 × 256 px by default), and 13 uint16 bands of it 27 MB."""

# strftime directives a date_pattern may use, and the digits each matches
_DIRECTIVES = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "j": r"\d{3}",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
}


def is_geotiff(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a GeoTIFF (by its ending: :data:`EXTENSIONS`)."""
    return os.fspath(path).lower().rstrip("/").endswith(EXTENSIONS)


def _require_rioxarray() -> None:
    try:
        import rasterio  # noqa: F401
        import rioxarray  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"reading GeoTIFF needs rioxarray and rasterio (missing: {exc.name}): install "
            f"eocube's optional extra 'geotiff', pip install 'eocube[geotiff]'"
        ) from exc


@dataclass(frozen=True)
class Header:
    """What the files of one cube must share, read from a GeoTIFF's header."""

    height: int
    width: int
    count: int
    dtype: str
    crs: Any  # rasterio.crs.CRS (compared as CRSs, not as texts) or None
    transform: tuple[float, ...]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]

    @classmethod
    def read(cls, path: str) -> Header:
        """The header of the GeoTIFF ``path`` (nothing else of the file is read)."""
        import rasterio

        try:
            with rasterio.open(path) as src:
                dtypes = set(src.dtypes)
                if len(dtypes) != 1:
                    raise UnsupportedDataError(
                        f"{path}: its bands have different dtypes {sorted(dtypes)}; eocube "
                        f"stores one dtype per variable"
                    )
                return cls(
                    height=src.height,
                    width=src.width,
                    count=src.count,
                    dtype=dtypes.pop(),
                    crs=src.crs,
                    transform=tuple(src.transform)[:6],
                    nodata=src.nodata,
                    descriptions=tuple(src.descriptions),
                    scales=tuple(src.scales),
                    offsets=tuple(src.offsets),
                )
        except rasterio.errors.RasterioIOError as exc:
            raise OSError(f"cannot read the GeoTIFF {path}: {exc}") from exc

    @property
    def scaled(self) -> bool:
        """Whether values are to be scaled (GDAL scale or offset other than 1 and 0)."""
        return any(s != 1 for s in self.scales) or any(o != 0 for o in self.offsets)

    @property
    def cf_scaled(self) -> bool:
        """Whether values are scaled with one scale and one offset for every band: what
        CF's ``scale_factor`` and ``add_offset`` (of one variable) can hold."""
        return self.scaled and len(set(self.scales)) == 1 and len(set(self.offsets)) == 1

    @property
    def band_names(self) -> list[str] | None:
        """The band descriptions, when every band has one and they are distinct."""
        names = [d for d in self.descriptions if d]
        if len(names) != self.count or len(set(names)) != len(names):
            return None
        return names

    def differences(self, other: Header) -> list[str]:
        """What of ``other`` differs from this header, in words."""
        found = []
        if (other.count, other.height, other.width) != (self.count, self.height, self.width):
            found.append(
                f"shape (band, y, x) {(other.count, other.height, other.width)} instead of "
                f"{(self.count, self.height, self.width)}"
            )
        if other.dtype != self.dtype:
            found.append(f"dtype {other.dtype} instead of {self.dtype}")
        if other.crs != self.crs:
            found.append(f"CRS {_crs_name(other.crs)} instead of {_crs_name(self.crs)}")
        if not _same_transform(other.transform, self.transform):
            found.append(f"transform {other.transform} instead of {self.transform}")
        if not _same_nodata(other.nodata, self.nodata):
            found.append(f"nodata {other.nodata} instead of {self.nodata}")
        if other.descriptions != self.descriptions:
            found.append(f"band descriptions {other.descriptions} instead of {self.descriptions}")
        if (other.scales, other.offsets) != (self.scales, self.offsets):
            found.append("other scales or offsets")
        return found


def _crs_name(crs: Any) -> str:
    return "none" if crs is None else str(crs.to_string())


def _same_transform(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal affine transforms, to a millionth of a pixel (files written by different
    software round the same grid differently)."""
    tolerance = 1e-6 * max(abs(b[0]), abs(b[4]))
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _name_of(path: str) -> str:
    """The file name of a path or URL (the part a date pattern is looked for in)."""
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def _pattern_regex(date_pattern: str) -> re.Pattern[str]:
    """A regular expression finding the text ``date_pattern`` (strftime) describes."""
    parts = []
    i = 0
    while i < len(date_pattern):
        char = date_pattern[i]
        if char != "%":
            parts.append(re.escape(char))
            i += 1
            continue
        code = date_pattern[i + 1 : i + 2]
        if code == "%":
            parts.append("%")
        elif code in _DIRECTIVES:
            parts.append(_DIRECTIVES[code])
        else:
            raise ValueError(
                f"date_pattern= {date_pattern!r}: %{code} is not one of the directives it "
                f"may use: {', '.join('%' + d for d in _DIRECTIVES)}"
            )
        i += 2
    if not re.search(r"%[Yy]", date_pattern.replace("%%", "")):
        raise ValueError(f"date_pattern= {date_pattern!r} has no year (%Y or %y)")
    return re.compile("".join(parts))


def dates_from_names(paths: Sequence[str], date_pattern: str) -> list[np.datetime64]:
    """The date of each file, found in its name with the strftime ``date_pattern``
    (the first match in the name), e.g. ``"%Y%m%d"`` in ``S2A_20240106_T31UDQ.tif``."""
    regex = _pattern_regex(date_pattern)
    out: list[np.datetime64] = []
    for path in paths:
        name = _name_of(path)
        match = regex.search(name)
        if match is None:
            raise ValueError(
                f"{path}: its name {name!r} holds no date of date_pattern= {date_pattern!r}"
            )
        try:
            when = datetime.strptime(match.group(0), date_pattern)
        except ValueError as exc:
            raise ValueError(
                f"{path}: {match.group(0)!r} in its name is no date of date_pattern= "
                f"{date_pattern!r} ({exc})"
            ) from None
        out.append(np.datetime64(when, "ns"))
    return out


def parse_dates(dates: Sequence[Any]) -> list[np.datetime64]:
    """Dates (ISO strings such as ``"2024-01-06"``, datetimes, numpy or pandas ones) as
    ``datetime64[ns]``."""
    import pandas as pd

    out: list[np.datetime64] = []
    for value in dates:
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise ValueError(f"dates= holds {value!r}, not a date (e.g. '2024-01-06')") from None
        if stamp is pd.NaT:
            raise ValueError(f"dates= holds {value!r}, not a date (e.g. '2024-01-06')")
        if stamp.tzinfo is not None:  # numpy's datetimes are naive: UTC
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        out.append(np.datetime64(stamp.to_datetime64(), "ns"))
    return out


def _dated(
    paths: Sequence[str], dates: Sequence[Any] | None, date_pattern: str | None
) -> list[tuple[np.datetime64 | None, str]]:
    """(date, path) of each file in date order (given order without dates)."""
    if dates is not None and date_pattern is not None:
        raise ValueError("give the dates either as dates= or as date_pattern=, not both")
    if dates is not None:
        if isinstance(dates, str):
            raise TypeError(f"dates= wants a list of dates, one per file (got {dates!r})")
        when = parse_dates(dates)
        if len(when) != len(paths):
            raise ValueError(f"dates= has {len(when)} dates for {len(paths)} files: one per file")
    elif date_pattern is not None:
        when = dates_from_names(paths, date_pattern)
    elif len(paths) > 1:
        raise ValueError(
            f"{len(paths)} GeoTIFFs are stacked along time: give their dates with dates= "
            f"(one per file) or date_pattern= (e.g. '%Y%m%d' in the file names)"
        )
    else:
        return [(None, paths[0])]
    pairs = sorted(zip(when, paths, strict=True), key=lambda pair: pair[0])
    for (d0, p0), (d1, p1) in itertools.pairwise(pairs):
        if d0 == d1:
            raise ValueError(f"{p0} and {p1} have the same date {d0}: one file per date")
    return list(pairs)


def _open_one(path: str, header: Header, chunks: dict[str, int]) -> xr.DataArray:
    """One file as a lazy (band, y, x) DataArray (rioxarray)."""
    import rioxarray

    with warnings.catch_warnings():
        # per-band scales: kept as the attribute ``scales`` (see _cf_attributes)
        warnings.filterwarnings("ignore", message="Scales differ across bands")
        da = rioxarray.open_rasterio(
            path, chunks={"band": -1, **chunks}, mask_and_scale=header.cf_scaled
        )
    assert isinstance(da, xr.DataArray)  # one subdataset: a GeoTIFF
    return da


def open_geotiffs(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    dates: Sequence[Any] | None = None,
    date_pattern: str | None = None,
    variable: str = "data",
    chunks: dict[str, int] | None = None,
) -> xr.Dataset:
    """Open GeoTIFFs (one per date) as one lazy cube of dims (time, band, y, x).

    Parameters
    ----------
    paths : str, os.PathLike, or a sequence of them
        One GeoTIFF (or Cloud-Optimized GeoTIFF) per date: local paths, or URLs rasterio
        reads (``https://``, ``s3://``...). Every file must have the first one's size,
        band count, dtype, CRS, transform, nodata, band descriptions, scales and offsets.
    dates : sequence, optional
        The date of each file, in the order of ``paths``: ISO strings
        (``"2024-01-06"``), datetimes, numpy or pandas dates.
    date_pattern : str, optional
        Instead of ``dates``: where each file's name holds its date, as a ``strftime``
        pattern found anywhere in the name (``%Y %y %m %d %j %H %M %S``), e.g.
        ``"%Y%m%d"`` for ``S2A_20240106_T31UDQ.tif`` or ``"_%Y-%m-%d"`` for
        ``ndvi_2024-01-06.tif``; the first match counts.
    variable : str
        The name of the cube variable.
    chunks : dict, optional
        Dask chunk sizes of each file along ``y`` and ``x`` (default
        :data:`DEFAULT_CHUNKS`); a chunk holds all bands of one date.

    Returns
    -------
    xarray.Dataset
        ``variable`` of dims (time, band, y, x), dask-backed: nothing is read but the
        files' headers until values are asked for. ``time`` holds the dates, sorted
        (no ``time`` coordinate for one file without a date); ``band`` the band
        descriptions when every band has a distinct one, else the band numbers 1, 2...;
        ``spatial_ref`` the CRS and transform (rioxarray's CF grid mapping, named by the
        variable's ``grid_mapping`` attribute; its transform alone for files without a
        CRS); nodata is the ``nodata`` attribute.
        With a GDAL scale or offset shared by all bands, values are scaled (float) and
        the file's integers kept as the encoding (``scale_factor``, ``add_offset``,
        ``_FillValue``), so a lossless write stores them exactly; with scales or offsets
        that differ between bands, values are the file's integers and the attributes
        ``scales`` and ``offsets`` (as rioxarray names them) hold one per band.

    Raises
    ------
    ImportError
        Without rioxarray: install ``eocube[geotiff]``.
    ValueError
        Several files without dates, dates that do not fit the files, or a file that
        differs from the first (the message names it and says how).
    """
    _require_rioxarray()
    given = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files = [os.fspath(p) for p in given]
    if not files:
        raise ValueError("paths: no GeoTIFF given")
    dated = _dated(files, dates, date_pattern)
    first = Header.read(dated[0][1])
    for _, path in dated[1:]:
        differ = first.differences(Header.read(path))
        if differ:
            raise ValueError(
                f"{path} differs from {dated[0][1]}: {'; '.join(differ)} (all GeoTIFFs of "
                f"a cube must share size, bands, dtype, CRS, transform and nodata)"
            )
    sizes = {**DEFAULT_CHUNKS, **(chunks or {})}
    stack = [_open_one(path, first, sizes) for _, path in dated]
    cube = xr.concat(stack, dim="time", coords="minimal", compat="override", join="override")
    if dated[0][0] is not None:
        cube = cube.assign_coords(time=np.array([d for d, _ in dated], dtype="datetime64[ns]"))
    names = first.band_names
    if names is not None:
        cube = cube.assign_coords(band=np.array(names))
    cube = cube.transpose("time", "band", "y", "x")
    # the dataset's dims listed in the cube's order (they come in the order first seen)
    ds = xr.Dataset(coords={d: cube[d] for d in cube.dims if d in cube.coords})
    ds[variable] = _cf_attributes(cube, first)
    ds.encoding["source"] = dated[0][1]
    return ds


def _cf_attributes(cube: xr.DataArray, header: Header) -> xr.DataArray:
    """rioxarray's attributes in the form eocube keeps: the grid mapping as the CF
    attribute, nodata as ``nodata`` (eocube's convention for integers; rioxarray reads
    it too), band descriptions as the band coordinate only."""
    attrs = dict(cube.attrs)
    attrs.pop("long_name", None)  # the band descriptions
    encoding = {}
    if header.cf_scaled:
        # rioxarray scaled the values and keeps the file's own as the CF encoding
        kept = ("scale_factor", "add_offset", "_FillValue", "dtype")
        encoding = {k: v for k, v in cube.encoding.items() if k in kept}
    else:
        # values as stored: GDAL's scale 1 and offset 0 say nothing, and scales that
        # differ between bands are no CF attribute (xarray would apply them on reading)
        for key in ("scale_factor", "add_offset", "_FillValue", "scales", "offsets"):
            attrs.pop(key, None)
        if header.scaled:  # rioxarray's attributes of per-band scales, applied by the user
            attrs["scales"] = list(header.scales)
            attrs["offsets"] = list(header.offsets)
        if header.nodata is not None:
            attrs["nodata"] = np.dtype(header.dtype).type(header.nodata).item()
    attrs["grid_mapping"] = "spatial_ref"
    out = cube.copy(deep=False)
    out.attrs = attrs
    out.encoding = encoding
    return out
