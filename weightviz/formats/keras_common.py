"""Shared Keras helpers: config parsing (JSON only, never deserialised), Lambda
detection, the layer tree of a config and what it says about weight names. Safe HDF5
access lives in :mod:`weightviz.formats.keras_safe_h5`.

The architecture contract every Keras reader returns in ``Checkpoint.architecture``::

    {"class_name": "Sequential" | "Functional" | "Model" | ..., "config": {...} or [...],
     "keras_version": str | None, "backend": str | None}
"""
from __future__ import annotations

import json
import re

import numpy as np

from ..errors import CorruptFileError, message

from .limits import JSON_MAX_BYTES as MAX_JSON_BYTES  # noqa: E402
from .limits import CONFIG_MAX_NODES as MAX_NODES  # noqa: E402 - dicts/lists walked in one config
MODEL_CLASSES = {"Sequential", "Functional", "Model"}


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
    if cls == "EinsumDense":
        return ["kernel"] + (["bias"] if cfg.get("bias_axes") else [])
    return None


MHA_PARTS = (("query_dense", "query"), ("key_dense", "key"), ("value_dense", "value"),
             ("output_dense", "attention_output"))


def mha_part(entry: dict | None) -> dict:
    """A stand-in config for a MultiHeadAttention projection (an EinsumDense)."""
    use_bias = ((entry or {}).get("config") or {}).get("use_bias", True)
    return {"class_name": "EinsumDense", "config": {"bias_axes": "x" if use_bias else None}}
