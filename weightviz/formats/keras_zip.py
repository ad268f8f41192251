"""Keras 3 ``.keras`` archives: ``config.json`` + ``model.weights.h5`` (+ ``metadata.json``),
read from inside the zip without extracting anything to disk.

A stored (uncompressed) weights member, which is what Keras writes, is opened in place
through a window onto the zip file, so its tensors are memory-mapped from the archive;
a deflated member is inflated into memory after its declared sizes are checked.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile

from ..checkpoint import Checkpoint
from ..errors import CorruptFileError, UnsafeCheckpointError, WeightvizError, message
from . import keras_common as kc
from . import _h5_sandbox
from . import keras_safe_h5 as sh
from . import keras_json, keras_store

from .limits import KERAS_MAX_INFLATED as MAX_INFLATED, KERAS_ZIP_MAX_MEMBERS as MAX_MEMBERS  # noqa: E402
from .limits import ZIP_MAX_RATIO as MAX_RATIO, ZIP_RATIO_SLACK  # noqa: E402
WEIGHTS = ("model.weights.h5", "model.weights.npz")


def sniff(head: bytes, path: str) -> bool:
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except Exception:  # noqa: BLE001 - a sniff never raises
        return False
    return "config.json" in names and (bool(names & set(WEIGHTS)) or "metadata.json" in names)


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes at ``start`` of a file."""

    def __init__(self, path, start, size):
        super().__init__()
        self._f = open(path, "rb")  # noqa: SIM115 - closed with the window
        self._start, self._size, self._pos = start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, pos, whence=0):
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, b):
        n = max(0, min(len(b), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()


def _check_members(z, path):
    infos = z.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CorruptFileError(message(f"{path} has {len(infos)} zip members",
                                       expected=f"at most {MAX_MEMBERS} in a .keras archive"))
    seen = set()
    for i in infos:
        n = i.filename
        if n in seen:
            raise CorruptFileError(message(f"{path} holds the zip member {n!r} twice",
                                           expected="unique member names",
                                           fix="re-save the model; a duplicated name is a sign of tampering"))
        seen.add(n)
        if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/"):
            raise UnsafeCheckpointError(message(f"{path} has a zip member with an unsafe path {n!r}",
                                                expected="relative member names"), needs=["zip:path"])
        if i.flag_bits & 0x1:
            raise CorruptFileError(message(f"{path} has an encrypted zip member {n!r}",
                                           expected="a plain .keras archive"))
    return {i.filename: i for i in infos}


def _read_small(z, info, path, limit=kc.MAX_JSON_BYTES) -> bytes:
    """A member's bytes, after checking its declared size and compression ratio."""
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limit:
        raise CorruptFileError(message(f"the member {info.filename!r} of {path} declares {info.file_size} bytes",
                                       expected=f"at most {limit} bytes for this member",
                                       fix="this is not a genuine Keras archive (zip bomb?)"))
    if ratio > MAX_RATIO and info.file_size > ZIP_RATIO_SLACK:
        raise CorruptFileError(message(
            f"the member {info.filename!r} of {path} declares {info.file_size} bytes from "
            f"{info.compress_size} compressed bytes (ratio {ratio:.0f})",
            expected=f"a compression ratio under {MAX_RATIO}",
            fix="this is not a genuine Keras archive (zip bomb?)"))
    with z.open(info) as m:
        data = m.read(limit + 1)
    if len(data) != info.file_size:
        raise CorruptFileError(message(f"the member {info.filename!r} of {path} inflates to {len(data)} bytes",
                                       expected=f"its declared {info.file_size} bytes"))
    return data


def _data_offset(path, info, size):
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise CorruptFileError(message(f"the local header of {info.filename!r} in {path} is damaged",
                                       expected="a zip local file header", fix="the archive is corrupt"))
    nlen, xlen = struct.unpack("<HH", head[26:30])
    start = info.header_offset + 30 + nlen + xlen
    if start + info.compress_size > size:
        raise CorruptFileError(message(f"the member {info.filename!r} of {path} extends past the end of the file",
                                       fix="the archive is truncated: re-download or re-save it"))
    return start


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as z:
            members = _check_members(z, path)
            if "config.json" not in members:
                raise CorruptFileError(message(f"{path} is a zip without config.json",
                                               expected="a Keras .keras archive (config.json + model.weights.h5)",
                                               got=f"members {sorted(members)[:10]}"))
            meta_json = {}
            if "metadata.json" in members:
                try:
                    meta_json = kc.load_json(_read_small(z, members["metadata.json"], path),
                                             what="metadata.json", path=path)
                except CorruptFileError:
                    meta_json = {}
                meta_json = meta_json if isinstance(meta_json, dict) else {}
            kv = meta_json.get("keras_version")
            arch, raw = keras_json.parse(_read_small(z, members["config.json"], path), path,
                                         what="config.json", keras_version=kv if isinstance(kv, str) else None)
            meta = keras_json.metadata(arch, raw, "keras-zip")
            if isinstance(meta_json.get("date_saved"), str):
                meta["date_saved"] = meta_json["date_saved"]
            info = members.get("model.weights.h5")
            if info is None:
                if "model.weights.npz" in members:
                    meta["weights_member"] = "model.weights.npz (not listed: npz weights in .keras are not read yet)"
                return Checkpoint({}, "keras", path, arch, meta, {}, {})
            if info.compress_type == zipfile.ZIP_STORED:
                start = _data_offset(path, info, size)
                length = info.compress_size

                def opener():
                    import h5py
                    window = _Window(path, start, length)
                    _h5_sandbox.register_fileobj(window, {"file": path, "offset": start, "length": length})
                    return h5py.File(window, "r")
                ck = keras_store.read_store(opener, path, file_size=length, mmap_path=path, base_offset=start,
                                         architecture=arch, fmt="keras", metadata=meta)
            else:
                if info.file_size > MAX_INFLATED:
                    raise CorruptFileError(message(f"model.weights.h5 in {path} declares {info.file_size} bytes",
                                                   expected=f"a compressed member under {MAX_INFLATED} bytes"))
                data = _read_small(z, info, path, limit=MAX_INFLATED)

                def opener():
                    import h5py
                    fileobj = io.BytesIO(data)
                    _h5_sandbox.register_fileobj(fileobj, {"file": path, "member": info.filename,
                                                           "size": info.file_size})
                    return h5py.File(fileobj, "r")
                ck = keras_store.read_store(opener, path, file_size=len(data), architecture=arch,
                                         fmt="keras", metadata=meta)
    except WeightvizError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError,
            NotImplementedError, RuntimeError) as e:
        raise sh.corrupt("cannot read the .keras archive", path, e,
                         expected="a complete zip written by model.save('x.keras')") from None
    ck.architecture = arch
    ck.metadata.update({k: v for k, v in meta.items() if k != "layout"})
    ck.metadata["layout"] = "keras-zip"
    return ck
