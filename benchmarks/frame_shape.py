"""Frame shape: chunks coded upright, transposed (flag TRANSPOSED), with 16-pixel CTUs
and as mosaics of several dates a frame (flag MOSAIC).

x265 codes whole blocks: it pads a frame to 8 x 8 blocks, a lossy frame to more than one
CTU (32 px) in width, and frames of its unsafe widths (33 to 48 columns, where it corrupts
its heap) to 64 columns (``eocube.video.frame_size``). A chunk 46 px wide is then coded in
a frame 64 px wide; transposed, 46 px become its height. Since chunk format 11 the writer
transposes a chunk's frames where the codec's frame is smaller that way
(``eocube.chunk.transposes``). This measures what that gains, on crops of dev cubes of
such widths, and what transposing loses where the transpose is the larger frame (hourly
ERA5, 33 x 49 px). The third coding, 16-pixel CTUs (``ctu=16``, which needs only 17
columns), is measured for the frames that stay padded whichever way round (32 x 32 px
tiles: 64 columns at ``ctu=32``); it is not used, since x265 writes out of bounds at
``ctu=16`` on narrow frames (valgrind: invalid writes at widths 24 and 32).

Small frames cost a codec more than their pixels: every frame has its start code, NAL
and slice headers and the flush of its entropy coder (about 14 bytes with x265), and a
32 x 32 px tile is coded 64 columns wide. Since chunk format 12 the writer also tries
such chunks as mosaics, several dates side by side in a frame
(``eocube.chunk.mosaic_grid``, ``eocube.mosaic``), and keeps the better coding by PSNR
and bytes (``frames="auto"``). This measures the mosaic against the writer's coding of
one date a frame (``rule``: transposed where the rule says so), and what the writer
keeps (``auto``; on 64 dates or more, rows as frames are tried too).

Each crop (the first ``dates`` dates, ``rows`` x ``cols`` px) is coded by
``encode_chunk`` with the default profile at ``--crfs``, each way, and the PSNR of each
at 0.1 / 0.3 / 1 bpppb (payload, interpolated in log bpppb) is compared with the upright
coding's (transposed, ctu16) or the rule's (mosaic, auto).

    python -m benchmarks.frame_shape [--corpus DIR] [--cubes ...] [--crfs ...]

Writes ``benchmarks/results/frame_shape.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, interp_log, md_table, paired_bars, save_results

RESULTS = Path(__file__).parent / "results"
CROPS: tuple[tuple[str, int, int, int], ...] = (
    # (cube, dates, rows, cols)
    ("s2_l2a_openeo_gfmap_19x4x52x46", 19, 52, 46),  # the whole cube: one chunk
    ("s2_l2a_worldcereal_118x4x64x64", 32, 64, 46),
    ("s2_l2a_worldcereal_12x9x100x100", 12, 60, 40),
    ("l8_ny18_014031", 5, 64, 44),
    ("s2_l2a_fusets_field_33x3x57x56", 33, 57, 40),
    ("s2_l1c_eolearn_ndvi_68x1", 68, 100, 36),
    ("era5_t2m_uk_744h", 64, 33, 49),  # the transpose is larger: never transposed
    ("s2_l2a_worldcereal_118x6x32x32", 32, 32, 32),  # square: padded either way
    ("s2_l2a_fusets_meadow_58x3x44x48", 32, 44, 48),
    ("stars_bcsd_obs_12x2x33x81", 12, 33, 81),
    ("s2_l2a_worldcereal_118x4x64x64", 32, 64, 64),  # 4096 px: no mosaic tried
)
RATES = (0.1, 0.3, 1.0)
WAYS = ("upright", "transposed", "ctu16", "rule", "mosaic", "auto")
BASELINE = {"transposed": "upright", "ctu16": "upright", "mosaic": "rule", "auto": "rule"}
"""What each way's gain is measured against."""
_FRAMES = {"mosaic": "mosaic", "auto": "auto"}


def _profile(way: str) -> Any:
    import eocube

    prof = eocube.get_profile("hevc-12bit-444")
    if way != "ctu16":
        return prof
    params = prof.options["x265-params"].replace("ctu=32", "ctu=16")
    return dataclasses.replace(prof, options={**prof.options, "x265-params": params})


def curve(
    block: np.ndarray, nodata: float | None, crfs: tuple[float, ...], way: str
) -> list[tuple[float, float]]:
    """(payload bpppb, PSNR) per crf, the block coded ``way`` (none: a mosaic where the
    writer would not try one)."""
    import contextlib

    from eocube import chunk
    from eocube.metrics import psnr

    if way == "mosaic":
        prof = _profile(way)
        T, _, Y, X = block.shape
        if chunk.mosaic_grid(prof, prof.encoder_options(crfs[0]), T, Y, X) is None:
            return []
    # the writer's rule, forced one way or the other for the first three ways
    forced = (
        mock.patch.object(chunk, "transposes", return_value=way == "transposed")
        if way in ("upright", "transposed", "ctu16")
        else contextlib.nullcontext()
    )
    points = []
    with forced:
        for crf in crfs:
            payload = chunk.encode_chunk(
                block, _profile(way), quality=crf, nodata=nodata, frames=_FRAMES.get(way, "time")
            )
            decoded = chunk.decode_chunk(payload)
            points.append((len(payload) * 8 / block.size, psnr(block, decoded, nodata)))
    return sorted(points)


def measure(
    name: str, dates: int, rows: int, cols: int, crfs: tuple[float, ...], folder: Path | None
) -> dict[str, Any]:
    """One crop's curves, each way, and their PSNR at :data:`RATES`."""
    import eocube
    from eocube.chunk import mosaic_grid, transposes

    cube = corpus.load_cube(name, folder)
    block = np.ascontiguousarray(cube.values[:dates, :, :rows, :cols])
    prof = eocube.get_profile("hevc-12bit-444")
    curves = {way: curve(block, cube.nodata, crfs, way) for way in WAYS}
    at = {way: [interp_log(curves[way], r) if curves[way] else None for r in RATES] for way in WAYS}
    gain = {
        way: [
            None if a is None or b is None else b - a
            for a, b in zip(at[BASELINE[way]], at[way], strict=True)
        ]
        for way in BASELINE
    }
    options = prof.encoder_options(crfs[0])
    return {
        "cube": name,
        "shape": list(block.shape),
        "rule_transposes": transposes(prof, options, rows, cols),
        "mosaic_grid": mosaic_grid(prof, options, dates, rows, cols),
        "curves": curves,
        "psnr": at,
        "gain_db": gain,
    }


def _cells(values: list[float | None]) -> list[str]:
    return ["n/a" if v is None else f"{v:+.2f}" for v in values]


def render(run: dict[str, Any]) -> str:
    """The markdown table of a run."""
    table = []
    for row in run["rows"]:
        t, b, y, x = row["shape"]
        grid = row.get("mosaic_grid")
        table.append(
            [
                row["cube"],
                f"{t} × {b} × {y} × {x}",
                "yes" if row["rule_transposes"] else "no",
                "—" if grid is None else f"{grid[0]} × {grid[1]}",
                *(cell for way in BASELINE for cell in _cells(row["gain_db"][way])),
            ]
        )
    rates = [f"{r:g}" for r in RATES]
    return (
        "# Frame shape: upright, transposed, 16-pixel CTUs, mosaics\n\n"
        "`hevc-12bit-444` through `encode_chunk`, the first dates of each cube cropped to "
        "small frames; PSNR gain (dB) at equal payload rate (interpolated in log bpppb; n/a "
        "where a sweep does not reach, or no mosaic is tried). transposed and ctu16: over "
        'the upright coding; mosaic (several dates a frame, `frames="mosaic"`) and auto '
        '(what the writer keeps, `frames="auto"`: one date a frame or the mosaic, rows '
        "as frames too on 64 dates or more): over the writer's coding of one date a frame "
        "('rule': transposed where `eocube.chunk.transposes` says so, where the codec's "
        "frame is strictly smaller transposed). 'grid': the mosaic tried "
        "(`eocube.chunk.mosaic_grid`: frames under 64 × 64 px). 16-pixel CTUs are "
        "measured, not used: x265 writes out of bounds at `ctu=16` on narrow frames "
        f"(valgrind). Commit {str(run['git'].get('commit', '?'))[:7]}. Reproduce: "
        "`python -m benchmarks.frame_shape`.\n\n"
        + md_table(
            [
                "cube",
                "block",
                "rule",
                "grid",
                *(f"{way} @{r}" for way in BASELINE for r in rates),
            ],
            table,
            "llll" + "r" * len(BASELINE) * len(RATES),
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=[c[0] for c in CROPS], help="crops of these")
    p.add_argument("--crfs", type=float, nargs="+", default=[0, 6, 12, 18, 24, 30, 36])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    rows = []
    present = set(corpus.present(args.cubes, args.corpus))
    for name, dates, height, width in CROPS:
        if name not in present:
            continue
        row = measure(name, dates, height, width, tuple(args.crfs), args.corpus)
        rows.append(row)
        gains = "  ".join(f"{w} {' / '.join(_cells(row['gain_db'][w]))}" for w in BASELINE)
        print(f"{name:34s} {gains} dB at {RATES}", flush=True)
    run = {"rates": RATES, "crfs": args.crfs, "rows": rows, "git": git_state()}
    if not save_results(args.out, "frame_shape", render(run), run):
        return 1

    def at(way: str, rate: float) -> list[float]:
        i = RATES.index(rate)
        return [r["gain_db"][way][i] if r["gain_db"][way][i] is not None else 0.0 for r in rows]

    paired_bars(
        args.out / "frame_shape.png",
        [r["cube"] for r in rows],
        (
            ("transposed, 0.3 bpppb", at("transposed", 0.3)),
            ("transposed, 1 bpppb", at("transposed", 1.0)),
            ("ctu16, 0.3 bpppb", at("ctu16", 0.3)),
            ("auto (mosaic kept), 0.1 bpppb", at("auto", 0.1)),
            ("auto (mosaic kept), 0.3 bpppb", at("auto", 0.3)),
        ),
        "dB over the upright coding (transposed, ctu16) or the rule's (auto)",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
