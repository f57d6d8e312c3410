"""Dates or rows as frames: which axis a chunk's video runs along, cube by cube.

For each cube (its first ``--dates`` dates as one chunk), :func:`eocube.encode_chunk` with
the default profile over a crf sweep, with ``frames="time"`` (one frame per date, as
before chunk format 4), ``frames="y"`` (one frame per row, holding that row of every
date) and ``frames="auto"`` (both tried where the chunk has at least
``eocube.chunk.AUTO_MIN_DATES`` dates, the better kept). The table gives PSNR (payload
basis) at 0.1, 0.3 and 1 bpppb, interpolated in log bpppb, and the decode time of each
way at the crf nearest 0.3 bpppb (median of ``--repeats``).

    python -m benchmarks.frame_axis [--cubes NAME:DATES ...]

Writes ``benchmarks/results/frame_axis.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from benchmarks import corpus
from benchmarks.common import git_state, interp_log, md_table

RESULTS = Path(__file__).parent / "results"
# name: dates in the chunk (the default chunking's: 128 for hourly or daily series, 32
# for satellite revisits, all of shorter series)
CUBES = (
    "era5_t2m_uk_744h:128",
    "era5_t2m_uk_744h:744",
    "stars_cmip3_tos_24x1x170x180:24",
    "stars_stageiv_precip_23x1x118x87:23",
    "stars_bcsd_obs_12x2x33x81:12",
    "s2_l2a_worldcereal_118x4x64x64:32",
    "s2_l2a_worldcereal_118x4x64x64:118",
    "s2_l1c_eolearn_ndvi_68x1:68",
    "s2_l2a_fusets_meadow_58x3x44x48:58",
)
RATES = (0.1, 0.3, 1.0)
WAYS = ("time", "y", "auto")


def sweep(block: np.ndarray, frames: str, crfs: list[float], repeats: int) -> list[dict[str, Any]]:
    """(crf, bpppb, PSNR, encode s, decode s) of ``block`` coded with ``frames``."""
    from eocube.chunk import decode_chunk, encode_chunk, read_header
    from eocube.metrics import psnr

    points = []
    for crf in crfs:
        t0 = time.perf_counter()
        payload = encode_chunk(block, quality=crf, frames=frames)
        encode_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decoded = decode_chunk(payload, threads=1)
            times.append(time.perf_counter() - t0)
        points.append(
            {
                "crf": crf,
                "bpppb": len(payload) * 8 / block.size,
                "psnr": psnr(block, decoded[: block.shape[0]]),
                "encode_s": encode_s,
                "decode_s": float(np.median(times)),
                "rows_as_frames": read_header(payload).time_in_frame,
            }
        )
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES), help="NAME:DATES")
    p.add_argument("--crfs", type=float, nargs="+", default=[4, 10, 16, 22, 28, 34, 40])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    results: dict[str, Any] = {}
    rows = []
    for spec in args.cubes:
        name, dates = spec.split(":")
        with xr.open_dataset(corpus.cube_path(name, args.corpus)) as ds:
            block = np.asarray(ds["data"].values[: int(dates)])
        curves = {way: sweep(block, way, args.crfs, args.repeats) for way in WAYS}
        results[spec] = {"shape": list(block.shape), "curves": curves}
        row: list[Any] = [f"{name} ({block.shape[0]} dates)"]
        for rate in RATES:
            for way in WAYS:
                at = interp_log(sorted((q["bpppb"], q["psnr"]) for q in curves[way]), rate)
                row.append("n/a" if at is None else f"{at:.2f}")
        near = {way: min(curves[way], key=lambda q: abs(np.log(q["bpppb"] / 0.3))) for way in WAYS}
        row += [
            f"{1000 * near['time']['decode_s']:.0f} / {1000 * near['y']['decode_s']:.0f}",
            str(sum(q["rows_as_frames"] for q in curves["auto"])) + f"/{len(args.crfs)}",
        ]
        rows.append(row)
        print(" | ".join(map(str, row)), flush=True)
    header = ["cube"]
    for rate in RATES:
        header += [f"{way} @{rate:g}" for way in WAYS]
    header += ["decode ms time / y (near 0.3)", "auto chose rows"]
    state = git_state()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "frame_axis.json").write_text(
        json.dumps({"git": state, "crfs": args.crfs, "cubes": results}, indent=1)
    )
    text = (
        "# Dates or rows as frames\n\n"
        "PSNR (dB, payload basis) of the default profile at fixed bpppb with one frame per "
        "date (`time`), one frame per row of every date (`y`, chunk format 4) and the "
        "writer's choice (`auto`); decode time of one chunk on one thread near 0.3 bpppb; "
        "how many crf points `auto` coded with rows as frames. Commit "
        f"{str(state.get('commit', '?'))[:7]}. Reproduce: `python -m benchmarks.frame_axis`.\n\n"
        + md_table(header, rows)
        + "\n"
    )
    (RESULTS / "frame_axis.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
