"""Stores on a real object store: S3 requests to a local moto server (tests/s3_server.py).

The same fsspec calls as on AWS: writes through ``to_eocube(..., storage_options=...)``,
reads through ``xr.open_dataset(..., engine="eocube", storage_options=...)``, a release
uploaded as it is and its catalog queried there, a write killed mid-way and resumed, and a
``dask.distributed`` cluster writing and reading from worker processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
from cubes import DATA, open_cube
from s3_server import S3Server

import eocube
from eocube import metrics
from eocube.errors import IncompleteStoreError
from eocube.release import cube_path

LOSSY: dict[str, Any] = {"crf": 24}


def _stored_objects(s3: S3Server, url: str) -> dict[str, bytes]:
    """Relative key -> bytes of every object under ``url``."""
    fs = s3.filesystem()
    root = url.removeprefix("s3://").rstrip("/")
    return {key[len(root) + 1 :]: fs.cat_file(key) for key in fs.find(root)}


def _local_objects(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_a_lossless_store_on_s3_reads_back_bit_exact(s3: S3Server, tmp_path: Path) -> None:
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    url = f"{s3.bucket()}/gfmap.eocube"
    report = eocube.to_eocube(cube, url, lossless=True, storage_options=s3.storage_options)
    eocube.to_eocube(cube, tmp_path / "gfmap.eocube", lossless=True)

    with xr.open_dataset(url, engine="eocube", storage_options=s3.storage_options) as remote:
        np.testing.assert_array_equal(remote.data.values, cube.data.values)
        with eocube.open_dataset(tmp_path / "gfmap.eocube") as local:
            xr.testing.assert_identical(remote.load(), local.load())
    stored = _stored_objects(s3, url)
    # the bucket holds the objects a local write makes, payloads byte for byte (the root
    # zarr.json differs only by the measured encode time)
    assert set(stored) == set(_local_objects(tmp_path / "gfmap.eocube"))
    assert stored["data/c/0/0/0/0"] == (tmp_path / "gfmap.eocube/data/c/0/0/0/0").read_bytes()
    assert report.nbytes == sum(map(len, stored.values()))


@pytest.mark.parametrize("control", [LOSSY, {"max_abs_error": 40.0}], ids=["crf", "bound"])
def test_a_lossy_store_on_s3_keeps_its_reported_error(
    s3: S3Server, control: dict[str, Any]
) -> None:
    cube = open_cube("s2_l2a_worldcereal_72x4x64x64")
    url = f"{s3.bucket()}/worldcereal.eocube"
    report = eocube.to_eocube(
        cube, url, chunks={"time": 16}, storage_options=s3.storage_options, **control
    )
    reported = report.variables["data"].max_abs_error
    with xr.open_dataset(
        url, engine="eocube", chunks={}, storage_options=s3.storage_options
    ) as remote:
        assert remote.data.chunks is not None  # lazy: read chunk by chunk from the bucket
        values = remote.data.values
    nodata = cube.data.attrs.get("nodata")
    error = metrics.max_abs_error(cube.data.values, values, nodata)
    assert 0 < error <= reported
    assert error == pytest.approx(reported)
    if "max_abs_error" in control:
        assert error <= control["max_abs_error"]
    assert metrics.psnr(cube.data.values, values, nodata) == pytest.approx(
        report.variables["data"].psnr, abs=0.01
    )


def test_a_store_replaced_on_s3_keeps_no_stale_object(s3: S3Server) -> None:
    cube = open_cube("stars_bcsd_obs_12x2x33x81")
    bucket = s3.bucket()
    url = f"{bucket}/bcsd.eocube"
    narrow: dict[Hashable, int] = {"x": 16}  # 6 chunks along x, 4 per shard: two shard objects
    eocube.to_eocube(cube, url, chunks=narrow, storage_options=s3.storage_options, **LOSSY)
    assert len([k for k in _stored_objects(s3, url) if k.startswith("data/c/")]) == 2
    with pytest.raises(FileExistsError, match="mode='w'"):
        eocube.to_eocube(cube, url, storage_options=s3.storage_options, **LOSSY)
    report = eocube.to_eocube(cube, url, mode="w", storage_options=s3.storage_options, **LOSSY)
    stored = _stored_objects(s3, url)
    assert [k for k in stored if k.startswith("data/c/")] == ["data/c/0/0/0/0"]
    assert report.nbytes == sum(map(len, stored.values()))
    with pytest.raises(FileNotFoundError, match=f"{bucket}/missing.eocube"):
        eocube.open_dataset(f"{bucket}/missing.eocube", storage_options=s3.storage_options)


def test_a_release_uploaded_to_s3_is_queried_and_read_there(s3: S3Server, tmp_path: Path) -> None:
    cubes = {"bcsd": open_cube("stars_bcsd_obs_12x2x33x81")}
    cubes["gfmap"] = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.write_release(cubes, tmp_path / "release", progress=False, **LOSSY)
    bucket = s3.bucket()
    s3.filesystem().put(str(tmp_path / "release"), bucket.removeprefix("s3://"), recursive=True)
    url = f"{bucket}/release"

    catalog = eocube.open_catalog(
        f"{url}/catalog.parquet",
        filters=[("id", "==", "gfmap")],
        storage_options=s3.storage_options,
    )
    assert catalog.column("id").to_pylist() == ["gfmap"]
    assert catalog.equals(pq.read_table(tmp_path / "release/catalog.parquet").slice(1))
    path = cube_path("gfmap")
    with (
        eocube.open_dataset(f"{url}/{path}", storage_options=s3.storage_options) as remote,
        eocube.open_dataset(tmp_path / "release" / path) as local,
    ):
        xr.testing.assert_identical(remote.load(), local.load())


# 17 chunks of 2 dates: two shards, of 16 chunks and of 1
WINDOW = {"time": (0, 34), "y": (0, 16), "x": (0, 16)}
CHUNKS: dict[Hashable, int] = {"time": 2}

# A writer that kills itself (SIGKILL: no cleanup, no exception handler runs) when it is
# about to store its second shard object: the first shard is in the bucket, the rest not.
KILLED_WRITER = textwrap.dedent(
    """
    import json, os, signal, sys
    import s3fs, xarray as xr, eocube

    cube, url, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    window, chunks = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    store_object = s3fs.S3FileSystem._pipe_file
    shards = []

    async def store_or_die(self, path, data, *args, **kwargs):
        if "/data/c/" in path:
            shards.append(path)
            if len(shards) > 1:
                os.kill(os.getpid(), signal.SIGKILL)
        return await store_object(self, path, data, *args, **kwargs)

    s3fs.S3FileSystem._pipe_file = store_or_die
    ds = xr.open_dataset(cube).load()[["data"]].isel({d: slice(*w) for d, w in window.items()})
    eocube.to_eocube(ds, url, lossless=True, chunks=chunks, storage_options=options)
    """
)


def test_a_write_killed_mid_way_on_s3_is_resumed(s3: S3Server, tmp_path: Path) -> None:
    source = DATA / "s2_l2a_worldcereal_118x4x64x64.nc"
    cube = open_cube(source.stem)[["data"]].isel({d: slice(*w) for d, w in WINDOW.items()})
    bucket = s3.bucket(versioned=True)  # a rewritten object gets a second version
    url = f"{bucket}/killed.eocube"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    killed = subprocess.run(
        [
            *(sys.executable, str(script), str(source), url, json.dumps(s3.storage_options)),
            *(json.dumps(WINDOW), json.dumps(CHUNKS)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    shards = sorted(k for k in s3.versions(url) if "/data/c/" in k)
    assert len(shards) == 1, shards
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        eocube.open_dataset(url, storage_options=s3.storage_options)

    report = eocube.to_eocube(
        cube,
        url,
        lossless=True,
        chunks=CHUNKS,
        storage_options=s3.storage_options,
        resume=True,
    )
    versions = s3.versions(url)
    assert versions[shards[0]] == 1, "the shard stored before the kill was written again"
    assert sorted(k for k in versions if "/data/c/" in k) == [
        f"killed.eocube/data/c/{t}/0/0/0" for t in (0, 1)
    ]
    left = _stored_objects(s3, url)
    assert not [k for k in left if k.startswith(".")], "staging objects were left behind"
    assert report.nbytes == sum(map(len, left.values()))
    with eocube.open_dataset(url, storage_options=s3.storage_options) as resumed:
        np.testing.assert_array_equal(resumed.data.values, cube.data.values)


def test_a_local_cluster_writes_to_s3_and_its_workers_read_back(s3: S3Server) -> None:
    import distributed  # a test dependency: imported here, its import is slow

    window = {d: slice(*w) for d, w in WINDOW.items()}
    cube = open_cube("s2_l2a_worldcereal_118x4x64x64")[["data"]].isel(window)
    url = f"{s3.bucket()}/worldcereal.eocube"
    # worker threads, not processes: each worker process would start cold (imports, Numba
    # kernels), several times the write itself on a busy machine
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        eocube.to_eocube(
            cube.chunk({"time": 8}),
            url,
            lossless=True,
            chunks=CHUNKS,
            storage_options=s3.storage_options,
        )
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(executed) == 2
        assert all(n > 0 for n in executed.values()), executed  # both workers wrote
        before = sum(executed.values())
        with eocube.open_dataset(url, chunks={}, storage_options=s3.storage_options) as lazy:
            assert lazy.data.chunks is not None
            values = lazy.data.values  # the workers read the chunks
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert sum(executed.values()) > before
    np.testing.assert_array_equal(values, cube.data.values)
    assert len([k for k in _stored_objects(s3, url) if k.startswith("data/c/")]) == 2
