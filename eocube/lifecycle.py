"""A store's life: nothing, unfinished, complete; and the metadata documents that say which.

- While a write is under way every ``zarr.json`` of the store carries the extra field
  :data:`~eocube.layout.INCOMPLETE`, with ``"must_understand": true``: the zarr v3
  specification makes every reader refuse such a document, so an unfinished store cannot
  be read as data (zarr-python raises) by anyone. eocube writes and reads an unfinished
  store through :class:`UnfinishedView`, which adds the field to every document written
  and strips it from every document read.
- :func:`finish` marks a store complete: it first checks that every shard the write
  reported is in the store as written (:func:`check_written`, one listing of the store),
  then the arrays' own documents go (or lose the field), the staging area and leftovers
  of interrupted writes go, the root document is written last.
- An update of a finished store (an append, a region write: :mod:`eocube.update`) keeps
  it readable: :func:`begin_update` records the update in the marker's
  :data:`~eocube.layout.PENDING` entry (readers ignore it), the update writes chunks
  that the stored shapes do not reach yet or rewrites shards whose other chunks keep
  their bytes, and :func:`commit_update` writes the new shapes into the root document
  in one write, last.
- :func:`inspect_target` says what lies at a path before eocube writes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.errors import UnstableSpecificationWarning
from zarr.storage import StorePath, WrapperStore

from eocube import metadata
from eocube.errors import MissingShardsError
from eocube.layout import (
    INCOMPLETE,
    INCOMPLETE_NOTE,
    MARKER,
    METADATA,
    PENDING,
    STAGING,
    is_temporary,
)


def join_keys(*parts: str) -> str:
    """Store keys (or key parts) joined with ``/``, empty parts and edge slashes dropped."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def store_path(
    store: Any, storage_options: Mapping[str, Any] | None = None, *, read_only: bool = False
) -> StorePath:
    """A zarr :class:`StorePath` for a path, URL or store, without reading any metadata."""
    if isinstance(store, StorePath):
        return store
    if isinstance(store, Store):
        return StorePath(store)
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise TypeError(f"a store is a path, an fsspec URL or a zarr store, not {store!r}")
    from eocube import packed

    if packed.is_packed(store):
        if not read_only:
            raise PermissionError(
                f"{store} names a packed store (one ZIP file), which is read-only: write "
                f"to a folder store and pack it (eocube.pack)"
            )
        return StorePath(packed.open_packed(store, storage_options))
    if "://" in store:
        from zarr.storage import FsspecStore

        return StorePath(
            FsspecStore.from_url(
                store, storage_options=dict(storage_options or {}), read_only=read_only
            )
        )
    from zarr.storage import LocalStore

    return StorePath(LocalStore(store, read_only=read_only))


def list_keys(path: StorePath, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (relative to the store's root) of ``path``."""

    async def collect() -> list[str]:
        return [key async for key in path.store.list_prefix(join_keys(path.path, prefix))]

    return sync(collect())


def read_bytes(path: StorePath, key: str) -> bytes | None:
    """The bytes of ``key`` under ``path``, or None when absent."""
    buf = sync(path.store.get(join_keys(path.path, key), prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def write_bytes(path: StorePath, key: str, data: bytes) -> None:
    """Write ``data`` to ``key`` under ``path``."""
    buffer = default_buffer_prototype().buffer.from_bytes(data)
    sync(path.store.set(join_keys(path.path, key), buffer))


def move(store: Store, source: str, target: str) -> None:
    """Move the object ``source`` to ``target`` (full store keys): a rename in a local
    store, a copy then a delete elsewhere (object stores have no rename)."""
    from zarr.storage import LocalStore

    if isinstance(store, LocalStore):
        where = os.path.join(str(store.root), target)
        os.makedirs(os.path.dirname(where), exist_ok=True)
        os.replace(os.path.join(str(store.root), source), where)
        return
    data = sync(store.get(source, prototype=default_buffer_prototype()))
    if data is None:
        raise FileNotFoundError(f"{source}: the object to move is not in the store")
    sync(store.set(target, data))
    sync(store.delete(source))


def delete(path: StorePath, keys: list[str]) -> None:
    """Delete full store keys (as :func:`list_keys` gives them)."""
    for key in keys:
        sync(path.store.delete(key))


def read_document(path: StorePath, key: str = METADATA) -> dict[str, Any] | None:
    """A metadata document as JSON, or None when absent.

    Raises
    ------
    ValueError
        If the document is not JSON (a damaged store).
    """
    data = read_bytes(path, key)
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{_where(path, key)} is damaged: not a JSON document ({exc}); restore the store "
            f"from a copy or write it again"
        ) from None
    if not isinstance(doc, dict):
        raise ValueError(f"{_where(path, key)} is damaged: not a JSON object")
    return doc


def write_document(path: StorePath, key: str, doc: Mapping[str, Any]) -> None:
    """Write a metadata document as compact JSON (NaN allowed, as zarr-python does)."""
    write_bytes(path, key, metadata.dumps(doc))


def _where(path: StorePath, key: str) -> str:
    return f"{path}/{key}" if str(path) else key


def metadata_keys(path: StorePath) -> list[str]:
    """The ``zarr.json`` keys of the store, relative to its root."""
    root = path.path.strip("/")
    out = []
    for key in list_keys(path):
        if key.rsplit("/", 1)[-1] != METADATA:
            continue
        relative = key[len(root) :].lstrip("/") if root else key
        if not relative.startswith(STAGING):
            out.append(relative)
    return out


def finish(
    path: StorePath,
    marker: Mapping[str, Any],
    per_array_metadata: bool,
    *,
    written: Mapping[str, int],
) -> None:
    """Mark the store complete: the root document last, clean of the unfinished field.

    The shards the write reported (``written``: store key to bytes) are checked first
    (:func:`check_written`); the arrays' own documents are then deleted (the root's
    consolidated metadata describes them) unless ``per_array_metadata``, and the staging
    area is removed.

    Raises
    ------
    MissingShardsError
        If a shard in ``written`` is absent or of another size; the store stays
        unfinished.
    """
    check_written(path, written)
    for key in metadata_keys(path):
        if key == METADATA:
            continue
        if per_array_metadata:
            doc = read_document(path, key)
            assert doc is not None
            doc.pop(INCOMPLETE, None)
            write_document(path, key, metadata.compact_defaults_only(doc))
        else:
            delete(path, [join_keys(path.path, key)])
    # what a write left behind: staged chunks, and the temporary files of interrupted
    # atomic writes (zarr's LocalStore writes <key>.<uuid4 hex>.partial, then renames)
    leftovers = [k for k in list_keys(path) if is_temporary(k)]
    delete(path, list_keys(path, STAGING) + leftovers)
    remove_empty_staging(path)
    root = read_document(path)
    assert root is not None
    root.pop(INCOMPLETE, None)
    root.setdefault("attributes", {})[MARKER] = dict(marker)
    # with per-array documents kept, the root's copy keeps every attribute as they do
    if per_array_metadata:
        root = metadata.compact_defaults_only(root)
    else:
        root = metadata.compact(root, MARKER)
    write_document(path, METADATA, root)


SHOWN_SHARDS = 5
"""Shards an error of :func:`check_written` names (then how many more)."""


def check_written(path: StorePath, written: Mapping[str, int]) -> None:
    """Check that the store holds every shard a write reported, with the size reported.

    Tasks report the shards they wrote (store key to bytes); a shard of fill values only
    is no object and is not reported. On storage that the client and the workers do not
    share (a worker-local path, ``memory://`` in worker processes) the client's store
    lacks them, and would read fill values where the data should be. One listing of the
    store gives the sizes (:func:`stored_sizes`): no shard is read.

    Raises
    ------
    MissingShardsError
        Naming the first :data:`SHOWN_SHARDS` shards absent or of another size, and how
        many there are.
    """
    if not written:
        return
    found = stored_sizes(path)
    wrong = []
    for key in sorted(written):
        size = found.get(key)
        if size is None:
            wrong.append(f"{key} (absent)")
        elif size != written[key]:
            wrong.append(f"{key} ({size} bytes, {written[key]} written)")
    if not wrong:
        return
    shown = ", ".join(wrong[:SHOWN_SHARDS])
    more = f" and {len(wrong) - SHOWN_SHARDS} more" if len(wrong) > SHOWN_SHARDS else ""
    raise MissingShardsError(
        f"{_named(path)}: {len(wrong)} of the {len(written)} shards the write reported are not in "
        f"the store as written: {shown}{more}. The store is left unfinished. The process "
        f"that calls the write and every worker must share the storage (a path or URL all "
        f"of them reach: not a worker-local path, nor memory:// with worker processes); "
        f"with such storage, repeat the call with resume=True to write them again"
    )


def _named(path: StorePath) -> str:
    """The store at ``path`` as its user named it: a URL for an fsspec store."""
    from zarr.storage import FsspecStore

    if isinstance(path.store, FsspecStore):
        return str(path.store.fs.unstrip_protocol(join_keys(path.store.path, path.path)))
    return str(path)


def stored_sizes(path: StorePath) -> dict[str, int]:
    """The size in bytes of every key under ``path`` (full store keys), from one listing:
    a walk of a local folder, fsspec's ``find`` with details; other stores are listed and
    asked each key's size."""
    from zarr.storage import FsspecStore, LocalStore

    prefix = path.path.strip("/")
    store = path.store
    if isinstance(store, LocalStore):
        root = os.path.join(str(store.root), prefix)
        out = {}
        for parent, _, files in os.walk(root):
            for name in files:
                full = os.path.join(parent, name)
                key = os.path.relpath(full, str(store.root)).replace(os.sep, "/")
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                    out[key] = os.stat(full).st_size
        return out
    if isinstance(store, FsspecStore):
        base = store.path.rstrip("/")
        # fsspec names files as it strips its own URLs: relative to the store's path
        where = f"{base}/{prefix}" if prefix else base
        found = sync(store.fs._find(where, detail=True))
        strip = store.fs._strip_protocol(base).rstrip("/") if base else ""
        return {
            str(name)[len(strip) :].lstrip("/"): int(info["size"])
            for name, info in found.items()
            if info.get("type", "file") == "file" and str(name).startswith(strip)
        }

    async def each_size() -> dict[str, int]:
        return {key: await store.getsize(key) async for key in store.list_prefix(prefix)}

    return sync(each_size())


def pending_update(root: Mapping[str, Any]) -> dict[str, Any] | None:
    """The update under way recorded in a store's root document (the marker's
    :data:`~eocube.layout.PENDING` entry); None when there is none."""
    marker = (root.get("attributes") or {}).get(MARKER)
    found = marker.get(PENDING) if isinstance(marker, Mapping) else None
    return dict(found) if isinstance(found, Mapping) else None


def begin_update(path: StorePath, pending: Mapping[str, Any], *, fresh: bool) -> None:
    """Record in the root document that an update is under way (the store stays readable:
    the entry is an attribute, and the stored shapes do not change until
    :func:`commit_update`). A ``fresh`` update first removes what an earlier one may have
    left in the staging area."""
    if fresh:
        delete(path, list_keys(path, STAGING))
    root = read_document(path)
    assert root is not None
    root.setdefault("attributes", {}).setdefault(MARKER, {})[PENDING] = dict(pending)
    write_document(path, METADATA, root)


def commit_update(
    path: StorePath,
    shapes: Mapping[str, Sequence[int]],
    forget_quality: Iterable[str] = (),
) -> None:
    """Commit an update: the arrays' new ``shapes`` go into their own documents (when the
    store keeps them) and then, in one write, into the root document, whose marker loses
    the :data:`~eocube.layout.PENDING` entry and the recorded quality of the variables in
    ``forget_quality``; the staging area goes last."""
    for name, shape in shapes.items():
        key = join_keys(name, METADATA)
        doc = read_document(path, key)
        if doc is not None:
            doc["shape"] = list(shape)
            write_document(path, key, doc)
    root = read_document(path)
    assert root is not None
    members = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for name, shape in shapes.items():
        members[name]["shape"] = list(shape)
    marker = root.setdefault("attributes", {}).setdefault(MARKER, {})
    marker.pop(PENDING, None)
    quality = marker.get("quality")
    if isinstance(quality, dict):
        for name in forget_quality:
            quality.pop(name, None)
        if not quality:
            marker.pop("quality")
    write_document(path, METADATA, root)
    leftovers = [k for k in list_keys(path) if is_temporary(k)]
    delete(path, list_keys(path, STAGING) + leftovers)
    remove_empty_staging(path)


def remove_empty_staging(path: StorePath) -> None:
    """Remove the staging area's empty folders from a local store (deleting keys leaves
    them; object stores have no folders)."""
    from zarr.storage import LocalStore

    if not isinstance(path.store, LocalStore):
        return
    folder = os.path.join(str(path.store.root), path.path, STAGING)
    for parent, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):  # not empty: something else put files there
            os.rmdir(parent)


def incomplete_details(root: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an unfinished store's root document records about its write; None if finished."""
    found = root.get(INCOMPLETE)
    if found is None:
        return None
    return dict(found) if isinstance(found, Mapping) else {}


class UnfinishedView(WrapperStore[Any]):
    """A store through which eocube writes and reads a store whose write is under way.

    Every ``zarr.json`` written through it gets the :data:`INCOMPLETE` field (the root's
    with ``details``: the fingerprint resume checks), and every one read through it
    comes back without, so zarr and xarray work on the store as usual here while any
    other reader is refused.

    Parameters
    ----------
    store : zarr.abc.store.Store
        The store written to.
    details : mapping
        Recorded in the root document's field.
    root : str
        The store's path inside ``store`` (where its root ``zarr.json`` lies).
    """

    def __init__(
        self, store: Store, details: Mapping[str, Any] | None = None, root: str = ""
    ) -> None:
        super().__init__(store)
        self.details = dict(details or {})
        self.root = root.strip("/")

    def _with_store(self, store: Store) -> UnfinishedView:
        return type(self)(store, self.details, self.root)

    def _is_metadata(self, key: str) -> bool:
        relative = key[len(self.root) :].lstrip("/") if self.root else key
        return relative.rsplit("/", 1)[-1] == METADATA and not relative.startswith(STAGING)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """The value of ``key``; metadata documents without the unfinished field."""
        value = await self._store.get(key, prototype, byte_range)
        if value is None or byte_range is not None or not self._is_metadata(key):
            return value
        doc = json.loads(value.to_bytes())
        if doc.pop(INCOMPLETE, None) is None:
            return value
        return prototype.buffer.from_bytes(metadata.dumps(doc))

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``key``; metadata documents get the unfinished field."""
        if self._is_metadata(key):
            doc = json.loads(value.to_bytes())
            relative = key[len(self.root) :].lstrip("/") if self.root else key
            extra = self.details if relative == METADATA else {}
            doc[INCOMPLETE] = {"must_understand": True, "note": INCOMPLETE_NOTE, **extra}
            value = default_buffer_prototype().buffer.from_bytes(metadata.dumps(doc))
        await self._store.set(key, value)


Kind = Literal["absent", "empty", "eocube", "zarr", "other", "file"]


@dataclass(frozen=True)
class TargetState:
    """What lies at a path eocube is asked to write to.

    ``kind``: ``absent`` (nothing), ``empty`` (an empty folder), ``eocube`` (an eocube
    store, finished or not: ``complete`` says which), ``zarr`` (a zarr store eocube did
    not write), ``other`` (a folder of other files) or ``file``. ``entries`` lists a few of
    the names found, for messages. ``pending``: an update (append or region write) of a
    finished store that did not finish (:func:`pending_update`).
    """

    kind: Kind
    complete: bool | None = None
    entries: tuple[str, ...] = field(default_factory=tuple)
    root: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None

    def describe(self) -> str:
        """The state in words, for error messages."""
        shown = ", ".join(self.entries[:5]) + (", ..." if len(self.entries) > 5 else "")
        if self.kind == "file":
            return "a file"
        if self.kind == "zarr":
            return "a zarr store that eocube did not write"
        if self.kind == "other":
            return f"a folder of other files ({shown})"
        if self.kind == "eocube" and self.pending is not None:
            kind = self.pending.get("kind", "update")
            return f"an eocube store whose {kind} did not finish"
        if self.kind == "eocube":
            return "an eocube store" + ("" if self.complete else " whose write did not finish")
        return "nothing" if self.kind == "absent" else "an empty folder"


def inspect_target(store: Any, storage_options: Mapping[str, Any] | None = None) -> TargetState:
    """Look at ``store`` (a path, URL or zarr store) without changing anything.

    Raises
    ------
    ValueError
        If the store's root ``zarr.json`` is damaged (not JSON).
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if isinstance(store, str):
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(store, **dict(storage_options or {}))
        from eocube import packed

        if not fs.exists(root):
            return TargetState("absent")
        if fs.isfile(root) and not packed.is_packed(store):
            return TargetState("file")
        names: tuple[str, ...] = ()
        if not fs.isfile(root):  # a packed store (one file) is told by its root document
            names = tuple(
                sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
            )
            if not names:
                return TargetState("empty")
            if METADATA not in names:
                return TargetState("other", entries=names)
    else:
        names = ()
    path = store_path(store, storage_options, read_only=True)
    doc = read_document(path)
    if doc is None:
        if isinstance(store, str):
            return TargetState("other", entries=names)
        return TargetState("empty" if not list_keys(path) else "other")
    attrs = doc.get("attributes") or {}
    details = incomplete_details(doc)
    marker = attrs.get(MARKER)
    if details is None and not isinstance(marker, Mapping):
        return TargetState("zarr", entries=names, root=doc)
    complete = details is None and isinstance(marker, Mapping) and bool(marker.get("complete"))
    return TargetState(
        "eocube", complete=complete, entries=names, root=doc, pending=pending_update(doc)
    )


def local_path(store: Any) -> str | None:
    """The absolute local path of a path or ``file://`` URL; None for other stores."""
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        return None
    if store.startswith("file://"):
        store = store[len("file://") :]
    elif "://" in store:
        return None
    return os.path.realpath(store)


@contextlib.contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's warning that fixed-length strings (band names) are not yet in the
    zarr v3 spec: eocube writes and reads them with zarr-python, which handles them; and
    its note, when it lists a store's members, that the staging area (:data:`STAGING`) is
    no zarr node."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=rf"Object at {re.escape(STAGING)} is not")
        yield
