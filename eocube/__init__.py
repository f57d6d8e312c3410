"""eocube: Earth-observation and climate data cubes compressed as video.

Write a cube with :func:`to_eocube`, open it lazily with :func:`open_dataset` or
``xr.open_dataset(path, engine="eocube")``. The codec core: :func:`encode_chunk` and
:func:`decode_chunk` turn a block of shape (time, band, y, x) into a self-describing
payload and back, through the codec profiles of :func:`available_profiles`.
A finished store packs into one read-only ZIP file with :func:`pack` (or ``to_eocube``
to a ``.zip`` path). A release of many cubes: :func:`write_release` (stores, STAC
catalog, dataset card),
:func:`eocube.hub.publish` to the Hugging Face hub, :func:`open_catalog` to query it.

``to_eocube`` also appends dates (``append_dim="time"``), writes regions (``region=``)
and defers its work (``compute=False``); the ``.eocube`` accessor of xarray objects
(:mod:`eocube.accessor`: ``ds.eocube.to_eocube(...)``, ``ds.eocube.info``) is registered
on import.

``import eocube`` is light: each name below is imported from its module on first use
(PEP 562), so that importing eocube, or xarray listing its engines, loads neither Numba,
PyAV, pyarrow nor huggingface_hub (the accessor needs xarray alone).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "CodecError": "eocube.errors",
    "CorruptChunkError": "eocube.errors",
    "EocubeError": "eocube.errors",
    "GPUFallbackWarning": "eocube.errors",
    "IncompleteStoreError": "eocube.errors",
    "MissingShardsError": "eocube.errors",
    "NvdecError": "eocube.errors",
    "ProfileError": "eocube.errors",
    "UnsupportedDataError": "eocube.errors",
    "EncodeReport": "eocube.report",
    "VariableReport": "eocube.report",
    "LinearCodec": "eocube.linear",
    "VideoCodec": "eocube.codec",
    "Profile": "eocube.profiles",
    "available_profiles": "eocube.profiles",
    "get_profile": "eocube.profiles",
    "decode_chunk": "eocube.chunk",
    "encode_chunk": "eocube.chunk",
    "read_header": "eocube.chunk",
    "open_catalog": "eocube.catalog",
    "open_dataset": "eocube.backend",
    "open_geotiffs": "eocube.geotiff",
    "pack": "eocube.packed",
    "to_eocube": "eocube.write",
    "write_release": "eocube.release",
}

__all__ = [
    "CodecError",
    "CorruptChunkError",
    "EncodeReport",
    "EocubeError",
    "GPUFallbackWarning",
    "IncompleteStoreError",
    "LinearCodec",
    "MissingShardsError",
    "NvdecError",
    "Profile",
    "ProfileError",
    "UnsupportedDataError",
    "VariableReport",
    "VideoCodec",
    "__version__",
    "available_profiles",
    "decode_chunk",
    "encode_chunk",
    "get_profile",
    "open_catalog",
    "open_dataset",
    "open_geotiffs",
    "pack",
    "read_header",
    "to_eocube",
    "write_release",
]


# registers ``.eocube`` on xarray's Dataset and DataArray (imports xarray, nothing heavy)
from eocube import accessor as _accessor  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # a submodule (eocube.metrics, eocube.gpu, ...) imported as an attribute
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the submodule exists; something it needs does not
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from eocube.backend import open_dataset
    from eocube.catalog import open_catalog
    from eocube.chunk import decode_chunk, encode_chunk, read_header
    from eocube.codec import VideoCodec
    from eocube.errors import (
        CodecError,
        CorruptChunkError,
        EocubeError,
        GPUFallbackWarning,
        IncompleteStoreError,
        MissingShardsError,
        NvdecError,
        ProfileError,
        UnsupportedDataError,
    )
    from eocube.geotiff import open_geotiffs
    from eocube.linear import LinearCodec
    from eocube.packed import pack
    from eocube.profiles import Profile, available_profiles, get_profile
    from eocube.release import write_release
    from eocube.report import EncodeReport, VariableReport
    from eocube.write import to_eocube
