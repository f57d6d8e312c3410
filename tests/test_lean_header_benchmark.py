"""benchmarks.lean_header: payloads measured against chunk format 13, results written."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks import lean_header


def test_lean_header_benchmark_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cubes = ["s2_l1c_eolearn_5x13", "stars_cmip3_tos_24x1x170x180"]
    argv = ["--cubes", *cubes, "--precision-cubes", cubes[0]]
    assert lean_header.main([*argv, "--out", str(tmp_path), "--corpus", str(data)]) == 0
    result = json.loads((tmp_path / "lean_header.json").read_text())
    rows = {r["cube"]: r for r in result["rows"]}
    assert list(rows) == cubes
    for row in rows.values():
        for crf in lean_header.CRFS:
            measured = row[f"crf{crf}"]
            assert measured["chunks"] >= 1
            assert 0 < measured["payload_now"] < measured["payload_v13"]
    # a rotated 13-band chunk of two streams: 24 bytes of names in the header, 15 in each
    # stream, 52 of component offsets, 4 of the step and 67 of Householder values; and
    # each stream's 80 bytes of parameter sets, less what they deflate to
    scene = rows[cubes[0]][f"crf{lean_header.CRFS[0]}"]
    assert scene["saved_per_chunk"] >= 24 + 2 * 15 + 52 + 4 + 67 + 2 * 40
    # one band, not rotated: the names and one stream's parameter sets
    sst = rows[cubes[1]][f"crf{lean_header.CRFS[0]}"]
    assert 24 + 15 + 40 <= sst["saved_per_chunk"] <= 24 + 15 + 80
    (precision,) = result["precision"]
    assert precision["cube"] == cubes[0]
    for crf in lean_header.PRECISION_CRFS:
        point = precision[f"crf{crf}"]
        # the same chunks with the axes at 16 bits: 90 values of 6 more bits each
        assert 0.8 < point["bytes_ratio"] < 1.02
        # where the coarser axes tip a chunk's trials to another rotation or layout, the
        # point moves along the rate-distortion curve (eolearn at crf 16: 0.83x the bytes,
        # -1.57 dB): within 0.3 dB of what its change of rate alone would give at 6.02 dB
        # per doubling of the bytes
        by_rate = 6.02 * math.log2(point["bytes_ratio"])
        assert min(by_rate, 0.0) - 0.3 < point["psnr_delta"] < max(by_rate, 0.0) + 0.3
    text = (tmp_path / "lean_header.md").read_text()
    assert "s2_l1c_eolearn_5x13" in text
    assert "Axis precision" in text
    assert (tmp_path / "lean_header.png").stat().st_size > 0
