"""The quality settings of each cube variable of a write: profile, control, bound, crf.

A write has one quality control (``lossless``, ``crf``, ``target_psnr``,
``target_bpppb``, ``max_abs_error``) and one profile; ``to_eocube(encoding={name:
{...}})`` gives single cube variables their own (:class:`eocube.variables.VariableEncoding`).
:func:`settings_per_variable` resolves each variable's profile and control,
:func:`bounds_of` its error bound, :func:`choose_per_variable` its crf (searched on a
sample for a bound, :mod:`eocube.ratecontrol`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import xarray as xr

from eocube import ratecontrol
from eocube.profiles import Profile, get_profile
from eocube.variables import CubeVar, VariableEncoding, bounds_per_variable


def bounds_of(
    call: ratecontrol.Control,
    controls: Mapping[Hashable, ratecontrol.Control],
    cube_vars: Mapping[Hashable, CubeVar],
    ds: xr.Dataset,
) -> dict[Hashable, float | tuple[float, ...]]:
    """The error bound of each cube variable whose control is ``max_abs_error``: the
    call's (``call``, one bound or one per variable) for the variables that follow it,
    else their own."""
    following = {n: cv for n, cv in cube_vars.items() if controls[n] is call}
    value = call.value if call.name == "max_abs_error" else None
    if isinstance(value, Mapping):  # variables with a control of their own are not its
        value = {n: b for n, b in value.items() if n in following or n not in cube_vars}
    found = bounds_per_variable(value, following, ds)
    for name, control in controls.items():
        if control is not call and control.name == "max_abs_error":
            found.update(bounds_per_variable(control.value, {name: cube_vars[name]}, ds))
    return found


def own_controls(own: Mapping[Hashable, VariableEncoding]) -> set[Hashable]:
    """The variables that set a quality control or profile of their own."""
    return {name for name, settings in own.items() if settings.sets_quality}


def settings_per_variable(
    cube_vars: Mapping[Hashable, CubeVar],
    own: Mapping[Hashable, VariableEncoding],
    profile: str | None,
    prof: Profile,
    control: ratecontrol.Control,
) -> tuple[dict[Hashable, Profile], dict[Hashable, ratecontrol.Control]]:
    """Each cube variable's profile and quality control: its own (``encoding=``), else the
    call's (``control`` itself, for :func:`bounds_of`). A variable's own control takes
    the call's ``profile`` when it suits it (lossless or not), else the default profile
    for that control; its own profile takes the call's control when it suits it, else
    the profile's default quality.

    Raises
    ------
    ValueError
        When own quality settings meet a target of the call, or a profile does not suit
        a control.
    """
    if own_controls(own) and (control.target_psnr is not None or control.target_bpppb is not None):
        raise ValueError(
            f"encoding= sets the quality of {sorted(map(str, own_controls(own)))}, which "
            f"{control.name}= (a target for the cube as a whole) cannot be combined with; "
            f"give crf= or max_abs_error= per variable, or the target alone"
        )
    profiles, controls = {}, {}
    for name in cube_vars:
        settings = own.get(name, VariableEncoding())
        var_control = ratecontrol.Control.parse(**settings.control) if settings.control else control
        if settings.profile is not None:
            var_prof = get_profile(settings.profile)
            if not settings.control and var_prof.lossless != (control.name == "lossless"):
                # a profile of the other kind than the call's control: its own default
                # (a lossless profile is lossless, a lossy one at its default quality)
                var_control = ratecontrol.Control()
        elif not settings.control:
            var_prof = prof
        else:
            wants_lossless = var_control.name == "lossless"
            fits = profile is not None and get_profile(profile).lossless == wants_lossless
            var_prof = get_profile(profile if fits else None, lossless=wants_lossless)
        try:
            var_control.check_profile(var_prof)
        except ValueError as exc:
            raise ValueError(f"variable {name!r}: {exc}") from None
        profiles[name], controls[name] = var_prof, var_control
    return profiles, controls


def choose_per_variable(
    ds: xr.Dataset,
    cube_vars: Mapping[Hashable, CubeVar],
    profiles: Mapping[Hashable, Profile],
    controls: Mapping[Hashable, ratecontrol.Control],
    bounds: dict[Hashable, Any],
) -> tuple[dict[Hashable, float | None], ratecontrol.Searched, int]:
    """The quality of each cube variable, each with its own profile and control (no
    target: crf, a bound or lossless); the search for a bound as for the whole call."""
    quality: dict[Hashable, float | None] = {}
    searched = ratecontrol.Searched()
    trials = 0
    for name, cv in cube_vars.items():
        found, search, made = ratecontrol.choose_qualities(
            ds, {name: cv}, profiles[name], controls[name], bounds
        )
        quality.update(found)
        searched.merge(search)
        trials += made
    return quality, searched, trials
