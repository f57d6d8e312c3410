"""What a profile costs against the default, side by side: write time, whole-cube read
time, bytes and PSNR of the same cubes at the same crf.

For each cube, ``to_eocube(ds, path, profile=p, crf=16, measure=False)`` then a
whole-cube read through ``eocube.open_dataset``, for the default (``hevc-12bit-444``)
and ``--profile`` in turn, ``--repeats`` times interleaved (so that drift on a shared
machine hits both alike); medians and their ratios are printed and written to
``benchmarks/results/profile_ab.{json,md,png}``.

    python -m benchmarks.profile_ab [--profile hevc-12bit-444-wavelet] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from benchmarks import corpus
from benchmarks.common import machine_info, md_table, paired_bars, save_results

CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",
    "l8_ny18_014031",
    "era5_t2m_uk_744h",
    "erainterim_uvz",
    "era5_ens_z_t",
    "stars_cmip3_tos_24x1x170x180",
)
BASE = "hevc-12bit-444"
CRF = 16
RESULTS = Path(__file__).parent / "results"


def measure(ds: xr.Dataset, profile: str, folder: Path) -> dict[str, float]:
    """One write and one whole-cube read of ``ds`` with ``profile``."""
    import eocube
    from eocube import metrics

    path = folder / f"{profile}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    report = eocube.to_eocube(ds, path, profile=profile, crf=CRF, measure=False)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with eocube.open_dataset(path) as back:
        decoded = np.asarray(back["data"].values)
    read_s = time.perf_counter() - t0
    var = report.variables["data"]
    return {
        "write_s": write_s,
        "read_s": read_s,
        "bpppb": var.payload_nbytes * 8 / ds["data"].size,
        "psnr": metrics.psnr(ds["data"].values, decoded),
    }


def run(names: list[str], profile: str, repeats: int, folder: Path | None) -> list[dict[str, Any]]:
    """Rows of :func:`main`'s table, one per cube found."""
    rows = []
    for name in corpus.present(names, folder):
        ds = xr.open_dataset(corpus.cube_path(name, folder))[["data"]].load()
        runs: dict[str, list[dict[str, float]]] = {BASE: [], profile: []}
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(repeats):
                for p in runs:
                    runs[p].append(measure(ds, p, Path(tmp)))
        med = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
        row = {"cube": name, "base": med[BASE], "profile": med[profile]}
        row["write_ratio"] = med[profile]["write_s"] / med[BASE]["write_s"]
        row["read_ratio"] = med[profile]["read_s"] / med[BASE]["read_s"]
        row["psnr_gain"] = med[profile]["psnr"] - med[BASE]["psnr"]
        rows.append(row)
        print(
            f"{name}: write {row['write_ratio']:.2f}x, read {row['read_ratio']:.2f}x the time, "
            f"PSNR {row['psnr_gain']:+.2f} dB",
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]], profile: str) -> str:
    """The Markdown table of the rows."""
    return md_table(
        [
            "cube",
            f"payload bpppb {BASE} / {profile}",
            "PSNR dB",
            "write s",
            "read ms",
            "write ×",
            "read ×",
        ],
        [
            [
                r["cube"],
                f"{r['base']['bpppb']:.3f} / {r['profile']['bpppb']:.3f}",
                f"{r['base']['psnr']:.2f} / {r['profile']['psnr']:.2f}",
                f"{r['base']['write_s']:.2f} / {r['profile']['write_s']:.2f}",
                f"{r['base']['read_s'] * 1e3:.0f} / {r['profile']['read_s'] * 1e3:.0f}",
                f"{r['write_ratio']:.2f}",
                f"{r['read_ratio']:.2f}",
            ]
            for r in rows
        ],
        "lrrrrrr",
    )


def plot(rows: list[dict[str, Any]], profile: str, path: Path) -> None:
    """Write and read time ratios per cube, as bars."""
    paired_bars(
        path,
        [r["cube"] for r in rows],
        (
            ("write time ×", [r["write_ratio"] for r in rows]),
            ("read time ×", [r["read_ratio"] for r in rows]),
        ),
        f"{profile} / {BASE}",
        one=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", default="hevc-12bit-444-wavelet")
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), metavar="NAME")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    rows = run(args.cubes, args.profile, args.repeats, args.corpus)
    text = (
        f"# {args.profile} against {BASE}, crf {CRF}, side by side\n\n"
        f"Medians of {args.repeats} interleaved repeats; × = {args.profile}'s time over "
        f"{BASE}'s. Reproduce: `python -m benchmarks.profile_ab --profile {args.profile}`.\n\n"
        + table(rows, args.profile)
        + "\n"
    )
    if not save_results(
        args.out,
        "profile_ab",
        text,
        {
            "profile": args.profile,
            "base": BASE,
            "crf": CRF,
            "repeats": args.repeats,
            "machine": machine_info(threads=0),
            "rows": rows,
        },
    ):
        return 1
    plot(rows, args.profile, args.out / "profile_ab.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
