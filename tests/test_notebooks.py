"""notebooks/train.ipynb runs end to end (nbclient) and is kept in git without outputs.

(notebooks/quickstart.ipynb has its own test, tests/test_quickstart_notebook.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("torch")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "train.ipynb"


def test_train_notebook_losses_agree() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, "strip outputs before committing"
            assert cell.execution_count is None, "strip outputs before committing"
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # a failed assertion in the notebook raises CellExecutionError
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "held-out loss: eocube" in printed
    assert "relative difference" in printed
