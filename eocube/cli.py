"""The ``eocube`` command.

Every error is one line on stderr, ``eocube: error: ...``, with exit status 2 (``--debug``
shows the traceback); ``verify`` exits 1 when the store does not match its source. An
interrupted ``encode`` (Ctrl-C) exits 130 and says how to finish it with ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from eocube import __version__, metrics
from eocube.profiles import available_profiles, get_profile

EXIT_ERROR = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """An error of the command line (bad input file, a mistake in the arguments)."""


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line, as every other error of the command."""

    def error(self, message: str) -> NoReturn:
        print(f"eocube: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


# --- argument values ---------------------------------------------------------------------


def _parse_mapping(text: str, flag: str, value: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, _, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not key or not raw:
            raise argparse.ArgumentTypeError(f"{flag} wants name=value,... (got {part!r})")
        try:
            out[key] = value(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}: {raw!r} is not {'an integer' if value is int else 'a name'}"
            ) from None
    return out


def _parse_chunks(text: str) -> dict[str, int]:
    return _parse_mapping(text, "--chunks", int)


def _parse_dims(text: str) -> dict[str, str]:
    return _parse_mapping(text, "--dims", str)


def _parse_dates(text: str) -> list[str]:
    """``2024-01-01,2024-01-06``: one date per GeoTIFF (checked by eocube.geotiff)."""
    dates = [d.strip() for d in text.split(",")]
    if not all(dates):
        raise argparse.ArgumentTypeError(f"--dates wants dates separated by commas (got {text!r})")
    return dates


def _parse_bound(text: str) -> float | tuple[float, ...]:
    """One bound, or one per band: ``50`` or ``50,50,80,80``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--max-abs-error wants a number, or one per band separated by commas (got {text!r})"
        ) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--max-abs-error must be >= 0 (got {text!r})")
    return values[0] if len(values) == 1 else values


def _storage_options(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--storage-option wants KEY=VALUE (got {pair!r})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# --- messages in the user's words ------------------------------------------------------------

# The library's messages name Python arguments; the command line names its flags.
_FLAG_SPELLINGS = (
    (r"the same to_eocube\(\.\.\.\) call with resume=True", "the same command with --resume"),
    (
        r"dims=\{'time': \.\.\., 'band': \.\.\., 'y': \.\.\., 'x': \.\.\.\}",
        "--dims time=...,band=...,y=...,x=...",
    ),
    (r"dims=\{'(\w+)': \.\.\.\}", r"--dims \1=..."),
    (r"\bmode='w'", "--overwrite"),
    (r"\bresume=True", "--resume"),
    (r"\blossless=True", "--lossless"),
    (r"\bdims=", "--dims"),
    (r"\bchunks=", "--chunks"),
    (r"\bvariables=", "--variables"),
    (r"\bmax_abs_error=", "--max-abs-error"),
    (r"\bmax_abs_error\b", "--max-abs-error"),
    (r"\btarget_bpppb\b", "--target-bpppb"),
    (r"\btarget_psnr\b", "--target-psnr"),
    (r"\bcrf=", "--crf "),
    (r"\bdates=", "--dates"),
    (r"\bdate_pattern=", "--date-pattern"),
)


def in_cli_words(message: str) -> str:
    """A library message with Python argument names replaced by the command's flags."""
    for pattern, flag in _FLAG_SPELLINGS:
        message = re.sub(pattern, flag, message)
    return message


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError | TypeError | AttributeError | AssertionError | RuntimeError):
        text = f"{type(exc).__name__}: {text}"
    return in_cli_words(text)


# --- inputs --------------------------------------------------------------------------------


def _open_geotiffs(
    paths: Sequence[str], dates: Sequence[str] | None, date_pattern: str | None
) -> Any:
    """GeoTIFFs stacked along time (:func:`eocube.geotiff.open_geotiffs`), read lazily."""
    import os

    from eocube.geotiff import is_geotiff, open_geotiffs

    others = [p for p in paths if not is_geotiff(p)]
    if others:
        raise CommandError(
            f"--dates and --date-pattern stack GeoTIFFs (.tif, .tiff) along time; "
            f"not GeoTIFF: {', '.join(others)}"
        )
    for path in paths:
        if "://" not in path and not os.path.exists(path):
            raise CommandError(f"input {path} does not exist")
    try:
        return open_geotiffs(paths, dates=dates, date_pattern=date_pattern)
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def _open_input(path: str, *, lazy: bool = True) -> Any:
    """Open anything xarray reads (NetCDF, zarr, an eocube store) lazily, or a GeoTIFF as
    a cube of one date (:func:`eocube.geotiff.open_geotiffs`)."""
    import os

    import xarray as xr

    from eocube.geotiff import is_geotiff

    if is_geotiff(path):
        return _open_geotiffs([path], None, None)
    lower = path.lower().rstrip("/")
    if "://" not in path and not os.path.exists(path):
        raise CommandError(f"input {path} does not exist")
    try:
        if lower.endswith((".eocube", ".eocube.zip")):
            from eocube.backend import open_dataset

            ds = open_dataset(path, chunks={} if lazy else None)
        else:
            ds = xr.open_dataset(path, chunks={} if lazy else None)
    except CommandError:
        raise
    except Exception as exc:
        from eocube.errors import EocubeError

        if isinstance(exc, EocubeError):
            raise
        detail = _one_line(exc)
        if "did not find a match" in detail:
            detail = "no engine of xarray's recognises it"
        raise CommandError(
            f"cannot read input {path}: {detail} (a NetCDF, zarr, GeoTIFF or eocube store is "
            f"expected)"
        ) from exc
    ds.encoding.setdefault("source", path)
    return ds


# --- commands ------------------------------------------------------------------------------


def _warm(quiet: bool) -> None:
    from eocube import warmup

    if warmup.cached():
        return
    if not quiet:
        print(
            "eocube: compiling its Numba kernels for their first use (about a minute; "
            "cached for every later run)...",
            file=sys.stderr,
            flush=True,
        )
    seconds = warmup.warm_up()
    if not quiet:
        print(f"eocube: kernels compiled in {seconds:.0f} s", file=sys.stderr, flush=True)


def _warmup(args: argparse.Namespace) -> int:
    from eocube import warmup

    was = "were cached" if warmup.cached() else "compiled"
    seconds = warmup.warm_up()
    print(f"eocube's Numba kernels {was}: {seconds:.1f} s")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from eocube.backend import open_dataset
    from eocube.lifecycle import store_path
    from eocube.packed import packed_size
    from eocube.write import to_eocube

    _warm(quiet=False)
    ds = _open_input(args.input, lazy=False).load()
    if args.variable not in ds.data_vars:
        raise CommandError(
            f"{args.input} has no variable {args.variable!r}; it has {list(ds.data_vars)} "
            f"(choose one with --variable)"
        )
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
            report = to_eocube(ds, path, profile=name, lossless=lossless, crf=crf, measure=False)
            packed_nbytes = packed_size(store_path(path))
            # reopen lazily: nothing is decoded until values are asked for
            lazy = open_dataset(path, chunks={})
            t0 = time.perf_counter()
            decoded = lazy[args.variable].values
            seconds = time.perf_counter() - t0
            original = var.values
            exact = np.array_equal(original, decoded, equal_nan=original.dtype.kind == "f")
            label = name + ("" if crf is None else f" crf={crf}")
            rows.append(
                f"{label:26s} {report.nbytes:9d} {packed_nbytes:9d} {report.bpppb:7.3f} "
                f"{report.compression_ratio:7.1f} "
                f"{metrics.psnr(original, decoded, nodata):8.2f} "
                f"{metrics.max_abs_error(original, decoded, nodata):9.1f} "
                f"{report.seconds:6.2f} {seconds:6.2f} {'bit-exact' if exact else ''}"
            )
            if crf == args.crf[len(args.crf) // 2]:
                print(f"\nreport of one write ({label}):\n{report}\n\nreopened lazily:\n{lazy}\n")
    print(
        f"{'store':26s} {'bytes':>9s} {'packed':>9s} {'bpppb':>7s} {'ratio':>7s} {'PSNR dB':>8s} "
        f"{'max err':>9s} {'enc s':>6s} {'dec s':>6s}"
    )
    print("\n".join(rows))
    print("bytes and bpppb count every object of the store; packed: the bytes of the store as")
    print("one ZIP file (eocube pack, or to_eocube to a .zip path); PSNR is the mean over bands of")
    print("10·log10(range_b² / MSE_b) over valid pixels (docs/format.md, Metrics); max err in")
    print("data units; enc s: encoding and writing, dec s: reading the whole variable back.")
    return 0


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=1, default=_jsonable) if args.json else text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
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
            "wavelet": p.wavelet,
            "description": p.description,
        }
        for p in available_profiles().values()
    ]
    lines = [
        f"{'profile':22s} {'encoder':11s} {'pix_fmt':12s} {'bits':>4s} {'layout':16s} lossless gpu "
        "wavelet"
    ]
    lines += [
        f"{r['name']:22s} {r['encoder']:11s} {r['pix_fmt']:12s} {r['bits']:4d} {r['layout']:16s} "
        f"{'yes' if r['lossless'] else 'no':8s} {'yes' if r['gpu_decodable'] else 'no':3s} "
        f"{r['wavelet']}"
        for r in rows
    ]
    _emit(args, rows, "\n".join(lines))
    return 0


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


def encode_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments of :func:`eocube.to_eocube` that an ``encode`` command stands for."""
    return {
        "profile": args.profile,
        "chunks": args.chunks,
        "dims": args.dims,
        "variables": args.variables.split(",") if args.variables else None,
        "mode": "w" if args.overwrite else "w-",
        "resume": args.resume,
        **_quality_kwargs(args),
    }


def _check_not_a_stack(inputs: Sequence[str], output: str, stacked: bool) -> None:
    """Refuse several GeoTIFFs without dates written to a ``.eocube`` path: they would
    make a release folder of one-date cubes where a time series was surely meant."""
    from eocube.geotiff import is_geotiff

    if stacked or len(inputs) < 2 or not output.rstrip("/").endswith((".eocube", ".zip")):
        return
    if all(is_geotiff(p) for p in inputs):
        raise CommandError(
            f"several GeoTIFFs make a release folder (a cube each), not the store {output}: "
            f"to stack them along time into one cube, give their dates with --dates "
            f"2024-01-01,2024-01-06,... or --date-pattern (e.g. '%Y%m%d' in the file names)"
        )


def _encode(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eocube.write import to_eocube

    _warm(quiet=args.quiet or args.json)
    kwargs = {**encode_kwargs(args), "progress": not args.quiet and not args.json}
    stacked = args.dates is not None or args.date_pattern is not None
    _check_not_a_stack(args.inputs, args.output, stacked)
    if len(args.inputs) == 1 or stacked:
        if args.share_attributes:
            raise CommandError(
                "--share-attributes is for a release (several inputs, not stacked): a single "
                "store keeps its attributes"
            )
        if args.packed:
            raise CommandError(
                "--packed is for a release (several inputs, not stacked): a single store is "
                "packed by an OUTPUT ending in .zip"
            )
        opened = (
            _open_geotiffs(args.inputs, args.dates, args.date_pattern)
            if stacked
            else _open_input(args.inputs[0])
        )
        with opened as ds:
            report = to_eocube(
                ds, args.output, storage_options=_storage_options(args.storage_option), **kwargs
            )
        _emit(args, report.to_dict(), str(report))
        return 0
    from eocube.release import write_release

    if args.storage_option:
        raise CommandError(
            "a release (several inputs) is written to a local folder: no --storage-option"
        )
    ids = [Path(p).name.split(".")[0] for p in args.inputs]
    if len(set(ids)) != len(ids):
        raise CommandError(f"inputs must have distinct names (cube ids): {ids}")
    cubes = {cube_id: _open_input(p) for cube_id, p in zip(ids, args.inputs, strict=True)}
    from eocube.catalog import items

    table = write_release(
        cubes,
        args.output,
        progress=kwargs.pop("progress"),
        share_attributes=args.share_attributes,
        packed=args.packed,
        **kwargs,
    )
    rows = items(table)  # the catalog's STAC items
    text = "\n".join(
        f"{r['id']:30s} {p['eocube:bytes']:>12} bytes {p['eocube:bpppb']:8.4f} bpppb "
        f"PSNR {p.get('eocube:psnr', float('nan')):6.2f} dB"
        for r, p in ((r, r["properties"]) for r in rows)
    )
    _emit(args, rows, f"release {args.output}: {len(rows)} cubes\n{text}")
    return 0


def _unfinished_info(store: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """What an unfinished store holds: shards written and chunks staged per variable."""
    import zarr
    from zarr.storage import StorePath

    from eocube import layout, lifecycle
    from eocube.codec import VideoCodec

    real = lifecycle.store_path(store, storage_options, read_only=True)
    group = zarr.open_group(StorePath(lifecycle.UnfinishedView(real.store), real.path), mode="r")
    staged = lifecycle.list_keys(real, layout.STAGING)
    variables = {}
    for name, arr in group.arrays():
        if not isinstance(arr.serializer, VideoCodec) or arr.shards is None:
            continue
        counts = [math.ceil(n / s) for n, s in zip(arr.shape, arr.shards, strict=True)]
        written = [k for k in lifecycle.list_keys(real, f"{name}/c") if not layout.is_temporary(k)]
        variables[name] = {
            "shards": math.prod(counts),
            "shards_written": len(written),
            "chunks_staged": sum(1 for k in staged if f"{layout.STAGING}/{name}/" in k),
        }
    return {"store": store, "complete": False, "variables": variables}


def _store_info(store: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    import zarr

    from eocube.backend import open_dataset
    from eocube.codec import VideoCodec
    from eocube.hubfs import hub_store, is_hub_url
    from eocube.layout import MARKER
    from eocube.lifecycle import quiet_zarr
    from eocube.lifecycle import store_path as path_of
    from eocube.packed import PackedStore, is_packed
    from eocube.report import lossless_codec
    from eocube.shards import payload_nbytes

    with quiet_zarr():
        ds = open_dataset(store, storage_options=storage_options)
        # hf:// through the client open_dataset used (its listing answers the sizes, and
        # its block cache, when asked for, keeps the indexes, not 1 MiB blocks)
        hub = is_hub_url(store) and not is_packed(store)
        location = hub_store(store, storage_options) if hub else store
        group = zarr.open_group(path_of(location, storage_options, read_only=True), mode="r")
        store_path = group.store_path
        if isinstance(store_path.store, PackedStore):
            nbytes = store_path.store.archive_nbytes
        else:
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
            if isinstance(codec, VideoCodec):
                payload = payload_nbytes(group[str(name)])
                entry.update(
                    profile=codec.profile,
                    crf=codec.quality,
                    max_abs_error=codec.max_abs_error,
                    payload_bytes=payload,
                    payload_bpppb=payload * 8 / var.size,
                )
                values += var.size
                original += var.size * var.dtype.itemsize
            else:
                entry["codec"] = lossless_codec(arr)
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
    from eocube import lifecycle

    options = _storage_options(args.storage_option)
    state = lifecycle.inspect_target(args.store, options)
    if state.kind != "eocube":
        raise CommandError(f"{args.store} is not an eocube store: it is {state.describe()}")
    if not state.complete:
        info = _unfinished_info(args.store, options)
        parts = [
            f"{name}: {v['shards_written']} of {v['shards']} shards written, "
            f"{v['chunks_staged']} more chunks encoded"
            for name, v in info["variables"].items()
        ]
        _emit(
            args,
            info,
            f"{args.store}: incomplete: its write was interrupted ({'; '.join(parts)}); "
            "run the same `eocube encode` command with --resume to finish it",
        )
        return 0
    info = _store_info(args.store, options)
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
        else:
            line += f"  stored losslessly ({v['codec']})"
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
    from eocube.backend import open_dataset
    from eocube.verify import verify_store

    options = _storage_options(args.storage_option)
    info = _store_info(args.store, options)
    stored = open_dataset(args.store, storage_options=options)
    with _open_input(args.against) as original:
        result = verify_store(
            stored,
            original,
            recorded=info.get("recorded_quality") or {},
            bound=args.max_abs_error,
            psnr_margin=args.psnr_margin,
            progress=not args.quiet and not args.json,
        )
    result = {"store": args.store, "against": args.against, **result}
    lines = [f"{args.store} against {args.against}: {'OK' if result['ok'] else 'FAILED'}"]
    for name, e in result["variables"].items():
        for problem in e.get("problems", []):
            lines.append(f"  {name}: FAILED: {problem}")
        if "psnr" in e:
            line = (
                f"  {name}: PSNR {e['psnr']:.2f} dB"
                + (f" (recorded {float(e['recorded_psnr']):.2f})" if "recorded_psnr" in e else "")
                + f", max abs error {e['max_abs_error']:.6g}, checksums {e['checksums']}"
            )
            if "bound" in e:
                line += f", bound {'held' if e['bound_held'] else 'BROKEN'}"
            lines.append(line)
            lines.append("    PSNR per band: " + ", ".join(f"{p:.2f}" for p in e["psnr_per_band"]))
        for note in e.get("notes", []):
            lines.append(f"  {name}: {note}")
    _emit(args, result, "\n".join(lines))
    return 0 if result["ok"] else EXIT_FAILED


def _pack(args: argparse.Namespace) -> int:
    from eocube.packed import pack

    report = pack(
        args.store,
        args.target,
        storage_options=_storage_options(args.storage_option),
        overwrite=args.overwrite,
    )
    _emit(args, dataclasses.asdict(report), str(report))
    return 0


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
        progress=not args.quiet,
    )
    print(sha)
    return 0


# --- the parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eocube`` command."""
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="show eocube's logs (eocube.* loggers) from this level on, on stderr",
    )
    parser = _Parser(
        prog="eocube",
        description="Earth-observation and climate cubes compressed as video (zarr v3 stores).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="write a cube lossless and lossy, reopen it lazily, print size and error",
    )
    demo.add_argument("input", help="a NetCDF/zarr file xarray opens")
    demo.add_argument("--variable", default="data", help="the (time, band, y, x) variable")
    demo.add_argument(
        "--crf", type=int, nargs="+", default=[8, 16, 24, 32], help="lossy crf values"
    )
    demo.set_defaults(func=_demo)
    prof = sub.add_parser("profiles", parents=[common], help="list the codec profiles")
    prof.add_argument("--json", action="store_true", help="print JSON")
    prof.set_defaults(func=_profiles)
    warm = sub.add_parser(
        "warmup", parents=[common], help="compile the Numba kernels once (about a minute)"
    )
    warm.set_defaults(func=_warmup)

    enc = sub.add_parser(
        "encode",
        parents=[common],
        help="compress cubes: one input to a store, several to a release folder",
        description="Compress anything xarray opens (NetCDF, zarr), or GeoTIFFs "
        "(pip install 'eocube[geotiff]'). One INPUT makes the store OUTPUT; several make a "
        "release folder OUTPUT (cubes/<id>.eocube, catalog.parquet, README.md), but GeoTIFFs "
        "with --dates or --date-pattern, which are stacked along time into the store OUTPUT. "
        "The same store as eocube.to_eocube(xr.open_dataset(INPUT), OUTPUT, ...) (for "
        "GeoTIFFs eocube.open_geotiffs(INPUTS, dates=...)) with the same settings.",
    )
    enc.add_argument("inputs", nargs="+", metavar="INPUT", help="input files")
    enc.add_argument("output", metavar="OUTPUT", help="store path/URL, or release folder")
    enc.add_argument("--profile", help="codec profile (see `eocube profiles`)")
    quality = enc.add_mutually_exclusive_group()
    quality.add_argument("--lossless", action="store_true", help="bit-exact (integer data)")
    quality.add_argument(
        "--crf",
        type=float,
        help="codec quality: lower is better and bigger (x265 profiles: -6 to 44; "
        "below 0, constant QP 0 to 5; hevc-12bit-444-wavelet down to -30: below -6, "
        "SPERR gets twice the bytes every 6 steps)",
    )
    quality.add_argument("--target-bpppb", type=float, help="bits per pixel per band of the store")
    quality.add_argument("--target-psnr", type=float, help="PSNR (dB) every cube variable reaches")
    quality.add_argument(
        "--max-abs-error",
        type=_parse_bound,
        metavar="E[,E...]",
        help="hard bound on every value's error: one number, or one per band",
    )
    dated = enc.add_mutually_exclusive_group()
    dated.add_argument(
        "--dates",
        type=_parse_dates,
        metavar="D1,D2,...",
        help="stack the GeoTIFF inputs along time, one date per file in their order "
        "(e.g. 2024-01-01,2024-01-06)",
    )
    dated.add_argument(
        "--date-pattern",
        metavar="PATTERN",
        help="stack the GeoTIFF inputs along time, each dated by its file name: a strftime "
        "pattern found in the name (e.g. %%Y%%m%%d for S2A_20240106_T31UDQ.tif)",
    )
    enc.add_argument("--chunks", type=_parse_chunks, help="e.g. time=32,y=256,x=256")
    enc.add_argument(
        "--share-attributes",
        action="store_true",
        help="release: keep the attributes every cube shares once, in OUTPUT/cubes/zarr.json "
        "(smaller stores; a store copied out alone then lacks them)",
    )
    enc.add_argument(
        "--packed",
        action="store_true",
        help="release: each cube as one read-only ZIP file, OUTPUT/cubes/<id>.eocube.zip "
        "(smaller; a single store is packed by an OUTPUT ending in .zip)",
    )
    enc.add_argument(
        "--dims",
        type=_parse_dims,
        help="roles of dims eocube does not recognise: time=t,band=b,...",
    )
    enc.add_argument("--variables", help="comma-separated variables to encode as video")
    enc.add_argument(
        "--overwrite", action="store_true", help="replace an existing eocube store (nothing else)"
    )
    enc.add_argument("--resume", action="store_true", help="finish an interrupted write")
    enc.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    enc.add_argument("--quiet", action="store_true", help="no progress bar")
    enc.add_argument("--json", action="store_true", help="print the report as JSON")
    enc.set_defaults(func=_encode)

    info = sub.add_parser(
        "info", parents=[common], help="what a store holds: variables, chunks, profile, size"
    )
    info.add_argument("store", help="store path or URL")
    info.add_argument(
        "--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    ver = sub.add_parser(
        "verify",
        parents=[common],
        help="compare a store with its source: shapes, coordinates, PSNR against the one "
        "recorded, bounds, missing values (NaN, nodata) where they were, checksums (exit 1 "
        "when they do not match)",
    )
    ver.add_argument("store", help="store path or URL")
    ver.add_argument("--against", required=True, help="the original (anything xarray opens)")
    ver.add_argument(
        "--max-abs-error",
        type=_parse_bound,
        metavar="E[,E...]",
        help="a bound to check, one number or one per band (default: the store's)",
    )
    ver.add_argument(
        "--psnr-margin",
        type=float,
        default=0.1,
        help="dB the PSNR may fall below the one the store recorded (default 0.1)",
    )
    ver.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.add_argument("--quiet", action="store_true", help="no progress")
    ver.set_defaults(func=_verify)

    pk = sub.add_parser(
        "pack",
        parents=[common],
        help="pack a finished store into one ZIP file (read-only, smaller: for publishing)",
    )
    pk.add_argument("store", help="the store (path or URL)")
    pk.add_argument("target", help="the file to write, its name ending in .zip")
    pk.add_argument("--overwrite", action="store_true", help="replace an existing file")
    pk.add_argument("--storage-option", action="append", metavar="KEY=VALUE", help="fsspec option")
    pk.add_argument("--json", action="store_true", help="print JSON")
    pk.set_defaults(func=_pack)

    pub = sub.add_parser(
        "publish",
        parents=[common],
        help="upload a release folder, store or packed store to a hub dataset repo, print the "
        "commit sha",
    )
    pub.add_argument(
        "folder",
        help="a release folder (eocube.write_release), an .eocube store or a packed .eocube.zip",
    )
    pub.add_argument("repo_id", help="<namespace>/<name> of the dataset repo (created if missing)")
    pub.add_argument("--endpoint", help="the hub's URL (default: HF_ENDPOINT or huggingface.co)")
    pub.add_argument("--token", help="a write token (default: the saved one, or HF_TOKEN)")
    pub.add_argument("--revision", help="the branch to commit to (default: main)")
    pub.add_argument("--message", help="the commit message")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.add_argument("--quiet", action="store_true", help="no progress")
    pub.set_defaults(func=_publish)
    return parser


def _interrupted(args: argparse.Namespace) -> str:
    if args.command != "encode":
        return "eocube: interrupted"
    from eocube import lifecycle, packed

    if packed.is_packed(args.output):
        return (
            f"eocube: interrupted: nothing was written to {args.output} (a packed store is "
            f"written whole); run the same command again"
        )

    try:
        state = lifecycle.inspect_target(args.output, _storage_options(args.storage_option))
    except Exception:
        state = None
    if state is not None and state.kind == "eocube" and not state.complete:
        return (
            f"eocube: interrupted: {args.output} is incomplete (no reader opens it); run the "
            f"same command with --resume to finish it, keeping the chunks already encoded"
        )
    return f"eocube: interrupted: run the same command again (with --resume for {args.output})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eocube`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "log_level", None):
        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("eocube").setLevel(args.log_level)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"eocube: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
