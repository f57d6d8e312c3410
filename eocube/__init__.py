"""eocube: Earth-observation and climate data cubes compressed as video.

The codec core: :func:`encode_chunk` and :func:`decode_chunk` turn a block of shape
(time, band, y, x) into a self-describing payload and back, through the codec
profiles of :func:`available_profiles`.
"""

from eocube.chunk import decode_chunk, encode_chunk, read_header
from eocube.errors import CodecError, CorruptChunkError, EocubeError, ProfileError, UnsupportedDataError
from eocube.profiles import Profile, available_profiles, get_profile

__version__ = "0.1.0.dev0"

__all__ = [
    "CodecError",
    "CorruptChunkError",
    "EocubeError",
    "Profile",
    "ProfileError",
    "UnsupportedDataError",
    "__version__",
    "available_profiles",
    "decode_chunk",
    "encode_chunk",
    "get_profile",
    "read_header",
]
