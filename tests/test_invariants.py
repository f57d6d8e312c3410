"""What every chunk payload keeps, whatever the profile, dtype, shape and missing values:
a property hunt over encode_chunk / decode_chunk.

For each drawn block and profile: the dtype and shape come back; NaN stays NaN and only
NaN is NaN; nodata stays nodata and no valid value reads as nodata (wherever nodata lies:
below, above or inside the bands' ranges); lossless profiles return every value exactly;
``max_abs_error`` holds on every valid value; lossy valid values come back finite.
``HYPOTHESIS_PROFILE=eocube-long`` hunts ten times longer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eocube
from eocube import decode_chunk, encode_chunk
from eocube.errors import UnsupportedDataError

PROFILES = sorted(eocube.available_profiles())
DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
KINDS = ("smooth", "noise", "constant", "binary", "outliers")


@st.composite
def blocks(draw: st.DrawFn) -> tuple[np.ndarray, float | None]:
    """A (T, B, Y, X) block and its nodata (or None), with NaN and nodata where drawn."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    T = draw(st.sampled_from([1, 2, 5]))
    B = draw(st.sampled_from([1, 2, 3, 4, 5]))
    Y = draw(st.sampled_from([1, 7, 16, 33]))
    X = draw(st.sampled_from([1, 3, 35, 47]))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    yy, xx = np.meshgrid(np.arange(Y), np.arange(X), indexing="ij")
    if kind == "smooth":
        t = np.arange(T).reshape(T, 1, 1, 1)
        b = np.arange(B).reshape(1, B, 1, 1)
        field = np.sin(yy / 5 + b) * np.cos(xx / 7 + t / 3)
    elif kind == "noise":
        field = rng.normal(0, 1, (T, B, Y, X))
    elif kind == "constant":
        field = np.zeros((T, B, Y, X)) + rng.normal(0, 1, (1, B, 1, 1))
    elif kind == "binary":
        field = (rng.random((T, B, Y, X)) < 0.5) * 2.0 - 1
    else:
        field = rng.normal(0, 1, (T, B, Y, X))
        field[rng.random(field.shape) < 0.1] *= 1000
    field = np.broadcast_to(field, (T, B, Y, X))
    if dtype.kind == "f":
        scale = draw(st.sampled_from([1e-6, 1.0, 1e4, 1e20]))
        block = (field * scale + draw(st.sampled_from([0.0, 300.0, -1e3]))).astype(dtype)
    else:
        info = np.iinfo(dtype)
        span = draw(st.sampled_from([3.0, 100.0, 4000.0, (float(info.max) - info.min) / 4]))
        centre = draw(st.sampled_from([info.min + span + 1, info.max - span - 1]))
        peak = max(float(np.abs(field).max()), 1e-9)
        block = np.clip(np.round(centre + span * field / peak), info.min, info.max).astype(dtype)
    block = np.array(block)
    nodata: float | None = None
    where = draw(st.sampled_from(["none", "below", "above", "inside"]))
    if where != "none":
        values = block[np.isfinite(block)] if dtype.kind == "f" else block.ravel()
        if dtype.kind == "f":
            nodata = {
                "below": float(values.min()) - 1,
                "above": float(values.max()) + 1,
                "inside": float(np.median(values)),
            }[where]
            nodata = float(dtype.type(nodata))
        else:
            info = np.iinfo(dtype)
            nodata = {"below": info.min, "above": info.max, "inside": int(np.median(values))}[where]
        block[rng.random(block.shape) < draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))] = nodata
    if dtype.kind == "f" and draw(st.booleans()):
        block[rng.random(block.shape) < draw(st.sampled_from([0.05, 0.5, 1.0]))] = np.nan
    return block, nodata


def _missing(block: np.ndarray, nodata: float | None) -> np.ndarray:
    missing = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
    if nodata is not None:
        missing |= block == nodata
    return missing


# ten times the profile's examples (300 by default, about 10 s): a valid value decoded onto a
# nodata inside its band's range is found from about 150
@settings(max_examples=10 * settings.default.max_examples)
@given(drawn=blocks(), profile=st.sampled_from(PROFILES), data=st.data())
def test_every_payload_keeps_what_it_promises(
    drawn: tuple[np.ndarray, float | None], profile: str, data: st.DataObject
) -> None:
    block, nodata = drawn
    prof = eocube.get_profile(profile)
    missing = _missing(block, nodata)
    valid = ~missing
    quality = None
    bounds = None
    if prof.quality is not None:
        quality = data.draw(
            st.sampled_from([prof.quality.min, prof.quality.default, prof.quality.max])
        )
        if data.draw(st.booleans()):
            share = data.draw(st.sampled_from([0.0, 0.001, 0.05]))
            f = block.astype(np.float64)
            bounds = [
                share * float(np.ptp(f[:, b][valid[:, b]])) if valid[:, b].any() else 0.0
                for b in range(block.shape[1])
            ]
    refused = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = encode_chunk(
                block, prof, quality=quality, nodata=nodata, max_abs_error=bounds
            )
    except UnsupportedDataError as exc:
        refused = str(exc)
    if refused is not None:
        # only lossless profiles refuse data: floats, or a range wider than their bits
        assert prof.lossless, refused
        assert "lossless" in refused
        return
    out = decode_chunk(payload)
    assert out.dtype == block.dtype
    assert out.shape == block.shape
    if block.dtype.kind == "f":
        np.testing.assert_array_equal(np.isnan(out), np.isnan(block))
    if nodata is not None:
        np.testing.assert_array_equal(out == nodata, block == nodata)
    if prof.lossless:
        np.testing.assert_array_equal(out[valid], block[valid])
    elif valid.any():
        assert np.isfinite(out[valid].astype(np.float64)).all()
    if bounds is not None:
        err = np.abs(out.astype(np.float64) - block.astype(np.float64))
        for b, bound in enumerate(bounds):
            band = err[:, b][valid[:, b]]
            assert band.size == 0 or band.max() <= bound, (b, band.max(), bound)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_hunt_reaches_every_profile(profile: str) -> None:
    # the property test above draws from these; each must code a plain block
    block = np.arange(2 * 2 * 16 * 40, dtype=np.uint16).reshape(2, 2, 16, 40) % 4000
    np.testing.assert_array_equal(decode_chunk(encode_chunk(block, profile)).shape, block.shape)
