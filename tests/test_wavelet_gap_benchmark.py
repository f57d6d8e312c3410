"""benchmarks.wavelet_gap: SPERR in pieces, the rate split among bands, and its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks import wavelet_gap

DATA = Path(__file__).parent / "data"


def test_one_piece_of_the_whole_series_is_whole_cube_sperr() -> None:
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(0, 1, (12, 2, 16, 18)), axis=0).astype(np.float32)
    whole_bytes, whole = wavelet_gap.sperr(values, 0.5)
    piece_bytes, pieces = wavelet_gap.in_pieces(values, 12, 0.5)
    assert piece_bytes == whole_bytes
    np.testing.assert_array_equal(pieces, whole)
    # two pieces: two volumes, two headers
    two_bytes, two = wavelet_gap.in_pieces(values, 6, 0.5)
    assert two.shape == values.shape
    assert two_bytes != whole_bytes


def test_allocate_keeps_to_the_equal_shares_bytes() -> None:
    # band 1's extra bytes buy 6 dB, band 0 loses 1 dB without its share
    curves = np.array(
        [
            [[1.0, 40.0], [2.0, 41.0], [3.0, 41.5]],
            [[1.0, 30.0], [2.0, 36.0], [3.0, 40.0]],
        ]
    )
    rate, db = wavelet_gap.allocate(curves, 1, 1)
    assert rate <= 2.0
    assert db == (40.0 + 40.0) / 2  # band 0 one step down, band 1 one step up
    assert wavelet_gap.allocate(curves, 1, 0) == (2.0, (41.0 + 36.0) / 2)


def test_wavelet_gap_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    code = wavelet_gap.main(
        [
            *("--corpus", str(DATA), "--out", str(tmp_path), "--max-values", "40000"),
            *("--pieces", "200", "--store-chunks", "300", "--crfs", "24", "8"),
            *("--split-pieces", "300"),
        ]
    )
    assert code == 0
    rows = json.loads((tmp_path / "wavelet_gap.json").read_text())["rows"]
    parts = [(r["part"], r["cube"]) for r in rows]
    assert parts == [
        ("pieces", "era5_t2m_uk_744h"),
        ("pieces", "era5_t2m_uk_744h"),
        ("stores", "era5_t2m_uk_744h"),
        ("stores", "era5_t2m_uk_744h"),
        ("stores", "erainterim_uvz"),
        ("allocation", "erainterim_uvz"),
        ("allocation", "erainterim_uvz"),
    ]
    for row in rows:
        assert all(np.isfinite(p) for _, p in row["points"])
    # the 300-date pieces of a series rougher in its second half, their bytes split:
    # less error than equal shares, at no more bytes
    equal = wavelet_gap.in_pieces(_series(), 300, 0.4)
    split = wavelet_gap.in_pieces_split(_series(), 300, 0.4)
    assert split[0] <= equal[0]
    assert np.sum((split[1] - _series()) ** 2) < np.sum((equal[1] - _series()) ** 2)
    # a split of the same bytes never scores below equal shares
    for row in rows[-2:]:
        assert all(d >= -1e-9 for d in row["delta_db"] if d is not None)
        assert any(d is not None and d > 0 for d in row["delta_db"])
    assert "erainterim_uvz" in (tmp_path / "wavelet_gap.md").read_text()
    assert (tmp_path / "wavelet_gap.png").stat().st_size > 0


def _series() -> np.ndarray:
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(0, 1, (700, 1, 6, 7)), axis=0)
    walk[350:] += rng.normal(0, 3, walk[350:].shape)  # a rougher second half
    return walk
