"""The pre-scan: refuse unsupported, unsafe or mask-dependent layers before building anything.

- ``Lambda`` (marshalled Python bytecode) is never decoded or run: UnsafeCheckpointError unless
  ``custom_layers`` supplies a replacement; the same for TFOpLambda-style op layers, which
  have no converter (UnsupportedLayerError).
- A layer class with no converter, an unknown activation, or a call option that would change
  the result (e.g. ``return_attention_scores``) raises UnsupportedLayerError naming the layer,
  its class and its position, listing every such layer at once.
- Masks: reproduced for RNNs and GlobalAveragePooling1D; refused where they would reach a
  layer whose masked behaviour is not reproduced (see masks.py).
"""
from __future__ import annotations

from ..errors import UnsafeCheckpointError, UnsupportedLayerError, capped, message
from .activations import activation_name, known
from .config import LayerSpec, ModelSpec, _walk_refs
from .registry import CONVERTERS, Context

LAMBDA = {"Lambda"}
IGNORED_KWARGS = {"training"}


def _where(sp: LayerSpec, model: ModelSpec) -> str:
    owner = model.path.rstrip("/") or model.name
    pos = f"#{sp.index}" if sp.index >= 0 else "(implicit input)"
    return f"layer {sp.name!r} ({sp.class_name}) at position {pos} of model {owner!r}"


def _activation_values(cls: str, cfg: dict) -> list:
    vals = []
    if "activation" in cfg and cls != "Activation":
        vals.append(cfg.get("activation"))
    if cls == "Activation":
        vals.append(cfg.get("activation"))
    if "recurrent_activation" in cfg:
        vals.append(cfg.get("recurrent_activation"))
    return vals


def _check_layer(cls: str, cfg: dict, ctx: Context, where: str, problems: list, unsafe: list,
                 missing: dict | None = None):
    if cls in LAMBDA:
        unsafe.append(where)
        return
    conv = CONVERTERS.get(cls)
    if conv is None:
        problems.append(f"{where} has no torch converter")
        if missing is not None:
            missing[cls] = missing.get(cls, 0) + 1
        return
    if cls == "TFOpLambda":
        from .layers.tfops import known as tf_known
        if not tf_known(cls, cfg):
            problems.append(f"{where} calls tf.{cfg.get('function')}, which has no torch "
                            "equivalent here")
    for v in _activation_values(cls, cfg):
        if v is not None and not known(v, ctx.major):
            problems.append(f"{where} uses activation {activation_name(v)!r}, which has no "
                            "torch equivalent here")
    if cls in ("Bidirectional", "TimeDistributed"):
        for key in ("layer", "backward_layer"):
            entry = cfg.get(key)
            if isinstance(entry, dict):
                _check_layer(entry.get("class_name"), entry.get("config") or {}, ctx,
                             f"{where} > wrapped {entry.get('class_name')}", problems, unsafe,
                             missing)


def _check_node_kwargs(sp: LayerSpec, where: str, problems: list):
    conv = CONVERTERS.get(sp.class_name)
    allowed = conv.tensor_kwargs + conv.const_kwargs if conv else ()
    for node in sp.nodes:
        for key, value in (node.kwargs or {}).items():
            has_tensor = any(True for _ in _walk_refs(value))
            if has_tensor and key not in allowed and "*" not in allowed:
                problems.append(f"{where} is called with a tensor for {key!r}, which is not "
                                "supported")
            elif (not has_tensor and value not in (None, False, [], {}) and key not in IGNORED_KWARGS
                  and not (conv and (key in conv.const_kwargs or "*" in conv.const_kwargs))):
                problems.append(f"{where} is called with {key}={value!r}, which is not supported")


def scan(model: ModelSpec, ctx: Context) -> bool:
    """Raise for anything that cannot be rebuilt faithfully; True if the model makes masks."""
    problems: list[str] = []
    unsafe: list[str] = []
    missing: dict[str, int] = {}                   # class without a converter -> layer count
    _scan(model, ctx, problems, unsafe, missing)
    if unsafe:
        raise UnsafeCheckpointError(message(
            f"the architecture contains Lambda layer(s): {capped(unsafe)}; their Python bytecode "
            "is never decoded or run",
            expected="layers weightviz can rebuild from their config",
            fix="pass a replacement torch module for each, e.g. "
                "build(..., custom_layers={'layer_name': module}), or one factory for all of "
                "them: custom_layers={'Lambda': lambda config: module}",
            got=f"{len(unsafe)} Lambda layer(s)"), needs=tuple(unsafe))
    if problems:
        raise UnsupportedLayerError(message(
            f"cannot rebuild this Keras model in torch: {capped(problems, 5)}",
            expected="layers with a torch converter (see weightviz.keras.supported_layers())",
            fix=custom_fix(missing),
            got=f"{len(problems)} problem(s)"
            + (" (" + ", ".join(f"{c} x{n}" for c, n in missing.items()) + " without a converter)"
               if missing else "")))
    from .masks import check
    return check(model, ctx)


def custom_fix(missing: dict) -> str:
    """How custom_layers replaces layers: by name, or by class name with a factory."""
    cls = next(iter(missing), None) or "MyLayer"
    return ("supply replacements with custom_layers: a layer name (or 'outer/inner' path) maps "
            "to a torch module, e.g. custom_layers={'layer_name': module}; a Keras class name "
            "maps to a factory called with each such layer's config dict, one entry for every "
            f"layer of that class, e.g. custom_layers={{{cls!r}: lambda config: MyModule(config)}}"
            "; a replacement gets the layer's Keras weights through its "
            "load_keras_weights(arrays) method (NumPy arrays in Keras layer.weights order), "
            "when it has one")


def _scan(model: ModelSpec, ctx: Context, problems: list, unsafe: list,
          missing: dict | None = None) -> None:
    for sp in model.layers:
        if ctx.custom_key(sp) is not None:
            continue
        where = _where(sp, model)
        if sp.inner is not None:
            _scan(sp.inner, ctx, problems, unsafe, missing)
            continue
        if sp.class_name == "InputLayer":
            continue
        _check_layer(sp.class_name, sp.config, ctx, where, problems, unsafe, missing)
        _check_node_kwargs(sp, where, problems)
