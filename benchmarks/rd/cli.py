"""The command line of benchmarks.rd: options, the run over the cubes, and the reports.

Each cube runs in a child process (benchmarks.rd.runner) that appends its points to
``points/<cube>.jsonl`` (benchmarks.rd.parts); the reports are then rebuilt from every
part: ``results.jsonl``, each cube's page, ``summary.md`` and ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import benchmarks.rd
from benchmarks import common, competitors, corpus, reference
from benchmarks.rd import parts, runner, sweeps
from benchmarks.rd.cube_page import cube_markdown, cube_plot
from benchmarks.rd.summary import summary_markdown

OUT_FULL = common.RESULTS / "rd"
OUT_QUICK = common.RESULTS / "rd" / "quick"


def write_reports(out: Path, meta: dict[str, Any]) -> None:
    """Rebuild every report of ``out`` from its ``points/`` parts.

    Parameters
    ----------
    out : Path
        The results folder.
    meta : dict
        The run's description; it overrides that recorded in the parts.
    """
    cubes, records, part_meta = parts.load_parts(out / "points")
    meta = {**part_meta, **meta}
    with (out / "results.jsonl").open("w") as fh:
        fh.writelines(parts.dumps(r) for r in records)
    for name, info in cubes.items():
        rs = [r for r in records if r["cube"] == name]
        (out / f"{name}.md").write_text(cube_markdown(info, rs))
        try:
            cube_plot(info, rs, out / f"{name}.png")
        except Exception as exc:  # a plot failure must not lose the tables
            print(f"plot of {name} failed: {exc}", file=sys.stderr)
    (out / "summary.md").write_text(summary_markdown(cubes, records, meta))
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=parts.json_default))


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m benchmarks.rd``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.rd", description=(benchmarks.rd.__doc__ or "").split("\n")[0]
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{len(sweeps.QUICK_CUBES)} small cubes, short sweeps (a few minutes)",
    )
    p.add_argument("--cubes", nargs="+", help="cube names (default: the whole corpus)")
    corpus.add_corpus_option(p, "--data")
    p.add_argument(
        "--methods",
        nargs="+",
        help="only these methods (eocube:hevc-12bit-444, reference, SZ3, ...; eocube: for all)",
    )
    p.add_argument(
        "--max-values",
        type=int,
        help="crop cubes larger than this many values (default 2.5e6, quick 3e5)",
    )
    p.add_argument("--decode-repeats", type=int, help="decode repeats (default 2, quick 1)")
    p.add_argument("--out", type=Path, help="results folder")
    p.add_argument("--resume", action="store_true", help="skip cubes already done")
    p.add_argument("--report-only", action="store_true", help="rebuild reports only")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one cube, in a child process
    p.add_argument(
        "--watchdog",
        type=float,
        default=600.0,
        help="seconds one point may take before the run dumps stacks and exits",
    )
    return p


def _command(argv: list[str]) -> str:
    """The command that reproduces the run (without --child and --resume)."""
    shown = list(argv)
    if "--child" in shown:
        k = shown.index("--child")
        del shown[k : k + 2]
    shown = [a for a in shown if a != "--resume"]
    return " ".join(["python -m benchmarks.rd", *shown]).strip()


def _meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """What the run measures and where: recorded with every cube and in meta.json."""
    return {
        "mode": "quick" if args.quick else "full",
        "command": _command(argv),
        "machine": common.machine_info(),
        "reference": reference.describe(),
        "competitors": {m.name: m.note for m in competitors.METHODS},
        "sweeps": sweeps.profile_sweeps(args.quick),
        "default_profile": sweeps.DEFAULT_PROFILE,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see :mod:`benchmarks.rd`); 0 when it completes."""
    argv = list(argv if argv is not None else sys.argv[1:])
    args = parser().parse_args(argv)

    out = args.out or (OUT_QUICK if args.quick else OUT_FULL)
    points = out / "points"
    points.mkdir(parents=True, exist_ok=True)
    meta = _meta(args, argv)
    if args.report_only:
        write_reports(out, {k: v for k, v in meta.items() if k not in ("command", "machine")})
        print(f"reports rebuilt in {out}", file=sys.stderr)
        return 0

    folder = corpus.corpus_dir(args.corpus)
    names = args.cubes or (list(sweeps.QUICK_CUBES) if args.quick else corpus.cube_names(folder))
    if args.child:
        return runner.child(
            args.child,
            quick=args.quick,
            methods=set(args.methods or ()),
            folder=folder,
            points=points,
            max_values=args.max_values
            or (sweeps.MAX_VALUES_QUICK if args.quick else sweeps.MAX_VALUES_FULL),
            max_time=sweeps.QUICK_MAX_TIME if args.quick else None,
            decode_repeats=args.decode_repeats
            or (sweeps.DECODE_REPEATS_QUICK if args.quick else sweeps.DECODE_REPEATS_FULL),
            watchdog=args.watchdog,
            meta=meta,
        )
    # a cube the corpus lacks keeps its earlier points instead of losing them
    names = list(corpus.present(names, folder))
    if not names:
        print(f"no cube to measure in {folder}; {out} left as it was", file=sys.stderr)
        return 1
    started = time.perf_counter()
    print(f"corpus {folder}: {len(names)} cubes -> {out}", file=sys.stderr)
    # the cubes this run leaves alone keep their committed points in the merged reports
    kept = parts.seed_missing(out / "results.jsonl", points)
    if kept:
        print(f"{len(kept)} cubes' points seeded from results.jsonl", file=sys.stderr)
    for name in names:
        part = points / f"{name}.jsonl"
        if args.resume and parts.is_complete(part):
            print(f"{name}: done already", file=sys.stderr)
            continue
        if args.methods and (
            part.exists() or parts.seed_from_results(out / "results.jsonl", name, part)
        ):
            parts.keep_other_methods(part, set(args.methods))  # re-measure only these
        else:
            part.unlink(missing_ok=True)
        runner.run_child(name, argv, part)
    meta["seconds"] = time.perf_counter() - started
    write_reports(out, meta)
    print((out / "summary.md").read_text())
    return 0
