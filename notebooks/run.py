"""Execute the notebooks in place, so that they are committed with their outputs.

    python notebooks/run.py [names...]      (default: every notebooks/*.ipynb)

Each notebook runs top to bottom with nbclient (kernel ``python3``, working directory
``notebooks/``). Before it is written back, what changes from run to run or from machine to
machine is removed (:func:`clean`): execution timings in the cell metadata, notebook metadata
beyond the kernel's name, memory addresses (``0x7f...``), temporary paths (``<tmp>/``), this
checkout's path (``<repo>``), the random element ids of xarray's HTML repr, and the
execution counts are renumbered 1..n. Printed tables and figures stay.

Every image output is also written as PNG to ``docs/images/<notebook>-<n>.png`` (n counts the
notebook's image outputs from 1; stale files of that notebook are removed), byte for byte the
image in the notebook, so that the README can show it. Last, the text each notebook printed
is echoed, to update the README's figures from.

``tests/test_notebooks.py`` checks the committed notebooks against this (:func:`volatile`).
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IMAGES = REPO / "docs" / "images"
TIMEOUT = 600  # seconds per cell

# cell metadata that records when and how long a cell ran (nbclient, JupyterLab, nbextensions)
TIMING_KEYS = ("execution", "ExecuteTime")
ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]{6,}|0x[0-9a-fA-F]{6,}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# environment noise: tqdm (imported by a dependency) warns when ipywidgets is not installed
TQDM_WARNING = re.compile(r"[^\n]*TqdmWarning: IProgress not found[^\n]*\n(?:[ \t]+[^\n]*\n)?")


def _tmp_pattern() -> re.Pattern[str]:
    """A temporary directory (``mkdtemp``'s ``tmpXXXXXXXX`` included) or a path below it."""
    roots = sorted({"/tmp", str(Path(tempfile.gettempdir())), tempfile.gettempdir()}, key=len)
    alternatives = "|".join(re.escape(r.rstrip("/")) for r in reversed(roots))
    return re.compile(rf"(?:/private)?(?:{alternatives})(?:/tmp[\w-]+)?(?=/|\b)")


TMP = _tmp_pattern()


def scrub(text: str) -> str:
    """Text output without what differs between runs or machines."""
    text = TQDM_WARNING.sub("", text)
    text = text.replace(str(REPO), "<repo>")
    text = TMP.sub("<tmp>", text)
    return ADDRESS.sub(lambda m: "" if m.group()[0].isspace() else "<address>", text)


def _stable_ids(text: str, ids: dict[str, str]) -> str:
    """Random UUIDs (xarray's HTML repr uses them as element ids) -> numbered, per notebook."""
    return UUID.sub(lambda m: ids.setdefault(m.group(), f"id{len(ids) + 1:04d}"), text)


def clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove the volatile parts of an executed notebook, in place; returns it."""
    meta = nb.metadata
    kept = nbformat.NotebookNode()
    if "kernelspec" in meta:
        kept.kernelspec = meta.kernelspec
    if "language_info" in meta:
        kept.language_info = nbformat.NotebookNode(name=meta.language_info.get("name", "python"))
    nb.metadata = kept

    ids: dict[str, str] = {}
    count = 0
    for cell in nb.cells:
        for key in TIMING_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            count += 1
            cell.execution_count = count
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = scrub(out.text)
                if not out.text:
                    continue
            elif out.output_type in ("execute_result", "display_data"):
                if out.output_type == "execute_result":
                    out.execution_count = count
                for mime, value in out.data.items():
                    if mime.startswith("text/") and isinstance(value, str):
                        out.data[mime] = _stable_ids(scrub(value), ids)
                out.metadata = out.get("metadata", {})
                out.metadata.pop("execution", None)
            elif out.output_type == "error":
                out.evalue = scrub(out.evalue)
                out.traceback = [scrub(line) for line in out.traceback]
            outputs.append(out)
        cell.outputs = outputs
    return nb


def volatile(nb: nbformat.NotebookNode) -> list[str]:
    """What :func:`clean` would have removed, as messages; empty for a committed notebook."""
    found = []
    extra = set(nb.metadata) - {"kernelspec", "language_info"}
    if extra or set(nb.metadata.get("language_info", {})) - {"name"}:
        found.append(f"notebook metadata beyond the kernel's name: {sorted(nb.metadata)}")
    counts = []
    for i, cell in enumerate(nb.cells):
        where = f"cell {i}"
        if any(key in cell.metadata for key in TIMING_KEYS):
            found.append(f"{where}: timing metadata")
        if cell.cell_type != "code":
            continue
        if cell.execution_count is not None:
            counts.append(cell.execution_count)
        for out in cell.outputs:
            texts = [out.get("text", ""), out.get("evalue", ""), *out.get("traceback", [])]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                if ADDRESS.search(text):
                    found.append(f"{where}: memory address {ADDRESS.search(text).group()}")
                if TMP.search(text) or "/tmp/" in text:
                    found.append(f"{where}: temporary path")
                if str(REPO) in text:
                    found.append(f"{where}: the path of this checkout")
                if UUID.search(text):
                    found.append(f"{where}: random id {UUID.search(text).group()}")
            if "execution" in out.get("metadata", {}):
                found.append(f"{where}: timing metadata in an output")
    if counts != list(range(1, len(counts) + 1)):
        found.append(f"execution counts {counts}, not 1..n")
    return found


def images(nb: nbformat.NotebookNode) -> list[bytes]:
    """The notebook's PNG outputs, in order."""
    return [
        base64.b64decode(out.data["image/png"])
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]


def image_paths(name: str, count: int, folder: Path = IMAGES) -> list[Path]:
    return [folder / f"{name}-{n}.png" for n in range(1, count + 1)]


def printed(nb: nbformat.NotebookNode) -> str:
    """What the notebook printed to stdout."""
    return "".join(
        out.text
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def execute(nb: nbformat.NotebookNode, cwd: Path = HERE) -> nbformat.NotebookNode:
    """Run every cell in place, in the kernel ``python3`` with working directory ``cwd``.

    A cell that fails raises ``nbclient.exceptions.CellExecutionError``.
    """
    nbclient.NotebookClient(
        nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def run(path: Path) -> tuple[nbformat.NotebookNode, float, list[Path]]:
    """Execute, clean and write back one notebook and its images; (notebook, seconds, PNGs)."""
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    execute(nb, path.parent)
    seconds = time.perf_counter() - t0
    clean(nb)
    nbformat.write(nb, path)
    pngs = images(nb)
    IMAGES.mkdir(parents=True, exist_ok=True)
    for stale in IMAGES.glob(f"{path.stem}-*.png"):
        if re.fullmatch(rf"{re.escape(path.stem)}-\d+\.png", stale.name):
            stale.unlink()
    paths = image_paths(path.stem, len(pngs))
    for png, target in zip(pngs, paths, strict=True):
        target.write_bytes(png)
    return nb, seconds, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks (quickstart or quickstart.ipynb)")
    args = parser.parse_args(argv)
    names = [Path(n).stem for n in args.names] or sorted(p.stem for p in HERE.glob("*.ipynb"))
    for name in names:
        path = HERE / f"{name}.ipynb"
        if not path.exists():
            parser.error(f"no notebook {path}")
    for name in names:
        path = HERE / f"{name}.ipynb"
        print(f"== {path.relative_to(REPO)}", flush=True)
        nb, seconds, paths = run(path)
        print(f"ran in {seconds:.1f} s; images: {[str(p.relative_to(REPO)) for p in paths]}")
        print(printed(nb), end="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
