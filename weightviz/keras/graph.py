"""The torch module that runs a Keras layer graph, and the builder that traces it.

Building walks the calls (layer, node) in dependency order with example tensors: each
layer's module is created on its first call from the example input's shape and the layer's
weights (checked against the expected shapes), then run to produce the next examples. The
result, :class:`KerasModel`, keeps every Keras layer as a submodule under its (sanitised)
name, takes the model inputs as positional arguments in the model's input order (NumPy arrays
are accepted) and returns one tensor, or a tuple / dict for several outputs.
"""
from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import CorruptFileError, MismatchError, WeightvizError, message
from .config import ModelSpec, Node, Ref, _walk_refs, call_order
from .registry import CONVERTERS, Context

_RESERVED = set(dir(nn.Module)) | {"forward", "summary", "keras_name", "keras_version", "training"}


def sanitize(name: str, taken: set[str]) -> str:
    attr = re.sub(r"\W", "_", name) or "layer"
    if attr[0].isdigit():
        attr = "_" + attr
    while attr in _RESERVED or attr in taken or attr.startswith("_"):
        attr = attr + "_" if not attr.startswith("_") else "layer" + attr
    taken.add(attr)
    return attr




def _resolve(x: Any, env: dict) -> Any:
    if isinstance(x, Ref):
        return env[x]
    if isinstance(x, dict):
        return {k: _resolve(v, env) for k, v in x.items()}
    if isinstance(x, list):
        return [_resolve(v, env) for v in x]
    return x


def call_kwargs(sp, node: Node, ctx: Context) -> dict:
    """Keyword arguments passed to the module: those carrying tensors, plus the plain-data
    options its converter accepts (the rest were vetted by the pre-scan)."""
    conv = None
    if sp.inner is None and ctx.custom_key(sp) is None:
        conv = CONVERTERS.get(sp.class_name)
    consts = conv.const_kwargs if conv else ()
    return {k: v for k, v in node.kwargs.items()
            if any(True for _ in _walk_refs(v)) or ((k in consts or "*" in consts) and v is not None)}


def _tensors(x: Any) -> list:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


def _store(env: dict, name: str, k: int, out: Any) -> None:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for i, o in enumerate(outs):
        env[Ref(name, k, i)] = o


class KerasModel(nn.Module):
    """A Keras Sequential/Functional model rebuilt in torch (Keras tensor layout)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.keras_name = spec.name
        self._spec_inputs = list(spec.inputs)
        self._input_dtypes = [s.dtype for s in spec.input_specs]
        self._outputs = list(spec.outputs)
        self._output_kind, self._output_keys = spec.output_kind, list(spec.output_keys)
        self._calls: list[tuple] = []            # (attr, layer, node, args, kwargs, mask mode, seq)
        self._uses_masks = False
        self._attr: dict[str, str] = {}          # keras layer name -> attribute name
        self._layer_rows: list = []              # for the summary: filled by the builder

    def _to_tensor(self, x, i):
        if isinstance(x, torch.Tensor):
            return x
        a = np.asarray(x)
        dt = self._input_dtypes[i] if i < len(self._input_dtypes) else "float32"
        if "int" in dt or "bool" in dt:
            return torch.from_numpy(a.astype(np.int64))
        dtype = self._float_dtype()
        npdt = {torch.float64: np.float64, torch.float16: np.float16}.get(dtype, np.float32)
        return torch.from_numpy(np.ascontiguousarray(a, dtype=npdt)).to(dtype)

    def _float_dtype(self):
        """The dtype arrays are given: the module's (float64 after ``.double()``)."""
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        for t in self.buffers():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    def forward(self, *inputs):
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) and len(self._spec_inputs) > 1:
            inputs = tuple(inputs[0])
        if len(inputs) != len(self._spec_inputs):
            raise TypeError(message(
                f"Keras model {self.keras_name!r} takes {len(self._spec_inputs)} input(s)",
                expected="one positional argument per model input, in order: "
                + ", ".join(r.layer for r in self._spec_inputs),
                got=f"{len(inputs)} argument(s)"))
        env = {r: self._to_tensor(x, i) for i, (r, x) in enumerate(zip(self._spec_inputs, inputs))}
        masks: dict = {}
        for call in self._calls:
            self._run(call, env, masks)
        outs = [env[r] for r in self._outputs]
        if self._output_kind == "single":
            return outs[0]
        if self._output_kind == "dict":
            return dict(zip(self._output_keys, outs))
        return tuple(outs)

    def __repr__(self) -> str:
        return self.summary().to_text()

    def _repr_html_(self) -> str:
        return self.summary().to_html()

    def _run(self, call, env: dict, masks: dict):
        attr, name, k, args, kwargs, mode, seqs = call
        module = getattr(self, attr)
        a, kw = _resolve(args, env), _resolve(kwargs, env)
        if not self._uses_masks:
            out = module(*a, **kw)
        else:
            from .masks import input_mask, output_masks
            per_input = [masks.get(r) for r in _walk_refs(args)]
            m_in = input_mask(per_input)
            if mode == "attention":                 # Keras passes one mask per input
                m_in = per_input[0] if per_input else None
                if any(m is not None for m in per_input) and kw.get("mask") is None:
                    kw = dict(kw, mask=per_input)
            if m_in is not None and mode in ("rnn", "pool") and kw.get("mask") is None:
                kw = dict(kw, mask=m_in)            # an explicit mask= (Keras 3 configs) wins
            out = module(*a, **kw)
            for i, m in enumerate(output_masks(mode, module, a[0] if a else None, m_in, out, seqs)):
                masks[Ref(name, k, i)] = m
        _store(env, name, k, out)
        return out

    def summary(self):
        """Keras-style summary (layer, class, output shape, parameters) as a render View."""
        from .summary import summary_view
        return summary_view(self)


def build_graph(spec: ModelSpec, weights: Callable[[str], list | None], ctx: Context,
                examples: list) -> KerasModel:
    """Trace ``spec`` with example inputs (Keras layout), building each layer's module."""
    from .masks import mode as mask_mode, _returns_sequences as returns_sequences
    model = KerasModel(spec)
    model._uses_masks = any(mask_mode(sp, ctx) == "produce" for sp in spec.layers)
    masks: dict = {}
    taken: set[str] = set()
    env = {r: x for r, x in zip(spec.inputs, examples)}
    for sp in spec.layers:
        if sp.class_name == "InputLayer":
            model._layer_rows.append((sp.name, "InputLayer", None, [env.get(Ref(sp.name, 0, 0))]))
    for sp, k in call_order(spec):
        node = sp.nodes[k]
        args = _resolve(node.args, env)
        kw = _resolve(call_kwargs(sp, node, ctx), env)
        if sp.name not in model._attr:
            attr = sanitize(sp.name, taken)
            module = make_module(sp, args, kw, weights, ctx)
            model.add_module(attr, module)
            model._attr[sp.name] = attr
            model._layer_rows.append((sp.name, sp.class_name, attr, []))
        attr = model._attr[sp.name]
        call = (attr, sp.name, k, node.args, call_kwargs(sp, node, ctx), mask_mode(sp, ctx),
                returns_sequences(sp))
        try:
            with torch.no_grad():
                out = model._run(call, env, masks)
        except WeightvizError:
            raise
        except Exception as e:                   # torch errors, bad arguments from the config
            shapes = [tuple(t.shape) for t in _tensors([args, kw])]
            raise CorruptFileError(message(
                f"layer {sp.path!r} ({sp.class_name}) fails on inputs of shape(s) {shapes}",
                expected="layer settings consistent with the shapes the model feeds them",
                fix="check the architecture (or give the model inputs a fixed size)",
                got=f"{type(e).__name__}: {str(e)[:200]}")) from e
        for row in model._layer_rows:
            if row[0] == sp.name:
                row[3].append(out)
        model._calls.append(call)
    position = {sp.name: i for i, sp in enumerate(spec.layers)}
    model._layer_rows.sort(key=lambda row: position.get(row[0], len(position)))
    return model


def custom_module(sp, key: str, weights, ctx: Context) -> nn.Module:
    """The replacement ``custom_layers[key]`` for layer ``sp``: a module or function as given,
    or (for a class-name key) what the factory returns for the layer's config. The layer's
    Keras arrays go to the replacement's ``load_keras_weights(arrays)`` when it has one."""
    from .layers.core import _custom_check
    from .nested import as_array
    custom = ctx.custom_layers[key]
    if key == sp.class_name and key not in (sp.path, sp.name) and not isinstance(custom, nn.Module):
        try:                                 # a factory for every layer of this class
            custom = custom(dict(sp.config))
        except Exception as e:
            raise CorruptFileError(message(
                f"custom_layers[{key!r}] failed to build layer {sp.path!r}",
                expected="a factory taking the layer's config dict and returning a module",
                got=f"{type(e).__name__}: {str(e)[:200]}")) from e
    module = _custom_check(custom, sp)
    ws = weights(sp.name)
    if not ws:
        return module
    arrays = [np.ascontiguousarray(as_array(w), dtype=np.float32) for w in ws]
    hook = getattr(module, "load_keras_weights", None)
    if hook is None:
        import warnings
        warnings.warn(f"custom_layers[{key!r}] replaces layer {sp.path!r} ({sp.class_name}), "
                      f"which has {len(arrays)} weight array(s) "
                      f"{[tuple(a.shape) for a in arrays]}; the replacement has no "
                      "load_keras_weights(arrays) method, so they are not loaded", stacklevel=5)
        return module
    try:
        hook(arrays)
    except Exception as e:
        raise MismatchError(message(
            f"custom_layers[{key!r}].load_keras_weights failed for layer {sp.path!r} "
            f"({sp.class_name})",
            expected="a method taking the layer's arrays in Keras layer.weights order: "
            + ", ".join(str(tuple(a.shape)) for a in arrays),
            got=f"{type(e).__name__}: {str(e)[:200]}")) from e
    return module


def make_module(sp, args, kwargs, weights, ctx: Context) -> nn.Module:
    key = ctx.custom_key(sp)
    if key is not None:
        return custom_module(sp, key, weights, ctx)
    x = args[0] if len(args) == 1 else list(args)
    from .nested import PreSplit, as_array, build_nested
    ws = weights(sp.name)
    if sp.inner is not None:
        return build_nested(sp, args, ws, ctx, build=build_graph)
    conv = CONVERTERS[sp.class_name]
    if ws is not None and not isinstance(ws, PreSplit):
        names = [getattr(w, "name", None) for w in ws]
        if conv.reorder is not None and ws and all(isinstance(n, str) for n in names):
            ws = [ws[i] for i in conv.reorder(names)]
        ws = [as_array(w) for w in ws]
    try:
        return conv.build(sp, x, kwargs, ws, ctx)
    except WeightvizError:
        raise
    except Exception as e:                       # missing keys, bad values, negative sizes
        raise CorruptFileError(message(
            f"the config of layer {sp.path!r} ({sp.class_name}) cannot be read",
            expected=f"a {sp.class_name} config as Keras 2/3 writes it",
            fix="check the architecture JSON (Keras 1 configs use other keys for some layers)",
            got=f"{type(e).__name__}: {e}")) from None

