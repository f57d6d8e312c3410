"""Store overhead: the bytes of a store that are not chunk payload, at a low rate.

For each cube of the corpus (and two synthetic cubes of about 1 M values with regular
coordinates and no attributes, with and without a CRS), written with
``target_bpppb=0.1`` (``--bpppb``): the store's bytes, the video payloads' bytes, the
rest (``zarr.json``, coordinates, masks, other variables) and its share of the store.
Goals (issue "Compression, second wave", item 2): non-payload bytes <= 5 % of the store at
0.1 bpppb for cubes of >= 1 M values, and <= 1.5 kB for a cube with regular coordinates.

    python -m benchmarks.overhead [--corpus DIR] [--label after]

``--packed`` writes packed stores (``cube.eocube.zip``, :func:`eocube.pack`): one ZIP
file, its ``zarr.json`` deflated; each object counts with its entry's headers.

Runs of several versions (``--label``; run an old checkout's package with
``PYTHONPATH=<checkout>`` and this file copied there) are kept side by side in
``benchmarks/results/overhead.json``; ``overhead.md`` has the table of every label.

``--release`` measures instead releases of small tiles (each corpus cube of
:data:`RELEASE_CUBES` cut into 2 x 2 tiles, written with :func:`eocube.write_release`)
with and without ``share_attributes``: non-payload bytes per cube, the release's
``cubes/zarr.json`` shared among its cubes (``overhead_release.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from benchmarks import corpus
from benchmarks.common import git_state, md_table, save_results

RESULTS = Path(__file__).parent / "results"
_WKT_UTM31 = (
    'PROJCS["WGS 84 / UTM zone 31N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
    '6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",'
    '0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AUTHORITY["EPSG","4326"]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",3],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",'
    '500000],PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",'
    'EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","32631"]]'
)


def regular_cube(crs: bool) -> xr.Dataset:
    """A smooth 10 × 4 × 160 × 160 uint16 cube (1.02 M values) with regular coordinates
    and no attributes; with ``crs``, a rioxarray-style ``spatial_ref``."""
    rng = np.random.default_rng(0)
    t, b, y, x = 10, 4, 160, 160
    yy, xx = np.meshgrid(np.arange(y), np.arange(x), indexing="ij")
    base = 2000 + 800 * np.sin(yy / 17.0) * np.cos(xx / 23.0)
    data = base[None, None] + 300 * np.arange(b)[None, :, None, None]
    data = data + 50 * np.arange(t)[:, None, None, None] + rng.normal(0, 40, (t, b, y, x))
    ds = xr.Dataset(
        {"data": (("time", "band", "y", "x"), data.astype(np.uint16))},
        coords={
            "time": np.datetime64("2023-01-01") + np.arange(t) * np.timedelta64(5, "D"),
            "band": ["B02", "B03", "B04", "B08"],
            "y": 5_700_000.0 - 10.0 * np.arange(y) - 5.0,
            "x": 600_000.0 + 10.0 * np.arange(x) + 5.0,
        },
    )
    if crs:
        ds = ds.assign_coords(
            spatial_ref=xr.DataArray(0, attrs={"crs_wkt": _WKT_UTM31, "spatial_ref": _WKT_UTM31})
        )
        ds["data"].attrs["grid_mapping"] = "spatial_ref"
    return ds


def measure(name: str, ds: xr.Dataset, bpppb: float, packed: bool = False) -> dict[str, Any]:
    """Write ``ds`` at ``bpppb`` and split the store's bytes; ``packed``: write a packed
    store (one ZIP file, ``eocube.pack``), each object's bytes counted with its entry's
    headers."""
    import eocube

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("cube.eocube.zip" if packed else "cube.eocube")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = eocube.to_eocube(ds, path, target_bpppb=bpppb)
        if packed:
            files = _entries(path)
        else:
            files = {
                str(f.relative_to(path)): f.stat().st_size for f in path.rglob("*") if f.is_file()
            }
    payload = sum(v.payload_nbytes for v in report.variables.values())
    store = sum(files.values())

    def under(names: Any) -> int:
        wanted = set(names)
        return sum(n for key, n in files.items() if key.split("/")[0] in wanted)

    cube_vars = set(report.variables)
    other_vars = [str(v) for v in ds.data_vars if v not in cube_vars]
    coords = [str(c) for c in ds.coords]
    attrs_bytes = _source_attribute_bytes(ds)
    other_vars_bytes = under(other_vars)
    return {
        "cube": name,
        "values": int(report.values),
        "store_bytes": store,
        "payload_bytes": int(payload),
        "other_bytes": store - int(payload),
        "other_share": (store - payload) / store,
        "zarr_json_bytes": files.get("zarr.json", 0),
        "coordinate_bytes": under(coords),
        "other_variable_bytes": other_vars_bytes,
        "cube_framing_bytes": under(cube_vars) - int(payload),
        "source_attribute_bytes": attrs_bytes,
        # the store's own cost: neither payload, nor the source's other variables, nor
        # the attributes it came with
        "format_bytes": store - int(payload) - other_vars_bytes - attrs_bytes,
        "store_bpppb": store * 8 / report.values,
        "warnings": [str(w.message) for w in caught],
        "packed": packed,
    }


def _entries(archive: Path) -> dict[str, int]:
    """The bytes of a ZIP file by entry: what the entry holds, its headers and comment;
    the end record under ``(end record)``. They add up to the file's size."""
    from eocube.packed import entry_nbytes

    with zipfile.ZipFile(archive) as z:
        files = {
            i.filename: i.compress_size + entry_nbytes(i.filename) + len(i.comment)
            for i in z.infolist()
        }
    files["(end record)"] = archive.stat().st_size - sum(files.values())
    return files


def _source_attribute_bytes(ds: xr.Dataset) -> int:
    """What the source brought: its attributes (global and per variable) as compact JSON,
    a long text repeated under another name counted once (the store keeps it once, e.g. a
    CRS's WKT as both ``crs_wkt`` and ``spatial_ref``)."""
    seen: set[str] = set()
    kept: dict[str, dict[str, Any]] = {}
    for name, attrs in [("", ds.attrs), *((str(k), v.attrs) for k, v in ds.variables.items())]:
        for key, value in attrs.items():
            if isinstance(value, str) and len(value) > 64:
                if value in seen:
                    value = ""
                seen.add(value)
            kept.setdefault(name, {})[key] = value
    return len(json.dumps(kept, default=str, ensure_ascii=False, separators=(",", ":")))


LONG_ATTRIBUTE = 64  # characters: the string attributes a compressed copy would hold


def long_attributes(zarr_json: str, min_length: int = LONG_ATTRIBUTE) -> dict[str, int]:
    """What deflating a store's long string attributes into one base64 text of the
    marker would save (a candidate, not built): their bytes in ``zarr.json`` (key, value
    and separators) against the deflated, base64-encoded JSON of all of them, with the
    key that would hold it."""
    doc = json.loads(zarr_json)
    nodes = [("", doc), *(doc.get("consolidated_metadata") or {}).get("metadata", {}).items()]
    found = {
        f"{node}/{key}": value
        for node, meta in nodes
        for key, value in (meta.get("attributes") or {}).items()
        if key != "eocube" and isinstance(value, str) and len(value) >= min_length
    }
    in_json = sum(
        len(json.dumps(k.split("/", 1)[1])) + len(json.dumps(v)) + 2 for k, v in found.items()
    )
    blob = json.dumps(found, separators=(",", ":"), ensure_ascii=False).encode()
    packed = len(base64.b64encode(zlib.compress(blob, 9))) + len('"attributes_deflated":"",')
    return {
        "long_attributes": len(found),
        "long_attribute_bytes": in_json,
        "deflated_base64_bytes": packed if found else 0,
        "saving_bytes": in_json - packed if found else 0,
    }


def measure_attributes(name: str, ds: xr.Dataset) -> dict[str, Any]:
    """Write ``ds`` (crf 30: the attributes do not depend on the rate) and estimate what
    deflating its long attributes would save (:func:`long_attributes`)."""
    import eocube

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.eocube"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            eocube.to_eocube(ds, path, crf=30)
        text = (path / "zarr.json").read_text()
        store = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "cube": name,
        "zarr_json_bytes": len(text),
        "store_bytes_crf30": store,
        **long_attributes(text),
    }


RELEASE_CUBES = (
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_openeo_gfmap_12x5x66x64",
    "s2_l2a_worldcereal_118x4x64x64",
    "l8_ny18_014032",
    "s2_l1c_eolearn_5x13",
    "era5_t2m_uk_744h",
)


def _tiles(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """``ds`` cut into 2 x 2 tiles over y and x."""
    ny, nx = ds.sizes["y"] // 2, ds.sizes["x"] // 2
    return {
        f"tile-{i}{j}": ds.isel(y=slice(i * ny, (i + 1) * ny), x=slice(j * nx, (j + 1) * nx))
        for i in range(2)
        for j in range(2)
    }


def measure_release(name: str, ds: xr.Dataset, bpppb: float) -> dict[str, Any]:
    """Non-payload bytes per cube of ``ds``'s tiles as a release, with and without shared
    attributes (the shared document counted as its share per cube)."""
    import eocube

    tiles = _tiles(ds)
    out: dict[str, Any] = {"cube": name, "tiles": len(tiles)}
    for share in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "release"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eocube.write_release(
                    tiles, folder, progress=False, target_bpppb=bpppb, share_attributes=share
                )
            stores = [folder / f"cubes/{t}.eocube" for t in tiles]
            total = sum(f.stat().st_size for s in stores for f in s.rglob("*") if f.is_file())
            payload = 0
            for store in stores:
                with xr.open_dataset(store, engine="eocube") as opened:
                    quality = opened.encoding["eocube"].get("quality", {})
                    values = sum(
                        int(np.prod(opened[v].shape)) * q["payload_bpppb"] / 8
                        for v, q in quality.items()
                    )
                    payload += round(values)
            shared_doc = folder / "cubes/zarr.json"
            shared_bytes = shared_doc.stat().st_size if shared_doc.exists() else 0
        key = "shared" if share else "plain"
        out[f"{key}_other_per_cube"] = (total + shared_bytes - payload) / len(tiles)
        out[f"{key}_store_per_cube"] = (total + shared_bytes) / len(tiles)
        if share:
            out["shared_document_bytes"] = shared_bytes
    out["saved_per_cube"] = out["plain_other_per_cube"] - out["shared_other_per_cube"]
    # with many cubes, the shared document's share per cube tends to nothing
    out["saved_per_cube_many"] = out["saved_per_cube"] + out["shared_document_bytes"] / len(tiles)
    out["saved_share_of_store"] = out["saved_per_cube"] / out["plain_store_per_cube"]
    return out


def render_release(rows: list[dict[str, Any]], bpppb: float) -> str:
    header = [
        "cube (2 x 2 tiles)",
        "store B / cube",
        "other B / cube",
        "other B / cube, shared",
        "cubes/zarr.json B",
        "saved B / cube",
        "saved, of the store",
        "saved B / cube, many cubes",
    ]
    table = [
        [
            r["cube"],
            f"{r['plain_store_per_cube']:.0f}",
            f"{r['plain_other_per_cube']:.0f}",
            f"{r['shared_other_per_cube']:.0f}",
            r["shared_document_bytes"],
            f"{r['saved_per_cube']:.0f}",
            f"{100 * r['saved_share_of_store']:.1f} %",
            f"{r['saved_per_cube_many']:.0f}",
        ]
        for r in rows
    ]
    return (
        f"# Releases of small tiles at {bpppb} bpppb: attributes kept once\n\n"
        "`eocube.write_release(tiles, folder, target_bpppb=..., share_attributes=...)`; "
        "non-payload bytes per cube, the release's `cubes/zarr.json` counted as its share "
        "per cube. Reproduce: `python -m benchmarks.overhead --release`.\n\n"
        + md_table(header, table)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--bpppb", type=float, default=0.1)
    p.add_argument("--label", default="after")
    p.add_argument("--cubes", nargs="*", help="only these corpus cubes (file stems)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--release", action="store_true", help="releases of tiles, shared or not")
    p.add_argument(
        "--packed", action="store_true", help="write packed stores (one ZIP file, eocube.pack)"
    )
    p.add_argument(
        "--attributes",
        action="store_true",
        help="estimate what deflating the long attributes into the marker would save",
    )
    args = p.parse_args(argv)
    if args.release:
        return _main_release(args)
    if args.attributes:
        return _main_attributes(args)

    cubes: list[tuple[str, xr.Dataset]] = [
        ("regular 1 M, no CRS", regular_cube(False)),
        ("regular 1 M, CRS", regular_cube(True)),
    ]
    for nc in sorted(corpus.corpus_dir(args.corpus).glob("*.nc")):
        if args.cubes and nc.stem not in args.cubes:
            continue
        cubes.append((nc.stem, xr.open_dataset(nc).load()))
    rows = []
    for name, ds in cubes:
        row = measure(name, ds, args.bpppb, packed=args.packed)
        rows.append(row)
        print(
            f"{name:45s} {row['values']:>10d} values  store {row['store_bytes']:>8d} B  "
            f"other {row['other_bytes']:>6d} B ({100 * row['other_share']:.1f} %)",
            flush=True,
        )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "overhead.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[args.label] = {"bpppb": args.bpppb, "code": git_state(), "rows": rows}
    path.write_text(json.dumps(runs, indent=1))
    (args.out / "overhead.md").write_text(render(runs))
    print(render(runs))
    return 0


def _main_attributes(args: argparse.Namespace) -> int:
    """``--attributes``: the long attributes of each corpus cube, deflated (an estimate)."""
    rows = []
    for nc in sorted(corpus.corpus_dir(args.corpus).glob("*.nc")):
        if args.cubes and nc.stem not in args.cubes:
            continue
        row = measure_attributes(nc.stem, xr.open_dataset(nc).load())
        rows.append(row)
        print(f"{nc.stem:45s} saving {row['saving_bytes']:>5d} B", flush=True)
    header = [
        "cube",
        "zarr.json B",
        "long attributes",
        "their B in zarr.json",
        "deflated + base64 B",
        "saving B",
    ]
    table = [
        [
            r["cube"],
            r["zarr_json_bytes"],
            r["long_attributes"],
            r["long_attribute_bytes"],
            r["deflated_base64_bytes"],
            r["saving_bytes"],
        ]
        for r in rows
    ]
    text = (
        "# Long attributes deflated into the marker: what it would save (not built)\n\n"
        f"String attributes of at least {LONG_ATTRIBUTE} characters (titles, descriptions, "
        "sources, licences, WKT) of each store's `zarr.json`, against one deflated, "
        "base64-encoded JSON of all of them in the marker (`benchmarks.overhead."
        "long_attributes`). Plain zarr readers would no longer see them. Reproduce: "
        "`python -m benchmarks.overhead --attributes`.\n\n" + md_table(header, table) + "\n"
    )
    written = save_results(
        args.out, "overhead_attributes", text, {"min_length": LONG_ATTRIBUTE, "rows": rows}
    )
    return 0 if written else 1


def _main_release(args: argparse.Namespace) -> int:
    """``--release``: releases of tiles, with and without shared attributes."""
    release_rows = []
    for stem in RELEASE_CUBES:
        nc = corpus.corpus_dir(args.corpus) / f"{stem}.nc"
        if not nc.exists() or (args.cubes and stem not in args.cubes):
            continue
        row = measure_release(stem, xr.open_dataset(nc).load(), args.bpppb)
        release_rows.append(row)
        print(
            f"{stem:45s} other/cube {row['plain_other_per_cube']:8.0f} -> "
            f"{row['shared_other_per_cube']:8.0f} B",
            flush=True,
        )
    text = render_release(release_rows, args.bpppb)
    written = save_results(
        args.out, "overhead_release", text, {"bpppb": args.bpppb, "rows": release_rows}
    )
    return 0 if written else 1


def render(runs: dict[str, Any]) -> str:
    """The table of every run: non-payload bytes and share per cube, side by side."""
    labels = list(runs)
    names = list(dict.fromkeys(r["cube"] for run in runs.values() for r in run["rows"]))
    header = ["cube", "values"]
    for label in labels:
        header += [f"other B ({label})", f"share ({label})"]
    rows = []
    for name in names:
        line: list[Any] = [name, ""]
        for label in labels:
            found = [r for r in runs[label]["rows"] if r["cube"] == name]
            if found:
                r = found[0]
                line[1] = f"{r['values']:,}"
                line += [r["other_bytes"], f"{100 * r['other_share']:.1f} %"]
            else:
                line += ["", ""]
        rows.append(line)
    goal = (
        "Goals: non-payload share <= 5 % at 0.1 bpppb for cubes of >= 1 M values; "
        "<= 1.5 kB for a cube with regular coordinates."
    )
    text = "# Store overhead at 0.1 bpppb\n\n" + goal + "\n\n" + md_table(header, rows) + "\n"
    return text + _breakdown(labels[-1], runs[labels[-1]]["rows"])


def _breakdown(label: str, rows: list[dict[str, Any]]) -> str:
    """Where the non-payload bytes of run ``label`` go."""
    if not rows or "format_bytes" not in rows[0]:
        return ""
    header = [
        "cube",
        "other B",
        "zarr.json B",
        "coordinates B",
        "other variables B",
        "shard framing B",
        "source attributes B",
        "format B",
        "format share",
    ]
    table = [
        [
            r["cube"],
            r["other_bytes"],
            r["zarr_json_bytes"],
            r["coordinate_bytes"],
            r["other_variable_bytes"],
            r["cube_framing_bytes"],
            r["source_attribute_bytes"],
            r["format_bytes"],
            f"{100 * r['format_bytes'] / r['store_bytes']:.1f} %",
        ]
        for r in rows
    ]
    return (
        f"\n## Where the non-payload bytes go ({label})\n\n"
        "other = zarr.json + coordinates + other variables + shard framing. Other variables: "
        "the source's data variables that are not cubes (e.g. a scene-classification "
        "mask, coded losslessly). Shard framing: a cube variable's objects less its chunk "
        "payloads (shard indexes, checksums). Source attributes: the source's global and "
        "per-variable attributes as compact JSON, which zarr.json keeps. format = other - "
        "other variables - source attributes: what the store itself costs."
        + (
            " Packed: each object counts with its ZIP entry's headers (about 100 B an "
            "object, the end record in 'other'); the attributes are deflated with zarr.json, "
            "while their column shows them as JSON, so 'format' understates what the "
            "packed store itself costs."
            if rows[0].get("packed")
            else ""
        )
        + "\n\n"
        + md_table(header, table)
        + "\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
