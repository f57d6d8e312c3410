"""What an interrupted write keeps: resume of a half-written cube against a fresh encode.

For each cube, side by side in one run: a fresh ``to_eocube`` (median of ``--repeats``),
then the same write interrupted (``KeyboardInterrupt``, as Ctrl-C) once half of its
chunks were encoded, then ``resume=True``. The chunks encoded before the interrupt wait
in the store's staging area, so the resume should cost about the share of chunks left.

    python -m benchmarks.resume [--quick]

Writes ``benchmarks/results/resume.json``, ``resume.md`` and ``resume.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import xarray as xr

import eocube
from benchmarks import corpus
from benchmarks.common import RESULTS, git_state, machine_info, md_table
from eocube import encode as writer
from eocube import warmup
from eocube.layout import STAGING

# (cube, chunks): the default chunking unless a cube would be a single chunk
CUBES = [
    ("era5_t2m_uk_744h", None),  # hourly: 128-step chunks, 6 chunks in one shard
    ("s2_l2a_worldcereal_118x4x64x64", {"time": 8}),  # 15 chunks in one shard
    ("s2_l2a_worldcereal_72x4x64x64", {"time": 8}),
]
SETTINGS: dict[str, Any] = {"crf": 20, "measure": False}


class _Stop(KeyboardInterrupt):
    """Ctrl-C after a given number of encoded chunks."""


def _interrupting(after: int) -> Any:
    real = writer.encode_chunk
    count = [0]

    def encode(*args: Any, **kwargs: Any) -> bytes:
        count[0] += 1
        if count[0] > after:
            raise _Stop
        return real(*args, **kwargs)

    return encode


def _chunks(store: Path) -> tuple[int, int]:
    """(chunks staged, shard objects written) of a store."""
    staged = sum(1 for p in (store / STAGING).rglob("*") if p.is_file()) if store.exists() else 0
    shards = sum(1 for p in (store / "data" / "c").rglob("*") if p.is_file())
    return staged, shards


def run_cube(
    name: str, chunks: dict[str, int] | None, repeats: int, work: Path, folder: Path | None
) -> dict[str, Any]:
    """A fresh write of the cube against an interrupted one resumed (medians of ``repeats``)."""
    with xr.open_dataset(corpus.cube_path(name, folder)) as src:
        ds = src[["data"]].load()
    kwargs = {**SETTINGS, "chunks": chunks}
    fresh = []
    for i in range(repeats):
        t0 = time.perf_counter()
        report = eocube.to_eocube(ds, work / f"{name}-fresh-{i}.eocube", **kwargs)
        fresh.append(time.perf_counter() - t0)
    del report
    arr = eocube.open_dataset(work / f"{name}-fresh-0.eocube").data
    n_chunks = math.prod(-(-n // c) for n, c in zip(arr.shape, arr.encoding["chunks"], strict=True))
    resumes, kept = [], []
    for i in range(repeats):
        store = work / f"{name}-resumed-{i}.eocube"
        original = writer.encode_chunk
        writer.encode_chunk = _interrupting(n_chunks // 2)
        try:
            eocube.to_eocube(ds, store, **kwargs)
        except KeyboardInterrupt:
            pass
        finally:
            writer.encode_chunk = original
        time.sleep(1.0)  # chunks still being encoded by other threads finish and stage
        staged, _ = _chunks(store)
        kept.append(staged)
        t0 = time.perf_counter()
        resumed = eocube.to_eocube(ds, store, resume=True, **kwargs)
        resumes.append(time.perf_counter() - t0)
        assert resumed.control == "resume", resumed.control
    fresh_s, resume_s = statistics.median(fresh), statistics.median(resumes)
    left = 1 - statistics.median(kept) / n_chunks
    return {
        "cube": name,
        "chunks": n_chunks,
        "chunks_kept": kept,
        "share_left": left,
        "fresh_s": fresh,
        "resume_s": resumes,
        "ratio": resume_s / fresh_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cube, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    corpus.add_corpus_option(parser)
    args = parser.parse_args()
    cubes = CUBES[:1] if args.quick else CUBES
    repeats = 1 if args.quick else args.repeats
    warmup.warm_up()
    work = Path(tempfile.mkdtemp(prefix="eocube-resume-"))
    try:
        rows = [run_cube(name, chunks, repeats, work, args.corpus) for name, chunks in cubes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = md_table(
        [
            "cube",
            "chunks",
            "kept at the interrupt",
            "share left",
            "fresh s",
            "resume s",
            "resume / fresh",
        ],
        [
            [
                r["cube"],
                r["chunks"],
                statistics.median(r["chunks_kept"]),
                f"{r['share_left']:.2f}",
                f"{statistics.median(r['fresh_s']):.2f}",
                f"{statistics.median(r['resume_s']):.2f}",
                f"{r['ratio']:.2f}",
            ]
            for r in rows
        ],
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": machine_info(), "git": git_state(), "settings": SETTINGS, "repeats": repeats}
    (RESULTS / "resume.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / "resume.md").write_text(
        "# Resume of a write interrupted at half its chunks, against a fresh encode\n\n"
        f"`python -m benchmarks.resume`; medians of {repeats} runs, crf 20, measure=False. "
        "A resume should cost about the share of chunks left.\n\n" + table + "\n"
    )
    _plot(rows)


def _plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["cube"] for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["ratio"] for r in rows], width=0.4, label="resume / fresh")
    ax.bar(
        [i + 0.2 for i in x],
        [r["share_left"] for r in rows],
        width=0.4,
        label="share of chunks left",
    )
    ax.set_xticks(list(x), names, rotation=10, fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8)
    ax.set_title("resume of a half-written cube (time, relative to a fresh encode)")
    fig.tight_layout()
    fig.savefig(RESULTS / "resume.png", dpi=120)


if __name__ == "__main__":
    main()
