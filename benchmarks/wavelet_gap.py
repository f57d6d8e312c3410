"""The wavelet profile against SPERR on the whole cube: where per-chunk coding loses.

``hevc-12bit-444-wavelet`` codes a chunk by SPERR where SPERR codes it better than the
video (docs/format.md, section 6.10); the competitor in ``benchmarks.rd`` is SPERR on
each band's whole (T, Y, X) volume. On hourly ERA5 2 m temperature the profile stayed
0.07 to 0.33 dB behind it at equal payload rate before its daily cycle was modelled
apart (it is 0.07 to 0.12 dB ahead with it), and it was up to 0.2 dB behind on
ERA-Interim u/v/z before it split a chunk's bytes among the bands. This benchmark
measures where that goes, on those two cubes:

- ``pieces`` (a dense series, ERA5 hourly 2 m temperature): SPERR alone, at equal bits
  per value, on the whole series and on time pieces of 128, 256 (the default chunk of a
  dense series on a small grid, ``eocube.layout.DENSE_TIME_MAX``) and 372 dates (half the
  series): each piece is a separate volume, as a chunk is; and the 256-date pieces with
  their bytes split among them for the least error over the series (whether what the
  pieces lose is their shares or their edges);
- ``stores``: the profile's stores of that series written with time chunks of 256 (the
  default), 372 and the whole series, and of the multi-band field below in its default
  chunks, at crf ``--crfs``: payload bpppb and PSNR;
- ``allocation`` (a multi-band field, ERA-Interim u/v/z): every band at SPERR's equal
  bits per value, as the profile codes them, against a split of the same bytes among
  the bands chosen from each band's own curve: every band at one of the rates of
  ``BPP_GRID`` (a factor of 2 ** (1/4) apart) within one or two steps of the equal share,
  the best combination (all of them tried) that spends no more. An encoder would code
  each band three or five times to choose so.

Each row gives PSNR (``eocube.metrics.psnr``: the mean over bands of each band's PSNR
on its range) minus that of whole-cube SPERR at the same rate (interpolated in log
bits per value; n/a where the whole-cube curve does not reach).

    python -m benchmarks.wavelet_gap [--corpus DIR] [--pieces N ...] [--store-chunks N ...]

Writes ``benchmarks/results/wavelet_gap.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, interp_log, md_table, paired_bars, save_results

RESULTS = Path(__file__).parent / "results"
SERIES = "era5_t2m_uk_744h"
BANDS = "erainterim_uvz"
PIECES = (128, 256, 372)
STORE_CHUNKS = (256, 372)
SPLIT_PIECES = 256
"""The pieces whose bytes are also split among them (:func:`in_pieces_split`)."""
MAX_SPLIT_PIECES = 4
"""At most this many pieces are split (9 ** pieces combinations are tried)."""
SPERR_BPP = tuple(float(0.05 * 2 ** (k / 2)) for k in range(11))
"""0.05 to 1.6 bits per value, a factor of 2 ** (1/2) apart. At a factor of 2 the straight
line between two points, in log rate, overstated SPERR where its curve bends: at the
points between, +0.04 to +0.30 dB on hourly ERA5 2 m temperature (+0.30 at 1.1 bits per
value), -0.03 to +0.08 on ERA-Interim u/v/z."""
BPP_GRID = tuple(float(0.025 * 2 ** (k / 4)) for k in range(25))
"""0.025 to 1.6 bits per value, a factor of 2 ** (1/4) apart."""
PROFILE = "hevc-12bit-444-wavelet"


def sperr(values: np.ndarray, bpp: float) -> tuple[int, np.ndarray]:
    """Bytes and decode of SPERR at ``bpp`` on each band's (T, Y, X) volume, as in
    ``benchmarks.rd`` (``benchmarks.competitors``: mask and side information counted)."""
    from benchmarks.competitors import sperr_decode, sperr_encode

    enc = sperr_encode(values, None, {"bpp": bpp})
    return enc.nbytes, sperr_decode(enc)


def in_pieces(values: np.ndarray, dates: int, bpp: float) -> tuple[int, np.ndarray]:
    """SPERR at ``bpp`` on consecutive pieces of ``dates`` dates, each its own volume."""
    nbytes, parts = 0, []
    for start in range(0, values.shape[0], dates):
        n, decoded = sperr(values[start : start + dates], bpp)
        nbytes += n
        parts.append(decoded)
    return nbytes, np.concatenate(parts)


def in_pieces_split(values: np.ndarray, dates: int, bpp: float) -> tuple[int, np.ndarray]:
    """As :func:`in_pieces`, with the bytes of equal shares split among the pieces for
    the least squared error over all of them: each piece coded at ``bpp`` times
    ``2 ** (k / 4)`` for k in -4 .. 4, the best combination that spends no more kept
    (all of them tried)."""
    pieces = [values[start : start + dates] for start in range(0, values.shape[0], dates)]
    coded = [[sperr(p, bpp * 2 ** (k / 4)) for k in range(-4, 5)] for p in pieces]
    budget = sum(c[4][0] for c in coded)
    best: tuple[float, tuple[int, ...]] = (np.inf, (4,) * len(pieces))
    for pick in np.ndindex(*(9,) * len(pieces)):
        if sum(coded[i][k][0] for i, k in enumerate(pick)) > budget:
            continue
        error = sum(
            float(np.sum((coded[i][k][1].astype(np.float64) - p) ** 2))
            for i, (k, p) in enumerate(zip(pick, pieces, strict=True))
        )
        best = min(best, (error, pick))
    pick = best[1]
    nbytes = sum(coded[i][k][0] for i, k in enumerate(pick))
    return nbytes, np.concatenate([coded[i][k][1] for i, k in enumerate(pick)])


def curve(values: np.ndarray, code: Any) -> list[tuple[float, float]]:
    """(bits per value, PSNR) of ``code(values, bpp)`` at each of :data:`SPERR_BPP`."""
    from eocube.metrics import psnr

    points = []
    for bpp in SPERR_BPP:
        nbytes, decoded = code(values, bpp)
        points.append((nbytes * 8 / values.size, psnr(values, decoded)))
    return points


def versus(points: list[tuple[float, float]], whole: list[tuple[float, float]]) -> list[Any]:
    """PSNR of each point minus whole-cube SPERR's at its rate (None where not reached)."""
    out = []
    for rate, db in points:
        ref = interp_log(sorted(whole), rate)
        out.append(None if ref is None else db - ref)
    return out


def store_points(
    values: np.ndarray, dataset: Any, time_chunk: int | None, crfs: tuple[float, ...]
) -> list:
    """(payload bpppb, PSNR) of the profile's stores of ``dataset`` in ``time_chunk`` dates."""
    import xarray as xr

    import eocube
    from eocube.metrics import psnr

    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for crf in crfs:
            path = os.path.join(tmp, f"c{crf}.eocube")
            report = eocube.to_eocube(
                dataset,
                path,
                profile=PROFILE,
                crf=crf,
                chunks=None if time_chunk is None else {"time": time_chunk},
                measure=False,
            )
            payload = sum(v.payload_nbytes for v in report.variables.values())
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                decoded = np.asarray(ds["data"].values)
            points.append((payload * 8 / values.size, psnr(values, decoded)))
    return points


def band_curves(values: np.ndarray) -> np.ndarray:
    """(bands, len(BPP_GRID), 2): each band's (bits per value, PSNR) by SPERR alone."""
    from eocube.metrics import psnr

    B = values.shape[1]
    out = np.zeros((B, len(BPP_GRID), 2))
    for b in range(B):
        band = values[:, b : b + 1]
        for i, bpp in enumerate(BPP_GRID):
            nbytes, decoded = sperr(band, bpp)
            out[b, i] = nbytes * 8 / band.size, psnr(band, decoded)
    return out


def allocate(curves: np.ndarray, level: int, reach: int) -> tuple[float, float]:
    """The best split of the bytes of equal shares at ``level`` among the bands.

    Each band takes one of its grid points within ``reach`` steps of ``level``; every
    combination is tried, and the one with the highest mean PSNR that spends no more than
    the equal shares is kept. Returns (bits per value, mean PSNR)."""
    B, n, _ = curves.shape
    choices = np.arange(max(0, level - reach), min(n, level + reach + 1))
    budget = curves[:, level, 0].sum() * (1 + 1e-9)
    rate = np.zeros(1)
    db = np.zeros(1)
    for b in range(B):  # all combinations, band by band (len(choices) ** B of them)
        rate = (rate[:, None] + curves[b, choices, 0][None, :]).ravel()
        db = (db[:, None] + curves[b, choices, 1][None, :]).ravel()
        keep = rate <= budget  # a partial sum over budget stays over it
        rate, db = rate[keep], db[keep]
    best = int(np.argmax(db))
    return float(rate[best] / B), float(db[best] / B)


def measure(
    folder: Path | None,
    crfs: tuple[float, ...],
    pieces: tuple[int, ...] = PIECES,
    store_chunks: tuple[int, ...] = STORE_CHUNKS,
    max_values: int | None = None,
    split_pieces: int = SPLIT_PIECES,
) -> dict[str, Any]:
    """The three parts, on the cubes the corpus holds (cropped to ``max_values``)."""
    run: dict[str, Any] = {"rows": []}
    for name in corpus.present([SERIES], folder):
        cube = corpus.load_cube(name, folder, max_values=max_values)
        values = cube.values
        whole = curve(values, sperr)
        run["whole"] = whole
        for dates in pieces:
            pts = curve(values, lambda v, bpp, d=dates: in_pieces(v, d, bpp))
            label = f"SPERR in pieces of {dates} dates"
            run["rows"].append(_row("pieces", name, label, pts, whole, f"SPERR, {dates} d"))
            print(f"pieces of {dates}: {_fmt(run['rows'][-1])}", flush=True)
        if 1 < -(-values.shape[0] // split_pieces) <= MAX_SPLIT_PIECES:
            pts = curve(values, lambda v, bpp: in_pieces_split(v, split_pieces, bpp))
            label = f"SPERR in pieces of {split_pieces} dates, bytes split among them"
            short = f"split, {split_pieces} d"
            run["rows"].append(_row("pieces", name, label, pts, whole, short))
            print(f"{label}: {_fmt(run['rows'][-1])}", flush=True)
        for time_chunk in (*store_chunks, values.shape[0]):
            pts = store_points(values, cube.dataset, time_chunk, crfs)
            label = f"{PROFILE}, chunks of {time_chunk} dates"
            run["rows"].append(_row("stores", name, label, pts, whole, f"store, {time_chunk} d"))
            print(f"{label}: {_fmt(run['rows'][-1])}", flush=True)
    for name in corpus.present([BANDS], folder):
        cube = corpus.load_cube(name, folder, max_values=max_values)
        values = cube.values
        pts = store_points(values, cube.dataset, None, crfs)
        label = f"{PROFILE}, default chunks"
        run["rows"].append(_row("stores", name, label, pts, curve(values, sperr), "store"))
        print(f"{label}: {_fmt(run['rows'][-1])}", flush=True)
        curves = band_curves(values)
        equal = [
            (float(curves[:, i, 0].mean()), float(curves[:, i, 1].mean()))
            for i in range(len(BPP_GRID))
        ]
        for reach, label, short in (
            (1, "split of equal bytes, within 2 ** (1/4) of the share", "split, 1 step"),
            (2, "split of equal bytes, within 2 ** (1/2) of the share", "split, 2 steps"),
        ):
            pts = [allocate(curves, i, reach) for i in range(len(BPP_GRID))]
            run["rows"].append(_row("allocation", name, label, pts, equal, short))
            print(f"{label}: {_fmt(run['rows'][-1])}", flush=True)
    return run


def _row(part: str, cube: str, label: str, points: list, whole: list, short: str) -> dict[str, Any]:
    return {
        "part": part,
        "cube": cube,
        "variant": label,
        "short": short,
        "points": [[float(r), float(p)] for r, p in points],
        "delta_db": versus(points, whole),
    }


def _fmt(row: dict[str, Any]) -> str:
    return " ".join(
        f"{r:.3f}:{'n/a' if d is None else f'{d:+.2f}'}"
        for (r, _), d in zip(row["points"], row["delta_db"], strict=True)
    )


def render(run: dict[str, Any]) -> str:
    """The markdown table of a run."""
    rows = []
    for r in run["rows"]:
        deltas = [d for d in r["delta_db"] if d is not None]
        cells = ", ".join(
            f"{rate:.3f}: {'n/a' if d is None else f'{d:+.2f}'}"
            for (rate, _), d in zip(r["points"], r["delta_db"], strict=True)
        )
        rows.append(
            [
                r["part"],
                r["cube"],
                r["variant"],
                f"{min(deltas):+.2f} .. {max(deltas):+.2f}" if deltas else "n/a",
                cells,
            ]
        )
    return (
        "# The wavelet profile against whole-cube SPERR\n\n"
        "dB = PSNR minus that of the reference at the same bits per value (payload), "
        "interpolated in log rate: whole-cube SPERR for `pieces` and `stores`, every band "
        "at SPERR's equal bits per value for `allocation`. Reproduce: "
        "`python -m benchmarks.wavelet_gap --corpus <dev corpus>`.\n\n"
        + md_table(["part", "cube", "variant", "dB (min .. max)", "rate: dB"], rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--crfs", type=float, nargs="+", default=[40, 32, 24, 16, 8, 0, -6])
    p.add_argument("--pieces", type=int, nargs="+", default=list(PIECES))
    p.add_argument("--store-chunks", type=int, nargs="+", default=list(STORE_CHUNKS))
    p.add_argument("--split-pieces", type=int, default=SPLIT_PIECES)
    p.add_argument("--max-values", type=int, help="crop each cube's y and x to this many values")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    run = measure(
        args.corpus,
        tuple(args.crfs),
        tuple(args.pieces),
        tuple(args.store_chunks),
        args.max_values,
        args.split_pieces,
    )
    run["git"] = git_state()
    if not save_results(args.out, "wavelet_gap", render(run), run):
        return 1
    rows = run["rows"]
    paired_bars(
        args.out / "wavelet_gap.png",
        [r["short"] for r in rows],
        (
            (
                "worst",
                [min((d for d in r["delta_db"] if d is not None), default=0.0) for r in rows],
            ),
            ("best", [max((d for d in r["delta_db"] if d is not None), default=0.0) for r in rows]),
        ),
        "dB against the reference",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
