"""The real cubes of tests/data, opened for tests (see tests/data/README.md)."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

DATA = Path(__file__).parent / "data"


def open_cube(name: str) -> xr.Dataset:
    """``tests/data/<name>.nc``, loaded into memory (the file is closed)."""
    with xr.open_dataset(DATA / f"{name}.nc") as ds:
        return ds.load()
