"""Does a write get the rate it asks for? ``target_bpppb`` writes of every cube, side by side
with an earlier checkout.

Per cube, a fresh Python process per version (``PYTHONPATH`` set to the checkout) writes
the cube with ``to_eocube(ds, path, target_bpppb=r, measure=False)`` at each rate asked
for, in the version's default profile, and records the store's bits per value (every
byte of the store, as the target counts them), how many times the cube was encoded
(``report.passes``), whether the write warned that it missed, and the seconds it took.
A write meets its target within +-10 % (:meth:`eocube.ratecontrol.Control.met_by`).
Without ``--baseline`` only this checkout is measured.

    python -m benchmarks.rate_control [--baseline <checkout>] [--rates 0.1 0.3 1] [--cubes ...]

``--python`` runs the workers with another interpreter (an environment with other
library versions, e.g. the lowest PyAV supported), the same for both versions. Writes
``benchmarks/results/rate_control.{md,json,png}`` (``--out`` elsewhere).
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
TOLERANCE = 0.1
"""Relative distance to the target within which a write meets it (what eocube promises)."""

# the worker: public API only, the same in every version measured
_WORKER = """
import json, shutil, sys, time, warnings
import av, xarray as xr
import eocube
src, store, rates = sys.argv[1], sys.argv[2], [float(r) for r in sys.argv[3:]]
ds = xr.open_dataset(src)[["data"]].load()
# a small write first, so that no timed write compiles (or loads) the Numba kernels
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    eocube.to_eocube(ds.isel(y=slice(0, 16), x=slice(0, 16)), store, crf=30, measure=False,
                     mode="w")
out = []
for rate in rates:
    shutil.rmtree(store, ignore_errors=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        report = eocube.to_eocube(ds, store, target_bpppb=rate, measure=False)
        seconds = time.perf_counter() - t0
    out.append({"rate": rate, "bpppb": report.bpppb, "passes": report.passes,
                "seconds": seconds, "warned": any("missed" in str(w.message) for w in caught),
                "quality": report.variables["data"].quality})
print(json.dumps({"writes": out, "av": av.__version__, "module": eocube.__file__}))
"""


def measure(
    checkout: Path, source: Path, store: Path, rates: Sequence[float], python: str
) -> dict[str, Any]:
    """The target writes of one cube by the eocube of ``checkout``, in a fresh process."""
    args = [str(source), str(store), *(f"{r:g}" for r in rates)]
    return run_in_checkout(checkout, _WORKER, args, python=python)


def run(
    names: Sequence[str],
    versions: dict[str, Path],
    rates: Sequence[float],
    folder: Path | None,
    scratch: Path,
    python: str,
) -> list[dict[str, Any]]:
    """One row per cube found and rate: each version's write."""
    rows = []
    for name in corpus.present(names, folder):
        source = corpus.cube_path(name, folder)
        done = {
            label: measure(checkout, source, scratch / f"{label}.eocube", rates, python)
            for label, checkout in versions.items()
        }
        for i, rate in enumerate(rates):
            row: dict[str, Any] = {"cube": name, "rate": rate}
            for label, result in done.items():
                write = result["writes"][i]
                write["met"] = abs(write["bpppb"] / rate - 1) <= TOLERANCE
                row[label] = write
                row["av"] = result["av"]
            rows.append(row)
            print(
                f"{name} @{rate:g}: "
                + ", ".join(
                    f"{label} {row[label]['bpppb']:.4f} ({row[label]['passes']} pass(es), "
                    f"{'met' if row[label]['met'] else 'missed'})"
                    for label in versions
                ),
                flush=True,
            )
    return rows


def table(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> str:
    """The Markdown table of the rows: per version the store's rate over the target,
    the encodes, and whether it met the target (warned: the write said it missed)."""
    header = ["cube", "target bpppb"]
    for label in labels:
        header += [f"{label}: store / target", f"{label}: encodes", f"{label}: s", f"{label}"]
    body = []
    for r in rows:
        line = [r["cube"], f"{r['rate']:g}"]
        for label in labels:
            w = r[label]
            verdict = "met" if w["met"] else "**missed**" + (" (warned)" if w["warned"] else "")
            line += [f"{w['bpppb'] / r['rate']:.3f}", w["passes"], f"{w['seconds']:.1f}", verdict]
        body.append(line)
    return md_table(header, body, "lr" + "rrrl" * len(labels))


def summary(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[str]:
    """One line per version: targets met, the median and worst distance, the encodes."""
    out = []
    for label in labels:
        writes = [r[label] for r in rows]
        miss = [abs(math.log(w["bpppb"] / r["rate"])) for w, r in zip(writes, rows, strict=True)]
        met = sum(w["met"] for w in writes)
        unwarned = sum(not w["met"] and not w["warned"] for w in writes)
        out.append(
            f"- {label}: {met}/{len(writes)} writes within ±{TOLERANCE:.0%} of their target"
            f" ({unwarned} missed without a warning); median distance "
            f"{math.expm1(statistics.median(miss)):.1%}, worst {math.expm1(max(miss)):.1%};"
            f" {sum(w['passes'] for w in writes)} encodes of the cube in all, "
            f"{sum(w['seconds'] for w in writes):.0f} s"
        )
    return out


def plot(path: Path, rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> None:
    """Store rate over target per write, one series per version, the ±10 % band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    ax.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="0.9", label="±10 %")
    for k, label in enumerate(labels):
        x = [i + (k - (len(labels) - 1) / 2) * 0.25 for i in range(len(rows))]
        ax.scatter(x, [r[label]["bpppb"] / r["rate"] for r in rows], s=14, label=label)
    ax.set_xticks(range(len(rows)), [f"{r['cube'][:22]} @{r['rate']:g}" for r in rows])
    ax.tick_params(axis="x", labelrotation=90, labelsize=5)
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
    rows = run(names, versions, args.rates, args.corpus, args.scratch, args.python)
    labels = list(versions)
    pyav = rows[0]["av"] if rows else "?"
    text = (
        "# Rate control: store bits per value against `target_bpppb`\n\n"
        f"Default profile, `measure=False`; PyAV {pyav}; "
        + (f"before = {base}, " if base else "")
        + "now = this checkout. A write meets its target within ±10 % (every byte of the "
        "store counted); encodes = times the cube was encoded (1 + corrections). "
        "Reproduce: `python -m benchmarks.rate_control"
        + (f" --baseline <checkout of {base}>" if base else "")
        + f" --rates {' '.join(f'{r:g}' for r in args.rates)}"
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
        "rates": args.rates,
        "av": pyav,
        "machine": machine_info(threads=0),
        "rows": rows,
    }
    if not save_results(args.out, "rate_control", text, run_info):
        return 1
    plot(args.out / "rate_control.png", rows, labels)
    print(json.dumps({"written": str(args.out / "rate_control.md")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
