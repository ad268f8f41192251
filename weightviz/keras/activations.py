"""Keras activation names -> torch functions, with the version-dependent meanings.

``hard_sigmoid`` is ``clip(0.2*x + 0.5, 0, 1)`` in Keras 1/2 and tf.keras, but
``relu6(x + 3) / 6`` in Keras 3 (formats.md §4.5), so the function depends on the Keras
major version that wrote the file. ``leaky_relu`` as an activation *string* has slope 0.2
(Keras 3 function default); the ``LeakyReLU`` layer's default (0.3) is handled by the layer.
"""
from __future__ import annotations

from ..errors import UnsupportedLayerError, message


def _f():
    import torch.nn.functional as F
    return F


def hard_sigmoid_k2(x):
    return (0.2 * x + 0.5).clamp(0.0, 1.0)


def hard_sigmoid_k3(x):
    return _f().relu6(x + 3.0) / 6.0


def _softmax(x, axis=-1):
    return x.softmax(dim=axis)


def _log_softmax(x, axis=-1):
    return x.log_softmax(dim=axis)


def _table(major: int):
    import torch
    F = _f()
    hs = hard_sigmoid_k2 if major < 3 else hard_sigmoid_k3
    return {
        "linear": lambda x: x,
        "relu": torch.relu,
        "relu6": F.relu6,
        "sigmoid": torch.sigmoid,
        "hard_sigmoid": hs,
        "tanh": torch.tanh,
        "softmax": _softmax,
        "log_softmax": _log_softmax,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "elu": F.elu,
        "selu": F.selu,
        "gelu": F.gelu,
        "swish": F.silu,
        "silu": F.silu,
        "hard_silu": lambda x: x * hard_sigmoid_k3(x),
        "hard_swish": lambda x: x * hard_sigmoid_k3(x),
        "exponential": torch.exp,
        "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
        "mish": F.mish,
        "log_sigmoid": F.logsigmoid,
        "tanh_shrink": F.tanhshrink,
        "hard_tanh": F.hardtanh,
        "celu": F.celu,
        "glu": lambda x: F.glu(x, dim=-1),
        "soft_shrink": lambda x: F.softshrink(x, 0.5),
        "hard_shrink": lambda x: F.hardshrink(x, 0.5),
        "squareplus": lambda x: (x + torch.sqrt(x * x + 4.0)) / 2.0,
        "sparse_plus": lambda x: torch.where(x <= -1, torch.zeros_like(x),
                                             torch.where(x >= 1, x, (x + 1) ** 2 / 4)),
        "threshold": None,
    }


ALIASES = {"gelu_approximate": "gelu"}


def activation_name(value) -> str:
    """The activation's name from a config value (a string, or a Keras 3 serialized dict)."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        cfg = value.get("config")
        if isinstance(cfg, str):
            return cfg
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str):
            return cfg["name"]
        if isinstance(value.get("class_name"), str):
            return value["class_name"]
    return repr(value)


def get(value, major: int, where: str = "this layer"):
    """A callable for the activation named by ``value``; UnsupportedLayerError if unknown."""
    name = activation_name(value)
    name = ALIASES.get(name, name)
    fn = _table(major).get(name)
    if fn is None:
        raise UnsupportedLayerError(message(
            f"activation {name!r} of {where} has no torch equivalent in weightviz",
            expected="one of " + ", ".join(sorted(k for k, v in _table(major).items() if v)),
            fix="supply a replacement module for the layer with custom_layers={name: module}",
            got=repr(value)[:120]))
    return fn


def known(value, major: int) -> bool:
    return _table(major).get(ALIASES.get(activation_name(value), activation_name(value))) is not None


__all__ = ["get", "known", "activation_name", "hard_sigmoid_k2", "hard_sigmoid_k3"]
