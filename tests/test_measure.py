"""The write measures its quality inside the encode tasks (eocube.encode.Measure).

What the report says must be what a reader gets: the statistics merged from the chunks
as they were encoded equal the PSNR and max error of the store read back, for every kind
of cube (edge chunks, NaN, nodata, CF packing, three dims, an error bound, lossless), on
every path that writes (dask tasks, the eager encodes of an in-memory cube, a deferred
write). And the measure is no second pass: each block of a dask-backed source is computed
once, and the store is not read back.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import dask.array
import numpy as np
import pytest
import xarray as xr
from cubes import open_cube

import eocube
from eocube import metrics


def _s2() -> xr.Dataset:
    # 19 x 4 x 52 x 46: 32 px chunks leave edge chunks in y, x and time
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]]


def _with_nan() -> xr.Dataset:
    ds = _s2()
    data = ds.data.values.astype(np.float32)
    data[3, :, 10:30, 5:20] = np.nan  # a cloud
    data[:, 2, 40:, 40:] = np.nan
    return ds.assign(data=(ds.data.dims, data))


def _with_nodata() -> xr.Dataset:
    ds = _s2()
    data = ds.data.values.copy()
    data[5, :, :20, :20] = 0
    out = ds.assign(data=(ds.data.dims, data))
    out.data.attrs["nodata"] = 0
    return out


def _cf_packed() -> xr.Dataset:
    ds = _with_nan()
    physical = ds.data.astype(np.float32) / 10000.0
    physical.encoding = {"dtype": "int16", "scale_factor": 1e-4, "_FillValue": -32768}
    return xr.Dataset({"data": physical})


def _three_dims() -> xr.Dataset:
    ds = _s2()
    return xr.Dataset({"data": ds.data.isel(band=1, drop=True)})


CUBES = {
    "uint16": (_s2, {"crf": 24}),
    "nan": (_with_nan, {"crf": 24}),
    "nodata": (_with_nodata, {"crf": 24}),
    "cf-packed": (_cf_packed, {"crf": 24}),
    "three-dims": (_three_dims, {"crf": 24}),
    "error-bound": (_s2, {"max_abs_error": 3.0}),
    "lossless": (_s2, {"lossless": True}),
}
CHUNKS = {"time": 8, "y": 32, "x": 32}


def _read_back(store: Any, ds: xr.Dataset) -> tuple[float, float]:
    """PSNR and max error of the store read back whole, as eocube.metrics defines them."""
    original = ds.data
    nodata = original.attrs.get("nodata")
    with eocube.open_dataset(store) as back:
        decoded = back.data.transpose(*original.dims).values
    stats = metrics.ErrorStats.of(original.values, decoded, nodata)
    return stats.psnr(), stats.max_abs_error()


def _same(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=1e-9))


@pytest.mark.parametrize("kind", list(CUBES))
@pytest.mark.parametrize("backing", ["numpy", "dask"])
def test_the_report_measures_what_a_reader_gets(kind: str, backing: str) -> None:
    make, settings = CUBES[kind]
    ds = make()
    if backing == "dask":
        ds = ds.chunk({"time": 8})
    store = f"memory://measure-{kind}-{backing}"
    report = eocube.to_eocube(ds, store, chunks=CHUNKS, **settings)
    psnr, error = _read_back(store, ds)
    got = report.variables["data"]
    assert got.psnr is not None
    assert got.max_abs_error is not None
    assert _same(got.psnr, psnr), (got.psnr, psnr)
    assert _same(got.max_abs_error, error), (got.max_abs_error, error)
    if kind == "lossless":
        assert got.psnr == math.inf
        assert got.max_abs_error == 0
    if kind == "error-bound":
        assert got.max_abs_error <= 3.0
    # the payload bytes the tasks counted are those of the shard indexes
    from eocube.shards import payload_nbytes

    with eocube.open_dataset(store) as back:
        del back  # opened: the store is complete and readable
    import zarr

    arr = zarr.open_group(store, mode="r")["data"]
    assert got.payload_nbytes == payload_nbytes(arr)


def test_a_deferred_write_measures_in_its_tasks() -> None:
    ds = _with_nan().chunk({"time": 8})
    delayed = eocube.to_eocube(
        ds, "memory://measure-deferred", chunks=CHUNKS, crf=24, compute=False
    )
    report = delayed.compute()
    psnr, error = _read_back("memory://measure-deferred", ds)
    assert _same(report.variables["data"].psnr, psnr)
    assert _same(report.variables["data"].max_abs_error, error)


def test_measuring_reads_neither_the_source_twice_nor_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = _s2().data
    computed: Counter[tuple[int, ...]] = Counter()

    def block(x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        assert block_info is not None
        computed[tuple(block_info[0]["chunk-location"])] += 1
        return x

    lazy = dask.array.from_array(source.values, chunks=(8, 4, 32, 32)).map_blocks(
        block, dtype=source.dtype
    )
    ds = xr.Dataset({"data": (source.dims, lazy)}, coords=source.coords)

    def no_read_back(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the write read the store back to measure it")

    monkeypatch.setattr("eocube.backend.open_dataset", no_read_back)
    counts = {}
    for measure in (False, True):
        computed.clear()
        report = eocube.to_eocube(
            ds, tmp_path / f"{measure}.eocube", chunks=CHUNKS, crf=24, measure=measure
        )
        assert (report.variables["data"].psnr is not None) == measure
        counts[measure] = Counter(computed)
    # each block is computed as often with the measure as without (the write encodes it
    # once; the fingerprint samples a few): the measure adds no pass over the source
    assert counts[True] == counts[False]
    assert len(counts[True]) == 12  # every block was computed


def test_without_measure_the_tasks_do_not_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded without measure")

    monkeypatch.setattr("eocube.encode.decode_chunk", no_decode)
    report = eocube.to_eocube(
        _s2().chunk({"time": 8}), "memory://measure-off", chunks=CHUNKS, crf=24, measure=False
    )
    assert report.variables["data"].psnr is None
    assert report.variables["data"].payload_nbytes > 0


@pytest.mark.parametrize("backing", ["numpy", "dask"])
def test_an_append_reports_the_error_of_the_dates_it_wrote(
    backing: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ds = _with_nan()
    store = tmp_path / "append.eocube"
    eocube.to_eocube(ds.isel(time=slice(0, 11)), store, chunks=CHUNKS, crf=24)
    new = ds.isel(time=slice(11, None))  # starts inside the second time chunk: merged
    if backing == "dask":
        new = new.chunk({"time": 4})

    def no_read_back(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the append read the store back to measure it")

    with monkeypatch.context() as patched:
        patched.setattr("eocube.update.measure_errors", no_read_back)
        report = eocube.to_eocube(new, store, append_dim="time")
    with eocube.open_dataset(store) as back:
        decoded = back.data.isel(time=slice(11, None)).values
    expected = metrics.ErrorStats.of(new.data.values, decoded)
    got = report.variables["data"]
    assert got.psnr is not None
    assert got.max_abs_error is not None
    assert _same(got.psnr, expected.psnr())
    assert _same(got.max_abs_error, expected.max_abs_error())


def test_a_region_write_reports_the_error_of_its_region(tmp_path: Path) -> None:
    ds = _s2()
    store = tmp_path / "region.eocube"
    eocube.to_eocube(ds, store, chunks=CHUNKS, crf=24)
    where = {"time": slice(8, 16), "y": slice(0, 32)}
    part = ds.isel(where).copy(deep=True)
    part["data"] = part.data + np.uint16(7)
    report = eocube.to_eocube(part.drop_vars(["x", "band"]), store, region=where)
    with eocube.open_dataset(store) as back:
        decoded = back.data.isel(where).values
    expected = metrics.ErrorStats.of(part.data.values, decoded)
    assert _same(report.variables["data"].psnr, expected.psnr())
    assert _same(report.variables["data"].max_abs_error, expected.max_abs_error())
