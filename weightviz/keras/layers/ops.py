"""Keras 3 op layers that appear in saved functional configs around masks.

Keras 3 records the mask computations it traced as operation "layers" (``NotEqual`` for
``Embedding(mask_zero=True)``, ``Any`` for ``Masking``, ``ConvertToTensor`` for the mask an
attention layer passes on) and passes their result to RNNs and pooling as an explicit ``mask``
keyword; these converters let such configs rebuild.
"""
from __future__ import annotations

import torch

from ..registry import register
from .core import Fn


class Op(Fn):
    def forward(self, *args):
        return self.fn(*args)


@register("NotEqual")
def not_equal(spec, x, kwargs, weights, ctx):
    return Op(lambda a, b: a != b, "x != y")


@register("ConvertToTensor")
def convert_to_tensor(spec, x, kwargs, weights, ctx):
    return Op(lambda a: a, "identity")


@register("Equal")
def equal(spec, x, kwargs, weights, ctx):
    return Op(lambda a, b: a == b, "x == y")


def _reduce(fn, spec):
    axis = spec.config.get("axis")
    keep = bool(spec.config.get("keepdims", False))
    if axis is None:
        return Op(lambda a: fn(a), "over all axes")
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)

    def f(a):
        for ax in sorted((d % a.dim() for d in axes), reverse=True):
            a = fn(a, dim=ax, keepdim=keep)
        return a
    return Op(f, f"axis={axis}, keepdims={keep}")


@register("Any")
def any_(spec, x, kwargs, weights, ctx):
    return _reduce(torch.any, spec)


@register("All")
def all_(spec, x, kwargs, weights, ctx):
    return _reduce(torch.all, spec)


@register("LogicalAnd")
def logical_and(spec, x, kwargs, weights, ctx):
    return Op(torch.logical_and, "x and y")


@register("LogicalOr")
def logical_or(spec, x, kwargs, weights, ctx):
    return Op(torch.logical_or, "x or y")


@register("LogicalNot")
def logical_not(spec, x, kwargs, weights, ctx):
    return Op(torch.logical_not, "not x")
