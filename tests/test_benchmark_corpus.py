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
    assert [name for name, _ in got] == ["s2_l1c_eolearn_5x13"]
    with xr.open_dataset(DATA / "s2_l1c_eolearn_5x13.nc", mask_and_scale=False) as ds:
        expected = ds["data"].values[:3]
    block = got[0][1]
    assert block.dtype == expected.dtype
    np.testing.assert_array_equal(block, expected)
    assert "no_such_cube: not in" in capsys.readouterr().out
