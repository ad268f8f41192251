"""tf.keras op layers (``TFOpLambda``, ``SlicingOpLambda``) for a whitelist of TF functions.

tf.keras records raw TensorFlow calls in functional models as op layers naming the function
(``"function": "math.multiply"``) with the call's arguments in ``inbound_nodes``. They are
rebuilt from that name only (never from code). Tensors stay in Keras layout, so TF axis
arguments keep their meaning. A function outside the table is refused before building.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import UnsupportedLayerError, message
from ..registry import register
from .core import Fn


def _axes(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def _reduce(op):
    def f(input_tensor, axis=None, keepdims=False, name=None):
        if axis is None:
            return op(input_tensor) if not keepdims else op(input_tensor).reshape([1] * input_tensor.dim())
        return op(input_tensor, dim=_axes(axis), keepdim=bool(keepdims))
    return f


def _t(x, like):
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=like.dtype)


def _binary(op):
    def f(x, y, name=None):
        ref = x if isinstance(x, torch.Tensor) else y
        return op(_t(x, ref), _t(y, ref))
    return f


def _unary(op):
    def f(x, name=None):
        return op(x)
    return f


def _squeeze(input, axis=None, name=None, squeeze_dims=None):  # noqa: A002 - TF's name
    axis = axis if axis is not None else squeeze_dims
    if axis is None:
        return input.squeeze()
    for a in sorted((d % input.dim() for d in ([axis] if isinstance(axis, int) else axis)),
                    reverse=True):
        input = input.squeeze(a)
    return input


TF_FUNCTIONS = {
    "__operators__.add": _binary(torch.add), "math.add": _binary(torch.add),
    "math.subtract": _binary(torch.sub), "__operators__.sub": _binary(torch.sub),
    "math.multiply": _binary(torch.mul), "math.truediv": _binary(torch.div),
    "math.divide": _binary(torch.div), "math.maximum": _binary(torch.maximum),
    "math.minimum": _binary(torch.minimum), "math.pow": _binary(torch.pow),
    "math.negative": _unary(torch.neg), "math.abs": _unary(torch.abs),
    "math.exp": _unary(torch.exp), "math.log": _unary(torch.log), "math.sqrt": _unary(torch.sqrt),
    "math.rsqrt": _unary(torch.rsqrt), "math.square": _unary(torch.square),
    "math.sigmoid": _unary(torch.sigmoid), "nn.sigmoid": _unary(torch.sigmoid),
    "math.tanh": _unary(torch.tanh), "nn.tanh": _unary(torch.tanh),
    "nn.relu": lambda features, name=None: torch.relu(features),
    "nn.relu6": lambda features, name=None: F.relu6(features),
    "nn.silu": lambda features, beta=1.0, name=None: features * torch.sigmoid(beta * features),
    "nn.swish": lambda features, beta=1.0, name=None: features * torch.sigmoid(beta * features),
    "nn.gelu": lambda features, approximate=False, name=None: F.gelu(
        features, approximate="tanh" if approximate else "none"),
    "nn.softmax": lambda logits, axis=None, name=None: logits.softmax(dim=-1 if axis is None else axis),
    "math.reduce_mean": _reduce(torch.mean), "math.reduce_sum": _reduce(torch.sum),
    "math.reduce_max": _reduce(torch.amax), "math.reduce_min": _reduce(torch.amin),
    "concat": lambda values, axis, name="concat": torch.cat(list(values), dim=axis),
    "stack": lambda values, axis=0, name="stack": torch.stack(list(values), dim=axis),
    "reshape": lambda tensor, shape, name=None: tensor.reshape(tuple(int(s) for s in shape)),
    "transpose": lambda a, perm=None, conjugate=False, name="transpose": a.permute(
        tuple(perm) if perm is not None else tuple(reversed(range(a.dim())))),
    "compat.v1.transpose": lambda a, perm=None, name="transpose", conjugate=False: a.permute(
        tuple(perm) if perm is not None else tuple(reversed(range(a.dim())))),
    "expand_dims": lambda input, axis, name=None: input.unsqueeze(axis),  # noqa: A002
    "compat.v1.squeeze": _squeeze, "squeeze": _squeeze,
    "clip_by_value": lambda t, clip_value_min, clip_value_max, name=None: t.clamp(
        clip_value_min, clip_value_max),
    "linalg.matmul": lambda a, b, transpose_a=False, transpose_b=False, name=None, **kw: torch.matmul(
        a.transpose(-1, -2) if transpose_a else a, b.transpose(-1, -2) if transpose_b else b),
}


class TFOp(Fn):
    def forward(self, *args, **kwargs):
        kwargs.pop("name", None)
        return self.fn(*args, **kwargs)


def known(cls: str, cfg: dict) -> bool:
    return cls == "SlicingOpLambda" or cfg.get("function") in TF_FUNCTIONS


@register("TFOpLambda", const_kwargs=("*",))
def tf_op(spec, x, kwargs, weights, ctx):
    name = spec.config.get("function")
    if name not in TF_FUNCTIONS:
        raise UnsupportedLayerError(message(
            f"layer {spec.path!r} (TFOpLambda) calls tf.{name}, which has no torch equivalent here",
            expected="one of " + ", ".join(sorted(TF_FUNCTIONS)),
            fix="supply a replacement with custom_layers={name: module}"))
    return TFOp(TF_FUNCTIONS[name], f"tf.{name}")


def _slice(item):
    if isinstance(item, dict):
        return slice(item.get("start"), item.get("stop"), item.get("step"))
    if item is None:
        return None
    if item in ("...", "Ellipsis"):
        return Ellipsis
    return int(item)


def _getitem(x, slice_spec, name=None):
    spec = slice_spec if isinstance(slice_spec, list) else [slice_spec]
    return x[tuple(_slice(s) for s in spec)]


@register("SlicingOpLambda", const_kwargs=("*",))
def slicing_op(spec, x, kwargs, weights, ctx):
    return TFOp(_getitem, "x[slice_spec]")
