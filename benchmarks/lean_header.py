"""The lean payload header (chunk format 14) against the compact header of format 13.

Two measurements:

- **Bytes.** Every corpus cube written as the default writes it (``to_eocube``, default
  chunks and profile) at crf 36 and crf 16; each chunk payload measured as written
  (version 14: dtype, layout, profile, decoder and pixel format as one byte each, the
  KLT as its origin, 10-bit Householder values and a float32 step, each stream's
  parameter sets deflated against the format's dictionary) and as version 13 lays out
  the same content (names as text, band means and component offsets apart, int16
  Householder values, a float64 step, the parameter sets in the first packet). The
  packets, masks and residual layer are the same.
- **Axis precision.** The cubes with many bands (and ``--patches``) written side by side
  with the Householder values at 10 bits (scale 511, the format's) and at 16 (scale
  32767, format 13's precision), at three crfs: payload bytes and PSNR, so that what the
  coarser axes cost in coding shows beside what they save in the header.

``--patches`` adds the 13-band Sentinel-2 scene cut into 64 x 64 px chunks of one date
(EuroSAT-like patches), the chunk shape of ML releases. Written to
``benchmarks/results/lean_header.{md,json,png}``.

    python -m benchmarks.lean_header [--corpus DIR] [--cubes NAME ...] [--patches]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import compact_header, corpus
from benchmarks.common import machine_info, md_table, quality, save_results
from benchmarks.compact_header import (
    PATCH_CUBE,
    PATCH_REGION,
    PATCH_SIDE,
    store_payloads,
    varint_bytes,
)

RESULTS = Path(__file__).parent / "results"
CRFS = compact_header.CRFS
PRECISION_CRFS = (36, 26, 16)
PRECISION_CUBES = (
    "era5_ens_z_t",
    "s2_l1c_eolearn_5x13",
    "l8_ny18_014031",
    "s2_l2a_worldcereal_12x9x100x100",
)
"""Cubes of 9 to 40 bands, whose chunks are rotated: where the axes' precision shows."""
V13_AXIS_BITS = 16


def _names(header: Any, streams: list[Any]) -> list[str]:
    names = [header.dtype.str, header.layout, header.profile]
    for stream in streams:
        names += [stream.decoder, stream.pix_fmt]
    return names


def _head_saving(stream: Any) -> int:
    """What a stream's head, stored apart and deflated, saves over version 13's layout."""
    from eocube import chunk, paramsets

    if not stream.packets:
        return -1
    prefix = len(chunk.shared_prefix(stream.packets))
    first = stream.packets[0]
    n = paramsets.head_length(stream.decoder, first, prefix)
    packed = len(paramsets.pack(first[prefix : prefix + n]))
    first_size = len(first) - prefix
    return (
        n + varint_bytes(first_size) - varint_bytes(first_size - n) - varint_bytes(packed) - packed
    )


def payload_sizes(payload: bytes) -> tuple[int, int]:
    """A payload's bytes as written, and as chunk format 13 lays out the same content."""
    from eocube import chunk
    from eocube.binary import ByteReader

    r = ByteReader(payload)
    header = chunk.ChunkHeader.from_bytes(r)
    streams = [] if header.wavelet else chunk._read_streams(r, header)[1]
    v13 = len(payload)
    for name in _names(header, streams):
        lean = 1 if name in chunk.NAMES else 2 + len(name)
        v13 += 1 + len(name) - lean
    v13 += sum(_head_saving(stream) for stream in streams)
    if header.spectral is not None:
        from eocube import spectral

        B = header.spectral.bands
        count = B * (B + 1) // 2 - 1
        lean = 4 * B + math.ceil(count * spectral.AXIS_BITS / 8) + 4
        v13 += 4 * B + 2 * count + 4 * B + 8 - lean
    return len(payload), v13


def _dataset(name: str, folder: Path | None, patches: bool) -> tuple[Any, Any]:
    cube = corpus.load_cube(name, folder)
    ds = cube.dataset
    if patches:
        ds = ds.isel(time=slice(0, 1), y=slice(0, PATCH_REGION), x=slice(0, PATCH_REGION))
    return ds, cube.nodata


def _chunks(patches: bool) -> dict[str, int] | None:
    return {"time": 1, "y": PATCH_SIDE, "x": PATCH_SIDE} if patches else None


def measure_bytes(name: str, folder: Path | None, patches: bool = False) -> dict[str, Any]:
    """Per crf: chunks, payload bytes as written and as version 13 lays them out."""
    import eocube

    ds, _ = _dataset(name, folder, patches)
    row: dict[str, Any] = {
        "cube": f"{name} {PATCH_SIDE} px patches" if patches else name,
        "shape": [int(v) for v in ds["data"].shape],
        "values": int(ds["data"].size),
    }
    for crf in CRFS:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "cube.zarr"
            eocube.to_eocube(ds, store, crf=crf, chunks=_chunks(patches))
            payloads = store_payloads(store)
        sizes = [payload_sizes(p) for p in payloads]
        now = sum(n for n, _ in sizes)
        before = sum(b for _, b in sizes)
        row[f"crf{crf}"] = {
            "chunks": len(payloads),
            "bpppb": 8 * now / row["values"],
            "payload_now": now,
            "payload_v13": before,
            "saved_per_chunk": (before - now) / len(payloads),
            "saved_share": (before - now) / before,
        }
    return row


@contextmanager
def axis_precision(scale: int, bits: int) -> Iterator[None]:
    """Write (and read) Householder values at ``scale`` in ``bits`` bits for a while."""
    from eocube import spectral

    shipped = spectral.AXIS_SCALE, spectral.AXIS_BITS
    spectral.AXIS_SCALE, spectral.AXIS_BITS = scale, bits
    try:
        yield
    finally:
        spectral.AXIS_SCALE, spectral.AXIS_BITS = shipped


def measure_precision(name: str, folder: Path | None, patches: bool = False) -> dict[str, Any]:
    """Per crf: payload bytes and PSNR with 10-bit and with 16-bit Householder values."""
    import xarray as xr

    import eocube
    from eocube import spectral

    ds, nodata = _dataset(name, folder, patches)
    original = ds["data"].values
    row: dict[str, Any] = {"cube": f"{name} {PATCH_SIDE} px patches" if patches else name}
    for crf in PRECISION_CRFS:
        point = {}
        for label, scale, bits in (
            ("bits10", spectral.AXIS_SCALE, spectral.AXIS_BITS),
            ("bits16", spectral.V13_AXIS_SCALE, V13_AXIS_BITS),
        ):
            with axis_precision(scale, bits), tempfile.TemporaryDirectory() as tmp:
                store = Path(tmp) / "cube.zarr"
                eocube.to_eocube(ds, store, crf=crf, chunks=_chunks(patches))
                nbytes = sum(len(p) for p in store_payloads(store))
                with xr.open_dataset(store, engine="eocube") as opened:
                    decoded = opened["data"].values
            point[label] = {
                "payload": nbytes,
                "bpppb": 8 * nbytes / original.size,
                "psnr": quality(original, decoded, nodata)["psnr"],
            }
        point["bytes_ratio"] = point["bits10"]["payload"] / point["bits16"]["payload"]
        point["psnr_delta"] = point["bits10"]["psnr"] - point["bits16"]["psnr"]
        row[f"crf{crf}"] = point
    return row


def precision_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the precision measurements."""
    head = ["cube"]
    for crf in PRECISION_CRFS:
        head += [f"crf {crf}: bpppb (16 bits)", f"crf {crf}: bytes 10/16", f"crf {crf}: ΔPSNR dB"]
    body = []
    for r in rows:
        line = [r["cube"]]
        for crf in PRECISION_CRFS:
            m = r[f"crf{crf}"]
            line += [
                f"{m['bits16']['bpppb']:.3f}",
                f"{m['bytes_ratio']:.4f}",
                f"{m['psnr_delta']:+.3f}",
            ]
        body.append(line)
    return md_table(head, body, "l" + "rrr" * len(PRECISION_CRFS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cubes", nargs="+", metavar="NAME", help="default: every cube")
    parser.add_argument(
        "--precision-cubes",
        nargs="*",
        metavar="NAME",
        default=list(PRECISION_CUBES),
        help="cubes whose axis precision is measured (default: %(default)s)",
    )
    parser.add_argument(
        "--patches",
        action="store_true",
        help=f"add {PATCH_CUBE} cut into {PATCH_SIDE} px chunks of one date",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    names = list(corpus.present(args.cubes or corpus.cube_names(args.corpus), args.corpus))
    jobs = [(name, False) for name in names]
    precision_jobs = [(n, False) for n in corpus.present(args.precision_cubes, args.corpus)]
    if args.patches and list(corpus.present([PATCH_CUBE], args.corpus)):
        jobs.append((PATCH_CUBE, True))
        precision_jobs.append((PATCH_CUBE, True))
    rows = compact_header.measure_rows(jobs, measure_bytes, args.corpus)
    if not rows:
        print("no cube measured; results not written")
        return 1
    precision = []
    for name, patches in precision_jobs:
        row = measure_precision(name, args.corpus, patches)
        precision.append(row)
        print(
            f"{row['cube']}: 10-bit axes "
            + ", ".join(
                f"crf {crf} {row[f'crf{crf}']['bytes_ratio']:.4f}x bytes "
                f"{row[f'crf{crf}']['psnr_delta']:+.3f} dB"
                for crf in PRECISION_CRFS
            ),
            flush=True,
        )
    text = (
        "# The lean payload header (chunk format 14)\n\n"
        "## Bytes\n\n"
        "Each cube written as the default writes it (default chunks and profile); per "
        "chunk, its payload bytes as version 13 lays out the same content (names as "
        "text, the KLT's band means and component offsets apart, int16 Householder "
        "values, a float64 step, the parameter sets in the first packet) and as "
        "written (version 14: names as one byte, the KLT's origin, 10-bit Householder "
        "values, a float32 step, each stream's parameter sets deflated against the "
        "format's dictionary). Saved: that "
        "difference as a share of the version-13 payloads. Bytes, not times: "
        "deterministic. Reproduce: `python -m benchmarks.lean_header --corpus <corpus> "
        "--patches`.\n\n"
        + compact_header.table(rows, before="payload_v13", label="v13 → v14")
        + f"\n\nPayload bytes saved: {compact_header.summary(rows)}.\n"
    )
    if precision:
        deltas = [r[f"crf{crf}"]["psnr_delta"] for r in precision for crf in PRECISION_CRFS]
        ratios = [r[f"crf{crf}"]["bytes_ratio"] for r in precision for crf in PRECISION_CRFS]
        text += (
            "\n## Axis precision\n\n"
            "The same writes side by side with the Householder values at 10 bits "
            "(the format's) and at 16 (format 13's precision), each stored at its "
            "precision: payload bytes (10 bits over 16) and PSNR (10 bits less 16). "
            "A rotation trial that chooses other axes moves a point either way.\n\n"
            + precision_table(precision)
            + f"\n\nBytes 10/16: {min(ratios):.4f} to {max(ratios):.4f} (median "
            f"{statistics.median(ratios):.4f}); ΔPSNR {min(deltas):+.3f} to "
            f"{max(deltas):+.3f} dB (median {statistics.median(deltas):+.3f}).\n"
        )
    run = {
        "crfs": list(CRFS),
        "precision_crfs": list(PRECISION_CRFS),
        "machine": machine_info(),
        "rows": rows,
        "precision": precision,
    }
    if not save_results(args.out, "lean_header", text, run):
        return 1
    compact_header.plot(rows, args.out / "lean_header.png", "payload saved vs format 13 (%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
