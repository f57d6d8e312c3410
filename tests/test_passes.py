"""Correction passes of a target write: staged in the store, the best one kept without
encoding it again (eocube.passes, eocube.ratecontrol.write_to_target)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import xarray as xr
import zarr
from cubes import open_cube

import eocube
from eocube import lifecycle, metrics, passes, ratecontrol
from eocube.profiles import get_profile
from eocube.report import EncodeReport, VariableReport
from eocube.variables import cube_variables

CHUNKS = {"time": 8, "y": 32, "x": 32}


def _cube() -> xr.Dataset:
    return open_cube("s2_l2a_openeo_gfmap_19x4x52x46")[["data"]]


def _files(store: Path) -> dict[str, bytes]:
    return {
        p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file()
    }


def _video_quality(store: Path) -> float:
    root = json.loads((store / "zarr.json").read_text())
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") == "eocube.video":
                found.append(node["configuration"]["quality"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(root["consolidated_metadata"]["metadata"]["data"])
    assert len(found) == 1
    return float(found[0])


@pytest.fixture
def staged_setup(tmp_path: Path) -> tuple[xr.Dataset, Path, dict, object]:
    ds = _cube()
    store = tmp_path / "c.eocube"
    eocube.to_eocube(ds, store, crf=30, chunks=CHUNKS)
    return ds, store, _files(store), lifecycle.store_path(str(store))


def _stage(ds: xr.Dataset, real: object, crf: float) -> passes.StagedPass:
    cube_vars, _ = cube_variables(ds, None, None, CHUNKS, {})
    cv = cube_vars["data"]
    return passes.write_pass(
        ds, real, {"data": cv}, {"data": "hevc-12bit-444"}, {"data": crf}, {}, 2,
        progress=False, measure=True,
    )  # fmt: skip


def test_a_staged_pass_leaves_the_store_readable_as_it_was(staged_setup: tuple) -> None:
    ds, store, before, real = staged_setup
    staged = _stage(ds, real, 18)
    assert staged.tallies["data"].stats is not None
    assert staged.shard_nbytes > 0
    now = _files(store)
    # the store's own objects are untouched; the pass lies in the staging area
    assert {k: v for k, v in now.items() if not k.startswith(".eocube-staging")} == before
    assert any(k.startswith(passes.PASSES) for k in now)
    with eocube.open_dataset(store) as opened:
        opened.data.values  # noqa: B018  (complete and readable meanwhile)
    passes.discard(real)
    assert _files(store) == before
    assert not (store / ".eocube-staging").exists()


def test_a_promoted_pass_is_the_store_a_direct_write_makes(
    staged_setup: tuple, tmp_path: Path
) -> None:
    ds, store, _, real = staged_setup
    staged = _stage(ds, real, 18)
    prefix = f"{passes.pass_prefix(2)}/"
    made = {k[len(prefix) :]: v for k, v in _files(store).items() if k.startswith(prefix)}
    cube_vars, _ = cube_variables(ds, None, None, CHUNKS, {})
    codecs = {"data": passes.codec_of(cube_vars["data"], "hevc-12bit-444", 18, None)}
    passes.promote(real, staged, cube_vars, codecs, False, {})
    promoted = _files(store)
    # the store holds the staged pass's shards, in place, and its settings
    assert {k: v for k, v in promoted.items() if k.startswith("data/c/")} == made
    assert _video_quality(store) == 18
    assert not any(k.startswith(".eocube-staging") for k in promoted)
    # and reads as a direct write at those settings (the KLT basis may differ in its
    # last bits between two encodes: BLAS under threads, so values are compared)
    direct = tmp_path / "direct.eocube"
    eocube.to_eocube(ds, direct, crf=18, chunks=CHUNKS)
    with eocube.open_dataset(store) as a, eocube.open_dataset(direct) as b:
        ours = metrics.psnr(ds.data.values, a.data.values)
        theirs = metrics.psnr(ds.data.values, b.data.values)
    assert abs(ours - theirs) < 0.05
    stats = staged.tallies["data"].stats
    assert stats is not None
    assert math.isclose(stats.psnr(), ours, rel_tol=1e-9)
    # what the tasks counted is what the promoted store holds
    arr = zarr.open_group(str(store), mode="r")["data"]
    from eocube.shards import payload_nbytes

    assert staged.tallies["data"].payload_nbytes == payload_nbytes(arr)


class _FakePasses:
    """Passes whose reports are given: which are made, and which one is kept."""

    def __init__(self, psnrs: list[float]) -> None:
        self.psnrs = psnrs
        self.made: list[int] = []
        self.kept: int | None = None
        self.quality_at: dict[int, float | None] = {}
        self.quality: dict = {}

    def _report(self, number: int) -> EncodeReport:
        psnr = self.psnrs[number - 1]
        var = VariableReport("data", (4, 1, 8, 8), "uint16", "hevc-12bit-444",
                             self.quality["data"], 1000 * number, 1.0, psnr=psnr)  # fmt: skip
        return EncodeReport("x", 1000 * number, 2000, 256, 1.0, 2.0, {"data": var})

    def first(self, mode: str) -> EncodeReport:
        self.made.append(1)
        self.quality_at[1] = self.quality["data"]
        return self._report(1)

    def again(self, number: int) -> EncodeReport:
        self.made.append(number)
        self.quality_at[number] = self.quality["data"]
        return self._report(number)

    def keep(self, number: int) -> EncodeReport:
        self.kept = number
        return replace(self._report(number), nbytes=1000 * number)


def test_keeping_an_earlier_pass_encodes_nothing_again() -> None:
    # pass 1 meets 45 dB, two coarser corrections miss: pass 1 is kept, not re-encoded
    fake = _FakePasses([47.0, 44.0, 44.5])
    quality: dict = {"data": 20.0}
    fake.quality = quality
    control = ratecontrol.Control.parse(target_psnr=45.0)
    searched = ratecontrol.Searched()
    report, encodes = ratecontrol.write_to_target(
        fake, "w-", get_profile("hevc-12bit-444"), control, quality, {}, searched
    )
    assert fake.made == [1, 2, 3]
    assert encodes == 3 <= 1 + ratecontrol.MAX_CORRECTIONS
    assert fake.kept == 1
    assert quality["data"] == fake.quality_at[1]  # the settings of the pass kept
    assert report.variables["data"].psnr == 47.0


def test_a_target_write_reports_at_most_three_encodes(tmp_path: Path) -> None:
    ds = _cube()
    report = eocube.to_eocube(ds, tmp_path / "t.eocube", target_psnr=52.0, chunks=CHUNKS)
    assert 1 <= report.passes <= 1 + ratecontrol.MAX_CORRECTIONS
    v = report.variables["data"]
    assert v.psnr is not None
    assert v.psnr >= 52.0
    assert not (tmp_path / "t.eocube" / ".eocube-staging").exists()
    with eocube.open_dataset(tmp_path / "t.eocube") as back:
        measured = metrics.psnr(ds.data.values, back.data.values)
    assert math.isclose(measured, v.psnr, rel_tol=1e-9)


class _RatePasses:
    """Passes whose payload follows ``curve`` (quality -> bits per value), no overhead."""

    values = 80_000

    def __init__(
        self,
        curve: Callable[[float], float],
        quality: dict,
        psnr: Callable[[float], float] = lambda q: 40.0,
    ) -> None:
        self.curve = curve
        self.psnr = psnr
        self.quality = quality
        self.made: list[float] = []
        self.reports: dict[int, EncodeReport] = {}

    def _encode(self, number: int) -> EncodeReport:
        q = self.quality["data"]
        self.made.append(q)
        rate = self.curve(q)
        nbytes = round(rate * self.values / 8)
        var = VariableReport("data", (20, 1, 40, 100), "uint16", "hevc-12bit-444", q, nbytes,
                             rate, psnr=self.psnr(q))  # fmt: skip
        report = EncodeReport("x", nbytes, 2 * self.values, self.values, rate, 16 / rate,
                              {"data": var})  # fmt: skip
        self.reports[number] = report
        return report

    def first(self, mode: str) -> EncodeReport:
        return self._encode(1)

    def again(self, number: int) -> EncodeReport:
        return self._encode(number)

    def keep(self, number: int) -> EncodeReport:
        return self.reports[number]


def _cliff(q: float) -> float:
    # bytes that jump where a chunk's layout trial flips, as PyAV 15's x265 did on a
    # 19-date Sentinel-2 series: 1.6 bits per value up to crf 1.5, then about 0.7 more
    # halvings every 3.5 steps from 1.0 at crf 2.6
    return 1.6 if q <= 1.5 else 2 ** (-(q - 2.6) / 3.5)


def test_rate_corrections_close_in_between_the_passes_that_bracket_the_target() -> None:
    quality: dict = {"data": 4.25}
    fake = _RatePasses(_cliff, quality)
    control = ratecontrol.Control.parse(target_bpppb=1.0)
    report, encodes = ratecontrol.write_to_target(
        fake, "w-", get_profile("hevc-12bit-444"), control, quality, {}, ratecontrol.Searched()
    )
    # pass 1 spends too little; halving every 6 crf steps sends pass 2 over the cliff;
    # from there the same rule alone would go back past pass 1 (crf 5.5, 0.56 bpppb);
    # the two passes' bracket lands within the rate
    assert fake.made[:2] == [4.25, 1.5]
    assert 1.5 < fake.made[2] < 4.25
    assert encodes == 3
    assert abs(report.bpppb - 1.0) <= 0.1
    assert quality["data"] == fake.made[2]


def test_of_the_passes_within_the_rate_the_closest_is_kept() -> None:
    # pass 1 lands 9 % short (within +-10 %, but corrected), pass 2 2.6 % over: both meet
    # the rate, and the one closer to it is kept, not the smaller
    quality: dict = {"data": 10.0}
    fake = _RatePasses(lambda q: 0.91 * 2 ** (-(q - 10.0) / 4.3), quality)
    control = ratecontrol.Control.parse(target_bpppb=1.0)
    report, encodes = ratecontrol.write_to_target(
        fake, "w-", get_profile("hevc-12bit-444"), control, quality, {}, ratecontrol.Searched()
    )
    assert encodes == 2
    assert fake.made == [10.0, 9.25]
    assert math.isclose(report.bpppb, fake.curve(9.25), rel_tol=1e-3)
    assert quality["data"] == 9.25


def test_rate_bracket_is_taken_in_quality_order() -> None:
    # bytes not falling steadily: the pair nearest by bytes (crf 4.25 and -3) would aim
    # the secant back at crf 3, tried already
    points = [(16.0, 0.16), (-3.0, 2.47), (4.25, 0.67), (3.0, 0.60)]
    assert ratecontrol.rate_bracket(points, 0.85) == ((-3.0, 2.47), (3.0, 0.60))
    assert ratecontrol.rate_bracket(points, 3.0) is None  # nothing spends more
    assert ratecontrol.rate_bracket(points, 0.1) is None  # nothing spends less
    # a coarser point above the target narrows the bracket from the fine side
    assert ratecontrol.rate_bracket([*points, (1.5, 0.94)], 0.85) == ((1.5, 0.94), (3.0, 0.60))


def test_inside_a_bracket_the_secant_then_the_middle_then_nothing() -> None:
    prof = get_profile("hevc-12bit-444")
    bracket = ((-3.0, 2.47), (3.0, 0.60))
    secant = ratecontrol.inside_bracket(prof, bracket, 0.85, [-3.0, 3.0])
    assert secant is not None
    assert 1.0 < secant < 3.0  # log(bytes) linear between the two: crf 1.5
    # the secant lands on a quality tried: the bracket's middle
    assert ratecontrol.inside_bracket(prof, bracket, 0.85, [-3.0, 3.0, secant]) == 0.0
    # a bracket one step wide leaves nothing to try
    step = prof.quality.step if prof.quality is not None else 0.0
    assert ratecontrol.inside_bracket(prof, ((2.0, 1.0), (2.0 + step, 0.8)), 0.9,
                                      [2.0, 2.0 + step]) is None  # fmt: skip


def _rate_report(rate: float, quality: float) -> EncodeReport:
    values = 80_000
    nbytes = round(rate * values / 8)
    var = VariableReport("data", (20, 1, 40, 100), "float32", "hevc-12bit-444", quality,
                         nbytes, rate)  # fmt: skip
    return EncodeReport("x", nbytes, 4 * values, values, rate, 32 / rate, {"data": var})


def test_a_residual_is_dropped_where_the_video_alone_spends_more_than_the_rate() -> None:
    # the sample's video saturated below the rate (0.23 bits per value at quality -6), so
    # the search added a residual; on the cube the video alone spends 0.7
    searched = ratecontrol.Searched(bounds={"data"}, video_shares={"data": 0.9})
    bounds: dict = {"data": 0.01}
    profile = get_profile("hevc-12bit-444")
    new = ratecontrol.correct(
        profile, {"data": -6.0}, _rate_report(0.78, -6.0), None, 0.3, bounds, searched
    )
    assert new is not None
    assert "data" not in bounds  # no bound brings 0.7 bits of video down to 0.3
    # coarser by about six steps per halving of the video's estimated 0.70 bits
    assert new["data"] == profile.quality.snap(-6 + 6 * math.log2(0.78 * 0.9 / 0.3))
    # a video within the rate keeps its residual, the bound scaled
    bounds = {"data": 0.01}
    new = ratecontrol.correct(
        profile, {"data": -6.0}, _rate_report(0.33, -6.0), None, 0.3, bounds, searched
    )
    assert new == {"data": -6.0}
    assert bounds["data"] > 0.01


def test_residual_corrections_follow_the_slope_of_the_passes() -> None:
    # a cube of 84 % NaN: a doubling of the bound saves 0.13 bits per value, not 1
    searched = ratecontrol.Searched(bounds={"data"}, video_shares={"data": 0.5})
    first, second = 0.001, 0.001 * 2**0.475
    made = [
        ({"data": -6.0}, {"data": first}, _rate_report(1.475, -6.0)),
        ({"data": -6.0}, {"data": second}, _rate_report(1.413, -6.0)),
    ]
    bounds: dict = {"data": second}
    ratecontrol.correct(
        get_profile("hevc-12bit-444"), {"data": -6.0}, made[-1][2], None, 1.0, bounds,
        searched, made,
    )  # fmt: skip
    saved = (1.475 - 1.413) / 0.475
    assert math.isclose(bounds["data"], second * 2 ** (0.413 / saved), rel_tol=1e-9)
    # one pass alone gives no slope: a bit per value per doubling
    bounds = {"data": second}
    ratecontrol.correct(
        get_profile("hevc-12bit-444"), {"data": -6.0}, made[-1][2], None, 1.0, bounds, searched
    )
    assert math.isclose(bounds["data"], second * 2**0.413, rel_tol=1e-9)


def test_an_exact_pass_is_not_corrected_for_its_psnr() -> None:
    # a uint8 scene asked for 60 dB: the residual's bound (0.43) is below 1, the pass is
    # exact (PSNR inf); scaling the bound by the overshoot made it inf, and the next pass
    # refused it
    var = VariableReport("data", (1, 3, 40, 100), "uint8", "hevc-12bit-444", 9.5, 4000, 2.9,
                         psnr=math.inf)  # fmt: skip
    report = EncodeReport("x", 4000, 12_000, 12_000, 2.9, 8 / 2.9, {"data": var})
    bounds: dict = {"data": (0.43, 0.43, 0.43)}
    searched = ratecontrol.Searched(bounds={"data"})
    new = ratecontrol.correct(
        get_profile("hevc-12bit-444"), {"data": 9.5}, report, 60.0, None, bounds, searched
    )
    assert new == {"data": 9.5}
    assert bounds == {"data": (0.43, 0.43, 0.43)}


def _steep_psnr(q: float) -> float:
    # PSNR falling 2 dB a quality step (a Landsat 8 series near x265's finest qualities:
    # 50.8 dB at crf -1.5, 47.9 at crf 0)
    return 52.0 - 2 * q


def test_psnr_corrections_close_in_between_the_passes_that_bracket_the_target() -> None:
    quality: dict = {"data": 0.5}
    fake = _RatePasses(lambda q: 2.2 * 2 ** (-q / 6), quality, psnr=_steep_psnr)
    control = ratecontrol.Control.parse(target_psnr=50.0)
    report, encodes = ratecontrol.write_to_target(
        fake, "w-", get_profile("hevc-12bit-444"), control, quality, {}, ratecontrol.Searched()
    )
    # pass 1 overshoots by 1 dB; 2 steps a dB send pass 2 to crf 2.25 (47.5 dB); the
    # third lands between the two (2 steps a dB sent it to crf -3, 58 dB)
    assert fake.made[:2] == [0.5, 2.25]
    assert 0.5 < fake.made[2] < 2.25
    assert encodes == 3
    assert 50.0 <= report.variables["data"].psnr <= 50.75
    assert quality["data"] == fake.made[2]


def _psnr_report(quality: float, psnr: float) -> EncodeReport:
    var = VariableReport("data", (8, 11, 79, 79), "uint16", "hevc-12bit-444", quality,
                         140_000, 2.15, psnr=psnr)  # fmt: skip
    return EncodeReport("x", 140_000, 1_098_152, 549_076, 2.15, 7.4, {"data": var})


def test_psnr_corrections_take_the_search_trials_at_the_cubes_level() -> None:
    profile = get_profile("hevc-12bit-444")
    # the sample was the whole cube (a Landsat 8 series at 50 dB): between crf -1.5
    # (x265's constant QP level -2, 0.8 dB over) and -1.25 (level -1, a miss) there is
    # nothing to try; 2 steps a dB made two more passes, to end where it began
    trials = ((16.0, 36.46), (-6.0, 54.59), (0.0, 47.88), (-2.0, 50.81), (-1.25, 49.93),
              (-1.5, 50.81))  # fmt: skip
    searched = ratecontrol.Searched(sample_psnrs={"data": trials})
    new = ratecontrol.correct(profile, {"data": -1.5}, _psnr_report(-1.5, 50.81), 50.0, None,
                              {}, searched)  # fmt: skip
    assert new == {"data": -1.5}
    # three of eight chunks of an ocean-colour scene at 40 dB: a cliff between crf 20.75
    # (41.7 dB on the sample, 41.8 on the cube) and 21.25 (36.8); 2 steps a dB went to
    # 24.25 (35.8 dB)
    trials = ((16.0, 46.42), (28.5, 31.55), (21.25, 36.83), (19.5, 42.68), (20.25, 41.8),
              (20.5, 41.78), (20.75, 41.72))  # fmt: skip
    searched = ratecontrol.Searched(sample_psnrs={"data": trials})
    new = ratecontrol.correct(profile, {"data": 20.75}, _psnr_report(20.75, 41.84), 40.0,
                              None, {}, searched)  # fmt: skip
    assert new == {"data": 21.0}
    # 118 dates of Sentinel-2 at 50 dB, the cube 0.42 dB over the sample: the trials that
    # meet and miss lie within PSNR_LINEAR_SPAN (crf 4.5, 6.25): aim between them
    trials = ((16.0, 43.6), (3.0, 50.87), (6.25, 49.09), (4.5, 50.01), (4.0, 50.4),
              (4.25, 50.03))  # fmt: skip
    searched = ratecontrol.Searched(sample_psnrs={"data": trials})
    new = ratecontrol.correct(profile, {"data": 4.0}, _psnr_report(4.0, 50.82), 50.0, None,
                              {}, searched)  # fmt: skip
    assert new == {"data": 5.0}
    # ... where they lie far apart (crf 2.75 and 16), the one that meets
    trials = ((16.0, 41.3), (-2.0, 53.1), (2.75, 49.61), (1.5, 50.17))
    searched = ratecontrol.Searched(sample_psnrs={"data": trials})
    new = ratecontrol.correct(profile, {"data": 1.5}, _psnr_report(1.5, 50.98), 50.0, None,
                              {}, searched)  # fmt: skip
    assert new == {"data": 2.75}
    # a pass outside the trials' qualities: they give no level, 2 steps a dB as before
    new = ratecontrol.correct(profile, {"data": 30.0}, _psnr_report(30.0, 41.84), 40.0,
                              None, {}, searched)  # fmt: skip
    assert new == {"data": profile.quality.snap(30.0 + (1.84 - 0.15) * 2)}


def test_psnr_bracket() -> None:
    points = [(16.0, 39.9), (-1.5, 50.9), (-1.25, 49.8)]
    assert ratecontrol.psnr_bracket(points, 50.0) == ((-1.5, 50.9), (-1.25, 49.8))
    assert ratecontrol.psnr_bracket([(-1.5, 50.9)], 50.0) is None
    assert ratecontrol.psnr_bracket([(16.0, 39.9)], 50.0) is None
