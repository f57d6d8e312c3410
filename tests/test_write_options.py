"""to_eocube's xarray-shaped options: compute=False (a dask.delayed write) and per-variable
encoding= (profile, quality control and chunks of single cube variables)."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube
from dask.delayed import Delayed

import eocube
from eocube.codec import VideoCodec
from eocube.errors import IncompleteStoreError


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]]


def test_compute_false_writes_when_computed(cube: xr.Dataset, tmp_path: Path) -> None:
    now, later = tmp_path / "now.eocube", tmp_path / "later.eocube"
    eocube.to_eocube(cube, now, crf=30)
    delayed = eocube.to_eocube(cube, later, crf=30, compute=False)
    assert isinstance(delayed, Delayed)
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        eocube.open_dataset(later)  # marked unfinished until computed
    (report,) = dask.compute(delayed)
    assert report.control == "crf"
    assert report.variables["data"].psnr is not None
    xr.testing.assert_identical(eocube.open_dataset(later).load(), eocube.open_dataset(now).load())
    assert eocube.open_dataset(later).encoding["eocube"]["quality"]["data"]["psnr"] > 30


def test_compute_false_refuses_a_target(cube: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compute=False cannot meet target_psnr=40"):
        eocube.to_eocube(cube, tmp_path / "c.eocube", target_psnr=40, compute=False)
    assert not (tmp_path / "c.eocube").exists()


def two_cubes(cube: xr.Dataset) -> xr.Dataset:
    """The reflectances and a float index computed from them: two cube variables."""
    red, nir = cube.data.sel(band="B04").astype("float32"), cube.data.sel(band="B08")
    ndvi = ((nir - red) / (nir + red)).astype("float32").drop_vars("band", errors="ignore")
    return cube.assign(ndvi=ndvi)


def codecs(store: Path) -> dict[str, tuple[VideoCodec, tuple[int, ...]]]:
    group = zarr.open_group(store, mode="r")
    found = {}
    for name in ("data", "ndvi"):
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        assert isinstance(arr.serializer, VideoCodec)
        found[name] = (arr.serializer, tuple(arr.chunks))
    return found


def test_each_variable_takes_its_own_settings(cube: xr.Dataset, tmp_path: Path) -> None:
    ds = two_cubes(cube)
    store = tmp_path / "c.eocube"
    report = eocube.to_eocube(
        ds,
        store,
        crf=30,
        encoding={
            "data": {"profile": "ffv1-lossless"},
            "ndvi": {"max_abs_error": 0.01, "chunks": {"time": 2}},
        },
    )
    found = codecs(store)
    assert found["data"][0].profile == "ffv1-lossless"
    assert found["ndvi"][0].profile == "hevc-12bit-444"
    assert found["ndvi"][0].max_abs_error == 0.01
    assert found["ndvi"][1][0] == 2
    assert found["data"][1][0] == 19  # the call's chunks (default) for the rest
    assert report.variables["data"].profile == "ffv1-lossless"
    assert report.variables["data"].max_abs_error == 0
    ndvi = report.variables["ndvi"].max_abs_error
    assert ndvi is not None
    assert ndvi <= 0.01
    back = eocube.open_dataset(store).load()
    xr.testing.assert_equal(back.data, ds.data)
    assert float(np.nanmax(np.abs(back.ndvi - ds.ndvi))) <= 0.01


def test_a_variable_without_settings_takes_the_call_s(cube: xr.Dataset, tmp_path: Path) -> None:
    ds = two_cubes(cube)
    store = tmp_path / "c.eocube"
    eocube.to_eocube(ds, store, crf=30, encoding={"ndvi": {"crf": 20}}, measure=False)
    found = codecs(store)
    assert (found["data"][0].quality, found["ndvi"][0].quality) == (30, 20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoding": {"data": {"compressor": "zstd"}}}, "has 'compressor', which eocube"),
        ({"encoding": {"data": {"crf": 20, "lossless": True}}}, "conflict: give one"),
        ({"encoding": {"time": {"crf": 20}}}, "'time', which is not coded as video"),
        ({"encoding": {"data": {"crf": 20}}, "target_psnr": 40}, "cannot be combined"),
        ({"encoding": {"ndvi": {"profile": "ffv1-lossless"}}}, "'ndvi' is float32"),
        ({"encoding": {"data": {"chunks": {"level": 2}}}}, r"names \['level'\]"),
    ],
    ids=["key", "controls", "not-a-cube", "target", "lossless-float", "chunks"],
)
def test_bad_variable_settings_are_refused(
    cube: xr.Dataset, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        eocube.to_eocube(two_cubes(cube), tmp_path / "c.eocube", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "c.eocube").exists()
