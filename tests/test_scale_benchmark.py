"""benchmarks/scale.py: its cube, its memory probe, and a quick run end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import scale


def test_cube_shape_is_whole_chunks_of_about_the_size_asked() -> None:
    shape = scale.cube_shape(2_800_000_000)
    t, bands, y, x = shape
    assert (bands, y, x) == (scale.BANDS, 1024, 1024)  # 2048 px would leave < 4 time chunks
    assert t % scale.INPUT_CHUNKS[0] == 0
    layer = 2 * scale.INPUT_CHUNKS[0] * bands * y * x  # the bytes of one time chunk
    assert 2.8e9 <= 2 * t * bands * y * x < 2.8e9 + layer
    assert scale.cube_shape(4 * 2**20, (8, scale.BANDS, 128, 128)) == (32, scale.BANDS, 128, 128)


def test_synthetic_cube_is_lazy_and_its_chunks_are_deterministic() -> None:
    cube = scale.synthetic_cube(4 * 2**20, (8, scale.BANDS, 128, 128))
    data = cube.reflectance.data
    assert data.chunksize == (8, scale.BANDS, 128, 128)
    assert data.numblocks == (4, 1, 1, 1)
    first = data.blocks[1].compute()
    assert np.array_equal(first, data.blocks[1].compute())
    assert not np.array_equal(first, data.blocks[2].compute())  # dates drift
    assert first.min() > 0
    assert first.max() <= 10000


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/clear_refs").exists(), reason="Linux /proc only")
def test_peak_rss_resets_and_follows_an_allocation() -> None:
    pid = os.getpid()
    assert scale.reset_peak_rss(pid)
    before = scale.peak_rss_bytes(pid)
    assert before is not None
    block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
    peak = scale.peak_rss_bytes(pid)
    assert peak is not None
    assert peak >= before + 60 * 2**20
    del block
    assert scale.reset_peak_rss(pid)
    after = scale.peak_rss_bytes(pid)
    assert after is not None
    assert after < peak - 50 * 2**20  # the mark was reset


class _Scheduler:
    """A stand-in for a distributed Client: which workers hold a task."""

    def __init__(self, holding: bool) -> None:
        self.holding = holding

    def processing(self, workers: list[str]) -> dict[str, list[str]]:
        return {w: ["encode-task"] if self.holding else [] for w in workers}

    def scheduler_info(self) -> dict[str, dict[str, dict[str, str]]]:
        return {"workers": {"w": {"status": "running"}}}


@pytest.mark.parametrize("holding", [True, False])
def test_a_worker_idle_with_a_task_is_taken_for_a_stalled_codec(holding: bool) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        watch = scale.WorkerWatch({"w": sleeper.pid}, 0.05, _Scheduler(holding), 0.5)
        with watch:
            time.sleep(1.5)
        if holding:  # killed, and said so
            assert sleeper.wait(timeout=5) == -signal.SIGKILL
            assert [s["worker"] for s in watch.stalls] == ["w"]
            assert watch.stalls[0]["tasks"] == ["encode-task"]
            assert watch.stalls[0]["status"] == "running"  # not paused: the codec
        else:  # idle for want of work: left alone
            assert sleeper.poll() is None
            assert watch.stalls == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_bad_arguments_are_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, named in (
        (["--workers", "1,x"], "--workers '1,x'"),
        (["--workers", "0"], "--workers '0': sizes must be >= 1"),
        (["--repeats", "0"], "--repeats 0"),
    ):
        with pytest.raises(SystemExit):
            scale.main(argv)
        assert named in capsys.readouterr().err


@pytest.mark.slow  # starts a local cluster
def test_quick_run_measures_every_variant_on_a_cluster(tmp_path: Path) -> None:
    results = scale.main(["--quick", "--workers", "2", "--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == {"scale.json", "scale.md", "scale.png"}
    assert json.loads((tmp_path / "scale.json").read_text()) == json.loads(json.dumps(results))
    limit = results["plan"]["memory_limit_mb"]
    for cluster, summary in zip(results["clusters"], results["summary"], strict=True):
        runs = {r["variant"]: r for r in cluster["runs"]}
        assert set(runs) == set(scale.VARIANTS)
        for run in runs.values():
            assert len(run["peak_rss_mb"]) == cluster["workers"]
            # a worker's peak is above its idle RSS (it encoded) and within its limit
            assert min(cluster["baseline_rss_mb"]) < max(run["peak_rss_mb"]) < limit
            assert not run["workers_lost"]
        # the same chunks encoded three times: the same payloads (the stored ones carry a
        # few bytes more each: checksum), and a store only for the writes
        encoded = runs[scale.ENCODE_ONLY]["payload_nbytes"]
        assert runs[scale.WRITE]["payload_nbytes"] == runs[scale.WRITE_MEASURED]["payload_nbytes"]
        assert 0 <= runs[scale.WRITE]["payload_nbytes"] - encoded <= 16 * cluster["chunks"]
        assert runs[scale.ENCODE_ONLY]["store_nbytes"] is None
        assert runs[scale.WRITE]["store_nbytes"] > runs[scale.WRITE]["payload_nbytes"]
        # only measure=True measures; a lossy encode of noisy data is neither exact nor bad
        assert runs[scale.WRITE]["psnr"] is None
        assert 30 < runs[scale.WRITE_MEASURED]["psnr"] < 80
        base = summary[scale.ENCODE_ONLY]["seconds"]
        for variant in (scale.WRITE, scale.WRITE_MEASURED):
            expected = summary[variant]["seconds"] / base - 1
            assert summary[variant]["overhead"] == pytest.approx(expected, abs=1e-3)
    markdown = (tmp_path / "scale.md").read_text()
    assert markdown.count("| measure=True |") == 1
    assert "beyond encode only" in markdown
