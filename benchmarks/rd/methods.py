"""How benchmarks.rd measures one point of each method, and the jobs of one cube.

A point is one setting of one method on one cube: eocube (a profile at a crf, or
lossless) written with :func:`eocube.to_eocube` and read back with xarray; the reference
approach (benchmarks.reference); or a competitor (benchmarks.competitors). Each returns
the sizes, quality and speeds of :mod:`benchmarks.common`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks import common, competitors, reference
from benchmarks.corpus import Cube
from benchmarks.rd import sweeps


@dataclass(frozen=True)
class Job:
    """One point to measure: the method, its setting, and the call that measures it."""

    method: str
    setting: dict[str, Any]
    lossless: bool
    run: Callable[[], dict[str, Any]]

    @property
    def key(self) -> str:
        """``method|setting label``: how a point is named in the part files."""
        return point_key(self.method, setting_label(self.setting))


def point_key(method: str, label: str) -> str:
    """The name of a point: ``method|setting label``."""
    return f"{method}|{label}"


def setting_label(setting: dict[str, Any]) -> str:
    """A setting as a short text (``crf 20``), ``lossless`` for none."""
    if not setting:
        return "lossless"
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}" for k, v in setting.items()
    )


def is_selected(method: str, chosen: set[str]) -> bool:
    """Whether ``method`` is one of ``chosen``, or of a family named there by its prefix
    ending in a colon (``eocube:`` selects every eocube profile; ``eocube:hevc-12bit-444``
    that profile alone, not ``eocube:hevc-12bit-444-gbr``)."""
    return any(method == x or (x.endswith(":") and method.startswith(x)) for x in chosen)


def method_kind(method: str) -> str:
    """eocube, reference or competitor."""
    if method.startswith("eocube:"):
        return "eocube"
    return "reference" if method == "reference" else "competitor"


def is_video(method: str) -> bool:
    """Whether the method codes the cube as video (eocube and the reference)."""
    return method.startswith("eocube:") or method == "reference"


# ------------------------------------------------------------------------------ eocube


class _Capture:
    """Wraps the decode_chunk of eocube's read path during a read to keep the chunk payloads."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def __enter__(self) -> _Capture:
        import eocube.reader as codec_mod

        self._mod = codec_mod
        self._orig = codec_mod.decode_chunk
        orig, payloads = self._orig, self.payloads

        def wrapper(payload: Any, *args: Any, **kwargs: Any) -> Any:
            payloads.append(bytes(payload))
            return orig(payload, *args, **kwargs)

        codec_mod.decode_chunk = wrapper
        return self

    def __exit__(self, *exc: object) -> None:
        self._mod.decode_chunk = self._orig


def _codec_alone_seconds(chunks: list[bytes], repeats: int) -> tuple[float | None, float | None]:
    """Seconds inside the video decoder, and in decode_chunk, over ``chunks`` (medians)."""
    from eocube.chunk import decode_chunk
    from eocube.codec import DECODE_THREADS

    if not chunks:
        return None, None
    codec_runs, chunk_runs = [], []
    for _ in range(max(1, repeats)):
        spent: list[float] = []
        t0 = time.perf_counter()
        for p in chunks:
            decode_chunk(p, threads=DECODE_THREADS, on_codec_time=spent.append)
        chunk_runs.append(time.perf_counter() - t0)
        codec_runs.append(sum(spent))
    return statistics.median(codec_runs), statistics.median(chunk_runs)


def eocube_point(
    cube: Cube,
    profile: str,
    crf: float | None,
    *,
    decode_repeats: int,
    target_bpppb: float | None = None,
) -> dict[str, Any]:
    """Write the cube with ``profile`` at ``crf`` (None: lossless, or ``target_bpppb``)
    and read it back.

    Parameters
    ----------
    cube : Cube
        The cube; its dataset is written into ``memory://``.
    profile : str
        The eocube profile.
    crf : float or None
        The quality; None writes the profile losslessly.
    decode_repeats : int
        Reads timed (medians are kept).
    target_bpppb : float, optional
        With ``crf`` None: the store's rate to reach (eocube's rate control, which spends
        what the video cannot on a residual layer).

    Returns
    -------
    dict
        Sizes (whole store and payload), quality, speeds end to end and of the codec alone.
    """
    import fsspec
    import xarray as xr

    import eocube
    from eocube import lifecycle, packed

    path = f"memory://rd-{uuid.uuid4().hex}.eocube"
    kwargs: dict[str, Any] = {"profile": profile, "measure": False}
    if target_bpppb is not None:
        kwargs["target_bpppb"] = target_bpppb
    elif crf is None:
        kwargs["lossless"] = True
    else:
        kwargs["crf"] = crf
    fs = fsspec.filesystem("memory")
    try:
        t0 = time.perf_counter()
        report = eocube.to_eocube(cube.dataset, path, **kwargs)
        encode_s = time.perf_counter() - t0
        payload = report.variables["data"].payload_nbytes
        packed_nbytes = packed.packed_size(lifecycle.store_path(path, read_only=True))

        def read() -> tuple[np.ndarray, float, float]:
            t0 = time.perf_counter()
            with xr.open_dataset(path, engine="eocube", mask_and_scale=False) as ds:
                t1 = time.perf_counter()
                values = np.asarray(ds["data"].values)
            return values, t1 - t0, time.perf_counter() - t1

        runs = []
        with _Capture() as cap:
            for _ in range(max(1, decode_repeats)):
                runs.append(read())
        decoded = runs[-1][0]
        open_s = statistics.median(r[1] for r in runs)
        read_s = statistics.median(r[2] for r in runs)
        dec_times = [r[1] + r[2] for r in runs]
        decode_s = statistics.median(dec_times)
        chunks = cap.payloads[: len(cap.payloads) // max(1, decode_repeats)]
        codec_s, chunk_s = _codec_alone_seconds(chunks, decode_repeats)
    finally:
        with contextlib.suppress(FileNotFoundError):  # to_eocube may refuse before writing
            fs.rm(path.removeprefix("memory://"), recursive=True)
    return {
        **common.sizes(report.nbytes, payload, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "chunks": len(chunks),
        "decode_codec_s": codec_s,
        "decode_chunk_s": chunk_s,
        "decode_codec_mb_s": cube.values.nbytes / codec_s / 1e6 if codec_s else None,
        "open_s": open_s,
        "read_s": read_s,
        "read_mb_s": cube.values.nbytes / read_s / 1e6 if read_s else None,
        # goal: decoding at >= 0.8 x the speed of the codec alone, i.e. these ratios >= 0.8;
        # read = the values of an opened store, e2e = open included
        "read_over_codec": codec_s / read_s if codec_s and read_s else None,
        "e2e_over_codec": codec_s / decode_s if codec_s else None,
        "chunk_over_codec": codec_s / chunk_s if codec_s and chunk_s else None,
        "store_overhead_bytes": report.nbytes - payload,
        # the same store packed into one ZIP file (eocube.pack): its size, exactly
        "nbytes_packed": packed_nbytes,
        "bpppb_packed": packed_nbytes * 8 / cube.values.size,
    }


# ------------------------------------------------------------------------------ others


def reference_point(cube: Cube, crf: float, *, decode_repeats: int) -> dict[str, Any]:
    """Encode and decode the cube the reference's way at ``crf`` (video bytes only)."""
    enc, encode_s, _ = common.timed(lambda: reference.encode(cube.values, crf, cube.nodata), 1)
    decoded, decode_s, dec_times = common.timed(lambda: reference.decode(enc), decode_repeats)
    nbytes = enc.nbytes
    return {
        **common.sizes(nbytes, nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "videos": len(enc.videos),
        "sei_bytes": enc.sei_bytes,
        "bpppb_without_sei": (nbytes - enc.sei_bytes) * 8 / cube.values.size,
    }


def competitor_point(
    cube: Cube, method: competitors.Method, setting: dict[str, Any], *, decode_repeats: int
) -> dict[str, Any]:
    """Encode and decode the cube with a competitor; a lossless one must be exact."""
    enc, encode_s, _ = common.timed(lambda: method.encode(cube.values, cube.nodata, setting), 1)
    decoded, decode_s, dec_times = common.timed(lambda: method.decode(enc), decode_repeats)
    rec = {
        **common.sizes(enc.nbytes, enc.nbytes, cube.shape, cube.values.dtype),
        **common.quality(cube.values, decoded, cube.nodata),
        **common.speeds(cube.values.nbytes, encode_s, decode_s),
        "decode_times_s": dec_times,
        "mask_bytes": len(enc.mask),
        "side_bytes": enc.side_bytes,
    }
    if method.lossless and not rec["exact_on_valid"]:
        rec["error"] = "lossless method did not return the data exactly"
    return rec


# ------------------------------------------------------------------------------ jobs


def cube_jobs(cube: Cube, *, quick: bool, decode_repeats: int) -> list[Job]:
    """Every point of one cube, in the order they run: eocube, reference, competitors.

    Parameters
    ----------
    cube : Cube
        The cube.
    quick : bool
        Short sweeps (benchmarks.rd.sweeps) and the competitors' quick settings.
    decode_repeats : int
        Decodes timed per point.

    Returns
    -------
    list of Job
        A competitor that does not apply to the cube gets one job that records why.
    """
    import eocube

    available = eocube.available_profiles()
    jobs: list[Job] = []
    for name, crfs in sweeps.profile_sweeps(quick).items():
        if name not in available:
            continue
        for crf in crfs:
            jobs.append(
                Job(
                    f"eocube:{name}",
                    {"crf": crf},
                    False,
                    lambda n=name, c=crf: eocube_point(cube, n, c, decode_repeats=decode_repeats),
                )
            )
    for name in sweeps.TARGET_PROFILES:
        for rate in sweeps.target_rates(quick):
            jobs.append(
                Job(
                    f"eocube:{name}",
                    {"target_bpppb": rate},
                    False,
                    lambda n=name, r=rate: eocube_point(
                        cube, n, None, decode_repeats=decode_repeats, target_bpppb=r
                    ),
                )
            )
    for name in sweeps.LOSSLESS_PROFILES:
        if name in available:
            jobs.append(
                Job(
                    f"eocube:{name}",
                    {},
                    True,
                    lambda n=name: eocube_point(cube, n, None, decode_repeats=decode_repeats),
                )
            )
    for crf in sweeps.reference_crfs(quick):
        jobs.append(
            Job(
                "reference",
                {"crf": crf},
                False,
                lambda c=crf: reference_point(cube, c, decode_repeats=decode_repeats),
            )
        )
    for m in competitors.METHODS:
        reason = m.applies(cube.values, cube.nodata)
        for s in m.settings(cube.values, quick):
            if reason:
                jobs.append(Job(m.name, s, m.lossless, lambda r=reason: {"skipped": r}))
                break
            jobs.append(
                Job(
                    m.name,
                    s,
                    m.lossless,
                    lambda m=m, s=s: competitor_point(cube, m, s, decode_repeats=decode_repeats),
                )
            )
    return jobs
