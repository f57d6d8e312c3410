"""NVDEC against the CPU decoder: equality and decode throughput, per GPU-decodable profile.

For each profile whose ``gpu_decodable`` is true, real cube chunks of the corpus are
encoded, then decoded by FFmpeg on the CPU and on NVDEC (FFmpeg's CUDA hwaccel, its CUVID
decoder, and for 4:2:0 streams CUDA frames handed to torch by DLPack). The codes of every
frame must be equal: NVDEC is a conforming HEVC decoder, so even lossy streams decode
bit-exactly like FFmpeg's; lossless chunks must also equal the original block.

    python benchmarks/gpu_check.py            # about a minute on a GPU machine
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one chunk per profile, short timings")
    parser.add_argument(
        "--budget", type=float, default=None, help="seconds per timing (default 1.5)"
    )
    corpus.add_corpus_option(parser)
    args = parser.parse_args()
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 1.5)
    import av

    devices = av.codec.hwaccel.hwdevices_available()
    print(f"python {platform.python_version()}, PyAV {av.__version__}, FFmpeg hwdevices {devices}")
    have_gpu = gpu.nvdec_available()
    if have_gpu:
        print(f"GPU: {gpu_name()}; NVDEC opens through PyAV")
    else:
        print("no GPU: NVDEC is not available here (PyAV opens no CUDA device); CPU figures only")
    cpus = os.cpu_count() or 1
    profiles = [p for p in available_profiles().values() if p.gpu_decodable]
    mismatches, unsupported = 0, 0
    header = (
        f"{'profile':22s} {'chunk':28s} {'decoder':22s} {'Mval/s':>8s} {'ms/chunk':>9s} "
        f"{'frames':>6s} {'max diff':>9s}"
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

            def row(
                dec: str, speed: float, sec: float, diff: str, n: int, label: str = label
            ) -> None:
                print(f"{label} {dec:22s} {speed:8.1f} {sec * 1e3:9.2f} {n:6d} {diff:>9s}")

            print(f"{label} encoded: {encode_s:.1f} s, {len(payload)} B, {len(streams)} stream(s)")

            values = block.size
            for threads in (1, cpus):
                mvs, sec = rate(
                    lambda t=threads, p=payload: chunk.decode_chunk(p, threads=t), values, budget
                )
                row(f"CPU {threads} thread(s)", mvs, sec, "ref", frames)
            if not have_gpu:
                continue
            main_streams = [s for s in streams if pixel_planes(s) > 1 or chroma(s)]
            if not main_streams:
                print(f"{label} no stream for NVDEC (monochrome leftover bands: the CPU's)")
                continue
            decoded_any = False
            for method in gpu.METHODS:
                # frames: NVDEC codes against the CPU's, stream by stream, with a fresh
                # decoder and again with the session's reused one
                diff, failed = 0.0, None
                session = gpu.NvdecSession()
                for stream in main_streams * 2:
                    try:
                        got = session.decode(stream, method)
                    except gpu.NvdecError as exc:
                        failed = str(exc)
                        break
                    want = [[np.array(p) for p in planes] for planes in video.decode_frames(stream)]
                    for g, w in zip(got, want, strict=True):
                        for gp, wp in zip(g, w, strict=True):
                            diff = max(diff, max_diff(gp, wp))
                if failed is not None:
                    print(f"{label} {'NVDEC ' + method:22s} {'unsupported':>8s}   {failed[:120]}")
                    continue
                decoded_any = True
                t0 = time.perf_counter()
                gpu.decode_stream(main_streams[0], method=method)
                fresh = time.perf_counter() - t0
                decoder = gpu.NvdecDecoder(method=method)
                out = gpu.decode_chunk_with(payload, decoder)
                worst = max(diff, max_diff(out, reference))
                mvs, sec = rate(
                    lambda d=decoder, p=payload: gpu.decode_chunk_with(p, d), values, budget
                )
                row(f"NVDEC {method}", mvs, sec, f"{worst:g}", frames)
                print(f"{label} {'  (fresh decoder)':22s} {'':8s} {fresh * 1e3:9.2f}")
                if worst != 0:
                    mismatches += 1
                    print(f"  MISMATCH: NVDEC ({method}) differs from the CPU by {worst:g}")
            for stream in [s for s in main_streams if chroma(s)][:1]:
                session = gpu.NvdecSession()
                try:
                    tensors = session.decode_to_torch(stream) + session.decode_to_torch(stream)
                except gpu.NvdecError as exc:
                    print(f"{label} {'NVDEC DLPack':22s} {'unsupported':>8s}   {str(exc)[:120]}")
                    continue
                want = [np.array(p[0]) for p in video.decode_frames(stream)] * 2
                diff = max(max_diff(t.cpu().numpy(), w) for t, w in zip(tensors, want, strict=True))
                stream_values = values * stream.frames // max(1, frames)

                def to_torch(
                    s: video.EncodedStream = stream, ses: gpu.NvdecSession = session
                ) -> None:
                    import torch

                    ses.decode_to_torch(s)
                    torch.cuda.synchronize()

                mvs, sec = rate(to_torch, stream_values, budget)
                row("NVDEC DLPack (frames)", mvs, sec, f"{diff:g}", stream.frames)
                if diff != 0:
                    mismatches += 1
                    print(f"  MISMATCH: NVDEC frames through DLPack differ by up to {diff:g}")
            if not decoded_any and main_streams:
                unsupported += 1
                print(
                    f"  NOT DECODABLE on this GPU although {profile.name} says gpu_decodable = true"
                )
    print()
    if not have_gpu:
        print("no GPU: nothing to compare; run this script on a machine with an NVIDIA GPU")
        return 0
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
