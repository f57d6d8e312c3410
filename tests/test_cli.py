"""The eocube command through subprocess, on real cubes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CUBE = DATA / "s2_l2a_openeo_gfmap_19x4x52x46.nc"


def eocube(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eocube", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # the command line in subprocesses
def test_encode_info_verify_round_trip(tmp_path: Path) -> None:
    store = tmp_path / "c.eocube"
    done = eocube(
        "encode", str(CUBE), str(store), "--max-abs-error", "30", "--json", "--chunks", "time=8"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["variables"]["data"]["max_abs_error"] <= 30

    info = eocube("info", str(store), "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["complete"] is True
    assert facts["variables"]["data"]["profile"] == "hevc-12bit-444"
    assert facts["variables"]["data"]["chunks"] == [8, 4, 52, 46]
    assert facts["bytes"] == report["nbytes"]

    verify = eocube("verify", str(store), "--against", str(CUBE), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    result = json.loads(verify.stdout)
    assert result["ok"] is True
    assert result["variables"]["data"]["bound_held"] is True
    assert len(result["variables"]["data"]["psnr_per_band"]) == 4

    # a tighter bound than the store keeps: verify says so and exits 1
    strict = eocube("verify", str(store), "--against", str(CUBE), "--max-abs-error", "1")
    assert strict.returncode == 1
    assert "BROKEN" in strict.stdout


@pytest.mark.slow  # the command line in subprocesses
def test_text_output_and_profiles(tmp_path: Path) -> None:
    done = eocube("encode", str(CUBE), str(tmp_path / "c.eocube"), "--crf", "30", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "PSNR" in done.stdout
    profiles = eocube("profiles", "--json")
    names = {p["name"] for p in json.loads(profiles.stdout)}
    assert {"hevc-12bit-444", "ffv1-lossless", "hevc-12bit-420-luma"} <= names


@pytest.mark.parametrize(
    "args",
    [
        ["encode", str(CUBE)],  # no output
        ["encode", str(CUBE), "out.eocube", "--crf", "10", "--lossless"],  # two quality controls
        ["encode", str(CUBE), "out.eocube", "--chunks", "time=x"],
        ["verify", "store.eocube"],  # --against missing
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    done = eocube(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("eocube: error: ")
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no usage dump


@pytest.mark.slow  # the command line in subprocesses
def test_broken_store_exits_1(tmp_path: Path) -> None:
    store = tmp_path / "c.eocube"
    assert eocube("encode", str(CUBE), str(store), "--crf", "20", "--quiet").returncode == 0
    shard = next(p for p in (store / "data" / "c").rglob("*") if p.is_file())
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    verify = eocube("verify", str(store), "--against", str(CUBE))
    assert verify.returncode == 1
    assert "FAILED: a chunk is damaged" in verify.stdout
    assert "'data'" in verify.stdout
    missing = eocube("info", str(tmp_path / "nothing.eocube"))
    assert missing.returncode == 2
    assert (
        missing.stderr
        == f"eocube: error: {tmp_path / 'nothing.eocube'} is not an eocube store: it is nothing\n"
    )


@pytest.mark.slow  # the command line in subprocesses
def test_several_inputs_make_a_release(tmp_path: Path) -> None:
    inputs = [
        str(DATA / "s2_l2a_openeo_gfmap_19x4x52x46.nc"),
        str(DATA / "stars_bcsd_obs_12x2x33x81.nc"),
    ]
    done = eocube("encode", *inputs, str(tmp_path / "release"), "--crf", "24", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["id"] for r in rows} == {
        "s2_l2a_openeo_gfmap_19x4x52x46",
        "stars_bcsd_obs_12x2x33x81",
    }
    assert (tmp_path / "release" / "catalog.parquet").exists()
    assert not (tmp_path / "release" / "cubes" / "zarr.json").exists()  # shared: opt-in
    done = eocube("encode", *inputs, str(tmp_path / "shared"), "--crf", "24", "--share-attributes")
    assert done.returncode == 0, done.stderr
    shared = json.loads((tmp_path / "shared" / "cubes" / "zarr.json").read_text())
    assert "history" in shared["attributes"]  # the corpus builder's note, in both cubes
    single = eocube("encode", inputs[0], str(tmp_path / "one.eocube"), "--share-attributes")
    assert single.returncode != 0
    assert "--share-attributes is for a release" in single.stderr


def test_first_run_compiles_visibly_before_any_clock_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from eocube import cli, warmup

    calls: list[str] = []
    monkeypatch.setattr(warmup, "cached", lambda: False)
    monkeypatch.setattr(warmup, "warm_up", lambda: calls.append("warm_up") or 42.0)
    cli._warm(quiet=False)
    err = capsys.readouterr().err
    assert calls == ["warm_up"]
    assert err.splitlines() == [
        "eocube: compiling its Numba kernels for their first use (about a minute; cached "
        "for every later run)...",
        "eocube: kernels compiled in 42 s",
    ]
    monkeypatch.setattr(warmup, "cached", lambda: True)
    cli._warm(quiet=False)
    assert calls == ["warm_up"]  # warm: nothing compiled, nothing said
    assert capsys.readouterr().err == ""


def test_kernels_are_cached_after_a_warm_up() -> None:
    from eocube import warmup

    warmup.warm_up(["uint16"])
    assert warmup.cached()


@pytest.mark.slow  # the command line in subprocesses
def test_demo_prints_its_table_and_cites_the_repository(tmp_path: Path) -> None:
    done = eocube("demo", str(CUBE), "--crf", "24")
    assert done.returncode == 0, done.stderr
    assert "ffv1-lossless" in done.stdout
    assert "bit-exact" in done.stdout
    assert "docs/format.md" in done.stdout
    assert "DESIGN" not in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("hevc-12bit")]
    assert rows
    for row in rows:  # "<profile> crf=24 <bytes> <packed> ...": the packed store is smaller
        assert 0 < int(row[3]) < int(row[2])
