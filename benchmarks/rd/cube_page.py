"""The page of one cube in benchmarks.rd: ``<cube>.md`` (tables) and ``<cube>.png`` (curves)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks import common, competitors
from benchmarks.common import TARGETS, fmt, md_table
from benchmarks.rd.records import by_method, is_ok, median

REFERENCE_STYLE = {"color": "black", "ls": "--", "marker": "x", "lw": 1.8}
EOCUBE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "gold")


def _intro(cube_info: dict[str, Any]) -> list[str]:
    """The cube's title, figures and the definitions of the table."""
    name = cube_info["cube"]
    shape = "×".join(map(str, cube_info["shape"]))
    return [
        f"# {name}",
        "",
        f"{shape} (T×B×Y×X) {cube_info['dtype']}, family {cube_info['family']}, "
        f"{cube_info['invalid_fraction'] * 100:.1f} % invalid (NaN or nodata "
        f"{fmt(cube_info['nodata'], 'g', 'none')}), values {fmt(cube_info['value_min'], '.6g')}"
        f" .. {fmt(cube_info['value_max'], '.6g')}"
        + (
            f"; cropped: {cube_info['crop']} (source "
            f"{'×'.join(map(str, cube_info['source_shape']))})"
            if cube_info["crop"]
            else ""
        )
        + ".",
        "",
        "PSNR: docs/format.md (per-band peak = max − min of the valid original values, MSE over "
        "valid values, mean over bands); † = the method saturates below that rate: its best "
        "quality (crf 0) is shown. bpppb (total): every stored byte — for eocube the "
        "whole store (metadata, coordinates, masks); for the competitors their streams, "
        "side information and NaN/nodata mask (no container); for the reference its video "
        "bytes only (its own basis, padded bands included). Payload: eocube's chunk "
        "payloads only. PSNR at a rate is interpolated linearly in log bpppb between "
        "measured points; n/a = out of the method's reach. Speeds: MB/s of the original "
        "array, medians over the sweep; dec MB/s is end to end (open the store + read the "
        "variable). read/codec: decode speed of an opened store over the speed of the video "
        "decoder alone (goal ≥ 0.8); e2e/codec: the same with the open included.",
        "",
    ]


def _method_table(records: list[dict[str, Any]]) -> str:
    """One row a method: PSNR at the target rates, ratio, speeds."""
    rows = []
    for method, rs in by_method(records).items():
        ok = [r for r in rs if is_ok(r)]
        if not ok:
            why = "; ".join(sorted({(r.get("skipped") or r.get("error") or "")[:120] for r in rs}))
            rows.append([method, "—", "—", "—", "—", "—", "—", "—", "—", f"not run: {why}"])
            continue
        lossless = ok[0]["lossless"]
        if lossless:
            r = ok[0]
            p_tot = ["lossless"] * 3
            ratio = f"{r['compression_ratio']:.2f} ({r['bpppb']:.3f} bpppb)"
            pay = f"{r['bpppb_payload']:.3f} bpppb"
        else:
            p_tot = [fmt(common.psnr_at_sat(ok, t)) for t in TARGETS]
            if ok[0]["kind"] == "eocube":
                pay = " / ".join(fmt(common.psnr_at_sat(ok, t, "bpppb_payload")) for t in TARGETS)
            else:
                pay = "same"
            ratios = [r["compression_ratio"] for r in ok]
            ratio = f"{min(ratios):.1f}–{max(ratios):.1f}"
        e2e = median([r.get("e2e_over_codec") for r in ok])
        rc = median([r.get("read_over_codec") for r in ok])
        rows.append(
            [
                method,
                *p_tot,
                pay,
                ratio,
                fmt(median([r["encode_mb_s"] for r in ok])),
                fmt(median([r["decode_mb_s"] for r in ok])),
                fmt(rc, ".2f", "—") + " / " + fmt(e2e, ".2f", "—"),
                f"{len(ok)} points"
                + (f", {len(rs) - len(ok)} failed/skipped" if len(ok) < len(rs) else ""),
            ]
        )
    return md_table(
        [
            "method",
            "PSNR @0.1",
            "@0.3",
            "@1 bpppb",
            "payload basis @0.1/0.3/1",
            "ratio",
            "enc MB/s",
            "dec MB/s",
            "read/codec / e2e/codec",
            "notes",
        ],
        rows,
        "lrrrrrrrrl",
    )


def _points_table(records: list[dict[str, Any]]) -> str:
    """One row a point: its setting, sizes, PSNR, error and speeds."""
    rows = []
    for r in records:
        if not is_ok(r):
            rows.append(
                [
                    r["method"],
                    r["setting_label"],
                    "skipped: " + r["skipped"][:150]
                    if r.get("skipped")
                    else "error: " + r["error"][:150],
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        err = r["max_abs_error"]
        rows.append(
            [
                r["method"],
                r["setting_label"],
                f"{r['bpppb']:.4f}",
                f"{r['bpppb_payload']:.4f}",
                f"{r['compression_ratio']:.1f}",
                fmt(r["psnr"], ".2f"),
                f"{err:.4g}" if isinstance(err, float) else str(err),
                fmt(r["encode_mb_s"]),
                fmt(r["decode_mb_s"]),
                fmt(r.get("read_over_codec"), ".2f", "")
                + (" / " + fmt(r.get("e2e_over_codec"), ".2f") if r.get("e2e_over_codec") else ""),
            ]
        )
    return md_table(
        [
            "method",
            "setting",
            "bpppb",
            "payload",
            "ratio",
            "PSNR dB",
            "max abs err",
            "enc MB/s",
            "dec MB/s",
            "read/codec / e2e/codec",
        ],
        rows,
        "llrrrrrrrr",
    )


def cube_markdown(cube_info: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The page of one cube: its figures, a row per method, and every point.

    Parameters
    ----------
    cube_info : dict
        The cube's figures (:meth:`benchmarks.corpus.Cube.describe`).
    records : list of dict
        The cube's records, skipped and failed ones included.

    Returns
    -------
    str
        Markdown.
    """
    lines = _intro(cube_info)
    lines.append(_method_table(records))
    lines += ["", "## Every point", ""]
    lines.append(_points_table(records))
    return "\n".join(lines) + "\n"


def _style(method: str) -> dict[str, Any]:
    """The line of a non-eocube method: the reference's, or the competitor's own."""
    if method == "reference":
        return REFERENCE_STYLE
    competitor = competitors.by_name().get(method)
    return competitor.style if competitor and competitor.style else {"ls": ":", "marker": "."}


def cube_plot(cube_info: dict[str, Any], records: list[dict[str, Any]], path: Path) -> None:
    """PSNR against bpppb of every lossy method on one cube (log x), lossless rates as text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.2))
    by = by_method([r for r in records if is_ok(r)])
    eo = [m for m in by if m.startswith("eocube:") and not by[m][0]["lossless"]]
    for i, m in enumerate(eo):
        rs = sorted(by[m], key=lambda r: r["bpppb"])
        ax.plot(
            [r["bpppb"] for r in rs],
            [r["psnr"] for r in rs],
            marker="o",
            ms=4,
            lw=1.8,
            color=EOCUBE_COLOURS[i % len(EOCUBE_COLOURS)],
            label=m,
        )
    for m, rs in by.items():
        if m.startswith("eocube:") or rs[0]["lossless"]:
            continue
        rs = sorted(rs, key=lambda r: r["bpppb"])
        style = _style(m)
        label = m + (" (video bytes only)" if m == "reference" else "")
        ax.plot(
            [r["bpppb"] for r in rs],
            [r["psnr"] for r in rs],
            **{"ms": 4, "lw": 1.2, "label": label, **style},
        )
    lossless = [(rs[0]["bpppb"], m) for m, rs in by.items() if rs[0]["lossless"]]
    if lossless:
        text = "lossless bpppb:\n" + "\n".join(
            f"{m.removeprefix('eocube:')}: {b:.2f}" for b, m in sorted(lossless)
        )
        ax.text(
            0.99,
            0.02,
            text,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": "white", "ec": "0.7", "alpha": 0.85},
        )
    for t in TARGETS:
        ax.axvline(t, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(0.02, 20)
    ys = [
        r["psnr"]
        for rs in by.values()
        for r in rs
        if not r["lossless"] and math.isfinite(r["psnr"]) and 0.02 <= r["bpppb"] <= 20
    ]
    if ys:
        ax.set_ylim(max(min(ys) - 2, 0), max(ys) + 3)
    ax.set_xlabel("bpppb (eocube: every stored byte; reference: video bytes only)")
    ax.set_ylabel("PSNR dB (per-band data-range peak, valid values, mean over bands)")
    shape = "×".join(map(str, cube_info["shape"]))
    crop = (
        f", cropped from {'×'.join(map(str, cube_info['source_shape']))}"
        if cube_info["crop"]
        else ""
    )
    ax.set_title(f"{cube_info['cube']}\n{shape} {cube_info['dtype']}{crop}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
