"""eocube.paramsets: a stream's parameter sets stored against the format's dictionary."""

from __future__ import annotations

import numpy as np
import pytest
from legacy import as_version  # tests/legacy.py

from eocube import CorruptChunkError, decode_chunk, encode_chunk, paramsets, video
from eocube import chunk as chunk_module

VPS = b"\x00\x00\x00\x01\x40\x01\x0c\x01"
SPS = b"\x00\x00\x00\x01\x42\x01\x01\x04"
PPS = b"\x00\x00\x01\x44\x01\xc1"
SLICE = b"\x00\x00\x00\x01\x26\x01\xaf\x00\x00\x03\x01"


def test_the_head_is_the_parameter_sets_before_the_first_other_unit() -> None:
    packet = VPS + SPS + PPS + SLICE
    assert paramsets.head_length("hevc", packet) == len(VPS + SPS + PPS)
    # counted from where the stored packet starts: after a 4-byte prefix
    assert paramsets.head_length("hevc", packet, 4) == len(VPS + SPS + PPS) - 4
    assert paramsets.head_length("hevc", SLICE + VPS) == 0  # a later packet
    assert paramsets.head_length("hevc", VPS + SPS) == 0  # no picture after them
    assert paramsets.head_length("hevc", packet, len(packet)) == 0
    assert paramsets.head_length("h264", packet) == 0
    assert paramsets.head_length("hevc", b"") == 0


def test_heads_inflate_back_and_damage_is_refused() -> None:
    head = (VPS + SPS + PPS)[4:]
    packed = paramsets.pack(head)
    assert paramsets.unpack(packed) == head
    assert paramsets.pack(b"") == b""
    assert paramsets.unpack(b"") == b""
    with pytest.raises(CorruptChunkError, match="does not inflate"):
        paramsets.unpack(b"\xff\xff\xff")
    with pytest.raises(CorruptChunkError, match="one whole deflate stream"):
        paramsets.unpack(packed + b"\x00")
    with pytest.raises(CorruptChunkError, match="one whole deflate stream"):
        paramsets.unpack(packed[:-2])
    with pytest.raises(CorruptChunkError, match="inflates to"):
        paramsets.unpack(paramsets.pack(bytes(paramsets.MAX_HEAD + 1)))


def test_the_dictionary_holds_what_the_default_profile_writes() -> None:
    block = np.random.default_rng(0).integers(0, 4000, (2, 4, 64, 64)).astype(np.uint16)
    payload = encode_chunk(block, "hevc-12bit-444", quality=30)
    streams = chunk_module.parse_chunk(payload).streams
    assert len(streams) == 2
    for stream in streams:
        # the reader gives the decoder the encoder's first packet, parameter sets first
        first = stream.packets[0]
        assert first.startswith(b"\x00\x00\x00\x01\x40\x01")  # a VPS
        n = paramsets.head_length("hevc", first, 4)
        assert n >= 60
        head = first[4 : 4 + n]
        assert head in paramsets.DICTIONARY
        # stored deflated: a copy from the dictionary, not the bytes themselves
        assert head not in payload
        assert len(paramsets.pack(head)) <= n // 4
    # the same packets laid out whole, as version 12 stores them, decode the same
    legacy = as_version(payload, 12)
    assert len(legacy) - len(payload) >= 2 * (60 - 60 // 4)
    np.testing.assert_array_equal(decode_chunk(legacy), decode_chunk(payload))


def test_a_damaged_head_is_corrupt() -> None:
    block = np.random.default_rng(1).integers(0, 4000, (1, 1, 32, 32)).astype(np.uint16)
    payload = encode_chunk(block, "hevc-12bit-420-luma", quality=30)
    (stream,) = chunk_module.parse_chunk(payload).streams
    # one packet: no shared prefix, the head starts with the VPS's start code
    first = stream.packets[0]
    head = paramsets.pack(first[: paramsets.head_length("hevc", first)])
    assert head
    at = payload.index(head)
    damaged = payload[:at] + bytes([head[0] ^ 0xFF]) + payload[at + 1 :]
    with pytest.raises(CorruptChunkError):
        decode_chunk(damaged)


# the x265 versions whose parameter sets build_dictionary was checked to rebuild
# DICTIONARY from: 4.2 (PyAV 18.1.0, which made it) and 4.3 (PyAV 18.1.1 and 19.0.2)
DICTIONARY_X265 = ("4.2", "4.3")


@pytest.mark.skipif(
    (video.x265_version() or "").split("+")[0] not in DICTIONARY_X265,
    reason=f"the dictionary was checked against x265 {', '.join(DICTIONARY_X265)} only",
)
def test_build_dictionary_made_the_frozen_dictionary() -> None:
    # the format keeps the frozen bytes whatever a later x265 makes
    assert paramsets.build_dictionary() == paramsets.DICTIONARY
