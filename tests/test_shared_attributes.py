"""A release keeping once the attributes its cubes share (write_release(share_attributes=True))."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import hub, metadata
from eocube.catalog import items
from eocube.layout import MARKER
from eocube.release import SHARED_METADATA, move_shared_attributes

IDS = ("west", "middle", "east")


def _cubes() -> dict[str, xr.Dataset]:
    # three tiles of one Sentinel-2 series: the same title, licence, long names, CRS
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46").isel(time=slice(0, 6))
    return {cube_id: ds.isel(x=slice(15 * i, 15 * i + 15)) for i, cube_id in enumerate(IDS)}


def _write(folder: Path, share: bool, **kwargs: Any) -> None:
    eocube.write_release(_cubes(), folder, progress=False, crf=30, share_attributes=share, **kwargs)


def _doc(folder: Path, cube_id: str) -> dict[str, Any]:
    return json.loads((folder / f"cubes/{cube_id}.eocube/zarr.json").read_text())


def _same_attrs(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("shared")
    _write(root / "plain", share=False)
    _write(root / "shared", share=True)
    return root / "plain", root / "shared"


def test_common_attributes_keep_what_decoding_needs_in_every_store() -> None:
    long = "a description long enough to be worth keeping once"
    roots = [
        {
            "attributes": {"title": long, "Conventions": "CF-1.8", "id": n, MARKER: {"x": n}},
            "consolidated_metadata": {
                "metadata": {
                    "data": {
                        "attributes": {
                            "long_name": long,
                            "units": "a unit spelled out at length, kept anyway",
                            "proj:wkt2": long,
                            "comment": f"{long} {n}",
                            "tiny": "x",
                        }
                    },
                    "x": {"attributes": {"crs_wkt": long}},
                }
            },
        }
        for n in range(3)
    ]
    shared = metadata.common_attributes(roots, MARKER)
    assert shared == {"": {"title": long}, "data": {"long_name": long}}
    assert metadata.common_attributes(roots[:1], MARKER) == {}
    stripped = metadata.without_shared(roots[0], shared, MARKER)
    assert "title" not in stripped["attributes"]
    assert stripped["attributes"][MARKER][metadata.SHARED] == {"": ["title"], "data": ["long_name"]}
    back, missing = metadata.with_shared(stripped, metadata.release_attributes(shared), MARKER)
    assert back == roots[0]
    assert missing == []
    _, missing = metadata.with_shared(stripped, {}, MARKER)
    assert missing == ["title", "data.long_name"]


def test_a_release_keeps_shared_attributes_once(releases: tuple[Path, Path]) -> None:
    plain, shared = releases
    assert not (plain / SHARED_METADATA).exists()
    group = zarr.open_group(shared / "cubes", mode="r")  # a plain zarr group
    assert group.attrs["title"] == _cubes()["west"].attrs["title"]
    for cube_id in IDS:
        before = (plain / f"cubes/{cube_id}.eocube/zarr.json").stat().st_size
        after = (shared / f"cubes/{cube_id}.eocube/zarr.json").stat().st_size
        assert before - after > 900, (before, after)
        listed = _doc(shared, cube_id)["attributes"][MARKER][metadata.SHARED]
        assert "title" in listed[""]
        assert "license" in listed[""]
    # what CF decoding and georeferencing read stays in each store
    doc = _doc(shared, "west")
    members = doc["consolidated_metadata"]["metadata"]
    assert doc["attributes"]["Conventions"] == "CF-1.8"
    assert "units" in members["time"]["attributes"]
    assert "crs_wkt" in members["spatial_ref"]["attributes"]
    assert "proj:code" in members["data"]["attributes"]
    # the catalog counts the stores' bytes as they are now
    rows = {item["id"]: item for item in items(pq.read_table(shared / "catalog.parquet"))}
    store = shared / "cubes/east.eocube"
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    assert rows["east"]["properties"]["eocube:bytes"] == size


def test_shared_attributes_open_as_written(releases: tuple[Path, Path]) -> None:
    _, shared = releases
    cubes = _cubes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is missing
        one = xr.open_dataset(shared / "cubes/middle.eocube", engine="eocube")
        url = xr.open_dataset((shared / "cubes/east.eocube").as_uri(), engine="eocube")
        tree = xr.open_datatree(shared, engine="eocube")
    source = cubes["middle"]
    assert _same_attrs(one.attrs, source.attrs)
    for name in source.variables:
        assert _same_attrs(one[name].attrs, source[name].attrs), name
    assert _same_attrs(url.attrs, cubes["east"].attrs)
    assert _same_attrs(tree["west"].attrs, cubes["west"].attrs)
    assert _same_attrs(tree["west"]["data"].attrs, cubes["west"]["data"].attrs)
    # without eocube, the store opens as plain zarr, less the shared descriptions
    plain = xr.open_zarr(shared / "cubes/middle.eocube", decode_times=True)
    assert "title" not in plain.attrs
    assert plain.attrs["Conventions"] == "CF-1.8"
    assert plain.time.dtype.kind == "M"


def test_a_store_copied_out_of_its_release_warns(
    releases: tuple[Path, Path], tmp_path: Path
) -> None:
    _, shared = releases
    alone = tmp_path / "alone.eocube"
    shutil.copytree(shared / "cubes/west.eocube", alone)
    with pytest.warns(UserWarning, match=r"opens without description.*title") as caught:
        ds = xr.open_dataset(alone, engine="eocube")
    assert str(tmp_path / "zarr.json") in str(caught[0].message)
    assert "title" not in ds.attrs
    np.testing.assert_array_equal(
        ds.data.values, xr.open_dataset(shared / "cubes/west.eocube", engine="eocube").data.values
    )
    with pytest.warns(UserWarning, match="publish the release folder instead"):
        hub._warn_if_attributes_stay_behind(alone)


def test_sharing_again_gives_the_same_documents_and_can_be_undone(
    releases: tuple[Path, Path], tmp_path: Path
) -> None:
    plain, shared = releases
    copy = tmp_path / "release"
    shutil.copytree(shared, copy)
    docs = {cube_id: _doc(copy, cube_id) for cube_id in IDS}
    release = (copy / SHARED_METADATA).read_bytes()
    move_shared_attributes(copy, IDS)
    assert {cube_id: _doc(copy, cube_id) for cube_id in IDS} == docs
    assert (copy / SHARED_METADATA).read_bytes() == release
    move_shared_attributes(copy, IDS, share=False)
    assert not (copy / SHARED_METADATA).exists()
    for cube_id in IDS:
        assert _doc(copy, cube_id) == _doc(plain, cube_id)
    # written again without sharing, over a shared release: every store whole again
    again = tmp_path / "again"
    shutil.copytree(shared, again)
    _write(again, share=False, mode="w")
    assert not (again / SHARED_METADATA).exists()
    assert _doc(again, "west") == _doc(plain, "west")


def test_an_append_to_a_shared_cube_keeps_its_attributes(tmp_path: Path) -> None:
    cubes = {cube_id: cube.isel(time=slice(0, 4)) for cube_id, cube in _cubes().items()}
    folder = tmp_path / "release"
    eocube.write_release(cubes, folder, progress=False, crf=30, share_attributes=True)
    store = folder / "cubes/west.eocube"
    more = _cubes()["west"].isel(time=slice(4, 6))
    eocube.to_eocube(more, store, crf=30, append_dim="time")
    assert metadata.SHARED in _doc(folder, "west")["attributes"][MARKER]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_dataset(store, engine="eocube")
    assert ds.sizes["time"] == 6
    assert _same_attrs(ds.attrs, _cubes()["west"].attrs)


def test_publishing_a_shared_release_sends_the_shared_attributes_first(
    releases: tuple[Path, Path],
) -> None:
    _, shared = releases
    units = hub._units(shared)
    assert units[0].name == "shared attributes"
    assert list(units[0].files) == [SHARED_METADATA]
    stores = [u.prefix for u in units if u.prefix is not None]
    assert stores == [f"cubes/{cube_id}.eocube" for cube_id in sorted(IDS)]
