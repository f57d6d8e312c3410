"""Are a chunk's bytes a function of the chunk alone? Concurrent encodes, profile by profile.

A store written twice from the same data should hold the same bytes: region writes and
appends rebuild chunks a whole write makes, ``--resume`` and content-addressed releases
lean on it, and a reviewer can diff two releases. Each shipped profile encodes the same
block many times over, on several threads at once (as a store write encodes chunks), and
the table counts the distinct payloads.

The x265 profiles are also run with x265's own default ``weightp=1`` (weighted
prediction), which they turn off: its motion search reads the weighted copy of a
reference before x265 has written all of it (valgrind: uninitialised values from
``MotionReference::init``), so the payload depended on what the process had freed before.

    python -m benchmarks.determinism [--encodes 96] [--threads 8]

Writes ``benchmarks/results/determinism.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import RESULTS, git_state, machine_info, md_table
from benchmarks.defaults import _with

CUBE = "s2_l2a_openeo_gfmap_19x4x52x46"
# (label, dates, y, x): the 4-date block is the chunk a region-write test saw differ
BLOCKS = (
    ("4 dates x 4 bands x 32 x 32", slice(0, 4), slice(0, 32), slice(0, 32)),
    ("8 dates x 4 bands x 32 x 32", slice(4, 12), slice(20, 52), slice(14, 46)),
)


def variants() -> list[tuple[str, Any]]:
    """Every shipped profile as shipped, and the libx265 ones with x265's weightp=1."""
    import eocube

    out: list[tuple[str, Any]] = []
    for name, prof in sorted(eocube.available_profiles().items()):
        out.append((name, prof))
        if prof.encoder == "libx265":
            out.append((f"{name} + weightp=1", _with(prof, params={"weightp": "1"})))
    return out


def fitting(block: np.ndarray, prof: Any) -> np.ndarray:
    """The block, shifted right until a lossless profile's bit depth holds its range."""
    shifted = block
    while prof.lossless and shifted.max() - shifted.min() >= 1 << prof.bits:
        shifted = shifted >> 1
    return shifted


def measure(block: np.ndarray, prof: Any, encodes: int, threads: int) -> dict[str, Any]:
    import eocube

    def one(_: int) -> str:
        return hashlib.sha256(eocube.encode_chunk(block, prof)).hexdigest()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        counts = collections.Counter(pool.map(one, range(encodes)))
    common_count = counts.most_common(1)[0][1]
    return {
        "encodes": encodes,
        "distinct": len(counts),
        "differing": encodes - common_count,
        "share_differing": (encodes - common_count) / encodes,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.determinism", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--encodes", type=int, default=96, help="encodes of each block")
    p.add_argument("--threads", type=int, default=8, help="encodes at once")
    corpus.add_corpus_option(p)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    cube = corpus.load_cube(CUBE, args.corpus)
    rows: list[dict[str, Any]] = []
    for label, prof in variants():
        for block_label, dates, ys, xs in BLOCKS:
            block = fitting(np.ascontiguousarray(cube.values[dates, :, ys, xs]), prof)
            row = {"variant": label, "block": block_label, "profile": prof.name}
            row.update(measure(block, prof, args.encodes, args.threads))
            rows.append(row)
            print(
                f"{label:34s} {block_label:28s} {row['distinct']:3d} distinct, "
                f"{row['differing']:3d}/{row['encodes']} differ [{row['seconds']:.1f} s]",
                file=sys.stderr,
                flush=True,
            )
    table = md_table(
        ["variant", "block", "encodes", "distinct payloads", "differing from the most common"],
        [
            [
                r["variant"],
                r["block"],
                r["encodes"],
                r["distinct"],
                f"{r['differing']} ({100 * r['share_differing']:.0f} %)",
            ]
            for r in rows
        ],
        "llrrr",
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": machine_info(),
        "git": git_state(),
        "cube": CUBE,
        "encodes": args.encodes,
        "threads": args.threads,
    }
    (RESULTS / "determinism.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "determinism.md").write_text(
        "# Determinism: the same block encoded many times, several encodes at once\n\n"
        f"`python -m benchmarks.determinism --encodes {args.encodes} --threads "
        f"{args.threads}`; blocks of {CUBE} (lossless profiles: shifted right until their "
        "bit depth holds the block), each encoded with `eocube.encode_chunk` "
        f"{args.encodes} times, {args.threads} at once. One distinct payload per row is "
        "the goal. The `+ weightp=1` rows put back x265's weighted prediction, which the "
        "shipped x265 profiles turn off.\n\n" + table + "\n"
    )
    _plot(rows)
    return 0


def _plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["variant"] for r in rows))
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(labels) + 1.2))
    height = 0.8 / len(blocks)
    for j, block in enumerate(blocks):
        share = {r["variant"]: r["share_differing"] for r in rows if r["block"] == block}
        shares = [100 * share[v] for v in labels]
        ax.barh([i + j * height for i in range(len(labels))], shares, height=height, label=block)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("% of encodes whose payload differs from the most common one")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "determinism.png", dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
