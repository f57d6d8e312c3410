"""Exceptions raised by eocube.

Every error eocube raises on purpose derives from :class:`EocubeError`; those about
bad arguments also derive from :class:`ValueError` so that generic callers catch them.
"""

from __future__ import annotations


class EocubeError(Exception):
    """Base class of eocube's errors."""


class ProfileError(EocubeError, ValueError):
    """An unknown, invalid or unsuitable codec profile."""


class UnsupportedDataError(EocubeError, ValueError):
    """Data that a profile or the format cannot hold (dtype, bit depth, shape, values)."""


class CorruptChunkError(EocubeError):
    """A chunk payload that cannot be decoded: truncated, altered or of an unknown format."""


class CodecError(EocubeError):
    """The video encoder or decoder failed."""


class IncompleteStoreError(EocubeError):
    """A store whose write did not finish (interrupted), or that is not an eocube store."""


class MissingShardsError(IncompleteStoreError):
    """Shards a write reported writing that the store does not hold as written (absent, or
    of another size): the client and the workers did not share the storage. The store is
    left unfinished, so that ``resume=True`` writes them again."""


class NvdecError(EocubeError):
    """NVDEC could not decode a stream (no GPU, no driver, unsupported format or size)."""


class GPUFallbackWarning(UserWarning):
    """GPU decoding was asked for, and the CPU decodes instead (said once per dataset)."""


__all__ = [
    "CodecError",
    "CorruptChunkError",
    "EocubeError",
    "GPUFallbackWarning",
    "IncompleteStoreError",
    "MissingShardsError",
    "NvdecError",
    "ProfileError",
    "UnsupportedDataError",
]
