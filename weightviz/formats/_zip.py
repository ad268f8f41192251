"""Opening zips safely (never extracting) and finding where a stored member's bytes lie."""
from __future__ import annotations

import os
import struct
import zipfile
import zlib
from contextlib import contextmanager

from ..errors import CorruptFileError, UnsafeCheckpointError, message
from . import source as _source
from .sniff import zip_infos

ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, struct.error,
              NotImplementedError, UnicodeDecodeError)
from .limits import ZIP_MAX_MEMBERS as MAX_MEMBERS, ZIP_RATIO_SLACK  # noqa: E402
from .limits import ZIP_MAX_RATIO as MAX_RATIO  # noqa: E402 - weights ~1.1:1, a zip bomb ~1000:1


def _bad(path, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is a damaged zip archive: {what}",
        expected="a complete zip (torch.save, .npz ...)",
        fix="the file may be truncated; download or copy it again", got=got))


def checked_infos(path: str) -> tuple[zipfile.ZipInfo, ...]:
    """The zip's directory, checked: no duplicates, no encryption, members inside the file,
    no zip bombs. Read once per file (cached in ``sniff.zip_infos``)."""
    size = _source.size(path)
    try:
        infos = zip_infos(path)
    except ZIP_ERRORS as exc:
        raise _bad(path, "its directory cannot be read", got=f"{type(exc).__name__}: {exc}"[:200]) from None
    if len(infos) > MAX_MEMBERS:
        raise _bad(path, f"{len(infos):,} members is more than weightviz reads")
    seen = set()
    for i in infos:
        if i.filename in seen:
            raise UnsafeCheckpointError(message(
                f"{os.path.basename(path)} holds two members named {i.filename!r}",
                expected="unique member names", fix="do not trust this file: readers disagree on "
                "which copy counts", got=i.filename))
        seen.add(i.filename)
        if i.flag_bits & 0x1:
            raise _bad(path, f"member {i.filename!r} is encrypted")
        if i.header_offset < 0 or i.header_offset + i.compress_size > size:
            raise _bad(path, f"member {i.filename!r} runs past the end of the file",
                       got=f"{size:,} bytes")
        if i.compress_type != zipfile.ZIP_STORED and i.file_size > MAX_RATIO * i.compress_size + ZIP_RATIO_SLACK:
            raise _bad(path, f"member {i.filename!r} claims to inflate {i.compress_size:,} bytes "
                             f"to {i.file_size:,}, a compression ratio over the {MAX_RATIO}:1 limit "
                             f"(a zip bomb?)")
    return infos


@contextmanager
def open_zip(path: str):
    """A ``ZipFile`` whose directory passed :func:`checked_infos`."""
    checked_infos(path)
    try:
        z = zipfile.ZipFile(path) if not _source.is_remote(path) else zipfile.ZipFile(_source.open_file(path))
    except ZIP_ERRORS as exc:
        raise _bad(path, "its directory cannot be read", got=f"{type(exc).__name__}: {exc}"[:200]) from None
    try:
        yield z
    finally:
        z.close()


def member_data_offset(f, info: zipfile.ZipInfo, path: str) -> int:
    """Absolute offset of a member's bytes (after its local header) in the open file ``f``."""
    if info.header_offset < 0:
        raise _bad(path, f"member {info.filename!r} has a negative offset")
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise _bad(path, f"the local header of {info.filename!r} is missing")
    n, e = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + n + e
    if start + info.compress_size > f.seek(0, os.SEEK_END):
        raise _bad(path, f"member {info.filename!r} runs past the end of the file")
    return start


def bad_member(path, name, exc) -> CorruptFileError:
    return _bad(path, f"member {name!r} cannot be read", got=f"{type(exc).__name__}: {exc}"[:200])


def read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: str) -> bytes:
    """A member's bytes, refusing members larger than ``limit`` and CRC errors."""
    if info.file_size > limit:
        raise _bad(path, f"member {info.filename!r} is {info.file_size:,} bytes, over the "
                         f"{limit:,}-byte limit for this part")
    try:
        return z.read(info)
    except ZIP_ERRORS as exc:
        raise _bad(path, f"member {info.filename!r} cannot be read",
                   got=f"{type(exc).__name__}: {exc}"[:200]) from None
