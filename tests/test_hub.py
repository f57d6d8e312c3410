"""Releases on the Hugging Face hub: publish, read over hf://, catalog, CLI.

The hub is tests/hub_server.py, a local double of the endpoints the real
``huggingface_hub`` client uses; every request it answers is logged, so the tests count
requests and bytes.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
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
from huggingface_hub.utils import HfHubHTTPError

import eocube
from eocube.catalog import write_catalog
from eocube.hub import publish
from eocube.hubfs import RangeHfFileSystem
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


def test_release_folder_catalog_and_card(release: Path) -> None:
    assert sorted(p.name for p in (release / "cubes").iterdir()) == sorted(
        f"{c}.eocube" for c in CUBES
    )
    catalog = pq.read_table(release / "catalog.parquet").to_pylist()
    assert [row["id"] for row in catalog] == sorted(CUBES)
    rows = {row["id"]: row for row in catalog}
    gfmap = rows["s2-gfmap"]
    ds = _load(CUBES["s2-gfmap"])
    assert gfmap["path"] == "cubes/s2-gfmap.eocube"
    assert gfmap["shape"] == list(ds.data.shape)
    assert gfmap["bands"] == ["B02", "B03", "B04", "B08"]
    assert gfmap["dtype"] == "uint16"
    assert gfmap["crs"] == "EPSG:32631"
    step = float(ds.x[1] - ds.x[0])
    assert gfmap["xmin"] == pytest.approx(float(ds.x.min()) - abs(step) / 2)
    assert gfmap["time_start"] == ds.time.values.min().astype("datetime64[us]").item()
    assert gfmap["profile"] == "hevc-12bit-444"
    assert gfmap["psnr"] > 35
    assert rows["bcsd"]["crs"] is None  # no CRS in that file
    store_bytes = sum(f.stat().st_size for f in (release / gfmap["path"]).rglob("*") if f.is_file())
    assert gfmap["bytes"] == store_bytes
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
    local = {
        p.relative_to(release).as_posix(): p.read_bytes() for p in release.rglob("*") if p.is_file()
    }
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

    sha = publish(release, repo, endpoint=hub.url, token=TOKEN, commit_message="release 1")
    messages = hub.commits(repo)
    n = len(CUBES) + 1
    # the re-run committed every part but the one already there
    assert messages[: n - 1] == [
        f"release 1 ({i}/{n - 1}: {name})"
        for i, name in reversed(
            list(enumerate([f"cubes/{c}.eocube" for c in sorted(CUBES)[1:]] + ["release files"], 1))
        )
    ]
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


def test_open_catalog_filters(hub: HubServer, release: Path, published: str) -> None:
    url = f"hf://datasets/eocube/test-release@{published}/catalog.parquet"
    options = _options(hub)
    everything = eocube.open_catalog(url, storage_options=options)
    assert everything.equals(pq.read_table(release / "catalog.parquet"))
    utm31 = eocube.open_catalog(url, filters=[("crs", "==", "EPSG:32631")], storage_options=options)
    assert sorted(utm31.column("id").to_pylist()) == ["s2-gfmap", "s2-worldcereal"]
    recent = eocube.open_catalog(
        release / "catalog.parquet",
        filters=[("time_start", ">=", dt.datetime(2019, 1, 1))],
        columns=["id", "bpppb"],
    )
    assert recent.column_names == ["id", "bpppb"]
    assert sorted(recent.column("id").to_pylist()) == ["s2-fusets", "s2-gfmap"]
    small = eocube.open_catalog(url, filters=pc.field("bytes") < 20_000, storage_options=options)
    assert all(b < 20_000 for b in small.column("bytes").to_pylist())
    assert small.num_rows < everything.num_rows


def test_open_catalog_reads_footer_and_matching_row_groups(
    hub: HubServer, release: Path, tmp_path: Path
) -> None:
    template = pq.read_table(release / "catalog.parquet").to_pylist()[0]
    rng = np.random.default_rng(0)
    rows = [
        {
            **template,
            "id": f"tile-{i:05d}",
            "path": f"cubes/tile-{i:05d}.eocube",
            "crs": f"EPSG:{32601 + i % 60}",
            "xmin": float(rng.uniform(1e5, 9e5)),
            "ymin": float(rng.uniform(0, 9e6)),
            "time_start": dt.datetime(2017, 1, 1) + dt.timedelta(hours=int(rng.integers(100_000))),
            "bytes": int(rng.integers(100_000, 100_000_000)),
            "bpppb": float(rng.uniform(0.1, 2)),
            "psnr": float(rng.uniform(35, 60)),
            "max_abs_error": float(rng.uniform(10, 1000)),
        }
        for i in range(5000)
    ]
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
        filters=[("id", "==", "tile-01234")],
        storage_options=_options(hub),
    )
    assert found.column("id").to_pylist() == ["tile-01234"]
    assert found.column("path").to_pylist() == ["cubes/tile-01234.eocube"]
    gets = [r for r in hub.log_since(mark) if r.is_data]
    trace = "\n".join(iter_paths(gets))
    # the footer (pyarrow reads the last 64 kB, or the whole footer when larger), then
    # the one row group whose id statistics can hold the id
    footer, body = gets[0], gets[1:]
    assert footer.range == f"bytes={max(0, size - max(2**16, meta.serialized_size + 8))}-{size - 1}"
    assert len(body) == 1, trace
    assert body[0].range is not None
    first, last = map(int, body[0].range.split("=")[1].split("-"))
    assert any(start <= first and last < end for start, end in spans), trace
    assert footer.sent + body[0].sent < size / 2, trace


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
