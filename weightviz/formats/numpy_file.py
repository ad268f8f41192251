"""NumPy ``.npy`` and ``.npz`` files, read without ``allow_pickle``.

Headers are parsed here (``ast.literal_eval`` of a size-capped dict literal);
the data of a ``.npy`` and of every *stored* ``.npz`` member gets a
:class:`DataLocation`, so it is memory-mapped only on request. Declared sizes
are checked against the file before anything is read.

Object arrays (``np.save("w.npy", list_of_arrays)``) are a pickle. They are
read by a restricted unpickler that admits only NumPy's own array-rebuilding
globals (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``); any other global
raises :class:`UnsafeCheckpointError` naming it, before anything is called.
Names: a plain ``.npy`` holds one tensor named after the file's stem; an
object array's arrays are named by their flat index ``0``, ``1``, ... (nested
containers join with ``.``, dict keys are used as they are); ``.npz`` members
are named by their key without ``.npy``.
"""
from __future__ import annotations

import ast
import io
import re
import os
import pickle
import struct
import zipfile
from contextlib import ExitStack
from math import prod

import numpy as np

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry
from ..errors import (CorruptFileError, UnknownFormatError, UnsafeCheckpointError, WeightvizError,
                      message)
from . import sniff as _sniff
from . import source as _source
from ._unpickle import _encode
from ._zip import ZIP_ERRORS, bad_member, checked_infos, member_data_offset, open_zip, read_member

from .limits import NPY_MAX_HEADER as MAX_HEADER, OBJECT_ARRAY_MAX_DEPTH  # noqa: E402
from .limits import PICKLE_MAX_BYTES as MAX_PICKLE  # noqa: E402


def sniff(head: bytes, path) -> bool:
    if _sniff.is_npy(head):
        return True
    if not _sniff.is_zip(head):
        return False
    names = _sniff.zip_names(path)
    return any(n.endswith(".npy") for n in names) and not any(n.endswith("/data.pkl") for n in names)


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    head = _sniff.read_head(path, 8)
    if _sniff.is_npy(head):
        return _read_npy(path)
    if _sniff.is_zip(head):
        return _read_npz(path)
    raise CorruptFileError(message(
        f"{os.path.basename(path)} is not a NumPy file", expected="the \\x93NUMPY magic or a zip of .npy members",
        fix="check the file is complete", got="first bytes " + _sniff.first_bytes(head)))


def _bad(path, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is a damaged NumPy file: {what}",
        expected="a .npy header and the data it declares",
        fix="the file may be truncated; download or copy it again", got=got))


def parse_header(read, path, where=""):
    """(dtype, shape, fortran, header_bytes) from a callable returning the next n bytes."""
    pre = read(8)
    if len(pre) < 8 or pre[:6] != _sniff.NPY_MAGIC:
        raise _bad(path, f"{where}missing the \\x93NUMPY magic", got=_sniff.first_bytes(pre))
    major = pre[6]
    if major not in (1, 2, 3):
        raise _bad(path, f"{where}unknown .npy format version {major}.{pre[7]}")
    size_fmt = "<H" if major == 1 else "<I"
    raw = read(struct.calcsize(size_fmt))
    if len(raw) < struct.calcsize(size_fmt):
        raise _bad(path, f"{where}header truncated")
    (hlen,) = struct.unpack(size_fmt, raw)
    if hlen > MAX_HEADER:
        raise _bad(path, f"{where}header of {hlen:,} bytes is over the 1 MiB limit")
    text = read(hlen)
    if len(text) < hlen:
        raise _bad(path, f"{where}header truncated")
    try:
        d = _fast_header(text) or ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        descr = d["descr"]
        dtype = np.lib.format.descr_to_dtype(descr)
        shape, fortran = d["shape"], d["fortran_order"]
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError,
            UnicodeDecodeError) as exc:
        raise _bad(path, f"{where}the header is not a valid array description",
                   got=f"{type(exc).__name__}: {text[:120]!r}") from None
    if (not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape)
            or not isinstance(fortran, bool)):
        raise _bad(path, f"{where}bad shape or fortran_order", got=repr(d)[:200])
    return dtype, shape, fortran, len(pre) + len(raw) + hlen


_HEADER = re.compile(rb"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), "
                     rb"'shape': \(((?:\d+, ?)*\d*)\), \} *\n?")


def _fast_header(text: bytes) -> dict | None:
    """NumPy's own header layout without ast (1000 members: 60 ms less); None if unusual."""
    m = _HEADER.fullmatch(text)
    if m is None:
        return None
    dims = [p for p in m.group(3).replace(b" ", b"").split(b",") if p]
    return {"descr": m.group(1).decode(), "fortran_order": m.group(2) == b"True",
            "shape": tuple(int(p) for p in dims)}


def _check_dtype(dtype: np.dtype, path, name):
    canon = dtypes.from_numpy(dtype)
    if canon not in dtypes.ITEMSIZE_BITS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnknownFormatError(message(
            f"array {name!r} in {os.path.basename(path)} is not numeric", expected="numeric arrays (weights)",
            fix="weightviz lists numeric arrays only", got=f"dtype {dtype}"))
    return canon


def _read_npy(path: str) -> Checkpoint:
    size = _source.size(path)
    with _source.open_file(path) as f:
        dtype, shape, fortran, off = parse_header(f.read, path)
    name = os.path.basename(path)
    stem = name[:-4] if name.endswith(".npy") else os.path.splitext(name)[0] or "array"
    if dtype.hasobject:
        with _source.open_file(path) as f:
            f.seek(off)
            if size - off > MAX_PICKLE:
                raise _bad(path, "the pickled object array is larger than 2 GiB")
            arr = _safe_unpickle(f.read(), path)
        entries, extras = _from_objects(arr, path)
        return Checkpoint(entries, "numpy", path=path, metadata={"container": "npy", "object_array": True},
                          extras=extras)
    canon = _check_dtype(dtype, path, stem)
    nbytes = prod(shape) * dtype.itemsize
    if off + nbytes > size:
        raise _bad(path, f"the header declares {nbytes:,} bytes of data ({shape} x {dtype}) but the "
                         f"file holds {max(size - off, 0):,}", got=f"{size:,}-byte file")
    loc = DataLocation(path, off, dtype, "F" if fortran else "C")
    return Checkpoint({stem: TensorEntry(stem, shape, canon, location=loc)}, "numpy", path=path,
                      metadata={"container": "npy"})


def _read_npz(path: str) -> Checkpoint:
    entries: dict[str, TensorEntry] = {}
    extras: dict = {}
    infos = checked_infos(path)
    with ExitStack() as stack:
        f = stack.enter_context(_source.open_file(path))
        z = None
        for info in infos:
            if not info.filename.endswith(".npy"):
                extras.setdefault("other_members", []).append(info.filename)
                continue
            key = info.filename[:-4]
            stored = info.compress_type == zipfile.ZIP_STORED
            if stored:
                start, read = _stored_member(f, info, path)
                dtype, shape, fortran, hlen = parse_header(read, path, f"member {key!r}: ")
            else:
                if z is None:
                    z = stack.enter_context(open_zip(path))
                try:
                    with z.open(info) as m:
                        dtype, shape, fortran, hlen = parse_header(m.read, path, f"member {key!r}: ")
                except WeightvizError:
                    raise
                except ZIP_ERRORS as exc:
                    raise bad_member(path, info.filename, exc) from None
            if dtype.hasobject:
                if info.file_size > MAX_PICKLE:
                    raise _bad(path, f"member {key!r}: the pickled object array is larger than 2 GiB")
                if z is None:
                    z = stack.enter_context(open_zip(path))
                data = read_member(z, info, MAX_PICKLE, path)
                arr = _safe_unpickle(data[hlen:], path)
                sub, more = _from_objects(arr, path, prefix=key)
                entries.update(sub)
                extras.update(more)
                continue
            canon = _check_dtype(dtype, path, key)
            nbytes = prod(shape) * dtype.itemsize
            if hlen + nbytes != info.file_size:
                raise _bad(path, f"member {key!r} declares {nbytes:,} bytes of data ({shape} x {dtype}) "
                                 f"but holds {max(info.file_size - hlen, 0):,}")
            order = "F" if fortran else "C"
            if stored:
                loc = DataLocation(path, start + hlen, dtype, order)
                entries[key] = TensorEntry(key, shape, canon, location=loc)
            else:
                entries[key] = TensorEntry(key, shape, canon, loader=_member_loader(
                    path, info.filename, hlen, nbytes, dtype, shape, order))
    return Checkpoint(entries, "numpy", path=path, metadata={"container": "npz"}, extras=extras)


def _stored_member(f, info, path):
    """(data offset, reader of the member's first bytes) with one read for the local zip
    header and a typical .npy header together (1000 members: half the system calls)."""
    f.seek(info.header_offset)
    buf = f.read(30 + len(info.orig_filename.encode("utf-8", "surrogateescape")) + 64 + 192)
    if len(buf) < 30 or buf[:4] != b"PK\x03\x04":
        start = member_data_offset(f, info, path)          # raises the right error
    else:
        n, e = struct.unpack("<HH", buf[26:30])
        start = info.header_offset + 30 + n + e
    stream = io.BytesIO(buf[start - info.header_offset:])

    def read(k):
        out = stream.read(k)
        if len(out) < k:                                   # header longer than the first read
            f.seek(start + stream.tell())
            more = f.read(k - len(out))
            stream.seek(0, io.SEEK_END)
            stream.write(more)
            out += more
        return out
    return start, read


def _member_loader(path, member, hlen, nbytes, dtype, shape, order):
    def load():
        with open_zip(path) as z:
            try:
                with z.open(member) as m:
                    m.read(hlen)
                    data = m.read(nbytes)
            except ZIP_ERRORS as exc:
                raise bad_member(path, member, exc) from None
        if len(data) != nbytes:
            raise _bad(path, f"member {member!r} is truncated")
        return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)
    return load


# ---------------------------------------------------------------- object arrays
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(message(
                f"{os.path.basename(self.path)} holds a pickled object array that needs {module}.{name}",
                expected="only NumPy's own array-rebuilding globals (numpy ... _reconstruct, ndarray, dtype, scalar)",
                fix="weightviz never runs pickle code from a file; re-save plain arrays with np.savez",
                got=f"global {module}.{name}"), needs=[f"{module}.{name}"])
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in NumPy pickles")


def _safe_unpickle(data: bytes, path):
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), path).load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:                  # noqa: BLE001 - any parse failure is a damaged file
        raise _bad(path, "its pickled object array cannot be parsed",
                   got=f"{type(exc).__name__}: {exc}"[:200]) from None


def _from_objects(arr, path, prefix=""):
    """Numeric arrays inside an object array / dict / list, by flat index or key."""
    entries, extras = {}, {}
    stack = [(prefix, arr, 0)]
    while stack:
        name, x, depth = stack.pop()
        if depth > OBJECT_ARRAY_MAX_DEPTH:
            raise _bad(path, f"object arrays nest more than {OBJECT_ARRAY_MAX_DEPTH} levels deep")
        if isinstance(x, np.ndarray) and x.dtype.hasobject:
            kids = [(x.item(), "")] if x.ndim == 0 else [(v, str(i)) for i, v in enumerate(x.flat)]
        elif isinstance(x, dict):
            kids = [(v, str(k)) for k, v in x.items()]
        elif isinstance(x, (list, tuple)):
            kids = [(v, str(i)) for i, v in enumerate(x)]
        elif isinstance(x, np.ndarray) and dtypes.from_numpy(x.dtype) in dtypes.ITEMSIZE_BITS \
                and x.dtype.fields is None:
            key = name or "0"
            entries[key] = TensorEntry(key, x.shape, dtypes.from_numpy(x.dtype), loader=lambda x=x: x)
            continue
        else:
            extras[name or "0"] = x
            continue
        for v, k in reversed(kids):
            stack.append((f"{name}.{k}" if name and k else (name or k), v, depth + 1))
    return entries, extras
