"""benchmarks.klt_basis: the band rotations side by side run and write their results."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import klt_basis


def test_klt_basis_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    code = klt_basis.main(
        [
            *("--cubes", "s2_l1c_eolearn_5x13", "--crfs", "0", "12"),
            *("--out", str(tmp_path), "--corpus", str(data)),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "klt_basis.json").read_text())
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {klt_basis.DETAIL, klt_basis.CHOICE}
    # 13 bands of 5 dates: the detail axes code it better, and the choice takes them
    assert rows[klt_basis.CHOICE]["mean_db"] > 0.5
    assert rows[klt_basis.CHOICE]["db_at_points"] == rows[klt_basis.DETAIL]["db_at_points"]
    assert "s2_l1c_eolearn_5x13" in (tmp_path / "klt_basis.md").read_text()
    assert (tmp_path / "klt_basis.png").stat().st_size > 0
