"""Band packing: layouts, per-band maps, quantization with smooth fill and edge padding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eocube import UnsupportedDataError
from eocube.packing import (
    CHUNK_LAYOUTS,
    CONSTANT_PLANE,
    SUPPORTED_DTYPES,
    band_maps,
    check_dtype,
    dequantize_plane,
    plan_layout,
    quantize,
)
from eocube.profiles import LAYOUTS

# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", CHUNK_LAYOUTS)
@pytest.mark.parametrize("bands", range(1, 9))
@pytest.mark.parametrize("times", [1, 2, 5])
def test_plan_layout_covers_every_plane_once(layout: str, bands: int, times: int) -> None:
    plans = plan_layout(layout, times, bands)
    flat = np.concatenate([p.sources.ravel() for p in plans])
    constant = flat == CONSTANT_PLANE
    np.testing.assert_array_equal(np.sort(flat[~constant]), np.arange(times * bands))
    for plan in plans:
        assert plan.sources.dtype == np.int32
        assert plan.frames == plan.sources.shape[0]
    roles = [p.role for p in plans]
    if layout == "planar3-pair" and bands % 3 == 2:
        # the two leftover bands share a frame of the main stream, after the groups
        groups = bands // 3
        assert roles == ["main"]
        sources = plans[0].sources
        assert sources.shape == ((groups + 1) * times, 3)
        pair = sources[groups * times :]
        np.testing.assert_array_equal(pair[:, 2], CONSTANT_PLANE)
        np.testing.assert_array_equal(pair[:, :2] % bands, [[bands - 2, bands - 1]] * times)
        assert constant.sum() == times
        return
    assert not constant.any()
    if layout.startswith("planar3"):
        groups, left = divmod(bands, 3)
        assert roles == ["main"] * (groups > 0) + ["extra"] * (left > 0)
        if groups:
            assert plans[0].sources.shape == (groups * times, 3)
        if left:
            extra = plans[-1].sources
            assert extra.shape == (left * times, 1)
            # the leftovers are the last bands, and only they
            assert set(extra.ravel() % bands) == set(range(3 * groups, bands))
    else:
        assert roles == ["main"]
        assert plans[0].sources.shape == (times * bands, 1)


def test_plan_layout_frame_orders() -> None:
    T, B = 3, 4
    luma = plan_layout("luma", T, B)[0].sources[:, 0]
    # each band's time series in sequence: band 0 at t = 0, 1, 2, then band 1...
    np.testing.assert_array_equal(luma, [t * B + b for b in range(B) for t in range(T)])
    baf = plan_layout("bands-as-frames", T, B)[0].sources[:, 0]
    np.testing.assert_array_equal(baf, np.arange(T * B))
    planar = plan_layout("planar3", T, B)
    # frame t of the main stream holds bands 0, 1, 2 of date t
    np.testing.assert_array_equal(
        planar[0].sources, [[t * B, t * B + 1, t * B + 2] for t in range(T)]
    )
    np.testing.assert_array_equal(planar[1].sources[:, 0], [t * B + 3 for t in range(T)])


def test_every_profile_layout_is_a_chunk_layout() -> None:
    assert set(LAYOUTS) <= set(CHUNK_LAYOUTS)


def test_plan_layout_unknown() -> None:
    with pytest.raises(UnsupportedDataError, match="unknown layout 'zigzag'"):
        plan_layout("zigzag", 2, 2)


# ------------------------------------------------------------------------- band maps


def test_check_dtype() -> None:
    for dtype in SUPPORTED_DTYPES:
        assert check_dtype(dtype) == dtype
    for bad in ("int64", "uint32", "float16", "complex64", "bool"):
        with pytest.raises(UnsupportedDataError, match=f"dtype {bad} is not supported"):
            check_dtype(np.dtype(bad))


@pytest.mark.parametrize(
    ("dtype", "span", "bits", "needed"),
    [
        ("uint16", 4096, 12, 13),
        ("uint16", 65535, 12, 16),
        ("int32", 2**20, 16, 21),
        ("uint8", 255, 6, 8),
    ],
)
def test_exact_band_maps_name_the_bits_needed(
    dtype: str, span: int, bits: int, needed: int
) -> None:
    block = np.zeros((2, 2, 3, 3), dtype)
    block[1, 1, 2, 2] = span
    with pytest.raises(
        UnsupportedDataError, match=f"spans {span} values, which needs {needed} bits"
    ) as info:
        band_maps(block, bits, exact=True)
    assert f"holds {bits} bits losslessly" in str(info.value)


def test_exact_band_maps_at_the_limit() -> None:
    block = np.zeros((1, 2, 2, 2), np.int16)
    block[0, 0] = [[-2048, 0], [1, 2047]]  # spans 4095: fits 12 bits exactly
    block[0, 1] = 7
    maps = band_maps(block, 12, exact=True)
    np.testing.assert_array_equal(maps.offset, [-2048, 7])
    np.testing.assert_array_equal(maps.scale, [1, 1])
    np.testing.assert_array_equal(maps.valid, [4, 4])
    assert maps.bands == 2


def test_exact_band_maps_refuse_floats() -> None:
    with pytest.raises(UnsupportedDataError, match="lossless encoding needs integer data"):
        band_maps(np.zeros((1, 1, 2, 2), np.float32), 16, exact=True)


def test_band_maps_refuse_infinite_values() -> None:
    block = np.zeros((2, 3, 2, 2), np.float64)
    block[0, 2, 0, 0] = np.inf
    block[1, 2, 1, 1] = -np.inf
    with pytest.raises(UnsupportedDataError, match="band 2 holds 2 infinite values"):
        band_maps(block, 12, exact=False)


def test_band_maps_refuse_ranges_beyond_float64() -> None:
    block = np.array([[[[-1e308, 0.0]], [[1e308, -1e308]]]])  # band 1 spans 2e308
    with pytest.raises(UnsupportedDataError, match=r"band 1 spans -1e\+308 .. 1e\+308, beyond"):
        band_maps(block, 12, exact=False)
    # offset + 4095 * scale rounds up past the largest float64: refused, not decoded as inf
    with pytest.raises(UnsupportedDataError, match="beyond what float64 can map"):
        band_maps(np.array([[[[0.0, np.finfo(np.float64).max]]]]), 12, exact=False)
    maps = band_maps(np.array([[[[0.0, 1.7e308]]]]), 12, exact=False)
    assert maps.scale[0] == pytest.approx(1.7e308 / 4095)


def test_band_maps_leave_out_nan_and_nodata() -> None:
    block = np.array([[[[0, 100], [400, 65535]]]], np.uint16)  # (1, 1, 2, 2)
    maps = band_maps(block, 12, exact=False, nodata=65535)
    assert maps.offset[0] == 0
    assert maps.scale[0] == pytest.approx(400 / 4095)
    assert maps.valid[0] == 3
    maps = band_maps(block, 16, exact=True, nodata=0)
    assert maps.offset[0] == 100
    with pytest.raises(UnsupportedDataError, match="needs 16 bits"):
        band_maps(block, 12, exact=True)  # 65535 counts when it is not declared nodata
    floats = np.array([[[[np.nan, -3.0], [5.0, np.nan]]], [[[np.nan, np.nan], [np.nan, np.nan]]]])
    maps = band_maps(floats.reshape(1, 2, 2, 2), 10, exact=False)
    np.testing.assert_array_equal(maps.valid, [2, 0])
    assert maps.offset[0] == -3.0
    assert maps.scale[0] == pytest.approx(8 / 1023)
    # an all-missing band maps everything to 0
    assert (maps.offset[1], maps.scale[1]) == (0.0, 0.0)


def test_constant_band_decodes_to_its_value_whatever_the_code() -> None:
    block = np.full((2, 1, 3, 3), 1e30, np.float32)
    maps = band_maps(block, 12, exact=False)
    assert maps.offset[0] == np.float32(1e30)
    # scale 0: a lossy codec that returns code 1 instead of 0 cannot move the value
    assert maps.scale[0] == 0.0
    codes, _ = quantize(block, maps, 12, 3, 3)
    assert (codes == 0).all()
    dst = np.empty((3, 3), np.float32)
    dequantize_plane(np.full((3, 3), 7, np.uint16), dst, maps.offset[0], maps.scale[0])
    assert (dst == np.float32(1e30)).all()
    # exact (lossless) maps keep unit scale
    assert band_maps(np.full((1, 1, 2, 2), 9, np.uint8), 8, exact=True).scale[0] == 1.0


# -------------------------------------------------------------------------- quantize


def test_quantize_maps_min_and_max_to_the_code_range() -> None:
    block = np.linspace(-1.0, 1.0, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    block[:, 1] *= 1000
    maps = band_maps(block, 10, exact=False)
    codes, invalid = quantize(block, maps, 10, 4, 5)
    assert invalid is None
    assert codes.dtype == np.uint16
    for b in range(3):
        assert codes[:, b].min() == 0
        assert codes[:, b].max() == 1023
    codes8, _ = quantize(block, band_maps(block, 8, exact=False), 8, 4, 5)
    assert codes8.dtype == np.uint8
    assert codes8.max() == 255


def test_quantize_exact_codes_are_offsets() -> None:
    block = np.array([[[[-5, 0], [7, 3000]]]], np.int16)
    maps = band_maps(block, 12, exact=True)
    codes, invalid = quantize(block, maps, 12, 2, 2)
    assert invalid is None
    np.testing.assert_array_equal(codes[0, 0], [[0, 5], [12, 3005]])


def test_quantize_refuses_a_small_frame() -> None:
    block = np.zeros((1, 1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="smaller than block"):
        quantize(block, band_maps(block, 8, exact=True), 8, 3, 4)


def test_quantize_fills_along_time_first() -> None:
    block = np.zeros((4, 1, 1, 3), np.float32)
    block[:, 0, 0, 0] = [np.nan, 10, np.nan, 30]  # filled back, then forward
    block[:, 0, 0, 1] = [0, 40, 20, 40]
    block[:, 0, 0, 2] = [40, np.nan, np.nan, np.nan]
    maps = band_maps(block, 12, exact=False)
    assert maps.offset[0] == 0
    codes, invalid = quantize(block, maps, 12, 1, 3)
    assert invalid is not None
    np.testing.assert_array_equal(invalid[:, 0, 0], np.isnan(block[:, 0, 0]))
    code = np.round(block[:, 0, 0] * 4095 / 40)
    np.testing.assert_array_equal(
        codes[:, 0, 0, 0], [code[1, 0], code[1, 0], code[1, 0], code[3, 0]]
    )
    np.testing.assert_array_equal(codes[:, 0, 0, 2], [4095, 4095, 4095, 4095])


def test_quantize_fills_never_valid_pixels_from_a_constant_neighbourhood_exactly() -> None:
    block = np.full((2, 1, 9, 11), 700, np.uint16)
    block[:, 0, 2:6, 3:9] = 0  # 0 = nodata, inside
    block[:, 0, :, :2] = 0  # and at the edge
    block[1, 0, 8, 10] = 900  # elsewhere in the band, far from the holes
    maps = band_maps(block, 12, exact=True, nodata=0)
    codes, invalid = quantize(block, maps, 12, 9, 11, nodata=0)
    assert invalid is not None
    np.testing.assert_array_equal(invalid, block == 0)
    values = codes[:, 0].astype(int) + int(maps.offset[0])
    assert (values[0] == 700).all()
    assert (values[1][block[1, 0] == 0] == 700).all()


def test_quantize_fills_a_collar_smoothly_in_both_directions() -> None:
    # a noisy scene whose left third is never valid (a footprint's collar): the fill must
    # not copy the edge's noise along rows, which leaves stripes a codec pays for
    rng = np.random.default_rng(1)
    block = rng.integers(1000, 3000, (3, 1, 48, 60)).astype(np.uint16)
    block[:, :, :, :20] = 0
    maps = band_maps(block, 12, exact=True, nodata=0)
    codes, _ = quantize(block, maps, 12, 48, 60, nodata=0)
    for t in range(3):
        plane = codes[t, 0].astype(float)
        scene_dy = np.abs(np.diff(plane[:, 20:], axis=0)).mean()
        collar_dy = np.abs(np.diff(plane[:, :20], axis=0)).mean()
        collar_dx = np.abs(np.diff(plane[:, :20], axis=1)).mean()
        assert collar_dy < 0.2 * scene_dy
        assert collar_dx < 0.2 * scene_dy
        np.testing.assert_array_equal(codes[t, 0, :, 20:], block[t, 0, :, 20:] - maps.offset[0])


def test_quantize_fills_a_moving_edge_smoothly_and_carries_interior_holes() -> None:
    # date 1 misses a strip along the collar (its footprint's edge moved) and an interior
    # hole (a cloud): the strip joins the smooth collar, the hole takes date 0's codes
    rng = np.random.default_rng(2)
    block = rng.integers(1000, 3000, (2, 1, 40, 50)).astype(np.uint16)
    block[:, :, :, :10] = 0
    block[1, 0, :, 10:13] = 0
    block[1, 0, 20:24, 30:34] = 0
    maps = band_maps(block, 12, exact=True, nodata=0)
    codes, _ = quantize(block, maps, 12, 40, 50, nodata=0)
    np.testing.assert_array_equal(codes[1, 0, 20:24, 30:34], codes[0, 0, 20:24, 30:34])
    noise_dy = np.abs(np.diff(codes[0, 0, :, 13:].astype(float), axis=0)).mean()
    strip_dy = np.abs(np.diff(codes[1, 0, :, 10:13].astype(float), axis=0)).mean()
    assert strip_dy < 0.3 * noise_dy
    # lossless coders keep the strip carried from date 0
    rows, _ = quantize(block, maps, 12, 40, 50, nodata=0, fill="rows")
    np.testing.assert_array_equal(rows[1, 0, :, 10:13], rows[0, 0, :, 10:13])


def test_quantize_keeps_the_carried_codes_of_a_date_missing_everywhere() -> None:
    # with a collar, every pixel of such a date reaches it: the fill would have no value
    # left to spread, so the date keeps the copy of the date before
    rng = np.random.default_rng(3)
    block = rng.integers(1000, 3000, (2, 1, 20, 24)).astype(np.uint16)
    block[:, :, :, :6] = 0
    block[1] = 0
    maps = band_maps(block, 12, exact=True, nodata=0)
    codes, _ = quantize(block, maps, 12, 20, 24, nodata=0)
    np.testing.assert_array_equal(codes[1, 0], codes[0, 0])


def test_quantize_fills_never_valid_pixels_along_rows_for_lossless_coders() -> None:
    block = np.zeros((2, 1, 3, 5), np.uint16)
    block[:, 0, 0] = [10, 0, 0, 0, 50]  # 0 = nodata: interpolated along the row
    block[:, 0, 1] = 0  # a row without data: interpolated along columns
    block[:, 0, 2] = [30, 30, 30, 30, 70]
    maps = band_maps(block, 12, exact=True, nodata=0)
    codes, invalid = quantize(block, maps, 12, 3, 5, nodata=0, fill="rows")
    assert invalid is not None
    np.testing.assert_array_equal(invalid, block == 0)
    values = codes[:, 0].astype(int) + int(maps.offset[0])
    for t in range(2):
        np.testing.assert_array_equal(values[t, 0], [10, 20, 30, 40, 50])
        np.testing.assert_array_equal(values[t, 1], [20, 25, 30, 35, 60])


def test_quantize_refuses_an_unknown_fill() -> None:
    block = np.zeros((1, 1, 2, 2), np.uint16)
    with pytest.raises(ValueError, match="fill must be one of pyramid, rows"):
        quantize(block, band_maps(block, 12, exact=True), 12, 2, 2, fill="zeros")


def test_quantize_all_missing_band_gets_mid_code() -> None:
    block = np.full((2, 2, 3, 3), np.nan, np.float32)
    block[:, 1] = 1.0
    codes, invalid = quantize(block, band_maps(block, 12, exact=False), 12, 3, 3)
    assert invalid is not None
    assert (codes[:, 0] == 2047).all()
    assert invalid[:, 0].all()
    assert not invalid[:, 1].any()


@st.composite
def blocks_with_holes(draw: st.DrawFn) -> tuple[np.ndarray, float | None, int, int, int]:
    dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "float32", "float64"]))
    shape = draw(hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6))
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e6, 1e6, width=32 if dtype == "float32" else 64)
        nodata = None
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
        nodata = draw(st.one_of(st.none(), st.sampled_from([int(info.min), int(info.max)])))
    block = draw(hnp.arrays(dtype, shape, elements=elements))
    holes = draw(hnp.arrays(np.bool_, shape))
    if np.dtype(dtype).kind == "f":
        block[holes] = np.nan
    elif nodata is not None:
        block[holes] = nodata
    bits = draw(st.sampled_from([8, 10, 12, 16]))
    return (
        block,
        nodata,
        bits,
        shape[2] + draw(st.integers(0, 5)),
        shape[3] + draw(st.integers(0, 5)),
    )


@given(blocks_with_holes(), st.sampled_from(["pyramid", "rows"]))
def test_quantize_fills_within_band_range_and_pads_by_edge(
    case: tuple[np.ndarray, float | None, int, int, int], fill: str
) -> None:
    block, nodata, bits, height, width = case
    T, B, Y, X = block.shape
    maps = band_maps(block, bits, exact=False, nodata=nodata)
    codes, invalid = quantize(block, maps, bits, height, width, nodata=nodata, fill=fill)
    assert codes.shape == (T, B, height, width)
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16)
    missing = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
    if nodata is not None:
        missing |= block == nodata
    if missing.any():
        assert invalid is not None
        np.testing.assert_array_equal(invalid, missing)
    else:
        assert invalid is None
    assert int(codes.max()) <= (1 << bits) - 1
    data = codes[:, :, :Y, :X]
    for b in range(B):
        valid = ~missing[:, b]
        if valid.any():
            # missing values are filled from the band's own codes: never outside its range
            lo, hi = data[:, b][valid].min(), data[:, b][valid].max()
            assert data[:, b].min() >= lo
            assert data[:, b].max() <= hi
        else:
            assert (data[:, b] == (1 << bits) // 2 - 1).all()
    # padding replicates the last column, then the last row (corner included)
    np.testing.assert_array_equal(
        codes[:, :, :Y, X:], np.repeat(codes[:, :, :Y, X - 1 : X], width - X, 3)
    )
    np.testing.assert_array_equal(
        codes[:, :, Y:, :], np.repeat(codes[:, :, Y - 1 : Y, :], height - Y, 2)
    )


# ------------------------------------------------------------------------ dequantize


def test_dequantize_rounds_and_clips_integers() -> None:
    src = np.array([[0, 1, 2, 3], [4095, 4094, 100, 7]], np.uint16)
    dst = np.empty((2, 3), np.uint8)
    dequantize_plane(src, dst, offset=-1.0, scale=0.5)  # crops the extra column
    # -1 + 0.5 c, rounded half up, clipped to 0..255
    np.testing.assert_array_equal(dst, [[0, 0, 0], [255, 255, 49]])
    dst16 = np.empty((2, 4), np.int16)
    dequantize_plane(src, dst16, offset=-40000.0, scale=20.0)
    np.testing.assert_array_equal(dst16[0], [-32768, -32768, -32768, -32768])
    # -40000 + 20 c for c = 4095, 4094, 100, 7
    np.testing.assert_array_equal(dst16[1], [32767, 32767, -32768, -32768])
    dequantize_plane(src, dst16, offset=-1000.0, scale=20.0)
    np.testing.assert_array_equal(dst16[1], [32767, 32767, 1000, -860])


def test_dequantize_floats_are_affine() -> None:
    src = np.array([[0, 1023]], np.uint16)
    dst = np.empty((1, 2), np.float64)
    dequantize_plane(src, dst, offset=-2.5, scale=0.125)
    np.testing.assert_array_equal(dst, [[-2.5, -2.5 + 1023 * 0.125]])
