"""The xarray engine: CF keywords, plain copies, groups, releases, public xarray API only."""

from __future__ import annotations

import ast
import asyncio
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import backend, reader
from eocube.codec import VideoCodec
from eocube.errors import IncompleteStoreError
from eocube.layout import MARKER
from eocube.registry import CODECS

CF_KEYWORDS = (
    "mask_and_scale",
    "decode_times",
    "concat_characters",
    "decode_coords",
    "use_cftime",
    "decode_timedelta",
    "drop_variables",
)


def _small_s2() -> xr.Dataset:
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46").isel(time=slice(0, 4))[["data"]]


def _small_obs() -> xr.Dataset:
    return open_cube("stars_bcsd_obs_12x2x33x81").isel(time=slice(0, 3))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ERA5 t2m packed as int16 with scale_factor/add_offset/_FillValue, and a lead time."""
    src = open_cube("era5_t2m_uk_744h").isel(time=slice(0, 24))
    ds = src.data.isel(band=0, drop=True).to_dataset(name="t2m")
    ds.t2m.encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 280.0}
    ds.t2m.encoding["_FillValue"] = -32768
    ds = ds.assign_coords(lead=("time", np.arange(24) * np.timedelta64(1, "h")))
    store = tmp_path_factory.mktemp("scaled") / "t2m.eocube"
    eocube.to_eocube(ds, store, lossless=True, measure=False)
    return store


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sentinel-2 with its CRS, lossy, several chunks per shard."""
    store = tmp_path_factory.mktemp("lossy") / "s2.eocube"
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    eocube.to_eocube(ds, store, crf=20, chunks={"time": 8, "y": 16, "x": 16}, measure=False)
    return store


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zarr store of two eocube stores (one nested) and a plain group of characters."""
    store = tmp_path_factory.mktemp("grouped") / "two.zarr"
    root = zarr.open_group(store, mode="w", zarr_format=3, attributes={"title": "two cubes"})
    eocube.to_eocube(_small_s2(), store / "s2", lossless=True, measure=False)
    root.create_group("nested")
    eocube.to_eocube(_small_obs(), store / "nested" / "obs", crf=20, measure=False)
    meta = root.create_group("meta")
    chars = meta.create_array(
        "station", shape=(2, 4), dtype="S1", dimension_names=("site", "nchar")
    )
    chars[:] = np.array([list("UKMO"), list("KNMI")], dtype="S1")
    return store


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("release") / "rel"
    cubes = {"s2-a": _small_s2(), "obs.b": _small_obs()}
    eocube.write_release(cubes, folder, progress=False, crf=20, measure=False)
    return folder


def _opened_by_zarr(store: Path, **kwargs: Any) -> xr.Dataset:
    """The store read by xarray's own zarr engine (the eocube codecs decode inside zarr)."""
    ds = xr.open_dataset(store, engine="zarr", **kwargs).load()
    del ds.attrs[MARKER]
    return ds


def test_every_cf_keyword_is_in_open_dataset_parameters() -> None:
    # xarray turns decode_cf=False into False for each CF keyword listed there, only
    assert set(CF_KEYWORDS) <= set(backend.EocubeBackendEntrypoint.open_dataset_parameters or ())


@pytest.mark.parametrize(
    "keywords",
    [
        {"decode_cf": False},
        {"mask_and_scale": False},
        {"decode_times": False},
        {"decode_times": xr.coders.CFDatetimeCoder(time_unit="s")},
        {"decode_timedelta": False},
        {"decode_coords": False},
        {"drop_variables": "lead"},
    ],
    ids=lambda k: "=".join(f"{n}={v}" if isinstance(v, bool | str) else n for n, v in k.items()),
)
def test_each_cf_keyword_decodes_as_xarrays_zarr_engine(
    scaled: Path, keywords: dict[str, Any]
) -> None:
    default = xr.open_dataset(scaled, engine="eocube").load()
    opened = xr.open_dataset(scaled, engine="eocube", **keywords).load()
    dtypes = {name: var.dtype for name, var in opened.variables.items()}
    changed = dtypes != {name: var.dtype for name, var in default.variables.items()}
    assert changed or not opened.identical(default)  # the keyword does change what is read
    xr.testing.assert_identical(opened, _opened_by_zarr(scaled, **keywords))


def test_decode_cf_false_through_eocube_open_dataset(scaled: Path) -> None:
    # eocube.open_dataset passes the engine as a class: xarray detects no parameters then
    raw = eocube.open_dataset(scaled, decode_cf=False)
    assert raw.t2m.dtype == np.int16
    assert raw.t2m.attrs["scale_factor"] == 0.01
    assert raw.t2m.attrs["_FillValue"] == -32768
    assert raw.time.dtype.kind == "i"
    assert raw.time.attrs["units"].startswith("hours since")
    stored = zarr.open_group(scaled, mode="r")["t2m"]
    assert isinstance(stored, zarr.Array)
    np.testing.assert_array_equal(raw.t2m.values, stored[:])


def test_use_cftime_reaches_the_time_decoder(scaled: Path) -> None:
    def outcome(engine: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # use_cftime is deprecated
            try:
                return xr.open_dataset(scaled, engine=engine, use_cftime=True).time.values
            except Exception as exc:  # without cftime installed, xarray cannot honour it
                return f"{type(exc).__name__}: {exc}"

    eocube_outcome, zarr_outcome = outcome("eocube"), outcome("zarr")
    assert type(eocube_outcome) is type(zarr_outcome)
    if isinstance(zarr_outcome, str):
        assert "cftime" in zarr_outcome
        assert eocube_outcome == zarr_outcome
    else:
        np.testing.assert_array_equal(eocube_outcome, zarr_outcome)
        assert not np.issubdtype(eocube_outcome.dtype, np.datetime64)  # cftime objects


def test_concat_characters(grouped: Path) -> None:
    joined = xr.open_groups(grouped, engine="eocube")["/meta"]
    assert joined.station.dims == ("site",)
    assert joined.station.values.tolist() == [b"UKMO", b"KNMI"]
    split = xr.open_groups(grouped, engine="eocube", concat_characters=False)["/meta"]
    assert split.station.dims == ("site", "nchar")
    assert split.station.dtype == np.dtype("S1")


def test_opened_encoding_holds_no_eocube_codec(lossy: Path) -> None:
    ds = xr.open_dataset(lossy, engine="eocube")
    eocube_codecs = tuple(CODECS.values())
    for name, var in ds.variables.items():
        chain = [var.encoding.get("serializer"), *var.encoding.get("compressors", ())]
        assert not any(isinstance(c, eocube_codecs) for c in chain), (name, var.encoding)
    data = ds.data.encoding
    assert isinstance(data[reader.CODEC_ENCODING], VideoCodec)
    assert not {"serializer", "compressors", "filters", "shards"} & set(data)
    assert data["chunks"] == (8, 4, 16, 16)
    assert data["preferred_chunks"] == {"time": 8, "band": 4, "y": 16, "x": 16}
    assert data["dtype"] == np.uint16


@pytest.mark.parametrize("chunks", [None, {}], ids=["numpy", "dask"])
@pytest.mark.parametrize("fmt", ["zarr", "netcdf"])
@pytest.mark.parametrize("store", ["lossy", "scaled"])
def test_copies_are_plain_and_lossless(
    request: pytest.FixtureRequest, tmp_path: Path, store: str, fmt: str, chunks: Any
) -> None:
    path = request.getfixturevalue(store)
    opened = xr.open_dataset(path, engine="eocube", chunks=chunks)
    read = opened.load()
    if fmt == "zarr":
        opened.to_zarr(tmp_path / "copy.zarr", zarr_format=3)
        documents = "".join(p.read_text() for p in (tmp_path / "copy.zarr").rglob("zarr.json"))
        assert "eocube." not in documents  # no eocube codec: any zarr reads the copy
        copy = xr.open_dataset(tmp_path / "copy.zarr", engine="zarr")
    else:
        opened.to_netcdf(tmp_path / "copy.nc", engine="h5netcdf")
        copy = xr.open_dataset(tmp_path / "copy.nc", engine="h5netcdf")
    # the values read, decoded, come back bit for bit (not coded lossily a second time)
    xr.testing.assert_identical(copy.load(), read)


def test_group_opens_one_cube_of_a_store_with_groups(grouped: Path) -> None:
    s2 = xr.open_dataset(grouped, engine="eocube", group="s2")
    xr.testing.assert_identical(s2.load(), _small_s2())
    obs = eocube.open_dataset(grouped, group="/nested/obs")
    assert obs.data.shape == _small_obs().data.shape
    assert obs.encoding["source"] == str(grouped)
    with pytest.raises(IncompleteStoreError, match=r"holds the groups meta, nested, s2"):
        xr.open_dataset(grouped, engine="eocube")
    with pytest.raises(FileNotFoundError, match="no group 'nope'"):
        xr.open_dataset(grouped, engine="eocube", group="nope")
    with pytest.raises(IncompleteStoreError, match=r"group 'meta'.*no 'eocube' attribute"):
        xr.open_dataset(grouped, engine="eocube", group="meta")


def test_open_datatree_of_a_store_with_groups(grouped: Path) -> None:
    tree = xr.open_datatree(grouped, engine="eocube", chunks={})
    assert set(tree.groups) == {"/", "/s2", "/nested", "/nested/obs", "/meta"}
    assert tree.attrs == {"title": "two cubes"}
    s2 = tree["s2"].to_dataset()
    assert s2.data.chunks is not None  # dask, chunked like the store
    xr.testing.assert_identical(s2.load(), _small_s2())
    obs = xr.open_dataset(grouped, engine="eocube", group="nested/obs")
    xr.testing.assert_identical(tree["nested/obs"].to_dataset().load(), obs.load())
    raw = xr.open_datatree(grouped, engine="eocube", decode_cf=False)
    assert raw["s2"].time.dtype.kind == "i"
    below = xr.open_datatree(grouped, engine="eocube", group="nested")
    assert set(below.groups) == {"/", "/obs"}
    with pytest.raises(IncompleteStoreError, match="none of its groups has the 'eocube'"):
        xr.open_datatree(grouped, engine="eocube", group="meta")
    tree.close()


def test_a_release_opens_as_a_tree_of_its_cubes(release: Path) -> None:
    tree = xr.open_datatree(release, engine="eocube")
    assert list(tree.children) == ["obs.b", "s2-a"]  # sorted by id
    for cube_id in tree.children:
        one = xr.open_dataset(release / "cubes" / f"{cube_id}.eocube", engine="eocube")
        xr.testing.assert_identical(tree[cube_id].to_dataset().load(), one.load())
    cube = xr.open_dataset(release, engine="eocube", group="s2-a")
    assert cube.encoding["source"] == f"{release}/cubes/s2-a.eocube"
    assert cube.data.shape == _small_s2().data.shape
    with pytest.raises(ValueError, match=r"release of 2 cubes.*obs\.b, s2-a.*open_datatree"):
        xr.open_dataset(release, engine="eocube")
    with pytest.raises(FileNotFoundError, match=r"no cube 'nope'; its cubes: obs\.b, s2-a"):
        xr.open_dataset(release, engine="eocube", group="nope")


@pytest.mark.parametrize(
    "where",
    [
        {"time": 3},
        {"time": [1, 5, 7], "x": slice(3, 40, 3)},
        {"time": xr.DataArray([0, 4, 9], dims="p"), "y": xr.DataArray([1, 20, 50], dims="p")},
        {"y": -1},
    ],
    ids=["integer", "outer", "vectorized", "negative"],
)
def test_plain_arrays_index_as_zarr_reads_them(lossy: Path, where: dict[str, Any]) -> None:
    # the cloud mask is stored with zarr's codecs, read through zarr's own indexing
    mask = xr.open_dataset(lossy, engine="eocube").mask.isel(where)
    expected = _opened_by_zarr(lossy).mask.isel(where)
    xr.testing.assert_identical(mask.variable.load(), expected.variable)


def test_load_async_reads_what_load_reads(lossy: Path) -> None:
    ds = xr.open_dataset(lossy, engine="eocube", cache=False)
    loaded = asyncio.run(ds.load_async())
    xr.testing.assert_identical(loaded, xr.open_dataset(lossy, engine="eocube").load())


@pytest.mark.parametrize("module", [backend, reader], ids=lambda m: m.__name__)
def test_only_public_xarray_api(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xarray"):
            # xarray.core.indexing: the lazy indexing xarray's backend guide prescribes
            assert node.module in ("xarray", "xarray.backends", "xarray.core"), node.module
            for alias in node.names:
                assert not alias.name.startswith("_"), alias.name
                assert node.module != "xarray.core" or alias.name == "indexing", alias.name
