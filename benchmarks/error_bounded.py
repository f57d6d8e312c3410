"""Bits needed under a hard error bound: eocube ``max_abs_error`` against SZ3 and SPERR.

Run::

    .venv/bin/python -m benchmarks.error_bounded            # whole cubes (~3-4 min, 2 cores)
    .venv/bin/python -m benchmarks.error_bounded --quick    # first time steps, to a temp folder

For each cube (the dev Sentinel-2 cube, uint16 118x4x64x64, and ERA5 t2m, float32
744x1x33x49) and each relative bound ``rel`` in 1e-2, 3e-3, 1e-3, every band ``b`` gets
the absolute bound ``e_b = rel * (max_b - min_b)`` over its valid values, and

- **eocube**: :func:`eocube.to_eocube` with ``max_abs_error=[e_b...]`` on a Dataset holding
  only ``data`` (index coordinates kept, auxiliary coordinates dropped), default chunks
  (32 time steps); bpppb counts *every* byte of the store (metadata, coordinates), and
  the payload-only bpppb (``report.variables['data'].payload_nbytes``) is listed too;
- **eocube-t128**: the same with ``chunks={"time": 128}`` (longer video streams);
- **eocube-wavelet**: the same with ``profile="hevc-12bit-444-wavelet"``: each chunk also
  coded by SPERR at the bound, the smaller kept (:mod:`eocube.wavelet`);
- **SZ3** (pysz, ``szErrorBoundMode.ABS``, default algorithm): each band as one 3-D
  (time, y, x) field in the data's dtype (float32; integers as float32);
- **SPERR** (imagecodecs, mode ``"pwe"``, point-wise max error): each band as one 3-D
  (time, y, x) float64 field.

Every decode is brought back to the original dtype (as a user would store it) and its
largest error over valid values is checked against ``e_b`` per band; any excess is
reported as a violation. Competitors are given the bound that guarantees ``e_b`` after
that cast: for integer data ``floor(e_b) + 0.49`` and rounding (what eocube's residual
layer also bounds: the integer error ``floor(e_b)``); for float data ``e_b`` minus one
float32 ulp of the largest magnitude (rounding to float32 may add half an ulp).
Competitor bytes are their compressed streams only (SPERR's 3-D header included).

PSNR and max error follow :mod:`eocube.metrics` (docs/format.md). Times are wall seconds on
this machine (eocube: the rate search plus the write; SZ3/SPERR: compress only).

Diagnostics (what eocube's bytes are made of): for each cube and bound, every chunk
is encoded again through :func:`eocube.encode_chunk` at the crf the search chose, with
and without the bound, giving video bytes vs residual-layer bytes and the share of
values the video alone leaves outside the bound; a crf sweep on one chunk; and the
order-0 and context (left, up, previous-frame) entropy of the quantized residual
against the bytes the residual layer spends on it.

Writes ``benchmarks/results/error_bounded.json``, ``error_bounded.png`` (bpppb against
relative bound, log-log, one panel per cube) and ``error_bounded.md`` (also printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import eocube
from benchmarks import competitors, corpus
from benchmarks.common import RESULTS, machine_info, mask_bytes, to_dtype
from benchmarks.corpus import Cube
from eocube import metrics

CUBES = ("s2_l2a_worldcereal_118x4x64x64", "era5_t2m_uk_744h")
BOUNDS = (1e-2, 3e-3, 1e-3)
QUICK_TIME = {"s2_l2a_worldcereal_118x4x64x64": 32, "era5_t2m_uk_744h": 96}
EOCUBE_METHODS: dict[str, dict[str, Any]] = {
    "eocube": {},
    "eocube-t128": {"chunks": {"time": 128}},
    # the default's video, or SPERR for the chunks it codes in fewer bytes (CPU-decoded)
    "eocube-wavelet": {"profile": "hevc-12bit-444-wavelet"},
}
SWEEP_CRF = (0, 4, 8, 12, 16, 20, 24)
EOCUBE_STYLES = {
    "eocube": {"marker": "o", "color": "C3"},
    "eocube-t128": {"marker": "o", "color": "C1", "linestyle": "--"},
    "eocube-wavelet": {"marker": "s", "color": "C4", "linestyle": ":"},
}


def load(name: str, folder: Path | None, quick: bool) -> Cube:
    """The cube with only ``data`` and its index coordinates (auxiliary ones dropped).

    ``--quick`` keeps the first :data:`QUICK_TIME` steps.
    """
    cube = corpus.load_cube(name, folder, max_time=QUICK_TIME.get(name, 32) if quick else None)
    return dataclasses.replace(cube, dataset=cube.dataset.reset_coords(drop=True))


def band_bounds(cube: Cube, rel: float) -> list[float]:
    """The absolute bound of each band: ``rel`` × the band's range over its valid values."""
    out = []
    valid = cube.valid
    for b in range(cube.values.shape[1]):
        v = cube.values[:, b][valid[:, b]].astype(np.float64)
        out.append(rel * float(v.max() - v.min()) if v.size else 0.0)
    return out


# --- measuring one decode ---------------------------------------------------------------


def check(cube: Cube, decoded: np.ndarray, bounds: list[float]) -> dict[str, Any]:
    """PSNR, max error per band, and the bands whose error exceeds their bound."""
    orig = cube.values
    per_band_err = [
        metrics.max_abs_error(orig[:, b], decoded[:, b], cube.nodata) for b in range(orig.shape[1])
    ]
    violations = [
        {"band": b, "max_abs_error": err, "bound": e, "excess": err - e}
        for b, (err, e) in enumerate(zip(per_band_err, bounds, strict=True))
        if not err <= e
    ]
    return {
        "psnr": metrics.psnr(orig, decoded, cube.nodata),
        "max_abs_error_per_band": per_band_err,
        "max_err_rel": max(err / e for err, e in zip(per_band_err, bounds, strict=True) if e > 0),
        "violations": violations,
    }


def competitor_bound(e: float, band: np.ndarray) -> float:
    """The bound to give a float codec so that ``e`` holds after the cast back to the dtype."""
    if band.dtype.kind in "iu":
        return math.floor(e) + 0.49
    biggest = float(np.nanmax(np.abs(band))) if band.size else 0.0
    return max(e - float(np.spacing(band.dtype.type(biggest))), 0.0)


# --- the methods ------------------------------------------------------------------------


def run_eocube(
    cube: Cube, rel: float, chunks: dict[str, int] | None = None, profile: str | None = None
) -> dict[str, Any]:
    bounds = band_bounds(cube, rel)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "cube.eocube.zarr")
        t0 = time.perf_counter()
        report = eocube.to_eocube(
            cube.dataset,
            path,
            max_abs_error=bounds,
            chunks=chunks,
            profile=profile,
            measure=False,
            mode="w",
        )
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with eocube.open_dataset(path) as back:
            decoded = np.asarray(back["data"].transpose("time", "band", "y", "x").values)
        dec_s = time.perf_counter() - t0
    var = report.variables["data"]
    n = cube.values.size
    return {
        "nbytes": report.nbytes,
        "payload_nbytes": var.payload_nbytes,
        "bpppb": report.nbytes * 8 / n,
        "payload_bpppb": var.payload_nbytes * 8 / n,
        "crf": var.quality,
        "trials": report.trials,
        "passes": report.passes,
        "encode_s": enc_s,
        "decode_s": dec_s,
        "bounds": bounds,
        **check(cube, decoded, bounds),
    }


def run_competitor(cube: Cube, rel: float, method: competitors.Method) -> dict[str, Any]:
    """One 3-D (time, y, x) field per band.

    Invalid values (NaN, nodata) are set to their band's mean valid value before coding,
    which the coders cannot skip (SPERR aborts the process on NaN), and the mask of them
    is counted in the bytes, as the rate-distortion benchmark's competitors do
    (``benchmarks.competitors``); the error is measured over valid values only.
    """
    bounds = band_bounds(cube, rel)
    assert method.error_bounded is not None
    coder = method.error_bounded.coder
    valid = cube.valid
    values = cube.values
    nbytes = 0
    if not valid.all():
        values = cube.values.copy()
        for b in range(values.shape[1]):
            band_valid = valid[:, b]
            if band_valid.any():
                mean = values[:, b][band_valid].astype(np.float64).mean()
                values[:, b][~band_valid] = np.asarray(mean).astype(values.dtype)
        nbytes += len(mask_bytes(~valid))
    decoded = np.empty_like(cube.values)
    enc_s = 0.0
    given = []
    for b, e in enumerate(bounds):
        band = values[:, b]
        eb = competitor_bound(e, band)
        given.append(eb)
        if eb <= 0:
            raise ValueError(f"{cube.name} band {b}: bound {e} too small for {method.name}")
        t0 = time.perf_counter()
        size, dec = coder(band, eb)  # compress + decompress; decode time not reported
        enc_s += time.perf_counter() - t0
        nbytes += size
        decoded[:, b] = to_dtype(np.asarray(dec).reshape(band.shape), cube.values.dtype)
    decoded[~valid] = cube.values[~valid]
    return {
        "nbytes": nbytes,
        "bpppb": nbytes * 8 / cube.values.size,
        "encode_s": enc_s,  # compress and decompress together
        "bounds": bounds,
        "bounds_given": given,
        **check(cube, decoded, bounds),
    }


# --- diagnostics: where eocube's bytes go -----------------------------------------------


def _entropies(q: np.ndarray) -> tuple[float, float]:
    """Order-0 entropy of q and its entropy given (left, up, previous frame), bits/value."""

    def entropy(keys: np.ndarray) -> float:
        _, counts = np.unique(keys, return_counts=True)
        p = counts / counts.sum()
        return float(-(p * np.log2(p)).sum())

    q = np.clip(q, -7, 7).astype(np.int64) + 8  # 1..15
    left = np.full_like(q, 8)
    left[..., 1:] = q[..., :-1]
    up = np.full_like(q, 8)
    up[..., 1:, :] = q[..., :-1, :]
    prev = np.full_like(q, 8)
    prev[1:] = q[:-1]
    ctx = (left * 16 + up) * 16 + prev
    return entropy(q), entropy(ctx * 16 + q) - entropy(ctx)


def diagnose(cube: Cube, rel: float, crf: float, time_chunk: int = 32) -> dict[str, Any]:
    """Video vs residual bytes of every chunk at ``crf`` (eocube's default chunking)."""
    bounds = band_bounds(cube, rel)
    steps = np.array(
        [2 * math.floor(e) + 1 if cube.values.dtype.kind in "iu" else 2 * e for e in bounds]
    )
    video = total = outside = 0
    qs = []
    for t in range(0, cube.values.shape[0], time_chunk):
        block = np.ascontiguousarray(cube.values[t : t + time_chunk])
        plain = eocube.encode_chunk(block, quality=crf, nodata=cube.nodata)
        bounded = eocube.encode_chunk(block, quality=crf, nodata=cube.nodata, max_abs_error=bounds)
        video += len(plain)
        total += len(bounded)
        dec = eocube.decode_chunk(plain).astype(np.float64)
        r = block.astype(np.float64) - dec
        outside += int((np.abs(r) > np.array(bounds)[None, :, None, None]).sum())
        qs.append(np.rint(r / steps[None, :, None, None]))
    n = cube.values.size
    q = np.concatenate(qs, axis=0)
    h0 = hc = 0.0
    for b in range(q.shape[1]):
        a, c = _entropies(q[:, b])
        h0 += a / q.shape[1]
        hc += c / q.shape[1]
    return {
        "crf": crf,
        "video_bpppb": video * 8 / n,
        "residual_bpppb": (total - video) * 8 / n,
        "total_bpppb": total * 8 / n,
        "residual_share": (total - video) / total,
        "outside_bound_share": outside / n,
        "residual_entropy0_bpppb": h0,
        "residual_context_entropy_bpppb": hc,
    }


def crf_sweep(cube: Cube, rel: float) -> list[dict[str, Any]]:
    """Video and total bytes of the middle 32-step chunk over a range of crf values."""
    T = cube.values.shape[0]
    t0 = max(0, (T // 2 // 32) * 32 if T > 32 else 0)
    block = np.ascontiguousarray(cube.values[t0 : t0 + 32])
    bounds = band_bounds(cube, rel)
    out = []
    for crf in SWEEP_CRF:
        plain = len(eocube.encode_chunk(block, quality=crf, nodata=cube.nodata))
        bounded = len(
            eocube.encode_chunk(block, quality=crf, nodata=cube.nodata, max_abs_error=bounds)
        )
        out.append(
            {
                "crf": crf,
                "video_bpppb": plain * 8 / block.size,
                "total_bpppb": bounded * 8 / block.size,
            }
        )
    return out


# --- output -----------------------------------------------------------------------------


def markdown(
    records: list[dict[str, Any]],
    diagnostics: list[dict[str, Any]],
    sweeps: dict[str, Any],
    shapes: dict[str, Any],
    quick: bool,
) -> str:
    lines = [
        "# Error-bounded compression: bpppb at a hard max-abs-error bound",
        "",
        "Bound per band = relative bound × the band's range. "
        + ("QUICK run (first time steps): " if quick else "Whole cubes: ")
        + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        + ". eocube bpppb = every store byte (metadata and coordinates included); "
        "payload = chunk payloads only (video + residual layer + chunk headers, no zarr "
        "metadata or coordinates). SZ3/SPERR: compressed streams only. "
        "max err/bound = worst band's decoded max abs error over its bound (≤ 1 holds). "
        "encode s: eocube = rate search + write; SZ3/SPERR = compress + decompress.",
        "",
        "| cube | rel. bound | method | bpppb | payload bpppb | PSNR dB | max err/bound "
        "| crf | encode s | violations |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['cube']} | {r['rel_bound']:g} | {r['method']} | {r['bpppb']:.3f} | "
            f"{r.get('payload_bpppb', r['bpppb']):.3f} | {r['psnr']:.2f} | "
            f"{r['max_err_rel']:.4f} | {r.get('crf') if r.get('crf') is not None else '-'} | "
            f"{r['encode_s']:.2f} | {len(r['violations'])} |"
        )
    lines += [
        "",
        "## eocube against the best competitor (ratio = eocube bpppb / competitor bpppb; < 1 wins)",
        "",
    ]
    names = competitor_names()
    lines += [
        "| cube | rel. bound | method | " + " | ".join(f"vs {m}" for m in names) + " | verdict |",
        "|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for c in comparisons(records):
        ratios = " | ".join(f"{c[f'ratio_{m}']:.2f}" for m in names)
        lines.append(
            f"| {c['cube']} | {c['rel_bound']:g} | {c['method']} | {ratios} | {c['verdict']} |"
        )
    if diagnostics:
        lines += [
            "",
            "## Where eocube's bytes go (default chunks, at the crf its search chose)",
            "",
            "Payload bpppb from encode_chunk per 32-step chunk, with and without the bound; "
            "'outside' = share of values the video alone leaves beyond the bound; residual "
            "entropies are of the quantized residual (order 0, and given left/up/previous-"
            "frame neighbours), to compare with the bytes the layer spends.",
            "",
            "| cube | rel. bound | crf | video | residual | total | residual share | outside "
            "| H0(q) | H(q given ctx) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for d in diagnostics:
            lines.append(
                f"| {d['cube']} | {d['rel_bound']:g} | {d['crf']:g} | {d['video_bpppb']:.3f} | "
                f"{d['residual_bpppb']:.3f} | {d['total_bpppb']:.3f} | "
                f"{d['residual_share']:.0%} | {d['outside_bound_share']:.1%} | "
                f"{d['residual_entropy0_bpppb']:.3f} | {d['residual_context_entropy_bpppb']:.3f} |"
            )
    if sweeps:
        lines += [
            "",
            "## crf sweep on the middle 32-step chunk (payload bpppb: video only / with the bound)",
            "",
        ]
        crfs = SWEEP_CRF
        lines += [
            "| cube | rel. bound | " + " | ".join(f"crf {c}" for c in crfs) + " |",
            "|---|---|" + "---|" * len(crfs),
        ]
        for key, rows in sweeps.items():
            cube, rel = key.rsplit("@", 1)
            cells = " | ".join(f"{p['video_bpppb']:.2f} / {p['total_bpppb']:.2f}" for p in rows)
            lines.append(f"| {cube} | {float(rel):g} | {cells} |")
    return "\n".join(lines) + "\n"


def competitor_names() -> list[str]:
    """The competitors of this benchmark: the methods of the registry with an error bound."""
    return [m.name for m in competitors.error_bounded_methods()]


def comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """eocube's bpppb over each competitor's, per cube and bound, and the verdict."""
    by = {(r["cube"], r["rel_bound"], r["method"]): r for r in records}
    out = []
    for (cube, rel, method), r in by.items():
        if method not in EOCUBE_METHODS:
            continue
        ratios = {
            m: r["bpppb"] / by[(cube, rel, m)]["bpppb"]
            for m in competitor_names()
            if (cube, rel, m) in by
        }
        lost = [m for m, x in ratios.items() if x >= 1]
        out.append(
            {
                "cube": cube,
                "rel_bound": rel,
                "method": method,
                **{f"ratio_{m}": x for m, x in ratios.items()},
                "payload_ratio_best": r["payload_bpppb"]
                / min(by[(cube, rel, m)]["bpppb"] for m in ratios),
                "verdict": "wins"
                if not lost
                else "loses to " + ", ".join(f"{m} ({ratios[m]:.2f}x the bits)" for m in lost),
            }
        )
    return out


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cubes = list(dict.fromkeys(r["cube"] for r in records))
    fig, axes = plt.subplots(1, len(cubes), figsize=(6 * len(cubes), 4.5), squeeze=False)
    styles = {
        **EOCUBE_STYLES,
        **{m.name: m.style for m in competitors.error_bounded_methods()},
    }
    for ax, cube in zip(axes[0], cubes, strict=True):
        for method, style in styles.items():
            pts = sorted(
                (r["rel_bound"], r["bpppb"])
                for r in records
                if r["cube"] == cube and r["method"] == method
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), label=method, **style)
        pts = sorted(
            (r["rel_bound"], r["payload_bpppb"])
            for r in records
            if r["cube"] == cube and r["method"] == "eocube"
        )
        if pts:
            ax.plot(
                *zip(*pts, strict=True),
                label="eocube (payload only)",
                color="C3",
                linestyle=":",
                marker=".",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("max abs error / band range")
        ax.set_ylabel("bpppb (bits per pixel per band)")
        ax.set_title(cube, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Bits needed under a hard error bound (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="first time steps of each cube")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the byte breakdown")
    parser.add_argument(
        "--cubes",
        nargs="+",
        default=list(CUBES),
        metavar="NAME",
        help=f"cubes of the corpus to measure (default: {' '.join(CUBES)})",
    )
    corpus.add_corpus_option(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results; --quick: a temporary folder, so "
        "that a quick run never overwrites the full results)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="error_bounded_")) if args.quick else RESULTS

    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    diagnostics: list[dict[str, Any]] = []
    sweeps: dict[str, Any] = {}
    shapes = {}
    for name in args.cubes:
        cube = load(name, args.corpus, args.quick)
        shapes[name] = cube.values.shape
        print(f"{name} {cube.values.shape} {cube.values.dtype} nodata={cube.nodata}", flush=True)
        for rel in BOUNDS:
            for method, options in EOCUBE_METHODS.items():
                rec = {
                    "cube": name,
                    "rel_bound": rel,
                    "method": method,
                    **run_eocube(cube, rel, **options),
                }
                records.append(rec)
                print(
                    f"  {rel:g} {method:12s} {rec['bpppb']:.3f} bpppb (payload "
                    f"{rec['payload_bpppb']:.3f}, crf {rec['crf']}) {rec['psnr']:.2f} dB "
                    f"err/bound {rec['max_err_rel']:.4f} {rec['encode_s']:.1f} s",
                    flush=True,
                )
            for competitor in competitors.error_bounded_methods():
                rec = {
                    "cube": name,
                    "rel_bound": rel,
                    "method": competitor.name,
                    **run_competitor(cube, rel, competitor),
                }
                records.append(rec)
                print(
                    f"  {rel:g} {competitor.name:12s} {rec['bpppb']:.3f} bpppb "
                    f"{rec['psnr']:.2f} dB err/bound {rec['max_err_rel']:.4f} "
                    f"{rec['encode_s']:.1f} s",
                    flush=True,
                )
            if not args.no_diagnostics:
                crf = next(
                    r["crf"]
                    for r in records
                    if r["cube"] == name and r["rel_bound"] == rel and r["method"] == "eocube"
                )
                diagnostics.append({"cube": name, "rel_bound": rel, **diagnose(cube, rel, crf)})
                if not args.quick:
                    sweeps[f"{name}@{rel}"] = crf_sweep(cube, rel)

    violations = [
        {"cube": r["cube"], "rel_bound": r["rel_bound"], "method": r["method"], **v}
        for r in records
        for v in r["violations"]
    ]
    md = markdown(records, diagnostics, sweeps, shapes, args.quick)
    md += "\n" + (
        "No bound violations: every method kept every band within its bound.\n"
        if not violations
        else "Bound VIOLATIONS:\n" + "\n".join(f"- {v}" for v in violations) + "\n"
    )
    print()
    print(md)

    args.out.mkdir(parents=True, exist_ok=True)
    suffix = ""
    result = {
        "benchmark": "error_bounded",
        "quick": args.quick,
        "machine": machine_info(threads=0),
        "config": {
            "cubes": {k: list(v) for k, v in shapes.items()},
            "relative_bounds": list(BOUNDS),
            "eocube_methods": EOCUBE_METHODS,
            "competitors": {
                m.name: m.error_bounded.note
                for m in competitors.error_bounded_methods()
                if m.error_bounded is not None
            },
        },
        "records": records,
        "comparisons": comparisons(records),
        "violations": violations,
        "diagnostics": diagnostics,
        "crf_sweeps": sweeps,
        "seconds": time.perf_counter() - started,
    }
    (args.out / f"error_bounded{suffix}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"error_bounded{suffix}.md").write_text(md)
    plot(records, args.out / f"error_bounded{suffix}.png")
    print(f"wrote {args.out}/error_bounded{suffix}.{{json,md,png}} in {result['seconds']:.0f} s")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
