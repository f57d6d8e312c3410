"""Shared fixtures: real cubes from tests/data, a deterministic hypothesis profile, and a
local S3 server (``s3``, tests/s3_server.py)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, settings
from s3_server import s3  # noqa: F401  (the session fixture of a local S3 server)

DATA = Path(__file__).parent / "data"

# Deterministic property tests: the same examples on every run and machine, no deadline
# (codec start-up times vary), few examples so each test stays within a few seconds.
settings.register_profile(
    "eocube",
    derandomize=True,
    max_examples=30,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A longer hunt on demand: HYPOTHESIS_PROFILE=eocube-long pytest tests
settings.register_profile("eocube-long", parent=settings.get_profile("eocube"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "eocube"))


@dataclass(frozen=True)
class Cube:
    """The ``data`` variable of a test cube: values (read-only) and its integer nodata."""

    name: str
    data: np.ndarray
    nodata: int | None


@functools.cache
def _read_cube(name: str) -> Cube:
    with xr.open_dataset(DATA / f"{name}.nc") as ds:
        var = ds["data"]
        assert var.dims == ("time", "band", "y", "x")
        data = var.values
        nodata = var.attrs.get("nodata")
    data.flags.writeable = False
    return Cube(name, data, None if nodata is None else int(nodata))


@pytest.fixture(scope="session")
def load_cube() -> Callable[[str], Cube]:
    """``load_cube(name)`` -> :class:`Cube` for ``tests/data/<name>.nc`` (cached, read-only)."""
    return _read_cube
