"""What benchmarks.rd measures: the quick run's cubes, crf sweeps, crops and the default.

Full sweeps span each profile's range from its best quality (the x265 profiles' quality
-6, constant QP 0; crf 0 elsewhere where a profile has one) to past 0.1 bpppb on the
corpus; quick sweeps are shorter and run on three small cubes.
"""

from __future__ import annotations

QUICK_CUBES = ("s2_l2a_openeo_gfmap_12x5x66x64", "l8_ny18_014031", "era5_t2m_uk_744h")
QUICK_MAX_TIME = 96

# cubes larger than this many values are cropped in y and x (all bands and dates kept)
MAX_VALUES_FULL = 2_500_000
MAX_VALUES_QUICK = 300_000
DECODE_REPEATS_FULL = 2
DECODE_REPEATS_QUICK = 1

# Every video method is swept about every 4 crf steps (x265, x264) or 6 (SVT-AV1, VP9):
# PSNR at a goal's rate is interpolated in log bpppb between two points, and over the
# factor of 2 to 2.5 in rate that 8 x265 crf steps span at 1 bpppb the chord missed the
# curve by up to 0.4 dB (the NDVI series' default and hevc-12bit-420-luma, which code
# the same streams, read 39.5 and 39.7 dB at 1 bpppb; swept every 4 steps, the default
# read 39.4).
X265_CRFS = tuple(range(0, 41, 4))
# eocube's x265 profiles go on below crf 0 to constant QP 0 (quality -6)
EOCUBE_X265 = (-6, *X265_CRFS)
SWEEPS_FULL: dict[str, tuple[float, ...]] = {
    "hevc-12bit-444": EOCUBE_X265,
    "hevc-12bit-444-gbr": EOCUBE_X265,
    "hevc-12bit-420-luma": EOCUBE_X265,
    "hevc-12bit-bands": EOCUBE_X265,
    # below the video's finest quality, SPERR at 4 and 2 times the QP 0 video's bytes
    "hevc-12bit-444-wavelet": (-18, -12, *EOCUBE_X265),
    "av1-10bit": (10, 16, 22, 28, 34, 40, 46, 52, 57, 63),
    "h264-10bit": tuple(range(0, 49, 4)),
    "vp9-8bit-444": (4, 10, 16, 22, 28, 34, 40, 45, 50, 56, 63),
}
SWEEPS_QUICK: dict[str, tuple[float, ...]] = {
    "hevc-12bit-444": (0, 10, 20, 30, 40),
    "hevc-12bit-420-luma": (0, 10, 20, 30, 40),
    "hevc-12bit-bands": (0, 10, 20, 30, 40),
    "hevc-12bit-444-wavelet": (0, 10, 20, 30, 40),
    "av1-10bit": (15, 35, 55),
    "h264-10bit": (5, 20, 35),
    "vp9-8bit-444": (10, 30, 50),
}
LOSSLESS_PROFILES = ("ffv1-lossless", "hevc-lossless", "eocube-lossless")
REFERENCE_CRFS_FULL = X265_CRFS
REFERENCE_CRFS_QUICK = (0, 10, 20, 30, 40)
DEFAULT_PROFILE = "hevc-12bit-444"
# written with target_bpppb too: the rate control's answer to a rate the video cannot
# spend (the default: a residual layer; the wavelet profile: SPERR's own rate)
TARGET_PROFILES = (DEFAULT_PROFILE, "hevc-12bit-444-wavelet")


def profile_sweeps(quick: bool) -> dict[str, tuple[float, ...]]:
    """The crf values of each lossy eocube profile."""
    return SWEEPS_QUICK if quick else SWEEPS_FULL


# The TARGET_PROFILES are also written at these store rates with target_bpppb: where its
# video saturates below a goal's rate (crf 0 spends less), the rate control spends the
# rest on the residual layer, so the curve reaches the rate as a user asking for it would.
# Above 1 bpppb so that 1 is interpolated, not extrapolated, on both bases.
TARGET_RATES_FULL = (1.25,)
TARGET_RATES_QUICK = (1.25,)


def target_rates(quick: bool) -> tuple[float, ...]:
    """The store rates (bpppb) the default profile is also written at with target_bpppb."""
    return TARGET_RATES_QUICK if quick else TARGET_RATES_FULL


def reference_crfs(quick: bool) -> tuple[float, ...]:
    """The crf values of the reference approach."""
    return REFERENCE_CRFS_QUICK if quick else REFERENCE_CRFS_FULL
