"""Two methods of one R-D run side by side: PSNR at 0.1, 0.3 and 1 bpppb and the deltas.

Run: ``python -m benchmarks.rd.compare RESULTS.jsonl OLD NEW [--out FILE.md]`` where
RESULTS.jsonl is what ``python -m benchmarks.rd --out DIR`` wrote (``DIR/results.jsonl``)
and OLD, NEW are method names such as ``eocube:hevc-12bit-444-gbr``. Prints, per cube,
both methods' PSNR on the store basis (every stored byte) and on the payload basis, the
deltas NEW - OLD, and their median, minimum and maximum over the cubes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import psnr_at_sat

RATES = (0.1, 0.3, 1.0)
BASES = {"store": "bpppb", "payload": "bpppb_payload"}


def _fmt(values: list[float | None]) -> str:
    return " / ".join("n/a" if v is None else f"{v:.2f}" for v in values)


def compare(records: list[dict[str, Any]], old: str, new: str) -> str:
    """The comparison as markdown."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[(r["cube"], r["method"])].append(r)
    cubes = sorted({c for c, m in by if m in (old, new)})
    out = [f"# {new} against {old}", ""]
    for basis, key in BASES.items():
        deltas: dict[float, list[float]] = {t: [] for t in RATES}
        out += [
            f"## PSNR (dB) at 0.1 / 0.3 / 1 bpppb, {basis} basis",
            "",
            f"| cube | {old} | {new} | delta |",
            "|---|---|---|---|",
        ]
        for cube in cubes:
            a = [psnr_at_sat(by[(cube, old)], t, key) for t in RATES]
            b = [psnr_at_sat(by[(cube, new)], t, key) for t in RATES]
            cells = []
            for t, x, y in zip(RATES, a, b, strict=True):
                if x is None or y is None:
                    cells.append("n/a")
                    continue
                deltas[t].append(y - x)
                cells.append(f"{y - x:+.3f}")
            out.append(f"| {cube} | {_fmt(a)} | {_fmt(b)} | {' / '.join(cells)} |")
        out.append("")
        for t, values in deltas.items():
            if values:
                out.append(
                    f"- at {t:g} bpppb: median {statistics.median(values):+.3f} dB, "
                    f"min {min(values):+.3f}, max {max(values):+.3f} over {len(values)} cubes"
                )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    text = compare(records, args.old, args.new)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
