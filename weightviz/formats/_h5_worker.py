"""The program of the string-attribute worker (``_h5_sandbox``): never imported, its text is run
as ``python -I -S -c <this file> <sys.path json> <libhdf5 path> <libhdf5 version>``.

It answers one JSON line per request: the variable-length string attributes asked for,
exactly as ``obj.attrs[name]`` gives them (utf-8 / surrogateescape). Two ways to read them:

* **libhdf5 through ctypes** (plain files): the library h5py itself uses, named by the parent.
  No numpy, no h5py: the worker is ready in ~20 ms instead of ~150 ms, which is the start
  every Keras file's listing waits for.
* **h5py** (a window of a file, a zip member; or when that library cannot be loaded or is
  not the version the parent's h5py was built with): imported on the first such request.
"""
import io
import json
import os
import signal
import sys
import zipfile

if __name__ == "__main__":
    sys.path[:0] = json.loads(sys.argv[1])
    PROTO = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)          # nothing else may reach the protocol
MAX_ITEMS = 1_000_000        # strings in one attribute (a pointer each is allocated before reading)


class Window(io.RawIOBase):
    """Bytes ``start .. start + size`` of a file, as a file (an HDF5 file inside another)."""

    def __init__(self, path, start, size):
        self.f, self.start, self.size, self.pos = open(path, "rb"), start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = max(0, {0: 0, 1: self.pos, 2: self.size}[whence] + pos)
        return self.pos

    def readinto(self, b):
        n = max(0, min(len(b), self.size - self.pos))
        self.f.seek(self.start + self.pos)
        data = self.f.read(n)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def hard_path(path, hard, link_type, HARD):
    """``path`` as libhdf5 names it (``b"."``: the root), each link on it checked to be a hard
    link from the root down, before the next is followed (``hard``: the links checked already;
    ``link_type(b"/a/b")``: a link's type)."""
    where = b"."
    for comp in [c for c in path.split("/") if c]:
        where = (b"" if where == b"." else where) + b"/" + comp.encode("utf-8")
        if where not in hard:
            if link_type(where) != HARD:
                raise ValueError("%r is not a hard link" % where.decode("utf-8", "replace"))
            hard.add(where)
    return where


def count(dims):
    """Strings in an attribute of shape ``dims``, refused past MAX_ITEMS before any is read."""
    n = 1
    for d in dims:
        n *= d
    if n > MAX_ITEMS:
        raise ValueError("more than %d strings" % MAX_ITEMS)
    return n


def result(shape, flat, left):
    if sum(len(x) for x in flat) > left:
        raise ValueError("longer than %d characters" % left)
    return {"scalar": flat[0]} if not shape else {"shape": list(shape), "flat": flat}


class CLib:
    """libhdf5's C API through ctypes: just what reading a string attribute needs."""
    SIGNATURES = {   # name: (result, argument types), with hid_t = int64 (HDF5 >= 1.10)
        "H5open": ("i", ""), "H5get_libversion": ("i", "ppp"), "H5Eset_auto2": ("i", "hpp"),
        "H5Fopen": ("h", "sIh"), "H5Fclose": ("i", "h"), "H5Lget_info2": ("i", "hsph"),
        "H5Aopen_by_name": ("h", "hsshh"), "H5Aclose": ("i", "h"), "H5Aget_type": ("h", "h"),
        "H5Aget_space": ("h", "h"), "H5Aread": ("i", "hhp"), "H5Tget_class": ("i", "h"),
        "H5Tis_variable_str": ("i", "h"), "H5Tget_cset": ("i", "h"), "H5Tcopy": ("h", "h"),
        "H5Tset_size": ("i", "hz"), "H5Tset_cset": ("i", "hi"), "H5Tclose": ("i", "h"),
        "H5Sclose": ("i", "h"), "H5Sget_simple_extent_type": ("i", "h"),
        "H5Sget_simple_extent_ndims": ("i", "h"), "H5Sget_simple_extent_dims": ("i", "hpp"),
        "H5Treclaim": ("i", "hhhp"),
    }
    STRING, SCALAR, NULL, HARD = 3, 0, 2, 0

    def __init__(self, path, version):
        import ctypes as C
        self.C = C
        codes = {"i": C.c_int, "h": C.c_int64, "p": C.c_void_p, "s": C.c_char_p, "I": C.c_uint,
                 "z": C.c_size_t}
        lib = C.CDLL(path)
        for name, (res, args) in self.SIGNATURES.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = codes[res], [codes[a] for a in args]
            setattr(self, name[2:], f)
        if self.open() < 0:
            raise OSError("H5open failed")
        v = [C.c_uint() for _ in range(3)]
        self.get_libversion(*[C.byref(x) for x in v])
        if version and "%d.%d.%d" % tuple(x.value for x in v) != version:
            raise ImportError("libhdf5 %s is not h5py's %s" % (tuple(x.value for x in v), version))
        self.Eset_auto2(0, None, None)                      # no error stack printed
        self.c_s1 = C.c_int64.in_dll(lib, "H5T_C_S1_g").value
        self.link = C.create_string_buffer(256)             # an H5L_info2_t: its type comes first
        self.variable = C.c_size_t(-1).value                # H5T_VARIABLE
        self.hard = set()

    def file(self, path):
        fid = self.Fopen(path.encode("utf-8", "surrogateescape"), 0, 0)     # H5F_ACC_RDONLY
        if fid < 0:
            raise OSError("libhdf5 cannot open the file")
        return fid

    def close(self, fid):
        self.hard.clear()
        self.Fclose(fid)

    def link_type(self, fid, where):
        if self.Lget_info2(fid, where, self.link, 0) < 0:
            raise KeyError("no object %r" % where.decode("utf-8", "replace"))
        return int.from_bytes(self.link.raw[:4], sys.byteorder)

    def read(self, fid, path, name, left):
        where = hard_path(path, self.hard, lambda w: self.link_type(fid, w), self.HARD)
        a = self.Aopen_by_name(fid, where, name.encode("utf-8"), 0, 0)
        if a < 0:
            raise KeyError("no attribute %r" % name)
        try:
            return self._read(a, left)
        finally:
            self.Aclose(a)

    def _read(self, a, left):
        C, tid = self.C, self.Aget_type(a)
        try:
            if self.Tget_class(tid) != self.STRING or self.Tis_variable_str(tid) <= 0:
                raise TypeError("not a variable-length string attribute")
            cset = self.Tget_cset(tid)
        finally:
            self.Tclose(tid)
        space = self.Aget_space(a)
        mtype = -1
        try:
            kind = self.Sget_simple_extent_type(space)
            if kind == self.NULL:
                return {"empty": True}
            ndim = self.Sget_simple_extent_ndims(space) if kind != self.SCALAR else 0
            if not 0 <= ndim <= 32:
                raise ValueError("a dataspace of %d dimensions" % ndim)
            dims = (C.c_uint64 * 32)()
            if ndim and self.Sget_simple_extent_dims(space, dims, None) < 0:
                raise ValueError("unreadable dataspace")
            n = count(dims[:ndim])
            mtype = self.Tcopy(self.c_s1)
            if self.Tset_size(mtype, self.variable) < 0 or self.Tset_cset(mtype, cset) < 0:
                raise ValueError("character set %d" % cset)
            buf = (C.c_char_p * max(n, 1))()
            if self.Aread(a, mtype, buf) < 0:
                raise OSError("libhdf5 could not read the attribute")
            try:
                flat = [(b or b"").decode("utf-8", "surrogateescape") for b in buf[:n]]
            finally:
                self.Treclaim(mtype, space, 0, buf)
            return result(dims[:ndim], flat, left)
        finally:
            if mtype >= 0:
                self.Tclose(mtype)
            self.Sclose(space)


class H5py:
    """The same through h5py's low-level API (its Group/attrs wrappers cost several times as much)."""

    def __init__(self):
        import numpy as np
        import h5py
        from h5py import h5a, h5l, h5t
        self.np, self.h5py, self.h5a, self.h5l, self.h5t = np, h5py, h5a, h5l, h5t
        self.hard, self.types = set(), {}

    def file(self, req):
        p = req["file"]
        if req.get("member") is not None:
            with zipfile.ZipFile(p) as z, z.open(req["member"]) as m:
                data = m.read(req["size"] + 1)
            if len(data) != req["size"]:
                raise ValueError("the zip member changed")
            return self.h5py.File(io.BytesIO(data), "r")
        if req.get("offset") is not None:
            return self.h5py.File(Window(p, req["offset"], req["length"]), "r")
        return self.h5py.File(p, "r", locking=False)

    def close(self, f):
        self.hard.clear()
        f.close()

    def read(self, f, path, name, left):
        fid = f.id
        where = hard_path(path, self.hard, lambda w: fid.links.get_info(w).type, self.h5l.TYPE_HARD)
        a = self.h5a.open(fid, name.encode("utf-8"), obj_name=where)
        tid = a.get_type()
        if not (isinstance(tid, self.h5t.TypeStringID) and tid.is_variable_str()):
            raise TypeError("not a variable-length string attribute")
        if a.shape is None:
            return {"empty": True}
        count(a.shape)
        if tid.get_cset() not in self.types:      # the NumPy / memory types follow from the character set
            self.types[tid.get_cset()] = a.dtype, self.h5t.py_create(a.dtype)
        dt, mtype = self.types[tid.get_cset()]
        arr = self.np.zeros(a.shape, dtype=dt)
        a.read(arr, mtype=mtype)
        return result(arr.shape, [b.decode("utf-8", "surrogateescape") for b in arr.flat], left)


class Worker:
    def __init__(self, lib, version):
        self.c = self.h5 = None
        self.key = self.f = self.reader = None
        if lib:
            try:
                self.c = CLib(lib, version)
            except Exception:  # noqa: BLE001 - not that library, or too old: h5py reads
                self.c = None
        if self.c is None:
            self.h5 = H5py()

    def source(self, req):
        p = req["file"]
        st = os.stat(p)
        key = (p, st.st_size, st.st_mtime_ns, st.st_ino, req.get("offset"), req.get("length"), req.get("member"))
        if self.key != key:
            self.close()
            plain = req.get("member") is None and req.get("offset") is None
            if plain and self.c is not None:
                self.reader, self.f = self.c, self.c.file(p)
            else:
                self.h5 = self.h5 or H5py()
                self.reader, self.f = self.h5, self.h5.file(req)
            self.key = key
        return self.f

    def close(self):
        if self.f is not None:
            f, self.f, self.key = self.f, None, None
            self.reader.close(f)

    def read(self, req):
        out, left, f = [], req["max"], self.source(req)
        for path in req["objs"]:
            try:
                v = self.reader.read(f, path, req["name"], left)
            except Exception as e:  # noqa: BLE001 - one answer per object
                v = {"error": ("%s: %s" % (type(e).__name__, e))[:300]}
            left -= sum(len(x) for x in v.get("flat", [v.get("scalar", "")]))
            out.append(v)
        return out


def send(obj):
    PROTO.write(json.dumps(obj).encode("ascii") + b"\n")
    PROTO.flush()


def main():
    w = Worker(sys.argv[2] if len(sys.argv) > 2 else "", sys.argv[3] if len(sys.argv) > 3 else "")
    send({"ready": True, "h5py": w.h5 is not None})
    for line in sys.stdin.buffer:
        req = json.loads(line)
        if req.get("op") == "close":
            w.close()
            send({"ok": None})
            continue
        if hasattr(signal, "alarm"):
            signal.alarm(req["alarm"])     # orphaned while stuck in libhdf5: SIGALRM ends us
        try:
            out = {"ok": w.read(req)}
        except BaseException as e:  # noqa: BLE001 - the parent reports it
            out = {"error": ("%s: %s" % (type(e).__name__, e))[:300]}
        if hasattr(signal, "alarm"):
            signal.alarm(0)
        send(out)


if __name__ == "__main__":
    main()
