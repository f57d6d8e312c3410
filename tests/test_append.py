"""to_eocube(..., mode="a", append_dim="time"): appends that equal a write of the whole
series, rewrite only the last time shard, refuse data that does not fit, and survive a
crash (the previous dates stay readable, resume=True finishes the append)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import encode, metrics

SERIES = "s2_l2a_openeo_gfmap_19x4x52x46"  # data (uint16) and a categorical mask
CHUNKS = {"time": 4, "y": 32, "x": 32}


def objects(store: Path) -> dict[str, int]:
    """Every object of a local store: its key and modification time."""
    return {
        p.relative_to(store).as_posix(): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.is_file()
    }


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {key for key, mtime in after.items() if before.get(key) != mtime}


@pytest.fixture(scope="module")
def series() -> xr.Dataset:
    return open_cube(SERIES)


@pytest.fixture(scope="module")
def whole_lossless(series: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """The whole series written at once, losslessly, read back."""
    store = tmp_path_factory.mktemp("whole") / "whole.eocube"
    eocube.to_eocube(series, store, lossless=True, chunks=CHUNKS, measure=False)
    return eocube.open_dataset(store).load()


def test_appends_make_the_store_a_whole_write_makes(
    series: xr.Dataset, whole_lossless: xr.Dataset, tmp_path: Path
) -> None:
    store = tmp_path / "grown.eocube"
    # the same call creates the store, then appends: 6 dates, then 5 (the last time chunk
    # of the store is partial each time), then 8
    for dates in (slice(0, 6), slice(6, 11), slice(11, 19)):
        report = eocube.to_eocube(
            series.isel(time=dates), store, lossless=True, chunks=CHUNKS, append_dim="time"
        )
    assert report.control == "append"
    assert report.variables["data"].shape == (19, 4, 52, 46)
    assert report.variables["data"].max_abs_error == 0
    grown = eocube.open_dataset(store).load()
    xr.testing.assert_identical(grown, whole_lossless)
    xr.testing.assert_equal(grown, series)


def test_a_store_created_for_appends_keeps_its_time_chunk(
    series: xr.Dataset, tmp_path: Path
) -> None:
    store = tmp_path / "new.eocube"
    eocube.to_eocube(series.isel(time=slice(0, 3)), store, crf=30, chunks=CHUNKS, append_dim="time")
    data = zarr.open_group(store, mode="r")["data"]
    assert isinstance(data, zarr.Array)
    # not cut to the 3 dates written: the dates appended fill the chunk and the shard
    assert data.chunks == (4, 4, 32, 32)
    assert data.shards is not None
    assert data.shards[0] == 64


@pytest.mark.parametrize("first", [8, 6], ids=["aligned", "within-a-chunk"])
def test_lossy_append_against_a_whole_write(series: xr.Dataset, tmp_path: Path, first: int) -> None:
    """Where the stored dates end on a chunk boundary, the appended store is bit for bit
    the whole write; where they end inside a chunk, that chunk's stored dates pass the
    codec twice: they differ from the whole write, within a small loss of PSNR."""
    cube = series[["data"]]
    eocube.to_eocube(cube, tmp_path / "whole.eocube", crf=30, chunks=CHUNKS, measure=False)
    whole = eocube.open_dataset(tmp_path / "whole.eocube").load()
    store = tmp_path / "grown.eocube"
    eocube.to_eocube(cube.isel(time=slice(0, first)), store, crf=30, chunks=CHUNKS, measure=False)
    eocube.to_eocube(cube.isel(time=slice(first, 19)), store, append_dim="time", measure=False)
    grown = eocube.open_dataset(store).load()
    if first % CHUNKS["time"] == 0:
        xr.testing.assert_identical(grown, whole)
        return
    chunk = slice(first - first % 4, first - first % 4 + 4)  # the chunk encoded twice
    differs = np.flatnonzero((grown.data != whole.data).any(dim=("band", "y", "x")).values)
    assert differs.size
    assert set(differs) <= set(range(chunk.start, chunk.stop))
    original = cube.data.isel(time=chunk).values
    psnr = {
        name: metrics.ErrorStats.of(original, ds.data.isel(time=chunk).values, None).psnr()
        for name, ds in (("whole", whole), ("grown", grown))
    }
    # the error stated in eocube.update: the chunk's stored dates lose well under 1 dB
    assert psnr["grown"] > psnr["whole"] - 1.0, psnr


def test_a_float_series_with_gaps_appends_as_a_whole_write(tmp_path: Path) -> None:
    cube = open_cube("stars_bcsd_obs_12x2x33x81")  # float32, NaN over the sea
    eocube.to_eocube(cube, tmp_path / "whole.eocube", crf=24, chunks={"time": 4}, measure=False)
    store = tmp_path / "grown.eocube"
    eocube.to_eocube(cube.isel(time=slice(0, 8)), store, crf=24, chunks={"time": 4}, measure=False)
    report = eocube.to_eocube(cube.isel(time=slice(8, 12)), store, append_dim="time")
    psnr = report.variables["data"].psnr
    assert psnr is not None
    assert psnr > 30  # measured on the dates appended
    grown = eocube.open_dataset(store).load()
    xr.testing.assert_identical(grown, eocube.open_dataset(tmp_path / "whole.eocube").load())
    assert int(np.isnan(grown.data).sum()) == int(np.isnan(cube.data).sum())


def test_an_append_rewrites_only_the_last_time_shard(tmp_path: Path) -> None:
    cube = open_cube("s2_l2a_worldcereal_72x4x64x64")
    store = tmp_path / "grown.eocube"
    chunks = {"time": 2, "y": 64, "x": 64}  # 32 dates a shard
    eocube.to_eocube(cube.isel(time=slice(0, 40)), store, crf=30, chunks=chunks, measure=False)
    assert sorted(k for k in objects(store) if k.startswith("data/")) == [
        "data/c/0/0/0/0",
        "data/c/1/0/0/0",
    ]
    before = objects(store)
    eocube.to_eocube(cube.isel(time=slice(40, 50)), store, append_dim="time", measure=False)
    # dates 32-49 share the second shard; the first shard is left as it was; the time
    # axis is one chunk (40 dates) and gains a second; the root document takes the shapes
    assert changed(before, objects(store)) == {"data/c/1/0/0/0", "time/c/1", "zarr.json"}
    back = eocube.open_dataset(store)
    assert back.sizes["time"] == 50
    np.testing.assert_array_equal(back.time.values, cube.time.values[:50])


def test_resume_of_an_append_that_finished_writes_nothing(
    series: xr.Dataset, tmp_path: Path
) -> None:
    store = tmp_path / "c.eocube"
    eocube.to_eocube(series.isel(time=slice(0, 8)), store, lossless=True, chunks=CHUNKS)
    eocube.to_eocube(series.isel(time=slice(8, 12)), store, append_dim="time")
    before = objects(store)
    again = eocube.to_eocube(series.isel(time=slice(8, 12)), store, append_dim="time", resume=True)
    assert again.control == "complete"
    assert objects(store) == before


@pytest.fixture(scope="module")
def stored(series: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten dates written at crf 30 (never changed: the appends tried on it are refused)."""
    store = tmp_path_factory.mktemp("refusals") / "ten.eocube"
    eocube.to_eocube(series.isel(time=slice(0, 10)), store, crf=30, chunks=CHUNKS, measure=False)
    return store


def _bands_renamed(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_coords(band=["B1", "B2", "B3", "B4"])


def _shifted_x(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign_coords(x=ds.x + 10.0)


def _as_float(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign(data=ds.data.astype("float32"))


def _one_band_less(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(band=slice(0, 3))


def _without_mask(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars("mask")


def _with_a_level(ds: xr.Dataset) -> xr.Dataset:
    return ds.assign(mask=ds.mask.expand_dims(level=1))


def _reversed(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel(time=slice(None, None, -1))


def _dates(ds: xr.Dataset) -> xr.Dataset:
    return ds


@pytest.mark.parametrize(
    ("dates", "change", "kwargs", "match"),
    [
        (slice(10, 14), _bands_renamed, {}, "coordinate 'band' differs"),
        (slice(10, 14), _shifted_x, {}, "coordinate 'x' differs"),
        (slice(10, 14), _as_float, {}, "'data' is float32, the store's is uint16"),
        (slice(10, 14), _one_band_less, {}, "has 3 along 'band', the store's has 4"),
        (slice(10, 14), _without_mask, {}, r"the data has no \['mask'\]"),
        (slice(10, 14), _with_a_level, {}, "'mask' has dims"),
        (slice(8, 12), _dates, {}, "not after the store's last"),
        (slice(10, 14), _reversed, {}, "'time' is not increasing"),
        (slice(10, 14), _dates, {"crf": 20}, "coded at crf=30, not 20"),
        (slice(10, 14), _dates, {"lossless": True}, "lossy profile"),
    ],
    ids=[
        "bands",
        "coords",
        "dtype",
        "band-count",
        "variables",
        "dims",
        "overlap",
        "unsorted",
        "crf",
        "lossless",
    ],
)
def test_appends_that_do_not_fit_are_refused(
    stored: Path,
    series: xr.Dataset,
    dates: slice,
    change: Callable[[xr.Dataset], xr.Dataset],
    kwargs: dict[str, Any],
    match: str,
) -> None:
    before = objects(stored)
    with pytest.raises(ValueError, match=match):
        eocube.to_eocube(change(series.isel(time=dates)), stored, append_dim="time", **kwargs)
    assert objects(stored) == before


def test_append_along_another_dim_is_refused(stored: Path, series: xr.Dataset) -> None:
    with pytest.raises(ValueError, match="append_dim='x' is not the time dim"):
        eocube.to_eocube(series.isel(time=slice(0, 10)), stored, append_dim="x")
    with pytest.raises(ValueError, match="append_dim= appends: it needs mode='a'"):
        eocube.to_eocube(series, stored, append_dim="time", mode="w")
    with pytest.raises(ValueError, match="give append_dim="):
        eocube.to_eocube(series, stored, mode="a")


def test_an_error_bound_refuses_a_second_encode(series: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "bounded.eocube"
    cube = series[["data"]]
    eocube.to_eocube(cube.isel(time=slice(0, 6)), store, max_abs_error=20, chunks=CHUNKS)
    with pytest.raises(ValueError, match=r"max_abs_error=20\.0 would no longer hold"):
        eocube.to_eocube(cube.isel(time=slice(6, 10)), store, append_dim="time")
    # a store whose length is a multiple of its time chunk takes it, and keeps the bound
    eocube.to_eocube(cube.isel(time=slice(0, 8)), store, max_abs_error=20, chunks=CHUNKS, mode="w")
    report = eocube.to_eocube(cube.isel(time=slice(8, 12)), store, append_dim="time")
    assert report.variables["data"].max_abs_error is not None
    assert report.variables["data"].max_abs_error <= 20


def _crash_after_first_time_shard(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Make the shard writer raise right after it rewrote the first time shard (the one
    holding the stored dates); returns the shards written."""
    real = encode.write_shard
    written: list[tuple[int, ...]] = []

    def writer(arr: Any, shard: tuple[int, ...], *args: Any) -> None:
        real(arr, shard, *args)
        written.append(shard)
        if shard[0] == 0:
            raise OSError("the machine went down")

    monkeypatch.setattr(encode, "write_shard", writer)
    return written


def test_a_crash_mid_append_keeps_the_previous_dates_and_resume_finishes_it(
    series: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lossy append within a time chunk, interrupted after the shard holding that chunk
    was rewritten: the store reads its previous dates (those of the chunk encoded again
    as they will read once the append is done), and resume=True makes the store an
    uninterrupted append makes (the chunk's previous payload was kept for it)."""
    cube = series[["data"]]
    first, rest = cube.isel(time=slice(0, 6)), cube.isel(time=slice(6, 19))
    store, reference = tmp_path / "crashed.eocube", tmp_path / "reference.eocube"
    eocube.to_eocube(first, store, crf=30, chunks=CHUNKS, measure=False)
    shutil.copytree(store, reference)
    eocube.to_eocube(rest, reference, append_dim="time", measure=False)
    before = eocube.open_dataset(store).load()

    with dask.config.set(scheduler="synchronous"), monkeypatch.context() as patch:
        written = _crash_after_first_time_shard(patch)
        with pytest.raises(OSError, match="went down"):
            eocube.to_eocube(rest, store, append_dim="time", measure=False)
    assert (0, 0, 0, 0) in written  # the shard of the partial chunk was rewritten
    during = eocube.open_dataset(store)
    assert during.encoding["eocube"]["pending"]["kind"] == "append"
    done = eocube.open_dataset(reference).load()
    xr.testing.assert_identical(during.isel(time=slice(0, 4)).load(), before.isel(time=slice(0, 4)))
    xr.testing.assert_identical(during.isel(time=slice(4, 6)).load(), done.isel(time=slice(4, 6)))
    group = zarr.open_group(store, mode="r")  # plain zarr reads it too
    assert group["data"].shape == (6, 4, 52, 46)
    with pytest.raises(FileExistsError, match="resume=True"):
        eocube.to_eocube(rest, store, append_dim="time")
    with pytest.raises(ValueError, match="cannot resume"):
        eocube.to_eocube(rest.isel(time=slice(0, 5)), store, append_dim="time", resume=True)

    report = eocube.to_eocube(rest, store, append_dim="time", resume=True, measure=False)
    assert report.control == "append"
    finished = eocube.open_dataset(store)
    assert "pending" not in finished.encoding["eocube"]
    xr.testing.assert_identical(finished.load(), done)
    assert not (store / ".eocube-staging").exists()


def test_compute_false_appends_when_computed(series: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "later.eocube"
    eocube.to_eocube(series.isel(time=slice(0, 8)), store, lossless=True, chunks=CHUNKS)
    delayed = eocube.to_eocube(
        series.isel(time=slice(8, 19)), store, append_dim="time", compute=False
    )
    before = eocube.open_dataset(store)
    assert before.sizes["time"] == 8  # readable, as before the append
    assert before.encoding["eocube"]["pending"]["kind"] == "append"
    report = delayed.compute()
    assert report.control == "append"
    xr.testing.assert_equal(eocube.open_dataset(store).load(), series)
