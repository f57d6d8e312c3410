"""eocube's own lossless coder (profile ``eocube-lossless``) against ``ffv1-lossless``.

Each integer cube of the dev corpus is written with :func:`eocube.to_eocube` under both
profiles and read back with xarray (checked bit-exact). The table gives the payload bits
per value and the encode / read speeds (MB/s of raw values, best of ``--repeats``); the
JPEG-XL lossless and JPEG-LS columns are quoted from benchmarks/results/rd/summary.md
("Goal 3"), not measured here.

Run: ``python -m benchmarks.lossless [--repeats N] [--corpus DIR] [cube ...]``; writes
benchmarks/results/lossless.json and lossless.md. Cubes not in the corpus folder
(``tests/data`` unless ``--corpus`` or ``$EOCUBE_CORPUS`` says otherwise) are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

import eocube
from benchmarks import corpus

RESULTS = Path(__file__).resolve().parent / "results"
PROFILES = ("eocube-lossless", "ffv1-lossless")

# bits per value (payload) from benchmarks/results/rd/summary.md, "Goal 3": quoted
QUOTED = {
    "erainterim_uvz": (3.190, 5.817),
    "l8_ny18_013032": (7.632, 7.935),
    "l8_ny18_014031": (8.656, 8.870),
    "l8_ny18_014032": (8.431, 8.655),
    "s2_l2a_openeo_gfmap_12x5x66x64": (3.267, 4.147),
    "s2_l2a_openeo_gfmap_19x4x52x46": (7.752, 8.358),
    "s2_l2a_worldcereal_118x4x64x64": (8.608, 8.527),
    "s2_l2a_worldcereal_118x6x32x32": (9.234, 9.247),
    "s2_l2a_worldcereal_12x9x100x100": (4.590, 5.080),
    "s2_l2a_worldcereal_72x4x64x64": (8.264, 8.118),
}


def measure(ds: xr.Dataset, profiles: tuple[str, ...], repeats: int) -> list[dict[str, Any]]:
    """Payload bits per value, encode and read MB/s of each profile on one cube.

    The profiles take turns within each repeat, so that a machine whose speed drifts
    (shared, throttled) slows them alike; each speed is the best of ``repeats``.
    """
    values = ds["data"].values
    enc: dict[str, list[float]] = {p: [] for p in profiles}
    dec: dict[str, list[float]] = {p: [] for p in profiles}
    payload: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for profile in profiles:
                path = Path(tmp) / f"{profile}{i}.eocube"
                t0 = time.perf_counter()
                report = eocube.to_eocube(ds, path, lossless=True, profile=profile, measure=False)
                enc[profile].append(time.perf_counter() - t0)
                payload[profile] = report.variables["data"].payload_nbytes
                t0 = time.perf_counter()
                with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as back:
                    got = np.asarray(back["data"].values)
                dec[profile].append(time.perf_counter() - t0)
                if not np.array_equal(got, values):
                    raise AssertionError(f"{profile} is not bit-exact")
    return [
        {
            "bits_per_value": 8 * payload[p] / values.size,
            "encode_mb_s": values.nbytes / min(enc[p]) / 1e6,
            "read_mb_s": values.nbytes / min(dec[p]) / 1e6,
        }
        for p in profiles
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and write the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("cubes", nargs="*", default=list(QUOTED))
    parser.add_argument("--repeats", type=int, default=3)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    # compile the kernels outside the timings
    warm = xr.Dataset(
        {"data": (("time", "band", "y", "x"), np.zeros((2, 2, 4, 4), np.uint16))},
    )
    measure(warm, PROFILES, 1)
    rows = []
    header = (
        "| cube | eocube-lossless | ffv1-lossless | JPEG-XL (quoted) | JPEG-LS (quoted) "
        "| enc MB/s own / ffv1 | encode time / ffv1's | read MB/s own / ffv1 | beats all |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    print(header)
    for name in corpus.present(args.cubes, args.corpus):
        with xr.open_dataset(corpus.cube_path(name, args.corpus)) as src:
            ds = src[["data"]].load()
        own, ffv1 = measure(ds, PROFILES, args.repeats)
        jxl, jls = QUOTED.get(name, (float("nan"), float("nan")))
        best_other = min(ffv1["bits_per_value"], jxl, jls)
        wins = own["bits_per_value"] < best_other
        rows.append(
            {
                "cube": name,
                "eocube-lossless": own,
                "ffv1-lossless": ffv1,
                "jpegxl_quoted": jxl,
                "jpegls_quoted": jls,
                "beats_all": wins,
            }
        )
        line = (
            f"| {name} | {own['bits_per_value']:.3f} | {ffv1['bits_per_value']:.3f} | "
            f"{jxl:.3f} | {jls:.3f} | {own['encode_mb_s']:.1f} / {ffv1['encode_mb_s']:.1f} | "
            f"{ffv1['encode_mb_s'] / own['encode_mb_s']:.2f} | "
            f"{own['read_mb_s']:.1f} / {ffv1['read_mb_s']:.1f} | {'yes' if wins else 'no'} |"
        )
        lines.append(line)
        print(line, flush=True)
    if not rows:  # keep the committed results rather than overwrite them with nothing
        print("no cube measured; results not written")
        return 1
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lossless.json").write_text(json.dumps(rows, indent=1))
    note = (
        "# eocube-lossless vs ffv1-lossless\n\nPayload bits per value; speeds in MB/s of "
        "raw values through to_eocube / xr.open_dataset (best of "
        f"{args.repeats}, shared 2-core machine: compare ratios). JPEG-XL and JPEG-LS "
        "are quoted from benchmarks/results/rd/summary.md (Goal 3), not measured here.\n\n"
    )
    slower = [r["ffv1-lossless"]["encode_mb_s"] / r["eocube-lossless"]["encode_mb_s"] for r in rows]
    summary = (
        f"\nEncode time against FFV1's: {min(slower):.2f}-{max(slower):.2f}x, median "
        f"{statistics.median(slower):.2f}x; within 2x on {sum(x <= 2 for x in slower)} of "
        f"{len(slower)} cubes.\n"
    )
    print(summary)
    (RESULTS / "lossless.md").write_text(note + "\n".join(lines) + "\n" + summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
