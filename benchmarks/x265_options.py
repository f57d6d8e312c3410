"""x265 option candidates against the default profile, cube by cube, at matched rates.

For each cube (the first ``--dates`` dates, all bands, as one chunk) and each candidate
set of x265 parameters added to ``hevc-12bit-444``, :func:`eocube.encode_chunk` is run at
the crf values of ``--crfs``. Each candidate point's PSNR is compared with the default's
curve interpolated at the same rate (log bpppb, payload bytes), where the default's sweep
covers that rate; the table gives the mean difference and the encode time against the
default's. It is how a candidate is judged before it is measured in full with
``benchmarks.rd``: an option that helps some cubes and costs others shows it here.

    python -m benchmarks.x265_options
        [--set structure|references|search|chroma-qp|weighted-prediction|effort|rate-control|tools|
         transform-skip|b-frames|shipped|references-ordered|intra]
        [--cubes ...]

Writes ``benchmarks/results/x265_options.{json,md}``; each set's last run is kept there.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.common import git_state, md_table
from benchmarks.defaults import _with

RESULTS = Path(__file__).parent / "results"
CUBES = (
    "l8_ny18_013032",
    "l8_ny18_014031",
    "landsat7_rgb_byte",
    "s2_l1c_eolearn_5x13",
    "s2_l1c_eolearn_ndvi_68x1",
    "s2_l2a_fusets_meadow_58x3x44x48",
    "s2_l2a_openeo_gfmap_19x4x52x46",
    "s2_l2a_worldcereal_118x4x64x64",
    "s2_l2a_worldcereal_72x4x64x64",
    "era5_t2m_uk_744h",
    "stars_cmip3_tos_24x1x170x180",
)
CANDIDATE_SETS: dict[str, dict[str, dict[str, str]]] = {}
CANDIDATE_SETS["structure"] = {
    "tu-intra/inter-depth 2": {"tu-intra-depth": "2", "tu-inter-depth": "2"},
    "tu-intra/inter-depth 3": {"tu-intra-depth": "3", "tu-inter-depth": "3"},
    "scenecut 0": {"scenecut": "0"},
    "deblock -2,-2": {"deblock": "-2,-2"},
    "no-deblock": {"no-deblock": "1"},
    "no-strong-intra-smoothing": {"no-strong-intra-smoothing": "1"},
    "weightb": {"weightb": "1"},
}
# x265's weighted prediction (its default, weightp=1), which the profiles turn off: with
# it a chunk's bytes depended on what the process had freed before (benchmarks.determinism)
CANDIDATE_SETS["weighted-prediction"] = {"weightp 1 (x265's default)": {"weightp": "1"}}
# More reference frames, searched in full: on a cloudy Sentinel-2 series the best
# reference of a date is often an older, clear one, past the three x265's medium keeps
# (its limit-refs=3 then prunes the search by what neighbouring blocks chose)
CANDIDATE_SETS["references"] = {
    "limit-refs 0": {"limit-refs": "0"},
    "ref 4, limit-refs 0": {"ref": "4", "limit-refs": "0"},
    "ref 6, limit-refs 0": {"ref": "6", "limit-refs": "0"},
    "ref 6": {"ref": "6"},
}
# More search per block on top of the six references (parts of the slower presets)
CANDIDATE_SETS["search"] = {
    "max-merge 5": {"max-merge": "5"},
    "me star, subme 3, merange 32": {"me": "star", "subme": "3", "merange": "32"},
    "rect, amp": {"rect": "1", "amp": "1"},
    "b-intra": {"b-intra": "1"},
    "bframes 6, rc-lookahead 30": {"bframes": "6", "rc-lookahead": "30"},
    "early-skip 0": {"early-skip": "0"},
}
# Quantiser offsets of the second and third planes: with the KLT on, they hold the minor
# components, whose share of the error at low rates a larger step may trade for bits.
CANDIDATE_SETS["chroma-qp"] = {
    "cb/cr qp +2": {"cbqpoffs": "2", "crqpoffs": "2"},
    "cb/cr qp +4": {"cbqpoffs": "4", "crqpoffs": "4"},
    "cb/cr qp +8": {"cbqpoffs": "8", "crqpoffs": "8"},
    "cb/cr qp -2": {"cbqpoffs": "-2", "crqpoffs": "-2"},
}
# More effort per block where the goal-1 cubes still trail: x265's mode decision at its
# slower presets' rd levels, and the slow preset itself ("preset" is an encoder option,
# not an x265 parameter). On single-date and small cubes the encode is short either way.
CANDIDATE_SETS["effort"] = {
    "rd 4": {"rd": "4"},
    "rd 5": {"rd": "5"},
    "rd 6": {"rd": "6"},
    "preset slow": {"preset": "slow"},
    "preset slower": {"preset": "slower"},
}
# x265's rate control inside a chunk: cutree lowers the quantiser of blocks later dates
# predict from (on by default, through adaptive quantisation at strength 0 when aq-mode is
# 0); qcomp sets how far crf lets a frame's quantiser follow its complexity (0.6; 1 keeps
# it constant). A time series whose dates are all read alike may want either otherwise.
CANDIDATE_SETS["rate-control"] = {
    "cutree 0": {"cutree": "0"},
    "qcomp 0.8": {"qcomp": "0.8"},
    "qcomp 1": {"qcomp": "1"},
    "qcomp 0.5": {"qcomp": "0.5"},
    "rc-lookahead 40": {"rc-lookahead": "40"},
}
# coding tools medium leaves as they are: sample-adaptive offset (on; after deblocking or
# not, on every CTU or only some), transform skip of 4 x 4 blocks (off), sign-bit hiding
# (on), recursion skip (on), B-frame pyramid and B-frames, and 16-pixel CTUs for small
# frames.
CANDIDATE_SETS["tools"] = {
    "sao 0": {"sao": "0"},
    "sao-non-deblock": {"sao-non-deblock": "1"},
    "tskip": {"tskip": "1"},
    "signhide 0": {"signhide": "0"},
    "rskip 0": {"rskip": "0"},
    "b-pyramid 0": {"b-pyramid": "0"},
    "bframes 0": {"bframes": "0"},
    "ctu 16": {"ctu": "16"},
}
# transform skip (the tools set's one clear gain, on Landsat cubes) with what could let it
# act on more blocks: deeper transform trees (more 4 x 4 transforms), recursion skip off;
# and its fast mode (tried on 4 x 4 intra partitions only)
CANDIDATE_SETS["transform-skip"] = {
    "tskip": {"tskip": "1"},
    "tskip, tskip-fast": {"tskip": "1", "tskip-fast": "1"},
    "tskip, tu depth 2": {"tskip": "1", "tu-intra-depth": "2", "tu-inter-depth": "2"},
    "tskip, rskip 0": {"tskip": "1", "rskip": "0"},
}
# the default's own choices, each taken back, and the deeper transform trees a screen
# once turned down, measured with each cube's nodata (the earlier sets coded the fill of
# the Landsat and WorldCereal cubes as data)
CANDIDATE_SETS["shipped"] = {
    "tskip 0": {"tskip": "0"},
    "rdoq-level 0": {"rdoq-level": "0"},
    "ref 3, limit-refs 3": {"ref": "3", "limit-refs": "3"},
    "tu depth 2": {"tu-intra-depth": "2", "tu-inter-depth": "2"},
}
# fewer references where the date order pays: on the series whose chunks it reorders,
# each date follows the dates most like it, which medium's pruned three may then reach
CANDIDATE_SETS["references-ordered"] = {
    "ref 3, limit-refs 3": {"ref": "3", "limit-refs": "3"},
    "ref 3": {"ref": "3"},
    "ref 2, limit-refs 3": {"ref": "2", "limit-refs": "3"},
    "ref 4, limit-refs 3": {"ref": "4", "limit-refs": "3"},
}
# intra coding, where the cubes goal 1 still misses spend their bits (one date, or dates
# that share little): lossless coding units as an R-D candidate (8-bit display values with
# flat runs), R-D refinement of the quantiser's rounding (needs rd 5), lighter RDOQ, and
# transforms of at most 16 pixels
CANDIDATE_SETS["intra"] = {
    "cu-lossless": {"cu-lossless": "1"},
    "rdoq-level 1": {"rdoq-level": "1"},
    "rd 5, rd-refine": {"rd": "5", "rd-refine": "1"},
    "max-tu-size 16": {"max-tu-size": "16"},
}
# how x265 places B-frames (medium: b-adapt 2, the trellis decision, up to 4 B-frames):
# placed without or with the fast decision, at most 2, or biased for and against
CANDIDATE_SETS["b-frames"] = {
    "b-adapt 0": {"b-adapt": "0"},
    "b-adapt 1": {"b-adapt": "1"},
    "bframes 2": {"bframes": "2"},
    "bframe-bias 20": {"bframe-bias": "20"},
    "bframe-bias -20": {"bframe-bias": "-20"},
}
ENCODER_OPTIONS = ("preset",)


def curve(
    block: np.ndarray, profile: Any, crfs: tuple[float, ...], nodata: float | None = None
) -> tuple[np.ndarray, float]:
    """(log bpppb, PSNR over the valid values) per crf and the seconds the encodes took."""
    from eocube.chunk import decode_chunk, encode_chunk
    from eocube.metrics import psnr

    points, seconds = [], 0.0
    for crf in crfs:
        t0 = time.perf_counter()
        payload = encode_chunk(block, profile, quality=crf, nodata=nodata)
        seconds += time.perf_counter() - t0
        decoded = decode_chunk(payload)[: block.shape[0]]
        points.append((np.log(len(payload) * 8 / block.size), psnr(block, decoded, nodata)))
    return np.array(points), seconds


def versus(points: np.ndarray, base: np.ndarray) -> list[float]:
    """PSNR differences of ``points`` to ``base`` at the same rate, where base covers it."""
    order = np.argsort(base[:, 0])
    inside = (points[:, 0] >= base[:, 0].min()) & (points[:, 0] <= base[:, 0].max())
    reference = np.interp(points[inside, 0], base[order, 0], base[order, 1])
    return [float(d) for d in points[inside, 1] - reference]


def main(argv: list[str] | None = None) -> int:
    import eocube

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    corpus.add_corpus_option(p)
    p.add_argument("--cubes", nargs="+", default=list(CUBES))
    p.add_argument("--set", choices=list(CANDIDATE_SETS), default="structure", dest="group")
    p.add_argument("--dates", type=int, default=32)
    p.add_argument("--crfs", type=float, nargs="+", default=[6, 14, 22, 30])
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    default = eocube.get_profile("hevc-12bit-444")
    candidates = CANDIDATE_SETS[args.group]
    crfs = tuple(args.crfs)
    rows: list[dict[str, Any]] = []
    for name, block, nodata in corpus.first_dates(args.cubes, args.dates, args.corpus):
        curve(block[:1], default, crfs[:1], nodata)  # kernels and codecs warm: time alike
        base, base_s = curve(block, default, crfs, nodata)
        for label, params in candidates.items():
            options = {k: v for k, v in params.items() if k in ENCODER_OPTIONS}
            x265 = {k: v for k, v in params.items() if k not in ENCODER_OPTIONS}
            points, seconds = curve(block, _with(default, params=x265, **options), crfs, nodata)
            diffs = versus(points, base)
            rows.append(
                {
                    "cube": name,
                    "candidate": label,
                    "params": params,
                    "mean_db": float(np.mean(diffs)) if diffs else float("nan"),
                    "db_at_points": diffs,
                    "time_ratio": seconds / base_s,
                }
            )
            print(
                f"{name:34s} {label:28s} {rows[-1]['mean_db']:+.3f} dB "
                f"(time x{rows[-1]['time_ratio']:.2f})",
                flush=True,
            )
    if not rows:  # keep the set's committed results
        print("no cube measured; results not written")
        return 1
    path = RESULTS / "x265_options.json"
    runs = _load_runs(path)
    runs[args.group] = {"git": git_state(), "crfs": crfs, "dates": args.dates, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"sets": runs}, indent=1))
    text = render(runs)
    (RESULTS / "x265_options.md").write_text(text)
    print(text)
    return 0


def _load_runs(path: Path) -> dict[str, Any]:
    """The committed runs by candidate set (a file from before sets were named holds
    the "structure" set)."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return dict(saved["sets"]) if "sets" in saved else {"structure": saved}


def render(runs: dict[str, Any]) -> str:
    """One table per candidate set: mean dB against the default and the time ratio."""
    parts = ["# x265 option candidates against hevc-12bit-444\n"]
    for group, run in runs.items():
        rows = run["rows"]
        cands = list(dict.fromkeys(r["candidate"] for r in rows))
        cubes = list(dict.fromkeys(r["cube"] for r in rows))
        table = []
        for name in cubes:
            by = {r["candidate"]: r for r in rows if r["cube"] == name}
            table.append(
                [name, *(f"{by[c]['mean_db']:+.2f} (×{by[c]['time_ratio']:.2f})" for c in cands)]
            )
        medians = [
            float(np.nanmedian([r["mean_db"] for r in rows if r["candidate"] == c])) for c in cands
        ]
        table.append(["median", *(f"{m:+.2f}" for m in medians)])
        crfs = ", ".join(f"{c:g}" for c in run["crfs"])
        command = f"--set {group} --crfs {' '.join(f'{c:g}' for c in run['crfs'])}"
        cubes = list(dict.fromkeys(r["cube"] for r in rows))
        if set(cubes) != set(CUBES):
            command += f" --cubes {' '.join(cubes)}"
        parts.append(
            f"## {group}\n\nMean PSNR difference (dB) to the default at the same payload "
            f"rate, first {run['dates']} dates of each cube as one chunk, crf {crfs}; in "
            "brackets the encode time against the default's. Commit "
            f"{str(run['git'].get('commit', '?'))[:7]}. Reproduce: "
            f"`python -m benchmarks.x265_options {command}`.\n\n"
            + md_table(["cube", *cands], table)
            + "\n"
        )
    return "\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
