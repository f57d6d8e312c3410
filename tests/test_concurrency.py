"""Concurrent readers of one store, and writing through a dask.distributed cluster."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

import eocube

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def era5_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Lossy ERA5 t2m, 256 hours in 32 chunks and 2 shards, and its values read alone."""
    with xr.open_dataset(DATA / "era5_t2m_uk_744h.nc") as ds:
        cube = ds[["data"]].isel(time=slice(0, 256)).load()
    store = tmp_path_factory.mktemp("concurrency") / "era5.eocube"
    eocube.to_eocube(cube, store, crf=24, chunks={"time": 8}, measure=False)
    with eocube.open_dataset(store) as reopened:
        return store, reopened.data.values


def test_eight_threads_and_a_processes_scheduler_read_the_same_values(
    era5_store: tuple[Path, np.ndarray],
) -> None:
    store, expected = era5_store
    start = threading.Barrier(9)
    shared = eocube.open_dataset(store)  # one lazily indexed dataset used by four threads

    def read_in_thread(i: int) -> np.ndarray:
        start.wait()
        if i % 2:
            return shared.data.isel(time=slice(None)).values
        with eocube.open_dataset(store) as own:
            # alternate whole reads with reads chunk by chunk in another order
            if i % 4:
                return own.data.values
            parts = [own.data.isel(time=slice(t, t + 8)).values for t in range(248, -8, -8)]
            return np.concatenate(parts[::-1])

    def read_with_processes() -> np.ndarray:
        with eocube.open_dataset(store, chunks={}) as lazy:
            graph = lazy.data
            start.wait()
            return graph.compute(scheduler="processes", num_workers=2).values

    with ThreadPoolExecutor(9) as pool:
        threads = [pool.submit(read_in_thread, i) for i in range(8)]
        processes = pool.submit(read_with_processes)
        results = [f.result(timeout=300) for f in threads]
        results.append(processes.result(timeout=300))
    shared.close()
    for got in results:
        np.testing.assert_array_equal(got, expected)


def test_threads_decode_a_selection_the_same_as_alone(era5_store: tuple[Path, np.ndarray]) -> None:
    store, expected = era5_store
    with eocube.open_dataset(store, chunks={}) as lazy:
        subset = lazy.data.isel(time=slice(5, 250, 3), x=slice(3, 40))
        with dask.config.set(scheduler="threads", num_workers=8):
            got = subset.values
    np.testing.assert_array_equal(got, expected[5:250:3, :, :, 3:40])


@pytest.mark.slow  # starts a local cluster
def test_a_local_cluster_writes_the_same_store_as_a_local_write(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with xr.open_dataset(DATA / "era5_t2m_uk_744h.nc") as ds:
        cube = ds[["data"]].isel(time=slice(0, 384)).load()
    # h264 (x264) encodes the same frames to the same bytes whatever runs beside it; libx265
    # does not (its rate-distortion choices vary from run to run, even one encode at a
    # time), so an exact comparison of two lossy writes needs a deterministic encoder
    args = {"profile": "h264-10bit", "chunks": {"time": 8}, "measure": False}
    local = eocube.to_eocube(cube, tmp_path / "local.eocube", **args)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = eocube.to_eocube(cube.chunk({"time": 48}), tmp_path / "dist.eocube", **args)
        # the workers ran the shard tasks (3 shards of 16 chunks: both workers had some)
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        assert len(executed) == 2
        assert all(n > 0 for n in executed.values()), executed
    assert remote.variables["data"].payload_nbytes == local.variables["data"].payload_nbytes
    with (
        eocube.open_dataset(tmp_path / "local.eocube") as a,
        eocube.open_dataset(tmp_path / "dist.eocube") as b,
    ):
        xr.testing.assert_identical(a.load(), b.load())
    # and a cluster of threads writes to an fsspec URL like any other store
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        url = (tmp_path / "nested" / "url.eocube").as_uri()
        eocube.to_eocube(cube, url, storage_options={"auto_mkdir": True}, **args)
    with eocube.open_dataset(url) as c, eocube.open_dataset(tmp_path / "local.eocube") as a:
        np.testing.assert_array_equal(c.data.values, a.data.values)
