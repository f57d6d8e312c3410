"""Mosaic frames (eocube.mosaic): several dates of a small chunk side by side in a frame."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eocube import mosaic


@given(
    dates=st.integers(1, 19),
    bands=st.integers(1, 3),
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    grid=st.sampled_from([(1, 2), (2, 1), (2, 2), (1, 4), (4, 2), (4, 4)]),
)
def test_untile_inverts_tile(
    dates: int, bands: int, rows: int, cols: int, grid: tuple[int, int]
) -> None:
    block = np.arange(dates * bands * rows * cols, dtype=np.int32).reshape(dates, bands, rows, cols)
    frames = mosaic.tile(block, grid)
    count = mosaic.frame_count(dates, grid)
    assert frames.shape == (count, bands, grid[0] * rows, grid[1] * cols)
    np.testing.assert_array_equal(mosaic.untile(frames, grid, dates), block)


def test_tiles_are_runs_of_consecutive_dates_and_padding_repeats_the_last() -> None:
    block = np.arange(7, dtype=np.int16).reshape(7, 1, 1, 1) * np.ones((1, 1, 2, 3), np.int16)
    frames = mosaic.tile(block, (2, 2))  # 2 frames: dates 0-1, 2-3, 4-5, 6 (+ 6 again)
    assert frames.shape == (2, 1, 4, 6)
    tiles = [[frames[f, 0, r * 2, c * 3] for r in range(2) for c in range(2)] for f in range(2)]
    assert tiles == [[0, 2, 4, 6], [1, 3, 5, 6]]
    # a tile holds one date: every pixel of it
    assert (frames[1, 0, 2:, 3:] == 6).all()
    assert (frames[0, 0, :2, 3:] == 2).all()


def test_untile_works_on_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    block = np.random.default_rng(0).integers(0, 4000, (5, 2, 3, 4)).astype(np.int32)
    frames = mosaic.tile(block, (1, 4))
    back = mosaic.untile(torch.from_numpy(frames), (1, 4), 5)
    assert isinstance(back, torch.Tensor)
    np.testing.assert_array_equal(back.numpy(), block)


@pytest.mark.parametrize(
    ("dates", "rows", "cols", "expected"),
    [
        (32, 32, 32, [(1, 4), (2, 2), (4, 1)]),  # 4 dates fill 64 x 64 px
        (32, 44, 48, [(1, 2), (2, 1)]),
        (32, 16, 16, [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]),
        (5, 32, 32, [(1, 2), (2, 1)]),  # two frames at least: at most 2 dates a frame
        (3, 32, 32, []),
        (32, 8, 8, [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)]),  # at most 16 dates
    ],
)
def test_grids_fill_a_frame_and_leave_two_frames(
    dates: int, rows: int, cols: int, expected: list[tuple[int, int]]
) -> None:
    assert mosaic.grids(dates, rows, cols) == expected
