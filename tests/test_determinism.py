"""A chunk's bytes are a function of the chunk: the same block, encoded many times at once
on threads (as a store write encodes chunks), gives one payload with every shipped profile.

Region writes and appends rebuild the chunks a whole write makes, and a resumed or
repeated write must store what the first one did; x265's weighted prediction broke this
(benchmarks/results/determinism.md) and the x265 profiles turn it off."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from cubes import open_cube

from eocube import available_profiles, encode_chunk
from eocube.profiles import Profile

PROFILES = available_profiles()
# with x265's weightp=1, 2 to 46 % of the encodes of this 4-date block differed
ENCODES, AT_ONCE = 24, 6


def x265_params(prof: Profile) -> dict[str, str]:
    pairs = (item.partition("=") for item in prof.options.get("x265-params", "").split(":"))
    return {key: value for key, _, value in pairs}


@pytest.fixture(scope="module")
def block() -> np.ndarray:
    cube = open_cube("s2_l2a_openeo_gfmap_19x4x52x46")
    return np.ascontiguousarray(cube.data.values[0:4, :, 0:32, 0:32])


@pytest.mark.parametrize("name", [n for n, p in PROFILES.items() if p.encoder == "libx265"])
def test_x265_profiles_turn_weighted_prediction_off(name: str) -> None:
    assert x265_params(PROFILES[name]).get("weightp") == "0"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_encodes_of_a_block_on_threads_at_once_are_byte_identical(
    name: str, block: np.ndarray
) -> None:
    prof = PROFILES[name]
    data = block
    while prof.lossless and int(data.max()) - int(data.min()) >= 1 << prof.bits:
        data = data >> 1  # into the profile's lossless bit depth (hevc-lossless: 12)

    def digest(_: int) -> str:
        return hashlib.sha256(encode_chunk(data, prof)).hexdigest()

    with ThreadPoolExecutor(AT_ONCE) as pool:
        digests = set(pool.map(digest, range(ENCODES)))
    assert len(digests) == 1, f"{name}: {len(digests)} distinct payloads of {ENCODES} encodes"


@pytest.mark.parametrize(
    "name", [n for n, p in PROFILES.items() if p.quality and p.quality.fine_option]
)
def test_encodes_on_the_fine_quality_scale_are_byte_identical(name: str, block: np.ndarray) -> None:
    # x265's constant QP (quality below 0) takes another rate-control path than crf
    prof = PROFILES[name]
    assert prof.quality is not None

    def digest(_: int) -> str:
        return hashlib.sha256(encode_chunk(block, prof, quality=prof.quality.min)).hexdigest()

    with ThreadPoolExecutor(AT_ONCE) as pool:
        digests = set(pool.map(digest, range(ENCODES)))
    assert len(digests) == 1, f"{name}: {len(digests)} distinct payloads of {ENCODES} encodes"
