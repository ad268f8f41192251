"""Safe HDF5 access for the Keras readers: hard links only (no external / soft links),
no external raw storage, virtual datasets or filter plugins, bounded walks, lazy
memory-mappable dataset entries, and the helpers for Keras 3 weights-store groups."""
from __future__ import annotations

import numpy as np

from .. import dtypes
from ..checkpoint import DataLocation, TensorEntry
from ..errors import CorruptFileError, UnsafeCheckpointError, message
from .keras_common import text

from .limits import HDF5_MAX_DEPTH as MAX_DEPTH, HDF5_MAX_OBJECTS as MAX_NODES  # noqa: E402
from .limits import KERAS_MAX_NAMES as MAX_NAMES  # noqa: E402
# HDF5 filters built into libhdf5/h5py; anything else would load a native plugin.
SAFE_FILTERS = {1, 2, 3, 4, 5, 6, 32000}


def corrupt(what: str, path, err: BaseException | None = None, **kw) -> CorruptFileError:
    got = kw.pop("got", None) or (f"{type(err).__name__}: {str(err)[:200]}" if err else None)
    kw.setdefault("fix", "check that the file is complete (re-download or re-save it)")
    return CorruptFileError(message(f"{what} in {path}", got=got, **kw))


def attr(obj, name: str, *, path, default=None, also=()):
    """``obj.attrs[name]`` (``default`` when absent), read only after its stored type is checked:
    Keras writes strings and numbers, and libhdf5 crashes converting a damaged variable-length
    type (a one-bit change found by fuzzing turns a string list into a 'sequence').
    Variable-length strings are read by ``_h5_sandbox`` in a child process (``also``: more
    objects whose ``name`` attribute is read in the same round trip, see ``prefetch``)."""
    from h5py import h5t
    tid = _stored_type(obj, name, path)
    if tid is None:
        return default
    if not isinstance(tid, (h5t.TypeStringID, h5t.TypeIntegerID, h5t.TypeFloatID, h5t.TypeEnumID)):
        raise corrupt(f"the HDF5 attribute {name!r} has a {type(tid).__name__[4:-2] or 'strange'} type",
                      path, expected="strings or numbers, as Keras writes them",
                      fix="the file is damaged or was crafted; re-save the model")
    if _is_vlen_str(tid):
        # kept in the global heap, where a damaged size makes libhdf5 loop forever: read in
        # a child process that can be stopped (numbers and fixed-length strings never go there)
        from . import _h5_sandbox
        return _h5_sandbox.read_attr(obj, name, path=path, also=also)
    try:
        return obj.attrs[name]
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the HDF5 attribute {name!r}", path, e) from None


def names_attr(group, name, path) -> list[str]:
    """A ``layer_names`` / ``weight_names`` list (or its ``name0``, ``name1``... chunks) as text."""
    attrs = group.attrs
    if name in attrs:
        vals = attr(group, name, path=path)
    else:
        vals, i = [], 0
        while f"{name}{i}" in attrs and i < 10_000:
            vals.extend(list(attr(group, f"{name}{i}", path=path)))
            i += 1
    vals = vals.tolist() if hasattr(vals, "tolist") else vals
    out = [text(v) for v in (vals if isinstance(vals, (list, tuple)) else [vals])]
    if len(out) > MAX_NAMES:
        raise corrupt(f"the {name} attribute lists {len(out)} entries", path, expected=f"at most {MAX_NAMES}")
    return out


def prefetch(objs, name: str, *, path) -> None:
    """Read attribute ``name`` of many objects ahead, 1,000 per round trip to the string
    worker (a Keras file has one per layer); ``attr`` then finds them read."""
    def vlen(o):
        try:
            return _is_vlen_str(_stored_type(o, name, path))
        except CorruptFileError:       # attr() reports it when the reader asks for it
            return False
    objs = [o for o in objs if vlen(o)]   # the others are read in-process
    for i in range(0, len(objs), 1000):
        attr(objs[i], name, path=path, also=objs[i + 1:i + 1000])


def _stored_type(obj, name: str, path):
    """The stored datatype of attribute ``name`` (None when absent), data unread."""
    from h5py import h5a
    try:
        if name not in obj.attrs:
            return None
        return h5a.open(obj.id, name.encode("utf-8")).get_type()
    except Exception as e:  # noqa: BLE001 - any h5py failure is a corrupt file
        raise corrupt(f"cannot read the HDF5 attribute {name!r}", path, e) from None


def _is_vlen_str(tid) -> bool:
    from h5py import h5t
    return isinstance(tid, h5t.TypeStringID) and tid.is_variable_str()


def safe_get(group, relpath: str, *, path, cache: dict | None = None):
    """``group[relpath]`` following only hard links, component by component; refuses
    external, soft and user-defined links (CVE-2026-1669 class). ``cache`` keeps the
    groups already checked along the way (one per reader call)."""
    import h5py
    from h5py import h5l
    obj = group
    comps = [c for c in relpath.split("/") if c]
    base = node_key(group) if cache is not None else None   # an address: ids get reused
    for i, comp in enumerate(comps):
        ckey = (base, "/".join(comps[:i + 1]))
        if cache is not None and ckey in cache:
            obj = cache[ckey]
            continue
        key = comp.encode("utf-8")
        try:
            info = obj.id.links.get_info(key) if obj.id.links.exists(key) else None
        except Exception as e:  # noqa: BLE001 - any h5py failure is a corrupt file
            raise corrupt(f"cannot read the HDF5 entry {relpath!r}", path, e) from None
        if info is None:
            raise corrupt(f"the HDF5 entry {relpath!r} listed by the file is missing", path,
                          expected="every name in layer_names / weight_names to exist")
        if info.type == h5l.TYPE_EXTERNAL:
            link = obj.get(comp, getlink=True)
            raise UnsafeCheckpointError(message(
                f"the HDF5 entry {relpath!r} in {path} is an external link to "
                f"{link.filename!r}:{link.path!r}",
                expected="weights stored inside the file",
                fix="weightviz never follows links out of a file; re-save the model"), needs=["h5:external-link"])
        if info.type != h5l.TYPE_HARD:
            raise UnsafeCheckpointError(message(
                f"the HDF5 entry {relpath!r} in {path} is a soft or user-defined link",
                expected="plain groups and datasets (Keras never writes links)",
                fix="re-save the model"), needs=["h5:soft-link"])
        try:
            obj = obj[comp]
        except Exception as e:  # noqa: BLE001
            raise corrupt(f"cannot open the HDF5 entry {relpath!r}", path, e) from None
        if cache is not None and i < len(comps) - 1:
            cache[ckey] = obj
    if not isinstance(obj, (h5py.Group, h5py.Dataset)):
        raise corrupt(f"the HDF5 entry {relpath!r} is neither a group nor a dataset", path)
    return obj


def check_dataset(ds, where: str, *, path):
    """Refuse external raw storage, virtual datasets and non-builtin filters; first of all
    variable-length / reference types, whose fill value libhdf5 reads from the global heap
    (where a damaged size makes it loop forever) as soon as the creation list is asked for."""
    try:
        dt = ds.dtype
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the type of dataset {where!r}", path, e) from None
    if dt.hasobject:
        raise corrupt(f"dataset {where!r} holds {dt} values, not numbers", path,
                      expected="numeric weight arrays", fix="this is not a Keras weights dataset")
    try:
        external, virtual = ds.external, ds.is_virtual
        plist = ds.id.get_create_plist()
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


def dataset_dtype(ds, where: str, *, path) -> tuple[str, np.dtype]:
    """Canonical dtype name and the NumPy dtype of the stored bits."""
    dt = ds.dtype
    if dt.kind == "V" and dt.itemsize == 2 and text(attr(ds, "dtype", path=path, default="")) == "bfloat16":
        return "bfloat16", np.dtype("<u2")
    name = dtypes.from_numpy(dt)
    if name not in dtypes.ITEMSIZE_BITS or dt.fields is not None:
        raise corrupt(f"dataset {where!r} holds {dt} values, not numbers", path,
                      expected="numeric weight arrays", fix="this is not a Keras weights dataset")
    return name, dt


def dataset_entry(name: str, ds, where: str, *, path, opener, file_size=None,
                  mmap_path=None, base_offset=0) -> TensorEntry:
    """A lazy TensorEntry for one HDF5 dataset; memory-mappable when stored contiguous
    and unfiltered inside a plain file. Reads no data."""
    check_dataset(ds, where, path=path)
    dtype, raw_dt = dataset_dtype(ds, where, path=path)
    try:
        shape, chunks = ds.shape, ds.chunks
        offset = ds.id.get_offset() if chunks is None else None
    except Exception as e:  # noqa: BLE001
        raise corrupt(f"cannot read the header of dataset {where!r}", path, e) from None
    if shape is None:
        shape = ()
    nbytes = int(np.prod(shape, dtype=np.float64)) * raw_dt.itemsize
    if offset is not None and file_size is not None and offset + nbytes > file_size:
        raise corrupt(f"dataset {where!r} extends past the end of the file", path,
                      expected=f"its {nbytes} bytes within the file's {file_size} bytes",
                      fix="the file is truncated: re-download or re-save it")
    location = None
    if mmap_path is not None and offset is not None and nbytes > 0:
        location = DataLocation(mmap_path, base_offset + offset, raw_dt, "C")

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
    import h5py
    return h5py.h5o.get_info(obj.id).addr


# --------------------------------------------------------------------------- Keras 3 store groups

def children(g, path):
    """Sub-groups of an HDF5 group (hard links only), excluding ``vars``."""
    import h5py
    out = []
    for k in g:
        link = g.get(k, getlink=True)
        if not isinstance(link, h5py.HardLink):
            safe_get(g, k, path=path)  # raises the house error
        if k != "vars" and isinstance(g.get(k), h5py.Group):
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
    import h5py
    keys = [node_key(g)]
    v = g.get("vars", getlink=True)
    if isinstance(v, h5py.HardLink):
        keys.append(node_key(g["vars"]))
        first = g["vars"].get("0", getlink=True)
        if isinstance(first, h5py.HardLink):
            keys.append(node_key(g["vars"]["0"]))
    return max(keys)


def vars_of(g, path):
    if g.get("vars", getlink=True) is None:
        return None, []
    vg = safe_get(g, "vars", path=path)
    keys = list(vg)
    keys.sort(key=lambda k: (0, int(k)) if k.isdigit() else (1, k))
    return vg, keys
