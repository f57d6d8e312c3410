"""What users would pick instead of eocube: lossy and lossless codecs, applied as a user would.

:data:`METHODS` is the one registry of competitors: benchmarks.rd sweeps every method of
it; benchmarks.error_bounded runs those with an :class:`ErrorBounded` mode (SZ3, SPERR).

Every method encodes the same (T, B, Y, X) array and is decoded back to it; what is
counted is every byte a reader needs: the codec streams plus the small side information
(per-band ranges, 16 bytes a band, where a method stretches bands) plus, for the lossy
methods, the mask of invalid values (NaN or nodata) compressed as eocube stores it
(zlib of the packed bits). No container or metadata is counted, which flatters the
competitors slightly against eocube's whole-store bytes.

Lossy methods cannot carry NaN or a nodata value through their transforms: invalid
values are filled with the band's mean valid value before encoding and put back on
decode from the mask. Integer data are fed as float32 (exact for 8/16-bit integers) to
the floating-point compressors and rounded back; image codecs get each band as one
16-bit image (the band's valid range stretched to 0..65535) in which the dates are
stacked vertically (T·Y × X), so headers are paid once per band, not per date.

Lossless methods (integer data only, except zstd) store the values exactly as they are,
nodata included; image codecs get ``value − band minimum`` (it must fit 16 bits).

Under a hard error bound (:class:`ErrorBounded`), a method gets one band as one
(time, y, x) field and the absolute bound, and returns its compressed bytes and decode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- helpers


@dataclass
class Encoded:
    """Streams and side information of one encoded cube."""

    blobs: list[bytes]
    side_bytes: int = 0
    mask: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blobs) + self.side_bytes + len(self.mask)


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    from eocube import metrics

    return metrics.valid_mask(values, nodata)


def _band_stats(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    B = values.shape[1]
    mins, maxs, means = np.zeros(B), np.zeros(B), np.zeros(B)
    for b in range(B):
        v = values[:, b][valid[:, b]]
        if v.size:
            v = v.astype(np.float64)
            mins[b], maxs[b], means[b] = v.min(), v.max(), v.mean()
    return mins, maxs, means


def _filled(values: np.ndarray, valid: np.ndarray, means: np.ndarray, dtype: Any) -> np.ndarray:
    """The cube as ``dtype`` with invalid values set to their band's mean valid value."""
    out = values.astype(dtype, copy=True)
    if not valid.all():
        fill = np.broadcast_to(means.astype(dtype)[None, :, None, None], out.shape)
        out[~valid] = fill[~valid]
    return out


def _restore(
    decoded: np.ndarray, values_dtype: np.dtype, valid_mask: np.ndarray | None, nodata: float | None
) -> np.ndarray:
    """Back to the original dtype; invalid values back to NaN / nodata."""
    if values_dtype.kind in "iu":
        info = np.iinfo(values_dtype)
        out = np.clip(np.rint(decoded), info.min, info.max).astype(values_dtype)
    else:
        out = decoded.astype(values_dtype)
    if valid_mask is not None and not valid_mask.all():
        if nodata is not None and not math.isnan(nodata):
            out[~valid_mask] = nodata
        elif values_dtype.kind == "f":
            out[~valid_mask] = np.nan
    return out


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _mask_bytes(valid: np.ndarray) -> bytes:
    from benchmarks.common import mask_bytes

    return mask_bytes(~valid)


def _unmask(blob: bytes, shape: tuple[int, ...]) -> np.ndarray:
    import zlib

    if not blob:
        return np.ones(shape, bool)
    bits = np.frombuffer(zlib.decompress(blob), np.uint8)
    return ~np.unpackbits(bits, count=math.prod(shape)).view(bool).reshape(shape)


def _squeeze_time(a: np.ndarray) -> np.ndarray:
    """(T, Y, X) → (Y, X) when T == 1 (2-D codecs paths are better for one date)."""
    return a[0] if a.shape[0] == 1 else a


def _shuffle(a: np.ndarray) -> bytes:
    """Byte shuffle (as blosc / HDF5 shuffle): byte k of every value together."""
    return np.ascontiguousarray(a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize).T).tobytes()


def _unshuffle(buf: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    raw = np.frombuffer(buf, np.uint8).reshape(itemsize, -1).T.copy()
    return raw.view(dtype).reshape(shape)


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class ErrorBounded:
    """How a method compresses one field under a hard absolute error bound.

    ``coder(field, bound) -> (compressed bytes, decoded field)`` (benchmarks.error_bounded
    gives it each band as one (time, y, x) field); ``note`` says how it is applied.
    """

    coder: Callable[[np.ndarray, float], tuple[int, np.ndarray]]
    note: str


@dataclass
class Method:
    """A compressor with a sweep of settings.

    ``encode(values, nodata, setting) -> Encoded`` and ``decode(enc) -> ndarray`` are
    timed around the whole user-visible work (fill, stretch, mask included).
    ``error_bounded`` is the method's hard-error-bound mode, where it has one; ``style``
    its line on the plots; ``summary_column`` whether benchmarks.rd's summary gives it a
    column of its per-cube PSNR table.
    """

    name: str
    lossless: bool
    settings_full: Sequence[dict[str, Any]]
    settings_quick: Sequence[dict[str, Any]]
    encode: Callable[[np.ndarray, float | None, dict[str, Any]], Encoded]
    decode: Callable[[Encoded], np.ndarray]
    applies: Callable[[np.ndarray, float | None], str | None] = lambda v, n: None
    note: str = ""
    int_settings_full: Sequence[dict[str, Any]] | None = None
    int_settings_quick: Sequence[dict[str, Any]] | None = None
    error_bounded: ErrorBounded | None = None
    style: dict[str, Any] = field(default_factory=dict)
    summary_column: bool = True

    def settings(self, values: np.ndarray, quick: bool) -> list[dict[str, Any]]:
        """The sweep for this cube (some methods sweep another knob on integer data)."""
        if values.dtype.kind in "iu" and self.int_settings_full is not None:
            chosen = self.int_settings_quick if quick else self.int_settings_full
        else:
            chosen = self.settings_quick if quick else self.settings_full
        return [dict(s) for s in chosen or ()]

    def label(self, setting: dict[str, Any]) -> str:
        return (
            ", ".join(
                f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in setting.items()
            )
            or "default"
        )


def _prep_lossy(values: np.ndarray, nodata: float | None, dtype: Any) -> tuple:
    valid = _valid(values, nodata)
    mins, maxs, means = _band_stats(values, valid)
    return valid, mins, maxs, _filled(values, valid, means, dtype)


def _finish_lossy(enc: Encoded, decoded: np.ndarray) -> np.ndarray:
    shape = enc.state["shape"]
    valid = _unmask(enc.mask, shape)
    return _restore(decoded, np.dtype(enc.state["dtype"]), valid, enc.state["nodata"])


def _state(values: np.ndarray, nodata: float | None, **more: Any) -> dict[str, Any]:
    return {"shape": values.shape, "dtype": values.dtype.str, "nodata": nodata, **more}


# --- SZ3 (pysz): absolute error bound = rel × the band's valid range, per band (T, Y, X)


def sz3_encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
    from pysz import sz, szConfig, szErrorBoundMode

    fdt = _float_dtype(values.dtype)
    valid, mins, maxs, data = _prep_lossy(values, nodata, fdt)
    blobs = []
    for b in range(values.shape[1]):
        conf = szConfig()
        conf.errorBoundMode = szErrorBoundMode.ABS
        conf.absErrorBound = float(s["rel"] * max(maxs[b] - mins[b], 1e-30))
        comp, _ = sz.compress(np.ascontiguousarray(_squeeze_time(data[:, b])), conf)
        blobs.append(comp.tobytes())
    return Encoded(blobs, 0, _mask_bytes(valid), _state(values, nodata, fdt=fdt.str))


def sz3_decode(enc: Encoded) -> np.ndarray:
    from pysz import sz

    T, B, Y, X = enc.state["shape"]
    fdt = np.dtype(enc.state["fdt"])
    out = np.empty((T, B, Y, X), fdt)
    shape = (Y, X) if T == 1 else (T, Y, X)
    for b, blob in enumerate(enc.blobs):
        dec, _ = sz.decompress(np.frombuffer(blob, np.uint8), fdt, shape)
        out[:, b] = np.asarray(dec).reshape(T, Y, X)
    return _finish_lossy(enc, out)


def sz3_bounded(values: np.ndarray, bound: float) -> tuple[int, np.ndarray]:
    """SZ3 (``szErrorBoundMode.ABS``, default algorithm) on one float32 field.

    Parameters
    ----------
    values : numpy.ndarray
        The field (integers are fed as float32).
    bound : float
        The largest absolute error allowed.

    Returns
    -------
    tuple of (int, numpy.ndarray)
        Compressed bytes and the decoded field (float32).
    """
    from pysz import sz, szConfig, szErrorBoundMode

    data = np.ascontiguousarray(values, dtype=np.float32)
    config = szConfig(data.shape)
    config.errorBoundMode = szErrorBoundMode.ABS
    config.absErrorBound = bound
    compressed, _ = sz.compress(data, config)
    decoded, _ = sz.decompress(compressed, data.dtype, data.shape)
    return int(compressed.nbytes), decoded


# --- SPERR (imagecodecs): target bits per value, per band (T, Y, X)


def sperr_encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
    import imagecodecs

    fdt = _float_dtype(values.dtype)
    valid, _, _, data = _prep_lossy(values, nodata, fdt)
    blobs = [
        bytes(
            imagecodecs.sperr_encode(
                np.ascontiguousarray(_squeeze_time(data[:, b])),
                float(s["bpp"]),
                "bpp",
                numthreads=1,
            )
        )
        for b in range(values.shape[1])
    ]
    return Encoded(blobs, 0, _mask_bytes(valid), _state(values, nodata, fdt=fdt.str))


def sperr_decode(enc: Encoded) -> np.ndarray:
    import imagecodecs

    T, B, Y, X = enc.state["shape"]
    out = np.empty((T, B, Y, X), np.dtype(enc.state["fdt"]))
    for b, blob in enumerate(enc.blobs):
        out[:, b] = np.asarray(imagecodecs.sperr_decode(blob, numthreads=1)).reshape(T, Y, X)
    return _finish_lossy(enc, out)


def sperr_bounded(values: np.ndarray, bound: float) -> tuple[int, np.ndarray]:
    """SPERR in point-wise max error mode (``"pwe"``) on one float64 field.

    Parameters
    ----------
    values : numpy.ndarray
        The field (fed as float64).
    bound : float
        The largest absolute error allowed.

    Returns
    -------
    tuple of (int, numpy.ndarray)
        Compressed bytes (SPERR's header included) and the decoded field (float64).
    """
    import imagecodecs

    data = np.ascontiguousarray(values, dtype=np.float64)
    compressed = imagecodecs.sperr_encode(data, bound, "pwe")
    return len(compressed), imagecodecs.sperr_decode(compressed)


# --- ZFP (zfpy): fixed accuracy (tolerance = rel × range) or fixed rate, per band


def zfp_encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
    import zfpy

    if "rate" in s and s["rate"] < 1 and values.shape[0] == 1:
        from eocube.errors import UnsupportedDataError

        raise UnsupportedDataError(
            "zfpy 1.0.1 corrupts its heap at fixed rate < 1 on 2-D arrays (crash reproduced "
            "on landsat7_rgb_byte)"
        )
    fdt = _float_dtype(values.dtype)
    valid, mins, maxs, data = _prep_lossy(values, nodata, fdt)
    blobs = []
    for b in range(values.shape[1]):
        band = np.ascontiguousarray(_squeeze_time(data[:, b]))
        if "rate" in s:
            blobs.append(zfpy.compress_numpy(band, rate=float(s["rate"])))
        else:
            tol = float(s["rel"] * max(maxs[b] - mins[b], 1e-30))
            blobs.append(zfpy.compress_numpy(band, tolerance=tol))
    return Encoded(blobs, 0, _mask_bytes(valid), _state(values, nodata, fdt=fdt.str))


def zfp_decode(enc: Encoded) -> np.ndarray:
    import zfpy

    T, B, Y, X = enc.state["shape"]
    out = np.empty((T, B, Y, X), np.dtype(enc.state["fdt"]))
    for b, blob in enumerate(enc.blobs):
        out[:, b] = np.asarray(zfpy.decompress_numpy(blob)).reshape(T, Y, X)
    return _finish_lossy(enc, out)


# --- bit rounding + zstd: float mantissas rounded to `keepbits` (round to nearest, ties to
# even, as xbitinfo / numcodecs.BitRound); integers lose their `dropbits` low bits (rounded);
# then a byte shuffle and zstd level 3 over the whole cube.


def bitround(a: np.ndarray, keepbits: int) -> np.ndarray:
    """Round float32/float64 mantissas to ``keepbits`` bits (ties to even)."""
    nmant = 23 if a.dtype == np.float32 else 52
    if keepbits >= nmant:
        return a.copy()
    uint = np.uint32 if a.dtype == np.float32 else np.uint64
    bits = a.view(uint)
    drop = nmant - keepbits
    half = uint((1 << (drop - 1)) - 1)
    one = uint(1)
    mask = ~uint((1 << drop) - 1)
    rounded = (bits + half + ((bits >> uint(drop)) & one)) & mask
    return rounded.view(a.dtype)


def bitround_encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
    import zstandard

    if values.dtype.kind == "f":
        valid, _, _, data = _prep_lossy(values, nodata, values.dtype)
        rounded = bitround(data, int(s["keepbits"]))
        state = _state(values, nodata, stored=values.dtype.str, shift=0)
    else:
        valid, _, _, data = _prep_lossy(values, nodata, np.int64)
        k = int(s["dropbits"])
        info = np.iinfo(values.dtype)
        q = (data - info.min + (1 << (k - 1))) >> k  # round to nearest multiple of 2**k
        q = np.clip(q, 0, (int(info.max) - int(info.min)) >> k)
        stored = np.dtype(
            np.uint8
            if values.dtype.itemsize == 1
            else np.uint16
            if values.dtype.itemsize == 2
            else np.uint32
        )
        rounded = q.astype(stored)
        state = _state(values, nodata, stored=stored.str, shift=k, offset=int(info.min))
    blob = zstandard.ZstdCompressor(level=3).compress(_shuffle(rounded))
    return Encoded([blob], 0, _mask_bytes(valid), state)


def bitround_decode(enc: Encoded) -> np.ndarray:
    import zstandard

    shape = enc.state["shape"]
    stored = np.dtype(enc.state["stored"])
    data = _unshuffle(zstandard.ZstdDecompressor().decompress(enc.blobs[0]), stored, shape)
    if enc.state["shift"]:
        data = (data.astype(np.int64) << enc.state["shift"]) + enc.state["offset"]
    return _finish_lossy(enc, data)


# --- image codecs (lossy): each band one 16-bit image, dates stacked vertically


def _stretch(values: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray, Any]:
    valid, mins, maxs, data = _prep_lossy(values, nodata, np.float64)
    span = np.where(maxs > mins, maxs - mins, 1.0)
    u = (data - mins[None, :, None, None]) / span[None, :, None, None] * 65535.0
    u16 = np.clip(np.rint(u), 0, 65535).astype(np.uint16)
    return valid, u16, (mins, span)


def _band_image(u16: np.ndarray, b: int) -> np.ndarray:
    T, _, Y, X = u16.shape
    return np.ascontiguousarray(u16[:, b].reshape(T * Y, X))


def _image_encoder(fn: Callable[[np.ndarray, dict[str, Any]], bytes]) -> Callable:
    def encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
        valid, u16, (mins, span) = _stretch(values, nodata)
        blobs = [bytes(fn(_band_image(u16, b), s)) for b in range(values.shape[1])]
        state = _state(values, nodata, mins=mins, span=span)
        return Encoded(blobs, 16 * values.shape[1], _mask_bytes(valid), state)

    return encode


def _image_decoder(fn: Callable[[bytes], np.ndarray]) -> Callable[[Encoded], np.ndarray]:
    def decode(enc: Encoded) -> np.ndarray:
        T, B, Y, X = enc.state["shape"]
        out = np.empty((T, B, Y, X), np.float64)
        mins, span = enc.state["mins"], enc.state["span"]
        for b, blob in enumerate(enc.blobs):
            img = np.asarray(fn(blob), dtype=np.float64).reshape(T, Y, X)
            out[:, b] = img / 65535.0 * span[b] + mins[b]
        return _finish_lossy(enc, out)

    return decode


def _jxl(img: np.ndarray, s: dict[str, Any]) -> bytes:
    import imagecodecs

    return imagecodecs.jpegxl_encode(img, distance=float(s["distance"]), numthreads=1)


def _jxl_dec(blob: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(blob, numthreads=1)


def _j2k(img: np.ndarray, s: dict[str, Any]) -> bytes:
    import imagecodecs

    # imagecodecs' jpeg2k level is OpenJPEG's target PSNR (dB) of the single quality layer
    return imagecodecs.jpeg2k_encode(
        img, level=int(s["psnr_target"]), reversible=False, numthreads=1
    )


def _j2k_dec(blob: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpeg2k_decode(blob, numthreads=1)


def _htj2k(img: np.ndarray, s: dict[str, Any]) -> bytes:
    import imagecodecs

    # imagecodecs' htj2k level is OpenJPH's quantization step (qstep)
    return imagecodecs.htj2k_encode(img, level=float(s["qstep"]), reversible=False)


def _htj2k_dec(blob: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.htj2k_decode(blob)


# --- lossless


def _needs_integer(values: np.ndarray, nodata: float | None) -> str | None:
    if values.dtype.kind not in "iu":
        return f"lossless image codecs need integer data; this cube is {values.dtype}"
    span = int(values.max()) - int(values.min())
    if span > 65535:
        return f"the values span {span + 1} codes, more than 16 bits"
    return None


def _shifted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """value − band minimum as uint8/uint16 (exact), and the minima."""
    mins = values.min(axis=(0, 2, 3)).astype(np.int64)
    shifted = values.astype(np.int64) - mins[None, :, None, None]
    dtype = np.uint8 if shifted.max() < 256 else np.uint16
    return shifted.astype(dtype), mins


def _lossless_image_encoder(fn: Callable[[np.ndarray], bytes]) -> Callable:
    def encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
        shifted, mins = _shifted(values)
        blobs = [bytes(fn(_band_image(shifted, b))) for b in range(values.shape[1])]
        return Encoded(blobs, 8 * values.shape[1], b"", _state(values, nodata, mins=mins))

    return encode


def _lossless_image_decoder(fn: Callable[[bytes], np.ndarray]) -> Callable[[Encoded], np.ndarray]:
    def decode(enc: Encoded) -> np.ndarray:
        T, B, Y, X = enc.state["shape"]
        out = np.empty((T, B, Y, X), np.dtype(enc.state["dtype"]))
        for b, blob in enumerate(enc.blobs):
            img = np.asarray(fn(blob)).astype(np.int64).reshape(T, Y, X)
            out[:, b] = img + enc.state["mins"][b]
        return out

    return decode


def _jxl_ll(img: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.jpegxl_encode(img, lossless=True, numthreads=1)


def _jpegls(img: np.ndarray) -> bytes:
    import imagecodecs

    return imagecodecs.jpegls_encode(img)


def _jpegls_dec(blob: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegls_decode(blob)


def zstd_encode(values: np.ndarray, nodata: float | None, s: dict[str, Any]) -> Encoded:
    import zstandard

    raw = _shuffle(values) if s.get("shuffle") else np.ascontiguousarray(values).tobytes()
    blob = zstandard.ZstdCompressor(level=int(s["level"])).compress(raw)
    return Encoded([blob], 0, b"", _state(values, nodata, shuffle=bool(s.get("shuffle"))))


def zstd_decode(enc: Encoded) -> np.ndarray:
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(enc.blobs[0])
    shape, dtype = enc.state["shape"], np.dtype(enc.state["dtype"])
    if enc.state["shuffle"]:
        return _unshuffle(raw, dtype, shape)
    return np.frombuffer(raw, dtype).reshape(shape)


def _sperr_applies(values: np.ndarray, nodata: float | None) -> str | None:
    T, _, Y, X = values.shape
    if min(Y, X) < 8 or (T > 1 and T < 2):
        return "SPERR needs sides of 8 px at least"
    return None


def _jxl_applies(values: np.ndarray, nodata: float | None) -> str | None:
    T, _, Y, _X = values.shape
    if T * Y > 1 << 20:
        return "image taller than JPEG-XL's limit"
    return None


def _jpegls_applies(values: np.ndarray, nodata: float | None) -> str | None:
    reason = _needs_integer(values, nodata)
    if reason:
        return reason
    T, _, Y, X = values.shape
    if T * Y > 65535 or X > 65535:
        return f"image of {T * Y} x {X} px exceeds JPEG-LS's 65535 px sides"
    return None


def _lossless_applies(values: np.ndarray, nodata: float | None) -> str | None:
    return _needs_integer(values, nodata)


def _j2k_applies(values: np.ndarray, nodata: float | None) -> str | None:
    return None


# ----------------------------------------------------------------------------- registry

REL_BOUNDS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)

METHODS: list[Method] = [
    Method(
        "SZ3",
        False,
        [{"rel": r} for r in REL_BOUNDS],
        [{"rel": r} for r in (1e-2, 1e-3)],
        sz3_encode,
        sz3_decode,
        note="pysz, absolute error bound = rel × the band's valid range, each band (T, Y, X)",
        error_bounded=ErrorBounded(
            sz3_bounded, "pysz, szErrorBoundMode.ABS, default algorithm, per band 3-D float32"
        ),
        style={"color": "tab:olive", "ls": ":", "marker": "v"},
    ),
    Method(
        "SPERR",
        False,
        # rates a factor of sqrt(2) apart, as dense as eocube's sweeps (benchmarks.rd.sweeps)
        [{"bpp": round(0.05 * 2 ** (k / 2), 4)} for k in range(11)],
        [{"bpp": b} for b in (0.1, 0.5)],
        sperr_encode,
        sperr_decode,
        _sperr_applies,
        note="imagecodecs SPERR, fixed bits per value, each band (T, Y, X)",
        error_bounded=ErrorBounded(
            sperr_bounded, "imagecodecs.sperr_encode(mode='pwe'), per band 3-D float64"
        ),
        style={"color": "tab:brown", "ls": ":", "marker": "^"},
    ),
    Method(
        "ZFP-accuracy",
        False,
        [{"rel": r} for r in (1e-1, 3e-2, 1e-2, 1e-3)],
        [{"rel": r} for r in (1e-2, 1e-3)],
        zfp_encode,
        zfp_decode,
        note="zfpy fixed accuracy, tolerance = rel × the band's valid range, each band",
        style={"color": "tab:gray", "ls": ":", "marker": "<"},
        summary_column=False,  # ZFP-rate stands for ZFP in the summary's per-cube table
    ),
    Method(
        "ZFP-rate",
        False,
        [{"rate": r} for r in (0.5, 1.0, 2.0, 4.0)],
        [{"rate": r} for r in (1.0, 4.0)],
        zfp_encode,
        zfp_decode,
        note="zfpy fixed rate (bits per value), each band",
        style={"color": "silver", "ls": ":", "marker": ">"},
    ),
    Method(
        "bitround+zstd",
        False,
        [{"keepbits": k} for k in (2, 4, 6, 8, 10, 12)],
        [{"keepbits": k} for k in (4, 8)],
        bitround_encode,
        bitround_decode,
        note="floats: mantissa rounded (ties to even) to keepbits; integers: dropbits low "
        "bits rounded away; then a byte shuffle and zstd-3",
        int_settings_full=[{"dropbits": k} for k in (3, 5, 7, 9, 11)],
        int_settings_quick=[{"dropbits": k} for k in (3, 7)],
        style={"color": "tab:pink", "ls": ":", "marker": "d"},
    ),
    Method(
        "JPEG-XL",
        False,
        [{"distance": d} for d in (0.3, 0.55, 1.0, 1.6, 2.5, 3.9, 6.0, 10.0, 16.0)],
        [{"distance": d} for d in (0.5, 4.0)],
        _image_encoder(_jxl),
        _image_decoder(_jxl_dec),
        _jxl_applies,
        note="imagecodecs libjxl, default effort, one 16-bit image per band (dates stacked)",
        style={"color": "tab:cyan", "ls": "-.", "marker": "s"},
    ),
    Method(
        "JPEG2000",
        False,
        [{"psnr_target": p} for p in range(32, 65, 4)],
        [{"psnr_target": p} for p in (40, 55)],
        _image_encoder(_j2k),
        _image_decoder(_j2k_dec),
        _j2k_applies,
        note="imagecodecs OpenJPEG, irreversible, one quality layer at a target PSNR",
        style={"color": "darkkhaki", "ls": "-.", "marker": "p"},
    ),
    Method(
        "HTJ2K",
        False,
        [{"qstep": q} for q in (0.001, 0.003, 0.01, 0.03, 0.1)],
        [{"qstep": q} for q in (0.001, 0.01)],
        _image_encoder(_htj2k),
        _image_decoder(_htj2k_dec),
        _j2k_applies,
        note="imagecodecs OpenJPH, irreversible, quantization step qstep",
        style={"color": "slategray", "ls": "-.", "marker": "h"},
    ),
    # lossless
    Method(
        "zstd-3",
        True,
        [{"level": 3}],
        [{"level": 3}],
        zstd_encode,
        zstd_decode,
        note="zstandard level 3 on the raw array (the lossless floor of benchmarks.anchors)",
    ),
    Method(
        "shuffle+zstd-19",
        True,
        [{"level": 19, "shuffle": True}],
        [{"level": 19, "shuffle": True}],
        zstd_encode,
        zstd_decode,
        note="byte shuffle then zstandard level 19 (the strongest plain setting)",
    ),
    Method(
        "JPEG-XL-lossless",
        True,
        [{}],
        [{}],
        _lossless_image_encoder(_jxl_ll),
        _lossless_image_decoder(_jxl_dec),
        _lossless_applies,
        note="imagecodecs libjxl lossless, default effort, value − band min, one image per band",
    ),
    Method(
        "JPEG-LS",
        True,
        [{}],
        [{}],
        _lossless_image_encoder(_jpegls),
        _lossless_image_decoder(_jpegls_dec),
        _jpegls_applies,
        note="imagecodecs CharLS lossless, value − band min, one image per band",
    ),
]


def by_name() -> dict[str, Method]:
    """Every method of the registry by its name."""
    return {m.name: m for m in METHODS}


def lossy_summary_columns() -> list[str]:
    """Names of the lossy methods benchmarks.rd's summary shows per cube, in registry order."""
    return [m.name for m in METHODS if not m.lossless and m.summary_column]


def lossless_names() -> list[str]:
    """Names of the lossless methods, in registry order."""
    return [m.name for m in METHODS if m.lossless]


def error_bounded_methods() -> list[Method]:
    """The methods that hold a hard absolute error bound (benchmarks.error_bounded)."""
    return [m for m in METHODS if m.error_bounded is not None]
