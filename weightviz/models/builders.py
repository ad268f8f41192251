"""build(): a torch.nn.Module from a file's architecture, an import path, or arrays (MLP).

- ``build("model.h5")`` / ``build("model.json", weights="weights.h5")``: a Keras
  architecture read as data (delegated to :mod:`weightviz.keras`);
- ``build("pkg.module:Class", kwargs={...}, weights=...)``: your own class;
- :func:`build_mlp`: the seed's NumPy MLP, ``y = act(x @ W + b)`` per layer.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from ..errors import WeightvizError, capped, message
from ..matching.importpath import from_import_path, is_import_path

def build(source, *, weights=None, custom_layers=None, kwargs: dict | None = None, strict: bool = True):
    """A torch.nn.Module from ``source``.

    - an import path ``"pkg.module:Class"``: instantiated with ``kwargs``; when
      ``weights`` is given they are loaded with :func:`weightviz.load` (``strict``);
    - a Keras file (``.h5``, ``.keras``, a ``to_json()`` ``.json``): built from the
      architecture it carries, weights from the file or from ``weights``;
      ``custom_layers`` maps a custom class name to a torch module factory.
    """
    if is_import_path(source):
        model = from_import_path(source, kwargs)
        if weights is not None:
            from ..matching.match import load
            load(model, weights, strict=strict)
        return model
    if kwargs:
        raise WeightvizError(message("kwargs= only applies to an import path",
                                     fix='pass source as "pkg.module:Class"', got=repr(source)))
    from ..formats import open_checkpoint
    ckpt = source if hasattr(source, "architecture") else open_checkpoint(source)
    wckpt = None
    if weights is not None:
        wckpt = weights if hasattr(weights, "architecture") else open_checkpoint(weights)
    if ckpt.architecture is None:
        raise WeightvizError(message(
            f"this {ckpt.format} file carries no architecture, only weights",
            expected="a Keras file with a model config (.h5 saved by model.save, .keras, or to_json() .json)",
            fix='build the model yourself and use weightviz.load(model, file), or build("pkg.module:Class", '
                'weights=file), or build_mlp() for plain weight arrays'))
    _refuse_bytecode(ckpt.architecture, custom_layers)
    from ..keras import build_from_checkpoint
    return build_from_checkpoint(ckpt, wckpt, custom_layers)


def _refuse_bytecode(architecture: dict, custom_layers) -> None:
    """Python bytecode anywhere in the config (a Lambda layer, a ``__lambda__`` activation, inside
    nested models or wrappers) is refused before the config is even parsed as a graph, so a
    malformed config cannot hide it behind a CorruptFileError. With ``custom_layers`` the builder's
    own pre-scan decides, layer by layer."""
    if custom_layers:
        return
    from ..errors import UnsafeCheckpointError
    from ..formats.keras_common import find_lambdas
    found = find_lambdas(architecture)
    if found:
        raise UnsafeCheckpointError(message(
            f"the architecture contains Python bytecode (Lambda layers or __lambda__ functions) in "
            f"{capped(found)}; it is never decoded or run",
            expected="layers weightviz can rebuild from their config",
            fix="pass a replacement torch module for each, e.g. "
                "build(..., custom_layers={'layer_name': module})",
            got=f"{len(found)} layer(s) with bytecode"), needs=tuple(found))


# -- the seed's NumPy MLP -------------------------------------------------------------
_ACTIVATIONS = {
    "relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU", "elu": "ELU",
    "selu": "SELU", "softplus": "Softplus", "leaky_relu": "LeakyReLU", "swish": "SiLU",
    "silu": "SiLU", "softsign": "Softsign", "relu6": "ReLU6", "mish": "Mish",
    "hard_tanh": "Hardtanh", "softmax": "Softmax", "log_softmax": "LogSoftmax",
}
_IDENTITY = ("linear", "identity", "none", "")


def _activation(act, i: int):
    """(name, module or None) for one activation spec: a name, None, or an nn.Module."""
    import torch.nn as nn
    if act is None or (isinstance(act, str) and act.lower() in _IDENTITY):
        return "linear", None
    if isinstance(act, nn.Module):
        return type(act).__name__.lower(), act
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        cls = _ACTIVATIONS.get(key)
        if cls is not None:
            if key in ("softmax", "log_softmax"):
                return key, getattr(nn, cls)(dim=-1)
            return key, getattr(nn, cls)()
    raise WeightvizError(message(
        f"unknown activation {act!r} for layer {i}",
        expected="one of " + ", ".join(sorted(set(_ACTIVATIONS) | {"linear", "identity"}))
                 + ", None, or an nn.Module", got=repr(act)))


def _arrays(source, what: str) -> list[np.ndarray]:
    """Per-layer arrays from a sequence, a .npy (object array of per-layer arrays) or a .npz."""
    if isinstance(source, (str, os.PathLike)):
        from ..formats import open_checkpoint
        ckpt = open_checkpoint(source)
        return [e.numpy() for e in ckpt.values()]
    if isinstance(source, np.ndarray) and source.dtype != object:
        source = [source] if source.ndim == 2 and what == "weights" else list(source)
    try:
        return [_as_numpy(a) for a in source]
    except TypeError as e:
        raise WeightvizError(message(f"{what} must be a sequence of arrays or a path",
                                     got=type(source).__name__)) from e


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


_NUMBERED = re.compile(r"^(?:(w|weights?|kernels?)|(b|bias(?:es)?))[_-]?(\d+)$", re.I)


def _npz_pairs(path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """W/b pairs from one .npz: names like W0/b0, weight_1/bias_1 paired by number;
    otherwise in natural key order, 2-D arrays are weights and 1-D arrays biases."""
    from ..formats import open_checkpoint
    ckpt = open_checkpoint(path)
    names = list(ckpt)
    ws, bs = {}, {}
    for n in names:
        m = _NUMBERED.match(n.removesuffix(".npy"))
        if m:
            (ws if m.group(1) else bs)[int(m.group(3))] = n
    if ws and len(ws) + len(bs) == len(names):
        if sorted(ws) != sorted(bs):
            raise WeightvizError(message(f"the weights and biases in {os.path.basename(str(path))} "
                                         f"do not pair up by number",
                                         expected="W0/b0, W1/b1, ...", got=", ".join(names)))
        order = sorted(ws)
        return [ckpt[ws[i]].numpy() for i in order], [ckpt[bs[i]].numpy() for i in order]
    key = lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]  # noqa: E731
    W, B = [], []
    for n in sorted(names, key=key):
        a = ckpt[n].numpy()
        if a.ndim == 2:
            W.append(a)
        elif a.ndim == 1:
            B.append(a)
        else:
            raise WeightvizError(message(f"array {n!r} in {os.path.basename(str(path))} is {a.ndim}-D",
                                         expected="2-D weights (in, out) and 1-D biases",
                                         got=str(a.shape)))
    return W, B


def build_mlp(weights, biases=None, activations: Sequence | None = None, *,
              dtype: str | None = "float32"):
    """An ``nn.Sequential`` computing the seed's MLP: ``x = act_i(x @ W_i + b_i)``.

    ``weights``/``biases``: sequences of arrays (NumPy or torch), paths to ``.npy``
    files holding per-layer arrays (object arrays are read safely, without pickle
    code), or ``weights`` = one ``.npz`` and ``biases=None`` (names ``W0/b0``... are
    paired by number, otherwise 2-D arrays are the weights and 1-D the biases, each
    in natural key order). ``W_i`` is ``(in, out)``; biases are ``(out,)`` or ``(1, out)``.
    ``biases=None`` with separate weights builds layers without bias.
    ``activations``: one per layer: relu, tanh, sigmoid, softmax, log_softmax, linear
    (identity/None), gelu, elu, selu, softplus, leaky_relu (slope 0.01), swish/silu,
    relu6, mish, softsign, hard_tanh, or an ``nn.Module``. Softmax runs over the last axis.
    Modules are named ``fc0, relu0, fc1, ...``. ``dtype=None`` keeps the arrays' dtype.
    """
    import torch
    import torch.nn as nn
    if isinstance(weights, (str, os.PathLike)) and biases is None and str(weights).lower().endswith(".npz"):
        W, B = _npz_pairs(weights)
    else:
        W = _arrays(weights, "weights")
        B = None if biases is None else _arrays(biases, "biases")
    n = len(W)
    if n == 0:
        raise WeightvizError(message("no weight arrays given", expected="at least one (in, out) array"))
    if activations is None or isinstance(activations, str):
        raise WeightvizError(message(
            "activations= must list one activation per layer",
            expected=f"{n} names, e.g. {['relu'] * (n - 1) + ['softmax']}", got=repr(activations)))
    acts = list(activations)
    if len(acts) != n:
        raise WeightvizError(message(f"{len(acts)} activations given for {n} layers",
                                     expected=f"one per layer ({n})", got=repr(acts)))
    for i, w in enumerate(W):
        if w.ndim != 2 or w.dtype.kind not in "biuf":
            raise WeightvizError(message(f"layer {i}: the weight array is not a 2-D numeric array",
                                         expected="W of shape (in, out)",
                                         got=f"shape {w.shape}, dtype {w.dtype}"))
        if i and w.shape[0] != W[i - 1].shape[1]:
            raise WeightvizError(message(
                f"layer {i} expects {w.shape[0]} inputs, layer {i - 1} gives {W[i - 1].shape[1]}",
                expected=f"W[{i}].shape[0] == W[{i - 1}].shape[1]",
                fix="check the order of the weight arrays (W is (in, out); a torch Linear weight "
                    "is (out, in) and needs .T)",
                got=f"W[{i - 1}] {tuple(W[i - 1].shape)}, W[{i}] {tuple(w.shape)}"))
    if B is not None:
        if len(B) != n:
            raise WeightvizError(message(f"{len(B)} biases given for {n} weight arrays",
                                         expected="one bias per layer", fix="pass biases=None for none"))
        for i, (w, b) in enumerate(zip(W, B)):
            if b.ndim == 2 and b.shape[0] == 1:
                B[i] = b = b.reshape(-1)
            if b.ndim != 1 or b.shape[0] != w.shape[1] or b.dtype.kind not in "biuf":
                raise WeightvizError(message(
                    f"layer {i}: the bias does not fit its weights",
                    expected=f"a bias of shape ({w.shape[1]},) for W of shape {tuple(w.shape)}",
                    got=f"bias shape {tuple(b.shape)}, dtype {b.dtype}"))
    tdt = None if dtype is None else getattr(torch, dtype)
    mods = []
    for i, w in enumerate(W):
        name, act = _activation(acts[i], i)
        lin = nn.Linear(w.shape[0], w.shape[1], bias=B is not None)
        wt = torch.from_numpy(np.ascontiguousarray(w.T))
        lin = lin.to(tdt if tdt is not None else wt.dtype if wt.is_floating_point() else torch.float32)
        with torch.no_grad():
            lin.weight.copy_(wt)
            if B is not None:
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(B[i])))
        mods.append((f"fc{i}", lin))
        if act is not None:
            mods.append((f"{name}{i}", act))
    from collections import OrderedDict
    return nn.Sequential(OrderedDict(mods))
