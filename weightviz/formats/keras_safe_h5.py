"""Safe HDF5 access for the Keras readers: hard links only (no external / soft links), no external
raw storage, virtual datasets or filter plugins, bounded walks, lazy memory-mappable dataset entries,
the helpers for Keras 3 weights-store groups. Low-level h5py per object (h5py's wrappers cost more)."""
from __future__ import annotations

import functools
import importlib
import math

import numpy as np

from .. import dtypes
from ..checkpoint import DataLocation, TensorEntry
from ..errors import CorruptFileError, UnsafeCheckpointError, message
from .keras_common import text
from .limits import HDF5_MAX_DEPTH as MAX_DEPTH, HDF5_MAX_OBJECTS as MAX_NODES, KERAS_MAX_NAMES as MAX_NAMES  # noqa
# HDF5 filters built into libhdf5/h5py; anything else would load a native plugin.
SAFE_FILTERS = {1, 2, 3, 4, 5, 6, 32000}
_dtype_name = functools.lru_cache(64)(dtypes.from_numpy)


class _H5:  # h5.h5py, h5.h5o...: imported on first use (h5py takes ~40 ms to import)
    def __getattr__(self, name):
        g = self.h5py.Group if name == "Group" else None    # h5.Group: looks its name up only once
        setattr(self, name, type("Group", (g,), {"name": functools.cached_property(g.name.fget)}) if g
                else importlib.import_module("h5py" if name == "h5py" else f"h5py.{name}"))
        return getattr(self, name)


h5 = _H5()


def corrupt(what: str, path, err: BaseException | None = None, **kw) -> CorruptFileError:
    got = kw.pop("got", None) or (f"{type(err).__name__}: {str(err)[:200]}" if err else None)
    kw.setdefault("fix", "check that the file is complete (re-download or re-save it)")
    return CorruptFileError(message(f"{what} in {path}", got=got, **kw))


def attr(obj, name: str, *, path, default=None, also=(), tree=None):
    """``obj.attrs[name]`` (``default`` when absent), read only after its stored type is checked:
    Keras writes strings and numbers, and libhdf5 crashes converting a damaged variable-length
    type (a one-bit change found by fuzzing turns a string list into a 'sequence'). Variable-length
    strings are read by ``_h5_sandbox`` in a child process (``also``: more objects whose ``name``
    is read in the same round trip, see ``prefetch``; ``tree``: a Tree keeping stored types)."""
    tid = tree.stored(obj, name) if tree is not None else _stored_type(obj, name, path)
    if tid is None:
        return default
    h5t = h5.h5t
    if not isinstance(tid, (h5t.TypeStringID, h5t.TypeIntegerID, h5t.TypeFloatID, h5t.TypeEnumID)):
        raise corrupt(f"the HDF5 attribute {name!r} has a {type(tid).__name__[4:-2] or 'strange'} type",
                      path, expected="strings or numbers, as Keras writes them",
                      fix="the file is damaged or was crafted; re-save the model")
    if _vlen(tid):
        # kept in the global heap, where a damaged size makes libhdf5 loop forever: read in
        # a child process that can be stopped (numbers and fixed-length strings never go there)
        from . import _h5_sandbox
        return _h5_sandbox.read_attr(obj, name, path=path, also=also)
    try:
        return obj.attrs[name]
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the HDF5 attribute {name!r}", path, e) from None


def names_attr(group, name, path, tree=None) -> list[str]:
    """A ``layer_names`` / ``weight_names`` list (or its ``name0``, ``name1``... chunks) as text."""
    has = (lambda n: tree.has(group, n)) if tree is not None else group.attrs.__contains__
    if has(name):
        vals = attr(group, name, path=path, tree=tree)
    else:
        vals, i = [], 0
        while has(f"{name}{i}") and i < 10_000:
            vals.extend(list(attr(group, f"{name}{i}", path=path, tree=tree)))
            i += 1
    return as_names(vals, name, path)


def as_names(vals, name, path) -> list[str]:
    vals = vals.tolist() if hasattr(vals, "tolist") else vals
    out = [text(v) for v in (vals if isinstance(vals, (list, tuple)) else [vals])]
    if len(out) > MAX_NAMES:
        raise corrupt(f"the {name} attribute lists {len(out)} entries", path, expected=f"at most {MAX_NAMES}")
    return out


def prefetch(objs, name: str, *, path, tree=None) -> None:
    """Read attribute ``name`` of many objects ahead, 1,000 per round trip to the string
    worker (a Keras file has one per layer); ``attr`` then finds them read."""
    def vlen(o):
        try:
            return _vlen(tree.stored(o, name) if tree is not None else _stored_type(o, name, path))
        except CorruptFileError:       # attr() reports it when the reader asks for it
            return False
    objs = [o for o in objs if vlen(o)]   # the others are read in-process
    for i in range(0, len(objs), 1000):
        attr(objs[i], name, path=path, also=objs[i + 1:i + 1000], tree=tree)


def _stored_type(obj, name: str, path):
    """The stored datatype of attribute ``name`` (None when absent), data unread."""
    try:
        key = name.encode("utf-8")
        return h5.h5a.open(obj.id, key).get_type() if h5.h5a.exists(obj.id, key) else None
    except Exception as e:  # noqa: BLE001 - any h5py failure is a corrupt file
        raise corrupt(f"cannot read the HDF5 attribute {name!r}", path, e) from None


def _vlen(tid) -> bool:
    return isinstance(tid, h5.h5t.TypeStringID) and tid.is_variable_str()


def safe_get(group, relpath: str, *, path):
    """``group[relpath]`` following only hard links, component by component; refuses
    external, soft and user-defined links (CVE-2026-1669 class)."""
    oid = group.id
    for comp in relpath.split("/"):
        if comp:
            oid = _open_hard(oid, comp, relpath, path)
    return group if oid is group.id else _wrap(oid, relpath, path)


def _open_hard(oid, comp: str, relpath: str, path):
    """The object under the link ``comp`` of the (low-level) group ``oid``: a hard link."""
    key = comp.encode("utf-8")
    try:
        info = oid.links.get_info(key) if oid.links.exists(key) else None
    except Exception as e:  # noqa: BLE001 - any h5py failure is a corrupt file
        raise corrupt(f"cannot read the HDF5 entry {relpath!r}", path, e) from None
    if info is None:
        raise corrupt(f"the HDF5 entry {relpath!r} listed by the file is missing", path,
                      expected="every name in layer_names / weight_names to exist")
    if info.type == h5.h5l.TYPE_EXTERNAL:
        link = h5.h5py.Group(oid).get(comp, getlink=True)
        raise UnsafeCheckpointError(message(
            f"the HDF5 entry {relpath!r} in {path} is an external link to {link.filename!r}:{link.path!r}",
            expected="weights stored inside the file",
            fix="weightviz never follows links out of a file; re-save the model"), needs=["h5:external-link"])
    if info.type != h5.h5l.TYPE_HARD:
        raise UnsafeCheckpointError(message(
            f"the HDF5 entry {relpath!r} in {path} is a soft or user-defined link",
            expected="plain groups and datasets (Keras never writes links)",
            fix="re-save the model"), needs=["h5:soft-link"])
    try:
        child = h5.h5o.open(oid, key)
        if h5.h5i.get_type(child) not in (h5.h5i.GROUP, h5.h5i.DATASET, h5.h5i.DATATYPE):
            raise TypeError("Unknown object type")       # as h5py's Group.__getitem__
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot open the HDF5 entry {relpath!r}", path, e) from None
    return child


def _wrap(oid, relpath, path):
    kind = h5.h5i.get_type(oid)
    if kind in (h5.h5i.GROUP, h5.h5i.DATASET):
        return h5.Group(oid) if kind == h5.h5i.GROUP else h5.h5py.Dataset(oid, readonly=True)
    raise corrupt(f"the HDF5 entry {relpath!r} is neither a group nor a dataset", path)


def check_dataset(d, where: str, *, path):
    """Refuse external raw storage, virtual datasets and non-builtin filters; first of all
    variable-length / reference types, whose fill value libhdf5 reads from the global heap
    (where a damaged size makes it loop forever) as soon as the creation list is asked for. ``d``: a
    dataset (an h5py one or low-level); gives its dtype, creation property list and low-level id."""
    d = d.id if isinstance(getattr(d, "id", None), h5.h5d.DatasetID) else d   # else: fails as ever
    try:
        dt = d.dtype
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the type of dataset {where!r}", path, e) from None
    if dt.hasobject:
        raise corrupt(f"dataset {where!r} holds {dt} values, not numbers", path,
                      expected="numeric weight arrays", fix="this is not a Keras weights dataset")
    try:
        plist = d.get_create_plist()
        external = h5.h5py.Dataset(d).external if plist.get_external_count() > 0 else None
        virtual = plist.get_layout() == h5.h5d.VIRTUAL
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the header of dataset {where!r}", path, e) from None
    if external or virtual:
        kind = "external raw storage" if external else "a virtual dataset"
        raise UnsafeCheckpointError(message(
            f"dataset {where!r} in {path} uses {kind}", expected="data stored inside the file",
            fix="weightviz never reads data from outside the file; re-save the model",
            got=str(external)[:200] if external else None), needs=["h5:external-storage"])
    bad = [f for f in filters if f not in SAFE_FILTERS]
    if bad:
        raise UnsafeCheckpointError(message(
            f"dataset {where!r} in {path} needs HDF5 filter plugin(s) {bad}",
            expected="no compression or the built-in gzip/shuffle/lzf filters",
            fix="weightviz never loads native filter plugins; re-save without that filter"),
            needs=[f"h5:filter-{b}" for b in bad])
    return dt, plist, d


def dataset_dtype(ds, where: str, *, path, dt=None) -> tuple[str, np.dtype]:
    """Canonical dtype name and the NumPy dtype of the stored bits (``dt``: ``ds.dtype``, known;
    ``ds`` None: a bfloat16 candidate is refused rather than its attribute read, see prewalk)."""
    dt = ds.dtype if dt is None else dt
    if dt.kind == "V" and dt.itemsize == 2:
        if ds is None:
            raise LookupError("its dtype attribute is left to the reader")
        ds = h5.h5py.Dataset(ds, readonly=True) if isinstance(ds, h5.h5d.DatasetID) else ds
        if text(attr(ds, "dtype", path=path, default="")) == "bfloat16":
            return "bfloat16", np.dtype("<u2")
    name = _dtype_name(dt)
    if name not in dtypes.ITEMSIZE_BITS or dt.fields is not None:
        raise corrupt(f"dataset {where!r} holds {dt} values, not numbers", path,
                      expected="numeric weight arrays", fix="this is not a Keras weights dataset")
    return name, dt


def dataset_head(d, where: str, *, path, file_size=None, ds=None) -> tuple:
    """All ``dataset_entry`` checks and needs of dataset ``d``, reading no data: (dtype name, NumPy
    dtype of the bits, shape, offset or None, nbytes). ``ds``: for a bfloat16 one (dataset_dtype)."""
    dt, plist, d = check_dataset(d, where, path=path)
    dtype, raw_dt = dataset_dtype(ds, where, path=path, dt=dt)
    try:
        shape = d.shape or ()
        chunks = plist.get_chunk() if plist.get_layout() == h5.h5d.CHUNKED else None
        offset = d.get_offset() if chunks is None else None
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the header of dataset {where!r}", path, e) from None
    nbytes = int(math.prod(float(s) for s in shape)) * raw_dt.itemsize     # float64, as np.prod
    if offset is not None and file_size is not None and offset + nbytes > file_size:
        raise corrupt(f"dataset {where!r} extends past the end of the file", path,
                      expected=f"its {nbytes} bytes within the file's {file_size} bytes",
                      fix="the file is truncated: re-download or re-save it")
    return dtype, raw_dt, shape, offset, nbytes


def dataset_entry(name: str, ds, where: str, *, path, opener, file_size=None,
                  mmap_path=None, base_offset=0, head=None) -> TensorEntry:
    """A lazy TensorEntry for one HDF5 dataset; memory-mappable when stored contiguous
    and unfiltered inside a plain file. Reads no data. ``head``: its dataset_head, known."""
    if head is None:
        head = dataset_head(ds, where, path=path, file_size=file_size, ds=ds)
    dtype, raw_dt, shape, offset, nbytes = head
    location = (DataLocation(mmap_path, base_offset + offset, raw_dt, "C")
                if mmap_path is not None and offset is not None and nbytes > 0 else None)

    def load():
        with opener() as f:
            d = safe_get(f, where, path=path)
            check_dataset(d, where, path=path)
            try:
                stored = d.id.get_storage_size()
                if nbytes > 2**31 and nbytes > 1000 * max(stored, 1):
                    raise corrupt(f"dataset {where!r} declares {nbytes} bytes from {stored} stored bytes",
                                  path, expected="a plausible compression ratio")
                arr = d[()]
            except CorruptFileError:
                raise
            except Exception as e:  # noqa: BLE001
                raise corrupt(f"cannot read dataset {where!r}", path, e) from None
        arr = np.asarray(arr)
        return arr.view(raw_dt) if dtype == "bfloat16" else arr

    return TensorEntry(name, shape, dtype, loader=load, location=location)


def node_key(obj) -> int:
    return h5.h5o.get_info(obj.id).addr


# --------------------------------------------------------------------------- Keras 3 store groups

def children(g, path):
    """Sub-groups of an HDF5 group (hard links only), excluding ``vars``."""
    out = []
    for k in g:
        link = g.get(k, getlink=True)
        if not isinstance(link, h5.h5py.HardLink):
            safe_get(g, k, path=path)  # raises the house error
        if k != "vars" and isinstance(g.get(k), h5.h5py.Group):
            out.append(k)
    return out


def real_name(g, path):
    v = g.get("vars", getlink=True)
    if v is not None:
        name = attr(safe_get(g, "vars", path=path), "name", path=path)
        if name is not None:
            return text(name)
    return None


def file_order(g):
    """Where a group's objects sit in the file: the largest address of the group, its
    ``vars`` group and first variable (HDF5 reuses freed space, so one address alone can
    be out of creation order). Used to order groups only when no config tells."""
    keys = [node_key(g)]
    v = g.get("vars", getlink=True)
    if isinstance(v, h5.h5py.HardLink):
        keys.append(node_key(g["vars"]))
        first = g["vars"].get("0", getlink=True)
        if isinstance(first, h5.h5py.HardLink):
            keys.append(node_key(g["vars"]["0"]))
    return max(keys)


def vars_of(g, path):
    if g.get("vars", getlink=True) is None:
        return None, []
    vg = safe_get(g, "vars", path=path)
    keys = list(vg)
    keys.sort(key=lambda k: (0, int(k)) if k.isdigit() else (1, k))
    return vg, keys


def subclassed_store(f, limit: int = 10_000) -> bool:
    """Whether an HDF5 file with no ``layers/`` group is a Keras 3 ``.weights.h5`` of a subclassed
    model, which keeps its attribute layers at the top level (``block1/vars``, ``dsn1/vars``):
    a top-level ``vars`` group holding only the datasets ``0``, ``1``, ... (the model's own
    variables; Keras writes the group for every model, empty or not), and every other top-level
    entry a group with a ``vars`` group of its own (a layer) or whose sub-groups all have one
    (a list or dict attribute: ``blocks/dense``, ``blocks/dense_1``). Links are looked at, never
    followed; a group of more than ``limit`` entries is not taken for Keras's."""
    hard, group = h5.h5py.HardLink, h5.h5py.Group

    def has(g, k, cls=group):
        return isinstance(g.get(k, getlink=True), hard) and g.get(k, getclass=True) is cls

    if not has(f, "vars") or len(f) > limit or len(f["vars"]) > limit:
        return False
    own = f["vars"]
    if set(own) != {str(i) for i in range(len(own))} or not all(has(own, k, h5.h5py.Dataset) for k in own):
        return False
    for k in f:
        if k == "vars":
            continue
        if not has(f, k):
            return False
        g = f[k]
        if not has(g, "vars") and not (0 < len(g) <= limit and all(has(g, c) and has(g[c], "vars") for c in g)):
            return False
    return True
