"""Hypothesis strategies shared by the property tests: blocks as encode_chunk takes them."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import strategies as st

import eocube
from eocube import encode_chunk
from eocube.errors import UnsupportedDataError
from eocube.profiles import Profile

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


def missing_mask(block: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``block`` holds NaN or ``nodata``."""
    missing = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
    if nodata is not None:
        missing |= block == nodata
    return missing


def draw_coding(
    data: st.DataObject, prof: Profile, block: np.ndarray, nodata: float | None
) -> tuple[float | None, list[float] | None]:
    """A quality (lossy profiles: their finest, default or coarsest) and, half the time,
    a bound per band: 0, 0.1 % or 5 % of the band's valid range."""
    if prof.quality is None:
        return None, None
    quality = data.draw(st.sampled_from([prof.quality.min, prof.quality.default, prof.quality.max]))
    if not data.draw(st.booleans()):
        return quality, None
    share = data.draw(st.sampled_from([0.0, 0.001, 0.05]))
    valid = ~missing_mask(block, nodata)
    f = block.astype(np.float64)
    bounds = [
        share * float(np.ptp(f[:, b][valid[:, b]])) if valid[:, b].any() else 0.0
        for b in range(block.shape[1])
    ]
    return quality, bounds


def encode_drawn(
    block: np.ndarray,
    prof: Profile,
    quality: float | None,
    nodata: float | None,
    bounds: list[float] | None,
) -> tuple[bytes | None, str | None]:
    """The payload, or None and why the profile refused the block."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return encode_chunk(
                block, prof, quality=quality, nodata=nodata, max_abs_error=bounds
            ), None
    except UnsupportedDataError as exc:
        return None, str(exc)
