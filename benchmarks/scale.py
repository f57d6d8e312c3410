"""Scale: a cube several times larger than a worker's memory, on 1, 2 and 4 workers.

A synthetic uint16 cube (T x 4 bands x Y x X: smooth fields that drift in time, per-band
levels and sensor-like noise), generated lazily by dask one chunk per task, is written
through a ``dask.distributed.LocalCluster`` of W single-threaded worker processes, each
given ``--memory-limit-mb``; the cube is ``--factor`` times that (default 4x).

For each W, in the same cluster and interleaved (``--repeats`` rotates their order):

- ``encode only``: :func:`eocube.chunk.encode_chunk` on every chunk of the cube, the
  payloads counted and dropped; no store. The codec's share of a write.
- ``measure=False``: ``to_eocube(cube, store, measure=False)``.
- ``measure=True``: ``to_eocube(cube, store, measure=True)`` (PSNR and max error in the
  report).

Each gives the wall time, MB (1e6 bytes) of input per second and Mvalues/s, the store's
bytes, and the peak resident memory of every worker process. The write's overhead beyond
encoding is ``write seconds / encode-only seconds - 1``. Every variant generates the same
source blocks, so the encode-only time includes the source's generation (its cost per
chunk is measured once and reported). Peaks are the kernel's high-water mark of each
worker process (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` before each variant:
exact, not sampled); the client polls the workers' RSS with ``psutil`` meanwhile for the
timeline (and for the peak where the mark cannot be reset). The workers are polled from
outside so that measuring costs them nothing.

A worker that holds a task yet uses no CPU for a minute is killed and the variant run
again (:class:`WorkerWatch`): SVT-AV1 was seen to stall for good about once in 600-900
chunks. The default run (3.2 GB, 9 passes over it) takes about 45 min on 2 cores; the one of
3 Dec 2026 (2.95 GB, 700 MB per worker) took 41 min.

With ``--threaded``, also the earlier measurement without a cluster: the same kind of
cube written by dask's threaded scheduler in a child process (its peak RSS from the OS);
without it, the last such results are kept from the previous JSON, marked as such.

Run: ``python -m benchmarks.scale [--workers 1,2,4] [--memory-limit-mb 800] [--factor 4]
[--profile av1-10bit] [--repeats 1] [--threaded]`` (``--quick``: a small smoke run in
seconds). Prints the table and writes ``benchmarks/results/scale.json``, ``scale.md`` and
``scale.png`` (``--out DIR``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from benchmarks.common import RESULTS, machine_info, md_table

ROOT = Path(__file__).resolve().parent.parent
BANDS = 4
INPUT_CHUNKS = (32, BANDS, 256, 256)  # the dask chunks of the synthetic cube (16 MiB)
LEVELS = np.array([900.0, 1200.0, 1500.0, 3000.0], np.float32)  # S2-like DN levels per band
MB = 1e6

# The three variants, in their order in a run's first repeat.
ENCODE_ONLY = "encode only"
WRITE = "measure=False"
WRITE_MEASURED = "measure=True"
VARIANTS = (ENCODE_ONLY, WRITE, WRITE_MEASURED)
# A worker holding a task that uses less than this share of a core over a whole
# ``Plan.stall_seconds`` has a stalled codec (WorkerWatch): a busy worker on a machine
# loaded 4x over still gets about a quarter of a core.
STALLED_CPU_SHARE = 0.1
ATTEMPTS = 3  # runs of a variant whose codec stalled, before the benchmark gives up


# --- the cube --------------------------------------------------------------------------


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


def cube_shape(nbytes: int, chunks: Sequence[int] = INPUT_CHUNKS) -> tuple[int, int, int, int]:
    """(T, bands, side, side) of about ``nbytes`` of uint16 in whole chunks along y and x.

    The side is the widest of 1, 2, 4 or 8 chunks that leaves at least four time chunks;
    T is rounded up to whole time chunks (the cube is at least ``nbytes``).
    """
    tc, _, yc, xc = chunks
    side = yc
    for k in (3, 2, 1):
        if (yc << k) == (xc << k) and (yc << k) ** 2 * BANDS * 2 * tc * 4 <= nbytes:
            side = yc << k
            break
    t = max(tc, math.ceil(nbytes / (2 * BANDS * side * side) / tc) * tc)
    return (t, BANDS, side, side)


def synthetic_cube(nbytes: int, chunks: Sequence[int] = INPUT_CHUNKS) -> Any:
    """A lazy xarray Dataset of about ``nbytes`` of uint16 (T x 4 x Y x X), dask-backed,
    in dask chunks of ``chunks``: nothing is generated before a task asks for a chunk."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    shape = cube_shape(nbytes, chunks)
    t, _, side, _ = shape
    data = da.map_blocks(
        synthetic_block,
        chunks=tuple(
            tuple(min(c, n - i) for i in range(0, n, c)) for c, n in zip(chunks, shape, strict=True)
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


def generation_seconds(chunks: Sequence[int]) -> float:
    """Seconds to generate one chunk of the synthetic cube here (median of three)."""
    info = {None: {"array-location": [(0, c) for c in chunks]}}
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        synthetic_block(block_info=info)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- what a run measures ----------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The settings of a run of the cluster benchmark.

    Parameters
    ----------
    workers : tuple of int
        The cluster sizes measured, one ``LocalCluster`` each.
    memory_limit_mb : float
        ``memory_limit`` of each worker process (MB, 1e6 bytes).
    cube_mb : float
        The size asked of the cube (MB); it is rounded up to whole time chunks.
    profile : str
        The codec profile of every variant.
    repeats : int
        Times each variant runs per cluster (its order rotated each time).
    chunks : tuple of int
        The cube's chunks (time, band, y, x), which the store keeps.
    sample_seconds : float
        Interval of the client's polling of the workers' RSS.
    stall_seconds : float
        How long a worker holding a task may use almost no CPU before its codec is taken
        for stalled (:class:`WorkerWatch`).
    """

    workers: tuple[int, ...] = (1, 2, 4)
    # A worker idles at ~330 MB (libraries, codec) and peaks at 510-530 MB encoding
    # 16 MiB chunks with av1-10bit, 560-580 MB when it also measures them (decoding each
    # chunk in the task; measured 2-3 Dec 2026): 800 MB keeps that below distributed's
    # pause (80 %), which a worker whose memory stays up never leaves; at 400 MB the
    # worker passed its restart threshold (95 %) on its first chunk.
    memory_limit_mb: float = 800.0
    cube_mb: float = 3200.0  # 4x the memory limit
    # the fastest lossy profile here: 16 MiB/s on a 16 MiB chunk, where the library's
    # default (hevc-12bit-444) makes 2.2 MiB/s, which would put one 2.8 GB write at 20 min
    profile: str = "av1-10bit"
    repeats: int = 1
    chunks: tuple[int, int, int, int] = INPUT_CHUNKS
    sample_seconds: float = 0.2
    stall_seconds: float = 60.0

    @property
    def store_chunks(self) -> dict[Hashable, int]:
        """``to_eocube``'s ``chunks=``: the cube's own, so both variants encode the same."""
        tc, _, yc, xc = self.chunks
        return {"time": tc, "y": yc, "x": xc}


# --- worker processes, watched from the client ------------------------------------------


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's high-water mark of a process's resident memory (``VmHWM``).

    False where it cannot be (not Linux, or not allowed): peaks are then polled.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of a process's resident memory, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return None


class WorkerWatch:
    """Resident memory and CPU time of worker processes while a variant runs, and a guard
    against a codec that stalls.

    A thread of the client reads each worker's RSS and CPU time every ``interval``
    seconds (the workers run on this machine: polling them from outside costs them
    nothing). On entry the kernel's peak of each process is reset, and on exit read: the
    exact peak; where it cannot be reset, the polled maximum stands in for it.

    A worker that holds a task (``client.processing()``) yet uses less than
    :data:`STALLED_CPU_SHARE` of a core for ``stall_seconds`` is stalled, and killed:
    its nanny starts a fresh worker and the scheduler runs the task again, so the
    variant finishes, but its time is void (``stalls``, with the worker's status) and
    :func:`measure_cluster` runs it again. Two causes are known: a codec that waits
    forever (SVT-AV1 4.1, in PyAV 18.1's wheels, was seen blocked in
    ``svt_av1_enc_get_packet`` with every thread of it idle, after about 600 chunks of
    this benchmark on a loaded machine), and distributed's memory pause (status
    ``paused``), which a worker whose memory is not given back to the OS never leaves.

    Parameters
    ----------
    pids : mapping of str to int
        Worker address to process id.
    interval : float
        Seconds between samples.
    client : distributed.Client, optional
        The cluster's client, which says which workers hold tasks; without it, stalls
        are not looked for.
    stall_seconds : float
        How long a worker holding a task may use (almost) no CPU.
    """

    def __init__(
        self,
        pids: Mapping[str, int],
        interval: float,
        client: Any = None,
        stall_seconds: float = 60.0,
    ) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.client = client
        self.stall_seconds = stall_seconds
        self._processes = {addr: psutil.Process(pid) for addr, pid in self.pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._exact = False
        self._cpu0: dict[str, float | None] = {}
        self._t0 = 0.0
        self._marks: dict[str, tuple[float, float]] = {}  # last (seconds, CPU) of progress
        self.timeline: list[tuple[float, list[float]]] = []  # seconds, MB per worker
        self.polled_peak_mb = dict.fromkeys(self.pids, 0.0)
        self.peak_mb: dict[str, float] = {}
        self.cpu_seconds = 0.0
        self.lost: list[str] = []
        self.stalls: list[dict[str, Any]] = []

    def _cpu(self, addr: str) -> float | None:
        try:
            times = self._processes[addr].cpu_times()
        except psutil.Error:  # a worker that died: its time is lost with it
            return None
        return float(times.user + times.system)

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter() - self._t0
            row = []
            for addr, proc in self._processes.items():
                try:
                    if addr in self.lost:
                        raise psutil.NoSuchProcess(proc.pid)
                    rss = proc.memory_info().rss / MB
                except psutil.Error:  # gone: killed here, or restarted by its nanny
                    rss = math.nan
                    if addr not in self.lost:
                        self.lost.append(addr)
                else:
                    self.polled_peak_mb[addr] = max(self.polled_peak_mb[addr], rss)
                    cpu = self._cpu(addr)
                    if cpu is not None:
                        self._check_stall(addr, now, cpu)
                row.append(round(rss, 1))
            self.timeline.append((round(now, 2), row))
            self._stop.wait(self.interval)

    def _check_stall(self, addr: str, now: float, cpu: float) -> None:
        since, cpu_then = self._marks.setdefault(addr, (now, cpu))
        if cpu - cpu_then >= STALLED_CPU_SHARE * self.stall_seconds:
            self._marks[addr] = (now, cpu)  # it works
            return
        if now - since < self.stall_seconds or self.client is None:
            return
        self._marks[addr] = (now, cpu)
        holding = self.client.processing(workers=[addr]).get(addr)
        if holding:  # idle for want of work is not a stall; idle with a task is
            # "paused": distributed's memory pause that never lifted, not the codec
            status = self.client.scheduler_info()["workers"].get(addr, {}).get("status")
            os.kill(self.pids[addr], signal.SIGKILL)
            self.lost.append(addr)  # its successor is another process
            self.stalls.append(
                {
                    "worker": addr,
                    "seconds": round(now, 1),
                    "status": status,
                    "tasks": [str(k) for k in holding],
                }
            )

    def __enter__(self) -> WorkerWatch:
        reset = [reset_peak_rss(pid) for pid in self.pids.values()]  # each, no short cut
        self._exact = all(reset)
        self._cpu0 = {addr: self._cpu(addr) for addr in self.pids}
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        # the workers alive throughout: a killed one's time went with it
        spent = [(self._cpu0[a], self._cpu(a)) for a in self.pids if a not in self.lost]
        self.cpu_seconds = sum(
            end - start for start, end in spent if start is not None and end is not None
        )
        for addr, pid in self.pids.items():
            peak = peak_rss_bytes(pid) if self._exact and addr not in self.lost else None
            self.peak_mb[addr] = round(
                peak / MB if peak is not None else self.polled_peak_mb[addr], 1
            )

    @property
    def peak_source(self) -> str:
        """Where the peaks come from: the kernel's mark, or the polled samples."""
        return "VmHWM" if self._exact else "polled"


def _warm_worker(profile: str) -> int:
    """Import eocube and make one tiny store (codec, Numba kernels, zarr, measuring) in a
    worker, so that the measured runs time the work and not first uses; the worker's
    process id."""
    import dask

    import eocube

    with tempfile.TemporaryDirectory() as tmp, dask.config.set(scheduler="synchronous"):
        # two chunks, so that staging and shard assembly run too
        cube = synthetic_cube(4 * BANDS * 64 * 64 * 2, chunks=(2, BANDS, 64, 64))
        eocube.to_eocube(cube, Path(tmp) / "warm.eocube", profile=profile, measure=True)
    return os.getpid()


def worker_memory_thresholds() -> dict[str, float | bool]:
    """distributed's fractions of ``memory_limit`` at which a worker spills, pauses and is
    restarted (its configuration: the defaults unless set)."""
    import dask
    import distributed  # noqa: F401  (its defaults join dask's configuration)

    config = dask.config.get("distributed.worker.memory")
    return {k: config[k] for k in ("target", "spill", "pause", "terminate")}


def _worker_rss() -> int:
    """Resident bytes of this process (run in each worker)."""
    return int(psutil.Process().memory_info().rss)


# --- the variants ------------------------------------------------------------------------


def _payload_nbytes(block: np.ndarray, profile: str) -> int:
    """Bytes of one chunk's payload, the payload itself dropped (a dask task)."""
    from eocube.chunk import encode_chunk

    return len(encode_chunk(np.ascontiguousarray(block), profile))


def encode_every_chunk(cube: Any, profile: str) -> int:
    """Encode every chunk of the cube's variable, as dask tasks, storing nothing; the
    bytes of all payloads."""
    import dask

    blocks = cube.reflectance.data.to_delayed().ravel()
    encode = dask.delayed(_payload_nbytes)
    return int(sum(dask.compute(*(encode(block, profile) for block in blocks))))


def _run(variant: str, cube: Any, plan: Plan, store: Path) -> tuple[int, Any]:
    """One variant on the cluster in scope: payload bytes, and the write's report."""
    import eocube

    if variant == ENCODE_ONLY:
        return encode_every_chunk(cube, plan.profile), None
    report = eocube.to_eocube(
        cube,
        store,
        profile=plan.profile,
        chunks=plan.store_chunks,
        measure=variant == WRITE_MEASURED,
    )
    return report.variables["reflectance"].payload_nbytes, report


def run_variant(
    variant: str, cube: Any, plan: Plan, client: Any, pids: Mapping[str, int], store: Path
) -> dict[str, Any]:
    """Time one variant on the cluster of ``client``, watching its workers."""
    nbytes = int(cube.reflectance.nbytes)
    load0 = os.getloadavg()[0]
    payload_nbytes, report, error = None, None, None
    with WorkerWatch(pids, plan.sample_seconds, client, plan.stall_seconds) as watch:
        t0 = time.perf_counter()
        try:
            payload_nbytes, report = _run(variant, cube, plan, store)
        except Exception as exc:  # a task lost with a stalled worker: the run is void
            if not watch.stalls:
                raise
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    measured = report.variables["reflectance"] if report is not None else None
    return {
        "workers": len(pids),
        "variant": variant,
        "seconds": round(seconds, 2),
        "mb_s": round(nbytes / MB / seconds, 2),
        "mvalues_s": round(nbytes / 2 / 1e6 / seconds, 2),
        "payload_nbytes": payload_nbytes,
        "store_nbytes": None if report is None else report.nbytes,
        "psnr": None if measured is None or measured.psnr is None else round(measured.psnr, 2),
        "peak_rss_mb": [watch.peak_mb[a] for a in pids],
        "peak_source": watch.peak_source,
        "polled_peak_rss_mb": [round(watch.polled_peak_mb[a], 1) for a in pids],
        "workers_lost": watch.lost,
        "stalls": watch.stalls,
        "error": error,
        "worker_cores_busy": round(watch.cpu_seconds / seconds, 2),
        "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "rss_timeline_mb": watch.timeline[:: max(1, len(watch.timeline) // 120)],
    }


def measure_cluster(workers: int, plan: Plan, workdir: Path) -> dict[str, Any]:
    """Every variant, ``plan.repeats`` times, on one LocalCluster of ``workers``; a run
    whose codec stalled is kept (marked) and run again, up to :data:`ATTEMPTS` times."""
    import distributed

    cube = synthetic_cube(int(plan.cube_mb * MB), plan.chunks)
    runs = []
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=int(plan.memory_limit_mb * MB),
            dashboard_address=None,
            # distributed warns of "unmanaged memory" (the codec's) at every sample
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        t0 = time.perf_counter()
        pids = client.run(_warm_worker, plan.profile)
        warm_seconds = time.perf_counter() - t0
        baseline = client.run(_worker_rss)
        for repeat in range(plan.repeats):
            for i in range(len(VARIANTS)):
                variant = VARIANTS[(i + repeat) % len(VARIANTS)]
                for _ in range(ATTEMPTS):
                    run = run_variant(variant, cube, plan, client, pids, workdir / "cube.eocube")
                    run["repeat"] = repeat
                    runs.append(run)
                    print(progress_line(run), flush=True)
                    if run["stalls"]:  # the killed workers' successors, warmed in turn
                        client.wait_for_workers(workers)
                        pids = client.run(_warm_worker, plan.profile)
                        continue
                    now = client.run(os.getpid)
                    if now != pids:  # a worker restarted (killed beyond its memory limit)
                        run["workers_restarted"] = sorted(set(now.items()) - set(pids.items()))
                        pids = now
                    break
                else:
                    raise RuntimeError(
                        f"{variant} on {workers} workers: the codec stalled in each of "
                        f"{ATTEMPTS} runs (see the stalls above)"
                    )
    return {
        "workers": workers,
        "cube_shape": list(cube.reflectance.shape),
        "cube_nbytes": int(cube.reflectance.nbytes),
        "chunks": math.prod(len(c) for c in cube.reflectance.chunks),
        "warm_up_seconds": round(warm_seconds, 2),
        "baseline_rss_mb": [round(rss / MB, 1) for rss in baseline.values()],
        "runs": runs,
    }


def progress_line(run: Mapping[str, Any]) -> str:
    """One line per run, as it ends: a long benchmark shows where it is."""
    line = (
        f"{run['workers']} workers, {run['variant']}: {run['seconds']:.1f} s, "
        f"{run['mb_s']:.1f} MB/s, peak RSS {max(run['peak_rss_mb']):.0f} MB"
    )
    if run["stalls"]:
        workers = ", ".join(f"{s['worker']} ({s.get('status')})" for s in run["stalls"])
        line += f" (void: {workers} held a task without using the CPU: killed; run again)"
    return line


def summarize(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """Per variant of one cluster: median seconds, throughput, largest worker peak; and
    the write's overhead beyond encoding, ``write / encode only - 1``."""
    out: dict[str, Any] = {"workers": cluster["workers"]}
    nbytes = cluster["cube_nbytes"]
    for variant in VARIANTS:
        every = [r for r in cluster["runs"] if r["variant"] == variant]
        runs = [r for r in every if not r["stalls"]]
        seconds = statistics.median(r["seconds"] for r in runs)
        out[variant] = {
            "seconds": round(seconds, 2),
            "mb_s": round(nbytes / MB / seconds, 2),
            "mvalues_s": round(nbytes / 2 / 1e6 / seconds, 2),
            "peak_rss_mb": max(max(r["peak_rss_mb"]) for r in runs),
            "store_nbytes": runs[-1]["store_nbytes"],
            "payload_nbytes": runs[-1]["payload_nbytes"],
            "psnr": runs[-1]["psnr"],
            "worker_cores_busy": statistics.median(r["worker_cores_busy"] for r in runs),
            "restarts": sum(len(r.get("workers_restarted", [])) for r in runs),
            "stalled_runs": len(every) - len(runs),
        }
    base = out[ENCODE_ONLY]["seconds"]
    for variant in (WRITE, WRITE_MEASURED):
        out[variant]["overhead"] = round(out[variant]["seconds"] / base - 1, 3)
    return out


# --- without a cluster: dask's threaded scheduler in one process (--threaded) -----------

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


def measure_threaded_memory(
    nbytes: int,
    profile: str,
    threads: int,
    kill_mb: float,
    workdir: Path,
    malloc_arena_max: int | None = None,
) -> dict[str, Any]:
    """Encode the synthetic cube in a child process (threaded scheduler); its peak RSS.

    The OS's figure is the child's own ``ru_maxrss`` (``os.wait4``); psutil polls the
    RSS every 50 ms meanwhile (a guard: beyond ``kill_mb`` MiB the child is killed).
    ``nbytes=0`` measures the baseline: imports and a tiny encode. Sizes in MiB, as the
    earlier runs of this part recorded them.
    """
    store = workdir / "threaded.eocube"
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
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = child.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue
            polled = max(polled, rss)
            if rss > kill_mb and not killed:
                child.kill()
                killed = True
            time.sleep(0.05)
        returncode = os.waitstatus_to_exitcode(status)
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
    if not killed:
        if returncode != 0:
            raise RuntimeError(f"encode child failed:\n{stderr[-3000:]}")
        if nbytes:
            child_report = json.loads(stdout.strip().splitlines()[-1])
            result.update(
                encode_seconds=round(child_report["seconds"], 1),
                store_nbytes=child_report["nbytes"],
                throughput_mb_s=round(nbytes / 2**20 / child_report["seconds"], 2),
            )
    shutil.rmtree(store, ignore_errors=True)
    return result


def threaded_part(budget_mb: float, factor: float, profile: str, workdir: Path) -> dict[str, Any]:
    """A cube ``factor`` times ``budget_mb`` MiB on 1 thread (``MALLOC_ARENA_MAX=2``) and
    on 2 threads (glibc's default arenas), against the baseline of a tiny encode."""
    nbytes = int(budget_mb * factor * 2**20)
    kill_mb = 6 * budget_mb
    baseline = measure_threaded_memory(0, profile, 1, kill_mb, workdir)
    runs = [
        measure_threaded_memory(nbytes, profile, threads, kill_mb, workdir, arenas)
        for threads, arenas in ((1, 2), (2, None))
    ]
    return {"budget_mb": budget_mb, "baseline": baseline, "runs": runs}


# --- reporting ---------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def cluster_table(results: Mapping[str, Any]) -> str:
    """One row per cluster size and variant: the figures the issue asks for."""
    cores = results["meta"]["machine"]["cpu_usable"]
    rows = []
    for summary, cluster in zip(results["summary"], results["clusters"], strict=True):
        workers = summary["workers"]
        for variant in VARIANTS:
            s = summary[variant]
            over = s.get("overhead")
            rows.append(
                [
                    f"{workers}" + (f" (> {cores} cores)" if workers > cores else ""),
                    variant,
                    f"{s['seconds']:.1f}",
                    f"{s['mb_s']:.1f}",
                    f"{s['mvalues_s']:.2f}",
                    "-" if over is None else f"{100 * over:+.0f} %",
                    _mb(s["peak_rss_mb"]),
                    f"{s['peak_rss_mb'] / results['plan']['memory_limit_mb']:.2f}",
                    f"{max(cluster['baseline_rss_mb']):.0f}",
                    f"{s['worker_cores_busy']:.2f}",
                    "-" if s["store_nbytes"] is None else f"{s['store_nbytes'] / MB:.2f}",
                    "-" if s["psnr"] is None else f"{s['psnr']:.2f}",
                    str(s["stalled_runs"]),
                    str(s["restarts"]),
                ]
            )
    return md_table(
        [
            "workers",
            "variant",
            "seconds",
            "MB/s",
            "Mvalues/s",
            "beyond encode only",
            "peak RSS / worker MB",
            "peak / limit",
            "idle RSS MB",
            "cores busy",
            "store MB",
            "PSNR dB",
            "stalled runs",
            "restarts",
        ],
        rows,
        align="llrrrrrrrrrrrr",
    )


def threaded_table(threaded: Mapping[str, Any]) -> str:
    """The threaded-scheduler part (MiB, as that part has always recorded)."""
    rows = [
        [
            r["threads"],
            r["malloc_arena_max"] or "default",
            f"{r['peak_rss_mb_os']:.0f}" + (" (killed)" if r.get("killed_beyond_mb") else ""),
            f"{r['peak_rss_mb_os'] / threaded['budget_mb']:.2f}",
            _mb(r.get("encode_seconds")),
            "-" if r.get("throughput_mb_s") is None else f"{r['throughput_mb_s']:.1f}",
        ]
        for r in threaded["runs"]
    ]
    return md_table(
        ["threads", "MALLOC_ARENA_MAX", "peak RSS MiB", "/ budget", "seconds", "MiB/s"], rows
    )


def markdown(results: Mapping[str, Any]) -> str:
    """``scale.md``: settings, the cluster table, how to read it, the threaded part."""
    plan, meta = results["plan"], results["meta"]
    first = results["clusters"][0]
    git = meta["machine"].get("git", {})
    dirty = [line.split()[-1] for line in git.get("dirty") or []]
    changes = f" with uncommitted changes to {', '.join(dirty)}" if dirty else ""
    t, b, y, x = first["cube_shape"]
    load = meta["machine"]["load_average_at_start"] or []
    loads = [v for c in results["clusters"] for r in c["runs"] for v in r["load_average_1min"]]
    *others, last = [str(c["workers"]) for c in results["clusters"]]
    sizes = f"{', '.join(others)} and {last}" if others else last
    pause, terminate = (meta["worker_memory_thresholds"][k] for k in ("pause", "terminate"))
    lines = [
        f"# Scale: a cube larger than a worker's memory, on {sizes} workers",
        "",
        f"`{meta['command'].strip()}`, {meta['wall_seconds'] / 60:.1f} min, on "
        f"{meta['machine']['cpu_usable']} cores ({meta['machine']['cpu_model']}), shared; "
        f"load average {' '.join(f'{v:.2f}' for v in load)} (1, 5, 15 min) at the start. "
        f"Code: {git.get('commit', '?')[:10]}{changes}.",
        "",
        f"Cube: {t} x {b} x {y} x {x} uint16, {first['cube_nbytes'] / MB:.0f} MB, "
        f"{first['chunks']} chunks of {' x '.join(map(str, plan['chunks']))} (generated by "
        f"dask, {meta['generation_seconds_per_chunk']:.2f} s per chunk on one core here); "
        f"{first['cube_nbytes'] / MB / plan['memory_limit_mb']:.1f}x the "
        f"{plan['memory_limit_mb']:.0f} MB `memory_limit` of each worker "
        f"(LocalCluster, processes, 1 thread per worker; a worker pauses at "
        f"{pause:.0%} of it and is restarted at {terminate:.0%}). "
        f"Profile `{plan['profile']}`, its default crf; {plan['repeats']} repeat(s), the "
        f"variants interleaved. MB = 1e6 bytes of input.",
        "",
        cluster_table(results),
        "",
        "- *beyond encode only*: the write's wall time over that of encoding every chunk "
        "(`encode_chunk` in the same cluster, payloads dropped) minus 1. Both generate the "
        "same source blocks.",
        "- *peak RSS / worker*: the largest worker's kernel high-water mark (`VmHWM`, reset "
        "before each variant); *idle RSS*: a worker after its warm-up (libraries, codec).",
        "- *stalled runs*: runs made void because a worker held a task yet used no CPU for "
        "a minute (a codec that stalled, or a memory pause that never lifted: the JSON "
        "gives the worker's status); the worker was killed and the run made again. "
        "*restarts*: workers restarted otherwise (beyond 95 % of their memory).",
        "- *cores busy*: CPU seconds of the workers per wall second; with more workers than "
        "cores they share them, and the codec runs threads of its own in each worker.",
        f"- The 1-minute load average at the runs' starts and ends went from "
        f"{min(loads):.1f} to {max(loads):.1f}"
        + (
            ": other work shared the machine and moved the timings; `--repeats` runs "
            "the variants again in rotated order."
            if max(loads) > 1.5 * meta["machine"]["cpu_usable"]
            else "."
        ),
        "",
    ]
    threaded = results.get("threaded")
    if threaded:
        runs = threaded["runs"]
        kept = threaded.get("kept_from")
        lines += [
            "## Without a cluster: dask's threaded scheduler in one process",
            "",
            f"A {runs[0]['cube_nbytes'] / 2**30:.2f} GiB cube, "
            f"{runs[0]['cube_nbytes'] / 2**20 / threaded['budget_mb']:.0f}x a "
            f"{threaded['budget_mb']:.0f} MiB budget, `{runs[0]['profile']}`, written by "
            f"`to_eocube(measure=False)` in a child process; baseline (imports, codec set "
            f"up) {threaded['baseline']['peak_rss_mb_os']:.0f} MiB"
            + (
                f". Kept from an earlier run (`--threaded` measures it again): {kept}."
                if kept
                else "."
            ),
            "",
            threaded_table(threaded),
            "",
        ]
    return "\n".join(lines)


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Throughput and peak worker memory per cluster size and variant, and the workers'
    memory over time in each ``measure=False`` write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries, plan = results["summary"], results["plan"]
    fig, (speed, peak, timeline) = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.8 / len(VARIANTS)
    for i, variant in enumerate(VARIANTS):
        xs = [k + (i - 1) * width for k in range(len(summaries))]
        speed.bar(xs, [s[variant]["mb_s"] for s in summaries], width, label=variant)
        peak.bar(xs, [s[variant]["peak_rss_mb"] for s in summaries], width, label=variant)
    labels = [str(s["workers"]) for s in summaries]
    for ax in (speed, peak):
        ax.set_xticks(range(len(summaries)), labels)
        ax.set_xlabel("workers (1 thread each)")
    speed.set_ylabel("MB of input / s")
    speed.set_title(f"throughput, {plan['profile']}")
    speed.legend(fontsize=8)
    limit = plan["memory_limit_mb"]
    pause = limit * results["meta"]["worker_memory_thresholds"]["pause"]
    for ax in (peak, timeline):
        ax.axhline(limit, color="k", lw=1, ls="--", label="memory_limit")
        ax.axhline(pause, color="k", lw=1, ls=":", label="pause")
        ax.set_ylim(0, limit * 1.3)
    peak.set_ylabel("peak RSS of the largest worker, MB")
    peak.set_title(f"cube {results['clusters'][0]['cube_nbytes'] / MB / limit:.1f}x the limit")
    peak.legend(fontsize=7, loc="upper left", ncol=3)
    for cluster in results["clusters"]:
        run = next(r for r in cluster["runs"] if r["variant"] == WRITE and not r["stalls"])
        samples = run["rss_timeline_mb"]
        largest = [np.nanmax(row) if not np.isnan(row).all() else np.nan for _, row in samples]
        timeline.plot([t for t, _ in samples], largest, label=f"{cluster['workers']} workers")
    timeline.set_xlabel("seconds into the measure=False write")
    timeline.set_ylabel("RSS of the largest worker, MB")
    timeline.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the command -------------------------------------------------------------------------


def parse_workers(text: str) -> tuple[int, ...]:
    """``--workers``: comma-separated positive cluster sizes."""
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: give sizes like 1,2,4") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: sizes must be >= 1")
    return sizes


def _kept_threaded(path: Path) -> dict[str, Any] | None:
    """The threaded part of the previous results at ``path``, marked as kept, if any."""
    if not path.exists():
        return None
    previous = json.loads(path.read_text())
    threaded = previous.get("threaded")
    if threaded is None and "memory" in previous:  # the layout before the cluster part
        threaded = {
            "budget_mb": previous["budget_mb"],
            "baseline": previous["baseline"],
            "runs": previous["memory"],
            "kept_from": f"eocube {previous['machine']['eocube']} on "
            f"{previous['machine']['cpus']} cores",
        }
    if threaded is not None and "kept_from" not in threaded:
        git = previous.get("meta", {}).get("machine", {}).get("git", {})
        threaded["kept_from"] = f"the run of commit {git.get('commit', '?')[:10]}"
    return threaded


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; the results as written to ``scale.json``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    defaults = Plan()
    parser.add_argument(
        "--workers", type=parse_workers, default=None, help="cluster sizes (default 1,2,4)"
    )
    parser.add_argument(
        "--memory-limit-mb", type=float, default=defaults.memory_limit_mb, help="per worker"
    )
    parser.add_argument(
        "--factor",
        type=float,
        default=defaults.cube_mb / defaults.memory_limit_mb,
        help="the cube's size over one worker's memory limit",
    )
    parser.add_argument("--profile", default=defaults.profile)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--threaded", action="store_true", help="also the threaded part")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be >= 1")
    if args.memory_limit_mb <= 0 or args.factor <= 0:
        parser.error("--memory-limit-mb and --factor must be > 0")
    plan = Plan(
        workers=args.workers or ((1, 2) if args.quick else defaults.workers),
        memory_limit_mb=args.memory_limit_mb,
        cube_mb=args.memory_limit_mb * args.factor,
        profile=args.profile,
        repeats=args.repeats,
    )
    if args.quick:  # 4 chunks of 1 MiB: the same code paths in seconds, not the factor
        plan = replace(plan, cube_mb=4 * 2**20 / MB, repeats=1, chunks=(8, BANDS, 128, 128))
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.scale", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "generation_seconds_per_chunk": round(generation_seconds(plan.chunks), 3),
        "worker_memory_thresholds": worker_memory_thresholds(),
    }
    results: dict[str, Any] = {"meta": meta, "plan": asdict(plan), "clusters": []}
    workdir = Path(tempfile.mkdtemp(prefix="eocube-scale-"))
    try:
        for workers in plan.workers:
            results["clusters"].append(measure_cluster(workers, plan, workdir))
        results["summary"] = [summarize(c) for c in results["clusters"]]
        if args.threaded:
            results["threaded"] = threaded_part(512, 8, plan.profile, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.threaded and not args.quick:
        kept = _kept_threaded(args.out / "scale.json")
        if kept is not None:
            results["threaded"] = kept
    meta["wall_seconds"] = round(time.perf_counter() - started, 1)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    meta["client_peak_rss_mb"] = round(peak_kib * 1024 / MB, 1)
    text = markdown(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "scale.md").write_text(text)
    plot(results, args.out / "scale.png")
    return results


if __name__ == "__main__":
    main()
