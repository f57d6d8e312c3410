"""Recognising the (time, band, y, x) dimensions of a cube variable."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import xarray as xr

ROLES = ("time", "band", "y", "x")

ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("time", "t", "date", "valid_time"),
    "band": ("band", "bands", "variable", "channel", "channels", "spectral"),
    "y": ("y", "lat", "latitude", "rows", "row", "northing"),
    "x": ("x", "lon", "longitude", "cols", "col", "easting"),
}


def cube_roles(
    var: xr.DataArray, dims: Mapping[str, Hashable] | None = None
) -> dict[str, Hashable] | None:
    """Map roles to the variable's dims if it is a cube variable, else None.

    A cube variable has dims (time, band, y, x) or (time, y, x) in that order, under
    any of the spellings in :data:`ALIASES`; ``dims`` maps roles to dim names and wins
    over the aliases.
    """
    explicit = dict(dims or {})
    unknown = set(explicit) - set(ROLES)
    if unknown:
        raise ValueError(f"dims= keys must be among {ROLES}, got {sorted(map(str, unknown))}")
    found: dict[str, Hashable] = {}
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
        if role is None or role in found:
            return None
        found[role] = dim
    order = [r for r in ROLES if r in found]
    if order not in (list(ROLES), ["time", "y", "x"]) or list(found) != order:
        return None
    return found
