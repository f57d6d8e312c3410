"""benchmarks.rd_ab: an encoder against an earlier one at equal rate, and the worker
runner it shares with benchmarks.version_ab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import rd_ab
from benchmarks.common import run_in_checkout

DATA = Path(__file__).parent / "data"


def test_a_checkout_against_itself_codes_the_same_bytes(tmp_path: Path) -> None:
    argv = [
        "--baseline", str(rd_ab.ROOT), "--cubes", "s2_l2a_openeo_gfmap_19x4x52x46",
        "--dates", "3", "--crfs", "20", "30", "--out", str(tmp_path),
        "--scratch", str(tmp_path / "scratch"), "--corpus", str(DATA),
    ]  # fmt: skip
    assert rd_ab.main(argv) == 0
    (row,) = json.loads((tmp_path / "rd_ab.json").read_text())["rows"]
    assert row["bytes_ratio"] == [1.0, 1.0]
    assert row["mean_db"] == 0.0
    assert len(row["now"]) == 2
    assert row["now"][0][1] > row["now"][1][1]  # crf 20 codes finer than crf 30
    assert (tmp_path / "rd_ab.png").stat().st_size > 0


def test_a_worker_that_keeps_dying_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError, match="died 2 times"):
        run_in_checkout(rd_ab.ROOT, "import os; os.abort()", [], attempts=2)
    assert capsys.readouterr().err.count("the worker died") == 2


def test_a_worker_importing_another_eocube_is_refused(tmp_path: Path) -> None:
    script = 'import json; print(json.dumps({"module": "/elsewhere/eocube/__init__.py"}))'
    with pytest.raises(RuntimeError, match="imported eocube from /elsewhere"):
        run_in_checkout(rd_ab.ROOT, script, [])
