"""benchmarks/gpu_check.py runs on a machine without a GPU: it says so and times the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eocube.gpu import nvdec_available

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # runs the benchmark script end to end
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
    assert "cores, in flight" in run.stdout
    # the torch unpack runs on CPU tensors, checked bit for bit against decode_chunk
    assert "torch unpack, CPU tensors" in run.stdout
    assert "MISMATCH" not in run.stdout
    assert "dataset 8x64x64 windows" in run.stdout
    # what needs a GPU is said to be unmeasured, goals included
    assert "NVDEC                      NOT MEASURED (no GPU)" in run.stdout
    assert "default-profile chunk decode >= 10x one CPU core: NOT MEASURED" in run.stdout
    assert "datasets on the device >= 5x the CPU samples/s: NOT MEASURED" in run.stdout
