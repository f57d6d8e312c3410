"""The xarray backend ``engine="eocube"``: a thin entry point over xarray's zarr backend.

The store is zarr v3; the ``eocube.video`` codec is registered when eocube is imported,
so xarray's zarr machinery does the lazy, chunk-wise reading: a selection decodes only
the chunks it touches, ``chunks={}`` gives dask chunks equal to the stored chunks, and
fsspec URLs work with ``storage_options``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint
from xarray.backends.zarr import ZarrBackendEntrypoint

import eocube.codec  # noqa: F401  (registers the eocube.video codec with zarr)


class EocubeBackendEntrypoint(BackendEntrypoint):
    """Open eocube stores with ``xr.open_dataset(path, engine="eocube")``."""

    description = "Open eocube stores (zarr v3 with video-coded chunks) lazily"
    url = "https://github.com/eocube/eocube"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "storage_options")

    def open_dataset(  # type: ignore[override]
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
    ) -> xr.Dataset:
        """Open an eocube store lazily (see :func:`eocube.open_dataset`)."""
        if isinstance(filename_or_obj, os.PathLike):
            filename_or_obj = os.fspath(filename_or_obj)
        if isinstance(filename_or_obj, str) and filename_or_obj.startswith("hf://"):
            # hf:// reads exactly the bytes of the touched chunks (no fsspec read-ahead)
            from eocube.hubfs import hub_store

            filename_or_obj = hub_store(filename_or_obj, storage_options)
            storage_options = None
        ds = ZarrBackendEntrypoint().open_dataset(
            filename_or_obj,
            drop_variables=drop_variables,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            decode_coords=decode_coords,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
            storage_options=dict(storage_options) if storage_options else None,
            zarr_format=3,
            consolidated=consolidated,
        )
        # the format marker is eocube's, not the user's: it goes to encoding
        marker = ds.attrs.pop("eocube", None)
        if marker is not None:
            ds.encoding["eocube"] = marker
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
    """
    return xr.open_dataset(
        store,
        engine=EocubeBackendEntrypoint,
        chunks=chunks,
        storage_options=storage_options,
        **kwargs,
    )
