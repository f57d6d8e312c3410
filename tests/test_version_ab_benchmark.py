"""benchmarks.version_ab: two checkouts side by side, each writing and reading its own store."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import version_ab


def test_a_checkout_against_itself_writes_the_same_bytes(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    argv = [
        "--baseline", str(version_ab.ROOT), "--cubes", "s2_l2a_openeo_gfmap_19x4x52x46",
        "--repeats", "1", "--out", str(tmp_path), "--scratch", str(tmp_path / "scratch"),
        "--corpus", str(data),
    ]  # fmt: skip
    assert version_ab.main(argv) == 0
    (row,) = json.loads((tmp_path / "version_ab.json").read_text())["rows"]
    assert row["bytes_ratio"] == 1.0
    assert row["before"]["read_s"] > 0
    assert row["now"]["warm_s"] > 0
    assert "s2_l2a_openeo_gfmap_19x4x52x46" in (tmp_path / "version_ab.md").read_text()


def test_both_versions_write_with_the_profile_asked(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    source = data / "s2_l2a_openeo_gfmap_19x4x52x46.nc"
    sizes = {
        profile: version_ab.run_once(version_ab.ROOT, source, tmp_path / "s.zarr", profile)[
            "nbytes"
        ]
        for profile in (None, "hevc-12bit-444", "h264-10bit")
    }
    assert sizes[None] == sizes["hevc-12bit-444"]  # the default profile
    assert sizes["h264-10bit"] != sizes[None]
