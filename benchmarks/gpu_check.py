"""NVDEC against the CPU decoder: equality and decode throughput, per GPU-decodable profile.

For the default profile and each profile whose ``gpu_decodable`` is true, real cube
chunks of the corpus are encoded, then decoded by FFmpeg on the CPU and on NVDEC
(FFmpeg's CUDA hwaccel, its CUVID decoder). The codes of every frame must be equal:
NVDEC is a conforming HEVC decoder, so even lossy streams decode bit-exactly like
FFmpeg's; lossless chunks must also equal the original block. Per chunk it reports:

- ms per chunk on one CPU core, and on all cores (one chunk per core at once);
- ms per chunk on NVDEC with a fresh decoder session and with pooled ones (the
  process's :class:`eocube.gpu.SessionPool`), one chunk at a time and several in flight;
- Mvalues/s into torch: the block unpacked on the GPU (:mod:`eocube.device`) from frames
  kept there, and whether it equals the CPU decode bit for bit;

and per profile the samples/s of ``CubeDataset`` on the GPU against the CPU. The issue's
goals are printed as met or not: default-profile chunk decode at least 10x one CPU core;
datasets on the device at least 5x the CPU samples/s.

Without a GPU it prints the CPU figures (and the torch unpack on CPU tensors, checked
bit for bit), and says what it cannot measure.

    python benchmarks/gpu_check.py            # a few minutes on a GPU machine (< 8)
    python benchmarks/gpu_check.py --quick    # one chunk per profile, short timings

The cubes come from ``--corpus`` (else ``$EOCUBE_CORPUS``, else tests/data).

Exit status: 0 when every NVDEC decode matched (or there is no GPU: the CPU figures are
printed and the GPU is said to be missing); 1 on a mismatch; 2 when a machine with a
GPU could not decode the main stream of a profile that claims to be GPU-decodable.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import corpus  # noqa: E402
from eocube import chunk, gpu, video  # noqa: E402
from eocube.profiles import available_profiles  # noqa: E402

NVDEC_MIN_SIDE = 144  # NVDEC decodes HEVC frames from 144 x 144 px


@dataclass(frozen=True)
class Case:
    """A real chunk: cube file, selection, and whether lossless profiles can hold it."""

    name: str
    cube: str
    select: tuple[slice, slice, slice, slice]
    integer: bool


# chunks of at least 144 x 144 px (NVDEC's minimum); the test cubes of Sentinel-2 are
# smaller than that, so the climate fields and the Landsat scene stand for them
CASES = [
    Case(
        "landsat7 1x3x256x256 u8",
        "landsat7_rgb_byte",
        (slice(0, 1), slice(None), slice(200, 456), slice(200, 456)),
        True,
    ),
    Case(
        "erainterim 2x9x240x256 i16",
        "erainterim_uvz",
        (slice(None), slice(None), slice(0, 240), slice(0, 256)),
        False,
    ),
    Case("cmip3 tos 24x1x170x180 f32", "stars_cmip3_tos_24x1x170x180", (slice(None),) * 4, False),
]


def load(case: Case, folder: Path | None = None) -> np.ndarray:
    """The chunk's values, read with h5py (NetCDF4 is HDF5), else xarray."""
    path = corpus.cube_path(case.cube, folder)
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return np.ascontiguousarray(f["data"][case.select])
    except ImportError:
        import xarray as xr

        with xr.open_dataset(path) as ds:
            return np.ascontiguousarray(ds["data"].values[case.select])


def streams_of(payload: bytes) -> list[video.EncodedStream]:
    """The video streams of a payload, in the order decode_chunk reads them."""
    seen: list[video.EncodedStream] = []

    def record(stream: video.EncodedStream, **options: object) -> Iterator[list[np.ndarray]]:
        seen.append(stream)
        return video.decode_frames(stream, **options)  # type: ignore[arg-type]

    gpu.decode_chunk_with(payload, record)
    return seen


def rate(fn: Callable[[], object], values: int, budget: float) -> tuple[float, float]:
    """(millions of cube values per second, seconds per call): the best of repeated calls."""
    fn()  # warm-up: decoder and CUDA contexts
    best, spent, calls = float("inf"), 0.0, 0
    while spent < budget or calls < 3:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return values / best / 1e6, best


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan = np.isnan(a64) | np.isnan(b64)
    if (np.isnan(a64) != np.isnan(b64)).any():
        return float("inf")
    return float(np.abs(a64[~nan] - b64[~nan]).max()) if (~nan).any() else 0.0


def gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    except ImportError:
        pass
    return "unknown GPU"


def in_flight(fn: Callable[[], object], copies: int, budget: float) -> float:
    """Seconds per call when ``copies`` calls run at once on threads (best of repeats)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(copies) as pool:

        def batch() -> None:
            for f in [pool.submit(fn) for _ in range(copies)]:
                f.result()

        _, sec = rate(batch, 1, budget)
    return sec / copies


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def tensor_equal(tensor: object, reference: np.ndarray) -> bool:
    values = tensor.cpu().numpy()  # type: ignore[attr-defined]
    return bool(values.dtype == reference.dtype and values.tobytes() == reference.tobytes())


@dataclass
class Goals:
    """The issue's goals, filled as figures come in."""

    chunk: list[tuple[str, float]]
    dataset: list[tuple[str, float]]

    def report(self, have_gpu: bool) -> None:
        print()
        print("goals (issue 17):")
        for title, ratios, goal in (
            ("default-profile chunk decode >= 10x one CPU core", self.chunk, 10.0),
            ("datasets on the device >= 5x the CPU samples/s", self.dataset, 5.0),
        ):
            if not have_gpu or not ratios:
                print(f"  {title}: NOT MEASURED (no GPU here)")
                continue
            worst = min(r for _, r in ratios)
            state = "MET" if worst >= goal else "NOT MET"
            detail = ", ".join(f"{name} {r:.1f}x" for name, r in ratios)
            print(f"  {title}: {state} ({detail})")


def dataset_rates(
    profile: str, folder: Path | None, budget: float, have_gpu: bool
) -> tuple[float, float | None]:
    """Samples/s of CubeDataset over a dev cube written with ``profile``: CPU, and GPU."""
    import tempfile
    import warnings

    import xarray as xr

    import eocube
    from eocube.torch import CubeDataset

    path = corpus.cube_path("stars_cmip3_tos_24x1x170x180", folder)
    with xr.open_dataset(path) as ds, tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "cube.eocube"
        eocube.to_eocube(ds.load(), store, profile=profile, chunks={"time": 8}, measure=False)
        window = {"time": 8, "y": 64, "x": 64}  # the default window, no overlap

        def samples_per_s(device: str) -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = CubeDataset(store, window=window, device=device)
            n = len(data)

            def epoch() -> None:
                # every chunk decoded again: no decoded chunk kept from the last epoch
                from eocube import cache

                cache.CHUNKS.clear()
                index = data._w
                for reader in [*index._readers.values(), *index.tensor_readers.values()]:
                    reader.cache.clear()
                for i in range(n):
                    data[i]
                synchronize()

            mvs, _ = rate(epoch, n, budget)  # samples (not values) per microsecond * 1e6
            return mvs * 1e6

        cpu = samples_per_s("cpu")
        gpu_rate = samples_per_s("cuda") if have_gpu else None
    return cpu, gpu_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one chunk per profile, short timings")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per timing (default 1.0)"
    )
    parser.add_argument("--no-dataset", action="store_true", help="skip the dataset samples/s")
    corpus.add_corpus_option(parser)
    args = parser.parse_args()
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.0)
    import av

    from eocube import device as on_device
    from eocube.profiles import DEFAULT_PROFILE, get_profile

    devices = av.codec.hwaccel.hwdevices_available()
    print(f"python {platform.python_version()}, PyAV {av.__version__}, FFmpeg hwdevices {devices}")
    have_gpu = gpu.nvdec_available()
    try:
        import torch

        have_torch = True
        cuda = torch.cuda.is_available()
    except ImportError:
        have_torch, cuda = False, False
    if have_gpu:
        print(f"GPU: {gpu_name()}; NVDEC opens through PyAV")
    else:
        print(
            "no GPU: NVDEC is not available here (PyAV opens no CUDA device); CPU figures "
            "only. NOT MEASURED: NVDEC ms per chunk (fresh and pooled sessions, in flight), "
            "Mvalues/s into CUDA tensors, NVDEC bit-exactness, dataset samples/s on the GPU"
        )
    cpus = os.cpu_count() or 1
    default = get_profile(DEFAULT_PROFILE)
    profiles = [default] + [
        p for p in available_profiles().values() if p.gpu_decodable and p.name != default.name
    ]
    mismatches, unsupported = 0, 0
    goals = Goals(chunk=[], dataset=[])
    header = (
        f"{'profile':22s} {'chunk':28s} {'decoder':26s} {'Mval/s':>8s} {'ms/chunk':>9s} "
        f"{'frames':>6s} {'bit-exact':>9s}"
    )
    print(header)
    print("-" * len(header))
    for profile in profiles:
        cases = [c for c in CASES if c.integer or not profile.lossless]
        if args.quick:
            cases = cases[:1]
        for case in cases:
            block = load(case, args.corpus)
            t0 = time.perf_counter()
            payload = chunk.encode_chunk(block, profile)
            encode_s = time.perf_counter() - t0
            reference = chunk.decode_chunk(payload, threads=1)
            if profile.lossless and max_diff(reference, block) != 0:
                print(f"{profile.name:22s} {case.name:28s} CPU decode != original: LOSSLESS BROKEN")
                mismatches += 1
            streams = streams_of(payload)
            frames = sum(s.frames for s in streams)
            label = f"{profile.name:22s} {case.name:28s}"
            kinds = ", ".join(s.pix_fmt for s in streams)

            def row(
                dec: str,
                sec: float,
                exact: str,
                n: int = frames,
                label: str = label,
                values: int = block.size,
            ) -> None:
                mvs = values / sec / 1e6
                print(f"{label} {dec:26s} {mvs:8.1f} {sec * 1e3:9.2f} {n:6d} {exact:>9s}")

            print(
                f"{label} encoded: {encode_s:.1f} s, {len(payload)} B, "
                f"{len(streams)} stream(s) ({kinds})"
            )
            values = block.size
            _, cpu1 = rate(lambda p=payload: chunk.decode_chunk(p, threads=1), values, budget)
            row("CPU 1 thread(s)", cpu1, "ref")
            cpu_all = in_flight(lambda p=payload: chunk.decode_chunk(p, threads=1), cpus, budget)
            row(f"CPU {cpus} cores, in flight", cpu_all, "ref")
            if have_torch:
                got = on_device.decode_chunk_tensor(payload, "cpu", threads=1)
                exact = tensor_equal(got, reference)
                _, sec = rate(
                    lambda p=payload: on_device.decode_chunk_tensor(p, "cpu", threads=1),
                    values,
                    budget,
                )
                row("torch unpack, CPU tensors", sec, "yes" if exact else "NO")
                if not exact:
                    mismatches += 1
                    print("  MISMATCH: the torch unpack differs from decode_chunk")
            if not have_gpu:
                print(f"{label} {'NVDEC':26s} NOT MEASURED (no GPU)")
                continue
            nvdec_streams = [s for s in streams if pixel_planes(s) > 1 or chroma(s)]
            if not nvdec_streams:
                print(f"{label} no stream for NVDEC (monochrome streams only: the CPU's)")
                continue
            decoded_any = False
            for method in gpu.METHODS:
                # frames: NVDEC codes against the CPU's, stream by stream, pooled twice
                diff, failed = 0.0, None
                session = gpu.NvdecSession()
                for stream in nvdec_streams * 2:
                    try:
                        got_planes = session.decode(stream, method)
                    except gpu.NvdecError as exc:
                        failed = str(exc)
                        break
                    want = [[np.array(p) for p in planes] for planes in video.decode_frames(stream)]
                    for g, w in zip(got_planes, want, strict=True):
                        for gp, wp in zip(g, w, strict=True):
                            diff = max(diff, max_diff(gp, wp))
                if failed is not None:
                    print(f"{label} {'NVDEC ' + method:26s} {'unsupported':>8s}   {failed[:110]}")
                    continue
                decoded_any = True

                def fresh(p: bytes = payload, m: str = method, n: int = len(nvdec_streams)) -> None:
                    with gpu.SessionPool(n) as own:
                        gpu.decode_chunk_with(p, gpu.NvdecDecoder(method=m, pool=own))

                _, fresh_s = rate(fresh, values, min(budget, 0.5))
                decoder = gpu.NvdecDecoder(method=method)
                out = gpu.decode_chunk_with(payload, decoder)
                worst = max(diff, max_diff(out, reference))
                ok = "yes" if worst == 0 else f"{worst:g}"
                row(f"NVDEC {method}, fresh session", fresh_s, ok)
                _, pooled = rate(
                    lambda d=decoder, p=payload: gpu.decode_chunk_with(p, d), values, budget
                )
                row(f"NVDEC {method}, pooled", pooled, ok)
                flight = in_flight(
                    lambda d=decoder, p=payload: gpu.decode_chunk_with(p, d, threads=1),
                    gpu.default_pool().max_sessions,
                    budget,
                )
                row(f"NVDEC {method}, pooled, in flight", flight, ok)
                if worst != 0:
                    mismatches += 1
                    print(f"  MISMATCH: NVDEC ({method}) differs from the CPU by {worst:g}")
                if method != decoder.methods[0] or not cuda:
                    continue
                # into torch: frames kept on the GPU, unpacked there
                try:
                    tensor = on_device.decode_chunk_tensor(
                        payload, "cuda", stream_decoder=decoder.decode_tensor
                    )
                    synchronize()
                except Exception as exc:  # report, do not stop the run
                    print(f"{label} {'into torch (CUDA)':26s} FAILED {exc!r}"[:200])
                    mismatches += 1
                    continue
                exact = tensor_equal(tensor, reference)

                def to_torch(d: gpu.NvdecDecoder = decoder, p: bytes = payload) -> None:
                    on_device.decode_chunk_tensor(p, "cuda", stream_decoder=d.decode_tensor)
                    synchronize()

                _, sec = rate(to_torch, values, budget)
                row(f"into torch ({method})", sec, "yes" if exact else "NO")
                torch_flight = in_flight(to_torch, gpu.default_pool().max_sessions, budget)
                row(f"into torch ({method}), in flight", torch_flight, "yes" if exact else "NO")
                if not exact:
                    mismatches += 1
                    print("  MISMATCH: the CUDA unpack differs from decode_chunk")
                if profile.name == default.name:
                    best = min(flight, torch_flight, pooled)
                    goals.chunk.append((case.name, cpu1 / best))
            if not decoded_any:
                unsupported += 1
                print(
                    f"  NOT DECODABLE on this GPU although {profile.name} says gpu_decodable = true"
                )
        if not args.no_dataset and have_torch and not (args.quick and profile is not default):
            try:
                cpu_rate, gpu_rate = dataset_rates(profile.name, args.corpus, budget, cuda)
            except Exception as exc:  # report, do not stop the run
                print(f"{profile.name:22s} dataset samples/s: FAILED {exc!r}"[:200])
                continue
            shown = "NOT MEASURED (no GPU)" if gpu_rate is None else f"{gpu_rate:.1f}"
            ratio = "" if gpu_rate is None else f" ({gpu_rate / cpu_rate:.1f}x)"
            print(
                f"{profile.name:22s} {'dataset 8x64x64 windows':28s} samples/s: "
                f"CPU {cpu_rate:.1f}, GPU {shown}{ratio}"
            )
            if gpu_rate is not None:
                goals.dataset.append((profile.name, gpu_rate / cpu_rate))
    goals.report(have_gpu)
    print()
    if not have_gpu:
        print(
            "no GPU: nothing to compare on NVDEC; run this script on a machine with an NVIDIA GPU"
        )
        return 1 if mismatches else 0
    if mismatches:
        print(f"FAILED: {mismatches} mismatch(es) between NVDEC and the CPU decoder")
        return 1
    if unsupported:
        print(f"FAILED: {unsupported} chunk(s) of GPU-decodable profiles not decoded on NVDEC")
        return 2
    print("OK: NVDEC decodes every GPU-decodable profile bit-exactly like FFmpeg's CPU decoder")
    return 0


def pixel_planes(stream: video.EncodedStream) -> int:
    from eocube.pixfmt import pixel_format

    return pixel_format(stream.pix_fmt).data_planes


def chroma(stream: video.EncodedStream) -> bool:
    from eocube.pixfmt import pixel_format

    return pixel_format(stream.pix_fmt).chroma_subsampled


if __name__ == "__main__":
    sys.exit(main())
