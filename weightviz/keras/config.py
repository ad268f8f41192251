"""Normalise a Keras architecture (plain JSON data, never deserialised) into a layer graph.

Accepts every dialect in ``shared/formats.md`` section 3: Keras 1 / 2.0-2.2 Sequential as a
bare list, Keras >= 2.2.3 / tf.keras / Keras 3 Sequential as a dict, Functional ("Model" /
"Functional") with ``inbound_nodes`` in the Keras 1 (3-element), Keras 2 (4-element list) and
Keras 3 (``{"args", "kwargs"}``) forms, nested models, shared layers, and the implicit first
node of nested models that shifts saved node indices.

The result is a :class:`ModelSpec`: layers in config order, each with its calls (``Node``),
whose tensor arguments are :data:`Ref` triples ``(layer, own_node_index, tensor_index)``
counted over the nodes listed in *this* model's config (0-based).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptFileError, message

MODEL_CLASSES = {"Sequential", "Functional", "Model"}


@dataclass(frozen=True)
class Ref:
    layer: str
    node: int
    tensor: int


@dataclass
class Node:
    args: list                 # positional arguments; Ref leaves, nested lists for multi-input
    kwargs: dict               # keyword arguments; Ref leaves for tensors, plain data otherwise


@dataclass
class InputSpec:
    name: str
    shape: tuple | None        # batch shape, None for unknown dims; None if unknown altogether
    dtype: str = "float32"


@dataclass
class LayerSpec:
    name: str
    class_name: str
    config: dict
    nodes: list[Node]
    index: int                 # position in the model's config 'layers' list
    path: str                  # e.g. "outer/inner/dense" (for messages and custom_layers)
    trainable: bool = True
    inner: "ModelSpec | None" = None   # nested Sequential / Functional


@dataclass
class ModelSpec:
    name: str
    class_name: str
    layers: list[LayerSpec]
    inputs: list[Ref]
    input_specs: list[InputSpec]
    outputs: list[Ref]
    output_kind: str = "single"        # 'single' | 'list' | 'dict'
    output_keys: list[str] = field(default_factory=list)
    keras_major: int = 3
    path: str = ""

    def layer(self, name: str) -> LayerSpec:
        for sp in self.layers:
            if sp.name == name:
                return sp
        raise KeyError(name)


def _bad(what: str, got: Any = None) -> CorruptFileError:
    return CorruptFileError(message(f"Keras architecture is malformed: {what}",
                                    expected="a Keras model config (to_json / model_config)",
                                    fix="check that the file was written by Keras",
                                    got=None if got is None else repr(got)[:200]))


def keras_major(architecture: dict) -> int:
    """The Keras major version that wrote ``architecture`` (1, 2 or 3)."""
    v = architecture.get("keras_version")
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1].isdigit():
        return int(v.split(".")[0])
    if "module" in architecture or "registered_name" in architecture:
        return 3
    text = repr(architecture.get("config"))
    if "'batch_shape'" in text or "__keras_tensor__" in text or "DTypePolicy" in text:
        return 3
    return 2


def parse(architecture: dict, major: int | None = None) -> ModelSpec:
    if not isinstance(architecture, dict) or "class_name" not in architecture:
        raise _bad("no top-level 'class_name'", architecture)
    major = keras_major(architecture) if major is None else major
    return _parse_model(architecture["class_name"], architecture.get("config"), major, "")


def _parse_model(class_name: str, config: Any, major: int, prefix: str) -> ModelSpec:
    if class_name == "Sequential":
        return _parse_sequential(config, major, prefix)
    if class_name in ("Functional", "Model") and isinstance(config, dict) and "layers" in config:
        return _parse_functional(class_name, config, major, prefix)
    raise _bad(f"model class {class_name!r} is not Sequential or Functional "
               "(subclassed models have no config to rebuild from)", class_name)


def _layer_name(entry: dict) -> str:
    name = entry.get("name") or (entry.get("config") or {}).get("name")
    if not isinstance(name, str):
        raise _bad("a layer has no name", entry)
    return name


def _make_layer(entry: dict, index: int, nodes: list[Node], major: int, prefix: str) -> LayerSpec:
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise _bad("a layer entry has no 'class_name'", entry)
    name = _layer_name(entry)
    cfg = entry.get("config") or {}
    sp = LayerSpec(name, entry["class_name"], cfg, nodes, index, prefix + name,
                   trainable=bool(cfg.get("trainable", True)) if isinstance(cfg, dict) else True)
    if sp.class_name in MODEL_CLASSES:
        sp.inner = _parse_model(sp.class_name, cfg, major, prefix + name + "/")
    return sp


def _shape_of(cfg: dict) -> tuple | None:
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return tuple(cfg[key])
    if cfg.get("input_shape") is not None:
        return (None,) + tuple(cfg["input_shape"])
    if cfg.get("input_dim") is not None:          # Keras 1 Dense(input_dim=...)
        return (None, cfg["input_dim"])
    return None


def _dtype_of(cfg: dict) -> str:
    d = cfg.get("dtype", "float32")
    if isinstance(d, dict):
        d = (d.get("config") or {}).get("name", "float32")
    return d if isinstance(d, str) else "float32"


def _parse_sequential(config: Any, major: int, prefix: str) -> ModelSpec:
    if isinstance(config, list):                  # Keras <= 2.2.2: a bare list of layers
        name, entries, build_shape = "sequential", config, None
    elif isinstance(config, dict) and isinstance(config.get("layers"), list):
        name, entries = config.get("name", "sequential"), config["layers"]
        build_shape = config.get("build_input_shape")
    else:
        raise _bad("Sequential config has no 'layers' list", config)
    if not entries:
        raise _bad("Sequential model has no layers", config)
    layers: list[LayerSpec] = []
    first = entries[0]
    if first.get("class_name") == "InputLayer":
        in_layer = _make_layer(first, 0, [], major, prefix)
        entries = entries[1:]
    else:
        shape = _shape_of(first.get("config") or {})
        if shape is None and build_shape is not None:
            shape = tuple(build_shape)
        cfg = {"name": f"{name}_input", "batch_shape": list(shape) if shape else None,
               "dtype": _dtype_of(first.get("config") or {})}
        in_layer = LayerSpec(cfg["name"], "InputLayer", cfg, [], -1, prefix + cfg["name"])
    layers.append(in_layer)
    prev = in_layer.name
    for i, entry in enumerate(entries):
        sp = _make_layer(entry, i + (1 if layers[0].index == 0 else 0),
                         [Node([Ref(prev, 0, 0)], {})], major, prefix)
        layers.append(sp)
        prev = sp.name
    inp = InputSpec(in_layer.name, _shape_of(in_layer.config), _dtype_of(in_layer.config))
    return ModelSpec(name, "Sequential", layers, [Ref(in_layer.name, 0, 0)], [inp],
                     [Ref(prev, 0, 0)], "single", [], major, prefix)


# ---------------------------------------------------------------- Functional
def _is_leaf(x: Any) -> bool:
    return (isinstance(x, (list, tuple)) and len(x) in (3, 4) and isinstance(x[0], str)
            and isinstance(x[1], int) and isinstance(x[2], int))


def _io_list(value: Any, major: int) -> tuple[list, str, list[str]]:
    """Model input/output structure -> (list of triples, kind, dict keys)."""
    if _is_leaf(value):
        return [list(value[:3])], "single", []
    if isinstance(value, dict):
        keys = list(value)
        return [list(value[k][:3]) for k in keys], "dict", keys
    if isinstance(value, list) and all(_is_leaf(v) for v in value):
        kind = "single" if (major < 3 and len(value) == 1) else "list"
        return [list(v[:3]) for v in value], kind, []
    raise _bad("model inputs/outputs are not [layer, node, tensor] triples", value)


def _ref(a: Any, b: Any, c: Any) -> Ref:
    if not (isinstance(a, str) and type(b) is int and type(c) is int and c >= 0):
        raise _bad("a tensor reference is not [layer name, node index, tensor index]", [a, b, c])
    return Ref(a, b, c)


def _convert_k3(x: Any) -> Any:
    """Keras 3 serialized call arguments -> the same structure with Ref leaves."""
    if isinstance(x, dict):
        if x.get("class_name") == "__keras_tensor__":
            h = (x.get("config") or {}).get("keras_history")
            if not _is_leaf(h):
                raise _bad("a __keras_tensor__ has no keras_history", x)
            return _ref(h[0], h[1], h[2])
        return {k: _convert_k3(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_convert_k3(v) for v in x]
    return x


def _convert_legacy_kwargs(x: Any, names: set[str]) -> Any:
    if _is_leaf(x) and len(x) == 3 and x[0] in names:
        return _ref(x[0], x[1], x[2])
    if isinstance(x, dict):
        return {k: _convert_legacy_kwargs(v, names) for k, v in x.items()}
    if isinstance(x, list):
        return [_convert_legacy_kwargs(v, names) for v in x]
    return x


def _parse_node(data: Any, names: set[str]) -> tuple[Node, bool]:
    """One entry of inbound_nodes -> (Node, is_legacy_list_form)."""
    if isinstance(data, dict) and "args" in data:
        return Node(_convert_k3(data.get("args") or []), _convert_k3(data.get("kwargs") or {})), False
    if isinstance(data, list) and data and all(isinstance(e, list) and len(e) in (3, 4)
                                               for e in data):
        # tf.keras writes a constant first argument as ["_CONSTANT_VALUE", -1, value, kwargs]
        refs = [e[2] if e[0] == "_CONSTANT_VALUE" else _ref(e[0], e[1], e[2]) for e in data]
        kwargs = data[0][3] if len(data[0]) == 4 and isinstance(data[0][3], dict) else {}
        return Node([refs[0] if len(refs) == 1 else refs],
                    _convert_legacy_kwargs(kwargs, names)), True
    if isinstance(data, list) and len(data) in (3, 4) and isinstance(data[0], str):
        return _parse_node([data], names)          # a single un-nested entry (op layers)
    raise _bad("an inbound node is neither the Keras 2 list form nor the Keras 3 dict form", data)


def _skips_first_node(sp: LayerSpec, major: int) -> bool:
    """Whether a nested model's saved node indices count a built-in first node."""
    if sp.inner is None:
        return False
    if sp.class_name in ("Functional", "Model"):
        return True
    if major < 3 and sp.class_name == "Sequential":
        layers = sp.config.get("layers") if isinstance(sp.config, dict) else sp.config
        return bool(layers) and layers[0].get("class_name") == "InputLayer"
    return False


def _walk_refs(x: Any):
    if isinstance(x, Ref):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _walk_refs(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _walk_refs(v)


def _map_refs(x: Any, fn) -> Any:
    if isinstance(x, Ref):
        return fn(x)
    if isinstance(x, dict):
        return {k: _map_refs(v, fn) for k, v in x.items()}
    if isinstance(x, list):
        return [_map_refs(v, fn) for v in x]
    return x


def _parse_functional(class_name: str, config: dict, major: int, prefix: str) -> ModelSpec:
    entries = config["layers"]
    names = {_layer_name(e) for e in entries}
    layers: list[LayerSpec] = []
    legacy: dict[str, bool] = {}
    for i, entry in enumerate(entries):
        nodes = []
        for data in entry.get("inbound_nodes") or []:
            node, is_legacy = _parse_node(data, names)
            nodes.append(node)
            legacy[_layer_name(entry)] = legacy.get(_layer_name(entry), False) or is_legacy
        layers.append(_make_layer(entry, i, nodes, major, prefix))
    by_name = {sp.name: sp for sp in layers}
    any_legacy = any(legacy.values())

    def n_nodes(sp: LayerSpec) -> int:
        return max(len(sp.nodes), 1)

    # Decide the node-index shift of every nested model, from the rules in formats.md §3.3,
    # corrected when a reference would fall outside the listed nodes.
    node_refs: dict[str, list[int]] = {}
    io_refs: dict[str, list[int]] = {}
    for sp in layers:
        for node in sp.nodes:
            for r in _walk_refs([node.args, node.kwargs]):
                node_refs.setdefault(r.layer, []).append(r.node)
    ins, _, _ = _io_list(config.get("input_layers"), major)
    outs, out_kind, out_keys = _io_list(config.get("output_layers"), major)
    for t in ins + outs:
        io_refs.setdefault(t[0], []).append(t[1])
    shift_nodes: dict[str, int] = {}
    shift_io: dict[str, int] = {}
    for sp in layers:
        rule = _skips_first_node(sp, major)
        n = n_nodes(sp)
        s_nodes = int(rule and any_legacy)
        s_io = int(rule)
        if any(i - s_nodes >= n for i in node_refs.get(sp.name, [])):
            s_nodes = 1
        if any(i - s_io >= n for i in io_refs.get(sp.name, [])):
            s_io = 1
        shift_nodes[sp.name], shift_io[sp.name] = s_nodes, s_io

    def fix(r: Ref, shifts: dict[str, int]) -> Ref:
        if r.layer not in by_name:
            raise _bad(f"a node refers to unknown layer {r.layer!r}", r)
        new = Ref(r.layer, r.node - shifts.get(r.layer, 0), r.tensor)
        if new.node < 0 or new.node >= n_nodes(by_name[r.layer]):
            raise _bad(f"a node refers to call #{r.node} of layer {r.layer!r}, which has "
                       f"{len(by_name[r.layer].nodes)} call(s)", r)
        return new

    for sp in layers:
        sp.nodes = [Node(_map_refs(nd.args, lambda r: fix(r, shift_nodes)),
                         _map_refs(nd.kwargs, lambda r: fix(r, shift_nodes))) for nd in sp.nodes]
    inputs = [fix(_ref(*t), shift_io) for t in ins]
    outputs = [fix(_ref(*t), shift_io) for t in outs]
    specs = []
    for r in inputs:
        sp = by_name[r.layer]
        if sp.class_name != "InputLayer":
            raise _bad(f"model input {r.layer!r} is a {sp.class_name}, not an InputLayer", r)
        specs.append(InputSpec(sp.name, _shape_of(sp.config), _dtype_of(sp.config)))
    return ModelSpec(config.get("name", "model"), class_name, layers, inputs, specs, outputs,
                     out_kind, out_keys, major, prefix)


def iter_layers(model: ModelSpec):
    """Every LayerSpec, depth-first, nested models' layers included (after their model)."""
    for sp in model.layers:
        yield sp
        if sp.inner is not None:
            yield from iter_layers(sp.inner)


def call_order(model: ModelSpec) -> list[tuple[Any, int]]:
    """(LayerSpec, node_index) for every call, each after the calls it depends on."""
    ready = {r for r in model.inputs}
    pending = [(sp, k) for sp in model.layers if sp.class_name != "InputLayer"
               for k in range(len(sp.nodes))]
    order = []
    while pending:
        rest = []
        for sp, k in pending:
            node = sp.nodes[k]
            if all(Ref(r.layer, r.node, 0) in ready or r in ready
                   for r in _walk_refs([node.args, node.kwargs])):
                order.append((sp, k))
                ready.add(Ref(sp.name, k, 0))
            else:
                rest.append((sp, k))
        if len(rest) == len(pending):
            missing = sorted({r.layer for sp, k in rest for r in
                              _walk_refs([sp.nodes[k].args, sp.nodes[k].kwargs])})
            raise CorruptFileError(message(
                f"Keras model {model.name!r}: the calls of layers "
                f"{[sp.name for sp, _ in rest][:5]} depend on tensors that are never produced",
                expected="a connected layer graph from the model inputs",
                got=f"inputs referenced: {missing[:10]}"))
        pending = rest
    return order
