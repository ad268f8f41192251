"""A ``torch.distributed.checkpoint`` ``.metadata`` file, read without running it.

torch writes ``.metadata`` with ``pickle.dump`` and reads it back with a plain
``pickle.load`` (``torch/distributed/checkpoint/filesystem.py``), so a downloaded
checkpoint runs whatever its ``.metadata`` asks for. Here it goes through a restricted
unpickler that imports nothing: the globals DCP's own writer emits
(:data:`RECORDS`, :data:`VALUES`) resolve to inert stand-ins of this module, and any other
global is refused with :class:`UnsafeCheckpointError` naming it (every such name is
collected first, none is resolved or called). The stand-ins are then checked field by
field and turned into plain records (:class:`DcpMetadata`): no torch class is ever built.
"""
from __future__ import annotations

import collections
import gc
import io
import os
import pickle
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from .. import dtypes
from ..errors import CorruptFileError, UnsafeCheckpointError, capped, message
from ._unpickle import ALIASES, TORCH_DTYPES, _encode
from .limits import DCP_MAX_CHUNKS, DCP_MAX_DIMS, DCP_MAX_ITEMS, DCP_MAX_METADATA

_MD = "torch.distributed.checkpoint.metadata"
_OLD = "torch.distributed._shard.sharded_tensor.metadata"      # torch 2.0's TensorProperties
# classes of DCP's metadata: recorded (arguments and BUILD state kept), never imported
RECORDS = {
    f"{_MD}.Metadata": "Metadata", f"{_MD}.TensorStorageMetadata": "TensorStorageMetadata",
    f"{_MD}.BytesStorageMetadata": "BytesStorageMetadata",
    f"{_MD}.ChunkStorageMetadata": "ChunkStorageMetadata",
    f"{_MD}.TensorProperties": "TensorProperties", f"{_OLD}.TensorProperties": "TensorProperties",
    f"{_MD}.MetadataIndex": "MetadataIndex", f"{_MD}.StorageMeta": "StorageMeta",
    "torch.distributed.checkpoint.filesystem._StorageInfo": "_StorageInfo",
}
_PATHS = {f"pathlib.{n}" for n in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                   "PurePosixPath", "PureWindowsPath")}
_ENUMS = {f"{_MD}._MEM_FORMAT_ENCODING", f"{_OLD}.MEM_FORMAT_ENCODING"}
_BUILTINS = {"collections.OrderedDict": collections.OrderedDict, "builtins.set": set,
             "builtins.frozenset": frozenset, "builtins.tuple": tuple, "builtins.list": list,
             "builtins.dict": dict, "_codecs.encode": _encode}
# everything admitted, for the documentation and the refusal message
ALLOWED = sorted(set(RECORDS) | _PATHS | _ENUMS | set(_BUILTINS)
                 | {"torch.Size", "torch.<dtype>", "torch.serialization._get_layout"})


ARGS, STATE = "\x00args", "\x00state"      # keys no pickle can collide with (BUILD interns str keys)


class Rec:
    """An inert stand-in for one admitted class. BUILD's dict state lands in its ``__dict__``
    (pickle does that in C: listing 16,000 chunks stays fast); call arguments are kept
    under :data:`ARGS`; slot state is refused."""

    kind = "?"

    def __init__(self, *args, **kwargs):     # a REDUCE / call of the class: arguments kept
        self.__dict__[ARGS] = args + tuple(kwargs.values())

    def __setattr__(self, name, value):       # BUILD with slot state ends up here
        raise pickle.UnpicklingError(f"unexpected attribute {name!r} on a {self.kind}")

    def __repr__(self):
        return f"<{self.kind}>"


class _StateRec(Rec):
    """TensorProperties: BUILD with the tuple its ``__getstate__`` returns."""

    def __setstate__(self, state):
        self.__dict__[STATE] = state


_TYPES = {kind: type(kind, (_StateRec if kind == "TensorProperties" else Rec,), {"kind": kind})
          for kind in set(RECORDS.values()) | {"refused"}}
_INDEX, _INFO, _CHUNK = _TYPES["MetadataIndex"], _TYPES["_StorageInfo"], _TYPES["ChunkStorageMetadata"]


class _Dtype(str):
    """A torch dtype named in the pickle (never resolved to torch's object)."""


def _path(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise pickle.UnpicklingError("a path built from something other than strings")
    return "/".join(parts)


def _enum(value=None, *rest):
    if not isinstance(value, int) or rest:
        raise pickle.UnpicklingError("a memory-format encoding that is not an int")
    return value


def _layout(name=None, *rest):
    if not isinstance(name, str) or rest:
        raise pickle.UnpicklingError("a layout that is not a name")
    return name


class MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.refused: list[str] = []
        self.globals: list[str] = []

    def find_class(self, module, name):
        if module == "__builtin__":
            module = "builtins"
        full = f"{module}.{name}"
        if full not in self.globals:
            self.globals.append(full)
        if full in RECORDS:
            return _TYPES[RECORDS[full]]
        if full in _BUILTINS:
            return _BUILTINS[full]
        if full in _PATHS:
            return _path
        if full in _ENUMS:
            return _enum
        if full == "torch.Size":
            return tuple                         # torch.Size((3, 4)): the builtin, in C
        if full == "torch.serialization._get_layout":
            return _layout
        if module == "torch" and name in TORCH_DTYPES:
            return _Dtype(ALIASES.get(name, name))
        if module == "torch" and name in ("strided", "sparse_coo", "sparse_csr", "_mkldnn"):
            return f"torch.{name}"                       # a layout pickled by name (old torch)
        if full not in self.refused:
            self.refused.append(full)
        return _TYPES["refused"]                         # inert: nothing of it is imported

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("a persistent id, which DCP metadata never holds")


# ---------------------------------------------------------------- plain records
class Chunk(NamedTuple):
    offsets: tuple
    sizes: tuple


@dataclass
class TensorItem:
    name: str
    dtype: str
    shape: tuple
    chunks: list = field(default_factory=list)


class Span(NamedTuple):
    file: str          # relative to the checkpoint folder
    offset: int
    length: int
    transforms: tuple = ()


@dataclass
class DcpMetadata:
    tensors: dict              # flat key -> TensorItem
    objects: list              # flat keys of pickled (BytesStorageMetadata) items
    paths: dict                # flat key -> the state dict's nested path (planner_data)
    spans: dict                # (flat key, chunk offsets or None) -> Span
    version: str | None = None
    unsupported: dict = field(default_factory=dict)   # flat key -> why it is not listed


def _bad(path, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(os.path.dirname(path)) or path}/.metadata is damaged: {what}",
        expected="the .metadata file torch.distributed.checkpoint wrote",
        fix="copy the checkpoint folder again; if it came from a stranger, do not trust it",
        got=got))


def load(path: str) -> DcpMetadata:
    """The checked, plain contents of the ``.metadata`` file at ``path``."""
    size = os.path.getsize(path)
    if size > DCP_MAX_METADATA:
        raise _bad(path, f"it is {size:,} bytes, over the {DCP_MAX_METADATA:,}-byte limit")
    with open(path, "rb") as f:
        data = f.read()
    up = MetadataUnpickler(io.BytesIO(data))
    with _no_gc():
        try:
            obj = up.load()
            error = None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                KeyError, MemoryError, OverflowError, UnicodeDecodeError, RecursionError) as exc:
            obj, error = None, f"{type(exc).__name__}: {exc}"[:300]
    if up.refused:
        raise UnsafeCheckpointError(message(
            f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}/.metadata names "
            f"{capped(up.refused)}, which torch's pickle.load would import and may call",
            expected="only torch.distributed.checkpoint's own metadata classes, torch.Size, "
                     "torch dtypes and plain containers",
            fix="do not load this checkpoint with torch.distributed.checkpoint unless you trust its "
                "source; weightviz resolved none of these names and ran nothing",
            got=f"globals named: {capped(up.globals)}"), needs=up.refused)
    if error is not None:
        raise _bad(path, "its pickle cannot be parsed", got=error)
    with _no_gc():
        return _materialise(obj, path)


@contextmanager
def _no_gc():
    """The cycle collector paused while ~100,000 records are built (it would walk them again
    and again: a third of the listing time); it runs as usual afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _fields(rec, names: tuple) -> dict:
    """A record's fields from its call arguments and BUILD state (dict or tuple)."""
    d = rec.__dict__
    out = dict(zip(names, d.get(ARGS, ())))
    state = d.get(STATE)
    if isinstance(state, tuple):
        out.update(zip(names, state))
    elif isinstance(state, dict):
        out.update((k, v) for k, v in state.items() if isinstance(k, str))
    out.update((k, v) for k, v in d.items() if k not in (ARGS, STATE))
    return out


def _get(rec, names: tuple):
    """The named fields of a record, fast when BUILD set them (the common case)."""
    d = rec.__dict__
    if ARGS in d or STATE in d:
        f = _fields(rec, names)
        return [f.get(n) for n in names]
    return [d.get(n) for n in names]


def _is(x, kind) -> bool:
    return isinstance(x, Rec) and x.kind == kind


_BIG = 2 ** 62
_INTS = {int}


def _ok(x) -> bool:
    """A plain tuple of sizes, checked fast (the common case; :func:`_dims` words the error)."""
    return type(x) is tuple and len(x) <= DCP_MAX_DIMS and (
        not x or (set(map(type, x)) <= _INTS and min(x) >= 0 and max(x) < _BIG))


def _dims(x, path, what, *, allow_none=False):
    if x is None and allow_none:
        return None
    if type(x) is not tuple:
        x = tuple(x) if isinstance(x, list) else None
    if (x is None or len(x) > DCP_MAX_DIMS
            or (x and (not set(map(type, x)) <= {int} or min(x) < 0 or max(x) >= _BIG))):
        raise _bad(path, f"{what} is not a list of at most {DCP_MAX_DIMS} non-negative sizes",
                   got=repr(x)[:200])
    return x


def _materialise(obj, path) -> DcpMetadata:
    if not _is(obj, "Metadata"):
        raise _bad(path, "it does not hold a Metadata record", got=repr(obj)[:100])
    top = _fields(obj, ("state_dict_metadata", "planner_data", "storage_data", "storage_meta",
                        "version"))
    sdm, storage = top.get("state_dict_metadata"), top.get("storage_data")
    if not isinstance(sdm, dict) or not isinstance(storage, dict):
        raise _bad(path, "state_dict_metadata and storage_data must be dicts",
                   got=f"{type(sdm).__name__}, {type(storage).__name__}")
    if len(sdm) > DCP_MAX_ITEMS or len(storage) > DCP_MAX_CHUNKS:
        raise _bad(path, f"{len(sdm):,} items / {len(storage):,} stored chunks is more than "
                         f"weightviz reads ({DCP_MAX_ITEMS:,} / {DCP_MAX_CHUNKS:,})")
    out = DcpMetadata({}, [], {}, {})
    version = top.get("version")
    out.version = version if isinstance(version, str) else None
    n_chunks = 0
    for key, item in sdm.items():
        if not isinstance(key, str):
            raise _bad(path, "a state-dict key is not a string", got=repr(key)[:100])
        if _is(item, "BytesStorageMetadata"):
            out.objects.append(key)
            continue
        if not _is(item, "TensorStorageMetadata"):
            raise _bad(path, f"item {key!r} is neither a tensor nor a pickled object",
                       got=repr(item)[:100])
        props, size, chunks = _get(item, ("properties", "size", "chunks"))
        if not _is(props, "TensorProperties"):
            raise _bad(path, f"tensor {key!r} has no TensorProperties", got=repr(props)[:100])
        state = props.__dict__.get(STATE)
        if type(state) is tuple and len(state) == 5 and len(props.__dict__) == 1:
            dtype, layout = state[0], state[1]      # what TensorProperties.__getstate__ writes
        else:
            p = _fields(props, ("dtype", "layout", "requires_grad", "memory_format", "pin_memory"))
            dtype, layout = p.get("dtype"), p.get("layout", "torch.strided")
        shape = size if _ok(size) else _dims(size, path, f"the size of tensor {key!r}")
        if not isinstance(chunks, list):
            raise _bad(path, f"the chunks of tensor {key!r} are not a list", got=repr(chunks)[:100])
        n_chunks += len(chunks)
        if n_chunks > DCP_MAX_CHUNKS:
            raise _bad(path, f"more than {DCP_MAX_CHUNKS:,} chunks in all (shared lists?)")
        parsed, nd = [], len(shape)
        for c in chunks:
            if type(c) is not _CHUNK:
                raise _bad(path, f"a chunk of tensor {key!r} is no ChunkStorageMetadata",
                           got=repr(c)[:100])
            d = c.__dict__
            offsets, sizes = ((d.get("offsets"), d.get("sizes")) if ARGS not in d and STATE not in d
                              else _get(c, ("offsets", "sizes")))
            if not (_ok(offsets) and _ok(sizes) and len(offsets) == nd == len(sizes)):
                offsets = _dims(offsets, path, f"a chunk offset of tensor {key!r}")
                sizes = _dims(sizes, path, f"a chunk size of tensor {key!r}")
                raise _bad(path, f"a chunk of tensor {key!r} has {len(offsets)}/{len(sizes)} "
                                 f"dimensions, the tensor {len(shape)}",
                           got=f"offsets {offsets}, sizes {sizes}, shape {shape}")
            parsed.append(Chunk(offsets, sizes))
        if not isinstance(dtype, _Dtype) or str(dtype) not in dtypes.ITEMSIZE_BITS:
            out.unsupported[key] = f"dtype {dtype!s} (not listed)"
        elif layout != "torch.strided":
            out.unsupported[key] = f"{layout} layout (not listed)"
        else:
            out.tensors[key] = TensorItem(key, str(dtype), shape, parsed)
    spans = out.spans
    for index, info in storage.items():
        if type(index) is _INDEX and type(info) is _INFO and not (ARGS in index.__dict__ or STATE
                                                                  in index.__dict__ or ARGS in info.__dict__):
            d, i = index.__dict__, info.__dict__  # the form torch writes: checked inline (fast)
            fqn, offset = d.get("fqn"), d.get("offset")
            rel, off, length, tf = (i.get("relative_path"), i.get("offset"), i.get("length"),
                                    i.get("transform_descriptors"))
            if (type(fqn) is str and type(rel) is str and type(off) is int and type(length) is int
                    and off >= 0 and length >= 0 and tf is None
                    and (offset is None or type(offset) is tuple)):
                try:
                    spans[(fqn, offset)] = Span(rel, off, length)
                    continue
                except TypeError:          # an unhashable offset: the full check names it
                    pass
        fqn, offsets = _index(index, path)
        spans[(fqn, offsets)] = _span(info, fqn, path)
    planner = top.get("planner_data")
    if isinstance(planner, dict):
        out.paths = {k: tuple(v) for k, v in planner.items() if isinstance(k, str) and isinstance(
            v, tuple) and v and all(isinstance(p, (str, int)) for p in v)}
    return out


def _index(index, path):
    if not _is(index, "MetadataIndex"):
        raise _bad(path, "a storage_data key is no MetadataIndex", got=repr(index)[:100])
    fqn, offset = _get(index, ("fqn", "offset"))
    if not isinstance(fqn, str):
        raise _bad(path, "a storage_data key has no name", got=repr(fqn)[:100])
    return fqn, _dims(offset, path, f"the storage offset of {fqn!r}", allow_none=True)


def _span(info, fqn, path) -> Span:
    if not _is(info, "_StorageInfo"):
        raise _bad(path, f"the storage of {fqn!r} is no _StorageInfo", got=repr(info)[:100])
    rel, off, length, tf = _get(info, ("relative_path", "offset", "length", "transform_descriptors"))
    if (not isinstance(rel, str) or type(off) is not int or type(length) is not int
            or off < 0 or length < 0):
        raise _bad(path, f"the storage of {fqn!r} is not a file name, offset and length",
                   got=f"{rel!r}, {off!r}, {length!r}"[:200])
    tf = tf or ()
    if not isinstance(tf, (list, tuple)) or not all(isinstance(t, str) for t in tf):
        raise _bad(path, f"the storage of {fqn!r} has malformed transform descriptors",
                   got=repr(tf)[:100])
    return Span(rel, off, length, tuple(tf))
