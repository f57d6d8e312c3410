"""benchmarks/overhead.py: its split of a store's non-payload bytes adds up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from benchmarks import overhead


def _small_cube() -> xr.Dataset:
    ds = overhead.regular_cube(crs=True).isel(time=slice(0, 4), y=slice(0, 48), x=slice(0, 48))
    labels = np.random.default_rng(1).integers(0, 4, (4, 48, 48)).astype(np.uint8)
    ds["mask"] = (("time", "y", "x"), labels)
    ds.attrs["title"] = "a small cube with a mask"
    return ds


def test_the_parts_add_up_to_the_non_payload_bytes() -> None:
    row = overhead.measure("small", _small_cube(), 0.1)
    parts = (
        row["zarr_json_bytes"]
        + row["coordinate_bytes"]
        + row["other_variable_bytes"]
        + row["cube_framing_bytes"]
    )
    assert parts == row["other_bytes"]
    assert row["payload_bytes"] + row["other_bytes"] == row["store_bytes"]
    assert row["other_variable_bytes"] > 0  # the mask is not a cube: it is coded apart
    assert row["cube_framing_bytes"] > 0  # the shard index and checksums
    assert row["format_bytes"] == (
        row["other_bytes"] - row["other_variable_bytes"] - row["source_attribute_bytes"]
    )
    text = overhead.render({"run": {"bpppb": 0.1, "code": {}, "rows": [row]}})
    assert "## Where the non-payload bytes go (run)" in text
    assert f"| small | {row['other_bytes']} | {row['zarr_json_bytes']} |" in text


def test_a_long_attribute_repeated_under_another_name_counts_once() -> None:
    wkt = overhead._WKT_UTM31
    once = xr.Dataset(coords={"spatial_ref": xr.DataArray(0, attrs={"crs_wkt": wkt})})
    twice = xr.Dataset(
        coords={"spatial_ref": xr.DataArray(0, attrs={"crs_wkt": wkt, "spatial_ref": wkt})}
    )
    extra = overhead._source_attribute_bytes(twice) - overhead._source_attribute_bytes(once)
    assert 0 < extra < 32  # the second name and an empty value, not the WKT again
    assert overhead._source_attribute_bytes(once) > len(wkt)


def test_a_release_of_tiles_saves_the_shared_attributes() -> None:
    ds = _small_cube()
    ds.attrs["description"] = "a description every tile of the release repeats, word for word"
    row = overhead.measure_release("small", ds, 0.1)
    assert row["tiles"] == 4
    assert row["shared_document_bytes"] > len(ds.attrs["description"])
    # the same payloads: what changes is the attributes, kept once
    assert row["saved_per_cube"] == row["plain_other_per_cube"] - row["shared_other_per_cube"]
    assert row["plain_store_per_cube"] - row["shared_store_per_cube"] == row["saved_per_cube"]
    assert row["saved_per_cube"] > 0
    text = overhead.render_release([row], 0.1)
    assert f"| small | {row['plain_store_per_cube']:.0f} |" in text


def test_the_release_run_writes_its_table(tmp_path: Path) -> None:
    stem = "s2_l2a_openeo_gfmap_19x4x52x46"  # shipped in tests/data, the default corpus
    assert overhead.main(["--release", "--cubes", stem, "--out", str(tmp_path)]) == 0
    (row,) = json.loads((tmp_path / "overhead_release.json").read_text())["rows"]
    assert row["cube"] == stem
    assert row["saved_per_cube"] > 0  # the tiles share the source's title, licence...
    assert f"| {stem} |" in (tmp_path / "overhead_release.md").read_text()


def test_a_packed_store_splits_the_same_way_and_is_smaller() -> None:
    ds = _small_cube()
    folder = overhead.measure("small", ds, 0.1)
    packed = overhead.measure("small", ds, 0.1, packed=True)
    parts = (
        packed["zarr_json_bytes"]
        + packed["coordinate_bytes"]
        + packed["other_variable_bytes"]
        + packed["cube_framing_bytes"]
    )
    assert packed["other_bytes"] - parts == 22  # the ZIP file's end record
    assert packed["payload_bytes"] + packed["other_bytes"] == packed["store_bytes"]
    assert packed["zarr_json_bytes"] < folder["zarr_json_bytes"]  # deflated
    assert packed["other_bytes"] < folder["other_bytes"]
    text = overhead.render({"packed": {"bpppb": 0.1, "code": {}, "rows": [packed]}})
    assert "Packed: each object counts with its ZIP entry's headers" in text


def test_the_long_attributes_estimate_counts_only_long_strings() -> None:
    long_text = "a description long enough to be worth deflating, " * 4
    doc = {
        "attributes": {"title": long_text, "short": "x", "eocube": {"format": 1}},
        "consolidated_metadata": {
            "metadata": {"data": {"attributes": {"note": long_text, "units": "K"}}}
        },
    }
    est = overhead.long_attributes(json.dumps(doc))
    assert est["long_attributes"] == 2  # the title and the note; not the marker or units
    assert est["long_attribute_bytes"] > 2 * len(long_text)
    # the repeated text deflates well: the estimate saves bytes
    assert 0 < est["deflated_base64_bytes"] < est["long_attribute_bytes"]
    assert est["saving_bytes"] == est["long_attribute_bytes"] - est["deflated_base64_bytes"]
    none = overhead.long_attributes(json.dumps({"attributes": {"units": "K"}}))
    assert none == {
        "long_attributes": 0,
        "long_attribute_bytes": 0,
        "deflated_base64_bytes": 0,
        "saving_bytes": 0,
    }
