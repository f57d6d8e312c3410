"""Helpers shared by the rate–distortion benchmarks (benchmarks.rd, benchmarks.defaults).

Cubes of the dev corpus, their families, crops of the largest ones, interpolation of
PSNR at fixed rates, machine information and markdown formatting. Every metric comes
from :mod:`eocube.metrics` (docs/format.md definitions).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import statistics
import subprocess
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TEST_DATA = ROOT / "tests" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = (0.1, 0.3, 1.0)


def data_dir() -> Path:
    """The dev corpus: ../shared/data when present, else tests/data."""
    if SHARED_DATA.is_dir() and any(SHARED_DATA.glob("*.nc")):
        return SHARED_DATA
    return TEST_DATA


def corpus(folder: Path | None = None) -> list[str]:
    """Names (file stems) of every cube of the corpus, sorted."""
    folder = folder or data_dir()
    return sorted(p.stem for p in folder.glob("*.nc"))


def family(name: str) -> str:
    """s2, landsat, era5, climate or ocean: which goals of issue 5 a cube belongs to."""
    if name.startswith("s2_"):
        return "s2"
    if name.startswith(("l8_", "landsat")):
        return "landsat"
    if name.startswith("era5"):
        return "era5"
    if name.startswith("ocean"):
        return "ocean"
    return "climate"  # ERA-Interim, gridded observations, model SST, radar precipitation


@dataclass
class Cube:
    """One cube of the corpus as a (T, B, Y, X) array and the dataset written by eocube.

    ``dataset`` holds only the ``data`` variable (other variables such as the cloud
    ``mask`` layer are dropped: every method compresses the same values) with all its
    coordinates and attributes, so the store's bytes are those a user of this variable
    would keep.
    """

    name: str
    values: np.ndarray
    nodata: float | None
    dataset: Any  # xarray.Dataset
    crop: str | None = None
    source_shape: tuple[int, ...] = ()
    bands: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        T, B, Y, X = self.values.shape
        return T, B, Y, X

    @property
    def family(self) -> str:
        return family(self.name)

    @property
    def is_integer(self) -> bool:
        return self.values.dtype.kind in "iu"

    @property
    def valid(self) -> np.ndarray:
        from eocube import metrics

        return metrics.valid_mask(self.values, self.nodata)

    def describe(self) -> dict[str, Any]:
        valid = self.valid
        v = self.values[valid]
        return {
            "cube": self.name,
            "family": self.family,
            "dtype": str(self.values.dtype),
            "shape": list(self.shape),
            "source_shape": list(self.source_shape),
            "crop": self.crop,
            "values": int(self.values.size),
            "original_bytes": int(self.values.nbytes),
            "nodata": self.nodata,
            "invalid_fraction": float(1 - valid.mean()),
            "value_min": float(v.min()) if v.size else None,
            "value_max": float(v.max()) if v.size else None,
            "integer": self.is_integer,
            "time_series": self.shape[0] > 1,
        }


def _best_window(valid: np.ndarray, wy: int, wx: int) -> tuple[int, int]:
    """Top-left corner of the wy × wx window (on a coarse grid) with most valid values."""
    Y, X = valid.shape
    counts = np.asarray(valid, np.int64).cumsum(0).cumsum(1)
    counts = np.pad(counts, ((1, 0), (1, 0)))
    best, corner = -1, ((Y - wy) // 2, (X - wx) // 2)
    step_y, step_x = max(1, (Y - wy) // 8), max(1, (X - wx) // 8)
    for y0 in range(0, Y - wy + 1, step_y):
        for x0 in range(0, X - wx + 1, step_x):
            n = (
                counts[y0 + wy, x0 + wx]
                - counts[y0, x0 + wx]
                - counts[y0 + wy, x0]
                + counts[y0, x0]
            )
            if n > best:
                best, corner = int(n), (y0, x0)
    return corner  # counts: valid values over all dates and bands of each pixel


def load_cube(
    name: str,
    folder: Path | None = None,
    *,
    max_values: int | None = None,
    max_time: int | None = None,
) -> Cube:
    """Load a cube; crop time to ``max_time`` steps and y/x to at most ``max_values`` values.

    The spatial crop is square-ish, keeps every band and date, and is placed where the
    most values are valid (a NaN-dominated ocean scene would otherwise measure NaNs).
    """
    import xarray as xr

    folder = folder or data_dir()
    with xr.open_dataset(folder / f"{name}.nc", mask_and_scale=False) as src:
        ds = src[["data"]].load()
    da = ds["data"]
    if da.ndim == 3:
        ds = ds.assign(data=da.expand_dims("band", axis=1))
        da = ds["data"]
    ds = ds.transpose(*("time", "band", "y", "x"), ...)
    source_shape = tuple(int(s) for s in ds["data"].shape)
    nodata = da.attrs.get("nodata")
    nodata = None if nodata is None else float(nodata)
    crops = []
    T, B, Y, X = source_shape
    if max_time is not None and max_time < T:
        ds = ds.isel(time=slice(0, max_time))
        crops.append(f"first {max_time} of {T} time steps")
        T = max_time
    if max_values is not None and max_values < T * B * Y * X:
        side = math.sqrt(max_values / (T * B))
        wy, wx = min(Y, int(side)), min(X, int(side))
        if wy == Y:
            wx = min(X, int(max_values / (T * B * Y)))
        elif wx == X:
            wy = min(Y, int(max_values / (T * B * X)))
        from eocube import metrics

        valid = metrics.valid_mask(ds["data"].values, nodata).sum(axis=(0, 1))
        y0, x0 = _best_window(valid, wy, wx)
        ds = ds.isel(y=slice(y0, y0 + wy), x=slice(x0, x0 + wx))
        crops.append(f"y {y0}:{y0 + wy}, x {x0}:{x0 + wx} of {Y} x {X}")
    values = np.ascontiguousarray(ds["data"].values)
    bands = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
    return Cube(
        name=name,
        values=values,
        nodata=nodata,
        dataset=ds,
        crop="; ".join(crops) or None,
        source_shape=source_shape,
        bands=bands,
    )


# ---------------------------------------------------------------------------- measuring


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


def git_state() -> dict[str, Any]:
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


def machine_info() -> dict[str, Any]:
    import av
    import numba

    import eocube

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
    versions: dict[str, str] = {}
    for mod in ("imagecodecs", "zfpy", "zstandard", "pysz", "xarray", "zarr"):
        with contextlib.suppress(Exception):
            m = __import__(mod)
            versions[mod] = str(getattr(m, "__version__", "?"))
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions.setdefault("pysz", version("pysz"))
        versions["zfpy"] = version("zfpy")
    libs = {}
    with contextlib.suppress(Exception):
        libs = {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    return {
        "git": git_state(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average_at_start": list(load) if "load" in locals() else None,
        "eocube": eocube.__version__,
        "av": av.__version__,
        "ffmpeg_libs": libs,
        "numpy": np.__version__,
        "numba": numba.__version__,
        **versions,
    }


def fmt(x: Any, spec: str = ".1f", none: str = "n/a") -> str:
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


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table; ``align`` gives one char per column (l or r), default l then r."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
