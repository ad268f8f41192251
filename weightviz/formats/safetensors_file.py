"""safetensors files, single or sharded (``*.safetensors.index.json``).

The header is parsed here (no safetensors/torch import) and checked like the
Rust reader does: size limits, UTF-8 JSON, no duplicate names, offsets that tile
the byte buffer with no gap or overlap, sizes that agree with shape x dtype,
and a buffer that ends at the end of the file. Every tensor gets a
:class:`DataLocation`, so its bytes are memory-mapped only when asked for.
"""
from __future__ import annotations

import json
import os
import struct
from math import prod

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry
from ..errors import CorruptFileError, message
from . import sniff as _sniff
from . import source as _source
from ._index import _no_duplicates, gather, load_index

MAX_HEADER = _sniff.SAFETENSORS_MAX_HEADER


def sniff(head: bytes, path) -> bool:
    name = os.path.basename(str(path))
    if name.endswith(".safetensors.index.json") and _sniff.is_json(head):
        return True
    return _sniff.is_safetensors(head, _source.size(path))


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    if os.path.basename(path).endswith(".json"):
        return read_index(path)
    entries, meta = read_file(path)
    return Checkpoint(entries, "safetensors", path=path, metadata=meta)


def _bad(path, what, *, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is not a valid safetensors file: {what}",
        expected="an 8-byte header length, a JSON header and the tensor bytes it describes",
        fix="the file may be truncated or damaged; download it again", got=got))


def read_file(path: str) -> tuple[dict[str, TensorEntry], dict]:
    """Entries (in byte order) and metadata of one safetensors file."""
    size = _source.size(path)
    first = _source.read_at(path, 0, 8)
    if len(first) < 8:
        raise _bad(path, "shorter than the 8-byte header length", got=f"{size} bytes")
    (n,) = struct.unpack("<Q", first)
    if n > MAX_HEADER:
        raise _bad(path, f"header length {n:,} exceeds the 100 MB limit",
                   got="first bytes " + _sniff.first_bytes(first))
    if 8 + n > size:
        raise _bad(path, f"header length {n:,} runs past the end of the {size:,}-byte file")
    raw = _source.read_at(path, 8, n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, "the header is not valid UTF-8 JSON",
                   got=f"{str(exc)[:200]}; the header begins {raw[:120]!r}") from None
    if not isinstance(header, dict):
        raise _bad(path, "the header is not a JSON object", got=type(header).__name__)
    meta_raw = header.pop("__metadata__", None)
    if meta_raw is not None and not (isinstance(meta_raw, dict)
                                     and all(isinstance(v, str) for v in meta_raw.values())):
        raise _bad(path, "__metadata__ must map strings to strings", got=repr(meta_raw)[:200])
    start = 8 + n
    buffer = size - start
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _bad(path, f"tensor {name!r} is not described by an object", got=repr(info)[:100])
        code, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if code not in dtypes.SAFETENSORS:
            raise _bad(path, f"tensor {name!r} has an unsupported dtype",
                       got=f"{code!r}; known: {', '.join(dtypes.SAFETENSORS)}")
        if (not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(type(o) is int and o >= 0 for o in offs)):
            raise _bad(path, f"tensor {name!r} has a malformed shape or data_offsets",
                       got=f"shape={shape!r}, data_offsets={offs!r}"[:200])
        dtype = dtypes.SAFETENSORS[code]
        nbytes = prod(shape) * dtypes.itemsize(dtype)
        b, e = offs
        if e < b or e - b != nbytes:
            raise _bad(path, f"tensor {name!r} declares {nbytes:,} bytes ({shape} x {dtype}) "
                             f"but its data_offsets span {e - b:,}", got=f"data_offsets={offs}")
        if e > buffer:
            raise _bad(path, f"tensor {name!r} ends at byte {start + e:,}, past the end of the "
                             f"{size:,}-byte file", got=f"data_offsets={offs}")
        spans.append((b, e, name, shape, dtype))
    spans.sort(key=lambda s: (s[0], s[1]))
    pos = 0
    for b, e, name, _, _ in spans:
        if b != pos:
            raise _bad(path, f"tensor {name!r} starts at buffer byte {b:,} but the previous "
                             f"tensor ended at {pos:,} (gap or overlap)")
        pos = e
    if pos != buffer:
        raise _bad(path, f"the tensors cover {pos:,} bytes but the data buffer has {buffer:,}",
                   got=f"{size:,}-byte file")
    entries = {}
    for b, _e, name, shape, dtype in spans:
        loc = DataLocation(path, start + b, dtypes.numpy_view_dtype(dtype))
        entries[name] = TensorEntry(name, shape, dtype, location=loc)
    meta = {"safetensors_metadata": dict(meta_raw)} if meta_raw else {}
    return entries, meta


def read_index(path: str) -> Checkpoint:
    """A sharded checkpoint: the index's ``weight_map`` names the shard of every tensor."""
    wmap, shards, index_meta = load_index(path, "safetensors")
    entries = gather(path, wmap, shards, lambda p: read_file(p)[0], learn_head=True)
    meta = {"shards": [os.path.basename(p) for p in shards]}
    if index_meta:
        meta["index_metadata"] = index_meta
    return Checkpoint(entries, "safetensors", path=path, metadata=meta)
