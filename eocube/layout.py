"""How an eocube store is laid out: chunk and shard geometry, defaults, the format marker.

A cube variable is stored as (time, [band,] y, x) in chunks of all its bands; shards hold
up to :data:`SHARD_CHUNKS` chunks. The defaults below come with the measurement behind
each (docs/format.md describes the layout itself). Beyond zarr, a store has:

- the root attribute :data:`MARKER`: the store format version, whether the write
  completed, the measured quality and, for variables whose dims were transposed to
  (time, band, y, x), their original order;
- while a write is under way, the field :data:`INCOMPLETE` in every ``zarr.json``
  (:mod:`eocube.lifecycle`);
- encoded chunks waiting for their shard under :data:`STAGING` (:func:`stage_key`);
- while an append or a region write is under way, the marker's :data:`PENDING` entry
  (the store stays readable: :mod:`eocube.update`), and the previous payloads of the
  chunks it re-encodes under :data:`STAGING` (:func:`previous_key`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

MARKER = "eocube"
"""Root attribute holding the format version and whether the write completed."""
STORE_FORMAT = 1
"""Version of the store layout written in the marker."""
INCOMPLETE = "eocube_write_incomplete"
"""Extra field of every ``zarr.json`` while a write is under way (must be understood)."""
INCOMPLETE_NOTE = (
    "this eocube store's write did not finish: finish it with eocube "
    "(to_eocube(..., resume=True) or `eocube encode --resume`)"
)
STAGING = ".eocube-staging"
"""Prefix, under the store, of encoded chunks waiting for their shard."""
METADATA = "zarr.json"
PENDING = "pending"
"""Entry of the marker while an append or a region write is under way (docs/format.md,
"Appends and region writes"): what it changes and the fingerprint its resume checks."""
TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""Key of the temporary file of an interrupted atomic write (zarr's LocalStore writes
``<key>.<uuid4 hex>.partial``, then renames it): no object of the store."""


def is_temporary(key: str) -> bool:
    """Whether ``key`` is a leftover of an interrupted write (:data:`TEMPORARY`)."""
    return TEMPORARY.search(key) is not None


DEFAULT_CHUNKS = {"time": 32, "y": 256, "x": 256}
"""Default chunk per role; bands always stay in one chunk."""


DENSE_TIME_CHUNK = 128
"""Default time chunk of series sampled daily or finer (hourly reanalysis): consecutive
steps differ little, so a longer group of pictures pays (+1.1 dB at 0.3 bpppb on hourly
ERA5 t2m against 32, benchmarks/results/rd/defaults.md); sparse satellite revisits gain
0.1 dB from 118 over 32 and keep 32, which reads one date faster."""


DENSE_TIME_MAX = 256
"""Longest default time chunk of a dense series. On small grids a dense series spends the
pixel budget (:data:`CHUNK_PIXELS`) on dates, up to this: whole-cube PSNR of hourly ERA5
t2m (33 x 49 px, 744 dates) at 0.1 / 0.3 / 1 bpppb is 35.2 / 43.7 / 53.1 dB in 128-date
chunks, 37.1 / 44.3 / 53.3 in 256, 37.4 / 44.3 / 53.2 in 384 and 37.9 / 44.6 / 53.5 in
one 744-date chunk (benchmarks.rd). 256 takes most of the gain; a date then reads in the
time of a 256-date chunk (about a third of the whole cube's decode), where 744 would
make every read decode the whole cube on one thread."""


CHUNK_PIXELS = DEFAULT_CHUNKS["time"] * DEFAULT_CHUNKS["y"] * DEFAULT_CHUNKS["x"]
"""Pixels per band a default chunk holds at most. A short series (single scenes, a few
dates) spends this budget on space, in sides of 512 or 1024: a chunk still decodes in
the time of a default one, and the codec sees more of the scene. Against 256-px sides at
equal rate: +0.4 to +1.0 dB on single-date Sentinel-2 scenes, +0.3 dB on 2-step
ERA-Interim fields, +0.2 dB on Landsat 7 RGB; one 256-px tile of one date reads in 35-51
ms instead of 13-29 (benchmarks/results/rd/defaults.md, section 2b)."""


SHORT_TAIL = 4
"""A default time chunk is lengthened where the series would end in a chunk of at most
1 / SHORT_TAIL of it (:func:`without_short_tail`): 68 dates in 34 + 34, not 32 + 32 + 4.

A short last chunk pays a key frame (and its own band rotation) for a few dates. Whole
stores at equal rate against 32-date chunks (benchmarks/results/rd/defaults.md, section
2c): the 68-date NDVI series +0.4 / +0.3 dB at 0.3 / 1 bpppb in two chunks of 34 dates,
the 33-date fusets series +0.4 / +0.1 in one of 33, WorldCereal 72 x 4 +0.5 / +0.3 at
0.1 / 0.3 in two of 36; whole-cube reads 1.04-1.20 times as fast, one date as fast.
Chunks are at most 1.25 times the default."""


SPATIAL_SIDES = (1024, 512)
"""Chunk sides tried, widest first, for series too short to fill :data:`CHUNK_PIXELS`."""


SHARD_CHUNKS = {"time": 16, "y": 4, "x": 4}
"""Chunks per shard along each role, at most (so a cube is a handful of objects). Encoded
chunks wait in the store's staging area until their shard is written, so an interrupted
write loses at most the chunks being encoded, whatever the shard size."""


OTHER_CHUNK_BYTES = 16 * 2**20
"""Largest chunk of a variable stored losslessly that shares no dims with a cube."""


def is_dense_series(var: xr.DataArray, dim: Hashable) -> bool:
    """Whether ``dim`` is a datetime coordinate with a median step of one day or less."""
    coord = var.coords.get(dim)
    if coord is None or coord.size < 2 or coord.dtype.kind != "M":
        return False
    steps = np.diff(coord.values).astype("timedelta64[s]").astype(np.int64)
    return bool(0 < np.median(np.abs(steps)) <= 86400)


def time_default(var: xr.DataArray, dim: Hashable) -> int:
    return DENSE_TIME_CHUNK if is_dense_series(var, dim) else DEFAULT_CHUNKS["time"]


def dense_time_chunk(pixels: int) -> int:
    """The default time chunk of a dense series whose chunks hold ``pixels`` pixels a
    date: :data:`DENSE_TIME_CHUNK`, or longer, up to :data:`DENSE_TIME_MAX`, on grids too
    small to fill :data:`CHUNK_PIXELS` with it."""
    return max(DENSE_TIME_CHUNK, min(DENSE_TIME_MAX, CHUNK_PIXELS // max(1, pixels)))


def without_short_tail(size: int, chunk: int) -> int:
    """``chunk``, or, where ``size`` steps in chunks of it would end in a chunk of 1 to
    ``chunk // SHORT_TAIL`` steps, the chunk that spreads them over one chunk fewer:
    ``ceil(size / (size // chunk))``."""
    tail = size % chunk
    if size <= chunk or tail == 0 or tail > chunk // SHORT_TAIL:
        return chunk
    return -(-size // (size // chunk))


def spatial_default(
    var: xr.DataArray, roles: Mapping[str, Hashable], requested: Mapping[Hashable, Any]
) -> int:
    """The default y and x chunk: the largest side that keeps :data:`CHUNK_PIXELS`."""
    dim = roles["time"]
    steps = requested.get(dim, requested.get("time", time_default(var, dim)))
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps <= 0:
        return DEFAULT_CHUNKS["y"]  # chunk_shape names the bad request
    steps = min(int(steps), var.sizes[dim])
    for side in SPATIAL_SIDES:
        if steps * side * side <= CHUNK_PIXELS:
            return side
    return DEFAULT_CHUNKS["y"]


def _pixels_per_date(
    var: xr.DataArray, roles: Mapping[str, Hashable], requested: Mapping[Hashable, Any], side: int
) -> int:
    """Pixels of one date of a chunk: the y and x chunks asked for (else ``side``), cut to
    the variable's size."""
    pixels = 1
    for role in ("y", "x"):
        dim = roles[role]
        c = requested.get(dim, requested.get(role, side))
        valid = isinstance(c, int | np.integer) and not isinstance(c, bool) and c > 0
        pixels *= min(var.sizes[dim], int(c) if valid else side)
    return pixels


def chunk_shape(
    var: xr.DataArray,
    roles: Mapping[str, Hashable],
    chunks: Mapping[Hashable, int] | None,
    *,
    growing: Hashable | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Inner chunk and shard shape of a cube variable, in (time, [band,] y, x) order.

    Along ``growing`` (the dim a store created for appends grows along) the chunk is not
    cut to the variable's size and the shard holds :data:`SHARD_CHUNKS` chunks: the
    dates appended later fill them, and the chunks of the first dates are those a write
    of the whole series makes."""
    requested = dict(chunks or {})
    inner, shard = [], []
    spatial = spatial_default(var, roles, requested)
    for role, dim in roles.items():
        size = var.sizes[dim]
        if role == "band":
            if requested.get(dim, requested.get("band", size)) != size:
                raise ValueError(
                    f"variable {var.name!r}: all bands stay in one chunk ({dim}={size})"
                )
            inner.append(size)
            shard.append(size)
            continue
        if role != "time":
            default = spatial
        elif is_dense_series(var, dim):
            default = dense_time_chunk(_pixels_per_date(var, roles, requested, spatial))
        else:
            default = DEFAULT_CHUNKS["time"]
        if role == "time" and dim != growing:
            default = without_short_tail(size, default)
        c = requested.get(dim, requested.get(role, default))
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise ValueError(
                f"variable {var.name!r}: chunks for {dim!r} must be one integer, got {c!r}; "
                f"eocube stores regular chunks (the last one may be shorter). An irregularly "
                f"chunked dask array needs no chunks= at all: it is rechunked as it is written"
            )
        c = int(c)
        if c <= 0:
            raise ValueError(
                f"variable {var.name!r}: chunk size for {dim} must be positive, got {c}"
            )
        if dim == growing:
            inner.append(c)
            shard.append(c * SHARD_CHUNKS[role])
            continue
        c = min(c, size)
        inner.append(c)
        shard.append(c * min(SHARD_CHUNKS[role], math.ceil(size / c)))
    return tuple(inner), tuple(shard)


def other_chunks(
    var: xr.Variable, along: Mapping[Hashable, int], *, coordinate: bool = False
) -> tuple[int, ...] | None:
    """Chunks of a variable stored losslessly, the same whatever the input's own chunking.

    A data variable that shares dims with a cube variable (a QA layer) is chunked like
    the cube along them (``along``: dim -> the cube's chunk size), so a window reads one
    of its chunks; anything else is one chunk up to :data:`OTHER_CHUNK_BYTES`, halved
    along its longest dim until it fits.
    """
    if var.ndim == 0:
        return None
    if not coordinate and any(dim in along for dim in var.dims):
        return tuple(min(along.get(d, n), n) for d, n in zip(var.dims, var.shape, strict=True))
    chunks = list(var.shape)
    while math.prod(chunks) * var.dtype.itemsize > OTHER_CHUNK_BYTES and max(chunks) > 1:
        longest = int(np.argmax(chunks))
        chunks[longest] = math.ceil(chunks[longest] / 2)
    return tuple(max(1, c) for c in chunks)


def stage_key(name: Hashable, chunk: Sequence[int]) -> str:
    """Where the encoded chunk at grid position ``chunk`` of variable ``name`` is staged."""
    return f"{STAGING}/{name}/{'.'.join(map(str, chunk))}"


def previous_key(name: Hashable, chunk: Sequence[int]) -> str:
    """Where an update keeps the payload a chunk had before the update re-encodes it
    (an append's partial last chunk), until the update is committed."""
    return f"{STAGING}/{name}/previous/{'.'.join(map(str, chunk))}"
