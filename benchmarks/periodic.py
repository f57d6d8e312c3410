"""A daily cycle coded apart from the wavelet coder's volume: what could it gain?

Hourly fields (ERA5 2 m temperature) repeat a daily cycle. A 3-D wavelet along time
sees it as detail at every scale, since 24 steps is no power of two, and SPERR (the
wavelet profile's coder, :mod:`eocube.wavelet`) spends bits on it in every date. This
screen codes a chunk in two parts instead: its mean daily cycle (one field per hour of
the day, the mean over the chunk's days) and the chunk less that cycle, each with SPERR,
the cycle at a ``fraction`` of the bytes. The cycle costs ``period / dates`` of the
volume, so the split pays on chunks of many days.

For each cube whose time axis steps regularly by a divisor of a day (at least two days
long), each chunk length (the eocube default for the cube, half the series and the whole), each
rate and each fraction, the cube is coded chunk by chunk and PSNR (over the whole cube,
on its range) taken at the bytes spent; ``best`` keeps, per chunk, the fraction with the
least squared error (0: SPERR alone). ``shared`` codes the mean cycle of the whole series
once and every chunk less it: a store would keep that cycle beside the variable, read
once by every chunk's decode. ``eocube`` is what the wavelet coder does (docs/format.md,
section 6.10): per chunk, the period of its mean over space and per-pixel sinusoids of
that period, kept where they pay. Whole-cube SPERR is the competitor goal 3 of issue 18
measures against. Payload bytes only.

    python -m benchmarks.periodic [--cubes ...] [--rates ...]

Writes ``benchmarks/results/periodic.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import md_table, paired_bars, save_results

RESULTS = Path(__file__).parent / "results"
CUBES = ("era5_t2m_uk_744h",)
RATES = (0.1, 0.3, 1.0)
FRACTIONS = (0.0, 0.03, 0.06, 0.1, 0.15)
"""The cycle's share of a chunk's bytes (0: no cycle, SPERR alone)."""
DAY_S = 86400


def daily_period(time: np.ndarray) -> int | None:
    """Time steps a day for a datetime axis that steps regularly by a divisor of a day
    and spans at least two days; None otherwise."""
    if time.dtype.kind != "M" or time.size < 3:
        return None
    steps = np.diff(time).astype("timedelta64[s]").astype(np.int64)
    step = int(steps[0])
    if step <= 0 or np.any(steps != step) or DAY_S % step:
        return None
    period = DAY_S // step
    return period if period > 1 and time.size >= 2 * period else None


def sperr(volume: np.ndarray, bits_per_value: float) -> tuple[int, np.ndarray]:
    """SPERR's bytes for a float64 volume at ``bits_per_value``, and its decode."""
    import imagecodecs

    bits = min(max(bits_per_value, 1e-3), 64.0)
    blob = imagecodecs.sperr_encode(np.ascontiguousarray(volume), bits, "bpp", numthreads=1)
    return len(blob), np.asarray(imagecodecs.sperr_decode(blob, numthreads=1))


def mean_cycle(chunk: np.ndarray, period: int, first_phase: int = 0) -> np.ndarray:
    """The mean of a (T, Y, X) chunk at each of ``period`` phases, the first date at
    ``first_phase``; (period, Y, X)."""
    phase = (first_phase + np.arange(len(chunk))) % period
    return np.stack([chunk[phase == p].mean(axis=0) for p in range(period)])


def split_coded(
    chunk: np.ndarray, bits_per_value: float, period: int, fraction: float, first_phase: int = 0
) -> tuple[int, np.ndarray]:
    """A (T, Y, X) chunk coded as its mean cycle (``fraction`` of the bytes) and the rest;
    the bytes spent and the decode. ``fraction`` 0: SPERR on the chunk alone."""
    if fraction == 0:
        return sperr(chunk, bits_per_value)
    budget = bits_per_value * chunk.size / 8
    cycle = mean_cycle(chunk, period, first_phase)
    cycle_bytes, cycle_decoded = sperr(cycle, 8 * fraction * budget / cycle.size)
    phase = (first_phase + np.arange(len(chunk))) % period
    rest_bits = 8 * max(budget - cycle_bytes, 1.0) / chunk.size
    rest_bytes, rest_decoded = sperr(chunk - cycle_decoded[phase], rest_bits)
    return cycle_bytes + rest_bytes, rest_decoded + cycle_decoded[phase]


def shared_cycle_coded(
    band: np.ndarray, bits_per_value: float, period: int, fraction: float, chunk_dates: int
) -> tuple[int, np.ndarray]:
    """A (T, Y, X) band coded as the mean cycle of the whole series, once (``fraction``
    of the bytes), and the rest in chunks of ``chunk_dates`` dates; bytes and decode."""
    budget = bits_per_value * band.size / 8
    cycle = mean_cycle(band, period)
    cycle_bytes, cycle_decoded = sperr(cycle, 8 * fraction * budget / cycle.size)
    rest_bits = 8 * max(budget - cycle_bytes, 1.0) / band.size
    phase = np.arange(len(band)) % period
    spent, decoded = cycle_bytes, np.empty_like(band)
    for start in range(0, len(band), chunk_dates):
        cut = slice(start, start + chunk_dates)
        nbytes, rest = sperr(band[cut] - cycle_decoded[phase[cut]], rest_bits)
        spent += nbytes
        decoded[cut] = rest + cycle_decoded[phase[cut]]
    return spent, decoded


def sinusoids_coded(
    band: np.ndarray, bits_per_value: float, chunk_dates: int
) -> tuple[int, np.ndarray]:
    """A (T, Y, X) band coded in chunks of ``chunk_dates`` dates by eocube's wavelet coder
    in size mode, as a chunk of the wavelet profile is (:func:`eocube.wavelet.encode`:
    each chunk's period found and its sinusoids modelled where they pay); the bytes of
    the sections and the decode."""
    from eocube import wavelet
    from eocube.binary import ByteReader

    spent, decoded = 0, np.empty_like(band)
    for start in range(0, len(band), chunk_dates):
        chunk = band[start : start + chunk_dates, None]
        section = wavelet.encode(chunk, bits_per_value=bits_per_value, threads=1)
        spent += len(section)
        low, high = chunk.min(axis=(0, 2, 3)), chunk.max(axis=(0, 2, 3))
        decoded[start : start + len(chunk)] = wavelet.decode(
            ByteReader(section), chunk.shape, np.dtype(np.float64), low=low, high=high
        )[:, 0]
    return spent, decoded


def measure(
    band: np.ndarray,
    period: int,
    chunk_dates: int,
    rates: Sequence[float],
    fractions: Sequence[float] = FRACTIONS,
) -> list[dict[str, Any]]:
    """Each rate's PSNR (whole band, on its range) per fraction and for the best
    fraction per chunk, over chunks of ``chunk_dates`` dates of a (T, Y, X) band; and,
    under ``shared``, with one cycle for the whole series (:func:`shared_cycle_coded`)
    at the best of the nonzero fractions."""
    span = float(band.max() - band.min())

    def psnr(decoded: np.ndarray) -> float:
        mse = float(np.mean((decoded - band) ** 2))
        return math.inf if mse == 0 else 10 * math.log10(span**2 / mse)

    points = []
    for rate in rates:
        spent = dict.fromkeys(fractions, 0)
        decoded = {f: np.empty_like(band) for f in fractions}
        best_spent, best = 0, np.empty_like(band)
        chosen = []
        for start in range(0, len(band), chunk_dates):
            chunk = band[start : start + chunk_dates]
            errors = {}
            for f in fractions:
                nbytes, out = split_coded(chunk, rate, period, f, start % period)
                spent[f] += nbytes
                decoded[f][start : start + len(chunk)] = out
                errors[f] = (float(np.sum((out - chunk) ** 2)), nbytes)
            pick = min(fractions, key=lambda f: errors[f][0])
            chosen.append(pick)
            best_spent += errors[pick][1]
            best[start : start + len(chunk)] = decoded[pick][start : start + len(chunk)]
        per_fraction = {
            str(f): {"bpv": 8 * spent[f] / band.size, "psnr": psnr(decoded[f])} for f in fractions
        }
        shared = None
        for f in fractions:
            if f == 0:
                continue
            nbytes, out = shared_cycle_coded(band, rate, period, f, chunk_dates)
            if shared is None or psnr(out) > shared["psnr"]:
                shared = {"bpv": 8 * nbytes / band.size, "psnr": psnr(out), "fraction": f}
        nbytes, out = sinusoids_coded(band, rate, chunk_dates)
        model = {"bpv": 8 * nbytes / band.size, "psnr": psnr(out)}
        points.append(
            {
                "rate": rate,
                "sinusoids": model,
                "fractions": per_fraction,
                "best": {"bpv": 8 * best_spent / band.size, "psnr": psnr(best), "chosen": chosen},
                "shared": shared,
            }
        )
    return points


def render(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, run in results.items():
        for length, points in run["chunks"].items():
            for q in points:
                plain = q["fractions"]["0.0"]
                best, shared = q["best"], q["shared"]
                whole = run["whole_sperr"][str(q["rate"])]
                rows.append(
                    [
                        name,
                        length,
                        f"{q['rate']:g}",
                        f"{whole:.2f}",
                        f"{plain['psnr']:.2f}",
                        f"{best['psnr']:.2f} ({best['bpv']:.3f})",
                        f"{best['psnr'] - whole:+.2f}",
                        " ".join(f"{f:g}" for f in best["chosen"]),
                        f"{shared['psnr']:.2f} ({shared['bpv']:.3f})",
                        f"{shared['psnr'] - whole:+.2f}",
                        f"{shared['fraction']:g}",
                        f"{q['sinusoids']['psnr']:.2f} ({q['sinusoids']['bpv']:.3f})",
                        f"{q['sinusoids']['psnr'] - whole:+.2f}",
                    ]
                )
    return (
        "# A daily cycle coded apart (SPERR)\n\n"
        "Each chunk coded with SPERR alone, or as its mean daily cycle (a fraction of the "
        "bytes) and the rest; `per chunk, best` keeps per chunk the fraction with the least "
        "error. `shared`: the mean cycle of the whole series coded once (a fraction of all "
        "the bytes, the best of those tried) and each chunk less it. `eocube`: each chunk "
        "coded by eocube's wavelet coder (its period found, its per-pixel sinusoids "
        "modelled where they pay, docs/format.md section 6.10). PSNR over the whole "
        "cube on its range, payload bytes (bits per value in brackets); `vs whole` is the "
        "difference to whole-cube SPERR, goal 3's competitor. Reproduce: "
        "`python -m benchmarks.periodic --corpus <dev corpus>`.\n\n"
        + md_table(
            [
                "cube",
                "chunk dates",
                "bits/value",
                "SPERR whole cube dB",
                "SPERR per chunk dB",
                "cycle per chunk, best dB",
                "vs whole",
                "fraction per chunk",
                "shared cycle dB",
                "vs whole",
                "its fraction",
                "eocube: sinusoids per chunk dB",
                "vs whole",
            ],
            rows,
            "lllrrrrlrrrrr",
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    import xarray as xr

    from eocube import layout

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--rates", type=float, nargs="+", default=list(RATES))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    results: dict[str, dict[str, Any]] = {}
    for name in corpus.present(args.cubes, args.corpus):
        with xr.open_dataset(corpus.cube_path(name, args.corpus)) as ds:
            var = ds["data"].load()
        period = daily_period(var["time"].values)
        if period is None:
            print(f"{name}: no regular sub-daily time axis of two days or more; skipped")
            continue
        T, B, Y, X = var.shape
        default = layout.dense_time_chunk(Y * X) if layout.is_dense_series(var, "time") else T
        for b in range(B):
            band = var.values[:, b].astype(np.float64)
            label = name if B == 1 else f"{name} band {b}"
            whole = {str(r): measure(band, period, T, [r], (0.0,))[0] for r in args.rates}
            chunks = {
                str(length): measure(band, period, length, args.rates)
                for length in sorted({min(default, T), -(-T // 2), T})
            }
            results[label] = {
                "shape": [T, Y, X],
                "period": period,
                "whole_sperr": {r: q["fractions"]["0.0"]["psnr"] for r, q in whole.items()},
                "chunks": chunks,
            }
            for length, points in chunks.items():
                for q in points:
                    print(
                        f"{label} chunks of {length}: {q['rate']:g} bits/value "
                        f"SPERR {q['fractions']['0.0']['psnr']:.2f} dB, "
                        f"split {q['best']['psnr']:.2f} dB",
                        flush=True,
                    )
    text = render(results)
    rows = [[name, run] for name, run in results.items()]
    if save_results(args.out, "periodic", text, {"rates": args.rates, "rows": rows}):
        labels, plain, split, shared, modelled = [], [], [], [], []
        for name, run in results.items():
            for length, points in run["chunks"].items():
                for q in points:
                    prefix = f"{name[:8]} " if len(results) > 1 else ""
                    labels.append(f"{prefix}{length} d, {q['rate']:g} b/v")
                    whole = run["whole_sperr"][str(q["rate"])]
                    plain.append(q["fractions"]["0.0"]["psnr"] - whole)
                    split.append(q["best"]["psnr"] - whole)
                    shared.append(q["shared"]["psnr"] - whole)
                    modelled.append(q["sinusoids"]["psnr"] - whole)
        paired_bars(
            args.out / "periodic.png",
            labels,
            [
                ("SPERR per chunk", plain),
                ("cycle per chunk", split),
                ("shared cycle", shared),
                ("eocube: sinusoids per chunk", modelled),
            ],
            "dB vs whole-cube SPERR",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
