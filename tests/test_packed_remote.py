"""Packed stores (eocube.packed) on remote storage: S3 (the local moto server of
tests/s3_server.py) and the hub double (tests/hub_server.py); the local behaviour is in
tests/test_packed.py."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cubes import open_cube
from s3_server import S3Server

import eocube
from eocube import packed

CUBE = "s2_l2a_openeo_gfmap_19x4x52x46"


@pytest.fixture(scope="module")
def zipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("packed") / "gfmap.eocube.zip"
    eocube.to_eocube(open_cube(CUBE), target, crf=24)
    return target


def test_a_packed_store_reads_from_s3(s3: S3Server, zipped: Path) -> None:
    url = f"{s3.bucket()}/gfmap.eocube.zip"
    s3.filesystem().put_file(str(zipped), url)
    with (
        eocube.open_dataset(zipped) as local,
        xr.open_dataset(url, engine="eocube", storage_options=s3.storage_options) as remote,
    ):
        xr.testing.assert_identical(local.load(), remote.load())


@pytest.mark.parametrize("whole", [True, False], ids=["read-whole", "range-reads"])
def test_a_published_packed_store_reads_over_hf(
    zipped: Path, whole: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub_server import HubServer

    from eocube.hub import publish
    from eocube.hubfs import RangeHfFileSystem

    monkeypatch.setattr(packed, "WHOLE_READ_BYTES", 1 << 30 if whole else 0)
    monkeypatch.setattr(packed, "TAIL_READ_BYTES", 1024)
    size = zipped.stat().st_size
    with HubServer(token="hf_test") as hub:
        sha = publish(zipped, "eocube/packed", endpoint=hub.url, token="hf_test")
        assert hub.files("eocube/packed", sha)["gfmap.eocube.zip"] == zipped.read_bytes()
        RangeHfFileSystem.clear_instance_cache()
        mark = len(hub.requests)
        url = f"hf://datasets/eocube/packed@{sha}/gfmap.eocube.zip"
        options = {"endpoint": hub.url, "token": "hf_test"}
        with (
            xr.open_dataset(url, engine="eocube", storage_options=options) as remote,
            eocube.open_dataset(zipped) as local,
        ):
            xr.testing.assert_identical(remote.load(), local.load())
        requests = hub.log_since(mark)
        data = [r for r in requests if r.is_data]
    if whole:  # a small cube: its revision, its size, then one request for all of it
        assert [r.sent for r in data] == [size]
        assert len(requests) == 3
    else:  # the end (central directory), then each object asked for: no byte twice
        assert len(data) > 2
        assert sum(r.sent for r in data) <= size


def test_to_eocube_writes_a_packed_store_to_s3(s3: S3Server, tmp_path: Path) -> None:
    cube = open_cube(CUBE)
    url = f"{s3.bucket()}/gfmap.eocube.zip"
    report = eocube.to_eocube(cube, url, crf=30, storage_options=s3.storage_options)
    eocube.to_eocube(cube, tmp_path / "gfmap.eocube.zip", crf=30)
    stored = s3.filesystem().cat_file(url)
    assert report.nbytes == len(stored)
    # the same objects (the root document differs by the encode time it records)
    with (
        zipfile.ZipFile(tmp_path / "gfmap.eocube.zip") as a,
        zipfile.ZipFile(io.BytesIO(stored)) as b,
    ):
        assert a.namelist() == b.namelist()
        assert a.read("data/c/0/0/0/0") == b.read("data/c/0/0/0/0")


def test_a_packed_release_writes_publishes_and_reads(tmp_path: Path) -> None:
    from hub_server import HubServer

    from eocube.catalog import items
    from eocube.hub import publish
    from eocube.hubfs import RangeHfFileSystem

    cubes = {"gfmap": open_cube(CUBE), "bcsd": open_cube("stars_bcsd_obs_12x2x33x81")}
    folder = tmp_path / "release"
    table = eocube.write_release(cubes, folder, packed=True, crf=24, progress=False)
    assert sorted(p.name for p in (folder / "cubes").iterdir()) == [
        "bcsd.eocube.zip",
        "gfmap.eocube.zip",
    ]
    # the catalog's sizes are the files'
    listed = {item["id"]: item for item in items(table)}
    gfmap = folder / "cubes/gfmap.eocube.zip"
    assert listed["gfmap"]["properties"]["eocube:bytes"] == gfmap.stat().st_size
    assert listed["gfmap"]["assets"]["data"]["href"] == "cubes/gfmap.eocube.zip"
    assert listed["gfmap"]["assets"]["data"]["type"] == "application/zip"
    assert ".eocube.zip" in (folder / "README.md").read_text()
    with eocube.open_dataset(folder, group="gfmap") as ds:
        np.testing.assert_array_equal(ds["x"].values, cubes["gfmap"]["x"].values)
    with pytest.raises(ValueError, match="cannot share attributes"):
        eocube.write_release(cubes, tmp_path / "r2", packed=True, share_attributes=True)
    with HubServer(token="hf_test") as hub:
        sha = publish(folder, "eocube/packed-release", endpoint=hub.url, token="hf_test")
        files = hub.files("eocube/packed-release", sha)
        assert files["cubes/gfmap.eocube.zip"] == (folder / "cubes/gfmap.eocube.zip").read_bytes()
        RangeHfFileSystem.clear_instance_cache()
        options = {"endpoint": hub.url, "token": "hf_test"}
        url = f"hf://datasets/eocube/packed-release@{sha}"
        with (
            xr.open_dataset(url, engine="eocube", group="bcsd", storage_options=options) as a,
            eocube.open_dataset(folder / "cubes/bcsd.eocube.zip") as b,
        ):
            xr.testing.assert_identical(a.load(), b.load())
