"""benchmarks.half_resolution: the resampling it measures, and its table, JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import half_resolution


def test_box_down_then_cubic_up_gives_back_a_linear_ramp_away_from_the_edges() -> None:
    y, x = np.meshgrid(np.arange(20.0), np.arange(24.0), indexing="ij")
    ramp = (3.0 * x - 2.0 * y + 7.0)[None, None]
    small = half_resolution.downsample(ramp)
    assert small.shape == (1, 1, 10, 12)
    back = half_resolution.upsample(small, 20, 24)
    assert back.shape == ramp.shape
    np.testing.assert_allclose(back[..., 3:-3, 3:-3], ramp[..., 3:-3, 3:-3], atol=1e-9)
    # odd sides: the edge is repeated, the output cropped back to the input's size
    odd = half_resolution.upsample(half_resolution.downsample(ramp[..., :19, :23]), 19, 23)
    assert odd.shape == (1, 1, 19, 23)


def test_half_resolution_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    code = half_resolution.main(
        [
            *("--cubes", "erainterim_uvz", "--dates", "1", "--max-values", "60000"),
            *("--crfs-full", "30", "38", "44", "--crfs-half", "16", "24", "32", "40"),
            *("--out", str(tmp_path), "--corpus", str(data)),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "half_resolution.json").read_text())
    (row,) = result["rows"]
    assert row["cube"] == "erainterim_uvz"
    # each curve has a point per crf, each with a finite PSNR
    assert len(row["full"]) == 3
    assert len(row["half"]) == 4
    assert all(np.isfinite(p) for _, p in row["full"] + row["half"])
    assert "erainterim_uvz" in (tmp_path / "half_resolution.md").read_text()
    assert (tmp_path / "half_resolution.png").stat().st_size > 0
