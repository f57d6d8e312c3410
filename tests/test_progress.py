"""Progress of long work (eocube.progress) and the eocube.* logs of verify, publish, caches.

Progress lines are read from stderr (pytest's capture is no terminal, so the automatic
mode is ``lines``) or from the ``eocube.progress`` logger when logging shows INFO.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import types
from collections.abc import Hashable, Iterator
from pathlib import Path

import dask
import dask.array as da
import distributed
import pytest
import xarray as xr
from cubes import open_cube
from hub_server import HubServer

import eocube
from eocube import progress
from eocube.cache import DiskBlockCache
from eocube.hub import publish
from eocube.hubfs import RangeHfFileSystem
from eocube.progress import ENVIRONMENT_VARIABLE, LineCadence, Progress, track
from eocube.verify import stored_chunks, verify_store

TOKEN = "hf_eocube_test_token"
CHUNKS: dict[Hashable, int] = {"time": 8, "y": 16, "x": 32}
STORED_CHUNKS = 2 * 3 * 3  # 12 dates x 33 x 81 px (bands in every chunk)


def _lines(text: str) -> list[str]:
    assert "\r" not in text  # a job log gets whole lines, not a redrawn bar
    return [line for line in text.splitlines() if line.startswith("eocube: ")]


def _counts(lines: list[str]) -> list[int]:
    return [int(re.search(r" (\d+)/\d+ ", line).group(1)) for line in lines]  # type: ignore[union-attr]


def _slow_increment(i: int, delay: float) -> int:
    time.sleep(delay)
    return i + 1


@pytest.fixture(autouse=True)
def _automatic_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return open_cube("stars_bcsd_obs_12x2x33x81")


@pytest.fixture(scope="module")
def store(cube: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "bcsd.eocube"
    eocube.to_eocube(cube, path, crf=16, chunks=CHUNKS)
    return path


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer(token=TOKEN) as server:
        yield server


def test_local_compute_returns_what_dask_does_and_counts_every_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks = [dask.delayed(_slow_increment)(i, 0.001) for i in range(5)]
    tasks += ["not dask", da.arange(10, chunks=3).sum()]  # an array's graph is renamed
    results = progress.compute(tasks, show=True, label="encode", unit="shards")
    assert results == dask.compute(*tasks)
    lines = _lines(capsys.readouterr().err)
    counts = _counts(lines)
    assert counts == sorted(counts)
    assert counts[0] > 0  # no line before anything is done
    assert counts[-1] == 6  # the five delayed and the array; the string is not a task
    assert len(set(counts)) > 2  # counted as they finished, not only at the end
    assert lines[-1].startswith("eocube: encode 6/6 shards (100%), ")


def test_distributed_compute_counts_futures_and_keeps_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def on_worker(i: int, delay: float) -> tuple[int, bool]:
        time.sleep(delay)
        try:
            distributed.get_worker()
        except ValueError:
            return i, False
        return i, True

    with (
        distributed.LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        # the first tasks sleep longest, so they finish last: results must keep order
        tasks = [dask.delayed(on_worker)(i, 0.02 * (6 - i)) for i in range(6)]
        results = progress.compute(tasks, show=True, label="encode", unit="shards")
        assert results == tuple((i, True) for i in range(6))  # run on the cluster
        counts = _counts(_lines(capsys.readouterr().err))
        assert counts[-1] == 6
        assert len(set(counts)) > 2

        def fail(i: int) -> int:
            raise KeyError(f"shard {i}")

        with pytest.raises(KeyError, match="shard 3"):
            progress.compute([dask.delayed(fail)(3)], show=True, label="encode")
        # work that fails before any line was written adds none: the error says it all
        assert _lines(capsys.readouterr().err) == []


def test_errors_inside_tasks_propagate(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(i: int) -> int:
        raise KeyError(f"shard {i}")

    tasks = [dask.delayed(_slow_increment)(0, 0.0), dask.delayed(fail)(7)]
    with pytest.raises(KeyError, match="shard 7"):
        progress.compute(tasks, show=True, label="encode", unit="shards")
    lines = _lines(capsys.readouterr().err)
    assert lines == [] or lines[-1].endswith(", stopped")  # the first task may be done

    # once a line was written, the last says the work stopped
    def stop_half_way() -> None:
        with track(4, label="encode", unit="shards") as bar:
            bar.advance(2)
            raise KeyError("shard 7")

    with pytest.raises(KeyError, match="shard 7"):
        stop_half_way()
    assert _lines(capsys.readouterr().err)[-1].endswith(", stopped")
    with pytest.raises(KeyError, match="shard 7"):
        progress.compute(tasks, show=False, label="encode")


def test_lines_go_to_the_logger_when_logging_shows_them(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eocube.progress")
    with track(4, label="verify", unit="chunks") as bar:
        bar.advance(4)
    assert capsys.readouterr().err == ""  # never both
    messages = [r.getMessage() for r in caplog.records if r.name == "eocube.progress"]
    assert messages == ["eocube: verify 4/4 chunks (100%), 0.0 s"]
    assert messages[-1].startswith("eocube: verify 4/4 chunks (100%), ")


@pytest.mark.parametrize(("forced", "show"), [("off", True), ("lines", False)])
def test_off_writes_nothing(
    forced: str,
    show: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, forced)
    caplog.set_level(logging.DEBUG, logger="eocube.progress")
    tasks = [dask.delayed(_slow_increment)(i, 0.0) for i in range(3)]
    assert progress.compute(tasks, show=show, label="encode") == (1, 2, 3)
    with track(10, label="publish", unit="B", show=show) as bar:
        bar.advance(10)
    assert bar.mode == "off"
    assert capsys.readouterr() == ("", "")
    assert not [r for r in caplog.records if r.name == "eocube.progress"]


def test_mode_follows_the_output_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress.mode(True, io.StringIO()) == "lines"
    assert progress.mode(True, Terminal()) == "bar"
    assert progress.mode(False, Terminal()) == "off"
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})  # a Jupyter notebook's shell
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert progress.mode(True, io.StringIO()) == "bar"  # no terminal, yet a bar (a widget)
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "LINES")
    assert progress.mode(True, Terminal()) == "lines"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "bar")
    assert progress.mode(True, io.StringIO()) == "bar"
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "yes")
    with pytest.raises(ValueError, match=r"EOCUBE_PROGRESS='yes' is not one of auto, bar"):
        progress.mode(True)


def test_forced_bar_draws_tqdm_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, "bar")
    tasks = [dask.delayed(_slow_increment)(i, 0.0) for i in range(3)]
    assert progress.compute(tasks, show=True, label="encode", unit="shards") == (1, 2, 3)
    err = capsys.readouterr().err
    assert "eocube: encode" in err
    assert "3/3" in err


def test_line_cadence_steps_and_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    quarters = Progress(100, label="encode", unit="shards", cadence=LineCadence(4, 1e9))
    with quarters:
        for _ in range(100):
            quarters.advance()
    assert _counts(_lines(capsys.readouterr().err)) == [25, 50, 75, 100]
    every_time = Progress(5, label="encode", unit="shards", cadence=LineCadence(1, 0.0))
    with every_time:
        for _ in range(5):
            every_time.advance()
    assert _counts(_lines(capsys.readouterr().err)) == [1, 2, 3, 4, 5]


def test_bytes_threads_and_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    with track(3_500_000, label="publish", unit="B") as bar:
        workers = [threading.Thread(target=bar.advance, args=(700_000,)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert bar.done == 3_500_000  # six advances, held at the total
    assert _lines(capsys.readouterr().err)[-1].startswith("eocube: publish 3.5/3.5 MB (100%), ")
    with pytest.raises(ValueError, match="total must not be negative, got -1"):
        track(-1, label="verify")
    with pytest.raises(ValueError, match="LineCadence steps must be at least 1, got 0"):
        LineCadence(steps=0)


def test_verify_counts_the_stored_chunks_and_logs_each_variable(
    store: Path,
    cube: xr.Dataset,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eocube.verify")
    with eocube.open_dataset(store) as stored:
        assert stored_chunks(stored.data) == STORED_CHUNKS
        assert verify_store(stored, cube, progress=True)["ok"]
        lines = _lines(capsys.readouterr().err)
        assert lines[-1].startswith(f"eocube: verify {STORED_CHUNKS}/{STORED_CHUNKS} chunks")
        assert _counts(lines) == [STORED_CHUNKS // 2, STORED_CHUNKS]  # a slab at a time
        assert re.fullmatch(
            r"verify data: OK, PSNR [\d.]+ dB, max abs error .+", caplog.messages[-1]
        )

        # a source of another shape fails before any chunk is read: still counted to the end
        result = verify_store(stored, cube.isel(x=slice(1, None)), progress=True)
        assert not result["ok"]
        assert _lines(capsys.readouterr().err)[-1].startswith(
            f"eocube: verify {STORED_CHUNKS}/{STORED_CHUNKS} chunks"
        )
        assert caplog.messages[-1].startswith("verify data: FAILED: shape ")


def test_publish_shows_bytes_and_logs_parts(
    hub: HubServer,
    store: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="eocube.hub")
    files = sorted(p for p in store.rglob("*") if p.is_file())
    nbytes = sum(p.stat().st_size for p in files)
    publish(store, "eocube/progress", endpoint=hub.url, token=TOKEN, progress=True)
    lines = _lines(capsys.readouterr().err)
    assert lines[-1].startswith(f"eocube: publish {nbytes / 1e3:.1f}/{nbytes / 1e3:.1f} kB")
    assert lines[-1].startswith(f"eocube: publish {nbytes / 1e3:.1f}/{nbytes / 1e3:.1f} kB (100%)")
    assert f"{len(files)} files, {nbytes} bytes, in 1 parts" in caplog.messages[0]
    assert re.fullmatch(
        rf"part 1/1: bcsd.eocube: {len(files)} files sent \({nbytes} bytes\), 0 unchanged, "
        r"0 deleted; [0-9a-f]{40} is the head of main",
        caplog.messages[-1],
    )

    caplog.clear()
    publish(store, "eocube/progress", endpoint=hub.url, token=TOKEN)  # nothing new
    assert capsys.readouterr().err == ""  # progress=False by default
    unchanged = [m for m in caplog.messages if m.endswith("unchanged on the hub, not sent")]
    assert len(unchanged) == len(files)  # each at DEBUG
    assert caplog.messages[-1] == (
        f"part 1/1: bcsd.eocube: all {len(files)} files unchanged on the hub, no commit"
    )


def test_hub_reads_and_block_cache_evictions_are_logged(
    hub: HubServer, store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(store, "eocube/progress-read", endpoint=hub.url, token=TOKEN)
    caplog.set_level(logging.DEBUG, logger="eocube")
    fs = RangeHfFileSystem(
        endpoint=hub.url, token=TOKEN, cache_storage=tmp_path / "blocks", cache_block_size=64
    )
    path = "datasets/eocube/progress-read/bcsd.eocube/zarr.json"
    fs.cat_file(path, start=0, end=100)
    fs.cat_file(path, start=0, end=200)
    fs.cat_file(path, start=-16)
    messages = [r.getMessage() for r in caplog.records if r.name == "eocube.hubfs"]
    assert f"fetched blocks 0-1 of {path} (128 bytes)" in messages
    assert f"2 blocks of {path} served by the block cache" in messages
    assert f"fetched the last 16 bytes of {path}" in messages

    blocks = DiskBlockCache(tmp_path / "small", max_bytes=10)
    for i in range(3):
        blocks.put("key", i, bytes(6))
    evictions = [r for r in caplog.records if r.name == "eocube.cache"]
    assert evictions
    assert evictions[-1].levelno == logging.DEBUG
    assert re.fullmatch(
        r"block cache .+ held 12 bytes \(budget 10\): evicted 1 blocks, 6 bytes left",
        evictions[-1].getMessage(),
    )
    assert blocks.nbytes == 6
