"""The release catalog: STAC items in longitude/latitude, stored as stac-geoparquet.

Items are made from the real cubes of tests/data with a report written by hand (what
``to_eocube`` would return), so no cube is encoded here; tests/test_hub.py covers a
release written end to end and its catalog read over ``hf://``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pystac
import pytest
import xarray as xr
from cubes import open_cube
from pyproj import CRS, Transformer
from pystac.extensions.datacube import DatacubeExtension
from pystac.extensions.projection import ProjectionExtension
from stac_geoparquet.arrow import stac_table_to_items

from eocube import catalog
from eocube.catalog import (
    STORE_COLUMN,
    bbox_expression,
    default_row_group_size,
    items,
    open_catalog,
    write_catalog,
)
from eocube.footprint import crs_of, footprint, from_wkb, to_wkb
from eocube.report import EncodeReport, VariableReport
from eocube.stac import DATACUBE, PROJECTION, cube_item, iso_duration

CUBES = {
    "s2-gfmap": "s2_l2a_openeo_gfmap_19x4x52x46",  # UTM 31N, Belgium
    "s2-fusets": "s2_l2a_fusets_field_33x3x57x56",  # UTM 30N
    "l8-ny": "l8_ny18_014031",  # UTM 18N
    "bcsd": "stars_bcsd_obs_12x2x33x81",  # lon/lat coordinates, no CRS
}


def report(ds: xr.Dataset, *, nbytes: int = 10_000, psnr: float | None = 42.0) -> EncodeReport:
    """What to_eocube would report for ``ds`` (its ``data`` video-coded at crf 30)."""
    var = ds["data"]
    return EncodeReport(
        store="memory://cube.eocube",
        nbytes=nbytes,
        original_nbytes=var.size * var.dtype.itemsize,
        values=var.size,
        bpppb=nbytes * 8 / var.size,
        compression_ratio=var.size * var.dtype.itemsize / nbytes,
        variables={
            "data": VariableReport(
                name="data",
                shape=var.shape,
                dtype=str(var.dtype),
                profile="hevc-12bit-444",
                quality=30.0,
                payload_nbytes=nbytes - 1000,
                bpppb=(nbytes - 1000) * 8 / var.size,
                psnr=psnr,
                max_abs_error=None if psnr is None else 12.0,
            )
        },
    )


def item_of(cube_id: str, ds: xr.Dataset | None = None) -> dict[str, Any]:
    ds = open_cube(CUBES[cube_id]) if ds is None else ds
    return cube_item(cube_id, f"cubes/{cube_id}.eocube", ds, report(ds))


@pytest.fixture(scope="module")
def cube_items() -> list[dict[str, Any]]:
    return [item_of(cube_id) for cube_id in CUBES]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, cube_items: list[dict[str, Any]]) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.parquet"
    write_catalog(cube_items, path)
    return path


def utm_tile(cube_id: str, epsg: int, x0: float, y0: float, size: int = 4) -> dict[str, Any]:
    """The item of a small synthetic cube of 10 m pixels from (x0, y0) in EPSG ``epsg``."""
    x = x0 + 10.0 * np.arange(size) + 5
    y = y0 + 10.0 * np.arange(size)[::-1] + 5
    ds = xr.Dataset(
        {"data": (("time", "band", "y", "x"), np.zeros((2, 1, size, size), np.uint16))},
        coords={
            "time": np.array(["2021-06-01", "2021-06-11"], dtype="datetime64[ns]"),
            "band": ["B04"],
            "y": y,
            "x": x,
            "spatial_ref": ((), 0, {"crs_wkt": CRS.from_epsg(epsg).to_wkt()}),
        },
    )
    return item_of(cube_id, ds)


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def comparable(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without nulls and with its times as datetimes (stac-geoparquet writes
    ``2023-10-02T00:00:00.000000Z`` where eocube writes ``2023-10-02T00:00:00Z``)."""
    out = without_nulls(copy.deepcopy(item))
    for key in ("datetime", "start_datetime", "end_datetime"):
        if key in out["properties"]:
            out["properties"][key] = dt.datetime.fromisoformat(out["properties"][key])
    return out


def validate_offline(item: dict[str, Any]) -> pystac.Item:
    """Validate ``item`` with pystac against the STAC 1.1 item schema it ships (the
    extension schemas are on the web, unreachable here: their fields are read through
    pystac's extension classes instead)."""
    stac_item = pystac.Item.from_dict(copy.deepcopy(item))
    core = stac_item.clone()
    core.stac_extensions = []
    assert core.validate()  # the schema URIs it validated against
    return stac_item


# --- the CRS and the footprint ------------------------------------------------------------


def test_crs_from_wkt_cf_attributes_or_dataset_attribute() -> None:
    ds = open_cube(CUBES["s2-gfmap"])
    assert crs_of(ds, ds.data).to_epsg() == 32631  # crs_wkt of spatial_ref, through pyproj
    cf_only = ds.assign_coords(spatial_ref=((), 0, CRS.from_epsg(32630).to_cf()))
    cf_only.spatial_ref.attrs.pop("crs_wkt")
    cf_only.spatial_ref.attrs.pop("spatial_ref", None)
    assert crs_of(cf_only, cf_only.data).to_epsg() == 32630  # grid-mapping attributes
    plain = ds.drop_vars("spatial_ref").assign_attrs(crs="EPSG:3035")
    assert crs_of(plain, plain.data).to_epsg() == 3035
    assert crs_of(plain.assign_attrs(crs=None), plain.data) is None
    broken = ds.assign_coords(spatial_ref=((), 0, {"crs_wkt": "PROJCS[nonsense"}))
    with pytest.raises(ValueError, match="'crs_wkt' of variable 'spatial_ref'"):
        crs_of(broken, broken.data)


def test_utm_footprint_follows_the_curved_edges() -> None:
    crs = CRS.from_epsg(32631)
    # a 110 km tile across the zone's central meridian (3 E), where its edges bow most
    bounds = (445_000.0, 5_590_200.0, 554_800.0, 5_700_000.0)
    found = footprint(bounds, crs)
    # every point of the tile's outline, transformed finely, lies in the bbox...
    t = np.linspace(0, 1, 2001)
    x0, y0, x1, y1 = bounds
    xs = np.concatenate(
        [x0 + (x1 - x0) * t, np.full_like(t, x1), x0 + (x1 - x0) * t, np.full_like(t, x0)]
    )
    ys = np.concatenate(
        [np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y0 + (y1 - y0) * t]
    )
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
    west, south, east, north = found.bbox
    assert west <= lon.min() + 1e-7
    assert lon.max() <= east + 1e-7
    assert south <= lat.min() + 1e-7
    assert lat.max() <= north + 1e-7
    # ...which the corners alone would miss: the northern edge bows north of them
    corners_lat = Transformer.from_crs(crs, 4326, always_xy=True).transform([x0, x1], [y1, y1])[1]
    assert north - max(corners_lat) > 1e-3
    ring = np.array(found.geometry["coordinates"][0])
    assert len(ring) > 40  # densified where it bends
    # a small tile is 4 straight edges
    assert (
        len(
            footprint((587_880.0, 5_684_910.0, 588_340.0, 5_685_430.0), crs).geometry[
                "coordinates"
            ][0]
        )
        == 5
    )


def test_footprints_across_the_antimeridian_around_a_pole_and_in_0_360() -> None:
    across = footprint((100_000.0, 6_000_000.0, 900_000.0, 7_000_000.0), CRS.from_epsg(32601))
    assert across.geometry["type"] == "MultiPolygon"
    west_part, east_part = (np.array(p[0]) for p in across.geometry["coordinates"])
    assert west_part[:, 0].min() > 170
    assert west_part[:, 0].max() == 180
    assert east_part[:, 0].min() == -180
    assert east_part[:, 0].max() < -165
    assert across.bbox[0] == -180
    assert across.bbox[2] == 180
    assert from_wkb(to_wkb(across.geometry)) == across.geometry
    arctic = footprint((-1e6, -1e6, 1e6, 1e6), CRS.from_epsg(3413))  # holds the north pole
    assert arctic.bbox[1] > 70
    assert arctic.bbox[3] == 90
    assert arctic.bbox[0] == -180
    assert footprint((-0.5, -90.5, 359.5, 90.5), None).bbox == (-180.0, -90.0, 180.0, 90.0)
    pacific = footprint((150.0, -10.0, 200.0, 10.0), None)  # a 0..360 grid across 180
    assert pacific.geometry["type"] == "MultiPolygon"
    assert [np.array(p[0])[:, 0].min() for p in pacific.geometry["coordinates"]] == [150, -180]


# --- items ---------------------------------------------------------------------------------


def test_item_of_a_utm_cube(cube_items: list[dict[str, Any]]) -> None:
    ds = open_cube(CUBES["s2-gfmap"])
    item = next(i for i in cube_items if i["id"] == "s2-gfmap")
    props = item["properties"]
    assert item["stac_version"] == "1.1.0"
    assert set(item["stac_extensions"]) == {PROJECTION, DATACUBE}
    assert props["proj:code"] == "EPSG:32631"
    half = 5.0
    edges = [ds.x.min() - half, ds.y.min() - half, ds.x.max() + half, ds.y.max() + half]
    assert props["proj:bbox"] == pytest.approx([float(v) for v in edges])
    assert props["proj:shape"] == [52, 46]
    assert props["proj:transform"] == pytest.approx(
        [10, 0, float(ds.x[0]) - 5, 0, -10, float(ds.y[0]) + 5]
    )
    # the bbox in longitude/latitude holds every pixel centre
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(*np.meshgrid(ds.x, ds.y))
    west, south, east, north = item["bbox"]
    assert west < lon.min() < lon.max() < east
    assert south < lat.min() < lat.max() < north
    assert 4.2 < west < 4.3
    assert 51.3 < south < 51.4
    assert props["datetime"] is None  # a range
    assert props["start_datetime"] == "2023-10-02T00:00:00Z"
    assert props["end_datetime"] == "2023-12-31T00:00:00Z"
    dims = props["cube:dimensions"]
    assert list(dims) == ["time", "band", "y", "x"]
    assert dims["time"] == {
        "type": "temporal",
        "extent": [props["start_datetime"], props["end_datetime"]],
        "step": "P5D",
    }
    assert dims["band"] == {"type": "bands", "values": ["B02", "B03", "B04", "B08"]}
    assert dims["x"]["type"] == "spatial"
    assert dims["x"]["axis"] == "x"
    assert dims["x"]["reference_system"] == 32631
    assert dims["y"]["step"] == -10.0
    assert props["cube:variables"]["data"]["data_type"] == "uint16"
    assert props["cube:variables"]["data"]["dimensions"] == ["time", "band", "y", "x"]
    assert props["cube:variables"]["mask"]["dimensions"] == ["time", "y", "x"]
    assert props["eocube:variable"] == "data"
    assert props["eocube:shape"] == [19, 4, 52, 46]
    assert props["eocube:bytes"] == 10_000
    assert props["eocube:psnr"] == 42.0
    assert props["eocube:lossless"] is False
    assert props["eocube:profile"] == "hevc-12bit-444"
    asset = item["assets"]["data"]
    assert asset["href"] == "cubes/s2-gfmap.eocube"
    assert asset["roles"] == ["data"]
    assert asset["type"].startswith("application/vnd.zarr")
    json.dumps(item)  # JSON-ready


def test_item_of_a_lonlat_cube_without_crs_and_of_one_date(
    cube_items: list[dict[str, Any]],
) -> None:
    bcsd = next(i for i in cube_items if i["id"] == "bcsd")
    ds = open_cube(CUBES["bcsd"])
    assert bcsd["bbox"] == [
        float(ds.x.min()) - 0.0625,
        float(ds.y.min()) - 0.0625,
        float(ds.x.max()) + 0.0625,
        float(ds.y.max()) + 0.0625,
    ]
    assert "proj:code" not in bcsd["properties"]  # the cube declares none
    assert bcsd["properties"]["cube:dimensions"]["x"]["reference_system"] == 4326
    one = item_of("s2-gfmap", open_cube(CUBES["s2-gfmap"]).isel(time=[3]))
    assert (
        one["properties"]["datetime"]
        == one["properties"]["start_datetime"]
        == "2023-10-17T00:00:00Z"
    )
    # x/y that are neither in a CRS nor longitude/latitude: no footprint
    plain = ds.assign_coords(x=np.arange(ds.sizes["x"]) * 1.0, y=np.arange(ds.sizes["y"]) * 1.0)
    anywhere = item_of("bcsd", plain)
    assert anywhere["geometry"] is None
    assert "bbox" not in anywhere


def test_items_are_valid_stac_and_round_trip_through_pystac(
    cube_items: list[dict[str, Any]],
) -> None:
    for item in cube_items:
        stac_item = validate_offline(item)
        assert stac_item.to_dict(include_self_link=False) == item
        projection = ProjectionExtension.ext(stac_item)
        cube = DatacubeExtension.ext(stac_item)
        assert cube.dimensions["band"].dim_type == "bands"
        assert cube.variables is not None
        assert cube.variables["data"].dimensions[0] == "time"
        if item["id"] != "bcsd":
            assert projection.code == item["properties"]["proj:code"]
            assert projection.shape == item["properties"]["proj:shape"]
    assert iso_duration(np.timedelta64(1, "h")) == "PT1H"
    assert iso_duration(np.timedelta64(26, "h")) == "P1DT2H"
    assert iso_duration(np.timedelta64(500, "ms")) == "PT0.5S"


# --- the Parquet file, read by STAC tools and DuckDB ---------------------------------------


def test_catalog_reads_back_with_stac_geoparquet_pystac_and_duckdb(
    written: Path, cube_items: list[dict[str, Any]]
) -> None:
    table = pq.read_table(written)
    meta = pq.ParquetFile(written).schema_arrow.metadata
    geo = json.loads(meta[b"geo"])
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert geo["columns"]["geometry"]["geometry_types"] == ["Polygon"]
    assert json.loads(meta[b"stac-geoparquet"])["version"] == "1.1.0"
    assert table.schema.field("start_datetime").type == pa.timestamp("us", tz="UTC")
    expected = {item["id"]: item for item in cube_items}
    # stac-geoparquet's own reader gives the items back; Parquet has one schema for all
    # rows, so it gives null where another cube has a field this one lacks
    by_stac_geoparquet = {i["id"]: i for i in stac_table_to_items(table)}
    assert {k: comparable(v) for k, v in by_stac_geoparquet.items()} == {
        k: comparable(v) for k, v in expected.items()
    }
    assert {i["id"]: i for i in items(table)} == expected  # eocube's reader drops them
    for item in by_stac_geoparquet.values():
        assert pystac.Item.from_dict(item).id == item["id"]
    for item in items(table):
        validate_offline(item)
    # DuckDB: a longitude/latitude box and a projection code, in SQL
    found = duckdb.sql(
        f"""SELECT id, "eocube:bytes" FROM read_parquet('{written}')
            WHERE bbox.xmin <= 5 AND bbox.xmax >= -80 AND bbox.ymin <= 52 AND bbox.ymax >= 40
              AND "proj:code" LIKE 'EPSG:326%' ORDER BY id"""
    ).fetchall()
    assert found == [("l8-ny", 10_000), ("s2-fusets", 10_000), ("s2-gfmap", 10_000)]


def test_a_homogeneous_release_reads_back_valid_from_stac_geoparquet(tmp_path: Path) -> None:
    tiles = [utm_tile(f"t{i}", 32631 + i, 600_000.0, 5_600_000.0) for i in range(3)]
    write_catalog(tiles, tmp_path / "catalog.parquet")
    for item in stac_table_to_items(pq.read_table(tmp_path / "catalog.parquet")):
        validate_offline(item)  # no null to drop: every item has the same fields
        assert comparable(item) == comparable(next(t for t in tiles if t["id"] == item["id"]))


# --- searching ---------------------------------------------------------------------------


def test_a_box_search_spans_utm_zones(tmp_path: Path) -> None:
    # two tiles 10 km apart in longitude, on each side of the zone 31/32 boundary (6 E):
    # their native coordinates differ by 600 km, their longitudes do not
    east_31 = utm_tile("east-31", 32631, 714_000.0, 5_540_000.0)
    west_32 = utm_tile("west-32", 32632, 286_000.0, 5_540_000.0)
    far = utm_tile("far-31", 32631, 300_000.0, 5_540_000.0)
    path = tmp_path / "catalog.parquet"
    write_catalog([east_31, west_32, far], path)
    assert east_31["bbox"][2] < 6 < west_32["bbox"][0]
    both = open_catalog(path, bbox=(5.9, 49.9, 6.1, 50.1), columns=["id", "proj:code"])
    assert sorted(both.column("id").to_pylist()) == ["east-31", "west-32"]
    assert sorted(both.column("proj:code").to_pylist()) == ["EPSG:32631", "EPSG:32632"]
    west_only = open_catalog(path, bbox=(5.0, 49.9, 5.999, 50.1), columns=["id"])
    assert west_only.column("id").to_pylist() == ["east-31"]
    nowhere = open_catalog(path, bbox=(-60, -10, -50, 0))
    assert nowhere.num_rows == 0
    assert "geometry" in nowhere.column_names


def test_time_ranges_filters_and_columns(written: Path) -> None:
    def ids(**kwargs: Any) -> list[str]:
        return sorted(open_catalog(written, columns=["id"], **kwargs).column("id").to_pylist())

    assert ids(datetime="2018-01-01/..") == ["l8-ny", "s2-fusets", "s2-gfmap"]
    assert ids(datetime=("2023-11-01", "2023-11-02")) == ["s2-gfmap"]
    assert ids(datetime=dt.datetime(1999, 6, 1)) == ["bcsd"]  # an instant in its range
    # naive datetimes in list-of-tuples filters are UTC, as the catalog's times
    assert ids(filters=[("start_datetime", "<", dt.datetime(2000, 1, 1))]) == ["bcsd"]
    assert ids(filters=pc.field("proj:code") == "EPSG:32630") == ["s2-fusets"]
    assert ids(
        filters=[[("proj:code", "==", "EPSG:32618")], [("proj:code", "==", "EPSG:32630")]]
    ) == ["l8-ny", "s2-fusets"]
    both = ids(bbox=(-90, 30, 10, 60), datetime="../2019-01-01", filters=[("eocube:psnr", ">", 40)])
    assert both == ["bcsd", "l8-ny"]
    stores = open_catalog(written, columns=["id", STORE_COLUMN], filters=[("id", "==", "bcsd")])
    assert stores.column_names == ["id", STORE_COLUMN]
    assert stores.column(STORE_COLUMN).to_pylist() == ["cubes/bcsd.eocube"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bbox": (1, 2, 3)}, "bbox must be 4 numbers"),
        ({"bbox": (0, 10, 1, 5)}, "south <= north"),
        ({"bbox": (0, 0, 1, math.nan)}, "bbox must be finite"),
        ({"bbox": (-200, 0, 1, 1)}, r"longitudes in \[-180, 180\]"),
        ({"datetime": "yesterday"}, "'yesterday' is not an ISO 8601 time"),
        ({"datetime": ("2020-02-01", "2020-01-01")}, "start is after the end"),
        ({"datetime": (1, 2, 3)}, r"datetime must be \(start, end\)"),
    ],
)
def test_bad_searches_say_what_is_wrong(
    written: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        open_catalog(written, **kwargs)


def test_rows_in_space_order_let_a_box_search_skip_row_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    template = utm_tile("template", 32631, 600_000.0, 5_600_000.0)
    tiles = []
    for i in range(2000):  # 11 km tiles all over the world's UTM zones
        zone, north = 1 + i % 60, bool(rng.integers(2))
        crs = CRS.from_epsg((32600 if north else 32700) + zone)
        x0, y0 = float(rng.uniform(2e5, 7e5)), float(rng.uniform(1e6, 8e6))
        where = footprint((x0, y0, x0 + 10_980, y0 + 10_980), crs)
        tile = copy.deepcopy(template)
        tile |= {"id": f"tile-{i:04d}", "geometry": where.geometry, "bbox": list(where.bbox)}
        tile["properties"]["proj:code"] = f"EPSG:{crs.to_epsg()}"
        tiles.append(tile)
    path = tmp_path / "catalog.parquet"
    write_catalog(tiles, path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == math.ceil(2000 / default_row_group_size(2000)) > 6
    fragment = pads.ParquetFileFormat().make_fragment(str(path), filesystem=pa.fs.LocalFileSystem())
    centres = [
        ((t["bbox"][0] + t["bbox"][2]) / 2, (t["bbox"][1] + t["bbox"][3]) / 2) for t in tiles
    ]
    boxes = [(x - 0.5, y - 0.5, x + 0.5, y + 0.5) for x, y in centres[::500]]
    for box in [*boxes, (178.0, 20.0, -178.0, 40.0)]:  # the last across the antimeridian
        read = fragment.subset(filter=bbox_expression(box), schema=fragment.physical_schema)
        assert len(read.row_groups) <= (3 if box[0] > box[2] else 2), box
        found = set(open_catalog(path, bbox=box, columns=["id"]).column("id").to_pylist())
        west, south, east, north = box
        wanted = {
            t["id"]
            for t in tiles
            if t["bbox"][1] <= north
            and t["bbox"][3] >= south
            and (
                t["bbox"][0] <= east and t["bbox"][2] >= west
                if west <= east
                else t["bbox"][2] >= west or t["bbox"][0] <= east
            )
        }
        assert wanted, box
        assert found == wanted, box


# --- writing -------------------------------------------------------------------------------


def test_write_catalog_refuses_repeated_ids_and_types_that_disagree(
    tmp_path: Path, cube_items: list[dict[str, Any]]
) -> None:
    with pytest.raises(ValueError, match=r"distinct ids; repeated: \['bcsd'\]"):
        write_catalog([*cube_items, cube_items[-1]], tmp_path / "c.parquet")
    odd = copy.deepcopy(cube_items[0])
    odd["id"] = "odd"
    odd["properties"]["eocube:bytes"] = "many"
    with pytest.raises(ValueError, match="column 'eocube:bytes'"):
        write_catalog([cube_items[1], odd], tmp_path / "c.parquet")


def test_a_crs_without_code_is_wkt2_in_every_reference_system(tmp_path: Path) -> None:
    custom = CRS.from_proj4("+proj=laea +lat_0=51 +lon_0=4 +x_0=0 +y_0=0 +ellps=GRS80 +units=m")
    ds = open_cube(CUBES["s2-gfmap"]).drop_vars("spatial_ref")
    ds = ds.assign_coords(
        spatial_ref=((), 0, {"crs_wkt": custom.to_wkt()}),
        x=ds.x - 587_000 + 18_000,
        y=ds.y - 5_685_000 + 30_000,
    )
    laea = item_of("s2-gfmap", ds) | {"id": "laea"}
    assert laea["properties"]["proj:code"] is None
    assert CRS.from_wkt(laea["properties"]["proj:wkt2"]) == custom
    utm = item_of("s2-fusets")
    table = write_catalog([laea, utm], tmp_path / "catalog.parquet")
    for item in items(table):
        for dim in ("x", "y"):
            reference = item["properties"]["cube:dimensions"][dim]["reference_system"]
            assert isinstance(reference, str)  # one JSON type in the column
        assert CRS.from_wkt(item["properties"]["cube:dimensions"]["x"]["reference_system"]) == (
            custom if item["id"] == "laea" else CRS.from_epsg(32630)
        )


# --- catalogs of eocube's first schema ------------------------------------------------------


def first_schema_catalog(path: Path) -> None:
    """A catalog as eocube wrote them before the STAC catalog (two cubes)."""
    rows = [
        {
            "id": "s2-gfmap",
            "path": "cubes/s2-gfmap.eocube",
            "variables": ["data", "mask"],
            "dims": ["time", "band", "y", "x"],
            "shape": [19, 4, 52, 46],
            "bands": ["B02", "B03", "B04", "B08"],
            "dtype": "uint16",
            "crs": "EPSG:32631",
            "xmin": 587_880.0,
            "ymin": 5_684_910.0,
            "xmax": 588_340.0,
            "ymax": 5_685_430.0,
            "time_start": dt.datetime(2023, 10, 2),
            "time_end": dt.datetime(2023, 12, 31),
            "profile": "hevc-12bit-444",
            "quality": 16.0,
            "lossless": False,
            "bytes": 16_000,
            "bpppb": 0.69,
            "psnr": 39.5,
            "max_abs_error": 120.0,
        },
        {
            "id": "bcsd",
            "path": "cubes/bcsd.eocube",
            "variables": ["data"],
            "dims": ["time", "band", "y", "x"],
            "shape": [12, 2, 33, 81],
            "bands": ["pr", "tas"],
            "dtype": "float32",
            "crs": None,
            "xmin": -85.0,
            "ymin": 33.0,
            "xmax": -74.875,
            "ymax": 37.125,
            "time_start": dt.datetime(1999, 1, 31),
            "time_end": dt.datetime(1999, 12, 31),
            "profile": "hevc-12bit-444",
            "quality": None,
            "lossless": False,
            "bytes": 10_000,
            "bpppb": 1.25,
            "psnr": 35.6,
            "max_abs_error": 138.0,
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_a_catalog_of_the_first_schema_opens_as_stac_with_a_warning(tmp_path: Path) -> None:
    old = tmp_path / "old.parquet"
    first_schema_catalog(old)
    with pytest.warns(UserWarning, match="first schema"):
        table = open_catalog(old)
    assert "stac_version" in table.column_names
    assert "path" not in table.column_names
    converted = {i["id"]: i for i in items(table)}
    gfmap = converted["s2-gfmap"]["properties"]
    assert gfmap["proj:code"] == "EPSG:32631"
    assert gfmap["proj:bbox"] == [587_880.0, 5_684_910.0, 588_340.0, 5_685_430.0]
    assert gfmap["cube:dimensions"]["band"]["values"] == ["B02", "B03", "B04", "B08"]
    assert gfmap["eocube:bytes"] == 16_000
    assert "cube:variables" not in gfmap
    assert 4.26 < converted["s2-gfmap"]["bbox"][0] < 4.27  # now in longitude/latitude
    assert converted["bcsd"]["geometry"] is None  # no CRS: x/y could be anything
    assert converted["bcsd"]["properties"]["cube:variables"]["data"]["data_type"] == "float32"
    for item in converted.values():
        validate_offline(item)
    with pytest.warns(UserWarning, match="first schema"):
        found = open_catalog(
            old,
            bbox=(4, 51, 5, 52),
            filters=[("eocube:bpppb", "<", 1)],
            columns=["id", STORE_COLUMN],
        )
    assert found.to_pylist() == [{"id": "s2-gfmap", STORE_COLUMN: "cubes/s2-gfmap.eocube"}]
    # rewritten once, it opens as any catalog
    new = tmp_path / "new.parquet"
    with pytest.warns(UserWarning, match="first schema"):
        write_catalog(items(open_catalog(old)), new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sorted(open_catalog(new).column("id").to_pylist()) == ["bcsd", "s2-gfmap"]


def test_the_catalog_module_names_its_columns_once() -> None:
    # every column with statistics is one the writer types, so a filter on it prunes
    typed = set(catalog.COLUMN_TYPES) | {f"bbox.{k}" for k in ("xmin", "ymin", "xmax", "ymax")}
    assert set(catalog.STATISTICS) <= typed
