"""The ``.eocube`` accessor of xarray objects, registered when eocube is imported.

- ``ds.eocube.to_eocube(store, ...)`` (and ``da.eocube.to_eocube``) is
  :func:`eocube.to_eocube` of the object: writes, appends (``append_dim=``) and region
  writes (``region=``) alike;
- on a dataset opened from an eocube store, ``ds.eocube.info`` says how each variable is
  stored (profile, quality, error bound, chunks) and the quality the store recorded,
  without reading anything.

This module imports xarray alone: the writer, the reader and the codecs come with the
first call that needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

_MARKER = "eocube"
"""The root attribute of an eocube store, which an opened dataset keeps in its encoding
(the value of :data:`eocube.layout.MARKER`, spelled here so that this module imports
nothing of eocube's)."""


@dataclass(frozen=True)
class VariableInfo:
    """How one variable of an opened eocube store is stored.

    ``profile``, ``crf`` and ``max_abs_error`` are those of its video codec (None for a
    variable stored losslessly with zarr's codecs); ``recorded`` is the quality the store
    recorded for it when written (PSNR, max abs error, payload bpppb), if measured.
    """

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...] | None
    profile: str | None = None
    crf: float | None = None
    max_abs_error: float | tuple[float, ...] | None = None
    recorded: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreInfo:
    """What an opened eocube store says of itself: its format version, whether an update
    (append or region write) of it is under way, and each data variable's
    :class:`VariableInfo`."""

    format: int | None
    pending: str | None
    variables: dict[str, VariableInfo]

    def __str__(self) -> str:
        lines = [f"eocube store, format {self.format}"]
        if self.pending:
            lines[0] += f" ({self.pending} under way: it reads as before it)"
        for v in self.variables.values():
            shape = "x".join(map(str, v.shape))
            line = f"  {v.name:16s} {shape:18s} {v.dtype:8s} chunks {v.chunks}"
            if v.profile is None:
                line += "  stored losslessly"
            else:
                crf = "-" if v.crf is None else f"{v.crf:g}"
                line += f"  {v.profile} crf={crf}"
                if v.max_abs_error is not None:
                    line += f" max_abs_error={v.max_abs_error}"
                if v.recorded.get("psnr") is not None:
                    line += f"  recorded PSNR {v.recorded['psnr']} dB"
            lines.append(line)
        return "\n".join(lines)


def _video_codec(encoding: Mapping[str, Any]) -> Any:
    """The video codec in an opened variable's encoding, or None."""
    from eocube.codec import VideoCodec

    # the reader keeps eocube's codec under its own key (so that copies are plain zarr);
    # earlier readers left it as zarr's serializer
    for key in ("eocube_codec", "serializer"):
        codec = encoding.get(key)
        if isinstance(codec, VideoCodec):
            return codec
    return None


def _tuple(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


class _Accessor:
    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    def to_eocube(self, store: Any, **kwargs: Any) -> Any:
        """Write this object to an eocube store: :func:`eocube.to_eocube` (same keyword
        arguments; ``append_dim=`` appends, ``region=`` writes a part)."""
        from eocube.write import to_eocube

        return to_eocube(self._obj, store, **kwargs)


@xr.register_dataset_accessor("eocube")
class DatasetAccessor(_Accessor):
    """``ds.eocube``: write a dataset to an eocube store, or describe a dataset opened from
    one."""

    _obj: xr.Dataset

    def _marker(self) -> dict[str, Any]:
        marker = self._obj.encoding.get(_MARKER)
        if not isinstance(marker, Mapping):
            raise ValueError(
                "this dataset was not opened from an eocube store (its encoding has no "
                f"{_MARKER!r} marker): open one with xr.open_dataset(path, engine='eocube')"
            )
        return dict(marker)

    @property
    def info(self) -> StoreInfo:
        """How the store this dataset was opened from holds each data variable, and the
        quality it recorded (nothing is read).

        Raises
        ------
        ValueError
            If the dataset was not opened from an eocube store.
        """
        marker = self._marker()
        recorded = marker.get("quality") or {}
        variables = {}
        for name, var in self._obj.data_vars.items():
            codec = _video_codec(var.encoding)
            variables[str(name)] = VariableInfo(
                name=str(name),
                dims=tuple(map(str, var.dims)),
                shape=tuple(var.shape),
                dtype=str(var.dtype),
                chunks=_tuple(var.encoding.get("chunks")),
                profile=None if codec is None else codec.profile,
                crf=None if codec is None else codec.quality,
                max_abs_error=None if codec is None else codec.max_abs_error,
                recorded=dict(recorded.get(str(name)) or {}),
            )
        pending = marker.get("pending")
        return StoreInfo(
            format=marker.get("format"),
            pending=pending.get("kind", "update") if isinstance(pending, Mapping) else None,
            variables=variables,
        )


@xr.register_dataarray_accessor("eocube")
class DataArrayAccessor(_Accessor):
    """``da.eocube``: write a data array to an eocube store (as a one-variable dataset)."""

    _obj: xr.DataArray
