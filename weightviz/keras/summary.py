"""Keras-style summary of a built model: layer (type), output shape, parameter count.

Shapes come from the build trace: the batch dimension shows as None, and so does every
dimension that was unknown (None) in the model's inputs and changed when traced at another
size. Parameters count weights and BatchNormalization statistics, like Keras's "Param #".
"""
from __future__ import annotations

from ..render import Table, View, fmt_count


def _numel(module) -> int:
    n = sum(p.numel() for p in module.parameters())
    for m in module.modules():             # saved buffers only (not Rescaling's constants)
        skip = m._non_persistent_buffers_set
        n += sum(b.numel() for k, b in m._buffers.items()
                 if b is not None and k not in skip and b.is_floating_point())
    return n


def _shape(t, other=None) -> str:
    if isinstance(t, dict):
        t = list(t.values())
    if isinstance(t, (list, tuple)):
        others = other if isinstance(other, (list, tuple)) else [None] * len(t)
        return "[" + ", ".join(_shape(a, b) for a, b in zip(t, others)) + "]"
    if t is None or not hasattr(t, "shape"):
        return "?"
    dims = ["None"] + [str(d) for d in t.shape[1:]]
    if other is not None and hasattr(other, "shape") and other.dim() == t.dim():
        dims = ["None"] + [str(d) if d == e else "None" for d, e in zip(t.shape[1:], other.shape[1:])]
    return "(" + ", ".join(dims) + ")"


def summary_view(model) -> View:
    rows = []
    total = 0
    alt = getattr(model, "_alt_outputs", {})
    for name, cls, attr, outs in model._layer_rows:
        n = _numel(getattr(model, attr)) if attr else 0
        total += n
        other = alt.get(name)
        shapes = [_shape(o, other[i] if other and i < len(other) else None)
                  for i, o in enumerate(outs)]
        label = f"{name} ({cls})" if not attr or attr == name else f"{name} ({cls}) as .{attr}"
        rows.append((label, "; ".join(shapes) or "-", fmt_count(n)))
    trainable = sum(p.numel() for p in model.parameters())
    summary = [("total params", fmt_count(total)), ("torch parameters", fmt_count(trainable)),
               ("non-trainable (statistics)", fmt_count(total - trainable))]
    notes = []
    version = getattr(model, "keras_version", None)
    if version:
        notes.append(f"architecture written by Keras {version}")
    return View(f"Keras model {model.keras_name!r} rebuilt in torch", summary,
                [Table(["Layer (type)", "Output Shape", "Param #"], rows, align="llr",
                       max_rows=200)], notes)


def record_alt_shapes(model, examples) -> None:
    """Run ``model`` on inputs of another size and keep each layer's outputs (for None dims)."""
    import torch
    seen: dict[str, list] = {}
    hooks = []
    for name, cls, attr, outs in model._layer_rows:
        if not attr:
            continue
        mod = getattr(model, attr)

        def hook(m, inp, out, _name=name):
            seen.setdefault(_name, []).append(out)
        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(*examples)
    finally:
        for h in hooks:
            h.remove()
    for r, x in zip(model._spec_inputs, examples):
        seen.setdefault(r.layer, [x])
    model._alt_outputs = seen
