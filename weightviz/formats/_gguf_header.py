"""The GGUF header, parsed without trusting it: every count, length and offset is checked
against the file (and the limits of :mod:`.limits`) before anything is read or allocated.

Layout (versions 2 and 3; version 1 used 32-bit counts and is refused)::

    "GGUF"  u32 version  u64 tensor_count  u64 kv_count
    kv_count x      string key, u32 value type, value
    tensor_count x  string name, u32 n_dims, n_dims x u64 ne, u32 ggml type, u64 offset
    padding to general.alignment (default 32), then the data section

A string is a u64 byte length and UTF-8 bytes; an array is a u32 element type, a u64 count
and the elements. Counts and lengths are 64-bit, so a few bytes can declare 2**64 of
anything: each is compared with the bytes left (every key/value needs 13 bytes, every
tensor info 24, every string 8) before a loop starts. A big-endian file (version bytes
swapped, as llama.cpp's ``--bigendian`` writes) is read in its own byte order.

Tensor offsets are relative to the data section and must be multiples of the alignment;
each tensor's bytes (``numel / block * block bytes``) must lie inside the file and no two
may overlap. The row length ``ne[0]`` must be a whole number of quantization blocks.
Nothing here imports the ``gguf`` package: the caller passes the table of ggml types.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from math import prod
from typing import NamedTuple

from ..errors import CorruptFileError, message
from . import source as _source
from .limits import GGUF_KEPT_STRING as KEPT_STRING
from .limits import GGUF_MAX_ALIGNMENT as MAX_ALIGNMENT
from .limits import GGUF_MAX_ARRAY_DEPTH as MAX_DEPTH
from .limits import GGUF_MAX_DIMS as MAX_DIMS
from .limits import GGUF_MAX_HEADER as MAX_HEADER
from .limits import GGUF_MAX_KEYS as MAX_KEYS
from .limits import GGUF_MAX_NAME as MAX_NAME
from .limits import GGUF_MAX_TENSORS as MAX_TENSORS

PREAMBLE = 24
DEFAULT_ALIGNMENT = 32
SUPPORTED_VERSIONS = (2, 3)
# value type code -> (name, struct code); 8 STRING and 9 ARRAY are read apart
SCALARS = {0: ("UINT8", "B"), 1: ("INT8", "b"), 2: ("UINT16", "H"), 3: ("INT16", "h"),
           4: ("UINT32", "I"), 5: ("INT32", "i"), 6: ("FLOAT32", "f"), 7: ("BOOL", "B"),
           10: ("UINT64", "Q"), 11: ("INT64", "q"), 12: ("FLOAT64", "d")}
STRING, ARRAY = 8, 9
KEEP_ITEMS = 16          # arrays up to this long keep their values; longer ones only a count
# ggml types that once existed and were removed (files written with them no longer load)
REMOVED_TYPES = {4: "Q4_2", 5: "Q4_3", 31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8",
                 36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8"}


class Array(NamedTuple):
    """A metadata array too long to keep (tokenizer tokens, scores, merges): its type and count."""
    type: str
    count: int


class GGMLType(NamedTuple):
    name: str
    block: int           # elements per block (1 for plain types)
    size: int            # bytes per block


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ne: tuple            # as stored: ne[0] is the fastest-varying (row) dimension
    type: int            # ggml type code
    start: int           # absolute file offset of its data
    nbytes: int


@dataclass
class Header:
    version: int
    byte_order: str                       # '<' or '>'
    kv: dict = field(default_factory=dict)          # key -> value (str, int, float, bool, list, Array)
    kv_types: dict = field(default_factory=dict)    # key -> value type name
    tensors: list = field(default_factory=list)     # TensorInfo, in header order
    alignment: int = DEFAULT_ALIGNMENT
    data_start: int = 0


def bad(path, what: str, *, got: str | None = None, fix: str | None = None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is not a valid GGUF file: {what}",
        expected="a GGUF header (counts, key/values, tensor infos) that fits the file, "
                 "and tensor data inside it",
        fix=fix or "the file may be truncated or damaged; download it again (GGUF downloads "
                   "are often interrupted: compare the size with the source)", got=got))


def parse(path: str, types: dict[int, GGMLType]) -> Header:
    """The validated header of the GGUF file at ``path`` (``types``: ggml type code -> GGMLType)."""
    size = _source.size(path)
    if size < PREAMBLE:
        raise bad(path, f"{size} bytes, shorter than the 24-byte GGUF preamble", got=f"{size} bytes")
    if _source.is_remote(path):      # no length prefix: read on, doubling, as far as the parse goes
        buf = bytearray()

        def grow(upto: int) -> bytearray:
            want = min(size, max(upto, 2 * len(buf), FIRST_READ))
            buf.extend(_source.read_at(path, len(buf), want - len(buf)))
            return buf
        return _Parser(grow(PREAMBLE), size, path, types, grow).run()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return _Parser(mm, size, path, types).run()


FIRST_READ = 64 << 10        # a remote header's first read; each further read doubles what is held


class _Parser:
    def __init__(self, mm, size: int, path: str, types, grow=None):
        self.mm, self.size, self.path, self.types = mm, size, path, types
        self.grow, self.have = grow, (size if grow is None else len(mm))
        self.pos = 0
        self.etype = ""                                 # element type of the last top-level array
        self.limit = min(size, PREAMBLE + MAX_HEADER)   # the header must end before this
        self.e = "<"

    # ---------------------------------------------------------------- primitives
    def need(self, n: int, what: str):
        if self.pos + n > self.limit:
            if self.pos + n > self.size:
                raise bad(self.path, f"{what} runs past the end of the {self.size:,}-byte file "
                                     f"(at byte {self.pos:,}, {n:,} bytes declared)",
                          got="a truncated header or a lying length")
            raise bad(self.path, f"the header is longer than the {MAX_HEADER >> 20} MiB limit "
                                 f"({what} at byte {self.pos:,})")
        if self.pos + n > self.have:
            self._more(self.pos + n)

    def _more(self, upto: int):
        self.mm = self.grow(upto)
        self.have = len(self.mm)

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize("<" + fmt)
        self.need(n, what)
        out = struct.unpack_from(self.e + fmt, self.mm, self.pos)
        self.pos += n
        return out

    def string(self, what: str, *, keep: int, strict: bool):
        (n,) = self.unpack("Q", what)
        if n > keep and strict:
            raise bad(self.path, f"{what} is {n:,} bytes long (the limit is {keep:,})")
        self.need(n, what)
        raw = self.mm[self.pos:self.pos + min(n, keep)]
        self.pos += n
        if strict:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise bad(self.path, f"{what} is not UTF-8", got=repr(raw[:80])) from None
        text = raw.decode("utf-8", "replace")
        return text if n <= keep else text + f"… ({n:,} bytes)"

    # ---------------------------------------------------------------- the header
    def run(self) -> Header:
        magic, version = struct.unpack_from("<4sI", self.mm, 0)
        if magic != b"GGUF":
            raise bad(self.path, "missing the GGUF magic", got=repr(magic))
        if version & 0xFFFF == 0 and version:
            self.e = ">"
            (version,) = struct.unpack_from(">I", self.mm, 4)
        if version not in SUPPORTED_VERSIONS:
            old = version == 1
            raise bad(self.path, f"GGUF version {version} is not supported (versions 2 and 3 are)",
                      got=f"version {version}",
                      fix=("version 1 (2023, 32-bit counts) predates llama.cpp's current reader too: "
                           "convert the model again with a current llama.cpp" if old else
                           "a newer GGUF version: update weightviz and the gguf package"))
        h = Header(version=version, byte_order=self.e)
        self.pos = 8
        n_tensors, n_kv = self.unpack("QQ", "the tensor and key/value counts")
        room = self.size - PREAMBLE
        if n_kv > MAX_KEYS or n_kv * 13 > room:
            raise bad(self.path, f"it declares {n_kv:,} key/values (limit {MAX_KEYS:,}; each needs at "
                                 f"least 13 bytes, the file has {room:,} after the preamble)")
        if n_tensors > MAX_TENSORS or n_tensors * 24 > room:
            raise bad(self.path, f"it declares {n_tensors:,} tensors (limit {MAX_TENSORS:,}; each needs "
                                 f"at least 24 bytes of header, the file has {room:,})")
        for _ in range(n_kv):
            key = self.string("a metadata key", keep=MAX_NAME, strict=True)
            if key in h.kv:
                raise bad(self.path, f"the metadata key {key!r} appears twice")
            (vtype,) = self.unpack("I", f"the type of {key!r}")
            h.kv[key] = self.value(vtype, key, 0)
            h.kv_types[key] = f"ARRAY[{self.etype}]" if vtype == ARRAY else _type_name(vtype)
        h.alignment = self.alignment(h)
        infos = [self.tensor_info(h.alignment) for _ in range(n_tensors)]
        h.data_start = -(-self.pos // h.alignment) * h.alignment
        h.tensors = self.place(infos, h.data_start)
        return h

    def value(self, vtype: int, key: str, depth: int):
        if vtype in SCALARS:
            name, code = SCALARS[vtype]
            (v,) = self.unpack(code, f"the value of {key!r}")
            return bool(v) if name == "BOOL" else v
        if vtype == STRING:
            return self.string(f"the string value of {key!r}", keep=KEPT_STRING, strict=False)
        if vtype == ARRAY:
            return self.array(key, depth + 1)
        raise bad(self.path, f"metadata key {key!r} has an unknown value type {vtype}",
                  got=f"type {vtype}; known: 0-12")

    def array(self, key: str, depth: int):
        """An array value (its u32 element type and u64 count come next)."""
        if depth > MAX_DEPTH:
            raise bad(self.path, f"metadata key {key!r} nests arrays more than {MAX_DEPTH} deep")
        etype, count = self.unpack("IQ", f"the array header of {key!r}")
        if depth == 1:
            self.etype = _type_name(etype)
        if etype in SCALARS:
            name, code = SCALARS[etype]
            width = struct.calcsize(code)
            self.need(count * width, f"the {count:,}-element {name} array {key!r}")
            if count > KEEP_ITEMS:
                self.pos += count * width
                return Array(name, count)
            vals = struct.unpack_from(f"{self.e}{count}{code}", self.mm, self.pos)
            self.pos += count * width
            return [bool(v) for v in vals] if name == "BOOL" else list(vals)
        if etype == STRING:
            self.need(count * 8, f"the {count:,}-string array {key!r}")
            if count <= KEEP_ITEMS:
                return [self.string(f"a string of {key!r}", keep=KEPT_STRING, strict=False)
                        for _ in range(count)]
            self.skip_strings(count, key)
            return Array("STRING", count)
        if etype == ARRAY:
            self.need(count * 12, f"the {count:,}-array array {key!r}")
            for _ in range(count):
                self.array(key, depth + 1)
            return Array("ARRAY", count)
        raise bad(self.path, f"metadata array {key!r} has an unknown element type {etype}",
                  got=f"type {etype}; known: 0-12")

    def skip_strings(self, count: int, key: str):
        """Walk ``count`` strings (length-prefixed, so one by one) without keeping them."""
        mm, pos, fmt, unpack = self.mm, self.pos, self.e + "Q", struct.unpack_from
        last = self.limit - 8
        for _ in range(count):
            if pos > last:
                break
            if pos + 8 > self.have:                   # a remote header: read on
                self._more(pos + 8)
                mm = self.mm
            pos += 8 + unpack(fmt, mm, pos)[0]
        else:
            if pos <= self.limit:
                self.pos = pos
                return
        where = "the end of the file" if pos > self.size or self.limit == self.size else \
            f"the {MAX_HEADER >> 20} MiB header limit"
        raise bad(self.path, f"the {count:,}-string array {key!r} runs past {where}",
                  got="a truncated header or a lying string length")

    def alignment(self, h: Header) -> int:
        if "general.alignment" not in h.kv:
            return DEFAULT_ALIGNMENT
        a, t = h.kv["general.alignment"], h.kv_types["general.alignment"]
        if t != "UINT32" or not 0 < a <= MAX_ALIGNMENT or a & (a - 1):
            raise bad(self.path, "general.alignment must be a UINT32 power of two "
                                 f"(at most {MAX_ALIGNMENT:,})", got=f"{a!r} ({t})")
        return a

    def tensor_info(self, alignment: int):
        name = self.string("a tensor name", keep=MAX_NAME, strict=True)
        (n_dims,) = self.unpack("I", f"the dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            raise bad(self.path, f"tensor {name!r} has {n_dims:,} dimensions (ggml allows {MAX_DIMS})")
        ne = self.unpack(f"{n_dims}Q", f"the dimensions of {name!r}")
        ttype, offset = self.unpack("IQ", f"the type and offset of {name!r}")
        if any(d >= 1 << 63 for d in ne):
            raise bad(self.path, f"tensor {name!r} has a dimension of 2**63 or more", got=f"ne={list(ne)}")
        t = self.types.get(ttype)
        if t is None:
            old = REMOVED_TYPES.get(ttype)
            raise bad(self.path, f"tensor {name!r} has an unknown ggml type {ttype}"
                      + (f" ({old}, removed from ggml)" if old else ""),
                      got=f"type {ttype}; known: {', '.join(f'{c} {v.name}' for c, v in sorted(self.types.items()))}",
                      fix=("re-quantize the model with a current llama.cpp (llama-quantize)" if old else
                           "the file may be damaged, or written by a newer ggml: update the gguf package"))
        if ne and ne[0] % t.block:
            raise bad(self.path, f"tensor {name!r} has rows of {ne[0]:,} elements, not a whole number of "
                                 f"{t.name} blocks of {t.block}", got=f"ne={list(ne)}")
        if offset % alignment:
            raise bad(self.path, f"tensor {name!r} starts at data offset {offset:,}, not a multiple of the "
                                 f"alignment {alignment}", got="an alignment that does not match the offsets")
        numel = prod(ne)
        return name, tuple(ne), ttype, offset, numel // t.block * t.size

    def place(self, infos, data_start: int) -> list:
        out, names = [], set()
        for name, ne, ttype, offset, nbytes in infos:
            if name in names:
                raise bad(self.path, f"the tensor name {name!r} appears twice")
            names.add(name)
            start = data_start + offset
            if start + nbytes > self.size:
                raise bad(self.path, f"tensor {name!r} ({nbytes:,} bytes at byte {start:,}) ends past the "
                                     f"end of the {self.size:,}-byte file",
                          got="a truncated file or a lying offset")
            out.append(TensorInfo(name, ne, ttype, start, nbytes))
        spans = sorted((t.start, t.start + t.nbytes, t.name) for t in out if t.nbytes)
        for (_a, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise bad(self.path, f"tensors {n0!r} and {n1!r} overlap (bytes {b1:,}-{e0:,})",
                          got="overlapping tensor offsets")
        return out


def _type_name(vtype: int) -> str:
    if vtype in SCALARS:
        return SCALARS[vtype][0]
    return {STRING: "STRING", ARRAY: "ARRAY"}.get(vtype, f"type {vtype}")
