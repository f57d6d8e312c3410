"""Rate–distortion and speed of the codec core (encode_chunk / decode_chunk), per profile.

Run::

    .venv/bin/python -m benchmarks.codec_core            # full: every block, 5 crf values
    .venv/bin/python -m benchmarks.codec_core --quick    # first block of each cube, 2 crf values

Each cube of the corpus (``--corpus``, else ``$EOCUBE_CORPUS``, else ``tests/data``) is
cut along time into blocks of ``--block-time`` steps × all bands × the full y, x (a
realistic chunk); each block is encoded on its own, as a store would. Per (cube, profile,
crf) point it measures, over the whole cube:

- bpppb: every payload byte × 8 / (T·B·Y·X), headers and masks included;
- PSNR (eocube.metrics.psnr: mean over bands of the per-band PSNR, peak = the band's
  data range max − min over valid pixels, not the storage type's 65535) and the largest
  absolute error;
- encode and decode speed in MB/s of the original array (its own dtype), medians of
  ``--repeats`` / ``--decode-repeats`` runs, time.perf_counter;
- the share of decode time spent outside the video decoder (packing, copies, Python):
  1 − codec seconds (reported by decode_chunk's ``on_codec_time``) / total decode seconds.
  The goal is < 20 %; where a profile misses it, the decode of one block is profiled with
  cProfile and the functions that take the time outside the codec are listed.

Writes ``benchmarks/results/codec_core.json`` (machine info, configuration, one record
per point, interpolated PSNR at 0.1/0.3/1 bpppb, decode profiles),
``benchmarks/results/codec_core.png`` (PSNR vs bpppb, log x, one panel per cube) and
``benchmarks/results/codec_core.md`` (the tables in markdown, also printed).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import faulthandler
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import eocube
from benchmarks import anchors, corpus
from benchmarks.common import RESULTS, ROOT, TARGETS, fmt, machine_info, psnr_at
from benchmarks.corpus import Cube
from eocube import metrics
from eocube.errors import UnsupportedDataError
from eocube.profiles import Profile

CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",
    "era5_t2m_uk_744h",
    "s2_l2a_openeo_gfmap_12x5x66x64",
)

# crf sweeps from high to low quality, chosen by measurement to span ~0.1–3 bpppb on the
# Sentinel-2 and ERA5 blocks (libx265 12-bit collapses above crf ~45, benchmarks.anchors).
SWEEPS_FULL = {
    "hevc-12bit-444": (0, 10, 20, 30, 40),
    "hevc-12bit-420-luma": (0, 10, 20, 30, 40),
    "hevc-12bit-bands": (0, 10, 20, 30, 40),
    "h264-10bit": (0, 10, 20, 30, 40),
    "av1-10bit": (5, 15, 25, 35, 50),
    "vp9-8bit-444": (5, 15, 25, 35, 50),
}
SWEEPS_QUICK = {
    "hevc-12bit-444": (8, 24),
    "hevc-12bit-420-luma": (8, 24),
    "hevc-12bit-bands": (8, 24),
    "h264-10bit": (8, 24),
    "av1-10bit": (15, 35),
    "vp9-8bit-444": (15, 35),
}

OUTSIDE_GOAL = 0.20


def time_blocks(cube: Cube, block_time: int) -> list[slice]:
    """The cube cut along time into blocks of ``block_time`` steps (the last may be shorter).

    Parameters
    ----------
    cube : Cube
        The cube (from :func:`benchmarks.corpus.load_cube`).
    block_time : int
        Time steps per block, as a store's chunks would hold them.

    Returns
    -------
    list of slice
        The time range of each block, covering the whole cube.
    """
    T = cube.shape[0]
    return [slice(t, min(t + block_time, T)) for t in range(0, T, block_time)]


def warm_up(cube: Cube, profile: Profile, block_time: int, threads: int) -> None:
    """Compile the Numba kernels for this dtype and open the codec once, outside timing."""
    block = np.ascontiguousarray(cube.values[:block_time])
    try:  # quality None: the profile's default
        payload = eocube.encode_chunk(block, profile, nodata=cube.nodata, threads=threads)
    except UnsupportedDataError:
        return
    eocube.decode_chunk(payload, threads=threads)


def measure(
    cube: Cube,
    profile: Profile,
    crf: int | None,
    *,
    block_time: int,
    threads: int,
    repeats: int,
    decode_repeats: int,
) -> dict[str, Any]:
    """Encode and decode the cube block by block at ``crf``: one record of the benchmark.

    Parameters
    ----------
    cube : Cube
        The cube, as much of it as the run measures.
    profile : Profile
        The eocube profile.
    crf : int or None
        The quality; None for a lossless profile.
    block_time : int
        Time steps per block.
    threads : int
        Codec threads (0: the codec decides).
    repeats, decode_repeats : int
        Encodes and decodes timed (medians are kept).

    Returns
    -------
    dict
        Sizes, PSNR, errors and speeds; ``skipped`` says why a profile could not encode.
    """
    original = cube.values
    blocks_of_time = time_blocks(cube, block_time)
    record: dict[str, Any] = {
        "cube": cube.name,
        "profile": profile.name,
        "encoder": profile.encoder,
        "layout": profile.layout,
        "bits": profile.bits,
        "lossless": profile.lossless,
        "gpu_decodable": profile.gpu_decodable,
        "crf": crf,
        "options": profile.encoder_options(crf),
        "dtype": str(original.dtype),
        "shape": list(original.shape),
        "block_time": blocks_of_time[0].stop - blocks_of_time[0].start,
        "n_blocks": len(blocks_of_time),
        "values": int(original.size),
        "original_bytes": int(original.nbytes),
        "nodata": cube.nodata,
    }
    blocks = [np.ascontiguousarray(cube.values[s]) for s in blocks_of_time]

    enc_times = []
    payloads: list[bytes] = []
    for _ in range(repeats):
        payloads = []
        t0 = time.perf_counter()
        try:
            for i, block in enumerate(blocks):  # noqa: B007 - i names the failing block
                payloads.append(
                    eocube.encode_chunk(
                        block, profile, quality=crf, nodata=cube.nodata, threads=threads
                    )
                )
        except UnsupportedDataError as exc:
            record["skipped"] = f"block {i} (of {len(blocks)}): {exc}"
            return record
        enc_times.append(time.perf_counter() - t0)

    dec_times, codec_times = [], []
    decoded: list[np.ndarray] = []
    for _ in range(decode_repeats):
        codec = [0.0]

        def on_codec(seconds: float, codec: list[float] = codec) -> None:
            codec[0] += seconds

        t0 = time.perf_counter()
        decoded = [
            eocube.decode_chunk(p, threads=threads, on_codec_time=on_codec) for p in payloads
        ]
        dec_times.append(time.perf_counter() - t0)
        codec_times.append(codec[0])

    reconstructed = np.concatenate(decoded, axis=0)
    nbytes = sum(len(p) for p in payloads)
    enc_s = statistics.median(enc_times)
    dec_s = statistics.median(dec_times)
    codec_s = statistics.median(codec_times)
    valid = metrics.valid_mask(original, cube.nodata)
    rng = float(np.ptp(original[valid].astype(np.float64))) if valid.any() else 0.0
    max_err = metrics.max_abs_error(original, reconstructed, cube.nodata)
    record.update(
        skipped=None,
        payload_bytes=int(nbytes),
        bpppb=metrics.bpppb(nbytes, original.shape),
        compression_ratio=metrics.compression_ratio(nbytes, original.shape, original.dtype),
        psnr=metrics.psnr(original, reconstructed, cube.nodata),
        psnr_per_band=[
            float(x) for x in metrics.psnr_per_band(original, reconstructed, cube.nodata)
        ],
        max_abs_error=max_err,
        max_abs_error_of_range=max_err / rng if rng else None,
        bit_exact=bool(
            np.array_equal(original, reconstructed, equal_nan=original.dtype.kind == "f")
        ),
        encode_s=enc_s,
        decode_s=dec_s,
        decode_codec_s=codec_s,
        encode_mb_s=original.nbytes / enc_s / 1e6,
        decode_mb_s=original.nbytes / dec_s / 1e6,
        encode_mvalues_s=original.size / enc_s / 1e6,
        decode_mvalues_s=original.size / dec_s / 1e6,
        outside_codec_share=max(0.0, 1.0 - codec_s / dec_s),
        encode_times_s=enc_times,
        decode_times_s=dec_times,
        decode_codec_times_s=codec_times,
    )
    return record


def profile_decode(
    cube: Cube, profile: Profile, crf: int | None, block_time: int, threads: int
) -> dict[str, Any]:
    """cProfile the decode of the cube's first block; the top functions by own time."""
    block = np.ascontiguousarray(cube.values[:block_time])
    payload = eocube.encode_chunk(block, profile, quality=crf, nodata=cube.nodata, threads=threads)
    eocube.decode_chunk(payload, threads=threads)
    prof = cProfile.Profile()
    codec = [0.0]
    prof.enable()
    t0 = time.perf_counter()
    for _ in range(5):
        eocube.decode_chunk(
            payload, threads=threads, on_codec_time=lambda s: codec.__setitem__(0, codec[0] + s)
        )
    total = time.perf_counter() - t0
    prof.disable()
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({func})",
                "ncalls": ncalls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
                "share_of_decode": tottime / total if total else None,
            }
        )
    rows.sort(key=lambda r: r["tottime_s"], reverse=True)
    return {
        "cube": cube.name,
        "profile": profile.name,
        "crf": crf,
        "block_shape": list(block.shape),
        "runs": 5,
        "total_s_under_cprofile": total,
        "codec_s_under_cprofile": codec[0],
        "top": rows[:12],
    }


def markdown_points(records: list[dict[str, Any]]) -> str:
    lines = [
        "| cube | profile | crf | bpppb | ratio | PSNR dB | max abs err | enc MB/s | dec MB/s "
        "| outside codec |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        crf = "lossless" if r["lossless"] else str(r["crf"])
        if r.get("skipped"):
            skip = f"skipped: {r['skipped']}"
            lines.append(f"| {r['cube']} | {r['profile']} | {crf} | {skip} |||||||")
            continue
        err = r["max_abs_error"]
        err_s = f"{err:.4g}" if isinstance(err, float) else str(err)
        lines.append(
            f"| {r['cube']} | {r['profile']} | {crf} | {fmt(r['bpppb'], '.3f', '–')} | "
            f"{fmt(r['compression_ratio'], '.1f', '–')} | {fmt(r['psnr'], '.2f', '–')} | "
            f"{err_s} | {fmt(r['encode_mb_s'], '.1f', '–')} | "
            f"{fmt(r['decode_mb_s'], '.1f', '–')} | "
            f"{r['outside_codec_share'] * 100:.0f} % |"
        )
    return "\n".join(lines)


def markdown_targets(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| cube | profile | PSNR @0.1 | PSNR @0.3 | PSNR @1.0 bpppb |",
        "|---|---|---:|---:|---:|",
    ]
    for s in summary:
        vals = " | ".join(fmt(s["psnr_at"][str(t)], ".1f", "–") for t in TARGETS)
        lines.append(f"| {s['cube']} | {s['profile']} | {vals} |")
    return "\n".join(lines)


def markdown_outside(records: list[dict[str, Any]]) -> str:
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if not r.get("skipped"):
            by_profile.setdefault(r["profile"], []).append(r)
    lines = [
        "| profile | outside codec, median / max over points | time-weighted | "
        "goal < 20 % (median) |",
        "|---|---:|---:|---|",
    ]
    for name, rs in by_profile.items():
        shares = [r["outside_codec_share"] for r in rs]
        overall = 1 - sum(r["decode_codec_s"] for r in rs) / sum(r["decode_s"] for r in rs)
        ok = "met" if statistics.median(shares) < OUTSIDE_GOAL else "**missed**"
        lines.append(
            f"| {name} | {statistics.median(shares) * 100:.0f} % / {max(shares) * 100:.0f} % | "
            f"{overall * 100:.0f} % | {ok} |"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cubes = list(dict.fromkeys(r["cube"] for r in records))
    profiles = list(dict.fromkeys(r["profile"] for r in records))
    colours = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(profiles)}
    fig, axes = plt.subplots(1, len(cubes), figsize=(5.6 * len(cubes), 5.6), squeeze=False)
    for ax, cube in zip(axes[0], cubes, strict=True):
        for name in profiles:
            rs = [
                r
                for r in records
                if r["cube"] == cube and r["profile"] == name and not r.get("skipped")
            ]
            lossy = sorted((r for r in rs if not r["lossless"]), key=lambda r: r["bpppb"])
            if lossy:
                ax.plot(
                    [r["bpppb"] for r in lossy],
                    [r["psnr"] for r in lossy],
                    marker="o",
                    ms=4,
                    color=colours[name],
                    label=name,
                )
            for r in rs:
                if r["lossless"]:
                    ax.axvline(r["bpppb"], color=colours[name], ls=":", lw=1.2)
                    ax.annotate(
                        f"{name}: {r['bpppb']:.2f} bpppb",
                        (r["bpppb"], 0.98),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        fontsize=7,
                        color=colours[name],
                        ha="right",
                        va="top",
                    )
        for (label, vals), marker in zip(
            anchors.codec_core_points(cube).items(), ("X", "s"), strict=False
        ):
            xs = [t for t, v in zip(anchors.RATES, vals, strict=True) if v is not None]
            ys = [v for v in vals if v is not None]
            ax.plot(
                xs,
                ys,
                ls="none",
                marker=marker,
                ms=7,
                mfc="none",
                color="black",
                label=f"{label} (benchmarks.anchors)",
            )
        shape = next(r["shape"] for r in records if r["cube"] == cube)
        bt = next(r["block_time"] for r in records if r["cube"] == cube)
        ax.set_title(f"{cube}\n{'×'.join(map(str, shape))}, blocks of {bt} steps", fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("bpppb (all payload bytes)")
        ax.set_ylabel("PSNR dB (per-band data-range peak, mean over bands)")
        ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False
    )
    fig.suptitle(title + "\n(dotted vertical lines: lossless profiles)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The options of ``python -m benchmarks.codec_core``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.codec_core", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument(
        "--quick", action="store_true", help="first block of each cube, 2 crf values, fewer repeats"
    )
    p.add_argument("--threads", type=int, default=0, help="codec threads (0: the codec decides)")
    p.add_argument("--block-time", type=int, default=32, help="time steps per block (default 32)")
    p.add_argument("--repeats", type=int, help="encode repeats (default 3, quick 1)")
    p.add_argument("--decode-repeats", type=int, help="decode repeats (default 5, quick 3)")
    p.add_argument("--cubes", nargs="+", default=list(CUBES), help="cube names in the corpus")
    corpus.add_corpus_option(p)
    p.add_argument("--profiles", nargs="+", help="profiles (default: all available)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument(
        "--name", default="codec_core", help="stem of the result files (default codec_core)"
    )
    p.add_argument(
        "--x265-params",
        default="",
        help="experiment: append these to the x265-params of every libx265 profile "
        "(e.g. info=0); use with --name to keep the default results",
    )
    p.add_argument("--no-profile", action="store_true", help="skip cProfile of slow decodes")
    p.add_argument(
        "--watchdog",
        type=float,
        default=300.0,
        help="seconds one point may take before the run dumps every thread's stack and exits "
        "(a codec deadlock then fails loudly instead of hanging; 0: off)",
    )
    return p


def chosen_profiles(names: list[str] | None, x265_params: str) -> list[Profile]:
    """The profiles measured (default: all, lossy first), with ``x265_params`` appended."""
    available = eocube.available_profiles()
    names = names or sorted(available, key=lambda n: (available[n].lossless, n))
    profiles = [available[n] for n in names]
    if not x265_params:
        return profiles
    # an experiment on the profiles (e.g. info=0); the results say so in "options"
    return [
        dataclasses.replace(
            p,
            options={
                **p.options,
                "x265-params": ":".join(
                    x for x in (p.options.get("x265-params", ""), x265_params) if x
                ),
            },
        )
        if p.encoder == "libx265"
        else p
        for p in profiles
    ]


def crf_points(
    profile: Profile, sweeps: dict[str, tuple[int, ...]], quick: bool
) -> tuple[int | None, ...]:
    """The crf values measured for a profile; (None,) for a lossless one."""
    if profile.lossless:
        return (None,)
    if profile.name in sweeps:
        return sweeps[profile.name]
    # a profile this benchmark does not know: spread over its range
    q = profile.quality
    assert q is not None
    n = 2 if quick else 5
    return tuple(round(float(x)) for x in np.linspace(q.min, min(q.max, 45), n))


def _progress(cube: Cube, profile: Profile, crf: int | None, rec: dict[str, Any], t0: float) -> str:
    """One line on stderr for a measured point."""
    what = "lossless" if crf is None else f"crf {crf}"
    if rec.get("skipped"):
        return f"  {cube.name} {profile.name} {what}: skipped ({rec['skipped']})"
    return (
        f"  {cube.name} {profile.name} {what}: {rec['bpppb']:.3f} bpppb, "
        f"{rec['psnr']:.2f} dB, "
        f"outside codec {rec['outside_codec_share'] * 100:.0f} % "
        f"({time.perf_counter() - t0:.1f} s)"
    )


def run_points(
    cubes: list[Cube],
    profiles: list[Profile],
    sweeps: dict[str, tuple[int, ...]],
    args: argparse.Namespace,
    repeats: int,
    decode_repeats: int,
) -> list[dict[str, Any]]:
    """Every (cube, profile, crf) point, under the watchdog; one record each."""
    records: list[dict[str, Any]] = []
    for cube in cubes:
        for profile in profiles:
            if args.watchdog:
                faulthandler.dump_traceback_later(args.watchdog, exit=True)
            warm_up(cube, profile, args.block_time, args.threads)
            for crf in crf_points(profile, sweeps, args.quick):
                if args.watchdog:
                    faulthandler.dump_traceback_later(args.watchdog, exit=True)
                t0 = time.perf_counter()
                rec = measure(
                    cube,
                    profile,
                    crf,
                    block_time=args.block_time,
                    threads=args.threads,
                    repeats=repeats,
                    decode_repeats=decode_repeats,
                )
                records.append(rec)
                print(_progress(cube, profile, crf, rec, t0), file=sys.stderr, flush=True)
    faulthandler.cancel_dump_traceback_later()
    return records


def psnr_summary(
    cubes: list[Cube], profiles: list[Profile], records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """PSNR at 0.1 / 0.3 / 1 bpppb of every lossy profile on every cube."""
    summary = []
    for cube in cubes:
        for profile in profiles:
            if profile.lossless:
                continue
            rs = [r for r in records if r["cube"] == cube.name and r["profile"] == profile.name]
            summary.append(
                {
                    "cube": cube.name,
                    "profile": profile.name,
                    "psnr_at": {str(t): psnr_at(rs, t) for t in TARGETS},
                }
            )
    return summary


def slow_decode_profiles(
    cubes: list[Cube],
    profiles: list[Profile],
    records: list[dict[str, Any]],
    block_time: int,
    threads: int,
) -> list[dict[str, Any]]:
    """cProfile of the worst decode of each profile that misses the outside-codec goal."""
    decode_profiles = []
    for profile in profiles:
        rs = [r for r in records if r["profile"] == profile.name and not r.get("skipped")]
        if not rs:
            continue
        if statistics.median(r["outside_codec_share"] for r in rs) < OUTSIDE_GOAL:
            continue
        worst = max(rs, key=lambda r: r["outside_codec_share"])
        cube = next(c for c in cubes if c.name == worst["cube"])
        decode_profiles.append(profile_decode(cube, profile, worst["crf"], block_time, threads))
    return decode_profiles


def markdown_decode_profile(dp: dict[str, Any]) -> list[str]:
    """The functions that take a slow decode's time, as a markdown table."""
    out = [
        f"\ncProfile, {dp['profile']} decode of one "
        f"{'x'.join(map(str, dp['block_shape']))} block "
        f"of {dp['cube']} (crf {dp['crf']}), {dp['runs']} runs: total "
        f"{dp['total_s_under_cprofile']:.3f} s, in codec {dp['codec_s_under_cprofile']:.3f} s",
        "| function | calls | own time s | share |\n|---|---:|---:|---:|",
    ]
    for row in dp["top"][:8]:
        out.append(
            f"| {row['function']} | {row['ncalls']} | {row['tottime_s']:.4f} | "
            f"{row['share_of_decode'] * 100:.1f} % |"
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report of a run (``<name>.md``): points, PSNR at fixed rates, decode overhead."""
    info, config, records = result["machine"], result["config"], result["records"]
    out = [
        f"## eocube codec core ({result['mode']}; {info['cpu_usable']} CPUs, {info['cpu_model']}, "
        f"threads={config['threads']}, av {info['av']}, numpy {info['numpy']}, "
        f"numba {info['numba']})\n",
        "PSNR: mean over bands of the per-band PSNR with a data-range peak (docs/format.md); "
        "bpppb counts every payload byte.\n",
        markdown_points(records),
        "\n### PSNR (dB) at fixed rates (interpolated in log bpppb, no extrapolation)\n",
        markdown_targets(result["psnr_at_bpppb"]),
        "\n### Decode time outside the video codec (goal < 20 %)\n",
        markdown_outside(records),
    ]
    for dp in result["decode_profiles"]:
        out += markdown_decode_profile(dp)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module's docstring); 0 when it completes."""
    args = parser().parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    decode_repeats = args.decode_repeats or (3 if args.quick else 5)
    sweeps = SWEEPS_QUICK if args.quick else SWEEPS_FULL
    profiles = chosen_profiles(args.profiles, args.x265_params)

    info = machine_info(args.threads)  # before the run: the git state of what is measured
    started = time.perf_counter()
    max_time = args.block_time if args.quick else None  # quick: the first block only
    cubes = [corpus.load_cube(name, args.corpus, max_time=max_time) for name in args.cubes]
    records = run_points(cubes, profiles, sweeps, args, repeats, decode_repeats)
    elapsed = time.perf_counter() - started
    decode_profiles = []
    if not args.no_profile:
        decode_profiles = slow_decode_profiles(
            cubes, profiles, records, args.block_time, args.threads
        )

    args.out.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    result = {
        "benchmark": "codec_core",
        "mode": mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": elapsed,
        "machine": info,
        "config": {
            "block_time": args.block_time,
            "repeats": repeats,
            "decode_repeats": decode_repeats,
            "threads": args.threads,
            "x265_params_extra": args.x265_params or None,
            "sweeps": {p.name: list(sweeps.get(p.name, ())) for p in profiles if not p.lossless},
            "psnr": "eocube.metrics.psnr: mean over bands of 10 log10(peak_b^2 / MSE_b), "
            "peak_b = max - min of band b's valid original values",
            "outside_codec_share": "1 - codec seconds (decode_chunk on_codec_time) "
            "/ decode seconds",
            "speeds": "MB/s of the original array in its dtype; medians over repeats",
        },
        "records": records,
        "psnr_at_bpppb": psnr_summary(cubes, profiles, records),
        "decode_profiles": decode_profiles,
    }
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=1, default=float, allow_nan=True))
    png_path = args.out / f"{args.name}.png"
    plot(
        records,
        png_path,
        f"eocube codec core, {mode} run: {info['cpu_usable']} CPUs, threads={args.threads}, "
        f"av {info['av']}, numba {info['numba']}"
        + (f", x265-params +{args.x265_params}" if args.x265_params else ""),
    )
    md_path = args.out / f"{args.name}.md"
    text = markdown(result)
    md_path.write_text(text)
    print(text, end="")

    def shown(path: Path) -> Path:
        return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    print(f"\nwrote {shown(json_path)}, {shown(png_path)}, {shown(md_path)} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
