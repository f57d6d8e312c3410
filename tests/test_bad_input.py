"""Bad input to to_eocube: a clear error naming the variable and what to do, or it just works.

Errors derive from EocubeError and ValueError (or are TypeError/FileExistsError where
Python expects those); all-NaN and constant chunks and irregularly chunked dask input
are not errors: they round-trip.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import eocube
from eocube.errors import EocubeError, ProfileError, UnsupportedDataError
from eocube.profiles import available_profiles

DATA = Path(__file__).parent / "data"
_names = (f"memory://bad-input-{i}.eocube" for i in itertools.count())


def _store() -> str:
    return next(_names)


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    """Real Sentinel-2 DNs (uint16, no nodata), 4 dates x 4 bands x 20 x 20 px."""
    with xr.open_dataset(DATA / "s2_l2a_openeo_gfmap_19x4x52x46.nc") as ds:
        return ds[["data"]].isel(time=slice(0, 4), y=slice(0, 20), x=slice(0, 20)).load()


def _with(small: xr.Dataset, values: np.ndarray, name: str = "data") -> xr.Dataset:
    return xr.Dataset({name: (small.data.dims, values)}, coords=small.coords)


# --- dims ------------------------------------------------------------------------------


def test_extra_dim_names_the_variable_its_dims_and_what_to_do(small: xr.Dataset) -> None:
    ds = small.data.expand_dims(level=2).to_dataset(name="wind")
    with pytest.raises(ValueError, match="no cube variable") as err:
        eocube.to_eocube(ds, _store())
    message = str(err.value)
    assert "'wind' has ('level', 'time', 'band', 'y', 'x')" in message
    assert "isel(level=0)" in message
    assert "dims=" in message


def test_missing_dim_names_the_variable_and_its_dims(small: xr.Dataset) -> None:
    ds = small.data.isel(time=0).to_dataset(name="snapshot")
    with pytest.raises(ValueError, match=r"'snapshot' has \('band', 'y', 'x'\)"):
        eocube.to_eocube(ds, _store())


def test_variables_naming_a_non_cube_or_absent_variable(small: xr.Dataset) -> None:
    ds = small.assign(elevation=small.data.isel(time=0, band=0))
    with pytest.raises(
        ValueError,
        match=r"variable 'elevation' is not a cube: dims \('y', 'x'\): no time dim.*dims=",
    ):
        eocube.to_eocube(ds, _store(), variables=["elevation"])
    with pytest.raises(
        ValueError, match=r"variables= names \['nope'\], which are not in the dataset: \['data'"
    ):
        eocube.to_eocube(ds, _store(), variables=["nope"])


def test_dims_naming_an_absent_dim(small: xr.Dataset) -> None:
    with pytest.raises(ValueError, match=r"dims= names \{'time': 'date'\}, not dims"):
        eocube.to_eocube(small, _store(), dims={"time": "date"})
    with pytest.raises(ValueError, match="dims= keys are roles among"):
        eocube.to_eocube(small, _store(), dims={"level": "time"})


def test_empty_dim_is_refused_by_name(small: xr.Dataset) -> None:
    with pytest.raises(UnsupportedDataError, match=r"variable 'data' has no values along time"):
        eocube.to_eocube(small.isel(time=slice(0, 0)), _store())


# --- dtypes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "advice"),
    [
        ("complex64", r"real and imaginary parts"),
        ("object", r"convert it to numbers or drop it"),
        ("bool", r"cast it to uint8"),
        ("datetime64[ns]", r"as numbers"),
        ("timedelta64[ns]", r"as numbers"),
    ],
)
def test_dtypes_eocube_cannot_store(small: xr.Dataset, dtype: str, advice: str) -> None:
    ds = _with(small, small.data.values.astype(dtype), "quality")
    with pytest.raises(UnsupportedDataError, match=r"variable 'quality' has an? \w+ dtype") as err:
        eocube.to_eocube(ds, _store())
    assert isinstance(err.value, EocubeError)
    assert isinstance(err.value, ValueError)
    assert re.search(advice, str(err.value)), err.value


@pytest.mark.parametrize(
    ("dtype", "cast", "values"),
    [
        ("int64", "int32", lambda v: v.astype(np.int64)),
        ("uint32", "int32", lambda v: v.astype(np.uint32)),
        ("uint64", "int32", lambda v: v.astype(np.uint64)),
        ("int8", "int16", lambda v: (v // 256).astype(np.int8)),
        ("float16", "float32", lambda v: (v / 10000).astype(np.float16)),
    ],
)
def test_dtypes_to_cast_say_how_and_the_cast_works(
    small: xr.Dataset, dtype: str, cast: str, values: object
) -> None:
    data = values(small.data.values)  # type: ignore[operator]
    ds = _with(small, data, "refl")
    with pytest.raises(UnsupportedDataError) as err:
        eocube.to_eocube(ds, _store())
    message = str(err.value)
    assert f"variable 'refl' has dtype {dtype}" in message
    assert f"astype('{cast}')" in message
    # following the advice works
    ds["refl"] = ds["refl"].astype(cast)
    store = _store()
    if cast == "float32":
        eocube.to_eocube(ds, store, max_abs_error=1e-3, measure=False)
        back = eocube.open_dataset(store).refl.values
        assert np.abs(back - data.astype(cast)).max() <= 1e-3
    else:
        eocube.to_eocube(ds, store, lossless=True, measure=False)
        np.testing.assert_array_equal(eocube.open_dataset(store).refl.values, data.astype(cast))


@pytest.mark.parametrize("lazy", [False, True])
def test_inf_names_the_variable_and_what_to_do(small: xr.Dataset, lazy: bool) -> None:
    values = small.data.values.astype(np.float32)
    values[1, 2, 3, 4] = -np.inf if lazy else np.inf
    ds = _with(small, values, "refl")
    if lazy:
        ds = ds.chunk({"time": 1})
    with pytest.raises(UnsupportedDataError, match=r"variable 'refl'.*infinite values.*NaN"):
        eocube.to_eocube(ds, _store(), measure=False)


def test_floats_with_a_lossless_profile(small: xr.Dataset) -> None:
    ds = _with(small, small.data.values.astype(np.float32), "refl")
    with pytest.raises(UnsupportedDataError, match=r"variable 'refl' is float32.*max_abs_error"):
        eocube.to_eocube(ds, _store(), lossless=True)


# --- values that must work -------------------------------------------------------------


def test_all_nan_and_constant_chunks_round_trip_lossy() -> None:
    with xr.open_dataset(DATA / "stars_cmip3_tos_24x1x170x180.nc") as src:
        tos = src[["data"]].isel(time=slice(0, 8), y=slice(0, 40), x=slice(0, 40)).load()
    values = tos.data.values.copy()
    values[:4, :, :20, :20] = np.nan  # an all-NaN chunk
    values[4:, :, :20, :20] = 287.25  # a constant chunk
    values[:4, :, 20:, 20:] = 0.0  # a constant chunk of zeros (beside NaN land elsewhere)
    ds = tos.copy(data={"data": values})
    chunks = {"time": 4, "y": 20, "x": 20}
    for kwargs in ({}, {"max_abs_error": 0.01}):
        store = _store()
        eocube.to_eocube(ds, store, chunks=chunks, measure=False, **kwargs)
        back = eocube.open_dataset(store).data.values
        np.testing.assert_array_equal(np.isnan(back), np.isnan(values))  # NaN positions kept
        np.testing.assert_array_equal(back[4:, :, :20, :20], 287.25)
        np.testing.assert_array_equal(back[:4, :, 20:, 20:], 0.0)
        if kwargs:
            assert np.nanmax(np.abs(back - values)) <= 0.01


@pytest.mark.parametrize("nodata", [0, None])
def test_all_nodata_and_constant_chunks_round_trip_lossless(nodata: int | None) -> None:
    with xr.open_dataset(DATA / "s2_l2a_worldcereal_72x4x64x64.nc") as src:
        s2 = src[["data"]].isel(time=slice(0, 8), y=slice(0, 40), x=slice(0, 40)).load()
    values = s2.data.values.copy()
    values[:4, :, :20, :20] = 0  # all nodata (when nodata=0)
    values[4:, :, :20, :20] = 1234  # constant
    values[:4, :, 20:, 20:] = 65535  # all the fill value of a store without nodata
    ds = s2.copy(data={"data": values})
    ds.data.attrs = {} if nodata is None else {"nodata": nodata}
    store = _store()
    eocube.to_eocube(ds, store, lossless=True, chunks={"time": 4, "y": 20, "x": 20})
    back = eocube.open_dataset(store).data.values
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, values)


def test_irregularly_chunked_dask_input_just_works(small: xr.Dataset) -> None:
    lazy = small.chunk({"time": (1, 3), "y": (7, 13), "x": (3, 5, 12)})
    store = _store()
    eocube.to_eocube(lazy, store, lossless=True, chunks={"time": 2, "y": 8, "x": 8})
    np.testing.assert_array_equal(eocube.open_dataset(store).data.values, small.data.values)


# --- options ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [(10, 20), "auto", 2.5, None])
def test_non_uniform_or_non_integer_chunks_are_refused(small: xr.Dataset, chunk: object) -> None:
    with pytest.raises(ValueError, match=r"variable 'data': chunks for 'time' must be one integer"):
        eocube.to_eocube(small, _store(), chunks={"time": chunk})  # type: ignore[dict-item]


def test_chunks_naming_an_unknown_dim_or_splitting_bands(small: xr.Dataset) -> None:
    with pytest.raises(
        ValueError, match=r"chunks= names \['level'\].*\['band', 'time', 'x', 'y'\]"
    ):
        eocube.to_eocube(small, _store(), chunks={"level": 2})
    with pytest.raises(ValueError, match=r"variable 'data': all bands stay in one chunk"):
        eocube.to_eocube(small, _store(), chunks={"band": 2})
    with pytest.raises(ValueError, match=r"variable 'data': chunk size for x must be positive"):
        eocube.to_eocube(small, _store(), chunks={"x": 0})


def test_profile_too_shallow_for_lossless_names_profile_and_bits(small: xr.Dataset) -> None:
    # real S2 bands span about 13 bits: more than hevc-lossless's 12
    with pytest.raises(
        UnsupportedDataError,
        match=r"variable 'data'.*needs 13 bits; profile 'hevc-lossless' holds 12 bits "
        r"losslessly \(use ffv1-lossless",
    ):
        eocube.to_eocube(small, _store(), profile="hevc-lossless", measure=False)
    deep = _with(small, small.data.values.astype(np.int32) * 40, "dem")  # 19 bits
    with pytest.raises(
        UnsupportedDataError,
        match=r"variable 'dem'.*needs 19 bits; profile 'ffv1-lossless' holds 16 bits.*"
        r"max_abs_error",
    ):
        eocube.to_eocube(deep, _store(), lossless=True, measure=False)


def test_unknown_profile_lists_the_valid_ones(small: xr.Dataset) -> None:
    with pytest.raises(ProfileError, match="unknown profile 'x264-magic'") as err:
        eocube.to_eocube(small, _store(), profile="x264-magic")
    assert isinstance(err.value, ValueError)
    for name in available_profiles():
        assert name in str(err.value)
    with pytest.raises(ProfileError, match="valid profiles"):
        eocube.VideoCodec(profile="nope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lossless": True, "crf": 20}, "lossless and crf conflict"),
        ({"crf": 20, "target_psnr": 40}, "crf and target_psnr conflict"),
        ({"target_bpppb": 1.0, "max_abs_error": 2}, "target_bpppb and max_abs_error conflict"),
        ({"lossless": True, "profile": "hevc-12bit-444"}, "needs a lossless profile"),
        ({"profile": "ffv1-lossless", "crf": 20}, "'ffv1-lossless' is lossless: it takes no crf"),
        ({"crf": 500}, r"crf=500 is outside -6\.\.44"),
        ({"target_psnr": -3}, "target_psnr must be a positive number"),
        ({"max_abs_error": -1}, "variable 'data': max_abs_error must be finite and >= 0"),
        ({"max_abs_error": {"nope": 1}}, r"max_abs_error names \['nope'\]"),
        ({"mode": "x"}, r"mode must be 'w-', 'w', 'a' or 'r\+'"),
    ],
)
def test_conflicting_or_invalid_quality_options(
    small: xr.Dataset, options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        eocube.to_eocube(small, _store(), **options)


def test_type_errors(small: xr.Dataset) -> None:
    with pytest.raises(TypeError, match="xarray Dataset or DataArray, not ndarray"):
        eocube.to_eocube(small.data.values, _store())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="quality must be a number"):
        eocube.to_eocube(small, _store(), crf="20")  # type: ignore[arg-type]


def test_existing_store_mentions_mode_w(small: xr.Dataset, tmp_path: Path) -> None:
    store = tmp_path / "c.eocube"
    eocube.to_eocube(small, store, lossless=True, measure=False)
    with pytest.raises(FileExistsError, match=r"c\.eocube already exists; pass mode='w'"):
        eocube.to_eocube(small, store, lossless=True, measure=False)
    eocube.to_eocube(small + 1, store, lossless=True, measure=False, mode="w")
    np.testing.assert_array_equal(eocube.open_dataset(store).data.values, small.data.values + 1)
