"""Layers that Keras's own applications define, and the ones they lean on beyond the basics.

- ``LayerScale`` (ConvNeXt, ``keras.src.applications.convnext``): ``x * gamma``, one weight of
  ``projection_dim`` values on the last axis.
- ``StochasticDepth`` (ConvNeXt with ``drop_path_rate`` > 0): identity at inference.
- ``CustomScaleLayer`` (InceptionResNetV2): ``inputs[0] + inputs[1] * scale``.
- ``UnitNormalization``: ``x * min(rsqrt(sum(x**2, axis)), 1e12)`` (Keras's L2 ``normalize``).
- ``RMSNormalization``: ``x * rsqrt(mean(x**2, axis) + epsilon) * scale``.
- The random image-augmentation layers (``RandomFlip``, ``RandomRotation``, ...): identity at
  inference, like Dropout.
- ``ReversibleEmbedding`` (KerasHub's tied embedding): a lookup, or with ``reverse=True``
  ``x @ embeddings.T`` (``reverse_embeddings`` when untied), soft-capped by
  ``tanh(logits / cap) * cap`` when ``logit_soft_cap`` is set.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..registry import register, set_param, take
from .core import Fn
from .merge import Merge
from .norm import _axes, _bcast, _param_shape


class LayerScale(nn.Module):
    """ConvNeXt's LayerScale: ``x * gamma`` (gamma broadcast on the last axis)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"projection_dim={self.gamma.numel()}"


@register("LayerScale", slots=[("gamma", True)])
def layer_scale(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    dim = int(cfg.get("projection_dim", x.shape[-1]))
    ws = take(spec, weights, [("gamma", (dim,))])
    m = LayerScale(dim, cfg.get("init_values", 1e-6) or 0.0)
    if ws:
        set_param(m.gamma, ws[0])
    return m


@register("StochasticDepth")
def stochastic_depth(spec, x, kwargs, weights, ctx):
    return Fn(lambda t: t, f"drop_path_rate={spec.config.get('drop_path_rate')}: identity at inference")


@register("CustomScaleLayer")
def custom_scale(spec, x, kwargs, weights, ctx):
    scale = float(spec.config["scale"])
    return Merge(lambda xs: xs[0] + xs[1] * scale, f"inputs[0] + inputs[1] * {scale}")


@register("UnitNormalization")
def unit_normalization(spec, x, kwargs, weights, ctx):
    axes = _axes(spec.config.get("axis", -1), x.dim())

    def f(t):
        inv = torch.rsqrt(t.square().sum(dim=axes, keepdim=True))
        return t * inv.clamp(max=1e12)                  # Keras: minimum(rsqrt, 1 / 1e-12)
    return Fn(f, f"axis={axes}")


class RMSNorm(nn.Module):
    def __init__(self, shape, axes, rank, eps):
        super().__init__()
        self.axes, self.eps, self.view = axes, eps, _bcast(rank, axes, shape)
        self.scale = nn.Parameter(torch.ones(shape))

    def forward(self, x):
        ms = x.square().mean(dim=self.axes, keepdim=True)
        return x * torch.rsqrt(ms + self.eps) * self.scale.reshape(self.view)

    def extra_repr(self) -> str:
        return f"axis={self.axes}, epsilon={self.eps}"


@register("RMSNormalization", slots=[("scale", True)])
def rms_normalization(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axes = _axes(cfg.get("axis", -1), x.dim())
    shape = _param_shape(x, axes)
    eps = cfg.get("epsilon")
    m = RMSNorm(shape, axes, x.dim(), 1e-7 if eps is None else float(eps))   # None: backend.epsilon()
    ws = take(spec, weights, [("scale", shape)])
    if ws:
        set_param(m.scale, ws[0])
    return m


AUGMENT = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
           "RandomBrightness")


@register(*AUGMENT)
def augmentation(spec, x, kwargs, weights, ctx):
    return Fn(lambda t: t, "random augmentation: identity at inference")


_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
           "float64": torch.float64}


class ReversibleEmbedding(nn.Module):
    def __init__(self, n: int, d: int, tied: bool, cap, reverse_dtype):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(n, d) * 0.05)
        self.reverse_embeddings = None if tied else nn.Parameter(torch.randn(d, n) * 0.05)
        self.cap, self.reverse_dtype = cap, reverse_dtype

    def forward(self, x, reverse=False):
        if not reverse:
            return nn.functional.embedding(x.long(), self.embeddings)
        kernel = self.embeddings.T if self.reverse_embeddings is None else self.reverse_embeddings
        if self.reverse_dtype is not None:
            x, kernel = x.to(self.reverse_dtype), kernel.to(self.reverse_dtype)
        logits = x @ kernel
        return logits if self.cap is None else torch.tanh(logits / self.cap) * self.cap

    def extra_repr(self) -> str:
        n, d = self.embeddings.shape
        return f"{n}, {d}, tied={self.reverse_embeddings is None}, logit_soft_cap={self.cap}"


def _rev_slots(cfg):
    return [("embeddings", True)] + ([] if cfg.get("tie_weights", True) else [("reverse_embeddings", True)])


@register("ReversibleEmbedding", slots=_rev_slots, const_kwargs=("reverse",))
def reversible_embedding(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    n, d, tied = int(cfg["input_dim"]), int(cfg["output_dim"]), bool(cfg.get("tie_weights", True))
    rdt = cfg.get("reverse_dtype")
    if cfg.get("mask_zero") or cfg.get("quantization_config") or (rdt is not None and rdt not in _DTYPES):
        why = ("mask_zero=True" if cfg.get("mask_zero") else
               "quantization" if cfg.get("quantization_config") else f"reverse_dtype={rdt!r}")
        raise UnsupportedLayerError(message(
            f"layer {spec.path!r} (ReversibleEmbedding) uses {why}, which is not modelled",
            expected="a float ReversibleEmbedding without mask_zero",
            fix="supply a replacement with custom_layers={name: module}"))
    exp = [("embeddings", (n, d))] + ([] if tied else [("reverse_embeddings", (d, n))])
    ws = take(spec, weights, exp)
    cap = cfg.get("logit_soft_cap")
    m = ReversibleEmbedding(n, d, tied, None if cap is None else float(cap), _DTYPES.get(rdt))
    if ws:
        set_param(m.embeddings, ws[0])
        if not tied:
            set_param(m.reverse_embeddings, ws[1])
    return m
