"""Releases: many cubes in one folder, ready for :func:`eocube.hub.publish`.

A release folder holds::

    cubes/<id>.eocube    one eocube store per cube (``cubes/<id>.eocube.zip`` with
                         ``packed=True``: one packed store, :mod:`eocube.packed`)
    cubes/zarr.json      with ``share_attributes=True``: a zarr group holding, once, the
                         attributes every cube shares (:func:`move_shared_attributes`)
    catalog.parquet      one STAC item per cube, stac-geoparquet (eocube.catalog)
    README.md            the dataset card, with the hub's YAML metadata
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import xarray as xr

from eocube import metadata
from eocube.catalog import items, write_catalog
from eocube.layout import MARKER, METADATA
from eocube.progress import track
from eocube.report import EncodeReport
from eocube.stac import ASSET, cube_item
from eocube.write import to_eocube

logger = logging.getLogger(__name__)

CUBES_DIR = "cubes"
SHARED_METADATA = f"{CUBES_DIR}/{METADATA}"
"""Where a release keeps the attributes its cubes share (a zarr v3 group document)."""
CATALOG = "catalog.parquet"
CARD = "README.md"
DEFAULT_TAGS = ("eocube", "earth-observation", "remote-sensing", "climate", "zarr", "xarray")

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cube_path(cube_id: str, packed: bool = False) -> str:
    """Where cube ``cube_id`` lives in a release: ``cubes/<id>.eocube``, or with ``packed``
    ``cubes/<id>.eocube.zip``."""
    if not _ID.fullmatch(cube_id) or cube_id.endswith((".eocube", ".zip")):
        raise ValueError(
            f"cube id {cube_id!r}: use letters, digits, '.', '_' and '-' (no '.eocube' or "
            f"'.zip' suffix)"
        )
    return f"{CUBES_DIR}/{cube_id}.eocube" + (".zip" if packed else "")


def _check_folder(root: Path) -> None:
    """Refuse a folder that is neither new, empty, nor a release (it holds other files)."""
    if root.is_file():
        raise FileExistsError(f"{root} is a file: a release is written to a folder")
    if not root.is_dir():
        return
    names = sorted(p.name for p in root.iterdir())
    if not names or CATALOG in names or names == [CUBES_DIR]:
        return
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise FileExistsError(
        f"{root} is a folder of other files ({shown}), not a release: eocube writes a release "
        f"to a new folder, an empty one, or an earlier release; write to another folder"
    )


def write_release(
    cubes: Mapping[str, xr.Dataset | xr.DataArray],
    folder: str | os.PathLike[str],
    *,
    progress: bool = True,
    title: str | None = None,
    description: str | None = None,
    license: str = "other",
    tags: Sequence[str] = DEFAULT_TAGS,
    repo_id: str | None = None,
    row_group_size: int | None = None,
    share_attributes: bool = False,
    packed: bool = False,
    **to_eocube_kwargs: Any,
) -> pa.Table:
    """Write cubes as a release folder: stores, STAC catalog and dataset card.

    Each cube is encoded by :func:`eocube.to_eocube` shard by shard (bounded memory);
    with ``progress`` a line per cube and a progress bar over its shards are shown.

    Parameters
    ----------
    cubes : mapping of str to xarray.Dataset or DataArray
        Cube id -> cube. Ids are path segments: letters, digits, ``.``, ``_``, ``-``.
    folder : str or os.PathLike
        A local folder (created if needed).
    progress : bool
        Show progress.
    title, description : str, optional
        For the dataset card.
    license : str
        The card's ``license`` (a hub licence id, e.g. ``cc-by-4.0``; ``other`` by default).
    tags : sequence of str
        The card's ``tags``.
    repo_id : str, optional
        The hub repo the release is meant for, used in the card's examples.
    row_group_size : int, optional
        Catalog rows per Parquet row group (default: about 7·√(number of cubes)).
    share_attributes : bool
        Keep the attributes every cube holds alike (title, description, licence, long
        names...) once, in ``cubes/zarr.json``, instead of in every store
        (:func:`move_shared_attributes`): ~1–2.5 kB less per cube, much of a small cube's
        store at low rates. The stores then need their release folder for those
        attributes: a store copied or published on its own opens without them (with a
        warning naming them). Off by default.
    packed : bool
        Write each cube as a packed store, ``cubes/<id>.eocube.zip`` (one read-only ZIP
        file, :mod:`eocube.packed`): one object per cube to publish, and about half the
        bytes beside the video of a small cube (its metadata deflated). Not with
        ``share_attributes`` (a packed store's documents are not edited afterwards).
    **to_eocube_kwargs
        Passed to :func:`eocube.to_eocube` for every cube (``profile``, ``crf``,
        ``lossless``, ``chunks``, ``dims``, ``mode``...).

    Returns
    -------
    pyarrow.Table
        The catalog (:mod:`eocube.catalog`; :func:`eocube.catalog.items` gives its STAC
        items).
    """
    if not cubes:
        raise ValueError("a release needs at least one cube")
    if "storage_options" in to_eocube_kwargs:
        raise TypeError("write_release() writes to a local folder: it takes no storage_options")
    if packed and share_attributes:
        raise ValueError(
            "write_release(packed=True) cannot share attributes: a packed store's metadata "
            "is not edited once written (it is deflated instead); pass one of the two"
        )
    root = Path(folder)
    _check_folder(root)
    paths = {cube_path(cube_id, packed) for cube_id in cubes}
    found = [*root.glob(f"{CUBES_DIR}/*.eocube"), *root.glob(f"{CUBES_DIR}/*.eocube.zip")]
    strangers = sorted(
        p.relative_to(root).as_posix() for p in found if p.relative_to(root).as_posix() not in paths
    )
    if strangers:
        raise ValueError(
            f"{root} holds cubes that are not in this release ({', '.join(strangers)}): "
            "remove them or write the release to a new folder"
        )
    (root / CUBES_DIR).mkdir(parents=True, exist_ok=True)
    dims = to_eocube_kwargs.get("dims")
    written = []
    with track(len(cubes), label="release", unit="cubes", show=progress) as bar:
        for i, (cube_id, cube) in enumerate(cubes.items(), start=1):
            path = cube_path(cube_id, packed)
            logger.info("[%d/%d] %s -> %s", i, len(cubes), cube_id, path)
            ds = (
                cube.to_dataset(name=cube.name or "data")
                if isinstance(cube, xr.DataArray)
                else cube
            )
            report = to_eocube(ds, root / path, progress=progress, **to_eocube_kwargs)
            written.append((cube_id, path, ds, report))
            bar.advance()
    if share_attributes or (root / SHARED_METADATA).is_file():
        move_shared_attributes(root, list(cubes), share=share_attributes)
    cube_items = [
        cube_item(cube_id, path, ds, _resized(report, root / path), dims=dims)
        for cube_id, path, ds, report in written
    ]
    table = write_catalog(cube_items, root / CATALOG, row_group_size=row_group_size)
    (root / CARD).write_text(
        dataset_card(
            table, title=title, description=description, license=license, tags=tags, repo_id=repo_id
        ),
        encoding="utf-8",
    )
    return table


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def dataset_card(
    catalog: pa.Table,
    *,
    title: str | None = None,
    description: str | None = None,
    license: str = "other",
    tags: Sequence[Hashable] = DEFAULT_TAGS,
    repo_id: str | None = None,
) -> str:
    """The ``README.md`` of a release: hub YAML metadata, the cubes, how to open them.

    The metadata is ``huggingface_hub``'s :class:`~huggingface_hub.DatasetCardData`
    (licence, pretty name, tags, size category, the catalog as the dataset viewer's
    ``catalog`` config), written and checked by :class:`~huggingface_hub.DatasetCard`.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    repo = repo_id or "<org>/<release>"
    first_store = str(items(catalog)[0]["assets"][ASSET]["href"])
    meta = DatasetCardData(
        license=license,
        pretty_name=title or "eocube release",
        tags=[str(t) for t in tags],
        size_categories=[_size_category(catalog.num_rows)],
        configs=[{"config_name": "catalog", "data_files": CATALOG}],
    )
    lines = [
        f"# {title or 'eocube release'}",
        "",
        description
        or (
            "Earth-observation / climate cubes (time × band × y × x) compressed as video with "
            "[eocube](https://github.com/eocube/eocube): each cube is a zarr v3 store that "
            "opens lazily with xarray and reads only the chunks it touches."
        ),
        "",
        "## Cubes",
        "",
        "| id | shape | bands | dtype | CRS | time | MB | bpppb | PSNR dB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for item in sorted(items(catalog), key=lambda i: i["id"]):
        cube = item["properties"]
        start, end = cube.get("start_datetime"), cube.get("end_datetime")
        time = f"{start[:10]} – {end[:10]}" if start and end else "-"
        psnr = "-" if cube.get("eocube:psnr") is None else f"{cube['eocube:psnr']:.1f}"
        dimensions = cube.get("cube:dimensions", {}).values()
        bands: list[str] = next(
            (d.get("values", []) for d in dimensions if d["type"] == "bands"), []
        )
        shown = ", ".join(bands[:6]) + (", ..." if len(bands) > 6 else "")
        main = cube.get("cube:variables", {}).get(cube.get("eocube:variable"), {})
        crs = cube.get("proj:code") or ("WKT2" if "proj:wkt2" in cube else "-")
        lines.append(
            f"| {item['id']} | {' × '.join(map(str, cube.get('eocube:shape') or []))} | {shown} "
            f"| {main.get('data_type', '-')} | {crs} | {time} | {cube['eocube:bytes'] / 1e6:.3f} "
            f"| {cube['eocube:bpppb']:.3f} | {psnr} |"
        )
    lines += [
        "",
        "PSNR: mean over bands of 10·log10(range² / MSE) over valid pixels, the lowest over a "
        "cube's variables; bpppb: every stored byte × 8 / values.",
        "",
        "## How to open",
        "",
        "```python",
        "# pip install eocube",
        "import xarray as xr",
        "import eocube",
        "",
        f'catalog = eocube.open_catalog("hf://datasets/{repo}/{CATALOG}").to_pandas()',
        f'url = "hf://datasets/{repo}/{first_store}"',
        'cube = xr.open_dataset(url, engine="eocube", chunks={})',
        "window = cube.data.isel(time=slice(0, 8), y=slice(0, 64), x=slice(0, 64)).values",
        "```",
        "",
        "Pin a revision for reproducible reads: `hf://datasets/<repo>@<commit sha>/...`. Reads are "
        f"HTTP range requests of the chunks touched. `{CATALOG}` is stac-geoparquet (one STAC "
        "item per cube, readable by STAC tools and DuckDB); search it by longitude/latitude "
        "box, time and any column with "
        '`eocube.open_catalog(url, bbox=(4.0, 50.5, 5.0, 51.5), datetime="2020-01-01/2020-12-31", '
        'filters=[("eocube:psnr", ">", 40)])`.',
        "",
    ]
    return str(DatasetCard(f"---\n{meta.to_yaml()}\n---\n" + "\n".join(lines)))


def move_shared_attributes(
    folder: str | os.PathLike[str], cube_ids: Sequence[str], *, share: bool = True
) -> dict[str, Any]:
    """Keep once, in ``cubes/zarr.json``, the attributes all the release's cubes share.

    On small cubes the attributes a dataset repeats in every file (title, description,
    licence, history, long names...) weigh as much as the data: a 180 k-value Sentinel-2
    cube at 0.1 bits per value has ~2 kB of video and ~2.5 kB of such attributes. Each
    attribute that every cube's root group (or every cube's array of the same name) holds
    with the same value is moved into ``cubes/zarr.json``, a zarr v3 group document (the
    root groups' attributes as they are, the arrays' under
    :data:`eocube.metadata.SHARED_VARIABLES`), and listed in each store's marker
    (``shared``); ``xr.open_dataset(..., engine="eocube")`` puts them back. Attributes
    that CF decoding and georeferencing read stay in every store
    (:data:`eocube.metadata.KEPT_IN_EVERY_STORE`), so each store still opens with
    ``zarr.open_group`` and ``xr.open_zarr`` as before, less the shared descriptions;
    but a store copied out of its release opens without them (eocube warns, naming
    them).

    Written before the stores change (a store never lists an attribute the release
    document lacks); an earlier sharing is undone first, so calling it again over the
    same cubes gives the same documents, and ``share=False`` puts every attribute back
    into its store and removes ``cubes/zarr.json``.

    Parameters
    ----------
    folder : str or os.PathLike
        The release folder.
    cube_ids : sequence of str
        Its cubes (all of them: what they share is computed over these).
    share : bool
        False: undo an earlier sharing.

    Returns
    -------
    dict
        The attributes now kept once (``cubes/zarr.json``'s), empty if none.
    """
    root = Path(folder)
    parent = root / SHARED_METADATA
    release: dict[str, Any] = {}
    if parent.is_file():
        release = dict(json.loads(parent.read_text(encoding="utf-8")).get("attributes") or {})
    stores = [root / cube_path(cube_id) / METADATA for cube_id in cube_ids]
    full = []
    for cube_id, store in zip(cube_ids, stores, strict=True):
        doc, missing = metadata.with_shared(
            json.loads(store.read_text(encoding="utf-8")), release, MARKER
        )
        if missing:
            warnings.warn(
                f"cube {cube_id!r} lists shared attributes that {parent} lacks "
                f"({', '.join(missing)}): they cannot be restored",
                UserWarning,
                stacklevel=2,
            )
        full.append(doc)
    shared = metadata.common_attributes(full, MARKER) if share else {}
    # while the stores change, the release document holds what any of them may list
    both = metadata.shared_values(release)
    for node, attrs in shared.items():
        both.setdefault(node, {}).update(attrs)
    if any(both.values()):
        _replace(parent, _group_document(metadata.release_attributes(both)))
    for store, doc in zip(stores, full, strict=True):
        _replace(store, metadata.dumps(metadata.without_shared(doc, shared, MARKER)))
    if shared:
        _replace(parent, _group_document(metadata.release_attributes(shared)))
    else:
        parent.unlink(missing_ok=True)
    return metadata.release_attributes(shared)


def _resized(report: EncodeReport, store: Path) -> EncodeReport:
    """``report`` with the store's size now (less what the release keeps once)."""
    files = [store] if store.is_file() else [f for f in store.rglob("*") if f.is_file()]
    nbytes = sum(f.stat().st_size for f in files)
    return dataclasses.replace(
        report,
        nbytes=nbytes,
        bpppb=nbytes * 8 / report.values if report.values else report.bpppb,
        compression_ratio=report.original_nbytes / nbytes if nbytes else report.compression_ratio,
    )


def _group_document(attributes: dict[str, Any]) -> bytes:
    return metadata.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes})


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a temporary file, renamed over it)."""
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)
