"""Decode time of the default profile against a variant of its options, interleaved.

The same 32-date block of each cube is encoded at crf 16 with ``hevc-12bit-444`` as
shipped and with the variant (by default: without ``rdoq-level``, the former default),
then :func:`eocube.chunk.decode_chunk` decodes both payloads in turn ``--repeats`` times;
medians and their ratio are printed and written to ``benchmarks/results/decode_ab.json``.
Interleaving makes the ratio fair on a shared machine where absolute times drift.

    python -m benchmarks.decode_ab [--corpus DIR] [--drop rdoq-level]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import xarray as xr

from benchmarks import corpus
from benchmarks.common import git_state, md_table
from benchmarks.defaults import _with

CUBES = (
    "s2_l2a_worldcereal_118x4x64x64",
    "era5_t2m_uk_744h",
    "l8_ny18_014031",
    "s2_l2a_worldcereal_12x9x100x100",
)
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    import eocube
    from eocube.chunk import decode_chunk

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--drop", nargs="+", default=["rdoq-level"], help="x265 params to drop")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    shipped = eocube.get_profile("hevc-12bit-444")
    variant = _with(shipped, drop=tuple(args.drop))
    rows = []
    for name in corpus.present(CUBES, args.corpus):
        block = xr.open_dataset(corpus.cube_path(name, args.corpus))["data"].values[:32]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payloads = {
                "shipped": eocube.encode_chunk(block, shipped, quality=16),
                "variant": eocube.encode_chunk(block, variant, quality=16),
            }
        times: dict[str, list[float]] = {k: [] for k in payloads}
        for k in payloads:
            decode_chunk(payloads[k])  # warm
        for _ in range(args.repeats):
            for k, payload in payloads.items():
                t0 = time.perf_counter()
                decode_chunk(payload)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "cube": name,
                "bytes_shipped": len(payloads["shipped"]),
                "bytes_variant": len(payloads["variant"]),
                "ms_shipped": med["shipped"] * 1e3,
                "ms_variant": med["variant"] * 1e3,
                "ratio": med["shipped"] / med["variant"],
            }
        )
    table = md_table(
        ["cube", "bytes shipped / variant", "decode ms shipped / variant", "shipped / variant"],
        [
            [
                r["cube"],
                f"{r['bytes_shipped']} / {r['bytes_variant']}",
                f"{r['ms_shipped']:.1f} / {r['ms_variant']:.1f}",
                f"{r['ratio']:.2f}",
            ]
            for r in rows
        ],
    )
    print(f"variant: shipped without {args.drop}\n\n{table}")
    if not rows:
        print("no cube measured; results not written")
        return 1
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decode_ab.json").write_text(
        json.dumps({"drop": args.drop, "code": git_state(), "rows": rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
