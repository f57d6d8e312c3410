"""benchmarks.error_bounded: competitors on cubes with invalid values."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import competitors
from benchmarks.common import mask_bytes
from benchmarks.corpus import Cube
from benchmarks.error_bounded import run_competitor


def _cube_with_land(dtype: str, nodata: float | None) -> Cube:
    # a smooth sea-surface-like field with "land" where values are invalid
    t, y, x = np.meshgrid(np.arange(3), np.arange(20), np.arange(24), indexing="ij")
    values = (280 + 10 * np.sin(y / 5.0) * np.cos(x / 7.0) + 0.5 * t)[:, None]
    land = (y[:, None] < 6) & (x[:, None] < 8)
    values = values.astype(dtype)
    values[land] = np.nan if nodata is None else nodata
    return Cube("synthetic", values, nodata, dataset=None)


@pytest.mark.parametrize(("dtype", "nodata"), [("float32", None), ("int16", -999.0)])
@pytest.mark.parametrize("name", ["SZ3", "SPERR"])
def test_competitors_hold_the_bound_on_valid_values_and_pay_for_the_mask(
    dtype: str, nodata: float | None, name: str
) -> None:
    method = next(m for m in competitors.error_bounded_methods() if m.name == name)
    cube = _cube_with_land(dtype, nodata)
    valid = cube.valid
    assert not valid.all()
    rec = run_competitor(cube, 1e-2, method)
    assert rec["violations"] == []
    assert rec["max_err_rel"] <= 1
    assert rec["nbytes"] > len(mask_bytes(~valid)) > 0
    # the same field without its land costs no mask
    full = Cube("synthetic", np.where(valid, cube.values, cube.values[valid].max()), nodata, None)
    assert full.valid.all()
    assert run_competitor(full, 1e-2, method)["violations"] == []
