"""The order a chunk's dates are coded in: time order against paths through the dates.

For each cube (the first ``--dates`` dates, all bands, as one chunk with the cube's nodata,
default profile), at the crf values of ``--crfs``, :func:`eocube.encode_chunk` codes the
chunk

- in time order (``date_order="time"``, the baseline);
- along each candidate path of :func:`eocube.dateorder.candidates` (the nearest date next,
  that path shortened by 2-opt, time order shortened by 2-opt), forced;
- along the shortest of them, forced (a choice without a trial);
- as the writer does by default (``date_order="auto"``: the shortest candidate, taken as
  it is when it is far shorter than time order, else tried against it on a window), and
  with every path tried, the shortest alone or all three, at the profile's preset and
  at the fastest one.

Each curve's PSNR is compared with time order's interpolated at the same payload rate
(log bpppb); the table gives the mean difference, the path's length against time
order's (the sum of the distances between consecutive dates, :mod:`eocube.dateorder`),
and the default's encode time against time order's.

    python -m benchmarks.date_order [--cubes ...] [--dates 32] [--crfs 6 14 22 30]

Writes ``benchmarks/results/date_order.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, md_table
from benchmarks.x265_options import versus

RESULTS = Path(__file__).parent / "results"
CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",
    "s2_l2a_worldcereal_72x4x64x64",
    "s2_l2a_worldcereal_118x6x32x32",
    "s2_l2a_worldcereal_12x9x100x100",
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_openeo_gfmap_12x5x66x64",
    "s2_l2a_fusets_meadow_58x3x44x48",
    "s2_l2a_fusets_field_33x3x57x56",
    "s2_l1c_eolearn_ndvi_68x1",
    "s2_l1c_eolearn_5x13",
    "l8_ny18_013032",
    "l8_ny18_014031",
    "l8_ny18_014032",
    "stars_cmip3_tos_24x1x170x180",
    "stars_stageiv_precip_23x1x118x87",
    "stars_bcsd_obs_12x2x33x81",
    "era5_ens_z_t",
    "era5_t2m_uk_744h",
)
PATHS = ("nearest date next", "nearest, 2-opt", "time order, 2-opt")


def curve(
    block: np.ndarray, crfs: tuple[float, ...], date_order: Any, nodata: float | None = None
) -> tuple[np.ndarray, float, list[Any]]:
    """(log bpppb, PSNR) per crf, the seconds the encodes took, and the order each
    payload holds (None: time order)."""
    from eocube.chunk import decode_chunk, encode_chunk, read_header
    from eocube.metrics import psnr

    points, seconds, orders = [], 0.0, []
    for crf in crfs:
        t0 = time.perf_counter()
        payload = encode_chunk(block, quality=crf, nodata=nodata, date_order=date_order)
        seconds += time.perf_counter() - t0
        decoded = decode_chunk(payload)
        points.append((np.log(len(payload) * 8 / block.size), psnr(block, decoded, nodata)))
        order = read_header(payload).date_order
        orders.append(None if order is None else order.tolist())
    return np.array(points), seconds, orders


def paths(
    block: np.ndarray, nodata: float | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The block's date distances and each candidate path, as the writer makes them (the
    paths equal to time order included, which the writer leaves out)."""
    import eocube
    from eocube import dateorder
    from eocube.chunk import _VideoCoding
    from eocube.packing import band_maps

    prof = eocube.get_profile()
    maps = band_maps(block, prof.bits, exact=False, nodata=nodata)
    coding = _VideoCoding(prof, maps, prof.encoder_options(None), nodata, False, 0)
    codes, height, width, _ = coding.frame_codes(block)
    D = dateorder.distances(codes, height, width)
    T = D.shape[0]
    greedy = dateorder._greedy(D, 0)
    found = {
        PATHS[0]: greedy,
        PATHS[1]: dateorder._two_opt(D, greedy),
        PATHS[2]: dateorder._two_opt(D, np.arange(T, dtype=np.int64)),
    }
    return D, found


def measure(
    name: str, block: np.ndarray, crfs: tuple[float, ...], nodata: float | None = None
) -> dict[str, Any]:
    from eocube import dateorder

    T = block.shape[0]
    time_order = np.arange(T)
    base, base_s, _ = curve(block, crfs, "time", nodata)
    D, found = paths(block, nodata)
    time_length = dateorder.path_length(D, time_order)
    row: dict[str, Any] = {
        "cube": name,
        "shape": list(block.shape),
        "nodata": nodata,
        "paths": {},
    }
    for label, order in found.items():
        length = dateorder.path_length(D, order) / time_length if time_length else 1.0
        if np.array_equal(order, time_order):
            row["paths"][label] = {"length": length, "mean_db": 0.0, "same_as_time": True}
            continue
        points, _, _ = curve(block, crfs, order.tolist(), nodata)
        diffs = versus(points, base)
        row["paths"][label] = {
            "length": length,
            "mean_db": float(np.mean(diffs)) if diffs else float("nan"),
            "db_at_points": diffs,
        }
    shortest = min(found, key=lambda k: dateorder.path_length(D, found[k]))
    row["shortest"] = {"path": shortest, **row["paths"][shortest]}
    for key, settings in VARIANTS.items():
        with _writer_settings(**settings):
            points, seconds, orders = curve(block, crfs, "auto", nodata)
        diffs = versus(points, base)
        row[key] = {
            "mean_db": float(np.mean(diffs)) if diffs else float("nan"),
            "db_at_points": diffs,
            "time_ratio": seconds / base_s,
            "ordered_at_crfs": sum(o is not None for o in orders),
        }
    return row


VARIANTS: dict[str, dict[str, Any]] = {
    "auto": {},
    "always tried": {"clear": 0.0},
    "three tried": {"clear": 0.0, "candidates": 3},
    "three tried, ultrafast": {"clear": 0.0, "candidates": 3, "preset": "ultrafast"},
}
"""The writer as it is (``auto``), and with other trial settings: no path taken without
a trial (eocube.dateorder's ``CLEAR`` at 0), the three candidates tried in place of the
shortest alone (eocube.chunk's ``ORDER_CANDIDATES``), at x265's fastest preset
(``ORDER_PROBE_PRESET``)."""


@contextlib.contextmanager
def _writer_settings(
    clear: float | None = None, candidates: int | None = None, preset: str | None = None
) -> Iterator[None]:
    from eocube import chunk, dateorder

    saved = chunk.ORDER_CANDIDATES, chunk.ORDER_PROBE_PRESET, dateorder.CLEAR
    if clear is not None:
        dateorder.CLEAR = clear
    if candidates is not None:
        chunk.ORDER_CANDIDATES = candidates
    chunk.ORDER_PROBE_PRESET = preset
    try:
        yield
    finally:
        chunk.ORDER_CANDIDATES, chunk.ORDER_PROBE_PRESET, dateorder.CLEAR = saved


def render(run: dict[str, Any]) -> str:
    rows = run["rows"]
    table = []
    for r in rows:
        cells = [r["cube"], "×".join(map(str, r["shape"]))]
        for label in PATHS:
            p = r["paths"][label]
            db = "= time" if p.get("same_as_time") else f"{p['mean_db']:+.2f}"
            cells.append(f"{db} ({p['length']:.2f})")
        s = r["shortest"]
        cells.append("= time" if s.get("same_as_time") else f"{s['mean_db']:+.2f}")
        a = r["auto"]
        cells += [
            f"{a['mean_db']:+.2f}",
            f"{a['ordered_at_crfs']} of {len(run['crfs'])}",
            f"×{a['time_ratio']:.2f}",
        ]
        cells += [
            f"{r[k]['mean_db']:+.2f} (×{r[k]['time_ratio']:.2f})" for k in VARIANTS if k != "auto"
        ]
        table.append(cells)
    autos = [r["auto"]["mean_db"] for r in rows]
    ratios = [r["auto"]["time_ratio"] for r in rows]
    header = [
        "cube",
        "chunk (T×B×Y×X)",
        *(f"{label} dB (length)" for label in PATHS),
        "shortest, no trial dB",
        "writer (auto) dB",
        "crfs ordered",
        "auto encode time",
        *(f"{k} dB (time)" for k in VARIANTS if k != "auto"),
    ]
    git = run["git"]
    return (
        "# Date order: paths through a chunk's dates against time order\n\n"
        f"Mean PSNR difference (dB) to time order at the same payload rate; first "
        f"{run['dates']} dates of each cube as one chunk with its nodata, default profile, crf "
        f"{', '.join(f'{c:g}' for c in run['crfs'])}. In brackets: the path's length over "
        "time order's (sum of the mean absolute code differences between consecutive "
        "dates); '= time': the path is time order. 'writer (auto)': `date_order=\"auto\"`, "
        "the candidates tried on a window (or the whole chunk when the window is half of it); "
        "'crfs ordered': at how many crfs it stored an order other than time; its encode time "
        "against time order's. 'always tried': the shortest path tried against time order "
        "even where it is far shorter; 'three tried': the three candidates tried; "
        "'ultrafast': tried at x265's fastest preset. "
        f"Commit {git.get('commit', '?')[:7]}"
        f"{' (modified: ' + ', '.join(git['dirty']) + ')' if git.get('dirty') else ''}. "
        "Reproduce: `python -m benchmarks.date_order`.\n\n"
        + md_table(header, table)
        + f"\n\nMedian over the cubes: writer {np.median(autos):+.2f} dB "
        f"({min(autos):+.2f} to {max(autos):+.2f}), encode time ×{np.median(ratios):.2f} "
        f"(×{min(ratios):.2f} to ×{max(ratios):.2f}).\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--crfs", type=float, nargs="+", default=[6, 14, 22, 30])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    crfs = tuple(args.crfs)
    rows = []
    for name, block, nodata in corpus.first_dates(args.cubes, args.dates, args.corpus):
        if block.shape[0] < 3:
            print(f"{name}: {block.shape[0]} dates, nothing to order")
            continue
        curve(block[:4], crfs[:1], "auto", nodata)  # kernels and codecs warm: time alike
        row = measure(name, block, crfs, nodata)
        rows.append(row)
        print(
            f"{name:34s} "
            + " ".join(
                f"{k}: {v['mean_db']:+.3f} ({v['length']:.2f})" for k, v in row["paths"].items()
            )
            + f" | auto {row['auto']['mean_db']:+.3f} x{row['auto']['time_ratio']:.2f}",
            flush=True,
        )
    if not rows:
        print("no cube measured; results not written")
        return 1
    run = {"git": git_state(), "crfs": crfs, "dates": args.dates, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "date_order.json").write_text(json.dumps(run, indent=1))
    text = render(run)
    (args.out / "date_order.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
