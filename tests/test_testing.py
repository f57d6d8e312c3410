"""eocube.testing: each check passes on what eocube promises and fails on what it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cubes import open_cube

from eocube import testing


def test_chunk_roundtrip_checks_lossless_bounds_and_nan() -> None:
    s2 = open_cube("s2_l2a_openeo_gfmap_19x4x52x46").data.values[:4, :, :24, :24]
    payload, decoded = testing.assert_chunk_roundtrip(s2, "ffv1-lossless", nodata=0)
    assert payload.startswith(b"EOCB")
    np.testing.assert_array_equal(decoded, s2)
    testing.assert_chunk_roundtrip(s2, "hevc-12bit-444", max_abs_error=10)
    changed = decoded.copy()
    changed[0, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="not bit-exact"):
        testing.assert_values_kept(s2, changed, lossless=True)
    floats = s2.astype(np.float32)
    floats[0, 0, :2] = np.nan
    moved = floats.copy()
    moved[0, 0, :2] = 1.0
    with pytest.raises(AssertionError, match="NaN positions moved"):
        testing.assert_values_kept(floats, moved, lossless=False)
    with pytest.raises(AssertionError, match="breaks the bound"):
        testing.assert_values_kept(s2, s2 + 11, lossless=False, max_abs_error=10)


def test_store_roundtrip_and_shards(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    report, reopened = testing.assert_store_roundtrip(
        ds, tmp_path / "c.eocube", lossless=True, chunks={"time": 8}, measure=False
    )
    assert set(report.variables) == {"data"}
    assert reopened.data.dtype == ds.data.dtype
    objects = testing.shard_objects(tmp_path / "c.eocube")
    assert len(objects) == 1
    assert testing.check_shard(objects[0], 3).present.sum() == 3
