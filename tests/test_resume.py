"""Interrupted writes: a killed writer, the completion marker, and resume=True."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eocube
from eocube.errors import IncompleteStoreError
from eocube.testing import shard_objects

DATA = Path(__file__).parent / "data"
CUBE = DATA / "era5_t2m_uk_744h.nc"
ARGS = {"lossless": False, "crf": 20, "chunks": {"time": 8}}  # 6 shards of 128 dates

WRITER = textwrap.dedent(
    """
    import sys, xarray as xr, eocube
    ds = xr.open_dataset(sys.argv[1]).load()[["data"]]
    eocube.to_eocube(ds, sys.argv[2], crf=20, chunks={"time": 8}, measure=False,
                     resume=len(sys.argv) > 3)
    """
)


def test_killed_writer_leaves_an_incomplete_store_that_resume_finishes(tmp_path: Path) -> None:
    store = tmp_path / "killed.eocube"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(CUBE), str(store)], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / "data" / "c").exists() and shard_objects(store):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = shard_objects(store)
    assert 1 <= len(written) < 6, "the writer was not killed mid-write; raise the cube size"
    with pytest.raises(IncompleteStoreError, match="resume=True"):
        eocube.open_dataset(store)
    before = {p: p.stat().st_mtime_ns for p in written}

    done = subprocess.run(
        [sys.executable, str(script), str(CUBE), str(store), "resume"], env=env, check=True
    )
    assert done.returncode == 0
    assert len(shard_objects(store)) == 6
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was encoded again"

    reference = tmp_path / "whole.eocube"
    ds = xr.open_dataset(CUBE).load()[["data"]]
    eocube.to_eocube(ds, reference, measure=False, **ARGS)
    resumed = eocube.open_dataset(store).load()
    whole = eocube.open_dataset(reference).load()
    xr.testing.assert_identical(resumed, whole)


def test_resume_of_a_complete_store_writes_nothing(tmp_path: Path) -> None:
    ds = xr.open_dataset(DATA / "s2_l2a_openeo_gfmap_19x4x52x46.nc").load()[["data"]]
    first = eocube.to_eocube(ds, tmp_path / "c.eocube", crf=24)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "c.eocube").rglob("*") if p.is_file()}
    again = eocube.to_eocube(ds, tmp_path / "c.eocube", crf=24, resume=True)
    assert again.control == "complete"
    assert again.nbytes == first.nbytes
    for p, mtime in files.items():
        assert p.stat().st_mtime_ns == mtime


def test_resume_refuses_different_arguments(tmp_path: Path) -> None:
    ds = xr.open_dataset(CUBE).load()[["data"]].isel(time=slice(0, 64))
    eocube.to_eocube(ds, tmp_path / "c.eocube", crf=24, chunks={"time": 8}, measure=False)
    import zarr

    group = zarr.open_group(tmp_path / "c.eocube", mode="r+")
    group.update_attributes({"eocube": {"format": 1, "complete": False}})
    with pytest.raises(ValueError, match="mode='w'"):
        eocube.to_eocube(ds, tmp_path / "c.eocube", crf=24, chunks={"time": 4}, resume=True)
    assert np.isfinite(ds.data.values).all()
