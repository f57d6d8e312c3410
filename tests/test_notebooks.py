"""The notebooks run end to end, and are committed with their outputs (notebooks/run.py).

Each notebook is executed once per test session, from the committed file into memory (the
committed file is not touched; the kernel's working directory is notebooks/, where the
notebooks find the sample cube). The committed notebooks are then checked without running
anything: outputs present, figures equal to docs/images/, nothing volatile left, and their
printed text laid out as a fresh run prints it (so that they are not stale).
After changing a notebook or what it prints: ``python notebooks/run.py``.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

# each notebook runs in a kernel: `make test-slow` (CI runs it)
pytestmark = pytest.mark.slow

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
IMAGES = REPO / "docs" / "images"
NAMES = ["quickstart", "train"]
RERUN = "run `python notebooks/run.py` and commit the notebooks and docs/images/"
CELL_TIMEOUT = 600  # seconds
# before a cell would time out, the kernel's threads are printed (where it hangs) and it is
# stopped: a hang is then reported with its stacks instead of a bare timeout
STACKS_AFTER = int(os.environ.get("EOCUBE_TEST_STACKS_AFTER", CELL_TIMEOUT - 60))


def _load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebooks_run", NOTEBOOKS / "run.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_run()


def committed(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.text
        for cell in code_cells(nb)
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def pngs(nb: nbformat.NotebookNode) -> list[bytes]:
    return [
        base64.b64decode(out.data["image/png"])
        for cell in code_cells(nb)
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]


@pytest.fixture(scope="module")
def executed() -> Callable[[str], nbformat.NotebookNode]:
    """``executed(name)``: the notebook run end to end, once per module (cached)."""
    cache: dict[str, nbformat.NotebookNode] = {}

    def get(name: str) -> nbformat.NotebookNode:
        if name == "train":
            pytest.importorskip("torch")
        if name not in cache:
            nb = committed(name)
            for cell in code_cells(nb):  # start from a blank copy
                cell.outputs, cell.execution_count = [], None
            # a failing cell (the notebooks' own assertions included) raises CellExecutionError
            client = nbclient.NotebookClient(
                nb,
                timeout=CELL_TIMEOUT,
                kernel_name="python3",
                resources={"metadata": {"path": str(NOTEBOOKS)}},
            )
            watchdog = _Watchdog(client)
            client.on_cell_execute = watchdog.cell_starts
            try:
                client.execute(env={**os.environ, "PYTHONFAULTHANDLER": "1"})
            finally:
                watchdog.cancel()
            cache[name] = nb
        return cache[name]

    return get


class _Watchdog:
    """Prints the kernel's native and Python stacks when a cell runs for
    :data:`STACKS_AFTER` seconds, then aborts the kernel (faulthandler prints its Python
    threads; the cell fails as a dead kernel)."""

    def __init__(self, client: nbclient.NotebookClient) -> None:
        self._client = client
        self._timer: threading.Timer | None = None

    def cell_starts(self, cell: nbformat.NotebookNode, cell_index: int) -> None:
        self.cancel()
        self._timer = threading.Timer(STACKS_AFTER, self._dump, args=(cell_index,))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _dump(self, cell_index: int) -> None:
        pid = getattr(getattr(self._client.km, "provisioner", None), "pid", None)
        if pid is None:
            return
        print(f"cell {cell_index} still runs after {STACKS_AFTER} s: stacks of kernel {pid}")
        if shutil.which("gdb"):
            stacks = subprocess.run(
                ["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 30"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            print(stacks.stdout[-20000:])
        os.kill(pid, signal.SIGABRT)


# --- executed notebooks -----------------------------------------------------------------


def test_quickstart_runs(executed: Callable[[str], nbformat.NotebookNode]) -> None:
    nb = executed("quickstart")
    printed = stdout(nb)
    assert "target_psnr" in printed  # the report of the first write
    assert re.search(r"setting\s+bpppb\s+ratio\s+PSNR dB\s+max err", printed)
    rows = dict(re.findall(r"^(lossless \(FFV1\)|\S+=\S+)\s+(.+)$", printed, re.MULTILINE))
    assert list(rows) == [
        "lossless (FFV1)",
        "max_abs_error=50",
        "target_bpppb=1.0",
        "target_bpppb=0.3",
        "target_bpppb=0.15",
    ]
    assert rows["lossless (FFV1)"].split()[2] == "inf"
    assert len(pngs(nb)) == 2  # the maps and the pixel's series


def test_train_runs(executed: Callable[[str], nbformat.NotebookNode]) -> None:
    nb = executed("train")  # the notebook asserts difference < TOLERANCE itself
    printed = stdout(nb)
    assert "held-out loss: eocube" in printed
    assert "relative difference" in printed
    found = re.search(
        r"held-out loss: eocube (\S+), original (\S+): relative difference (\S+)% "
        r"\(tolerance (\S+)%\)",
        printed,
    )
    assert found, printed
    lossy, original, difference, tolerance = (float(g) for g in found.groups())
    assert difference < tolerance
    assert abs(lossy - original) / original < tolerance / 100


# --- committed notebooks (nothing runs) ---------------------------------------------------


def _shows_something(source: str) -> bool:
    """Whether a cell prints, plots or ends with a value that Jupyter displays."""
    if "print(" in source or ".plot(" in source or "plt." in source:
        return True
    body = ast.parse(source).body
    last = body[-1] if body else None
    return isinstance(last, ast.Expr) and not isinstance(last.value, ast.Call)


@pytest.mark.parametrize("name", NAMES)
def test_committed_with_outputs(name: str) -> None:
    cells = code_cells(committed(name))
    showing = [cell for cell in cells if _shows_something(cell.source)]
    assert showing
    for cell in showing:
        assert cell.outputs, f"no outputs for\n{cell.source}\n{RERUN}"
    for cell in cells:
        assert all(out.output_type != "error" for out in cell.outputs), cell.source


@pytest.mark.parametrize("name", NAMES)
def test_committed_figures_in_docs(name: str) -> None:
    images = pngs(committed(name))
    expected = [IMAGES / f"{name}-{n}.png" for n in range(1, len(images) + 1)]
    present = sorted(
        p for p in IMAGES.glob(f"{name}-*.png") if re.fullmatch(rf"{name}-\d+\.png", p.name)
    )
    assert present == sorted(expected), RERUN
    for png, path in zip(images, expected, strict=True):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert path.read_bytes() == png, f"{path} differs from the notebook's image; {RERUN}"
    if name == "quickstart":
        assert len(images) == 2


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_volatile_parts(name: str) -> None:
    nb = committed(name)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    assert set(nb.metadata.get("language_info", {})) <= {"name"}
    counts = []
    for cell in nb.cells:
        assert "execution" not in cell.metadata
        assert "ExecuteTime" not in cell.metadata
        if cell.cell_type != "code":
            continue
        counts.append(cell.execution_count)
        for out in cell.outputs:
            assert "execution" not in out.get("metadata", {})
            if out.output_type == "execute_result":
                assert out.execution_count == cell.execution_count
            texts = [out.get("text", "")]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                assert not re.search(r"0x[0-9a-fA-F]{6,}", text), "a memory address"
                assert "/tmp/" not in text, "a temporary path"
                assert str(REPO) not in text, "the path of this checkout"
                assert "TqdmWarning" not in text
    assert counts == list(range(1, len(counts) + 1))
    assert run.volatile(nb) == []


def _layout(text: str) -> str:
    """Printed text with every number (timings, losses, sizes) masked and spaces collapsed."""
    text = re.sub(r"\d+(?:\.\d+)?", "#", text)
    return re.sub(r"[ \t]+", " ", text).strip()


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_are_current(
    name: str, executed: Callable[[str], nbformat.NotebookNode]
) -> None:
    """The committed notebook prints what a fresh run prints (up to the numbers)."""
    fresh = executed(name)
    old = committed(name)
    assert _layout(stdout(old)) == _layout(run.scrub(stdout(fresh))), RERUN
    assert len(pngs(old)) == len(pngs(fresh)), RERUN
    assert [c.source for c in code_cells(old)] == [c.source for c in code_cells(fresh)]


def test_clean_scrubs_volatile_parts() -> None:
    """notebooks/run.py's clean() on a made-up executed notebook."""
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": "3.11.7"},
            "widgets": {"state": {}},
        }
    )
    first = nbformat.v4.new_code_cell("print(x)", execution_count=7)
    first.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    first.metadata["ExecuteTime"] = {"end_time": "2026-01-01T00:00:00Z"}
    first.outputs = [
        nbformat.v4.new_output(
            "stream",
            name="stdout",
            text="file:///tmp/tmpab_c1234/s2.eocube: 1 bytes\n<Legend at 0x7f3a2b1c0d90>\n",
        ),
        nbformat.v4.new_output(
            "stream",
            name="stderr",
            text=f"{REPO}/.venv/lib/tqdm/auto.py:21: TqdmWarning: IProgress not found. See x\n"
            "  from .autonotebook import tqdm as notebook_tqdm\n",
        ),
    ]
    second = nbformat.v4.new_code_cell("x", execution_count=9)
    second.outputs = [
        nbformat.v4.new_output(
            "execute_result",
            execution_count=9,
            data={
                "text/plain": "<object at 0x7f3a2b1c0d90>",
                "text/html": "<input id='attrs-0d577c8b-bb9d-479a-a629-bdf7e299bc36'>"
                "<label for='attrs-0d577c8b-bb9d-479a-a629-bdf7e299bc36'>",
            },
        )
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), first, second]
    assert run.volatile(nb)

    run.clean(nb)
    assert run.volatile(nb) == []
    assert dict(nb.metadata) == {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    assert first.metadata == {}
    assert [first.execution_count, second.execution_count] == [1, 2]
    assert [out.text for out in first.outputs] == ["file://<tmp>/s2.eocube: 1 bytes\n<Legend>\n"]
    result = second.outputs[0]
    assert result.execution_count == 2
    assert result.data["text/plain"] == "<object>"
    assert result.data["text/html"] == "<input id='attrs-id0001'><label for='attrs-id0001'>"
