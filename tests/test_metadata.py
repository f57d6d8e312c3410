"""The root zarr.json of a finished store: compact, zarr's defaults left out, the CRS once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import metadata
from eocube.layout import MARKER


@pytest.fixture(scope="module")
def gfmap() -> xr.Dataset:
    # a rioxarray-style cube: spatial_ref holds the WKT as crs_wkt and as spatial_ref
    return open_cube("s2_l2a_openeo_gfmap_12x5x66x64").load()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, gfmap: xr.Dataset) -> Path:
    path = tmp_path_factory.mktemp("meta") / "cube.eocube"
    eocube.to_eocube(gfmap, path, crf=30)
    return path


def test_the_wkt_is_stored_once_and_read_back_twice(written: Path, gfmap: xr.Dataset) -> None:
    wkt = gfmap["spatial_ref"].attrs["crs_wkt"]
    assert gfmap["spatial_ref"].attrs["spatial_ref"] == wkt
    text = (written / "zarr.json").read_text()
    assert text.count(json.dumps(wkt)[1:-1]) == 1
    root = json.loads(text)
    assert root["attributes"][MARKER]["aliases"] == {"spatial_ref": {"spatial_ref": "crs_wkt"}}
    back = xr.open_dataset(written, engine="eocube")
    assert back["spatial_ref"].attrs == gfmap["spatial_ref"].attrs
    assert back.attrs == gfmap.attrs
    for name in ("data", "x", "y", "band_scale"):
        assert back[name].attrs == gfmap[name].attrs, name


def test_plain_readers_open_the_compact_document(written: Path, gfmap: xr.Dataset) -> None:
    group = zarr.open_group(written, mode="r")
    assert sorted(group.array_keys()) == sorted(str(n) for n in gfmap.variables)
    np.testing.assert_array_equal(group["x"][:], gfmap["x"].values)
    plain = xr.open_zarr(written)
    np.testing.assert_array_equal(plain["y"].values, gfmap["y"].values)
    np.testing.assert_array_equal(plain["time"].values, gfmap["time"].values)
    # CF's copy of the CRS is there for rioxarray and GDAL
    assert plain["spatial_ref"].attrs["crs_wkt"] == gfmap["spatial_ref"].attrs["crs_wkt"]


def test_the_document_has_no_whitespace_nor_zarr_defaults(written: Path) -> None:
    text = (written / "zarr.json").read_text()
    assert '": ' not in text
    assert "storage_transformers" not in text
    assert '"attributes":{}' not in text
    assert '"separator"' not in text
    assert '"checksum"' not in text


def test_regular_axes_are_two_numbers_without_zstd(written: Path) -> None:
    members = json.loads((written / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    for axis in ("x", "y"):
        names = [c["name"] for c in members[axis]["codecs"]]
        assert names == ["eocube.linear", "crc32c"], axis
        # the chunk: a kind byte, start and step (float64), the checksum
        assert (written / axis / "c" / "0").stat().st_size == 1 + 8 + 8 + 4


def test_irregular_axes_are_compressed_within_the_codec(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"data": (("time", "band", "y", "x"), rng.integers(0, 4000, (3, 1, 16, 16), np.uint16))},
        coords={"y": np.sort(rng.random(16)), "x": np.arange(16.0)},
    )
    eocube.to_eocube(ds, tmp_path / "c", crf=20)
    members = json.loads((tmp_path / "c" / "zarr.json").read_text())["consolidated_metadata"]
    codecs = {k: [c["name"] for c in members["metadata"][k]["codecs"]] for k in ("x", "y")}
    # no zstd entry: eocube.linear predicts irregular axes or holds a zstd frame itself
    assert codecs == {"x": ["eocube.linear", "crc32c"], "y": ["eocube.linear", "crc32c"]}
    assert (tmp_path / "c" / "y" / "c" / "0").read_bytes()[:1] in (b"P", b"R", b"Z")
    back = xr.open_dataset(tmp_path / "c", engine="eocube")
    assert back["y"].values.tobytes() == ds["y"].values.tobytes()


def test_per_array_documents_keep_every_attribute(tmp_path: Path, gfmap: xr.Dataset) -> None:
    eocube.to_eocube(gfmap, tmp_path / "c", crf=30, per_array_metadata=True)
    own = json.loads((tmp_path / "c" / "spatial_ref" / "zarr.json").read_text())
    assert own["attributes"]["spatial_ref"] == gfmap["spatial_ref"].attrs["spatial_ref"]
    assert "storage_transformers" not in own
    root = json.loads((tmp_path / "c" / "zarr.json").read_text())
    assert "aliases" not in root["attributes"][MARKER]
    back = xr.open_dataset(tmp_path / "c", engine="eocube")
    assert back["spatial_ref"].attrs == gfmap["spatial_ref"].attrs


def test_compact_keeps_repeats_without_a_marker_and_leaves_the_input_alone() -> None:
    long = "x" * metadata.ALIAS_MIN_CHARS
    member = {
        "node_type": "array",
        "attributes": {"a": long, "b": long, "short": "s", "c": "s"},
        "storage_transformers": [],
        "codecs": [{"name": "zstd", "configuration": {"level": 3, "checksum": False}}],
    }
    doc = {"attributes": {}, "consolidated_metadata": {"metadata": {"v": member}}}
    out = metadata.compact(doc, MARKER)
    assert out["consolidated_metadata"]["metadata"]["v"]["attributes"]["b"] == long
    assert "storage_transformers" not in out["consolidated_metadata"]["metadata"]["v"]
    assert member["storage_transformers"] == []  # the input is not changed

    doc["attributes"][MARKER] = {"format": 1}
    out = metadata.compact(doc, MARKER)
    attrs = out["consolidated_metadata"]["metadata"]["v"]["attributes"]
    assert attrs == {"a": long, "short": "s", "c": "s"}  # short repeats stay
    assert out["attributes"][MARKER]["aliases"] == {"v": {"b": "a"}}


def test_restore_aliases_never_overrides_an_attribute() -> None:
    var = xr.Variable((), 0, attrs={"a": "value", "b": "mine"})
    metadata.restore_aliases({"v": var}, {"aliases": {"v": {"b": "a", "c": "a", "d": "gone"}}})
    assert var.attrs == {"a": "value", "b": "mine", "c": "value"}


def test_a_nan_fill_attribute_of_floats_is_left_out_and_values_read_the_same(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    values = rng.integers(0, 4000, (3, 1, 16, 16)).astype(np.float32)
    values[0, 0, :2, :2] = np.nan
    ds = xr.Dataset(
        {"data": (("time", "band", "y", "x"), values)},
        coords={
            "y": 100.0 - 10 * np.arange(16.0),
            "x": np.arange(16.0),
            "lat": ("y", rng.random(16)),
        },
    )
    eocube.to_eocube(ds, tmp_path / "c", crf=10)
    members = json.loads((tmp_path / "c" / "zarr.json").read_text())["consolidated_metadata"]
    for name in ("x", "y", "lat", "data"):
        assert "_FillValue" not in members["metadata"][name].get("attributes", {}), name
    back = xr.open_dataset(tmp_path / "c", engine="eocube").load()
    plain = xr.open_zarr(tmp_path / "c")
    for name in ("x", "y", "lat"):
        assert back[name].values.tobytes() == ds[name].values.tobytes(), name
        assert plain[name].values.tobytes() == ds[name].values.tobytes(), name
    assert np.isnan(back["data"].values[0, 0, :2, :2]).all()
    assert np.isfinite(back["data"].values[1:]).all()


def test_only_a_nan_fill_of_a_float_array_with_a_nan_zarr_fill_is_dropped() -> None:
    nan64, nan32, minus1 = "AAAAAAAA+H8=", "AADAfw==", "AAAAAAAA8L8="
    cases = [
        ({"data_type": "float64", "fill_value": "NaN"}, nan64, True),
        ({"data_type": "float32", "fill_value": "NaN"}, nan32, True),
        ({"data_type": "float64", "fill_value": "NaN"}, minus1, False),
        ({"data_type": "float64", "fill_value": 0.0}, nan64, False),
        ({"data_type": "int16", "fill_value": "NaN"}, nan64, False),
        ({"data_type": "float32", "fill_value": "NaN"}, nan64, True),  # as eocube wrote it
        ({"data_type": "float64", "fill_value": "NaN"}, "AAAA", False),  # 3 bytes
        ({"data_type": "float64", "fill_value": "NaN"}, "not base64!", False),
    ]
    for meta, fill, dropped in cases:
        doc = {**meta, "node_type": "array", "attributes": {"_FillValue": fill, "units": "m"}}
        metadata.drop_defaults(doc)
        assert ("_FillValue" not in doc["attributes"]) is dropped, (meta, fill)
        assert doc["attributes"]["units"] == "m"
