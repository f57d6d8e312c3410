"""What a write made: :class:`EncodeReport`, measured chunk by chunk, and kept in the store.

PSNR and max error follow :mod:`eocube.metrics` (docs/format.md, "Metrics"), measured by
the encode tasks as they encode (:class:`eocube.encode.Measure`), or else by reading the
store back a chunk at a time (bounded memory). The measured quality is
recorded in the store's marker, for ``eocube info``, ``eocube verify`` and catalogs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import StorePath

from eocube import layout, lifecycle, metrics
from eocube.layout import MARKER

if TYPE_CHECKING:
    from eocube.encode import Tally
    from eocube.variables import CubeVar


@dataclass(frozen=True)
class VariableReport:
    """Size and quality of one cube variable.

    ``psnr`` and ``max_abs_error`` follow :mod:`eocube.metrics` (valid values only);
    ``error_bound`` is the ``max_abs_error`` asked for, if any; ``quality`` the crf used.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    profile: str
    quality: float | None
    payload_nbytes: int
    bpppb: float
    psnr: float | None = None
    psnr_per_band: tuple[float, ...] | None = None
    max_abs_error: float | None = None
    max_abs_error_per_band: tuple[float, ...] | None = None
    error_bound: float | tuple[float, ...] | None = None


@dataclass(frozen=True)
class EncodeReport:
    """What :func:`write.to_eocube` wrote.

    Attributes
    ----------
    store : str
        Where it was written.
    nbytes : int
        Bytes of every object of the store (metadata, coordinates, indexes included).
    original_nbytes : int
        Bytes of the cube variables in their original dtype.
    values : int
        Number of values (T·B·Y·X summed over cube variables).
    bpppb : float
        ``nbytes`` × 8 / ``values``.
    compression_ratio : float
        ``original_nbytes / nbytes``.
    variables : dict of str to VariableReport
        Per cube variable: payload bytes, bpppb of its payload, and when measured
        PSNR (docs/format.md, "Metrics") and max abs error.
    seconds : float
        Wall time of the whole call.
    control : str
        The quality control used (``crf``, ``target_psnr``, ...).
    passes : int
        Times the cube was encoded (1, or more when a target was corrected).
    trials : int
        Trial encodes of the sample made by the search.
    stored_losslessly : dict of str to str
        The other data variables, stored losslessly, and why each is not coded as video
        (not a cube by its dims, or a categorical layer).
    lossless_codecs : dict of str to str
        The codec that stores each of them (``eocube.labels`` for a categorical layer,
        else ``zstd``, or what the store names), as :func:`lossless_codec` reads it.
    """

    store: str
    nbytes: int
    original_nbytes: int
    values: int
    bpppb: float
    compression_ratio: float
    variables: dict[str, VariableReport] = field(default_factory=dict)
    seconds: float = 0.0
    control: str = "default"
    passes: int = 1
    trials: int = 0
    stored_losslessly: dict[str, str] = field(default_factory=dict)
    lossless_codecs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"{self.store}: {self.nbytes} bytes, {self.bpppb:.4f} bpppb, "
            f"ratio {self.compression_ratio:.1f}, {self.seconds:.1f} s "
            f"({self.control}, {self.passes} pass(es), {self.trials} trial encodes)",
            f"  {'variable':16s} {'profile':20s} {'crf':>6s} {'payload B':>10s} {'bpppb':>8s} "
            f"{'PSNR dB':>8s} {'max err':>10s}",
        ]
        for v in self.variables.values():
            psnr = "-" if v.psnr is None else f"{v.psnr:.2f}"
            err = "-" if v.max_abs_error is None else f"{v.max_abs_error:.4g}"
            crf = "-" if v.quality is None else f"{v.quality:g}"
            lines.append(
                f"  {v.name:16s} {v.profile:20s} {crf:>6s} {v.payload_nbytes:10d} "
                f"{v.bpppb:8.4f} {psnr:>8s} {err:>10s}"
            )
        for name, why in self.stored_losslessly.items():
            codec = self.lossless_codecs.get(name, "zstd")
            lines.append(f"  {name:16s} stored losslessly ({codec}): {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for JSON)."""
        return asdict(self)


def lossless_codec(arr: zarr.Array) -> str:
    """The name of the codec that compresses a losslessly stored array: its serializer
    when that is not plain ``bytes`` (``eocube.labels``, ``eocube.linear``), else its
    first compressor (``zstd``), else ``bytes`` (stored as they are)."""
    codecs: list[dict[str, Any]] = list(arr.metadata.to_dict().get("codecs", []))  # type: ignore[arg-type]
    while codecs and codecs[0]["name"] == "sharding_indexed":
        codecs = list(codecs[0]["configuration"]["codecs"])
    names = [str(c["name"]) for c in codecs if c["name"] not in ("bytes", "crc32c")]
    return names[0] if names else "bytes"


def lossless_codecs(group: zarr.Group, names: Iterable[str]) -> dict[str, str]:
    """:func:`lossless_codec` of each of ``names`` in ``group``."""
    out = {}
    for name in names:
        arr = group[name]
        assert isinstance(arr, zarr.Array)
        out[name] = lossless_codec(arr)
    return out


def overhead(report: EncodeReport) -> int:
    return report.nbytes - sum(v.payload_nbytes for v in report.variables.values())


def make_report(
    ds: xr.Dataset,
    store_path: StorePath,
    cube_vars: Mapping[Hashable, CubeVar],
    others: Mapping[str, str],
    profile: str,
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    seconds: float,
    measure: bool,
    *,
    tallies: Mapping[str, Tally] | None = None,
    nbytes: int | None = None,
) -> EncodeReport:
    """The report of a store written from ``ds``.

    ``tallies``: what the write's tasks reported per cube variable (payload bytes, and
    error statistics measured as they encoded); a variable without them is measured by
    reading the store back, chunk by chunk, and its payload bytes read from the shard
    indexes. ``nbytes``: the store's size, when it is not the size of ``store_path`` (a
    correction pass staged: :mod:`eocube.passes`).
    """
    tallies = tallies or {}
    group = zarr.open_group(store_path, mode="r", zarr_format=3)
    nbytes = store_nbytes(store_path) if nbytes is None else nbytes
    values = sum(ds[n].size for n in cube_vars)
    original = sum(ds[n].size * ds[n].dtype.itemsize for n in cube_vars)
    reopened = None
    unmeasured = [n for n in cube_vars if _tally_stats(tallies, n) is None]
    if measure and unmeasured:
        from eocube.backend import open_dataset

        reopened = open_dataset(store_path)
    from eocube.shards import payload_nbytes

    reports = {}
    for name, cv in cube_vars.items():
        var = ds[name]
        tally = tallies.get(str(name))
        payload = payload_nbytes(group[str(name)]) if tally is None else tally.payload_nbytes
        rep: dict[str, Any] = {}
        stats = _tally_stats(tallies, name) if measure else None
        if stats is None and reopened is not None:
            stats = measure_errors(var, reopened[name].transpose(*cv.order), cv)
        if stats is not None:
            rep = {
                "psnr": stats.psnr(),
                "psnr_per_band": tuple(float(p) for p in stats.psnr_per_band()),
                "max_abs_error": stats.max_abs_error(),
                "max_abs_error_per_band": tuple(float(e) for e in stats.max_error),
            }
        bound = bounds.get(name)
        reports[str(name)] = VariableReport(
            name=str(name),
            shape=tuple(ds[name].transpose(*cv.dims).shape),
            dtype=str(var.dtype),
            profile=profile,
            quality=quality[name],
            payload_nbytes=payload,
            bpppb=metrics.bpppb(payload, var.shape),
            error_bound=bound,
            **rep,
        )
    if reopened is not None:
        reopened.close()
    return EncodeReport(
        store=str(store_path),
        nbytes=nbytes,
        original_nbytes=int(original),
        values=int(values),
        bpppb=nbytes * 8 / values,
        compression_ratio=original / nbytes if nbytes else math.inf,
        variables=reports,
        seconds=seconds,
        stored_losslessly=dict(others),
        lossless_codecs=lossless_codecs(group, others),
    )


def _tally_stats(tallies: Mapping[str, Tally], name: Hashable) -> metrics.ErrorStats | None:
    tally = tallies.get(str(name))
    return None if tally is None else tally.stats


def _as_tbyx(a: np.ndarray, cv: CubeVar) -> np.ndarray:
    return a if "band" in cv.roles else a[:, None]


def measure_errors(
    original: xr.DataArray, decoded: xr.DataArray, cv: CubeVar
) -> metrics.ErrorStats:
    """Error statistics chunk by chunk, so memory stays bounded whatever the cube's size.

    Both arrays are in (time, [band,] y, x) order."""
    counts = [math.ceil(n / s) for n, s in zip(original.shape, cv.inner, strict=True)]
    stats = None
    for idx in itertools.product(*(range(c) for c in counts)):
        region = {
            dim: slice(i * s, (i + 1) * s)
            for dim, i, s in zip(original.dims, idx, cv.inner, strict=True)
        }
        piece = metrics.ErrorStats.of(
            _as_tbyx(np.asarray(original.isel(region).values), cv),
            _as_tbyx(np.asarray(decoded.isel(region).values), cv),
            cv.nodata,
        )
        stats = piece if stats is None else stats.merge(piece)
    assert stats is not None
    return stats


def store_nbytes(store_path: StorePath) -> int:
    return int(zarr.core.sync.sync(store_path.store.getsize_prefix(store_path.path)))


def _bound_entry(bound: float | tuple[float, ...] | None) -> dict[str, Any]:
    if bound is None:
        return {}
    return {"error_bound": list(bound) if isinstance(bound, tuple) else bound}


def record_quality(store_path: StorePath, report: EncodeReport) -> None:
    """Keep the measured quality in the store, for ``eocube info``, ``verify`` and catalogs."""
    measured = {
        name: {
            # to a 1e-4 dB and 6 digits: verify allows 0.1 dB, and on small cubes
            # zarr.json is much of the store
            "psnr": _finite_or_str(None if v.psnr is None else round(v.psnr, 4)),
            "max_abs_error": _finite_or_str(v.max_abs_error),
            "payload_bpppb": float(f"{v.bpppb:.6g}"),
            # absent when no bound was asked (a null cost 19 bytes a variable)
            **_bound_entry(v.error_bound),
        }
        for name, v in report.variables.items()
        if v.psnr is not None
    }
    if not measured:
        return
    root = lifecycle.read_document(store_path)
    assert root is not None
    marker = dict((root.get("attributes") or {}).get(MARKER) or {})
    marker["quality"] = measured
    root.setdefault("attributes", {})[MARKER] = marker
    lifecycle.write_document(store_path, layout.METADATA, root)


def _finite_or_str(value: float | None) -> float | str | None:
    # JSON has no inf: an exact (lossless) PSNR is recorded as the string "inf"
    if value is None or math.isfinite(value):
        return value
    return str(value)
