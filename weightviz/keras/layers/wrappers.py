"""TimeDistributed and MultiHeadAttention (with attention_mask and use_causal_mask)."""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..config import LayerSpec
from ..registry import CONVERTERS, register, set_param, take


def inner_spec(spec) -> LayerSpec:
    entry = spec.config.get("layer") or {}
    cfg = entry.get("config") or {}
    name = cfg.get("name", "layer")
    return LayerSpec(name, entry.get("class_name", "?"), cfg, [], 0, f"{spec.path}/{name}")


def _td_slots(cfg):
    entry = cfg.get("layer") or {}
    conv = CONVERTERS.get(entry.get("class_name"))
    return conv.slots(entry.get("config") or {}) if conv else []


class TimeDistributed(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        n, t = x.shape[0], x.shape[1]
        y = self.layer(x.reshape((n * t,) + tuple(x.shape[2:])))
        return y.reshape((n, t) + tuple(y.shape[1:]))


@register("TimeDistributed", slots=_td_slots)
def time_distributed(spec, x, kwargs, weights, ctx):
    inner = inner_spec(spec)
    conv = CONVERTERS.get(inner.class_name)
    if conv is None:
        raise UnsupportedLayerError(message(
            f"layer {spec.path!r} (TimeDistributed) wraps a {inner.class_name}, which has no "
            "torch converter", fix="supply a replacement with custom_layers={name: module}"))
    xi = x.reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))
    return TimeDistributed(conv.build(inner, xi, {}, weights, ctx))


def _mha_slots(cfg):
    out = []
    for part in ("query", "key", "value", "attention_output"):
        out.append((f"{part}/kernel", True))
        if cfg.get("use_bias", True):
            out.append((f"{part}/bias", True))
    return out


class MultiHeadAttention(nn.Module):
    """Keras MultiHeadAttention (no mask, no attention_axes): einsum projections, kept in
    Keras's kernel layout (E, H, D) so the weights copy unchanged."""

    def __init__(self, shapes, use_bias, heads, key_dim):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        for part, (k_shape, b_shape) in shapes.items():
            self.register_parameter(f"{part}_kernel", nn.Parameter(torch.zeros(k_shape)))
            self.register_parameter(f"{part}_bias",
                                    nn.Parameter(torch.zeros(b_shape)) if use_bias else None)

    def _proj(self, part, x):
        y = torch.einsum("bte,ehd->bthd", x, getattr(self, f"{part}_kernel"))
        b = getattr(self, f"{part}_bias")
        return y + b if b is not None else y

    def forward(self, query, value, key=None, attention_mask=None, use_causal_mask=False):
        key = value if key is None else key
        q = self._proj("query", query) / math.sqrt(self.key_dim)
        k, v = self._proj("key", key), self._proj("value", value)
        scores = torch.einsum("bshd,bthd->bhts", k, q)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool() if attention_mask.dtype == torch.bool else attention_mask > 0.5
        if use_causal_mask:
            t, s = scores.shape[-2], scores.shape[-1]
            causal = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril()
            mask = causal if mask is None else mask & causal
        if mask is not None:                       # Keras: masked scores -> -1e9 before softmax
            if mask.dim() == 3:
                mask = mask.unsqueeze(1)
            scores = torch.where(mask, scores, torch.full_like(scores, -1e9))
        scores = scores.softmax(dim=-1)
        ctx = torch.einsum("bhts,bshd->bthd", scores, v)
        y = torch.einsum("bthd,hde->bte", ctx, self.attention_output_kernel)
        return y + self.attention_output_bias if self.attention_output_bias is not None else y


def _mha_order(names: list[str]) -> list[int]:
    """Indices putting query, key, value, output first-to-last (kernel before bias), for
    readers that list the sub-layers in storage order; unchanged if names don't tell."""
    parts = [("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
             ("attention_output", "output_dense", "output")]
    comps = [[c for c in re.sub(r":\d+$", "", n).split("/")] for n in names]
    order: list[int] = []
    for aliases in parts:
        order += [i for i, c in enumerate(comps) if any(a in c[:-1] for a in aliases)
                  and i not in order]
    return order if sorted(order) == list(range(len(names))) else list(range(len(names)))


@register("MultiHeadAttention", slots=_mha_slots,
          tensor_kwargs=("value", "key", "query", "attention_mask"),
          const_kwargs=("use_causal_mask",), reorder=_mha_order)
def multi_head_attention(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    if cfg.get("attention_axes") not in (None, [1], (1,), 1):
        raise UnsupportedLayerError(message(f"layer {spec.path!r}: attention_axes "
                                            f"{cfg.get('attention_axes')} is not supported",
                                            expected="attention over the sequence axis only"))
    args = list(x) if isinstance(x, (list, tuple)) else [x]
    query = args[0]
    value = kwargs.get("value", args[1] if len(args) > 1 else None)
    key = kwargs.get("key", args[2] if len(args) > 2 else None)
    if value is None:
        raise UnsupportedLayerError(message(f"layer {spec.path!r}: cannot find the value tensor"))
    h, dk = int(cfg["num_heads"]), int(cfg["key_dim"])
    dv = int(cfg.get("value_dim") or dk)
    e_q, e_v = int(query.shape[-1]), int(value.shape[-1])
    e_k = int(key.shape[-1]) if key is not None else e_v
    e_out = int(cfg.get("output_shape") or e_q) if not isinstance(cfg.get("output_shape"), list) \
        else int(cfg["output_shape"][-1])
    use_bias = cfg.get("use_bias", True)
    shapes = {"query": ((e_q, h, dk), (h, dk)), "key": ((e_k, h, dk), (h, dk)),
              "value": ((e_v, h, dv), (h, dv)), "attention_output": ((h, dv, e_out), (e_out,))}
    exp = []
    for part, (ks, bs) in shapes.items():
        exp.append((f"{part}/kernel", ks))
        if use_bias:
            exp.append((f"{part}/bias", bs))
    ws = take(spec, weights, exp)
    m = MultiHeadAttention(shapes, use_bias, h, dk)
    if ws:
        it = iter(ws)
        for part in shapes:
            set_param(getattr(m, f"{part}_kernel"), next(it))
            if use_bias:
                set_param(getattr(m, f"{part}_bias"), next(it))
    return m
