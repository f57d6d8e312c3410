"""Scale: peak memory of a larger-than-memory encode, and throughput on a LocalCluster.

(a) Memory. A synthetic uint16 cube (T x 4 bands x Y x X, smooth fields that drift in
time, per-band levels and sensor-like noise; generated lazily, chunk by chunk, by dask)
``--factor`` times larger than ``--budget-mb`` is written by ``to_eocube`` in a child
process with dask's threaded scheduler (``--threads`` workers). The child's peak
resident memory is measured by the OS (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after
it exits) and, while it runs, by polling ``psutil`` (the child is killed beyond
``--kill-mb`` to protect a shared machine; its peak is then reported as at least that).

(b) Throughput. The same kind of cube (``--throughput-mb``) is written through a
``dask.distributed.LocalCluster`` of 1 and then 2 single-threaded worker processes,
with a ``Client`` in scope: the same ``to_eocube`` call, no other change.

Run: ``python -m benchmarks.scale [--budget-mb 512] [--factor 8] [--profile av1-10bit]``
(``--quick`` for a small smoke run); prints a table and writes
``benchmarks/results/scale.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BANDS = 4
INPUT_CHUNKS = (32, BANDS, 256, 256)  # the dask chunks of the synthetic cube (16 MiB)
LEVELS = np.array([900.0, 1200.0, 1500.0, 3000.0], np.float32)  # S2-like DN levels per band


def synthetic_block(block: np.ndarray | None = None, block_info: dict | None = None) -> np.ndarray:
    """One chunk of the synthetic cube, from its location alone (deterministic).

    Made one date at a time, so that generating the input costs little memory beside
    the chunk itself: the memory measured is the encoder's.
    """
    assert block_info is not None
    info = block_info[None]
    (t0, t1), (b0, b1), (y0, y1), (x0, x1) = info["array-location"]
    bands = np.arange(b0, b1)
    phase = bands.astype(np.float32)[:, None, None]
    level = LEVELS[bands % len(LEVELS)][:, None, None]
    y = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    static = level + 450 * np.sin(x / 97 + phase) * np.cos(y / 71 - phase / 2)
    rng = np.random.default_rng([t0, b0, y0, x0])
    out = np.empty((t1 - t0, b1 - b0, y1 - y0, x1 - x0), np.uint16)
    for i, t in enumerate(range(t0, t1)):
        # fields, parcel-like ripples that move, a seasonal cycle, and sensor noise
        field = static + 220 * np.sin((x + 0.6 * y) / 23 + t / 7) * np.cos(y / 41 - t / 11)
        field += 300 * np.sin(2 * np.pi * t / 73) * (1 + phase / 4)
        field += rng.normal(0, 18, field.shape).astype(np.float32)
        out[i] = np.clip(field, 0, 10000)
    return out


def synthetic_cube(nbytes: int) -> Any:
    """A lazy xarray Dataset of about ``nbytes`` of uint16 (T x 4 x Y x X), dask-backed."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    side = 2048 if nbytes >= 2**31 else 1024 if nbytes >= 2**28 else 512
    t = max(INPUT_CHUNKS[0], round(nbytes / (2 * BANDS * side * side) / 32) * 32)
    shape = (t, BANDS, side, side)
    data = da.map_blocks(
        synthetic_block,
        chunks=tuple(
            tuple(min(c, n - i) for i in range(0, n, c))
            for c, n in zip(INPUT_CHUNKS, shape, strict=True)
        ),
        dtype=np.uint16,
        meta=np.empty((0, 0, 0, 0), np.uint16),
    )
    coords = {
        "time": pd.date_range("2020-01-01", periods=t, freq="5D"),
        "band": ["B02", "B03", "B04", "B08"],
        "y": 5_000_000 - 10.0 * np.arange(side),
        "x": 500_000 + 10.0 * np.arange(side),
    }
    return xr.Dataset(
        {"reflectance": (("time", "band", "y", "x"), data, {"units": "DN"})}, coords=coords
    )


# --- (a) memory ----------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time, json, dask
    sys.path.insert(0, {root!r})
    from benchmarks.scale import synthetic_cube
    import eocube
    if {nbytes} == 0:  # the baseline: interpreter, libraries, one tiny encode (codec set up)
        import numpy as np
        from eocube.chunk import encode_chunk
        encode_chunk(np.arange(4 * 64 * 64, dtype=np.uint16).reshape(1, 4, 64, 64), {profile!r})
        sys.exit(0)
    cube = synthetic_cube({nbytes})
    with dask.config.set(scheduler="threads", num_workers={threads}):
        t0 = time.perf_counter()
        report = eocube.to_eocube(cube, {store!r}, profile={profile!r}, measure=False)
        seconds = time.perf_counter() - t0
    print(json.dumps({{"seconds": seconds, "nbytes": report.nbytes,
                      "original_nbytes": report.original_nbytes}}))
    """
)


def measure_encode_memory(
    nbytes: int,
    profile: str,
    threads: int,
    kill_mb: float,
    workdir: Path,
    malloc_arena_max: int | None = None,
) -> dict[str, Any]:
    """Encode the synthetic cube in a child process and measure its peak RSS.

    The OS's figure is the child's own ``ru_maxrss`` (``os.wait4``); psutil polls the
    RSS every 50 ms meanwhile (a timeline, and a guard: beyond ``kill_mb`` the child is
    killed). ``nbytes=0`` measures the baseline: imports and a tiny encode.
    """
    import psutil

    store = workdir / "memory.eocube"
    shutil.rmtree(store, ignore_errors=True)
    script = CHILD.format(
        root=str(ROOT), nbytes=nbytes, threads=threads, store=str(store), profile=profile
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_ARENA_MAX", None)
    if malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(malloc_arena_max)
    started = time.perf_counter()
    with open(workdir / "out.txt", "w+b") as out, open(workdir / "err.txt", "w+b") as err:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=out, stderr=err, env=env)
        child = psutil.Process(proc.pid)
        polled, killed, status = 0.0, False, 0
        samples: list[tuple[float, float]] = []
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = child.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
            polled = max(polled, rss)
            samples.append((round(time.perf_counter() - started, 2), round(rss, 1)))
            if rss > kill_mb and not killed:
                child.kill()
                killed = True
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    result: dict[str, Any] = {
        "cube_nbytes": nbytes,
        "profile": profile,
        "threads": threads,
        "malloc_arena_max": malloc_arena_max,
        "killed_beyond_mb": kill_mb if killed else None,
        "peak_rss_mb_os": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
        "peak_rss_mb_psutil": round(polled, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if nbytes:
        result["rss_timeline_mb"] = samples[:: max(1, len(samples) // 60)]
    if not killed:
        if proc.returncode != 0:
            raise RuntimeError(f"encode child failed:\n{stderr[-3000:]}")
        if nbytes:
            child_report = json.loads(stdout.strip().splitlines()[-1])
            result.update(
                encode_seconds=round(child_report["seconds"], 1),
                store_nbytes=child_report["nbytes"],
                compression_ratio=round(
                    child_report["original_nbytes"] / child_report["nbytes"], 1
                ),
                throughput_mb_s=round(nbytes / 2**20 / child_report["seconds"], 2),
            )
    shutil.rmtree(store, ignore_errors=True)
    return result


# --- (b) throughput on a LocalCluster ---------------------------------------------------


def _cpu_seconds() -> float:
    import psutil

    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def cluster_throughput(nbytes: int, profile: str, workdir: Path) -> list[dict[str, Any]]:
    """Encode the same cube through LocalClusters of 1 and 2 worker processes."""
    import distributed

    import eocube

    rows = []
    cube = synthetic_cube(nbytes)
    for workers in (1, 2):
        store = workdir / f"cluster{workers}.eocube"
        shutil.rmtree(store, ignore_errors=True)
        with (
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=0,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            client.run(lambda: __import__("eocube"))  # imports are not encode time
            cpu0 = sum(client.run(_cpu_seconds).values())
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            report = eocube.to_eocube(cube, store, profile=profile, measure=False)
            seconds = time.perf_counter() - t0
            cpu = sum(client.run(_cpu_seconds).values()) - cpu0
            executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
        rows.append(
            {
                "workers": workers,
                "threads_per_worker": 1,
                "cube_nbytes": int(cube.reflectance.nbytes),
                "seconds": round(seconds, 2),
                "throughput_mb_s": round(cube.reflectance.nbytes / 2**20 / seconds, 2),
                "store_nbytes": report.nbytes,
                "tasks_per_worker": sorted(executed.values()),
                # CPU seconds of the worker processes (all their threads) per wall second
                "worker_cores_busy": round(cpu / seconds, 2),
                "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            }
        )
        shutil.rmtree(store, ignore_errors=True)
    rows[1]["speedup_vs_1_worker"] = round(rows[0]["seconds"] / rows[1]["seconds"], 2)
    return rows


def machine() -> dict[str, Any]:
    import dask
    import distributed
    import psutil

    import eocube

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "eocube": eocube.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


# Measured with the writer before this benchmark's fix (one dask task per shard: each
# task held its whole shard, 1 GiB here, and more in copies), on the same 2-core machine
# and command: the child was killed when it passed 3 GiB, 19.8 s into the encode.
BEFORE_FIX = {
    "cube_nbytes": 4 * 2**30,
    "profile": "av1-10bit",
    "threads": 2,
    "malloc_arena_max": None,
    "killed_beyond_mb": 3072.0,
    "peak_rss_mb_os": 3104.7,
    "note": "to_eocube wrote one dask task per shard (SHARD_CHUNKS 16 x 4 x 4 chunks of "
    "32 x 4 x 256 x 256: 1 GiB shards); killed past 3 GiB after 19.8 s. A 0.5 GiB cube "
    "peaked at 2371 MB (13.4 s after the fix: 722 MB)",
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--budget-mb", type=float, default=512)
    parser.add_argument("--factor", type=float, default=8)
    parser.add_argument(
        "--configs",
        default="1:2,2:0",
        help="threads:MALLOC_ARENA_MAX of each memory run (0: glibc's default); the first "
        "is the one held to the budget",
    )
    parser.add_argument("--profile", default="av1-10bit")
    parser.add_argument("--throughput-mb", type=float, default=512)
    parser.add_argument("--kill-mb", type=float, default=None, help="default: 6 x the budget")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.factor, args.throughput_mb = 1, 64
    kill_mb = args.kill_mb or 6 * args.budget_mb
    results: dict[str, Any] = {"machine": machine(), "budget_mb": args.budget_mb}
    if (args.skip_memory or args.skip_throughput) and args.out.exists():
        # keep the part not run this time from the last run (its machine line stays too)
        previous = json.loads(args.out.read_text())
        kept = ("cluster",) if args.skip_throughput else ("baseline", "memory", "memory_before_fix")
        results.update({k: previous[k] for k in kept if k in previous})
        results["machine_of_kept_part"] = previous.get("machine")
    workdir = Path(tempfile.mkdtemp(prefix="eocube-scale-"))
    try:
        if not args.skip_memory:
            nbytes = int(args.budget_mb * args.factor * 2**20)
            results["baseline"] = measure_encode_memory(0, args.profile, 1, kill_mb, workdir)
            runs = []
            for config in args.configs.split(","):
                threads, arenas = (int(v) for v in config.split(":"))
                run = measure_encode_memory(
                    nbytes, args.profile, threads, kill_mb, workdir, arenas or None
                )
                run["peak_over_budget"] = round(run["peak_rss_mb_os"] / args.budget_mb, 2)
                run["within_budget"] = (
                    run["killed_beyond_mb"] is None and run["peak_rss_mb_os"] <= args.budget_mb
                )
                run["above_baseline_mb"] = round(
                    run["peak_rss_mb_os"] - results["baseline"]["peak_rss_mb_os"], 1
                )
                runs.append(run)
            results["memory"] = runs
            results["memory_before_fix"] = BEFORE_FIX
        if not args.skip_throughput:
            nbytes = int(args.throughput_mb * 2**20)
            results["cluster"] = cluster_throughput(nbytes, args.profile, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(results: dict[str, Any]) -> None:
    """The figures as plain-text tables."""
    runs = results.get("memory", [])
    if runs:
        base = results["baseline"]["peak_rss_mb_os"]
        print(
            f"memory: {runs[0]['cube_nbytes'] / 2**30:.2f} GiB uint16 cube "
            f"({runs[0]['cube_nbytes'] / 2**20 / results['budget_mb']:.0f}x the "
            f"{results['budget_mb']:.0f} MB budget), {runs[0]['profile']}; "
            f"baseline (imports, codec set up) {base:.0f} MB"
        )
        head = ("threads", "arenas", "peak MB (OS)", "psutil MB", "/budget", "encode s", "MB/s")
        print("  " + " ".join(f"{h:>12s}" for h in head))
        for run in [*runs, results.get("memory_before_fix")]:
            if not run:
                continue
            cells = (
                str(run["threads"]),
                _f(run["malloc_arena_max"], "d"),
                _f(run["peak_rss_mb_os"], ".0f")
                + (" killed" if run.get("killed_beyond_mb") else ""),
                _f(run.get("peak_rss_mb_psutil"), ".0f"),
                _f(run["peak_rss_mb_os"] / results["budget_mb"], ".2f"),
                _f(run.get("encode_seconds"), ".1f"),
                _f(run.get("throughput_mb_s"), ".1f"),
            )
            tag = ""
            if run is results.get("memory_before_fix"):
                tag = f"  (before the fix, {run['cube_nbytes'] / 2**30:.0f} GiB cube)"
            print("  " + " ".join(f"{c:>12s}" for c in cells) + tag)
    rows = results.get("cluster", [])
    if rows:
        print(f"LocalCluster: {rows[0]['cube_nbytes'] / 2**20:.0f} MiB cube, 1 thread per worker")
        head = ("workers", "seconds", "MB/s", "speedup", "cores busy", "tasks/worker")
        print("  " + " ".join(f"{h:>12s}" for h in head))
        for row in rows:
            cells = (
                str(row["workers"]),
                f"{row['seconds']:.1f}",
                f"{row['throughput_mb_s']:.1f}",
                f"{row.get('speedup_vs_1_worker', 1.0):.2f}",
                _f(row.get("worker_cores_busy"), ".2f"),
                str(row["tasks_per_worker"]),
            )
            print("  " + " ".join(f"{c:>12s}" for c in cells))


if __name__ == "__main__":
    main()
