"""Keras 3 sharded weights: ``model.save_weights("model.weights.json", max_shard_size=...)``.

Keras (3.6+, ``ShardedH5IOStore``) writes a JSON index next to HDF5 shards
``model_00000.weights.h5``, ``model_00001.weights.h5`` ... that each hold part of one
``.weights.h5`` tree::

    {"metadata": {"total_size": 3292.0},
     "weight_map": {"/layers/dense/vars": ["model_00000.weights.h5", "model_00001.weights.h5"],
                    "/vars": "model_00001.weights.h5", ...}}

(a value is a shard name or a list of them: one layer's variables may be split over
shards; its ``vars`` group then appears in each, its ``name`` attribute only in the first).

The shards' group trees are merged, in shard order, into an in-memory skeleton (groups,
``name`` attributes, empty placeholders for the variables) that the ``.weights.h5`` walk
of :mod:`keras_store` names and orders, so the tensors come out exactly as from the unsharded
file; each tensor is a lazy entry on its own shard, made while that shard was open through
the same safe HDF5 code (hard links only, string attributes in the sandbox worker, no
external storage or filter plugins). Shard names must be plain file names in the index's
folder (no paths, no links out of it, except into the folder the index itself links to, as in a
Hugging Face cache). Every variable must sit where the index maps it.
"""
from __future__ import annotations

import io
import os
import re
import stat

from ..checkpoint import Checkpoint
from ..errors import CorruptFileError, UnsafeCheckpointError, WeightvizError, message
from . import _h5_sandbox
from . import keras_common as kc
from . import keras_h5, keras_store
from . import keras_safe_h5 as sh
from . import sniff as _sniff

from .limits import KERAS_MAX_NAMES as MAX_ENTRIES  # noqa: E402 - weight_map entries
_FIRST_KEY = re.compile(rb'"weight_map"\s*:\s*\{\s*"(/[^"]{0,2000})"')
FIX_INDEX = "re-save with model.save_weights('model.weights.json', max_shard_size=...), or fix the index"


def sniff(head: bytes, path) -> bool:
    """A JSON object whose ``weight_map`` starts with a Keras variable path (``/.../vars``)."""
    if not _sniff.is_json(head):
        return False
    m = _FIRST_KEY.search(head)
    return m is not None and (m.group(1) == b"/vars" or m.group(1).endswith(b"/vars"))


def _bad(path, what, **kw) -> CorruptFileError:
    kw.setdefault("fix", FIX_INDEX)
    return CorruptFileError(message(f"{os.path.basename(path)}: {what}", **kw))


def _check_size(path, size: int) -> None:
    if size > kc.MAX_JSON_BYTES:
        raise _bad(path, "is too large to be a Keras sharded-weights index",
                   expected=f"at most {kc.MAX_JSON_BYTES} bytes", got=f"{size} bytes")


def local_folder(path) -> str:
    """A remote index and every shard it names fetched whole into one private local folder, under
    their own names, for :func:`read`: the local index's path. Each shard is resolved beside the
    index (:func:`source.sibling`: no '..', absolute paths, URLs or other hosts), all of them
    before any is fetched; the folder goes with the remote session."""
    from urllib.parse import unquote, urlsplit

    from . import source as _source
    _check_size(path, _source.size(path))
    name = unquote(urlsplit(path).path.rpartition("/")[2])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        name = "model.weights.json"
    folder = _source.private_folder(path)
    _source.whole_into(folder, [(name, path)])
    index = os.path.join(folder, name)
    wmap, _ = load_index(index)
    shards = list(dict.fromkeys(s for names in wmap.values() for s in names))
    named = [(s, _source.sibling(path, s, what="shard")) for s in shards]
    _source.whole_into(folder, named)
    return index


def load_index(path) -> tuple[dict, dict]:
    """(weight_map as vars path -> [shard names], the index's metadata), checked."""
    try:
        _check_size(path, os.path.getsize(path))
        with open(path, "rb") as f:
            data = f.read(kc.MAX_JSON_BYTES + 1)
    except OSError as e:
        raise CorruptFileError(message(f"cannot read {path}", got=str(e)[:200])) from None
    raw = kc.load_json(data, what="the sharded-weights index", path=path)
    wmap = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(wmap, dict):
        hint = ("this is a Keras architecture JSON: open it with format='keras-json'"
                if isinstance(raw, dict) and "class_name" in raw else FIX_INDEX)
        raise _bad(path, "is JSON but not a Keras sharded-weights index",
                   expected='{"metadata": {...}, "weight_map": {"/layers/<name>/vars": "<shard>.weights.h5"}}',
                   fix=hint, got=(f"keys {sorted(map(str, raw))[:8]}" if isinstance(raw, dict)
                                  else f"a JSON {type(raw).__name__}"))
    if len(wmap) > MAX_ENTRIES:
        raise _bad(path, f"its weight_map has {len(wmap)} entries", expected=f"at most {MAX_ENTRIES}")
    out = {}
    for key, val in wmap.items():
        names = val if isinstance(val, list) else [val]
        if not (key.startswith("/") and (key == "/vars" or key.endswith("/vars"))) or not names or \
                not all(isinstance(n, str) for n in names):
            raise _bad(path, f"the weight_map entry {key!r} is not a variable group mapped to shard files",
                       expected='"/<path>/vars": "<shard>" or a list of shard names', got=repr(val)[:200])
        out[key] = list(dict.fromkeys(names))
    meta = raw.get("metadata")
    return out, meta if isinstance(meta, dict) else {}


def shard_path(index_path, name: str) -> str:
    """The path of shard ``name``: a plain file name in the index's folder, not a link out of it."""
    base = os.path.basename(index_path)
    if (not name or name in (".", "..") or "\0" in name or "/" in name or "\\" in name
            or os.path.isabs(name) or os.path.basename(name) != name):
        raise UnsafeCheckpointError(message(
            f"{base} names a shard outside its own folder", expected="plain file names next to the index",
            fix="weightviz reads shards only from the index's folder; fix the weight_map", got=repr(name)[:200]),
            needs=["shard:path"])
    folder = os.path.dirname(os.path.abspath(index_path))
    spath = os.path.join(folder, name)
    # a link may only lead where the index itself lives (a Hugging Face cache links both to blobs/)
    homes = {os.path.realpath(folder), os.path.dirname(os.path.realpath(index_path))}
    if os.path.islink(spath) and os.path.dirname(os.path.realpath(spath)) not in homes:
        raise UnsafeCheckpointError(message(
            f"shard {name} of {base} is a link out of its folder", expected="shard files next to the index",
            fix="copy the shard into the folder instead of linking it",
            got=f"a link to {os.path.realpath(spath)}"), needs=["shard:link"])
    try:
        st = os.stat(spath)
    except OSError:
        raise CorruptFileError(message(
            f"shard {name} listed in {base} is missing", expected="every shard file next to the index",
            fix="download or copy every shard into the same folder as the index", got=f"no file {name}")) from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptFileError(message(f"shard {name} listed in {base} is not a regular file",
                                       expected="an HDF5 shard file", got=f"mode {oct(st.st_mode)}"))
    head = _sniff.read_head(spath)
    _sniff.diagnose(head, spath, st.st_size)
    if not _sniff.is_hdf5(head, spath):
        raise CorruptFileError(message(
            f"shard {name} listed in {base} is not an HDF5 file", expected="a .weights.h5 shard written by Keras",
            fix="download the shard again", got="first bytes " + _sniff.first_bytes(head)))
    return spath


class _Merge:
    """The shards' trees merged into an in-memory skeleton, and an entry per variable."""

    def __init__(self, index_path, wmap):
        import h5py
        self.path, self.wmap, self.group_type = index_path, wmap, h5py.Group
        self.skel = h5py.File(io.BytesIO(), "w")
        self.entries: dict[str, object] = {}       # "layers/dense/vars/0" -> TensorEntry
        self.found: set[tuple[str, str]] = set()   # (vars path, shard) pairs holding variables
        self.nodes = 0

    def shard(self, name, spath):
        """Merge one shard (opened, read and closed here)."""
        import h5py
        try:
            f = h5py.File(spath, "r", locking=False)
        except Exception as e:  # noqa: BLE001
            raise sh.corrupt("cannot open the HDF5 shard", spath, e, expected="a .weights.h5 shard written by Keras",
                             fix="download the shard again") from None
        kw = dict(path=spath, opener=keras_store.opener_for(spath), file_size=os.path.getsize(spath), mmap_path=spath)
        with f, _h5_sandbox.reading():
            groups: list = []
            self._collect(f, "", 0, set(), groups, spath)
            vgs = [vg for _, _, vg in groups if vg is not None]
            sh.prefetch(vgs, "name", path=spath)
            for rel, _g, vg in groups:
                self._add(rel, vg, name, spath, kw)

    def _collect(self, g, rel, depth, seen, out, spath):
        """Groups of a shard, in file order, depth first (hard links only, bounded)."""
        self.nodes += 1
        if depth > sh.MAX_DEPTH or self.nodes > sh.MAX_NODES:
            raise sh.corrupt("the weights tree is too deep or too large", spath,
                             expected=f"at most {sh.MAX_DEPTH} levels and {sh.MAX_NODES} groups in all shards")
        key = sh.node_key(g)
        if key in seen:
            return
        seen.add(key)
        vg = None
        if g.get("vars", getlink=True) is not None:
            vg = sh.safe_get(g, "vars", path=spath)
            if not isinstance(vg, self.group_type):
                raise sh.corrupt(f"{rel or '/'}vars is not a group", spath, expected="a Keras vars group")
        out.append((rel, g, vg))
        kids = sh.children(g, spath)
        for k in sorted(kids, key=lambda k: sh.file_order(g[k])):
            self._collect(g[k], f"{rel}{k}/", depth + 1, seen, out, spath)

    def _add(self, rel, vg, shard, spath, kw):
        import numpy as np
        sg = self.skel.require_group(rel.rstrip("/")) if rel else self.skel
        if vg is None:
            return
        svg = sg.require_group("vars")
        if "name" not in svg.attrs:
            name = sh.attr(vg, "name", path=spath)
            if name is not None:
                svg.attrs["name"] = np.bytes_(kc.text(name).encode("utf-8"))
        vpath = f"/{rel}vars"
        keys = sorted(vg, key=lambda k: (0, int(k)) if k.isdigit() else (1, k))
        if keys:
            if shard not in self.wmap.get(vpath, ()):
                raise _bad(self.path, f"shard {shard} holds variables of {vpath} that the index does not map to it",
                           expected="the index and its shards to agree",
                           fix="use the index saved together with these shards", got=f"{vpath}: {keys[:5]}")
            self.found.add((vpath, shard))
        for k in keys:
            where = f"{rel}vars/{k}"
            ds = sh.safe_get(vg, k, path=spath)
            if where in self.entries:
                raise _bad(self.path, f"the variable {where} is stored in two shards",
                           expected="each variable in one shard", fix="use the shards saved together", got=shard)
            self.entries[where] = sh.dataset_entry(where, ds, where, **kw)
            svg.create_dataset(k, shape=(0,), dtype="u1")

    def check_complete(self):
        for vpath, shards in self.wmap.items():
            for s in shards:
                if (vpath, s) not in self.found:
                    raise _bad(self.path, f"the index maps {vpath} to shard {s}, which holds no variables there",
                               expected="every mapped variable group in its shard",
                               fix="use the index saved together with these shards", got=f"{vpath} -> {s}")

    def entry(self, name, where):
        e = self.entries[where]
        e.name = name
        return e


def read(path, *, architecture=None, **options) -> Checkpoint:
    """Open a Keras sharded-weights index lazily; ``architecture=`` as for ``.weights.h5``."""
    path = os.fspath(path)
    wmap, index_meta = load_index(path)
    shards = list(dict.fromkeys(s for names in wmap.values() for s in names))
    paths = [shard_path(path, s) for s in shards]       # all checked before any is opened
    arch = keras_h5.architecture_option(architecture, path)
    _h5_sandbox.warm_up()
    merge = None
    try:
        merge = _Merge(path, wmap)
        for s, sp in zip(shards, paths):
            merge.shard(s, sp)
        merge.check_complete()
        if keras_store.layout(merge.skel) == "v3":
            ck = keras_store.read_v3(merge.skel, arch, {"path": path}, entry=merge.entry)
        elif not merge.entries:       # a model without weights: Keras writes an empty weight_map
            ck = Checkpoint({}, "keras-h5", path, arch, keras_store.store_metadata(arch, None, "keras-weights-sharded"), {}, {})
        else:
            raise _bad(path, "its shards hold no Keras weights tree", expected="layers/<name>/vars groups")
    except WeightvizError:
        raise
    except Exception as e:  # noqa: BLE001 - never let raw h5py errors escape
        raise sh.corrupt("cannot read the sharded Keras weights", path, e) from None
    finally:
        if merge is not None:
            merge.skel.close()
    ck.metadata["layout"] = "keras-weights-sharded"
    ck.metadata["shards"] = shards
    if index_meta:
        ck.metadata["index_metadata"] = index_meta
    return ck
