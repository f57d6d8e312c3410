"""The stores eocube writes are byte for byte those recorded (tests/identity/recorded.json).

The recording was made by the code before the module reorganisation of issue 15
(commit ``recorded_with.commit``); a refactoring must not change a byte. When the written
bytes are meant to change (a new format version, another default), record them again
deliberately: ``python tests/identity/stores.py OUT > tests/identity/recorded.json``
(keep ``recorded_with`` up to date). When the codec libraries differ from those of the
recording (``environment``), the recorded commit writes the stores again here, from a
git worktree, so that both sides use the same libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from identity.stores import environment, write_all

HERE = Path(__file__).parent
RECORDED = HERE / "identity" / "recorded.json"


def _recorded_here(tmp_path: Path, commit: str) -> dict[str, dict[str, str]]:
    """The hashes the recorded commit writes with this machine's libraries."""
    tree = tmp_path / "recorded-tree"
    subprocess.run(
        ["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(tree), commit],
        check=True,
        capture_output=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "identity" / "stores.py"), str(tmp_path / "old")],
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            text=True,
        )
        return dict(json.loads(done.stdout)["stores"])
    finally:
        subprocess.run(
            ["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )


def test_stores_are_byte_identical_to_the_recorded_ones(tmp_path: Path) -> None:
    recorded = json.loads(RECORDED.read_text())
    if recorded["environment"] == environment():
        expected = recorded["stores"]
    else:
        expected = _recorded_here(tmp_path, recorded["recorded_with"]["commit"])
    written = write_all(tmp_path / "new")
    assert set(written) == set(expected)
    assert len(written) >= 6  # three cube families, lossless, lossy, bounded, transposed
    for name, files in expected.items():
        differ = sorted(
            f for f in set(files) | set(written[name]) if files.get(f) != written[name].get(f)
        )
        assert not differ, f"{name}: these files changed: {differ}"
