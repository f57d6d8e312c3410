"""The residual layer's coding: exact round trips, the choice of method, damaged input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numcodecs import Zstd

from eocube import decode_chunk, encode_chunk, metrics, residual
from eocube.chunk import read_header
from eocube.errors import CorruptChunkError
from eocube.residual import Residual

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
EXCEPTION_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")


def make(
    q: np.ndarray, step: np.ndarray | None = None, index=(), values=None, dtype="float32"
) -> Residual:
    q = np.asarray(q, dtype=np.int64)
    B = q.shape[1]
    return Residual(
        step=np.linspace(0.5, 2.0, B) if step is None else np.asarray(step, np.float64),
        q=q,
        exception_index=np.asarray(index, dtype=np.int64),
        exception_value=np.zeros(len(index), dtype) if values is None else np.asarray(values),
    )


def assert_round_trip(res: Residual, dtype="float32") -> bytes:
    """Encode, decode and compare bit for bit; returns the layer."""
    data = residual.to_bytes(res)
    assert residual.to_bytes(res) == data  # deterministic
    back = residual.from_bytes(data, res.q.shape, np.dtype(dtype))
    assert back.q.dtype == np.int64
    assert back.q.shape == res.q.shape
    np.testing.assert_array_equal(back.q, res.q)
    assert back.step.dtype == np.float64
    assert back.step.tobytes() == np.asarray(res.step, np.float64).tobytes()
    np.testing.assert_array_equal(back.exception_index, res.exception_index)
    assert back.exception_value.dtype == np.dtype(dtype)
    assert back.exception_value.tobytes() == np.asarray(res.exception_value).tobytes()
    return data


def laplacian(shape: tuple[int, ...], scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.rint(rng.laplace(0.0, scale, shape)).astype(np.int64)


# --- exact round trips ------------------------------------------------------------------


def _adversarial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    sparse = np.zeros((5, 3, 17, 19), np.int64)
    hit = rng.random(sparse.shape) < 0.01
    sparse[hit] = rng.integers(-40, 41, hit.sum())
    extremes = np.array([I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 0, 1, -1, 15, -16])
    return {
        "zeros": np.zeros((3, 2, 8, 9), np.int64),
        "constant": np.full((4, 1, 8, 8), -3, np.int64),
        "huge": rng.choice([-(2**62), 2**62], size=(2, 2, 5, 6)),
        "int64 extremes": rng.choice(extremes, size=(3, 2, 4, 5)),
        "random int64": rng.integers(I64_MIN, I64_MAX, size=(2, 3, 4, 5), endpoint=True),
        "single zero": np.zeros((1, 1, 1, 1), np.int64),
        "single min": np.full((1, 1, 1, 1), I64_MIN),
        "single max": np.full((1, 1, 1, 1), I64_MAX),
        "sparse": sparse,
        "laplacian": laplacian((6, 4, 16, 16), 2.0),
        "row": laplacian((1, 1, 1, 300), 1.0),
        "column": laplacian((1, 1, 300, 1), 1.0),
        "time series": laplacian((300, 1, 1, 1), 1.0),
        "bands": laplacian((1, 300, 1, 1), 1.0),
        "1-sized mix": laplacian((2, 1, 3, 1), 5.0),
        "every escape length": np.array(
            [s * (2**k + j) for k in range(63) for j in (0, 1) for s in (1, -1)] + [0] * 4
        ).reshape(2, 2, 4, 16),
    }


@pytest.mark.parametrize("name", list(_adversarial()))
def test_round_trip_is_exact(name: str) -> None:
    assert_round_trip(make(_adversarial()[name]))


@pytest.mark.parametrize("dtype", EXCEPTION_DTYPES)
def test_exceptions_round_trip_bit_for_bit(dtype: str) -> None:
    rng = np.random.default_rng(3)
    q = laplacian((4, 2, 10, 12), 1.0)
    index = np.sort(rng.choice(q.size, 50, replace=False))
    size = np.dtype(dtype).itemsize
    values = rng.integers(0, 256, 50 * size, dtype=np.uint8).view(dtype)  # any bit pattern
    if np.dtype(dtype).kind == "f":
        values[:4] = [np.nan, -0.0, np.inf, -np.inf]
    assert_round_trip(make(q, index=index, values=values, dtype=dtype), dtype)


def test_unsorted_and_repeated_exception_indices_round_trip() -> None:
    q = laplacian((2, 1, 6, 7), 1.0)
    index = [83, 0, 5, 5, 83, 1]
    values = np.arange(6, dtype=np.float64)
    assert_round_trip(make(q, index=index, values=values, dtype="float64"), "float64")


def test_any_integer_q_and_steps_are_accepted() -> None:
    # narrower and non-contiguous q encode as their int64 values
    q = laplacian((3, 2, 9, 11), 3.0)
    res = make(q)
    view = Residual(
        res.step, q.astype(np.int16)[:, :, :, ::-1], res.exception_index, res.exception_value
    )
    flipped = make(np.ascontiguousarray(q[:, :, :, ::-1]))
    assert residual.to_bytes(view) == residual.to_bytes(flipped)
    with pytest.raises(ValueError, match="one step per band"):
        residual.to_bytes(make(q, step=[1.0, 2.0, 3.0]))


q_arrays = hnp.arrays(
    np.int64,
    hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6),
    elements=st.one_of(st.integers(-3, 3), st.integers(-300, 300), st.integers(I64_MIN, I64_MAX)),
)


@given(
    q=q_arrays,
    dtype=st.sampled_from(EXCEPTION_DTYPES),
    data=st.data(),
)
def test_round_trip_property(q: np.ndarray, dtype: str, data: st.DataObject) -> None:
    n_exc = data.draw(st.integers(0, min(q.size, 8)))
    index = data.draw(
        st.lists(st.integers(0, q.size - 1), min_size=n_exc, max_size=n_exc, unique=True)
    )
    raw = data.draw(st.binary(min_size=n_exc * np.dtype(dtype).itemsize, max_size=n_exc * 8))
    values = np.frombuffer(raw[: n_exc * np.dtype(dtype).itemsize], dtype)
    steps = data.draw(
        hnp.arrays(np.float64, q.shape[1], elements=st.floats(0, 1e6, allow_subnormal=True))
    )
    assert_round_trip(make(q, step=steps, index=sorted(index), values=values, dtype=dtype), dtype)


def test_real_residual_restores_within_the_bound(load_cube) -> None:
    cube = load_cube("s2_l2a_worldcereal_72x4x64x64")
    original = np.ascontiguousarray(cube.data[:8, :, :32, :32])
    rng = np.random.default_rng(0)
    # a stand-in for a video decode: smooth, biased errors of a few hundred units
    err = rng.normal(0, 150, original.shape).cumsum(axis=3) / 4
    decoded = np.clip(original + err, 0, 65535).astype(original.dtype)
    valid = metrics.valid_mask(original, cube.nodata)
    bounds = np.array([20.0, 50.0, 5.0, 100.0])
    res = residual.compute(original, decoded, valid, bounds)
    assert res is not None
    data = assert_round_trip(res, original.dtype)
    assert data[0] == 1
    back = residual.restore(decoded, residual.from_bytes(data, original.shape, original.dtype))
    for b in range(4):
        ok = valid[:, b]
        assert np.abs(back[:, b][ok].astype(float) - original[:, b][ok]).max() <= bounds[b]


# --- which method, and how many bytes ---------------------------------------------------


@pytest.mark.parametrize(("name", "rel"), [("s2_l2a_worldcereal_72x4x64x64", 1e-2)])
def test_real_video_residual_is_much_smaller_than_zstd(load_cube, name: str, rel: float) -> None:
    import eocube

    block = np.ascontiguousarray(load_cube(name).data[:16])
    bounds = rel * (block.max(axis=(0, 2, 3)) - block.min(axis=(0, 2, 3))).astype(float)
    decoded = eocube.decode_chunk(eocube.encode_chunk(block, quality=13))
    valid = np.ones(block.shape, bool)
    res = residual.compute(block, decoded, valid, bounds)
    assert res is not None
    data = assert_round_trip(res, block.dtype)
    assert len(data) < 0.8 * len(_zstd19_layer(res))


def _zstd19_layer(res: Residual) -> bytes:
    """The first layout, as the zstd-only writer made it (level 19), with its method byte."""
    header, body = residual._zstd_body(res, np.asarray(res.q, np.int64))
    return bytes([0]) + header + bytes(Zstd(level=19).encode(body))


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0, 10.0])
def test_range_coder_beats_zstd_and_nears_the_entropy(scale: float) -> None:
    q = laplacian((16, 2, 64, 64), scale, seed=1)
    res = make(q)
    data = assert_round_trip(res)
    assert data[0] == 1
    _, counts = np.unique(q, return_counts=True)
    p = counts / q.size
    entropy_bytes = -(p * np.log2(p)).sum() * q.size / 8
    # within 2% of the order-0 entropy on i.i.d. values, where zstd is near it too
    assert len(data) <= 1.02 * entropy_bytes + 64
    assert len(data) < len(_zstd19_layer(res))


def test_context_modelling_beats_order0_entropy_on_correlated_residuals() -> None:
    # magnitudes that vary smoothly in space and time, as a video's misses do
    rng = np.random.default_rng(2)
    T, Y, X = 16, 64, 64
    scale = 0.05 + 2 * np.abs(np.sin(np.arange(Y)[:, None] / 9) * np.cos(np.arange(X) / 13))
    q = np.rint(rng.laplace(0, 1, (T, 1, Y, X)) * scale).astype(np.int64)
    data = assert_round_trip(make(q))
    _, counts = np.unique(q, return_counts=True)
    p = counts / q.size
    assert len(data) < 0.93 * -(p * np.log2(p)).sum() * q.size / 8


def test_zstd_is_written_where_it_wins_and_read_back() -> None:
    # a long exact repeat: zstd needs a few bytes, the adaptive coder a few bits per value
    res = make(np.full((32, 2, 64, 64), 1000, np.int64))
    data = assert_round_trip(res)
    assert data[0] == 0
    assert len(data) < 200


def test_first_layout_stays_readable() -> None:
    rng = np.random.default_rng(4)
    res = make(laplacian((3, 2, 8, 8), 2.0), index=[3, 70], values=rng.random(2).astype("f4"))
    back = residual.from_bytes(_zstd19_layer(res), res.q.shape, np.dtype("float32"))
    np.testing.assert_array_equal(back.q, res.q)
    np.testing.assert_array_equal(back.step, res.step)
    np.testing.assert_array_equal(back.exception_index, res.exception_index)
    np.testing.assert_array_equal(back.exception_value, res.exception_value)


# --- damaged input ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_layer() -> tuple[Residual, bytes]:
    rng = np.random.default_rng(5)
    q = laplacian((3, 2, 6, 7), 0.8, seed=5)
    q[0, 0, 0, 0] = 2**40  # an escape
    index = np.sort(rng.choice(q.size, 6, replace=False))
    res = make(q, index=index, values=rng.normal(280, 20, 6).astype("f4"))
    data = residual.to_bytes(res)
    assert data[0] == 1
    return res, data


def test_every_truncation_or_extension_is_corrupt(small_layer: tuple[Residual, bytes]) -> None:
    res, data = small_layer
    for n in range(len(data)):
        with pytest.raises(CorruptChunkError):
            residual.from_bytes(data[:n], res.q.shape, np.dtype("float32"))
    for tail in (b"\x00", b"\xff", bytes(17)):
        with pytest.raises(CorruptChunkError):
            residual.from_bytes(data + tail, res.q.shape, np.dtype("float32"))


def test_every_bit_flip_is_corrupt(small_layer: tuple[Residual, bytes]) -> None:
    # the stream's end check (exact length, decoder code 0) and the steps seeding the
    # models catch every single-bit alteration of this layer
    res, data = small_layer
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptChunkError):
                residual.from_bytes(bytes(damaged), res.q.shape, np.dtype("float32"))


def test_wrong_shape_is_corrupt(small_layer: tuple[Residual, bytes]) -> None:
    res, data = small_layer
    T, B, Y, X = res.q.shape
    for shape in [(T, B, Y, X + 1), (T - 1, B, Y, X), (T, B, 1, 1), (T * 2, B, Y, X)]:
        with pytest.raises(CorruptChunkError):
            residual.from_bytes(data, shape, np.dtype("float32"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",
        b"\xff" * 40,
        b"\x01",
        b"\x01\x80",  # varint cut short
        b"\x01" + b"\xff" * 12,  # overlong varint
        b"\x01\xff\xff\x03" + bytes(40),  # more exceptions than values
        b"\x01\x00\x01\x00\x00\x00\x00",  # stream not starting with byte 0
        b"\x01\x00\x00\xff\xff\xff\xff",  # initial code beyond the range
        b"\x00" + bytes(16) + b"not zstd",
        b"\x00" + np.array([3, 0], "<u8").tobytes() + Zstd(level=1).encode(bytes(8 * 2 + 3 * 48)),
        b"\x00" + np.array([1, 2**60], "<u8").tobytes() + Zstd(level=1).encode(bytes(64)),
    ],
)
def test_malformed_layers_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptChunkError):
        residual.from_bytes(data, (3, 2, 4, 6), np.dtype("float32"))


def test_bad_steps_are_corrupt() -> None:
    for step in ([np.nan], [-1.0], [np.inf]):
        data = residual.to_bytes(make(np.ones((2, 1, 3, 3), np.int64), step=step))
        with pytest.raises(CorruptChunkError, match="step"):
            residual.from_bytes(data, (2, 1, 3, 3), np.dtype("float32"))


def test_damaged_large_layer_fails_fast() -> None:
    # a truncated stream of a large block is refused after reading past its end, not
    # after decoding every value from zeros
    shape = (16, 2, 128, 128)
    q = laplacian(shape, 1.0, seed=6)
    data = residual.to_bytes(make(q))
    with pytest.raises(CorruptChunkError, match="truncated"):
        residual.from_bytes(data[: len(data) // 100], shape, np.dtype("float32"))


@given(data=st.binary(max_size=300), shape=st.tuples(*[st.integers(1, 5)] * 4))
def test_random_bytes_never_crash(data: bytes, shape: tuple[int, int, int, int]) -> None:
    for layer in (data, b"\x01" + data, b"\x01\x00\x00" + data):
        try:
            res = residual.from_bytes(layer, shape, np.dtype("float32"))
        except CorruptChunkError:
            continue
        assert res.q.shape == shape
        assert res.exception_index.size == 0 or res.exception_index.max() < math.prod(shape)


def test_values_beyond_int64_steps_are_exceptions_without_a_warning() -> None:
    # a range of 2e30 under a bound of 1e-3: 1e33 steps, more than int64 holds
    rng = np.random.default_rng(1)
    block = rng.uniform(-1e30, 1e30, (3, 2, 9, 11)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_chunk(encode_chunk(block, max_abs_error=1e-3))
    np.testing.assert_array_equal(decoded, block)  # every value an exception, exact


# --- valid values never restored onto nodata -------------------------------------------


def test_a_correction_clamped_onto_nodata_is_kept_exactly() -> None:
    # uint8, nodata 0: the one step within the bound of 1 lies below 0 and is clamped to
    # 0, which would read as missing
    original = np.array([1, 2, 200, 0], np.uint8).reshape(1, 1, 1, 4)
    decoded = np.array([4, 2, 200, 0], np.uint8).reshape(1, 1, 1, 4)
    valid = metrics.valid_mask(original, 0)
    bounds = np.array([2.0])
    assert (
        residual.apply(decoded, np.array([-1, 0, 0, 0]).reshape(1, 1, 1, 4), np.array([5.0]))[
            0, 0, 0, 0
        ]
        == 0
    )  # the clamp this guards against
    layer = residual.compute(original, decoded, valid, bounds, nodata=0)
    assert layer is not None
    assert layer.exception_index.tolist() == [0]
    restored = residual.restore(decoded, layer)
    assert restored.ravel().tolist() == [1, 2, 200, 0]
    # without nodata the clamped value stands: it is within the bound
    plain = residual.compute(original, decoded, valid, bounds)
    assert plain is not None
    assert plain.exception_index.size == 0


def test_without_a_bound_only_values_decoded_to_nodata_are_kept() -> None:
    original = np.array([[1999.0, 2000.0, 2003.0, 1500.0]], np.float32).reshape(1, 1, 1, 4)
    decoded = np.array([[2000.0, 2000.0, 2001.0, 1502.0]], np.float32).reshape(1, 1, 1, 4)
    valid = metrics.valid_mask(original, 2000.0)
    layer = residual.compute(original, decoded, valid, None, nodata=2000.0)
    assert layer is not None
    assert not layer.q.any()
    assert layer.step.tolist() == [0.0]
    assert layer.exception_index.tolist() == [0]  # 2000 at a valid value; nodata itself stays
    back = residual.from_bytes(residual.to_bytes(layer), original.shape, original.dtype)
    assert residual.restore(decoded, back).ravel().tolist() == [1999.0, 2000.0, 2001.0, 1502.0]
    assert residual.compute(original, decoded, valid, None) is None
    assert residual.compute(original, decoded.copy() + 0.5, valid, None, nodata=2000.0) is None


def _nodata_inside(dtype: str, nodata: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    T, B, Y, X = 6, 3, 40, 48
    yy, xx = np.meshgrid(np.arange(Y), np.arange(X), indexing="ij")
    field = np.stack(
        [
            np.stack(
                [
                    np.sin(yy / 6 + b) * np.cos(xx / 9) + rng.normal(0, 0.02, (Y, X))
                    for b in range(B)
                ]
            )
            for _ in range(T)
        ]
    )
    block = (nodata + 1500 * field).astype(dtype)
    block[block == nodata] = nodata + 1
    block[rng.random(block.shape) < 0.05] = nodata
    return block


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
@pytest.mark.parametrize("bound", [None, 40.0])
def test_valid_values_never_decode_to_a_nodata_inside_their_range(
    dtype: str, bound: float | None
) -> None:
    nodata = 2000.0
    block = _nodata_inside(dtype, nodata)
    missing = block == nodata
    for quality in (12, 30):
        payload = encode_chunk(block, quality=quality, nodata=nodata, max_abs_error=bound)
        out = decode_chunk(payload)
        np.testing.assert_array_equal(out == nodata, missing)
        if bound is not None:
            err = np.abs(out.astype(np.float64) - block.astype(np.float64))[~missing]
            assert err.max() <= bound


@pytest.mark.parametrize("quality", [16, -30])
def test_wavelet_coded_values_never_decode_to_a_nodata_inside_their_range(quality: int) -> None:
    block = _nodata_inside("int32", 2000.0)
    missing = block == 2000
    payload = encode_chunk(
        block, "hevc-12bit-444-wavelet", quality=quality, nodata=2000, wavelet="always"
    )
    assert read_header(payload).wavelet
    np.testing.assert_array_equal(decode_chunk(payload) == 2000, missing)


def test_dark_valid_values_of_a_nodata_0_cube_stay_valid_under_a_bound(load_cube) -> None:
    # Landsat 7 RGB: nodata 0 and valid values from 1. Over a coarse video a correction
    # below 0 was clamped to 0: 132 valid pixels of this window read as missing (265 to
    # 1590 of the scene in stores under 1 % to 10 % of the range)
    block = load_cube("landsat7_rgb_byte").data[:, :, 100:228, 550:750]
    missing = block == 0
    assert missing.any()
    assert block[~missing].min() == 1
    out = decode_chunk(encode_chunk(block, quality=30, nodata=0, max_abs_error=25.4))
    np.testing.assert_array_equal(out == 0, missing)
    assert np.abs(out.astype(int) - block.astype(int))[~missing].max() <= 25


def test_a_store_keeps_every_valid_value_valid(tmp_path) -> None:
    import xarray as xr

    import eocube

    block = _nodata_inside("uint16", 2000.0)
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), block, {"nodata": 2000})})
    eocube.to_eocube(ds, tmp_path / "c.eocube", crf=25)
    back = xr.open_dataset(tmp_path / "c.eocube", engine="eocube")["data"].values
    np.testing.assert_array_equal(back == 2000, block == 2000)
