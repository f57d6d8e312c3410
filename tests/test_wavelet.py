"""The wavelet coder (eocube.wavelet, chunk format 5): round trips, bounds, the per-chunk
choice against the video, damaged payloads, and the profile that turns it on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from eocube import chunk as chunk_module
from eocube import decode_chunk, encode_chunk, metrics, read_header, to_eocube, wavelet
from eocube.binary import ByteReader
from eocube.errors import CorruptChunkError
from eocube.profiles import get_profile
from eocube.shards import strip_checksum
from eocube.testing import (
    assert_chunk_roundtrip,
    assert_store_roundtrip,
    check_shard,
    shard_objects,
)


def _smooth(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth field: a few broad waves, drifting slowly with time."""
    rng = np.random.default_rng(seed)
    T, B, Y, X = shape
    t, y, x = np.meshgrid(np.arange(T), np.arange(Y), np.arange(X), indexing="ij")
    out = np.empty(shape)
    for b in range(B):
        k = rng.uniform(0.02, 0.08, 3)
        out[:, b] = (
            250 + 20 * np.sin(k[0] * x + 0.05 * t) * np.cos(k[1] * y) + 5 * np.sin(k[2] * (x + y))
        )
    return out.astype(np.float32)


def test_volume_shape_leaves_out_axes_of_one() -> None:
    assert wavelet.volume_shape(4, 20, 24) == (4, 20, 24)
    assert wavelet.volume_shape(1, 20, 24) == (20, 24)
    assert wavelet.volume_shape(30, 1, 24) == (30, 24)
    assert wavelet.volume_shape(1, 1, 24) is None
    assert wavelet.volume_shape(1, 1, 1) is None


@pytest.mark.parametrize(
    ("shape", "least_db"),
    [
        ((4, 2, 20, 24), 30),
        ((1, 3, 33, 49), 30),
        ((12, 1, 1, 40), 30),
        # 9 bands of 2 x 16 x 16: SPERR gets the video's bytes, 403 with the lean header
        # (590 with chunk format 13's), and codes the block at 20.5 dB there where the
        # video has 44.4
        ((2, 9, 16, 16), 18),
    ],
    ids=str,
)
def test_always_round_trips_floats_with_nan(
    shape: tuple[int, int, int, int], least_db: float
) -> None:
    block = _smooth(shape)
    block[0, 0, :2, :3] = np.nan
    payload, decoded = assert_chunk_roundtrip(block, "hevc-12bit-444", wavelet="always")
    header = read_header(payload)
    assert header.wavelet
    assert header.version == chunk_module.FORMAT_VERSION
    assert decoded.dtype == np.float32
    assert metrics.psnr(block, decoded) > least_db


def test_integers_decode_rounded_and_clipped_with_nodata(load_cube: Callable[..., Any]) -> None:
    s2 = np.asarray(load_cube("s2_l2a_openeo_gfmap_19x4x52x46").data[:4, :, :24, :20])
    block = s2.astype(np.uint16)
    block[2, :, :5, :5] = 0
    block[1, 1, 0, 0] = 65535  # the decode must clip, not wrap
    payload, decoded = assert_chunk_roundtrip(
        block, "hevc-12bit-444", nodata=0, quality=10, wavelet="always"
    )
    assert read_header(payload).wavelet
    assert decoded.dtype == np.uint16
    assert (decoded[2, :, :5, :5] == 0).all()


def test_a_padded_edge_chunk_codes_its_data_part_only() -> None:
    padded = np.full((6, 2, 32, 32), np.nan, np.float32)
    padded[:4, :, :24, :20] = _smooth((4, 2, 24, 20))
    payload, decoded = assert_chunk_roundtrip(padded, "hevc-12bit-444", wavelet="always")
    header = read_header(payload)
    assert header.wavelet
    assert header.coded == (4, 24, 20)
    assert np.isnan(decoded[4:]).all()
    assert np.isnan(decoded[:, :, 24:]).all()


@settings(max_examples=25, deadline=None)
@given(
    bound=st.sampled_from([0.5, 1.0, 3.0, 20.0, 250.0]),
    dtype=st.sampled_from(["uint16", "int16", "float32"]),
    seed=st.integers(0, 2**16),
)
def test_every_value_keeps_the_bound(bound: float, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    block = _smooth((3, 2, 17, 23), seed) * 40 - 9000
    block += rng.normal(0, 30, block.shape)  # detail the wavelet must not smooth away
    if dtype == "uint16":
        block = np.clip(block + 12000, 0, 65535)
    block = block.astype(dtype)
    assert_chunk_roundtrip(block, "hevc-12bit-444", max_abs_error=bound, wavelet="always")


def test_integer_tolerance_keeps_rounded_integers_within_the_bound() -> None:
    bounds = np.array([0.5, 1.0, 2.7, 20.0])
    tol = wavelet.integer_tolerance(bounds)
    for bound, t in zip(bounds, tol, strict=True):
        for error in np.linspace(-t, t, 101):
            assert abs(math.floor(100 + error + 0.5) - 100) <= bound


def test_auto_keeps_the_wavelet_on_a_smooth_field(load_cube: Callable[..., Any]) -> None:
    era = np.asarray(load_cube("erainterim_uvz").data)  # 2 months x 9 levels, int16
    payload = encode_chunk(era, "hevc-12bit-444", quality=20, wavelet="auto")
    video = encode_chunk(era, "hevc-12bit-444", quality=20, wavelet="off")
    assert read_header(payload).wavelet
    gain = metrics.psnr(era, decode_chunk(payload)) - metrics.psnr(era, decode_chunk(video))
    assert gain > 3  # 5.4 dB when measured
    assert len(payload) <= 1.03 * len(video)


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("s2_l2a_worldcereal_118x4x64x64", np.s_[:16]),
        ("landsat7_rgb_byte", np.s_[:]),
        ("stars_cmip3_tos_24x1x170x180", np.s_[:]),
    ],
)
def test_auto_picks_by_its_rule(load_cube: Callable[..., Any], name: str, window: Any) -> None:
    # "auto" is the video's payload or the wavelet's, whichever the rule prefers
    block = np.ascontiguousarray(load_cube(name).data[window])
    kw: dict[str, Any] = {"quality": 24}
    auto = encode_chunk(block, "hevc-12bit-444", wavelet="auto", **kw)
    video = encode_chunk(block, "hevc-12bit-444", wavelet="off", **kw)
    coded = encode_chunk(block, "hevc-12bit-444", wavelet="always", **kw)
    gain = metrics.psnr(block, decode_chunk(coded)) - metrics.psnr(block, decode_chunk(video))
    score = gain + chunk_module.DB_PER_DOUBLING * math.log2(len(video) / len(coded))
    assert auto == (coded if score > chunk_module.WAVELET_MARGIN_DB else video)


def test_auto_under_a_bound_keeps_the_smaller(load_cube: Callable[..., Any]) -> None:
    era = np.asarray(load_cube("erainterim_uvz").data)
    span = era.max(axis=(0, 2, 3)).astype(float) - era.min(axis=(0, 2, 3))
    bound = 1e-3 * span
    auto = encode_chunk(era, "hevc-12bit-444", quality=0, max_abs_error=bound, wavelet="auto")
    video = encode_chunk(era, "hevc-12bit-444", quality=0, max_abs_error=bound, wavelet="off")
    assert read_header(auto).wavelet
    assert len(auto) < len(video)
    assert (np.abs(decode_chunk(auto).astype(float) - era) <= bound[None, :, None, None]).all()


def test_lossless_profiles_never_use_the_wavelet() -> None:
    block = _smooth((3, 2, 16, 16)).astype(np.uint16)
    payload = encode_chunk(block, "ffv1-lossless", wavelet="always")
    assert not read_header(payload).wavelet
    np.testing.assert_array_equal(decode_chunk(payload), block)


def test_blocks_the_wavelet_cannot_code_stay_video() -> None:
    block = _smooth((1, 2, 1, 40))  # one row of one date
    assert not read_header(encode_chunk(block, wavelet="always")).wavelet


def test_an_unknown_wavelet_choice_is_refused() -> None:
    with pytest.raises(ValueError, match="wavelet must be one of off, auto, always"):
        encode_chunk(_smooth((2, 1, 16, 16)), wavelet="yes")


@pytest.fixture(scope="module")
def coded() -> bytes:
    block = _smooth((3, 2, 20, 24))
    block[1, 1, 4:8] = np.nan
    return encode_chunk(block, "hevc-12bit-444", quality=20, wavelet="always")


def _section_start(payload: bytes) -> int:
    return len(read_header(payload).to_bytes())


def test_every_bitstream_byte_flip_fails_the_checksum(coded: bytes) -> None:
    start = _section_start(coded)
    r = ByteReader(coded, pos=start)
    r.text()
    first_crc = r.pos
    r.unpack("I")
    blob_len = r.varint()
    for i in range(r.pos, r.pos + blob_len, max(1, blob_len // 40)):
        damaged = bytearray(coded)
        damaged[i] ^= 0x40
        with pytest.raises(CorruptChunkError, match="band 0 fails its checksum"):
            decode_chunk(bytes(damaged))
    damaged = bytearray(coded)
    damaged[first_crc] ^= 1
    with pytest.raises(CorruptChunkError, match="checksum"):
        decode_chunk(bytes(damaged))


def test_an_unknown_coder_is_named(coded: bytes) -> None:
    start = _section_start(coded)
    damaged = coded[: start + 1] + b"zfp-x" + coded[start + 6 :]
    with pytest.raises(CorruptChunkError, match=r"coded by 'zfp-x'.*upgrade eocube"):
        decode_chunk(damaged)


def test_wavelet_flag_with_video_only_flags_or_an_old_version_is_corrupt(coded: bytes) -> None:
    flags_at = 5
    for video_only in (chunk_module._FLAG_KLT, chunk_module._FLAG_TIME_IN_FRAME):
        damaged = bytearray(coded)
        damaged[flags_at] |= video_only
        with pytest.raises(CorruptChunkError, match="unknown flags"):
            decode_chunk(bytes(damaged))
    damaged = bytearray(coded)
    damaged[4] = 4  # version 4 knows no wavelet flag
    with pytest.raises(CorruptChunkError, match="unknown flags"):
        decode_chunk(bytes(damaged))


def test_a_bitstream_of_another_shape_is_refused(coded: bytes) -> None:
    other = encode_chunk(_smooth((3, 2, 20, 25)), quality=20, wavelet="always")
    section = _section_start(other)
    header = coded[: _section_start(coded)]
    # the other payload's section (valid checksums) under this header
    with pytest.raises(CorruptChunkError, match=r"holds \(3, 20, 25\), the header \(3, 20, 24\)"):
        decode_chunk(header + other[section:])


def test_parse_chunk_skips_the_section(coded: bytes) -> None:
    parts = chunk_module.parse_chunk(coded)
    assert parts.header.wavelet
    assert parts.streams == []
    assert parts.plans == []
    assert len(parts.tail.masks) == 1


# --- the profile ---------------------------------------------------------------------------


def test_the_wavelet_profile_is_the_default_video_with_the_choice_on() -> None:
    base, wav = get_profile("hevc-12bit-444"), get_profile("hevc-12bit-444-wavelet")
    assert base.wavelet == "off"
    assert wav.wavelet == "auto"
    assert wav.options == base.options
    assert wav.quality is not None
    assert base.quality is not None
    # the same scale down to the video's finest quality, then qualities for the wavelet
    assert wav.quality.video_floor == base.quality.min == -6
    assert wav.quality.min < wav.quality.video_floor
    for q in (-6, -3, 0, 7.5, 16, 44):
        assert wav.encoder_options(q) == base.encoder_options(q)
    assert (wav.pix_fmt, wav.layout, wav.transform) == (base.pix_fmt, base.layout, base.transform)


# --- qualities below the video's finest ---------------------------------------------------


def test_below_the_video_floor_the_wavelet_gets_more_bytes(load_cube: Callable[..., Any]) -> None:
    # ERA-Interim's video saturates at QP 0 (quality -6); below it the video stays there
    # and SPERR gets twice the bytes every 6 steps, kept wherever SPERR codes the block
    era = np.asarray(load_cube("erainterim_uvz").data)
    profile = "hevc-12bit-444-wavelet"
    floor = encode_chunk(era, profile, quality=-6)
    twice = encode_chunk(era, profile, quality=-12)
    assert read_header(twice).wavelet
    assert 1.9 < len(twice) / len(floor) < 2.1
    gain = metrics.psnr(era, decode_chunk(twice)) - metrics.psnr(era, decode_chunk(floor))
    assert gain > 4  # 6.2 dB when measured
    # the video alone is the same below its floor as at it
    video = [encode_chunk(era, profile, quality=q, wavelet="off") for q in (-6, -12)]
    assert video[0] == video[1]


def test_a_psnr_past_the_video_is_reached_at_the_wavelets_rate(
    load_cube: Callable[..., Any], tmp_path: Any
) -> None:
    # ERA-Interim's video saturates near 70 dB: 75 dB is SPERR's, found below the
    # video's finest quality without overshooting (the search once crept to 91 dB)
    era = np.asarray(load_cube("erainterim_uvz").data)[:, :, :120, :240]
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), era)})
    report = to_eocube(ds, tmp_path / "s.zarr", profile="hevc-12bit-444-wavelet", target_psnr=75)
    psnr = report.variables["data"].psnr
    assert psnr is not None
    assert 75 <= psnr <= 76
    assert report.variables["data"].bpppb < 2


def test_a_rate_past_the_video_on_blocks_the_wavelet_codes_worse_goes_to_the_residual(
    tmp_path: Any,
) -> None:
    # tiles with a little noise: the video wins at its floor, so qualities below it add
    # nothing, and the residual layer spends the rest, as with the default profile
    rng = np.random.default_rng(0)
    tiles = np.repeat(np.repeat(rng.integers(0, 4000, (8, 2, 8, 8)), 8, 2), 8, 3)
    block = (tiles + rng.normal(0, 3, tiles.shape)).astype(np.uint16)
    assert not read_header(encode_chunk(block, "hevc-12bit-444-wavelet", quality=-6)).wavelet
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), block)})
    reports = [
        to_eocube(ds, tmp_path / f"{p}.zarr", profile=p, target_bpppb=2.0)
        for p in ("hevc-12bit-444", "hevc-12bit-444-wavelet")
    ]
    for report in reports:
        assert abs(report.bpppb / 2.0 - 1) < 0.1  # 0.52 bpppb at the video's floor
    assert reports[1].variables["data"].psnr == pytest.approx(reports[0].variables["data"].psnr)


def test_below_the_video_floor_a_block_sperr_codes_worse_stays_video() -> None:
    # piecewise constant 8 x 8 tiles: at twice the bytes SPERR reaches 30 dB where the
    # video at QP 0 has 76 dB; the choice is made at equal bytes, and stands below
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 4000, (4, 2, 8, 8))
    block = np.repeat(np.repeat(tiles, 8, 2), 8, 3).astype(np.uint16)
    below = encode_chunk(block, "hevc-12bit-444-wavelet", quality=-12)
    assert below == encode_chunk(block, "hevc-12bit-444-wavelet", quality=-6)
    assert not read_header(below).wavelet
    forced = encode_chunk(block, "hevc-12bit-444-wavelet", quality=-12, wavelet="always")
    assert metrics.psnr(block, decode_chunk(forced)) < metrics.psnr(block, decode_chunk(below))


def test_a_rate_past_the_video_goes_to_the_wavelet_not_a_residual(
    load_cube: Callable[..., Any], tmp_path: Any
) -> None:
    # target_bpppb beyond the video's saturation: the default profile spends the rest on
    # a residual layer, the wavelet profile on SPERR's own rate: the rate is met and the
    # PSNR is higher at it (ERA-Interim at 1.25 bpppb: 74.6 against 71.0 dB)
    era = np.asarray(load_cube("erainterim_uvz").data)
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), era)})
    got, codings = {}, {}
    for profile in ("hevc-12bit-444", "hevc-12bit-444-wavelet"):
        store = tmp_path / f"{profile}.zarr"
        report = to_eocube(ds, store, profile=profile, target_bpppb=1.25)
        got[profile] = report.variables["data"].psnr
        assert abs(report.bpppb / 1.25 - 1) < 0.1
        (shard,) = shard_objects(store)  # one chunk
        data = shard.read_bytes()
        offset, size = check_shard(data, 1).entries[0]
        parts = chunk_module.parse_chunk(strip_checksum(data[offset : offset + size], "chunk"))
        codings[profile] = (parts.header.wavelet, parts.tail.residual is not None)
    assert codings == {"hevc-12bit-444": (False, True), "hevc-12bit-444-wavelet": (True, False)}
    assert got["hevc-12bit-444-wavelet"] > got["hevc-12bit-444"] + 2


def test_a_store_written_with_the_wavelet_profile_reads_back_within_its_bound(
    load_cube: Callable[..., Any], tmp_path: Any
) -> None:
    data = np.asarray(load_cube("era5_t2m_uk_744h").data[:200])
    ds = xr.Dataset({"t2m": (("time", "band", "y", "x"), data)})
    _report, back = assert_store_roundtrip(
        ds, tmp_path / "s.zarr", profile="hevc-12bit-444-wavelet", max_abs_error=0.05
    )
    import zarr

    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    codec = group["t2m"].metadata.to_dict()["codecs"]
    assert "hevc-12bit-444-wavelet" in str(codec)
    assert float(np.abs(back.t2m.values - data).max()) <= 0.05


@pytest.mark.parametrize("rel", [1e-2, 3e-3])
def test_a_bounded_write_with_the_wavelet_profile_is_never_larger_than_the_video(
    load_cube: Callable[..., Any], tmp_path: Any, rel: float
) -> None:
    # the bound search looks for the video's best alone, then each chunk keeps the
    # smaller coding: the wavelet profile's store is at most the default's, give or
    # take the wavelet payloads' headers (ERA-Interim: 1e-2 keeps the video, 3e-3 the
    # wavelet, 12 % smaller)
    era = np.asarray(load_cube("erainterim_uvz").data)
    ds = xr.Dataset({"data": (("time", "band", "y", "x"), era)})
    span = era.max(axis=(0, 2, 3)).astype(float) - era.min(axis=(0, 2, 3))
    bound = [float(b) for b in rel * span]
    sizes = {}
    for profile in ("hevc-12bit-444", "hevc-12bit-444-wavelet"):
        report = to_eocube(
            ds, tmp_path / f"{profile}.zarr", profile=profile, max_abs_error=bound, measure=False
        )
        sizes[profile] = report.variables["data"].payload_nbytes
    assert sizes["hevc-12bit-444-wavelet"] <= sizes["hevc-12bit-444"] + 200


def test_concurrent_encodes_give_the_same_bytes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    block = _smooth((6, 3, 40, 48), seed=3)

    def encode(_: int) -> bytes:
        return encode_chunk(block, quality=12, wavelet="always")

    with ThreadPoolExecutor(4) as pool:
        payloads = set(pool.map(encode, range(12)))
    assert len(payloads) == 1
    assert read_header(payloads.pop()).wavelet


@pytest.mark.parametrize(
    ("scale", "kwargs"),
    [
        (1e-310, {"quality": 20}),  # float64 subnormals: SPERR aborts the process
        (1e-300, {"quality": 20}),  # SPERR decodes garbage this close to them
        (1e250, {"quality": 20}),
        (1e30, {"max_abs_error": 1e-3}),  # a tolerance beyond float64's precision
    ],
)
def test_values_sperr_cannot_take_stay_video(scale: float, kwargs: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    block = rng.uniform(-1, 1, (3, 2, 9, 11)) * scale
    payload, _ = assert_chunk_roundtrip(block, "hevc-12bit-444", wavelet="always", **kwargs)
    assert not read_header(payload).wavelet
    setting = {"bits_per_value": 4.0} if "quality" in kwargs else {"tolerance": [2e-3, 2e-3]}
    with pytest.raises(ValueError, match="SPERR cannot code"):
        wavelet.encode(block, **setting)  # type: ignore[arg-type]


# --- the rate split among bands (size mode)


@settings(max_examples=200, deadline=None)
@given(
    bands=st.integers(1, 6),
    candidates=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_rates_never_spends_more_nor_scores_less_than_equal_shares(
    bands: int, candidates: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    nbytes = rng.integers(1, 100_000, (bands, candidates))
    psnr = rng.uniform(20, 80, (bands, candidates))
    equal = int(rng.integers(0, candidates))
    pick = wavelet.split_rates(nbytes, psnr, equal)
    rows = np.arange(bands)
    assert pick.shape == (bands,)
    assert nbytes[rows, pick].sum() <= nbytes[:, equal].sum()
    assert psnr[rows, pick].sum() >= psnr[:, equal].sum()


def test_split_rates_moves_bytes_to_the_band_they_buy_more_for() -> None:
    # band 0 gains 1 dB from its extra bytes, band 1 loses 5 dB without them: the
    # best split at the same total gives band 1 more and band 0 less
    nbytes = np.array([[50, 100, 150], [50, 100, 150]])
    psnr = np.array([[40.0, 41.0, 41.5], [30.0, 35.0, 38.0]])
    assert wavelet.split_rates(nbytes, psnr, 1).tolist() == [0, 2]
    # nothing better fits: equal shares
    flat = np.array([[40.0, 45.0, 50.0], [40.0, 45.0, 50.0]])
    assert wavelet.split_rates(nbytes, flat, 1).tolist() == [1, 1]


def _equal_share_section(values: np.ndarray, bits: float) -> tuple[int, float]:
    """Bytes and mean band PSNR of every band at ``bits`` per value, as before the split."""
    import imagecodecs

    total, dbs = 0, []
    for b in range(values.shape[1]):
        band = np.ascontiguousarray(values[:, b])
        blob = imagecodecs.sperr_encode(band, bits, "bpp", numthreads=1)
        total += len(blob)
        decoded = np.asarray(imagecodecs.sperr_decode(blob)).reshape(band.shape)
        decoded = np.clip(decoded, band.min(), band.max())
        dbs.append(metrics.psnr(band[:, None], decoded[:, None]))
    return total, float(np.mean(dbs))


@pytest.mark.parametrize("bits", [0.3, 1.0, 3.0])
def test_size_mode_splits_the_bytes_for_a_higher_mean_psnr(bits: float) -> None:
    # a smooth band and a rough one: equal shares are not the best split
    rng = np.random.default_rng(5)
    smooth = _smooth((4, 1, 40, 48)).astype(np.float64)
    rough = smooth + rng.normal(0, 3, smooth.shape)
    values = np.concatenate([smooth, rough, 0.5 * smooth + 100], axis=1)
    section = wavelet.encode(values, bits_per_value=bits)
    equal_bytes, equal_db = _equal_share_section(values, bits)
    r = ByteReader(section)
    decoded = wavelet.decode(
        r, values.shape, np.dtype(np.float64), low=values.min((0, 2, 3)), high=values.max((0, 2, 3))
    )
    stream_bytes = len(section) - wavelet.section_overhead(values.shape[1])
    assert stream_bytes <= equal_bytes + 3 * values.shape[1]  # varints of the lengths
    # 0.8 to 1.3 dB here: the rough band's bytes buy the smooth ones more
    assert metrics.psnr(values, decoded) > equal_db + 0.3


def test_size_mode_bytes_do_not_depend_on_threads() -> None:
    values = _smooth((3, 4, 24, 20), seed=3).astype(np.float64)
    one = wavelet.encode(values, bits_per_value=1.5, threads=1)
    assert wavelet.encode(values, bits_per_value=1.5, threads=3) == one


def test_the_split_measures_only_the_valid_values() -> None:
    values = _smooth((3, 2, 24, 20), seed=4).astype(np.float64)
    with pytest.raises(ValueError, match="valid has shape"):
        wavelet.encode(values, bits_per_value=1.0, valid=np.ones((3, 2, 24), bool))
    valid = np.ones(values.shape, bool)
    valid[:, 1] = False  # a band with no valid value: every rate decodes it "exactly"
    section = wavelet.encode(values, bits_per_value=1.0, valid=valid)
    assert len(section) < len(wavelet.encode(values, bits_per_value=1.0))
