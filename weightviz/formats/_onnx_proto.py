"""The protobuf wire format, read without trusting it: varints of at most 10 bytes and
below 2**64, lengths that must fit inside their enclosing message, groups (wire types
3/4) and unknown wire types refused. :class:`Buf` walks the fields of one message through a
64 KiB read window; the packed-number helpers count and decode repeated fields with NumPy. The
ONNX messages themselves are walked by :mod:`._onnx_graph`.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import CorruptFileError, message
from .limits import ONNX_MAX_NAME as MAX_NAME

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
WIDTH = {FIXED64: 8, FIXED32: 4}
# TensorProto typed-data fields -> (name, wire type of one packed element, element width or 0)
TYPED = {4: ("float_data", FIXED32, 4), 5: ("int32_data", VARINT, 0), 7: ("int64_data", VARINT, 0),
         10: ("double_data", FIXED64, 8), 11: ("uint64_data", VARINT, 0)}
STRING_DATA = 6

class Buf:
    """A file (or bytes) read field by field through a small window: only the bytes of the
    structure are read (``raw_data`` is stepped over, never paged in), so listing a 1 GB
    model neither reads nor maps its data. A memory map would: touching one byte maps a whole
    large folio of the page cache (megabytes) on current kernels."""

    WINDOW = 1 << 16

    def __init__(self, data, name: str, size: int | None = None):
        self.name = name
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.f, self.chunk, self.size = None, bytes(data), len(data)
        else:
            self.f, self.chunk, self.size = data, b"", size
        self.c0 = 0

    def read(self, a: int, b: int) -> bytes:
        """Bytes ``[a, b)`` (the caller has checked they lie inside the file)."""
        c0 = self.c0
        if c0 <= a and b <= c0 + len(self.chunk):
            return self.chunk[a - c0:b - c0]
        if b - a > self.WINDOW:
            self.f.seek(a)
            return self.f.read(b - a)
        self.f.seek(a)
        self.chunk, self.c0 = self.f.read(self.WINDOW), a
        return self.chunk[:b - a]

    def close(self):
        if self.f is not None:
            self.f.close()

    def bad(self, what: str, got: str | None = None) -> CorruptFileError:
        return CorruptFileError(message(
            f"{self.name} is not a valid ONNX file: {what}",
            expected="a protobuf ModelProto as onnx.save writes it",
            fix="the file may be truncated or damaged; export or download it again", got=got))

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        data = self.read(pos, min(end, pos + 10))
        result = shift = 0
        for i, b in enumerate(data):
            result |= (b & 0x7F) << shift
            if b < 0x80:
                pos += i + 1
                break
            shift += 7
        else:
            if len(data) == 10:
                raise self.bad(f"a varint at byte {pos:,} is longer than 10 bytes")
            raise self.bad(f"a varint runs past the end of its message at byte {pos + len(data):,}",
                           got="a truncated file or a lying length")
        if result >> 64:
            raise self.bad(f"a varint ending at byte {pos:,} overflows 64 bits")
        return result, pos

    def fields(self, start: int, end: int):
        """(field number, wire type, value): an int for VARINT/FIXED*, (a, b) for LEN."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            num, wire = key >> 3, key & 7
            if num == 0:
                raise self.bad(f"field number 0 at byte {pos:,}", got=f"key {key}")
            if wire == VARINT:
                v, pos = self.varint(pos, end)
                yield num, wire, v
            elif wire == LEN:
                n, pos = self.varint(pos, end)
                if n > end - pos:
                    raise self.bad(f"field {num} declares {n:,} bytes at byte {pos:,}, past the end "
                                   f"of its enclosing message (byte {end:,})",
                                   got="a truncated file or a lying length")
                yield num, wire, (pos, pos + n)
                pos += n
            elif wire in WIDTH:
                w = WIDTH[wire]
                if w > end - pos:
                    raise self.bad(f"a {w}-byte field {num} runs past its message at byte {pos:,}")
                yield num, wire, int.from_bytes(self.read(pos, pos + w), "little")
                pos += w
            else:
                raise self.bad(f"wire type {wire} (field {num}) at byte {pos:,}",
                               got="protobuf groups or an invalid wire type; ONNX uses 0, 1, 2, 5")

    def text(self, span, what: str, limit: int = MAX_NAME) -> str:
        a, b = span
        if b - a > limit:
            raise self.bad(f"{what} is {b - a:,} bytes long (at most {limit:,})")
        try:
            return self.read(a, b).decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8", got=repr(self.read(a, min(b, a + 60)))) from None

    def need(self, wire: int, want: int, what: str):
        if wire != want:
            raise self.bad(f"{what} has wire type {wire}", got=f"wire type {wire}, expected {want}")


def signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def count_varints(buf: Buf, span) -> int:
    a, b = span
    if b <= a:
        return 0
    raw = np.frombuffer(buf.read(a, b), np.uint8)
    if raw[-1] >= 0x80:
        raise ValueError("a packed varint list ends inside a varint")
    return int(np.count_nonzero(raw < 0x80))


def decode_varints(raw: np.ndarray) -> np.ndarray:
    """Packed varints -> uint64 values (vectorised; each at most 10 bytes)."""
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    last = raw < 0x80
    if not last[-1]:
        raise ValueError("a packed varint list ends inside a varint")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(raw.size) - starts[group]
    if k.max() >= 10:
        raise ValueError("a packed varint is longer than 10 bytes")
    parts = (raw & 0x7F).astype(np.uint64) << (7 * k).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)


def packed_varints(buf: Buf, span, what: str) -> np.ndarray:
    a, b = span
    try:
        return decode_varints(np.frombuffer(buf.read(a, b), np.uint8))
    except ValueError as exc:
        raise buf.bad(f"the packed varints of {what}: {exc}") from None


def typed_count(buf: Buf, wire: int, span, elem: int, width: int, what: str, fname: str) -> int:
    if wire == elem:                   # one unpacked element
        return 1
    buf.need(wire, LEN, f"the {fname} of {what}")
    a, b = span
    if width:
        if (b - a) % width:
            raise buf.bad(f"the {fname} of {what} is {b - a:,} bytes, not a whole number of "
                          f"{width}-byte values")
        return (b - a) // width
    try:
        return count_varints(buf, span)
    except ValueError as exc:
        raise buf.bad(f"the {fname} of {what}: {exc}") from None


def typed_values(buf: Buf, t) -> tuple[int, np.ndarray]:
    """(field number, values) of a tensor's typed field, read now (packed or not)."""
    num = next(iter(t.typed))
    fname, elem, width = TYPED[num]
    parts = []
    for n, wire, v in buf.fields(*t.span):
        if n != num:
            continue
        if wire == elem:
            parts.append(np.array([v], np.uint64 if not width else (np.uint32 if width == 4 else np.uint64)))
        elif width:
            a, b = v
            parts.append(np.frombuffer(buf.read(a, b), "<u4" if width == 4 else "<u8").copy())
        else:
            parts.append(packed_varints(buf, v, t.name))
    vals = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    if width == 4:
        return num, vals.astype("<u4").view("<f4")
    if width == 8:
        return num, vals.astype("<u8").view("<f8")
    return num, vals.astype(np.uint64)


def open_buf(path: str) -> Buf:
    """The file opened for reading through a window; ``close()`` it when done."""
    from . import source as _source
    f = _source.open_file(path)
    return Buf(f, os.path.basename(path), _source.size(path))
