"""Variable-length string attributes of HDF5 files, read in a separate process.

libhdf5 keeps variable-length strings in a "global heap"; one damaged object size there
makes ``H5Aread`` loop forever (HDF5 2.0, found by fuzzing), and C code in our own process
cannot be interrupted. So these attributes (and only these: numbers and fixed-length
strings never touch the heap) are read by a small persistent worker process (``_h5_worker``)
that calls h5py's own libhdf5 through ctypes, or imports h5py where it must. The parent waits
``HDF5_ATTRIBUTE_TIMEOUT_S`` seconds, kills a worker that does not answer (the next request
starts a fresh one) and refuses that file from then on. Replies are one JSON line (never a pickle), bounded in size. Subprocess only (no fork):
works in a notebook kernel and on every OS; the worker's output never reaches ours.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import queue
import re
import subprocess
import sys
import threading
import weakref

from ..errors import CorruptFileError, WeightvizError, message
from .limits import HDF5_ATTRIBUTE_TIMEOUT_S, JSON_MAX_BYTES

STARTUP_S = 60.0          # the worker's own start (imports), not counted in the attribute timeout
REPLY_MAX = 6 * JSON_MAX_BYTES + 65536     # a JSON line of JSON_MAX_BYTES characters, escaped
FIX = "the file is damaged or was crafted; re-save the model with the library that wrote it"

# the worker's program (a file of its own, run as ``-c`` text: nothing of weightviz is imported there)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_h5_worker.py"), encoding="utf-8") as _fh:
    WORKER_SOURCE = _fh.read()

_LOCK = threading.Lock()
_WORKER: list = [None]
_FAILED: dict = {}                     # file key -> message of the read that did not finish
_FILEOBJS: dict[str, dict] = {}       # repr(file object) h5py opened -> where its bytes are
_MEMO: dict = {}                       # (file key, object, attribute) -> value, for one reader call
_FILES: dict = {}                      # HDF5 file number -> (source, file key), for one reader call
# libhdf5 itself as wheels, conda, Debian and Homebrew name it (not libhdf5_hl, _cpp, _fortran)
_LIB_NAME = re.compile(r"(lib)?hdf5(_serial|_openmpi|_mpich)?([-.][0-9a-f]+)?\.(so|dylib|dll)")
_LIBS: dict = {}                       # h5py's libhdf5 version -> (path, version) or ()
_DEPTH = [0]                           # reader calls under way (``reading()``)


class _Gone(Exception):
    pass


class _NoStart(Exception):
    pass


class _Worker:
    def __init__(self):
        import importlib.util
        # where h5py and numpy live, without importing them here (the worker imports them, if it
        # needs them, while this process goes on: the start overlaps the reader's own work)
        paths = sorted({os.path.dirname(os.path.dirname(importlib.util.find_spec(m).origin))
                        for m in ("h5py", "numpy")})
        self.pid, self.open_file, self.ready, self.h5py = os.getpid(), False, False, True
        # -S: no site (its .pth files cost ~20 ms); one BLAS thread: OpenBLAS's pool, started
        # by numpy's import, would take ~0.1 s of CPU from the reader while it starts
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   HDF5_USE_FILE_LOCKING="FALSE")           # as h5py.File(locking=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WORKER_SOURCE, json.dumps(paths), *_libhdf5()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
            env=env, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.replies), daemon=True).start()

    def wait_ready(self):
        """The worker's first line says it has started (and whether it has imported h5py: if
        not, it does on its first request for a file h5py must open); waited for once."""
        if self.ready:
            return
        try:
            rep = self.reply(STARTUP_S)
            ok = isinstance(rep, dict) and rep.get("ready") is True
        except (TimeoutError, _Gone):
            ok = False
        if not ok:
            self.stop()
            raise _NoStart(f"it did not answer within {STARTUP_S:g} s of starting, or exited")
        self.ready, self.h5py = True, rep.get("h5py", True) is not False

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
        # a window or a zip member is opened through h5py, imported by the first such request
        extra = STARTUP_S if not self.h5py and "objs" in req and {"offset", "member"} & set(req) else 0
        if extra:
            req = dict(req, alarm=req["alarm"] + int(extra))
        try:
            self.proc.stdin.write(json.dumps(req).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            raise _Gone("it died") from None
        rep = self.reply(timeout + extra)
        if not isinstance(rep, dict) or not ({"ok", "error"} & set(rep)):
            raise _Gone("its answer was not a reply")
        self.h5py = self.h5py or bool(extra)
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


def _libhdf5() -> tuple[str, ...]:
    """(path, version) of the libhdf5 this process's h5py uses, for the worker to read through
    ctypes; () when it is not found (the worker then imports h5py, ~0.15 s more to start).
    The loaded library itself where the OS lists it (/proc/self/maps), else the copy a wheel
    ships beside h5py; the worker checks the version before it uses one."""
    h5py = sys.modules.get("h5py")
    version = getattr(getattr(h5py, "version", None), "hdf5_version", "")
    if not version:
        return ()
    if version not in _LIBS:
        _LIBS[version] = _find_libhdf5(h5py, version)
    return _LIBS[version]


def _find_libhdf5(h5py, version, maps="/proc/self/maps") -> tuple[str, ...]:
    found = []
    try:
        with open(maps, encoding="utf-8", errors="replace") as fh:
            found = [line.split(None, 5)[-1].strip() for line in fh if "hdf5" in line]
    except OSError:
        pass
    here = os.path.dirname(h5py.__file__)          # manylinux, macOS and Windows wheels
    for pattern in (here + ".libs/libhdf5*", here + "/.dylibs/libhdf5*", here + "/hdf5.dll"):
        found += sorted(glob.glob(pattern))
    for p in found:
        name = os.path.basename(p)
        if _LIB_NAME.match(name) and os.path.isfile(p):
            return p, version
    return ()


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
    ``also``: more objects of the same file (or their HDF5 paths) whose ``name`` attribute the
    reader will ask for next, read in the same round trip (up to 1,000) and kept for this
    reader call."""
    oname = obj.name
    v = cached(obj, name, path=path)
    if v is not _MEMO:
        return v
    objs = [oname] + [n for n in dict.fromkeys(o if isinstance(o, str) else o.name for o in list(also)[:999])
                      if n != oname]
    err, v = _ask(obj, name, objs, path=path, timeout=timeout)
    if err is not None:
        raise CorruptFileError(message(f"cannot read the HDF5 attribute {name!r} of {oname!r} in {path}",
                                       got=str(err)[:300],
                                       fix="check that the file is complete (re-download or re-save it)"))
    return cached(obj, name, path=path) if v is _MEMO else v


def prefetch(obj, names, name: str, *, path, timeout: float | None = None) -> None:
    """Read attribute ``name`` of the objects at the HDF5 paths ``names`` (in ``obj``'s file)
    ahead, 1,000 per round trip; ``read_attr`` and ``cached`` then find them read. An object
    that is missing or whose attribute is not a variable-length string is left to the reader
    (which reports it); a worker that hangs or dies is reported now."""
    names = list(dict.fromkeys(names))
    for i in range(0, len(names), 1000):
        _ask(obj, name, names[i:i + 1000], path=path, timeout=timeout)


def cached(obj, name: str, *, path):
    """The value ``read_attr`` read (or ``prefetch`` read ahead) in this reader call, or ``_MEMO``."""
    return ahead(file_key(obj, path), obj.name, name)


def file_key(obj, path):
    """The key of ``obj``'s file for ``ahead`` (refused: a file whose read did not finish)."""
    src, fkey = _FILES.get(obj.id.fileno) or _file_key(obj, "HDF5 string attributes", path)
    if fkey in _FAILED:
        raise CorruptFileError(_FAILED[fkey])
    return fkey


def ahead(fkey, oname: str, name: str):
    """Attribute ``name`` of the object at path ``oname``, read in this reader call, or ``_MEMO``."""
    import numpy as np
    v = _MEMO.get((fkey, oname, name), _MEMO)
    return v.copy() if isinstance(v, np.ndarray) else v         # an array: the caller's own


def _ask(obj, name: str, objs: list[str], *, path, timeout):
    """Ask the worker for attribute ``name`` of the objects at paths ``objs`` (those not read
    yet) and keep what it read: (None, the first one's value or ``_MEMO`` when it was read
    before) or (why it was not read, None)."""
    import h5py
    import numpy as np
    timeout = HDF5_ATTRIBUTE_TIMEOUT_S if timeout is None else timeout
    where = f"the HDF5 attribute {name!r} of {objs[0]!r}"
    src, fkey = _FILES.get(obj.id.fileno) or _file_key(obj, where, path)
    if fkey in _FAILED:
        raise CorruptFileError(_FAILED[fkey])
    objs = [n for n in objs if (fkey, n, name) not in _MEMO]
    if not objs:
        return None, _MEMO
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
    if "error" in rep:
        return rep["error"], None
    for n, v in zip(objs, values):
        if v is not None and len(_MEMO) < 100_000:
            _MEMO[(fkey, n, name)] = v.copy() if isinstance(v, np.ndarray) else v
    first = rep["ok"][0]
    return (first["error"], None) if "error" in first else (None, values[0])


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
