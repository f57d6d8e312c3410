"""Published and measured figures the benchmarks compare eocube against (their anchors).

The reference approach is that of the paper "Video Compression for Spatiotemporal Earth
System Data" (arXiv 2506.19656) and its library IPL-UV/xarrayvideo (MIT): libx265 12-bit,
bands 3 per video, one global min/max per band (benchmarks.reference reimplements it).

The figures below were measured by this project on the dev corpus (the cubes named here;
see benchmarks.corpus), running the reference's own code (libx265 12-bit, preset medium,
tune psnr, crf 0–51, bands 3 per video) and the competitors of benchmarks.competitors.
PSNR follows docs/format.md (per-band data-range peak over valid values, mean over bands),
not the paper's storage-type peak (about 16 dB higher on Sentinel-2); bytes are each
method's payload only (the reference's 9–12 kB coordinates side file excluded). On
s2_l2a_worldcereal_12x9x100x100 and l8_ny18_013032 the nodata value was turned into NaN.
On these runs libx265 12-bit topped out near 53–62 dB and collapsed at crf ≥ 45.

benchmarks.rd checks its reimplementation of the reference, and its competitors, against
:data:`MEASURED_PSNR` and :data:`MEASURED_ZSTD3_BPPPB`; benchmarks.codec_core draws
:func:`codec_core_points` on its plots for context.
"""

from __future__ import annotations

# The rates (bpppb) at which every PSNR of this module is given.
RATES = (0.1, 0.3, 1.0)

# PSNR (dB) at 0.1 / 0.3 / 1 bpppb, per cube and method; None: out of the method's reach.
# "reference" is xarrayvideo's own code; the others are competitors of the same names.
MEASURED_METHODS = ("reference", "SZ3", "SPERR", "JPEG-XL")
MEASURED_PSNR: dict[str, dict[str, tuple[float | None, ...]]] = {
    "s2_l2a_worldcereal_118x4x64x64": {
        "reference": (37.8, 44.5, 51.8),
        "SZ3": (21.3, 31.5, 42.1),
        "SPERR": (35.8, 41.2, 47.7),
        "JPEG-XL": (None, 37.5, 46.1),
    },
    "s2_l2a_worldcereal_12x9x100x100": {
        "reference": (None, 39.0, 47.6),
        "SZ3": (25.4, 29.7, 38.9),
        "SPERR": (34.0, 38.5, 45.3),
        "JPEG-XL": (None, 35.7, 43.4),
    },
    "s2_l1c_eolearn_5x13": {
        "reference": (None, 30.8, 40.8),
        "SZ3": (None, 19.2, 32.2),
        "SPERR": (30.7, 34.9, 41.1),
        "JPEG-XL": (None, 31.5, 39.3),
    },
    "s2_l2a_fusets_meadow_58x3x44x48": {
        "reference": (None, 29.5, 39.1),
        "SZ3": (None, 20.5, 31.2),
        "SPERR": (18.8, 23.9, 33.0),
        "JPEG-XL": (None, None, 31.1),
    },
    "l8_ny18_013032": {
        "reference": (None, 22.9, 37.1),
        "SZ3": (None, 18.9, 28.8),
        "SPERR": (22.1, 25.2, 31.8),
        "JPEG-XL": (None, None, 26.2),
    },
    "era5_t2m_uk_744h": {
        "reference": (None, 39.9, 50.5),
        "SZ3": (33.4, 38.0, 45.6),
        "SPERR": (39.9, 45.8, 54.5),
        "JPEG-XL": (None, None, 39.1),
    },
    "erainterim_uvz": {
        "reference": (44.9, 55.5, None),
        "SZ3": (23.3, 35.8, 55.3),
        "SPERR": (55.5, 63.7, 72.8),
        "JPEG-XL": (45.0, 57.1, 69.1),
    },
}

# Lossless bpppb of zstandard level 3 on the raw array: the floor every reader compares against.
MEASURED_ZSTD3_BPPPB: dict[str, float] = {
    "s2_l2a_worldcereal_118x4x64x64": 12.18,
    "s2_l2a_worldcereal_12x9x100x100": 7.39,
    "s2_l1c_eolearn_5x13": 8.20,
    "s2_l2a_fusets_meadow_58x3x44x48": 14.65,
    "l8_ny18_013032": 9.45,
    "era5_t2m_uk_744h": 18.80,
    "erainterim_uvz": 9.81,
}

# How the reference is named on benchmarks.codec_core's plots, and the methods drawn there.
REFERENCE_LABEL = "xarrayvideo (x265 12-bit)"
CODEC_CORE_METHODS = ("reference", "SPERR")


def codec_core_points(cube: str) -> dict[str, tuple[float | None, ...]]:
    """The anchors drawn on benchmarks.codec_core's plot of ``cube``: label → PSNR at RATES.

    Parameters
    ----------
    cube : str
        The cube's name.

    Returns
    -------
    dict
        The reference (as :data:`REFERENCE_LABEL`) and SPERR, where measured on ``cube``.
    """
    measured = MEASURED_PSNR.get(cube, {})
    return {
        REFERENCE_LABEL if method == "reference" else method: measured[method]
        for method in CODEC_CORE_METHODS
        if method in measured
    }
