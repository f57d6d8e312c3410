"""to_eocube, the eocube.video zarr codec and the eocube engine, on real cubes."""

from __future__ import annotations

import math
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import layout, metrics

DATA = Path(__file__).parent / "data"


# integer cubes whose bands fit ffv1's 16 bits, kept small enough for the test budget
LOSSLESS_CUBES = [
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_openeo_gfmap_12x5x66x64",
    "s2_l2a_worldcereal_12x9x100x100",
    "l8_ny18_014031",
    "landsat7_rgb_byte",
    "erainterim_uvz",
]


@pytest.mark.parametrize("name", LOSSLESS_CUBES)
def test_lossless_store_is_identical(tmp_path: Path, name: str) -> None:
    ds = open_cube(name)
    report = eocube.to_eocube(ds, tmp_path / "cube.eocube", lossless=True)
    reopened = xr.open_dataset(tmp_path / "cube.eocube", engine="eocube")
    xr.testing.assert_identical(reopened.load(), ds)
    assert report.variables["data"].max_abs_error == 0
    assert report.nbytes > report.variables["data"].payload_nbytes


@pytest.mark.parametrize(
    "name",
    [
        "s2_l2a_fusets_field_33x3x57x56",
        "stars_cmip3_tos_24x1x170x180",
        "s2_l2a_worldcereal_12x9x100x100",
    ],
)
def test_lossy_store_keeps_metadata_nan_and_nodata(tmp_path: Path, name: str) -> None:
    ds = open_cube(name)
    report = eocube.to_eocube(ds, tmp_path / "cube.eocube", crf=12)
    reopened = eocube.open_dataset(tmp_path / "cube.eocube").load()
    xr.testing.assert_identical(reopened.drop_vars("data"), ds.drop_vars("data"))
    assert reopened.data.dtype == ds.data.dtype
    assert reopened.data.attrs == ds.data.attrs
    orig, dec = ds.data.values, reopened.data.values
    if orig.dtype.kind == "f":
        np.testing.assert_array_equal(np.isnan(dec), np.isnan(orig))
    nodata = ds.data.attrs.get("nodata")
    if nodata is not None:
        np.testing.assert_array_equal(dec == nodata, orig == nodata)
    psnr = metrics.psnr(orig, dec, None if nodata is None else float(nodata))
    assert psnr > 35, psnr
    assert report.variables["data"].psnr == pytest.approx(psnr)


def test_qa_bit_field_without_flag_attributes_is_kept_lossless(tmp_path: Path) -> None:
    # Landsat BQA: 15 distinct bit patterns, described in free text only (no flag_values);
    # through the video codec it came back off by up to 4140
    ds = open_cube("l8_ny18_014031")
    assert not {"flag_values", "flag_masks", "flag_meanings"} & set(ds.mask.attrs)
    report = eocube.to_eocube(ds, tmp_path / "c.eocube")
    assert set(report.variables) == {"data"}
    reopened = eocube.open_dataset(tmp_path / "c.eocube")
    xr.testing.assert_identical(reopened.mask.load(), ds.mask)


def test_psnr_reported_and_coordinates_and_crs_survive(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_worldcereal_118x4x64x64")
    report = eocube.to_eocube(ds, tmp_path / "c.eocube")
    assert set(report.variables) == {"data"}  # the SCL mask (flag_values) is kept lossless
    reopened = eocube.open_dataset(tmp_path / "c.eocube")
    xr.testing.assert_identical(reopened.mask.load(), ds.mask)
    for name, coord in ds.coords.items():
        xr.testing.assert_identical(reopened[name].load(), coord)
    assert reopened.spatial_ref.attrs == ds.spatial_ref.attrs
    assert 0 < report.bpppb < 2
    assert report.variables["data"].psnr is not None
    assert report.variables["data"].psnr > 40


def test_store_exists_needs_mode_w(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.to_eocube(ds, tmp_path / "c.eocube", measure=False)
    with pytest.raises(Exception, match="exist"):
        eocube.to_eocube(ds, tmp_path / "c.eocube", measure=False)
    eocube.to_eocube(ds, tmp_path / "c.eocube", mode="w", measure=False, crf=30)


def test_conflicting_options_and_no_cube() -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    with pytest.raises(ValueError, match="conflict"):
        eocube.to_eocube(ds, "memory://x.eocube", lossless=True, crf=3)
    with pytest.raises(ValueError, match="no cube variable"):
        eocube.to_eocube(ds.isel(time=0), "memory://y.eocube")
    with pytest.raises(eocube.ProfileError, match="valid profiles"):
        eocube.to_eocube(ds, "memory://z.eocube", profile="nope")


def test_selection_decodes_only_touched_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = open_cube("s2_l2a_worldcereal_118x4x64x64")
    eocube.to_eocube(
        ds[["data"]], tmp_path / "c.eocube", chunks={"time": 16, "y": 32, "x": 32}, measure=False
    )
    import eocube.reader as codec_module  # the one chunk-read path decodes here

    calls: list[int] = []
    real = codec_module.decode_chunk

    def counting(payload: bytes, **kw: object) -> np.ndarray:
        calls.append(1)
        return real(payload)

    monkeypatch.setattr(codec_module, "decode_chunk", counting)
    reopened = eocube.open_dataset(tmp_path / "c.eocube")
    assert calls == []  # opening decodes nothing
    one = reopened.data.isel(time=20, band=1).values  # time chunk 1, all 2x2 spatial chunks
    assert len(calls) == 4
    np.testing.assert_allclose(one, ds.data.isel(time=20, band=1).values, atol=4000)
    calls.clear()
    _ = reopened.data.isel(time=40, y=5, x=40).values  # one chunk
    assert len(calls) == 1


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_dask_chunks_follow_the_store(tmp_path: Path, scheduler: str) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_12x5x66x64")
    eocube.to_eocube(
        ds[["data"]], tmp_path / "c.eocube", chunks={"time": 4, "y": 32, "x": 32}, measure=False
    )
    lazy = eocube.open_dataset(tmp_path / "c.eocube", chunks={})
    assert lazy.data.chunks[0] == (4, 4, 4)
    assert lazy.data.chunks[2] == (32, 32, 2)
    eager = eocube.open_dataset(tmp_path / "c.eocube").data.values
    with dask.config.set(scheduler=scheduler):
        mean = float(lazy.data.mean().compute())
    assert mean == pytest.approx(float(eager.mean()), rel=1e-12)


def test_plain_zarr_and_open_zarr_read_the_store(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.to_eocube(ds, tmp_path / "c.eocube", lossless=True, measure=False)
    arr = zarr.open_group(tmp_path / "c.eocube", mode="r")["data"]
    assert isinstance(arr, zarr.Array)
    np.testing.assert_array_equal(arr[:], ds.data.values)
    via_zarr = xr.open_zarr(tmp_path / "c.eocube", zarr_format=3)
    np.testing.assert_array_equal(via_zarr.data.values, ds.data.values)


def test_memory_url_and_dataarray(tmp_path: Path) -> None:
    da = open_cube("stars_bcsd_obs_12x2x33x81").data
    eocube.to_eocube(da, "memory://bcsd.eocube", crf=8)
    back = eocube.open_dataset("memory://bcsd.eocube").data
    assert back.dims == da.dims
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(da.values))


def test_per_array_metadata_lets_zarr_open_arrays_by_path(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.to_eocube(
        ds, tmp_path / "c.eocube", lossless=True, measure=False, per_array_metadata=True
    )
    arr = zarr.open_array(tmp_path / "c.eocube", path="data", mode="r")
    np.testing.assert_array_equal(arr[:], ds.data.values)


def test_overhead_of_a_cube_with_regular_coordinates(tmp_path: Path) -> None:
    # real Sentinel-2 values and their regular x/y grid; no descriptive attributes or CRS
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]].drop_vars("spatial_ref")
    ds.attrs = {}
    ds.data.attrs = {"units": "1"}
    report = eocube.to_eocube(ds, tmp_path / "c.eocube", crf=30)
    overhead = report.nbytes - report.variables["data"].payload_nbytes
    assert overhead <= 4096, overhead
    objects = sorted(
        p.relative_to(tmp_path / "c.eocube").as_posix()
        for p in (tmp_path / "c.eocube").rglob("*")
        if p.is_file()
    )
    assert "zarr.json" in objects
    assert "data/zarr.json" not in objects


def test_regular_axes_are_nearly_free(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.to_eocube(ds, tmp_path / "c.eocube", crf=30, measure=False)
    for axis in ("x", "y"):
        size = (tmp_path / "c.eocube" / axis / "c" / "0").stat().st_size
        assert size < 40, (axis, size)


def test_time_only_variable_lat_lon_spelling_and_scale_factor_encoding(tmp_path: Path) -> None:
    src = open_cube("era5_t2m_uk_744h").isel(time=slice(0, 48))
    da = src.data.isel(band=0, drop=True).rename({"y": "lat", "x": "lon"})
    ds = da.to_dataset(name="t2m")
    ds.t2m.encoding = {
        "dtype": "int16",
        "scale_factor": 0.01,
        "add_offset": 280.0,
        "_FillValue": -32768,
    }
    report = eocube.to_eocube(ds, tmp_path / "c.eocube", lossless=True)
    assert set(report.variables) == {"t2m"}
    back = eocube.open_dataset(tmp_path / "c.eocube")
    assert back.t2m.dims == ("time", "lat", "lon")
    assert back.t2m.encoding["scale_factor"] == 0.01
    assert back.t2m.encoding["add_offset"] == 280.0
    assert back.t2m.encoding["dtype"] == np.dtype("int16")
    # lossless on the packed int16: only the packing's own rounding (half a step) remains
    np.testing.assert_allclose(back.t2m.values, ds.t2m.values, atol=0.005 + 1e-4)


def test_crs_survives_for_rioxarray(tmp_path: Path) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    del rioxarray
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    crs = ds.rio.crs
    assert crs is not None
    eocube.to_eocube(ds, tmp_path / "c.eocube", crf=30, measure=False)
    back = eocube.open_dataset(tmp_path / "c.eocube")
    assert back.rio.crs == crs
    assert back.data.rio.crs == crs


def test_file_url_with_storage_options_dims_override_and_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    ds = src[["data"]].rename({"time": "date", "band": "wavelength"})
    url = f"file://{tmp_path}/nested/c.eocube"
    dims = {"time": "date", "band": "wavelength"}
    report = eocube.to_eocube(
        ds, url, storage_options={"auto_mkdir": True}, dims=dims, progress=True, crf=20
    )
    # not a terminal: plain progress lines on stderr, no carriage returns (eocube.progress)
    err = capsys.readouterr().err
    assert "eocube: encode" in err
    assert "(100%)" in err
    assert "\r" not in err
    assert set(report.variables) == {"data"}
    back = eocube.open_dataset(url, storage_options={"auto_mkdir": False})
    assert back.data.dims == ("date", "wavelength", "y", "x")
    assert report.variables["data"].psnr > 40


# a dense series on a 16 x 20 grid spends the pixel budget on dates: all 140 in a chunk
@pytest.mark.parametrize(("step", "expected"), [("1h", 140), ("1D", 140), ("5D", 32)])
def test_default_time_chunk_follows_the_sampling(tmp_path: Path, step: str, expected: int) -> None:
    rng = np.random.default_rng(0)
    times = np.arange(140) * np.timedelta64(1, "h" if step == "1h" else "D")
    if step == "5D":
        times = times * 5
    data = rng.normal(size=(140, 16, 20)).astype(np.float32)
    ds = xr.Dataset(
        {"t2m": (("time", "y", "x"), data)},
        coords={"time": np.datetime64("2020-01-01T00", "h") + times},
    )
    eocube.to_eocube(ds, tmp_path / "c.eocube", measure=False)
    lazy = eocube.open_dataset(tmp_path / "c.eocube", chunks={})
    assert lazy.t2m.chunks[0][0] == expected


@pytest.mark.parametrize(
    ("side", "chunks", "expected"),
    [
        (1100, None, 128),  # 256 x 256 px chunks: the dense default
        (100, None, 209),  # 100 x 100 px: the pixel budget over 10,000 px
        (20, None, 256),  # a tiny grid: the longest dense chunk
        (1100, {"x": 16, "y": 16}, 256),  # the spatial chunks asked for count
        (1100, {"x": 128, "y": 128}, 128),  # 16,384 px: the budget gives 128
        (20, {"time": 64}, 64),  # the time chunk asked for is kept
    ],
)
def test_dense_series_spend_the_pixel_budget_on_dates(
    side: int, chunks: dict[str, int] | None, expected: int
) -> None:
    hours = np.datetime64("2020-01-01T00", "h") + np.arange(3000) * np.timedelta64(1, "h")
    var = xr.DataArray(
        np.broadcast_to(np.float32(0), (3000, 1, side, side)),  # no memory behind it
        dims=("time", "band", "y", "x"),
        coords={"time": hours},
    )
    roles = {"time": "time", "band": "band", "y": "y", "x": "x"}
    inner, _ = layout.chunk_shape(var, roles, chunks)
    assert inner[0] == expected
    assert layout.dense_time_chunk(1) == layout.DENSE_TIME_MAX


def _default_chunk(steps: int, side: int, chunks: dict[str, int] | None) -> tuple[int, ...]:
    """The chunk layout.chunk_shape gives a uint16 (time, 3 bands, side, side) variable."""
    var = xr.DataArray(
        np.broadcast_to(np.uint16(0), (steps, 3, side, side)),  # no memory behind it
        dims=("time", "band", "y", "x"),
        name="r",
    )
    roles = {"time": "time", "band": "band", "y": "y", "x": "x"}
    inner, _ = layout.chunk_shape(var, roles, chunks)
    return tuple(inner)


@pytest.mark.parametrize(
    ("steps", "chunks", "expected"),
    [
        (1, None, (1, 3, 1024, 1024)),
        (2, None, (2, 3, 1024, 1024)),
        (5, None, (5, 3, 512, 512)),
        (12, None, (12, 3, 256, 256)),
        (12, {"time": 1}, (1, 3, 1024, 1024)),  # the time chunk asked for sets the side
        (1, {"x": 300}, (1, 3, 1024, 300)),
    ],
)
def test_short_series_get_wider_chunks_of_the_same_pixel_budget(
    steps: int, chunks: dict[str, int] | None, expected: tuple[int, ...]
) -> None:
    inner = _default_chunk(steps, 1100, chunks)
    assert inner == expected
    assert inner[0] * inner[2] * inner[3] <= layout.CHUNK_PIXELS


@pytest.mark.parametrize(
    ("steps", "chunks", "expected"),
    [
        (33, None, 33),  # 32 + 1: one chunk of 33
        (68, None, 34),  # 32 + 32 + 4: two of 34
        (72, None, 36),  # 32 + 32 + 8: a tail of a quarter is still spread
        (73, None, 32),  # 32 + 32 + 9: kept
        (64, None, 32),  # no tail
        (20, None, 20),  # shorter than a chunk
        (68, {"time": 32}, 32),  # the chunk asked for is kept, tail and all
    ],
)
def test_a_short_last_time_chunk_is_spread_over_the_others(
    steps: int, chunks: dict[str, int] | None, expected: int
) -> None:
    inner = _default_chunk(steps, 300, chunks)
    assert inner[0] == expected
    last = steps - (math.ceil(steps / expected) - 1) * expected
    assert chunks or last > expected // layout.SHORT_TAIL or last == expected


def test_a_dense_series_tail_is_spread_and_a_growing_axis_keeps_its_chunk() -> None:
    hours = np.datetime64("2020-01-01T00", "h") + np.arange(520) * np.timedelta64(1, "h")
    var = xr.DataArray(
        np.broadcast_to(np.float32(0), (520, 1, 300, 300)),  # no memory behind it
        dims=("time", "band", "y", "x"),
        coords={"time": hours},
    )
    roles = {"time": "time", "band": "band", "y": "y", "x": "x"}
    assert layout.chunk_shape(var, roles, None)[0][0] == 130  # 128 x 4 + 8: 4 of 130
    # a store made for appends keeps the chunk its appends will fill
    assert layout.chunk_shape(var, roles, None, growing="time")[0][0] == 128


def test_in_memory_write_matches_the_dask_write(tmp_path: Path) -> None:
    # an in-memory cube encodes while its metadata is written (encode.EagerEncodes); a
    # dask-backed one through dask tasks: the same store, byte for byte, with a shard of
    # several chunks (staged, then dropped)
    ds = open_cube("s2_l2a_worldcereal_118x4x64x64").isel(time=slice(0, 80))
    stores = {}
    for kind, cube in (("numpy", ds), ("dask", ds.chunk({"time": 40}))):
        path = tmp_path / f"{kind}.eocube"
        eocube.to_eocube(cube, path, crf=28, chunks={"time": 32})
        stores[kind] = {
            p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()
        }
    assert stores["numpy"] == stores["dask"]
    assert not any(layout.STAGING in key for key in stores["numpy"])
    reopened = eocube.open_dataset(tmp_path / "numpy.eocube")
    assert reopened.data.shape == ds.data.shape


def test_in_memory_write_refusal_removes_the_store(tmp_path: Path) -> None:
    ds = open_cube("stars_cmip3_tos_24x1x170x180")
    values = ds["data"].values.copy()
    values[20].flat[values[20].size // 2] = np.inf  # in the last of three chunks
    ds["data"] = ds["data"].copy(data=values)
    with pytest.raises(eocube.UnsupportedDataError):
        eocube.to_eocube(ds, tmp_path / "cube.eocube", chunks={"time": 8})
    assert not (tmp_path / "cube.eocube").exists()
