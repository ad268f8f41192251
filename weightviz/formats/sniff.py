"""Recognising a file by its first bytes, and naming what it is when it is no weight file.

Everything here reads at most a few KiB and never imports torch or h5py.
"""
from __future__ import annotations

import os
import struct
import zipfile
from functools import lru_cache

from ..errors import CorruptFileError, UnknownFormatError, message
from . import source as _source

HEAD_SIZE = 4096

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
NPY_MAGIC = b"\x93NUMPY"
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
GGUF_MAGIC = b"GGUF"
from .limits import SAFETENSORS_MAX_HEADER  # noqa: E402,F401 - re-exported for the readers

# what the registry looks for, for error messages
LOOKED_FOR = ("HDF5 (\\x89HDF)", "ZIP (PK\\x03\\x04: torch.save, TorchScript, .npz, .keras)",
              "legacy torch.save pickle", "NumPy .npy (\\x93NUMPY)",
              "safetensors (u64 header length + '{')", "GGUF (the GGUF magic: llama.cpp, Ollama)",
              "JSON (.safetensors.index.json, Keras .weights.json index, Keras to_json)",
              "ONNX (a protobuf ModelProto: ir_version, then opset_import / graph)")


def read_head(path: str, n: int = HEAD_SIZE) -> bytes:
    return _source.read_at(path, 0, n)


def hdf5_offset(path: str) -> int | None:
    """Offset of the HDF5 signature: 0, or 512, 1024, 2048, ... after a user block."""
    size = _source.size(path)
    _source.prefetch_offsets(path, [512 << k for k in range(64) if (512 << k) + 8 <= size], 8)
    off = 0
    while off + 8 <= size:
        if _source.read_at(path, off, 8) == HDF5_MAGIC:
            return off
        off = 512 if off == 0 else off * 2
    return None


def is_hdf5(head: bytes, path: str | None = None) -> bool:
    if head.startswith(HDF5_MAGIC):
        return True
    return path is not None and len(head) >= 512 and hdf5_offset(path) is not None


def is_zip(head: bytes) -> bool:
    return head[:4] in ZIP_MAGICS


def zip_names(path: str) -> tuple[str, ...]:
    """Member names of a zip (several sniffers ask: the directory is read once)."""
    return tuple(i.filename for i in zip_infos(path))


def zip_infos(path: str) -> tuple[zipfile.ZipInfo, ...]:
    """The zip's directory entries, cached per (path, size, mtime or ETag); treat them as read-only."""
    return _zip_infos(_source.identity(path), path)


@lru_cache(maxsize=8)
def _zip_infos(identity: tuple, path: str) -> tuple[zipfile.ZipInfo, ...]:
    with _source.open_file(path) as f, zipfile.ZipFile(f) as z:
        return tuple(z.infolist())


def is_npy(head: bytes) -> bool:
    return head.startswith(NPY_MAGIC)


def is_torch_legacy(head: bytes) -> bool:
    return head.startswith(TORCH_LEGACY_MAGIC)


def is_safetensors(head: bytes, size: int) -> bool:
    """8-byte little-endian header length that fits the file, then a JSON object."""
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > SAFETENSORS_MAX_HEADER or 8 + n > size:
        return False
    body = head[8:8 + min(n, 64)].lstrip(b" ")
    return body[:1] == b"{"


def is_gguf(head: bytes) -> bool:
    return head.startswith(GGUF_MAGIC)


def is_json(head: bytes) -> bool:
    s = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return s[:1] in (b"{", b"[")


def family(head: bytes, path: str, size: int) -> str | None:
    """Which byte family a file belongs to; readers are only asked about their own."""
    if is_zip(head):
        return "zip"
    if is_torch_legacy(head):
        return "torch-legacy"
    if is_npy(head):
        return "npy"
    if is_gguf(head):
        return "gguf"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if is_safetensors(head, size):       # before the user-block scan: no scattered reads for it
        return "safetensors"
    if is_hdf5(head, path):
        return "hdf5"
    if is_json(head):
        return "json"
    if is_onnx(head, size):
        return "onnx"
    return None


# ModelProto fields that may come before the graph: number -> wire type (0 varint, 2 bytes)
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def is_onnx(head: bytes, size: int) -> bool:
    """A protobuf ModelProto: ir_version (field 1, a small varint) first, then only
    ModelProto fields with their own wire types, lengths that fit the file, and a graph
    (7) or an opset_import (8) among them, unless the head ends inside a long field
    (doc_string) that fits the file. Asked after every other family."""
    if len(head) < 4 or head[0] != 0x08 or not 0 < head[1] < 0x80:
        return False
    pos, seen = 2, set()
    while pos < len(head):
        key, pos = _varint(head, pos)
        if key is None:
            return bool(seen & {7, 8})
        num, wire = key >> 3, key & 7
        if _ONNX_FIELDS.get(num) != wire:
            return False
        value, pos = _varint(head, pos)
        if value is None:
            return bool(seen & {7, 8})
        seen.add(num)
        if wire == 2:
            if pos + value > size or (num in (2, 3, 4) and value > 1024):
                return False              # producer / domain strings are short (a SavedModel's
            if pos + value > len(head):   # meta_graphs, field 2, is not)
                return bool(seen & {7, 8}) or (num == 6 and len(head) >= HEAD_SIZE)
            if num in (2, 3, 4) and not _utf8(head[pos:pos + value]):
                return False
            pos += value
    return bool(seen & {7, 8}) and (pos == size or len(head) < size)


def _utf8(raw: bytes) -> bool:
    try:
        return raw.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def _varint(data: bytes, pos: int):
    out = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7
    return None, pos


def first_bytes(head: bytes, n: int = 16) -> str:
    """The first bytes for an error message: hex and a printable rendering."""
    chunk = head[:n]
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
    return f"{chunk.hex(' ')} ({text!r})" if chunk else "nothing (0 bytes)"


def diagnose(head: bytes, path: str, size: int) -> None:
    """Raise a helpful error for files that are clearly not weights at all."""
    name = os.path.basename(path)
    if size == 0:
        raise CorruptFileError(message(
            f"{name} is empty (0 bytes)",
            expected="a weight file",
            fix="download or copy the file again; an interrupted transfer often leaves an empty file",
            got="0 bytes"))
    if head.startswith(LFS_MAGIC):
        raise UnknownFormatError(message(
            f"{name} is a Git LFS pointer file, not the weights it points to",
            expected="the real file content",
            fix="run `git lfs pull` (or `git lfs fetch && git lfs checkout`) in the repository, "
                "or download the file through its 'resolve'/raw URL",
            got=head[:200].decode("utf-8", "replace").strip().replace("\n", " | ")))
    if head[257:262] == b"ustar":
        raise UnknownFormatError(message(
            f"{name} is a tar archive (the pre-0.4 torch.save format, or a packed folder)",
            expected="a weight file",
            fix="unpack it and open the weight file inside; a very old torch.save tar must be "
                "re-saved with a current PyTorch (torch.load(weights_only=True) refuses it too)",
            got="tar member " + repr(head[:100].split(b"\0", 1)[0].decode("latin1"))))
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    if low.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in low[:256]:
        raise UnknownFormatError(message(
            f"{name} is an HTML page, not a weight file",
            expected="the binary weight file",
            fix="the download saved a web page (a login, an error or a 'view file' page); download the "
                "raw file instead (on GitHub/Hugging Face use the 'raw'/'resolve' link, or `wget`/"
                "`curl -L` on it)",
            got=first_bytes(head, 32)))


def unknown(head: bytes, path: str, *, hint: str | None = None) -> UnknownFormatError:
    name = os.path.basename(path)
    what = f"{name} is not a weight file weightviz recognises"
    if head.startswith((b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")):
        what = f"{name} is a plain Python pickle, not a torch.save file"
        hint = hint or ("re-save the weights with torch.save(state_dict, path) or safetensors; "
                        "weightviz does not unpickle arbitrary pickles")
    return UnknownFormatError(message(
        what,
        expected="one of: " + "; ".join(LOOKED_FOR),
        fix=hint or "check the file is complete and is a weight file; force a reader with format='...'",
        got="first bytes " + first_bytes(head)))
