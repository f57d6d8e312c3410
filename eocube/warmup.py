"""Compiling eocube's Numba kernels ahead of their first use.

The kernels of :mod:`eocube.packing`, :mod:`eocube.spectral`, :mod:`eocube.rangecoder`,
:mod:`eocube.lossless`, :mod:`eocube.masks` and :mod:`eocube.dateorder` are compiled by
Numba the first time they run with a given dtype (about a minute for all of them on a
2-core machine) and cached on disk, next to the modules or in ``NUMBA_CACHE_DIR``: later
processes load them in well under a second. ``eocube warmup`` (which ``make setup``
runs) pays that cost once, in one place, and the command line says so before a command
would pay it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = ("uint16", "int16", "uint8", "int32", "float32", "float64")
"""The dtypes :func:`warm_up` compiles for by default: every dtype eocube encodes."""


def _dispatchers() -> Iterator[Any]:
    from eocube import dateorder, lossless, masks, packing, rangecoder, spectral

    for module in (packing, spectral, rangecoder, lossless, masks, dateorder):
        for value in vars(module).values():
            cache = getattr(value, "_cache", None)
            inlined = getattr(value, "targetoptions", {}).get("inline") == "always"
            # kernels inlined into others are compiled (and cached) only inside them
            if cache is not None and hasattr(cache, "_cache_file") and not inlined:
                yield value


def cached() -> bool:
    """Whether every kernel has a compiled version on disk (a warm start)."""
    for dispatcher in _dispatchers():
        index = getattr(dispatcher._cache._cache_file, "_index_path", None)
        if index is None or not Path(index).is_file():
            return False
    return True


def warm_up(dtypes: Sequence[str] = DTYPES) -> float:
    """Compile (or load) the kernels for ``dtypes``; returns the seconds it took.

    Encodes and decodes a tiny block of each dtype with the default lossy profile (the
    band rotation included), the lossless ones (integer dtypes) and an error
    bound (the residual layer), and one of four dates (the date order's paths), which
    runs every kernel the codec core uses.
    """
    from eocube import masks
    from eocube.chunk import decode_chunk, encode_chunk

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (2, 1, 16, 16))
    block = np.concatenate([base + 3 * b for b in range(4)], axis=1)  # correlated bands
    # what eocube-lossless codes with its own kernels: bands resampled 2x2 (pixel
    # blocks) whose values are sparse on the codes (value tables)
    coarse = rng.integers(0, 12, (2, 4, 8, 8)) * 97
    resampled = coarse.repeat(2, axis=2).repeat(2, axis=3)
    for name in dtypes:
        dtype = np.dtype(name)
        values = block.astype(dtype)
        runs: list[tuple[np.ndarray, dict[str, Any]]] = [
            (values, {}),
            (values, {"max_abs_error": 2}),
        ]
        if dtype.kind in "iu":
            runs.append((values, {"nodata": 0}))  # the valid extent of padded chunks; masks
            runs.append((values, {"profile": "ffv1-lossless"}))
            runs.append((values, {"profile": "eocube-lossless"}))
            runs.append((resampled.astype(dtype), {"profile": "eocube-lossless"}))
        for data, kwargs in runs:
            decode_chunk(encode_chunk(data, **kwargs))
    # four dates: the date order's distances and paths (their kernels take no data dtype)
    dates = np.concatenate([block, block[:, ::-1]]).astype(np.uint16)
    decode_chunk(encode_chunk(dates))
    # the mask coder directly: a chunk keeps zlib where that codes its mask smaller
    footprint = np.zeros((2, 2, 16, 16), bool)
    footprint[:, :, 3:9, 2:11] = True
    masks.decode(masks.encode(footprint), footprint.shape)
    return time.perf_counter() - started
