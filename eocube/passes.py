"""The correction passes of a write to a target, staged in the store and promoted.

A write to ``target_bpppb`` or ``target_psnr`` encodes the cube once, measures it, and
corrects a miss at most :data:`eocube.ratecontrol.MAX_CORRECTIONS` times, keeping the
best pass (:func:`eocube.ratecontrol.write_to_target`). The first pass is written in place
and the store is complete (readable) from then on; each correction pass writes only the
shards of the cube variables, under :func:`pass_prefix` in the store's staging area,
measured as they are encoded (:class:`eocube.encode.Measure`), so the pass is judged
without being read back. The pass kept then replaces the first one
(:func:`promote`: its shards move into place, a rename on a local disk and a copy on
object stores, and the codec settings in the metadata follow), or the staged passes
are dropped (:func:`discard`). So whichever pass is kept, the cube is encoded at most
``1 + MAX_CORRECTIONS`` times: keeping an earlier pass costs no encode.

While a pass is promoted, the store is marked unfinished (no reader opens a mix of two
passes); an interrupted promotion is finished by ``to_eocube(..., resume=True)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import xarray as xr
import zarr
from zarr.storage import StorePath

from eocube import encode, lifecycle
from eocube.codec import VideoCodec
from eocube.layout import MARKER, METADATA, STAGING
from eocube.variables import CubeVar

PASSES = f"{STAGING}/passes"
"""Folder of the staging area holding the shards of correction passes."""


def pass_prefix(number: int) -> str:
    """Where, relative to the store's root, correction pass ``number`` writes its shards."""
    return f"{PASSES}/{number}"


@dataclass(frozen=True)
class StagedPass:
    """A correction pass written under :func:`pass_prefix`: its number, what its tasks
    reported per cube variable, and the store key (in place) and size of each shard it
    made (0: a shard of fill values only, which is no object)."""

    number: int
    tallies: Mapping[str, encode.Tally]
    shards: Mapping[str, int]

    @property
    def shard_nbytes(self) -> int:
        """Bytes of the pass's shard objects."""
        return sum(self.shards.values())


def codec_of(
    cv: CubeVar,
    profile: str,
    quality: float | None,
    bound: float | tuple[float, ...] | None,
) -> VideoCodec:
    """The codec of a cube variable at a pass's settings (as :func:`eocube.encode.prepare`
    makes it)."""
    return VideoCodec(profile=profile, quality=quality, nodata=cv.codec_nodata, max_abs_error=bound)


def write_pass(
    ds: xr.Dataset,
    real: StorePath,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, str],
    quality: Mapping[Hashable, float | None],
    bounds: Mapping[Hashable, float | tuple[float, ...]],
    number: int,
    *,
    progress: bool,
    measure: bool,
) -> StagedPass:
    """Encode the cube variables of ``ds`` at ``quality`` and ``bounds`` into shards under
    :func:`pass_prefix` of the finished store ``real``, which stays as it is."""
    group = zarr.open_group(real, mode="r", zarr_format=3)
    prefix = pass_prefix(number)
    tasks: list[Any] = []
    for name, cv in cube_vars.items():
        arr = group[str(name)]
        assert isinstance(arr, zarr.Array)
        codec = codec_of(cv, profiles[name], quality[name], bounds.get(name))
        tasks.extend(
            encode.cube_tasks(ds, name, cv, arr, real, measure=measure, codec=codec, prefix=prefix)
        )
    results = encode.compute(tasks, progress)
    staged = {s.key: s.nbytes for s in encode.shards_in(results)}
    # the same check as a write's: every shard a task reported is in the store
    lifecycle.check_written(real, {k: n for k, n in staged.items() if n})
    root = real.path.strip("/")
    start = len(lifecycle.join_keys(root, prefix)) + 1
    in_place = {lifecycle.join_keys(root, key[start:]): nbytes for key, nbytes in staged.items()}
    return StagedPass(number, encode.tallies(results), in_place)


def promote(
    real: StorePath,
    staged: StagedPass,
    cube_vars: Mapping[Hashable, CubeVar],
    codecs: Mapping[Hashable, VideoCodec],
    per_array_metadata: bool,
    fingerprint: Mapping[str, Any],
) -> None:
    """Put the shards of ``staged`` in place of the store's, with ``codecs`` (the pass's
    settings) in the metadata, and drop every staged pass."""
    root = lifecycle.read_document(real)
    assert root is not None
    marker = dict((root.get("attributes") or {}).get(MARKER) or {})
    members = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for name, codec in codecs.items():
        _set_video_codec(members.get(str(name)), codec)
        if per_array_metadata:
            key = f"{name}/{METADATA}"
            doc = lifecycle.read_document(real, key)
            if doc is not None:
                _set_video_codec(doc, codec)
                lifecycle.write_document(real, key, doc)
    # unfinished while shards of two passes lie in place; resume=True finishes it
    view = lifecycle.UnfinishedView(
        real.store, details={"fingerprint": dict(fingerprint)}, root=real.path
    )
    lifecycle.write_document(StorePath(view, real.path), METADATA, root)
    prefix = lifecycle.join_keys(real.path.strip("/"), pass_prefix(staged.number))
    base = len(real.path.strip("/"))
    for key, nbytes in staged.shards.items():
        relative = key[base:].lstrip("/")
        if nbytes:
            lifecycle.move(real.store, lifecycle.join_keys(prefix, relative), key)
        else:  # a shard of fill values only: no object, as in zarr
            lifecycle.delete(real, [key] if zarr.core.sync.sync(real.store.exists(key)) else [])
    written = {k: n for k, n in staged.shards.items() if n}
    marker["complete"] = True
    lifecycle.finish(real, marker, per_array_metadata, written=written)


def discard(real: StorePath) -> None:
    """Drop the shards of every staged correction pass."""
    lifecycle.delete(real, lifecycle.list_keys(real, PASSES))
    lifecycle.remove_empty_staging(real)


def _set_video_codec(meta: Any, codec: VideoCodec) -> None:
    """Replace, in place, the ``eocube.video`` codec of an array's metadata (inside its
    sharding codec) with ``codec``."""
    if isinstance(meta, list):
        for i, item in enumerate(meta):
            if isinstance(item, dict) and item.get("name") == "eocube.video":
                meta[i] = codec.to_dict()
            else:
                _set_video_codec(item, codec)
    elif isinstance(meta, dict):
        for value in meta.values():
            _set_video_codec(value, codec)
