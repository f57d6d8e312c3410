"""Two leftover bands as luma frames or as one 4:4:4 frame, cube by cube, at matched rates.

A ``planar3`` block of 2, 5, 8, ... bands has two bands (after any rotation) that fill
no 4:4:4 frame. :func:`eocube.encode_chunk` codes them with ``leftover_pair="off"`` (one
per frame of a second, single-plane stream, as before chunk format 8), ``"always"``
(together in 4:4:4 frames of the main stream, a constant third plane: layout
``planar3-pair``) and ``"auto"`` (both tried, the better kept; the default). For each
cube (its first dates, the bands named, a window of at most ``SIDE`` × ``SIDE`` pixels where
the most values are valid: one chunk)
and a crf sweep, the table gives PSNR (payload basis) at 0.1, 0.3 and 1 bpppb,
interpolated in log bpppb, the difference of each way to ``"off"`` and the encode time
against ``"off"``'s.

    python -m benchmarks.leftover_pair [--cubes NAME:DATES[:BANDS[:SIDE]] ...]
        [--no-alternatives]

A second table measures layouts tried and not built (:data:`ALTERNATIVES`).

Writes ``benchmarks/results/leftover_pair.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, interp_log, md_table, paired_bars
from benchmarks.x265_options import versus

RESULTS = Path(__file__).parent / "results"
# NAME:DATES[:BANDS[:SIDE]]: the 2- and 5-band dev cubes, and two-band series cut from
# Sentinel-2 cubes (red and near infrared, the bands of NDVI; red and green) as the
# vegetation-index pairs of issue 18 stand for
CUBES = (
    "stars_bcsd_obs_12x2x33x81:12",
    "s2_l2a_openeo_gfmap_12x5x66x64:12",
    "ocean_colour_c2rcc_xcube_5x5x1000x2000:5::256",
    "s2_l2a_openeo_gfmap_19x4x52x46:19:2,3",
    "s2_l2a_worldcereal_118x4x64x64:32:2,3",
    "s2_l2a_fusets_meadow_58x3x44x48:32:0,2",
    "s2_l1c_eolearn_5x13:5:3,7:256",
)
RATES = (0.1, 0.3, 1.0)
WAYS = ("off", "always", "auto")
# Layouts tried by reshaping the block rather than by a layout of the format, each
# against the block as it is, mean dB at equal rate over the sweep: one leftover band in
# a 4:4:4 frame (two constant bands added, the PSNR of the real ones), and a one-band
# series with three dates per 4:4:4 frame (a KLT over time)
ALTERNATIVES = (
    ("one leftover band in a 4:4:4 frame", "s2_l2a_openeo_gfmap_19x4x52x46:19"),
    ("one leftover band in a 4:4:4 frame", "s2_l2a_worldcereal_72x4x64x64:32"),
    ("one band in a 4:4:4 frame", "s2_l1c_eolearn_ndvi_68x1:66"),
    ("three dates per 4:4:4 frame", "s2_l1c_eolearn_ndvi_68x1:66"),
)


def parse_spec(spec: str) -> tuple[str, int, list[int] | None, int | None]:
    """``NAME:DATES[:BANDS[:SIDE]]`` as (name, dates, bands or None, side or None)."""
    parts = [*spec.split(":"), "", ""]
    name, dates, bands, side = parts[0], int(parts[1]), parts[2], parts[3]
    return (
        name,
        dates,
        [int(b) for b in bands.split(",")] if bands else None,
        int(side) if side else None,
    )


def sweep(block: np.ndarray, way: str, crfs: list[float]) -> list[dict[str, Any]]:
    """(crf, bpppb, PSNR, encode s, layout) of ``block`` coded with ``leftover_pair=way``."""
    from eocube.chunk import decode_chunk, encode_chunk, read_header
    from eocube.metrics import psnr

    points = []
    for crf in crfs:
        t0 = time.perf_counter()
        payload = encode_chunk(block, quality=crf, leftover_pair=way)
        encode_s = time.perf_counter() - t0
        decoded = decode_chunk(payload)
        points.append(
            {
                "crf": crf,
                "bpppb": len(payload) * 8 / block.size,
                "psnr": psnr(block, decoded[: block.shape[0]]),
                "encode_s": encode_s,
                "layout": read_header(payload).layout,
            }
        )
    return points


def alternative(block: np.ndarray, way: str, crfs: list[float]) -> tuple[float, list[float]]:
    """Mean PSNR difference (dB, at equal payload rate where both sweeps reach) of the
    block coded the ``way`` of :data:`ALTERNATIVES` against the block as it is, and the
    difference at each of its points."""
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.metrics import psnr

    T, B, Y, X = block.shape
    if way == "three dates per 4:4:4 frame":
        coded = block.reshape(T // 3, 3 * B, Y, X)

        def back(decoded: np.ndarray) -> np.ndarray:
            return decoded[: T // 3].reshape(T, B, Y, X)

    else:
        pad = (-B) % 3
        constant = np.full((T, pad, Y, X), block.flat[0], block.dtype)
        coded = np.concatenate([block, constant], axis=1)

        def back(decoded: np.ndarray) -> np.ndarray:
            return decoded[:, :B]

    def curve(arr: np.ndarray, undo: Any) -> np.ndarray:
        points = []
        for crf in crfs:
            payload = encode_chunk(np.ascontiguousarray(arr), quality=crf)
            decoded = undo(decode_chunk(payload))
            points.append((np.log(len(payload) * 8 / block.size), psnr(block, decoded)))
        return np.array(points)

    base = curve(block, lambda d: d[:T])
    points = curve(coded, back)
    diffs = versus(points, base)
    return (float(np.mean(diffs)) if diffs else float("nan")), diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES), help="NAME:DATES[:BANDS[:SIDE]]")
    p.add_argument("--crfs", type=float, nargs="+", default=[4, 10, 16, 22, 28, 34, 40])
    p.add_argument("--no-alternatives", action="store_true", help="skip the other layouts' table")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    specs = {parse_spec(s)[0]: s for s in args.cubes}
    results: dict[str, Any] = {}
    rows = []
    for name in corpus.present(list(specs), args.corpus):
        spec = specs[name]
        _, dates, bands, side = parse_spec(spec)
        # a window of side x side pixels where the most values are valid
        full = corpus.load_cube(name, args.corpus, max_time=dates).values
        limit = None if side is None else full.shape[0] * full.shape[1] * side * side
        block = corpus.load_cube(name, args.corpus, max_time=dates, max_values=limit).values
        if bands is not None:
            block = block[:, bands]
        block = np.ascontiguousarray(block)
        sweep(block[:1], "off", args.crfs[:1])  # compiled kernels and codecs warm
        curves = {way: sweep(block, way, args.crfs) for way in WAYS}
        at = {
            way: {
                rate: interp_log(sorted((q["bpppb"], q["psnr"]) for q in curves[way]), rate)
                for rate in RATES
            }
            for way in WAYS
        }
        seconds = {way: sum(q["encode_s"] for q in curves[way]) for way in WAYS}
        results[spec] = {"shape": list(block.shape), "curves": curves, "psnr_at": at}
        row: list[Any] = [f"{name} {tuple(block.shape)}"]
        for rate in RATES:
            off = at["off"][rate]
            row.append("n/a" if off is None else f"{off:.2f}")
            for way in WAYS[1:]:
                other = at[way][rate]
                row.append("n/a" if off is None or other is None else f"{other - off:+.2f}")
        row += [
            f"{seconds['auto'] / seconds['off']:.2f}",
            f"{sum(q['layout'] == 'planar3-pair' for q in curves['auto'])}/{len(args.crfs)}",
        ]
        rows.append(row)
        print(" | ".join(map(str, row)), flush=True)
    if not rows:
        print("no cube measured; results not written")
        return 1
    tried: list[dict[str, Any]] = []
    for way, spec in ALTERNATIVES if not args.no_alternatives else ():
        name, dates, _, _ = parse_spec(spec)
        if not corpus.has_cube(name, args.corpus):
            continue
        block = np.ascontiguousarray(corpus.load_cube(name, args.corpus, max_time=dates).values)
        mean, diffs = alternative(block, way, args.crfs)
        tried.append({"way": way, "cube": spec, "mean_db": mean, "db_at_points": diffs})
        print(f"{way} on {spec}: {mean:+.2f} dB", flush=True)
    header = ["cube (T, B, Y, X)"]
    for rate in RATES:
        header += [f"off @{rate:g} dB", f"always − off @{rate:g}", f"auto − off @{rate:g}"]
    header += ["encode time auto / off", "auto chose the pair"]
    state = git_state()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "leftover_pair.json").write_text(
        json.dumps(
            {"git": state, "crfs": args.crfs, "cubes": results, "alternatives": tried}, indent=1
        )
    )

    def delta(spec: str, rate: float) -> float:
        at = results[spec]["psnr_at"]
        off, auto = at["off"][rate], at["auto"][rate]
        return float("nan") if off is None or auto is None else auto - off

    paired_bars(
        args.out / "leftover_pair.png",
        list(results),
        (
            ("auto − off at 0.1 bpppb", [delta(s, 0.1) for s in results]),
            ("auto − off at 1 bpppb", [delta(s, 1.0) for s in results]),
        ),
        "PSNR difference (dB)",
    )
    text = (
        "# Two leftover bands: luma frames or one 4:4:4 frame\n\n"
        "PSNR (dB, payload basis) of the default profile at fixed bpppb with the two "
        "leftover bands of a block as frames of a single-plane stream (`off`, as before "
        "chunk format 8), together in 4:4:4 frames of the main stream (`always`, layout "
        "`planar3-pair`) and the writer's choice (`auto`, the default); the first dates of "
        "each cube, the bands named, as one chunk; crf "
        f"{', '.join(f'{c:g}' for c in args.crfs)}; encode time of the whole sweep; how "
        "many crf points `auto` coded with the pair. Commit "
        f"{str(state.get('commit', '?'))[:7]}. Reproduce: "
        "`python -m benchmarks.leftover_pair`.\n\n" + md_table(header, rows) + "\n"
    )
    if tried:
        text += (
            "\n## Other layouts tried\n\nMean PSNR difference (dB) at equal payload rate "
            "to the block coded as it is, over the sweep's points where both reach: one "
            "leftover band (or a single band) in a 4:4:4 frame, two constant bands added "
            "to the block and the PSNR taken over the real ones; a one-band series with "
            "three dates per 4:4:4 frame (rotated together: a KLT over time).\n\n"
            + md_table(
                ["layout", "cube", "mean dB", "dB at the points"],
                [
                    [
                        str(t["way"]),
                        str(t["cube"]),
                        f"{t['mean_db']:+.2f}",
                        " ".join(f"{d:+.2f}" for d in t["db_at_points"]),
                    ]
                    for t in tried
                ],
            )
            + "\n"
        )
    (args.out / "leftover_pair.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
