"""eocube's own lossless frame coder (eocube.lossless, profile eocube-lossless)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cubes import open_cube
from legacy import as_version  # tests/legacy.py

import eocube
from eocube import CorruptChunkError, chunk, lossless
from eocube.errors import CodecError
from eocube.profiles import get_profile
from eocube.video import EncodedStream, decode_frames, encode_frames

PROFILE = "eocube-lossless"


def _roundtrip(frames: np.ndarray) -> np.ndarray:
    packet = lossless.encode(frames)
    return lossless.decode(packet, *frames.shape)


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (1, 1, 7), (1, 7, 1), (3, 1, 1), (1, 5, 9), (4, 3, 2), (6, 17, 13), (9, 8, 8)],
)
def test_random_frames_round_trip(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for top in (2, 256, 65536):
        frames = rng.integers(0, top, shape, dtype=np.uint16)
        assert np.array_equal(_roundtrip(frames), frames)


@pytest.mark.parametrize("value", [0, 1, 32768, 65535])
def test_constant_frames_round_trip_and_cost_little(value: int) -> None:
    frames = np.full((8, 32, 32), value, np.uint16)
    packet = lossless.encode(frames)
    assert np.array_equal(lossless.decode(packet, 8, 32, 32), frames)
    assert len(packet) < 200


def test_full_range_extremes_round_trip() -> None:
    rng = np.random.default_rng(1)
    frames = rng.choice(np.array([0, 65535], np.uint16), size=(5, 19, 23))
    assert np.array_equal(_roundtrip(frames), frames)
    frames[:, ::2] = 0
    frames[:, 1::2] = 65535
    assert np.array_equal(_roundtrip(frames), frames)


def test_smooth_series_use_references() -> None:
    y, x = np.mgrid[0:40, 0:40]
    base = (1000 + 30 * y + 20 * x).astype(np.int64)
    rng = np.random.default_rng(2)
    frames = np.stack([base + 3 * t + rng.integers(0, 3, base.shape) for t in range(6)])
    frames = frames.astype(np.uint16)
    dist_a, _ = lossless.choose_references(frames)
    assert dist_a[0] == 0
    assert np.array_equal(_roundtrip(frames), frames)


def test_every_frame_takes_two_references_when_it_can() -> None:
    # unrelated frames: each difference predicts worse than the frame alone, yet the
    # weighted predictor only weighs a reference where it predicts well
    frames = np.random.default_rng(3).integers(0, 4000, (5, 12, 12)).astype(np.uint16)
    dist_a, dist_b = lossless.choose_references(frames)
    assert np.array_equal(dist_a > 0, [False, True, True, True, True])
    assert np.array_equal(dist_b > 0, [False, False, True, True, True])
    assert (np.maximum(dist_a, dist_b) <= np.arange(5)).all()
    assert set(dist_a[2:]) | set(dist_b[2:]) <= {1, 2}
    assert np.array_equal(_roundtrip(frames), frames)


def _predicted_errors(img: np.ndarray, ref: np.ndarray, gain: bool) -> int:
    res = np.empty(img.size, np.int32)
    ctx = np.empty(img.size, np.int16)
    lossless._predict_frame(img, ref, img, True, False, gain, 65535, res, ctx)
    return int(np.abs(res.astype(np.int64)).sum())


def test_the_gain_sub_predictor_follows_a_scaled_band() -> None:
    # a band that is its reference times a factor (bands of one surface differ so more
    # than by an offset): version 3's gain sub-predictor predicts it, the offset ones not
    rng = np.random.default_rng(4)
    ref = (np.cumsum(rng.integers(-300, 301, (48, 48)), axis=1) + 20000).astype(np.int64)
    img = (ref * 0.6 + rng.integers(-2, 3, ref.shape)).astype(np.uint16)
    ref = ref.astype(np.uint16)
    with_gain = _predicted_errors(img, ref, True)
    assert with_gain < 0.5 * _predicted_errors(img, ref, False)
    frames = np.stack([ref, img])
    assert np.array_equal(_roundtrip(frames), frames)


def test_version_2_packets_are_read_without_the_gain_sub_predictor() -> None:
    # tests/data/payloads/v6-pred-lossless.eocb holds a version-2 packet (test_compatibility
    # checks its values); here: a version-2 packet decodes with two sub-predictors per
    # reference, so relabelling a version-3 packet as version 2 breaks it
    frames = _real_frames("s2_l2a_openeo_gfmap_19x4x52x46")[:8]
    packet = lossless.encode(frames)
    assert packet[0] == 3
    assert lossless.READABLE_VERSIONS == (2, 3)
    with contextlib.suppress(CorruptChunkError):
        assert not np.array_equal(lossless.decode(b"\x02" + packet[1:], *frames.shape), frames)


def test_sparse_values_use_a_table() -> None:
    # an integer band stretched onto 16-bit codes: few values over a wide span
    rng = np.random.default_rng(5)
    base = np.cumsum(rng.integers(-2, 3, (6, 30, 40)), axis=2) + 300
    frames = np.round((base - base.min()) * 159.3).astype(np.uint16)
    tables, which = lossless.value_tables(frames)
    assert len(tables) == 1
    assert (which == 0).all()
    packet = lossless.encode(frames)
    assert np.array_equal(lossless.decode(packet, *frames.shape), frames)
    # cheaper than the same frames unstretched would be with 8 more bits per residual
    assert len(packet) < frames.size
    for bad in _damaged(packet):
        with pytest.raises(CorruptChunkError):
            lossless.decode(bad, *frames.shape)


def _value_tables_by_sets(frames: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    # value_tables' rule written with numpy's set operations (its first implementation)
    F, H, W = frames.shape
    groups: list[tuple[list[int], np.ndarray]] = []
    if not any(3 * np.unique(f).size <= 2 * (int(f.max()) - int(f.min()) + 1) for f in frames):
        return [], np.full(F, -1, np.int64)  # no frame is sparse: no table is looked for
    for f in range(F):
        u = np.unique(frames[f])
        if groups and 2 * np.intersect1d(groups[-1][1], u).size >= u.size:
            groups[-1] = (groups[-1][0] + [f], np.union1d(groups[-1][1], u))
        else:
            groups.append(([f], u))
    tables, which = [], np.full(F, -1, np.int64)
    for members, values in groups:
        span = int(values[-1]) - int(values[0]) + 1
        if 3 * values.size <= 2 * span and 8 * values.size <= H * W * len(members):
            which[members] = len(tables)
            tables.append(values)
    return tables, which


@pytest.mark.parametrize("seed", range(16))
def test_value_tables_follow_their_rule(seed: int) -> None:
    # frames whose value sets drift, jump and repeat: groups start and end where the
    # rule says, on whichever side of the sparseness limits
    rng = np.random.default_rng(seed)
    F, H, W = int(rng.integers(1, 12)), int(rng.integers(1, 20)), int(rng.integers(1, 20))
    step = int(rng.choice([1, 2, 3, 97]))
    offsets = np.cumsum(rng.choice([0, 0, 5, 400], F))
    frames = offsets[:, None, None] + step * rng.integers(0, rng.integers(1, 60), (F, H, W))
    frames = np.minimum(frames, 65535).astype(np.uint16)
    tables, which = lossless.value_tables(frames)
    expected, expected_which = _value_tables_by_sets(frames)
    assert np.array_equal(which, expected_which)
    assert len(tables) == len(expected)
    for got, want in zip(tables, expected, strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(lossless.decode(lossless.encode(frames), *frames.shape), frames)


@pytest.mark.parametrize(("threads", "ahead"), [(2, None), (3, None), (8, None), (3, 1)])
def test_the_packet_does_not_depend_on_the_threads(
    threads: int, ahead: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ahead is not None:  # one frame group predicted ahead at a time, as for huge frames
        monkeypatch.setattr(lossless, "_PREDICT_AHEAD", ahead)
    # enough pixels for the encoder to predict frames ahead on threads; frames with and
    # without references, a value table and pixel blocks
    rng = np.random.default_rng(11)
    base = np.cumsum(rng.integers(-40, 41, (96, 96)), axis=1) + 8000
    noise = rng.integers(-2, 3, (12, 96, 96)) + np.arange(12)[:, None, None] * 5
    frames = (base + noise).astype(np.uint16)
    frames[3:6] = rng.integers(0, 300, (3, 96, 96)) * 97  # sparse values: a value table
    coarse = rng.integers(0, 4000, (2, 16, 16))
    frames[8:10] = coarse.repeat(6, axis=1).repeat(6, axis=2)  # pixel blocks
    assert lossless.block_structure(frames[8])[:2] == (6, 6)
    assert (lossless.value_tables(frames)[1][3:6] >= 0).all()
    assert lossless.choose_references(frames)[0].any()
    serial = lossless.encode(frames, threads=1)
    assert lossless.encode(frames, threads=threads) == serial
    assert np.array_equal(lossless.decode(serial, *frames.shape), frames)


def test_a_failed_prediction_stops_the_encode_and_its_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    calls = 0
    threads = set()
    predict = lossless._predict_frame

    def failing(*args: object) -> None:
        nonlocal calls
        calls += 1
        threads.add(threading.current_thread().name)
        if calls == 3:
            raise MemoryError("no room for the residuals")
        predict(*args)

    monkeypatch.setattr(lossless, "_predict_frame", failing)
    # two groups of 8 frames, predicted on threads
    frames = np.random.default_rng(12).integers(0, 4000, (16, 96, 96)).astype(np.uint16)
    with pytest.raises(MemoryError, match="no room"):
        lossless.encode(frames, threads=3)
    assert all(name.startswith("eocube-predict") for name in threads)
    assert not any(t.name.startswith("eocube-predict") for t in threading.enumerate())


def _mixed_frames() -> np.ndarray:
    # frames with references, a value table and pixel blocks, enough pixels for threads
    rng = np.random.default_rng(11)
    base = np.cumsum(rng.integers(-40, 41, (96, 96)), axis=1) + 8000
    noise = rng.integers(-2, 3, (16, 96, 96)) + np.arange(16)[:, None, None] * 5
    frames = (base + noise).astype(np.uint16)
    frames[3:6] = rng.integers(0, 300, (3, 96, 96)) * 97
    frames[8:10] = rng.integers(0, 4000, (2, 16, 16)).repeat(6, axis=1).repeat(6, axis=2)
    return frames


@pytest.mark.parametrize("threads", [1, 3])
def test_the_encode_that_verifies_makes_the_same_packet(threads: int) -> None:
    frames = _mixed_frames()
    plain = lossless.encode(frames, threads=threads)
    assert lossless.encode(frames, threads=threads, verify=True) == plain
    tiny = np.arange(6, dtype=np.uint16).reshape(1, 2, 3)  # fewer bytes than a flush
    assert lossless.encode(tiny, verify=True) == lossless.encode(tiny)


@pytest.mark.parametrize(
    ("change", "error"),
    [(1, "frame 6 differs"), (60000, "frame 6: eocube-pred stream decodes to a value out of")],
)
def test_the_verifying_encode_catches_a_coder_that_is_not_lossless(
    change: int, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    code = lossless._code_residuals
    coded = 0

    def off_by_one(res: np.ndarray, *args: object) -> np.ndarray:
        nonlocal coded
        coded += 1
        if coded == 7:  # the 7th frame's last residual, off
            res = res.copy()
            res[-1] += change
        return code(res, *args)

    monkeypatch.setattr(lossless, "_code_residuals", off_by_one)
    frames = _mixed_frames()
    packet = lossless.encode(frames)  # not verified: the damage goes through
    coded = 0
    with contextlib.suppress(CorruptChunkError):  # or a packet that does not decode
        assert not np.array_equal(lossless.decode(packet, *frames.shape), frames)
    with pytest.raises(CodecError, match=f"does not decode to its input \\({error}"):
        lossless.encode(frames, verify=True)
    assert not any(t.name == "eocube-verify" for t in threading.enumerate())


def test_a_failed_encode_stops_the_verifying_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    def failing(*args: object) -> None:
        raise MemoryError("no room for the residuals")

    monkeypatch.setattr(lossless, "_code_residuals", failing)
    with pytest.raises(MemoryError):
        lossless.encode(_mixed_frames(), verify=True)
    assert not any(t.name == "eocube-verify" for t in threading.enumerate())


def test_replicated_pixels_use_blocks() -> None:
    rng = np.random.default_rng(6)
    coarse = rng.integers(0, 3000, (5, 9, 8), dtype=np.uint16)
    frames = np.ascontiguousarray(coarse.repeat(6, axis=1).repeat(6, axis=2)[:, 2:52, 3:45])
    assert lossless.block_structure(frames[0]) == (6, 6, 4, 3)
    exact = lossless.encode(frames)
    assert np.array_equal(lossless.decode(exact, *frames.shape), frames)
    frames[:, 10, 11] += 7  # exceptions to the blocks
    frames[2, 30:33, 20:22] = 5
    assert lossless.block_structure(frames[2]) == (6, 6, 4, 3)
    packet = lossless.encode(frames)
    assert np.array_equal(lossless.decode(packet, *frames.shape), frames)
    assert len(packet) < len(exact) + 60
    for bad in _damaged(packet):
        with pytest.raises(CorruptChunkError):
            lossless.decode(bad, *frames.shape)
    plain = lossless.encode(coarse.repeat(2, axis=1))  # rows only
    assert np.array_equal(lossless.decode(plain, 5, 18, 8), coarse.repeat(2, axis=1))


def test_unknown_versions_are_rejected() -> None:
    frames = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    packet = lossless.encode(frames)
    assert packet[0] == lossless.VERSION
    for version in (0, 1, max(lossless.READABLE_VERSIONS) + 1):
        with pytest.raises(CorruptChunkError, match="unknown version"):
            lossless.decode(bytes([version]) + packet[1:], 2, 3, 4)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no empty axis"):
        lossless.encode(np.zeros((0, 3, 3), np.uint16))
    with pytest.raises(ValueError, match=r"within 0 \.\. 65535"):
        lossless.encode(np.full((1, 2, 2), 70000, np.int64))
    assert np.array_equal(
        _roundtrip(np.arange(12, dtype=np.int32).reshape(1, 3, 4)).ravel(), np.arange(12)
    )


def _real_frames(name: str) -> np.ndarray:
    values = open_cube(name)["data"].values.astype(np.int64)
    codes = values - values.min(axis=(0, 2, 3), keepdims=True)
    T, B, Y, X = codes.shape
    return np.ascontiguousarray(codes.transpose(1, 0, 2, 3).reshape(B * T, Y, X).astype(np.uint16))


@pytest.mark.parametrize("name", ["s2_l2a_openeo_gfmap_19x4x52x46", "l8_ny18_014031"])
def test_real_cubes_round_trip(name: str) -> None:
    frames = _real_frames(name)
    assert np.array_equal(_roundtrip(frames), frames)


def _damaged(packet: bytes) -> list[bytes]:
    flipped = []
    for i in (0, 3, len(packet) // 2, len(packet) - 1):
        b = bytearray(packet)
        b[i] ^= 0x10
        flipped.append(bytes(b))
    return [packet[:-1], packet[: len(packet) // 2], packet[:1], b"", packet + b"\x00", *flipped]


def test_damaged_packets_raise() -> None:
    frames = _real_frames("s2_l2a_openeo_gfmap_19x4x52x46")[:6]
    packet = lossless.encode(frames)
    for bad in _damaged(packet):
        with pytest.raises(CorruptChunkError):
            lossless.decode(bad, *frames.shape)


def test_damaged_streams_raise_through_video() -> None:
    frames = np.random.default_rng(3).integers(0, 4000, (4, 9, 11), dtype=np.uint16)
    stream = encode_frames(
        ([f] for f in frames),
        encoder=lossless.CODER,
        decoder=lossless.CODER,
        pix_fmt=lossless.PIX_FMT,
        height=9,
        width=11,
        options={},
    )
    decoded = np.array([p[0].copy() for p in decode_frames(stream)])
    assert np.array_equal(decoded, frames)
    changes = [
        {"packets": ()},
        {"packets": stream.packets * 2},
        {"frames": 5},
        {"pix_fmt": "gray12le"},
        {"extradata": b"x"},
    ]
    for bad in _damaged(stream.packets[0]):
        changes.append({"packets": (bad,)})
    for change in changes:
        fields = {**stream.__dict__, **change}
        with pytest.raises(CorruptChunkError):
            list(decode_frames(EncodedStream(**fields)))


def test_profile_is_valid_and_lossless() -> None:
    prof = get_profile(PROFILE)
    assert prof.lossless
    assert prof.bits == 16
    assert prof.layout == "luma"
    assert prof.encoder == prof.decoder == lossless.CODER


def test_chunk_round_trip_and_damage() -> None:
    values = open_cube("s2_l2a_openeo_gfmap_12x5x66x64")["data"].values[:3]
    payload = chunk.encode_chunk(values, PROFILE)
    assert np.array_equal(chunk.decode_chunk(payload), values)
    assert chunk.read_header(payload).profile == PROFILE
    # a reader of format 6 or earlier would take the version-3 packet for damage
    assert chunk.PRED_GAIN_VERSION == 7
    assert np.array_equal(chunk.decode_chunk(as_version(payload, 7)), values)
    with pytest.raises(CorruptChunkError, match="packet of version 3 in a version-6 payload"):
        chunk.decode_chunk(as_version(payload, 6))
    for bad in (payload[:-1], payload + b"\x00", payload[: len(payload) - 100]):
        with pytest.raises(CorruptChunkError):
            chunk.decode_chunk(bad)


def test_chunk_with_nodata_int16_and_odd_shapes() -> None:
    rng = np.random.default_rng(4)
    block = rng.integers(-32768, 32767, (3, 2, 5, 1), dtype=np.int16)
    block[0, 0, 0, 0] = -32768
    block[1, 1, 4, 0] = 32767
    assert np.array_equal(chunk.decode_chunk(chunk.encode_chunk(block, PROFILE)), block)
    block = rng.integers(0, 100, (2, 3, 4, 5), dtype=np.uint16)
    block[0, 1, 2, 3] = 9999
    payload = chunk.encode_chunk(block, PROFILE, nodata=9999)
    assert np.array_equal(chunk.decode_chunk(payload), block)


def test_store_round_trip_is_bit_exact(tmp_path: Path) -> None:
    ds = open_cube("s2_l2a_worldcereal_12x9x100x100")
    path = tmp_path / "cube.eocube"
    eocube.to_eocube(ds, path, lossless=True, profile=PROFILE)
    with xr.open_dataset(path, engine="eocube") as reopened:
        xr.testing.assert_identical(reopened.load(), ds)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.uint16,
        st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
        elements=st.one_of(st.integers(0, 65535), st.sampled_from([0, 1, 255, 65535])),
    )
)
def test_property_round_trip(frames: np.ndarray) -> None:
    assert np.array_equal(_roundtrip(frames), frames)
