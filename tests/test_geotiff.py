"""GeoTIFF input (eocube.geotiff, ``eocube encode --dates/--date-pattern``) and the GeoZarr
georeferencing attributes written beside CF's grid mapping (eocube.georef)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.shutil
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import georef
from eocube.cli import main
from eocube.geotiff import dates_from_names, open_geotiffs
from eocube.variables import CubeVar, cube_variables

BANDS = ("B02", "B03", "B04", "B08")


@pytest.fixture(scope="module")
def dates_of_source() -> list[np.datetime64]:
    return list(open_cube("s2_l2a_openeo_gfmap_19x4x52x46").time.values[:3])


def _date(value: np.datetime64) -> str:
    return str(value)[:10]


def write_geotiff(
    path: Path,
    date: int = 0,
    change: Callable[[xr.DataArray], xr.DataArray] | None = None,
    *,
    descriptions: bool = True,
) -> Path:
    """One date of a real Sentinel-2 cube (EPSG:32631, 4 bands, uint16, nodata 0), cut to
    20 × 24 px, written with rioxarray; ``change`` alters it before writing."""
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    da = cube.data.isel(time=date, y=slice(0, 20), x=slice(0, 24)).drop_vars("band")
    da = da.assign_coords(band=np.arange(1, len(BANDS) + 1))
    da.attrs = {"long_name": BANDS} if descriptions else {}
    da = da.rio.write_nodata(0)
    if change is not None:
        da = change(da)
    da.rio.to_raster(path)
    return path


def write_series(folder: Path, dates: list[np.datetime64]) -> list[Path]:
    """One GeoTIFF per date, named ``S2_<YYYYMMDD>_T31UES.tif``."""
    return [
        write_geotiff(folder / f"S2_{_date(d).replace('-', '')}_T31UES.tif", i)
        for i, d in enumerate(dates)
    ]


def _values(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_one_geotiff_is_one_date_with_band_names_crs_and_nodata(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "one.tif")
    ds = open_geotiffs(path)
    var = ds["data"]
    assert var.dims == ("time", "band", "y", "x")
    assert var.shape == (1, 4, 20, 24)
    assert "time" not in ds.coords  # no date given: none invented
    assert list(ds.band.values) == list(BANDS)
    assert var.chunks is not None  # dask: nothing read yet
    assert var.attrs["nodata"] == 0
    assert var.attrs["grid_mapping"] == "spatial_ref"
    with rasterio.open(path) as src:
        assert ds.rio.crs == src.crs
        assert var.rio.transform() == src.transform
    np.testing.assert_array_equal(var.values[0], _values(path))


def test_cloud_optimized_geotiff_reads_the_same(tmp_path: Path) -> None:
    plain = write_geotiff(tmp_path / "plain.tif")
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(plain, cog, driver="COG")  # GDAL's COG driver only copies
    with rasterio.open(cog) as src:
        assert src.profile["tiled"]  # a COG (tiled), not the striped original
    ds = open_geotiffs(cog, dates=["2024-01-01"])
    assert list(ds.band.values) == list(BANDS)
    np.testing.assert_array_equal(ds.data.values[0], _values(plain))


def _scaled(da: xr.DataArray, scales: tuple[float, ...]) -> xr.DataArray:
    """``da`` as int16 (nodata -1) with GDAL scales (rioxarray writes ``scales``)."""
    out = da.astype("int16").rio.write_nodata(-1)
    out.attrs.update(scales=scales, offsets=(0.0,) * len(scales))
    return out


def test_one_scale_for_all_bands_is_cf_and_stored_bit_exact(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "a.tif", change=lambda da: _scaled(da, (1e-4,) * 4))
    ds = open_geotiffs(path, dates=["2024-01-01"])
    assert ds.data.dtype.kind == "f"  # reflectances, as GDAL's scale says
    assert ds.data.encoding["scale_factor"] == pytest.approx(1e-4)
    store = tmp_path / "c.eocube"
    eocube.to_eocube(ds, store, lossless=True)
    raw = xr.open_dataset(store, engine="eocube", mask_and_scale=False)
    np.testing.assert_array_equal(raw.data.values[0], _values(path))  # the file's integers


def test_scales_that_differ_between_bands_stay_attributes(tmp_path: Path) -> None:
    scales = (1e-4, 1e-4, 2e-4, 1e-3)
    path = write_geotiff(tmp_path / "a.tif", change=lambda da: _scaled(da, scales))
    ds = open_geotiffs(path, dates=["2024-01-01"])
    assert ds.data.dtype == np.int16  # CF has one scale per variable: none applied
    assert ds.data.attrs["scales"] == pytest.approx(list(scales))
    assert ds.data.attrs["nodata"] == -1
    assert "scale_factor" not in ds.data.attrs
    np.testing.assert_array_equal(ds.data.values[0], _values(path))


def test_band_numbers_without_descriptions(tmp_path: Path) -> None:
    ds = open_geotiffs(
        write_geotiff(tmp_path / "one.tif", descriptions=False), dates=["2024-01-01"]
    )
    assert list(ds.band.values) == [1, 2, 3, 4]
    assert ds.time.values[0] == np.datetime64("2024-01-01")


def test_stack_with_dates_in_date_order_one_chunk_per_file(
    tmp_path: Path, dates_of_source: list[np.datetime64]
) -> None:
    paths = write_series(tmp_path, dates_of_source)
    # given out of order: stacked by date
    ds = open_geotiffs(paths[::-1], dates=[_date(d) for d in dates_of_source[::-1]])
    np.testing.assert_array_equal(ds.time.values, np.array(dates_of_source))
    assert ds.data.chunks is not None
    assert ds.data.chunks[0] == (1, 1, 1)  # each file is read on its own, when needed
    assert ds.data.chunks[1] == (4,)  # all bands of a date in one chunk
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(ds.data.isel(time=i).values, _values(path))


def test_date_pattern_finds_dates_in_file_names(
    tmp_path: Path, dates_of_source: list[np.datetime64]
) -> None:
    paths = write_series(tmp_path, dates_of_source)
    ds = open_geotiffs(paths[::-1], date_pattern="%Y%m%d")
    np.testing.assert_array_equal(ds.time.values, np.array(dates_of_source))
    np.testing.assert_array_equal(ds.data.isel(time=0).values, _values(paths[0]))
    assert dates_from_names(["x/ndvi_2024-045.tif"], "_%Y-%j") == [np.datetime64("2024-02-14")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give their dates"),
        ({"dates": ["2024-01-01"]}, "dates= has 1 dates for 2 files"),
        ({"dates": ["2024-01-01", "soon"]}, "dates= holds 'soon', not a date"),
        ({"dates": ["2024-01-01", "2024-01-01"]}, "have the same date"),
        ({"date_pattern": "%Y%m%d"}, r"b\.tif: its name 'b\.tif' holds no date"),
        ({"date_pattern": "%Y%q"}, "%q is not one of the directives"),
        ({"date_pattern": "%m%d"}, "has no year"),
        ({"dates": ["2024-01-01", "2024-01-02"], "date_pattern": "%Y"}, "not both"),
    ],
)
def test_dates_that_do_not_fit_are_refused(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    paths = [write_geotiff(tmp_path / "a_20240101.tif"), write_geotiff(tmp_path / "b.tif", 1)]
    with pytest.raises(ValueError, match=message):
        open_geotiffs(paths, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda da: da.rio.write_crs("EPSG:32632"), "CRS EPSG:32632 instead of EPSG:32631"),
        (lambda da: da.assign_coords(x=da.x + 10), "transform"),
        (lambda da: da.astype("int16"), "dtype int16 instead of uint16"),
        (lambda da: da.isel(y=slice(0, 10)), r"shape \(band, y, x\) \(4, 10, 24\)"),
        (lambda da: da.rio.write_nodata(65535), "nodata 65535.0 instead of 0.0"),
        (lambda da: da.assign_attrs(long_name=("a", "b", "c", "d")), "band descriptions"),
    ],
)
def test_a_file_that_differs_is_named(
    tmp_path: Path, change: Callable[[xr.DataArray], xr.DataArray], message: str
) -> None:
    first = write_geotiff(tmp_path / "first.tif")
    odd = write_geotiff(tmp_path / "odd.tif", 1, change)
    with pytest.raises(ValueError, match=rf"odd\.tif differs from .*first\.tif: {message}"):
        open_geotiffs([first, odd], dates=["2024-01-01", "2024-01-06"])


def test_without_rioxarray_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_geotiff(tmp_path / "one.tif")
    monkeypatch.setitem(sys.modules, "rioxarray", None)  # import rioxarray fails
    with pytest.raises(ImportError, match=r"pip install 'eocube\[geotiff\]'"):
        open_geotiffs(path)
    assert main(["encode", str(path), str(tmp_path / "c.eocube"), "--quiet"]) == 2


def _geozarr_attributes(store: Path, name: str = "data") -> dict[str, object]:
    """The attributes of an array as a plain zarr reader (a GeoZarr tool) sees them."""
    arr = zarr.open_group(store, mode="r")[name]
    return dict(arr.attrs)


def test_lossless_round_trip_keeps_crs_transform_and_values_and_writes_geozarr(
    tmp_path: Path, dates_of_source: list[np.datetime64]
) -> None:
    paths = write_series(tmp_path, dates_of_source)
    ds = open_geotiffs(paths, date_pattern="%Y%m%d")
    store = tmp_path / "c.eocube"
    report = eocube.to_eocube(ds, store, lossless=True)
    assert report.variables["data"].max_abs_error == 0
    back = xr.open_dataset(store, engine="eocube")
    with rasterio.open(paths[0]) as src:
        crs, transform = src.crs, src.transform
    assert back.rio.crs == crs
    assert back.data.rio.transform() == transform
    assert back.data.rio.nodata == 0
    assert list(back.band.values) == list(BANDS)
    np.testing.assert_array_equal(back.time.values, np.array(dates_of_source))
    np.testing.assert_array_equal(back.data.values, ds.data.values)  # bit-exact
    assert back.data.attrs == ds.data.attrs  # the GeoZarr copy is not read back twice
    # the same georeferencing in GeoZarr's attributes, for readers of zarr alone
    attrs = _geozarr_attributes(store)
    uuids = [c["uuid"] for c in attrs["zarr_conventions"]]  # type: ignore[attr-defined,index]
    assert uuids == [georef.PROJ_CONVENTION["uuid"], georef.SPATIAL_CONVENTION["uuid"]]
    assert attrs["proj:code"] == "EPSG:32631"
    assert attrs["spatial:dimensions"] == ["y", "x"]
    assert attrs["spatial:shape"] == [20, 24]
    assert rasterio.Affine(*attrs["spatial:transform"]) == transform  # type: ignore[misc]


def test_cli_stacks_geotiffs_lossy_within_the_reported_error(
    tmp_path: Path, dates_of_source: list[np.datetime64], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_series(tmp_path, dates_of_source)
    store = tmp_path / "c.eocube"
    argv = ["encode", *map(str, paths), str(store), "--date-pattern", "%Y%m%d", "--crf", "20"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    back = xr.open_dataset(store, engine="eocube")
    with rasterio.open(paths[0]) as src:
        assert back.rio.crs == src.crs
        assert back.data.rio.transform() == src.transform
    np.testing.assert_array_equal(back.time.values, np.array(dates_of_source))
    original = np.stack([_values(p) for p in paths]).astype(np.int64)
    error = np.abs(back.data.values.astype(np.int64) - original).max()
    reported = report["variables"]["data"]["max_abs_error"]
    assert 0 < error <= reported


def test_cli_one_geotiff_with_a_date_and_dates_flag(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "one.tif")
    store = tmp_path / "c.eocube"
    assert main(["encode", str(path), str(store), "--dates", "2024-03-01", "--lossless"]) == 0
    back = eocube.open_dataset(store)
    assert back.time.values[0] == np.datetime64("2024-03-01")
    np.testing.assert_array_equal(back.data.values[0], _values(path))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "to stack them along time into one cube, give their dates with --dates"),
        (["--dates", "2024-01-01"], "--dates has 1 dates for 2 files"),
        (["--date-pattern", "%Q"], "--date-pattern '%Q': %Q is not one of"),
    ],
)
def test_cli_errors_name_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    paths = [str(write_geotiff(tmp_path / f"{i}.tif", i)) for i in range(2)]
    assert main(["encode", *paths, str(tmp_path / "c.eocube"), *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eocube: error: ")
    assert message in err


def test_cli_dates_are_for_geotiffs_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nc = tmp_path / "cube.nc"
    open_cube("s2_l2a_openeo_gfmap_19x4x52x46").isel(time=[0]).to_netcdf(nc)
    assert main(["encode", str(nc), str(tmp_path / "c.eocube"), "--dates", "2024-01-01"]) == 2
    assert "not GeoTIFF: " in capsys.readouterr().err


# --- eocube.georef: GeoZarr beside CF -----------------------------------------------------


def test_geozarr_attributes_derive_from_cf_and_read_back_hidden() -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    found = georef.attributes(ds, "data", "y", "x")
    assert found["proj:code"] == "EPSG:32631"
    # pixel centres 5 m inside the corner: the transform rioxarray finds
    assert found["spatial:transform"] == list(ds.rio.transform())[:6]
    cube_vars = {"data": _cube_var(ds)}
    written = georef.with_georef(ds, cube_vars)
    assert written.data.attrs == {**ds.data.attrs, **found}
    assert ds.data.attrs == open_cube("s2_l2a_openeo_gfmap_19x4x52x46").data.attrs  # unchanged
    georef.drop_derived(written)
    assert written.data.attrs == ds.data.attrs


def test_geozarr_attributes_of_the_data_itself_stay() -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    own = {"proj:code": "EPSG:4326"}  # says otherwise than CF: the data's own, kept
    ds["data"].attrs.update(own)
    written = georef.with_georef(ds, {"data": _cube_var(ds)})
    assert written.data.attrs == ds.data.attrs  # nothing added beside them
    georef.drop_derived(written)
    assert written.data.attrs["proj:code"] == "EPSG:4326"


def test_no_crs_no_geozarr_and_wkt2_without_an_epsg_code() -> None:
    ds = open_cube("stars_cmip3_tos_24x1x170x180")
    assert georef.attributes(ds, "data", "lat", "lon") == {}
    # a transverse Mercator of no authority's: no code names it
    local = pyproj.CRS.from_proj4("+proj=tmerc +lon_0=13.7 +k=0.9999 +x_0=123456 +ellps=GRS80")
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46").drop_attrs(deep=False)
    ds["spatial_ref"].attrs = {"crs_wkt": local.to_wkt("WKT1_GDAL")}
    found = georef.attributes(ds, "data", "y", "x")
    assert "proj:code" not in found
    assert pyproj.CRS.from_wkt(found["proj:wkt2"]) == local
    assert found["proj:wkt2"].startswith("PROJCRS[")  # WKT 2, as the convention wants


def test_stale_geotransform_gives_way_to_the_coordinates() -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    ds["spatial_ref"].attrs["GeoTransform"] = "587880.0 10.0 0.0 5685430.0 0.0 -10.0"
    assert georef.affine(ds, "data", "y", "x") == [10.0, 0.0, 587880.0, 0.0, -10.0, 5685430.0]
    cut = ds.isel(x=slice(3, None))  # the attribute no longer fits the coordinates
    assert georef.affine(cut, "data", "y", "x") == [10.0, 0.0, 587910.0, 0.0, -10.0, 5685430.0]


def _cube_var(ds: xr.Dataset) -> CubeVar:
    cube_vars, _ = cube_variables(ds, None, ["data"], None)
    return cube_vars["data"]
