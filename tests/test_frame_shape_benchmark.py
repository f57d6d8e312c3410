"""benchmarks.frame_shape: its codings of a chunk, and its table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import frame_shape


def test_frame_shape_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    code = frame_shape.main(
        [
            *("--cubes", "s2_l2a_openeo_gfmap_19x4x52x46", "--crfs", "8", "20", "32"),
            *("--out", str(tmp_path), "--corpus", str(data)),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "frame_shape.json").read_text())
    (row,) = result["rows"]
    assert row["shape"] == [19, 4, 52, 46]
    assert row["rule_transposes"]  # 52 x 46 px: 46 columns are padded to 64 upright
    assert row["mosaic_grid"] == [2, 1]  # 2392 px a date: two dates a frame
    curves = row["curves"]
    assert set(curves) == set(frame_shape.WAYS)
    for way in frame_shape.WAYS:
        assert len(curves[way]) == 3
        assert all(np.isfinite(p) for _, p in curves[way])
    # four different codings of the same chunk: not the same bytes ("rule" is
    # "transposed" here, "auto" one of "rule" and "mosaic" at each crf)
    ways = ("upright", "transposed", "ctu16", "mosaic")
    assert len({tuple(r for r, _ in curves[way]) for way in ways}) == 4
    assert curves["rule"] == curves["transposed"]
    assert set(row["gain_db"]) == set(frame_shape.BASELINE)
    assert "s2_l2a_openeo_gfmap_19x4x52x46" in (tmp_path / "frame_shape.md").read_text()
    assert (tmp_path / "frame_shape.png").stat().st_size > 0
