"""Low-level crafting tools for hostile files: code-running payloads that only create a
marker file, hand-written zips (lying sizes, real deflate bombs, duplicate names),
torch.save-like archives with arbitrary pickles, hand-assembled pickles, HDF5 helpers.

Nothing here imports weightviz: the files are made the way an attacker would make them.
"""
from __future__ import annotations

import base64
import marshal
import os
import pickle
import struct
import zlib
from pathlib import Path

MARKER = "PWNED"                           # a payload's only effect: create <case dir>/PWNED
SECRET = "WEIGHTVIZ-SECRET-c4n4ry-7f3a"    # lives only in files *outside* the file under test
SECRET_FLOAT = 31337.0                     # ... and as the numbers stored there


def marker_code(marker: Path) -> str:
    """Python source whose only effect is writing the marker file."""
    return f"open({str(marker)!r}, 'w').write('pwned')"


# ------------------------------------------------------------------ pickle payloads
class Reduce:
    """Pickles as ``func(*args)``; ``func`` may itself be a Reduce (a call chain)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):          # pickle only checks that the callable is callable
        raise RuntimeError("a payload stand-in is never called here")


def exec_payload(marker: Path) -> Reduce:
    return Reduce(exec, marker_code(marker))


def system_payload(marker: Path) -> Reduce:
    return Reduce(os.system, f"touch '{marker}'")


def getattr_chain_payload(marker: Path) -> Reduce:
    """getattr(__import__('builtins'), 'exec')(code): no dangerous name appears directly."""
    return Reduce(Reduce(getattr, Reduce(__import__, "builtins"), "exec"), marker_code(marker))


def inst_pickle(marker: Path) -> bytes:
    """Protocol-0 pickle using the INST opcode (``i``) rather than REDUCE."""
    code = marker_code(marker).replace('"', '\\"')
    return b'(S"' + code.encode() + b'"\nibuiltins\nexec\n.'


def stacked_pickles(marker: Path) -> bytes:
    """A benign pickle immediately followed by a malicious one (picklescan's malicious6)."""
    return pickle.dumps({"w": [1.0, 2.0]}, protocol=2) + pickle.dumps(exec_payload(marker), protocol=2)


def nested_dict_pickle(depth: int, leaf=b"K\x01") -> bytes:
    """{'a': {'a': ... leaf}} ``depth`` levels deep, built without recursion (protocol 2)."""
    key = b"X\x01\x00\x00\x00a"            # BINUNICODE 'a'
    body = b"}" + (key + b"}") * (depth - 1) + key + leaf + b"s" * depth
    return b"\x80\x02" + body + b"."


def nested_list_pickle(depth: int) -> bytes:
    """[[[...[1]...]]] ``depth`` levels deep (EMPTY_LIST ... APPEND)."""
    return b"\x80\x02" + b"]" * depth + b"K\x01" + b"a" * depth + b"."


def lambda_code_b64(marker: Path) -> str:
    """What Keras stores for a Lambda: base64 of marshal'd bytecode (keras func_dump)."""
    ns: dict = {}
    exec(f"f = lambda x: ({marker_code(marker)}, x)[1]", ns)  # noqa: S102 - builds, never calls
    return base64.encodebytes(marshal.dumps(ns["f"].__code__)).decode("ascii")


# ------------------------------------------------------------------ zips written by hand
def _dos_time() -> tuple[int, int]:
    return (0 << 11) | (0 << 5), ((2020 - 1980) << 9) | (1 << 5) | 1


class RawMember:
    """A zip member as bytes on disk plus what the headers *claim* about it."""

    def __init__(self, name: str, data: bytes, *, method: int = 0, crc: int | None = None,
                 size: int | None = None, flags: int = 0, raw: bytes | None = None):
        self.name = name.encode("utf-8")
        if raw is None:
            raw = data if method == 0 else _deflate(data)
        self.raw = raw
        self.method, self.flags = method, flags
        self.crc = zlib.crc32(data) if crc is None else crc
        self.size = len(data) if size is None else size


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def write_zip(path: Path, members: list[RawMember], *, align: int = 64) -> None:
    """Write a zip exactly as described (sizes, CRCs and flags may lie). Stored members'
    data is padded to ``align`` bytes through the extra field, as torch.save does."""
    tm, dt = _dos_time()
    out = bytearray()
    central = bytearray()
    for m in members:
        off = len(out)
        extra = b""
        if align and m.method == 0:
            pad = (-(off + 30 + len(m.name) + 4)) % align
            extra = struct.pack("<HH", 0xFEED, pad) + b"\0" * pad
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, m.flags, m.method, tm, dt, m.crc,
                           len(m.raw), m.size, len(m.name), len(extra)) + m.name + extra + m.raw
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, m.flags, m.method, tm, dt,
                               m.crc, len(m.raw), m.size, len(m.name), 0, 0, 0, 0, 0, off) + m.name
    cd_off = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                                 len(central), cd_off, 0)
    Path(path).write_bytes(bytes(out))


def zero_bomb(nbytes: int, prefix: bytes = b"") -> RawMember:
    """A genuine deflate stream of ``prefix`` + zeros (ratio ~1000:1), made fast by
    repeating one fully-flushed block (history reset, so the blocks are identical)."""
    chunk = 1 << 24
    assert (nbytes - len(prefix)) % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    n = (nbytes - len(prefix)) // chunk
    raw = head + block * n + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    zeros = bytes(chunk)
    for _ in range(n):
        crc = zlib.crc32(zeros, crc)
    m = RawMember("x", b"", method=8, raw=raw, crc=crc, size=nbytes)
    return m


def npy_header(descr: str, shape: tuple, fortran: bool = False, version: int = 1) -> bytes:
    """A .npy header (magic, version, length, dict) padded to 64 bytes."""
    d = "{'descr': %r, 'fortran_order': %s, 'shape': %r, }" % (descr, fortran, tuple(shape))
    return npy_raw_header(d, version)


def npy_raw_header(text: str, version: int = 1) -> bytes:
    hl = 10 if version == 1 else 12
    body = text.encode("latin1")
    pad = (-(hl + len(body) + 1)) % 64
    body = body + b" " * pad + b"\n"
    lenfield = struct.pack("<H", len(body)) if version == 1 else struct.pack("<I", len(body))
    return b"\x93NUMPY" + bytes([version, 0]) + lenfield + body


# ------------------------------------------------------------------ torch-like archives
class Storage:
    """A storage placeholder: pickled as torch's persistent id."""

    def __init__(self, key: str, storage_type: str, numel: int, data: bytes):
        self.key, self.storage_type, self.numel, self.data = key, storage_type, numel, data


def rebuild(storage: Storage, offset: int, size: tuple, stride: tuple):
    """A tensor as torch pickles it: ``torch._utils._rebuild_tensor_v2(...)``."""
    import collections

    import torch._utils
    return Reduce(torch._utils._rebuild_tensor_v2, storage, offset, tuple(size), tuple(stride),
                  False, collections.OrderedDict())


def torch_pickle(obj) -> tuple[bytes, list[Storage]]:
    import io
    storages: list[Storage] = []

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Storage):
                if o not in storages:
                    storages.append(o)
                import torch
                return ("storage", getattr(torch, o.storage_type), o.key, "cpu", o.numel)
            return None
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue(), storages


def torch_zip(path: Path, obj=None, *, data_pkl: bytes | None = None, extra: dict | None = None,
              prefix: str = "archive", members: list[RawMember] | None = None) -> None:
    """A torch.save-style zip whose data.pkl is ``obj`` pickled (Storage placeholders
    become records) or the raw ``data_pkl`` bytes."""
    storages: list[Storage] = []
    if data_pkl is None:
        data_pkl, storages = torch_pickle(obj)
    ms = [RawMember(f"{prefix}/data.pkl", data_pkl), RawMember(f"{prefix}/byteorder", b"little")]
    ms += [RawMember(f"{prefix}/data/{s.key}", s.data) for s in storages]
    for name, data in (extra or {}).items():
        ms.append(RawMember(f"{prefix}/{name}", data))
    ms += members or []
    ms.append(RawMember(f"{prefix}/version", b"3\n"))
    write_zip(path, ms)


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy a zip, replacing some members' bytes (same compression as the original)."""
    import zipfile
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for info in zi.infolist():
            data = replace.get(info.filename, None)
            zo.writestr(info, zi.read(info) if data is None else data, compress_type=info.compress_type)


# ------------------------------------------------------------------ torch.save files of other packages
class Foreign:
    """Stand-in for a class of a package that is not imported (DeepSpeed's ``ZeroStageEnum``,
    ``fragment_address``, loss scalers): keeps the arguments and state it was rebuilt with and
    pickles back as the same global, so a file can be edited without that package."""
    where = ("", "")

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args = args
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __reduce__(self):
        return (type(self), self.args) + ((self.state,) if hasattr(self, "state") else ())


def foreign_pickle(packages: tuple[str, ...]):
    """A pickle module for torch.load / torch.save that maps the globals of ``packages`` to
    :class:`Foreign` subclasses and writes them back by name (the pure-Python pickler)."""
    import types
    classes: dict = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.split(".")[0] in packages:
                key = (module, name)
                classes.setdefault(key, type(name, (Foreign,), {"where": key}))
                return classes[key]
            return super().find_class(module, name)

    class Pickler(pickle._Pickler):
        def save_global(self, obj, name=None):
            if not (isinstance(obj, type) and issubclass(obj, Foreign)):
                return super().save_global(obj, name)
            self.write(pickle.GLOBAL + "{}\n{}\n".format(*obj.where).encode("utf-8"))
            self.memoize(obj)

    return types.SimpleNamespace(__name__="foreign_pickle", Unpickler=Unpickler, Pickler=Pickler,
                                 load=pickle.load, dump=pickle.dump)


def resave_torch(path: Path, change, packages: tuple[str, ...] = ("deepspeed",)) -> None:
    """Load a torch.save file whose pickle names classes of ``packages`` (not imported: see
    :class:`Foreign`), let ``change(obj)`` edit it in place, save it back in its place."""
    import torch
    mod = foreign_pickle(packages)
    obj = torch.load(path, weights_only=False, pickle_module=mod)
    change(obj)
    torch.save(obj, path, pickle_module=mod)
