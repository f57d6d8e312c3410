"""The xarray backend ``engine="eocube"``: a thin entry point over eocube.reader.

The store is zarr v3, read lazily: a selection decodes only the chunks it touches
(:mod:`eocube.reader`), ``chunks={}`` gives dask chunks equal to the stored chunks, and
fsspec URLs work with ``storage_options``. Damaged chunks raise CorruptChunkError
naming the variable and chunk; a store whose write never finished is refused. Every CF
keyword of ``xr.open_dataset`` is honoured (``decode_cf=False`` gives the stored
values and attributes as they are), and an opened variable's ``encoding`` holds no
eocube codec, so ``to_zarr`` and ``to_netcdf`` write plain, lossless copies of the
values read (:func:`eocube.reader.plain_encoding`).

What opens, and what its groups are:

- an eocube store (written by :func:`eocube.to_eocube`): one cube, the root group;
- a zarr store whose groups are eocube stores (each written by ``to_eocube`` to
  ``<store>/<group>``): ``group=`` opens one, ``xr.open_datatree`` opens all, one node
  per zarr group (groups without the eocube marker give nodes of their attributes and
  plain arrays);
- a release folder (:func:`eocube.write_release`): its groups are its cubes, named by
  their catalog id: ``group="<id>"`` opens one, ``xr.open_datatree`` gives one node per
  cube (sorted by id) under an empty root.

xarray imports this module to list its engines: it imports nothing heavy (the reader,
and with it PyAV and Numba, comes with the first ``open_dataset``; pyarrow, for a
release's catalog, with the first release opened).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xarray as xr
from xarray.backends import BackendEntrypoint, StoreBackendEntrypoint

from eocube import metadata
from eocube.layout import MARKER, METADATA
from eocube.packed import is_packed, open_packed

if TYPE_CHECKING:
    from eocube.reader import EocubeZarrStore, FrameDecoder

# What zarr raises when a location holds no readable zarr group (or not the one asked)
_OPEN_FAILURES = (TypeError, ValueError, KeyError, OSError)


@dataclass(frozen=True)
class Decoding:
    """How xarray decodes the stored variables: the CF keywords of ``xr.open_dataset``."""

    mask_and_scale: Any = True
    decode_times: Any = True
    concat_characters: Any = True
    decode_coords: Any = True
    use_cftime: Any = None
    decode_timedelta: Any = None
    drop_variables: str | Iterable[str] | None = None

    def keywords(self) -> dict[str, Any]:
        """The keywords of :class:`xarray.backends.StoreBackendEntrypoint`'s open."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclass(frozen=True)
class Source:
    """Where a store, a store with groups or a release lies, and how to read it."""

    location: Any
    """A path or fsspec URL (``str``), or a zarr store."""
    storage_options: Mapping[str, Any] | None = None
    consolidated: bool | None = None
    frame_decoder: FrameDecoder | None = None

    def named(self, group: str | None = None) -> str:
        """The location (and group), for messages."""
        where = str(self.location)
        return where if not group else f"{where} (group {group!r})"

    def source_encoding(self) -> str | None:
        """``encoding["source"]``: the absolute path of a local store, else the URL."""
        if not isinstance(self.location, str):
            return None
        if "://" in self.location:
            return self.location
        return os.path.abspath(os.path.expanduser(self.location))


def _node(group: str | None) -> str:
    """A group as a DataTree node path (``"/"`` for the root)."""
    return "/" + (group or "").strip("/")


def _joined(parent: str, child: str) -> str:
    """The node path ``child`` (relative to ``parent``, both node paths) from the root."""
    return "/" + "/".join(p for p in (*parent.split("/"), *child.split("/")) if p)


def _open_stores(source: Source, group: str | None, *, tree: bool) -> dict[str, EocubeZarrStore]:
    """The zarr group ``group`` of ``source`` (``tree``: and every group below it), by node
    path relative to ``group``."""
    from eocube.reader import EocubeZarrStore

    location, options = source.location, source.storage_options
    if is_packed(location):
        location, options = open_packed(location, options), None
    elif isinstance(location, str) and location.startswith("hf://"):
        # hf:// reads exactly the bytes of the touched chunks (no fsspec read-ahead)
        from eocube.hubfs import hub_store

        location, options = hub_store(location, options), None
    elif isinstance(location, str) and "://" in location and options:
        # zarr >= 3.2 refuses storage_options for the URLs it maps to a local store
        # (file://): the fsspec store is made here, as the writer makes it
        from eocube.lifecycle import store_path

        location, options = store_path(location, options, read_only=True).store, None
    keywords: dict[str, Any] = {
        "mode": "r",
        "consolidated": source.consolidated,
        "consolidate_on_close": False,
        "storage_options": dict(options) if options else None,
        "zarr_format": 3,
    }
    if not tree:
        store = EocubeZarrStore.open_group(location, group=group, **keywords)
        stores = {"/": store}
    else:
        parent = _node(group)
        found = EocubeZarrStore.open_store(location, group=parent, **keywords)
        stores = {"/" + path[len(parent) :].strip("/"): store for path, store in found.items()}
    for store in stores.values():
        store.frame_decoder = source.frame_decoder
    return stores


def _open_failure(source: Source, group: str | None, exc: BaseException) -> Exception:
    """The error to raise when zarr could not open ``group`` of ``source``."""
    from eocube.reader import explain_open_failure

    error = explain_open_failure(source.location, source.storage_options, exc)
    if group and error is exc:  # the store is there and fine: the group is not
        return FileNotFoundError(f"{source.location} has no group {group!r} ({exc})")
    return error


def _release_cubes(source: Source) -> dict[str, str] | None:
    """Cube id -> location of each cube, if ``source`` is a release folder; else None."""
    if not isinstance(source.location, str):
        return None
    from eocube.lifecycle import inspect_target

    try:
        state = inspect_target(source.location, source.storage_options)
    except Exception:  # the caller explains the failure it had; this was only a guess
        return None
    if state.kind != "other":
        return None
    from eocube.release import CATALOG

    if CATALOG not in state.entries:
        return None
    from eocube.catalog import STORE_COLUMN, open_catalog

    root = source.location.rstrip("/")
    table = open_catalog(
        f"{root}/{CATALOG}", columns=["id", STORE_COLUMN], storage_options=source.storage_options
    )
    # the catalog keeps its rows in spatial order: a tree lists its cubes by id
    rows = sorted(table.to_pylist(), key=lambda row: row["id"])
    return {row["id"]: f"{root}/{row[STORE_COLUMN]}" for row in rows}


def _cube_in_release(
    source: Source, cubes: Mapping[str, str], group: str
) -> tuple[Source, str | None]:
    """The cube a release's ``group`` (``<id>`` or ``<id>/<group in the cube>``) names."""
    cube_id, _, inner = group.strip("/").partition("/")
    if cube_id not in cubes:
        raise FileNotFoundError(
            f"release {source.location} has no cube {cube_id!r}; its cubes: {_listed(cubes)}"
        )
    return dataclasses.replace(source, location=cubes[cube_id]), inner or None


def _listed(names: Iterable[str], most: int = 8) -> str:
    shown = list(names)
    return ", ".join(shown[:most]) + (f", ... ({len(shown)} in all)" if len(shown) > most else "")


def _decoded(store: EocubeZarrStore, decoding: Decoding, where: str, *, cube: bool) -> xr.Dataset:
    """The dataset of one zarr group, CF-decoded; ``cube``: it must be a finished eocube
    store (else: a group without the eocube marker opens as its plain arrays)."""
    from eocube.reader import check_complete

    try:
        attrs = dict(store.zarr_group.attrs)
        if MARKER in attrs:
            check_complete(attrs, where)
        elif cube:  # not a cube: say which groups are, if any (a listing: only here)
            check_complete(attrs, where, groups=tuple(store.zarr_group.group_keys()))
        ds = StoreBackendEntrypoint().open_dataset(store, **decoding.keywords())
    except BaseException:
        store.close()
        raise
    return _with_marker_applied(ds)


def _with_marker_applied(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with eocube's marker moved from its attributes to its encoding, and what the
    writer added undone: attributes stored once, GeoZarr attributes derived from the CF
    grid mapping, variables transposed on write."""
    marker = ds.attrs.pop(MARKER, None)
    if marker is None:
        return ds
    from eocube import georef

    ds.encoding[MARKER] = marker
    metadata.restore_aliases(ds.variables, marker)
    georef.drop_derived(ds)
    # variables given in another order than (time, band, y, x) read in their own
    for name, dims in (marker.get("dims") or {}).items():
        if (
            name in ds.variables
            and tuple(dims) != ds[name].dims
            and set(dims) == set(ds[name].dims)
        ):
            ds[name] = _transposed(ds[name], tuple(dims))
    return ds


def _transposed(var: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
    """``var`` in the order ``dims``, its per-dim encodings (chunks, shards) reordered too."""
    order = [var.dims.index(d) for d in dims]
    out = var.transpose(*dims)
    for key in ("chunks", "shards"):
        value = out.encoding.get(key)
        if isinstance(value, tuple | list) and len(value) == len(order):
            out.encoding[key] = tuple(value[i] for i in order)
    return out


def _open_cube(source: Source, group: str | None, decoding: Decoding) -> xr.Dataset:
    """One cube: the store at ``source`` (its group ``group``), or a release's cube."""
    try:
        (store,) = _open_stores(source, group, tree=False).values()
    except _OPEN_FAILURES as exc:
        cubes = _release_cubes(source)
        if cubes is None:
            raise _open_failure(source, group, exc) from exc
        if group is None:
            raise ValueError(
                f"{source.location} is an eocube release of {len(cubes)} cubes, not one cube: "
                f"open one with group='<cube id>' ({_listed(cubes)}), or all of them with "
                f"xr.open_datatree({str(source.location)!r}, engine='eocube')"
            ) from None
        return _open_cube(*_cube_in_release(source, cubes, group), decoding)
    ds = _decoded(store, decoding, source.named(group), cube=True)
    if group is None:
        _restore_shared(ds, source)
    if (where := source.source_encoding()) is not None:
        ds.encoding.setdefault("source", where)
    return ds


def _restore_shared(ds: xr.Dataset, source: Source) -> None:
    """Put back the attributes the store's release keeps once (its marker's ``shared``
    list, :func:`eocube.release.move_shared_attributes`) from ``../zarr.json``; warn, naming
    them, for those that cannot be found (the store was copied out of its release)."""
    marker = ds.encoding.get(MARKER)
    listed = marker.get(metadata.SHARED) if isinstance(marker, Mapping) else None
    if not listed:
        return
    release, where = _release_attributes(source)

    def attributes_of(node: str) -> dict[Any, Any] | None:
        if node == "":
            return ds.attrs
        var = ds.variables.get(node)
        return None if var is None else var.attrs

    missing = metadata.put_back(listed, release or {}, attributes_of)
    if missing:
        why = "lacks them" if release is not None else "cannot be read"
        warnings.warn(
            f"{source.named()} keeps attributes in its release's {where}, which {why}: "
            f"it opens without {_listed(missing)}. Open the store inside its release "
            f"folder (cubes/<id>.eocube next to cubes/zarr.json) to get them",
            UserWarning,
            stacklevel=4,
        )


def _release_attributes(source: Source) -> tuple[dict[str, Any] | None, str]:
    """The attributes of the ``zarr.json`` in the folder holding the store at ``source``
    (None if there is none, or it cannot be read), and where it was looked for."""
    location = source.location
    if not isinstance(location, str):
        return None, "zarr.json (the store was given as a zarr store, not a path or URL)"
    location = location.rstrip("/")
    if "://" in location:
        folder = location.rsplit("/", 1)[0]
    else:
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(location)))
    where = f"{folder}/{METADATA}"
    from eocube.hubfs import filesystem

    try:
        fs, path = filesystem(where, source.storage_options)
        doc = json.loads(fs.cat_file(path))
    except Exception:  # absent or unreadable: the caller warns, the data still opens
        return None, where
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return (dict(attrs) if isinstance(attrs, dict) else None), where


def _open_groups(source: Source, group: str | None, decoding: Decoding) -> dict[str, xr.Dataset]:
    """Every group of the store (or cube of the release) at ``source``, from ``group`` on,
    by node path relative to it."""
    try:
        stores = _open_stores(source, group, tree=True)
    except _OPEN_FAILURES as exc:
        cubes = _release_cubes(source)
        if cubes is None:
            raise _open_failure(source, group, exc) from exc
        if group is not None:
            return _open_groups(*_cube_in_release(source, cubes, group), decoding)
        groups = {"/": xr.Dataset()}
        try:
            for cube_id, location in cubes.items():
                cube = dataclasses.replace(source, location=location)
                for path, ds in _open_groups(cube, None, decoding).items():
                    groups[_joined(cube_id, path)] = ds
        except BaseException:
            _close_all(groups.values())
            raise
        return groups
    groups = {}
    try:
        for path, store in stores.items():
            where = source.named(_joined(group or "", path).strip("/") or None)
            groups[path] = _decoded(store, decoding, where, cube=False)
            if path == "/" and group is None:
                _restore_shared(groups[path], source)
        if not any(MARKER in ds.encoding for ds in groups.values()):
            from eocube.errors import IncompleteStoreError

            raise IncompleteStoreError(
                f"{source.named(group)} is not an eocube store: none of its groups has the "
                f"{MARKER!r} attribute"
            )
    except BaseException:
        _close_all(groups.values())
        _close_all(stores.values())
        raise
    if (origin := source.source_encoding()) is not None:
        for ds in groups.values():
            ds.encoding.setdefault("source", origin)
    return groups


def _close_all(closables: Iterable[Any]) -> None:
    for each in closables:
        each.close()


class EocubeBackendEntrypoint(BackendEntrypoint):
    """Open eocube stores with ``xr.open_dataset(path, engine="eocube")``.

    ``xr.open_datatree`` and ``xr.open_groups`` open a store with groups, or a release,
    one node per group (cube); see :mod:`eocube.backend` for what the groups are.
    """

    description = "Open eocube stores (zarr v3 with video-coded chunks) lazily"
    url = "https://github.com/eocube/eocube"
    supports_groups = True
    # open_dataset_parameters: set from the signature, below the class

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: Any = True,
        decode_times: Any = True,
        concat_characters: Any = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        consolidated: bool | None = None,
        frame_decoder: FrameDecoder | None = None,
    ) -> xr.Dataset:
        """Open an eocube store, or one cube of a store with groups or of a release, lazily
        (see :func:`eocube.open_dataset` for the keywords)."""
        from eocube.lifecycle import quiet_zarr

        decoding = Decoding(
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
            drop_variables=drop_variables,
        )
        source = Source(_location(filename_or_obj), storage_options, consolidated, frame_decoder)
        with quiet_zarr():
            return _open_cube(source, group, decoding)

    def open_groups_as_dict(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: Any = True,
        decode_times: Any = True,
        concat_characters: Any = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        consolidated: bool | None = None,
        frame_decoder: FrameDecoder | None = None,
    ) -> dict[str, xr.Dataset]:
        """Every group of a store (every cube of a release), by node path, from ``group``
        on (``xr.open_groups``); the keywords are those of :meth:`open_dataset`."""
        from eocube.lifecycle import quiet_zarr

        decoding = Decoding(
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
            drop_variables=drop_variables,
        )
        source = Source(_location(filename_or_obj), storage_options, consolidated, frame_decoder)
        with quiet_zarr():
            return _open_groups(source, group, decoding)

    def open_datatree(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: Any = True,
        decode_times: Any = True,
        concat_characters: Any = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        consolidated: bool | None = None,
        frame_decoder: FrameDecoder | None = None,
    ) -> xr.DataTree:
        """:meth:`open_groups_as_dict` as a DataTree (``xr.open_datatree``)."""
        groups = self.open_groups_as_dict(
            filename_or_obj,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
            group=group,
            storage_options=storage_options,
            consolidated=consolidated,
            frame_decoder=frame_decoder,
        )
        try:
            tree = xr.DataTree.from_dict(groups)
        except BaseException:
            _close_all(groups.values())
            raise
        for path, ds in groups.items():
            tree[path].set_close(ds.close)
        return tree

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for paths and URLs ending in ``.eocube`` (folder stores) or ``.eocube.zip``
        (packed stores)."""
        try:
            path = os.fspath(filename_or_obj)
        except TypeError:
            return False
        return str(path).rstrip("/").endswith((".eocube", ".eocube.zip"))


# xarray turns decode_cf=False into False for each CF keyword named here, and detects the
# names itself only for engines it loads by name, not for the class eocube.open_dataset
# passes: so they are listed, from the signature (one source of truth).
EocubeBackendEntrypoint.open_dataset_parameters = tuple(
    name
    for name in inspect.signature(EocubeBackendEntrypoint.open_dataset).parameters
    if name != "self"
)


def _location(filename_or_obj: Any) -> Any:
    """A path as a ``str``; URLs and zarr stores as they are."""
    if isinstance(filename_or_obj, os.PathLike):
        return os.fspath(filename_or_obj)
    return filename_or_obj


def open_dataset(
    store: Any,
    *,
    chunks: Mapping[str, int] | str | None = None,
    group: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open an eocube store lazily.

    Same as ``xr.open_dataset(store, engine="eocube", chunks=chunks, group=group,
    storage_options=storage_options, **kwargs)``.

    Parameters
    ----------
    store : str, os.PathLike or zarr store
        Path or fsspec URL (``hf://datasets/<repo>@<rev>/<path>.eocube``, ``s3://``...)
        of an eocube store, of a zarr store whose groups are eocube stores, or of a
        release folder.
    chunks : None, {} or mapping
        None: lazy numpy-backed arrays, decoded on access. ``{}``: dask arrays chunked
        like the store.
    group : str, optional
        The group to open: a zarr group of a store with groups, or the id of one cube of
        a release (``"<id>"``, or ``"<id>/<group>"`` for a group inside that cube).
        ``xr.open_datatree(store, engine="eocube")`` opens every group at once.
    storage_options : mapping, optional
        Passed to fsspec; for ``hf://`` URLs, to ``huggingface_hub.HfFileSystem``
        (``endpoint``, ``token``), whose reads then fetch exact byte ranges
        (:mod:`eocube.hubfs`).
    **kwargs
        Passed to ``xr.open_dataset``, all honoured: the CF keywords ``decode_cf``,
        ``mask_and_scale``, ``decode_times``, ``decode_timedelta``, ``use_cftime``,
        ``concat_characters``, ``decode_coords`` and ``drop_variables``
        (``decode_cf=False``: the stored values and attributes, undecoded); ``cache``,
        ``inline_array`` and the like; ``consolidated`` (zarr's consolidated metadata:
        None uses it where present); ``frame_decoder=`` decodes the video streams with
        another decoder than the CPU's, e.g. :class:`eocube.gpu.NvdecDecoder`.

    Returns
    -------
    xarray.Dataset
        The cube. Its variables' ``encoding`` keeps the stored chunks, dtype and CF
        encoding but no eocube codec (that is in ``encoding["eocube_codec"]``), so
        ``to_zarr`` and ``to_netcdf`` write plain, lossless copies of the values read.
    """
    return xr.open_dataset(
        store,
        engine=EocubeBackendEntrypoint,
        chunks=chunks,
        group=group,
        storage_options=storage_options,
        **kwargs,
    )
