"""Which variables of a dataset are cubes, how each is stored, and checks on their values.

Cube variables (dims recognised by :mod:`eocube.dims`) are coded as video; categorical
layers (CF flag attributes, or an integer QA band of few distinct values beside the
data) and everything else are stored losslessly, and the report says why. Checks on
dtypes, empty dims, error bounds and the values of each chunk raise
:class:`~eocube.errors.UnsupportedDataError` naming the variable (and chunk).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from eocube import layout, packing
from eocube.dims import ROLES, check_dims_argument, recognise
from eocube.errors import UnsupportedDataError
from eocube.profiles import get_profile


def as_dataset(obj: xr.Dataset | xr.DataArray) -> xr.Dataset:
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name if obj.name is not None else "data")
    raise TypeError(
        f"write.to_eocube takes an xarray Dataset or DataArray, not {type(obj).__name__}"
    )


CATEGORICAL_MAX_VALUES = 32
"""An integer variable whose sampled valid values take at most this many distinct values
is a class map or bit field (a QA band without CF flag attributes): stored losslessly."""


_CATEGORICAL_SAMPLE_DATES = 8


_CATEGORICAL_SAMPLE_SIDE = 256


def has_flag_attributes(var: xr.DataArray) -> bool:
    """Whether ``var`` carries CF flag attributes (a class map or bit field)."""
    return any(k in var.attrs for k in ("flag_values", "flag_masks", "flag_meanings"))


def distinct_integer_values(var: xr.DataArray, roles: Mapping[str, Hashable]) -> int | None:
    """Distinct valid values in a sample of an integer variable; None if not integer or
    the sample is too small to tell a class map from data."""
    if np.dtype(var.encoding.get("dtype", var.dtype)).kind not in "iu":
        return None
    # a few dates spread over the series, a window of each: reflectance shows thousands
    # of values there, while a cloudy first date alone could look like a mask
    index: dict[Hashable, slice] = {}
    if "time" in roles:
        size = var.sizes[roles["time"]]
        index[roles["time"]] = slice(None, None, max(1, size // _CATEGORICAL_SAMPLE_DATES))
    for role in ("y", "x"):
        index[roles[role]] = slice(0, _CATEGORICAL_SAMPLE_SIDE)
    sample = np.asarray(var.isel(index).values)
    nodata = nodata_of(var)
    if nodata is not None:
        sample = sample[sample != nodata]
    if sample.size < 4 * CATEGORICAL_MAX_VALUES:
        return None
    return int(np.unique(sample).size)


def nodata_of(var: xr.DataArray) -> float | None:
    for value in (var.attrs.get("nodata"), var.encoding.get("_FillValue")):
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return None


@dataclass(frozen=True)
class CubeVar:
    """What the writer needs to know of one cube variable."""

    name: Hashable
    roles: Mapping[str, Hashable]  # role -> dim, in (time, [band,] y, x) order
    dims: tuple[Hashable, ...]  # the variable's dims as given (maybe in another order)
    inner: tuple[int, ...]  # in (time, [band,] y, x) order, as stored
    shard: tuple[int, ...]
    dtype: np.dtype  # as stored, after CF encoding
    fill: float | int
    codec_nodata: float | None
    nodata: float | None  # in the user's data, for metrics

    @property
    def order(self) -> tuple[Hashable, ...]:
        """The dims as stored: (time, [band,] y, x)."""
        return tuple(self.roles.values())

    @property
    def transposed(self) -> bool:
        """Whether the variable is stored in another order than given."""
        return self.order != self.dims


ENCODING_KEYS = ("profile", "lossless", "crf", "max_abs_error", "chunks")
"""What ``to_eocube(encoding={variable: {...}})`` may set for one cube variable."""


@dataclass(frozen=True)
class VariableEncoding:
    """The settings of one cube variable that differ from those of the call
    (``to_eocube(encoding={name: {...}})``); None for those it takes from the call.

    ``lossless``, ``crf`` and ``max_abs_error`` are its quality control (one at most);
    ``chunks`` maps dims or roles (time, y, x) to chunk sizes, as ``chunks=`` does.
    """

    profile: str | None = None
    lossless: bool | None = None
    crf: float | None = None
    max_abs_error: Any = None
    chunks: Mapping[Hashable, int] | None = None

    @property
    def control(self) -> dict[str, Any]:
        """The quality control it sets, as keyword arguments (empty when it sets none)."""
        given = {"lossless": self.lossless, "crf": self.crf, "max_abs_error": self.max_abs_error}
        return {k: v for k, v in given.items() if v is not None and v is not False}

    @property
    def sets_quality(self) -> bool:
        """Whether it sets a profile or a quality control of its own."""
        return self.profile is not None or bool(self.control)


def parse_encoding(encoding: Mapping[Hashable, Any] | None) -> dict[Hashable, VariableEncoding]:
    """``to_eocube``'s ``encoding=`` checked: variable name to :class:`VariableEncoding`.

    Raises
    ------
    ValueError
        For a key eocube does not know (the message names the variable and the keys it
        takes), or more than one quality control for one variable.
    """
    if encoding is None:
        return {}
    if not isinstance(encoding, Mapping):
        raise TypeError(f"encoding= maps variable names to settings, got {encoding!r}")
    out: dict[Hashable, VariableEncoding] = {}
    for name, given in encoding.items():
        if not isinstance(given, Mapping):
            raise TypeError(
                f"encoding[{name!r}] must be a mapping of {', '.join(ENCODING_KEYS)}, got {given!r}"
            )
        unknown = sorted(str(k) for k in given if k not in ENCODING_KEYS)
        if unknown:
            raise ValueError(
                f"encoding[{name!r}] has {', '.join(map(repr, unknown))}, which eocube does "
                f"not take: a cube variable's encoding sets {', '.join(ENCODING_KEYS)} (the "
                f"rest of its zarr encoding is eocube's)"
            )
        found = VariableEncoding(**{str(k): v for k, v in given.items()})
        if len(found.control) > 1:
            raise ValueError(
                f"encoding[{name!r}]: {' and '.join(found.control)} conflict: give one "
                f"quality control per variable"
            )
        if found.chunks is not None and not isinstance(found.chunks, Mapping):
            raise TypeError(
                f"encoding[{name!r}]['chunks'] maps dims (or time, y, x) to chunk sizes, "
                f"got {found.chunks!r}"
            )
        out[name] = found
    return out


def _merged_chunks(
    call: Mapping[Hashable, int] | None,
    own: Mapping[Hashable, int] | None,
    roles: Mapping[str, Hashable],
) -> dict[Hashable, int]:
    """The chunks of one variable: the call's, then its own (each by dim name)."""
    merged: dict[Hashable, int] = {}
    for given in (call or {}, own or {}):
        for key, size in given.items():
            merged[roles.get(str(key), key) if key not in roles.values() else key] = size
    return merged


def cube_variables(
    ds: xr.Dataset,
    dims: Mapping[str, Hashable] | None,
    variables: Sequence[Hashable] | None,
    chunks: Mapping[Hashable, int] | None,
    own: Mapping[Hashable, VariableEncoding] | None = None,
    *,
    growing: Hashable | None = None,
) -> tuple[dict[Hashable, CubeVar], dict[str, str]]:
    """The cube variables to code as video, and the other data variables with the reason
    each is stored losslessly.

    ``own`` holds the variables' own settings (:func:`parse_encoding`): their chunks
    override ``chunks``, and naming a variable that is not coded as video is refused.
    ``growing``: the dim a store created for appends grows along
    (:func:`eocube.layout.chunk_shape`)."""
    check_dims_argument(dims)
    absent = {r: d for r, d in (dims or {}).items() if d not in ds.dims}
    if absent:
        raise ValueError(
            f"dims= names {absent}, not dims of the dataset: {sorted(map(str, ds.dims))}"
        )
    if variables is not None:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise ValueError(
                f"variables= names {missing}, which are not in the dataset: {list(ds.data_vars)}"
            )
    recognised = {name: recognise(var, dims) for name, var in ds.data_vars.items()}
    others: dict[str, str] = {}
    if variables is None:
        # class maps and bit flags must not go through a lossy codec; the sampled guess
        # only sets aside a variable that sits beside others (a QA band next to the
        # data), never the only one
        for name, var in ds.data_vars.items():
            if has_flag_attributes(var):
                others[str(name)] = "categorical (CF flag attributes)"
        candidates = {
            n: found.roles
            for n, found in recognised.items()
            if str(n) not in others and found.roles is not None
        }
        if len(candidates) > 1:  # a lone variable is never set aside: no sample to read
            guessed = {}
            for n, r in candidates.items():
                distinct = distinct_integer_values(ds[n], r)
                if distinct is not None and distinct <= CATEGORICAL_MAX_VALUES:
                    guessed[n] = distinct
            if candidates.keys() - guessed.keys():
                for n, distinct in guessed.items():
                    others[str(n)] = (
                        f"categorical ({distinct} distinct integer values in a sample, "
                        f"at most {CATEGORICAL_MAX_VALUES}; name it in variables= to code "
                        f"it as video)"
                    )
    found_vars: dict[Hashable, CubeVar] = {}
    for name, var in ds.data_vars.items():
        if variables is not None and name not in variables:
            others[str(name)] = "not named in variables="
            continue
        if str(name) in others:
            continue
        roles = recognised[name].roles
        if roles is None:
            why = recognised[name].reason
            if variables is not None:
                raise ValueError(
                    f"variable {name!r} is not a cube: {why}. A cube variable has dims "
                    f"time, band, y and x (or time, y and x) in any order: eocube recognises "
                    f"them by name ({_spellings()}) or by their coordinates' CF axis or "
                    f"standard_name; name them with dims={{'time': ..., 'band': ..., "
                    f"'y': ..., 'x': ...}}"
                )
            others[str(name)] = f"not a cube: {why}"
            continue
        empty = [str(d) for d in var.dims if var.sizes[d] == 0]
        if empty:
            raise UnsupportedDataError(
                f"variable {name!r} has no values along {', '.join(empty)} (size 0): "
                f"nothing to encode; select a non-empty range or drop the variable"
            )
        own_chunks = (own or {}).get(name, VariableEncoding()).chunks
        requested = _merged_chunks(chunks, own_chunks, roles) if own_chunks else chunks
        inner, shard = layout.chunk_shape(var, roles, requested, growing=growing)
        dtype = np.dtype(var.encoding.get("dtype", var.dtype))
        check_cube_dtype(name, dtype)
        nodata = nodata_of(var)
        if dtype.kind == "f":
            fill: float | int = math.nan
            codec_nodata = nodata
        else:
            # the fill value is treated as missing, so edge-chunk padding is cropped off
            # before coding (eocube.chunk); real values equal to it come back from the mask
            fill = int(nodata) if nodata is not None else int(np.iinfo(dtype).max)
            codec_nodata = float(fill)
        found_vars[name] = CubeVar(
            name, roles, tuple(var.dims), inner, shard, dtype, fill, codec_nodata, nodata
        )
    if not found_vars:
        have = "; ".join(f"{n!r} has {tuple(map(str, v.dims))}" for n, v in ds.data_vars.items())
        why = "; ".join(f"{n!r}: {r}" for n, r in others.items())
        raise ValueError(
            "no cube variable found: a cube variable has dims time, band, y and x (or time, "
            f"y and x) in any order, and {have or 'the dataset has no data variables'}"
            + (f" ({why})" if why else "")
            + ". Select or stack extra dims (ds.isel(level=0), or stack them into the band "
            "dim), or pass dims={'time': ..., 'band': ..., 'y': ..., 'x': ...} to name them"
        )
    if chunks:
        cube_dims = {d for cv in found_vars.values() for d in cv.roles.values()}
        unknown = [str(k) for k in chunks if k not in cube_dims | set(ROLES)]
        if unknown:
            raise ValueError(
                f"chunks= names {unknown}, which are neither dims of the cube variables "
                f"({sorted(map(str, cube_dims))}) nor roles (time, band, y, x)"
            )
    for name, settings in (own or {}).items():
        if name not in found_vars:
            why = others.get(str(name), "not a data variable of the dataset")
            raise ValueError(
                f"encoding= names {name!r}, which is not coded as video ({why}): its "
                f"settings apply to cube variables only ({sorted(map(str, found_vars))})"
            )
        cv = found_vars[name]
        unknown = [str(k) for k in settings.chunks or {} if k not in set(cv.order) | set(cv.roles)]
        if unknown:
            raise ValueError(
                f"encoding[{name!r}]['chunks'] names {unknown}, which are neither dims of "
                f"{name!r} ({[str(d) for d in cv.order]}) nor roles (time, band, y, x)"
            )
    return found_vars, others


def _spellings() -> str:
    from eocube.dims import ALIASES

    return "; ".join(f"{role}: {', '.join(names[:4])}" for role, names in ALIASES.items())


def canonical(ds: xr.Dataset, cube_vars: Mapping[Hashable, CubeVar]) -> xr.Dataset:
    """``ds`` with every cube variable in (time, [band,] y, x) order (lazily)."""
    moved = {name: ds[name].transpose(*cv.order) for name, cv in cube_vars.items() if cv.transposed}
    return ds.assign(moved) if moved else ds


def check_dtypes(ds: xr.Dataset) -> None:
    for name, var in ds.data_vars.items():
        kind = var.dtype.kind
        if kind in "cbOMmSUV":
            what = {
                "c": "complex",
                "b": "bool",
                "O": "object",
                "M": "datetime64",
                "m": "timedelta64",
                "S": "bytes",
                "U": "string",
                "V": "structured",
            }[kind]
            todo = {
                "c": "store its real and imaginary parts as two variables (.real, .imag)",
                "b": f"cast it to uint8 (ds[{name!r}].astype('uint8'), then lossless=True "
                "keeps it exact)",
                "M": "store it as numbers, e.g. float64 days since an epoch",
                "m": "store it as numbers, e.g. float64 seconds",
            }.get(kind, "convert it to numbers or drop it (ds.drop_vars)")
            raise UnsupportedDataError(
                f"variable {name!r} has {'an' if what[0] in 'aeiou' else 'a'} {what} dtype "
                f"({var.dtype}), which eocube cannot store: {todo}"
            )


# what to cast each dtype that eocube cannot encode to, and why
_CASTS = {
    "int8": ("int16", "the same values"),
    "float16": ("float32", "the same values"),
    "uint32": ("int32", "if the values fit; else float64"),
    "int64": ("int32", "if the values fit; else float64"),
    "uint64": ("int32", "if the values fit; else float64"),
}


def check_lossless_dtypes(cube_vars: Mapping[Hashable, CubeVar], profile: Any) -> None:
    """Refuse floats with a lossless profile (it holds integers only), naming the variable."""
    if not profile.lossless:
        return
    for name, cv in cube_vars.items():
        if cv.dtype.kind == "f":
            raise UnsupportedDataError(
                f"variable {name!r} is {cv.dtype}: profile {profile.name!r} (lossless) needs "
                f"integer data. Bound the error of floats with max_abs_error= instead, "
                f"or cast integer-valued data to an integer dtype first"
            )


def check_cube_dtype(name: Hashable, dtype: np.dtype) -> None:
    if dtype in packing.SUPPORTED_DTYPES:
        return
    to, why = _CASTS.get(dtype.name, ("float32", "or float64 for more precision"))
    raise UnsupportedDataError(
        f"variable {name!r} has dtype {dtype}, which eocube cannot encode as video "
        f"(it encodes {', '.join(map(str, packing.SUPPORTED_DTYPES))}): cast it first, "
        f"e.g. ds[{name!r}] = ds[{name!r}].astype({to!r}) ({why}), or leave it out of "
        f"variables= to store it losslessly"
    )


def bounds_per_variable(
    bound: Any, cube_vars: Mapping[Hashable, CubeVar], ds: xr.Dataset
) -> dict[Hashable, float | tuple[float, ...]]:
    if bound is None:
        return {}
    if isinstance(bound, Mapping):
        unknown = set(bound) - set(cube_vars)
        if unknown:
            raise ValueError(f"max_abs_error names {sorted(map(str, unknown))}, not cube variables")
        per_var = dict(bound)
    else:
        per_var = dict.fromkeys(cube_vars, bound)
    out: dict[Hashable, float | tuple[float, ...]] = {}
    for name, value in per_var.items():
        var = ds[name]
        if "scale_factor" in var.encoding or "add_offset" in var.encoding:
            raise ValueError(
                f"variable {name!r}: max_abs_error cannot be guaranteed through CF packing "
                f"(scale_factor/add_offset adds its own rounding); drop that encoding first"
            )
        bands = var.sizes[cube_vars[name].roles["band"]] if "band" in cube_vars[name].roles else 1
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(
            value, bool
        ):
            parsed: float | tuple[float, ...] = float(value)
            check = [float(value)]
        else:
            parsed = tuple(float(v) for v in value)
            check = list(parsed)
            if len(parsed) == 1:
                parsed = parsed[0]
            elif len(parsed) != bands:
                raise ValueError(
                    f"variable {name!r}: max_abs_error has {len(parsed)} values for {bands} bands"
                )
        if not all(math.isfinite(v) and v >= 0 for v in check):
            raise ValueError(
                f"variable {name!r}: max_abs_error must be finite and >= 0, got {value!r}"
            )
        out[name] = parsed
    return out


def validate_block(
    block: np.ndarray,
    name: Hashable,
    profile: str,
    block_info: Any = None,
    *,
    chunk: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Checks on one chunk of a cube variable, in the encode task itself (no extra pass)."""
    where = ""
    if chunk is not None:
        where = f", chunk {chunk}"
    elif block_info and None in block_info:
        where = f", block at {tuple(s[0] for s in block_info[None]['array-location'])}"
    if block.dtype.kind == "f" and np.isinf(block).any():
        raise UnsupportedDataError(
            f"variable {name!r}{where} holds infinite values: replace them with NaN "
            f"(missing) or finite values before encoding"
        )
    try:
        packing.check_dtype(block.dtype)
    except UnsupportedDataError as exc:
        raise UnsupportedDataError(f"variable {name!r}: {exc}") from None
    prof = get_profile(profile)
    if prof.lossless and block.dtype.kind in "iu" and block.size:
        b4 = block if block.ndim == 4 else block[:, None]
        span = b4.max(axis=(0, 2, 3)).astype(np.int64) - b4.min(axis=(0, 2, 3)).astype(np.int64)
        widest = int(span.max())
        if widest > (1 << prof.bits) - 1:
            raise UnsupportedDataError(
                f"variable {name!r}{where}: a band spans {widest} values, which needs "
                f"{math.ceil(math.log2(widest + 1))} bits; profile {prof.name!r} holds "
                f"{prof.bits} bits losslessly ("
                + (
                    "use ffv1-lossless for up to 16 bits)"
                    if prof.bits < 16
                    else "no profile holds more: encode it lossy with max_abs_error=, or "
                    "split its range over two variables)"
                )
            )
    return block
