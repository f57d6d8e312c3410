"""What every chunk payload keeps, whatever the profile, dtype, shape and missing values:
a property hunt over encode_chunk / decode_chunk.

For each drawn block and profile: the dtype and shape come back; NaN stays NaN and only
NaN is NaN; nodata stays nodata and no valid value reads as nodata (wherever nodata lies:
below, above or inside the bands' ranges); lossless profiles return every value exactly;
``max_abs_error`` holds on every valid value; lossy valid values come back finite.
``HYPOTHESIS_PROFILE=eocube-long`` hunts ten times longer.
"""

from __future__ import annotations

import numpy as np
import pytest
from blocks import PROFILES, blocks, draw_coding, encode_drawn, missing_mask  # tests/blocks.py
from hypothesis import given, settings
from hypothesis import strategies as st

import eocube
from eocube import decode_chunk, encode_chunk


# ten times the profile's examples (300 by default, about 10 s): a valid value decoded onto a
# nodata inside its band's range is found from about 150
@settings(max_examples=10 * settings.default.max_examples)
@given(drawn=blocks(), profile=st.sampled_from(PROFILES), data=st.data())
def test_every_payload_keeps_what_it_promises(
    drawn: tuple[np.ndarray, float | None], profile: str, data: st.DataObject
) -> None:
    block, nodata = drawn
    prof = eocube.get_profile(profile)
    missing = missing_mask(block, nodata)
    valid = ~missing
    quality, bounds = draw_coding(data, prof, block, nodata)
    payload, refused = encode_drawn(block, prof, quality, nodata, bounds)
    if refused is not None:
        # only lossless profiles refuse data: floats, or a range wider than their bits
        assert prof.lossless, refused
        assert "lossless" in refused
        return
    assert payload is not None
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
