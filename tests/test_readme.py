"""Every snippet of README.md runs as written, in order, as a user would run them.

The blocks run from a fresh folder that holds the repository's ``tests/`` (for the
sample cubes and the hub double), as a user in the repository's root would: Python
blocks in one interpreter, one after the other (they share names, as in a session),
shell blocks line by line. ``export`` lines set the environment of everything that runs
(a user's shell session), a line ending in ``&`` starts in the background, and the port
of the hub double is a free one. Lines that install or build (``pip``, ``make``) and the
benchmark commands (minutes to an hour each; ``benchmarks/`` tests their parts) are the
only ones not run.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# the README's snippets run in subprocesses: `make test-slow` (CI runs it)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
NOT_RUN = re.compile(r"^(pip |make |python -m benchmarks|python benchmarks/)")
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced python or bash block, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(text)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RUNNER = textwrap.dedent(
    """
    import os, re, signal, subprocess

    def main():
        blocks = {blocks!r}
        not_run = re.compile({not_run!r})
        namespace = {{"__name__": "__readme__"}}
        background = []
        try:
            for number, (language, code) in enumerate(blocks, start=1):
                print(f"--- block {{number}} ({{language}})", flush=True)
                if language == "python":
                    exec(compile(code, f"README.md block {{number}}", "exec"), namespace)
                    continue
                for line in code.splitlines():
                    command = line.split("#")[0].strip()
                    if not command or not_run.match(command):
                        continue
                    if command.startswith("export "):
                        continue  # applied to the whole session beforehand
                    if command.endswith("&"):
                        background.append(
                            subprocess.Popen(command[:-1], shell=True, start_new_session=True)
                        )
                        continue
                    print("$", command, flush=True)
                    subprocess.run(command, shell=True, check=True)
        finally:
            for process in background:  # the shell and what it started
                os.killpg(process.pid, signal.SIGTERM)

    # dask's worker processes import this script again: only the first run works
    if __name__ == "__main__":
        main()
    """
)


def test_readme_snippets_run_as_written(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    port = free_port()
    text = text.replace("8765", str(port))
    found = blocks(text)
    assert len(found) >= 8, "the README lost its snippets"
    env = dict(os.environ)
    for language, code in found:
        if language == "bash":
            for line in code.splitlines():
                if line.startswith("export "):
                    key, _, value = line[len("export ") :].split("#")[0].strip().partition("=")
                    env[key] = value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    (tmp_path / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    script = tmp_path / "run_readme.py"
    script.write_text(RUNNER.format(blocks=found, not_run=NOT_RUN.pattern))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "hevc-12bit-444" in out  # the quickstart's report
    assert "gfmap.eocube against" in out  # eocube verify
    assert ": OK" in out
    assert "complete" in out  # the resumed, finished write
    assert "s2-belgium" in out  # the catalog read from the hub double
    assert re.search(r"epoch 1: \d+ batches", out)
