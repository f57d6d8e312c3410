"""eocube: Earth-observation and climate data cubes compressed as video.

Write a cube with :func:`to_eocube`, open it lazily with :func:`open_dataset` or
``xr.open_dataset(path, engine="eocube")``. The codec core: :func:`encode_chunk` and
:func:`decode_chunk` turn a block of shape (time, band, y, x) into a self-describing
payload and back, through the codec profiles of :func:`available_profiles`.
A release of many cubes: :func:`write_release` (stores, Parquet catalog, dataset card),
:func:`eocube.hub.publish` to the Hugging Face hub, :func:`open_catalog` to query it.
"""

from eocube.backend import open_dataset
from eocube.catalog import open_catalog
from eocube.chunk import decode_chunk, encode_chunk, read_header
from eocube.codec import VideoCodec
from eocube.errors import (
    CodecError,
    CorruptChunkError,
    EocubeError,
    ProfileError,
    UnsupportedDataError,
)
from eocube.linear import LinearCodec
from eocube.profiles import Profile, available_profiles, get_profile
from eocube.release import write_release
from eocube.store import EncodeReport, VariableReport, to_eocube

__version__ = "0.1.0.dev0"

__all__ = [
    "CodecError",
    "CorruptChunkError",
    "EncodeReport",
    "EocubeError",
    "LinearCodec",
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
    "read_header",
    "to_eocube",
    "write_release",
]
