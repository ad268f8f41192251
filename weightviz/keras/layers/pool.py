"""Pooling, global pooling, ZeroPadding, Cropping and UpSampling (1D/2D/3D).

'same' max pooling pads with -inf; 'same' average pooling divides by the number of real
(unpadded) cells, also when the padding is asymmetric (TF semantics; formats.md §4.3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import UnsupportedLayerError, message
from ..registry import channels_last, register, tup
from .conv import pad_input
from .core import Fn

MAXP = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVGP = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _rank(name: str) -> int:
    return int(name.rstrip("D")[-1])


class Pool(Fn):
    def __init__(self, kind, rank, k, s, padding, cl):
        super().__init__(None, f"{kind} pool_size={k}, strides={s}, padding={padding!r}")
        self.kind, self.rank, self.k, self.s, self.padding, self.cl = kind, rank, k, s, padding, cl

    def forward(self, x):
        if self.cl:
            x = x.movedim(-1, 1)
        ones = (1,) * self.rank
        if self.kind == "max":
            xp = pad_input(x, self.padding, self.k, self.s, ones, value=float("-inf"))
            y = MAXP[self.rank](xp, self.k, self.s)
        else:
            xp = pad_input(x, self.padding, self.k, self.s, ones)
            y = AVGP[self.rank](xp, self.k, self.s)
            if xp.shape != x.shape:               # divide by the real cells only
                mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
                mask = pad_input(mask, self.padding, self.k, self.s, ones)
                y = y / AVGP[self.rank](mask, self.k, self.s)
        return y.movedim(1, -1) if self.cl else y


@register("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "MaxPool1D", "MaxPool2D", "MaxPool3D",
          "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D",
          "AvgPool3D")
def pool(spec, x, kwargs, weights, ctx):
    cfg, rank = spec.config, _rank(spec.class_name)
    kind = "max" if spec.class_name.startswith("Max") else "avg"
    k = tup(cfg.get("pool_size", 2), rank)
    s = tup(cfg.get("strides") or k, rank)
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise UnsupportedLayerError(message(f"padding {padding!r} of layer {spec.path!r}",
                                            expected="'valid' or 'same'"))
    return Pool(kind, rank, k, s, padding, channels_last(cfg))


@register("GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalMaxPool1D",
          "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
          "GlobalAveragePooling3D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D",
          tensor_kwargs=("mask",))
def global_pool(spec, x, kwargs, weights, ctx):
    cfg, rank = spec.config, _rank(spec.class_name)
    axes = tuple(range(1, rank + 1)) if channels_last(cfg) else tuple(range(2, rank + 2))
    keep = bool(cfg.get("keepdims", False))
    if "Max" in spec.class_name:
        return Fn(lambda t: t.amax(dim=axes, keepdim=keep), f"max over axes {axes}")
    return GlobalAverage(axes, keep)


class GlobalAverage(Fn):
    """Mean over the spatial axes; with a Keras mask (1D), over the unmasked steps only."""

    def __init__(self, axes, keep):
        super().__init__(None, f"mean over axes {axes}")
        self.axes, self.keep = axes, keep

    def forward(self, x, mask=None):
        if mask is None:
            return x.mean(dim=self.axes, keepdim=self.keep)
        m = mask.unsqueeze(-1 if self.axes == (1,) else 1).to(x.dtype)
        return (x * m).sum(dim=self.axes, keepdim=self.keep) / m.sum(dim=self.axes, keepdim=self.keep)


def _pairs(v, rank) -> list[tuple[int, int]]:
    """Keras padding/cropping argument -> [(before, after)] per spatial dim."""
    if isinstance(v, int):
        return [(v, v)] * rank
    v = list(v)
    if rank == 1 and len(v) == 2 and all(isinstance(a, int) for a in v):
        return [(v[0], v[1])]
    out = []
    for a in v:
        out.append((a, a) if isinstance(a, int) else (int(a[0]), int(a[1])))
    return out


def _spatial(x, cl: bool, rank: int, i: int) -> int:
    return (1 + i) if cl else (2 + i)


@register("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")
def zero_padding(spec, x, kwargs, weights, ctx):
    cfg, rank = spec.config, _rank(spec.class_name)
    pairs, cl = _pairs(cfg.get("padding", 1), rank), channels_last(cfg)
    pads = [0, 0] if cl else []
    for b, a in reversed(pairs):
        pads += [b, a]
    return Fn(lambda t: F.pad(t, pads), f"padding={pairs}")


@register("Cropping1D", "Cropping2D", "Cropping3D")
def cropping(spec, x, kwargs, weights, ctx):
    cfg, rank = spec.config, _rank(spec.class_name)
    pairs, cl = _pairs(cfg.get("cropping", 1), rank), channels_last(cfg)

    def f(t):
        for i, (b, a) in enumerate(pairs):
            dim = _spatial(t, cl, rank, i)
            t = t.narrow(dim, b, t.shape[dim] - b - a)
        return t
    return Fn(f, f"cropping={pairs}")


@register("UpSampling1D", "UpSampling2D", "UpSampling3D")
def upsampling(spec, x, kwargs, weights, ctx):
    cfg, rank = spec.config, _rank(spec.class_name)
    size = tup(cfg.get("size", 2), rank)
    cl = channels_last(cfg)
    interp = cfg.get("interpolation", "nearest")
    if interp == "nearest":
        def f(t):
            for i, r in enumerate(size):
                t = t.repeat_interleave(r, dim=_spatial(t, cl, rank, i))
            return t
        return Fn(f, f"size={size}, nearest")
    if interp != "bilinear" or rank != 2:
        raise UnsupportedLayerError(message(
            f"UpSampling interpolation {interp!r} of layer {spec.path!r} is not supported",
            expected="'nearest', or 'bilinear' in 2D",
            fix="supply a replacement with custom_layers={name: module}"))

    def g(t):
        t = t.movedim(-1, 1) if cl else t
        y = F.interpolate(t, scale_factor=size, mode="bilinear", align_corners=False)
        return y.movedim(1, -1) if cl else y
    return Fn(g, f"size={size}, bilinear")
