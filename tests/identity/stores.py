"""Stores written at fixed settings on real cubes, and their files' hashes.

Used to check that a refactoring changes no byte of what eocube writes: run this
module with the code before and after (``python tests/identity/stores.py OUT`` prints
the hashes as JSON), or let ``tests/test_byte_identity.py`` compare the current code
with the hashes recorded in ``recorded.json``. Only the public API is used, so the same
script runs against older commits.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"

# (store name, cube, to_eocube settings, a transposition of the input or None)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...] | None]] = [
    ("gfmap-lossless", "s2_l2a_openeo_gfmap_19x4x52x46", {"lossless": True}, None),
    ("gfmap-crf24", "s2_l2a_openeo_gfmap_19x4x52x46", {"crf": 24}, None),
    ("gfmap-bound30", "s2_l2a_openeo_gfmap_19x4x52x46", {"max_abs_error": 30}, None),
    (
        "worldcereal-crf28-bt",
        "s2_l2a_worldcereal_118x4x64x64",
        {"crf": 28},
        ("band", "time", "y", "x"),
    ),
    ("era5-crf20", "era5_t2m_uk_744h", {"crf": 20, "chunks": {"time": 128}}, None),
    ("tos-bound", "stars_cmip3_tos_24x1x170x180", {"max_abs_error": 0.05}, None),
    ("l8-lossless", "l8_ny18_014031", {"lossless": True}, None),
    ("gfmap-psnr42", "s2_l2a_openeo_gfmap_19x4x52x46", {"target_psnr": 42}, None),
    ("worldcereal-bpppb", "s2_l2a_worldcereal_72x4x64x64", {"target_bpppb": 0.4}, None),
]


def write_all(out: Path) -> dict[str, dict[str, str]]:
    """Write every case under ``out``; sha256 of each file of each store."""
    import xarray as xr

    import eocube

    hashes: dict[str, dict[str, str]] = {}
    for name, cube, settings, order in CASES:
        with xr.open_dataset(DATA / f"{cube}.nc") as src:
            ds = src.load()
        if order is not None:
            ds = ds.transpose(*order)
        store = out / f"{name}.eocube"
        eocube.to_eocube(ds, store, **settings)
        hashes[name] = {
            p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*"))
            if p.is_file()
        }
    return hashes


def environment() -> dict[str, str]:
    """What the bytes depend on beside eocube's code: the codecs' library versions."""
    import av
    import numcodecs
    import zarr

    return {"av": av.__version__, "zarr": zarr.__version__, "numcodecs": numcodecs.__version__}


if __name__ == "__main__":
    target = Path(sys.argv[1])
    target.mkdir(parents=True, exist_ok=True)
    print(json.dumps({"environment": environment(), "stores": write_all(target)}, indent=1))
