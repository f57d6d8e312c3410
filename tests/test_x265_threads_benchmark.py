"""benchmarks.x265_threads: eocube's x265 threading against x265's own, results written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import x265_threads
from eocube import video


def test_x265_threads_benchmark_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cube = "stars_cmip3_tos_24x1x170x180"  # 170 x 180 px frames: x265's pool ran WPP rows
    argv = ["--cubes", cube, "absent_cube", "--repeats", "1", "--corpus", str(data)]
    argv += ["--large-chunk-cubes", "absent_scene", "landsat7_rgb_byte"]
    assert x265_threads.main([*argv, "--out", str(tmp_path)]) == 0
    assert video._X265_THREADING == {"pools": "none", "frame-threads": "1"}  # put back
    result = json.loads((tmp_path / "x265_threads.json").read_text())
    (row,) = result["rows"]  # the absent cube is skipped
    assert row["cube"] == cube
    # without WPP the bitstream differs, and each variant decodes to its own values
    assert not row["same_values"]
    assert 0.9 < row["bytes_ratio"] < 1.0
    assert abs(row["psnr"]["eocube"] - row["psnr"]["x265 own"]) < 0.2
    assert row["write_ratio"] > 0
    assert row["read_ratio"] > 0
    # one large chunk of the first scene found, with and without x265's pool (WPP)
    no_wpp, wpp = result["large_chunk"]
    assert (no_wpp["cube"], no_wpp["variant"]) == ("landsat7_rgb_byte", "no WPP (default)")
    assert wpp["variant"] == "WPP (x265's pool)"
    assert no_wpp["bytes"] != wpp["bytes"]
    text = (tmp_path / "x265_threads.md").read_text()
    assert f"| {cube} |" in text
    assert "One large chunk" in text
    assert (tmp_path / "x265_threads.png").stat().st_size > 0
