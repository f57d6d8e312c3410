"""Training throughput: samples/s through a PyTorch DataLoader, eocube vs zarr v3 + zstd.

The same real cube (Sentinel-2, 118 dates x 4 bands x 64 x 64, uint16) is written as an
eocube store (default lossy profile) and as zarr v3 + zstd (lossless, level 3) with the
same chunks; both are read through :class:`eocube.torch.StreamingCubeDataset` (chunk
by chunk, shuffled) and :class:`eocube.torch.CubeDataset` (map-style, random order)
with the same windows, by a DataLoader with 2 worker processes. The first epoch counts
the workers' start; the second runs on persistent workers.

Run: ``python -m benchmarks.loader [--epochs N] [--corpus DIR]``; prints a table and writes
``benchmarks/results/loader.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import xarray as xr

from benchmarks import corpus

RESULTS = Path(__file__).resolve().parent / "results"
CUBE = "s2_l2a_worldcereal_118x4x64x64"
CHUNKS = {"time": 32, "band": 4, "y": 64, "x": 64}
WINDOW = {"time": 8, "y": 32, "x": 32}
STRIDE = {"time": 1, "y": 4, "x": 4}
BATCH = 16
WORKERS = 2


def write_stores(folder: Path, cube_file: Path) -> dict[str, Path]:
    """The cube as an eocube store and as zarr v3 + zstd, same chunks."""
    from zarr.codecs import ZstdCodec

    import eocube

    with xr.open_dataset(cube_file) as ds:
        cube = ds[["data"]].load()
    stores = {"eocube (hevc-12bit-444, default crf)": folder / "cube.eocube"}
    eocube.to_eocube(
        cube, stores["eocube (hevc-12bit-444, default crf)"], chunks=CHUNKS, measure=False
    )
    stores["zarr v3 + zstd-3 (lossless)"] = folder / "cube.zarr"
    encoding = {"data": {"chunks": tuple(CHUNKS.values()), "compressors": [ZstdCodec(level=3)]}}
    cube.to_zarr(
        stores["zarr v3 + zstd-3 (lossless)"], zarr_format=3, encoding=encoding, consolidated=True
    )
    return stores


def nbytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def throughput(dataset: Any, epochs: int, shuffle: bool | None = None) -> list[float]:
    """Samples/s of each epoch through a DataLoader with persistent workers."""
    import torch

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        num_workers=WORKERS,
        persistent_workers=True,
        shuffle=shuffle,
        multiprocessing_context="fork",
    )
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        n = sum(batch["data"].shape[0] for batch in loader)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    corpus.add_corpus_option(parser)
    args = parser.parse_args()
    cube_file = corpus.cube_path(CUBE, args.corpus)
    import torch

    from eocube.torch import CubeDataset, StreamingCubeDataset

    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in write_stores(Path(tmp), cube_file).items():
            streaming = StreamingCubeDataset(
                [path], window=WINDOW, stride=STRIDE, variables=["data"], seed=0
            )
            mapped = CubeDataset(path, window=WINDOW, stride=STRIDE, variables=["data"])
            rows.append(
                {
                    "store": name,
                    "bytes": nbytes(path),
                    "windows": len(mapped),
                    "streaming_samples_per_s": throughput(streaming, args.epochs),
                    "map_style_samples_per_s": throughput(mapped, args.epochs, shuffle=True),
                }
            )
    print(
        f"cube {cube_file.name}, window {WINDOW}, stride {STRIDE}, batch {BATCH}, "
        f"{WORKERS} workers; samples/s per epoch (the first includes the workers' start)"
    )
    print(f"{'store':38s} {'bytes':>9s} {'windows':>7s} {'streaming':>22s} {'map, shuffled':>22s}")
    for r in rows:
        s = " / ".join(f"{v:.0f}" for v in r["streaming_samples_per_s"])
        m = " / ".join(f"{v:.0f}" for v in r["map_style_samples_per_s"])
        print(f"{r['store']:38s} {r['bytes']:9d} {r['windows']:7d} {s:>22s} {m:>22s}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": _cpus(),
        },
        "torch": torch.__version__,
        "cube": cube_file.name,
        "window": WINDOW,
        "stride": STRIDE,
        "chunks": CHUNKS,
        "batch_size": BATCH,
        "num_workers": WORKERS,
        "results": rows,
    }
    (RESULTS / "loader.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
