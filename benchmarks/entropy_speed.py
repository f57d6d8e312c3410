"""Speed of eocube's range-coded layers, this checkout against another, interleaved.

Three codecs code with :mod:`eocube.rangecoder`: eocube's own lossless coder
(``eocube.lossless``, profile ``eocube-lossless``), the residual layer of error-bounded
writes (``eocube.residual``) and the categorical-layer codec (``eocube.labels``). For
each, on real cubes of the corpus, this times the encode and the decode of whole chunks
(MB/s of the raw values; best of ``--repeats`` runs in one process; each call with its
default threads) in this checkout and
in ``--baseline`` (a checkout, run in a subprocess with ``PYTHONPATH`` on it), one after
the other for ``--rounds`` rounds; the table has the medians over rounds and their ratio,
which is what a shared, noisy machine can compare. Both sides must produce the same
bytes: the script checks the payload sizes agree.

    git worktree add /tmp/base <commit>
    python -m benchmarks.entropy_speed --baseline /tmp/base [--corpus DIR]

Writes ``benchmarks/results/entropy_speed.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
LOSSLESS_CUBES = (
    "s2_l2a_worldcereal_12x9x100x100",
    "s2_l2a_worldcereal_72x4x64x64",
    "l8_ny18_013032",
    "erainterim_uvz",
)
RESIDUAL_CUBE = "era5_t2m_uk_744h"
LABELS_CUBE = "s2_l2a_worldcereal_118x4x64x64"


def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _frames(values: np.ndarray) -> np.ndarray:
    # the luma layout's stream: each band's dates in sequence, offset to start at 0
    v = values.astype(np.int64)
    v -= v.min()
    t, b, y, x = v.shape
    return np.ascontiguousarray(v.transpose(1, 0, 2, 3).reshape(b * t, y, x)).astype(np.uint16)


def measure(corpus: Path, repeats: int) -> dict[str, dict[str, float]]:
    """Encode and decode MB/s (and payload bytes) of each case, in this process's eocube."""
    import xarray as xr

    from eocube import labels, lossless, residual

    def load(name: str, var: str = "data") -> np.ndarray:
        with xr.open_dataset(corpus / f"{name}.nc") as ds:
            return np.asarray(ds[var].values)

    out: dict[str, dict[str, float]] = {}

    def record(case: str, raw_bytes: int, encode: Callable[[], bytes], decode: Callable) -> None:
        encode()  # compile (or load) the kernels outside the timings
        payload, t_enc = _best(encode, repeats)
        decode(payload)
        _, t_dec = _best(lambda: decode(payload), repeats)
        out[case] = {
            "encode_mb_s": raw_bytes / t_enc / 1e6,
            "decode_mb_s": raw_bytes / t_dec / 1e6,
            "payload_bytes": float(len(payload)),
        }

    for name in LOSSLESS_CUBES:
        frames = _frames(load(name))
        record(
            f"eocube-lossless {name}",
            frames.nbytes,
            lambda f=frames: lossless.encode(f),
            lambda p, f=frames: lossless.decode(p, *f.shape),
        )

    # the residual that brings a 0.25 K-quantised temperature field within 0.05 K
    t2m = load(RESIDUAL_CUBE).astype(np.float32)
    decoded = (np.round(t2m / 0.25) * 0.25).astype(np.float32)
    valid = np.isfinite(t2m)
    bounds = np.array([0.05])

    def residual_encode() -> bytes:
        res = residual.compute(t2m, decoded, valid, bounds)
        assert res is not None
        return residual.to_bytes(res)

    record(
        f"residual layer {RESIDUAL_CUBE}",
        t2m.nbytes,
        residual_encode,
        lambda p: residual.restore(decoded, residual.from_bytes(p, t2m.shape, t2m.dtype)),
    )

    mask = load(LABELS_CUBE, "mask")
    record(
        f"labels {LABELS_CUBE} mask",
        mask.nbytes,
        lambda: labels.encode(mask),
        lambda p: labels.decode(p, mask.shape, mask.dtype),
    )
    return out


def _run(checkout: Path | None, corpus: Path, repeats: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    cmd = [sys.executable, __file__, "--worker", "--corpus", str(corpus)]
    cmd += ["--repeats", str(repeats)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--baseline", type=Path, help="another checkout of eocube to compare with")
    p.add_argument(
        "--corpus", type=Path, default=None, help="the corpus folder (default: tests/data)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.corpus, args.repeats)))
        return 0

    from benchmarks import corpus
    from benchmarks.common import git_state, md_table

    args.corpus = corpus.corpus_dir(args.corpus)  # the workers get the folder itself

    here = Path(__file__).resolve().parent.parent
    sides: dict[str, Path] = {"this": here}
    if args.baseline is not None:
        sides["baseline"] = args.baseline.resolve()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for side, checkout in sides.items():
            runs[side].append(_run(checkout, args.corpus, args.repeats))
            print(f"round {r + 1}/{args.rounds}: {side} measured", flush=True)

    cases = list(runs["this"][0])
    rows = []
    for case in cases:
        row: dict[str, Any] = {"case": case}
        for side in sides:
            for what in ("encode_mb_s", "decode_mb_s"):
                row[f"{side} {what}"] = statistics.median(run[case][what] for run in runs[side])
            row[f"{side} payload_bytes"] = runs[side][0][case]["payload_bytes"]
        if "baseline" in sides:
            if row["this payload_bytes"] != row["baseline payload_bytes"]:
                raise SystemExit(f"{case}: the two checkouts code different bytes")
            for what in ("encode_mb_s", "decode_mb_s"):
                row[f"{what} ratio"] = row[f"this {what}"] / row[f"baseline {what}"]
        rows.append(row)

    header = ["case", "payload B", "encode MB/s", "decode MB/s"]
    if "baseline" in sides:
        header += ["baseline encode", "baseline decode", "encode ×", "decode ×"]
    table = []
    for row in rows:
        line = [
            row["case"],
            f"{row['this payload_bytes']:.0f}",
            f"{row['this encode_mb_s']:.1f}",
            f"{row['this decode_mb_s']:.1f}",
        ]
        if "baseline" in sides:
            line += [
                f"{row['baseline encode_mb_s']:.1f}",
                f"{row['baseline decode_mb_s']:.1f}",
                f"{row['encode_mb_s ratio']:.2f}",
                f"{row['decode_mb_s ratio']:.2f}",
            ]
        table.append(line)
    text = md_table(header, table)
    print(text)

    state = git_state()
    base_commit = ""
    if args.baseline is not None:
        base_commit = subprocess.run(
            ["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "entropy_speed.json").write_text(
        json.dumps({"git": state, "baseline": base_commit, "runs": runs, "rows": rows}, indent=1)
    )
    commit = str(state.get("commit", "?"))[:7]
    note = (
        "# Range-coded layers: encode and decode speed\n\n"
        f"This checkout ({commit}) against {base_commit or 'no baseline'}, "
        f"medians over {args.rounds} interleaved rounds of the best of {args.repeats} runs; "
        "MB/s of raw values, shared 2-core machine (compare the ratios); the decoders and "
        "the residual and labels encoders run on one thread, eocube-lossless encodes with "
        "its default threads (one per CPU predicting ahead of the range coder). "
        "Reproduce: `python -m benchmarks.entropy_speed --baseline <checkout>`.\n\n"
    )
    (RESULTS / "entropy_speed.md").write_text(note + text + "\n")
    _plot(rows, "baseline" in sides)
    return 0


def _plot(rows: list[dict[str, Any]], baseline: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2), sharey=True)
    labels = [r["case"] for r in rows]
    y = np.arange(len(rows))
    for ax, what in zip(axes, ("encode_mb_s", "decode_mb_s"), strict=True):
        h = 0.38 if baseline else 0.7
        ax.barh(y - (h / 2 if baseline else 0), [r[f"this {what}"] for r in rows], h, label="this")
        if baseline:
            ax.barh(y + h / 2, [r[f"baseline {what}"] for r in rows], h, label="baseline")
        ax.set_xlabel(what.replace("_mb_s", " MB/s"))
        ax.legend()
    axes[0].set_yticks(y, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "entropy_speed.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
