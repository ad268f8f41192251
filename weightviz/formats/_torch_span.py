"""A ``torch.save`` zip lying at a byte span of a file, read without torch and without running it.

Each chunk of a ``torch.distributed.checkpoint`` ``.distcp`` file is a complete
``torch.save`` archive written at some offset (``filesystem._write_item``); DeepSpeed's
``*_states.pt`` are the same archive filling a whole file. Reading a checkpoint of
thousands of chunks must stay cheap, so the zip's central directory is parsed here from
two ``os.pread`` calls (the span's first and last 4 KiB; no ``zipfile``), the
``data.pkl`` record goes through the recording unpickler (nothing imported or called;
identical records are recorded once per ``memo``), and each storage is located in the
file so its bytes are read straight into place (or memory-mapped when large). The checks
are ``torch_file``'s: stored members inside the span, unique names, no encryption,
storages as large as their tensors need, little-endian.
"""
from __future__ import annotations

import os
import pickle
import struct
from math import prod
from typing import NamedTuple

import numpy as np

from .. import dtypes
from ..errors import CorruptFileError, UnsafeCheckpointError, message
from ._unpickle import TensorRecord, record
from .limits import TORCH_MAX_PICKLE, ZIP_MAX_MEMBERS

_EOCD, _Z64_LOC, _Z64_EOCD, _CDH, _LFH = (b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06",
                                         b"PK\x01\x02", b"PK\x03\x04")
_CD = struct.Struct("<4sHHHHHHIIIHHHHHII")          # a central directory entry (46 bytes)
PREAD_MAX = 4 << 20       # contiguous storages up to this size are read, larger ones mapped
EDGE = 4096               # bytes read at each end of a span
MEMO_MAX = 512            # distinct data.pkl records remembered per memo


def bad(path, what, got=None, *, tensor=None) -> CorruptFileError:
    where = f" (tensor {tensor!r})" if tensor else ""
    return CorruptFileError(message(
        f"{os.path.basename(path)} is damaged{where}: {what}",
        expected="a complete torch.save archive at each chunk's offset",
        fix="the file may be truncated or overwritten; copy the checkpoint folder again", got=got))


class _Reader:
    """Reads within one span, answering from its first/last bytes when it can."""

    def __init__(self, fd, path, start, length, tensor):
        self.fd, self.path, self.start, self.length, self.tensor = fd, path, start, length, tensor
        self.head = self.tail = b""
        if length < 22:
            raise bad(path, f"a {length}-byte span is too short for a zip", tensor=tensor)
        if length <= 2 * EDGE:
            self.head = self.tail = self.read(0, length)
        else:
            self.head, self.tail = self.read(0, EDGE), self.read(length - EDGE, EDGE)

    def read(self, off, n) -> bytes:
        """``n`` bytes at span offset ``off``."""
        if off < 0 or off + n > self.length:
            raise bad(self.path, "a record runs past the end of its span", tensor=self.tensor)
        if off + n <= len(self.head):
            return self.head[off:off + n]
        base = self.length - len(self.tail)
        if off >= base and self.tail:
            return self.tail[off - base:off - base + n]
        data = os.pread(self.fd, n, self.start + off)
        if len(data) != n:
            raise bad(self.path, f"{n:,} bytes at offset {self.start + off:,} run past the end of "
                                 "the file", tensor=self.tensor)
        return data

    def directory(self) -> bytes:
        """The central directory's bytes (found through the end record, zip64 included)."""
        tail, length = self.tail, self.length
        pos = tail.rfind(_EOCD)
        if pos < 0 and length > len(tail):
            tail = self.read(length - min(length, 65557), min(length, 65557))
            pos = tail.rfind(_EOCD)
        if pos < 0 or pos + 22 > len(tail):
            raise bad(self.path, "no zip directory at the end of the chunk's span", tensor=self.tensor)
        count, cd_size, cd_off = struct.unpack_from("<HII", tail, pos + 10)
        if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:      # zip64
            loc = tail[pos - 20:pos] if pos >= 20 else b""
            if loc[:4] != _Z64_LOC:
                raise bad(self.path, "a zip64 directory without its locator", tensor=self.tensor)
            rec = self.read(struct.unpack_from("<Q", loc, 8)[0], 56)
            if rec[:4] != _Z64_EOCD:
                raise bad(self.path, "a damaged zip64 directory record", tensor=self.tensor)
            count, cd_size, cd_off = struct.unpack_from("<QQQ", rec, 32)
        if count > ZIP_MAX_MEMBERS or cd_off + cd_size > length:
            raise bad(self.path, f"a zip directory of {count:,} members outside the {length:,}-byte "
                                 "span", tensor=self.tensor)
        self.count, self.cd_off = count, cd_off
        return self.read(cd_off, cd_size)

    def members(self, memo=None) -> dict:
        """name -> (local header offset, compressed size, size, method). With ``memo``, a
        directory equal to one seen before except for its CRCs (which weightviz does not use)
        is not parsed again: the chunks of a DCP file repeat one layout."""
        cd = self.directory()
        seen = (memo.setdefault(("cd", len(cd), self.count, self.length), [])
                if memo is not None else None)
        for tmpl, segs, zm in seen or ():
            if all(cd[a:b] == tmpl[a:b] for a, b in segs):
                return zm
        out, p, crcs = {}, 0, []
        for _ in range(self.count):
            if p + 46 > len(cd):
                raise bad(self.path, "a damaged zip directory entry", tensor=self.tensor)
            (sig, _, _, flags, method, _, _, _, csize, usize, nlen, elen, clen, _, _, _,
             lho) = _CD.unpack_from(cd, p)
            if sig != _CDH:
                raise bad(self.path, "a damaged zip directory entry", tensor=self.tensor)
            name = cd[p + 46:p + 46 + nlen].decode("utf-8", "replace")
            if 0xFFFFFFFF in (csize, usize, lho):
                usize, csize, lho = _zip64_extra(cd[p + 46 + nlen:p + 46 + nlen + elen],
                                                 usize, csize, lho, self)
            if flags & 0x1:
                raise bad(self.path, f"member {name!r} is encrypted", tensor=self.tensor)
            if name in out:
                raise UnsafeCheckpointError(message(
                    f"{os.path.basename(self.path)} holds two members named {name!r} in one chunk",
                    expected="unique member names", fix="do not trust this file: readers disagree "
                    "on which copy counts", got=name))
            if lho + csize > self.length:
                raise bad(self.path, f"member {name!r} runs past the end of its span",
                          tensor=self.tensor)
            out[name] = (lho, csize, usize, method)
            crcs.append(p + 16)
            p += 46 + nlen + elen + clen
        if seen is not None and len(seen) < 8:
            bounds = [0] + [b for c in crcs for b in (c, c + 4)] + [len(cd)]
            seen.append((cd, list(zip(bounds[::2], bounds[1::2])), out))
        return out

    def data_start(self, member) -> int:
        """Span offset of a stored member's bytes (after its local header)."""
        lho, csize = member[0], member[1]
        local = self.read(lho, 30)
        if local[:4] != _LFH:
            raise bad(self.path, "a member's local header is missing", tensor=self.tensor)
        n, e = struct.unpack_from("<HH", local, 26)
        if lho + 30 + n + e + csize > self.length:
            raise bad(self.path, "a member runs past the end of its span", tensor=self.tensor)
        return lho + 30 + n + e


def _zip64_extra(extra, usize, csize, lho, r):
    p = 0
    while p + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, p)
        if tag == 1:
            vals, q = [], p + 4
            for v in (usize, csize, lho):
                if v == 0xFFFFFFFF:
                    if q + 8 > p + 4 + size:
                        raise bad(r.path, "a short zip64 extra field", tensor=r.tensor)
                    vals.append(struct.unpack_from("<Q", extra, q)[0])
                    q += 8
                else:
                    vals.append(v)
            return tuple(vals)
        p += 4 + size
    raise bad(r.path, "a zip64 member without its extra field", tensor=r.tensor)


def read_span(fd, path: str, start: int, length: int, *, tensor=None, recorder=None, memo=None):
    """(unpickled object, recording unpickler, storage key -> absolute offset or None if
    compressed) of the torch.save zip at ``start``..``start+length`` of the open file ``fd``.

    ``memo`` (a dict kept by the caller) remembers recordings of identical ``data.pkl`` bytes
    and the layout of archives already parsed: a span whose every byte weightviz reads
    (directory, local headers, pickle) equals one seen before, CRC fields aside, has that
    layout, and is not parsed again (the chunks of one DCP tensor repeat one archive)."""
    r = _Reader(fd, path, start, length, tensor)
    if memo is not None:
        for t in memo.get(("span", length), ()):
            if all(r.read(a, len(want)) == want for a, want in t.regions):
                return t.obj, t.up, {k: None if v is None else start + v for k, v in t.rel.items()}
    used: list = []                     # (local header offset, end of what was read there)
    zm = r.members(memo)
    pkl = [n for n in zm if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise bad(path, "no single <name>/data.pkl record in the chunk's archive",
                  got=", ".join(list(zm)[:8]), tensor=tensor)
    prefix = pkl[0][:-8]
    order = zm.get(prefix + "byteorder")
    if order is not None and order[3] == 0 and order[2] <= 16:
        at = r.data_start(order)
        raw = r.read(at, order[2])
        used.append(at + order[2])
        if raw.strip() not in (b"little", b""):
            raise bad(path, f"it was written big-endian ({raw!r}), which weightviz does not read",
                      tensor=tensor)
    info = zm[pkl[0]]
    if info[3] != 0 or info[2] > TORCH_MAX_PICKLE:
        raise bad(path, "its data.pkl record is compressed or over the size limit", tensor=tensor)
    at = r.data_start(info)
    data = r.read(at, info[2])
    used.append(at + info[2])
    hit = memo.get(data) if memo is not None else None
    if hit is None:
        try:
            hit = (recorder or record)(data, what=f"{os.path.basename(path)}"
                                       + (f" (tensor {tensor!r})" if tensor else ""))
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, struct.error, MemoryError, OverflowError,
                UnicodeDecodeError) as exc:
            raise bad(path, "its pickle cannot be parsed", got=f"{type(exc).__name__}: {exc}"[:300],
                      tensor=tensor) from None
        if memo is not None and len(memo) < MEMO_MAX:
            memo[data] = hit
    obj, up = hit
    rel = {}
    for key, ref in up.storages.items():
        m = zm.get(f"{prefix}data/{key}")
        need = ref.numel * dtypes.itemsize(ref.dtype)
        if m is None:
            raise bad(path, f"storage record data/{key} is missing", tensor=tensor)
        if m[2] < need:
            raise bad(path, f"storage record data/{key} holds {m[2]:,} bytes but its tensors "
                            f"need {need:,}", tensor=tensor)
        rel[key] = r.data_start(m) if m[3] == 0 else None
        used.append(rel[key] if m[3] == 0 else m[0] + 30)
    if memo is not None and len(memo) < MEMO_MAX:
        _remember(memo, r, zm, max(used), (obj, up, rel))
    return obj, up, {k: None if v is None else start + v for k, v in rel.items()}


class Layout(NamedTuple):
    """A parsed span's layout: the bytes weightviz read there (CRC fields aside), by offset."""
    regions: list          # [(span offset, the bytes expected there)]
    obj: object
    up: object
    rel: dict              # storage key -> span offset of its bytes


def _remember(memo, r, zm, head_end, result) -> None:
    """Keep this span's layout: the bytes read at its start (up to ``head_end``) and its
    directory to the end, each without its CRC fields."""
    base, first_cd = r.length - len(r.tail), r.cd_off
    if head_end > len(r.head) or first_cd < base:
        return                              # larger than what is read at each end: no template
    crcs = sorted(lho + 14 for lho, *_ in zm.values() if lho + 18 <= head_end)
    p = first_cd
    while p + 46 <= r.length and r.tail[p - base:p - base + 4] == _CDH:
        crcs.append(p + 16)
        nlen, elen, clen = struct.unpack_from("<HHH", r.tail, p - base + 28)
        p += 46 + nlen + elen + clen
    regions = []
    for lo, hi in ((0, head_end), (first_cd, r.length)):
        cuts = [c for c in crcs if lo <= c and c + 4 <= hi]
        bounds = [lo] + [b for c in cuts for b in (c, c + 4)] + [hi]
        regions += [(a, r.read(a, b - a)) for a, b in zip(bounds[::2], bounds[1::2]) if b > a]
    seen = memo.setdefault(("span", r.length), [])
    if len(seen) < 4:
        seen.append(Layout(regions, *result))


def read_into(fd, start: int, length: int, dest: np.ndarray, memo: dict):
    """(object, recording) of the span at ``start`` when it has a remembered layout holding
    one contiguous tensor of ``dest``'s bytes, its values read straight into ``dest``: the
    whole span in one ``preadv``, its layout checked after; None otherwise (``dest`` may then
    hold anything: read the span with :func:`read_span`)."""
    if not dest.flags.c_contiguous:
        return None
    for t in memo.get(("span", length), ()):
        rec = t.obj
        if (not isinstance(rec, TensorRecord) or len(t.rel) != 1 or rec.offset
                or rec.storage.key not in t.rel or t.rel[rec.storage.key] is None
                or rec.storage.numel * dtypes.itemsize(rec.storage.dtype) != dest.nbytes
                or not _contiguous(rec.size, rec.stride)):
            continue
        at = t.rel[rec.storage.key]
        if at + dest.nbytes > length:
            continue
        head, tail = bytearray(at), bytearray(length - at - dest.nbytes)
        if os.preadv(fd, [head, dest.reshape(-1).view(np.uint8), tail], start) != length:
            return None
        end = at + dest.nbytes
        if all((head[a:a + len(w)] if a + len(w) <= at else tail[a - end:a - end + len(w)]
                if a >= end else None) == w for a, w in t.regions):
            return rec, t.up
    return None


def _contiguous(size, stride) -> bool:
    expect = 1
    for s, st in zip(reversed(size), reversed(stride)):
        if s > 1 and st != expect:
            return False
        expect *= s
    return True


def array(fd, path: str, rec: TensorRecord, locs: dict, *, tensor=None, dest=None) -> np.ndarray:
    """The values of a recorded tensor as raw bits (bf16/fp8 as uint16/uint8), read from
    disk: a fresh array for small ones, a read-only memory map for large contiguous ones;
    with ``dest`` (an array of the tensor's shape and view dtype) written into it."""
    base = locs.get(rec.storage.key)
    if base is None:
        raise bad(path, "a chunk is stored compressed, which torch never writes", tensor=tensor)
    item = dtypes.itemsize(rec.dtype)
    size, stride = rec.size, rec.stride
    numel = prod(size)
    extent = 1 + sum((s - 1) * st for s, st in zip(size, stride)) if numel else 0
    storage_bytes = rec.storage.numel * dtypes.itemsize(rec.storage.dtype)
    if (rec.offset + extent) * item > storage_bytes or numel * item > storage_bytes:
        raise bad(path, "a chunk reaches past the end of its storage", tensor=tensor,
                  got=f"shape {size}, stride {stride}, offset {rec.offset}")
    view = dtypes.numpy_view_dtype(rec.dtype)
    start = base + rec.offset * item
    if numel == 0:
        return np.empty(size, dtype=view) if dest is None else dest
    contiguous = _contiguous(size, stride)
    direct = dest is not None and dest.flags.c_contiguous
    if contiguous and (numel * item <= PREAD_MAX or direct):
        out = dest if direct else np.empty(size, dtype=view)
        got = os.preadv(fd, [out.reshape(-1).view(np.uint8)], start)
        if got != out.nbytes:
            raise bad(path, "a chunk's bytes run past the end of the file", tensor=tensor)
    else:
        if start + extent * item > os.fstat(fd).st_size:
            raise bad(path, "a chunk's bytes run past the end of the file", tensor=tensor)
        flat = np.memmap(path, dtype=view, mode="r", offset=start, shape=(extent,))
        out = (flat.reshape(size) if contiguous else
               np.lib.stride_tricks.as_strided(flat, size, tuple(s * item for s in stride)))
        if not contiguous and dest is None:
            out = np.array(out)
    if dest is not None and out is not dest:
        dest[...] = out
        return dest
    return out
