"""benchmarks.corpus: cubes read from the folder named, missing ones skipped aloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from benchmarks import corpus

DATA = Path(__file__).parent / "data"


def test_first_dates_reads_the_first_dates_and_skips_missing_cubes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    got = list(corpus.first_dates(["no_such_cube", "s2_l1c_eolearn_5x13"], 3, DATA))
    assert [name for name, _, _ in got] == ["s2_l1c_eolearn_5x13"]
    with xr.open_dataset(DATA / "s2_l1c_eolearn_5x13.nc", mask_and_scale=False) as ds:
        expected = ds["data"].values[:3]
    block = got[0][1]
    assert block.dtype == expected.dtype
    np.testing.assert_array_equal(block, expected)
    assert "no_such_cube: not in" in capsys.readouterr().out


def test_first_dates_carries_each_cubes_nodata() -> None:
    got = {
        name: nodata
        for name, _, nodata in corpus.first_dates(
            ["s2_l2a_worldcereal_12x9x100x100", "landsat7_rgb_byte", "s2_l1c_eolearn_5x13"],
            2,
            DATA,
        )
    }
    assert got == {
        "s2_l2a_worldcereal_12x9x100x100": 65535.0,
        "landsat7_rgb_byte": 0.0,
        "s2_l1c_eolearn_5x13": None,
    }


def test_save_results_writes_nothing_for_a_run_that_measured_nothing(tmp_path: Path) -> None:
    from benchmarks.common import save_results

    assert not save_results(tmp_path, "empty", "# nothing", {"rows": []})
    assert list(tmp_path.iterdir()) == []
    assert save_results(tmp_path, "some", "# one row", {"rows": [{"cube": "x"}]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["some.json", "some.md"]


@pytest.mark.parametrize(
    "module", ["lossless", "decode_ab", "x265_options", "read_speed", "profile_ab", "rd"]
)
def test_benchmarks_leave_their_results_alone_when_no_cube_is_found(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run on a corpus without the benchmark's cubes (e.g. tests/data for dev-corpus
    cubes) exits non-zero before it writes: committed results are never replaced by
    empty tables."""
    import importlib

    main = importlib.import_module(f"benchmarks.{module}" + (".cli" if module == "rd" else "")).main
    empty = tmp_path / "corpus"
    empty.mkdir()
    argv = ["--corpus", str(empty)]
    if module in ("profile_ab", "rd"):
        argv += ["--out", str(tmp_path / "out")]
    if module == "rd":
        argv += ["--cubes", "no_such_cube"]
    results = Path(corpus.__file__).parent / "results"
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert main(argv) == 1
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert after == before
    assert "skipped" in capsys.readouterr().out
