"""benchmarks.rate_control: target_bpppb writes measured in a fresh process, results written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import rate_control


def test_rate_control_benchmark_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cube = "s2_l2a_openeo_gfmap_12x5x66x64"
    argv = ["--cubes", cube, "absent_cube", "--rates", "0.5", "--corpus", str(data)]
    argv += ["--out", str(tmp_path), "--scratch", str(tmp_path / "scratch")]
    assert rate_control.main(argv) == 0
    result = json.loads((tmp_path / "rate_control.json").read_text())
    (row,) = result["rows"]  # the absent cube is skipped
    assert (row["cube"], row["kind"], row["target"]) == (cube, "bpppb", 0.5)
    write = row["now"]
    assert 1 <= write["passes"] <= 3
    assert write["met"] == (abs(write["bpppb"] / 0.5 - 1) <= rate_control.TOLERANCE)
    # a write that misses says so
    assert write["met"] or write["warned"]
    assert "before" not in row  # no baseline given
    text = (tmp_path / "rate_control.md").read_text()
    assert f"| {cube} | 0.5 |" in text
    assert (tmp_path / "rate_control.png").stat().st_size > 0


def test_rate_control_benchmark_measures_psnr_targets(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cube = "s2_l2a_openeo_gfmap_12x5x66x64"
    argv = ["--cubes", cube, "--psnr", "45", "--corpus", str(data), "--out", str(tmp_path)]
    argv += ["--scratch", str(tmp_path / "scratch")]
    assert rate_control.main(argv) == 0
    result = json.loads((tmp_path / "psnr_control.json").read_text())
    (row,) = result["rows"]
    assert (row["kind"], row["target"]) == ("psnr", 45.0)
    write = row["now"]
    assert write["psnr"] is not None
    assert write["met"] == (write["psnr"] >= 45.0)
    assert write["met"] or write["warned"]
    text = (tmp_path / "psnr_control.md").read_text()
    assert f"| {cube} | 45 |" in text
    assert (tmp_path / "psnr_control.png").stat().st_size > 0
