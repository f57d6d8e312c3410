"""A stream's parameter sets, stored deflated against a fixed dictionary (chunk format 14).

An HEVC stream starts its first packet with the parameter sets a decoder needs before
any picture (VPS, SPS and PPS: about 80 bytes from x265), which differ from stream to
stream only in a few fields (the frame size, the chroma format, the level). On a chunk of
13 bands of 64 × 64 px at 0.15 bpppb they were 16 % of the payload: two streams of
79 bytes of parameter sets in 964. From chunk format 14 a payload stores those bytes,
the stream's *head*, deflated (RFC 1951) with :data:`DICTIONARY` as the preset
dictionary: x265's parameter sets of the shipped HEVC profiles' pixel formats at common
frame sizes, so that a stream's head is mostly a copy from it (5 bytes where its frame
size is there, 10 to 30 otherwise). The reader inflates the head and puts it back in
front of the first packet: decoders, NVDEC's included, see the encoder's packets.

The dictionary is part of the format (docs/format.md §6.15): it never changes once
written; :func:`build_dictionary` is how it was made (x265 of PyAV 18.1.0).
"""

from __future__ import annotations

import base64
import zlib

from eocube.errors import CorruptChunkError

MAX_HEAD = 4096
"""The most bytes a head may inflate to: a reader refuses more (a damaged or hostile
payload must not make it allocate without bound)."""

_PARAMETER_SET_TYPES = frozenset({32, 33, 34})
"""HEVC NAL unit types of the VPS, SPS and PPS."""


def head_length(decoder: str, packet: bytes, start: int = 0) -> int:
    """How many bytes of ``packet`` from ``start`` are its parameter sets: for ``hevc``
    packets in Annex B (start codes), the bytes up to the start code of the first NAL
    unit that is not a VPS, SPS or PPS; 0 for other decoders, or where ``start`` lies
    beyond that."""
    if decoder != "hevc":
        return 0
    at = packet.find(b"\x00\x00\x01")
    while at >= 0 and at + 3 < len(packet):
        nal_type = (packet[at + 3] >> 1) & 0x3F
        if nal_type not in _PARAMETER_SET_TYPES:
            # a four-byte start code's leading zero belongs to the unit that follows
            end = at - 1 if at > 0 and packet[at - 1] == 0 else at
            return max(end - start, 0)
        at = packet.find(b"\x00\x00\x01", at + 3)
    return 0


def pack(head: bytes) -> bytes:
    """``head`` deflated against :data:`DICTIONARY` (empty for an empty head)."""
    if not head:
        return b""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
    return deflate.compress(head) + deflate.flush()


def unpack(data: bytes) -> bytes:
    """The head :func:`pack` made ``data`` from.

    Raises
    ------
    CorruptChunkError
        If ``data`` is not one whole deflate stream, inflates to nothing or to more than
        :data:`MAX_HEAD` bytes.
    """
    if not data:
        return b""
    inflate = zlib.decompressobj(-15, DICTIONARY)
    try:
        head = inflate.decompress(data, MAX_HEAD + 1)
    except zlib.error as exc:
        raise CorruptChunkError(f"payload's stream head does not inflate: {exc}") from None
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        raise CorruptChunkError("payload's stream head is not one whole deflate stream")
    if not head or len(head) > MAX_HEAD:
        raise CorruptChunkError(f"payload's stream head inflates to {len(head)} bytes")
    return head


_DICTIONARY_SIZES = ((64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024), (32, 64))
"""Frame sizes (rows, columns) of the blocks :func:`build_dictionary` codes."""
_DICTIONARY_PROFILES = (
    "hevc-lossless",
    "hevc-12bit-444-gbr",
    "hevc-12bit-420-luma",
    "hevc-12bit-444",
)
"""The shipped HEVC profiles whose heads it holds, the default last (deflate's nearest
matches cost least)."""


def build_dictionary() -> bytes:
    """How :data:`DICTIONARY` was made: the distinct heads of the streams
    :func:`eocube.chunk.encode_chunk` writes for blocks of 4 bands (a main stream and a
    gray or 4:2:0 one) of each of :data:`_DICTIONARY_SIZES`, with each of
    :data:`_DICTIONARY_PROFILES`, one after the other, the 256 and 64 px frames of the
    default profile last, x265 running with its own pool and frame threads (as eocube ran
    it then; :func:`eocube.video.x265_own_threading`). Its bytes depend on the x265 that
    codes them, so the format keeps the dictionary it made, not this function's output."""
    import numpy as np

    from eocube.chunk import encode_chunk, parse_chunk
    from eocube.profiles import get_profile
    from eocube.video import x265_own_threading

    heads: dict[bytes, None] = {}
    sizes = sorted(_DICTIONARY_SIZES, key=lambda s: s in ((256, 256), (64, 64)))
    for profile in _DICTIONARY_PROFILES:
        for rows, cols in sizes:
            block = np.zeros((1, 4, rows, cols), np.uint16)
            block[0, :, 0, 0] = 1000
            quality = None if get_profile(profile).lossless else 30
            with x265_own_threading():
                payload = encode_chunk(block, profile, quality=quality)
            for stream in parse_chunk(payload).streams:
                packet = stream.packets[0]
                n = head_length(stream.decoder, packet)
                start = 4 if packet.startswith(b"\x00\x00\x00\x01") else 0
                heads.setdefault(packet[start:n], None)
    return b"".join(heads)


DICTIONARY = base64.b64decode(
    "QAEMAf//BAgAAAMAmYgAAAMAAP+VmAkAAAABQgEBBAgAAAMAmYgAAAMAAP+gECAgRSllZrkyuaAgAAADACAA"
    "AAMDIQAAAAFEAcFxixJAAQwB//8ECAAAAwCZiAAAAwAA/5WYCQAAAAFCAQEECAAAAwCZiAAAAwAA/6AEAgCA"
    "RSllZrkyuaAgAAADACAAAAMDIQAAAAFEAcFxixJAAQwB//8ECAAAAwCZiAAAAwAA/5WYCQAAAAFCAQEECAAA"
    "AwCZiAAAAwAA/6ACAIAQBFKWVmuTK5oCAAADAAIAAAMAMhAAAAABRAHBcYsSQAEMAf//BAgAAAMAmYgAAAMA"
    "AP+VmAkAAAABQgEBBAgAAAMAmYgAAAMAAP+gIIIRSllZrkyuaAgAAAMACAAAAwDIQAAAAAFEAcFxiRJAAQwB"
    "//8ECAAAAwCZiAAAAwAA/5WYCQAAAAFCAQEECAAAAwCZiAAAAwAA/6AggQRSllZrkyuaAgAAAwACAAADADIQ"
    "AAAAAUQBwXGJEkABDAH//wQIAAADAJmIAAADAAD/lZgJAAAAAUIBAQQIAAADAJmIAAADAAD/oAgIBARSllZr"
    "kyuaAgAAAwACAAADADIQAAAAAUQBwXGLEkABDAH//wQIAAADAJgIAAADAAAenZgJAAAAAUIBAQQIAAADAJgI"
    "AAADAAAekAIEBAilLOzXJlc3AgIABAAAAwAEAAADAGQgAAAAAUQBwXfBiUABDAH//wQIAAADAJnIAAADAAAe"
    "nZgJAAAAAUIBAQQIAAADAJnIAAADAAAewECAgRSlnZrkyuaAgAAAAwCAAAAMhAAAAAFEAcF3wYlAAQwB//8E"
    "CAAAAwCYCAAAAwAAWp2YCQAAAAFCAQEECAAAAwCYCAAAAwAAWpAAgEAQCKUs7NcmVzcCAgAEAAADAAQAAAMA"
    "ZCAAAAABRAHBd8GJQAEMAf//BAgAAAMAmcgAAAMAAFqdmAkAAAABQgEBBAgAAAMAmcgAAAMAAFrAEAgCARSl"
    "nZrkyuaAgAAAAwCAAAAMhAAAAAFEAcF3wYlAAQwB//8ECAAAAwCYCAAAAwAAeJ2YCQAAAAFCAQEECAAAAwCY"
    "CAAAAwAAeJAAQBACAIpSzs1yZXNwICAAQAAAAwBAAAAGQgAAAAFEAcF3wYlAAQwB//8ECAAAAwCZyAAAAwAA"
    "eJ2YCQAAAAFCAQEECAAAAwCZyAAAAwAAeMAIAgBAEUpZ2a5MrmgIAAADAAgAAAMAyEAAAAABRAHBd8GJQAEM"
    "Af//BAgAAAMAmAgAAAMAAB6dmAkAAAABQgEBBAgAAAMAmAgAAAMAAB6QBBBCKUs7NcmVzcCAgAEAAAMAAQAA"
    "AwAZCAAAAAFEAcF3wIlAAQwB//8ECAAAAwCZyAAAAwAAHp2YCQAAAAFCAQEECAAAAwCZyAAAAwAAHsCCCEUp"
    "Z2a5MrmgIAAAAwAgAAADAyEAAAABRAHBd8CJQAEMAf//BAgAAAMAmAgAAAMAAB6dmAkAAAABQgEBBAgAAAMA"
    "mAgAAAMAAB6QBBAgilLOzXJlc3AgIABAAAADAEAAAAZCAAAAAUQBwXfAiUABDAH//wQIAAADAJnIAAADAAAe"
    "nZgJAAAAAUIBAQQIAAADAJnIAAADAAAewIIEEUpZ2a5MrmgIAAADAAgAAAMAyEAAAAABRAHBd8CJQAEMAf//"
    "BAgAAAMAmAgAAAMAADydmAkAAAABQgEBBAgAAAMAmAgAAAMAADyQAQEAgIpSzs1yZXNwICAAQAAAAwBAAAAG"
    "QgAAAAFEAcF3wYlAAQwB//8ECAAAAwCZyAAAAwAAPJ2YCQAAAAFCAQEECAAAAwCZyAAAAwAAPMAgIBARSlnZ"
    "rkyuaAgAAAMACAAAAwDIQAAAAAFEAcF3wYlAAQwB//8ECAAAAwCZiAAAAwAAHp2YCQAAAAFCAQEECAAAAwCZ"
    "iAAAAwAAHqAQICBFKWdmuTK5oCAAAAMAIAAAAwMhAAAAAUQBwXfBiUABDAH//wQIAAADAJmIAAADAABanZgJ"
    "AAAAAUIBAQQIAAADAJmIAAADAABaoAQCAIBFKWdmuTK5oCAAAAMAIAAAAwMhAAAAAUQBwXfBiUABDAH//wQI"
    "AAADAJmIAAADAAB4nZgJAAAAAUIBAQQIAAADAJmIAAADAAB4oAIAgBAEUpZ2a5MrmgIAAAMAAgAAAwAyEAAA"
    "AAFEAcF3wYlAAQwB//8ECAAAAwCZiAAAAwAAHp2YCQAAAAFCAQEECAAAAwCZiAAAAwAAHqAgghFKWdmuTK5o"
    "CAAAAwAIAAADAMhAAAAAAUQBwXfAiUABDAH//wQIAAADAJmIAAADAAAenZgJAAAAAUIBAQQIAAADAJmIAAAD"
    "AAAeoCCBBFKWdmuTK5oCAAADAAIAAAMAMhAAAAABRAHBd8CJQAEMAf//BAgAAAMAmYgAAAMAADydmAkAAAAB"
    "QgEBBAgAAAMAmYgAAAMAADygCAgEBFKWdmuTK5oCAAADAAIAAAMAMhAAAAABRAHBd8GJQAEMAf//BAgAAAMA"
    "mAgAAAMAAB6dmAkAAAABQgEBBAgAAAMAmAgAAAMAAB6QAgQECKUs7NcmVzQEAAADAAQAAAMAZCAAAAABRAHB"
    "d8GJQAEMAf//BAgAAAMAmAgAAAMAAFqdmAkAAAABQgEBBAgAAAMAmAgAAAMAAFqQAIBAEAilLOzXJlc0BAAA"
    "AwAEAAADAGQgAAAAAUQBwXfBiUABDAH//wQIAAADAJgIAAADAAB4nZgJAAAAAUIBAQQIAAADAJgIAAADAAB4"
    "kABAEAIAilLOzXJlc0BAAAADAEAAAAZCAAAAAUQBwXfBiUABDAH//wQIAAADAJgIAAADAAAenZgJAAAAAUIB"
    "AQQIAAADAJgIAAADAAAekAQQQilLOzXJlc0BAAADAAEAAAMAGQgAAAABRAHBd8CJQAEMAf//BAgAAAMAmAgA"
    "AAMAAB6dmAkAAAABQgEBBAgAAAMAmAgAAAMAAB6QBBAgilLOzXJlc0BAAAADAEAAAAZCAAAAAUQBwXfAiUAB"
    "DAH//wQIAAADAJgIAAADAAA8nZgJAAAAAUIBAQQIAAADAJgIAAADAAA8kAEBAICKUs7NcmVzQEAAAAMAQAAA"
    "BkIAAAABRAHBd8GJ"
)
"""The preset dictionary of every stream head (:func:`build_dictionary`, frozen)."""
