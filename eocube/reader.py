"""Reading eocube stores: xarray's zarr store with integrity errors that name the chunk.

The backend (eocube.backend) stays thin; this module opens the zarr group, refuses a
store whose write never finished, and wraps every array read so that a damaged chunk
or shard (checksum mismatch, truncation, an undecodable payload) raises
:class:`~eocube.errors.CorruptChunkError` naming the variable and the chunk indices,
never another exception and never silently wrong values.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
import zlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import xarray as xr
from xarray.backends.zarr import ZarrArrayWrapper, ZarrStore
from xarray.core import indexing
from zarr.errors import UnstableSpecificationWarning

from eocube.errors import CorruptChunkError, EocubeError, IncompleteStoreError

MARKER = "eocube"
"""Root attribute holding the format version and whether the write completed."""

# What zarr, numcodecs and eocube's decoders raise on damaged bytes
_DAMAGE = (ValueError, IndexError, TypeError, struct.error, zlib.error, RuntimeError, EOFError)


def _chunk_ranges(key: Any, chunks: tuple[int, ...], shape: tuple[int, ...]) -> str:
    parts = []
    items = key if isinstance(key, tuple) else (key,)
    for k, c, n in zip(items, chunks, shape, strict=False):
        if isinstance(k, slice):
            start, stop, _ = k.indices(n)
            first, last = start // c, max(stop - 1, start) // c
        elif isinstance(k, int | np.integer):
            first = last = int(k) // c
        else:
            idx = np.asarray(k).reshape(-1)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            if idx.size == 0:
                parts.append("-")
                continue
            first, last = int(idx.min()) // c, int(idx.max()) // c
        parts.append(str(first) if first == last else f"{first}..{last}")
    return "(" + ", ".join(parts) + ")"


class _CheckedArray(ZarrArrayWrapper):
    """A zarr array wrapper whose reads turn damage into CorruptChunkError."""

    def __init__(self, zarr_array: Any, name: Hashable) -> None:
        super().__init__(zarr_array)
        self._name = name

    def _checked(self, read: Callable[[Any], Any], key: Any) -> Any:
        try:
            return read(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except EocubeError:
            raise
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc

    def _error(self, key: Any, exc: BaseException) -> CorruptChunkError:
        where = _chunk_ranges(key, tuple(self._array.chunks), tuple(self._array.shape))
        return CorruptChunkError(
            f"variable {self._name!r}, chunk {where}: the stored data is damaged "
            f"({type(exc).__name__}: {exc})"
        )

    def _oindex(self, key: Any) -> Any:
        return self._checked(super()._oindex, key)

    def _vindex(self, key: Any) -> Any:
        return self._checked(super()._vindex, key)

    def _getitem(self, key: Any) -> Any:
        return self._checked(super()._getitem, key)

    async def _async_oindex(self, key: Any) -> Any:
        try:
            return await super()._async_oindex(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc

    async def _async_vindex(self, key: Any) -> Any:
        try:
            return await super()._async_vindex(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc

    async def _async_getitem(self, key: Any) -> Any:
        try:
            return await super()._async_getitem(key)
        except CorruptChunkError as exc:
            raise self._error(key, exc) from exc
        except _DAMAGE as exc:
            raise self._error(key, exc) from exc


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's warning that fixed-length strings (band names) are not yet in the
    zarr v3 spec: eocube writes and reads them with zarr-python, which handles them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        yield


class EocubeZarrStore(ZarrStore):
    """xarray's ZarrStore with checked reads of every array."""

    def open_store_variable(self, name: str) -> xr.Variable:
        """The variable, lazily indexed through :class:`_CheckedArray`."""
        var = super().open_store_variable(name)
        data = indexing.LazilyIndexedArray(_CheckedArray(self.members[name], name))
        return xr.Variable(var.dims, data, var.attrs, var.encoding)


def check_complete(attrs: dict[str, Any], where: str) -> None:
    """Raise :class:`IncompleteStoreError` unless the store's write finished."""
    marker = attrs.get(MARKER)
    if not isinstance(marker, dict):
        raise IncompleteStoreError(f"{where} is not an eocube store (no {MARKER!r} attribute)")
    if not marker.get("complete", False):
        raise IncompleteStoreError(
            f"{where} is incomplete: its write was interrupted. Re-run the same "
            f"to_eocube(...) call with resume=True to finish it, or mode='w' to start over"
        )
