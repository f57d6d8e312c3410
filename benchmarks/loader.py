"""Training throughput: samples/s through a PyTorch DataLoader, eocube vs zarr v3 + zstd.

The same real cube (Sentinel-2, 118 dates x 4 bands x 64 x 64, uint16) is written as an
eocube store (default lossy profile) and as zarr v3 + zstd (lossless, level 3) with the
same chunks; both are read through the same datasets, :class:`eocube.torch.CubeDataset`
(map-style, shuffled) and :class:`eocube.torch.StreamingCubeDataset` (chunk by chunk,
shuffled), which open any zarr store (the zarr one through xarray's zarr engine), with
the same windows, by :class:`eocube.torch.CubeDataLoader` with 0, 2 and 4 worker
processes (``fork``, persistent). The first epoch counts the workers' start; the rates
quoted are the median of the later epochs. With workers, the same runs through a plain
``torch.utils.data.DataLoader`` (``default_collate`` in the workers) are measured too.

Where the time goes, per configuration: the CPU time of every process (the main one
and the workers, from ``/proc/<pid>/stat``) over the later epochs, per sample, split into

- decode: reading and decoding whole stored chunks (``ChunkCache._read``: fetch,
  decode, CF decoding, through xarray), in whichever process runs it (the CPU time of
  all its threads meanwhile: decoders and zarr work in threads of their own);
- windows: the rest of making samples (locating the window, its float32 copy, tensors,
  the sample dict: ``_Samples.sample`` minus decode);
- collate: the loader's ``collate_fn`` as it costs in the main process without workers
  (the 0-worker run of the same dataset and store);
- transfer, the inter-process hand-over, in two parts: "shm", what the ``collate_fn``
  costs in a worker beyond that (``default_collate`` stacks a worker's batch into a new
  shared-memory file, whose pages fault in on first write: about 5 times a plain
  stack), and "send", all CPU time left: pickling batches, passing each tensor's file
  descriptor (one socket connection per tensor), the main process unpickling and
  mapping them, the DataLoader's queues and loop. Without workers only the loop is
  left, shown as "send".

The timers (CPU time of the calling thread, but of the process for decode) wrap those
functions in every process: forked workers inherit the patches and add their sums to
shared memory once per batch; they cost about a microsecond per sample. The windows are
dense (stride 1 x 4 x 4: some 2,200 windows per stored chunk), so decoding weighs
little here; the map-style dataset keeps 4 decoded chunks per process (``cache_chunks``'s
default), the whole of this 4-chunk cube, and decodes nothing after its first epoch; the
streaming one drops each chunk after its last window, and re-reads it each epoch
(eocube's reader may keep decoded chunks per process as well: ``EOCUBE_CACHE_BYTES=0``
turns that off, recorded in the JSON). On a machine shared with other work the rates
move by tens of percent from run to run; CPU time per sample moves less.

Run: ``python -m benchmarks.loader [--epochs N] [--workers 0 2 4] [--corpus DIR]``;
prints the tables and writes ``benchmarks/results/loader.json``, ``loader.md`` and
``loader.png``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from benchmarks import corpus
from benchmarks.common import md_table

RESULTS = Path(__file__).resolve().parent / "results"
CUBE = "s2_l2a_worldcereal_118x4x64x64"
CHUNKS = {"time": 32, "band": 4, "y": 64, "x": 64}
WINDOW = {"time": 8, "y": 32, "x": 32}
STRIDE = {"time": 1, "y": 4, "x": 4}
BATCH = 16
WORKERS = (0, 2, 4)
STORES = {"eocube": "eocube (hevc-12bit-444, default crf)", "zarr": "zarr v3 + zstd-3 (lossless)"}
DATASETS = {"streaming": "StreamingCubeDataset", "map": "CubeDataset, shuffled"}
PARTS = ("decode", "windows", "collate", "shm", "send")
_TICK = os.sysconf("SC_CLK_TCK")


def write_stores(folder: Path, cube_file: Path) -> dict[str, Path]:
    """The cube as an eocube store and as zarr v3 + zstd, same chunks."""
    from zarr.codecs import ZstdCodec

    import eocube

    with xr.open_dataset(cube_file) as ds:
        cube = ds[["data"]].load()
    stores = {"eocube": folder / "cube.eocube", "zarr": folder / "cube.zarr"}
    eocube.to_eocube(cube, stores["eocube"], chunks=CHUNKS, measure=False)
    encoding = {"data": {"chunks": tuple(CHUNKS.values()), "compressors": [ZstdCodec(level=3)]}}
    cube.to_zarr(stores["zarr"], zarr_format=3, encoding=encoding, consolidated=True)
    return stores


def nbytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- timers in every process ---------------------------------------------------------------


class Probe:
    """CPU seconds spent decoding, making samples and collating, summed over all processes.

    Patches :meth:`eocube.windows.ChunkCache._read` and :meth:`eocube.torch._Samples.sample`
    while active; a loader's ``collate_fn`` is wrapped by :meth:`collate`, which also adds
    the process's sums to shared memory (forked workers inherit everything). Decoding is
    timed as the CPU time of the whole process (the decoders' and zarr's threads do the
    work), the rest as that of the calling thread.
    """

    SLOTS = 4  # decode (process), decode (calling thread), sample (thread), collate (thread)

    def __init__(self) -> None:
        self.shared = multiprocessing.get_context("fork").Array("d", self.SLOTS)
        self.local = [0.0] * self.SLOTS
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> Probe:
        from eocube import torch as eotorch
        from eocube import windows

        self._wrap(windows.ChunkCache, "_read", decode=True)
        self._wrap(eotorch._Samples, "sample", decode=False)
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in self._undo:
            undo()

    def _wrap(self, cls: type, name: str, decode: bool) -> None:
        original = getattr(cls, name)
        local = self.local

        def timed(*args: Any) -> Any:
            p0, t0 = time.process_time() if decode else 0.0, time.thread_time()
            try:
                return original(*args)
            finally:
                if decode:
                    local[0] += time.process_time() - p0
                    local[1] += time.thread_time() - t0
                else:
                    local[2] += time.thread_time() - t0

        setattr(cls, name, timed)
        self._undo.append(lambda: setattr(cls, name, original))

    def collate(self, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        local, shared = self.local, self.shared

        def timed(samples: Any) -> Any:
            t0 = time.thread_time()
            out = fn(samples)
            local[3] += time.thread_time() - t0
            with shared.get_lock():
                for i in range(Probe.SLOTS):
                    shared[i] += local[i]
                    local[i] = 0.0
            return out

        return timed

    def take(self) -> list[float]:
        """The sums since the last call (all batches delivered), and start again."""
        with self.shared.get_lock():
            out = list(self.shared)
            for i in range(Probe.SLOTS):
                self.shared[i] = 0.0
        return out


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _worker_pids(loader: Any) -> list[int]:
    it = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(it, "_workers", [])] if it is not None else []


def run(
    dataset: Any, workers: int, epochs: int, shuffle: bool | None, plain: bool
) -> dict[str, Any]:
    """Samples/s of each epoch, and the CPU seconds of the later epochs (see
    :func:`attribute`)."""
    import torch

    from eocube.torch import CubeDataLoader

    kind = torch.utils.data.DataLoader if plain else CubeDataLoader
    with Probe() as probe:
        loader = kind(
            dataset,
            batch_size=BATCH,
            num_workers=workers,
            persistent_workers=workers > 0,
            shuffle=shuffle,
            multiprocessing_context="fork" if workers else None,
        )
        loader.collate_fn = probe.collate(loader.collate_fn)
        rates, cpu, timed, samples = [], 0.0, [0.0] * Probe.SLOTS, 0
        for epoch in range(epochs):
            pids = _worker_pids(loader)
            before = time.process_time() + sum(_cpu_of(p) for p in pids)
            probe.take()
            t0 = time.perf_counter()
            n = sum(batch["data"].shape[0] for batch in loader)
            rates.append(n / (time.perf_counter() - t0))
            if epoch == 0:
                continue  # the workers' start
            cpu += time.process_time() + sum(_cpu_of(p) for p in pids) - before
            timed = [a + b for a, b in zip(timed, probe.take(), strict=True)]
            samples += n
        del loader
    decode, decode_thread, sample, collate = timed
    return {
        "samples_per_s": rates,
        "median_samples_per_s": statistics.median(rates[1:] or rates),
        "timed_samples": samples,
        "cpu_s": {
            "all": cpu,
            "decode": decode,
            "windows": sample - decode_thread,
            "collate": collate,
        },
    }


def attribute(rows: list[dict[str, Any]]) -> None:
    """CPU µs per sample and shares of decode, windows, collate, shm and send (see the
    module's docstring), added to each result."""
    base = {(r["dataset"], store): r[store] for r in rows if r["workers"] == 0 for store in STORES}
    for r in sorted(rows, key=lambda r: r["workers"] > 0):  # those without workers first
        for key in [k for k in r if k.split("_")[0] in STORES]:
            res = r[key]
            n, cpu = res["timed_samples"], res["cpu_s"]
            if not n or not cpu["all"]:
                res["us_per_sample"], res["share"] = {}, {}
                continue
            us = {k: v / n * 1e6 for k, v in cpu.items()}
            plain = base.get((r["dataset"], key.split("_")[0]))
            collate = us["collate"]
            if r["workers"] and plain and plain.get("us_per_sample"):
                collate = min(collate, plain["us_per_sample"]["collate"])
            parts = {
                "decode": us["decode"],
                "windows": us["windows"],
                "collate": collate,
                "shm": us["collate"] - collate,
                "send": max(us["all"] - us["decode"] - us["windows"] - us["collate"], 0.0),
            }
            total = sum(parts.values())
            res["cpu_us_per_sample"] = us["all"]
            res["us_per_sample"] = parts
            res["share"] = {k: v / total for k, v in parts.items()}


def measure(stores: dict[str, Path], workers: tuple[int, ...], epochs: int) -> list[dict[str, Any]]:
    from eocube.torch import CubeDataset, StreamingCubeDataset

    rows = []
    for dataset in DATASETS:
        for w in workers:
            row: dict[str, Any] = {"dataset": dataset, "workers": w}
            for store, path in stores.items():
                for plain in (False, True) if w else (False,):
                    if dataset == "streaming":
                        ds: Any = StreamingCubeDataset(
                            [path], window=WINDOW, stride=STRIDE, variables=["data"], seed=0
                        )
                        shuffle = None
                    else:
                        ds = CubeDataset(path, window=WINDOW, stride=STRIDE, variables=["data"])
                        shuffle = True
                    result = run(ds, w, epochs, shuffle, plain)
                    row["windows"] = len(ds) if dataset == "map" else row.get("windows")
                    row[f"{store}_plain" if plain else store] = result
                    print(
                        f"{dataset:9s} {w} workers {store:6s}{' plain' if plain else '':6s}: "
                        + " / ".join(f"{r:.0f}" for r in result["samples_per_s"])
                        + " samples/s",
                        flush=True,
                    )
            rows.append(row)
    return rows


# --- report --------------------------------------------------------------------------------


def tables(rows: list[dict[str, Any]]) -> tuple[str, str]:
    def rate(r: dict[str, Any] | None) -> str:
        return f"{r['median_samples_per_s']:.0f}" if r else "-"

    speed = md_table(
        [
            "dataset",
            "workers",
            "eocube samples/s",
            "zarr samples/s",
            "eocube / zarr",
            "eocube, plain DataLoader",
            "zarr, plain DataLoader",
            "1st epoch eocube / zarr",
        ],
        [
            [
                DATASETS[r["dataset"]],
                r["workers"],
                rate(r["eocube"]),
                rate(r["zarr"]),
                f"{r['eocube']['median_samples_per_s'] / r['zarr']['median_samples_per_s']:.2f}",
                rate(r.get("eocube_plain")),
                rate(r.get("zarr_plain")),
                f"{r['eocube']['samples_per_s'][0]:.0f} / {r['zarr']['samples_per_s'][0]:.0f}",
            ]
            for r in rows
        ],
    )
    where = md_table(
        ["dataset", "workers", "store", "CPU µs/sample", *PARTS],
        [
            [
                DATASETS[r["dataset"]],
                r["workers"],
                key.replace("_plain", ", plain DataLoader"),
                f"{r[key]['cpu_us_per_sample']:.0f}",
                *(f"{r[key]['share'][p]:.0%} ({r[key]['us_per_sample'][p]:.0f})" for p in PARTS),
            ]
            for r in rows
            for key in ("eocube", "zarr", "eocube_plain", "zarr_plain")
            if key in r and r[key]["share"]
        ],
    )
    return speed, where


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5))
    labels = [
        f"{'stream' if r['dataset'] == 'streaming' else 'map'}\n{r['workers']} w" for r in rows
    ]
    x = list(range(len(rows)))
    for i, store in enumerate(STORES):
        top.bar(
            [p - 0.2 + 0.4 * i for p in x],
            [r[store]["median_samples_per_s"] for r in rows],
            width=0.4,
            label=STORES[store],
        )
    top.set_xticks(x, labels, fontsize=8)
    top.set_ylabel("samples/s")
    top.set_title(f"CubeDataLoader, batch {BATCH}, window {tuple(WINDOW.values())}")
    top.legend(fontsize=8)
    colors = {"decode": "C3", "windows": "C2", "collate": "C4", "shm": "C1", "send": "C7"}
    for i, store in enumerate(STORES):
        base = [0.0] * len(rows)
        for part in PARTS:
            heights = [r[store]["us_per_sample"].get(part, 0.0) for r in rows]
            bottom.bar(
                [p - 0.2 + 0.4 * i for p in x],
                heights,
                width=0.38,
                bottom=base,
                color=colors[part],
                hatch="//" if store == "zarr" else None,
                label=part if i == 0 else None,
            )
            base = [b + h for b, h in zip(base, heights, strict=True)]
    bottom.set_xticks(x, labels, fontsize=8)
    bottom.set_ylabel("CPU µs per sample, all processes")
    bottom.set_title("where the CPU time goes (left: eocube, right, hatched: zarr)")
    bottom.legend(fontsize=8, ncols=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="per run; the first warms up")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    corpus.add_corpus_option(parser)
    args = parser.parse_args()
    cube_file = corpus.cube_path(CUBE, args.corpus)
    import torch

    # 4 workers on a 2-CPU machine are measured on purpose
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stores = write_stores(Path(tmp), cube_file)
        sizes = {name: nbytes(path) for name, path in stores.items()}
        rows = measure(stores, tuple(args.workers), max(2, args.epochs))
    attribute(rows)
    speed, where = tables(rows)
    windows = next((r["windows"] for r in rows if r["windows"]), None)
    head = (
        f"cube {cube_file.name}, chunks {tuple(CHUNKS.values())}, window "
        f"{tuple(WINDOW.values())}, stride {tuple(STRIDE.values())} ({windows} windows), "
        f"batch {BATCH}; stores: eocube {sizes['eocube']} bytes, zarr + zstd-3 "
        f"{sizes['zarr']} bytes; {_cpus()} CPUs. Samples/s: median of epochs 2-"
        f"{max(2, args.epochs)} (persistent workers, fork); 1st epoch includes the workers' start."
    )
    print(head + "\n\n" + speed + "\n\nShare of the CPU time (µs per sample):\n\n" + where)
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": _cpus(),
            "load_average_at_end": os.getloadavg(),
        },
        "EOCUBE_CACHE_BYTES": os.environ.get("EOCUBE_CACHE_BYTES"),
        "torch": torch.__version__,
        "cube": cube_file.name,
        "window": WINDOW,
        "stride": STRIDE,
        "chunks": CHUNKS,
        "batch_size": BATCH,
        "epochs": max(2, args.epochs),
        "bytes": sizes,
        "seconds": time.perf_counter() - started,
        "results": rows,
    }
    (RESULTS / "loader.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "loader.md").write_text(
        "# Training throughput through a DataLoader, eocube vs zarr v3 + zstd\n\n"
        f"`python -m benchmarks.loader`; {head}\n\n{speed}\n\n"
        "Where the CPU time goes, all processes together (see the module's docstring): "
        "share and µs per sample.\n\n" + where + "\n"
    )
    plot(rows, RESULTS / "loader.png")
    return 0


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
