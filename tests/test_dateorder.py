"""Dates coded in a stored order (eocube.dateorder, chunk format 9)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from blocks import blocks, missing_mask  # tests/blocks.py
from hypothesis import given, settings
from hypothesis import strategies as st
from legacy import as_version  # tests/legacy.py

from eocube import chunk as chunk_module
from eocube import dateorder, metrics
from eocube.chunk import decode_chunk, encode_chunk, parse_chunk, read_header
from eocube.errors import CorruptChunkError, UnsupportedDataError
from eocube.packing import plan_layout


def _alternating(dates: int = 8, seed: int = 5) -> np.ndarray:
    """Two scenes in turn (clear, cloudy), 3 bands of 48 x 56 px: each date looks like the
    date before the last, not like the one before it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(48), np.arange(56), indexing="ij")
    clear = np.stack([1500 + 700 * np.sin(yy / 5 + b) * np.cos(xx / 7) for b in range(3)])
    cloud = np.stack([6000 + 900 * np.cos(yy / 9 - b) * np.sin(xx / 4) for b in range(3)])
    frames = [
        (clear if t % 2 == 0 else cloud) + rng.normal(0, 15, clear.shape) for t in range(dates)
    ]
    return np.stack(frames).clip(0, 10000).astype(np.uint16)


# ------------------------------------------------------------------------- the paths


def test_distances_are_the_mean_absolute_code_differences() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4096, (5, 2, 40, 48)).astype(np.uint16)
    D = dateorder.distances(codes, 40, 48)
    f = codes.reshape(5, -1).astype(np.float64)
    want = np.abs(f[:, None] - f[None]).mean(axis=2)
    np.testing.assert_allclose(D, want, rtol=1e-6)
    assert (np.diag(D) == 0).all()
    np.testing.assert_array_equal(D, D.T)


def test_distances_sample_a_large_frame_and_skip_the_padding() -> None:
    codes = np.zeros((3, 1, 256, 256), np.uint16)
    codes[1, 0, :200, :200] = 100
    codes[:, :, 200:, :] = 4095  # beyond the block's 200 rows: the codec's padding
    D = dateorder.distances(codes, 200, 256)
    assert D[0, 2] == 0
    assert D[0, 1] == pytest.approx(100 * 200 / 256, rel=0.05)


def test_greedy_path_keeps_like_with_like() -> None:
    block = _alternating(8)
    D = dateorder.distances(block.astype(np.uint16), 48, 56)
    [first, *_] = dateorder.candidates(D)
    assert first[0] == 0
    # the clear dates, then the cloudy ones (or the path goes back and forth once)
    changes = int(np.sum(first[1:] % 2 != first[:-1] % 2))
    assert changes == 1
    for order in dateorder.candidates(D):
        assert dateorder.is_permutation(order, 8)
        assert order[0] == 0
        assert not np.array_equal(order, np.arange(8))
        assert dateorder.path_length(D, order) < dateorder.SHORTER * dateorder.path_length(
            D, np.arange(8)
        )
    lengths = [dateorder.path_length(D, o) for o in dateorder.candidates(D)]
    assert lengths == sorted(lengths)


def test_no_candidates_where_time_order_is_the_shortest_path() -> None:
    t = np.arange(12, dtype=np.float64)[:, None, None, None]
    drift = (1000 + 50 * t + np.zeros((12, 2, 16, 16))).astype(np.uint16)  # a steady trend
    assert dateorder.candidates(dateorder.distances(drift, 16, 16)) == []


@pytest.mark.parametrize("dates", [1, 2, dateorder.MAX_DATES + 1])
def test_no_candidates_for_too_few_or_too_many_dates(dates: int) -> None:
    D = np.random.default_rng(1).random((dates, dates))
    assert dateorder.candidates(D + D.T) == []


def test_two_opt_never_lengthens_a_path() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        points = rng.random((15, 2))
        D = np.linalg.norm(points[:, None] - points[None], axis=2)
        start = rng.permutation(15)
        shorter = dateorder._two_opt(D, start.astype(np.int64))
        assert dateorder.is_permutation(shorter, 15)
        assert shorter[0] == start[0]
        assert dateorder.path_length(D, shorter) <= dateorder.path_length(D, start) + 1e-12


@pytest.mark.parametrize(
    ("order", "ok"),
    [
        ([2, 0, 1], True),
        ([0, 1, 1], False),
        ([0, 1, 3], False),
        ([0, 1], False),
        ([-1, 0, 1], False),
    ],
)
def test_is_permutation(order: list[int], ok: bool) -> None:
    assert dateorder.is_permutation(np.array(order), 3) is ok


def test_the_plan_codes_the_dates_in_the_order_given() -> None:
    [main, extra] = plan_layout("planar3", 3, 4, np.array([2, 0, 1]))
    # frame p of the main stream: bands 0-2 of date order[p]
    assert main.sources.tolist() == [[8, 9, 10], [0, 1, 2], [4, 5, 6]]
    assert extra.sources.ravel().tolist() == [11, 3, 7]
    with pytest.raises(ValueError, match="date order"):
        plan_layout("luma", 3, 1, np.array([0, 1]))


# -------------------------------------------------------------------- chunk format 9


def test_a_given_order_is_stored_and_the_dates_come_back_in_place() -> None:
    block = _alternating(6)
    order = [0, 2, 4, 1, 3, 5]
    payload = encode_chunk(block, quality=16, date_order=order)
    header = read_header(payload)
    assert header.date_order.tolist() == order
    [plan] = parse_chunk(payload).plans
    assert (plan.sources[:, 0] // 3).tolist() == order
    decoded = decode_chunk(payload)
    # a date put back in another date's place would be off by thousands
    assert metrics.psnr(block, decoded) > 40
    assert np.abs(decoded.astype(int) - block.astype(int)).max() < 500


def test_time_order_writes_no_order() -> None:
    block = _alternating(6)
    for order in ("time", list(range(6))):
        header = read_header(encode_chunk(block, quality=16, date_order=order))
        assert header.date_order is None


def test_auto_takes_a_far_shorter_path_as_it_is() -> None:
    block = _alternating(8)
    D = dateorder.distances(block, 48, 56)
    path = dateorder.candidates(D)[0]
    assert dateorder.clearly_shorter(D, path)
    auto = encode_chunk(block, quality=20)  # "auto" is the default
    assert auto == encode_chunk(block, quality=20, date_order=path.tolist())
    # dates in turn from two scenes: the path codes them in fewer bytes, as well
    time_order = encode_chunk(block, quality=20, date_order="time")
    assert len(auto) < len(time_order)
    assert (
        metrics.psnr(block, decode_chunk(auto))
        > metrics.psnr(block, decode_chunk(time_order)) - 0.3
    )


def test_auto_tries_a_path_not_far_shorter_against_time_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dateorder, "CLEAR", 0.0)  # no path is far shorter: each is tried
    block = _alternating(8)
    for quality in (10, 30):
        D = dateorder.distances(block, 48, 56)
        path = dateorder.candidates(D)[0]
        ways = {
            "time": encode_chunk(block, quality=quality, date_order="time"),
            "path": encode_chunk(block, quality=quality, date_order=path.tolist()),
        }
        score = {
            way: metrics.psnr(block, decode_chunk(p))
            - chunk_module.DB_PER_DOUBLING * math.log2(len(p))
            for way, p in ways.items()
        }
        auto = encode_chunk(block, quality=quality)
        # the block is small: both orders are coded whole, and the better one is the payload
        assert auto == ways[max(score, key=score.__getitem__)]


def test_a_window_tries_the_orders_of_a_larger_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dateorder, "CLEAR", 0.0)
    block = np.tile(_alternating(6), (1, 1, 3, 3))  # 144 x 168 px: a 64 x 64 window
    tried: list[tuple[tuple[int, ...], bool]] = []
    payload = chunk_module._VideoCoding.payload

    def recording(coding: chunk_module._VideoCoding, sub: np.ndarray, *args, **kwargs) -> bytes:
        tried.append((sub.shape, coding.date_order is not None))
        return payload(coding, sub, *args, **kwargs)

    monkeypatch.setattr(chunk_module._VideoCoding, "payload", recording)
    out = encode_chunk(block, quality=20)
    window = (6, 3, chunk_module.ORDER_PROBE_SIDE, chunk_module.ORDER_PROBE_SIDE)
    # time order and the shortest path on the window, then the block in the order kept
    assert sorted(tried[:2]) == [(window, False), (window, True)]
    assert tried[-1][0] == block.shape
    assert tried[-1][1] == (read_header(out).date_order is not None)


def test_a_cropped_block_leaves_the_padded_dates_out_of_the_order() -> None:
    block = np.zeros((8, 3, 48, 56), np.uint16)
    block[:6] = _alternating(6)
    payload = encode_chunk(block, quality=16, nodata=0, date_order=[7, 4, 0, 6, 2, 1, 3, 5])
    header = read_header(payload)
    assert header.coded == (6, 48, 56)
    assert header.date_order.tolist() == [4, 0, 2, 1, 3, 5]
    decoded = decode_chunk(payload)
    assert (decoded[6:] == 0).all()
    assert metrics.psnr(block[:6], decoded[:6]) > 40


@pytest.mark.parametrize("profile", ["ffv1-lossless", "eocube-lossless", "hevc-lossless"])
def test_lossless_profiles_stay_bit_exact_in_any_order(profile: str) -> None:
    block = (_alternating(5) // 4).astype(np.uint16)  # 12 bits for hevc-lossless
    payload = encode_chunk(block, profile, date_order=[3, 1, 4, 0, 2])
    assert read_header(payload).date_order.tolist() == [3, 1, 4, 0, 2]
    np.testing.assert_array_equal(decode_chunk(payload), block)
    # "auto" tries no order for lossless profiles
    assert read_header(encode_chunk(block, profile)).date_order is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"date_order": "random"}, "date_order must be one of"),
        ({"date_order": [0, 1, 1, 2]}, "permutation of range"),
        ({"date_order": [0, 1, 2]}, "permutation of range"),
        ({"date_order": [0.0, 1.0, 2.0, 3.0]}, "permutation of range"),
        ({"date_order": [3, 2, 1, 0], "frames": "y"}, "needs dates as frames"),
    ],
)
def test_bad_orders_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_chunk(_alternating(4), quality=20, **kwargs)


def test_rows_as_frames_and_the_wavelet_coder_store_no_order() -> None:
    block = _alternating(6)
    assert read_header(encode_chunk(block, quality=20, frames="y")).date_order is None
    wavelet = encode_chunk(block, quality=20, wavelet="always")
    assert read_header(wavelet).wavelet
    assert read_header(wavelet).date_order is None


def _ordered_payload() -> bytes:
    payload = encode_chunk(_alternating(4), quality=20, date_order=[2, 0, 3, 1])
    assert payload[4] == chunk_module.FORMAT_VERSION
    return payload


def _order_offset(payload: bytes) -> int:
    """Where the order starts: the streams' count byte follows it."""
    header = read_header(payload)
    length = len(header.to_bytes())
    assert payload[:length] == header.to_bytes()
    return length - header.date_order.size


def test_an_order_before_version_9_is_damage() -> None:
    payload = _ordered_payload()
    np.testing.assert_array_equal(decode_chunk(as_version(payload, 9)), decode_chunk(payload))
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(as_version(payload, 8))


@pytest.mark.parametrize("order", [b"\x00\x00\x03\x01", b"\x02\x00\x04\x01"])
def test_an_order_that_is_no_permutation_is_damage(order: bytes) -> None:
    payload = _ordered_payload()
    at = _order_offset(payload)
    damaged = payload[:at] + order + payload[at + 4 :]
    with pytest.raises(CorruptChunkError, match="date order is not an order of 4 dates"):
        decode_chunk(damaged)


def test_an_order_with_rows_as_frames_is_damage() -> None:
    payload = bytearray(_ordered_payload())
    payload[5] |= 16  # TIME_IN_FRAME
    with pytest.raises(CorruptChunkError, match="DATE_ORDER and TIME_IN_FRAME"):
        decode_chunk(bytes(payload))


@settings(deadline=None)
@given(drawn=blocks(), data=st.data())
def test_any_order_keeps_every_bound_and_lossless_bit_exact(
    drawn: tuple[np.ndarray, float | None], data: st.DataObject
) -> None:
    block, nodata = drawn
    T = block.shape[0]
    order = data.draw(st.permutations(list(range(T))))
    profile = data.draw(st.sampled_from(["hevc-12bit-444", "hevc-12bit-420-luma", "ffv1-lossless"]))
    missing = missing_mask(block, nodata)
    lossy = profile != "ffv1-lossless"
    bound = None
    if lossy and (~missing).any():
        span = float(np.ptp(block.astype(np.float64)[~missing]))
        bound = data.draw(st.sampled_from([0.0, 0.01 * span, 0.1 * span]))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = encode_chunk(
                block, profile, nodata=nodata, max_abs_error=bound, date_order=order
            )
    except UnsupportedDataError:
        return  # lossless profiles refuse floats and ranges wider than their bits
    decoded = decode_chunk(payload)
    np.testing.assert_array_equal(missing_mask(decoded, nodata), missing)
    if not lossy:
        np.testing.assert_array_equal(decoded, block)
    elif bound is not None:
        err = np.abs(decoded.astype(np.float64) - block.astype(np.float64))[~missing]
        assert err.max() <= bound
