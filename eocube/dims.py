"""Recognising the (time, band, y, x) dimensions of a cube variable, in any order.

A dim takes a role (time, band, y or x) from, in this order:

1. ``dims=`` given by the user (role -> dim name);
2. its name, under any of the spellings in :data:`ALIASES` (case-insensitive);
3. its coordinate's CF attributes: ``axis`` (``T``, ``Y``, ``X``) or ``standard_name``
   (:data:`STANDARD_NAMES`), or a datetime coordinate for time;
4. the one dim left over in a 4-D variable whose time, y and x are known is its band
   (``wavelength``, ``level``, ``member``...).

A cube variable has the roles (time, band, y, x) or (time, y, x), in any order: the
writer transposes it to that order and the reader transposes it back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import xarray as xr

ROLES = ("time", "band", "y", "x")

ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("time", "t", "date", "dates", "valid_time", "times"),
    "band": ("band", "bands", "variable", "channel", "channels", "spectral", "spectral_band"),
    "y": ("y", "lat", "latitude", "rows", "row", "northing", "rlat"),
    "x": ("x", "lon", "longitude", "cols", "col", "easting", "rlon"),
}

AXES = {"T": "time", "Y": "y", "X": "x"}
"""CF ``axis`` attribute values and their roles."""

STANDARD_NAMES = {
    "time": "time",
    "latitude": "y",
    "grid_latitude": "y",
    "projection_y_coordinate": "y",
    "longitude": "x",
    "grid_longitude": "x",
    "projection_x_coordinate": "x",
}
"""CF ``standard_name`` values of coordinates and their roles."""


@dataclass(frozen=True)
class CubeDims:
    """The roles of a cube variable's dims, or why it is not a cube.

    ``roles`` maps role to dim name in (time, band, y, x) order; None when the variable
    is not a cube, and then ``reason`` says why in words a user can act on.
    """

    roles: dict[str, Hashable] | None
    reason: str = ""

    @property
    def order(self) -> tuple[Hashable, ...]:
        """The variable's dims in (time, [band,] y, x) order."""
        assert self.roles is not None
        return tuple(self.roles.values())


def check_dims_argument(dims: Mapping[str, Hashable] | None) -> dict[str, Hashable]:
    """Validate ``dims=`` (role -> dim name); returns it as a dict."""
    explicit = dict(dims or {})
    unknown = set(explicit) - set(ROLES)
    if unknown:
        raise ValueError(
            f"dims= keys are roles among {ROLES} (role -> dim name), got "
            f"{sorted(map(str, unknown))}"
        )
    names = list(explicit.values())
    if len(set(names)) != len(names):
        raise ValueError(f"dims= gives one dim two roles: {explicit}")
    return explicit


def _role_of_coordinate(var: xr.DataArray, dim: Hashable) -> str | None:
    coord = var.coords.get(dim)
    if coord is None:
        return None
    axis = str(coord.attrs.get("axis", "")).upper()
    if axis in AXES:
        return AXES[axis]
    standard = str(coord.attrs.get("standard_name", "")).lower()
    if standard in STANDARD_NAMES:
        return STANDARD_NAMES[standard]
    if coord.ndim == 1 and coord.dtype.kind == "M":
        return "time"
    return None


def recognise(var: xr.DataArray, dims: Mapping[str, Hashable] | None = None) -> CubeDims:
    """The roles of ``var``'s dims (see the module docstring), or why it is not a cube."""
    explicit = check_dims_argument(dims)
    found: dict[str, Hashable] = {}
    unknown: list[Hashable] = []
    for dim in var.dims:
        role = next((r for r, name in explicit.items() if name == dim), None)
        if role is None:
            role = next(
                (
                    r
                    for r, names in ALIASES.items()
                    if r not in explicit and str(dim).lower() in names
                ),
                None,
            )
        if role is None:
            role = _role_of_coordinate(var, dim)
            if role in explicit:
                role = None
        if role is None:
            unknown.append(dim)
            continue
        if role in found:
            return CubeDims(
                None,
                f"dims {found[role]!r} and {dim!r} both look like its {role} dim; name the "
                f"roles with dims={{'{role}': ...}}",
            )
        found[role] = dim
    if len(unknown) == 1 and var.ndim == 4 and set(found) == {"time", "y", "x"}:
        found["band"] = unknown.pop()
    shape = f"dims {tuple(map(str, var.dims))}"
    if unknown:
        return CubeDims(
            None,
            f"{shape}: {', '.join(map(repr, map(str, unknown)))} "
            f"{'is' if len(unknown) == 1 else 'are'} not time, band, y or x (name them "
            f"with dims=, or select or stack the extra dims)",
        )
    missing = [r for r in ("time", "y", "x") if r not in found]
    if missing:
        return CubeDims(None, f"{shape}: no {', no '.join(missing)} dim")
    return CubeDims({r: found[r] for r in ROLES if r in found})


def cube_roles(
    var: xr.DataArray, dims: Mapping[str, Hashable] | None = None
) -> dict[str, Hashable] | None:
    """Map roles to the variable's dims if it is a cube variable, else None.

    ``dims`` maps roles to dim names and wins over the recognised spellings. The
    returned mapping is in (time, [band,] y, x) order, whatever the variable's order.
    """
    return recognise(var, dims).roles
