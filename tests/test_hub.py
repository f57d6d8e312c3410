"""Releases on the Hugging Face hub: publish, read over hf://, catalog, CLI.

The hub is tests/hub_server.py, a local double of the endpoints the real
``huggingface_hub`` client uses; every request it answers is logged, so the tests count
requests and bytes.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xarray as xr
import yaml
import zarr
from hub_server import HubServer, iter_paths
from huggingface_hub import DatasetCard
from huggingface_hub.utils import HfHubHTTPError
from pyproj import CRS

import eocube
import eocube.hub
from eocube.cache import DISK_ENVIRONMENT_VARIABLE, DiskBlockCache
from eocube.catalog import STORE_COLUMN, items, write_catalog
from eocube.footprint import footprint
from eocube.hub import publish
from eocube.hubfs import RangeHfFileSystem
from eocube.release import dataset_card
from eocube.shards import ShardIndex
from eocube.testing import check_shard

DATA = Path(__file__).parent / "data"
TOKEN = "hf_eocube_test_token"
CUBES = {
    "s2-gfmap": "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2-fusets": "s2_l2a_fusets_field_33x3x57x56",
    "bcsd": "stars_bcsd_obs_12x2x33x81",
    "s2-worldcereal": "s2_l2a_worldcereal_118x4x64x64",
}
CHUNKS = {"time": 16, "y": 32, "x": 32}
OPEN_BUDGET = 10
"""Requests to open a cube (measured 9 for s2-worldcereal, see test_request_budget)."""


def _load(name: str) -> xr.Dataset:
    with xr.open_dataset(DATA / f"{name}.nc") as ds:
        return ds.load()


def _fresh() -> None:
    """Forget cached filesystems (their listings), as a new process would."""
    RangeHfFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("release") / "s2-release"
    eocube.write_release(
        {cube_id: _load(name) for cube_id, name in CUBES.items()},
        folder,
        progress=False,
        title="eocube test release",
        license="cc-by-4.0",
        repo_id="eocube/test-release",
        crf=16,
        chunks=CHUNKS,
    )
    return folder


@pytest.fixture(scope="module")
def published(hub: HubServer, release: Path) -> str:
    return publish(release, "eocube/test-release", endpoint=hub.url, token=TOKEN)


def _url(sha: str, cube_id: str, repo: str = "eocube/test-release") -> str:
    return f"hf://datasets/{repo}@{sha}/cubes/{cube_id}.eocube"


def _options(hub: HubServer) -> dict[str, str]:
    return {"endpoint": hub.url, "token": TOKEN}


def _files(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``folder``."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_release_folder_catalog_and_card(release: Path) -> None:
    assert sorted(p.name for p in (release / "cubes").iterdir()) == sorted(
        f"{c}.eocube" for c in CUBES
    )
    catalog = items(pq.read_table(release / "catalog.parquet"))  # STAC items
    assert sorted(item["id"] for item in catalog) == sorted(CUBES)
    rows = {item["id"]: item for item in catalog}
    gfmap = rows["s2-gfmap"]["properties"]
    ds = _load(CUBES["s2-gfmap"])
    assert rows["s2-gfmap"]["assets"]["data"]["href"] == "cubes/s2-gfmap.eocube"
    assert gfmap["eocube:shape"] == list(ds.data.shape)
    assert gfmap["cube:dimensions"]["band"]["values"] == ["B02", "B03", "B04", "B08"]
    assert gfmap["cube:variables"]["data"]["data_type"] == "uint16"
    assert gfmap["proj:code"] == "EPSG:32631"
    step = float(ds.x[1] - ds.x[0])
    assert gfmap["proj:bbox"][0] == pytest.approx(float(ds.x.min()) - abs(step) / 2)
    west, south, east, north = rows["s2-gfmap"]["bbox"]  # longitude/latitude
    assert 4.2 < west < east < 4.3
    assert 51.3 < south < north < 51.4
    assert gfmap["start_datetime"] == f"{ds.time.values.min().astype('datetime64[s]')}Z"
    assert gfmap["eocube:profile"] == "hevc-12bit-444"
    assert gfmap["eocube:psnr"] > 35
    assert "proj:code" not in rows["bcsd"]["properties"]  # no CRS in that file
    assert rows["bcsd"]["bbox"][0] == pytest.approx(-85.0)  # its x/y are lon/lat
    store = release / rows["s2-gfmap"]["assets"]["data"]["href"]
    assert gfmap["eocube:bytes"] == sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    card = (release / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-4.0"
    assert "eocube" in meta["tags"]
    assert 'engine="eocube"' in card
    assert "hf://datasets/eocube/test-release/cubes/" in card


def test_write_release_refuses_bad_ids_and_foreign_cubes(tmp_path: Path) -> None:
    ds = _load(CUBES["bcsd"])
    with pytest.raises(ValueError, match="cube id"):
        eocube.write_release({"a/b": ds}, tmp_path / "r1", progress=False)
    (tmp_path / "r2/cubes/old.eocube").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cubes/old\.eocube"):
        eocube.write_release({"new": ds}, tmp_path / "r2", progress=False)
    with pytest.raises(ValueError, match="at least one cube"):
        eocube.write_release({}, tmp_path / "r3")


def test_publish_then_read_every_cube_over_hf(
    hub: HubServer, release: Path, published: str
) -> None:
    files = hub.files("eocube/test-release", published)
    local = _files(release)
    assert {k: v for k, v in files.items() if k != ".gitattributes"} == local
    # catalog and card come last: the head commit is the one holding the catalog
    messages = hub.commits("eocube/test-release")
    assert messages[0].endswith(f"({len(CUBES) + 1}/{len(CUBES) + 1}: release files)")
    for cube_id in CUBES:
        remote = xr.open_dataset(
            _url(published, cube_id), engine="eocube", storage_options=_options(hub)
        )
        same = eocube.open_dataset(release / f"cubes/{cube_id}.eocube")
        xr.testing.assert_identical(remote.load(), same.load())
    lazy = eocube.open_dataset(
        _url(published, "s2-fusets"), chunks={}, storage_options=_options(hub)
    )
    assert lazy.data.chunks is not None
    expected = eocube.open_dataset(release / "cubes/s2-fusets.eocube").data.values
    assert float(lazy.data.mean().compute()) == pytest.approx(float(np.nanmean(expected)))


def test_request_budget(hub: HubServer, release: Path, published: str) -> None:
    store = release / "cubes/s2-worldcereal.eocube"
    array = zarr.open_group(store, mode="r")["data"]
    assert isinstance(array, zarr.Array)
    assert array.shards is not None
    per_shard = int(np.prod([s // c for s, c in zip(array.shards, array.chunks, strict=True)]))
    assert per_shard > 1, "the test needs shards of several chunks"
    index = check_shard(store / "data/c/0/0/0/0", per_shard).entries
    index_nbytes = ShardIndex.nbytes(per_shard)
    local = eocube.open_dataset(store)

    _fresh()
    mark = len(hub.requests)
    remote = xr.open_dataset(
        _url(published, "s2-worldcereal"), engine="eocube", storage_options=_options(hub)
    )
    opening = hub.log_since(mark)
    trace = "\n".join(iter_paths(opening))
    # revision info, one recursive listing of the store, its zarr.json, then the
    # coordinate objects xarray reads to build indexes (time read up to 3 times by CF
    # decoding); nothing of the cube variables
    assert len(opening) <= OPEN_BUDGET, trace
    api = [r for r in opening if not r.is_data]
    assert [r.path.split("/")[5] for r in api] == ["revision", "tree"], trace
    assert "recursive=true" in api[1].query
    data = [r for r in opening if r.is_data]
    assert data[0].path.endswith("/zarr.json")
    assert all(re.search(r"\.eocube/(time|band|y|x)/c/0$", r.path) for r in data[1:]), trace

    windows = [  # one stored chunk each: (time, y, x) chunk indices
        (1, 0, 0),
        (3, 1, 1),
        (7, 1, 0),  # the last time chunk, partial (118 = 7 * 16 + 6)
    ]
    for ct, cy, cx in windows:
        sel = {
            "time": slice(ct * CHUNKS["time"], (ct + 1) * CHUNKS["time"]),
            "y": slice(cy * CHUNKS["y"], (cy + 1) * CHUNKS["y"]),
            "x": slice(cx * CHUNKS["x"], (cx + 1) * CHUNKS["x"]),
        }
        mark = len(hub.requests)
        values = remote.data.isel(sel).values
        log = hub.log_since(mark)
        trace = "\n".join(iter_paths(log))
        np.testing.assert_array_equal(values, local.data.isel(sel).values)
        gets = [r for r in log if r.is_data]
        assert len(log) <= 3, trace
        assert len(gets) <= 2, trace
        assert not any(r.is_listing for r in log), trace
        # the chunk's own bytes: one index entry, read exactly
        chunk = index[ct * 4 + cy * 2 + cx]
        ranges = [r.range for r in gets]
        assert f"bytes={chunk[0]}-{chunk[0] + chunk[1] - 1}" in ranges, trace
        assert sum(r.sent for r in gets) <= 1.2 * int(chunk[1]) + index_nbytes, trace


def test_block_cache_serves_repeated_reads(
    hub: HubServer, release: Path, published: str, tmp_path: Path
) -> None:
    options = {**_options(hub), "cache_storage": str(tmp_path), "cache_block_size": 2**14}
    sel = {"time": slice(16, 32), "y": slice(0, 32), "x": slice(32, 64)}
    expected = eocube.open_dataset(release / "cubes/s2-worldcereal.eocube").data.isel(sel).values
    fetched = []
    for _ in range(2):
        _fresh()
        mark = len(hub.requests)
        remote = eocube.open_dataset(_url(published, "s2-worldcereal"), storage_options=options)
        np.testing.assert_array_equal(remote.data.isel(sel).values, expected)
        fetched.append([r for r in hub.log_since(mark) if r.is_data])
    assert fetched[0]
    assert fetched[1] == []  # metadata, coordinates and chunk blocks all came from disk


def test_block_cache_stays_within_its_cap(
    hub: HubServer, release: Path, published: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = 2**12
    cap = 6 * block
    options = {
        **_options(hub),
        "cache_storage": str(tmp_path),
        "cache_block_size": block,
        "cache_max_bytes": cap,
    }
    local = eocube.open_dataset(release / "cubes/s2-worldcereal.eocube")
    first = {"time": slice(0, 16), "y": slice(0, 32), "x": slice(0, 32)}
    _fresh()
    mark = len(hub.requests)
    remote = eocube.open_dataset(_url(published, "s2-worldcereal"), storage_options=options)
    for t in range(0, 118, 16):  # every time chunk of one column
        sel = {**first, "time": slice(t, t + 16)}
        np.testing.assert_array_equal(remote.data.isel(sel).values, local.data.isel(sel).values)
        assert DiskBlockCache(tmp_path).nbytes <= cap
    assert sum(r.sent for r in hub.log_since(mark) if r.is_data) > 2 * cap  # blocks went
    # the first window's blocks were read longest ago: evicted, fetched again
    mark = len(hub.requests)
    eocube.cache.CHUNKS.clear()  # decoded chunks would spare the read
    np.testing.assert_array_equal(remote.data.isel(first).values, local.data.isel(first).values)
    assert any(r.is_data for r in hub.log_since(mark))
    assert DiskBlockCache(tmp_path).nbytes <= cap
    # the cap's default comes from the environment; a bad cap is refused by name
    monkeypatch.setenv(DISK_ENVIRONMENT_VARIABLE, str(cap))
    fs = RangeHfFileSystem(skip_instance_cache=True, cache_storage=str(tmp_path))
    assert fs.block_cache is not None
    assert fs.block_cache.max_bytes == cap
    with pytest.raises(ValueError, match="cache_max_bytes"):
        RangeHfFileSystem(skip_instance_cache=True, cache_storage=str(tmp_path), cache_max_bytes=-1)


def test_interrupted_publish_completes_on_rerun(hub: HubServer, release: Path) -> None:
    repo = "eocube/interrupted"
    hub.fail_commit(after=1)  # the first cube gets in, the second commit breaks
    with pytest.raises(HfHubHTTPError, match="500"):
        publish(release, repo, endpoint=hub.url, token=TOKEN, commit_message="release 1")
    first, second = sorted(CUBES)[:2]
    partial = hub.files(repo)
    assert any(p.startswith(f"cubes/{first}.eocube/") for p in partial)
    assert not any(p.startswith(f"cubes/{second}.eocube/") for p in partial)
    assert "catalog.parquet" not in partial

    mark = len(hub.requests)
    sha = publish(release, repo, endpoint=hub.url, token=TOKEN, commit_message="release 1")
    rerun = hub.log_since(mark)
    messages = hub.commits(repo)
    n = len(CUBES) + 1
    # the re-run cut the same parts; the first, already on the hub, made no commit: one
    # commit per part in all, in order
    parts = [f"cubes/{c}.eocube" for c in sorted(CUBES)] + ["release files"]
    assert messages[:n] == [f"release 1 ({i}/{n}: {name})" for i, name in enumerate(parts, 1)][::-1]
    commits = [r for r in rerun if r.method == "POST" and "/commit/" in r.path]
    assert len(commits) == n - 1, "\n".join(iter_paths(rerun))
    files = hub.files(repo, sha)
    for path in release.rglob("*"):
        if path.is_file():
            assert files[path.relative_to(release).as_posix()] == path.read_bytes()
    remote = eocube.open_dataset(_url(sha, second, repo), storage_options=_options(hub))
    xr.testing.assert_identical(
        remote.load(), eocube.open_dataset(release / f"cubes/{second}.eocube").load()
    )
    # nothing left to send: no new commit, same sha
    assert publish(release, repo, endpoint=hub.url, token=TOKEN) == sha
    assert len(hub.commits(repo)) == len(messages)


def test_republish_sends_changed_files_and_deletes_stale_ones(
    hub: HubServer, release: Path, tmp_path: Path
) -> None:
    repo = "eocube/republish"
    store = tmp_path / "bcsd.eocube"
    # first the cube in finer chunks: two shard objects
    eocube.to_eocube(
        _load(CUBES["bcsd"]), store, crf=16, chunks={"time": 16, "y": 8, "x": 32}, measure=False
    )
    publish(store, repo, endpoint=hub.url, token=TOKEN)
    before = hub.files(repo)
    assert {"bcsd.eocube/data/c/0/0/0/0", "bcsd.eocube/data/c/0/0/1/0"} <= set(before)
    # then the release's copy: one shard object, the same coordinates
    shutil.rmtree(store)
    shutil.copytree(release / "cubes/bcsd.eocube", store)
    sha = publish(store, repo, endpoint=hub.url, token=TOKEN, commit_message="again")
    local = {f"bcsd.eocube/{p}": data for p, data in _files(store).items()}
    changed = sorted(p for p, data in local.items() if before.get(p) != data)
    unchanged = sorted(set(local) - set(changed))
    assert unchanged, "the test needs files that stay the same"
    last = hub.history(repo)[0]
    assert last.sha == sha
    assert last.message == "again"
    assert sorted(last.added) == changed  # unchanged files were not sent again
    assert list(last.deleted) == ["bcsd.eocube/data/c/0/0/1/0"]
    assert {p: d for p, d in hub.files(repo, sha).items() if p != ".gitattributes"} == local


def test_a_store_split_over_commits_gets_its_metadata_last(
    hub: HubServer, release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eocube.hub, "MAX_COMMIT_FILES", 2)
    repo = "eocube/split"
    store = release / "cubes/s2-gfmap.eocube"
    sha = publish(store, repo, endpoint=hub.url, token=TOKEN, commit_message="split")
    parts = hub.history(repo)[::-1][1:]  # oldest first, after the repo's initial commit
    files = _files(store)
    assert len(parts) == -(-len(files) // 2) > 2
    assert parts[-1].sha == sha
    assert "s2-gfmap.eocube/zarr.json" in parts[-1].added
    for part in parts[:-1]:  # no revision before the last holds metadata of a partial store
        assert not any(p.endswith("zarr.json") for p in hub.files(repo, part.sha)), part
    assert sorted(p for part in parts for p in part.added) == sorted(
        f"s2-gfmap.eocube/{p}" for p in files
    )


def test_publish_refuses_a_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'nowhere' is neither a folder nor a packed store"):
        publish("nowhere", "eocube/none", endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="holds no file to publish"):
        publish(tmp_path, "eocube/none", endpoint="http://127.0.0.1:9")


def test_dataset_card_metadata_is_the_hubs_card_data(release: Path) -> None:
    catalog = pq.read_table(release / "catalog.parquet")
    title = 'Sentinel-2: "fields" & climate'
    card = dataset_card(catalog, title=title, tags=["eocube", "a: b", 7], license="cc-by-4.0")
    meta = DatasetCard(card).data.to_dict()
    assert meta == {
        "license": "cc-by-4.0",
        "pretty_name": title,
        "tags": ["eocube", "a: b", "7"],
        "size_categories": ["n<1K"],
        "configs": [{"config_name": "catalog", "data_files": "catalog.parquet"}],
    }
    assert yaml.safe_load(card.split("---\n")[1]) == meta
    assert f"# {title}" in card
    assert "| s2-gfmap |" in card


def test_open_catalog_filters(hub: HubServer, release: Path, published: str) -> None:
    url = f"hf://datasets/eocube/test-release@{published}/catalog.parquet"
    options = _options(hub)
    everything = eocube.open_catalog(url, storage_options=options)
    assert everything.equals(pq.read_table(release / "catalog.parquet"))
    utm31 = eocube.open_catalog(
        url, filters=[("proj:code", "==", "EPSG:32631")], storage_options=options
    )
    assert sorted(utm31.column("id").to_pylist()) == ["s2-gfmap", "s2-worldcereal"]
    belgium = eocube.open_catalog(url, bbox=(2.5, 49.5, 6.5, 51.5), storage_options=options)
    assert sorted(belgium.column("id").to_pylist()) == ["s2-gfmap", "s2-worldcereal"]
    recent = eocube.open_catalog(
        release / "catalog.parquet",
        filters=[("start_datetime", ">=", dt.datetime(2019, 1, 1))],
        columns=["id", "eocube:bpppb"],
    )
    assert recent.column_names == ["id", "eocube:bpppb"]
    assert sorted(recent.column("id").to_pylist()) == ["s2-fusets", "s2-gfmap"]
    in_2019 = eocube.open_catalog(url, datetime="2019-03-01/2019-03-31", storage_options=options)
    assert in_2019.column("id").to_pylist() == ["s2-fusets"]
    small = eocube.open_catalog(
        url, filters=pc.field("eocube:bytes") < 20_000, storage_options=options
    )
    assert all(b < 20_000 for b in small.column("eocube:bytes").to_pylist())
    assert small.num_rows < everything.num_rows


def test_open_catalog_reads_footer_and_matching_row_groups(
    hub: HubServer, release: Path, tmp_path: Path
) -> None:
    template = items(pq.read_table(release / "catalog.parquet"))[0]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5000):  # 11 km tiles in every UTM zone
        zone = 1 + i % 60
        x0, y0 = float(rng.uniform(2e5, 7e5)), float(rng.uniform(0, 8e6))
        where = footprint((x0, y0, x0 + 10_980, y0 + 10_980), CRS.from_epsg(32600 + zone))
        start = dt.datetime(2017, 1, 1) + dt.timedelta(hours=int(rng.integers(100_000)))
        tile = {
            **template,
            "id": f"tile-{i:05d}",
            "geometry": where.geometry,
            "bbox": list(where.bbox),
            "assets": {
                "data": {**template["assets"]["data"], "href": f"cubes/tile-{i:05d}.eocube"}
            },
        }
        tile["properties"] = {
            **template["properties"],
            "proj:code": f"EPSG:{32600 + zone}",
            "start_datetime": f"{start:%Y-%m-%dT%H:%M:%S}Z",
            "end_datetime": f"{start + dt.timedelta(days=90):%Y-%m-%dT%H:%M:%S}Z",
            "eocube:bytes": int(rng.integers(100_000, 100_000_000)),
            "eocube:bpppb": float(rng.uniform(0.1, 2)),
            "eocube:psnr": float(rng.uniform(35, 60)),
        }
        rows.append(tile)
    wanted = rows[1234]
    lon = (wanted["bbox"][0] + wanted["bbox"][2]) / 2
    lat = (wanted["bbox"][1] + wanted["bbox"][3]) / 2
    folder = tmp_path / "big"
    folder.mkdir()
    write_catalog(rows, folder / "catalog.parquet")
    meta = pq.ParquetFile(folder / "catalog.parquet").metadata
    size = (folder / "catalog.parquet").stat().st_size
    spans = []  # [start, end) of each row group in the file
    for i in range(meta.num_row_groups):
        columns = [meta.row_group(i).column(j) for j in range(meta.num_columns)]
        starts = [
            c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            for c in columns
        ]
        ends = [s + c.total_compressed_size for s, c in zip(starts, columns, strict=True)]
        spans.append((min(starts), max(ends)))
    assert len(spans) > 10
    sha = publish(folder, "eocube/big-catalog", endpoint=hub.url, token=TOKEN)
    mark = len(hub.requests)
    found = eocube.open_catalog(
        f"hf://datasets/eocube/big-catalog@{sha}/catalog.parquet",
        bbox=(lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4),
        columns=["id", STORE_COLUMN],
        storage_options=_options(hub),
    )
    assert found.column("id").to_pylist() == ["tile-01234"]
    assert found.column(STORE_COLUMN).to_pylist() == ["cubes/tile-01234.eocube"]
    gets = [r for r in hub.log_since(mark) if r.is_data]
    trace = "\n".join(iter_paths(gets))
    # the footer (pyarrow reads the last 64 kB, then a larger footer whole), then the
    # columns read of the row groups whose bbox statistics can hold the point: rows are in
    # space order, so few row groups of many can
    footer_start = size - 8 - meta.serialized_size
    footer = [r for r in gets if r.range and _range(r.range)[0] >= footer_start - 2**16]
    body = [r for r in gets if r not in footer]
    assert footer[0].range == f"bytes={max(0, size - 2**16)}-{size - 1}"
    assert len(footer) == (1 if meta.serialized_size + 8 <= 2**16 else 2), trace
    touched = set()
    for request in body:
        first, last = _range(request.range)
        groups = [i for i, (start, end) in enumerate(spans) if start <= first and last < end]
        assert len(groups) == 1, trace  # a range within one row group
        touched.update(groups)
    assert 1 <= len(touched) <= 2 < len(spans), trace
    assert sum(r.sent for r in body) < size / 20, trace


def _range(header: str | None) -> tuple[int, int]:
    """(first, last) byte of a ``bytes=first-last`` Range header."""
    assert header is not None
    first, last = header.split("=")[1].split("-")
    return int(first), int(last)


def test_cli_publish_branch_private_store(hub: HubServer, release: Path) -> None:
    store = release / "cubes/bcsd.eocube"
    repo = "eocube/cli-store"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "eocube", "publish", str(store), repo),
            *("--endpoint", hub.url, "--token", TOKEN, "--revision", "dev"),
            *("--message", "cli publish", "--private"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    sha = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert hub.commits(repo, branch="dev")[0] == "cli publish"
    assert "bcsd.eocube/zarr.json" not in hub.files(repo, "main")
    url = f"hf://datasets/{repo}@{sha}/bcsd.eocube"
    remote = eocube.open_dataset(url, storage_options=_options(hub))
    xr.testing.assert_identical(remote.load(), eocube.open_dataset(store).load())
    _fresh()
    with pytest.raises(FileNotFoundError):
        eocube.open_dataset(url, storage_options={"endpoint": hub.url, "token": False})


def test_server_logs_and_ranges(hub: HubServer, published: str) -> None:
    """The double answers HEAD, suffix and open ranges like the hub, and logs them."""
    import httpx2

    base = f"{hub.url}/datasets/eocube/test-release/resolve/{published}/catalog.parquet"
    mark = len(hub.requests)
    head = httpx2.head(base)
    size = int(head.headers["Content-Length"])
    assert head.headers["X-Repo-Commit"] == published
    tail = httpx2.get(base, headers={"Range": "bytes=-8"})
    assert tail.status_code == 206
    assert tail.content[-4:] == b"PAR1"
    assert tail.headers["Content-Range"] == f"bytes {size - 8}-{size - 1}/{size}"
    assert httpx2.get(base, headers={"Range": f"bytes={size}-"}).status_code == 416
    logged = [(r.method, r.range, r.status, r.sent) for r in hub.log_since(mark)]
    assert logged == [
        ("HEAD", None, 200, 0),
        ("GET", "bytes=-8", 206, 8),
        ("GET", f"bytes={size}-", 416, 0),
    ]


def test_a_shared_release_reads_its_attributes_over_hf(hub: HubServer, tmp_path: Path) -> None:
    # write_release(share_attributes=True): the attributes the cubes share come from the
    # release's cubes/zarr.json, one more small read per cube opened
    s2 = _load(CUBES["s2-gfmap"]).isel(time=slice(0, 4))
    cubes = {"a": s2.isel(x=slice(0, 20)), "b": s2.isel(x=slice(20, 40))}
    folder = tmp_path / "shared-release"
    eocube.write_release(cubes, folder, progress=False, crf=30, share_attributes=True)
    assert (folder / "cubes/zarr.json").is_file()
    sha = publish(folder, "eocube/shared-release", endpoint=hub.url, token=TOKEN)
    assert hub.commits("eocube/shared-release")[-2].endswith("(1/4: shared attributes)")
    _fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        remote = xr.open_dataset(
            _url(sha, "b", "eocube/shared-release"),
            engine="eocube",
            storage_options=_options(hub),
        )
    assert remote.attrs["title"] == s2.attrs["title"]
    assert remote.data.attrs["long_name"] == s2.data.attrs["long_name"]
    local = eocube.open_dataset(folder / "cubes/b.eocube")
    xr.testing.assert_identical(remote.load(), local.load())
