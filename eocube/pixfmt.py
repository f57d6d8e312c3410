"""Facts about the pixel formats eocube feeds to encoders.

Only formats whose planes are filled directly are used (gray, planar GBR, planar YUV),
so no colour matrix ever sits between the data and the codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from eocube.errors import ProfileError


@dataclass(frozen=True)
class PixelFormat:
    """A planar pixel format.

    Attributes
    ----------
    name : str
        FFmpeg name, e.g. ``"gbrp12le"``.
    bits : int
        Bits per sample.
    planes : int
        Planes in a frame (1 for gray, 3 otherwise).
    data_planes : int
        Planes that carry bands: 3 for 4:4:4, 1 for gray and 4:2:0 (whose chroma planes
        are held constant).
    chroma_subsampled : bool
        Whether planes after the first are half size in both directions (4:2:0).
    """

    name: str
    bits: int
    planes: int
    data_planes: int
    chroma_subsampled: bool

    @property
    def itemsize(self) -> int:
        """Bytes per sample in memory."""
        return 1 if self.bits <= 8 else 2

    @property
    def max_code(self) -> int:
        """Largest sample value."""
        return (1 << self.bits) - 1


def _build() -> dict[str, PixelFormat]:
    table: dict[str, PixelFormat] = {}
    for bits in (8, 9, 10, 12, 14, 16):
        suffix = "" if bits == 8 else f"{bits}le"
        table[f"gray{suffix}"] = PixelFormat(f"gray{suffix}", bits, 1, 1, False)
        table[f"gbrp{suffix}"] = PixelFormat(f"gbrp{suffix}", bits, 3, 3, False)
        yuv444 = f"yuv444p{suffix}"
        yuv420 = f"yuv420p{suffix}"
        table[yuv444] = PixelFormat(yuv444, bits, 3, 3, False)
        table[yuv420] = PixelFormat(yuv420, bits, 3, 1, True)
    return table


PIXEL_FORMATS = _build()


def pixel_format(name: str) -> PixelFormat:
    """Look up a supported pixel format by its FFmpeg name."""
    try:
        return PIXEL_FORMATS[name]
    except KeyError:
        raise ProfileError(
            f"unsupported pixel format {name!r}; supported: {', '.join(sorted(PIXEL_FORMATS))}"
        ) from None
