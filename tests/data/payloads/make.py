"""Write chunk payloads with the eocube found on sys.path, and what that eocube decodes.

The payloads of every readable format version were made by the commits that wrote those
versions (``README.md`` here lists them), each run from a git worktree::

    git worktree add /tmp/eocube-v1 278a024
    PYTHONPATH=/tmp/eocube-v1 python tests/data/payloads/make.py v1-zstd-residual

Names after the prefix write only those cases (``make.py v4 rows-hevc-444``); the
``rows-*`` cases need an eocube whose ``encode_chunk`` takes ``frames`` (version 4), the
``wavelet-*`` ones ``wavelet`` (version 5). Version 6 (masks coded by their runs) is
written for the cases with a mask: ``make.py v6 ffv1-lossless hevc-luma-nan
bound-float32 rows-bound-float32 wavelet-nan-float32`` (and ``pred-lossless``, written by
2c57720); version 7 (``eocube-pred`` packets of version 3) only for ``make.py v7
pred-lossless``; version 8 (layout ``planar3-pair``) for ``make.py v8 pair-hevc-444
pair-rows-nan-float32``, the cases that need ``leftover_pair``; version 9 (dates in a
stored order) for ``make.py v9 order-hevc-444 order-luma-nan order-edge-chunk
order-pred-lossless``, the cases that need ``date_order``; version 10 (the wavelet
coder's periodic model) for ``make.py v10 periodic-float32 periodic-nan-float32``,
hourly ERA5 2 m temperature (earlier versions write these as version 5 or 6); version
11 (frames with Y and X swapped) for ``make.py v11 transposed-hevc-444
transposed-bound-nan-float32``, whole 52 x 46 px frames, which x265 codes smaller
transposed (earlier versions write these untransposed); version 12 (several dates a
frame) for ``make.py v12 mosaic-hevc-444 mosaic-bound-nan-float32``, whose
``frames="mosaic"`` earlier versions refuse. Version 13 (the compact header, which every
payload has from it on) for the cases whose header fields differ: ``make.py v13
ffv1-lossless pred-lossless hevc-444 hevc-luma-nan bound-uint16 bound-float32 edge-chunk
rows-hevc-444 wavelet-nan-float32 wavelet-edge-chunk pair-hevc-444 order-hevc-444
transposed-hevc-444 mosaic-hevc-444``. Version 14 (the lean header: names as one
byte, the KLT's origin and 10-bit Householder values) for the same cases: ``make.py v14
ffv1-lossless pred-lossless hevc-444 hevc-luma-nan bound-uint16 bound-float32 edge-chunk
rows-hevc-444 wavelet-nan-float32 wavelet-edge-chunk pair-hevc-444 order-hevc-444
transposed-hevc-444 mosaic-hevc-444``.

``tests/test_compatibility.py`` checks that today's decoder returns, bit for bit, what
the writing commit's decoder returned. Only the public codec API is used, the same in
every version.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import xarray as xr

HERE = Path(__file__).resolve().parent
CUBE = HERE.parent / "s2_l2a_openeo_gfmap_19x4x52x46.nc"
HOURLY = HERE.parent / "era5_t2m_uk_744h.nc"


def blocks() -> dict[str, tuple[np.ndarray, dict]]:
    """The blocks and encode_chunk arguments of every case (real Sentinel-2 values)."""
    with xr.open_dataset(CUBE) as ds:
        s2 = ds.data.values[:4, :, :24, :20].astype(np.uint16)  # 4 dates, 4 bands, 24 x 20
        whole = ds.data.values[:3].astype(np.uint16)  # 3 dates, 4 bands, 52 x 46
    floats = (s2 / 10000).astype(np.float32)
    floats[1, 2, 3:7, 4:9] = np.nan
    nodata = s2.copy()
    nodata[2, :, :5, :5] = 0
    padded = np.zeros((6, 4, 32, 32), np.uint16)  # zarr's padding of an edge chunk
    padded[:4, :, :24, :20] = s2
    with xr.open_dataset(HOURLY) as ds:  # 144 hours of 2 m temperature, 24 x 40 px
        t2m = ds.data.values[:144, :, :24, :40].astype(np.float32)
    t2m_nan = t2m.copy()
    t2m_nan[10:14, 0, 2:6, 3:9] = np.nan
    whole_nan = (whole / 10000).astype(np.float32)
    whole_nan[1, :, 30:38, 4:12] = np.nan
    with xr.open_dataset(CUBE) as ds:
        series = ds.data.values[:9, :, :24, :20].astype(np.uint16)  # 9 dates, 24 x 20
    series_nan = (series / 10000).astype(np.float32)
    series_nan[4, 1, 3:7, 4:9] = np.nan
    return {
        "ffv1-lossless": (nodata, {"profile": "ffv1-lossless", "nodata": 0}),
        # eocube's own lossless coder (eocube/lossless.py)
        "pred-lossless": (nodata, {"profile": "eocube-lossless", "nodata": 0}),
        "hevc-444": (s2, {"profile": "hevc-12bit-444", "quality": 24}),
        "hevc-luma-nan": (floats, {"profile": "hevc-12bit-420-luma", "quality": 20}),
        "bound-uint16": (s2, {"profile": "hevc-12bit-444", "quality": 30, "max_abs_error": 20}),
        "bound-float32": (
            floats,
            {"profile": "hevc-12bit-420-luma", "quality": 30, "max_abs_error": 0.002},
        ),
        "edge-chunk": (padded, {"profile": "hevc-12bit-444", "quality": 24, "nodata": 0}),
        # one frame per row of every date (chunk format 4)
        "rows-hevc-444": (s2, {"profile": "hevc-12bit-444", "quality": 24, "frames": "y"}),
        "rows-bound-float32": (
            floats,
            {"profile": "hevc-12bit-444", "quality": 30, "max_abs_error": 0.002, "frames": "y"},
        ),
        # the wavelet coder in place of the video (chunk format 5)
        "wavelet-uint16": (s2, {"profile": "hevc-12bit-444", "quality": 24, "wavelet": "always"}),
        "wavelet-nan-float32": (
            floats,
            {"profile": "hevc-12bit-444", "quality": 20, "wavelet": "always"},
        ),
        "wavelet-bound-float32": (
            floats,
            {"profile": "hevc-12bit-444", "max_abs_error": 0.002, "wavelet": "always"},
        ),
        "wavelet-edge-chunk": (
            padded,
            {"profile": "hevc-12bit-444", "quality": 24, "nodata": 0, "wavelet": "always"},
        ),
        # two bands in 4:4:4 frames with a constant third plane (chunk format 8)
        "pair-hevc-444": (
            np.ascontiguousarray(s2[:, 2:]),
            {"profile": "hevc-12bit-444", "quality": 24, "leftover_pair": "always"},
        ),
        "pair-rows-nan-float32": (
            np.ascontiguousarray(floats[:, 1:3]),
            {"profile": "hevc-12bit-444", "quality": 20, "frames": "y", "leftover_pair": "always"},
        ),
        # dates coded in a stored order (chunk format 9)
        "order-hevc-444": (
            s2,
            {"profile": "hevc-12bit-444", "quality": 24, "date_order": [2, 0, 3, 1]},
        ),
        "order-luma-nan": (
            floats,
            {"profile": "hevc-12bit-420-luma", "quality": 20, "date_order": [0, 3, 1, 2]},
        ),
        "order-edge-chunk": (
            padded,
            {
                "profile": "hevc-12bit-444",
                "quality": 24,
                "nodata": 0,
                "date_order": [5, 1, 0, 4, 2, 3],
            },
        ),
        "order-pred-lossless": (
            nodata,
            {"profile": "eocube-lossless", "nodata": 0, "date_order": [3, 2, 1, 0]},
        ),
        # the wavelet coder with the daily cycle modelled apart (chunk format 10)
        "periodic-float32": (
            t2m,
            {"profile": "hevc-12bit-444", "quality": 24, "wavelet": "always"},
        ),
        "periodic-nan-float32": (
            t2m_nan,
            {"profile": "hevc-12bit-444", "quality": 30, "wavelet": "always"},
        ),
        # frames with Y and X swapped, 46 x 52 rather than 52 x 46 (chunk format 11)
        "transposed-hevc-444": (whole, {"profile": "hevc-12bit-444", "quality": 24}),
        "transposed-bound-nan-float32": (
            whole_nan,
            {"profile": "hevc-12bit-420-luma", "quality": 30, "max_abs_error": 0.002},
        ),
        # four dates a frame, a 2 x 2 mosaic of 48 x 40 (chunk format 12)
        "mosaic-hevc-444": (
            series,
            {"profile": "hevc-12bit-444", "quality": 24, "frames": "mosaic"},
        ),
        "mosaic-bound-nan-float32": (
            series_nan,
            {
                "profile": "hevc-12bit-420-luma",
                "quality": 30,
                "max_abs_error": 0.002,
                "frames": "mosaic",
            },
        ),
    }


def main(prefix: str, only: list[str]) -> None:
    import eocube

    takes = set(inspect.signature(eocube.encode_chunk).parameters)
    for name, (block, kwargs) in blocks().items():
        needs = {"frames", "wavelet", "leftover_pair", "date_order"} & set(kwargs)
        if (only and name not in only) or not needs <= takes:
            continue
        payload = eocube.encode_chunk(block, **kwargs)
        (HERE / f"{prefix}-{name}.eocb").write_bytes(payload)
        np.save(HERE / f"{prefix}-{name}.npy", eocube.decode_chunk(payload))
        print(prefix, name, len(payload), "bytes, version", payload[4])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
