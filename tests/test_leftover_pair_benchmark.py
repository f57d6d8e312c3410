"""benchmarks.leftover_pair: the two ways of coding two leftover bands side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import leftover_pair


def test_leftover_pair_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    code = leftover_pair.main(
        [
            *("--cubes", "s2_l2a_openeo_gfmap_19x4x52x46:6:2,3", "--crfs", "12", "24", "36"),
            *("--out", str(tmp_path), "--corpus", str(data), "--no-alternatives"),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "leftover_pair.json").read_text())
    [(spec, cube)] = result["cubes"].items()
    assert cube["shape"] == [6, 2, 52, 46]
    curves = cube["curves"]
    assert {q["layout"] for q in curves["off"]} == {"planar3"}
    assert {q["layout"] for q in curves["always"]} == {"planar3-pair"}
    # auto's point at each crf is one of the two ways', byte for byte the better's
    for auto, off, pair in zip(curves["auto"], curves["off"], curves["always"], strict=True):
        twin = pair if auto["layout"] == "planar3-pair" else off
        assert auto["bpppb"] == twin["bpppb"]
        assert auto["psnr"] == twin["psnr"]
    assert spec.split(":")[0] in (tmp_path / "leftover_pair.md").read_text()
    assert (tmp_path / "leftover_pair.png").stat().st_size > 0


def test_alternative_layouts_compare_at_equal_rate() -> None:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[:32, :40]
    dates = [1000 + 300 * np.sin((x + 3 * t) / 6) * np.cos(y / 7) for t in range(6)]
    block = (np.stack(dates)[:, None] + rng.normal(0, 5, (6, 1, 32, 40))).astype(np.uint16)
    for way in ("one band in a 4:4:4 frame", "three dates per 4:4:4 frame"):
        mean, diffs = leftover_pair.alternative(block, way, [10, 20, 30, 40])
        assert diffs, way  # the sweeps overlap
        assert np.isfinite(mean)
        assert mean == np.mean(diffs)
