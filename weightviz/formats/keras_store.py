"""The Keras HDF5 weight store: Keras 1/2/tf.keras legacy groups and the Keras 3
``.weights.h5`` layout, read from any opener (a plain file, a ``.keras`` member, a shard).

Front doors: :mod:`keras_h5` (a file on disk), :mod:`keras_zip` (the member of a ``.keras``
archive) and :mod:`keras_sharded` (a sharded index).  This module never opens a file by name
of its own choosing, and never imports the front doors.
"""
from __future__ import annotations

import re
import threading

from ..checkpoint import Checkpoint
from ..errors import CorruptFileError, WeightvizError, message
from . import _h5_sandbox
from . import keras_common as kc
from . import keras_safe_h5 as sh
from ._h5_tree import Tree

V3_ROOTS = ("layers", "_layer_checkpoint_dependencies")


def layout(f) -> str | None:
    """Which Keras layout an open HDF5 file holds, or None."""
    attrs = f.attrs
    if "model_config" in attrs:
        return "full"
    if "layer_names" in attrs or "layer_names0" in attrs:
        return "weights"
    import h5py
    mw = f.get("model_weights", getlink=True)
    if isinstance(mw, h5py.HardLink) and "layer_names" in f["model_weights"].attrs:
        return "full"
    if any(f.get(k, getlink=True) is not None for k in V3_ROOTS) or sh.subclassed_store(f):
        return "v3"
    return None


def opener_for(path):
    def opener():
        import h5py
        return h5py.File(path, "r", locking=False)
    return opener


def read_store(opener, path, *, file_size=None, mmap_path=None, base_offset=0,
               architecture=None, fmt="keras-h5", metadata=None) -> Checkpoint:
    """Shared by ``keras_h5``, ``keras_zip`` (the ``model.weights.h5`` member) and
    ``keras_sharded``. ``architecture``: None, a config dict or a Checkpoint that has one
    (a path is resolved by the front door, :func:`keras_h5.architecture_option`)."""
    arch = arch_dict(architecture, path)
    _h5_sandbox.warm_up()            # Keras keeps its names in string attributes: start their reader
    try:
        f = opener()
    except Exception as e:  # noqa: BLE001
        raise sh.corrupt("cannot open the HDF5 file", path, e,
                         expected="a complete HDF5 file written by Keras") from None
    kw = dict(path=path, opener=opener, file_size=file_size, mmap_path=mmap_path, base_offset=base_offset)
    try:
        with f, _h5_sandbox.reading():
            kind = layout(f)
            if kind in ("full", "weights"):
                ck = _read_legacy(f, kind, arch, kw)
            elif kind == "v3":
                ck = read_v3(f, arch, kw)
            else:
                raise CorruptFileError(message(
                    f"{path} is an HDF5 file but not a Keras one",
                    expected="model_config / layer_names root attributes or a layers/ group",
                    fix="open it with format='hdf5' to list its datasets",
                    got=f"root keys {sorted(f.keys())[:10]}"))
    except WeightvizError:
        raise
    except Exception as e:  # noqa: BLE001 - never let raw h5py errors escape
        raise sh.corrupt("cannot read the Keras HDF5 structure", path, e) from None
    ck.format = fmt
    if metadata:
        ck.metadata.update({k: v for k, v in metadata.items() if v is not None and k not in ck.metadata})
    return ck

def arch_dict(architecture, path):
    """``architecture=`` given as a config dict or a Checkpoint that has one -> normalised."""
    if architecture is None:
        return None
    if getattr(architecture, "architecture", None) is not None:
        architecture = architecture.architecture
    if isinstance(architecture, dict):
        if {"class_name", "config"} <= set(architecture):
            return kc.normalise(architecture, path=path)
    raise CorruptFileError(message("architecture= is not a Keras config",
                                   expected='a dict with "class_name" and "config", or a JSON / .keras path',
                                   got=type(architecture).__name__))


def store_metadata(arch, raw, kind, *, legacy_h5=False, keras_version=None, backend=None) -> dict:
    kv = (arch or {}).get("keras_version") or keras_version
    be = (arch or {}).get("backend") or backend
    meta = {"layout": kind, "keras_version": kv, "backend": be,
            "keras_major": kc.keras_major(raw, kv, legacy_h5=legacy_h5, arch=arch)}
    if arch is not None:
        meta["model_name"] = (arch["config"].get("name") if isinstance(arch["config"], dict) else None)
        meta["lambda_layers"] = kc.find_lambdas(arch)
    return {k: v for k, v in meta.items() if v is not None}


# --------------------------------------------------------------------------- legacy .h5

def tensor_name(group: str, weight: str) -> str:
    w = re.sub(r":\d+$", "", weight)
    if w.startswith(group + "/"):
        return w
    cut = w.find("/" + group + "/")
    if cut >= 0:
        return w[cut + 1:]
    if "/" not in w and w.startswith(group + "_") and len(w) > len(group) + 1:
        return f"{group}/{w[len(group) + 1:]}"
    return f"{group}/{w}"


def regroup(names: list[str], prefix: str, entry: dict | None) -> list[str]:
    """Order a layer's tensor names as ``layer.weights``: per sub-layer (sub-models in
    config order, otherwise by first appearance), recursively; leaves keep their order."""
    buckets: dict[str, list[str]] = {}
    leaves: list[str] = []
    for n in names:
        rest = n[len(prefix) + 1:] if n.startswith(prefix + "/") else None
        if rest is None or "/" not in rest:
            leaves.append(n)
        else:
            buckets.setdefault(rest.split("/", 1)[0], []).append(n)
    if not buckets:
        return names
    subs = {kc.entry_name(e): e for e in kc.layer_entries(entry)} if kc.is_model(entry) else {}
    keys = list(buckets)
    if subs:
        rank = {k: i for i, k in enumerate(subs)}
        keys.sort(key=lambda k: rank.get(k, len(rank)))
    out = list(leaves)
    for k in keys:
        out += regroup(buckets[k], f"{prefix}/{k}", subs.get(k))
    return out


def _first(f, kind, arch, tree, path):
    """The legacy reader's first steps, up to every layer's weight_names: all string reads."""
    raw = None
    if kind == "full" and "model_config" in f.attrs:
        raw = kc.load_json(kc.text(sh.attr(f, "model_config", path=path)).encode(), what="model_config", path=path)
        arch = kc.normalise(raw, path=path, what="model_config",
                            keras_version=_attr(f, "keras_version", path), backend=_attr(f, "backend", path))
    wkey = tree.get("", "model_weights" if kind == "full" else "")
    layer_names = sh.names_attr(tree.obj(wkey), "layer_names", path, tree)
    # by path: the worker checks each link and type (what it cannot read, the reader reports)
    _h5_sandbox.prefetch(tree.obj(wkey), ["/" + tree.key(wkey, layer) for layer in layer_names],
                         "weight_names", path=path)
    return raw, arch, wkey, layer_names


def _meanwhile(fn, *args):
    """Start ``fn(*args)`` on a thread; the function returned waits for it and returns what it
    returned or raises what it raised (``wait_only``: only waits)."""
    out: list = []

    def run():
        try:
            out.append((True, fn(*args)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller as is
            out.append((False, e))
    t = threading.Thread(target=run, name="weightviz-keras-names", daemon=True)
    t.start()

    def result(wait_only=False):
        t.join()
        ok, value = out[0]
        if ok or wait_only:
            return value
        raise value
    return result


def _read_legacy(f, kind, arch, kw) -> Checkpoint:
    path = kw["path"]
    wroot_path = "model_weights" if kind == "full" else ""
    tree = Tree(f, path, kw["file_size"])
    # the first steps wait on the string worker (starting, then reading): meanwhile, the
    # objects they name are checked (quietly, see Tree.prewalk) and found checked after
    first = _meanwhile(_first, f, kind, arch, tree, path)
    try:
        tree.prewalk(wroot_path)
    except BaseException:
        first(wait_only=True)
        raise
    raw, arch, wkey, layer_names = first()
    wroot = tree.obj(wkey)
    entries_by_name = {kc.entry_name(e): e for e in kc.layer_entries(arch)} if arch else {}
    entries, groups = {}, {}
    for layer in layer_names + ["top_level_model_weights"]:
        if layer == "top_level_model_weights" and wroot.get(layer, getlink=True) is None:
            continue
        gkey = tree.get(wkey, layer)
        names, dsets = [], {}
        for w in tree.names(gkey, "weight_names"):
            n = tensor_name(layer, w)
            if n in entries or n in dsets:
                n = f"{layer}/{w}"
                k = 1
                while n in entries or n in dsets:
                    n, k = f"{layer}/{w}#{k}", k + 1
            where = f"{wroot_path}/{layer}/{w}".lstrip("/")
            dkey = tree.get(gkey, w)
            dsets[n] = sh.dataset_entry(n, None, where, head=tree.head(dkey, where), **kw)
            names.append(n)
        names = regroup(names, layer, entries_by_name.get(layer))
        for n in names:
            entries[n] = dsets[n]
        if names:
            groups[layer] = names
    extras = {}
    if kind == "full" and f.get("optimizer_weights", getlink=True) is not None:
        og = tree.obj(tree.get("", "optimizer_weights"))
        extras["optimizer"] = {}
        for w in sh.names_attr(og, "weight_names", path, tree):
            where = f"optimizer_weights/{w}"
            n = re.sub(r":\d+$", "", w)
            extras["optimizer"][n] = sh.dataset_entry(n, None, where, head=tree.head(tree.get("", where), where), **kw)
    if "training_config" in f.attrs:
        try:
            extras["training_config"] = kc.load_json(kc.text(sh.attr(f, "training_config", path=path)).encode(),
                                                     what="training_config", path=path)
        except CorruptFileError:
            extras["training_config"] = None
    kv = _attr(wroot, "keras_version", path) or _attr(f, "keras_version", path)
    meta = store_metadata(arch, raw, "keras-h5-full" if kind == "full" else "keras-h5-weights", legacy_h5=True,
                 keras_version=kv, backend=_attr(wroot, "backend", path) or _attr(f, "backend", path))
    return Checkpoint(entries, "keras-h5", path, arch, meta, extras, groups)


def _attr(obj, name, path):
    return kc.text(sh.attr(obj, name, path=path)) if name in obj.attrs else None


# --------------------------------------------------------------------------- .weights.h5

class _Walk:
    def __init__(self, f, kw, major, entry=None):
        self.f, self.kw, self.path, self.major = f, kw, kw["path"], major
        self.seen: set[int] = set()
        self._entry = entry              # (name, where) -> TensorEntry: keras_sharded's shards

    def entry(self, n, w):
        if self._entry is not None:
            return self._entry(n, w)
        return sh.dataset_entry(n, sh.safe_get(self.f, w, path=self.path), w, **self.kw)

    def layer(self, g, where, real, entry, depth, out):
        """Append (name, TensorEntry) for group ``g`` (a layer) in ``layer.weights`` order."""
        if depth > sh.MAX_DEPTH or len(self.seen) > sh.MAX_NODES:
            raise sh.corrupt("the weights tree is too deep or too large", self.path,
                             expected=f"at most {sh.MAX_DEPTH} levels")
        key = sh.node_key(g)
        if key in self.seen:
            return
        self.seen.add(key)
        vg, keys = sh.vars_of(g, self.path)
        wnames = kc.own_weight_names(entry, self.major)
        if wnames is not None and len(wnames) != len(keys):
            wnames = None
        for i, k in enumerate(keys):
            n = f"{real}/{wnames[i]}" if wnames else f"{real}/vars/{k}"
            out.append((n, self.entry(n, f"{where}/vars/{k}")))
        for child, centry, cname in self.children(g, entry):
            self.layer(g[child], f"{where}/{child}", f"{real}/{cname}", centry, depth + 1, out)

    def children(self, g, entry):
        kids = sh.children(g, self.path)
        cls = (entry or {}).get("class_name")
        ordered = []
        if "layers" in kids and (entry is None or kc.is_model(entry)):
            lg = sh.safe_get(g, "layers", path=self.path)
            for sub, sentry, sname in self.layer_list(lg, kc.layer_entries(entry) if entry else None):
                ordered.append((f"layers/{sub}", sentry, sname))
            kids.remove("layers")
        if cls == "Bidirectional" or {"forward_layer", "backward_layer"} <= set(kids):
            inner = kc.wrapped(entry)
            iname = (kc.entry_name(inner) or "") if inner else None
            back = kc.wrapped(entry, "backward_layer")
            bname = (kc.entry_name(back) or "").removeprefix("backward_") if back else None
            base = (iname or "").removeprefix("forward_")
            for k, e, default in (("forward_layer", inner, f"forward_{base}"),
                                  ("backward_layer", back or inner, f"backward_{bname or base}")):
                if k in kids:
                    kids.remove(k)
                    ordered.append((k, e, sh.real_name(g[k], self.path) or (default if iname else k)))
        if cls == "MultiHeadAttention" or {k for k, _ in kc.MHA_PARTS} <= set(kids):
            for k, default in kc.MHA_PARTS:
                if k in kids:
                    kids.remove(k)
                    ordered.append((k, kc.mha_part(entry), sh.real_name(g[k], self.path) or default))
        for k in ("cell", "layer"):
            if k in kids:
                kids.remove(k)
                e = kc.wrapped(entry, k) or (entry if k == "cell" else None)
                default = kc.cell_name(entry) if k == "cell" else (kc.entry_name(e) if e else None)
                ordered.append((k, e, sh.real_name(g[k], self.path) or default or k))
        for k in sorted(kids, key=lambda k: sh.file_order(g[k])):
            ordered.append((k, None, sh.real_name(g[k], self.path) or k))
        return ordered

    def layer_list(self, lg, entries):
        """(group, config entry, real name) for a ``layers`` group, in model.layers order."""
        groups = sh.children(lg, self.path)
        sh.prefetch([sh.safe_get(lg[k], "vars", path=self.path) for k in groups
                     if lg[k].get("vars", getlink=True) is not None], "name", path=self.path)
        by_real = {}
        for k in groups:
            r = sh.real_name(lg[k], self.path)
            if r is not None:
                by_real[r] = k
        if entries is None:
            return [(k, None, sh.real_name(lg[k], self.path) or k)
                    for k in sorted(groups, key=lambda k: sh.file_order(lg[k]))]
        out, used = [], set()
        for e, counter in zip(entries, kc.counter_names(entries)):
            name = kc.entry_name(e) or counter
            k = by_real.get(name) if by_real else (counter if counter in groups else None)
            if k is not None:
                out.append((k, e, name))
                used.add(k)
        for k in sorted(set(groups) - used, key=lambda k: sh.file_order(lg[k])):
            out.append((k, None, sh.real_name(lg[k], self.path) or k))
        return out


def read_v3(f, arch, kw, entry=None) -> Checkpoint:
    """The ``.weights.h5`` tree of ``f``; ``entry(name, where)``, when given, makes the entries."""
    path = kw["path"]
    major = kc.keras_major(None, arch.get("keras_version") if arch else None, arch=arch) or 3
    walk = _Walk(f, kw, major, entry)
    entries, groups = {}, {}
    # no root group: a subclassed model's store, its attribute layers at the top level
    root = next((k for k in V3_ROOTS if f.get(k, getlink=True) is not None), None)
    lg = sh.safe_get(f, root, path=path) if root else None
    tops = kc.layer_entries(arch) if arch else None
    if arch is not None and not tops and not kc.is_model(arch):
        tops = None
    for sub, entry, real in walk.layer_list(lg, tops) if lg is not None else ():
        out: list = []
        walk.layer(lg[sub], f"{root}/{sub}", real, entry, 1, out)
        _add(entries, groups, real, out)
    kids = sh.children(f, path)          # a subclassed model's attribute layers (or tf.keras extras)
    sh.prefetch([sh.safe_get(f, f"{k}/vars", path=path) for k in kids if f[k].get("vars", getlink=True)
                 is not None], "name", path=path)
    for k in kids:
        if k in V3_ROOTS or k in ("optimizer", "metrics"):
            continue
        out = []
        walk.layer(f[k], k, sh.real_name(f[k], path) or k, None, 1, out)
        _add(entries, groups, sh.real_name(f[k], path) or k, out)
    vg, keys = sh.vars_of(f, path)
    if keys:
        model = kc.text(sh.attr(vg, "name", path=path, default="")) or "model"
        out = [(f"{model}/vars/{k}", walk.entry(f"{model}/vars/{k}", f"vars/{k}")) for k in keys]
        _add(entries, groups, model, out)
    extras = {}
    if f.get("optimizer", getlink=True) is not None:
        out = []
        walk.layer(sh.safe_get(f, "optimizer", path=path), "optimizer", "optimizer", None, 1, out)
        extras["optimizer"] = dict(out)
    layout_name = "keras-weights-h5" + ("-tf213" if root not in (None, "layers") else "")
    meta = store_metadata(arch, None, layout_name, keras_version=None)
    if arch is None:
        top = f if lg is None else lg
        named = any(sh.real_name(top[k], path) for k in sh.children(top, path))
        meta["naming"] = "vars name attributes" if named else "stored names (no config)"
        if named:
            meta["keras_major"] = 3      # only Keras >= 3.6 writes the name attributes
    return Checkpoint(entries, "keras-h5", path, arch, meta, extras, groups)


def _add(entries, groups, real, out):
    names = []
    for n, e in out:
        base, k = n, 1
        while n in entries:
            n, k = f"{base}#{k}", k + 1
        if n != e.name:
            e.name = n
        entries[n] = e
        names.append(n)
    if names:
        groups.setdefault(real, []).extend(names)
