"""eocube.device: the torch unpack equals decode_chunk bit for bit; CF decoding like xarray's;
the reader's tensor read and the datasets' device path on CPU tensors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")

from blocks import PROFILES, blocks, draw_coding, encode_drawn  # noqa: E402  (tests/blocks.py)
from cubes import open_cube  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import eocube  # noqa: E402
from eocube import chunk, device, packing  # noqa: E402
from eocube.errors import CorruptChunkError  # noqa: E402


def _block(name: str, select: tuple[slice, ...] = ()) -> np.ndarray:
    return np.ascontiguousarray(open_cube(name)["data"].values[select])


def _cropped() -> np.ndarray:
    # zarr pads a chunk at the array's end with NaN: the payload codes only the valid part
    inside = _block("s2_l2a_fusets_field_33x3x57x56", (slice(0, 6),))
    block = np.full((8, 3, 64, 64), np.nan, np.float32)
    block[:6, :, :57, :56] = inside
    return block


def _nodata_corner(block: np.ndarray, rows: slice = slice(40, None)) -> np.ndarray:
    out = block.astype(np.uint16)
    out[2, :, rows, :8] = 0
    return out


def _holes(block: np.ndarray) -> np.ndarray:
    out = block.astype(np.float32)
    out[1, 2, 30:38, 4:12] = np.nan
    return out


def _nodata_inside() -> np.ndarray:
    # a smooth field around its nodata value: many valid values decode onto it
    rng = np.random.default_rng(3)
    yy, xx = np.meshgrid(np.arange(40), np.arange(48), indexing="ij")
    field = np.stack([np.sin(yy / 6 + b) * np.cos(xx / 9) for b in range(3)])
    block = (2000 + 1500 * field + rng.normal(0, 20, (6, 3, 40, 48))).astype(np.uint16)
    block[block == 2000] = 2001
    block[rng.random(block.shape) < 0.05] = 2000
    return block


CASES = {
    # uint16, KLT over 11 bands: three planar3 groups and two leftover bands in a gray stream
    "uint16 klt planar3 + leftovers": (
        lambda: _block("l8_ny18_014031"),
        {"leftover_pair": "off"},
    ),
    # the same with the two leftover bands in a 4:4:4 frame whose third plane is constant
    "uint16 klt leftover pair": (lambda: _block("l8_ny18_014031"), {"leftover_pair": "always"}),
    # two bands only: one 4:4:4 stream, a constant plane in every frame
    "uint16 two bands as a pair": (
        lambda: _block("s2_l2a_openeo_gfmap_19x4x52x46", (slice(0, 6), slice(2, 4))),
        {"leftover_pair": "always"},
    ),
    # float32, KLT, NaN mask (clouds)
    "float32 nan mask": (lambda: _block("s2_l2a_fusets_field_33x3x57x56", (slice(0, 8),)), {}),
    # uint8 with a nodata mask, no KLT
    "uint8 nodata mask": (
        lambda: _block(
            "landsat7_rgb_byte", (slice(None), slice(None), slice(0, 120), slice(0, 64))
        ),
        {"nodata": 0},
    ),
    "cropped edge chunk": (_cropped, {}),
    # int16 one band per luma frame, dequantised plane by plane
    "int16 luma": (lambda: _block("erainterim_uvz"), {"profile": "hevc-12bit-420-luma"}),
    "float32 residual layer": (
        lambda: _block("s2_l2a_fusets_field_33x3x57x56", (slice(0, 8),)),
        {"max_abs_error": 0.01},
    ),
    "uint16 residual layer": (
        lambda: _block("s2_l2a_openeo_gfmap_19x4x52x46", (slice(0, 8),)),
        {"max_abs_error": 3},
    ),
    # rows as frames (chunk format 4): KLT, leftover bands, NaN, a residual layer
    "uint16 rows as frames": (lambda: _block("l8_ny18_014031"), {"frames": "y"}),
    "float32 rows as frames, residual": (
        lambda: _block("s2_l2a_fusets_field_33x3x57x56", (slice(0, 8),)),
        {"frames": "y", "max_abs_error": 0.01},
    ),
    "uint8 lossless": (
        lambda: _block(
            "landsat7_rgb_byte", (slice(None), slice(None), slice(300, 364), slice(300, 380))
        ),
        {"profile": "hevc-lossless"},
    ),
    # dates coded in a stored order (chunk format 9): KLT, leftover bands; NaN, luma
    "uint16 klt dates in a stored order": (
        lambda: _block("l8_ny18_014031"),
        {"date_order": [3, 0, 4, 2, 1]},
    ),
    "float32 luma nan, dates in a stored order": (
        lambda: _block("s2_l2a_fusets_field_33x3x57x56", (slice(0, 8),)),
        {"profile": "hevc-12bit-420-luma", "date_order": [0, 5, 2, 7, 1, 3, 6, 4]},
    ),
    # frames with Y and X swapped (chunk format 11): a 52 x 46 px series, KLT, a leftover
    # band, nodata and a residual layer; NaN in a luma stream
    "uint16 transposed klt, nodata, residual": (
        lambda: _nodata_corner(_block("s2_l2a_openeo_gfmap_19x4x52x46", (slice(0, 6),))),
        {"nodata": 0, "max_abs_error": 30},
    ),
    "float32 transposed luma nan": (
        lambda: _holes(_block("s2_l2a_openeo_gfmap_19x4x52x46", (slice(0, 6),)) / 10000),
        {"profile": "hevc-12bit-420-luma", "quality": 20},
    ),
    # several dates a frame (chunk format 12): 32 x 32 px tiles of 9 dates in 2 x 2
    # mosaics (one date repeated), KLT, nodata and a residual layer; 44 x 46 px in 2 x 1
    # mosaics coded transposed, NaN in a luma stream
    "uint16 mosaic klt, nodata, residual": (
        lambda: _nodata_corner(
            _block(
                "s2_l2a_worldcereal_72x4x64x64",
                (slice(0, 9), slice(None), slice(16, 48), slice(8, 40)),
            ),
            rows=slice(20, None),
        ),
        {"nodata": 0, "max_abs_error": 30, "frames": "mosaic"},
    ),
    "float32 mosaic transposed luma nan": (
        lambda: _holes(
            _block("s2_l2a_openeo_gfmap_19x4x52x46", (slice(0, 7), slice(None), slice(0, 44)))
            / 10000
        ),
        {"profile": "hevc-12bit-420-luma", "quality": 20, "frames": "mosaic"},
    ),
    # nodata inside the bands' range: the values decoded onto it kept exactly, by a
    # residual layer of exceptions only (no bound, steps 0)
    "uint16 nodata inside the range": (_nodata_inside, {"nodata": 2000, "quality": 30}),
}


@pytest.fixture(scope="module")
def payloads() -> dict[str, bytes]:
    return {name: chunk.encode_chunk(make(), **kw) for name, (make, kw) in CASES.items()}


def _same_bits(got: torch.Tensor, want: np.ndarray) -> None:
    values = got.cpu().numpy()
    assert values.dtype == want.dtype
    assert values.shape == want.shape
    assert values.tobytes() == want.tobytes()  # NaN bit patterns included


def test_payload_kinds_are_covered(payloads: dict[str, bytes]) -> None:
    parts = {name: chunk.parse_chunk(p) for name, p in payloads.items()}
    klt = parts["uint16 klt planar3 + leftovers"]
    assert klt.header.spectral is not None
    assert klt.header.dtype == np.uint16
    assert [p.role for p in klt.plans] == ["main", "extra"]
    pair = parts["uint16 klt leftover pair"]
    assert pair.header.layout == "planar3-pair"
    assert pair.header.spectral is not None
    assert [p.role for p in pair.plans] == ["main"]
    assert (pair.plans[0].sources == packing.CONSTANT_PLANE).any()
    assert parts["uint16 two bands as a pair"].header.layout == "planar3-pair"
    assert any(k == 0 for k, _ in parts["float32 nan mask"].tail.masks)
    assert any(k == 1 for k, _ in parts["uint8 nodata mask"].tail.masks)
    assert parts["cropped edge chunk"].header.coded is not None
    assert parts["float32 residual layer"].tail.residual is not None
    assert parts["uint16 residual layer"].tail.residual is not None
    assert parts["uint8 lossless"].header.exact
    assert parts["int16 luma"].header.spectral is None
    assert parts["uint16 rows as frames"].header.time_in_frame
    assert parts["uint16 rows as frames"].header.spectral is not None
    assert parts["float32 rows as frames, residual"].tail.residual is not None
    ordered = parts["uint16 klt dates in a stored order"].header
    assert ordered.date_order is not None
    assert ordered.spectral is not None
    assert parts["float32 luma nan, dates in a stored order"].header.date_order is not None
    swapped = parts["uint16 transposed klt, nodata, residual"]
    assert swapped.header.transposed
    assert swapped.header.spectral is not None
    assert swapped.tail.residual is not None
    assert any(k == 1 for k, _ in swapped.tail.masks)
    assert parts["float32 transposed luma nan"].header.transposed
    tiled = parts["uint16 mosaic klt, nodata, residual"]
    assert tiled.header.mosaic == (2, 2)
    assert tiled.header.spectral is not None
    assert tiled.tail.residual is not None
    assert any(k == 1 for k, _ in tiled.tail.masks)
    tiled_luma = parts["float32 mosaic transposed luma nan"].header
    assert tiled_luma.mosaic == (2, 1)
    assert tiled_luma.transposed
    inside = parts["uint16 nodata inside the range"].tail.residual
    assert inside is not None
    assert inside.exception_index.size
    assert not inside.q.any()


@pytest.mark.parametrize("name", list(CASES))
def test_torch_unpack_equals_decode_chunk_bit_for_bit(
    payloads: dict[str, bytes], name: str
) -> None:
    payload = payloads[name]
    want = chunk.decode_chunk(payload)
    _same_bits(device.decode_chunk_tensor(payload, "cpu"), want)
    # the parts, unpacked from the codes the CPU decoder gives
    parts = chunk.parse_chunk(payload)
    frames = [device.cpu_stream_decoder(s, torch.device("cpu")) for s in parts.streams]
    codes = device.gather_codes(parts, frames, torch.device("cpu"))
    _same_bits(device.unpack(parts, codes), want)


@settings(max_examples=5 * settings.default.max_examples)
@given(drawn=blocks(), profile=st.sampled_from(PROFILES), data=st.data())
def test_torch_unpack_of_any_payload_equals_decode_chunk(
    drawn: tuple[np.ndarray, float | None], profile: str, data: st.DataObject
) -> None:
    # the payload kinds above, and whatever else the property hunt of test_invariants
    # draws: every profile, dtype, shape, mask, bound and nodata position
    block, nodata = drawn
    prof = eocube.get_profile(profile)
    quality, bounds = draw_coding(data, prof, block, nodata)
    payload, _ = encode_drawn(block, prof, quality, nodata, bounds)
    if payload is None:
        return  # lossless profiles refuse floats and ranges wider than their bits
    _same_bits(device.decode_chunk_tensor(payload, "cpu"), chunk.decode_chunk(payload))


def test_lossless_tensor_equals_the_original(payloads: dict[str, bytes]) -> None:
    make, _ = CASES["uint8 lossless"]
    got = device.decode_chunk_tensor(payloads["uint8 lossless"]).numpy()
    np.testing.assert_array_equal(got, make())


def test_damage_raises_as_decode_chunk(payloads: dict[str, bytes]) -> None:
    payload = payloads["float32 nan mask"]
    for damaged in (payload[:-3], payload + b"\x00", b"EOCX" + payload[4:]):
        with pytest.raises(CorruptChunkError) as cpu:
            chunk.decode_chunk(damaged)
        with pytest.raises(CorruptChunkError) as dev:
            device.decode_chunk_tensor(damaged)
        assert str(dev.value) == str(cpu.value)


def test_parse_chunk_parts_match_the_header(payloads: dict[str, bytes]) -> None:
    parts = chunk.parse_chunk(payloads["float32 nan mask"])
    assert parts.header.to_bytes() == chunk.read_header(payloads["float32 nan mask"]).to_bytes()
    (_, bits), *_ = parts.tail.masks
    mask = chunk.mask_of(bits, parts.header.coded_shape)
    assert mask.shape == parts.header.coded_shape
    assert mask.any()
    unpacked = device.unpack_mask(bits, parts.header.coded_shape, torch.device("cpu"))
    np.testing.assert_array_equal(unpacked.numpy(), mask)


# --- CF decoding ----------------------------------------------------------------------------


CF = {
    "int16 packed, fill": (
        np.int16,
        {"_FillValue": -32768, "scale_factor": 0.01, "add_offset": 273.15},
    ),
    "int16 float32 packing": (
        np.int16,
        {"scale_factor": np.float32(0.5), "add_offset": np.float32(10.25)},
    ),
    "uint16 fill": (np.uint16, {"_FillValue": 0}),
    "uint16 scale only": (np.uint16, {"scale_factor": 1e-4}),
    "int32 fill and missing": (np.int32, {"_FillValue": -1, "missing_value": -9999}),
    "float32 nan fill": (np.float32, {"_FillValue": np.float32(np.nan)}),
    "float32 fill, offset": (np.float32, {"_FillValue": np.float32(-1.0), "add_offset": 0.1}),
    "uint8 none": (np.uint8, {}),
}


@pytest.mark.parametrize("name", list(CF))
def test_cf_decoding_equals_xarray(name: str) -> None:
    dtype, attrs = CF[name]
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        raw = rng.integers(max(info.min, -30000), min(info.max, 30000), (3, 2, 7, 5)).astype(dtype)
    else:
        raw = rng.normal(0, 100, (3, 2, 7, 5)).astype(dtype)
    flat = raw.reshape(-1)
    for key in ("_FillValue", "missing_value"):
        if key in attrs and not np.isnan(float(attrs[key])):
            flat[::7] = attrs[key]
    var = xr.Variable(("time", "band", "y", "x"), raw, attrs=dict(attrs))
    decoded = xr.conventions.decode_cf_variable("data", var)
    want = np.asarray(decoded.values)
    cf = device.CFDecoding.from_encoding(decoded.encoding, raw.dtype, "data")
    got = cf(torch.from_numpy(raw.copy())).numpy()
    assert got.dtype == want.dtype == cf.dtype
    assert got.tobytes() == want.tobytes()
    # a NaN _FillValue of floats changes nothing (NaN stays NaN)
    assert cf.identity == (not attrs or name == "float32 nan fill")


# --- the tensor read and the datasets' device path ---------------------------------------------


WINDOW = {"time": 4, "y": 16, "x": 16}
CHUNKS = {"time": 8, "y": 32, "x": 32}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("device")
    out = {}
    for name in ("s2_l2a_fusets_field_33x3x57x56", "s2_l2a_openeo_gfmap_19x4x52x46"):
        path = root / f"{name}.eocube"
        eocube.to_eocube(open_cube(name), path, chunks=CHUNKS, measure=False)
        out[name] = str(path)
    # CF-packed int16 with a fill value, variables in another dim order
    era = open_cube("erainterim_uvz").isel(time=slice(0, 2), y=slice(0, 40), x=slice(0, 70))
    packed = era.astype(np.float32) * 0.5
    packed["data"] = packed["data"].transpose("band", "time", "y", "x")
    packed["data"].values[:, 0, :3, :3] = np.nan
    packed["data"].encoding = {"dtype": "int16", "scale_factor": 0.5, "_FillValue": -32768}
    path = root / "packed.eocube"
    eocube.to_eocube(packed, path, chunks={"time": 1, "y": 32, "x": 32}, measure=False)
    out["packed"] = str(path)
    return out


def test_reader_tensor_read_equals_the_numpy_read(stores: dict[str, str]) -> None:
    from eocube.torch import _video_reader
    from eocube.windows import open_source

    for store in stores.values():
        ds = open_source(store, None)
        reader = _video_reader(ds.variables["data"])
        assert reader is not None
        grid = [
            range(-(-n // c)) for n, c in zip(reader.array.shape, reader.chunk_shape, strict=True)
        ]
        for coords in [tuple(g[0] for g in grid), tuple(g[-1] for g in grid)]:
            want = reader.read(coords)
            got = reader.read_tensor(coords, "cpu")
            _same_bits(got, want)


def test_dataset_device_path_on_cpu_equals_the_cpu_path(stores: dict[str, str]) -> None:
    from eocube.torch import CubeDataset, StreamingCubeDataset

    for name, store in stores.items():
        window = {"time": 2, "y": 16, "x": 16} if name == "packed" else WINDOW
        for nan in ("keep", "mask", -1.0):
            cpu = CubeDataset(store, window=window, nan=nan)
            dev = CubeDataset(store, window=window, nan=nan)
            dev._s.device_path = True  # the path device="cuda" takes, on CPU tensors
            for i in range(0, len(cpu), 3):
                a, b = cpu[i], dev[i]
                assert a.keys() == b.keys()
                for key, value in a.items():
                    if isinstance(value, torch.Tensor):
                        assert value.dtype == b[key].dtype
                        assert value.shape == b[key].shape
                        assert value.numpy().tobytes() == b[key].numpy().tobytes(), (store, i, key)
                    else:
                        assert value == b[key]
            assert dev._w.tensor_readers  # it did read through the device path
    streamed = StreamingCubeDataset(list(stores.values())[:2], window=WINDOW, seed=3)
    streamed.set_epoch(0)
    normal = [(s["cube"], s["offset"], s["data"]) for s in streamed]
    streamed._s.device_path = True
    through = [(s["cube"], s["offset"], s["data"]) for s in streamed]
    assert [(c, o) for c, o, _ in normal] == [(c, o) for c, o, _ in through]
    for (_, _, a), (_, _, b) in zip(normal, through, strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes()


def test_device_path_with_a_dataset_in_memory_reads_the_same(tmp_path: Path) -> None:
    from eocube.torch import CubeDataset

    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    cpu = CubeDataset(cube, window=WINDOW)
    dev = CubeDataset(cube, window=WINDOW)
    dev._s.device_path = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(0, len(cpu), 7):
            np.testing.assert_array_equal(cpu[i]["data"].numpy(), dev[i]["data"].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_unpack_equals_decode_chunk(payloads: dict[str, bytes]) -> None:  # pragma: no cover
    for payload in payloads.values():
        _same_bits(device.decode_chunk_tensor(payload, "cuda"), chunk.decode_chunk(payload))


def test_a_wavelet_chunk_decodes_on_the_cpu_into_the_tensor() -> None:
    rng = np.random.default_rng(5)
    y, x = np.meshgrid(np.arange(20), np.arange(24), indexing="ij")
    block = np.stack([np.sin(0.1 * x + t) * 300 + 2000 + y for t in range(3)])[:, None]
    block = (block + rng.normal(0, 2, block.shape)).astype(np.uint16)
    block[1, 0, :3, :3] = 0
    payload = chunk.encode_chunk(block, nodata=0, quality=20, wavelet="always")
    assert chunk.parse_chunk(payload).header.wavelet
    _same_bits(device.decode_chunk_tensor(payload, "cpu"), chunk.decode_chunk(payload))
