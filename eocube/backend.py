"""The xarray backend ``engine="eocube"``: a thin entry point over eocube.reader.

The store is zarr v3, read lazily: a selection decodes only the chunks it touches
(:mod:`eocube.reader`), ``chunks={}`` gives dask chunks equal to the stored chunks, and
fsspec URLs work with ``storage_options``. Damaged chunks raise CorruptChunkError
naming the variable and chunk; a store whose write never finished is refused.

xarray imports this module to list its engines: it imports nothing heavy (the reader,
and with it PyAV and Numba, comes with the first ``open_dataset``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import xarray as xr
from xarray.backends import BackendEntrypoint

from eocube import metadata
from eocube.layout import MARKER

if TYPE_CHECKING:
    from eocube.reader import FrameDecoder


def _transposed(var: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
    """``var`` in the order ``dims``, its per-dim encodings (chunks, shards) reordered too."""
    order = [var.dims.index(d) for d in dims]
    out = var.transpose(*dims)
    for key in ("chunks", "shards"):
        value = out.encoding.get(key)
        if isinstance(value, tuple | list) and len(value) == len(order):
            out.encoding[key] = tuple(value[i] for i in order)
    return out


class EocubeBackendEntrypoint(BackendEntrypoint):
    """Open eocube stores with ``xr.open_dataset(path, engine="eocube")``."""

    description = "Open eocube stores (zarr v3 with video-coded chunks) lazily"
    url = "https://github.com/eocube/eocube"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "storage_options")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        decode_coords: bool | str = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        consolidated: bool | None = None,
        frame_decoder: FrameDecoder | None = None,
    ) -> xr.Dataset:
        """Open an eocube store lazily (see :func:`eocube.open_dataset`)."""
        if isinstance(filename_or_obj, os.PathLike):
            filename_or_obj = os.fspath(filename_or_obj)
        from eocube.lifecycle import quiet_zarr

        if isinstance(filename_or_obj, str) and filename_or_obj.startswith("hf://"):
            # hf:// reads exactly the bytes of the touched chunks (no fsspec read-ahead)
            from eocube.hubfs import hub_store

            filename_or_obj = hub_store(filename_or_obj, storage_options)
            storage_options = None
        with quiet_zarr():
            return self._open(
                filename_or_obj,
                drop_variables=drop_variables,
                storage_options=storage_options,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                decode_coords=decode_coords,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
                consolidated=consolidated,
                frame_decoder=frame_decoder,
            )

    def _open(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None,
        storage_options: Mapping[str, Any] | None,
        mask_and_scale: bool,
        decode_times: bool,
        decode_coords: bool | str,
        use_cftime: bool | None,
        decode_timedelta: bool | None,
        consolidated: bool | None,
        frame_decoder: FrameDecoder | None,
    ) -> xr.Dataset:
        from xarray.backends.common import _normalize_path
        from xarray.backends.store import StoreBackendEntrypoint
        from xarray.core.utils import close_on_error

        import eocube.registry  # noqa: F401  (eocube's codecs, for zarr)
        from eocube.reader import EocubeZarrStore, check_complete, explain_open_failure

        try:
            store = EocubeZarrStore.open_group(
                _normalize_path(filename_or_obj),
                mode="r",
                consolidated=consolidated,
                consolidate_on_close=False,
                storage_options=dict(storage_options) if storage_options else None,
                zarr_format=3,
            )
        except (TypeError, ValueError, KeyError, OSError) as exc:
            # zarr refuses the metadata of an unfinished store on purpose (eocube.layout)
            raise explain_open_failure(filename_or_obj, storage_options, exc) from exc
        store.frame_decoder = frame_decoder
        with close_on_error(store):
            check_complete(dict(store.zarr_group.attrs), str(filename_or_obj))
            ds = StoreBackendEntrypoint().open_dataset(
                store,
                mask_and_scale=mask_and_scale,
                decode_times=decode_times,
                decode_coords=decode_coords,
                drop_variables=drop_variables,
                use_cftime=use_cftime,
                decode_timedelta=decode_timedelta,
            )
        # the format marker is eocube's, not the user's: it goes to encoding
        marker = ds.attrs.pop(MARKER, None)
        if marker is not None:
            ds.encoding[MARKER] = marker
            metadata.restore_aliases(ds.variables, marker)
            # variables given in another order than (time, band, y, x) read in their own
            for name, dims in (marker.get("dims") or {}).items():
                if (
                    name in ds.variables
                    and tuple(dims) != ds[name].dims
                    and set(dims) == set(ds[name].dims)
                ):
                    ds[name] = _transposed(ds[name], tuple(dims))
        if isinstance(filename_or_obj, str):
            ds.encoding.setdefault("source", filename_or_obj)
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for paths and URLs ending in ``.eocube``."""
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        return str(path).rstrip("/").endswith(".eocube")


def open_dataset(
    store: Any,
    *,
    chunks: Mapping[str, int] | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open an eocube store lazily.

    Same as ``xr.open_dataset(store, engine="eocube", chunks=chunks,
    storage_options=storage_options)``.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Path or fsspec URL (``hf://datasets/<repo>@<rev>/<path>.eocube``, ``s3://``...).
    chunks : None, {} or mapping
        None: lazy numpy-backed arrays, decoded on access. ``{}``: dask arrays chunked
        like the store.
    storage_options : mapping, optional
        Passed to fsspec; for ``hf://`` URLs, to ``huggingface_hub.HfFileSystem``
        (``endpoint``, ``token``), whose reads then fetch exact byte ranges
        (:mod:`eocube.hubfs`).
    **kwargs
        Passed to ``xr.open_dataset``; ``frame_decoder=`` decodes the video streams with
        another decoder than the CPU's, e.g. :class:`eocube.gpu.NvdecDecoder`.
    """
    return xr.open_dataset(
        store,
        engine=EocubeBackendEntrypoint,
        chunks=chunks,
        storage_options=storage_options,
        **kwargs,
    )
