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
missing ones of a read in one range request, and keep them on disk; later reads of
those blocks, by this process or another, cost no request. Blocks are keyed by the URL,
revision included: pin a commit sha (a branch moves, its cached blocks would not).
fsspec's own ``blockcache::`` and ``simplecache::`` chains do not serve here:
``HfFileSystem`` streams whole-file reads past the block cache, and the cached local
file of ``simplecache`` lacks the ``size`` that zarr's suffix reads (shard indexes) need.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from fsspec import AbstractFileSystem, url_to_fs
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from huggingface_hub import HfFileSystem
from zarr.storage import FsspecStore

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
    """

    def __init__(
        self,
        *args: Any,
        cache_storage: str | os.PathLike[str] | None = None,
        cache_block_size: int = 2**20,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if cache_block_size <= 0:
            raise ValueError(f"cache_block_size must be positive, got {cache_block_size}")
        self.cache_storage = None if cache_storage is None else os.fspath(cache_storage)
        self.cache_block_size = int(cache_block_size)

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
        self.find(path)
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
        if self.cache_storage is None:
            return bytes(super().cat_file(path, start=start, end=end, **kwargs))
        size = int(self.info(path)["size"])
        start = 0 if start is None else max(0, size + start) if start < 0 else min(start, size)
        end = size if end is None else max(0, size + end) if end < 0 else min(end, size)
        if start >= end:
            return b""
        bs = self.cache_block_size
        key = f"{bs}:{self.resolve_path(path).unresolve()}"
        folder = os.path.join(self.cache_storage, hashlib.sha256(key.encode()).hexdigest()[:40])
        first, last = start // bs, (end - 1) // bs
        blocks: dict[int, bytes] = {}
        missing = []
        for i in range(first, last + 1):
            try:
                with open(os.path.join(folder, str(i)), "rb") as f:
                    blocks[i] = f.read()
            except FileNotFoundError:
                missing.append(i)
        runs: list[list[int]] = []
        for i in missing:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:  # one exact range request per run of missing blocks
            lo, hi = run[0] * bs, min(size, (run[-1] + 1) * bs)
            data = super().cat_file(path, start=lo, end=hi, **kwargs)
            os.makedirs(folder, exist_ok=True)
            for i in run:
                blocks[i] = data[i * bs - lo : (i + 1) * bs - lo]
                _write_atomic(os.path.join(folder, str(i)), blocks[i])
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        return joined[start - first * bs : end - first * bs]


def _write_atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".part-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


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
        ``cache_storage``...
    """
    if not is_hub_url(url):
        raise ValueError(f"not an hf:// URL: {url!r}")
    fs, path = filesystem(url, storage_options)
    assert isinstance(fs, RangeHfFileSystem)
    fs.list_tree(path)
    return FsspecStore(AsyncFileSystemWrapper(fs, asynchronous=True), path=path, read_only=True)
