"""Checks of eocube's guarantees, for eocube's tests and for code that uses eocube.

Each function checks one promise and raises ``AssertionError`` saying what broke:

- :func:`assert_chunk_roundtrip`: a block survives :func:`eocube.encode_chunk` and
  :func:`eocube.decode_chunk` as promised (bit-exact with a lossless profile, within
  ``max_abs_error`` otherwise, NaN and nodata at their places, same shape and dtype);
- :func:`assert_store_roundtrip`: a dataset survives :func:`eocube.to_eocube` and
  ``engine="eocube"`` likewise, with its coordinates, attributes and other variables
  exact;
- :func:`check_shard` / :func:`shard_objects`: the shard objects of a local store and
  their indexes (:class:`eocube.shards.ShardIndex`);
- :func:`check_backwards_compatibility`: stored payloads of older format versions decode
  to what their writer decoded, bit for bit (as numcodecs checks its codecs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eocube import metrics
from eocube.layout import is_temporary


def _same_missing(original: np.ndarray, decoded: np.ndarray, nodata: float | None) -> None:
    if original.dtype.kind == "f":
        np.testing.assert_array_equal(
            np.isnan(decoded), np.isnan(original), err_msg="NaN positions moved"
        )
    if nodata is not None and not math.isnan(nodata):
        np.testing.assert_array_equal(
            decoded == nodata, original == nodata, err_msg="nodata positions moved"
        )


def assert_values_kept(
    original: np.ndarray,
    decoded: np.ndarray,
    *,
    lossless: bool,
    max_abs_error: float | tuple[float, ...] | None = None,
    nodata: float | None = None,
) -> None:
    """``decoded`` keeps what eocube promises of ``original`` (both (T, B, Y, X) or (T, Y, X)).

    Same shape and dtype; NaN and ``nodata`` at their places; every value equal when
    ``lossless``, else every valid value within ``max_abs_error`` (one, or one per band)
    when given.
    """
    assert decoded.shape == original.shape, f"shape {decoded.shape}, not {original.shape}"
    assert decoded.dtype == original.dtype, f"dtype {decoded.dtype}, not {original.dtype}"
    if lossless:
        np.testing.assert_array_equal(decoded, original, err_msg="lossless is not bit-exact")
        return
    _same_missing(original, decoded, nodata)
    if max_abs_error is not None:
        o, d = (a if a.ndim == 4 else a[:, None] for a in (original, decoded))
        stats = metrics.ErrorStats.of(o, d, nodata)
        bound = np.broadcast_to(np.asarray(max_abs_error, dtype=np.float64), stats.max_error.shape)
        assert np.all(stats.max_error <= bound), (
            f"max abs error per band {stats.max_error.tolist()} breaks the bound {bound.tolist()}"
        )


def assert_chunk_roundtrip(
    block: np.ndarray, profile: str | None = None, **kwargs: Any
) -> tuple[bytes, np.ndarray]:
    """Encode ``block`` with ``profile`` (and :func:`eocube.encode_chunk`'s ``kwargs``),
    decode it, check what eocube promises; returns the payload and the decoded block."""
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.profiles import get_profile

    payload = encode_chunk(block, profile, **kwargs)
    decoded = decode_chunk(payload)
    expected = block if block.ndim == 4 else np.asarray(block)[:, None]
    assert_values_kept(
        np.asarray(expected),
        decoded,
        lossless=get_profile(profile).lossless,
        max_abs_error=kwargs.get("max_abs_error"),
        nodata=kwargs.get("nodata"),
    )
    return payload, decoded


def assert_store_roundtrip(
    ds: xr.Dataset, store: Any, *, storage_options: Mapping[str, Any] | None = None, **kwargs: Any
) -> tuple[Any, xr.Dataset]:
    """Write ``ds`` with :func:`eocube.to_eocube` (``kwargs``), open it with
    ``engine="eocube"``, check what eocube promises; returns the report and the store.

    Coordinates, attributes and the variables stored losslessly are identical; cube
    variables are bit-exact with ``lossless=True``, within ``max_abs_error`` when it is
    one number or one per band, and keep their NaN and nodata positions in any case.
    """
    from eocube.backend import open_dataset
    from eocube.write import to_eocube

    report = to_eocube(ds, store, storage_options=storage_options, **kwargs)
    reopened = open_dataset(store, storage_options=storage_options).load()
    video = set(report.variables)
    xr.testing.assert_identical(reopened.drop_vars(video), ds.drop_vars(video).load())
    assert reopened.attrs == ds.attrs, "dataset attributes changed"
    bound = kwargs.get("max_abs_error")
    for name in video:
        original, decoded = ds[name], reopened[name]
        assert decoded.dims == original.dims, f"{name}: dims {decoded.dims}, not {original.dims}"
        assert decoded.attrs == original.attrs, f"{name}: attributes changed"
        nodata = original.attrs.get("nodata")
        assert_values_kept(
            np.asarray(original.values),
            np.asarray(decoded.values),
            lossless=bool(kwargs.get("lossless")),
            max_abs_error=bound if not isinstance(bound, Mapping) else bound.get(name),
            nodata=None if nodata is None else float(nodata),
        )
    return report, reopened


def shard_objects(store: str | os.PathLike[str], variable: Hashable = "data") -> list[Path]:
    """The shard objects of ``variable`` in a local store, sorted."""
    root = Path(store) / str(variable) / "c"
    return sorted(p for p in root.rglob("*") if p.is_file() and not is_temporary(p.name))


def check_shard(shard: str | os.PathLike[str] | bytes, chunks: int) -> Any:
    """The :class:`~eocube.shards.ShardIndex` of a whole shard object (a path or its
    bytes) after checking it: index checksum, every chunk inside the object and intact."""
    from eocube.shards import ShardIndex

    data = shard if isinstance(shard, bytes) else Path(shard).read_bytes()
    index = ShardIndex.of_shard(data, chunks)
    damaged = index.damaged(data)
    assert not damaged, f"chunks {damaged} of the shard fail their checksum"
    return index


def check_backwards_compatibility(folder: str | os.PathLike[str]) -> list[str]:
    """Decode every ``<name>.eocb`` payload of ``folder`` and compare it, bit for bit, with
    ``<name>.npy``: what the eocube that wrote it decoded. Returns the names checked."""
    from eocube.chunk import decode_chunk

    checked = []
    for payload in sorted(Path(folder).glob("*.eocb")):
        expected = np.load(payload.with_suffix(".npy"))
        decoded = decode_chunk(payload.read_bytes())
        assert decoded.dtype == expected.dtype, f"{payload.name}: dtype {decoded.dtype}"
        np.testing.assert_array_equal(
            decoded, expected, err_msg=f"{payload.name} decodes differently than it did"
        )
        checked.append(payload.stem)
    assert checked, f"no payload (*.eocb) in {folder}"
    return checked
