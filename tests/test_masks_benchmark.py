"""benchmarks.masks: the runs coding against zlib runs and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import masks as masks_benchmark


def test_masks_benchmark_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cubes = ["l8_ny18_014031", "stars_cmip3_tos_24x1x170x180", "s2_l2a_openeo_gfmap_12x5x66x64"]
    argv = ["--cubes", *cubes, "--repeats", "1", "--out", str(tmp_path), "--corpus", str(data)]
    assert masks_benchmark.main(argv) == 0
    rows = json.loads((tmp_path / "masks.json").read_text())["rows"]
    # the Sentinel-2 cube has no NaN or nodata: left out
    assert [r["cube"] for r in rows] == cubes[:2]
    for row in rows:
        assert row["runs_bytes"] < row["zlib_bytes"]
        assert row["dec_runs_ms"] > 0
        assert row["invalid"] > 0.3
    assert "stars_cmip3_tos_24x1x170x180" in (tmp_path / "masks.md").read_text()
    assert (tmp_path / "masks.png").stat().st_size > 0
