"""The ``eocube`` command."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from eocube import metrics
from eocube.errors import EocubeError
from eocube.profiles import available_profiles, get_profile


def _demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import xarray as xr

    from eocube.backend import open_dataset
    from eocube.store import to_eocube

    with xr.open_dataset(args.input) as src:
        ds = src.load()
    var = ds[args.variable]
    nodata = var.attrs.get("nodata")
    nodata = None if nodata is None else float(nodata)
    print(f"{args.input}: {args.variable!r} {dict(var.sizes)} {var.dtype}, {var.nbytes} bytes")
    settings: list[tuple[str, bool, int | None]] = [(get_profile(lossless=True).name, True, None)]
    settings += [(get_profile().name, False, q) for q in args.crf]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, lossless, crf in settings:
            path = Path(tmp) / f"{name}-{crf}.eocube"
            report = to_eocube(ds, path, profile=name, lossless=lossless, crf=crf)
            # reopen lazily: nothing is decoded until values are asked for
            lazy = open_dataset(path, chunks={})
            t0 = time.perf_counter()
            decoded = lazy[args.variable].values
            seconds = time.perf_counter() - t0
            original = var.values
            exact = np.array_equal(original, decoded, equal_nan=original.dtype.kind == "f")
            label = name + ("" if crf is None else f" crf={crf}")
            rows.append(
                f"{label:26s} {report.nbytes:9d} {report.bpppb:7.3f} "
                f"{report.compression_ratio:7.1f} "
                f"{metrics.psnr(original, decoded, nodata):8.2f} "
                f"{metrics.max_abs_error(original, decoded, nodata):9.1f} "
                f"{report.seconds:6.2f} {seconds:6.2f} {'bit-exact' if exact else ''}"
            )
            if crf == args.crf[len(args.crf) // 2]:
                print(f"\nreport of one write ({label}):\n{report}\n\nreopened lazily:\n{lazy}\n")
    print(
        f"{'store':26s} {'bytes':>9s} {'bpppb':>7s} {'ratio':>7s} {'PSNR dB':>8s} "
        f"{'max err':>9s} {'enc s':>6s} {'dec s':>6s}"
    )
    print("\n".join(rows))
    print("bytes and bpppb count every object of the store; PSNR is the mean over bands of")
    print("10·log10(range_b² / MSE_b) over valid pixels (DESIGN.md); max err in data units.")
    return 0


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=1, default=_jsonable) if args.json else text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def _profiles(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": p.name,
            "encoder": p.encoder,
            "pix_fmt": p.pix_fmt,
            "bits": p.bits,
            "layout": p.layout,
            "lossless": p.lossless,
            "gpu_decodable": p.gpu_decodable,
            "description": p.description,
        }
        for p in available_profiles().values()
    ]
    lines = [
        f"{'profile':22s} {'encoder':11s} {'pix_fmt':12s} {'bits':>4s} {'layout':16s} lossless gpu"
    ]
    lines += [
        f"{r['name']:22s} {r['encoder']:11s} {r['pix_fmt']:12s} {r['bits']:4d} {r['layout']:16s} "
        f"{'yes' if r['lossless'] else 'no':8s} {'yes' if r['gpu_decodable'] else 'no'}"
        for r in rows
    ]
    _emit(args, rows, "\n".join(lines))
    return 0


def _parse_chunks(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        dim, _, size = part.partition("=")
        if not dim or not size.isdigit():
            raise argparse.ArgumentTypeError(f"--chunks wants dim=size,... (got {part!r})")
        out[dim.strip()] = int(size)
    return out


def _storage_options(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _open_input(path: str) -> Any:
    import xarray as xr

    lower = path.lower()
    if lower.endswith((".tif", ".tiff")):
        try:
            import rioxarray  # noqa: F401
        except ImportError:
            raise EocubeError(
                f"{path}: GeoTIFF input needs rioxarray (pip install rioxarray)"
            ) from None
        return xr.open_dataset(path, engine="rasterio", chunks={})
    if lower.rstrip("/").endswith(".eocube"):
        from eocube.backend import open_dataset

        return open_dataset(path, chunks={})
    return xr.open_dataset(path, chunks={})


def _quality_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.lossless:
        kw["lossless"] = True
    if args.crf is not None:
        kw["crf"] = args.crf
    if args.target_bpppb is not None:
        kw["target_bpppb"] = args.target_bpppb
    if args.target_psnr is not None:
        kw["target_psnr"] = args.target_psnr
    if args.max_abs_error is not None:
        kw["max_abs_error"] = args.max_abs_error
    return kw


def _encode(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eocube.store import to_eocube

    kwargs: dict[str, Any] = {
        "profile": args.profile,
        "chunks": args.chunks,
        "variables": args.variables.split(",") if args.variables else None,
        "mode": "w" if args.overwrite else "w-",
        "resume": args.resume,
        "progress": not args.quiet and not args.json,
        **_quality_kwargs(args),
    }
    if len(args.inputs) == 1:
        with _open_input(args.inputs[0]) as ds:
            report = to_eocube(
                ds, args.output, storage_options=_storage_options(args.storage_option), **kwargs
            )
        _emit(args, report.to_dict(), str(report))
        return 0
    from eocube.release import write_release

    cubes = {Path(p).name.split(".")[0]: _open_input(p) for p in args.inputs}
    kwargs.pop("mode")
    table = write_release(cubes, args.output, progress=kwargs.pop("progress"), **kwargs)
    rows = table.to_pylist()
    text = "\n".join(
        f"{r['id']:30s} {r.get('bytes', 0):>12} bytes {r.get('bpppb', float('nan')):8.4f} bpppb "
        f"PSNR {r.get('psnr', float('nan')):6.2f} dB"
        for r in rows
    )
    _emit(args, rows, f"release {args.output}: {len(rows)} cubes\n{text}")
    return 0


def _store_info(store: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    import zarr

    from eocube.backend import open_dataset
    from eocube.codec import VideoCodec
    from eocube.dims import cube_roles
    from eocube.reader import MARKER, quiet_zarr
    from eocube.storage import payload_nbytes

    with quiet_zarr():
        ds = open_dataset(store, storage_options=storage_options)
        group = zarr.open_group(store, mode="r", storage_options=storage_options)
        store_path = group.store_path
        nbytes = int(zarr.core.sync.sync(store_path.store.getsize_prefix(store_path.path)))
        variables = {}
        values = original = 0
        for name, var in ds.data_vars.items():
            arr = group[str(name)]
            assert isinstance(arr, zarr.Array)
            codec = arr.serializer
            entry: dict[str, Any] = {
                "dims": list(var.dims),
                "shape": list(var.shape),
                "dtype": str(var.dtype),
                "chunks": list(arr.chunks),
                "shards": list(arr.shards) if arr.shards else None,
            }
            if isinstance(codec, VideoCodec) and cube_roles(var) is not None:
                payload = payload_nbytes(group, str(name))
                entry.update(
                    profile=codec.profile,
                    crf=codec.quality,
                    max_abs_error=codec.max_abs_error,
                    payload_bytes=payload,
                    payload_bpppb=payload * 8 / var.size,
                )
                values += var.size
                original += var.size * var.dtype.itemsize
            variables[str(name)] = entry
    marker = ds.encoding.get(MARKER, {})
    return {
        "store": store,
        "format": marker.get("format"),
        "complete": marker.get("complete"),
        "bytes": nbytes,
        "bpppb": nbytes * 8 / values if values else None,
        "compression_ratio": original / nbytes if nbytes else None,
        "recorded_quality": marker.get("quality"),
        "variables": variables,
    }


def _info(args: argparse.Namespace) -> int:
    info = _store_info(args.store, _storage_options(args.storage_option))
    lines = [
        f"{info['store']}: {info['bytes']} bytes, "
        + (
            f"{info['bpppb']:.4f} bpppb, ratio {info['compression_ratio']:.1f}"
            if info["bpppb"]
            else "no cube variable"
        )
    ]
    for name, v in info["variables"].items():
        shape = "x".join(map(str, v["shape"]))
        line = f"  {name:16s} {shape:18s} {v['dtype']:8s} chunks {v['chunks']}"
        if "profile" in v:
            crf = "-" if v["crf"] is None else f"{v['crf']:g}"
            line += f"  {v['profile']} crf={crf} payload {v['payload_bpppb']:.4f} bpppb"
            if v["max_abs_error"] is not None:
                line += f" max_abs_error={v['max_abs_error']}"
        lines.append(line)
    recorded = info.get("recorded_quality")
    if recorded:
        for name, q in recorded.items():
            lines.append(
                f"  recorded {name}: PSNR {q.get('psnr')} dB, "
                f"max abs error {q.get('max_abs_error')}"
            )
    _emit(args, info, "\n".join(lines))
    return 0


def _verify(args: argparse.Namespace) -> int:
    import xarray as xr

    from eocube.backend import open_dataset
    from eocube.errors import CorruptChunkError

    options = _storage_options(args.storage_option)
    info = _store_info(args.store, options)
    result: dict[str, Any] = {
        "store": args.store,
        "against": args.against,
        "variables": {},
        "ok": True,
    }
    stored = open_dataset(args.store, storage_options=options)
    with xr.open_dataset(args.against) as original:
        for name, v in info["variables"].items():
            if "profile" not in v:
                continue
            entry: dict[str, Any] = {}
            try:
                decoded = np.asarray(stored[name].values)
                entry["checksums"] = "ok"
            except CorruptChunkError as exc:
                entry.update(checksums="failed", error=str(exc))
                result["ok"] = False
                result["variables"][name] = entry
                continue
            orig = np.asarray(original[name].values)
            nodata = original[name].attrs.get("nodata")
            nodata = None if nodata is None else float(nodata)
            stats = metrics.ErrorStats.of(orig, decoded, nodata)
            entry.update(
                psnr=stats.psnr(),
                psnr_per_band=stats.psnr_per_band().tolist(),
                max_abs_error=stats.max_abs_error(),
                max_abs_error_per_band=stats.max_error.tolist(),
            )
            bound = args.max_abs_error if args.max_abs_error is not None else v.get("max_abs_error")
            if bound is not None:
                bounds = np.broadcast_to(np.asarray(bound, dtype=float), stats.max_error.shape)
                entry["bound"] = bounds.tolist()
                entry["bound_held"] = bool(np.all(stats.max_error <= bounds))
                result["ok"] &= entry["bound_held"]
            result["variables"][name] = entry
    lines = [f"{args.store} against {args.against}: {'OK' if result['ok'] else 'FAILED'}"]
    for name, e in result["variables"].items():
        if e.get("checksums") == "failed":
            lines.append(f"  {name}: checksum FAILED: {e['error']}")
            continue
        line = (
            f"  {name}: PSNR {e['psnr']:.2f} dB, max abs error {e['max_abs_error']:.6g}, "
            "checksums ok"
        )
        if "bound" in e:
            line += f", bound {'held' if e['bound_held'] else 'BROKEN'}"
        lines.append(line)
        lines.append("    PSNR per band: " + ", ".join(f"{p:.2f}" for p in e["psnr_per_band"]))
    _emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else 1


def _publish(args: argparse.Namespace) -> int:
    from eocube.hub import publish

    sha = publish(
        args.folder,
        args.repo_id,
        endpoint=args.endpoint,
        token=args.token,
        revision=args.revision,
        commit_message=args.message,
        private=args.private,
    )
    print(sha)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eocube`` command."""
    parser = argparse.ArgumentParser(prog="eocube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="write a cube lossless and lossy, reopen it lazily, print size and error",
    )
    demo.add_argument("input", help="a NetCDF/zarr file xarray opens")
    demo.add_argument("--variable", default="data", help="the (time, band, y, x) variable")
    demo.add_argument(
        "--crf", type=int, nargs="+", default=[8, 16, 24, 32], help="lossy crf values"
    )
    demo.set_defaults(func=_demo)
    prof = sub.add_parser("profiles", help="list the codec profiles")
    prof.add_argument("--json", action="store_true", help="print JSON")
    prof.set_defaults(func=_profiles)

    enc = sub.add_parser(
        "encode",
        help="compress cubes: one input to a store, several to a release folder",
        description="Compress anything xarray opens (NetCDF, zarr, GeoTIFF with rioxarray). "
        "One INPUT makes the store OUTPUT; several make a release folder OUTPUT "
        "(cubes/<id>.eocube, catalog.parquet, README.md).",
    )
    enc.add_argument("inputs", nargs="+", metavar="INPUT", help="input files")
    enc.add_argument("output", metavar="OUTPUT", help="store path/URL, or release folder")
    enc.add_argument("--profile", help="codec profile (see `eocube profiles`)")
    quality = enc.add_mutually_exclusive_group()
    quality.add_argument("--lossless", action="store_true", help="bit-exact (integer data)")
    quality.add_argument("--crf", type=float, help="codec quality: lower is better and bigger")
    quality.add_argument("--target-bpppb", type=float, help="bits per pixel per band of the store")
    quality.add_argument("--target-psnr", type=float, help="PSNR (dB) every cube variable reaches")
    quality.add_argument("--max-abs-error", type=float, help="hard bound on every value's error")
    enc.add_argument("--chunks", type=_parse_chunks, help="e.g. time=32,y=256,x=256")
    enc.add_argument("--variables", help="comma-separated variables to encode as video")
    enc.add_argument("--overwrite", action="store_true", help="replace an existing store")
    enc.add_argument("--resume", action="store_true", help="finish an interrupted write")
    enc.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.add_argument("--json", action="store_true", help="print the report as JSON")
    enc.set_defaults(func=_encode)

    info = sub.add_parser("info", help="what a store holds: variables, chunks, profile, size")
    info.add_argument("store", help="store path or URL")
    info.add_argument(
        "--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    ver = sub.add_parser(
        "verify",
        help="compare a store with its source: PSNR, max error, checksums (exit 1 on failure)",
    )
    ver.add_argument("store", help="store path or URL")
    ver.add_argument("--against", required=True, help="the original (anything xarray opens)")
    ver.add_argument("--max-abs-error", type=float, help="a bound to check (default: the store's)")
    ver.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.set_defaults(func=_verify)

    pub = sub.add_parser(
        "publish",
        help="upload a release folder or store to a hub dataset repo, print the commit sha",
    )
    pub.add_argument("folder", help="a release folder (eocube.write_release) or an .eocube store")
    pub.add_argument("repo_id", help="<namespace>/<name> of the dataset repo (created if missing)")
    pub.add_argument("--endpoint", help="the hub's URL (default: HF_ENDPOINT or huggingface.co)")
    pub.add_argument("--token", help="a write token (default: the saved one, or HF_TOKEN)")
    pub.add_argument("--revision", help="the branch to commit to (default: main)")
    pub.add_argument("--message", help="the commit message")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.set_defaults(func=_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eocube`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (EocubeError, OSError, KeyError) as exc:
        print(f"eocube: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
