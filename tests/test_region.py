"""to_eocube(..., region={dim: slice}): writes over a part of a store, as xarray's
to_zarr(region=...) does, rewriting the shards the region touches and no other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cubes import open_cube

import eocube

CHUNKS = {"time": 4, "y": 32, "x": 32}  # 19 dates: time shards of 16 dates


def objects(store: Path) -> dict[str, int]:
    """Every object of a local store: its key and modification time."""
    return {
        p.relative_to(store).as_posix(): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46")


def brighter(ds: xr.Dataset) -> xr.Dataset:
    """The same cube, its reflectances raised (another input for the same dates)."""
    return ds.assign(data=(ds.data + 100).astype(ds.data.dtype))


def test_a_lossless_region_write_changes_the_region_only(cube: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "c.eocube"
    # one date a chunk: time shards of 16 dates
    eocube.to_eocube(cube, store, lossless=True, chunks={**CHUNKS, "time": 1}, measure=False)
    before = objects(store)
    region = {"time": slice(16, 19), "y": slice(32, 52)}
    part = brighter(cube).isel(region)
    report = eocube.to_eocube(part, store, region=region)
    assert report.control == "region"
    assert report.variables["data"].max_abs_error == 0
    expected = cube.copy(deep=True)
    expected["data"][region] = part.data.values
    expected["mask"][region] = part.mask.values
    xr.testing.assert_equal(eocube.open_dataset(store).load(), expected)
    after = objects(store)
    # the data's second time shard (its first is left as it was), the mask's chunks of
    # the region, and the root document (the pending update came and went)
    mask = {f"mask/c/{t}/1/{x}" for t in (16, 17, 18) for x in (0, 1)}
    assert {k for k in after if before.get(k) != after[k]} == {
        "data/c/1/0/0/0",
        "zarr.json",
        *mask,
    }


def test_a_lossy_region_write_makes_the_chunks_a_whole_write_makes(
    cube: xr.Dataset, tmp_path: Path
) -> None:
    data = cube[["data"]]
    store, whole = tmp_path / "c.eocube", tmp_path / "whole.eocube"
    eocube.to_eocube(data, store, crf=30, chunks=CHUNKS, measure=False)
    changed = xr.concat(
        [data.isel(time=slice(0, 8)), brighter(data.isel(time=slice(8, 12))),
         data.isel(time=slice(12, 19))],
        dim="time",
    )  # fmt: skip
    eocube.to_eocube(changed, whole, crf=30, chunks=CHUNKS, measure=False)
    eocube.to_eocube(changed.isel(time=slice(8, 12)), store, region={"time": slice(8, 12)})
    xr.testing.assert_identical(
        eocube.open_dataset(store).load(), eocube.open_dataset(whole).load()
    )
    assert "quality" not in eocube.open_dataset(store).encoding["eocube"]


def test_a_region_across_lossy_chunks_is_refused_and_lossless_ones_are_merged(
    cube: xr.Dataset, tmp_path: Path
) -> None:
    lossy, lossless = tmp_path / "lossy.eocube", tmp_path / "lossless.eocube"
    eocube.to_eocube(cube[["data"]], lossy, crf=30, chunks=CHUNKS, measure=False)
    eocube.to_eocube(cube[["data"]], lossless, lossless=True, chunks=CHUNKS, measure=False)
    part = brighter(cube[["data"]]).isel(time=slice(3, 9))
    with pytest.raises(ValueError, match=r"'time'=slice\(3, 9\) is not aligned.*slice\(0, 12\)"):
        eocube.to_eocube(part, lossy, region={"time": slice(3, 9)})
    eocube.to_eocube(part, lossless, region={"time": slice(3, 9)})
    expected = cube[["data"]].copy(deep=True)
    expected["data"][{"time": slice(3, 9)}] = part.data.values
    xr.testing.assert_equal(eocube.open_dataset(lossless).load(), expected)


@pytest.fixture(scope="module")
def stored(cube: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("refusals") / "c.eocube"
    eocube.to_eocube(cube, store, crf=30, chunks=CHUNKS, measure=False)
    return store


@pytest.mark.parametrize(
    ("region", "dates", "match"),
    [
        ({"time": slice(0, 4)}, slice(4, 8), "coordinate 'time' of the data differs"),
        ({"time": slice(0, 8)}, slice(0, 4), r"spans 8 along 'time', the data has 4"),
        ({"level": slice(0, 4)}, slice(0, 4), "region= names 'level', not a dim"),
        ({"time": slice(0, 8, 2)}, slice(0, 4), "must be a slice with step 1"),
    ],
    ids=["coordinates", "size", "dim", "step"],
)
def test_regions_that_do_not_fit_are_refused(
    stored: Path, cube: xr.Dataset, region: dict[str, slice], dates: slice, match: str
) -> None:
    before = objects(stored)
    with pytest.raises(ValueError, match=match):
        eocube.to_eocube(cube.isel(time=dates), stored, region=region)
    assert objects(stored) == before


def test_a_region_needs_a_store(cube: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="writes into an eocube store that exists"):
        eocube.to_eocube(cube, tmp_path / "none.eocube", region={"time": slice(0, 19)})
    with pytest.raises(ValueError, match="region= writes into a store"):
        eocube.to_eocube(cube, tmp_path / "none.eocube", region={"time": slice(0, 19)}, mode="w")


def test_compute_false_region_reads_as_before_until_computed(
    cube: xr.Dataset, tmp_path: Path
) -> None:
    store = tmp_path / "c.eocube"
    eocube.to_eocube(cube, store, lossless=True, chunks=CHUNKS, measure=False)
    part = brighter(cube).isel(time=slice(4, 8))
    delayed = eocube.to_eocube(part, store, region={"time": slice(4, 8)}, compute=False)
    np.testing.assert_array_equal(eocube.open_dataset(store).data.values, cube.data.values)
    delayed.compute()
    np.testing.assert_array_equal(
        eocube.open_dataset(store).data.isel(time=slice(4, 8)).values, part.data.values
    )
