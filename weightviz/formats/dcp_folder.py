"""``torch.distributed.checkpoint`` folders (FSDP2, torchtitan): ``.metadata`` plus one
``__{rank}_{n}.distcp`` file per writer, opened in one process without a process group.

``.metadata`` is read by :mod:`._dcp_metadata` (a restricted unpickler: DCP's own classes
only, nothing imported or run). Every tensor is listed from it alone, with its global
shape and dtype; before anything is read the reader proves that each tensor's chunks tile
it (:mod:`._tiling`), that every chunk has a storage span, that each span's file exists
inside the folder and holds the span and that the span is large enough for the chunk.
A tensor is assembled when asked: each chunk's span is a complete ``torch.save`` archive
(:mod:`._torch_span`: parsed without torch, its pickle recorded, its bytes read from disk)
placed at its offsets. Items saved as pickled objects (``BytesStorageMetadata``: step
counters, RNG state, schedulers, dataloaders) are described, never unpickled; optimizer
state is kept apart, and the model's weights are unwrapped as in torch files (``_unwrap``).

A folder of ``shard-*-model-*-of-*.safetensors`` files written by
``HuggingFaceStorageWriter(save_distributed=True)`` is assembled the same way from each
file's ``__metadata__["DCP_SHARDING_INFO"]`` (:func:`read_hf`).
"""
from __future__ import annotations

import json
import os
import re
from functools import partial
from math import prod

from .. import dtypes
from ..checkpoint import Checkpoint, TensorEntry
from ..errors import CorruptFileError, message
from . import _dcp_metadata, _tiling
from ._dcp_source import DcpSource
from ._tiling import assemble, check_tiling
from ._torch_span import bad
from ._unwrap import describe_extras, is_optimizer_state, unwrap

OPTIMIZER_KEYS = ("optim", "optimizer", "optimizers", "optim_state", "optimizer_state",
                  "optimizer_state_dict", "optim_state_dict")
RANK_FILE = re.compile(r"__(\d+)_(\d+)\.distcp$")
HF_SHARD = re.compile(r"shard-(\d+)-model-(\d+)-of-(\d+)\.safetensors$")


def folder_of(path: str) -> str:
    path = os.path.abspath(os.fspath(path))
    return os.path.dirname(path) if os.path.basename(path) == ".metadata" else path


def is_dcp_folder(names) -> bool:
    return ".metadata" in names


def is_hf_folder(names) -> bool:
    return any(HF_SHARD.match(n) for n in names)


def folder_reader(path: str, names):
    """The registry's row (:class:`.registry.Reader`) of the reader for a training-checkpoint
    folder, or None: ``.metadata`` -> ``dcp``; sharded ``shard-*-model-*-of-*.safetensors`` ->
    ``dcp-safetensors``; ``*model_states.pt`` (a DeepSpeed ``global_step*`` folder), or a
    ``latest`` file naming such a folder -> ``deepspeed``."""
    from .registry import reader_by_name
    fmt = _folder_format(path, names)
    return None if fmt is None else reader_by_name(fmt)


def _is_step_folder(names) -> bool:          # deepspeed_folder.is_step_folder, not imported here
    return any(n.endswith("model_states.pt") for n in names)


def _folder_format(path: str, names) -> str | None:
    if is_dcp_folder(names):
        return "dcp"
    if is_hf_folder(names) and not any(n.endswith(".safetensors.index.json") for n in names):
        return "dcp-safetensors"
    if _is_step_folder(names):
        return "deepspeed"
    if "latest" in names and os.path.isfile(os.path.join(path, "latest")):
        try:
            with open(os.path.join(path, "latest"), "rb") as f:
                tag = f.read(256).decode("utf-8", "replace").strip()
        except OSError:
            return None
        step = os.path.join(path, tag)
        if tag and "/" not in tag and tag not in (".", "..") and os.path.isdir(step):
            if _is_step_folder(os.listdir(step)):
                return "deepspeed"
        elif not any(n.endswith((".safetensors", ".json", ".bin", ".pt", ".pth")) for n in names):
            return "deepspeed"          # its reader explains what is wrong with ``latest``
    return None


class Leaf:
    """One item of the saved state dict (its flat DCP key)."""
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key


class TensorLeaf(Leaf):
    __slots__ = ()


# ---------------------------------------------------------------- DCP
def read(path, **options) -> Checkpoint:
    folder = folder_of(path)
    md = _dcp_metadata.load(os.path.join(folder, ".metadata"))
    where = os.path.basename(folder)
    sizes: dict[str, int] = {}
    for key, item in md.tensors.items():
        item.chunks = check_tiling(where, key, item.shape, item.chunks)
        item_bytes = dtypes.itemsize(item.dtype)
        for c in item.chunks:
            if not prod(c.sizes):
                continue
            span = md.spans.get((key, c.offsets))
            if span is None:
                raise CorruptFileError(message(
                    f"{where}: chunk {_tiling.box(c)} of tensor {key!r} has no storage entry",
                    expected="a storage_data entry for every chunk .metadata lists",
                    fix="the .metadata file is damaged; copy the checkpoint again"))
            if span.transforms:
                md.unsupported[key] = (f"stored through the {'/'.join(span.transforms)} "
                                       "extension (not read)")
            size = _file_size(folder, span.file, sizes, where, key)
            if span.offset + span.length > size:
                raise bad(os.path.join(folder, span.file), f"the span {span.offset:,}+"
                          f"{span.length:,} of a chunk runs past the end of the {size:,}-byte "
                          "file", tensor=key)
            if span.length < prod(c.sizes) * item_bytes:
                raise bad(os.path.join(folder, span.file), f"chunk {_tiling.box(c)} needs "
                          f"{prod(c.sizes) * item_bytes:,} bytes but its span holds "
                          f"{span.length:,}", tensor=key)
    for key in md.objects:                  # pickled items are never read, but their files
        span = md.spans.get((key, None))    # tell whether every rank's share is here
        if span is not None and span.offset + span.length > _file_size(folder, span.file, sizes,
                                                                       where, key):
            raise bad(os.path.join(folder, span.file), "an item's span runs past the end of the "
                      "file", tensor=key)
    for key in md.unsupported:
        md.tensors.pop(key, None)
    source = DcpSource(folder, md)
    entries, extras, meta = _split(md, source)
    files = sorted({s.file for s in md.spans.values()})
    ranks = {int(m.group(1)) for f in files if (m := RANK_FILE.search(f))}
    n_chunks = sum(len(t.chunks) for t in md.tensors.values())
    split = sum(len(md.tensors[leaf.key].chunks) > 1 for leaf in entries.values())
    meta.update({"reader": "DCP .metadata through weightviz's restricted unpickler (nothing "
                           "imported or run); chunks read with the recording unpickler",
                 "dcp_version": md.version, "ranks": len(ranks) or len(files), "files": files,
                 "chunks": n_chunks})
    meta["display"] = {"sharding": f"{meta['ranks']} rank{'s' * (meta['ranks'] != 1)}, "
                                   f"{len(files)} file{'s' * (len(files) != 1)}, {n_chunks:,} "
                                   f"chunk{'s' * (n_chunks != 1)}; {split} of {len(entries)} "
                                   "weights split across chunks"}
    out = {name: TensorEntry(name, md.tensors[leaf.key].shape, md.tensors[leaf.key].dtype,
                             loader=partial(source.load, leaf.key))
           for name, leaf in entries.items()}
    return Checkpoint(out, "dcp", path=folder, metadata=meta, extras=extras)


def _file_size(folder, rel, sizes, where, key) -> int:
    if rel not in sizes:
        full = _tiling.safe_join(folder, rel, where, f"tensor {key!r}")
        try:
            sizes[rel] = os.path.getsize(full)
        except FileNotFoundError:
            raise CorruptFileError(message(
                f"{where}: {rel} is missing; it holds {key!r}",
                expected="every .distcp file the .metadata names, in the checkpoint folder",
                fix="copy the whole checkpoint folder (every rank's files); a checkpoint saved "
                    "while a rank failed is incomplete",
                got=f"no file {rel} in {folder}")) from None
    return sizes[rel]


def _tree(md) -> dict:
    """The saved state dict's nesting, rebuilt from planner_data (leaves: Leaf objects)."""
    keys = list(md.tensors) + list(md.objects) + list(md.unsupported)
    root: dict = {}
    for key in keys:
        path = md.paths.get(key) or _guess(key)
        node = root
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                if nxt is not None:                # a leaf and a prefix at once: keep flat
                    return {k: _leaf(md, k) for k in keys}
                nxt = node[part] = {}
            node = nxt
        if path[-1] in node:
            return {k: _leaf(md, k) for k in keys}
        node[path[-1]] = _leaf(md, key)
    return _lists(root)


def _guess(key: str) -> tuple:
    head, _, rest = key.partition(".")
    return (head, rest) if head in OPTIMIZER_KEYS and rest else (key,)


def _leaf(md, key):
    return TensorLeaf(key) if key in md.tensors else Leaf(key)


def _lists(node):
    """Levels keyed 0..n-1 (param_groups) become lists again, as they were saved."""
    stack = [node]
    while stack:
        x = stack.pop()
        for k, v in list(x.items()):
            if isinstance(v, dict):
                stack.append(v)
                if v and all(type(i) is int for i in v) and sorted(v) == list(range(len(v))):
                    x[k] = [v[i] for i in range(len(v))]
                    stack.extend(i for i in x[k] if isinstance(i, dict))
    return node


def _split(md, source):
    """(name -> TensorLeaf of the model's weights, extras, metadata) as for torch files."""
    root = _tree(md)
    extras: dict = {}
    for k in [k for k, v in root.items() if k in OPTIMIZER_KEYS or is_optimizer_state(v)]:
        extras[str(k)] = root.pop(k)
    tensors, more, unwrapped = unwrap(root, lambda x: isinstance(x, TensorLeaf),
                                      what=".metadata")
    extras.update(more)
    meta: dict = {}
    if unwrapped:
        meta["unwrapped"] = unwrapped
    readable = _readable(extras, md, source)
    if readable:
        kept = describe_extras(readable, lambda x: isinstance(x, TensorEntry))
        for k, v in readable.items():
            n = _objects(v)
            if n:
                more = f"{n} pickled object{'s' * (n != 1)} (not loaded)"
                kept[str(k)] = f"{kept[str(k)]}, {more}" if kept.get(str(k)) else more
        meta["kept_apart"] = kept
    return tensors, readable, meta


def _objects(x) -> int:
    """Pickled (bytes) items under x, as _readable describes them."""
    stack, n = [x], 0
    while stack:
        v = stack.pop()
        if isinstance(v, str) and v.startswith("<pickled object"):
            n += 1
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def _readable(x, md, source):
    """Extras with tensors as lazy TensorEntries and pickled objects described (not loaded)."""
    if isinstance(x, TensorLeaf):
        t = md.tensors[x.key]
        return TensorEntry(x.key, t.shape, t.dtype, loader=partial(source.load, x.key))
    if isinstance(x, Leaf):
        if x.key in md.unsupported:
            return f"<tensor: {md.unsupported[x.key]}>"
        span = md.spans.get((x.key, None))
        size = f"{span.length:,} bytes in {span.file}" if span else "no storage entry"
        return f"<pickled object, {size}: not loaded, unpickling it could run code>"
    if isinstance(x, dict):
        return {k: _readable(v, md, source) for k, v in x.items()}
    if isinstance(x, list):
        return [_readable(v, md, source) for v in x]
    return x


# ---------------------------------------------------------------- HF-flavoured DCP
def read_hf(path, **options) -> Checkpoint:
    """A folder of ``shard-{r}-model-{i}-of-{n}.safetensors`` files (local chunks with their
    offsets in ``__metadata__["DCP_SHARDING_INFO"]``): tensors assembled from their chunks."""
    from .safetensors_file import read_file
    folder = os.path.abspath(os.fspath(path))
    where = os.path.basename(folder)
    names = sorted(n for n in os.listdir(folder) if HF_SHARD.match(n))
    shards = sorted({int(HF_SHARD.match(n).group(1)) for n in names})
    if shards != list(range(1, len(shards) + 1)):
        missing = sorted(set(range(1, max(shards) + 1)) - set(shards))
        raise CorruptFileError(message(
            f"{where}: shard {missing[0]:05d} of the sharded safetensors checkpoint is missing",
            expected="shard-00001-… to the last shard, one per rank",
            fix="copy every rank's shard file", got=", ".join(names[:8])))
    items: dict = {}
    for n in names:
        entries, meta = read_file(os.path.join(folder, n))
        raw = (meta.get("safetensors_metadata") or {}).get("DCP_SHARDING_INFO")
        try:
            info = json.loads(raw) if raw else {}
        except ValueError:
            raise CorruptFileError(message(f"{n}: DCP_SHARDING_INFO is not JSON",
                                           got=str(raw)[:200])) from None
        for name, e in entries.items():
            off = (info.get(name) or {}).get("saved_offsets", [0] * len(e.shape))
            if (not isinstance(off, list) or len(off) != len(e.shape)
                    or not all(type(o) is int and o >= 0 for o in off)):
                raise CorruptFileError(message(f"{n}: tensor {name!r} has bad saved_offsets",
                                               got=repr(off)[:200]))
            items.setdefault(name, []).append((_dcp_metadata.Chunk(tuple(off), e.shape), e))
    out = {}
    for name, parts in items.items():
        dts = {e.dtype for _, e in parts}
        if len(dts) != 1:
            raise CorruptFileError(message(f"{where}: tensor {name!r} has chunks of several "
                                           "dtypes", got=", ".join(sorted(dts))))
        shape = tuple(max(c.offsets[d] + c.sizes[d] for c, _ in parts)
                      for d in range(len(parts[0][0].sizes)))
        check_tiling(where, name, shape, [c for c, _ in parts])
        out[name] = TensorEntry(name, shape, dts.pop(), loader=partial(_hf_load, shape, parts))
    n_chunks = sum(len(p) for p in items.values())
    meta = {"reader": "safetensors headers + DCP_SHARDING_INFO", "ranks": len(shards),
            "files": names, "chunks": n_chunks,
            "display": {"sharding": f"{len(shards)} ranks, {len(names)} files, {n_chunks:,} "
                                    "chunks (global shapes from the chunks' extents)"}}
    return Checkpoint(out, "dcp-safetensors", path=folder, metadata=meta)


def _hf_load(shape, parts):
    dtype = dtypes.numpy_view_dtype(parts[0][1].dtype)

    def fill(entry, dest):
        if dest is None:
            return entry.raw()
        dest[...] = entry.raw()
        return dest
    return assemble(shape, dtype, [(c, partial(fill, e)) for c, e in parts])
