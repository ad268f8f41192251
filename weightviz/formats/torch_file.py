"""PyTorch files: ``torch.save`` zips and legacy (pre-1.6) pickles, TorchScript archives,
whole pickled models.

Every file first goes through the recording unpickler (``_unpickle``), which
imports and calls nothing from the file: a pickle that asks to call anything but
torch's tensor rebuilders is refused there with :class:`UnsafeCheckpointError`
naming the globals, and every storage record is checked against the size the
pickle declares (``mmap=True`` in torch skips that check).

A plain checkpoint is then loaded with ``torch.load(path, map_location='cpu',
weights_only=True, mmap=True)`` (``mmap`` only for zips), ``weights_only`` always
passed explicitly so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off,
and never retried unsafely. TorchScript archives and whole pickled models
(``torch.save(model)``), which ``weights_only`` refuses, are listed from the
recording alone: tensor names follow the module tree, the bytes are mapped from
the file. No TorchScript code is run and no class from the file is imported.
"""
from __future__ import annotations

import mmap
import os
import pickle
import struct
import zipfile

import numpy as np

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry
from ..errors import CorruptFileError, UnsafeCheckpointError, message
from . import sniff as _sniff
from . import source as _source
from ._unpickle import Opaque, Recorded, TensorRecord, record
from ._script_code import state_names, state_table
from ._unwrap import describe_extras, is_optimizer_state, unwrap
from ._zip import member_data_offset, open_zip, read_member

from .limits import TORCH_MAX_PICKLE as MAX_PICKLE  # noqa: E402 - ~100 bytes per tensor in practice

# globals torch's weights_only loader accepts by default (prefix match on "module.name")
TORCH_LOAD_OK = ("collections.OrderedDict", "collections.Counter", "torch._utils._rebuild_tensor",
                 "torch._utils._rebuild_parameter", "torch._tensor._rebuild_from_type_v2",
                 "torch.storage.UntypedStorage", "torch.Size", "torch.device", "_codecs.encode",
                 "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.complex",
                 "__builtin__.set", "torch.nn.parameter.Parameter", "torch.Tensor")


def _torch_global_ok(name: str) -> bool:
    mod, _, attr = name.rpartition(".")
    if mod == "torch" and (attr.endswith("Storage") or attr in dtypes.ITEMSIZE_BITS
                           or attr in ("float", "double", "half", "long", "int", "short")):
        return True
    return name.startswith(TORCH_LOAD_OK)


# ---------------------------------------------------------------- sniffing
def sniff_torchscript(head: bytes, path) -> bool:
    return _sniff.is_zip(head) and any(n.endswith("/constants.pkl") or n == "constants.pkl"
                                       for n in _sniff.zip_names(path))


def sniff(head: bytes, path) -> bool:
    if _sniff.is_torch_legacy(head):
        return True
    return _sniff.is_zip(head) and _data_pkl(_sniff.zip_names(path)) is not None


def _data_pkl(names) -> str | None:
    hits = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------- reading
def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    head = _sniff.read_head(path, 64)
    if _sniff.is_zip(head):
        return _read_zip(path, torchscript=None)
    if _sniff.is_torch_legacy(head):
        return _read_legacy(path)
    raise _sniff.unknown(head, path, hint="this is not a torch.save file; try format=None")


def read_torchscript(path, **options) -> Checkpoint:
    return _read_zip(os.fspath(path), torchscript=True)


def _bad(path, what, got=None) -> CorruptFileError:
    return CorruptFileError(message(
        f"{os.path.basename(path)} is a damaged PyTorch file: {what}",
        expected="a complete torch.save / torch.jit.save file",
        fix="the file may be truncated; download or copy it again", got=got))


def _read_zip(path: str, torchscript: bool | None) -> Checkpoint:
    with open_zip(path) as z:
        names = z.namelist()
        pkl = _data_pkl(names)
        if pkl is None:
            raise _bad(path, "no <name>/data.pkl record in the zip", got=", ".join(names[:10]))
        prefix = pkl[: -len("data.pkl")]
        is_ts = any(n == prefix + "constants.pkl" for n in names)
        if torchscript is None:
            torchscript = is_ts
        data = read_member(z, z.getinfo(pkl), MAX_PICKLE, path)
        obj, up = _record(data, path, "TorchScript archive" if is_ts else "torch file")
        infos = {i.filename: i for i in z.infolist()}
        locs = {}
        with _source.open_file(path) as f:
            for key, ref in up.storages.items():
                info = infos.get(f"{prefix}data/{key}")
                need = ref.numel * dtypes.itemsize(ref.dtype)
                if info is None:
                    raise _bad(path, f"storage record data/{key} is missing")
                if info.file_size < need:
                    raise _bad(path, f"storage record data/{key} holds {info.file_size:,} bytes but "
                                     f"its tensors need {need:,}")
                locs[key] = (member_data_offset(f, info, path)
                             if info.compress_type == zipfile.ZIP_STORED else None)
        table = state_table(z, names, prefix, path) if torchscript else {}
    meta = {"container": "zip"}
    if torchscript:
        meta["torchscript"] = True
        return _from_record(obj, up, path, locs, "torchscript", meta, table)
    if up.classes or not all(_torch_global_ok(g) for g in up.globals):
        return _from_record(obj, up, path, locs, "torch", meta)
    mm = all(v is not None for v in locs.values())
    if _source.is_remote(path):      # torch.load wants the whole file: the recording lists it
        return _from_record(obj, up, path, locs, "torch", meta)
    return _from_torch_load(path, mm, meta) or _from_record(obj, up, path, locs, "torch", meta)


def _record(data, path, what):
    try:
        return record(data, what=f"{os.path.basename(path)} ({what})")
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, struct.error, MemoryError, OverflowError,
            UnicodeDecodeError) as exc:
        raise _bad(path, "its pickle cannot be parsed", got=f"{type(exc).__name__}: {exc}"[:300]) from None


def _read_legacy(path: str) -> Checkpoint:
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for _ in range(3):                       # magic, protocol version, sys_info
            _record(m, path, "legacy header")
        obj, up = _record(m, path, "legacy torch file")
        keys, _ = _record(m, path, "legacy storage keys")
        pos = m.tell()
    if not isinstance(keys, list) or set(map(str, keys)) != set(up.storages):
        raise _bad(path, "the storage key list does not match the tensors")
    locs = {}
    for key in map(str, keys):
        ref = up.storages[key]
        if pos + 8 > size:
            raise _bad(path, f"storage {key} starts past the end of the file", got=f"{size:,} bytes")
        with open(path, "rb") as f:
            f.seek(pos)
            (numel,) = struct.unpack("<q", f.read(8))
        nbytes = ref.numel * dtypes.itemsize(ref.dtype)
        if numel != ref.numel or pos + 8 + nbytes > size:
            raise _bad(path, f"storage {key} declares {ref.numel:,} elements but the file holds "
                             f"{numel:,} / ends at byte {size:,}")
        locs[key] = pos + 8
        pos += 8 + nbytes
    meta = {"container": "legacy"}
    if up.classes or not all(_torch_global_ok(g) for g in up.globals):
        return _from_record(obj, up, path, locs, "torch", meta)
    return _from_torch_load(path, False, meta) or _from_record(obj, up, path, locs, "torch", meta)


# ---------------------------------------------------------------- torch.load path
def _from_torch_load(path: str, use_mmap: bool, meta: dict) -> Checkpoint | None:
    """The checkpoint as torch's weights_only loader sees it; None when that loader fails
    (the caller then lists the recording, which ran nothing either: never an unsafe retry)."""
    import torch
    try:
        with torch.sparse.check_sparse_tensor_invariants():
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except Exception as exc:      # noqa: BLE001 - any failure: fall back to the recording only
        meta["torch_load_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return None

    def is_tensor(x):
        return isinstance(x, torch.Tensor)

    tensors, extras, unwrapped = unwrap(obj, is_tensor, what=os.path.basename(path))
    _describe(obj, extras, is_tensor, meta)
    entries = {}
    for name, t in tensors.items():
        reason = None
        if t.layout != torch.strided:
            reason = f"{t.layout} tensor (not listed)"
        elif t.numel() and t.numel() * t.element_size() > t.untyped_storage().nbytes():
            reason = "expanded / overlapping view larger than its storage (not listed)"
        if reason:
            extras.setdefault("unlisted_tensors", {})[name] = reason
            continue
        entries[name] = TensorEntry(name, tuple(t.shape), dtypes.from_torch(t.dtype),
                                    loader=lambda t=t: t)
    meta["reader"] = "torch.load(weights_only=True" + (", mmap=True)" if use_mmap else ")")
    if unwrapped:
        meta["unwrapped"] = unwrapped
    return Checkpoint(entries, "torch", path=path, metadata=meta, extras=extras)


def _describe(obj, extras, is_tensor, meta, module_items=lambda x: None) -> None:
    """What was kept apart, for the summary; a note when the file is an optimizer's state."""
    if extras:
        meta["kept_apart"] = describe_extras(extras, is_tensor, module_items)
    if is_optimizer_state(obj):
        meta["note"] = ("an optimizer's state (state / param_groups), not model weights: "
                        "the model's weights are in another file")


# ---------------------------------------------------------------- recording path
def _module_items(x):
    """Children of a recorded module in state-dict order (None if x is no module)."""
    if not isinstance(x, Recorded):
        return None
    state = x.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    if not isinstance(state, dict):
        return []
    if "_parameters" in state or "_modules" in state:        # a pickled nn.Module
        out = []
        skip = state.get("_non_persistent_buffers_set") or ()
        for attr in ("_parameters", "_buffers"):
            d = state.get(attr)
            if isinstance(d, dict):
                out += [(str(k), v) for k, v in d.items() if v is not None
                        and not (attr == "_buffers" and k in skip)]
        mods = state.get("_modules")
        if isinstance(mods, dict):
            out += [(str(k), v) for k, v in mods.items() if v is not None]
        return out
    items = [(str(k), v) for k, v in state.items()]             # TorchScript: attributes
    return ([kv for kv in items if isinstance(kv[1], TensorRecord)]
            + [kv for kv in items if isinstance(kv[1], (Recorded, dict, list, tuple))])


def _from_record(obj, up, path, locs, fmt, meta, script_table=None) -> Checkpoint:
    tensors, extras, unwrapped = unwrap(obj, lambda x: isinstance(x, TensorRecord), _module_items,
                                        what=os.path.basename(path))
    keep = state_names(obj, script_table, lambda x: isinstance(x, TensorRecord), _module_items)
    if keep is not None and not unwrapped:         # TorchScript: what state_dict() lists
        attrs = {n: tensors.pop(n) for n in [n for n in tensors if n not in keep]}
        if attrs:
            extras["tensor_attributes"] = attrs
    _describe(obj, extras, lambda x: isinstance(x, TensorRecord), meta, _module_items)
    entries = {}
    for name, rec in tensors.items():
        entry = _record_entry(name, rec, path, locs)
        if isinstance(entry, str):
            extras.setdefault("unlisted_tensors", {})[name] = entry
        else:
            entries[name] = entry
    extras = _readable_extras(extras, path, locs)
    meta["reader"] = "recording unpickler (nothing imported or run)"
    if unwrapped:
        meta["unwrapped"] = unwrapped
    if up.classes:
        meta["classes"] = list(up.classes)
    if fmt == "torch" and isinstance(obj, Recorded):
        meta["pickled_model"] = obj.classname
    return Checkpoint(entries, fmt, path=path, metadata=meta, extras=extras)


def _readable_extras(extras, path, locs, depth=0):
    """Extras with recorded tensors made lazy TensorEntries and recorded objects named."""
    if depth > 16:
        return extras
    if isinstance(extras, TensorRecord):
        entry = _record_entry("extra", extras, path, locs)
        return entry if not isinstance(entry, str) else f"<tensor: {entry}>"
    if isinstance(extras, (Recorded, Opaque)):
        return repr(extras)
    if isinstance(extras, dict):
        return {k: _readable_extras(v, path, locs, depth + 1) for k, v in extras.items()}
    if isinstance(extras, (list, tuple)):
        return type(extras)(_readable_extras(v, path, locs, depth + 1) for v in extras)
    return extras


def _record_entry(name, rec: TensorRecord, path, locs):
    """A TensorEntry for a recorded tensor, or why it is not listed."""
    base = locs.get(rec.storage.key)
    if base is None:
        return "stored compressed (not listed)"
    item = dtypes.itemsize(rec.dtype)
    numel = int(np.prod(rec.size, dtype=np.int64)) if rec.size else 1
    span = 1 + sum((s - 1) * st for s, st in zip(rec.size, rec.stride)) if numel else 0
    storage_bytes = rec.storage.numel * dtypes.itemsize(rec.storage.dtype)
    if (rec.offset + span) * item > storage_bytes:
        raise _bad(path, f"tensor {name!r} reaches past the end of its storage",
                   got=f"shape {rec.size}, stride {rec.stride}, offset {rec.offset}")
    if numel * item > storage_bytes:
        return "expanded / overlapping view larger than its storage (not listed)"
    view = dtypes.numpy_view_dtype(rec.dtype)
    contiguous = all(st == int(np.prod(rec.size[i + 1:], dtype=np.int64))
                     for i, (s, st) in enumerate(zip(rec.size, rec.stride)) if s > 1)
    start = base + rec.offset * item
    if contiguous:
        return TensorEntry(name, rec.size, rec.dtype, location=DataLocation(path, start, view))

    def load(path=path, start=start, rec=rec, view=view, span=span, item=item):
        flat = _source.memmap(path, view, start, (span,))
        out = np.lib.stride_tricks.as_strided(flat, rec.size, tuple(s * item for s in rec.stride))
        return np.array(out)
    return TensorEntry(name, rec.size, rec.dtype, loader=load)
