"""How a dataset becomes the arrays of a store: zarr encodings and the dask tasks that write.

:func:`prepare` gives every variable its zarr encoding (video inside shards for cube
variables, zstd with checksums for the rest, regular axes as two numbers) and its
chunking; :func:`cube_tasks` encodes a cube variable one dask task per chunk (staged in
the store until its shard is written) and writes one shard per task, so memory stays
bounded by a few chunks per worker thread; :class:`EagerEncodes` does the same for a cube
in memory without dask, its encodes started before the metadata is written;
:func:`lossless_tasks` writes the rest through xarray. When the write measures, each
chunk's task also measures the chunk it encoded (:class:`Measure`) and the shard's task
reports the merged statistics (:class:`WrittenShard`, :func:`tallies`).

Within :func:`reuse_payloads` (a write with a rate target), the payloads that the rate
control's trial encodes made of sample chunks are kept, and a chunk the write encodes
again with the same values and settings takes that payload instead of a second encode.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import math
import uuid
from collections.abc import Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import StorePath

import eocube.registry  # noqa: F401  (eocube's codecs, for zarr)
from eocube import layout, lifecycle, metrics, shards, variables
from eocube.chunk import decode_chunk, encode_chunk
from eocube.codec import VideoCodec, parse_bound, parse_nodata, parse_quality
from eocube.errors import CorruptChunkError
from eocube.labels import LabelsCodec
from eocube.layout import STORE_FORMAT
from eocube.linear import LinearCodec
from eocube.lorenzo import LorenzoCodec
from eocube.profiles import get_profile
from eocube.variables import CubeVar, validate_block

logger = logging.getLogger(__name__)

# CF/xarray encoding that describes values and must survive the round trip;
# the rest (netCDF4 compression settings, source paths) describes the input file.
KEPT_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


def prepare(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, str],
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
) -> tuple[xr.Dataset, dict[Hashable, dict[str, Any]]]:
    """The dataset as written (cube variables and lossless ones chunked as stored, input
    encodings dropped) and the zarr encoding of every variable; ``profiles``,
    ``quality`` and ``bounds`` are per cube variable."""
    out = ds.copy(deep=False)
    encoding: dict[Hashable, dict[str, Any]] = {}
    for name in list(out.variables):
        var = out.variables[name]
        kept = {k: v for k, v in var.encoding.items() if k in KEPT_ENCODING}
        var.encoding = {}
        # every chunk carries a checksum (4 bytes): damaged coordinates must raise
        # CorruptChunkError on read, not decode to other dates or positions
        if var.ndim == 1 and var.dtype.kind in "iufM":
            # regular axes (pixel centres, dates) cost two numbers, others their
            # residuals from one, or zstd inside the codec (no zstd entry in zarr.json)
            kept.update(serializer=LinearCodec(), compressors=[Crc32cCodec()])
        elif categorical(ds, name, cube_vars):
            # class maps and QA layers: class table and context-coded class indices
            kept.update(serializer=LabelsCodec(), compressors=[Crc32cCodec()])
        elif name not in cube_vars and var.ndim >= 2 and var.dtype.kind in "iufmM":
            # smooth fields (2-D coordinates, angles): range-coded Lorenzo residuals
            kept.update(serializer=LorenzoCodec(), compressors=[Crc32cCodec()])
        elif name not in cube_vars:
            kept.update(compressors=[ZstdCodec(level=9), Crc32cCodec()])
        encoding[name] = kept
    # the variables stored losslessly (but indexes, which xarray writes at once) are
    # written by dask in chunks of their own, whatever the input's chunking
    lossless = lossless_part(out, cube_vars)
    for name in lossless.variables:
        var = lossless.variables[name]
        if var.chunks is not None and name not in cube_vars:
            encoding[name]["chunks"] = tuple(c[0] for c in var.chunks)
    out = lossless
    for name, cv in cube_vars.items():
        encoding[name].update(
            chunks=cv.inner,
            shards=cv.shard,
            serializer=VideoCodec(
                profile=profiles[name],
                quality=quality[name],
                nodata=cv.codec_nodata,
                max_abs_error=bounds.get(name),
            ),
            compressors=[Crc32cCodec()],
            fill_value=cv.fill,
        )
        # xarray creates the array (metadata, CF attributes) from this lazy variable but
        # does not write its values: cube_tasks does, chunk by chunk (see there). Its dask
        # graph is never computed: a token of its own spares hashing the whole cube.
        out[name] = ds[name].chunk(
            dict(zip(cv.order, cv.shard, strict=True)), token=f"eocube-{uuid.uuid4().hex}"
        )
    # the CF grid mapping spelled as GeoZarr too, for readers of either (eocube.georef)
    from eocube.georef import with_georef

    return with_georef(out, cube_vars), encoding


def categorical(ds: xr.Dataset, name: Hashable, cube_vars: Mapping[Hashable, CubeVar]) -> bool:
    """Whether a data variable beside the cube variables is a categorical layer by
    :mod:`eocube.variables`' rule (CF flag attributes, or an integer layer of at most
    ``CATEGORICAL_MAX_VALUES`` distinct values in a sample): stored with ``eocube.labels``."""
    if name not in ds.data_vars or name in cube_vars:
        return False
    var = ds[name]
    if var.ndim < 2 or var.dtype.kind not in "iuf":
        return False
    if variables.has_flag_attributes(var):
        return True
    # the roles of its dims, as the cube variables name them
    roles = {r: d for cv in cube_vars.values() for r, d in cv.roles.items() if d in var.dims}
    if "y" not in roles or "x" not in roles:
        return False
    distinct = variables.distinct_integer_values(var, roles)
    return distinct is not None and distinct <= variables.CATEGORICAL_MAX_VALUES


def lossless_part(ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar]) -> xr.Dataset:
    """The variables stored losslessly that are not indexes, as dask arrays chunked as
    stored: a resume writes them again (they cost little beside the video)."""
    along: dict[Hashable, int] = {}  # dim -> the chunk size of the first cube along it
    for cv in cube_vars.values():
        for dim, size in zip(cv.order, cv.inner, strict=True):
            along.setdefault(dim, size)
    out = ds.copy(deep=False)
    for name in list(out.variables):
        var = out.variables[name]
        if name in cube_vars or name in out.indexes or var.ndim == 0:
            continue
        chunks = layout.other_chunks(var, along, coordinate=name in out.coords)
        assert chunks is not None
        chunked = out[name].chunk(dict(zip(var.dims, chunks, strict=True)))
        if name in out.coords:
            out = out.assign_coords({name: chunked})
        else:
            out = out.assign({name: chunked})
    return out


def lossless_tasks(
    out: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar], view: Any, group: str
) -> list[Any]:
    """Dask tasks writing the variables stored losslessly that are lazy (dask)."""
    rest = out.drop_vars(list(cube_vars))
    lazy = [n for n, v in rest.variables.items() if v.chunks is not None]
    if not lazy:
        return []
    return [
        rest[lazy].to_zarr(
            view, group=group or None, mode="r+", zarr_format=3, consolidated=False, compute=False
        )
    ]


def store_marker(cube_vars: Mapping[Hashable, CubeVar], *, complete: bool) -> dict[str, Any]:
    """The root attribute :data:`~eocube.layout.MARKER` of a store of ``cube_vars``."""
    found: dict[str, Any] = {"format": STORE_FORMAT, "complete": complete}
    transposed = {str(n): [str(d) for d in cv.dims] for n, cv in cube_vars.items() if cv.transposed}
    if transposed:
        found["dims"] = transposed
    return found


def compute(tasks: Sequence[Any], progress: bool) -> tuple[Any, ...]:
    """Run the dask tasks of a write, counting them as they finish when ``progress``
    (:func:`eocube.progress.compute`: locally, on a cluster, in a notebook, or as plain
    lines in a job log); their results."""
    from eocube.progress import compute as compute_showing_progress

    return compute_showing_progress(tasks, show=progress, label="encode", unit="writes")


@dataclass(frozen=True)
class Measure:
    """How an encode task measures the chunk it encodes, for the write's report: the
    chunk decoded as a reader decodes it (the video payload, then the CF decoding of the
    stored values) against the values as they were given, with
    :class:`eocube.metrics.ErrorStats` (docs/format.md, "Metrics"), whose statistics
    merge exactly across chunks. So a write measures its quality where it encodes (on a
    cluster, in the workers), with no second pass over the source nor read back."""

    nodata: float | None  # the variable's nodata, as :func:`eocube.report.measure_errors`
    dims: tuple[Hashable, ...]
    cf: tuple[tuple[str, Any], ...]  # the CF attributes that decode the stored values
    exact: bool  # a lossless profile: the encode checked it decodes exactly

    CF_KEYS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned")

    @classmethod
    def of(cls, encoded: xr.Variable, cv: CubeVar, exact: bool) -> Measure:
        """The measure of a cube variable whose stored values are ``encoded`` (CF-encoded)."""
        cf = tuple((k, encoded.attrs[k]) for k in cls.CF_KEYS if k in encoded.attrs)
        return cls(cv.nodata, tuple(encoded.dims), cf, exact)

    def as_read(self, stored: np.ndarray) -> np.ndarray:
        """Stored values as a reader gets them (CF-decoded)."""
        if not self.cf:
            return stored
        var = xr.Variable(self.dims, stored, attrs=dict(self.cf))
        return np.asarray(xr.conventions.decode_cf_variable("values", var).values)

    def stats(
        self,
        given: np.ndarray,
        payload: bytes | None,
        within: tuple[slice, ...] | None = None,
    ) -> metrics.ErrorStats:
        """Error statistics of values given as ``given`` (before CF encoding) and stored in
        a chunk as ``payload`` (None: a chunk of fill values, not stored), at ``within`` of
        the chunk (default: from its origin, as an edge chunk is padded)."""
        given = np.asarray(given)
        if self.exact or payload is None:
            return metrics.ErrorStats.exact(given, self.nodata)
        decoded = decode_chunk(shards.strip_checksum(payload, "the chunk just encoded"))
        if decoded.ndim != given.ndim:  # (T, Y, X) variables decode as (T, 1, Y, X)
            decoded = decoded.reshape(decoded.shape[:1] + decoded.shape[2:])
        decoded = decoded[within or tuple(slice(0, n) for n in given.shape)]
        return metrics.ErrorStats.of(given, self.as_read(decoded), self.nodata)


@dataclass(frozen=True)
class Encoded:
    """What an encode task gives its shard's task: the chunk's payload (None for a chunk
    of fill values only, which zarr does not store) and, when the write measures, its
    error statistics (:class:`Measure`)."""

    payload: bytes | None
    stats: metrics.ErrorStats | None = None


@dataclass(frozen=True)
class WrittenShard:
    """A shard a task wrote (:func:`write_shard`): its store key and size in bytes, which
    the store must show when it is finished (:func:`eocube.lifecycle.check_written`; 0: a
    shard of fill values only, which is no object, as in zarr), the bytes of its chunks'
    payloads, and the error statistics of its chunks when the write measures."""

    key: str
    nbytes: int
    variable: str = ""
    payload_nbytes: int = 0  # without the chunks' crc32c
    stats: metrics.ErrorStats | None = None


@dataclass(frozen=True)
class Tally:
    """What the tasks of a write report for one variable: the bytes of its payloads and,
    when measured, the error statistics of every chunk written (merged)."""

    payload_nbytes: int
    stats: metrics.ErrorStats | None


def shards_in(results: Any) -> Iterator[WrittenShard]:
    """The :class:`WrittenShard` among task results (nested in lists or tuples)."""
    if isinstance(results, WrittenShard):
        yield results
    elif isinstance(results, list | tuple):
        for result in results:
            yield from shards_in(result)


def written_shards(results: Any) -> dict[str, int]:
    """Store key to bytes of every shard object among task results (nested in lists or
    tuples); other results (of the lossless variables' writes) are ignored."""
    return {s.key: s.nbytes for s in shards_in(results) if s.nbytes}


def tallies(results: Any) -> dict[str, Tally]:
    """Per variable, the payload bytes and merged error statistics the shard tasks
    reported (their results, nested in lists or tuples); a variable some shard of which
    was not measured has no statistics."""
    found: dict[str, Tally] = {}
    unmeasured: set[str] = set()
    for shard in shards_in(results):
        if not shard.variable:
            continue
        before = found.get(shard.variable)
        stats = shard.stats
        if stats is None:
            unmeasured.add(shard.variable)
        elif before is not None and before.stats is not None:
            stats = before.stats.merge(stats)
        payload = shard.payload_nbytes + (before.payload_nbytes if before else 0)
        found[shard.variable] = Tally(payload, stats)
    return {
        name: Tally(t.payload_nbytes, None) if name in unmeasured else t
        for name, t in found.items()
    }


def cube_tasks(
    ds: xr.Dataset,
    name: Hashable,
    cv: CubeVar,
    arr: zarr.Array,
    stage: StorePath,
    shards: Sequence[Sequence[int]] | None = None,
    staged: frozenset[str] = frozenset(),
    *,
    measure: bool = False,
    codec: VideoCodec | None = None,
    prefix: str = "",
) -> list[Any]:
    """Dask tasks writing the shards of a cube variable (all, or those given).

    One task per chunk encodes it to its payload (video and checksum: a few hundred kB
    to a few MB) and keeps it in the staging area, and one task per shard assembles the
    shard object from its payloads, writes it and drops the staged payloads. A task
    holds one chunk, never a whole shard, so memory stays bounded by a few chunks per
    worker thread whatever the shard or cube size, and the chunks of one shard encode
    in parallel (on a cluster, on several workers). Chunks found in ``staged`` (keys
    relative to the store) are read back instead of encoded again. With ``measure`` each
    chunk's task also measures its error (:class:`Measure`), which the shard's task
    reports (:func:`tallies`). With ``codec`` (settings other than the array's) and
    ``prefix`` (a folder of the store, :mod:`eocube.passes`), the shards are written under
    ``prefix`` instead of in place, and no chunk is staged: the array stays as it is.
    """
    import dask

    if codec is None:
        serializer = arr.serializer
        if not isinstance(serializer, VideoCodec):
            raise ValueError(f"array {arr.path!r} is not video-coded ({serializer})")
        codec = serializer
    var = ds[name].chunk(dict(zip(cv.order, cv.inner, strict=True)))
    encoded = xr.conventions.encode_cf_variable(var.variable)
    data = encoded.data
    if data.dtype != cv.dtype:
        data = data.astype(cv.dtype)
    blocks = data.to_delayed()
    # the values as given, for the measure: dask computes each source block once for both
    given = var.data.to_delayed() if measure else None
    spec = Measure.of(encoded, cv, get_profile(codec.profile).lossless) if measure else None
    per = [s // c for s, c in zip(cv.shard, cv.inner, strict=True)]
    if shards is None:
        counts = [math.ceil(n / s) for n, s in zip(arr.shape, cv.shard, strict=True)]
        shards = list(itertools.product(*(range(c) for c in counts)))
    encode = dask.delayed(encode_measured)
    load = dask.delayed(load_measured)
    write = dask.delayed(write_shard)
    tasks: list[Any] = []
    for shard in shards:
        chunks = [
            tuple(s * p + i for s, p, i in zip(shard, per, local, strict=True))
            for local in itertools.product(*(range(p) for p in per))
        ]
        inside = [all(i < n for i, n in zip(idx, blocks.shape, strict=True)) for idx in chunks]
        # a shard of one chunk is itself the checkpoint: nothing to stage
        staging = stage if sum(inside) > 1 and not prefix else None
        payloads: list[Any] = []
        keys = []
        for idx, present in zip(chunks, inside, strict=True):
            if not present:
                payloads.append(None)
                continue
            key = layout.stage_key(name, idx)
            source = None if given is None else given[idx]
            if key in staged:
                payloads.append(load(stage, key, source, spec))
            else:
                payloads.append(encode(blocks[idx], codec, cv, idx, staging, key, source, spec))
            keys.append(key)
        staged_keys = keys if staging else []
        tasks.append(write(arr, tuple(shard), payloads, stage, staged_keys, str(name), prefix))
    return tasks


def in_memory(var: xr.DataArray) -> bool:
    """Whether the values of ``var`` are in memory (numpy): neither dask-backed nor
    lazily read from a file."""
    return var.chunks is None and bool(var.variable._in_memory)


def encodes_now(ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar], progress: bool) -> bool:
    """Whether :class:`EagerEncodes` may write the cube variables: all in memory
    (:func:`in_memory`), no dask scheduler configured (no ``dask.distributed`` client, no
    other scheduler), and no progress bar asked for (dask draws it)."""
    import dask.base

    if progress or dask.base.get_scheduler() is not None:
        return False
    return all(in_memory(ds[name]) for name in cube_vars)


@dataclass
class _Shard:
    """One shard of :class:`EagerEncodes`: its chunks' payloads as they come."""

    name: Hashable
    index: tuple[int, ...]
    payloads: list[Encoded | None]
    keys: list[str | None]
    staging: bool
    left: int
    staged: list[str] = field(default_factory=list)


class EagerEncodes:
    """The chunks of in-memory cube variables, encoded from the start of a write.

    The chunk encodes (the video codec, outside the GIL) start on a pool of as many
    threads as dask's threaded scheduler would use, before the store's metadata is
    written, so that xarray and zarr write the metadata and the other variables while
    the codecs run. :meth:`write` then stages each payload as it comes (when its shard
    holds other chunks, as :func:`cube_tasks` does) and writes each shard when its last
    chunk is in. The payloads and shard objects are those :func:`cube_tasks` makes.
    Payloads wait in memory only until their shard is written; the cube is in memory
    already (:func:`encodes_now`), and its payloads are smaller than it. With ``measure``
    each encode also measures its chunk (:class:`Measure`).
    """

    def __init__(
        self,
        ds: xr.Dataset,
        cube_vars: Mapping[Hashable, CubeVar],
        encoding: Mapping[Hashable, Mapping[str, Any]],
        *,
        measure: bool = False,
    ) -> None:
        import dask.system

        self._pool = ThreadPoolExecutor(
            max_workers=max(1, dask.system.CPU_COUNT), thread_name_prefix="eocube-encode"
        )
        self._shards: list[_Shard] = []
        self._futures: dict[Future[Encoded], tuple[_Shard, int]] = {}
        try:
            for name, cv in cube_vars.items():
                self._submit(ds, name, cv, encoding[name]["serializer"], measure)
        except BaseException:
            self.close()
            raise

    def _submit(
        self, ds: xr.Dataset, name: Hashable, cv: CubeVar, codec: VideoCodec, measure: bool
    ) -> None:
        # as cube_tasks: CF-encoded, then each block in the stored dtype
        encoded = xr.conventions.encode_cf_variable(ds[name].variable)
        data = np.asarray(encoded.data)
        given = np.asarray(ds[name].values) if measure else None
        spec = Measure.of(encoded, cv, get_profile(codec.profile).lossless) if measure else None
        inner = cv.inner
        blocks = [math.ceil(n / c) for n, c in zip(data.shape, inner, strict=True)]
        per = [s // c for s, c in zip(cv.shard, inner, strict=True)]
        counts = [math.ceil(n / s) for n, s in zip(data.shape, cv.shard, strict=True)]
        for shard in itertools.product(*(range(c) for c in counts)):
            chunks = [
                tuple(s * p + i for s, p, i in zip(shard, per, local, strict=True))
                for local in itertools.product(*(range(p) for p in per))
            ]
            inside = [all(i < n for i, n in zip(idx, blocks, strict=True)) for idx in chunks]
            job = _Shard(
                name=name,
                index=tuple(shard),
                payloads=[None] * len(chunks),
                keys=[
                    layout.stage_key(name, idx) if ok else None
                    for idx, ok in zip(chunks, inside, strict=True)
                ],
                # a shard of one chunk is itself the checkpoint: nothing to stage
                staging=sum(inside) > 1,
                left=sum(inside),
            )
            self._shards.append(job)
            for pos, (idx, ok) in enumerate(zip(chunks, inside, strict=True)):
                if not ok:
                    continue
                region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, inner, strict=True))
                future = self._pool.submit(
                    _encode_region,
                    data[region],
                    codec,
                    cv,
                    idx,
                    None if given is None else given[region],
                    spec,
                )
                self._futures[future] = (job, pos)

    def write(self, group: zarr.Group, stage: StorePath) -> list[WrittenShard]:
        """Stage the payloads as they come and write every shard (into ``group``); the
        shard objects written."""
        written: list[WrittenShard] = []
        arrays = {}
        for job in self._shards:
            if job.name not in arrays:
                arr = group[str(job.name)]
                assert isinstance(arr, zarr.Array)
                arrays[job.name] = arr
        for future in as_completed(self._futures):
            job, pos = self._futures[future]
            encoded = future.result()
            job.payloads[pos] = encoded
            key = job.keys[pos]
            if job.staging and encoded.payload is not None and key is not None:
                lifecycle.write_bytes(stage, key, encoded.payload)
                job.staged.append(key)
            job.left -= 1
            if job.left == 0:
                arr = arrays[job.name]
                written.append(
                    write_shard(arr, job.index, job.payloads, stage, job.staged, str(job.name))
                )
                job.payloads = []
        return written

    def close(self) -> None:
        """Drop the encodes not started (a refusal or an interruption)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _encode_region(
    block: np.ndarray,
    codec: VideoCodec,
    cv: CubeVar,
    chunk: tuple[int, ...],
    given: np.ndarray | None,
    measure: Measure | None,
) -> Encoded:
    """:func:`encode_measured` of a block of the CF-encoded values, in the stored dtype."""
    return encode_measured(
        block.astype(cv.dtype, copy=False), codec, cv, chunk, None, "", given, measure
    )


_PAYLOADS: dict[tuple[Any, ...], bytes] | None = None
"""Payloads of trial encodes, by :func:`_payload_key`, while :func:`reuse_payloads` runs."""


@contextlib.contextmanager
def reuse_payloads() -> Iterator[None]:
    """Keep the payloads of trial encodes (:func:`encode_block` with ``keep``) for the
    write inside this block: a chunk encoded again with the same values and settings
    takes the kept payload. Payloads of the write itself are not kept (memory stays
    bounded by the sample). In-process only: dask.distributed workers encode anew."""
    global _PAYLOADS
    outer = _PAYLOADS
    if outer is None:
        _PAYLOADS = {}
    try:
        yield
    finally:
        _PAYLOADS = outer


def _payload_key(
    block: np.ndarray,
    profile: str,
    quality: float | None,
    nodata: float | None,
    max_abs_error: Any,
    wavelet: str | None = None,
) -> tuple[Any, ...]:
    """Everything the payload of :func:`eocube.chunk.encode_chunk` depends on."""
    q = parse_quality(quality)
    bound = parse_bound(max_abs_error)
    return (
        profile,
        wavelet,
        None if q is None else float(q),
        parse_nodata(nodata),
        bound if bound is None or isinstance(bound, float) else tuple(bound),
        block.dtype.str,
        block.shape,
        hashlib.blake2b(np.ascontiguousarray(block).view(np.uint8).data, digest_size=20).digest(),
    )


def encode_block(
    block: np.ndarray,
    profile: str,
    *,
    quality: float | None,
    nodata: float | None,
    max_abs_error: Any,
    keep: bool = False,
    wavelet: str | None = None,
) -> bytes:
    """:func:`eocube.chunk.encode_chunk` of a C-contiguous block, or the payload kept by
    :func:`reuse_payloads` for the same block and settings; ``keep`` keeps this one.
    ``wavelet`` overrides the profile's (the rate control's video-only trials)."""
    cache = _PAYLOADS
    kwargs: dict[str, Any] = {"quality": quality, "nodata": nodata}
    kwargs.update(max_abs_error=max_abs_error, wavelet=wavelet)
    if cache is None:
        return encode_chunk(block, profile, **kwargs)
    key = _payload_key(block, profile, quality, nodata, max_abs_error, wavelet)
    payload = cache.get(key)
    if payload is None:
        payload = encode_chunk(block, profile, **kwargs)
        if keep:
            cache[key] = payload
    return payload


def chunk_as_written(
    block: np.ndarray, cv: CubeVar, profile: str, chunk: tuple[int, ...] | None = None
) -> np.ndarray | None:
    """A chunk of ``cv`` as the writer encodes it: checked, an edge chunk padded with the
    fill value (as zarr pads it), C-contiguous; None if it holds nothing but the fill
    value (zarr writes no such chunk either)."""
    block = validate_block(np.asarray(block), cv.name, profile, chunk=chunk)
    if block.shape != cv.inner:  # an edge chunk: zarr pads it with the fill value
        padded = np.full(cv.inner, cv.fill, dtype=block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    empty = np.isnan(block).all() if isinstance(cv.fill, float) else (block == cv.fill).all()
    if empty:
        return None
    return np.ascontiguousarray(block)


def encode_payload(
    block: np.ndarray,
    codec: VideoCodec,
    cv: CubeVar,
    chunk: tuple[int, ...],
    stage: StorePath | None = None,
    stage_key: str = "",
) -> bytes | None:
    """One chunk as zarr stores it inside a shard (eocube.video, then crc32c); None if
    it holds nothing but the fill value (zarr writes no such chunk either). With
    ``stage`` the payload is also kept there until its shard is written."""

    written = chunk_as_written(block, cv, codec.profile, chunk)
    if written is None:
        return None
    payload = encode_block(
        written,
        codec.profile,
        quality=codec.quality,
        nodata=codec.nodata,
        max_abs_error=codec.max_abs_error,
    )
    payload = shards.with_checksum(payload)
    if stage is not None:
        lifecycle.write_bytes(stage, stage_key, payload)
    return payload


def load_staged(stage: StorePath, key: str) -> bytes:
    """A staged payload (checked against its crc32c)."""
    data = lifecycle.read_bytes(stage, key)
    if data is None:
        raise CorruptChunkError(f"{stage}/{key}: the staged chunk vanished during the resume")
    try:
        shards.strip_checksum(data, f"{stage}/{key}")
    except CorruptChunkError as exc:
        raise CorruptChunkError(
            f"{exc}: the staged chunk is damaged; delete it and resume again"
        ) from None
    return data


def encode_measured(
    block: np.ndarray,
    codec: VideoCodec,
    cv: CubeVar,
    chunk: tuple[int, ...],
    stage: StorePath | None,
    stage_key: str,
    given: np.ndarray | None,
    measure: Measure | None,
) -> Encoded:
    """:func:`encode_payload`, and with ``measure`` the chunk's error statistics against
    ``given`` (its values before CF encoding)."""
    payload = encode_payload(block, codec, cv, chunk, stage, stage_key)
    if measure is None or given is None:
        return Encoded(payload)
    return Encoded(payload, measure.stats(given, payload))


def load_measured(
    stage: StorePath,
    key: str,
    given: np.ndarray | None,
    measure: Measure | None,
    within: tuple[slice, ...] | None = None,
) -> Encoded:
    """:func:`load_staged` (a resume), measured as :func:`encode_measured` measures (at
    ``within`` of the chunk: :meth:`Measure.stats`)."""
    payload = load_staged(stage, key)
    if measure is None or given is None:
        return Encoded(payload)
    return Encoded(payload, measure.stats(given, payload, within))


def write_shard(
    arr: zarr.Array,
    shard: tuple[int, ...],
    parts: Sequence[bytes | Encoded | None],
    stage: StorePath,
    staged: list[str],
    variable: str = "",
    prefix: str = "",
) -> WrittenShard:
    """Write one shard object (:func:`eocube.shards.assemble`) from its chunks' payloads
    (or :class:`Encoded` chunks), then drop the chunks staged for it; a shard of fill
    values only is no object, as in zarr (nor one left over). The shard written
    (``nbytes`` 0: no object), with the payload bytes and the merged error statistics
    of its chunks when they were all measured. With ``prefix``, the shard goes under
    that folder of the store (``stage``) instead of in place."""
    payloads = [p.payload if isinstance(p, Encoded) else p for p in parts]
    # chunks given as bytes were not encoded now (an update keeps them): not measured
    measured = [p.stats for p in parts if isinstance(p, Encoded)]
    stats = None
    if measured and all(m is not None for m in measured):
        stats = functools.reduce(metrics.ErrorStats.merge, measured)  # type: ignore[arg-type]
    store = arr.store_path.store
    key = shards.shard_key(arr, shard)
    if prefix:
        root = stage.path.strip("/")
        relative = key[len(root) :].lstrip("/") if root else key
        key = "/".join(p for p in (root, prefix, relative) if p)
    data = shards.assemble(payloads)
    if data is None:
        if zarr.core.sync.sync(store.exists(key)):
            zarr.core.sync.sync(store.delete(key))
    else:
        zarr.core.sync.sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
    for staged_key in staged:
        zarr.core.sync.sync(stage.store.delete(f"{stage.path}/{staged_key}".lstrip("/")))
    # as the shard index counts them (eocube.shards.payload_nbytes): without their crc32c
    payload_nbytes = sum(len(p) - shards.CHECKSUM_NBYTES for p in payloads if p is not None)
    if data is None:
        logger.debug("shard %s holds fill values only: no object", key)
    else:
        logger.debug("wrote shard %s: %d bytes (%d of payload)", key, len(data), payload_nbytes)
    return WrittenShard(key, 0 if data is None else len(data), variable, payload_nbytes, stats)
