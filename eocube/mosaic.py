"""Several dates of a small chunk side by side in one video frame (chunk format 12).

A video codec pays for every frame: x265 writes a start code, a NAL and slice header and
the closing bits of its entropy coder whatever the frame holds, about 14 bytes, and pads a
narrow frame to its smallest legal width (:func:`eocube.video.frame_size`). On the
32 x 32 px tiles of machine-learning releases that is a third of a frame's bytes at
0.1 bits per value. A mosaic puts ``rows x cols`` dates in one frame, so that a chunk
of ``T`` dates is coded in ``ceil(T / (rows * cols))`` frames.

The dates are split into ``rows * cols`` runs of consecutive dates, one per tile, in row
order: tile ``(r, c)`` of frame ``f`` holds date ``(r * cols + c) * F + f``, where ``F``
is the number of frames. Each tile is thus a video of consecutive dates, which inter
prediction follows as it follows a chunk's own frames. Dates beyond the chunk's last (a
count of dates that the tiles do not divide) repeat the last date: a copy of the frame
before, which costs the codec next to nothing, and which decoding drops.

The functions work on NumPy arrays and on torch tensors alike (reshape and a permutation
of axes), for the CPU decoder and :mod:`eocube.device`.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import numpy as np

SIZES = (2, 4, 8, 16)
"""How many dates a mosaic frame may hold."""

FILL_AREA = 64 * 64
"""A mosaic holds enough dates for a frame of at least this many pixels (fewer when the
chunk has too few dates, at most the largest of :data:`SIZES`)."""

_ArrayT = TypeVar("_ArrayT")


def frame_count(dates: int, grid: tuple[int, int]) -> int:
    """Frames of a mosaic of ``grid`` (rows, cols) for ``dates`` dates."""
    return -(-dates // (grid[0] * grid[1]))


def tile(block: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The frames of a (T, B, Y, X) block laid out as a mosaic of ``grid`` dates:
    (F, B, rows * Y, cols * X), dates past the block's last repeating it."""
    rows, cols = grid
    T, B, Y, X = block.shape
    n = rows * cols
    F = frame_count(T, grid)
    if n * F > T:
        block = np.concatenate([block, np.repeat(block[-1:], n * F - T, axis=0)])
    six = block.reshape(rows, cols, F, B, Y, X).transpose(2, 3, 0, 4, 1, 5)
    return np.ascontiguousarray(six).reshape(F, B, rows * Y, cols * X)


def untile(frames: _ArrayT, grid: tuple[int, int], dates: int) -> _ArrayT:
    """The (T, B, Y, X) block of ``dates`` dates from its mosaic ``frames``
    (F, B, rows * Y, cols * X): the inverse of :func:`tile`. A NumPy array or a torch
    tensor, returned as the same kind."""
    rows, cols = grid
    a: Any = frames
    F, B, R, C = a.shape
    Y, X = R // rows, C // cols
    six = a.reshape(F, B, rows, Y, cols, X)
    order = (2, 4, 0, 1, 3, 5)
    moved = six.permute(*order) if hasattr(six, "permute") else six.transpose(order)
    return moved.reshape(rows * cols * F, B, Y, X)[:dates]


def grids(dates: int, rows: int, cols: int) -> list[tuple[int, int]]:
    """The mosaic grids (rows, cols) to weigh for a chunk of ``dates`` dates of
    ``rows`` x ``cols`` px: those of the fewest dates a frame (of :data:`SIZES`) that fill
    :data:`FILL_AREA` pixels, or of the most dates that still leave two frames; none for a
    chunk of fewer than four dates."""
    usable = [n for n in SIZES if 2 * n <= dates]
    if not usable:
        return []
    n = next((n for n in usable if n * rows * cols >= FILL_AREA), usable[-1])
    k = int(math.log2(n))
    return [(1 << i, 1 << (k - i)) for i in range(k + 1)]
