"""The root ``zarr.json`` of a finished store, as small as zarr v3 allows.

On a small cube the metadata is most of the store: a 12 × 5 × 66 × 64 Sentinel-2 cube
at 0.1 bits per value has ~1.3 kB of video and had ~8 kB of ``zarr.json``. When a write
finishes, :func:`compact` rewrites the root document (the consolidated metadata of
every array) without what zarr v3 and zarr-python take as the default when it is absent:

- whitespace between JSON tokens;
- ``"storage_transformers": []`` and empty ``"attributes"``;
- the ``default`` chunk key encoding's ``"configuration": {"separator": "/"}`` (the
  spec's default separator);
- the ``zstd`` codec's ``"checksum": false``;
- xarray's ``_FillValue`` attribute on floating-point arrays whose zarr ``fill_value`` is
  NaN when it holds NaN too (~45 bytes an array): masking NaN as missing leaves floats as
  they are, so the values read are the same with or without it;

and stores an attribute that repeats another attribute of the same array once: rioxarray
and GDAL write the CRS as WKT twice, as ``crs_wkt`` (CF) and ``spatial_ref`` (GDAL),
~800 bytes each. The dropped copy is listed in the store's marker (``aliases``:
variable → {attribute: the attribute it equals}) and :func:`restore_aliases` puts it back
when eocube opens the store, so attributes round-trip exactly; plain zarr readers see
the CF attribute only (which rioxarray and GDAL read as well).

A release (:mod:`eocube.release`) may also keep once, in ``cubes/zarr.json``, the
attributes all its cubes share (:func:`common_attributes`, :func:`without_shared`);
each store's marker lists them (``shared``) and :func:`put_back` restores them.

Every document stays one that ``zarr.open_group`` and ``xr.open_zarr`` read.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

ALIASES = "aliases"
"""Key of the marker listing the attributes stored once (see :func:`compact`)."""
ALIAS_MIN_CHARS = 64
"""Shortest repeated attribute value worth an alias (an alias costs ~40 bytes)."""


def dumps(doc: Mapping[str, Any]) -> bytes:
    """A metadata document as compact JSON (NaN allowed, as zarr-python writes it)."""
    return json.dumps(doc, allow_nan=True, separators=(",", ":")).encode()


def compact(root: Mapping[str, Any], marker_key: str) -> dict[str, Any]:
    """The root document without zarr's optional defaults and with repeated attributes
    stored once (recorded under ``root.attributes[marker_key]["aliases"]``).

    Parameters
    ----------
    root : mapping
        The root group's ``zarr.json`` with inline consolidated metadata (others are
        returned as they are, less the defaults).
    marker_key : str
        The root attribute holding eocube's marker.

    Returns
    -------
    dict
        A new document; ``root`` is not changed.
    """
    doc = copy.deepcopy(dict(root))
    members = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
    aliases: dict[str, dict[str, str]] = {}
    for name, meta in members.items():
        if not isinstance(meta, dict):
            continue
        drop_defaults(meta)
        found = _alias_repeats(meta.get("attributes"))
        if found:
            aliases[name] = found
    marker = (doc.get("attributes") or {}).get(marker_key)
    if aliases and isinstance(marker, dict):
        known = marker.setdefault(ALIASES, {})
        for name, found in aliases.items():
            known.setdefault(name, {}).update(found)
    elif aliases:  # no marker to record them in: keep the repeats
        return compact_defaults_only(root)
    return doc


def compact_defaults_only(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` (an array's or the root's document) without zarr's optional defaults."""
    out = copy.deepcopy(dict(doc))
    if out.get("node_type") == "array":
        drop_defaults(out)
    for meta in ((out.get("consolidated_metadata") or {}).get("metadata") or {}).values():
        if isinstance(meta, dict):
            drop_defaults(meta)
    return out


def drop_defaults(meta: MutableMapping[str, Any]) -> None:
    """Remove, in place, the fields of an array's metadata that equal their defaults."""
    if meta.get("storage_transformers") == []:
        del meta["storage_transformers"]
    attrs = meta.get("attributes")
    if isinstance(attrs, dict) and _is_nan_fill(meta, attrs.get("_FillValue")):
        del attrs["_FillValue"]
    if meta.get("attributes") == {}:
        del meta["attributes"]
    if meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}}:
        meta["chunk_key_encoding"] = {"name": "default"}
    _drop_codec_defaults(meta.get("codecs"))


_FLOAT_TYPES = frozenset({"float16", "float32", "float64"})


def _is_nan_fill(meta: Mapping[str, Any], fill: Any) -> bool:
    """Whether ``fill`` (an array's ``_FillValue`` attribute as xarray writes it: a
    float's little-endian bytes in base64, of the array's width or float64's) is NaN on a
    float array whose zarr fill is NaN."""
    if str(meta.get("data_type")) not in _FLOAT_TYPES or meta.get("fill_value") != "NaN":
        return False
    if not isinstance(fill, str):
        return False
    try:
        raw = base64.b64decode(fill, validate=True)
    except ValueError:
        return False
    if len(raw) not in (2, 4, 8):
        return False
    return math.isnan(float(np.frombuffer(raw, dtype=f"<f{len(raw)}")[0]))


def _drop_codec_defaults(codecs: Any) -> None:
    if not isinstance(codecs, list):
        return
    for codec in codecs:
        if not isinstance(codec, dict):
            continue
        config = codec.get("configuration")
        if not isinstance(config, dict):
            continue
        if codec.get("name") == "zstd" and config.get("checksum") is False:
            del config["checksum"]
        if codec.get("name") == "sharding_indexed":
            _drop_codec_defaults(config.get("codecs"))
            _drop_codec_defaults(config.get("index_codecs"))


def _alias_repeats(attrs: Any) -> dict[str, str]:
    """Drop, in place, the attributes whose long string value an earlier attribute of the
    same array holds; return {dropped: the attribute it equals}."""
    if not isinstance(attrs, dict):
        return {}
    first_with: dict[str, str] = {}
    found: dict[str, str] = {}
    for key, value in list(attrs.items()):
        if not isinstance(value, str) or len(value) < ALIAS_MIN_CHARS:
            continue
        if value in first_with:
            found[key] = first_with[value]
            del attrs[key]
        else:
            first_with[value] = key
    return found


def restore_aliases(variables: Mapping[Any, Any], marker: Mapping[str, Any]) -> None:
    """Put back, in place, the attributes :func:`compact` stored once.

    ``variables`` maps names to objects with an ``attrs`` dict (xarray variables);
    attributes already present are left alone.
    """
    for name, found in (marker.get(ALIASES) or {}).items():
        var = variables.get(name)
        if var is None or not isinstance(found, Mapping):
            continue
        for key, source in found.items():
            if key not in var.attrs and source in var.attrs:
                var.attrs[key] = var.attrs[source]


SHARED = "shared"
"""Key of the marker listing the attributes a release keeps once for all its cubes (see
:func:`common_attributes`)."""
SHARED_VARIABLES = "eocube_shared"
"""Attribute of a release's ``cubes/zarr.json`` holding the variables' shared attributes."""
SHARE_MIN_CHARS = 24
"""Shortest attribute (key and value as JSON) worth keeping once for a release."""
KEPT_IN_EVERY_STORE = frozenset(
    {
        # what CF decoding and georeferencing read: a plain zarr reader of one store needs
        # them there
        "units",
        "calendar",
        "standard_name",
        "axis",
        "positive",
        "bounds",
        "coordinates",
        "grid_mapping",
        "_FillValue",
        "missing_value",
        "scale_factor",
        "add_offset",
        "valid_min",
        "valid_max",
        "valid_range",
        "flag_values",
        "flag_masks",
        "flag_meanings",
        "crs_wkt",
        "spatial_ref",
        "GeoTransform",
        "Conventions",
        "nodata",
        "zarr_conventions",
    }
)
"""Attributes never moved out of a store, whatever their size."""


def _shareable(key: str, value: Any) -> bool:
    if key in KEPT_IN_EVERY_STORE or ":" in key or key.startswith("_"):
        return False  # GeoZarr's proj:/spatial: keys, xarray's and zarr's own
    return len(key) + len(dumps({"v": value})) - 6 >= SHARE_MIN_CHARS


def _nodes(root: Mapping[str, Any], marker_key: str) -> dict[str, dict[str, Any]]:
    """Node ("" for the group, else an array's name) -> its attributes, less the marker."""
    out = {"": {k: v for k, v in (root.get("attributes") or {}).items() if k != marker_key}}
    members = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    for name, meta in members.items():
        if isinstance(meta, Mapping) and "/" not in name:
            out[name] = dict(meta.get("attributes") or {})
    return out


def common_attributes(
    roots: Sequence[Mapping[str, Any]], marker_key: str
) -> dict[str, dict[str, Any]]:
    """The attributes every root document holds with the same value, worth keeping once.

    Parameters
    ----------
    roots : list of mapping
        The root ``zarr.json`` of each cube of a release (consolidated metadata inline),
        with every attribute in place (:func:`with_shared`).
    marker_key : str
        The root attribute holding eocube's marker (never shared).

    Returns
    -------
    dict
        Node ("" for the root group, else an array's name) -> {attribute: value}; empty
        for fewer than two documents. Attributes CF decoding or georeferencing read
        (:data:`KEPT_IN_EVERY_STORE`, GeoZarr's ``proj:``/``spatial:`` keys) stay in every
        store, and so do short ones (:data:`SHARE_MIN_CHARS`).
    """
    if len(roots) < 2:
        return {}
    nodes = [_nodes(root, marker_key) for root in roots]
    common: dict[str, dict[str, Any]] = {}
    for node, attrs in nodes[0].items():
        same = {
            key: value
            for key, value in sorted(attrs.items())
            if _shareable(key, value)
            and all(_same_value(other.get(node, {}), key, value) for other in nodes[1:])
        }
        if same:
            common[node] = same
    return common


def _same_value(attrs: Mapping[str, Any], key: str, value: Any) -> bool:
    # as JSON: the documents' values are JSON, where 1 and 1.0 differ
    return key in attrs and dumps({"v": attrs[key]}) == dumps({"v": value})


def _attributes_of(doc: dict[str, Any], node: str) -> dict[str, Any] | None:
    if node == "":
        return doc.setdefault("attributes", {})
    meta = ((doc.get("consolidated_metadata") or {}).get("metadata") or {}).get(node)
    if not isinstance(meta, dict):
        return None
    return meta.setdefault("attributes", {})


def without_shared(
    root: Mapping[str, Any], shared: Mapping[str, Mapping[str, Any]], marker_key: str
) -> dict[str, Any]:
    """``root`` without the attributes ``shared`` keeps for the release, listed in its
    marker (``shared``: node -> attribute names); a new document."""
    doc = copy.deepcopy(dict(root))
    listed: dict[str, list[str]] = {}
    for node, attrs in shared.items():
        own = _attributes_of(doc, node)
        if own is None:
            continue
        keys = sorted(k for k in attrs if k in own)
        for key in keys:
            del own[key]
        if not own and node != "":
            members = doc["consolidated_metadata"]["metadata"]
            del members[node]["attributes"]
        if keys:
            listed[node] = keys
    marker = doc.setdefault("attributes", {}).setdefault(marker_key, {})
    marker.pop(SHARED, None)
    if listed:
        marker[SHARED] = listed
    return doc


def release_attributes(shared: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The attributes of a release's ``cubes/zarr.json``: the root groups' shared
    attributes as they are, the variables' under :data:`SHARED_VARIABLES`."""
    out = dict(shared.get("", {}))
    variables = {node: dict(attrs) for node, attrs in shared.items() if node != ""}
    if variables:
        out[SHARED_VARIABLES] = variables
    return out


def shared_values(release: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Node -> {attribute: value} of a release's ``cubes/zarr.json`` attributes (the
    inverse of :func:`release_attributes`)."""
    out: dict[str, dict[str, Any]] = {
        "": {k: v for k, v in release.items() if k != SHARED_VARIABLES}
    }
    variables = release.get(SHARED_VARIABLES)
    if isinstance(variables, Mapping):
        for node, attrs in variables.items():
            if isinstance(attrs, Mapping):
                out[str(node)] = dict(attrs)
    return out


def with_shared(
    root: Mapping[str, Any], release: Mapping[str, Any], marker_key: str
) -> tuple[dict[str, Any], list[str]]:
    """``root`` with the attributes its marker lists put back from the release's
    ``cubes/zarr.json`` attributes ``release``, and the marker's list removed.

    Returns
    -------
    (dict, list of str)
        The new document, and ``node.attribute`` of each listed attribute ``release``
        lacks (those stay absent).
    """
    doc = copy.deepcopy(dict(root))
    marker = (doc.get("attributes") or {}).get(marker_key)
    listed = marker.pop(SHARED, None) if isinstance(marker, dict) else None
    missing = put_back(listed, release, lambda node: _attributes_of(doc, node))
    return doc, missing


def put_back(
    listed: Any,
    release: Mapping[str, Any],
    attributes_of: Callable[[str], MutableMapping[Any, Any] | None],
) -> list[str]:
    """Put each attribute of ``listed`` (a marker's ``shared``: node -> names) back from
    ``release`` into ``attributes_of(node)`` (a dict, or None for a node that is not
    there); attributes already present are left alone. Returns those ``release`` lacks,
    as ``node.attribute`` (``attribute`` for the root group)."""
    if not isinstance(listed, Mapping):
        return []
    values = shared_values(release)
    missing = []
    for node, keys in listed.items():
        own = attributes_of(str(node))
        if own is None or not isinstance(keys, list):
            continue
        for key in keys:
            if key in own:
                continue
            if key in values.get(str(node), {}):
                own[key] = values[str(node)][key]
            else:
                missing.append(f"{node}.{key}" if node else str(key))
    return missing
