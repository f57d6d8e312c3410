"""What a user installs: one version everywhere, a typed package, its licence and profiles.

The wheel is built once per module with hatchling, the build backend of pyproject.toml
(the test extra installs it), into a temporary folder: about a second, and nothing is
written to the checkout.
"""

from __future__ import annotations

import email
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

import eocube
from eocube.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "--target", "wheel", "--directory", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("eocube-*.whl")
    with zipfile.ZipFile(path) as opened:
        yield opened


def _metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_the_version_is_written_once() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project, "pyproject.toml must not repeat eocube.__version__"
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "eocube/__init__.py"


def test_the_installed_metadata_has_the_package_version() -> None:
    installed = importlib.metadata.version("eocube")
    assert installed == eocube.__version__, (
        f"eocube is installed as {installed} but eocube.__version__ is {eocube.__version__}: "
        "reinstall it (pip install -e .)"
    )


def test_the_command_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"eocube {eocube.__version__}"


def test_the_wheel_carries_the_version_licence_and_console_script(
    wheel: zipfile.ZipFile,
) -> None:
    metadata = _metadata(wheel)
    assert metadata["Version"] == eocube.__version__
    assert metadata["License-Expression"] == "MIT"
    names = wheel.namelist()
    licences = [n for n in names if re.search(r"\.dist-info/licenses/LICENSE$", n)]
    assert licences, "the wheel lacks LICENSE"
    assert b"MIT License" in wheel.read(licences[0])
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "eocube = eocube.cli:main" in wheel.read(entry_points).decode()


def test_the_wheel_is_typed_and_ships_the_profiles_inside_eocube(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    assert "eocube/py.typed" in names
    shipped = {Path(n).stem for n in names if n.startswith("eocube/profiles_data/")}
    assert shipped == {p.stem for p in (ROOT / "codecs").glob("*.toml")}
    # a top-level `codecs` package would shadow the standard library's
    assert not any(n.startswith("codecs/") for n in names)


def test_the_changelog_has_a_section_for_the_package_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{eocube.__version__}]" in changelog
