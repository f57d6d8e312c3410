"""Rate–distortion and speed of eocube against the reference approach and the competitors.

Run::

    .venv/bin/python -m benchmarks.rd --quick   # 3 small cubes, short sweeps (a few minutes)
    .venv/bin/python -m benchmarks.rd           # every cube of the dev corpus (~25 min, 2 cores)

The dev corpus is ``../shared/data`` when present, else ``tests/data``. Cubes larger than
``--max-values`` values are cropped spatially (all bands and dates kept; the window with
the most valid values), and the crop is recorded. Per cube, in one run:

- eocube: :func:`eocube.to_eocube` into ``memory://`` with each lossy profile (its own
  band layout) over a crf sweep, and the lossless profiles (``ffv1-lossless``; and
  ``hevc-lossless`` where the range fits 12 bits). Only the ``data`` variable and its
  coordinates are written (the cube's separate cloud ``mask`` layer is dropped, so every
  method compresses the same values). ``bpppb`` counts every byte of the store
  (metadata, coordinates, masks); ``bpppb_payload`` the chunk payloads only. Decoding is
  end to end: ``xr.open_dataset(store, engine="eocube")["data"].values``; the codec alone
  is the time spent inside the video decoder when the same chunk payloads are decoded
  one after another with one thread (``decode_chunk(on_codec_time=...)``);
- the reference approach of ANCHORS.md, reimplemented (benchmarks.reference): its bpppb
  counts video bytes only (padded bands included), its own basis;
- the competitors (benchmarks.competitors): SZ3, SPERR, ZFP, bit rounding + zstd,
  JPEG-XL, JPEG 2000, HTJ2K; lossless zstd, JPEG-XL, JPEG-LS.

PSNR, bpppb, compression ratio and max abs error are those of :mod:`eocube.metrics`
(docs/format.md: per-band data-range peak over valid values, mean over bands). Speeds are MB/s
of the original array in its dtype (median of the decode repeats; one encode).

Writes into ``benchmarks/results/rd`` (``--quick``: ``benchmarks/results/rd/quick``):
``results.jsonl`` (one record per point), ``<cube>.md`` and ``<cube>.png`` per cube,
``summary.md`` (the goals of issue 5, met or missed, and the figures behind the
defaults). Per-cube parts live in ``points/`` so that a run can be resumed
(``--resume``) or a cube rerun (``--cubes``), and ``--report-only`` rebuilds the reports.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import math
import statistics
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common, competitors, reference
from benchmarks.common import TARGETS, fmt, md_table

OUT_FULL = common.RESULTS / "rd"
OUT_QUICK = common.RESULTS / "rd" / "quick"

QUICK_CUBES = ("s2_l2a_openeo_gfmap_12x5x66x64", "l8_ny18_014031", "era5_t2m_uk_744h")
QUICK_MAX_TIME = 96

X265_CRFS = (0, 8, 16, 24, 32, 40)
SWEEPS_FULL: dict[str, tuple[float, ...]] = {
    "hevc-12bit-444": X265_CRFS,
    "hevc-12bit-420-luma": X265_CRFS,
    "hevc-12bit-bands": X265_CRFS,
    "av1-10bit": (10, 25, 40, 52, 63),
    "h264-10bit": (0, 12, 24, 36, 48),
    "vp9-8bit-444": (4, 20, 36, 50, 63),
}
SWEEPS_QUICK: dict[str, tuple[float, ...]] = {
    "hevc-12bit-444": (0, 10, 20, 30, 40),
    "hevc-12bit-420-luma": (0, 10, 20, 30, 40),
    "hevc-12bit-bands": (0, 10, 20, 30, 40),
    "av1-10bit": (15, 35, 55),
    "h264-10bit": (5, 20, 35),
    "vp9-8bit-444": (10, 30, 50),
}
LOSSLESS_PROFILES = ("ffv1-lossless", "hevc-lossless")
REFERENCE_CRFS_FULL = X265_CRFS
REFERENCE_CRFS_QUICK = (0, 10, 20, 30, 40)
DEFAULT_PROFILE = "hevc-12bit-444"
COMPETITOR_RATES = (0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)
# ANCHORS.md "Measured on our own data": PSNR at 0.1 / 0.3 / 1 bpppb (payload bytes, docs/format.md
# PSNR) of the reference's own code and of the competitors, to check our reimplementation.
ANCHORS_MEASURED: dict[str, dict[str, tuple[float | None, ...]]] = {
    "s2_l2a_worldcereal_118x4x64x64": {
        "reference": (37.8, 44.5, 51.8),
        "SZ3": (21.3, 31.5, 42.1),
        "SPERR": (35.8, 41.2, 47.7),
        "JPEG-XL": (None, 37.5, 46.1),
    },
    "s2_l2a_worldcereal_12x9x100x100": {
        "reference": (None, 39.0, 47.6),
        "SZ3": (25.4, 29.7, 38.9),
        "SPERR": (34.0, 38.5, 45.3),
        "JPEG-XL": (None, 35.7, 43.4),
    },
    "s2_l1c_eolearn_5x13": {
        "reference": (None, 30.8, 40.8),
        "SZ3": (None, 19.2, 32.2),
        "SPERR": (30.7, 34.9, 41.1),
        "JPEG-XL": (None, 31.5, 39.3),
    },
    "s2_l2a_fusets_meadow_58x3x44x48": {
        "reference": (None, 29.5, 39.1),
        "SZ3": (None, 20.5, 31.2),
        "SPERR": (18.8, 23.9, 33.0),
        "JPEG-XL": (None, None, 31.1),
    },
    "l8_ny18_013032": {
        "reference": (None, 22.9, 37.1),
        "SZ3": (None, 18.9, 28.8),
        "SPERR": (22.1, 25.2, 31.8),
        "JPEG-XL": (None, None, 26.2),
    },
    "era5_t2m_uk_744h": {
        "reference": (None, 39.9, 50.5),
        "SZ3": (33.4, 38.0, 45.6),
        "SPERR": (39.9, 45.8, 54.5),
        "JPEG-XL": (None, None, 39.1),
    },
    "erainterim_uvz": {
        "reference": (44.9, 55.5, None),
        "SZ3": (23.3, 35.8, 55.3),
        "SPERR": (55.5, 63.7, 72.8),
        "JPEG-XL": (45.0, 57.1, 69.1),
    },
}
ANCHORS_ZSTD3 = {
    "s2_l2a_worldcereal_118x4x64x64": 12.18,
    "s2_l2a_worldcereal_12x9x100x100": 7.39,
    "s2_l1c_eolearn_5x13": 8.20,
    "s2_l2a_fusets_meadow_58x3x44x48": 14.65,
    "l8_ny18_013032": 9.45,
    "era5_t2m_uk_744h": 18.80,
    "erainterim_uvz": 9.81,
}


def _selected(method: str, chosen: set[str]) -> bool:
    return any(method == x or method.startswith(x) for x in chosen)


def _method_kind(method: str) -> str:
    if method.startswith("eocube:"):
        return "eocube"
    return "reference" if method == "reference" else "competitor"


# ------------------------------------------------------------------------------ eocube


class _Capture:
    """Wraps eocube.codec.decode_chunk during a read to keep the chunk payloads."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def __enter__(self) -> _Capture:
        import eocube.codec as codec_mod

        self._mod = codec_mod
        self._orig = codec_mod.decode_chunk
        orig, payloads = self._orig, self.payloads

        def wrapper(payload: Any, *args: Any, **kwargs: Any) -> Any:
            payloads.append(bytes(payload))
            return orig(payload, *args, **kwargs)

        codec_mod.decode_chunk = wrapper
        return self

    def __exit__(self, *exc: object) -> None:
        self._mod.decode_chunk = self._orig


def eocube_point(
    cube: common.Cube, profile: str, crf: float | None, *, decode_repeats: int
) -> dict[str, Any]:
    import fsspec
    import xarray as xr

    import eocube
    from eocube.chunk import decode_chunk
    from eocube.codec import DECODE_THREADS

    path = f"memory://rd-{uuid.uuid4().hex}.eocube"
    kwargs: dict[str, Any] = {"profile": profile, "measure": False}
    if crf is None:
        kwargs["lossless"] = True
    else:
        kwargs["crf"] = crf
    fs = fsspec.filesystem("memory")
    try:
        t0 = time.perf_counter()
        report = eocube.to_eocube(cube.dataset, path, **kwargs)
        encode_s = time.perf_counter() - t0
        payload = report.variables["data"].payload_nbytes

        def read() -> tuple[np.ndarray, float, float]:
            t0 = time.perf_counter()
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                t1 = time.perf_counter()
                values = np.asarray(ds["data"].values)
            return values, t1 - t0, time.perf_counter() - t1

        runs = []
        with _Capture() as cap:
            for _ in range(max(1, decode_repeats)):
                runs.append(read())
        decoded = runs[-1][0]
        open_s = statistics.median(r[1] for r in runs)
        read_s = statistics.median(r[2] for r in runs)
        dec_times = [r[1] + r[2] for r in runs]
        decode_s = statistics.median(dec_times)
        chunks = cap.payloads[: len(cap.payloads) // max(1, decode_repeats)]
        codec_s = chunk_s = None
        if chunks:
            codec_runs, chunk_runs = [], []
            for _ in range(max(1, decode_repeats)):
                spent: list[float] = []
                t0 = time.perf_counter()
                for p in chunks:
                    decode_chunk(p, threads=DECODE_THREADS, on_codec_time=spent.append)
                chunk_runs.append(time.perf_counter() - t0)
                codec_runs.append(sum(spent))
            codec_s = statistics.median(codec_runs)
            chunk_s = statistics.median(chunk_runs)
    finally:
        with contextlib.suppress(FileNotFoundError):  # to_eocube may refuse before writing
            fs.rm(path.removeprefix("memory://"), recursive=True)
    return {
        **common.sizes(report.nbytes, payload, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "chunks": len(chunks),
        "decode_codec_s": codec_s,
        "decode_chunk_s": chunk_s,
        "decode_codec_mb_s": cube.values.nbytes / codec_s / 1e6 if codec_s else None,
        "open_s": open_s,
        "read_s": read_s,
        "read_mb_s": cube.values.nbytes / read_s / 1e6 if read_s else None,
        # goal: decoding at >= 0.8 x the speed of the codec alone, i.e. these ratios >= 0.8;
        # read = the values of an opened store, e2e = open included
        "read_over_codec": codec_s / read_s if codec_s and read_s else None,
        "e2e_over_codec": codec_s / decode_s if codec_s else None,
        "chunk_over_codec": codec_s / chunk_s if codec_s and chunk_s else None,
        "store_overhead_bytes": report.nbytes - payload,
    }


# ------------------------------------------------------------------------------ others


def reference_point(cube: common.Cube, crf: float, *, decode_repeats: int) -> dict[str, Any]:
    enc, encode_s, _ = common.timed(lambda: reference.encode(cube.values, crf, cube.nodata), 1)
    decoded, decode_s, dec_times = common.timed(lambda: reference.decode(enc), decode_repeats)
    nbytes = enc.nbytes
    return {
        **common.sizes(nbytes, nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "videos": len(enc.videos),
        "sei_bytes": enc.sei_bytes,
        "bpppb_without_sei": (nbytes - enc.sei_bytes) * 8 / cube.values.size,
    }


def competitor_point(
    cube: common.Cube, method: competitors.Method, setting: dict[str, Any], *, decode_repeats: int
) -> dict[str, Any]:
    enc, encode_s, _ = common.timed(lambda: method.encode(cube.values, cube.nodata, setting), 1)
    decoded, decode_s, dec_times = common.timed(lambda: method.decode(enc), decode_repeats)
    rec = {
        **common.sizes(enc.nbytes, enc.nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "mask_bytes": len(enc.mask),
        "side_bytes": enc.side_bytes,
    }
    if method.lossless and not rec["exact_on_valid"]:
        rec["error"] = "lossless method did not return the data exactly"
    return rec


# ------------------------------------------------------------------------------ driver


def _label(setting: dict[str, Any]) -> str:
    if not setting:
        return "lossless"
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}" for k, v in setting.items()
    )


def run_cube(
    cube: common.Cube,
    *,
    quick: bool,
    methods: set[str] | None,
    decode_repeats: int,
    watchdog: float,
    emit: Callable[[dict[str, Any]], None],
    skip: set[str] | None = None,
) -> None:
    import eocube
    from eocube.errors import UnsupportedDataError

    base = {**cube.describe(), "mode": "quick" if quick else "full"}
    available = eocube.available_profiles()
    jobs: list[tuple[str, dict[str, Any], bool, Callable[[], dict[str, Any]]]] = []
    sweeps = SWEEPS_QUICK if quick else SWEEPS_FULL
    for name, crfs in sweeps.items():
        if name not in available:
            continue
        for crf in crfs:
            jobs.append(
                (
                    f"eocube:{name}",
                    {"crf": crf},
                    False,
                    lambda n=name, c=crf: eocube_point(cube, n, c, decode_repeats=decode_repeats),
                )
            )
    for name in LOSSLESS_PROFILES:
        if name in available:
            jobs.append(
                (
                    f"eocube:{name}",
                    {},
                    True,
                    lambda n=name: eocube_point(cube, n, None, decode_repeats=decode_repeats),
                )
            )
    for crf in REFERENCE_CRFS_QUICK if quick else REFERENCE_CRFS_FULL:
        jobs.append(
            (
                "reference",
                {"crf": crf},
                False,
                lambda c=crf: reference_point(cube, c, decode_repeats=decode_repeats),
            )
        )
    for m in competitors.METHODS:
        reason = m.applies(cube.values, cube.nodata)
        settings = m.settings(cube.values, quick)
        for s in settings:
            if reason:
                jobs.append((m.name, s, m.lossless, lambda r=reason: {"skipped": r}))
                break
            jobs.append(
                (
                    m.name,
                    s,
                    m.lossless,
                    lambda m=m, s=s: competitor_point(cube, m, s, decode_repeats=decode_repeats),
                )
            )
    for method, setting, lossless, job in jobs:
        if methods and not _selected(method, methods):
            continue
        key = f"{method}|{_label(setting)}"
        if skip and key in skip:
            continue
        emit({"running": key})
        rec = {
            **base,
            "method": method,
            "kind": _method_kind(method),
            "video": method.startswith("eocube:") or method == "reference",
            "lossless": lossless,
            "setting": setting,
            "setting_label": _label(setting),
        }
        if method.startswith("eocube:"):
            prof = available[method.split(":", 1)[1]]
            rec.update(
                profile=prof.name,
                layout=prof.layout,
                encoder=prof.encoder,
                bits=prof.bits,
                gpu_decodable=prof.gpu_decodable,
            )
        t0 = time.perf_counter()
        if watchdog:
            faulthandler.dump_traceback_later(watchdog, exit=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rec.update(job())
        except UnsupportedDataError as exc:
            rec["skipped"] = str(exc)
        except Exception as exc:  # a codec failure is a result, not the end of the run
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc(limit=4)
        finally:
            if watchdog:
                faulthandler.cancel_dump_traceback_later()
        rec["seconds"] = time.perf_counter() - t0
        emit(rec)
        what = f"{method} {rec['setting_label']}"
        if rec.get("skipped"):
            msg = f"skipped ({rec['skipped'][:90]})"
        elif rec.get("error"):
            msg = f"ERROR {rec['error'][:120]}"
        else:
            msg = (
                f"{rec['bpppb']:.3f} bpppb ({rec['bpppb_payload']:.3f} payload), "
                f"{fmt(rec['psnr'], '.2f')} dB, enc {fmt(rec['encode_mb_s'])} MB/s, "
                f"dec {fmt(rec['decode_mb_s'])} MB/s"
            )
        print(f"  {cube.name} {what}: {msg} [{rec['seconds']:.1f} s]", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ reports


def _ok(r: dict[str, Any]) -> bool:
    return not r.get("skipped") and not r.get("error")


def _by_method(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["method"], []).append(r)
    return out


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def _envelope(records: list[dict[str, Any]], basis: str, target: float) -> tuple:
    """Best PSNR at ``target`` over several methods, and which method gives it."""
    best: tuple[float | None, str | None] = (None, None)
    for method, rs in _by_method(records).items():
        p = common.psnr_at_sat(rs, target, basis)
        if p is not None and (best[0] is None or p > best[0]):
            best = (p, method)
    return best


def cube_markdown(cube_info: dict[str, Any], records: list[dict[str, Any]]) -> str:
    name = cube_info["cube"]
    shape = "×".join(map(str, cube_info["shape"]))
    lines = [
        f"# {name}",
        "",
        f"{shape} (T×B×Y×X) {cube_info['dtype']}, family {cube_info['family']}, "
        f"{cube_info['invalid_fraction'] * 100:.1f} % invalid (NaN or nodata "
        f"{fmt(cube_info['nodata'], 'g', 'none')}), values {fmt(cube_info['value_min'], '.6g')}"
        f" .. {fmt(cube_info['value_max'], '.6g')}"
        + (
            f"; cropped: {cube_info['crop']} (source "
            f"{'×'.join(map(str, cube_info['source_shape']))})"
            if cube_info["crop"]
            else ""
        )
        + ".",
        "",
        "PSNR: docs/format.md (per-band peak = max − min of the valid original values, MSE over "
        "valid values, mean over bands); † = the method saturates below that rate: its best "
        "quality (crf 0) is shown. bpppb (total): every stored byte — for eocube the "
        "whole store (metadata, coordinates, masks); for the competitors their streams, "
        "side information and NaN/nodata mask (no container); for the reference its video "
        "bytes only (its own basis, padded bands included). Payload: eocube's chunk "
        "payloads only. PSNR at a rate is interpolated linearly in log bpppb between "
        "measured points; n/a = out of the method's reach. Speeds: MB/s of the original "
        "array, medians over the sweep; dec MB/s is end to end (open the store + read the "
        "variable). read/codec: decode speed of an opened store over the speed of the video "
        "decoder alone (goal ≥ 0.8); e2e/codec: the same with the open included.",
        "",
    ]
    rows = []
    for method, rs in _by_method(records).items():
        ok = [r for r in rs if _ok(r)]
        if not ok:
            why = "; ".join(sorted({(r.get("skipped") or r.get("error") or "")[:120] for r in rs}))
            rows.append([method, "—", "—", "—", "—", "—", "—", "—", "—", f"not run: {why}"])
            continue
        lossless = ok[0]["lossless"]
        if lossless:
            r = ok[0]
            p_tot = ["lossless"] * 3
            ratio = f"{r['compression_ratio']:.2f} ({r['bpppb']:.3f} bpppb)"
            pay = f"{r['bpppb_payload']:.3f} bpppb"
        else:
            p_tot = [fmt(common.psnr_at_sat(ok, t)) for t in TARGETS]
            if ok[0]["kind"] == "eocube":
                pay = " / ".join(fmt(common.psnr_at_sat(ok, t, "bpppb_payload")) for t in TARGETS)
            else:
                pay = "same"
            ratios = [r["compression_ratio"] for r in ok]
            ratio = f"{min(ratios):.1f}–{max(ratios):.1f}"
        e2e = _median([r.get("e2e_over_codec") for r in ok])
        rc = _median([r.get("read_over_codec") for r in ok])
        rows.append(
            [
                method,
                *p_tot,
                pay,
                ratio,
                fmt(_median([r["encode_mb_s"] for r in ok])),
                fmt(_median([r["decode_mb_s"] for r in ok])),
                fmt(rc, ".2f", "—") + " / " + fmt(e2e, ".2f", "—"),
                f"{len(ok)} points"
                + (f", {len(rs) - len(ok)} failed/skipped" if len(ok) < len(rs) else ""),
            ]
        )
    lines.append(
        md_table(
            [
                "method",
                "PSNR @0.1",
                "@0.3",
                "@1 bpppb",
                "payload basis @0.1/0.3/1",
                "ratio",
                "enc MB/s",
                "dec MB/s",
                "read/codec / e2e/codec",
                "notes",
            ],
            rows,
            "lrrrrrrrrl",
        )
    )
    lines += ["", "## Every point", ""]
    rows = []
    for r in records:
        if not _ok(r):
            rows.append(
                [
                    r["method"],
                    r["setting_label"],
                    "skipped: " + r["skipped"][:150]
                    if r.get("skipped")
                    else "error: " + r["error"][:150],
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        err = r["max_abs_error"]
        rows.append(
            [
                r["method"],
                r["setting_label"],
                f"{r['bpppb']:.4f}",
                f"{r['bpppb_payload']:.4f}",
                f"{r['compression_ratio']:.1f}",
                fmt(r["psnr"], ".2f"),
                f"{err:.4g}" if isinstance(err, float) else str(err),
                fmt(r["encode_mb_s"]),
                fmt(r["decode_mb_s"]),
                fmt(r.get("read_over_codec"), ".2f", "")
                + (" / " + fmt(r.get("e2e_over_codec"), ".2f") if r.get("e2e_over_codec") else ""),
            ]
        )
    lines.append(
        md_table(
            [
                "method",
                "setting",
                "bpppb",
                "payload",
                "ratio",
                "PSNR dB",
                "max abs err",
                "enc MB/s",
                "dec MB/s",
                "read/codec / e2e/codec",
            ],
            rows,
            "llrrrrrrrr",
        )
    )
    return "\n".join(lines) + "\n"


STYLE = {
    "reference": {"color": "black", "ls": "--", "marker": "x", "lw": 1.8},
    "SZ3": {"color": "tab:olive", "ls": ":", "marker": "v"},
    "SPERR": {"color": "tab:brown", "ls": ":", "marker": "^"},
    "ZFP-accuracy": {"color": "tab:gray", "ls": ":", "marker": "<"},
    "ZFP-rate": {"color": "silver", "ls": ":", "marker": ">"},
    "bitround+zstd": {"color": "tab:pink", "ls": ":", "marker": "d"},
    "JPEG-XL": {"color": "tab:cyan", "ls": "-.", "marker": "s"},
    "JPEG2000": {"color": "darkkhaki", "ls": "-.", "marker": "p"},
    "HTJ2K": {"color": "slategray", "ls": "-.", "marker": "h"},
}
EOCUBE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "gold")


def cube_plot(cube_info: dict[str, Any], records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.2))
    by = _by_method([r for r in records if _ok(r)])
    eo = [m for m in by if m.startswith("eocube:") and not by[m][0]["lossless"]]
    for i, m in enumerate(eo):
        rs = sorted(by[m], key=lambda r: r["bpppb"])
        ax.plot(
            [r["bpppb"] for r in rs],
            [r["psnr"] for r in rs],
            marker="o",
            ms=4,
            lw=1.8,
            color=EOCUBE_COLOURS[i % len(EOCUBE_COLOURS)],
            label=m,
        )
    for m, rs in by.items():
        if m.startswith("eocube:") or rs[0]["lossless"]:
            continue
        rs = sorted(rs, key=lambda r: r["bpppb"])
        style = STYLE.get(m, {"ls": ":", "marker": "."})
        label = m + (" (video bytes only)" if m == "reference" else "")
        ax.plot(
            [r["bpppb"] for r in rs],
            [r["psnr"] for r in rs],
            **{"ms": 4, "lw": 1.2, "label": label, **style},
        )
    lossless = [(rs[0]["bpppb"], m) for m, rs in by.items() if rs[0]["lossless"]]
    if lossless:
        text = "lossless bpppb:\n" + "\n".join(
            f"{m.removeprefix('eocube:')}: {b:.2f}" for b, m in sorted(lossless)
        )
        ax.text(
            0.99,
            0.02,
            text,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.85},
        )
    for t in TARGETS:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(0.02, 20)
    ys = [
        r["psnr"]
        for rs in by.values()
        for r in rs
        if not r["lossless"] and math.isfinite(r["psnr"]) and 0.02 <= r["bpppb"] <= 20
    ]
    if ys:
        ax.set_ylim(max(min(ys) - 2, 0), max(ys) + 3)
    ax.set_xlabel("bpppb (eocube: every stored byte; reference: video bytes only)")
    ax.set_ylabel("PSNR dB (per-band data-range peak, valid values, mean over bands)")
    shape = "×".join(map(str, cube_info["shape"]))
    crop = (
        f", cropped from {'×'.join(map(str, cube_info['source_shape']))}"
        if cube_info["crop"]
        else ""
    )
    ax.set_title(f"{cube_info['cube']}\n{shape} {cube_info['dtype']}{crop}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ summary


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def summary_markdown(
    cubes: dict[str, dict[str, Any]], records: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    recs = [r for r in records if _ok(r)]
    by_cube: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_cube.setdefault(r["cube"], []).append(r)
    machine = meta["machine"]
    git = machine.get("git") or {}
    load = ", ".join(f"{x:.1f}" for x in machine.get("load_average_at_start") or [])
    out = [
        f"# Rate–distortion benchmark: summary ({meta['mode']})",
        "",
        f"Machine: {machine.get('cpu_usable')} usable CPUs ({machine.get('cpu_model')}), "
        f"shared with other jobs (load average at start {load}); av {machine.get('av')}, "
        f"eocube {machine.get('eocube')} at {git.get('commit', '?')[:10]}"
        f"{' (eocube/ or codecs/ modified)' if git.get('dirty') else ''}. "
        f"Measuring took {sum(r.get('seconds') or 0 for r in records) / 60:.1f} min (sum over "
        f"the points) for {len(cubes)} cubes"
        + (
            f" ({sum(not c.get('complete') for c in cubes.values())} incomplete)"
            if not all(c.get("complete") for c in cubes.values())
            else ""
        )
        + f". Reproduce: `python -m benchmarks.rd{' --quick' if meta['mode'] == 'quick' else ''}`"
        " (a single cube or method can be re-measured with `--cubes` / `--methods`; the "
        "per-cube parts in `points/` are merged).",
        "",
        "Definitions: PSNR per docs/format.md (per-band data-range peak over valid values, mean "
        "over bands; the reference paper's storage-type peak reads ~16 dB higher on "
        "Sentinel-2). eocube bpppb counts every byte of the store (metadata, coordinates, "
        "masks) — 'payload' only the chunk payloads; the reference counts its video "
        "bytes only (its own basis, padded bands and x265's info SEI included). "
        "Competitors count streams + side info + NaN/nodata mask. Values at 0.1/0.3/1 "
        "bpppb are interpolated in log bpppb; n/a = not reached by the sweep; † = a video "
        "method that saturates below that rate (its crf 0 point never spends that much): "
        "its best quality stands for it, since spending more is impossible.",
        "",
    ]
    default = f"eocube:{DEFAULT_PROFILE}"

    def eo_recs(rs: list[dict[str, Any]], which: str) -> list[dict[str, Any]]:
        if which == "default":
            return [r for r in rs if r["method"] == default]
        return [r for r in rs if r["kind"] == "eocube" and not r["lossless"]]

    def at(rs: list[dict[str, Any]], which: str, t: float, basis: str) -> tuple:
        sel = eo_recs(rs, which)
        if which == "default":
            return common.psnr_at_sat(sel, t, basis), DEFAULT_PROFILE
        p, m = _envelope(sel, basis, t)
        return p, (m or "").removeprefix("eocube:")

    # --- goal 1: S2 / Landsat vs reference
    out += [
        "## Goal 1: Sentinel-2 / Landsat cubes, PSNR ≥ reference + 2 dB at 1 bpppb and "
        "+ 1 dB at 0.1 bpppb",
        "",
    ]
    out.append(
        "eocube is shown with its current default profile (`" + DEFAULT_PROFILE + "`) and "
        "as the best eocube profile at each rate; strict = eocube's whole store against the "
        "reference's video bytes only; payload = eocube's chunk payloads against the same. "
        "Δ = eocube − reference (dB)."
    )
    out.append("")
    rows = []
    tally: dict[str, list[bool]] = {}
    for name, rs in by_cube.items():
        info = cubes[name]
        if info["family"] not in ("s2", "landsat"):
            continue
        ref = [r for r in rs if r["method"] == "reference"]
        for t, need in ((1.0, 2.0), (0.1, 1.0)):
            pr = common.psnr_at_sat(ref, t)
            pr_nosei = common.psnr_at_sat(ref, t, "bpppb_without_sei")
            for which in ("default", "best"):
                for basis in ("bpppb", "bpppb_payload"):
                    pe, m = at(rs, which, t, basis)
                    if pe is None:
                        ok = False if pr is not None else None
                    elif pr is None:
                        ok = True  # eocube reaches a rate the reference cannot
                    else:
                        ok = pe - pr >= need
                    key = f"{which}/{'strict' if basis == 'bpppb' else 'payload'}@{t:g}"
                    if ok is not None:
                        tally.setdefault(key, []).append(ok)
                    rows.append(
                        [
                            name,
                            f"{t:g}",
                            f"best ({m})" if which == "best" and m else which,
                            "strict" if basis == "bpppb" else "payload",
                            fmt(pe),
                            fmt(pr),
                            fmt(None if pe is None or pr is None else pe - pr, "+.1f"),
                            f"+{need:g}",
                            _verdict(ok),
                            fmt(pr_nosei),
                            fmt(None if pe is None or pr_nosei is None else pe - pr_nosei, "+.1f"),
                        ]
                    )
    out.append(
        md_table(
            [
                "cube",
                "bpppb",
                "eocube",
                "basis",
                "eocube dB",
                "reference dB",
                "Δ dB",
                "goal",
                "verdict",
                "ref. without info SEI",
                "Δ",
            ],
            rows,
            "lrllrrrrlrr",
        )
    )
    out += [
        "",
        "The last two columns are not the goal: they show the reference with x265's "
        "info SEI (its settings as text, ~2.3 kB, repeated at every keyframe) removed "
        "from its bytes, i.e. what a reference run with `info=0`, as eocube uses, would "
        "get.",
    ]
    out += ["", "Tally (cubes meeting / cubes where measurable):", ""]
    out += [f"- {k}: {sum(v)}/{len(v)}" for k, v in sorted(tally.items())]
    out.append("")

    # --- goal 2: vs non-video competitors on S2 and ERA5
    out += [
        "## Goal 2: ahead of every non-video competitor from 0.1 to 1 bpppb "
        "(Sentinel-2 and ERA5 cubes)",
        "",
    ]
    out.append(
        "At each rate of " + ", ".join(f"{t:g}" for t in COMPETITOR_RATES) + " bpppb: "
        "margin = eocube − best competitor there (dB); 'min margin' is the smallest over the "
        "rates where a competitor reaches; a rate eocube cannot reach while a competitor "
        "does counts as missed. Competitors count streams + side info + mask (no container), "
        "so the like-for-like basis is eocube's payload; strict adds eocube's store metadata."
    )
    out.append("")
    rows = []
    tally_goal2: dict[str, list[bool]] = {}
    for name, rs in by_cube.items():
        if cubes[name]["family"] not in ("s2", "era5"):
            continue
        comp = [r for r in rs if r["kind"] == "competitor" and not r["lossless"]]
        for which in ("default", "best"):
            for basis in ("bpppb", "bpppb_payload"):
                margins, losses, unreach = [], [], []
                for t in COMPETITOR_RATES:
                    pc, mc = _envelope(comp, "bpppb", t)
                    pe, _ = at(rs, which, t, basis)
                    if pc is None:
                        continue
                    if pe is None:
                        unreach.append(f"{t:g}")
                        continue
                    margins.append((pe - pc, t, mc))
                    if pe <= pc:
                        losses.append(f"{t:g} ({mc} by {pc - pe:.1f})")
                worst = min(margins) if margins else None
                ok = None if not margins and not unreach else (not losses and not unreach)
                tally2 = tally_goal2.setdefault(f"{which}/{basis}", [])
                if ok is not None:
                    tally2.append(ok)
                rows.append(
                    [
                        name,
                        which,
                        "strict" if basis == "bpppb" else "payload",
                        fmt(worst[0] if worst else None, "+.1f"),
                        f"{worst[1]:g} vs {worst[2]}" if worst else "—",
                        ", ".join(losses) or "—",
                        ", ".join(unreach) or "—",
                        _verdict(ok),
                    ]
                )
    out.append(
        md_table(
            [
                "cube",
                "eocube",
                "basis",
                "min margin dB",
                "where",
                "behind at (dB)",
                "eocube can't reach",
                "verdict",
            ],
            rows,
            "lllrllll",
        )
    )
    out += [
        "",
        "Tally (cubes meeting / measurable): "
        + "; ".join(
            f"{k.replace('bpppb_payload', 'payload').replace('/bpppb', '/strict')} "
            f"{sum(v)}/{len(v)}"
            for k, v in tally_goal2.items()
        ),
        "",
    ]

    # --- goal 3: lossless
    out += [
        "## Goal 3: lossless, fewer bits than zstd, JPEG-XL lossless, JPEG-LS and FFV1 "
        "intra-only on every integer time-series cube",
        "",
    ]
    out.append(
        "eocube lossless = the better of its lossless profiles that applies "
        "(`ffv1-lossless` is itself FFV1 intra-only: it cannot beat itself; "
        "`hevc-lossless` — the inter-frame one — holds ranges of ≤ 12 bits only). "
        "bpppb strict (whole store) and payload."
    )
    out.append("")
    rows = []
    names = ("zstd-3", "shuffle+zstd-19", "JPEG-XL-lossless", "JPEG-LS")
    for name, rs in by_cube.items():
        info = cubes[name]
        if not (info["integer"] and info["time_series"]):
            continue
        ll = {r["method"]: r for r in rs if r["lossless"]}
        eo = [ll[m] for m in ("eocube:hevc-lossless",) if m in ll]
        ffv1 = ll.get("eocube:ffv1-lossless")
        best_eo = min(eo, key=lambda r: r["bpppb"]) if eo else None
        comps = {m: ll[m]["bpppb"] for m in names if m in ll}
        if ffv1:
            comps["FFV1 intra"] = ffv1["bpppb_payload"]
        best_c = min(comps.items(), key=lambda kv: kv[1]) if comps else None
        ok = None
        if best_c is not None:
            ok = best_eo is not None and best_eo["bpppb"] < best_c[1]
        rows.append(
            [
                name,
                fmt(best_eo["bpppb"] if best_eo else None, ".3f", "n/a (range > 12 bits)"),
                fmt(best_eo["bpppb_payload"] if best_eo else None, ".3f"),
                fmt(ffv1["bpppb"] if ffv1 else None, ".3f"),
                *[fmt(comps.get(m), ".3f") for m in names],
                f"{best_c[0]} {best_c[1]:.3f}" if best_c else "—",
                _verdict(ok),
            ]
        )
    out.append(
        md_table(
            [
                "cube",
                "eocube hevc-lossless",
                "payload",
                "eocube ffv1 (store)",
                *names,
                "best other",
                "verdict",
            ],
            rows,
            "lrrrrrrrll",
        )
    )
    out.append("")

    # --- goal 4: decode e2e vs codec; encode speed vs reference
    out += [
        "## Goal 4: decode end to end ≥ 0.8× the codec alone; encode at least as fast "
        "as the reference at equal bpppb",
        "",
    ]
    rows = []
    eo_all = [r for r in recs if r["kind"] == "eocube"]
    for m in sorted({r["method"] for r in eo_all}):
        rs = [r for r in eo_all if r["method"] == m and r.get("read_over_codec")]
        if not rs:
            continue
        reads = [r["read_over_codec"] for r in rs]
        e2es = [r["e2e_over_codec"] for r in rs]
        chunk = [r["chunk_over_codec"] for r in rs if r.get("chunk_over_codec")]
        big = [r["read_over_codec"] for r in rs if r["values"] >= 1_000_000]
        rows.append(
            [
                m.removeprefix("eocube:"),
                len(rs),
                f"{statistics.median(reads):.2f} (min {min(reads):.2f})",
                f"{sum(x >= 0.8 for x in reads)}/{len(reads)}",
                f"{statistics.median(big):.2f} ({len(big)})" if big else "—",
                f"{statistics.median(e2es):.2f}",
                fmt(_median(chunk), ".2f"),
                fmt(_median([r["read_mb_s"] for r in rs])),
                fmt(_median([r["decode_codec_mb_s"] for r in rs])),
                _verdict(statistics.median(reads) >= 0.8),
            ]
        )
    out.append(
        md_table(
            [
                "profile",
                "points",
                "read/codec median",
                "points ≥ 0.8",
                "read/codec, cubes ≥ 1 M values",
                "e2e/codec (open incl.)",
                "decode_chunk/codec",
                "read MB/s",
                "codec-alone MB/s",
                "verdict (median read/codec)",
            ],
            rows,
            "lrrrrrrrrl",
        )
    )
    out += [
        "",
        "codec alone = seconds inside the video decoder when the store's chunk "
        "payloads are decoded one after another, one thread each "
        "(`decode_chunk(on_codec_time=...)`); read = `ds['data'].values` of an opened "
        "store (zarr decodes chunks concurrently); e2e adds `xr.open_dataset` (zarr "
        "metadata, coordinates), which dominates on small cubes; decode_chunk/codec = "
        "the share of decode_chunk spent in the codec (packing and copies excluded from "
        "the codec).",
        "",
    ]
    rows = []
    for name, rs in by_cube.items():
        ref = [r for r in rs if r["method"] == "reference"]
        dflt = [r for r in rs if r["method"] == default]
        if not ref or not dflt:
            continue
        cells = []
        verdicts = []
        for t in TARGETS:
            se = common.speed_at(dflt, t, "encode_mb_s", "bpppb_payload")
            sr = common.speed_at(ref, t, "encode_mb_s")
            cells.append(f"{fmt(se)} / {fmt(sr)}")
            if se is not None and sr is not None:
                verdicts.append(se >= sr)
        med_e = _median([r["encode_mb_s"] for r in dflt])
        med_r = _median([r["encode_mb_s"] for r in ref])
        rows.append(
            [
                name,
                *cells,
                f"{fmt(med_e)} / {fmt(med_r)}",
                _verdict(all(verdicts) if verdicts else None),
            ]
        )
    out.append(
        md_table(
            [
                "cube",
                "enc MB/s @0.1 eocube/ref",
                "@0.3",
                "@1",
                "median over sweep",
                "verdict (where both reach)",
            ],
            rows,
            "lrrrrl",
        )
    )
    out += [
        "",
        f"eocube = `{DEFAULT_PROFILE}` through `to_eocube` (store writing included), "
        "speed read at equal payload bpppb (the reference's basis); "
        "reference = our in-process reimplementation (no ffmpeg process, no pipes: faster "
        "than the real one).",
        "",
    ]

    # --- which profile wins where
    out += ["## Which profile and layout wins (evidence for the defaults)", ""]
    out.append(
        "Best eocube lossy profile per cube at each rate (strict basis), and each "
        "profile's PSNR deficit to the best (dB) as medians over the cubes of a group. "
        "Groups: integer reflectance (Sentinel-2/Landsat integer cubes), float "
        "reflectance/indices (Sentinel-2 float cubes), climate fields (ERA5, "
        "ERA-Interim, gridded climate, ocean)."
    )
    out.append("")
    groups = {"integer reflectance": [], "float reflectance/indices": [], "climate fields": []}
    for name, info in cubes.items():
        if info["family"] in ("s2", "landsat"):
            key = "integer reflectance" if info["integer"] else "float reflectance/indices"
        else:
            key = "climate fields"
        groups[key].append(name)
    profiles = sorted({r["method"] for r in recs if r["kind"] == "eocube" and not r["lossless"]})
    rows = []
    wins_rows = []
    for group, names_ in groups.items():
        for t in TARGETS:
            deficits: dict[str, list[float]] = {p: [] for p in profiles}
            wins: dict[str, int] = {}
            for name in names_:
                rs = by_cube.get(name, [])
                vals = {
                    p: common.psnr_at_sat([r for r in rs if r["method"] == p], t) for p in profiles
                }
                reached = {p: v for p, v in vals.items() if v is not None}
                if not reached:
                    continue
                top = max(reached.values())
                winner = max(reached, key=lambda p: reached[p])
                wins[winner] = wins.get(winner, 0) + 1
                for p in profiles:
                    if vals[p] is not None:
                        deficits[p].append(top - vals[p])
            rows.append(
                [
                    group,
                    f"{t:g}",
                    *[
                        f"{statistics.median(d):.1f} ({len(d)})" if d else "n/a"
                        for d in deficits.values()
                    ],
                ]
            )
            wins_rows.append(
                [
                    group,
                    f"{t:g}",
                    ", ".join(
                        f"{p.removeprefix('eocube:')} {n}"
                        for p, n in sorted(wins.items(), key=lambda kv: -kv[1])
                    )
                    or "—",
                ]
            )
    out.append(
        md_table(
            ["group", "bpppb", *[p.removeprefix("eocube:") for p in profiles]],
            rows,
            "lr" + "r" * len(profiles),
        )
    )
    out += [
        "",
        "Cells: median deficit to the best eocube profile (number of cubes where the "
        "profile reaches that rate).",
        "",
    ]
    out.append(md_table(["group", "bpppb", "cubes won"], wins_rows, "lrl"))
    out.append("")
    rows = []
    for p in profiles:
        rs = [r for r in recs if r["method"] == p]
        rows.append(
            [
                p.removeprefix("eocube:"),
                fmt(_median([r["encode_mb_s"] for r in rs])),
                fmt(_median([r["decode_mb_s"] for r in rs])),
                fmt(_median([r.get("decode_codec_mb_s") for r in rs])),
            ]
        )
    for m in ("reference", "eocube:ffv1-lossless", "eocube:hevc-lossless"):
        rs = [r for r in recs if r["method"] == m]
        if rs:
            rows.append(
                [
                    m,
                    fmt(_median([r["encode_mb_s"] for r in rs])),
                    fmt(_median([r["decode_mb_s"] for r in rs])),
                    fmt(_median([r.get("decode_codec_mb_s") for r in rs])),
                ]
            )
    out.append(
        md_table(
            ["profile", "median enc MB/s", "median dec MB/s (e2e)", "median codec-alone MB/s"], rows
        )
    )
    out.append("")

    # --- per-cube PSNR table
    out += ["## PSNR at 0.1 / 0.3 / 1 bpppb per cube (strict basis)", ""]
    cols = [
        "eocube default",
        "eocube best",
        "reference",
        "SZ3",
        "SPERR",
        "ZFP-rate",
        "bitround+zstd",
        "JPEG-XL",
        "JPEG2000",
        "HTJ2K",
    ]
    rows = []
    for name, rs in sorted(by_cube.items()):
        cells = []
        for col in cols:
            if col == "eocube default":
                sel = [r for r in rs if r["method"] == default]
                vals = [common.psnr_at_sat(sel, t) for t in TARGETS]
            elif col == "eocube best":
                vals = [at(rs, "best", t, "bpppb")[0] for t in TARGETS]
            else:
                sel = [r for r in rs if r["method"] == col]
                vals = [common.psnr_at_sat(sel, t) for t in TARGETS]
            cells.append(" / ".join(fmt(v) for v in vals))
        ll = {r["method"]: r["bpppb"] for r in rs if r["lossless"]}
        best_ll = min(ll.items(), key=lambda kv: kv[1]) if ll else None
        rows.append(
            [
                f"[{name}]({name}.md)",
                *cells,
                f"{best_ll[0].removeprefix('eocube:')} {best_ll[1]:.2f}" if best_ll else "—",
            ]
        )
    out.append(md_table(["cube", *cols, "best lossless bpppb"], rows, "l" + "r" * (len(cols) + 1)))
    out.append("")
    # --- our reimplementation against the figures of ANCHORS.md
    out += [
        "## Check: our measurements against ANCHORS.md's",
        "",
        "ANCHORS.md measured the reference's own code (ffmpeg CLI, libx265 12-bit, "
        "presumably x265's 64-px CTUs, nodata turned into NaN) and the competitors on "
        "some of these cubes; ours should land near. PSNR at 0.1 / 0.3 / 1 bpppb, "
        "ANCHORS → ours (differences also come from our sweeps' points and, for the "
        "image codecs and SZ3, from how each is applied; erainterim is cropped here).",
        "",
    ]
    rows = []
    for name, methods_ in ANCHORS_MEASURED.items():
        rs = by_cube.get(name)
        if not rs:
            continue
        cells = []
        for m in ("reference", "SZ3", "SPERR", "JPEG-XL"):
            mine = [common.psnr_at([r for r in rs if r["method"] == m], t) for t in TARGETS]
            theirs = methods_[m]
            cells.append(
                " / ".join(fmt(a) for a in theirs) + " → " + " / ".join(fmt(b) for b in mine)
            )
        z = next((r["bpppb"] for r in rs if r["method"] == "zstd-3"), None)
        cells.append(f"{ANCHORS_ZSTD3[name]:.2f} → {fmt(z, '.2f')}")
        rows.append([name + (" (cropped)" if cubes[name].get("crop") else ""), *cells])
    out.append(
        md_table(["cube", "reference", "SZ3", "SPERR", "JPEG-XL", "zstd-3 bpppb"], rows, "lrrrrr")
    )
    out.append("")
    skipped = [r for r in records if r.get("skipped") or r.get("error")]
    if skipped:
        out += ["## Skipped or failed", ""]
        seen = set()
        for r in skipped:
            key = (r["cube"], r["method"], r.get("skipped") or r.get("error"))
            if key in seen:
                continue
            seen.add(key)
            what = "skipped" if r.get("skipped") else "FAILED"
            out.append(
                f"- {r['cube']} / {r['method']} ({r['setting_label']}): {what}: "
                f"{(r.get('skipped') or r.get('error'))[:200]}"
            )
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------ main


def _load_parts(points: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict]:
    cubes: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for part in sorted(points.glob("*.jsonl")):
        lines = _part_lines(part)
        if not lines or "cube_info" not in lines[0]:
            continue
        info = dict(lines[0]["cube_info"])
        done = [x for x in lines if x.get("cube_done")]
        info["complete"] = bool(done)
        if done:
            meta = done[-1].get("meta", meta)
            info["seconds"] = done[-1].get("seconds")
        cubes[lines[0]["cube"]] = info
        records += [x for x in lines if "method" in x]
    return cubes, records, meta


def write_reports(out: Path, meta: dict[str, Any]) -> None:
    cubes, records, part_meta = _load_parts(out / "points")
    meta = {**part_meta, **meta}
    with (out / "results.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps(r, default=_json_default) + "\n")
    for name, info in cubes.items():
        rs = [r for r in records if r["cube"] == name]
        (out / f"{name}.md").write_text(cube_markdown(info, rs))
        try:
            cube_plot(info, rs, out / f"{name}.png")
        except Exception as exc:  # a plot failure must not lose the tables
            print(f"plot of {name} failed: {exc}", file=sys.stderr)
    (out / "summary.md").write_text(summary_markdown(cubes, records, meta))
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


MAX_RESTARTS = 8


def _part_lines(part: Path) -> list[dict[str, Any]]:
    if not part.exists():
        return []
    out = []
    for line in part.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a crash
            continue
    return out


def run_child(name: str, argv: list[str], part: Path) -> None:
    """Run one cube in a child process; a native crash costs one point, not the run.

    When the child dies (a codec corrupting its heap, a watchdog exit), the point it was
    running is recorded as failed and a new child carries on with the next points.
    """
    import subprocess

    args = [a for a in argv if a not in ("--resume",)]
    if "--cubes" in args:  # the child gets its cube through --child
        k = args.index("--cubes")
        del args[k : k + 1]
        while k < len(args) and not args[k].startswith("--"):
            del args[k]
    t0 = time.perf_counter()
    for _attempt in range(MAX_RESTARTS + 1):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.rd", *args, "--child", name], check=False
        )
        lines = _part_lines(part)
        if proc.returncode == 0 and lines and lines[-1].get("cube_done"):
            break
        running = [x["running"] for x in lines if "running" in x]
        done = {f"{x['method']}|{x['setting_label']}" for x in lines if "method" in x}
        crashed = [k for k in running if k not in done]
        if not crashed or not lines:
            print(
                f"{name}: child failed (exit {proc.returncode}) before any point", file=sys.stderr
            )
            break
        method, label = crashed[-1].split("|", 1)
        info = lines[0].get("cube_info", {})
        rec = {
            **info,
            "mode": info.get("mode"),
            "method": method,
            "kind": _method_kind(method),
            "video": method.startswith("eocube:") or method == "reference",
            "lossless": label == "lossless",
            "setting": {},
            "setting_label": label,
            "error": f"the process died (exit status {proc.returncode}) during this point: "
            "a native crash in the codec (see the run's stderr)",
        }
        with part.open("a") as fh:
            fh.write(json.dumps(rec, default=_json_default) + "\n")
        print(
            f"{name}: {method} {label} crashed the process (exit {proc.returncode}); carrying on",
            file=sys.stderr,
        )
    print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def child(
    args: argparse.Namespace,
    folder: Path,
    points: Path,
    max_values: int,
    decode_repeats: int,
    meta: dict[str, Any],
) -> int:
    name = args.child
    part = points / f"{name}.jsonl"
    lines = _part_lines(part)
    skip = {f"{x['method']}|{x['setting_label']}" for x in lines if "method" in x}
    t0 = time.perf_counter()
    cube = common.load_cube(
        name, folder, max_values=max_values, max_time=QUICK_MAX_TIME if args.quick else None
    )
    info = cube.describe()
    if not lines:
        print(
            f"{name}: {'×'.join(map(str, cube.shape))} {info['dtype']}"
            + (f" (cropped: {cube.crop})" if cube.crop else ""),
            file=sys.stderr,
        )
    with part.open("a") as fh:
        if not lines:
            fh.write(json.dumps({"cube": name, "cube_info": info}, default=_json_default) + "\n")
            fh.flush()

        def emit(rec: dict[str, Any]) -> None:
            fh.write(json.dumps(rec, default=_json_default) + "\n")
            fh.flush()

        run_cube(
            cube,
            quick=args.quick,
            methods=set(args.methods or ()),
            decode_repeats=decode_repeats,
            watchdog=args.watchdog,
            emit=emit,
            skip=skip,
        )
        fh.write(
            json.dumps(
                {
                    "cube": name,
                    "cube_done": True,
                    "seconds": time.perf_counter() - t0,
                    "meta": meta,
                },
                default=_json_default,
            )
            + "\n"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rd", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{len(QUICK_CUBES)} small cubes, short sweeps (a few minutes)",
    )
    parser.add_argument("--cubes", nargs="+", help="cube names (default: the whole corpus)")
    parser.add_argument("--data", type=Path, help="corpus folder (default ../shared/data)")
    parser.add_argument(
        "--methods", nargs="+", help="only these methods (prefixes: eocube:, reference, SZ3, ...)"
    )
    parser.add_argument(
        "--max-values",
        type=int,
        help="crop cubes larger than this many values (default 2.5e6, quick 3e5)",
    )
    parser.add_argument("--decode-repeats", type=int, help="decode repeats (default 2, quick 1)")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--resume", action="store_true", help="skip cubes already done")
    parser.add_argument("--report-only", action="store_true", help="rebuild reports only")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one cube, in a child process
    parser.add_argument(
        "--watchdog",
        type=float,
        default=600.0,
        help="seconds one point may take before the run dumps stacks and exits",
    )
    args = parser.parse_args(argv)

    out = args.out or (OUT_QUICK if args.quick else OUT_FULL)
    points = out / "points"
    points.mkdir(parents=True, exist_ok=True)
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--child" in shown:
        k = shown.index("--child")
        del shown[k : k + 2]
    shown = [a for a in shown if a != "--resume"]
    command = " ".join(["python -m benchmarks.rd", *shown])
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "command": command.strip(),
        "machine": common.machine_info(),
        "reference": reference.describe(),
        "competitors": {m.name: m.note for m in competitors.METHODS},
        "sweeps": SWEEPS_QUICK if args.quick else SWEEPS_FULL,
        "default_profile": DEFAULT_PROFILE,
    }
    if args.report_only:
        write_reports(out, {k: v for k, v in meta.items() if k not in ("command", "machine")})
        print(f"reports rebuilt in {out}", file=sys.stderr)
        return 0

    folder = args.data or common.data_dir()
    names = args.cubes or (list(QUICK_CUBES) if args.quick else common.corpus(folder))
    max_values = args.max_values or (300_000 if args.quick else 2_500_000)
    decode_repeats = args.decode_repeats or (1 if args.quick else 2)
    if args.child:
        return child(args, folder, points, max_values, decode_repeats, meta)
    started = time.perf_counter()
    print(f"corpus {folder}: {len(names)} cubes -> {out}", file=sys.stderr)
    for name in names:
        part = points / f"{name}.jsonl"
        if args.resume and part.exists():
            lines = part.read_text().splitlines()
            if lines and json.loads(lines[-1]).get("cube_done"):
                print(f"{name}: done already", file=sys.stderr)
                continue
        if args.methods and part.exists():
            # re-measure only these methods of the cube; keep its other points
            keep = [
                x
                for x in _part_lines(part)
                if not x.get("cube_done")
                and "running" not in x
                and not ("method" in x and _selected(x["method"], set(args.methods)))
            ]
            with part.open("w") as fh:
                fh.writelines(json.dumps(x, default=_json_default) + "\n" for x in keep)
        else:
            part.unlink(missing_ok=True)
        run_child(name, argv if argv is not None else sys.argv[1:], part)
    meta["seconds"] = time.perf_counter() - started
    write_reports(out, meta)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
