"""Encode speed for maintainers: what a write costs per control, and against the reference.

For each cube of the corpus, side by side in one run (the writes of one repeat one after
the other, repeats interleaved, medians kept), into a local temporary folder:

- ``crf``: ``to_eocube(ds, path)``, the default (``hevc-12bit-444``, crf 16), measured
  (the report's PSNR, as a user gets it);
- ``crf, no measure``: the same with ``measure=False`` (what benchmarks.rd times);
- ``bpppb``: ``target_bpppb=0.3`` (``--bpppb``);
- ``psnr``: ``target_psnr`` = the PSNR the crf write got, rounded down to 0.1 dB
  (reachable by construction);
- ``lossless``: ``lossless=True`` (FFV1), integer cubes only;
- ``reference``: the reference approach (benchmarks.reference, in process) at the
  default write's payload bpppb, its encode speed interpolated in log bpppb between crf
  points found around that rate (``--reference measure``), or read from
  ``benchmarks/results/rd/results.jsonl`` (``--reference recorded``).

The goals (issue "Encode speed for maintainers"): (a) a target write costs at most 1.5x
the crf write; (b) lossless >= 3x faster than the run labelled ``--baseline``; (c) the
default write (no measure, as benchmarks.rd times it) at least as fast as the reference
at equal bpppb on every cube.

    python -m benchmarks.encode_speed [--corpus /work/shared/data] [--label after]
    python -m benchmarks.encode_speed --label before --code /tmp/base  # an old checkout

``--code DIR`` measures the eocube package of another checkout (``DIR/eocube``, with its
own ``codecs/``) with this benchmark: it runs itself again in a subprocess whose working
folder holds links to that package and to this checkout's ``benchmarks`` and ``tests``,
so that runs of two versions share the benchmark and the corpus. Run the versions one
after the other, not at once: they share the cores.

Writes ``benchmarks/results/encode_speed.json`` (one entry per ``--label``, so that runs
before and after a change sit side by side), ``encode_speed.md`` and ``encode_speed.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common, corpus, reference
from benchmarks.common import RESULTS, fmt, git_state, machine_info, md_table

OUT_JSON = RESULTS / "encode_speed.json"
OUT_MD = RESULTS / "encode_speed.md"
OUT_PNG = RESULTS / "encode_speed.png"
MAX_VALUES = 2_500_000  # as benchmarks.rd: larger cubes are cropped in y and x
WRITES = ("crf", "crf_nomeasure", "bpppb", "psnr", "lossless")
REFERENCE_SPEED_FFMPEG = 11.0
"""MB/s of the real reference (ffmpeg started per video) on this kind of machine."""


def _write(ds: Any, folder: Path, **kwargs: Any) -> tuple[float, Any, list[str]]:
    """Seconds of one ``to_eocube``, its report, and the warnings it gave."""
    import eocube

    path = Path(tempfile.mkdtemp(dir=folder)) / "cube.eocube"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        report = eocube.to_eocube(ds, path, **kwargs)
        seconds = time.perf_counter() - t0
    shutil.rmtree(path.parent, ignore_errors=True)
    return seconds, report, [str(w.message) for w in caught]


def _reference_at(cube: corpus.Cube, bpppb: float, repeats: int) -> dict[str, Any]:
    """The reference's encode speed at ``bpppb``: crf points bracketing it, interpolated."""
    points: dict[float, tuple[float, list[float]]] = {}  # crf -> (bpppb, seconds)

    def encode(crf: float) -> float:
        t0 = time.perf_counter()
        enc = reference.encode(cube.values, crf, cube.nodata)
        seconds = time.perf_counter() - t0
        rate = enc.nbytes * 8 / cube.values.size
        points.setdefault(crf, (rate, []))[1].append(seconds)
        return rate

    crf = 16.0
    for _ in range(5):  # bytes halve about every 6 crf: step towards the rate
        rate = encode(crf)
        below = [c for c, (r, _) in points.items() if r <= bpppb]
        above = [c for c, (r, _) in points.items() if r >= bpppb]
        if below and above:
            break
        step = round(6 * math.log2(rate / bpppb))
        crf = min(max(crf + (step or (1 if rate > bpppb else -1)), 0), 51)
        if crf in points:
            break
    rates = sorted(points.items(), key=lambda kv: kv[1][0])
    lo = max((kv for kv in rates if kv[1][0] <= bpppb), key=lambda kv: kv[1][0], default=None)
    hi = min((kv for kv in rates if kv[1][0] >= bpppb), key=lambda kv: kv[1][0], default=None)
    used = [kv[0] for kv in (lo, hi) if kv is not None]
    for _ in range(repeats - 1):
        for c in dict.fromkeys(used):
            encode(c)
    pts = sorted(
        (r, cube.values.nbytes / statistics.median(s) / 1e6)
        for c, (r, s) in points.items()
        if c in used
    )
    speed = common.interp_log(pts, bpppb) if len(pts) > 1 else None
    return {
        "mb_s": speed,
        "points": {f"{c:g}": {"bpppb": r, "seconds": s} for c, (r, s) in points.items()},
        "bracketed": lo is not None and hi is not None,
    }


def _reference_recorded(name: str, bpppb: float) -> float | None:
    path = RESULTS / "rd" / "results.jsonl"
    if not path.exists():
        return None
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ref = [r for r in recs if r["cube"] == name and r["method"] == "reference"]
    return common.speed_at(ref, bpppb, "encode_mb_s")


def measure_cube(
    cube: corpus.Cube, folder: Path, repeats: int, target_bpppb: float, ref_mode: str
) -> dict[str, Any]:
    """Every write of one cube, ``repeats`` times interleaved; medians and what they got."""
    ds = cube.dataset
    _write(ds, folder, crf=16)  # warm caches (file system, numba, x265 tables)
    runs: dict[str, list[float]] = {w: [] for w in WRITES}
    got: dict[str, dict[str, Any]] = {}
    psnr_target = None
    for _ in range(repeats):
        for kind in WRITES:
            kwargs: dict[str, Any] = {}
            if kind == "crf_nomeasure":
                kwargs = {"measure": False}
            elif kind == "bpppb":
                kwargs = {"target_bpppb": target_bpppb}
            elif kind == "psnr":
                assert psnr_target is not None
                kwargs = {"target_psnr": psnr_target}
            elif kind == "lossless":
                if not cube.is_integer:
                    got[kind] = {"skipped": "float cube: lossless needs integers"}
                    continue
                kwargs = {"lossless": True}
            seconds, report, warned = _write(ds, folder, **kwargs)
            runs[kind].append(seconds)
            var = report.variables["data"]
            got[kind] = {
                "bpppb": report.bpppb,
                "bpppb_payload": var.bpppb,
                "psnr": var.psnr,
                "quality": var.quality,
                "passes": report.passes,
                "trials": report.trials,
                "warnings": warned,
            }
            if kind == "crf" and psnr_target is None:
                assert var.psnr is not None
                psnr_target = math.floor(var.psnr * 10) / 10
    mb = cube.values.nbytes / 1e6
    out: dict[str, Any] = {"cube": cube.describe(), "psnr_target": psnr_target}
    for kind in WRITES:
        if runs[kind]:
            med = statistics.median(runs[kind])
            out[kind] = {**got[kind], "seconds": runs[kind], "median_s": med, "mb_s": mb / med}
        else:
            out[kind] = got.get(kind, {"skipped": "not run"})
    rate = out["crf_nomeasure"]["bpppb_payload"]
    out["reference"] = {"bpppb": rate, "recorded_mb_s": _reference_recorded(cube.name, rate)}
    if ref_mode == "measure":
        out["reference"].update(_reference_at(cube, rate, repeats))
    else:
        out["reference"]["mb_s"] = out["reference"]["recorded_mb_s"]
    return out


def _ratio(res: dict[str, Any], kind: str) -> float | None:
    a, b = res.get(kind, {}), res.get("crf", {})
    return a["median_s"] / b["median_s"] if "median_s" in a and "median_s" in b else None


def tables(run: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """The markdown of one run (and of its lossless speed-up over ``baseline``)."""
    cubes = run["cubes"]
    rows = []
    for name, r in cubes.items():
        rows.append(
            [
                name,
                f"{r['cube']['original_bytes'] / 1e6:.2f}",
                *[
                    f"{r[k]['median_s']:.2f} / {r[k]['mb_s']:.1f}" if "median_s" in r[k] else "—"
                    for k in WRITES
                ],
                fmt(_ratio(r, "bpppb"), ".2f"),
                fmt(_ratio(r, "psnr"), ".2f"),
            ]
        )
    out = [
        "### Seconds / MB/s (of the original array) per write, medians",
        "",
        md_table(
            [
                "cube",
                "MB",
                "crf 16",
                "crf 16 no measure",
                "bpppb 0.3",
                "psnr",
                "lossless",
                "bpppb/crf",
                "psnr/crf",
            ],
            rows,
        ),
        "",
    ]
    rows = []
    met_c = []
    for name, r in cubes.items():
        ref = r["reference"]
        eo = r["crf_nomeasure"]["mb_s"]
        ok = None if ref.get("mb_s") is None else eo >= ref["mb_s"]
        met_c.append(ok)
        rows.append(
            [
                name,
                f"{ref['bpppb']:.3f}",
                f"{eo:.1f}",
                fmt(ref.get("mb_s")),
                fmt(ref.get("recorded_mb_s")),
                f"{REFERENCE_SPEED_FFMPEG:g}",
                "n/a" if ok is None else ("met" if ok else "**not met**"),
            ]
        )
    out += [
        "### Default write against the reference at equal payload bpppb",
        "",
        md_table(
            [
                "cube",
                "payload bpppb",
                "eocube MB/s",
                "reference MB/s (measured)",
                "reference (rd record)",
                "reference (ffmpeg)",
                "goal (c)",
            ],
            rows,
        ),
        "",
    ]
    ratios = [x for r in cubes.values() for x in (_ratio(r, "bpppb"), _ratio(r, "psnr")) if x]
    worst = max(ratios) if ratios else None
    speedups = []
    if baseline is not None:
        for name, r in cubes.items():
            b = baseline["cubes"].get(name, {}).get("lossless", {})
            if "median_s" in r["lossless"] and "median_s" in b:
                speedups.append((name, b["median_s"] / r["lossless"]["median_s"]))
    goal_b = (
        f"min {min(s for _, s in speedups):.2f}x, median "
        f"{statistics.median(s for _, s in speedups):.2f}x over {len(speedups)} cubes → "
        f"{'met' if min(s for _, s in speedups) >= 3 else '**not met**'}"
        if speedups
        else "no baseline run to compare with"
    )
    known = [x for x in met_c if x is not None]
    out += [
        "### Goals",
        "",
        f"- (a) target write ≤ 1.5× the crf write: worst ratio {fmt(worst, '.2f')}, median "
        f"{fmt(statistics.median(ratios) if ratios else None, '.2f')} → "
        f"{'met' if worst is not None and worst <= 1.5 else '**not met**'}",
        f"- (b) lossless ≥ 3× faster than `{run.get('baseline_label')}`: {goal_b}",
        f"- (c) default write ≥ reference at equal bpppb: {sum(known)} of {len(known)} cubes → "
        f"{'met' if known and all(known) else '**not met**'}",
        "",
    ]
    return "\n".join(out)


def compare(after: dict[str, Any], before: dict[str, Any], la: str, lb: str) -> str:
    """Before/after medians (seconds) per cube and write, and the speed-ups."""
    rows = []
    for name, r in after["cubes"].items():
        b = before["cubes"].get(name)
        if b is None:
            continue
        cells = []
        for k in (*WRITES, "ratio"):
            if k == "ratio":
                cells.append(
                    f"{fmt(_ratio(b, 'bpppb'), '.2f')}/{fmt(_ratio(b, 'psnr'), '.2f')} → "
                    f"{fmt(_ratio(r, 'bpppb'), '.2f')}/{fmt(_ratio(r, 'psnr'), '.2f')}"
                )
            elif "median_s" in r[k] and "median_s" in b[k]:
                x, y = b[k]["median_s"], r[k]["median_s"]
                cells.append(f"{x:.2f} → {y:.2f} ({x / y:.2f}×)")
            else:
                cells.append("—")
        rows.append([name, *cells])
    return "\n".join(
        [
            f"### Seconds, `{lb}` → `{la}` (speed-up)",
            "",
            md_table(
                [
                    "cube",
                    "crf 16",
                    "crf 16 no measure",
                    "bpppb 0.3",
                    "psnr",
                    "lossless",
                    "bpppb/crf, psnr/crf",
                ],
                rows,
            ),
            "",
        ]
    )


def plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(run["cubes"])
    kinds = [*WRITES, "reference"]
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.8), 5))
    width = 0.8 / len(kinds)
    for i, k in enumerate(kinds):
        vals = [run["cubes"][n][k].get("mb_s") or 0 for n in names]
        ax.bar(np.arange(len(names)) + i * width, vals, width, label=k)
    ax.set_xticks(np.arange(len(names)) + 0.4)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("MB/s of the original array (median)")
    ax.set_title(f"eocube encode speed per write ({run['label']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encode_speed", description=__doc__)
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", help="cube names (default: the whole corpus)")
    p.add_argument("--repeats", type=int, default=3, help="timed writes per kind (medians)")
    p.add_argument("--bpppb", type=float, default=0.3, help="the target_bpppb write")
    p.add_argument("--max-values", type=int, default=MAX_VALUES, help="crop larger cubes")
    p.add_argument("--reference", choices=("measure", "recorded"), default="measure")
    p.add_argument("--label", default="current", help="name of this run in the JSON")
    p.add_argument("--baseline", default="before", help="run label goal (b) compares with")
    p.add_argument("--out", type=Path, default=OUT_JSON, help="results JSON")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports only")
    p.add_argument("--code", type=Path, help="measure the eocube package of this checkout")
    args = p.parse_args(argv)
    if args.code is not None:
        return _run_with_code(args.code, argv if argv is not None else sys.argv[1:], args.out)

    from eocube import warmup

    warmup.warm_up()
    store: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = store.setdefault("runs", {})
    if not args.report_only:
        folder = corpus.corpus_dir(args.corpus)
        names = list(corpus.present(args.cubes or corpus.cube_names(folder), folder))
        if not names:
            print("no cube to measure; results not written")
            return 1
        code = os.environ.get("EOCUBE_BENCH_CODE")
        run: dict[str, Any] = {
            "label": args.label,
            "baseline_label": args.baseline,
            "machine": machine_info(),
            "git": _git_of(Path(code)) if code else git_state(),
            "command": "python -m benchmarks.encode_speed "
            + " ".join(argv or sys.argv[1:])
            + (f" --code {code}" if code else ""),
            "repeats": args.repeats,
            "cubes": {},
        }
        tmp = Path(tempfile.mkdtemp(prefix="encode-speed-"))
        try:
            for name in names:
                cube = corpus.load_cube(name, folder, max_values=args.max_values)
                t0 = time.perf_counter()
                run["cubes"][name] = measure_cube(
                    cube, tmp, args.repeats, args.bpppb, args.reference
                )
                print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = runs.get(args.label, {}).get("cubes", {})
        run["cubes"] = {**previous, **run["cubes"]}  # a re-run of some cubes keeps the rest
        runs[args.label] = run
        args.out.write_text(json.dumps(store, indent=1, default=float))
    md = ["# Encode speed (benchmarks/encode_speed.py)", ""]
    # what the runs alone do not show (interleaved A/B measurements, caveats), by hand
    for note in store.get("notes", []):
        md += [f"- {note}"]
    md += [""] if store.get("notes") else []
    base = runs.get(args.baseline)
    for label, run in runs.items():
        md += [
            f"## Run `{label}`: {run['command']}",
            "",
            tables(run, base if base is not run else None),
        ]
        if base is not None and base is not run:
            md.append(compare(run, base, label, args.baseline))
    text = "\n".join(md)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    current = runs.get(args.label)
    if current is not None:
        plot(current, args.out.with_suffix(".png"))
    return 0


def _git_of(checkout: Path) -> dict[str, Any]:
    """The commit of another checkout (``--code``), as :func:`common.git_state` gives it."""
    try:
        found = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"code": str(checkout)}
    return {"commit": found.stdout.strip(), "code": str(checkout)}


def _run_with_code(checkout: Path, argv: list[str], out: Path) -> int:
    """This benchmark again, in a subprocess importing ``checkout``'s eocube (``--code``)."""
    checkout = checkout.resolve()
    if not (checkout / "eocube" / "__init__.py").exists():
        raise SystemExit(f"--code {checkout}: no eocube package there")
    here = Path(__file__).resolve().parent
    rest = [a for i, a in enumerate(argv) if a != "--code" and (i == 0 or argv[i - 1] != "--code")]
    rest = [a for a in rest if not a.startswith("--code=")]
    with tempfile.TemporaryDirectory(prefix="encode-speed-code-") as tmp:
        for name, target in (
            ("eocube", checkout / "eocube"),
            ("benchmarks", here),
            ("tests", here.parent / "tests"),
        ):
            (Path(tmp) / name).symlink_to(target)
        env = {**os.environ, "EOCUBE_BENCH_CODE": str(checkout)}
        cmd = [sys.executable, "-m", "benchmarks.encode_speed", *rest, "--out", str(out.resolve())]
        return subprocess.run(cmd, cwd=tmp, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
