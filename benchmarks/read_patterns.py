"""Read patterns on a real 118-date Sentinel-2 cube: eocube vs zarr v3 + zstd (lossless).

Times, each from a cold open of the store: one time step, one pixel's full time series,
one spatial tile over all dates, the whole cube. Also the end-to-end decode speed of
eocube against its video codec alone, and a sweep of the time chunk length (size,
PSNR and read times) behind the default chunk shape.

Run: ``python -m benchmarks.read_patterns [--repeats N] [--cube PATH] [--corpus DIR]``;
prints tables and writes ``benchmarks/results/read_patterns.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

import eocube
from benchmarks import corpus
from eocube import lifecycle, metrics
from eocube.chunk import decode_chunk

ROOT = Path(__file__).resolve().parent.parent
CUBE = "s2_l2a_worldcereal_118x4x64x64"
RESULTS = ROOT / "benchmarks" / "results"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_zstd(ds: xr.Dataset, path: Path, chunks: tuple[int, ...]) -> None:
    ds.to_zarr(
        path,
        mode="w",
        zarr_format=3,
        consolidated=True,
        encoding={"data": {"chunks": chunks, "compressors": [ZstdCodec(level=3)]}},
    )


def patterns(t_mid: int, y_mid: int, x_mid: int, tile: int) -> dict[str, dict[str, object]]:
    return {
        "one time step": {"time": t_mid},
        "one pixel time series": {"y": y_mid, "x": x_mid},
        f"one {tile}x{tile} tile": {"y": slice(0, tile), "x": slice(0, tile)},
        "whole cube": {},
    }


def codec_alone_seconds(path: Path) -> tuple[float, float]:
    """Seconds in the video decoder, and in decode_chunk, over every chunk of ``data``."""
    group = zarr.open_group(path, mode="r")
    store = group.store_path.store
    array = group["data"]
    assert isinstance(array, zarr.Array)
    shards, chunks = array.shards, array.chunks
    assert shards is not None
    per_shard = int(np.prod([s // c for s, c in zip(shards, chunks, strict=True)]))
    codec = total = 0.0
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    for key in lifecycle.list_keys(group.store_path, "data/c"):
        shard = sync(store.get(key, prototype=default_buffer_prototype())).to_bytes()
        index = shards.ShardIndex.of_shard(shard, per_shard, key)
        for _, (start, stop) in index.ranges():
            payload = shard[start : stop - shards.CHECKSUM_NBYTES]  # crc32c after the payload
            spent: list[float] = []
            t0 = time.perf_counter()
            decode_chunk(payload, on_codec_time=spent.append)
            total += time.perf_counter() - t0
            codec += spent[0]
    return codec, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--cube", type=Path, default=None, help=f"a NetCDF cube (default: {CUBE} of the corpus)"
    )
    corpus.add_corpus_option(parser)
    parser.add_argument(
        "--crf", type=int, default=None, help="eocube crf (profile default if unset)"
    )
    args = parser.parse_args(argv)
    cube = args.cube or corpus.cube_path(CUBE, args.corpus)

    with xr.open_dataset(cube) as src:
        ds = src[["data"]].load()
    T, B, Y, X = ds.data.shape
    nbytes = ds.data.nbytes
    tile = min(32, Y, X)
    chunks = {"time": 32, "y": 256, "x": 256}
    zchunks = (min(32, T), B, min(256, Y), min(256, X))
    records: list[dict[str, object]] = []
    tmp = Path(tempfile.mkdtemp(prefix="eocube-bench-"))
    try:
        eo_path, z_path = tmp / "cube.eocube", tmp / "cube.zarr"
        report = eocube.to_eocube(ds, eo_path, crf=args.crf, chunks=chunks)
        write_zstd(ds, z_path, zchunks)
        z_bytes = sum(f.stat().st_size for f in z_path.rglob("*") if f.is_file())
        print(f"cube {cube.name}: {T}x{B}x{Y}x{X} {ds.data.dtype}, {nbytes / 1e6:.1f} MB")
        print(
            f"eocube ({report.variables['data'].profile}): {report.nbytes} B, "
            f"{report.bpppb:.3f} bpppb, "
            f"PSNR {report.variables['data'].psnr:.2f} dB; zarr+zstd: {z_bytes} B, "
            f"{z_bytes * 8 / ds.data.size:.3f} bpppb\n"
        )
        readers = {
            "eocube": lambda sel: eocube.open_dataset(eo_path).data.isel(sel).values,
            "zarr+zstd": lambda sel: xr.open_zarr(z_path, chunks=None).data.isel(sel).values,
        }
        print(f"{'pattern':26s} {'eocube ms':>10s} {'zarr+zstd ms':>13s} {'ratio':>7s}")
        for name, sel in patterns(T // 2, Y // 2, X // 2, tile).items():
            row: dict[str, object] = {"pattern": name}
            for reader, fn in readers.items():
                row[reader] = median_seconds(lambda fn=fn, sel=sel: fn(sel), args.repeats)
            eo_s, z_s = float(row["eocube"]), float(row["zarr+zstd"])  # type: ignore[arg-type]
            print(f"{name:26s} {eo_s * 1e3:10.1f} {z_s * 1e3:13.1f} {eo_s / z_s:7.1f}")
            records.append({"kind": "pattern", **row})

        whole = median_seconds(lambda: eocube.open_dataset(eo_path).data.values, args.repeats)
        codec, chunk_total = codec_alone_seconds(eo_path)
        print(
            f"\nwhole-cube decode: end to end {nbytes / whole / 1e6:.1f} MB/s; decode_chunk alone "
            f"{nbytes / chunk_total / 1e6:.1f} MB/s; "
            f"video codec alone {nbytes / codec / 1e6:.1f} MB/s; "
            f"end to end / codec alone = {codec / whole:.2f}"
        )
        records.append(
            {
                "kind": "decode_speed",
                "end_to_end_s": whole,
                "decode_chunk_s": chunk_total,
                "codec_s": codec,
                "mb": nbytes / 1e6,
            }
        )

        print(
            f"\n{'time chunk':>10s} {'bpppb':>7s} {'PSNR':>7s} {'1 step ms':>10s} "
            f"{'pixel ms':>9s} {'whole ms':>9s} {'enc s':>6s}"
        )
        for tc in (8, 16, 32, 64, 128):
            if tc > 2 * T:
                continue
            path = tmp / f"t{tc}.eocube"
            rep = eocube.to_eocube(ds, path, crf=args.crf, chunks={"time": tc})
            one = median_seconds(
                lambda p=path: eocube.open_dataset(p).data.isel(time=T // 2).values, args.repeats
            )
            pix = median_seconds(
                lambda p=path: eocube.open_dataset(p).data.isel(y=Y // 2, x=X // 2).values,
                args.repeats,
            )
            full = median_seconds(lambda p=path: eocube.open_dataset(p).data.values, args.repeats)
            psnr = rep.variables["data"].psnr
            print(
                f"{tc:10d} {rep.bpppb:7.3f} {psnr:7.2f} {one * 1e3:10.1f} {pix * 1e3:9.1f} "
                f"{full * 1e3:9.1f} {rep.seconds:6.2f}"
            )
            records.append(
                {
                    "kind": "time_chunk",
                    "time_chunk": tc,
                    "bpppb": rep.bpppb,
                    "psnr": psnr,
                    "one_step_s": one,
                    "pixel_s": pix,
                    "whole_s": full,
                    "encode_s": rep.seconds,
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "read_patterns.json"
    meta = {
        "cube": cube.name,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "eocube": eocube.__version__,
        "repeats": args.repeats,
        "psnr_definition": metrics.__doc__.split("\n")[2].strip(),
    }
    out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
