"""This checkout's eocube against an earlier one, side by side: each writes its own store
of the same cube at the default setting (or ``--profile``) and reads it back whole.

A format change (a new chunk coding) is a change of both writer and reader, so an
earlier reader cannot be timed on this checkout's stores: each version writes and
reads its own. Per cube and repeat, a fresh Python process per version (``PYTHONPATH``
set to the checkout) runs ``to_eocube(ds, path, crf=16, measure=False)`` then
``eocube.open_dataset(path)["data"].values`` (the first read of the process: what a new
user times, Numba kernels loaded from their cache included) and once more (a reader's
steady state, the decoded-chunk cache off), timing each inside the process; the
versions alternate, so drift on a shared machine hits both alike. Medians and the
ratios now / before are printed and written to
``benchmarks/results/version_ab.{json,md}``.

    python -m benchmarks.version_ab --baseline <checkout of an earlier commit> [--cubes ...]

Make the baseline with ``git worktree add /tmp/eocube-before <commit>``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks.common import machine_info, md_table, run_in_checkout, save_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CUBES = (
    "landsat7_rgb_byte",
    "l8_ny18_014031",
    "s2_l2a_fusets_field_33x3x57x56",
    "stars_cmip3_tos_24x1x170x180",
    "s2_l2a_worldcereal_118x4x64x64",
)
CRF = 16

# the worker: public API only, the same in every version measured
_WORKER = """
import json, shutil, sys, time, warnings
import numpy as np, xarray as xr
import eocube
src, store = sys.argv[1], sys.argv[2]
ds = xr.open_dataset(src)[["data"]].load()
shutil.rmtree(store, ignore_errors=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    eocube.to_eocube(ds, store, crf=%(crf)s, measure=False%(profile)s)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with eocube.open_dataset(store) as back:
        values = np.asarray(back["data"].values)
    read = time.perf_counter() - t0
    # again, kernels loaded, without the decoded-chunk cache: a reader's steady state
    t0 = time.perf_counter()
    with eocube.open_dataset(store, cache=False) as back:
        values = np.asarray(back["data"].values)
    warm = time.perf_counter() - t0
nbytes = sum(f.stat().st_size for f in __import__("pathlib").Path(store).rglob("*") if f.is_file())
print(json.dumps({"write_s": write, "read_s": read, "warm_s": warm, "nbytes": nbytes,
                  "module": eocube.__file__}))
"""


def run_once(
    checkout: Path, source: Path, store: Path, profile: str | None = None
) -> dict[str, Any]:
    """One write and whole read by the eocube of ``checkout``, in a fresh process (with
    ``profile``, or the version's default)."""
    return run_in_checkout(checkout, _worker(profile), [str(source), str(store)])


def _worker(profile: str | None) -> str:
    return _WORKER % {"crf": CRF, "profile": "" if profile is None else f", profile={profile!r}"}


def run(
    names: list[str],
    baseline: Path,
    repeats: int,
    folder: Path | None,
    scratch: Path,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of :func:`main`'s table, one per cube found."""
    rows = []
    for name in corpus.present(names, folder):
        source = corpus.cube_path(name, folder)
        runs: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
        for _ in range(repeats):
            for label, checkout in (("before", baseline), ("now", ROOT)):
                runs[label].append(run_once(checkout, source, scratch / f"{label}.zarr", profile))
        keys = ("write_s", "read_s", "warm_s", "nbytes")
        med = {
            label: {k: statistics.median(r[k] for r in rs) for k in keys}
            for label, rs in runs.items()
        }
        row = {"cube": name, **med}
        row["write_ratio"] = med["now"]["write_s"] / med["before"]["write_s"]
        row["read_ratio"] = med["now"]["read_s"] / med["before"]["read_s"]
        row["warm_ratio"] = med["now"]["warm_s"] / med["before"]["warm_s"]
        row["bytes_ratio"] = med["now"]["nbytes"] / med["before"]["nbytes"]
        rows.append(row)
        print(
            f"{name}: write {row['write_ratio']:.2f}x, first read {row['read_ratio']:.2f}x, "
            f"later reads {row['warm_ratio']:.2f}x the time, "
            f"{row['bytes_ratio']:.3f}x the bytes",
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the rows."""
    return md_table(
        ["cube", "store B before / now", "write s before / now", "first read ms before / now",
         "later read ms before / now", "bytes ×", "write ×", "first read ×", "later read ×"],
        [
            [
                r["cube"],
                f"{r['before']['nbytes']:.0f} / {r['now']['nbytes']:.0f}",
                f"{r['before']['write_s']:.2f} / {r['now']['write_s']:.2f}",
                f"{r['before']['read_s'] * 1e3:.1f} / {r['now']['read_s'] * 1e3:.1f}",
                f"{r['before']['warm_s'] * 1e3:.1f} / {r['now']['warm_s'] * 1e3:.1f}",
                f"{r['bytes_ratio']:.3f}",
                f"{r['write_ratio']:.2f}",
                f"{r['read_ratio']:.2f}",
                f"{r['warm_ratio']:.2f}",
            ]
            for r in rows
        ],
        "lrrrrrrrr",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier checkout")
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), metavar="NAME")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", help="the profile both versions write (default: theirs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/eocube-version-ab"))
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    args.scratch.mkdir(parents=True, exist_ok=True)
    base_commit = subprocess.run(
        ["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or str(args.baseline)  # fmt: skip
    rows = run(args.cubes, args.baseline, args.repeats, args.corpus, args.scratch, args.profile)
    setting = f"crf {CRF}" + ("" if args.profile is None else f", profile {args.profile}")
    text = (
        f"# This checkout against {base_commit}, {setting}, side by side\n\n"
        f"Each version writes and reads its own store; medians of {args.repeats} "
        "alternating repeats, each in a fresh process; × = now / before. Reproduce: "
        f"`python -m benchmarks.version_ab --baseline <checkout of {base_commit}>"
        + ("" if args.profile is None else f" --profile {args.profile}")
        + "`.\n\n"
        + table(rows)
        + "\n"
    )
    if not save_results(
        args.out,
        "version_ab",
        text,
        {
            "baseline": base_commit,
            "crf": CRF,
            "profile": args.profile,
            "repeats": args.repeats,
            "machine": machine_info(threads=0),
            "rows": rows,
        },
    ):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
