"""Codec profiles: the TOML files in codecs/ load, validate and bound their quality."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from eocube import ProfileError, encode_chunk, profiles, video
from eocube.errors import CodecError
from eocube.pixfmt import pixel_format
from eocube.profiles import (
    DEFAULT_LOSSLESS_PROFILE,
    DEFAULT_PROFILE,
    LAYOUTS,
    OWN_CODECS,
    Profile,
    available_profiles,
    get_profile,
    parse_profile,
)

CODECS = Path(__file__).resolve().parent.parent / "codecs"
TOML_FILES = sorted(CODECS.glob("*.toml"))
REQUIRED = ["hevc-12bit-444", "hevc-12bit-420-luma", "av1-10bit", "ffv1-lossless", "hevc-lossless"]


def _valid(**changes: Any) -> dict[str, Any]:
    """A valid lossy profile dict, with ``changes`` applied (None deletes a key)."""
    data: dict[str, Any] = {
        "name": "test",
        "description": "a test profile",
        "encoder": "libx265",
        "decoder": "hevc",
        "pix_fmt": "yuv420p12le",
        "bits": 12,
        "layout": "luma",
        "lossless": False,
        "gpu_decodable": True,
        "quality": {"option": "crf", "default": 16, "min": 0, "max": 51},
        "options": {"preset": "medium", "x265-params": {"aq-mode": 0, "ctu": 32}},
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def test_codecs_folder_holds_profiles() -> None:
    assert len(TOML_FILES) >= 5
    assert sorted(available_profiles()) == sorted(p.stem for p in TOML_FILES)


@pytest.mark.parametrize("path", TOML_FILES, ids=lambda p: p.stem)
def test_every_toml_profile_loads_and_validates(path: Path) -> None:
    raw = {}
    for other in TOML_FILES:
        with other.open("rb") as fh:
            raw[other.stem] = (tomllib.load(fh), other)
    # a profile that extends another is the other's keys under its own
    parsed = parse_profile(profiles._resolve_extends(path.stem, raw), source=str(path))
    loaded = get_profile(path.stem)
    assert parsed == loaded
    assert loaded.name == path.stem
    assert loaded.layout in LAYOUTS
    assert pixel_format(loaded.pix_fmt).bits == loaded.bits
    if loaded.layout == "planar3":
        assert loaded.extra_pix_fmt is not None
        assert pixel_format(loaded.pix_fmt).data_planes == 3
        assert pixel_format(loaded.extra_pix_fmt).data_planes == 1
    else:
        assert pixel_format(loaded.pix_fmt).data_planes == 1
    assert loaded.lossless == (loaded.quality is None)
    # the codecs named exist in the PyAV wheel
    # eocube's own coders (eocube.lossless) are no FFmpeg codecs
    assert loaded.encoder in av.codecs_available or loaded.encoder in OWN_CODECS
    assert loaded.decoder in av.codecs_available or loaded.decoder in OWN_CODECS
    # options are plain strings, ready to be AVOptions
    opts = loaded.encoder_options()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in opts.items())
    if loaded.quality is not None:
        assert opts[loaded.quality.option] == str(loaded.quality.default)
        assert loaded.quality.min <= loaded.quality.default <= loaded.quality.max


@pytest.mark.parametrize("name", REQUIRED)
def test_required_profiles_exist(name: str) -> None:
    profile = get_profile(name)
    assert isinstance(profile, Profile)
    assert profile.name == name


def test_required_profiles_have_the_promised_shape() -> None:
    assert get_profile("hevc-12bit-444").layout == "planar3"
    assert get_profile("hevc-12bit-444").pix_fmt == "yuv444p12le"
    assert get_profile("hevc-12bit-444").extra_pix_fmt == "yuv420p12le"
    assert get_profile("hevc-12bit-444-gbr").pix_fmt == "gbrp12le"
    assert get_profile("hevc-12bit-420-luma").gpu_decodable
    assert get_profile("av1-10bit").bits == 10
    assert get_profile("ffv1-lossless").lossless
    assert get_profile("ffv1-lossless").bits == 16
    assert get_profile("hevc-lossless").lossless
    assert get_profile("hevc-lossless").bits == 12
    # x265 lossless is switched on by its options, not by a quality value
    assert "lossless=1" in get_profile("hevc-lossless").encoder_options()["x265-params"]


def test_nested_option_tables_become_avoption_strings() -> None:
    opts = get_profile("hevc-12bit-444").encoder_options()
    params = dict(item.split("=") for item in opts["x265-params"].split(":"))
    assert params["ctu"] == "32"
    assert params["psy-rd"] == "0"
    profile = parse_profile(_valid(options={"flag": True, "off": False, "rate": 1.5}))
    assert dict(profile.options) == {"flag": "1", "off": "0", "rate": "1.5"}


def test_default_profiles() -> None:
    assert get_profile().name == DEFAULT_PROFILE
    assert get_profile(None, lossless=True).name == DEFAULT_LOSSLESS_PROFILE
    assert get_profile(None, lossless=True).lossless
    profile = parse_profile(_valid())
    assert get_profile(profile) is profile


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'hevc-13bit'") as info:
        get_profile("hevc-13bit")
    for name in available_profiles():
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "red"}, "unknown keys"),
        ({"encoder": None}, "encoder"),
        ({"layout": "diagonal"}, "unknown layout"),
        ({"bits": 10}, "bits = 10"),
        ({"pix_fmt": "rgb48le"}, "unsupported pixel format"),
        ({"layout": "planar3"}, "planar3 needs a 3-plane"),
        ({"layout": "planar3", "pix_fmt": "gbrp12le"}, "planar3 needs extra_pix_fmt"),
        (
            {"layout": "planar3", "pix_fmt": "gbrp12le", "extra_pix_fmt": "gray10le"},
            "single-plane format of 12 bits",
        ),
        (
            {"layout": "planar3", "pix_fmt": "gbrp12le", "extra_pix_fmt": "gbrp12le"},
            "single-plane format",
        ),
        ({"pix_fmt": "gbrp12le"}, "needs a gray or 4:2:0"),
        ({"quality": None}, "needs a \\[quality\\] table"),
        ({"quality": {"option": "crf", "default": 1}}, "min"),
        ({"options": {"x": [1, 2]}}, "unsupported value"),
    ],
)
def test_parse_profile_rejects_invalid(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile(_valid(**changes), source="bad.toml")


def test_parse_profile_error_names_the_source() -> None:
    with pytest.raises(ProfileError, match=r"^bad\.toml: unknown keys \['colour'\]"):
        parse_profile(_valid(colour="red"), source="bad.toml")


def test_fine_quality_scale_below_zero_sets_its_own_option() -> None:
    profile = parse_profile(
        _valid(
            quality={
                "option": "crf",
                "default": 16,
                "min": -6,
                "max": 44,
                "step": 0.25,
                "fine_option": "qp",
            }
        )
    )
    q = profile.quality
    assert q is not None
    # whole steps below 0, the scale's own step above it
    assert [q.snap(v) for v in (-7, -6, -2.6, -0.6, -0.4, 0.1, 16.3)] == [
        -6,
        -6,
        -3,
        -1,
        0,
        0,
        16.25,
    ]
    assert q.setting(-6) == ("qp", "0")
    assert q.setting(-1) == ("qp", "5")
    assert q.setting(0) == ("crf", "0")
    assert q.setting(2.5) == ("crf", "2.5")
    options = profile.encoder_options(-2)
    assert options["qp"] == "4"
    assert "crf" not in options
    coarser = profile.encoder_options(3)
    assert coarser["crf"] == "3"
    assert "qp" not in coarser


@pytest.mark.parametrize("bad", [{"min": 0}, {"min": -2.5}])
def test_fine_quality_scale_needs_a_negative_whole_min(bad: dict[str, float]) -> None:
    quality = {"option": "crf", "default": 16, "min": -6, "max": 44, "fine_option": "qp"}
    with pytest.raises(ProfileError, match="fine_option 'qp' needs a negative whole min"):
        parse_profile(_valid(quality={**quality, **bad}))


def test_quality_default_must_lie_in_its_range() -> None:
    with pytest.raises(ProfileError, match="min <= default <= max"):
        parse_profile(_valid(quality={"option": "crf", "default": 50, "min": 0, "max": 44}))


def test_lossless_profile_without_quality_is_valid() -> None:
    profile = parse_profile(_valid(lossless=True, quality=None))
    assert profile.quality is None
    assert "crf" not in profile.encoder_options()


@pytest.mark.parametrize("name", sorted(n for n, p in available_profiles().items() if p.quality))
def test_quality_bounds_enforced(name: str) -> None:
    profile = get_profile(name)
    q = profile.quality
    assert q is not None
    finest, finest_value = (q.option, str(q.min)) if q.fine_option is None else (q.fine_option, "0")
    assert profile.encoder_options(q.min)[finest] == finest_value
    assert profile.encoder_options(q.max)[q.option] == str(q.max)
    for bad in (q.min - 1, q.max + 1):
        with pytest.raises(ProfileError, match=f"{q.option}={bad} is outside {q.min}..{q.max}"):
            profile.encoder_options(bad)


@pytest.mark.parametrize("name", sorted(n for n, p in available_profiles().items() if p.lossless))
def test_lossless_profiles_take_no_quality(name: str) -> None:
    with pytest.raises(ProfileError, match="lossless: it takes no quality"):
        get_profile(name).encoder_options(10)


def test_encode_chunk_enforces_quality_bounds() -> None:
    block = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 1, 16, 16)
    with pytest.raises(ProfileError, match="crf=52"):
        encode_chunk(block, "hevc-12bit-444", quality=52)
    with pytest.raises(ProfileError, match="takes no quality"):
        encode_chunk(block, "ffv1-lossless", quality=0)
    with pytest.raises(ProfileError, match="valid profiles"):
        encode_chunk(block, "no-such-profile")


@pytest.mark.parametrize("name", sorted(available_profiles()))
def test_every_profile_option_is_taken_by_its_encoder(name: str) -> None:
    prof = get_profile(name)
    assert video.unknown_options(prof.encoder, prof.pix_fmt, prof.encoder_options()) == ()


@pytest.mark.parametrize(
    ("encoder", "pix_fmt", "options", "skipped"),
    [
        ("libx265", "yuv444p12le", {"presett": "slow"}, ("presett",)),
        (
            "libx265",
            "yuv444p12le",
            {"x265-params": "rdoq-levl=2:ref=3"},
            ("x265-params: rdoq-levl",),
        ),
        (
            "libx265",
            "yuv420p12le",
            {"x265-params": "weightp=maybe"},
            ("x265-params: weightp=maybe",),
        ),
        ("libx264", "yuv420p10le", {"x264-params": "bogus=1:ref=3"}, ("x264-params: bogus=1",)),
        ("libsvtav1", "yuv420p10le", {"svtav1-params": "bogus=1"}, ("svtav1-params: bogus=1",)),
        ("ffv1", "gray16le", {"level": "3", "contextt": "1"}, ("contextt",)),
        ("libx265", "yuv444p12le", {"preset": "fast", "x265-params": "ref=3"}, ()),
    ],
)
def test_unknown_options_names_what_the_encoder_would_skip(
    encoder: str, pix_fmt: str, options: dict[str, str], skipped: tuple[str, ...]
) -> None:
    assert video.unknown_options(encoder, pix_fmt, options) == skipped


def test_unknown_options_leaves_pyav_logging_as_it_was() -> None:
    import av.logging

    before = av.logging.get_level()
    video.unknown_options("libx265", "yuv420p12le", {"x265-params": "nope=1"})
    assert av.logging.get_level() == before


def test_an_encoder_that_will_not_open_names_the_refused_parameters_too() -> None:
    with pytest.raises(CodecError, match="refused x265-params: nope"):
        video.unknown_options("libx265", "yuv420p12le", {"x265-params": "nope=1:rd=99"})


def test_encode_chunk_refuses_a_profile_option_the_encoder_would_skip() -> None:
    block = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 1, 16, 16)
    typo = parse_profile(
        _valid(options={"preset": "medium", "x265-params": {"aq-mod": 0, "ctu": 32}})
    )
    with pytest.raises(ProfileError, match=r"'test'.*would skip x265-params: aq-mod"):
        encode_chunk(block, typo)
    fine = parse_profile(_valid())
    assert encode_chunk(block, fine)


# What NVDEC decodes (HEVC, Turing and later): 4:2:0 and YUV 4:4:4, 8 to 12 bits; not
# GBR-signalled 4:4:4 through FFmpeg's hwaccel, not monochrome.
NVDEC_HEVC = {"yuv420p", "yuv420p10le", "yuv420p12le", "yuv444p", "yuv444p10le", "yuv444p12le"}


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 5, 13])
def test_every_stream_of_the_default_profile_is_nvdec_decodable(bands: int) -> None:
    from eocube.chunk import decode_chunk, parse_chunk

    rng = np.random.default_rng(bands)
    block = rng.integers(0, 4000, (4, bands, 40, 48), dtype=np.uint16)
    payload = encode_chunk(block)  # the default profile
    streams = parse_chunk(payload).streams
    assert streams
    for stream in streams:
        assert stream.decoder == "hevc"
        assert stream.pix_fmt in NVDEC_HEVC, stream.pix_fmt
    assert decode_chunk(payload).shape == block.shape


def test_the_former_default_still_reads() -> None:
    from eocube.chunk import decode_chunk, parse_chunk

    rng = np.random.default_rng(0)
    base = rng.integers(0, 4000, (4, 1, 40, 48)).astype(np.float64)
    block = (base + rng.integers(0, 300, (4, 4, 40, 48))).astype(np.uint16)
    payload = encode_chunk(block, "hevc-12bit-444-gbr", quality=16)
    assert [s.pix_fmt for s in parse_chunk(payload).streams] == ["gbrp12le", "gray12le"]
    old = decode_chunk(payload)
    assert old.shape == block.shape
    new = decode_chunk(encode_chunk(block, quality=16))
    error_old = np.abs(old.astype(int) - block).mean()
    error_new = np.abs(new.astype(int) - block).mean()
    assert 0.9 * error_new < error_old < 1.1 * error_new
    # three bands fill the main stream alone: the same slice data, signalled as GBR or
    # as YUV, gives the same values
    three = block[:, :3]
    np.testing.assert_array_equal(
        decode_chunk(encode_chunk(three, "hevc-12bit-444-gbr", quality=16)),
        decode_chunk(encode_chunk(three, quality=16)),
    )


def test_profiles_extend_others_table_by_table() -> None:
    raw: Any = {
        "base": (_valid(name="base"), None),
        "child": (
            {
                "extends": "base",
                "name": "child",
                "wavelet": "auto",
                "options": {"x265-params": {"ctu": 16}},
            },
            None,
        ),
        "loop": ({"extends": "loop2", "name": "loop"}, "loop.toml"),
        "loop2": ({"extends": "loop", "name": "loop2"}, "loop2.toml"),
        "orphan": ({"extends": "nowhere", "name": "orphan"}, "orphan.toml"),
    }
    child = parse_profile(profiles._resolve_extends("child", raw))
    assert child.wavelet == "auto"
    assert child.quality is not None
    assert child.quality.default == 16
    assert child.options == {"preset": "medium", "x265-params": "aq-mode=0:ctu=16"}
    with pytest.raises(ProfileError, match="cycle"):
        profiles._resolve_extends("loop", raw)
    with pytest.raises(ProfileError, match="extends unknown profile 'nowhere'"):
        profiles._resolve_extends("orphan", raw)


def test_profile_wavelet_settings_are_checked() -> None:
    with pytest.raises(ProfileError, match="lossless profile takes no wavelet"):
        parse_profile(_valid(lossless=True, quality=None, wavelet="auto"))
    with pytest.raises(ProfileError, match="unknown wavelet setting 'maybe'"):
        parse_profile(_valid(wavelet="maybe"))


def test_qualities_below_video_min_are_the_wavelets() -> None:
    quality = {
        "option": "crf", "default": 16, "min": -30, "max": 44, "step": 0.25,
        "fine_option": "qp", "video_min": -6,
    }  # fmt: skip
    profile = parse_profile(_valid(quality=quality, wavelet="auto"))
    q = profile.quality
    assert q is not None
    # the video's scale is unchanged down to video_min (QP counted from there) ...
    assert q.setting(-6) == ("qp", "0")
    assert q.setting(-1) == ("qp", "5")
    assert q.snap(-2.6) == -3
    # ... below it the video stays at its finest, in the scale's own steps, and the
    # wavelet coding's bytes double every WAVELET_STEPS_PER_DOUBLING steps
    assert q.snap(-12.3) == -12.25
    assert profile.encoder_options(-30) == profile.encoder_options(-6)
    assert [q.wavelet_share(v) for v in (16, -6, -12, -30)] == [1, 1, 2, 16]
    assert profiles.WAVELET_STEPS_PER_DOUBLING == 6
    with pytest.raises(ProfileError, match=r"-31 is outside -30\.\.44"):
        profile.encoder_options(-31)
    with pytest.raises(ProfileError, match="video_min needs a wavelet coder"):
        parse_profile(_valid(quality=quality))
    for bad in (-40, 20):
        with pytest.raises(ProfileError, match="min <= video_min <= default"):
            parse_profile(_valid(quality={**quality, "video_min": bad}, wavelet="auto"))
    with pytest.raises(ProfileError, match="needs a negative whole min"):
        parse_profile(_valid(quality={**quality, "video_min": -6.5}, wavelet="auto"))


def _documented_options() -> dict[str, str]:
    """The 'main options' cell of each row of docs/format.md's table of shipped profiles."""
    text = (CODECS.parent / "docs" / "format.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in text.split("The profiles shipped:", 1)[1].splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0].split("`")[1]] = cells[-1]
        elif rows and not line.startswith("|"):
            break
    return rows


def _parsed_options(cell: str) -> dict[str, str]:
    """``k=v; k=v (a remark)`` as a dict, remarks in brackets dropped."""
    pairs = [re.sub(r"\s*\(.*?\)", "", part).strip() for part in cell.split(";")]
    return dict(pair.split("=", 1) for pair in pairs if pair)


def test_the_format_documents_every_profiles_encoder_options() -> None:
    documented = _documented_options()
    shipped = available_profiles()
    assert {n for n, p in shipped.items() if p.encoder not in OWN_CODECS} <= set(documented)
    for name, cell in documented.items():
        options = shipped[name].options
        if cell.startswith("as "):
            assert options == shipped[cell.removeprefix("as ").strip("`")].options, name
        else:
            assert options == _parsed_options(cell), f"docs/format.md, profile {name}"
