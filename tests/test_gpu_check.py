"""benchmarks/gpu_check.py runs on a machine without a GPU: it says so and times the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eocube.gpu import nvdec_available

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(nvdec_available(), reason="a GPU is present: run benchmarks/gpu_check.py")
def test_gpu_check_without_gpu_reports_cpu_figures() -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--budget", "0.02"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no GPU" in run.stdout
    for profile in ("hevc-12bit-444", "hevc-12bit-420-luma", "hevc-lossless"):
        assert f"{profile} " in run.stdout
    assert "CPU 1 thread(s)" in run.stdout
