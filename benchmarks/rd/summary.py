"""``summary.md`` of benchmarks.rd: the run, the goals, and the figures behind the defaults.

Sections, in order: the machine and definitions; the four goals (benchmarks.rd.goals);
which eocube profile wins where, and the speeds of each; PSNR at 0.1 / 0.3 / 1 bpppb of
every method per cube; our measurements against benchmarks.anchors; the points skipped
or failed.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import anchors, common, competitors
from benchmarks.common import TARGETS, fmt, md_section, md_table
from benchmarks.rd import goals, sweeps
from benchmarks.rd.records import (
    DEFAULT_METHOD,
    Record,
    by_cube,
    eocube_psnr_at,
    is_ok,
    median,
    of_method,
)

CubeInfo = dict[str, Any]

# the groups of cubes over which the profiles are compared
GROUPS = ("integer reflectance", "float reflectance/indices", "climate fields")
# methods whose speeds are listed after the lossy eocube profiles'
OTHER_SPEEDS = (
    "reference",
    "eocube:ffv1-lossless",
    "eocube:hevc-lossless",
    "eocube:eocube-lossless",
)


def _partial_run(meta: dict[str, Any]) -> str:
    """A sentence naming what a run limited to some methods or cubes measured."""
    command = str(meta.get("command") or "")
    if "--methods" not in command and "--cubes" not in command:
        return ""
    return (
        f" This run (`{command}`) measured only the methods "
        "or cubes it names; every other point is that of an earlier run, kept in "
        "`results.jsonl`."
    )


def _provenance(records: list[Record]) -> str:
    """Where each method's points come from: the commits and days they were measured at."""
    by_method: dict[str, dict[str, int]] = {}
    for rec in records:
        stamps = by_method.setdefault(rec["method"], {})
        stamp = rec.get("measured_at") or "not recorded"
        stamps[stamp] = stamps.get(stamp, 0) + 1
    groups: dict[tuple[str, ...], list[str]] = {}
    for method, stamps in sorted(by_method.items()):
        groups.setdefault(tuple(sorted(stamps)), []).append(method)
    parts = [
        f"{', '.join(methods)}: {'; '.join(stamps)}"
        for stamps, methods in sorted(groups.items(), key=lambda kv: kv[1][0])
    ]
    return (
        "Points measured at (commit, day; 'not recorded': measured before points carried "
        "their commit, by an earlier run whose commit is in git's history of "
        "`results.jsonl`): " + " · ".join(parts) + "."
    )


def _header(cubes: dict[str, CubeInfo], records: list[Record], meta: dict[str, Any]) -> list[str]:
    """The title, the machine, how long measuring took, and the definitions."""
    machine = meta["machine"]
    git = machine.get("git") or {}
    load = ", ".join(f"{x:.1f}" for x in machine.get("load_average_at_start") or [])
    return [
        f"# Rate–distortion benchmark: summary ({meta['mode']})",
        "",
        f"Machine: {machine.get('cpu_usable')} usable CPUs ({machine.get('cpu_model')}), "
        f"shared with other jobs (load average at start {load}); av {machine.get('av')}, "
        f"eocube {machine.get('eocube')} at {git.get('commit', '?')[:10]}"
        f"{' (eocube/ or codecs/ modified)' if git.get('dirty') else ''}. "
        f"Measuring took {sum(r.get('seconds') or 0 for r in records) / 60:.1f} min (sum over "
        f"the points) for {len(cubes)} cubes"
        + (
            f" ({sum(not c.get('complete') for c in cubes.values())} incomplete)"
            if not all(c.get("complete") for c in cubes.values())
            else ""
        )
        + f". Reproduce: `python -m benchmarks.rd{' --quick' if meta['mode'] == 'quick' else ''}`"
        " (a single cube or method can be re-measured with `--cubes` / `--methods`; the "
        "per-cube parts in `points/` are merged)." + _partial_run(meta),
        "",
        _provenance(records),
        "",
        "Definitions: PSNR per docs/format.md (per-band data-range peak over valid values, mean "
        "over bands; the reference paper's storage-type peak reads ~16 dB higher on "
        "Sentinel-2). eocube bpppb counts every byte of the store (metadata, coordinates, "
        "masks) — 'payload' only the chunk payloads; the reference counts its video "
        "bytes only (its own basis, padded bands and x265's info SEI included). "
        "Competitors count streams + side info + NaN/nodata mask. Values at 0.1/0.3/1 "
        "bpppb are interpolated in log bpppb; n/a = not reached by the sweep; † = a video "
        "method that saturates below that rate (its crf 0 point never spends that much): "
        "its best quality stands for it, since spending more is impossible. eocube's "
        "default profile and `hevc-12bit-444-wavelet` are also written with `target_bpppb` at "
        f"{', '.join(f'{r:g}' for r in sweeps.TARGET_RATES_FULL)} bpppb: where its video "
        "saturates, the rate control spends the rest on the residual layer (the wavelet "
        "profile: on SPERR's rate, below its video's finest quality, where SPERR codes the "
        "chunks better), as a user asking for that rate gets.",
        "",
    ]


def _group(info: CubeInfo) -> str:
    """Which group of :data:`GROUPS` a cube belongs to."""
    if info["family"] in ("s2", "landsat"):
        return "integer reflectance" if info["integer"] else "float reflectance/indices"
    return "climate fields"


def _profile_tables(
    names: list[str], usable: dict[str, list[Record]], profiles: list[str], t: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Over the cubes ``names`` at rate ``t``: each profile's deficits to the best, and wins."""
    deficits: dict[str, list[float]] = {p: [] for p in profiles}
    wins: dict[str, int] = {}
    for name in names:
        rs = usable.get(name, [])
        vals = {p: common.psnr_at_sat([r for r in rs if r["method"] == p], t) for p in profiles}
        reached = {p: v for p, v in vals.items() if v is not None}
        if not reached:
            continue
        top = max(reached.values())
        winner = max(reached, key=lambda p: reached[p])
        wins[winner] = wins.get(winner, 0) + 1
        for p in profiles:
            if vals[p] is not None:
                deficits[p].append(top - vals[p])
    return deficits, wins


def _speed_row(label: str, rs: list[Record]) -> list[str]:
    """Median encode, decode and codec-alone MB/s of a method's points."""
    return [
        label,
        fmt(median([r["encode_mb_s"] for r in rs])),
        fmt(median([r["decode_mb_s"] for r in rs])),
        fmt(median([r.get("decode_codec_mb_s") for r in rs])),
    ]


def profiles_section(
    cubes: dict[str, CubeInfo], recs: list[Record], usable: dict[str, list[Record]]
) -> list[str]:
    """Which eocube profile wins where (the evidence for the defaults), and their speeds."""
    out = md_section(
        "Which profile and layout wins (evidence for the defaults)",
        "Best eocube lossy profile per cube at each rate (strict basis), and each "
        "profile's PSNR deficit to the best (dB) as medians over the cubes of a group. "
        "Groups: integer reflectance (Sentinel-2/Landsat integer cubes), float "
        "reflectance/indices (Sentinel-2 float cubes), climate fields (ERA5, "
        "ERA-Interim, gridded climate, ocean).",
    )
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name, info in cubes.items():
        groups[_group(info)].append(name)
    profiles = sorted({r["method"] for r in recs if r["kind"] == "eocube" and not r["lossless"]})
    rows = []
    wins_rows = []
    for group, names in groups.items():
        for t in TARGETS:
            deficits, wins = _profile_tables(names, usable, profiles, t)
            rows.append(
                [
                    group,
                    f"{t:g}",
                    *[
                        f"{statistics.median(d):.1f} ({len(d)})" if d else "n/a"
                        for d in deficits.values()
                    ],
                ]
            )
            won = ", ".join(
                f"{p.removeprefix('eocube:')} {n}"
                for p, n in sorted(wins.items(), key=lambda kv: -kv[1])
            )
            wins_rows.append([group, f"{t:g}", won or "—"])
    out.append(
        md_table(
            ["group", "bpppb", *[p.removeprefix("eocube:") for p in profiles]],
            rows,
            "lr" + "r" * len(profiles),
        )
    )
    out += [
        "",
        "Cells: median deficit to the best eocube profile (number of cubes where the "
        "profile reaches that rate).",
        "",
    ]
    out.append(md_table(["group", "bpppb", "cubes won"], wins_rows, "lrl"))
    out.append("")
    rows = [_speed_row(p.removeprefix("eocube:"), of_method(recs, p)) for p in profiles]
    for m in OTHER_SPEEDS:
        rs = of_method(recs, m)
        if rs:
            rows.append(_speed_row(m, rs))
    out.append(
        md_table(
            ["profile", "median enc MB/s", "median dec MB/s (e2e)", "median codec-alone MB/s"], rows
        )
    )
    out.append("")
    return out


def per_cube_section(usable: dict[str, list[Record]]) -> list[str]:
    """PSNR at 0.1 / 0.3 / 1 bpppb of eocube, the reference and the competitors, per cube."""
    out = md_section("PSNR at 0.1 / 0.3 / 1 bpppb per cube (strict basis)")
    cols = ["eocube default", "eocube best", "reference", *competitors.lossy_summary_columns()]
    rows = []
    for name, rs in sorted(usable.items()):
        cells = []
        for col in cols:
            if col == "eocube best":
                vals = [eocube_psnr_at(rs, "best", t, "bpppb")[0] for t in TARGETS]
            else:
                method = DEFAULT_METHOD if col == "eocube default" else col
                vals = [common.psnr_at_sat(of_method(rs, method), t) for t in TARGETS]
            cells.append(" / ".join(fmt(v) for v in vals))
        ll = {r["method"]: r["bpppb"] for r in rs if r["lossless"]}
        best_ll = min(ll.items(), key=lambda kv: kv[1]) if ll else None
        rows.append(
            [
                f"[{name}]({name}.md)",
                *cells,
                f"{best_ll[0].removeprefix('eocube:')} {best_ll[1]:.2f}" if best_ll else "—",
            ]
        )
    out.append(md_table(["cube", *cols, "best lossless bpppb"], rows, "l" + "r" * (len(cols) + 1)))
    out.append("")
    return out


def anchors_section(cubes: dict[str, CubeInfo], usable: dict[str, list[Record]]) -> list[str]:
    """Our PSNR (and zstd-3 bpppb) against those measured with the reference's own code."""
    out = md_section(
        "Check: our measurements against benchmarks.anchors",
        "benchmarks.anchors holds what the reference's own code (ffmpeg CLI, libx265 12-bit, "
        "presumably x265's 64-px CTUs, nodata turned into NaN) and the competitors measured "
        "on some of these cubes; ours should land near. PSNR at 0.1 / 0.3 / 1 bpppb, "
        "anchors → ours (differences also come from our sweeps' points and, for the "
        "image codecs and SZ3, from how each is applied; erainterim is cropped here).",
    )
    rows = []
    for name, measured in anchors.MEASURED_PSNR.items():
        rs = usable.get(name)
        if not rs:
            continue
        cells = []
        for m in anchors.MEASURED_METHODS:
            mine = [common.psnr_at(of_method(rs, m), t) for t in TARGETS]
            cells.append(
                " / ".join(fmt(a) for a in measured[m]) + " → " + " / ".join(fmt(b) for b in mine)
            )
        z = next((r["bpppb"] for r in rs if r["method"] == "zstd-3"), None)
        cells.append(f"{anchors.MEASURED_ZSTD3_BPPPB[name]:.2f} → {fmt(z, '.2f')}")
        rows.append([name + (" (cropped)" if cubes[name].get("crop") else ""), *cells])
    header = ["cube", *anchors.MEASURED_METHODS, "zstd-3 bpppb"]
    out.append(md_table(header, rows, "l" + "r" * (len(header) - 1)))
    out.append("")
    return out


def failures_section(records: list[Record]) -> list[str]:
    """Each point skipped or failed, once per cube, method and reason."""
    skipped = [r for r in records if r.get("skipped") or r.get("error")]
    if not skipped:
        return []
    out = md_section("Skipped or failed")
    seen = set()
    for r in skipped:
        key = (r["cube"], r["method"], r.get("skipped") or r.get("error"))
        if key in seen:
            continue
        seen.add(key)
        what = "skipped" if r.get("skipped") else "FAILED"
        out.append(
            f"- {r['cube']} / {r['method']} ({r['setting_label']}): {what}: "
            f"{(r.get('skipped') or r.get('error'))[:200]}"
        )
    out.append("")
    return out


def summary_markdown(
    cubes: dict[str, CubeInfo], records: list[Record], meta: dict[str, Any]
) -> str:
    """The whole ``summary.md``.

    Parameters
    ----------
    cubes : dict
        Each cube's figures by name (benchmarks.rd.parts.load_parts).
    records : list of dict
        Every record, skipped and failed ones included.
    meta : dict
        The run's description (mode, machine).

    Returns
    -------
    str
        Markdown.
    """
    recs = [r for r in records if is_ok(r)]
    usable = by_cube(recs)
    out = _header(cubes, records, meta)
    out += goals.goal_1_reference(cubes, usable)
    out += goals.goal_2_competitors(cubes, usable)
    out += goals.goal_3_lossless(cubes, usable)
    out += goals.goal_4_speed(recs, usable)
    out += profiles_section(cubes, recs, usable)
    out += per_cube_section(usable)
    out += anchors_section(cubes, usable)
    out += failures_section(records)
    return "\n".join(out)
