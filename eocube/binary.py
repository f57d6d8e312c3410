"""Little-endian byte strings with lengths and varints, as eocube's payload formats write them.

``str`` fields are a ``u8`` length and ASCII text; ``name`` fields a ``u8``: 0 and a
``str``, or ``i`` for the ``i``-th entry (from 1) of a fixed vocabulary; ``blob`` fields a
varint length and bytes; varints are unsigned LEB128 (7 bits a byte, low group first,
high bit set on every byte but the last); ``bits`` fields unsigned integers of ``n`` bits
each, most significant bit first, in as many bytes as they fill, the last padded with
zero bits. :class:`ByteWriter` writes them, :class:`ByteReader` reads them back
and raises :class:`~eocube.errors.CorruptChunkError` on anything short or malformed.
"""

from __future__ import annotations

import struct

import numpy as np

from eocube.errors import CorruptChunkError

MAX_VARINT_BITS = 64


def varint(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError(f"a varint holds integers >= 0, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class ByteWriter:
    """Appends fields to a byte string (see the module docstring for their encodings)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        """Bytes as they are."""
        self.parts.append(data)

    def pack(self, fmt: str, *values: float | int) -> None:
        """Values in :mod:`struct` format ``fmt``, little-endian."""
        self.parts.append(struct.pack("<" + fmt, *values))

    def text(self, value: str) -> None:
        """A ``u8`` length and ASCII text."""
        data = value.encode("ascii")
        self.pack("B", len(data))
        self.parts.append(data)

    def name(self, value: str, vocabulary: tuple[str, ...]) -> None:
        """``value`` as its index (from 1) in ``vocabulary``, or 0 and its text."""
        if value in vocabulary:
            self.pack("B", vocabulary.index(value) + 1)
        else:
            self.pack("B", 0)
            self.text(value)

    def varint(self, value: int) -> None:
        """An unsigned LEB128 varint."""
        self.parts.append(varint(value))

    def bits(self, values: np.ndarray, n: int) -> None:
        """Unsigned integers below ``2**n``, ``n`` bits each (1 to 32)."""
        v = np.asarray(values, dtype=np.int64).ravel()
        if v.size and (v.min() < 0 or v.max() >> n):
            raise ValueError(f"values {v.min()} .. {v.max()} do not fit {n} bits")
        shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
        self.parts.append(np.packbits(((v[:, None] >> shifts) & 1).astype(np.uint8)).tobytes())

    def blob(self, data: bytes) -> None:
        """A varint length and the bytes."""
        self.varint(len(data))
        self.parts.append(data)

    def getvalue(self) -> bytes:
        """Everything written so far."""
        return b"".join(self.parts)


class ByteReader:
    """Reads fields from a byte string; every read checks the bytes are there.

    Parameters
    ----------
    data : bytes or memoryview
        What to read.
    what : str
        Named in error messages (``"payload"``, ``"residual layer"``).
    pos : int
        Where to start.
    """

    def __init__(self, data: bytes | memoryview, what: str = "payload", pos: int = 0) -> None:
        self.data = memoryview(data)
        self.what = what
        self.pos = pos

    def take(self, n: int) -> memoryview:
        """The next ``n`` bytes."""
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise CorruptChunkError(
                f"{self.what} truncated: needs {end} bytes at least, has {len(self.data)}"
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, fmt: str) -> tuple:
        """Values in :mod:`struct` format ``fmt``, little-endian."""
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def text(self) -> str:
        """A ``u8`` length and ASCII text."""
        (n,) = self.unpack("B")
        try:
            return bytes(self.take(n)).decode("ascii")
        except UnicodeDecodeError:
            raise CorruptChunkError(f"{self.what} header holds a non-ASCII name") from None

    def name(self, vocabulary: tuple[str, ...]) -> str:
        """A name written by :meth:`ByteWriter.name` with the same ``vocabulary``."""
        (index,) = self.unpack("B")
        if index == 0:
            return self.text()
        if index > len(vocabulary):
            raise CorruptChunkError(f"{self.what} names entry {index} of {len(vocabulary)}")
        return vocabulary[index - 1]

    def bits(self, count: int, n: int) -> np.ndarray:
        """``count`` integers of ``n`` bits (int64), as :meth:`ByteWriter.bits` wrote them."""
        total = count * n
        data = np.frombuffer(self.take((total + 7) // 8), dtype=np.uint8)
        flat = np.unpackbits(data)
        if flat[total:].any():
            raise CorruptChunkError(f"{self.what} has bits set past its {count} values")
        weights = np.int64(1) << np.arange(n - 1, -1, -1, dtype=np.int64)
        return flat[:total].reshape(count, n).astype(np.int64) @ weights

    def varint(self) -> int:
        """An unsigned LEB128 varint of at most 64 bits."""
        # byte by byte from the view: a header holds dozens of these (sizes, packet
        # sizes, a date order), and struct per byte was most of its parse
        data, pos, end = self.data, self.pos, len(self.data)
        value = shift = 0
        while True:
            if pos >= end:
                raise CorruptChunkError(
                    f"{self.what} truncated: needs {pos + 1} bytes at least, has {end}"
                )
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                self.pos = pos
                return value
            shift += 7
            if shift >= MAX_VARINT_BITS:
                raise CorruptChunkError(f"{self.what} holds an over-long integer")

    def blob(self) -> memoryview:
        """A varint length and the bytes."""
        return self.take(self.varint())

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos
