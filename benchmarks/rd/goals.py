"""The goals of benchmarks.rd's summary, each checked cube by cube: met, missed or n/a.

1. Sentinel-2 / Landsat: PSNR ≥ the reference + 2 dB at 1 bpppb and + 1 dB at 0.1 bpppb.
2. Sentinel-2 / ERA5: ahead of every non-video competitor from 0.1 to 1 bpppb.
3. Integer time series: lossless in fewer bits than every lossless competitor and FFV1
   intra-only.
4. Decoding end to end at ≥ 0.8× the codec alone; encoding at least as fast as the
   reference at equal bpppb.

Each function returns the lines of its section of ``summary.md``.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import common, competitors
from benchmarks.common import TARGETS, fmt, md_section, md_table
from benchmarks.rd.records import (
    DEFAULT_METHOD,
    Record,
    envelope,
    eocube_psnr_at,
    median,
    verdict,
)
from benchmarks.rd.sweeps import DEFAULT_PROFILE

CubeInfo = dict[str, Any]

# the rates at which goal 2 compares eocube with the competitors (bpppb)
COMPETITOR_RATES = (0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)


# goal 1: (rate, dB eocube must lead the reference by there)
GOAL_1_MARGINS = ((1.0, 2.0), (0.1, 1.0))
BASES = ("bpppb", "bpppb_packed", "bpppb_payload")
_BASIS_NAMES = {"bpppb": "strict", "bpppb_packed": "packed", "bpppb_payload": "payload"}


def _basis_name(basis: str) -> str:
    """strict (eocube's whole folder store), packed (the store packed into one ZIP file,
    eocube.pack) or payload (its chunk payloads only)."""
    return _BASIS_NAMES[basis]


def _ahead(mine: float | None, theirs: float | None, need: float) -> bool | None:
    """Whether eocube leads by ``need`` dB; a rate only one of the two reaches decides."""
    if mine is None:
        return False if theirs is not None else None
    if theirs is None:
        return True  # eocube reaches a rate the reference cannot
    return mine - theirs >= need


def _delta(a: float | None, b: float | None) -> str:
    """a − b in dB, signed; n/a where either is missing."""
    return fmt(None if a is None or b is None else a - b, "+.1f")


def _goal_1_rows(name: str, rs: list[Record], tally: dict[str, list[bool]]) -> list[list[str]]:
    """Goal 1's rows of one cube (rate × eocube default/best × basis); counts the verdicts."""
    rows = []
    ref = [r for r in rs if r["method"] == "reference"]
    for t, need in GOAL_1_MARGINS:
        pr = common.psnr_at_sat(ref, t)
        pr_nosei = common.psnr_at_sat(ref, t, "bpppb_without_sei")
        for which in ("default", "best"):
            for basis in BASES:
                pe, m = eocube_psnr_at(rs, which, t, basis)
                ok = _ahead(pe, pr, need)
                if ok is not None:
                    tally.setdefault(f"{which}/{_basis_name(basis)}@{t:g}", []).append(ok)
                rows.append(
                    [
                        name,
                        f"{t:g}",
                        f"best ({m})" if which == "best" and m else which,
                        _basis_name(basis),
                        fmt(pe),
                        fmt(pr),
                        _delta(pe, pr),
                        f"+{need:g}",
                        verdict(ok),
                        fmt(pr_nosei),
                        _delta(pe, pr_nosei),
                    ]
                )
    return rows


def goal_1_reference(cubes: dict[str, CubeInfo], by_cube: dict[str, list[Record]]) -> list[str]:
    """Goal 1: on Sentinel-2 / Landsat, PSNR ≥ the reference + 2 dB at 1 bpppb, + 1 at 0.1."""
    out = md_section(
        "Goal 1: Sentinel-2 / Landsat cubes, PSNR ≥ reference + 2 dB at 1 bpppb and "
        "+ 1 dB at 0.1 bpppb",
        "eocube is shown with its current default profile (`" + DEFAULT_PROFILE + "`) and "
        "as the best eocube profile at each rate; strict = eocube's whole folder store against "
        "the reference's video bytes only; packed = the same store packed into one ZIP file "
        "(`eocube.pack`); payload = "
        "eocube's chunk payloads against the same. "
        "Δ = eocube − reference (dB).",
    )
    rows = []
    tally: dict[str, list[bool]] = {}
    for name, rs in by_cube.items():
        if cubes[name]["family"] in ("s2", "landsat"):
            rows += _goal_1_rows(name, rs, tally)
    out.append(
        md_table(
            [
                "cube",
                "bpppb",
                "eocube",
                "basis",
                "eocube dB",
                "reference dB",
                "Δ dB",
                "goal",
                "verdict",
                "ref. without info SEI",
                "Δ",
            ],
            rows,
            "lrllrrrrlrr",
        )
    )
    out += [
        "",
        "The last two columns are not the goal: they show the reference with x265's "
        "info SEI (its settings as text, ~2.3 kB, repeated at every keyframe) removed "
        "from its bytes, i.e. what a reference run with `info=0`, as eocube uses, would "
        "get.",
    ]
    out += ["", "Tally (cubes meeting / cubes where measurable):", ""]
    out += [f"- {k}: {sum(v)}/{len(v)}" for k, v in sorted(tally.items())]
    out.append("")
    return out


def _goal_2_row(
    name: str, rs: list[Record], comp: list[Record], which: str, basis: str
) -> tuple[list[str], bool | None]:
    """Goal 2's row of one cube for eocube ``which`` on ``basis``, and its verdict."""
    margins, losses, unreach = [], [], []
    for t in COMPETITOR_RATES:
        pc, mc = envelope(comp, "bpppb", t)
        pe, _ = eocube_psnr_at(rs, which, t, basis)
        if pc is None:
            continue
        if pe is None:
            unreach.append(f"{t:g}")
            continue
        margins.append((pe - pc, t, mc))
        if pe <= pc:
            losses.append(f"{t:g} ({mc} by {pc - pe:.1f})")
    worst = min(margins) if margins else None
    ok = None if not margins and not unreach else (not losses and not unreach)
    row = [
        name,
        which,
        _basis_name(basis),
        fmt(worst[0] if worst else None, "+.1f"),
        f"{worst[1]:g} vs {worst[2]}" if worst else "—",
        ", ".join(losses) or "—",
        ", ".join(unreach) or "—",
        verdict(ok),
    ]
    return row, ok


def goal_2_competitors(cubes: dict[str, CubeInfo], by_cube: dict[str, list[Record]]) -> list[str]:
    """Goal 2: ahead of every non-video competitor from 0.1 to 1 bpppb (Sentinel-2, ERA5)."""
    out = md_section(
        "Goal 2: ahead of every non-video competitor from 0.1 to 1 bpppb "
        "(Sentinel-2 and ERA5 cubes)",
        "At each rate of " + ", ".join(f"{t:g}" for t in COMPETITOR_RATES) + " bpppb: "
        "margin = eocube − best competitor there (dB); 'min margin' is the smallest over the "
        "rates where a competitor reaches; a rate eocube cannot reach while a competitor "
        "does counts as missed. Competitors count streams + side info + mask (no container), "
        "so the like-for-like basis is eocube's payload; strict adds eocube's store metadata; "
        "packed counts the store packed into one ZIP file.",
    )
    rows = []
    tally_goal2: dict[str, list[bool]] = {}
    for name, rs in by_cube.items():
        if cubes[name]["family"] not in ("s2", "era5"):
            continue
        comp = [r for r in rs if r["kind"] == "competitor" and not r["lossless"]]
        for which in ("default", "best"):
            for basis in BASES:
                row, ok = _goal_2_row(name, rs, comp, which, basis)
                tally2 = tally_goal2.setdefault(f"{which}/{basis}", [])
                if ok is not None:
                    tally2.append(ok)
                rows.append(row)
    out.append(
        md_table(
            [
                "cube",
                "eocube",
                "basis",
                "min margin dB",
                "where",
                "behind at (dB)",
                "eocube can't reach",
                "verdict",
            ],
            rows,
            "lllrllll",
        )
    )
    out += [
        "",
        "Tally (cubes meeting / measurable): "
        + "; ".join(
            f"{k.split('/')[0]}/{_basis_name(k.split('/')[1])} {sum(v)}/{len(v)}"
            for k, v in tally_goal2.items()
        ),
        "",
    ]
    return out


def goal_3_lossless(cubes: dict[str, CubeInfo], by_cube: dict[str, list[Record]]) -> list[str]:
    """Goal 3: lossless in fewer bits than every lossless competitor (integer time series)."""
    out = md_section(
        "Goal 3: lossless, fewer bits than zstd, JPEG-XL lossless, JPEG-LS and FFV1 "
        "intra-only on every integer time-series cube",
        "eocube lossless = the best of its lossless profiles that applies "
        "(`eocube-lossless`, eocube's own predictive coder; `hevc-lossless` — the "
        "inter-frame one — holds ranges of ≤ 12 bits only; `ffv1-lossless`, the default, is "
        "itself FFV1 intra-only: it cannot beat itself). bpppb strict (whole store) and "
        "payload.",
    )
    rows = []
    names = competitors.lossless_names()
    for name, rs in by_cube.items():
        info = cubes[name]
        if not (info["integer"] and info["time_series"]):
            continue
        ll = {r["method"]: r for r in rs if r["lossless"]}
        eo = [ll[m] for m in ("eocube:hevc-lossless", "eocube:eocube-lossless") if m in ll]
        ffv1 = ll.get("eocube:ffv1-lossless")
        best_eo = min(eo, key=lambda r: r["bpppb"]) if eo else None
        comps = {m: ll[m]["bpppb"] for m in names if m in ll}
        if ffv1:
            comps["FFV1 intra"] = ffv1["bpppb_payload"]
        best_c = min(comps.items(), key=lambda kv: kv[1]) if comps else None
        ok = None
        if best_c is not None:
            ok = best_eo is not None and best_eo["bpppb"] < best_c[1]
        rows.append(
            [
                name,
                fmt(best_eo["bpppb"] if best_eo else None, ".3f", "n/a")
                + (f" ({best_eo['method'].removeprefix('eocube:')})" if best_eo else ""),
                fmt(best_eo["bpppb_payload"] if best_eo else None, ".3f"),
                fmt(ffv1["bpppb"] if ffv1 else None, ".3f"),
                *[fmt(comps.get(m), ".3f") for m in names],
                f"{best_c[0]} {best_c[1]:.3f}" if best_c else "—",
                verdict(ok),
            ]
        )
    out.append(
        md_table(
            [
                "cube",
                "eocube best lossless (store)",
                "payload",
                "eocube ffv1 (store)",
                *names,
                "best other",
                "verdict",
            ],
            rows,
            "lrrr" + "r" * len(names) + "ll",
        )
    )
    out.append("")
    return out


def goal_4_speed(recs: list[Record], by_cube: dict[str, list[Record]]) -> list[str]:
    """Goal 4: decode ≥ 0.8× the codec alone; encode at least as fast as the reference."""
    out = md_section(
        "Goal 4: decode end to end ≥ 0.8× the codec alone; encode at least as fast "
        "as the reference at equal bpppb"
    )
    out.append(_decode_speed_table(recs))
    out += [
        "",
        "codec alone = seconds inside the video decoder when the store's chunk "
        "payloads are decoded one after another, one thread each "
        "(`decode_chunk(on_codec_time=...)`); read = `ds['data'].values` of an opened "
        "store (zarr decodes chunks concurrently); e2e adds `xr.open_dataset` (zarr "
        "metadata, coordinates), which dominates on small cubes; decode_chunk/codec = "
        "the share of decode_chunk spent in the codec (packing and copies excluded from "
        "the codec).",
        "",
    ]
    out.append(_encode_speed_table(by_cube))
    out += [
        "",
        f"eocube = `{DEFAULT_PROFILE}` through `to_eocube` (store writing included), "
        "speed read at equal payload bpppb (the reference's basis); "
        "reference = our in-process reimplementation (no ffmpeg process, no pipes: faster "
        "than the real one).",
        "",
    ]
    return out


def _decode_speed_table(recs: list[Record]) -> str:
    """Per eocube profile: read and end-to-end decode speed over the codec alone's."""
    rows = []
    eo_all = [r for r in recs if r["kind"] == "eocube"]
    for m in sorted({r["method"] for r in eo_all}):
        rs = [r for r in eo_all if r["method"] == m and r.get("read_over_codec")]
        if not rs:
            continue
        reads = [r["read_over_codec"] for r in rs]
        e2es = [r["e2e_over_codec"] for r in rs]
        chunk = [r["chunk_over_codec"] for r in rs if r.get("chunk_over_codec")]
        big = [r["read_over_codec"] for r in rs if r["values"] >= 1_000_000]
        rows.append(
            [
                m.removeprefix("eocube:"),
                len(rs),
                f"{statistics.median(reads):.2f} (min {min(reads):.2f})",
                f"{sum(x >= 0.8 for x in reads)}/{len(reads)}",
                f"{statistics.median(big):.2f} ({len(big)})" if big else "—",
                f"{statistics.median(e2es):.2f}",
                fmt(median(chunk), ".2f"),
                fmt(median([r["read_mb_s"] for r in rs])),
                fmt(median([r["decode_codec_mb_s"] for r in rs])),
                verdict(statistics.median(reads) >= 0.8),
            ]
        )
    return md_table(
        [
            "profile",
            "points",
            "read/codec median",
            "points ≥ 0.8",
            "read/codec, cubes ≥ 1 M values",
            "e2e/codec (open incl.)",
            "decode_chunk/codec",
            "read MB/s",
            "codec-alone MB/s",
            "verdict (median read/codec)",
        ],
        rows,
        "lrrrrrrrrl",
    )


def _encode_speed_table(by_cube: dict[str, list[Record]]) -> str:
    """Per cube: encode speed of the default profile and of the reference at equal rates."""
    rows = []
    for name, rs in by_cube.items():
        ref = [r for r in rs if r["method"] == "reference"]
        dflt = [r for r in rs if r["method"] == DEFAULT_METHOD]
        if not ref or not dflt:
            continue
        cells = []
        verdicts = []
        for t in TARGETS:
            se = common.speed_at(dflt, t, "encode_mb_s", "bpppb_payload")
            sr = common.speed_at(ref, t, "encode_mb_s")
            cells.append(f"{fmt(se)} / {fmt(sr)}")
            if se is not None and sr is not None:
                verdicts.append(se >= sr)
        med_e = median([r["encode_mb_s"] for r in dflt])
        med_r = median([r["encode_mb_s"] for r in ref])
        rows.append(
            [
                name,
                *cells,
                f"{fmt(med_e)} / {fmt(med_r)}",
                verdict(all(verdicts) if verdicts else None),
            ]
        )
    return md_table(
        [
            "cube",
            "enc MB/s @0.1 eocube/ref",
            "@0.3",
            "@1",
            "median over sweep",
            "verdict (where both reach)",
        ],
        rows,
        "lrrrrl",
    )
