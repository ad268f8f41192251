"""Shared Keras helpers: config parsing (JSON only, never deserialised), Lambda
detection, the layer tree of a config, and safe HDF5 access for the Keras readers.

The architecture contract every Keras reader returns in ``Checkpoint.architecture``::

    {"class_name": "Sequential" | "Functional" | "Model" | ..., "config": {...} or [...],
     "keras_version": str | None, "backend": str | None}
"""
from __future__ import annotations

import json
import re

import numpy as np

from .. import dtypes
from ..checkpoint import DataLocation, TensorEntry
from ..errors import CorruptFileError, UnsafeCheckpointError, message

MAX_JSON_BYTES = 64 * 2**20
MAX_NODES = 1_000_000          # dicts/lists walked in one config, HDF5 objects in one file
MAX_DEPTH = 64                 # HDF5 group nesting the readers follow
MODEL_CLASSES = {"Sequential", "Functional", "Model"}
# HDF5 filters built into libhdf5/h5py; anything else would load a native plugin.
SAFE_FILTERS = {1, 2, 3, 4, 5, 6, 32000}


def text(x) -> str:
    """An HDF5 attribute string that may come back as bytes / numpy.bytes_."""
    if isinstance(x, (bytes, np.bytes_)):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


# --------------------------------------------------------------------------- config

def load_json(data, *, what: str, path) -> object:
    """``json.loads`` with the house errors (size cap, depth, bad UTF-8 / syntax)."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_JSON_BYTES:
            raise CorruptFileError(message(f"{what} in {path} is too large to be a Keras config",
                                           expected=f"at most {MAX_JSON_BYTES} bytes",
                                           got=f"{len(data)} bytes"))
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise CorruptFileError(message(f"{what} in {path} is not UTF-8 text",
                                           expected="a JSON Keras config",
                                           fix="check that the file is not truncated or binary",
                                           got=str(e))) from None
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise CorruptFileError(message(f"{what} in {path} is not valid JSON",
                                       expected="a Keras model config written by to_json() or model.save()",
                                       fix="check that the file is complete (not truncated)",
                                       got=f"{type(e).__name__}: {str(e)[:200]}")) from None


def normalise(obj, *, path, what="Keras config", keras_version=None, backend=None) -> dict:
    """The top-level config as ``{'class_name', 'config', 'keras_version', 'backend'}``."""
    if not (isinstance(obj, dict) and isinstance(obj.get("class_name"), str)
            and isinstance(obj.get("config"), (dict, list))):
        got = (f"top-level keys {sorted(obj)[:8]}" if isinstance(obj, dict)
               else f"a JSON {type(obj).__name__}")
        raise CorruptFileError(message(f"{what} in {path} is not a Keras model config",
                                       expected='a JSON object with "class_name" and "config"',
                                       fix="pass the file written by model.to_json() or model.save()",
                                       got=got))
    kv = obj.get("keras_version") or keras_version
    be = obj.get("backend") or backend
    return {"class_name": obj["class_name"], "config": obj["config"],
            "keras_version": text(kv) if kv else None, "backend": text(be) if be else None}


def keras_major(raw: dict | None, keras_version: str | None, *, legacy_h5=False,
                arch: dict | None = None) -> int | None:
    """Keras major version: from the version string, else from the config's shape
    (Keras 3 alone writes a top-level ``module`` without ``keras_version``, DTypePolicy
    dtypes, InputLayer ``batch_shape`` and dict-form ``inbound_nodes``)."""
    if keras_version:
        m = re.match(r"\s*(\d+)", keras_version)
        if m:
            return int(m.group(1))
    if isinstance(raw, dict) and ("module" in raw or "registered_name" in raw):
        return 3
    for e in layer_entries(arch) if arch else []:
        cfg, nodes = e.get("config"), e.get("inbound_nodes")
        if isinstance(cfg, dict) and ("batch_shape" in cfg or (
                isinstance(cfg.get("dtype"), dict) and "DTypePolicy" in str(cfg["dtype"].get("class_name")))):
            return 3
        if isinstance(nodes, list) and nodes and isinstance(nodes[0], dict):
            return 3
    return 1 if legacy_h5 else None


def find_lambdas(arch) -> list[str]:
    """Names of the layers whose config holds Python bytecode (a Lambda layer, a
    ``__lambda__`` object, a ``function`` list with ``function_type: lambda``), found at
    any depth. The bytecode is never decoded."""
    found: list[str] = []
    stack = [(arch, "<model>")]
    seen = 0
    while stack:
        node, owner = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise CorruptFileError(message("Keras config is too large to inspect",
                                           expected=f"at most {MAX_NODES} JSON objects"))
        if isinstance(node, dict):
            cfg = node.get("config")
            if isinstance(cfg, dict) and isinstance(cfg.get("name"), str) and "class_name" in node:
                owner = cfg["name"]
            cls = node.get("class_name")
            if (cls in ("Lambda", "__lambda__") or node.get("function_type") == "lambda"
                    or node.get("output_shape_type") == "lambda"
                    or isinstance(node.get("function"), (list, dict))):
                if owner not in found:
                    found.append(owner)
            stack.extend((v, owner) for v in reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend((v, owner) for v in reversed(node))
    return found


def layer_entries(arch_or_entry) -> list[dict]:
    """The direct sub-layer entries of a model config (Sequential list or dict form,
    Functional / Model); [] for anything else."""
    cfg = arch_or_entry.get("config") if isinstance(arch_or_entry, dict) else None
    if isinstance(cfg, list):
        layers = cfg                                  # Keras <= 2.2.2 Sequential
    elif isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
        layers = cfg["layers"]
    else:
        return []
    return [e for e in layers if isinstance(e, dict) and isinstance(e.get("class_name"), str)]


def entry_name(entry: dict) -> str | None:
    cfg = entry.get("config")
    name = entry.get("name") if isinstance(entry.get("name"), str) else None
    if name is None and isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
        name = cfg["name"]
    return name


def is_model(entry: dict | None) -> bool:
    return bool(entry) and (entry.get("class_name") in MODEL_CLASSES or bool(layer_entries(entry)))


def wrapped(entry: dict | None, key: str = "layer") -> dict | None:
    """The inner layer entry of a wrapper (``layer``, ``backward_layer``) or RNN (``cell``)."""
    cfg = entry.get("config") if isinstance(entry, dict) else None
    inner = cfg.get(key) if isinstance(cfg, dict) else None
    return inner if isinstance(inner, dict) and isinstance(inner.get("class_name"), str) else None


def snake(name: str) -> str:
    """Keras's ``to_snake_case`` (keras/src/utils/naming.py): the class-counter group names."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def counter_names(entries: list[dict]) -> list[str]:
    """The group name Keras 3 gives each entry of a layer list: snake(class) + '_k'."""
    used: dict[str, int] = {}
    out = []
    for e in entries:
        base = snake(e.get("class_name", ""))
        if base in used:
            used[base] += 1
            out.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            out.append(base)
    return out


_CELLS = {"LSTM": "lstm_cell", "GRU": "gru_cell", "SimpleRNN": "simple_rnn_cell"}


def cell_name(entry: dict | None) -> str | None:
    """The real name of an RNN layer's cell (Keras 3 names them 'lstm_cell', ...)."""
    if not entry:
        return None
    inner = wrapped(entry, "cell")
    if inner:
        return entry_name(inner) or snake(inner["class_name"])
    return _CELLS.get(entry.get("class_name"))


def own_weight_names(entry: dict | None, major: int | None = 3) -> list[str] | None:
    """The names of a layer's own variables in creation order (``vars/0``, ``vars/1``, ...)
    for the classes whose variables the config determines reliably; None otherwise."""
    if not entry:
        return None
    cls, cfg = entry.get("class_name"), entry.get("config")
    if not isinstance(cfg, dict):
        return None
    bias = ["bias"] if cfg.get("use_bias", True) else []
    if cls in ("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
               "Conv3DTranspose", "Convolution1D", "Convolution2D", "Convolution3D"):
        if cfg.get("quantization_config") or cfg.get("lora_rank"):
            return None
        return ["kernel"] + bias
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return ["kernel" if (major or 3) >= 3 else "depthwise_kernel"] + bias
    if cls in ("SeparableConv1D", "SeparableConv2D"):
        return ["depthwise_kernel", "pointwise_kernel"] + bias
    if cls == "BatchNormalization":
        return ((["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
                + ["moving_mean", "moving_variance"])
    if cls in ("LayerNormalization", "GroupNormalization"):
        return (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else [])
    if cls == "Embedding":
        return None if cfg.get("quantization_config") or cfg.get("lora_rank") else ["embeddings"]
    if cls in ("LSTMCell", "GRUCell", "SimpleRNNCell", "LSTM", "GRU", "SimpleRNN"):
        return ["kernel", "recurrent_kernel"] + bias
    if cls == "PReLU":
        return ["alpha"]
    return None


# --------------------------------------------------------------------------- HDF5 safety

def corrupt(what: str, path, err: BaseException | None = None, **kw) -> CorruptFileError:
    got = kw.pop("got", None) or (f"{type(err).__name__}: {str(err)[:200]}" if err else None)
    kw.setdefault("fix", "check that the file is complete (re-download or re-save it)")
    return CorruptFileError(message(f"{what} in {path}", got=got, **kw))


def safe_get(group, relpath: str, *, path):
    """``group[relpath]`` following only hard links, component by component; refuses
    external, soft and user-defined links (CVE-2026-1669 class)."""
    import h5py
    from h5py import h5l
    obj = group
    for comp in [c for c in relpath.split("/") if c]:
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
    if not isinstance(obj, (h5py.Group, h5py.Dataset)):
        raise corrupt(f"the HDF5 entry {relpath!r} is neither a group nor a dataset", path)
    return obj


def check_dataset(ds, where: str, *, path):
    """Refuse external raw storage, virtual datasets and non-builtin filters."""
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
    if dt.kind == "V" and dt.itemsize == 2 and text(ds.attrs.get("dtype", "")) == "bfloat16":
        return "bfloat16", np.dtype("<u2")
    name = dtypes.from_numpy(dt)
    if name not in dtypes.ITEMSIZE_BITS or dt.fields is not None:
        raise corrupt(f"dataset {where!r} holds {dt} values, not numbers", path,
                      expected="numeric weight arrays", fix="this is not a Keras weights dataset")
    return name, dt


def dataset_entry(name: str, ds, where: str, *, path, opener, file_size=None,
                  mmap_path=None, base_offset=0, limit=None) -> TensorEntry:
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
    end = (limit if limit is not None else file_size)
    if offset is not None and end is not None and offset + nbytes > end:
        raise corrupt(f"dataset {where!r} extends past the end of the file", path,
                      expected=f"its {nbytes} bytes within the file's {end} bytes",
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
        name = safe_get(g, "vars", path=path).attrs.get("name")
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
