"""Helpers shared by the benchmarks: measuring a point, reading curves, describing the run.

Quality, sizes and speeds of one encoded cube; interpolation of PSNR (and speeds) at
fixed rates; machine and git information; markdown formatting. Every metric comes from
:mod:`eocube.metrics` (docs/format.md definitions). The cubes themselves come from
:mod:`benchmarks.corpus`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = (0.1, 0.3, 1.0)


# ---------------------------------------------------------------------------- measuring


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values in ``dtype``, as a reader returns them: integers rounded and clipped
    to the dtype's range."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float, list[float]]:
    """Run ``fn`` ``repeats`` times: (last result, median seconds, all seconds)."""
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), times


def quality(original: np.ndarray, decoded: np.ndarray, nodata: float | None) -> dict[str, Any]:
    """PSNR (docs/format.md), per-band PSNR, max abs error (also relative to the data range)."""
    from eocube import metrics

    stats_cls = getattr(metrics, "ErrorStats", None)
    if stats_cls is not None:  # one pass over the data
        st = stats_cls.of(original, decoded, nodata)
        per_band, psnr, err = st.psnr_per_band(), st.psnr(), st.max_abs_error()
        valid_bands = st.count > 0
        rng = (
            float(st.hi[valid_bands].max() - st.lo[valid_bands].min()) if valid_bands.any() else 0.0
        )
        exact = bool(np.all(st.sse[valid_bands] == 0))
    else:
        per_band = metrics.psnr_per_band(original, decoded, nodata)
        psnr = metrics.psnr(original, decoded, nodata)
        err = metrics.max_abs_error(original, decoded, nodata)
        valid = metrics.valid_mask(original, nodata)
        rng = float(np.ptp(original[valid].astype(np.float64))) if valid.any() else 0.0
        exact = err == 0
    return {
        "psnr": psnr,
        "psnr_per_band": [float(x) for x in per_band],
        "max_abs_error": err,
        "max_abs_error_of_range": err / rng if rng and math.isfinite(err) else None,
        "exact_on_valid": exact,
    }


def sizes(
    nbytes_total: int, nbytes_payload: int, shape: Sequence[int], dtype: np.dtype
) -> dict[str, Any]:
    """Bytes, bpppb and compression ratio, of every byte kept and of the payload only."""
    from eocube import metrics

    return {
        "nbytes_total": int(nbytes_total),
        "nbytes_payload": int(nbytes_payload),
        "bpppb": metrics.bpppb(nbytes_total, tuple(shape)),
        "bpppb_payload": metrics.bpppb(nbytes_payload, tuple(shape)),
        "compression_ratio": metrics.compression_ratio(nbytes_total, tuple(shape), dtype),
        "compression_ratio_payload": metrics.compression_ratio(nbytes_payload, tuple(shape), dtype),
    }


def speeds(original_bytes: int, encode_s: float, decode_s: float) -> dict[str, Any]:
    """Seconds and MB/s (of the original array) of an encode and a decode."""
    return {
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_mb_s": original_bytes / encode_s / 1e6 if encode_s > 0 else None,
        "decode_mb_s": original_bytes / decode_s / 1e6 if decode_s > 0 else None,
    }


def mask_bytes(invalid: np.ndarray) -> bytes:
    """The invalid-value mask as eocube stores it: zlib level 9 of the packed bits."""
    return zlib.compress(np.packbits(invalid, axis=None).tobytes(), 9) if invalid.any() else b""


# ---------------------------------------------------------------------------- curves


def lossy_points(records: Iterable[dict[str, Any]], basis: str = "bpppb") -> list[tuple]:
    """(bpppb, PSNR) of the usable lossy points, sorted by rate."""
    return sorted(
        (r[basis], r["psnr"])
        for r in records
        if not r.get("skipped")
        and not r.get("error")
        and not r.get("lossless")
        and r.get("psnr") is not None
        and math.isfinite(r["psnr"])
        and r.get(basis)
    )


def interp_log(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """y at ``target`` x, linear in log10(x) between neighbouring points; no extrapolation.

    Where the curve is not monotonic in x, the highest value found at ``target`` is used.
    """
    best = None
    for (b0, p0), (b1, p1) in itertools.pairwise(points):
        if b0 <= target <= b1:
            if b1 == b0:
                val = max(p0, p1)
            else:
                w = (math.log10(target) - math.log10(b0)) / (math.log10(b1) - math.log10(b0))
                val = p0 + w * (p1 - p0)
            best = val if best is None else max(best, val)
    if best is None and points and any(b == target for b, _ in points):
        best = max(p for b, p in points if b == target)
    return best


def psnr_at(records: Iterable[dict[str, Any]], target: float, basis: str = "bpppb") -> float | None:
    """PSNR of a method's lossy points at ``target`` rate (see :func:`interp_log`)."""
    return interp_log(lossy_points(records, basis), target)


class Sat(float):
    """A PSNR taken at the method's best quality, reached below the rate asked (shown †)."""


def psnr_at_sat(
    records: Iterable[dict[str, Any]], target: float, basis: str = "bpppb"
) -> float | None:
    """PSNR at ``target``, or the method's best where it saturates below ``target``.

    A video method swept down to crf 0 (its best quality) that never spends ``target``
    bpppb cannot do better by spending more: its PSNR at ``target`` is that of its crf 0
    point, returned as :class:`Sat`. Otherwise as :func:`psnr_at`.
    """
    records = list(records)
    value = psnr_at(records, target, basis)
    if value is not None:
        return value
    ok = [
        r
        for r in records
        if not r.get("skipped")
        and not r.get("error")
        and not r.get("lossless")
        and r.get(basis)
        and r.get("psnr") is not None
        and math.isfinite(r["psnr"])
    ]
    if not ok:
        return None
    top = max(ok, key=lambda r: r[basis])
    if top[basis] < target and (top.get("setting") or {}).get("crf") == 0:
        return Sat(top["psnr"])
    return None


def speed_at(
    records: Iterable[dict[str, Any]], target: float, key: str, basis: str = "bpppb"
) -> float | None:
    """Encode/decode MB/s at ``target`` bpppb, interpolated like PSNR."""
    pts = sorted(
        (r[basis], r[key])
        for r in records
        if not r.get("skipped") and not r.get("error") and not r.get("lossless") and r.get(key)
    )
    return interp_log(pts, target)


# ---------------------------------------------------------------------------- reporting


def run_in_checkout(
    checkout: Path,
    script: str,
    args: Sequence[str],
    attempts: int = 1,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run ``script`` (Python source whose last printed line is a JSON object holding
    ``"module": eocube.__file__``) with ``args`` in a fresh process of ``python`` (by
    default this interpreter) that imports the eocube of ``checkout``; that object.

    A process that dies (a native crash) is run again, up to ``attempts`` runs in all,
    each death printed with its faulthandler trace; then RuntimeError. So is a worker
    that imported eocube from anywhere but ``checkout``.
    """
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    argv = [python, "-X", "faulthandler", "-c", script, *args]
    for attempt in range(1, attempts + 1):
        # run from the checkout: ``python -c`` puts the working folder first on sys.path
        done = subprocess.run(argv, env=env, cwd=checkout, capture_output=True, text=True)
        if done.returncode == 0:
            break
        print(
            f"{checkout}: the worker died (exit status {done.returncode}, run {attempt} of "
            f"{attempts}):\n{done.stderr[-2000:]}",
            file=sys.stderr,
            flush=True,
        )
    else:
        raise RuntimeError(f"{checkout}: the worker died {attempts} times (args {list(args)})")
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    if not Path(result["module"]).resolve().is_relative_to(checkout.resolve()):
        raise RuntimeError(f"{checkout}: the worker imported eocube from {result['module']}")
    return result


def git_state() -> dict[str, Any]:
    """The commit measured, and the files of eocube/ and codecs/ modified since (if any)."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": git("status", "--porcelain", "--", "eocube", "codecs").splitlines(),
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """The machine, the libraries and the git state a benchmark ran on.

    Parameters
    ----------
    threads : int, optional
        The codec threads of the run, recorded as given. Without it, the load average at
        the start and the versions of the competitors' libraries are recorded instead.

    Returns
    -------
    dict
        JSON-ready figures: git state, platform, CPUs, eocube, av, FFmpeg, libx265 (which
        PyAV's version does not tell), numpy, numba.
    """
    import av
    import numba

    import eocube
    from eocube.video import x265_version

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "git": git_state(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
    }
    if threads is not None:
        info["threads"] = threads
    else:
        load = None
        with contextlib.suppress(OSError):
            load = list(os.getloadavg())
        info["load_average_at_start"] = load
    libs = {}
    with contextlib.suppress(Exception):  # informative only
        libs = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    info.update(
        eocube=eocube.__version__,
        av=av.__version__,
        ffmpeg_libs=libs,
        x265=x265_version(),
        numpy=np.__version__,
        numba=numba.__version__,
    )
    if threads is None:
        info.update(_competitor_versions())
    return info


def _competitor_versions() -> dict[str, str]:
    """Versions of the competitors' libraries and of xarray and zarr, where installed."""
    versions: dict[str, str] = {}
    for mod in ("imagecodecs", "zfpy", "zstandard", "pysz", "xarray", "zarr"):
        with contextlib.suppress(Exception):
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", "?"))
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions.setdefault("pysz", version("pysz"))
        versions["zfpy"] = version("zfpy")
    return versions


def fmt(x: Any, spec: str = ".1f", none: str = "n/a") -> str:
    """A number for a table: ``none`` for None, ∞ / nan spelled out, † after a :class:`Sat`."""
    if x is None:
        return none
    if isinstance(x, Sat):
        return format(float(x), spec) + "†"
    if isinstance(x, float):
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        if math.isnan(x):
            return "nan"
    return format(x, spec)


def md_section(title: str, *paragraphs: str) -> list[str]:
    """A level-2 markdown heading and its paragraphs, as lines, each followed by a blank one."""
    out = [f"## {title}", ""]
    for paragraph in paragraphs:
        out += [paragraph, ""]
    return out


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` gives one char per column (l or r), default l then r."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------- results


def save_results(out: Path, stem: str, text: str, run: dict[str, Any]) -> bool:
    """Print the markdown ``text`` and write it as ``<stem>.md``, and ``run`` (with the
    code's git state added) as ``<stem>.json``, under ``out``.

    A run whose ``rows`` are empty (none of the cubes it names is in the corpus) writes
    nothing, so that it cannot replace committed results with an empty table; the
    return value says whether the files were written."""
    import json

    if "rows" in run and not run["rows"]:
        print(f"nothing measured: {out / stem}.md and .json not written", flush=True)
        return False
    print()
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps({**run, "code": git_state()}, indent=1))
    return True


def paired_bars(
    path: Path,
    labels: Sequence[str],
    bars: Sequence[tuple[str, Sequence[float]]],
    ylabel: str,
    *,
    log: bool = False,
    one: bool = False,
) -> None:
    """A bar per series and label (e.g. before and after, per cube), saved as a PNG at
    ``path``; ``log``: a log y axis; ``one``: a line at 1 (for ratios)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(labels))
    width = 0.8 / len(bars)
    for i, (label, values) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, list(values), width, label=label)
    if one:
        ax.axhline(1, color="k", linewidth=0.8)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(x, [name[:24] for name in labels], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
