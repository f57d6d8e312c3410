"""Rewriting the shards an update touches: the dask tasks of appends and region writes.

An update (:mod:`eocube.update`) writes new values into a box of a cube variable's index
space: the dates after the stored ones (an append), or a region. Each shard the box
touches is written again whole, one task per shard as :func:`eocube.encode.cube_tasks`
does, from payloads of three kinds:

- a chunk the box does not touch keeps its payload: its bytes are copied from the shard
  object as it is (the same bytes before and after the shard is rewritten);
- a chunk the box covers (up to the array's end) is encoded from the new values alone:
  the payload a write of the whole cube makes;
- a chunk the box covers in part (an append's partial last chunk) is decoded, the new
  values laid over it, and encoded again. Its previous payload is first kept under
  :func:`eocube.layout.previous_key`, so that a resumed update decodes the same payload
  whether or not its shard was already rewritten.

New and merged payloads are staged like those of a write (:func:`eocube.layout.stage_key`)
when their shard holds other chunks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.storage import StorePath

from eocube import encode, layout, lifecycle, shards
from eocube.chunk import decode_chunk
from eocube.codec import VideoCodec
from eocube.profiles import get_profile
from eocube.variables import CubeVar


@dataclass(frozen=True)
class Box:
    """Where an update writes in a cube variable: ``[start, stop)`` per stored dim
    ((time, [band,] y, x) order)."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def touches(self, lo: Sequence[int], hi: Sequence[int]) -> bool:
        """Whether ``[lo, hi)`` meets the box along every dim."""
        return all(
            a < d and c < b for a, b, c, d in zip(lo, hi, self.start, self.stop, strict=True)
        )

    def covers(self, lo: Sequence[int], hi: Sequence[int]) -> bool:
        """Whether the box holds all of ``[lo, hi)``."""
        return all(
            c <= a and b <= d for a, b, c, d in zip(lo, hi, self.start, self.stop, strict=True)
        )

    def shards(self, shard: Sequence[int]) -> list[tuple[int, ...]]:
        """Grid positions of the shards of shape ``shard`` the box touches."""
        ranges = [
            range(a // s, (b - 1) // s + 1)
            for a, b, s in zip(self.start, self.stop, shard, strict=True)
        ]
        return list(itertools.product(*ranges))


@dataclass(frozen=True)
class _Copy:
    """A chunk whose payload the rewritten shard keeps: its C-order position in the shard."""

    position: int


def chunk_kinds(
    arr_shape: Sequence[int], cv: CubeVar, box: Box, shard: Sequence[int]
) -> list[tuple[tuple[int, ...], str]]:
    """Each chunk of a shard (C order): its grid position, and ``copy``, ``new``,
    ``merge`` or ``absent`` (beyond the array's end)."""
    per = [s // c for s, c in zip(cv.shard, cv.inner, strict=True)]
    out = []
    for local in itertools.product(*(range(p) for p in per)):
        idx = tuple(s * p + i for s, p, i in zip(shard, per, local, strict=True))
        lo = [i * c for i, c in zip(idx, cv.inner, strict=True)]
        hi = [min(a + c, n) for a, c, n in zip(lo, cv.inner, arr_shape, strict=True)]
        if any(a >= n for a, n in zip(lo, arr_shape, strict=True)):
            kind = "absent"
        elif box.covers(lo, hi):
            kind = "new"
        elif box.touches(lo, hi):
            kind = "merge"
        else:
            kind = "copy"
        out.append((idx, kind))
    return out


def rewrite_tasks(
    values: xr.DataArray,
    cv: CubeVar,
    arr: zarr.Array,
    shape: Sequence[int],
    box: Box,
    stage: StorePath,
    shards_to_write: Sequence[tuple[int, ...]],
    staged: frozenset[str] = frozenset(),
    *,
    measure: bool = False,
) -> list[Any]:
    """Dask tasks rewriting the given shards of a cube variable with ``values`` (the new
    values of the box, in stored order, carrying the store's CF encoding).

    ``arr`` is the variable's array as stored (for its codec and keys), ``shape`` its shape
    once the update is committed. Chunks found in ``staged`` (keys relative to the store)
    are read back instead of encoded again. With ``measure`` the tasks measure the values
    of the box they encode (:class:`eocube.encode.Measure`).
    """
    import dask

    codec = arr.serializer
    if not isinstance(codec, VideoCodec):
        raise ValueError(f"array {arr.path!r} is not video-coded ({codec})")
    chunked = values.chunk(dict(zip(cv.order, cv.inner, strict=True)))
    encoded = xr.conventions.encode_cf_variable(chunked.variable)
    data = encoded.data
    if data.dtype != cv.dtype:
        data = data.astype(cv.dtype)
    given = chunked.data if measure else None
    spec = encode.Measure.of(encoded, cv, get_profile(codec.profile).lossless) if measure else None
    encode_task = dask.delayed(encode.encode_measured)
    load = dask.delayed(encode.load_measured)
    merge = dask.delayed(_merge_payload)
    write = dask.delayed(_rewrite_shard)
    tasks = []
    for shard in shards_to_write:
        kinds = chunk_kinds(shape, cv, box, shard)
        present = sum(kind != "absent" for _, kind in kinds)
        staging = stage if present > 1 else None
        parts: list[Any] = []
        keys = []
        for position, (idx, kind) in enumerate(kinds):
            if kind == "absent":
                parts.append(None)
                continue
            if kind == "copy":
                parts.append(_Copy(position))
                continue
            lo = [i * c for i, c in zip(idx, cv.inner, strict=True)]
            hi = [min(a + c, n) for a, c, n in zip(lo, cv.inner, shape, strict=True)]
            inside = tuple(
                slice(max(a, s) - s, min(b, e) - s)
                for a, b, s, e in zip(lo, hi, box.start, box.stop, strict=True)
            )
            key = layout.stage_key(cv.name, idx)
            keys.append(key)
            source = None if given is None else given[inside]
            # where the new values go inside the chunk
            within = tuple(
                slice(max(a, s) - a, min(b, e) - a)
                for a, b, s, e in zip(lo, hi, box.start, box.stop, strict=True)
            )
            if key in staged:
                parts.append(load(stage, key, source, spec, within))
            elif kind == "new":
                parts.append(encode_task(data[inside], codec, cv, idx, staging, key, source, spec))
            else:
                parts.append(
                    merge(arr, shard, position, data[inside], within, codec, cv, idx, stage,
                          staging, source, spec)
                )  # fmt: skip
        tasks.append(write(arr, shard, parts, stage, keys if staging else [], str(cv.name)))
    return tasks


def _previous_payload(
    arr: zarr.Array, shard: tuple[int, ...], position: int, stage: StorePath, key: str
) -> bytes | None:
    """The payload a chunk had before the update: kept under ``key`` the first time (before
    its shard is rewritten), read back from there after."""
    kept = lifecycle.read_bytes(stage, key)
    if kept is not None:
        shards.strip_checksum(kept, f"{stage}/{key}: the kept payload")
        return kept
    store = arr.store_path.store
    found = _shard_payloads(store, shards.shard_key(arr, shard), arr)
    payload = None if found is None else found[position]
    if payload is not None:
        lifecycle.write_bytes(stage, key, payload)
    return payload


def _merge_payload(
    arr: zarr.Array,
    shard: tuple[int, ...],
    position: int,
    block: np.ndarray,
    within: tuple[slice, ...],
    codec: VideoCodec,
    cv: CubeVar,
    chunk: tuple[int, ...],
    stage: StorePath,
    staging: StorePath | None,
    given: np.ndarray | None = None,
    measure: encode.Measure | None = None,
) -> encode.Encoded:
    """A chunk's stored values with ``block`` laid over them at ``within``, encoded; with
    ``measure``, measured at ``within`` against ``given`` (the values of ``block`` before
    CF encoding)."""
    previous = _previous_payload(arr, shard, position, stage, layout.previous_key(cv.name, chunk))
    if previous is None:  # the chunk held nothing but the fill value
        values = np.full(cv.inner, cv.fill, dtype=cv.dtype)
    else:
        body = shards.strip_checksum(previous, f"chunk {chunk} of {cv.name!r}")
        decoded = decode_chunk(body, shape=cv.inner)
        values = decoded.astype(cv.dtype, copy=False).reshape(cv.inner).copy()
    values[within] = np.asarray(block)
    payload = encode.encode_payload(
        values, codec, cv, chunk, staging, layout.stage_key(cv.name, chunk)
    )
    if measure is None or given is None:
        return encode.Encoded(payload)
    return encode.Encoded(payload, measure.stats(given, payload, within))


def _shard_payloads(store: Any, key: str, arr: zarr.Array) -> list[bytes | None] | None:
    """The payloads (with their crc32c) of a shard object, C order; None if absent."""
    data = shards.read_object(store, key)
    if data is None:
        return None
    per = math.prod(shards.chunks_per_shard(arr))
    index = shards.ShardIndex.of_shard(data, per, f"shard {key}")
    out: list[bytes | None] = [None] * per
    for chunk, (start, stop) in index.ranges():
        out[chunk] = data[start:stop]
    return out


def _rewrite_shard(
    arr: zarr.Array,
    shard: tuple[int, ...],
    parts: list[encode.Encoded | _Copy | None],
    stage: StorePath,
    staged: list[str],
    variable: str = "",
) -> encode.WrittenShard:
    """Write a shard from its new payloads and those it keeps (:class:`_Copy`); the object
    written (:func:`eocube.encode.write_shard`)."""
    kept: list[bytes | None] | None = None
    if any(isinstance(p, _Copy) for p in parts):
        kept = _shard_payloads(arr.store_path.store, shards.shard_key(arr, shard), arr)
    payloads = [
        (None if kept is None else kept[p.position]) if isinstance(p, _Copy) else p for p in parts
    ]
    return encode.write_shard(arr, shard, payloads, stage, staged, variable)
