"""Nested models (a Sequential/Functional used as a layer): split its flat weight list.

A nested model's weights come as one list, in one of two orders (formats.md §1.1, trap 6):
- depth-first, layer by layer (``layer.weights`` in Keras 3 and tf-keras, the ``.keras`` /
  ``.weights.h5`` walk);
- all trainable weights first, then all non-trainable ones (the legacy HDF5 ``weight_names``
  of every writer); a frozen layer moves entirely to the tail.
When the arrays carry names (checkpoint entries), the order whose variable names fit best is
taken; otherwise depth-first, and the other order is tried if the shapes disagree.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import MismatchError, message
from .config import LayerSpec, ModelSpec
from .registry import CONVERTERS, Context


class PreSplit(dict):
    """Weights of a nested model already split per layer path."""


def _slots(model: ModelSpec, ctx: Context, trainable: bool = True) -> list[tuple[str, str, str, bool]]:
    """Depth-first (layer path, layer name, slot name, effective trainable) of every weight."""
    out = []
    for sp in model.layers:
        if sp.class_name == "InputLayer":
            continue
        t = trainable and sp.trainable
        if sp.inner is not None:             # (a replaced layer still owns its weights)
            out += _slots(sp.inner, ctx, t)
            continue
        conv = CONVERTERS.get(sp.class_name)
        for name, slot_t in (conv.slots(sp.config) if conv else []):
            out.append((sp.path, sp.name, name, t and slot_t))
    return out


def _clean(name: str) -> list[str]:
    name = re.sub(r":\d+$", "", str(name))
    return [p for p in name.split("/") if p]


def _score(order, names) -> int:
    score = 0
    for (path, lname, slot, _), n in zip(order, names):
        parts = _clean(n)
        short = slot.split("/")[-1]
        if parts and parts[-1] == short:
            score += 2
        if lname in parts or any(p.startswith(lname) for p in parts[:-1]):
            score += 1
    return score


def orders(model: ModelSpec, ctx: Context):
    depth = _slots(model, ctx)
    split = [s for s in depth if s[3]] + [s for s in depth if not s[3]]
    return depth, split


def split(model: ModelSpec, flat: list, names: list | None, ctx: Context, prefer_split: bool):
    depth, tfirst = orders(model, ctx)
    if len(flat) != len(depth):
        raise MismatchError(message(
            f"nested model {model.path.rstrip('/')!r} has {len(flat)} weight array(s) in the "
            "weights source",
            expected=f"{len(depth)} (one per weight of its layers)",
            fix="check that the weights belong to this architecture"))
    candidates = [tfirst, depth] if prefer_split else [depth, tfirst]
    if names and all(isinstance(n, str) for n in names):
        candidates.sort(key=lambda o: -_score(o, names))    # stable: ties keep the preference
    results = []
    for order in candidates:
        per: dict[str, list] = {}
        for (path, _, _, _), arr in zip(order, flat):
            per.setdefault(path, []).append(arr)
        results.append(PreSplit(per))
    return results


def build_nested(sp: LayerSpec, args, flat, ctx: Context, weights_names=None, *, build):
    """A nested model's module: ``build`` (the graph builder, passed in by the caller so this
    module never imports it) runs once per candidate split of ``flat`` until one fits."""
    build_graph = build
    x = args[0]
    examples = list(x) if isinstance(x, (list, tuple)) else [x]
    inner = sp.inner
    if flat is None:
        return build_graph(inner, lambda name: None, ctx, examples)
    if isinstance(flat, PreSplit):
        candidates = [flat]
    else:
        names = [getattr(w, "name", None) for w in flat]
        arrays = [as_array(w) for w in flat]
        candidates = split(inner, arrays, names, ctx, prefer_split=False)
    error = None
    for per in candidates:
        def weights(name, _per=per):
            sub = inner.layer(name)
            if sub.inner is not None:
                return PreSplit({k: v for k, v in _per.items() if k.startswith(sub.path + "/")})
            return _per.get(sub.path, [])
        try:
            return build_graph(inner, weights, ctx, examples)
        except MismatchError as e:
            error = error or e
    raise error


def as_array(w):
    if isinstance(w, np.ndarray):
        return w
    if hasattr(w, "numpy"):
        return w.numpy()
    return np.asarray(w)
