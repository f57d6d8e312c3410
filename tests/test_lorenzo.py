"""The codec eocube.lorenzo: N-D numeric arrays bit for bit, smooth fields small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import parse_dtype

import eocube
import eocube.registry  # eocube.lorenzo, for zarr
from eocube import lorenzo
from eocube.errors import CorruptChunkError
from eocube.lorenzo import LorenzoCodec, decode_chunk, encode_chunk, from_ordered, to_ordered

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


def _random(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Every bit pattern equally likely (NaN payloads, infinities, -0.0 included)."""
    dt = np.dtype(dtype)
    raw = np.random.default_rng(seed).integers(0, 256, int(np.prod(shape)) * dt.itemsize)
    return raw.astype(np.uint8).view(dt).reshape(shape)


def _smooth(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    field = 30.0 + sum((k + 1) * 0.37 * g for k, g in enumerate(grids))
    field = field + 2.0 * np.sin(grids[-1] / 7.0) if shape else field
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return np.asarray(field, dtype=dt)
    return np.asarray(np.round(field), dtype=dt)


def _specials(dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    bits = np.dtype(f"u{dt.itemsize}")
    top = 1 << (8 * dt.itemsize - 1)
    exponent = {2: 0x7C00, 4: 0x7F800000, 8: 0x7FF0000000000000}[dt.itemsize]
    patterns = [0, top, exponent, top | exponent, exponent | 1, exponent | 3, top | exponent | 5]
    patterns += [exponent | (exponent >> 1), 1, top | 1, exponent - 1, top | (exponent - 1)]
    values = np.array(patterns, dtype=bits).view(dt)
    return np.concatenate([values, np.array([1.5, -2.25, 0.0, -0.0], dtype=dt)])


def _roundtrip(values: np.ndarray) -> bytes:
    payload = encode_chunk(values)
    back = decode_chunk(payload, values.dtype, values.shape)
    assert back.dtype == values.dtype.newbyteorder("<")
    assert back.shape == values.shape
    assert back.tobytes() == np.ascontiguousarray(values).astype(back.dtype).tobytes()
    return payload


@pytest.mark.parametrize("dtype", DTYPES)
def test_order_preserving_integers_are_one_to_one_and_monotonic(dtype: str) -> None:
    dt = np.dtype(dtype)
    values = _random(dtype, (4000,), seed=3)
    if dt.kind == "f":
        values = np.concatenate([values, _specials(dtype)])
    ordered = to_ordered(values)
    assert from_ordered(ordered, dt, "t").tobytes() == values.tobytes()
    if dt.kind == "f":
        values = values[~np.isnan(values)]
        order = np.argsort(to_ordered(values), kind="stable")
        assert np.all(np.diff(values[order].astype(np.float64)) >= 0)
        # -0.0 sorts right below +0.0 and both survive
        zeros = to_ordered(np.array([-0.0, 0.0], dtype=dt))
        assert zeros.tolist() == [-1, 0]
    else:
        order = np.argsort(ordered, kind="stable")
        assert np.all(np.diff(values[order].astype(object)) >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (3, 4, 9), (2, 3, 4, 5), (2, 1, 2, 3, 3)])
def test_random_data_round_trips_bit_exact(dtype: str, shape: tuple[int, ...]) -> None:
    payload = _roundtrip(_random(dtype, shape))
    raw = int(np.prod(shape)) * np.dtype(dtype).itemsize
    assert len(payload) <= 1 + raw  # never more than the raw bytes and a kind byte


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (13, 11), (4, 17, 9), (2, 3, 16, 15)])
def test_smooth_and_constant_data_round_trip_and_shrink(dtype: str, shape: tuple[int, ...]) -> None:
    smooth = _smooth(dtype, shape)
    payload = _roundtrip(smooth)
    _roundtrip(np.full(shape, smooth.flat[0]))
    if np.prod(shape) >= 100 and np.dtype(dtype).itemsize >= 2:
        assert payload[:1] == b"P"
        assert len(payload) < smooth.nbytes / 2


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_inf_and_negative_zero_round_trip_bit_exact(dtype: str) -> None:
    specials = _specials(dtype)
    field = _smooth(dtype, (12, 10))
    rng = np.random.default_rng(1)
    where = rng.choice(field.size, specials.size * 3, replace=False)
    field.flat[where] = np.tile(specials, 3)
    _roundtrip(field)
    _roundtrip(np.resize(specials, (4, specials.size)))


def test_big_endian_input_round_trips() -> None:
    values = _smooth("float32", (9, 8)).astype(">f4")
    payload = encode_chunk(values)
    back = decode_chunk(payload, np.dtype("<f4"), values.shape)
    np.testing.assert_array_equal(back, values)


def test_curvilinear_coordinates_are_much_smaller_than_zstd() -> None:
    lat, lon = _curvilinear(118, 87)
    for field in (lat, lon):
        payload = _roundtrip(field)
        assert payload[:1] == b"P"
        assert len(payload) * 5 < len(lorenzo.zstd_frame(field.tobytes()))


def test_noise_falls_back_to_raw_or_zstd() -> None:
    noise = _random("float64", (20, 20), seed=5)
    assert encode_chunk(noise)[:1] in (b"R", b"Z")
    repetitive = np.tile(_random("float64", (1, 20), seed=6), (20, 1))
    payload = _roundtrip(repetitive)
    assert payload[:1] in (b"Z", b"P")


def _payloads(values: np.ndarray) -> dict[bytes, bytes]:
    """One payload of every kind for ``values``."""
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    ordered = to_ordered(values)
    full = (1 << values.ndim) - 1
    stream = lorenzo.range_code(
        lorenzo.lorenzo_residuals(ordered, full), lorenzo.as_4d(values.shape)
    )
    return {
        b"R": b"R" + raw,
        b"Z": b"Z" + lorenzo.zstd_frame(raw),
        b"P": b"P" + bytes([full]) + stream,
    }


def test_every_kind_decodes() -> None:
    values = _smooth("float32", (6, 7))
    for payload in _payloads(values).values():
        np.testing.assert_array_equal(decode_chunk(payload, values.dtype, values.shape), values)


@pytest.mark.parametrize("kind", [b"R", b"Z", b"P"])
def test_damaged_payloads_raise(kind: bytes) -> None:
    values = _smooth("float32", (16, 15))
    payload = _payloads(values)[kind]
    damaged = [
        payload[:-1],
        payload + b"\x00",
        payload[: len(payload) // 2],
        b"",
        b"Q" + payload[1:],
    ]
    if kind == b"P":
        damaged.append(payload[:1] + bytes([0b100]) + payload[2:])  # an axis it lacks
        damaged.append(payload[:2])
    for bad in damaged:
        with pytest.raises(CorruptChunkError):
            decode_chunk(bad, values.dtype, values.shape)


def test_predicted_chunk_of_a_type_it_cannot_hold_raises() -> None:
    values = _smooth("float32", (4, 4))
    payload = _payloads(values)[b"P"]
    with pytest.raises(CorruptChunkError):
        decode_chunk(payload, np.dtype("complex64"), values.shape)
    # int8 residuals that decode outside int8's range
    wide = _payloads(np.array([[0, 1000], [5, -1000]], np.int64))[b"P"]
    with pytest.raises(CorruptChunkError, match="outside"):
        decode_chunk(wide, np.dtype("int8"), (2, 2))


def _spec(shape: tuple[int, ...], dtype: np.dtype) -> ArraySpec:
    return ArraySpec(
        shape=shape,
        dtype=parse_dtype(dtype, zarr_format=3),
        fill_value=0,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )


def test_the_codec_round_trips_and_raises_on_damage() -> None:
    codec = LorenzoCodec.from_dict(codec_dict := LorenzoCodec().to_dict())
    assert codec_dict == {"name": "eocube.lorenzo"}
    values = _smooth("float64", (10, 9))
    spec = _spec(values.shape, values.dtype)
    encoded = codec._encode_sync(
        default_buffer_prototype().nd_buffer.from_ndarray_like(values), spec
    )
    assert encoded is not None
    back = codec._decode_sync(encoded, spec).as_numpy_array()
    assert back.tobytes() == values.tobytes()
    truncated = default_buffer_prototype().buffer.from_bytes(encoded.to_bytes()[:-3])
    with pytest.raises(CorruptChunkError):
        codec._decode_sync(truncated, spec)
    with pytest.raises(ValueError, match="not an"):
        LorenzoCodec.from_dict({"name": "eocube.linear"})


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32", "float64"])
def test_zarr_arrays_round_trip_with_edge_chunks(dtype: str) -> None:
    # zarr pads the edge chunks with the fill value before the codec sees them
    values = _smooth(dtype, (23, 17, 3))
    values[5, 3, 1] = np.nan if values.dtype.kind == "f" else 7
    store = zarr.storage.MemoryStore()
    arr = zarr.create_array(
        store,
        shape=values.shape,
        chunks=(8, 5, 2),
        dtype=values.dtype,
        serializer=LorenzoCodec(),
        compressors=[Crc32cCodec()],
        fill_value=np.nan if values.dtype.kind == "f" else 0,
    )
    arr[:] = values
    back = zarr.open_array(store, mode="r")[:]
    assert back.tobytes() == values.tobytes()
    np.testing.assert_array_equal(arr[20:, 15:, 1:], values[20:, 15:, 1:])


def _curvilinear(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """lat/lon (float32) of a rotated, slightly curved grid."""
    j, i = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64))
    lat = 23.1 + 0.0437 * i + 0.0031 * j + 1e-5 * j**2
    lon = -119.4 + 0.0519 * j - 0.0042 * i + 2e-5 * i * j
    return lat.astype(np.float32), lon.astype(np.float32)


def _curvilinear_dataset() -> xr.Dataset:
    lat, lon = _curvilinear(40, 36)
    rng = np.random.default_rng(2)
    data = 1000 + 300 * np.sin(lat / 3.0) * np.cos(lon / 4.0)
    data = data[None, None] + rng.normal(0, 5, (4, 1, 40, 36))
    elevation = np.round(200 + 40 * np.sin(lat) + 30 * np.cos(lon)).astype(np.int16)
    return xr.Dataset(
        {
            "data": (("time", "band", "y", "x"), data.astype(np.uint16)),
            "elevation": (("y", "x"), elevation, {"units": "m"}),
        },
        coords={
            "time": np.datetime64("2021-01-01") + np.array([0, 5, 11, 30]) * np.timedelta64(1, "D"),
            "y": np.arange(40),
            "x": np.arange(36),
            "lat": (("y", "x"), lat, {"units": "degrees_north"}),
            "lon": (("y", "x"), lon, {"units": "degrees_east"}),
        },
    )


def test_a_store_with_curvilinear_coordinates_reads_back_identical(tmp_path: Path) -> None:
    ds = _curvilinear_dataset()
    path = tmp_path / "curvilinear.eocube"
    eocube.to_eocube(ds, path, crf=20)
    group = zarr.open_group(path, mode="r")
    for name in ("lat", "lon", "elevation"):
        names = [c["name"] for c in group[name].metadata.to_dict()["codecs"]]
        assert names == ["eocube.lorenzo", "crc32c"], name
        assert group[name][:].tobytes() == ds[name].values.tobytes(), name
    back = xr.open_dataset(path, engine="eocube")
    for name in ("lat", "lon", "elevation", "y", "x"):
        assert back[name].dtype == ds[name].dtype
        assert back[name].values.tobytes() == ds[name].values.tobytes(), name
        assert back[name].attrs == ds[name].attrs
    np.testing.assert_array_equal(back["time"].values, ds["time"].values)
    assert sum(f.stat().st_size for f in (path / "lat").rglob("*") if f.is_file()) < 1500
