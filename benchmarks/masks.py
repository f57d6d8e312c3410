"""Masks coded by their runs (chunk format 6) against zlib of their packed bits.

For every corpus cube holding NaN or nodata, its whole mask (the shape a chunk's mask
has when the chunk is the cube, as for most corpus cubes): bytes both ways, as bits per
value of the cube (what the mask takes of a rate budget), and the time to code and to
decode it to a boolean array as :func:`eocube.chunk.decode_chunk` does (runs: decode,
then the packed bits chunk payloads hand on; zlib: decompress and unpack), medians of
``--repeats`` interleaved runs. Written to ``benchmarks/results/masks.{md,json,png}``.

    python -m benchmarks.masks [--corpus DIR] [--repeats 5] [--cubes NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import machine_info, md_table, paired_bars, save_results

RESULTS = Path(__file__).parent / "results"


def cube_mask(name: str, folder: Path | None) -> np.ndarray | None:
    """Where the cube holds NaN or its ``nodata`` (None when nowhere)."""
    import xarray as xr

    with xr.open_dataset(corpus.cube_path(name, folder), mask_and_scale=False) as ds:
        values = np.asarray(ds["data"].values)
        nodata = ds["data"].attrs.get("nodata")
    if values.ndim == 3:
        values = values[:, None]
    mask = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    if nodata is not None:
        mask |= values == nodata
    return mask if mask.any() else None


def _zlib(mask: np.ndarray) -> bytes:
    return zlib.compress(np.packbits(mask, axis=None).tobytes(), 9)


def _unzlib(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.frombuffer(zlib.decompress(data), np.uint8)
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def _unruns(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    from eocube import masks

    bits = np.packbits(masks.decode(data, shape), axis=None)  # as chunk payloads hand on
    return np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)


def measure(mask: np.ndarray, repeats: int) -> dict[str, Any]:
    """Bytes and median times (ms) of both codings of ``mask``."""
    from eocube import masks

    shape = mask.shape
    packed, runs = _zlib(mask), masks.encode(mask)
    if not np.array_equal(_unruns(runs, shape), mask):
        raise AssertionError("the runs coding did not return the mask")
    times: dict[str, list[float]] = {
        k: [] for k in ("enc_zlib", "enc_runs", "dec_zlib", "dec_runs")
    }
    for _ in range(repeats):
        for key, fn in (
            ("enc_zlib", lambda: _zlib(mask)),
            ("enc_runs", lambda: masks.encode(mask)),
            ("dec_zlib", lambda: _unzlib(packed, shape)),
            ("dec_runs", lambda: _unruns(runs, shape)),
        ):
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {
        "shape": list(shape),
        "invalid": float(mask.mean()),
        "zlib_bytes": len(packed),
        "runs_bytes": len(runs),
        "zlib_bpppb": 8 * len(packed) / mask.size,
        "runs_bpppb": 8 * len(runs) / mask.size,
    }
    out.update({f"{k}_ms": statistics.median(v) for k, v in times.items()})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the rows."""
    return md_table(
        [
            "cube",
            "mask shape",
            "invalid",
            "zlib B",
            "runs B",
            "zlib / runs",
            "bpppb zlib → runs",
            "encode ms zlib / runs",
            "decode ms zlib / runs",
        ],
        [
            [
                r["cube"],
                "×".join(map(str, r["shape"])),
                f"{100 * r['invalid']:.1f} %",
                r["zlib_bytes"],
                r["runs_bytes"],
                f"{r['zlib_bytes'] / r['runs_bytes']:.2f}",
                f"{r['zlib_bpppb']:.4f} → {r['runs_bpppb']:.4f}",
                f"{r['enc_zlib_ms']:.1f} / {r['enc_runs_ms']:.1f}",
                f"{r['dec_zlib_ms']:.2f} / {r['dec_runs_ms']:.2f}",
            ]
            for r in rows
        ],
        "llrrrrrrr",
    )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Mask bits per value both ways, per cube (log scale)."""
    paired_bars(
        path,
        [r["cube"] for r in rows],
        (
            ("zlib of the packed bits", [r["zlib_bpppb"] for r in rows]),
            ("runs (chunk format 6)", [r["runs_bpppb"] for r in rows]),
        ),
        "mask bits per value",
        log=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cubes", nargs="+", metavar="NAME", help="default: every cube")
    parser.add_argument("--out", type=Path, default=RESULTS)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    rows = []
    for name in corpus.present(args.cubes or corpus.cube_names(args.corpus), args.corpus):
        mask = cube_mask(name, args.corpus)
        if mask is None:
            continue
        row = {"cube": name, **measure(mask, args.repeats)}
        rows.append(row)
        print(f"{name}: {row['zlib_bytes']} -> {row['runs_bytes']} bytes", flush=True)
    if not rows:
        print("no cube with missing values measured; results not written")
        return 1
    ratios = [r["zlib_bytes"] / r["runs_bytes"] for r in rows]
    dec = [r["dec_runs_ms"] / r["dec_zlib_ms"] for r in rows]
    text = (
        "# Masks: runs coding (chunk format 6) against zlib of the packed bits\n\n"
        f"Whole-cube masks of the corpus cubes with NaN or nodata; times are medians of "
        f"{args.repeats} interleaved repeats on a shared machine (compare the ratios). "
        "Reproduce: `python -m benchmarks.masks --corpus <corpus>`.\n\n"
        + table(rows)
        + f"\n\nzlib / runs bytes: median {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f} to {max(ratios):.2f}); decode time runs / zlib: median "
        f"{statistics.median(dec):.2f} ({min(dec):.2f} to {max(dec):.2f}).\n"
    )
    if not save_results(
        args.out,
        "masks",
        text,
        {
            "repeats": args.repeats,
            "machine": machine_info(threads=1),
            "rows": rows,
        },
    ):
        return 1
    plot(rows, args.out / "masks.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
