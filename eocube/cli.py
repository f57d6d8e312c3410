"""The ``eocube`` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

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
                f"{label:26s} {report.nbytes:9d} {report.bpppb:7.3f} {report.compression_ratio:7.1f} "
                f"{metrics.psnr(original, decoded, nodata):8.2f} "
                f"{metrics.max_abs_error(original, decoded, nodata):9.1f} "
                f"{report.seconds:6.2f} {seconds:6.2f} {'bit-exact' if exact else ''}"
            )
            if crf == args.crf[len(args.crf) // 2]:
                print(f"\nreport of one write ({label}):\n{report}\n\nreopened lazily:\n{lazy}\n")
    print(
        f"{'store':26s} {'bytes':>9s} {'bpppb':>7s} {'ratio':>7s} {'PSNR dB':>8s} {'max err':>9s} {'enc s':>6s} {'dec s':>6s}"
    )
    print("\n".join(rows))
    print("bytes and bpppb count every object of the store; PSNR is the mean over bands of")
    print("10·log10(range_b² / MSE_b) over valid pixels (DESIGN.md); max err in data units.")
    return 0


def _profiles(args: argparse.Namespace) -> int:
    print(
        f"{'profile':22s} {'encoder':11s} {'pix_fmt':12s} {'bits':>4s} {'layout':16s} {'lossless':8s} gpu"
    )
    for p in available_profiles().values():
        print(
            f"{p.name:22s} {p.encoder:11s} {p.pix_fmt:12s} {p.bits:4d} {p.layout:16s} "
            f"{'yes' if p.lossless else 'no':8s} {'yes' if p.gpu_decodable else 'no'}"
        )
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
    )
    print(sha)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eocube`` command."""
    parser = argparse.ArgumentParser(prog="eocube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="write a cube to eocube stores lossless and lossy, reopen lazily, print size and error",
    )
    demo.add_argument("input", help="a NetCDF/zarr file xarray opens")
    demo.add_argument("--variable", default="data", help="the (time, band, y, x) variable")
    demo.add_argument(
        "--crf", type=int, nargs="+", default=[8, 16, 24, 32], help="lossy crf values"
    )
    demo.set_defaults(func=_demo)
    prof = sub.add_parser("profiles", help="list the codec profiles")
    prof.set_defaults(func=_profiles)
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
