"""Recognising cube dims in any order, under common names and by CF attributes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eocube.dims import recognise


def _var(dims: tuple[str, ...], coords: dict | None = None) -> xr.DataArray:
    shape = tuple(range(2, 2 + len(dims)))
    return xr.DataArray(np.zeros(shape, np.float32), dims=dims, coords=coords or {})


@pytest.mark.parametrize(
    ("dims", "order"),
    [
        (("time", "band", "y", "x"), ("time", "band", "y", "x")),
        (("band", "time", "y", "x"), ("time", "band", "y", "x")),
        (("x", "y", "bands", "t"), ("t", "bands", "y", "x")),
        (("lat", "lon", "time"), ("time", "lat", "lon")),
        (("date", "latitude", "longitude"), ("date", "latitude", "longitude")),
    ],
)
def test_names_in_any_order(dims: tuple[str, ...], order: tuple[str, ...]) -> None:
    found = recognise(_var(dims))
    assert found.roles is not None, found.reason
    assert found.order == order


def test_cf_axis_standard_name_and_datetime_coordinates() -> None:
    coords = {
        "a": ("a", pd.date_range("2020-01-01", periods=2)),
        "n": ("n", [1.0, 2.0, 3.0, 4.0], {"standard_name": "projection_y_coordinate"}),
        "e": ("e", [1.0, 2.0, 3.0, 4.0, 5.0], {"axis": "X"}),
    }
    var = xr.DataArray(np.zeros((5, 4, 2)), dims=("e", "n", "a"), coords=coords)
    assert recognise(var).order == ("a", "n", "e")


def test_the_one_dim_left_in_a_4d_variable_is_its_band() -> None:
    found = recognise(_var(("wavelength", "time", "y", "x")))
    assert found.roles == {"time": "time", "band": "wavelength", "y": "y", "x": "x"}


def test_explicit_dims_win_and_explain_what_is_not_a_cube() -> None:
    var = _var(("p", "q", "r", "s"))
    assert recognise(var).roles is None
    assert "'p', 'q', 'r', 's' are not time, band, y or x" in recognise(var).reason
    found = recognise(var, {"time": "s", "band": "r", "y": "q", "x": "p"})
    assert found.order == ("s", "r", "q", "p")
    two_times = recognise(_var(("time", "date", "y", "x")))
    assert two_times.roles is None
    assert "both look like its time dim" in two_times.reason
    assert "no time dim" in recognise(_var(("band", "y", "x"))).reason
    with pytest.raises(ValueError, match="gives one dim two roles"):
        recognise(var, {"y": "p", "x": "p"})
