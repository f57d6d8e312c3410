"""The per-cube part files of benchmarks.rd: ``points/<cube>.jsonl``, its cache and resume.

A part holds, one JSON object a line: ``{"cube", "cube_info"}`` first; then, for every
point, ``{"running": "method|setting"}`` as it starts and its record once measured; and
``{"cube", "cube_done", "seconds", "meta"}`` when the cube is complete. A point that
started but has no record crashed its process. Reports are built from the parts alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from benchmarks.rd.methods import is_selected, point_key


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays and paths (anything else as its text)."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def dumps(obj: dict[str, Any]) -> str:
    """One line of a part file (or of results.jsonl)."""
    return json.dumps(obj, default=json_default) + "\n"


def write_line(fh: TextIO, obj: dict[str, Any]) -> None:
    """Append one object to an open part file, flushed (a crash must not lose it)."""
    fh.write(dumps(obj))
    fh.flush()


def part_lines(part: Path) -> list[dict[str, Any]]:
    """Every object of a part file; none when it does not exist; lines cut by a crash skipped."""
    if not part.exists():
        return []
    out = []
    for line in part.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return out


def measured_keys(lines: list[dict[str, Any]]) -> set[str]:
    """The points of a part that have a record (``method|setting``)."""
    return {point_key(x["method"], x["setting_label"]) for x in lines if "method" in x}


def is_complete(part: Path) -> bool:
    """Whether the part's cube ran to its end."""
    lines = part.read_text().splitlines() if part.exists() else []
    return bool(lines) and bool(json.loads(lines[-1]).get("cube_done"))


def keep_other_methods(part: Path, methods: set[str]) -> None:
    """Drop the records of ``methods`` from a part (to re-measure them), keep the others."""
    keep = [
        x
        for x in part_lines(part)
        if not x.get("cube_done")
        and "running" not in x
        and not ("method" in x and is_selected(x["method"], methods))
    ]
    with part.open("w") as fh:
        fh.writelines(dumps(x) for x in keep)


def load_parts(points: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict]:
    """Every part of a ``points/`` folder.

    Parameters
    ----------
    points : Path
        The folder of part files.

    Returns
    -------
    tuple
        The cubes' figures by name (with ``complete`` and ``seconds``), every record,
        and the run's meta of the last complete cube.
    """
    cubes: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for part in sorted(points.glob("*.jsonl")):
        lines = part_lines(part)
        if not lines or "cube_info" not in lines[0]:
            continue
        info = dict(lines[0]["cube_info"])
        done = [x for x in lines if x.get("cube_done")]
        info["complete"] = bool(done)
        if done:
            meta = done[-1].get("meta", meta)
            info["seconds"] = done[-1].get("seconds")
        cubes[lines[0]["cube"]] = info
        records += [x for x in lines if "method" in x]
    return cubes, records, meta


CUBE_FIELDS = (
    "cube", "family", "dtype", "shape", "source_shape", "crop", "values", "original_bytes",
    "nodata", "invalid_fraction", "value_min", "value_max", "integer", "time_series",
)  # fmt: skip
"""The fields of a record that describe its cube (benchmarks.corpus.Cube.describe)."""


def seed_from_results(results: Path, cube: str, part: Path) -> bool:
    """Write ``cube``'s part from a run's ``results.jsonl``; whether it held the cube.

    A fresh checkout has the committed results but no ``points/``: seeded parts let
    ``--methods`` re-measure some methods and keep every other method's points. A seeded
    part is complete (``cube_done``, marked ``seeded``): the reports do not call its cube
    unfinished, and ``--resume`` leaves it alone.
    """
    if not results.exists():
        return False
    records = [x for x in part_lines(results) if x.get("cube") == cube and "method" in x]
    if not records:
        return False
    info = {k: records[0].get(k) for k in CUBE_FIELDS}
    # the cube ran to its end in the run that wrote results.jsonl; that run's meta stays
    # the report's (a seeded part has none of its own)
    done = {
        "cube": cube,
        "cube_done": True,
        "seeded": True,
        "seconds": sum(x.get("seconds") or 0 for x in records),
    }
    with part.open("w") as fh:
        fh.write(dumps({"cube": cube, "cube_info": info}))
        fh.writelines(dumps(x) for x in records)
        fh.write(dumps(done))
    return True


def seed_missing(results: Path, points: Path) -> list[str]:
    """Seed the part of every cube of ``results`` that ``points`` lacks; the cubes seeded.

    The reports are merged from the parts: in a fresh checkout a run of some cubes would
    otherwise leave every other cube out of the new ``results.jsonl``.
    """
    if not results.exists():
        return []
    cubes = sorted({x["cube"] for x in part_lines(results) if "method" in x and "cube" in x})
    seeded = []
    for cube in cubes:
        part = points / f"{cube}.jsonl"
        if not part.exists() and seed_from_results(results, cube, part):
            seeded.append(cube)
    return seeded
