"""EinsumDense: ``act(einsum(equation, x, kernel) + bias)``.

The kernel and bias shapes follow Keras's ``_analyze_einsum_string`` (keras/src/layers/core/
einsum_dense.py): the three equation forms ``ab,bc->ac``, ``...b,bc->...c`` and
``ab...,bc->ac...``, the partial ``output_shape`` (batch excluded), and ``bias_axes`` (the bias
spans the output from its first bias axis on, 1 on the others). Quantized layers (int8/int4/
float8/GPTQ/AWQ, other weights) are refused; a LoRA layer is saved with its kernel merged.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..registry import register, set_param, take

_FORMS = ((r"([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$", False),
          (r"0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)$", True),
          (r"([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0$", False))


def einsum_shapes(equation: str, bias_axes, in_shape, out_shape):
    """(kernel shape, bias shape or None), as Keras computes them from the input shape."""
    eq = re.sub(r"\.\.\.", "0", equation.replace(" ", ""))
    for pattern, left in _FORMS:
        m = re.match(pattern, eq)
        if m:
            break
    else:
        raise ValueError(f"invalid einsum equation {equation!r}")
    ins, ws, outs = m.groups()
    elided = len(in_shape) - len(ins)
    out = [out_shape] if isinstance(out_shape, int) else list(out_shape or [])
    out.insert(0, in_shape[0])
    if elided > 0 and left:
        for i in range(1, elided):
            out.insert(1, in_shape[i])
    elif elided > 0:
        out.extend(in_shape[len(in_shape) - elided:])
    if left:
        in_map = {d: i + elided - len(in_shape) for i, d in enumerate(ins)}
        out_map = {d: i + elided for i, d in enumerate(outs)}
    else:
        in_map = {d: i for i, d in enumerate(ins)}
        out_map = {d: i for i, d in enumerate(outs)}
    kernel = []
    for d in ws:
        if d in out_map:
            kernel.append(out[out_map[d]])
        elif d in in_map:
            kernel.append(in_shape[in_map[d]])
        else:
            raise ValueError(f"weight dimension {d!r} of {equation!r} is in neither input nor output")
    if any(k is None for k in kernel):
        raise ValueError(f"output_shape {out_shape!r} leaves a kernel size of {equation!r} unknown")
    if not bias_axes:
        return tuple(int(k) for k in kernel), None
    skip = elided if left else 0
    sizes = {c: out[i + skip] for i, c in enumerate(outs)}
    if any(c not in outs for c in bias_axes):
        raise ValueError(f"bias axes {bias_axes!r} are not all in the output {outs!r}")
    first = min(outs.find(c) for c in bias_axes)
    bias = [sizes[c] if c in bias_axes else 1 for c in outs[first:]]
    if not left:
        bias += [1] * max(elided, 0)
    return tuple(int(k) for k in kernel), tuple(int(b) for b in bias)


class EinsumDense(nn.Module):
    def __init__(self, equation, kshape, bshape, act, act_name):
        super().__init__()
        self.equation, self.act, self.act_name = equation, act, act_name
        self.kernel = nn.Parameter(torch.zeros(kshape))
        if len(kshape) >= 2:
            nn.init.xavier_uniform_(self.kernel)
        self.bias = nn.Parameter(torch.zeros(bshape)) if bshape is not None else None

    def forward(self, x):
        y = torch.einsum(self.equation, x, self.kernel)
        if self.bias is not None:
            y = y + self.bias
        return self.act(y)

    def extra_repr(self) -> str:
        return f"{self.equation!r}, kernel={tuple(self.kernel.shape)}, activation={self.act_name}"


def _slots(cfg):
    return [("kernel", True)] + ([("bias", True)] if cfg.get("bias_axes") else [])


@register("EinsumDense", slots=_slots)
def einsum_dense(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    policy = cfg.get("dtype")
    pname = ((policy.get("config") or {}).get("name") if isinstance(policy, dict) else policy) or ""
    if cfg.get("quantization_config") or any(q in str(pname) for q in ("int8", "int4", "float8",
                                                                           "gptq", "awq")):
        raise UnsupportedLayerError(message(
            f"layer {spec.path!r} (EinsumDense) is quantized ({pname or 'quantization_config'})",
            expected="a float EinsumDense", fix="save the model before quantizing it, or "
            "supply a replacement with custom_layers={name: module}"))
    eq = str(cfg["equation"])
    kshape, bshape = einsum_shapes(eq, cfg.get("bias_axes"), tuple(x.shape), cfg.get("output_shape"))
    exp = [("kernel", kshape)] + ([("bias", bshape)] if bshape is not None else [])
    ws = take(spec, weights, exp)
    from ..activations import activation_name
    act = ctx.activation(cfg.get("activation"), f"layer {spec.path!r}")
    m = EinsumDense(eq, kshape, bshape, act, activation_name(cfg.get("activation")))
    if ws:
        set_param(m.kernel, ws[0])
        if bshape is not None:
            set_param(m.bias, ws[1])
    return m
