"""No silent loss: a store is marked complete only once it holds every shard the write
reported, with the size reported (eocube.lifecycle.check_written)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from zarr.storage import MemoryStore, StorePath

import eocube
from eocube import encode, lifecycle
from eocube.errors import IncompleteStoreError, MissingShardsError
from eocube.testing import shard_objects

DATA = Path(__file__).parent / "data"
# h264 encodes the same frames to the same bytes every time: a resumed store can be
# compared byte for byte with one written at once. Two shards of 64 dates.
ARGS: dict[str, Any] = {"profile": "h264-10bit", "chunks": {"time": 4}, "measure": False}


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    with xr.open_dataset(DATA / "era5_t2m_uk_744h.nc") as ds:
        return ds[["data"]].isel(time=slice(0, 128)).load()


def _spoil_first_shard(monkeypatch: pytest.MonkeyPatch, how: str) -> list[str]:
    """Make the shard writer lose (``delete``) or cut short (``truncate``) the first shard
    right after writing it, as storage the client does not see would; returns its key."""
    real = encode.write_shard
    spoiled: list[str] = []

    def writer(arr: Any, shard: tuple[int, ...], *args: Any) -> Any:
        written = real(arr, shard, *args)
        if written is not None and not spoiled:
            store = StorePath(arr.store_path.store)  # keys from the store's root
            if how == "delete":
                lifecycle.delete(store, [written.key])
            else:
                data = lifecycle.read_bytes(store, written.key)
                assert data is not None
                lifecycle.write_bytes(store, written.key, data[: written.nbytes // 2])
            spoiled.append(written.key)
        return written

    monkeypatch.setattr(encode, "write_shard", writer)
    return spoiled


def test_a_lost_shard_leaves_the_store_unfinished_and_resume_repairs_it(
    cube: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference.eocube"
    eocube.to_eocube(cube, reference, **ARGS)
    store = tmp_path / "lost.eocube"
    spoiled = _spoil_first_shard(monkeypatch, "delete")
    with pytest.raises(MissingShardsError, match="resume=True") as raised:
        eocube.to_eocube(cube, store, **ARGS)  # in memory: eocube.encode.EagerEncodes
    message = str(raised.value)
    assert spoiled
    assert f"{spoiled[0]} (absent)" in message
    assert "1 of the 2 shards" in message
    assert "share the storage" in message
    assert isinstance(raised.value, IncompleteStoreError)
    assert lifecycle.inspect_target(store).complete is False
    with pytest.raises(IncompleteStoreError):
        eocube.open_dataset(store)
    monkeypatch.undo()
    report = eocube.to_eocube(cube, store, resume=True, **ARGS)
    assert report.control == "resume"
    assert [p.read_bytes() for p in shard_objects(store)] == [
        p.read_bytes() for p in shard_objects(reference)
    ]
    with eocube.open_dataset(store) as got, eocube.open_dataset(reference) as want:
        np.testing.assert_array_equal(got.data.values, want.data.values)


def test_a_short_shard_written_by_dask_tasks_is_named_with_its_sizes(
    cube: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "short.eocube"
    spoiled = _spoil_first_shard(monkeypatch, "truncate")
    with pytest.raises(MissingShardsError) as raised:
        eocube.to_eocube(cube.chunk({"time": 32}), store, **ARGS)  # eocube.encode.cube_tasks
    assert spoiled
    assert spoiled[0] in str(raised.value)
    assert "bytes," in str(raised.value)
    assert "written)" in str(raised.value)
    assert lifecycle.inspect_target(store).complete is False
    monkeypatch.undo()
    eocube.to_eocube(cube, store, resume=True, **ARGS)
    assert lifecycle.inspect_target(store).complete is True


def test_an_all_fill_shard_is_not_expected(tmp_path: Path, cube: xr.Dataset) -> None:
    """A shard of fill values only is legitimately absent: the store completes."""
    holes = cube.copy(deep=True)
    holes["data"][:64] = np.nan
    store = tmp_path / "holes.eocube"
    eocube.to_eocube(holes, store, **ARGS)
    assert len(shard_objects(store)) == 1
    with eocube.open_dataset(store) as got:
        assert np.isnan(got.data.values[:64]).all()


def test_the_error_names_a_few_shards_and_counts_the_rest() -> None:
    path = StorePath(MemoryStore(), "cube")  # no sizes in its listing: asked per key
    lifecycle.write_bytes(path, "data/c/0", b"12345")
    lifecycle.write_bytes(path, "data/c/1", b"12")
    written = {f"cube/data/c/{i}": 5 for i in range(9)}
    with pytest.raises(MissingShardsError) as raised:
        lifecycle.check_written(path, written)
    message = str(raised.value)
    assert "8 of the 9 shards" in message
    assert "cube/data/c/1 (2 bytes, 5 written)" in message
    assert "cube/data/c/2 (absent)" in message
    assert "and 3 more" in message
    assert "cube/data/c/0" not in message
    lifecycle.check_written(path, {"cube/data/c/0": 5})  # whole: no error


def test_worker_local_storage_is_refused_not_marked_complete(cube: xr.Dataset) -> None:
    """Worker processes write memory:// into their own memory: the client's store lacks
    every shard, and says so instead of reading fill values as data."""
    import distributed  # a test dependency: imported here, its import is slow

    url = f"memory://eocube-silent-loss-{uuid.uuid4().hex}"
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        pytest.raises(MissingShardsError, match="2 of the 2 shards") as raised,
    ):
        eocube.to_eocube(cube.chunk({"time": 64}), url, **ARGS)
    assert str(raised.value).startswith(f"{url}: ")  # the store as the user named it
    assert lifecycle.inspect_target(url).complete is False


def test_a_lost_shard_of_an_append_leaves_it_pending_and_resume_finishes_it(
    cube: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "reference.eocube"
    eocube.to_eocube(cube, reference, **ARGS)
    store = tmp_path / "appended.eocube"
    eocube.to_eocube(cube.isel(time=slice(0, 64)), store, **ARGS)
    spoiled = _spoil_first_shard(monkeypatch, "delete")
    with pytest.raises(MissingShardsError, match="resume=True") as raised:
        eocube.to_eocube(cube.isel(time=slice(64, None)), store, append_dim="time", **ARGS)
    assert spoiled
    assert f"{spoiled[0]} (absent)" in str(raised.value)
    with eocube.open_dataset(store) as before:  # the previous dates stay readable
        assert before.sizes["time"] == 64
    monkeypatch.undo()
    eocube.to_eocube(cube.isel(time=slice(64, None)), store, append_dim="time", resume=True, **ARGS)
    with eocube.open_dataset(store) as got, eocube.open_dataset(reference) as want:
        np.testing.assert_array_equal(got.data.values, want.data.values)
