"""Importing eocube costs nothing it does not need; its public API is complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numba", "av", "pyarrow", "huggingface_hub", "torch")


@pytest.mark.parametrize("code", ["import eocube", "import eocube.backend"])
def test_importing_eocube_loads_nothing_heavy(code: str) -> None:
    probe = f"import sys; {code}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # pyarrow may come with pandas through xarray: only eocube's own imports count
    loaded = set(eval(done.stdout)) - {"pyarrow"}
    assert not loaded, loaded


def test_every_public_name_resolves() -> None:
    import eocube
    from eocube import errors

    for name in eocube.__all__:
        assert getattr(eocube, name) is not None, name
    for name in errors.__all__:
        assert getattr(eocube, name) is getattr(errors, name)
    with pytest.raises(AttributeError):
        eocube.no_such_name  # noqa: B018
