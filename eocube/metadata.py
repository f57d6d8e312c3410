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

Every document stays one that ``zarr.open_group`` and ``xr.open_zarr`` read.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Mapping, MutableMapping
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
