"""Does a write get the rate (or the PSNR) it asks for? ``target_bpppb`` or ``target_psnr``
writes of every cube, side by side with an earlier checkout.

Per cube, a fresh Python process per version (``PYTHONPATH`` set to the checkout) writes
the cube with ``to_eocube(ds, path, target_bpppb=r, measure=False)`` at each rate asked
for, in the version's default profile, and records the store's bits per value (every
byte of the store, as the target counts them), how many times the cube was encoded
(``report.passes``), whether the write warned that it missed, and the seconds it took.
A write meets its target within +-10 % (:meth:`eocube.ratecontrol.Control.met_by`).
With ``--psnr`` it writes ``target_psnr=p`` instead (``measure=True``, which the PSNR
needs): a write meets its target where the store's PSNR is at least ``p``, and what it
got above the target is bytes spent for nothing. Without ``--baseline`` only this
checkout is measured.

    python -m benchmarks.rate_control [--baseline <checkout>] [--rates 0.1 0.3 1] [--cubes ...]
    python -m benchmarks.rate_control --psnr 40 50 60 [--baseline <checkout>] [--cubes ...]

``--python`` runs the workers with another interpreter (an environment with other
library versions, e.g. the lowest PyAV supported), the same for both versions. Writes
``benchmarks/results/rate_control.{md,json,png}`` (``psnr_control.*`` with ``--psnr``;
``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks.common import machine_info, md_table, run_in_checkout, save_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RATES = (0.1, 0.3, 1.0)
PSNRS = (40.0, 50.0, 60.0)
TOLERANCE = 0.1
"""Relative distance to the target within which a write meets it (what eocube promises)."""

# the worker: public API only, the same in every version measured
_WORKER = """
import json, shutil, sys, time, warnings
import av, xarray as xr
import eocube
src, store, kind = sys.argv[1], sys.argv[2], sys.argv[3]
targets = [float(r) for r in sys.argv[4:]]
ds = xr.open_dataset(src)[["data"]].load()
# a small write first, so that no timed write compiles (or loads) the Numba kernels
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    eocube.to_eocube(ds.isel(y=slice(0, 16), x=slice(0, 16)), store, crf=30, measure=False,
                     mode="w")
out = []
for target in targets:
    shutil.rmtree(store, ignore_errors=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        if kind == "psnr":
            report = eocube.to_eocube(ds, store, target_psnr=target)
        else:
            report = eocube.to_eocube(ds, store, target_bpppb=target, measure=False)
        seconds = time.perf_counter() - t0
    out.append({"rate": target, "bpppb": report.bpppb, "passes": report.passes,
                "seconds": seconds, "warned": any("missed" in str(w.message) for w in caught),
                "quality": report.variables["data"].quality,
                "psnr": report.variables["data"].psnr})
print(json.dumps({"writes": out, "av": av.__version__, "module": eocube.__file__}))
"""


def measure(
    checkout: Path,
    source: Path,
    store: Path,
    targets: Sequence[float],
    python: str,
    kind: str = "bpppb",
) -> dict[str, Any]:
    """The target writes (``kind``: "bpppb" or "psnr") of one cube by the eocube of
    ``checkout``, in a fresh process."""
    args = [str(source), str(store), kind, *(f"{r:g}" for r in targets)]
    return run_in_checkout(checkout, _WORKER, args, python=python)


def meets(write: dict[str, Any], target: float, kind: str) -> bool:
    """Whether a write got its target: the rate within +-10 %, or at least the PSNR."""
    if kind == "psnr":
        return write["psnr"] is not None and write["psnr"] >= target
    return abs(write["bpppb"] / target - 1) <= TOLERANCE


def _got(write: dict[str, Any], target: float, kind: str) -> str:
    if kind == "psnr":
        return "no PSNR" if write["psnr"] is None else f"{write['psnr'] - target:+.2f} dB"
    return f"{write['bpppb'] / target:.3f}"


def run(
    names: Sequence[str],
    versions: dict[str, Path],
    targets: Sequence[float],
    folder: Path | None,
    scratch: Path,
    python: str,
    kind: str = "bpppb",
) -> list[dict[str, Any]]:
    """One row per cube found and target: each version's write."""
    rows = []
    for name in corpus.present(names, folder):
        source = corpus.cube_path(name, folder)
        done = {
            label: measure(checkout, source, scratch / f"{label}.eocube", targets, python, kind)
            for label, checkout in versions.items()
        }
        for i, target in enumerate(targets):
            row: dict[str, Any] = {"cube": name, "kind": kind, "target": target}
            for label, result in done.items():
                write = result["writes"][i]
                write["met"] = meets(write, target, kind)
                row[label] = write
                row["av"] = result["av"]
            rows.append(row)
            print(
                f"{name} @{target:g}: "
                + ", ".join(
                    f"{label} {_got(row[label], target, kind)} "
                    f"({row[label]['bpppb']:.4f} bpppb, {row[label]['passes']} pass(es), "
                    f"{'met' if row[label]['met'] else 'missed'})"
                    for label in versions
                ),
                flush=True,
            )
    return rows


def table(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The Markdown table of the rows: per version what the store got against the target
    (its rate over the target, or its PSNR less the target), the store's bits per value,
    the encodes, and whether it met the target (warned: the write said it missed)."""
    kind = rows[0]["kind"] if rows else "bpppb"
    got = "PSNR - target" if kind == "psnr" else "store / target"
    header = ["cube", f"target {'dB' if kind == 'psnr' else 'bpppb'}"]
    for label in labels:
        header += [f"{label}: {got}", f"{label}: bpppb", f"{label}: encodes", f"{label}: s",
                   f"{label}"]  # fmt: skip
    body = []
    for r in rows:
        line = [r["cube"], f"{r['target']:g}"]
        for label in labels:
            w = r[label]
            verdict = "met" if w["met"] else "**missed**" + (" (warned)" if w["warned"] else "")
            line += [_got(w, r["target"], kind), f"{w['bpppb']:.4f}", w["passes"],
                     f"{w['seconds']:.1f}", verdict]  # fmt: skip
        body.append(line)
    return md_table(header, body, "lr" + "rrrrl" * len(labels))


def summary(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    """One line per version: targets met, the median and worst distance (for a PSNR:
    what the writes that met it got above it, and the worst shortfall), the encodes."""
    out = []
    for label in labels:
        writes = [r[label] for r in rows]
        met = sum(w["met"] for w in writes)
        unwarned = sum(not w["met"] and not w["warned"] for w in writes)
        head = (
            f"- {label}: {met}/{len(writes)} writes meet their target"
            f" ({unwarned} missed without a warning); "
        )
        if rows and rows[0]["kind"] == "psnr":
            over = [w["psnr"] - r["target"] for w, r in zip(writes, rows, strict=True)
                    if w["psnr"] is not None]  # fmt: skip
            finite = [d for d in over if math.isfinite(d)]
            above = [d for d in finite if d >= 0]
            exact = len(over) - len(finite)
            head += (
                (
                    f"PSNR over the target: median {statistics.median(above):+.2f} dB where met, "
                    f"lowest {min(finite):+.2f}, highest {max(finite):+.2f}"
                    if above
                    else "no finite PSNR met its target"
                )
                + (f" ({exact} exact)" if exact else "")
                + "; "
            )
        else:
            miss = [
                abs(math.log(w["bpppb"] / r["target"])) for w, r in zip(writes, rows, strict=True)
            ]
            head += (
                f"within ±{TOLERANCE:.0%}; median distance "
                f"{math.expm1(statistics.median(miss)):.1%}, worst {math.expm1(max(miss)):.1%}; "
            )
        out.append(
            head + f"{sum(w['passes'] for w in writes)} encodes of the cube in all, "
            f"{sum(w['seconds'] for w in writes):.0f} s"
        )
    return out


def plot(path: Path, rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> None:
    """What each write got against its target, one series per version: the rate over
    the target (log scale, the ±10 % band shaded), or the PSNR less the target (dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    psnr = bool(rows) and rows[0]["kind"] == "psnr"
    fig, ax = plt.subplots(figsize=(9, 3.8))
    if psnr:
        ax.axhline(0, color="0.5", lw=0.8)
    else:
        ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="0.9", label="±10 %")
    for k, label in enumerate(labels):
        x = [i + (k - (len(labels) - 1) / 2) * 0.25 for i in range(len(rows))]
        if psnr:
            y = [math.nan if r[label]["psnr"] is None else r[label]["psnr"] - r["target"]
                 for r in rows]  # fmt: skip
        else:
            y = [r[label]["bpppb"] / r["target"] for r in rows]
        ax.scatter(x, y, s=14, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['cube'][:22]} @{r['target']:g}" for r in rows])
    ax.tick_params(axis="x", labelrotation=90, labelsize=5)
    if psnr:
        ax.set_ylabel("store PSNR - target (dB)")
    else:
        ax.set_yscale("log")
        ax.set_ylabel("store bpppb / target")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an earlier checkout, measured beside")
    parser.add_argument("--cubes", nargs="+", metavar="NAME", help="default: every cube")
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument(
        "--psnr", nargs="*", type=float, metavar="DB",
        help=f"target_psnr writes instead (default targets: {' '.join(f'{p:g}' for p in PSNRS)})",
    )  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="the workers' interpreter")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/eocube-rate-control"))
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    versions = {"now": ROOT}
    base = None
    if args.baseline is not None:
        base = subprocess.run(
            ["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip() or str(args.baseline)  # fmt: skip
        versions = {"before": args.baseline, "now": ROOT}
    names = args.cubes or corpus.cube_names(args.corpus)
    kind = "bpppb" if args.psnr is None else "psnr"
    targets = args.rates if args.psnr is None else (args.psnr or list(PSNRS))
    rows = run(names, versions, targets, args.corpus, args.scratch, args.python, kind)
    labels = list(versions)
    pyav = rows[0]["av"] if rows else "?"
    stem = "rate_control" if kind == "bpppb" else "psnr_control"
    heading, settings, rule = (
        ("store bits per value against `target_bpppb`", "`measure=False`",
         "within ±10 % (every byte of the store counted)")
        if kind == "bpppb"
        else ("store PSNR against `target_psnr`", "measured",
              "where its PSNR is at least the target (its bytes and PSNR the store's)")
    )  # fmt: skip
    text = (
        f"# Rate control: {heading}\n\n"
        f"Default profile, {settings}; PyAV {pyav}; "
        + (f"before = {base}, " if base else "")
        + f"now = this checkout. A write meets its target {rule}; encodes = times the "
        "cube was encoded (1 + corrections). "
        "Reproduce: `python -m benchmarks.rate_control"
        + (f" --baseline <checkout of {base}>" if base else "")
        + (
            f" --rates {' '.join(f'{r:g}' for r in targets)}"
            if kind == "bpppb"
            else f" --psnr {' '.join(f'{r:g}' for r in targets)}"
        )
        + ("" if args.cubes is None else f" --cubes {' '.join(args.cubes)}")
        + ("" if args.python == sys.executable else " --python <the interpreter>")
        + "`.\n\n"
        + "\n".join(summary(rows, labels))
        + "\n\n"
        + table(rows, labels)
        + "\n"
    )
    run_info = {
        "baseline": base,
        "kind": kind,
        "targets": targets,
        "av": pyav,
        "machine": machine_info(threads=0),
        "rows": rows,
    }
    if not save_results(args.out, stem, text, run_info):
        return 1
    plot(args.out / f"{stem}.png", rows, labels)
    print(json.dumps({"written": str(args.out / f"{stem}.md")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
