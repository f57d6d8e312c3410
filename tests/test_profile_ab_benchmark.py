"""benchmarks.profile_ab: the side-by-side cost of a profile runs and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import profile_ab


def test_profile_ab_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    code = profile_ab.main(
        [
            "--cubes",
            "l8_ny18_014031",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
            "--corpus",
            str(data),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "profile_ab.json").read_text())
    (row,) = result["rows"]
    # a Landsat scene keeps the video: the default's PSNR and bytes (each profile name is
    # one byte of the chunk header, docs/format.md §6.15)
    assert row["profile"]["psnr"] == row["base"]["psnr"]
    assert row["profile"]["bpppb"] == row["base"]["bpppb"]
    assert row["write_ratio"] > 0
    assert row["read_ratio"] > 0
    assert "l8_ny18_014031" in (tmp_path / "profile_ab.md").read_text()
    assert (tmp_path / "profile_ab.png").stat().st_size > 0
