"""The ``.eocube`` accessor: registered by ``import eocube``; writes, appends and describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from cubes import open_cube

import eocube
from eocube.accessor import StoreInfo


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46")


def test_importing_eocube_registers_the_accessor() -> None:
    probe = (
        "import xarray as xr, eocube; "
        "print(hasattr(xr.Dataset(), 'eocube'), hasattr(xr.DataArray(), 'eocube'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_the_accessor_writes_appends_and_describes(cube: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "c.eocube"
    first = cube.isel(time=slice(0, 8)).eocube.to_eocube(store, crf=30, chunks={"time": 4})
    cube.isel(time=slice(8, 19)).eocube.to_eocube(store, append_dim="time", measure=False)
    opened = eocube.open_dataset(store)
    assert opened.sizes["time"] == 19
    info = opened.eocube.info
    assert isinstance(info, StoreInfo)
    data = info.variables["data"]
    assert (data.profile, data.crf, data.max_abs_error) == ("hevc-12bit-444", 30, None)
    assert data.chunks == (4, 4, 52, 46)
    assert data.shape == (19, 4, 52, 46)
    assert info.variables["mask"].profile is None  # a categorical layer, lossless
    # an append drops the PSNR recorded for the first dates (it described those alone)
    assert data.recorded == {}
    assert info.pending is None
    assert "hevc-12bit-444 crf=30" in str(info)
    assert first.variables["data"].psnr is not None


def test_info_gives_the_recorded_quality(cube: xr.Dataset, tmp_path: Path) -> None:
    report = cube[["data"]].eocube.to_eocube(tmp_path / "c.eocube", max_abs_error=25)
    data = eocube.open_dataset(tmp_path / "c.eocube").eocube.info.variables["data"]
    assert data.max_abs_error == 25
    assert data.recorded["psnr"] == pytest.approx(report.variables["data"].psnr, abs=1e-4)
    assert data.recorded["max_abs_error"] <= 25


def test_a_data_array_writes_through_its_accessor(cube: xr.Dataset, tmp_path: Path) -> None:
    report = cube.data.eocube.to_eocube(tmp_path / "c.eocube", lossless=True)
    assert report.variables["data"].max_abs_error == 0
    xr.testing.assert_equal(eocube.open_dataset(tmp_path / "c.eocube").data.load(), cube.data)


def test_info_needs_an_eocube_store(cube: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="not opened from an eocube store"):
        _ = cube.eocube.info
