"""Minor spectral components at half resolution: is 4:2:0 worth a layout?

At low rates, video codecs subsample chroma because it carries little. With the KLT on,
the second and third planes of ``hevc-12bit-444`` hold the minor principal components,
which carry little too. This screen codes three bands of each cube (first ``--dates``
dates) both ways, with the default profile's x265 options at the same crf values:

- ``444``: the three components at full resolution (what the default does);
- ``420``: component 1 at full resolution, components 2 and 3 averaged over 2 x 2 pixels
  into the chroma planes of a 4:2:0 frame, upsampled bilinearly on decode.

Both use the same band codes (each band mapped onto 12 bits over its range), the same
orthonormal KLT and one common quantisation step, so only the layout differs. PSNR is
eocube's (per-band range peak, mean over bands) on the band codes, payload only; the table
gives PSNR at fixed rates interpolated in log bpppb.

    python -m benchmarks.klt_chroma [--cubes ...]

Writes ``benchmarks/results/klt_chroma.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import xarray as xr

from benchmarks import corpus
from benchmarks.common import git_state, interp_log, md_table

RESULTS = Path(__file__).parent / "results"
CUBES = ("landsat7_rgb_byte", "l8_ny18_014031", "s2_l2a_fusets_meadow_58x3x44x48")
RATES = (0.05, 0.1, 0.3)
MAX_CODE = 4095


def _encode_decode(
    frames: list[list[np.ndarray]], pix_fmt: str, crf: float
) -> tuple[int, list[list[np.ndarray]]]:
    """Encode 12-bit planes with the default profile's options; (bytes, decoded planes)."""
    import eocube

    options = eocube.get_profile("hevc-12bit-444").encoder_options(crf)
    height, width = frames[0][0].shape
    encoder = av.codec.CodecContext.create("libx265", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, pix_fmt
    encoder.time_base, encoder.framerate = Fraction(1, 25), Fraction(25, 1)
    encoder.options = options
    encoder.open()
    packets: list[bytes] = []
    for t, planes in enumerate(frames):
        frame = av.VideoFrame(width, height, pix_fmt)
        for plane, values in zip(frame.planes, planes, strict=True):
            _view(plane, *values.shape)[...] = values
        frame.pts = t
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    extradata = bytes(encoder.extradata or b"")
    decoder = av.codec.CodecContext.create("hevc", "r")
    if extradata:
        decoder.extradata = extradata
    decoded: list[list[np.ndarray]] = []
    for payload in [*packets, None]:
        packet = None if payload is None else av.Packet(payload)
        for frame in decoder.decode(packet):
            decoded.append(
                [_view(p, *f.shape).copy() for p, f in zip(frame.planes, frames[0], strict=True)]
            )
    return sum(map(len, packets)) + len(extradata), decoded


def _view(plane: Any, height: int, width: int) -> np.ndarray:
    row = plane.line_size // 2
    return np.frombuffer(memoryview(plane), dtype="<u2").reshape(-1, row)[:height, :width]


def _upsample(half: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear 2x upsampling of centre-sited half-resolution samples."""
    padded = np.pad(half.astype(np.float64), 1, mode="edge")

    def along(a: np.ndarray, n: int, axis: int) -> np.ndarray:
        pos = (np.arange(n) - 0.5) / 2 + 1
        i0 = np.floor(pos).astype(int)
        shape = [1, 1]
        shape[axis] = n
        frac = (pos - i0).reshape(shape)
        return np.take(a, i0, axis=axis) * (1 - frac) + np.take(a, i0 + 1, axis=axis) * frac

    return along(along(padded, height, 0), width, 1)


def measure(cube: np.ndarray, crfs: tuple[float, ...]) -> list[dict[str, Any]]:
    """Points (layout, crf, bpppb, psnr) of three bands of ``cube`` (T, 3, Y, X)."""
    values = np.asarray(cube, dtype=np.float64)
    values = np.where(np.isnan(values), np.nanmean(values, axis=(0, 2, 3), keepdims=True), values)
    T, B, Y, X = values.shape
    low = values.min(axis=(0, 2, 3), keepdims=True)
    high = values.max(axis=(0, 2, 3), keepdims=True)
    codes = (values - low) / np.maximum(high - low, 1e-12) * MAX_CODE
    H, W = -(-Y // 32) * 32, -(-X // 32) * 32
    codes = np.pad(codes, ((0, 0), (0, 0), (0, H - Y), (0, W - X)), mode="edge")
    flat = codes.transpose(1, 0, 2, 3).reshape(B, -1)
    mean = flat.mean(axis=1, keepdims=True)
    basis = np.linalg.eigh(np.cov(flat))[1][:, ::-1]
    components = basis.T @ (flat - mean)
    offset = components.min(axis=1, keepdims=True)
    step = float(np.ptp(components, axis=1).max()) / MAX_CODE
    quantized = np.clip(np.round((components - offset) / step), 0, MAX_CODE).reshape(B, T, H, W)
    half = quantized.reshape(B, T, H // 2, 2, W // 2, 2).mean(axis=(3, 5))
    reference = codes[:, :, :Y, :X]
    points = []
    for layout in ("444", "420"):
        for crf in crfs:
            if layout == "444":
                frames = [[quantized[k, t].astype(np.uint16) for k in range(3)] for t in range(T)]
                nbytes, out = _encode_decode(frames, "yuv444p12le", crf)
                decoded = np.stack([np.stack(f) for f in out], axis=1).astype(np.float64)
            else:
                frames = [
                    [quantized[0, t].astype(np.uint16)]
                    + [np.round(half[k, t]).astype(np.uint16) for k in (1, 2)]
                    for t in range(T)
                ]
                nbytes, out = _encode_decode(frames, "yuv420p12le", crf)
                decoded = np.stack(
                    [
                        np.stack(
                            [f[0].astype(np.float64)] + [_upsample(f[k], H, W) for k in (1, 2)]
                        )
                        for f in out
                    ],
                    axis=1,
                )
            bands = basis @ (decoded.reshape(B, -1) * step + offset) + mean
            bands = bands.reshape(B, T, H, W).transpose(1, 0, 2, 3)[:, :, :Y, :X]
            bands = np.clip(bands, 0, MAX_CODE)
            mse = ((bands - reference) ** 2).mean(axis=(0, 2, 3))
            psnr = float(np.mean(10 * np.log10(MAX_CODE**2 / mse)))
            points.append(
                {"layout": layout, "crf": crf, "bpppb": nbytes * 8 / reference.size, "psnr": psnr}
            )
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--crfs", type=float, nargs="+", default=[16, 24, 30, 36, 42])
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    rows = []
    for name in args.cubes:
        with xr.open_dataset(corpus.cube_path(name, args.corpus)) as ds:
            cube = np.asarray(ds["data"].values[: args.dates, :3])
        points = measure(cube, tuple(args.crfs))
        results[name] = points
        row: list[Any] = [name]
        for rate in RATES:
            at = {
                layout: interp_log(
                    sorted((q["bpppb"], q["psnr"]) for q in points if q["layout"] == layout),
                    rate,
                )
                for layout in ("444", "420")
            }
            if at["444"] is None or at["420"] is None:
                row += ["n/a"] * 3
            else:
                row += [f"{at['444']:.2f}", f"{at['420']:.2f}", f"{at['420'] - at['444']:+.2f}"]
        rows.append(row)
        print(" ".join(str(c) for c in row), flush=True)
    header = ["cube"]
    for rate in RATES:
        header += [f"444 @{rate:g}", f"420 @{rate:g}", f"Δ dB @{rate:g}"]
    state = git_state()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "klt_chroma.json").write_text(
        json.dumps({"git": state, "crfs": args.crfs, "dates": args.dates, "points": results})
    )
    text = (
        "# KLT minor components at half resolution (4:2:0) against full (4:4:4)\n\n"
        f"Three bands, first {args.dates} dates (or all) of each cube, default x265 options at crf "
        f"{', '.join(f'{c:g}' for c in args.crfs)}; PSNR (dB, payload basis) interpolated "
        f"at fixed bpppb. Commit {str(state.get('commit', '?'))[:7]}. Reproduce: "
        "`python -m benchmarks.klt_chroma`.\n\n" + md_table(header, rows) + "\n"
    )
    (RESULTS / "klt_chroma.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
