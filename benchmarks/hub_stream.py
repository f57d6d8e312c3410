"""Streaming random windows from a hub-hosted release: eocube vs zarr v3 + zstd.

Both releases hold the same real cubes with the same chunks and shards, published with
``eocube.hub.publish`` to the local hub double of the tests (``tests/hub_server.py``, on
loopback: no network latency, so the figures are client-side costs: requests, bytes,
decoding). A sample is a random window of ``--window`` (time, y, x) over all bands of
the ``data`` variable of a random cube. Measured per store kind:

- time to first sample: a fresh client opens one cube and reads one window;
- samples/s over ``--samples`` windows, the cubes opened once beforehand;
- requests and kB transferred per sample, from the hub's log, and the time those bytes
  would take on a 100 Mbit/s link (loopback moves them for free).

Times are medians of ``--repeats`` runs, each from a fresh client.

Rows: eocube (lossy, ``--crf``) read over ``hf://`` by ``eocube.hubfs`` (exact range
requests); zarr + zstd (lossless) read through the same exact-range store; zarr + zstd
read through plain ``HfFileSystem`` (fsspec's default 4 MiB read-ahead), for contrast.

Run: ``python -m benchmarks.hub_stream [--samples N] [--window T Y X] [--crf Q]
[--corpus DIR]``; prints a table and writes ``benchmarks/results/hub_stream.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr
from huggingface_hub import HfFileSystem
from zarr.codecs import ZstdCodec
from zarr.errors import UnstableSpecificationWarning

import eocube
from benchmarks import corpus
from eocube.hub import publish
from eocube.hubfs import RangeHfFileSystem, hub_store

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))
from hub_server import HubServer  # noqa: E402  (the test double lives in tests/)

CUBES = {
    "s2-worldcereal-118": "s2_l2a_worldcereal_118x4x64x64",
    "s2-worldcereal-12": "s2_l2a_worldcereal_12x9x100x100",
    "s2-gfmap-12": "s2_l2a_openeo_gfmap_12x5x66x64",
    "cmip3-tos": "stars_cmip3_tos_24x1x170x180",
}
CHUNKS = {"time": 8, "y": 64, "x": 64}
TOKEN = "hf_benchmark"
LINK_BITS_PER_S = 100e6


def load(name: str, folder: Path | None) -> xr.Dataset:
    """The whole cube ``name`` of the corpus, every variable, decoded as xarray does."""
    with xr.open_dataset(corpus.cube_path(name, folder)) as ds:
        return ds.load()


def write_zarr_release(cubes: dict[str, xr.Dataset], eocube_release: Path, folder: Path) -> None:
    """The same cubes as zarr v3 + zstd, with eocube's chunks and shards."""
    for cube_id, ds in cubes.items():
        array = zarr.open_group(eocube_release / f"cubes/{cube_id}.eocube", mode="r")["data"]
        assert isinstance(array, zarr.Array)
        ds.to_zarr(
            folder / f"cubes/{cube_id}.zarr",
            mode="w",
            zarr_format=3,
            consolidated=True,
            encoding={
                "data": {
                    "chunks": array.chunks,
                    "shards": array.shards,
                    "compressors": [ZstdCodec(level=3)],
                }
            },
        )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def windows(
    cubes: dict[str, xr.Dataset], n: int, size: tuple[int, int, int], seed: int
) -> list[tuple[str, dict[str, slice]]]:
    rng = np.random.default_rng(seed)
    ids = sorted(cubes)
    out = []
    for _ in range(n):
        cube_id = ids[int(rng.integers(len(ids)))]
        sizes = cubes[cube_id].data.sizes
        sel = {}
        for dim, length in zip(("time", "y", "x"), size, strict=True):
            length = min(length, sizes[dim])
            start = int(rng.integers(sizes[dim] - length + 1))
            sel[dim] = slice(start, start + length)
        out.append((cube_id, sel))
    return out


def stream(
    hub: HubServer,
    opener: Callable[[str], xr.Dataset],
    samples: list[tuple[str, dict[str, slice]]],
) -> dict[str, Any]:
    RangeHfFileSystem.clear_instance_cache()
    HfFileSystem.clear_instance_cache()
    first_id, first_sel = samples[0]
    t0 = time.perf_counter()
    first = opener(first_id).data.isel(first_sel).values
    ttfs = time.perf_counter() - t0
    opened = {cube_id: opener(cube_id) for cube_id in sorted({c for c, _ in samples})}
    mark = len(hub.requests)
    t0 = time.perf_counter()
    for cube_id, sel in samples:
        window = opened[cube_id].data.isel(sel).values
        assert window.size > 0
    seconds = time.perf_counter() - t0
    log = hub.log_since(mark)
    return {
        "time_to_first_sample_s": ttfs,
        "samples_per_s": len(samples) / seconds,
        "requests_per_sample": len(log) / len(samples),
        "kB_per_sample": sum(r.sent for r in log) / len(samples) / 1e3,
        "first_sample_shape": list(first.shape),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--window", type=int, nargs=3, default=[8, 64, 64], metavar=("T", "Y", "X"))
    parser.add_argument("--crf", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per store kind (median)")
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)

    cubes = {cube_id: load(name, args.corpus) for cube_id, name in CUBES.items()}
    samples = windows(cubes, args.samples, tuple(args.window), args.seed)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, HubServer(token=TOKEN) as hub:
        eo, zs = Path(tmp) / "eocube", Path(tmp) / "zarr"
        with warnings.catch_warnings():
            # band names as fixed-length strings, consolidated metadata: zarr-python reads both
            warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            eocube.write_release(cubes, eo, progress=False, crf=args.crf, chunks=CHUNKS)
            write_zarr_release(cubes, eo, zs)
        sha_eo = publish(eo, "bench/eocube", endpoint=hub.url, token=TOKEN)
        sha_zs = publish(zs, "bench/zarr-zstd", endpoint=hub.url, token=TOKEN)
        options = {"endpoint": hub.url, "token": TOKEN}

        def eocube_open(cube_id: str) -> xr.Dataset:
            url = f"hf://datasets/bench/eocube@{sha_eo}/cubes/{cube_id}.eocube"
            return xr.open_dataset(url, engine="eocube", storage_options=options)

        def zarr_url(cube_id: str) -> str:
            return f"hf://datasets/bench/zarr-zstd@{sha_zs}/cubes/{cube_id}.zarr"

        def zarr_open(cube_id: str) -> xr.Dataset:
            store = hub_store(zarr_url(cube_id), options)
            return xr.open_zarr(store, chunks=None, zarr_format=3)

        def zarr_open_plain(cube_id: str) -> xr.Dataset:
            return xr.open_dataset(
                zarr_url(cube_id), engine="zarr", chunks=None, storage_options=options
            )

        kinds = [
            ("eocube (exact ranges)", eocube_open, eo),
            ("zarr+zstd (exact ranges)", zarr_open, zs),
            ("zarr+zstd (HfFileSystem read-ahead)", zarr_open_plain, zs),
        ]
        for label, opener, folder in kinds:
            runs = [stream(hub, opener, samples) for _ in range(args.repeats)]
            rows[label] = {
                "release_bytes": folder_bytes(folder),
                **runs[-1],
                "time_to_first_sample_s": statistics.median(
                    r["time_to_first_sample_s"] for r in runs
                ),
                "samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                "repeats": args.repeats,
            }
            # loopback costs nothing per byte; a link of LINK_BITS_PER_S would add this
            rows[label]["transfer_ms_per_sample_at_100Mbit"] = (
                rows[label]["kB_per_sample"] * 1e3 * 8 / LINK_BITS_PER_S * 1e3
            )

    window = "x".join(map(str, args.window))
    print(f"random {window} (time x y x) windows of 'data', all bands, {args.samples} samples")
    print(f"over a local hub double on loopback ({len(CUBES)} real cubes, chunks {CHUNKS}),")
    print(f"median of {args.repeats} runs; eocube crf={args.crf} (lossy), zarr+zstd lossless\n")
    header = f"{'store':38s} {'release kB':>10s} {'first s':>8s} {'samples/s':>9s} "
    print(header + f"{'req/sample':>10s} {'kB/sample':>9s} {'ms@100Mb':>8s}")
    for label, r in rows.items():
        print(
            f"{label:38s} {r['release_bytes'] / 1e3:10.1f} {r['time_to_first_sample_s']:8.3f} "
            f"{r['samples_per_s']:9.1f} {r['requests_per_sample']:10.2f} {r['kB_per_sample']:9.1f} "
            f"{r['transfer_ms_per_sample_at_100Mbit']:8.1f}"
        )
    print("ms@100Mb: transfer time per sample on a 100 Mbit/s link (kB/sample; loopback is free)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "hub_stream",
        "window": args.window,
        "samples": args.samples,
        "crf": args.crf,
        "chunks": CHUNKS,
        "cubes": CUBES,
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "results": rows,
    }
    (RESULTS / "hub_stream.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'hub_stream.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
