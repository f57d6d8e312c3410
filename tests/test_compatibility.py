"""Payloads of every readable chunk format version decode as they did when written.

tests/data/payloads holds payloads written by the commits that wrote versions 1 to 14
(and version 1 in both its residual layouts), with what those commits decoded; see its
README. A format change that breaks them breaks users' stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eocube import read_header
from eocube.chunk import READABLE_VERSIONS
from eocube.testing import check_backwards_compatibility

PAYLOADS = Path(__file__).parent / "data" / "payloads"


def test_every_stored_payload_decodes_as_its_writer_decoded_it() -> None:
    checked = check_backwards_compatibility(PAYLOADS)
    assert len(checked) == 77


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_every_readable_version_has_stored_payloads(version: int) -> None:
    found = {read_header(p.read_bytes()).version for p in PAYLOADS.glob("*.eocb")}
    assert version in found


def test_the_first_residual_layout_is_read() -> None:
    # written before the range coder: no method byte in front of the zstd layout
    for name in ("bound-uint16", "bound-float32"):
        payload = (PAYLOADS / f"v1-zstd-residual-{name}.eocb").read_bytes()
        assert read_header(payload).version == 1
    check_backwards_compatibility(PAYLOADS)
