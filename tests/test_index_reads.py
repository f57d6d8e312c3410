"""Shard indexes read alone: ``eocube info`` and ``resume=True`` move index bytes, not shards.

Over the hub double (tests/hub_server.py logs every request and the bytes it sent) and
the local S3 server (bytes counted from the responses of s3fs's ``get_object`` calls),
the payload sizes of ``info`` and the intact-shard check of a resume each cost one
suffix request per shard: the bytes moved stay under :data:`SHARE` of the store's,
plus :data:`ALLOWANCE` for the metadata and coordinates read to open it.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
import zarr
from cubes import open_cube
from hub_server import HubServer, iter_paths
from s3_server import S3Server

import eocube
from eocube import cli, lifecycle, resume
from eocube.errors import IncompleteStoreError
from eocube.hub import publish
from eocube.hubfs import RangeHfFileSystem
from eocube.layout import STAGING
from eocube.shards import ShardIndex, chunks_per_shard, payload_nbytes, shard_key
from eocube.testing import shard_objects

TOKEN = "hf_eocube_test_token"
CUBE = "s2_l2a_worldcereal_118x4x64x64"
CHUNKS: dict[Hashable, int] = {
    "time": 2,
    "y": 32,
    "x": 32,
}  # 4 shards of 32 dates, about 0.5 MB each
SHARE = 0.05
"""Bytes moved by ``info`` or a resume, at most, as a share of the store's bytes."""
ALLOWANCE = 32_000
"""Bytes allowed on top: the root zarr.json (read twice) and the coordinates."""


def _nbytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _index_nbytes(store: Path) -> int:
    """Bytes of the index of one shard of the store's cube variable."""
    return ShardIndex.nbytes(math.prod(chunks_per_shard(zarr.open_group(store)["data"])))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index") / "cube.eocube"
    eocube.to_eocube(open_cube(CUBE), path, lossless=True, chunks=CHUNKS, measure=False)
    assert len(shard_objects(path)) >= 4, "the test needs several shards"
    return path


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def published(hub: HubServer, store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The ``hf://`` URL of ``store`` published to the hub double."""
    folder = tmp_path_factory.mktemp("release")
    shutil.copytree(store, folder / "cubes" / store.name)
    sha = publish(folder, "eocube/index-reads", endpoint=hub.url, token=TOKEN)
    return f"hf://datasets/eocube/index-reads@{sha}/cubes/{store.name}"


def _info(url: str, options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Any:
    pairs = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in options.items()]
    argv = ["info", url, "--json", *(a for p in pairs for a in ("--storage-option", p))]
    capsys.readouterr()
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("cached", [False, True], ids=["exact", "block-cache"])
def test_info_over_hf_reads_indexes_alone(
    hub: HubServer,
    published: str,
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cached: bool,
) -> None:
    options: dict[str, Any] = {"endpoint": hub.url, "token": TOKEN}
    if cached:
        options["cache_storage"] = str(tmp_path / "cache")
    local = _info(str(store), {}, capsys)

    RangeHfFileSystem.clear_instance_cache()  # no listing left from another test
    mark = len(hub.requests)
    remote = _info(published, options, capsys)
    log = hub.log_since(mark)
    trace = "\n".join(iter_paths(log))

    assert (
        remote["variables"]["data"]["payload_bytes"] == local["variables"]["data"]["payload_bytes"]
    )
    moved = sum(r.sent for r in log if r.is_data)
    assert moved <= SHARE * _nbytes(store) + ALLOWANCE, trace
    shard_reads = [r for r in log if r.is_data and "/data/c/" in r.path]
    assert len(shard_reads) == len(shard_objects(store)), trace
    assert all(r.range and r.sent == _index_nbytes(store) for r in shard_reads), trace
    if cached:  # the indexes were kept as read: asked again, they cost no request
        RangeHfFileSystem.clear_instance_cache()
        mark = len(hub.requests)
        _info(published, options, capsys)
        assert not [r for r in hub.log_since(mark) if "/data/c/" in r.path]


def test_resume_checks_over_hf_read_indexes_alone(
    hub: HubServer, published: str, store: Path
) -> None:
    # what resume=True reads of a store it finishes: whether each shard is intact, then
    # the payload sizes for its report, through the store a write opens on an hf:// URL
    options = {"endpoint": hub.url, "token": TOKEN}
    local = zarr.open_group(store, mode="r")["data"]
    assert isinstance(local, zarr.Array)
    per_shard = math.prod(chunks_per_shard(local))
    grid = [math.ceil(n / s) for n, s in zip(local.shape, local.shards or (), strict=True)]

    mark = len(hub.requests)
    real = lifecycle.store_path(published, options)
    remote = zarr.open_group(real, mode="r")["data"]
    intact = [
        resume.shard_intact(real.store, shard_key(remote, idx), per_shard)
        for idx in itertools.product(*map(range, grid))
    ]
    payload = payload_nbytes(remote)
    log = hub.log_since(mark)
    trace = "\n".join(iter_paths(log))

    assert intact == [True] * len(shard_objects(store))
    assert payload == payload_nbytes(local)
    assert sum(r.sent for r in log if r.is_data) <= SHARE * _nbytes(store) + ALLOWANCE, trace
    shard_reads = [r for r in log if r.is_data and "/data/c/" in r.path]
    assert all(r.sent == _index_nbytes(store) for r in shard_reads), trace


class S3Bytes:
    """Bytes of the objects s3fs fetched (``get_object`` responses), by key."""

    def __init__(self) -> None:
        self.fetched: list[tuple[str, int]] = []

    def total(self) -> int:
        return sum(n for _, n in self.fetched)


@pytest.fixture
def s3_bytes(monkeypatch: pytest.MonkeyPatch) -> S3Bytes:
    counter = S3Bytes()
    call = s3fs.S3FileSystem._call_s3

    async def counted(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        out = await call(self, method, *args, **kwargs)
        if method == "get_object":
            counter.fetched.append((kwargs.get("Key", ""), int(out.get("ContentLength", 0))))
        return out

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return counter


def _upload(s3: S3Server, store: Path) -> str:
    url = f"{s3.bucket()}/{store.name}"
    s3.filesystem().put(str(store), url.removeprefix("s3://"), recursive=True)
    return url


def test_info_over_s3_reads_indexes_alone(
    s3: S3Server, store: Path, s3_bytes: S3Bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _upload(s3, store)
    s3_bytes.fetched.clear()
    info = _info(url, s3.storage_options, capsys)

    assert info["complete"] is True
    assert s3_bytes.total() <= SHARE * _nbytes(store) + ALLOWANCE, s3_bytes.fetched
    shard_reads = [n for key, n in s3_bytes.fetched if "/data/c/" in key]
    assert shard_reads == [_index_nbytes(store)] * len(shard_objects(store))


@pytest.mark.slow  # a killed writer over a local S3 server
def test_resume_over_s3_reads_indexes_of_intact_shards(
    s3: S3Server, store: Path, s3_bytes: S3Bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cube = open_cube(CUBE)
    url = f"{s3.bucket()}/killed.eocube"
    store_object = s3fs.S3FileSystem._pipe_file
    stored: list[str] = []

    async def fail_after_two_shards(self: Any, path: str, data: bytes, **kwargs: Any) -> Any:
        if "/data/c/" in path:
            if len(stored) == 2:
                raise ConnectionError("connection lost (simulated)")
            await store_object(self, path, data, **kwargs)
            stored.append(path)
            return None
        return await store_object(self, path, data, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(s3fs.S3FileSystem, "_pipe_file", fail_after_two_shards)
        with pytest.raises(ConnectionError):
            eocube.to_eocube(
                cube, url, lossless=True, chunks=CHUNKS, storage_options=s3.storage_options
            )
    with pytest.raises(IncompleteStoreError):
        eocube.open_dataset(url, storage_options=s3.storage_options)

    s3_bytes.fetched.clear()
    report = eocube.to_eocube(
        cube,
        url,
        lossless=True,
        chunks=CHUNKS,
        storage_options=s3.storage_options,
        resume=True,
        measure=False,
    )
    assert report.control == "resume"
    shard_reads = [(k, n) for k, n in s3_bytes.fetched if "/data/c/" in k]
    assert len(stored) == 2, "the write failed before it stored two shards"
    assert shard_reads, "no shard index was read"
    assert all(n == _index_nbytes(store) for _, n in shard_reads), shard_reads
    # the chunks staged before the failure are read back once each rather than encoded
    # again: payloads the resume needs, not the cost of finding the intact shards
    staged = [k for k, _ in s3_bytes.fetched if STAGING in k]
    assert len(staged) == len(set(staged))
    moved = sum(n for k, n in s3_bytes.fetched if STAGING not in k)
    assert moved <= SHARE * report.nbytes + ALLOWANCE, s3_bytes.fetched
