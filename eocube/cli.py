"""The ``eocube`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from eocube import metrics
from eocube.chunk import decode_chunk, encode_chunk
from eocube.errors import EocubeError
from eocube.profiles import available_profiles, get_profile


def _demo(args: argparse.Namespace) -> int:
    import xarray as xr

    with xr.open_dataset(args.input) as ds:
        var = ds[args.variable]
        data = var.values
        nodata = var.attrs.get("nodata")
    nodata = None if nodata is None else float(nodata)
    print(f"{args.input}: variable {args.variable!r} {dict(var.sizes)} {data.dtype}")
    print(f"{'setting':34s} {'bytes':>9s} {'bpppb':>7s} {'ratio':>7s} {'PSNR dB':>8s} {'max err':>8s} {'enc s':>6s} {'dec s':>6s}")
    settings: list[tuple[str, int | None]] = [(get_profile(lossless=True).name, None)]
    lossy = get_profile()
    settings += [(lossy.name, q) for q in args.crf]
    for name, quality in settings:
        t0 = time.perf_counter()
        payload = encode_chunk(data, name, quality=quality, nodata=nodata)
        t1 = time.perf_counter()
        decoded = decode_chunk(payload)
        t2 = time.perf_counter()
        label = f"{name}" + ("" if quality is None else f" crf={quality}")
        psnr = metrics.psnr(data, decoded, nodata)
        err = metrics.max_abs_error(data, decoded, nodata)
        exact = "exact" if np.array_equal(data, decoded, equal_nan=data.dtype.kind == "f") else ""
        print(
            f"{label:34s} {len(payload):9d} {metrics.bpppb(len(payload), data.shape):7.3f} "
            f"{metrics.compression_ratio(len(payload), data.shape, data.dtype):7.1f} "
            f"{psnr:8.2f} {err:8.1f} {t1 - t0:6.2f} {t2 - t1:6.2f} {exact}"
        )
    print("PSNR: mean over bands of 10·log10(range_b² / MSE_b) over valid pixels (DESIGN.md).")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    print(f"{'profile':22s} {'encoder':11s} {'pix_fmt':12s} {'bits':>4s} {'layout':16s} {'lossless':8s} gpu")
    for p in available_profiles().values():
        print(
            f"{p.name:22s} {p.encoder:11s} {p.pix_fmt:12s} {p.bits:4d} {p.layout:16s} "
            f"{'yes' if p.lossless else 'no':8s} {'yes' if p.gpu_decodable else 'no'}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eocube`` command."""
    parser = argparse.ArgumentParser(prog="eocube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress a cube lossless and lossy; print size and error")
    demo.add_argument("input", help="a NetCDF/zarr file xarray opens")
    demo.add_argument("--variable", default="data", help="the (time, band, y, x) variable")
    demo.add_argument("--crf", type=int, nargs="+", default=[8, 16, 24, 32], help="lossy crf values")
    demo.set_defaults(func=_demo)
    prof = sub.add_parser("profiles", help="list the codec profiles")
    prof.set_defaults(func=_profiles)
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
