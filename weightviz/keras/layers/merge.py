"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Tensors stay in Keras layout, so Concatenate's axis and Dot's axes keep their Keras meaning.
"""
from __future__ import annotations

import functools
import operator

import torch

from ..registry import register
from .core import Fn


class Merge(Fn):
    """A merge layer, called Keras-style with one list, or op-style with positional
    arguments (Keras 3 records ``x + 3.0`` in configs as an ``Add`` op called ``(x, 3.0)``)."""

    def forward(self, *args):
        xs = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
        return self.fn(xs)


def _tensors(xs):
    ref = next((x for x in xs if isinstance(x, torch.Tensor)), None)
    if ref is None:
        raise TypeError("a merge layer needs at least one tensor input")
    return [x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=ref.dtype) for x in xs]


def _fold(op, text):
    return Merge(lambda xs: functools.reduce(op, _tensors(xs)), text)


@register("Add")
def add(spec, x, kwargs, weights, ctx):
    return _fold(operator.add, "sum")


@register("Subtract")
def subtract(spec, x, kwargs, weights, ctx):
    return Merge(lambda xs: xs[0] - xs[1], "x0 - x1")


@register("Multiply")
def multiply(spec, x, kwargs, weights, ctx):
    return _fold(operator.mul, "product")


@register("Average")
def average(spec, x, kwargs, weights, ctx):
    return Merge(lambda xs: functools.reduce(operator.add, xs) / len(xs), "mean")


@register("Maximum")
def maximum(spec, x, kwargs, weights, ctx):
    return _fold(torch.maximum, "maximum")


@register("Minimum")
def minimum(spec, x, kwargs, weights, ctx):
    return _fold(torch.minimum, "minimum")


@register("Concatenate")
def concatenate(spec, x, kwargs, weights, ctx):
    axis = int(spec.config.get("axis", -1))
    return Fn(lambda xs: torch.cat(list(xs), dim=axis), f"axis={axis}")


def _l2_normalize(t, axis):
    inv = torch.rsqrt((t * t).sum(dim=axis, keepdim=True)).clamp(max=1e7)
    return t * inv


def batch_dot(a, b, axes: tuple[int, int]):
    """Keras batch_dot: contract a's axes[0] with b's axes[1], batch axis kept."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    ia = ["B"] + [letters[i] for i in range(a.dim() - 1)]
    ib = ["B"] + [letters[a.dim() - 1 + i] for i in range(b.dim() - 1)]
    ib[axes[1]] = ia[axes[0]]
    out = [c for i, c in enumerate(ia) if i != axes[0]] + [c for i, c in enumerate(ib)
                                                            if i not in (0, axes[1])]
    y = torch.einsum(f"{''.join(ia)},{''.join(ib)}->{''.join(out)}".replace("B", "z"), a, b)
    return y.unsqueeze(-1) if y.dim() == 1 else y


@register("Dot")
def dot(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axes = cfg.get("axes", -1)
    norm = bool(cfg.get("normalize", False))

    def f(xs):
        a, b = xs
        ax = axes if isinstance(axes, (list, tuple)) else (axes, axes)
        ax = tuple(int(v) % t.dim() for v, t in zip(ax, (a, b)))
        if norm:
            a, b = _l2_normalize(a, ax[0]), _l2_normalize(b, ax[1])
        return batch_dot(a, b, ax)
    return Fn(f, f"axes={axes}, normalize={norm}")
