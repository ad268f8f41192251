"""Variable-length string attributes of HDF5 files, read in a separate process.

libhdf5 keeps variable-length strings in a "global heap"; one damaged object size there
makes ``H5Aread`` loop forever (HDF5 2.0, found by fuzzing), and C code in our own process
cannot be interrupted. So these attributes (and only these: numbers and fixed-length
strings never touch the heap) are read by a small persistent worker process that imports
only h5py/numpy/json. The parent waits ``HDF5_ATTRIBUTE_TIMEOUT_S`` seconds, kills a worker
that does not answer (the next request starts a fresh one) and refuses that file from then
on. Replies are one JSON line (never a pickle), bounded in size. Subprocess only (no fork):
works in a notebook kernel and on every OS; the worker's output never reaches ours.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import weakref

from ..errors import CorruptFileError, WeightvizError, message
from .limits import HDF5_ATTRIBUTE_TIMEOUT_S, JSON_MAX_BYTES

STARTUP_S = 60.0          # the worker's own start (imports), not counted in the attribute timeout
REPLY_MAX = 6 * JSON_MAX_BYTES + 65536     # a JSON line of JSON_MAX_BYTES characters, escaped
FIX = "the file is damaged or was crafted; re-save the model with the library that wrote it"

WORKER_SOURCE = r'''
import io, json, os, signal, sys, zipfile
sys.path[:0] = json.loads(sys.argv[1])
proto = os.fdopen(os.dup(1), "wb")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)          # nothing else may reach the protocol
import numpy as np, h5py
from h5py import h5a, h5l, h5t

class Window(io.RawIOBase):
    def __init__(self, path, start, size):
        self.f, self.start, self.size, self.pos = open(path, "rb"), start, size, 0
    def readable(self): return True
    def seekable(self): return True
    def tell(self): return self.pos
    def seek(self, pos, whence=0):
        self.pos = max(0, {0: 0, 1: self.pos, 2: self.size}[whence] + pos); return self.pos
    def readinto(self, b):
        n = max(0, min(len(b), self.size - self.pos))
        self.f.seek(self.start + self.pos); data = self.f.read(n)
        b[:len(data)] = data; self.pos += len(data); return len(data)

cache, objs, types = [None, None], set(), {}
def source(req):
    p = req["file"]; st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns, st.st_ino, req.get("offset"), req.get("length"), req.get("member"))
    if cache[0] != key:
        close()
        if req.get("member") is not None:
            with zipfile.ZipFile(p) as z, z.open(req["member"]) as m:
                data = m.read(req["size"] + 1)
            if len(data) != req["size"]:
                raise ValueError("the zip member changed")
            f = h5py.File(io.BytesIO(data), "r")
        elif req.get("offset") is not None:
            f = h5py.File(Window(p, req["offset"], req["length"]), "r")
        else:
            f = h5py.File(p, "r", locking=False)
        cache[:] = [key, f]
    return cache[1]

def close():
    objs.clear()
    if cache[1] is not None:
        cache[1].close()
    cache[:] = [None, None]

def read(req):
    out, left, fid = [], req["max"], source(req).id
    for path in req["objs"]:
        try:
            v = read_one(req, fid, path, left)
        except Exception as e:
            v = {"error": ("%s: %s" % (type(e).__name__, e))[:300]}
        left -= sum(len(x) for x in v.get("flat", [v.get("scalar", "")]))
        out.append(v)
    return out

def read_one(req, fid, path, left):
    # low-level h5py (the high-level Group/attrs wrappers cost several times as much), the
    # same result as ``obj.attrs[name]``: vlen strings decoded utf-8 / surrogateescape
    where = b""
    for comp in [c for c in path.split("/") if c]:
        where += b"/" + comp.encode("utf-8")
        if where not in objs:            # checked from the root down: its parents are hard links
            if fid.links.get_info(where).type != h5l.TYPE_HARD:
                raise ValueError("%r is not a hard link" % comp)
            objs.add(where)
    a = h5a.open(fid, req["name"].encode("utf-8"), obj_name=where or b".")
    tid = a.get_type()
    if not (isinstance(tid, h5t.TypeStringID) and tid.is_variable_str()):
        raise TypeError("not a variable-length string attribute")
    if a.shape is None:
        return {"empty": True}
    if tid.get_cset() not in types:      # the NumPy / memory types follow from the character set
        types[tid.get_cset()] = a.dtype, h5t.py_create(a.dtype)
    dt, mtype = types[tid.get_cset()]
    arr = np.zeros(a.shape, dtype=dt)
    a.read(arr, mtype=mtype)
    flat = [b.decode("utf-8", "surrogateescape") for b in arr.flat]
    if sum(len(x) for x in flat) > left: raise ValueError("longer than %d characters" % req["max"])
    if arr.ndim == 0:
        return {"scalar": flat[0]}
    return {"shape": list(arr.shape), "flat": flat}

def send(obj):
    proto.write(json.dumps(obj).encode("ascii") + b"\n"); proto.flush()

send({"ready": True})
for line in sys.stdin.buffer:
    req = json.loads(line)
    if req.get("op") == "close":
        close(); send({"ok": None}); continue
    if hasattr(signal, "alarm"):
        signal.alarm(req["alarm"])     # orphaned while stuck in libhdf5: SIGALRM ends us
    try:
        out = {"ok": read(req)}
    except BaseException as e:
        out = {"error": ("%s: %s" % (type(e).__name__, e))[:300]}
    if hasattr(signal, "alarm"):
        signal.alarm(0)
    send(out)
'''

_LOCK = threading.Lock()
_WORKER: list = [None]
_FAILED: dict = {}                     # file key -> message of the read that did not finish
_FILEOBJS: dict[str, dict] = {}       # repr(file object) h5py opened -> where its bytes are
_MEMO: dict = {}                       # (file key, object, attribute) -> value, for one reader call
_FILES: dict = {}                      # HDF5 file number -> (source, file key), for one reader call
_DEPTH = [0]                           # reader calls under way (``reading()``)


class _Gone(Exception):
    pass


class _NoStart(Exception):
    pass


class _Worker:
    def __init__(self):
        import importlib.util
        # where h5py and numpy live, without importing them here (the worker imports them
        # while this process goes on: the start overlaps the reader's own work)
        paths = sorted({os.path.dirname(os.path.dirname(importlib.util.find_spec(m).origin))
                        for m in ("h5py", "numpy")})
        self.pid, self.open_file, self.ready = os.getpid(), False, False
        # -S: no site (its .pth files cost ~20 ms); one BLAS thread: OpenBLAS's pool, started
        # by numpy's import, would take ~0.1 s of CPU from the reader while it starts
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WORKER_SOURCE, json.dumps(paths)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True, env=env,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.replies), daemon=True).start()

    def wait_ready(self):
        """The worker's first line says it has started (imports done); waited for once."""
        if self.ready:
            return
        try:
            ok = self.reply(STARTUP_S) == {"ready": True}
        except (TimeoutError, _Gone):
            ok = False
        if not ok:
            self.stop()
            raise _NoStart(f"it did not answer within {STARTUP_S:g} s of starting, or exited")
        self.ready = True

    @staticmethod
    def _pump(stream, replies):
        try:
            while True:
                line = stream.readline(REPLY_MAX)
                replies.put(line)
                if not line.endswith(b"\n"):
                    return
        except Exception:  # noqa: BLE001 - the pipe closed under us
            replies.put(b"")

    def reply(self, timeout):
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if not line.endswith(b"\n"):
            raise _Gone("it died" if not line else "its answer was too long")
        try:
            return json.loads(line)
        except ValueError:
            raise _Gone("its answer was not JSON") from None

    def ask(self, req: dict, timeout: float) -> dict:
        self.wait_ready()
        try:
            self.proc.stdin.write(json.dumps(req).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            raise _Gone("it died") from None
        rep = self.reply(timeout)
        if not isinstance(rep, dict) or not ({"ok", "error"} & set(rep)):
            raise _Gone("its answer was not a reply")
        return rep

    def stop(self):
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:  # noqa: BLE001 - already gone
            pass
        for s in (self.proc.stdin, self.proc.stdout):
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass


def _shutdown():
    w, _WORKER[0] = _WORKER[0], None
    if w is not None and w.pid == os.getpid():
        w.stop()


atexit.register(_shutdown)


def warm_up() -> None:
    """Start the worker now, without waiting for it: a reader calls this before opening an
    HDF5 file, so the worker's start (about 0.1-0.3 s) overlaps the reader's own work."""
    with _LOCK:
        if _WORKER[0] is None or _WORKER[0].pid != os.getpid():
            try:
                _WORKER[0] = _Worker()
            except (OSError, ValueError, AttributeError):   # reported by the first real request
                _WORKER[0] = None


def register_fileobj(fileobj, where: dict) -> None:
    """Tell the worker where the bytes of a file object handed to ``h5py.File`` live:
    ``{"file", "offset", "length"}`` (a window of a file) or ``{"file", "member", "size"}``
    (a zip member). h5py names such a file by ``repr(fileobj)``."""
    key = repr(fileobj)
    _FILEOBJS[key] = {k: (os.path.abspath(v) if k == "file" else v) for k, v in where.items()}
    weakref.finalize(fileobj, _FILEOBJS.pop, key, None)


def source_of(h5file) -> dict | None:
    """Where the worker finds the bytes of an open ``h5py.File``, or None."""
    name = h5file.filename
    if name in _FILEOBJS:                 # a file object we opened: h5py names it by its repr
        return _FILEOBJS[name]
    return {"file": os.path.abspath(name)} if os.path.isfile(name) else None


def release() -> None:
    """Close the file the worker keeps open (end of one reader call): nothing stays held."""
    _MEMO.clear()
    _FILES.clear()
    with _LOCK:
        w = _WORKER[0]
        if w is not None and w.open_file and w.pid == os.getpid():
            try:
                w.ask({"op": "close"}, HDF5_ATTRIBUTE_TIMEOUT_S)
                w.open_file = False
            except BaseException as e:
                _WORKER[0] = None
                w.stop()
                if not isinstance(e, Exception):
                    raise


@contextlib.contextmanager
def reading():
    """One reader call: at its end the worker lets go of the file and the memo is dropped."""
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        release()


def _file_key(obj, where, path) -> tuple[dict, tuple]:
    """Where the worker finds ``obj``'s file and that file's identity (path, size, mtime,
    inode); kept for the rest of the reader call."""
    src = source_of(obj.file)
    if src is None:
        raise WeightvizError(message(f"cannot read {where} in {path} in a separate process",
                                     expected="an HDF5 file on disk or inside a .keras archive",
                                     fix="save the file to disk and open it by its path"))
    try:
        st = os.stat(src["file"])
    except OSError as e:
        raise CorruptFileError(message(f"cannot read {where} in {path}", got=str(e)[:200])) from None
    fkey = (json.dumps(src, sort_keys=True), st.st_size, st.st_mtime_ns, st.st_ino)
    if _DEPTH[0] > 0:                  # file numbers are reused once a file closes
        _FILES[obj.id.fileno] = src, fkey
    return src, fkey


def read_attr(obj, name: str, *, path, timeout: float | None = None, also=()):
    """``obj.attrs[name]`` for a variable-length string attribute, read by the worker:
    a ``str``, an object ndarray of ``str`` (as h5py returns them) or ``h5py.Empty``.
    ``also``: more objects of the same file whose ``name`` attribute the reader will ask for
    next, read in the same round trip (up to 1,000) and kept for this reader call."""
    import h5py
    import numpy as np
    timeout = HDF5_ATTRIBUTE_TIMEOUT_S if timeout is None else timeout
    oname = obj.name
    where = f"the HDF5 attribute {name!r} of {oname!r}"
    src, fkey = _FILES.get(obj.id.fileno) or _file_key(obj, where, path)
    if fkey in _FAILED:
        raise CorruptFileError(_FAILED[fkey])
    v = _MEMO.get((fkey, oname, name), _MEMO)
    if v is not _MEMO:
        return v.copy() if isinstance(v, np.ndarray) else v
    objs = [oname] + [n for n in dict.fromkeys(o.name for o in list(also)[:999])
                      if (fkey, n, name) not in _MEMO and n != oname]
    req = dict(src, objs=objs, name=name, max=JSON_MAX_BYTES, alarm=int(timeout) + 10)
    with _LOCK:
        w = _WORKER[0]
        try:
            if w is None or w.pid != os.getpid():
                w = _WORKER[0] = _Worker()
            w.open_file = True
            rep = w.ask(req, timeout)
            if "error" not in rep:
                try:
                    if len(rep["ok"]) != len(objs):
                        raise ValueError("not one answer per object")
                    values = [None if "error" in v else _decode(v, h5py, np) for v in rep["ok"]]
                except (TypeError, ValueError, KeyError, AttributeError):
                    raise _Gone("its answer was malformed") from None
        except BaseException as e:    # timeout, death, garbage, Ctrl-C: the worker's state is unknown
            _WORKER[0] = None
            if w is not None:
                w.stop()
            if isinstance(e, TimeoutError):
                msg = message(f"libhdf5 did not finish reading {where} in {path} within {timeout:g} s "
                              "(a damaged global heap of strings makes it loop forever)",
                              expected="a string attribute that reads in well under a second", fix=FIX,
                              got=f"no answer after {timeout:g} s; the reading process was stopped")
                _FAILED[fkey] = msg + " (not tried again for this file)"
                while len(_FAILED) > 256:
                    _FAILED.pop(next(iter(_FAILED)))
                raise CorruptFileError(msg) from None
            if isinstance(e, _Gone):
                raise CorruptFileError(message(f"the process reading {where} in {path} failed: {e}",
                                               expected="a string attribute", fix=FIX)) from None
            if isinstance(e, (OSError, _NoStart)):
                raise WeightvizError(message(
                    f"cannot start the process that reads {where} in {path}",
                    expected=f"{sys.executable!r} -I to start and import h5py",
                    fix="weightviz reads HDF5 string attributes in a child Python process; "
                        "run it from a normal Python installation", got=f"{type(e).__name__}: {e}"[:200])) from None
            raise
    if "error" in rep or "error" in rep["ok"][0]:
        why = rep.get("error") or rep["ok"][0]["error"]
        raise CorruptFileError(message(f"cannot read {where} in {path}", got=str(why)[:300],
                                       fix="check that the file is complete (re-download or re-save it)"))
    for n, v in zip(objs, values):
        if v is not None and len(_MEMO) < 100_000:
            _MEMO[(fkey, n, name)] = v.copy() if isinstance(v, np.ndarray) else v
    return values[0]


def _decode(v, h5py, np):
    def one(x):
        if isinstance(x, str):
            return x
        raise TypeError("not a string")
    if v.get("empty") is True:
        return h5py.Empty(np.dtype("O"))
    if "scalar" in v:
        return one(v["scalar"])
    shape, flat = v["shape"], v["flat"]
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) and isinstance(flat, list)):
        raise TypeError("bad shape")
    arr = np.empty(len(flat), dtype=object)
    arr[:] = [one(x) for x in flat]
    return arr.reshape(shape)
