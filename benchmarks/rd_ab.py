"""This checkout's encoder against an earlier one's at equal rate, side by side.

For an encoder-only change (the bytes change, the format does not), what counts is the
quality at the same rate. For each cube, its first ``--dates`` dates as one chunk with
the cube's nodata are coded by each version's ``eocube.encode_chunk(block,
quality=crf, nodata=...)`` at each ``--crfs`` (one fresh process per version, with
``PYTHONPATH`` set to its checkout; encode time taken inside it). This checkout's
``decode_chunk`` decodes both versions' payloads (it reads every earlier chunk format),
and the PSNR of this version's points is compared with the earlier curve interpolated
at the same rate (log bpppb, payload bytes), where that curve covers it. Results go to
``benchmarks/results/rd_ab.{md,json,png}`` (or ``--out``).

    python -m benchmarks.rd_ab --baseline <checkout of an earlier commit> [--cubes ...]

Make the baseline with ``git worktree add /tmp/eocube-before <commit>``.
"""

from __future__ import annotations

import argparse
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, md_table, paired_bars, run_in_checkout, save_results
from benchmarks.x265_options import versus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
CUBES = (
    "landsat7_rgb_byte",
    "l8_ny18_013032",
    "l8_ny18_014031",
    "l8_ny18_014032",
    "s2_l1c_eolearn_5x13",
    "s2_l1c_eolearn_ndvi_68x1",
    "s2_l2a_fusets_field_33x3x57x56",
    "s2_l2a_fusets_meadow_58x3x44x48",
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_worldcereal_118x4x64x64",
    "s2_l2a_worldcereal_12x9x100x100",
    "s2_l2a_worldcereal_72x4x64x64",
    "era5_t2m_uk_744h",
    "stars_bcsd_obs_12x2x33x81",
    "stars_cmip3_tos_24x1x170x180",
)

ATTEMPTS = 3
"""Runs of a worker before a cube's measurement fails (a native crash costs one run)."""

# the worker: public API only, the same in every version measured
_WORKER = """
import json, sys, time, warnings
import numpy as np
import eocube
block = np.load(sys.argv[1])
nodata = None if sys.argv[2] == "none" else float(sys.argv[2])
out = sys.argv[3]
crfs = [float(c) for c in sys.argv[4].split(",")]
seconds = []
warnings.simplefilter("ignore")
eocube.encode_chunk(block[:1], quality=crfs[0], nodata=nodata)  # kernels and codecs warm
for i, crf in enumerate(crfs):
    t0 = time.perf_counter()
    payload = eocube.encode_chunk(block, quality=crf, nodata=nodata)
    seconds.append(time.perf_counter() - t0)
    with open(f"{out}-{i}.bin", "wb") as fh:
        fh.write(payload)
print(json.dumps({"seconds": seconds, "module": eocube.__file__}))
"""


def encode_points(
    checkout: Path, block_file: Path, nodata: float | None, crfs: tuple[float, ...], out: Path
) -> tuple[list[bytes], float]:
    """The payloads the eocube of ``checkout`` writes at ``crfs`` and their encode seconds."""
    result = run_in_checkout(
        checkout,
        _WORKER,
        [
            str(block_file),
            "none" if nodata is None else repr(nodata),
            str(out),
            ",".join(f"{c:g}" for c in crfs),
        ],
        attempts=ATTEMPTS,
    )
    payloads = [Path(f"{out}-{i}.bin").read_bytes() for i in range(len(crfs))]
    return payloads, float(sum(result["seconds"]))


def curve(block: np.ndarray, nodata: float | None, payloads: list[bytes]) -> np.ndarray:
    """(log bpppb, PSNR over the valid values) of each payload, decoded by this checkout."""
    from eocube.chunk import decode_chunk
    from eocube.metrics import psnr

    return np.array(
        [
            (
                np.log(len(p) * 8 / block.size),
                psnr(block, decode_chunk(p)[: block.shape[0]], nodata),
            )
            for p in payloads
        ]
    )


def measure(
    names: list[str],
    baseline: Path,
    dates: int,
    crfs: tuple[float, ...],
    folder: Path | None,
    scratch: Path,
) -> list[dict[str, Any]]:
    """One row per cube found: the PSNR differences at equal rate, the bytes ratios at
    each crf and the encode time ratio (now / before)."""
    rows = []
    for name in corpus.present(names, folder):
        cube = corpus.load_cube(name, folder, max_time=dates)
        block_file = scratch / "block.npy"
        np.save(block_file, cube.values)
        before, before_s = encode_points(baseline, block_file, cube.nodata, crfs, scratch / "b")
        now, now_s = encode_points(ROOT, block_file, cube.nodata, crfs, scratch / "n")
        old = curve(cube.values, cube.nodata, before)
        new = curve(cube.values, cube.nodata, now)
        diffs = versus(new, old)
        row = {
            "cube": name,
            "mean_db": float(np.mean(diffs)) if diffs else float("nan"),
            "db_at_points": diffs,
            "bytes_ratio": [len(a) / len(b) for a, b in zip(now, before, strict=True)],
            "time_ratio": now_s / before_s,
            "before": old.tolist(),
            "now": new.tolist(),
        }
        rows.append(row)
        print(
            f"{name:34s} {row['mean_db']:+.3f} dB at equal rate, bytes "
            + " ".join(f"{r:.3f}" for r in row["bytes_ratio"])
            + f", encode x{row['time_ratio']:.2f}",
            flush=True,
        )
    return rows


def render(run: dict[str, Any]) -> str:
    """The Markdown table of a run."""
    crfs = ", ".join(f"{c:g}" for c in run["crfs"])
    table = [
        [
            r["cube"],
            f"{r['mean_db']:+.2f}",
            " ".join(f"{d:+.2f}" for d in r["db_at_points"]) or "n/a",
            " ".join(f"{b:.3f}" for b in r["bytes_ratio"]),
            f"×{r['time_ratio']:.2f}",
        ]
        for r in run["rows"]
    ]
    return (
        f"# This checkout's encoder against {run['baseline']} at equal rate\n\n"
        f"First {run['dates']} dates of each cube as one chunk with its nodata, crf {crfs}, "
        "`encode_chunk` of each version in its own process, every payload decoded by this "
        "checkout. dB = PSNR now − before at the same payload rate (mean, then at each of "
        "this version's points the earlier curve covers); bytes = now / before at each "
        "crf; encode = now / before, the sum over the crfs (one run; the machine is "
        f"shared). Commit {str(run['git'].get('commit', '?'))[:7]}. Reproduce: "
        f"`python -m benchmarks.rd_ab --baseline <checkout of {run['baseline']}>`.\n\n"
        + md_table(["cube", "mean dB", "dB at each point", "bytes ×", "encode ×"], table, "lrrrr")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="an earlier checkout")
    parser.add_argument("--cubes", nargs="+", default=list(CUBES), metavar="NAME")
    parser.add_argument("--dates", type=int, default=32)
    parser.add_argument("--crfs", type=float, nargs="+", default=[6, 14, 22, 30, 38])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/eocube-rd-ab"))
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    args.scratch.mkdir(parents=True, exist_ok=True)
    base_commit = subprocess.run(
        ["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or str(args.baseline)  # fmt: skip
    crfs = tuple(args.crfs)
    rows = measure(args.cubes, args.baseline, args.dates, crfs, args.corpus, args.scratch)
    run = {
        "baseline": base_commit,
        "dates": args.dates,
        "crfs": crfs,
        "rows": rows,
        "git": git_state(),
    }
    if not save_results(args.out, "rd_ab", render(run), run):
        return 1
    paired_bars(
        args.out / "rd_ab.png",
        [r["cube"] for r in rows],
        ((f"now against {base_commit}", [r["mean_db"] for r in rows]),),
        "dB at equal rate",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
