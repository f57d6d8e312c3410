"""Codec profiles: named encoder settings kept as TOML data in ``codecs/``.

A profile fixes the encoder, the pixel format (and so the bit depth), the band layout,
the encoder options and whether NVDEC can decode the stream. Profiles are data, not
code, so that maintainers can add one without touching eocube.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eocube.errors import ProfileError
from eocube.pixfmt import pixel_format
from eocube.spectral import TRANSFORMS
from eocube.wavelet import CHOICES as WAVELET_CHOICES

LAYOUTS = ("planar3", "luma", "bands-as-frames")
"""Band layouts: how the bands of a block are grouped into frames (see eocube.packing)."""

OWN_CODECS = frozenset({"eocube-pred"})
"""Codec names eocube implements itself (eocube.lossless) rather than FFmpeg through PyAV."""

DEFAULT_PROFILE = "hevc-12bit-444"
DEFAULT_LOSSLESS_PROFILE = "ffv1-lossless"
# below a profile's video_min, each this many quality steps double the wavelet coding's
# bytes: about the rate at which x265's crf halves the video's, so that rate control's
# secant steps on log(bytes) against quality meet a similar slope across the whole scale
WAVELET_STEPS_PER_DOUBLING = 6

_HERE = Path(__file__).resolve().parent
# In a wheel the profiles ship inside the package; in a source checkout they live in codecs/.
PROFILE_DIRS = (_HERE / "profiles_data", _HERE.parent / "codecs")


@dataclass(frozen=True)
class Quality:
    """The encoder option that sets quality (e.g. ``crf``), its default, bounds and step.

    ``step`` is the finest increment the encoder honours (x265 takes fractional crf).
    ``fine_option``, where set, is a finer scale below 0 in whole steps: a quality
    ``q < 0`` sets that option to ``q - min`` instead of ``option``, so ``min`` (a
    negative integer) reaches its level 0. x265's profiles use its constant ``qp``
    there: crf 0 still lets x265's rate control quantise at about QP 5 to 7, while QP
    0 is the finest step x265 takes, what tight error bounds and high rate targets need
    (benchmarks/results/error_bounded_climate).

    ``video_min``, where set (profiles with a wavelet coder only), is the finest quality
    the video takes; qualities from there down to ``min`` (in ``step`` increments) keep
    the video at ``video_min`` and give the wavelet coding of a chunk
    :meth:`wavelet_share` times the bytes of that video (twice every
    :data:`WAVELET_STEPS_PER_DOUBLING` steps), so that rates beyond the video's
    saturation are spent by the coder that can spend them (smooth fields: SPERR's
    rate, not a residual layer over a saturated video).
    """

    option: str
    default: float
    min: float
    max: float
    step: float = 1.0
    fine_option: str | None = None
    video_min: float | None = None

    def __post_init__(self) -> None:
        if not self.min <= self.default <= self.max or self.step <= 0:
            raise ProfileError(
                f"quality {self.option}: needs min <= default <= max and step > 0, got "
                f"{self.min:g} <= {self.default:g} <= {self.max:g}, step {self.step:g}"
            )
        if self.video_min is not None and not self.min <= self.video_min <= self.default:
            raise ProfileError(
                f"quality {self.option}: needs min <= video_min <= default, got "
                f"{self.min:g} <= {self.video_min:g} <= {self.default:g}"
            )
        floor = self.video_floor
        if self.fine_option is not None and not (floor < 0 and float(floor).is_integer()):
            raise ProfileError(
                f"quality {self.option}: fine_option {self.fine_option!r} needs a negative "
                f"whole min (video_min where set: its levels run from there to -1), got {floor:g}"
            )

    @property
    def video_floor(self) -> float:
        """The finest quality the video itself takes (``video_min``, else ``min``)."""
        return self.min if self.video_min is None else self.video_min

    def snap(self, value: float) -> float:
        """The nearest quality the encoder honours, within ``min`` .. ``max``."""
        value = min(max(float(value), self.min), self.max)
        if self.fine_option is not None and self.video_floor <= value < 0:
            return float(round(value)) + 0.0  # whole levels; + 0.0 turns -0.0 into 0.0
        return float(min(max(round(value / self.step) * self.step, self.min), self.max))

    def setting(self, value: float) -> tuple[str, str]:
        """The option (``option``, or ``fine_option`` below 0) and its value as the
        encoder wants it; below ``video_min``, those of ``video_min``."""
        snapped = max(self.snap(value), self.video_floor)
        if self.fine_option is not None and snapped < 0:
            return self.fine_option, str(int(snapped - self.video_floor))
        return self.option, str(int(snapped)) if snapped.is_integer() else f"{snapped:.6g}"

    def wavelet_share(self, value: float) -> float:
        """How many times the bytes of the video at ``video_min`` a chunk's wavelet
        coding gets at quality ``value``: 1 from ``video_min`` up, doubling every
        :data:`WAVELET_STEPS_PER_DOUBLING` steps below it."""
        below = self.video_floor - self.snap(value)
        return 2.0 ** (below / WAVELET_STEPS_PER_DOUBLING) if below > 0 else 1.0


@dataclass(frozen=True)
class Profile:
    """A named, validated set of encoder settings.

    Parameters
    ----------
    name : str
        Profile name, e.g. ``"hevc-12bit-444"``.
    description : str
        One line for humans.
    encoder, decoder : str
        FFmpeg codec names used through PyAV.
    pix_fmt : str
        Pixel format fed to the encoder and read back from the decoder.
    bits : int
        Bit depth of the codes: values are mapped onto ``0 .. 2**bits - 1``.
    layout : str
        One of :data:`LAYOUTS`.
    lossless : bool
        Whether the encoder options make the stream lossless.
    gpu_decodable : bool
        Whether NVDEC decodes the main stream on Turing, A100 and H100 and newer.
    options : Mapping[str, str]
        Encoder options (AVOptions); nested tables become ``key=value:...`` strings.
    extra_pix_fmt : str or None
        Pixel format of the stream holding the one or two bands left over by ``planar3``.
    quality : Quality or None
        The quality option of lossy profiles.
    transform : str
        ``"none"``, or ``"klt"``: lossy profiles may rotate the bands of each chunk onto
        their principal components before packing (eocube.spectral).
    wavelet : str
        One of :data:`eocube.wavelet.CHOICES`: whether lossy chunks may be coded by the
        wavelet coder instead of the video (``"auto"``: where it codes them better;
        :func:`eocube.chunk.encode_chunk`). Such chunks decode on the CPU only.
    """

    name: str
    description: str
    encoder: str
    decoder: str
    pix_fmt: str
    bits: int
    layout: str
    lossless: bool
    gpu_decodable: bool
    options: Mapping[str, str] = field(default_factory=dict)
    extra_pix_fmt: str | None = None
    quality: Quality | None = None
    transform: str = "none"
    wavelet: str = "off"

    def __post_init__(self) -> None:
        if self.wavelet not in WAVELET_CHOICES:
            raise ProfileError(
                f"profile {self.name!r}: unknown wavelet setting {self.wavelet!r}; "
                f"valid: {', '.join(WAVELET_CHOICES)}"
            )
        if self.lossless and self.wavelet != "off":
            raise ProfileError(f"profile {self.name!r}: a lossless profile takes no wavelet coder")
        video_min = None if self.quality is None else self.quality.video_min
        if video_min is not None and self.wavelet == "off":
            raise ProfileError(
                f"profile {self.name!r}: quality video_min needs a wavelet coder to spend the "
                'qualities below it (wavelet = "auto" or "always")'
            )
        if self.transform not in TRANSFORMS:
            raise ProfileError(
                f"profile {self.name!r}: unknown transform {self.transform!r}; "
                f"valid: {', '.join(TRANSFORMS)}"
            )
        if self.lossless and self.transform != "none":
            raise ProfileError(
                f"profile {self.name!r}: a lossless profile takes no transform "
                f"(the {self.transform} rotation is not exact in integers)"
            )
        if self.layout not in LAYOUTS:
            raise ProfileError(
                f"profile {self.name!r}: unknown layout {self.layout!r}; "
                f"valid: {', '.join(LAYOUTS)}"
            )
        main = pixel_format(self.pix_fmt)
        if main.bits != self.bits:
            raise ProfileError(
                f"profile {self.name!r}: bits = {self.bits} but {self.pix_fmt} has {main.bits}"
            )
        if self.layout == "planar3":
            if main.data_planes != 3:
                raise ProfileError(
                    f"profile {self.name!r}: layout planar3 needs a 3-plane 4:4:4 pixel format, "
                    f"not {self.pix_fmt}"
                )
            if self.extra_pix_fmt is None:
                raise ProfileError(f"profile {self.name!r}: planar3 needs extra_pix_fmt")
            extra = pixel_format(self.extra_pix_fmt)
            if extra.bits != self.bits or extra.data_planes != 1:
                raise ProfileError(
                    f"profile {self.name!r}: extra_pix_fmt {self.extra_pix_fmt} must be a "
                    f"single-plane format of {self.bits} bits"
                )
        elif main.data_planes != 1:
            raise ProfileError(
                f"profile {self.name!r}: layout {self.layout} needs a gray or 4:2:0 pixel format, "
                f"not {self.pix_fmt}"
            )
        if (self.encoder in OWN_CODECS or self.decoder in OWN_CODECS) and (
            self.encoder != self.decoder or self.pix_fmt != "gray16le" or not self.lossless
        ):
            raise ProfileError(
                f"profile {self.name!r}: eocube's own coder {self.encoder!r} is lossless, "
                f"takes gray16le frames and decodes with itself"
            )
        if not self.lossless and self.quality is None:
            raise ProfileError(f"profile {self.name!r}: a lossy profile needs a [quality] table")

    def encoder_options(self, quality: float | None = None) -> dict[str, str]:
        """The encoder options, with the quality option set to ``quality`` (or the default).

        Raises
        ------
        ProfileError
            If ``quality`` is given for a lossless profile or lies outside the profile's range.
        """
        opts = dict(self.options)
        if self.quality is None:
            if quality is not None:
                raise ProfileError(f"profile {self.name!r} is lossless: it takes no quality")
            return opts
        q = self.quality.default if quality is None else float(quality)
        if not self.quality.min <= q <= self.quality.max:
            raise ProfileError(
                f"profile {self.name!r}: {self.quality.option}={q:g} is outside "
                f"{self.quality.min:g}..{self.quality.max:g}"
            )
        option, text = self.quality.setting(q)
        opts[option] = text
        return opts


def _option_value(key: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return ":".join(f"{k}={_option_value(k, v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    raise ProfileError(f"option {key!r}: unsupported value {value!r}")


def parse_profile(data: Mapping[str, Any], source: str = "<dict>") -> Profile:
    """Build a :class:`Profile` from the contents of a profile TOML file."""
    known = set(Profile.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ProfileError(f"{source}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
    try:
        kwargs = dict(data)
        kwargs["options"] = {k: _option_value(k, v) for k, v in data.get("options", {}).items()}
        if "quality" in data:
            try:
                kwargs["quality"] = Quality(**data["quality"])
            except ProfileError as exc:
                raise ProfileError(f"{source}: {exc}") from None
        return Profile(**kwargs)
    except TypeError as exc:
        raise ProfileError(f"{source}: {exc}") from None


@functools.cache
def _load_all() -> dict[str, Profile]:
    raw: dict[str, tuple[dict[str, Any], Path]] = {}
    for folder in PROFILE_DIRS:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            with path.open("rb") as fh:
                raw.setdefault(path.stem, (tomllib.load(fh), path))
    if not raw:
        raise ProfileError(f"no codec profiles found in {[str(p) for p in PROFILE_DIRS]}")
    profiles = {}
    for stem, (_, path) in raw.items():
        profile = parse_profile(_resolve_extends(stem, raw), source=str(path))
        if profile.name != stem:
            raise ProfileError(f"{path}: name {profile.name!r} differs from the file name")
        profiles[stem] = profile
    return profiles


def _resolve_extends(
    stem: str, raw: Mapping[str, tuple[dict[str, Any], Path]], seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A profile file's contents with ``extends = "<profile>"`` resolved: the base
    profile's keys, tables merged key by key, overridden by the file's own."""
    data, path = raw[stem]
    base_name = data.get("extends")
    if base_name is None:
        return dict(data)
    if base_name in (*seen, stem):
        raise ProfileError(f"{path}: profiles extend each other in a cycle: {stem} -> {base_name}")
    if base_name not in raw:
        raise ProfileError(f"{path}: extends unknown profile {base_name!r}")
    return _merged(_resolve_extends(base_name, raw, (*seen, stem)), data, drop="extends")


def _merged(base: Mapping[str, Any], over: Mapping[str, Any], drop: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if key == drop:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def available_profiles() -> dict[str, Profile]:
    """All installed profiles by name."""
    return dict(_load_all())


def get_profile(profile: str | Profile | None = None, *, lossless: bool = False) -> Profile:
    """Resolve a profile name (or pass a :class:`Profile` through).

    ``None`` gives the default lossy profile, or the default lossless one when
    ``lossless`` is true.

    Raises
    ------
    ProfileError
        For an unknown name (the message lists the valid ones).
    """
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        profile = DEFAULT_LOSSLESS_PROFILE if lossless else DEFAULT_PROFILE
    profiles = _load_all()
    try:
        return profiles[profile]
    except KeyError:
        raise ProfileError(
            f"unknown profile {profile!r}; valid profiles: {', '.join(sorted(profiles))}"
        ) from None
