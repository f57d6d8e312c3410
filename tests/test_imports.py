"""Importing eocube, or xarray finding its engines, costs nothing eocube does not need.

xarray loads every installed engine's entry point whenever it lists its engines, which
``xr.open_dataset`` does for any file given without ``engine=`` (a NetCDF file, say):
with eocube installed, that must not import Numba, PyAV, pyarrow, huggingface_hub or
torch. Each probe runs in a fresh interpreter.

pyarrow is the one heavy module an importer of xarray may already hold: pandas (3.x)
imports it at ``import pandas`` when it is installed, and xarray imports pandas. The
probes therefore count what appears after ``import xarray``, check that what was there
before came with pandas, and, to hold eocube to the strict rule all the same, run again
with every heavy module made unimportable: eocube must still load and be listed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("numba", "av", "pyarrow", "huggingface_hub", "torch")
NETCDF = Path(__file__).parent / "data" / "landsat7_rgb_byte.nc"

ACTIONS = {
    "import eocube": "import eocube",
    "import eocube.backend": "import eocube.backend",
    "list engines": "assert 'eocube' in xr.backends.list_engines()",
    "open a NetCDF file": f"xr.open_dataset({str(NETCDF)!r}).close()",
}


def _probe(action: str, blocked: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``action`` in a fresh interpreter with the modules ``blocked`` unimportable:
    the heavy modules loaded after pandas, after xarray and after the action, and the
    warnings the action raised."""
    script = f"""
import json, sys, warnings
for name in {blocked!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
def heavy():
    return sorted(m for m in {HEAVY!r} if sys.modules.get(m) is not None)
import pandas
with_pandas = heavy()
import xarray as xr
with_xarray = heavy()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {ACTIONS[action]}
print(json.dumps({{
    "pandas": with_pandas, "xarray": with_xarray, "action": heavy(),
    "warnings": [str(w.message) for w in caught],
}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("action", list(ACTIONS))
def test_eocube_loads_nothing_heavy(action: str) -> None:
    found = _probe(action)
    assert found["action"] == found["xarray"], found  # nothing heavy came with the action
    # what an importer of xarray holds already came with pandas (pyarrow, with pandas 3)
    assert found["xarray"] == found["pandas"], found
    assert set(found["pandas"]) <= {"pyarrow"}, found


@pytest.mark.parametrize("action", list(ACTIONS))
def test_eocube_needs_no_heavy_module_to_be_listed(action: str) -> None:
    found = _probe(action, blocked=HEAVY)  # pandas does without pyarrow, and eocube must
    assert found["action"] == [], found
    failed = [w for w in found["warnings"] if "eocube" in w]
    assert not failed, failed  # xarray warns "Engine 'eocube' loading failed" otherwise


def test_every_public_name_resolves() -> None:
    import eocube
    from eocube import errors

    for name in eocube.__all__:
        assert getattr(eocube, name) is not None, name
    for name in errors.__all__:
        assert getattr(eocube, name) is getattr(errors, name)
    with pytest.raises(AttributeError):
        eocube.no_such_name  # noqa: B018
