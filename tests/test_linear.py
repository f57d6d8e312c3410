"""The codec eocube.linear: regular axes as two numbers, nearly regular ones as residuals."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import Buffer, NDBuffer, default_buffer_prototype
from zarr.core.dtype import parse_dtype

import eocube.registry  # noqa: F401  (eocube.linear, for zarr)
from eocube import linear, lorenzo
from eocube.errors import CorruptChunkError
from eocube.linear import LinearCodec, is_regular

DTYPES = [
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
]


def _spec(values: np.ndarray) -> ArraySpec:
    return ArraySpec(
        shape=values.shape,
        dtype=parse_dtype(values.dtype, zarr_format=3),
        fill_value=0,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )


def _encode(values: np.ndarray) -> bytes:
    nd = default_buffer_prototype().nd_buffer.from_ndarray_like(values)
    encoded = LinearCodec()._encode_sync(nd, _spec(values))
    assert encoded is not None
    return encoded.to_bytes()


def _decode(payload: bytes, like: np.ndarray) -> np.ndarray:
    buffer: Buffer = default_buffer_prototype().buffer.from_bytes(payload)
    return LinearCodec()._decode_sync(buffer, _spec(like)).as_numpy_array()


def _roundtrip(values: np.ndarray) -> bytes:
    payload = _encode(values)
    back = _decode(payload, values)
    assert back.dtype == values.dtype
    assert back.shape == values.shape
    assert back.tobytes() == values.tobytes()
    return payload


def _random(dtype: str, n: int, seed: int = 0) -> np.ndarray:
    dt = np.dtype(dtype)
    raw = np.random.default_rng(seed).integers(0, 256, n * dt.itemsize).astype(np.uint8)
    return raw.view(dt)


def _nearly_regular(n: int, seed: int = 0) -> np.ndarray:
    # pixel centres computed as a GDAL transform does: a few ulps off a sequence
    rng = np.random.default_rng(seed)
    origin, size = 652_125.3 + rng.random(), 28.5 + rng.random() / 7
    return np.array([origin + (i + 0.5) * size for i in range(n)], dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 3, 17, 300])
def test_random_axes_round_trip_bit_exact(dtype: str, n: int) -> None:
    payload = _roundtrip(_random(dtype, n, seed=n))
    assert len(payload) <= 1 + n * np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", DTYPES)
def test_regular_axes_are_start_and_step(dtype: str) -> None:
    values = (np.arange(40) * 3 + 5).astype(dtype)
    assert is_regular(values)
    assert _roundtrip(values) == b"L" + np.array([5, 3], dtype=dtype).tobytes()


def test_an_axis_regular_with_its_mean_step_is_two_numbers() -> None:
    # first - last over n - 1 rebuilds it exactly, the first difference does not
    values = np.linspace(-179.99, 179.99, 2000)
    assert (values[0] + np.arange(2000) * (values[1] - values[0])).tobytes() != values.tobytes()
    assert is_regular(values)
    assert len(_roundtrip(values)) == 17


@pytest.mark.parametrize("n", [10, 101, 791])
def test_nearly_regular_axes_cost_a_few_bytes(n: int) -> None:
    values = _nearly_regular(n, seed=n)
    assert not is_regular(values)
    payload = _roundtrip(values)
    assert payload[:1] == b"P"
    assert len(payload) < 60 + n // 8


def test_irregular_dates_are_second_differences() -> None:
    # CF-encoded dates (days since): a revisit of 5 days with gaps
    days = np.cumsum(np.r_[0, np.random.default_rng(0).choice([5, 5, 5, 10, 15], 60)])
    payload = _roundtrip(days.astype(np.int64))
    assert payload[:2] == b"P\x01"
    assert len(payload) < 60


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_inf_and_negative_zero_round_trip_bit_exact(dtype: str) -> None:
    dt = np.dtype(dtype)
    values = np.linspace(-3, 3, 50).astype(dt)
    values[[3, 10, 11, 20, 30]] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    bits = values.view(f"u{dt.itemsize}")
    bits[40] |= 1 << (8 * dt.itemsize - 1)  # a negative
    bits[41] = bits[3] | 1  # a NaN with a payload
    bits[42] = bits[3] | (1 << (8 * dt.itemsize - 1)) | 2  # a negative NaN with a payload
    _roundtrip(values)
    _roundtrip(np.array([-0.0, 0.0, -0.0], dtype=dt))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64", "uint64"])
def test_integer_sequences_that_wrap_round_trip(dtype: str) -> None:
    info = np.iinfo(dtype)
    values = np.array([info.max - 2, info.max, info.min, info.min + 7, 0, info.max], dtype=dtype)
    _roundtrip(values)


def _kinds(values: np.ndarray) -> dict[str, bytes]:
    """A payload of each kind and coding for a 1-D float64 axis."""
    raw = values.tobytes()
    out = {"R": b"R" + raw, "Z": b"Z" + lorenzo.zstd_frame(raw)}
    for payload in linear._predicted(values):
        out.setdefault(f"P{payload[1]}{payload[2]}", payload)
    return out


def test_every_kind_and_coding_decodes() -> None:
    values = _nearly_regular(64)
    kinds = _kinds(values)
    assert set(kinds) == {"R", "Z", "P00", "P01", "P02", "P10", "P11", "P12"}
    for payload in kinds.values():
        assert _decode(payload, values).tobytes() == values.tobytes()


@pytest.mark.parametrize("kind", ["R", "Z", "P00", "P01", "P02", "P10", "P11", "P12"])
def test_damaged_chunks_raise(kind: str) -> None:
    values = _nearly_regular(64)
    payload = _kinds(values)[kind]
    damaged = [payload[:-1], payload + b"\x00", payload[: len(payload) // 2], b"X" + payload[1:]]
    if kind.startswith("P"):
        damaged += [payload[:1] + b"\x07" + payload[2:], payload[:2] + b"\x09" + payload[3:]]
        damaged += [payload[:3]]
    for bad in damaged:
        with pytest.raises(CorruptChunkError):
            _decode(bad, values)


def test_out_of_range_integers_raise() -> None:
    wide = np.array([0, 1000, -1000, 3], dtype=np.int64)
    payload = next(p for p in linear._predicted(wide) if p[1:3] == b"\x01\x00")
    with pytest.raises(CorruptChunkError, match="outside"):
        _decode(payload, wide.astype(np.int8))


class _OldLinearCodec(LinearCodec):
    """eocube.linear as it wrote before the predicted kinds: L or raw bytes."""

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        values = chunk_array.as_numpy_array()
        found = linear._arithmetic(values)
        payload = b"R" + values.tobytes()
        if found is not None:
            payload = b"L" + np.array(found, dtype=values.dtype).tobytes()
        return chunk_spec.prototype.buffer.from_bytes(payload)


@pytest.mark.parametrize("regular", [True, False])
def test_old_stores_read(regular: bool) -> None:
    # kinds L and R, with zstd after the codec for R, as stores had them
    store = zarr.storage.MemoryStore()
    values = np.arange(100) * 0.25 - 3 if regular else _nearly_regular(100)
    compressors = [Crc32cCodec()] if regular else [ZstdCodec(level=19), Crc32cCodec()]
    arr = zarr.create_array(
        store,
        shape=values.shape,
        dtype=values.dtype,
        serializer=_OldLinearCodec(),
        compressors=compressors,
    )
    arr[:] = values
    assert arr.metadata.to_dict()["codecs"][0] == {"name": "eocube.linear"}
    back = zarr.open_array(store, mode="r")
    assert isinstance(back.serializer, LinearCodec)
    assert not isinstance(back.serializer, _OldLinearCodec)
    assert back[:].tobytes() == values.tobytes()


def test_zarr_arrays_round_trip_with_edge_chunks() -> None:
    values = _nearly_regular(1000, seed=4)
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(
        store,
        shape=values.shape,
        chunks=(300,),
        dtype=values.dtype,
        serializer=LinearCodec(),
        compressors=[Crc32cCodec()],
    )
    arr[:] = values
    assert zarr.open_array(store, mode="r")[:].tobytes() == values.tobytes()
    assert arr[950:].tobytes() == values[950:].tobytes()
