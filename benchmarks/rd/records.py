"""Reading benchmarks.rd's records: usable points, methods, medians and best curves.

A record is one point (benchmarks.rd.methods); these helpers select and summarise them
for the per-cube pages and the summary. PSNR at a rate is interpolated in log bpppb
(:func:`benchmarks.common.psnr_at_sat`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks import common
from benchmarks.rd.sweeps import DEFAULT_PROFILE

Record = dict[str, Any]

DEFAULT_METHOD = f"eocube:{DEFAULT_PROFILE}"


def is_ok(r: Record) -> bool:
    """Whether a point was measured (neither skipped nor failed)."""
    return not r.get("skipped") and not r.get("error")


def by_method(records: list[Record]) -> dict[str, list[Record]]:
    """Records grouped by method, in the order methods first appear."""
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["method"], []).append(r)
    return out


def by_cube(records: list[Record]) -> dict[str, list[Record]]:
    """Records grouped by cube, in the order cubes first appear."""
    out: dict[str, list[Record]] = {}
    for r in records:
        out.setdefault(r["cube"], []).append(r)
    return out


def of_method(records: list[Record], method: str) -> list[Record]:
    """The records of one method."""
    return [r for r in records if r["method"] == method]


def median(xs: list[float | None]) -> float | None:
    """Median of the finite values; None when there are none."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def envelope(records: list[Record], basis: str, target: float) -> tuple:
    """Best PSNR at ``target`` over several methods, and which method gives it."""
    best: tuple[float | None, str | None] = (None, None)
    for method, rs in by_method(records).items():
        p = common.psnr_at_sat(rs, target, basis)
        if p is not None and (best[0] is None or p > best[0]):
            best = (p, method)
    return best


def eocube_lossy(records: list[Record], which: str) -> list[Record]:
    """eocube's points: of its default profile (``which="default"``) or of every lossy one."""
    if which == "default":
        return of_method(records, DEFAULT_METHOD)
    return [r for r in records if r["kind"] == "eocube" and not r["lossless"]]


def eocube_psnr_at(records: list[Record], which: str, target: float, basis: str) -> tuple:
    """eocube's PSNR at ``target`` and the profile giving it.

    Parameters
    ----------
    records : list of dict
        One cube's usable records.
    which : str
        ``"default"``: the default profile; ``"best"``: the best lossy profile at ``target``.
    target : float
        The rate (bpppb).
    basis : str
        ``"bpppb"`` (whole store) or ``"bpppb_payload"``.

    Returns
    -------
    tuple
        (PSNR or None, profile name).
    """
    sel = eocube_lossy(records, which)
    if which == "default":
        return common.psnr_at_sat(sel, target, basis), DEFAULT_PROFILE
    p, m = envelope(sel, basis, target)
    return p, (m or "").removeprefix("eocube:")


def verdict(ok: bool | None) -> str:
    """met, **missed**, or n/a where the goal could not be measured."""
    return "n/a" if ok is None else ("met" if ok else "**missed**")
