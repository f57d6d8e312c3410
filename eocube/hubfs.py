"""Reading from the Hugging Face hub: ``hf://`` URLs read with exact HTTP range requests.

``huggingface_hub``'s :class:`~huggingface_hub.HfFileSystem` opens files with fsspec's
read-ahead cache: a read of a few kB of a shard fetches the following 4 MiB too. An
eocube read wants exactly the bytes of the chunks it touches, so eocube reads ``hf://``
URLs through :class:`RangeHfFileSystem`, the same client with files that fetch exactly
what is asked (``cache_type="none"``), and lists a store once when it is opened, so
that the size of every object (fsspec needs it for suffix reads) is known without a
listing per folder.

An optional local block cache: ``storage_options={"cache_storage": "/path/to/cache"}``
(and ``cache_block_size``, default 1 MiB) makes reads fetch whole aligned blocks, the
missing ones of a read in one range request, and keep them on disk
(:class:`eocube.cache.DiskBlockCache`); later reads of those blocks, by this process or
another, cost no request. Suffix reads (shard indexes) are fetched and kept exactly,
not as blocks: ``eocube info`` and a resume read every index and nothing else. The
folder keeps at most ``cache_max_bytes`` (default: the environment variable
``EOCUBE_BLOCK_CACHE_BYTES``, else 10 GiB; 0 keeps nothing): beyond that, the blocks
read longest ago are deleted first. Blocks are keyed by the URL, revision included: pin
a commit sha (a branch moves, its cached blocks would not).
fsspec's own ``blockcache::`` and ``simplecache::`` chains do not serve here:
``HfFileSystem`` streams whole-file reads past the block cache, the cached local file of
``simplecache`` lacks the ``size`` that zarr's suffix reads (shard indexes) need, and
neither bounds the disk it uses.

The ``eocube.hubfs`` logger tells at DEBUG what each read fetched (a listing, a suffix
read, a run of blocks) and what the block cache served.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from fsspec import AbstractFileSystem, url_to_fs
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from huggingface_hub import HfFileSystem
from zarr.storage import FsspecStore

from eocube.cache import DiskBlockCache

logger = logging.getLogger(__name__)

HF_PROTOCOL = "hf://"


class RangeHfFileSystem(HfFileSystem):
    """``HfFileSystem`` whose files read exactly the byte ranges asked for (no read-ahead).

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`huggingface_hub.HfFileSystem` (``endpoint``, ``token``...).
    cache_storage : str, optional
        A folder for the local block cache (none by default).
    cache_block_size : int
        Bytes per cached block.
    cache_max_bytes : int, optional
        Bytes the cache folder keeps at most, the least recently read blocks deleted
        first; 0 keeps nothing. Default: ``EOCUBE_BLOCK_CACHE_BYTES``, else
        :data:`eocube.cache.DEFAULT_DISK_MAX_BYTES` (10 GiB).
    """

    def __init__(
        self,
        *args: Any,
        cache_storage: str | os.PathLike[str] | None = None,
        cache_block_size: int = 2**20,
        cache_max_bytes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if cache_block_size <= 0:
            raise ValueError(f"cache_block_size must be positive, got {cache_block_size}")
        if cache_max_bytes is not None and cache_max_bytes < 0:
            raise ValueError(f"cache_max_bytes must not be negative, got {cache_max_bytes}")
        self.cache_block_size = int(cache_block_size)
        self.block_cache: DiskBlockCache | None = None
        if cache_storage is not None:
            self.block_cache = DiskBlockCache(cache_storage, cache_max_bytes)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> Any:
        size = block_size if block_size is not None else self.block_size
        if "r" in mode and size != 0:
            kwargs.setdefault("cache_type", "none")
        return super()._open(path, mode, block_size=block_size, revision=revision, **kwargs)

    def list_tree(self, path: str) -> None:
        """List everything under ``path`` once (one request per 1000 objects).

        Later ``info`` calls under ``path`` (fsspec asks for a file's size before a suffix
        read) are answered from the listing, and a path it does not hold is missing
        without a request (zarr reads absent chunks as fill values).
        """
        path = self.resolve_path(path).unresolve()
        found = self.find(path)
        logger.debug("listed %s: %d objects", path, len(found))
        listed: set[str] = self.__dict__.setdefault("_listed_trees", set())
        listed.add(path.rstrip("/"))

    def info(
        self, path: str, refresh: bool = False, revision: str | None = None, **kwargs: Any
    ) -> Any:
        """File info, as ``HfFileSystem.info``; no request for a path under a listed tree."""
        listed = self.__dict__.get("_listed_trees")
        if listed and not refresh and revision is None:
            name = self.resolve_path(path).unresolve()
            parent = self._parent(name)
            if parent not in self.dircache and any(
                parent == root or parent.startswith(root + "/") for root in listed
            ):
                raise FileNotFoundError(path)
        return super().info(path, refresh=refresh, revision=revision, **kwargs)

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes ``[start, end)`` of a file (negative: from the end), through the block cache."""
        blocks = self.block_cache
        if blocks is None or blocks.max_bytes == 0:
            return bytes(super().cat_file(path, start=start, end=end, **kwargs))
        if start is not None and start < 0 and end is None:
            # a suffix read is a shard index (zarr's only suffix reads): a few kB, where
            # a whole block would move up to 1 MiB of chunks nobody asked for (`eocube
            # info` and a resume read every index); fetched exactly, kept as it is
            suffix_key = f"suffix{-start}:{self.resolve_path(path).unresolve()}"
            kept = blocks.get(suffix_key, 0)
            if kept is None:
                kept = bytes(super().cat_file(path, start=start, end=end, **kwargs))
                blocks.put(suffix_key, 0, kept)
                logger.debug("fetched the last %d bytes of %s", -start, path)
            return kept
        size = int(self.info(path)["size"])
        start = 0 if start is None else max(0, size + start) if start < 0 else min(start, size)
        end = size if end is None else max(0, size + end) if end < 0 else min(end, size)
        if start >= end:
            return b""
        bs = self.cache_block_size
        key = f"{bs}:{self.resolve_path(path).unresolve()}"
        first, last = start // bs, (end - 1) // bs
        found: dict[int, bytes] = {}
        missing = []
        for i in range(first, last + 1):
            block = blocks.get(key, i)
            if block is None:
                missing.append(i)
            else:
                found[i] = block
        runs: list[list[int]] = []
        for i in missing:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        if found:
            logger.debug("%d blocks of %s served by the block cache", len(found), path)
        for run in runs:  # one exact range request per run of missing blocks
            lo, hi = run[0] * bs, min(size, (run[-1] + 1) * bs)
            data = super().cat_file(path, start=lo, end=hi, **kwargs)
            logger.debug("fetched blocks %d-%d of %s (%d bytes)", run[0], run[-1], path, hi - lo)
            for i in run:
                found[i] = data[i * bs - lo : (i + 1) * bs - lo]
                blocks.put(key, i, found[i])
        joined = b"".join(found[i] for i in range(first, last + 1))
        return joined[start - first * bs : end - first * bs]


def is_hub_url(url: Any) -> bool:
    """True for ``hf://`` URLs."""
    return isinstance(url, str) and url.startswith(HF_PROTOCOL)


def filesystem(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem and path of ``url``; ``hf://`` URLs get :class:`RangeHfFileSystem`.

    Parameters
    ----------
    url : str
        A path or fsspec URL.
    storage_options : mapping, optional
        Passed to the filesystem (for ``hf://``: those of :class:`RangeHfFileSystem`).
    """
    options = dict(storage_options or {})
    if is_hub_url(url):
        fs = RangeHfFileSystem(**options)
        return fs, fs._strip_protocol(url)
    fs, path = url_to_fs(url, **options)
    return fs, path


def hub_store(url: str, storage_options: Mapping[str, Any] | None = None) -> FsspecStore:
    """A read-only zarr store over an ``hf://`` URL that reads exact byte ranges.

    The store's objects are listed once (one request per 1000 objects), so that later
    reads, and reads of absent chunks, cost no listing.

    Parameters
    ----------
    url : str
        ``hf://datasets/<repo>[@<revision>]/<path>``; pin a commit sha for reproducible
        reads.
    storage_options : mapping, optional
        Arguments of :class:`RangeHfFileSystem`: ``endpoint``, ``token``,
        ``cache_storage``, ``cache_block_size``, ``cache_max_bytes``...
    """
    if not is_hub_url(url):
        raise ValueError(f"not an hf:// URL: {url!r}")
    fs, path = filesystem(url, storage_options)
    assert isinstance(fs, RangeHfFileSystem)
    fs.list_tree(path)
    return FsspecStore(AsyncFileSystemWrapper(fs, asynchronous=True), path=path, read_only=True)
