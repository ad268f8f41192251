"""The converter registry: Keras class name -> how to build its torch module.

A converter is a function ``build(spec, x, kwargs, weights, ctx) -> nn.Module`` where ``x`` is
an example of the layer's first call argument (a tensor or a list of tensors, Keras layout:
channels-last), ``kwargs`` the example tensor keyword arguments, and ``weights`` the layer's
arrays in Keras ``layer.weights`` order (or None to keep torch's initialisation). Every built
module takes and returns tensors in Keras layout, so Flatten, Reshape, Concatenate axes, etc.
keep Keras's meaning; modules may work channels-first inside.

``slots(config)`` lists the layer's weights as ``(name, trainable)`` from the config alone; it
is used to split a nested model's flat weight list between its layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MismatchError, message


@dataclass
class Converter:
    build: Callable
    slots: Callable[[dict], list[tuple[str, bool]]]
    tensor_kwargs: tuple[str, ...] = ()
    reorder: Callable | None = None  # names -> index order, for readers that walk sub-groups
    const_kwargs: tuple[str, ...] = ()   # plain-data call options the module accepts


CONVERTERS: dict[str, Converter] = {}


def register(*names: str, slots: Callable | list = (), tensor_kwargs: tuple = (),
             reorder: Callable | None = None, const_kwargs: tuple = ()):
    """Decorator: register ``build`` for the Keras class ``names``."""
    slot_fn = slots if callable(slots) else (lambda cfg, _s=list(slots): list(_s))

    def deco(fn):
        for n in names:
            CONVERTERS[n] = Converter(fn, slot_fn, tuple(tensor_kwargs), reorder, tuple(const_kwargs))
        return fn
    return deco


@dataclass
class Context:
    major: int
    custom_layers: dict = field(default_factory=dict)

    def custom_key(self, sp):
        """The custom_layers key that replaces layer ``sp``: its path ('outer/inner'), its
        name, or its class name (then the value is a factory: ``factory(config) -> module``)."""
        for key in (sp.path, sp.name, sp.class_name):
            if key in self.custom_layers:
                return key
        return None

    def activation(self, value, where: str):
        from . import activations
        return activations.get(value, self.major, where)


def bias_slots(cfg: dict, *names: str) -> list[tuple[str, bool]]:
    out = [(n, True) for n in names]
    if cfg.get("use_bias", True):
        out.append(("bias", True))
    return out


def take(spec, weights: list | None, expected: list[tuple[str, tuple]]) -> list | None:
    """Check the layer's arrays against the expected (name, shape) list; float32 copies."""
    if weights is None:
        return None
    if len(weights) != len(expected):
        raise MismatchError(message(
            f"layer {spec.path!r} ({spec.class_name}) has {len(weights)} weight array(s) in the "
            "weights source",
            expected=f"{len(expected)}: " + ", ".join(f"{n} {tuple(s)}" for n, s in expected),
            fix="check that the weights belong to this architecture",
            got=", ".join(str(tuple(np.shape(w))) for w in weights) or "none"))
    out = []
    for w, (name, shape) in zip(weights, expected):
        w = np.asarray(w)
        if tuple(w.shape) != tuple(shape):
            raise MismatchError(message(
                f"weight {name!r} of layer {spec.path!r} ({spec.class_name}) has the wrong shape",
                expected=str(tuple(shape)),
                fix="check that the weights belong to this architecture (same layer sizes)",
                got=str(tuple(w.shape))))
        out.append(np.ascontiguousarray(w, dtype=np.float32))
    return out


def tensor(a: Any):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def set_param(param, value) -> None:
    import torch
    with torch.no_grad():
        param.copy_(tensor(value).reshape(param.shape))


def tup(v: Any, n: int) -> tuple:
    """A Keras int-or-tuple argument as an n-tuple."""
    if isinstance(v, (list, tuple)):
        return tuple(int(a) for a in v)
    return (int(v),) * n


def channels_last(cfg: dict) -> bool:
    return cfg.get("data_format") in (None, "channels_last")
