"""Payloads of older chunk format versions made from current ones, for the tests of how
readers treat them (a flag a version does not know is damage there).

Every payload is written at :data:`eocube.chunk.FORMAT_VERSION`, whose header and stream
fields are compact (docs/format.md §6.14); versions before it lay the same fields out as
fixed-size numbers. Relabelling a payload's version byte alone would make a reader of
the older layout misread every field after the dtype.
"""

from __future__ import annotations

from dataclasses import replace

from eocube import chunk as chunk_module
from eocube import wavelet as wavelet_mod
from eocube.binary import ByteReader, ByteWriter


def as_version(payload: bytes, version: int, *, flags: int | None = None) -> bytes:
    """``payload`` laid out as chunk format ``version`` (< 13) lays it out: the same
    header, streams, masks and residual layer; ``flags`` replaces the flag byte."""
    assert version < chunk_module.COMPACT_VERSION
    r = ByteReader(payload)
    header = chunk_module.ChunkHeader.from_bytes(r)
    head = bytearray(replace(header, version=version).to_bytes())
    if flags is not None:
        head[5] = flags
    w = ByteWriter()
    w.raw(bytes(head))
    start = r.pos
    if header.wavelet:
        wavelet_mod.skip(r, header.shape[1])
        w.raw(payload[start : r.pos])
    else:
        _, streams = chunk_module._read_streams(r, header)
        w.pack("B", len(streams))
        for stream in streams:
            w.text(stream.decoder)
            w.text(stream.pix_fmt)
            w.pack("III", stream.height, stream.width, stream.frames)
            w.blob(stream.extradata)
            w.varint(len(stream.packets))
            for packet in stream.packets:
                w.varint(len(packet))
            for packet in stream.packets:
                w.raw(packet)
    w.raw(payload[r.pos :])
    return w.getvalue()
