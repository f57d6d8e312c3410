"""benchmarks.compact_header: header and stream fields measured both ways, results written."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import compact_header


def test_compact_header_benchmark_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    cubes = ["s2_l2a_openeo_gfmap_19x4x52x46", "stars_cmip3_tos_24x1x170x180"]
    argv = ["--cubes", *cubes, "--out", str(tmp_path), "--corpus", str(data)]
    assert compact_header.main(argv) == 0
    rows = json.loads((tmp_path / "compact_header.json").read_text())["rows"]
    assert [r["cube"] for r in rows] == cubes
    for row in rows:
        for crf in compact_header.CRFS:
            measured = row[f"crf{crf}"]
            assert measured["chunks"] >= 1
            # sizes as varints, band ranges in the dtype, start codes once: smaller
            assert 0 < measured["payload_now"] < measured["payload_before"]
            assert 0 < measured["saved_share"] < 0.5
    # 4 uint16 bands take 4 x 4 bytes of ranges where 4 x 16 of maps were, and 19 dates
    # of HEVC packets share their start code
    gfmap = rows[0][f"crf{compact_header.CRFS[0]}"]
    assert gfmap["saved_per_chunk"] >= 48 + 4 * 10
    assert "s2_l2a_openeo_gfmap_19x4x52x46" in (tmp_path / "compact_header.md").read_text()
    assert (tmp_path / "compact_header.png").stat().st_size > 0
