"""benchmarks.rd: parts seeded from committed results, and the default's target-rate points."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import common
from benchmarks.rd import parts, sweeps
from benchmarks.rd.methods import cube_jobs, is_selected
from benchmarks.rd.records import DEFAULT_METHOD


def _record(cube: str, method: str, label: str, **figures: Any) -> dict[str, Any]:
    info = {k: f"{k} of {cube}" for k in parts.CUBE_FIELDS}
    return {**info, "cube": cube, "method": method, "setting_label": label, **figures}


def test_seeded_parts_keep_other_methods_for_a_rerun(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    lines = [
        _record("a", DEFAULT_METHOD, "crf 0", psnr=50.0),
        _record("a", "reference", "crf 0", psnr=48.0),
        _record("b", DEFAULT_METHOD, "crf 0", psnr=40.0),
    ]
    results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    part = tmp_path / "a.jsonl"
    assert parts.seed_from_results(results, "a", part)
    cubes, records, _ = parts.load_parts(tmp_path)
    assert list(cubes) == ["a"]  # b was not asked for; results.jsonl is not a part
    assert cubes["a"]["family"] == "family of a"
    assert cubes["a"]["complete"]  # as it was in the run that wrote results.jsonl
    assert parts.is_complete(part)
    assert [r["method"] for r in records] == [DEFAULT_METHOD, "reference"]
    parts.keep_other_methods(part, {DEFAULT_METHOD})
    assert parts.measured_keys(parts.part_lines(part)) == {"reference|crf 0"}
    assert not parts.seed_from_results(results, "c", tmp_path / "c.jsonl")
    assert not parts.seed_from_results(tmp_path / "absent.jsonl", "a", tmp_path / "d.jsonl")
    assert not (tmp_path / "c.jsonl").exists()


def test_a_run_of_some_cubes_keeps_every_other_cubes_points(tmp_path: Path) -> None:
    # a fresh checkout: committed results, no points/ yet
    results = tmp_path / "results.jsonl"
    lines = [
        _record("a", DEFAULT_METHOD, "crf 0", psnr=50.0),
        _record("b", DEFAULT_METHOD, "crf 0", psnr=40.0),
        _record("c", "reference", "crf 0", psnr=30.0),
    ]
    results.write_text("".join(json.dumps(x) + "\n" for x in lines))
    points = tmp_path / "points"
    points.mkdir()
    (points / "b.jsonl").write_text(json.dumps({"cube": "b", "cube_info": {}}) + "\n")
    assert parts.seed_missing(results, points) == ["a", "c"]  # b's part is left as it is
    cubes, records, _ = parts.load_parts(points)
    assert sorted(cubes) == ["a", "b", "c"]
    assert sorted(r["cube"] for r in records) == ["a", "c"]
    assert parts.seed_missing(results, points) == []  # nothing left to seed
    assert parts.seed_missing(tmp_path / "absent.jsonl", points) == []


@pytest.mark.parametrize("quick", [True, False])
def test_the_default_and_wavelet_profiles_are_also_written_at_target_rates(quick: bool) -> None:
    class Tiny:  # cube_jobs reads only what the competitors' applies() needs
        values = np.zeros((2, 1, 8, 8), np.uint16)
        nodata = None

    jobs = cube_jobs(Tiny(), quick=quick, decode_repeats=1)  # type: ignore[arg-type]
    targets = [j.setting["target_bpppb"] for j in jobs if "target_bpppb" in j.setting]
    assert targets == list(sweeps.target_rates(quick)) * 2
    methods = {j.method for j in jobs if "target_bpppb" in j.setting}
    assert methods == {DEFAULT_METHOD, "eocube:hevc-12bit-444-wavelet"}
    # above the goals' top rate, so that 1 bpppb is interpolated on both bases
    assert min(targets) > 1


def test_a_target_point_lets_the_curve_reach_a_rate_the_sweep_does_not() -> None:
    sweep = [
        {"setting": {"crf": 0}, "bpppb": 0.9, "psnr": 52.0},
        {"setting": {"crf": 8}, "bpppb": 0.5, "psnr": 49.0},
    ]
    saturated = common.psnr_at_sat(sweep, 1.0)
    assert isinstance(saturated, common.Sat)
    assert saturated == 52.0
    target = {"setting": {"target_bpppb": 1.25}, "bpppb": 1.3, "psnr": 54.0}
    reached = common.psnr_at_sat([*sweep, target], 1.0)
    assert not isinstance(reached, common.Sat)
    assert reached is not None
    assert 52.0 < reached < 54.0


def test_a_childs_death_is_named_for_what_it_was() -> None:
    from benchmarks.rd.runner import _death

    assert "hang" in _death(1)  # faulthandler's watchdog exits with 1
    assert "signal 11" in _death(-11)


def test_methods_are_selected_by_name_or_by_family() -> None:
    chosen = {"eocube:hevc-12bit-444", "reference"}
    assert is_selected("eocube:hevc-12bit-444", chosen)
    assert is_selected("reference", chosen)
    # a profile's name does not select the profiles it is a prefix of
    assert not is_selected("eocube:hevc-12bit-444-gbr", chosen)
    assert not is_selected("eocube:hevc-12bit-444-wavelet", chosen)
    assert not is_selected("SZ3", chosen)
    # a family by its prefix and colon
    assert is_selected("eocube:hevc-12bit-444-gbr", {"eocube:"})
    assert is_selected("eocube:av1-10bit", {"eocube:"})
    assert not is_selected("reference", {"eocube:"})


def test_the_summary_names_the_commit_each_methods_points_were_measured_at() -> None:
    from benchmarks.rd.runner import measured_at
    from benchmarks.rd.summary import _provenance

    clean = measured_at({"machine": {"git": {"commit": "0123456789abcdef", "dirty": []}}})
    dirty = measured_at({"machine": {"git": {"commit": "fedcba9876543210", "dirty": ["x"]}}})
    assert clean.startswith("0123456789 ")
    assert dirty.startswith("fedcba9876+ ")
    records = [
        _record("a", DEFAULT_METHOD, "crf 0", measured_at=clean),
        _record("b", DEFAULT_METHOD, "crf 0", measured_at=dirty),
        _record("a", "reference", "crf 0", measured_at=clean),
        _record("a", "SPERR", "rel 0.1"),
    ]
    line = _provenance(records)
    assert f"{DEFAULT_METHOD}: {clean}; {dirty}" in line  # two runs, both named
    assert f"reference: {clean}" in line
    assert "SPERR: not recorded" in line
