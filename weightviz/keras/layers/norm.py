"""BatchNormalization, LayerNormalization, GroupNormalization (inference semantics).

Keras's epsilon (default 1e-3, not torch's 1e-5) and axis (channels-last terms) are kept;
absent gamma/beta (``scale``/``center`` False) mean ones/zeros (formats.md §4.2, trap 3/7).
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register, set_param, take


def _axes(axis, rank: int) -> tuple[int, ...]:
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(a % rank for a in axes))


def _param_shape(x, axes) -> tuple[int, ...]:
    return tuple(int(x.shape[a]) for a in axes)


def _bcast(rank: int, axes, shape) -> tuple[int, ...]:
    out = [1] * rank
    for a, n in zip(axes, shape):
        out[a] = n
    return tuple(out)


class BatchNorm(nn.Module):
    def __init__(self, shape, axes, rank, eps):
        super().__init__()
        self.axes, self.eps, self.view = axes, eps, _bcast(rank, axes, shape)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def forward(self, x):
        v = self.view
        inv = torch.rsqrt(self.running_var.reshape(v) + self.eps) * self.weight.reshape(v)
        return (x - self.running_mean.reshape(v)) * inv + self.bias.reshape(v)

    def extra_repr(self) -> str:
        return f"axis={self.axes}, eps={self.eps}"


def _bn_slots(cfg):
    out = []
    if cfg.get("scale", True):
        out.append(("gamma", True))
    if cfg.get("center", True):
        out.append(("beta", True))
    return out + [("moving_mean", False), ("moving_variance", False)]


@register("BatchNormalization", "SyncBatchNormalization", slots=_bn_slots)
def batch_norm(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axes = _axes(cfg.get("axis", -1), x.dim())
    shape = _param_shape(x, axes)
    names = [n for n, _ in _bn_slots(cfg)]
    ws = take(spec, weights, [(n, shape) for n in names])
    m = BatchNorm(shape, axes, x.dim(), float(cfg.get("epsilon", 1e-3)))
    if ws:
        got = dict(zip(names, ws))
        for key, target in (("gamma", m.weight), ("beta", m.bias), ("moving_mean", m.running_mean),
                            ("moving_variance", m.running_var)):
            if key in got:
                set_param(target, got[key])
    return m


class LayerNorm(nn.Module):
    def __init__(self, shape, axes, rank, eps, center, scale, rms):
        super().__init__()
        self.axes, self.eps, self.rms = axes, eps, rms
        self.view = _bcast(rank, axes, shape)
        self.weight = nn.Parameter(torch.ones(shape)) if scale else None
        self.bias = nn.Parameter(torch.zeros(shape)) if center else None

    def forward(self, x):
        if self.rms:
            y = x * torch.rsqrt((x * x).mean(dim=self.axes, keepdim=True) + self.eps)
        else:
            mean = x.mean(dim=self.axes, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=self.axes, keepdim=True)
            y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(self.view)
        if self.bias is not None:
            y = y + self.bias.reshape(self.view)
        return y

    def extra_repr(self) -> str:
        return f"axis={self.axes}, eps={self.eps}"


def _ln_slots(cfg):
    return ([("gamma", True)] if cfg.get("scale", True) else []) + \
           ([("beta", True)] if cfg.get("center", True) and not cfg.get("rms_scaling") else [])


@register("LayerNormalization", slots=_ln_slots)
def layer_norm(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axes = _axes(cfg.get("axis", -1), x.dim())
    shape = _param_shape(x, axes)
    slots = [n for n, _ in _ln_slots(cfg)]
    ws = take(spec, weights, [(n, shape) for n in slots])
    m = LayerNorm(shape, axes, x.dim(), float(cfg.get("epsilon", 1e-3)),
                  "beta" in slots, "gamma" in slots, bool(cfg.get("rms_scaling", False)))
    _set_gamma_beta(m, slots, ws)
    return m


class GroupNorm(nn.Module):
    def __init__(self, groups, channels, axis, rank, eps, center, scale):
        super().__init__()
        self.groups, self.axis, self.eps = groups, axis, eps
        self.view = _bcast(rank, (axis,), (channels,))
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None

    def forward(self, x):
        t = x.movedim(self.axis, -1)
        shp = t.shape
        t = t.reshape(shp[:-1] + (self.groups, shp[-1] // self.groups))
        red = tuple(range(1, t.dim() - 2)) + (t.dim() - 1,)
        mean = t.mean(dim=red, keepdim=True)
        var = ((t - mean) ** 2).mean(dim=red, keepdim=True)
        y = ((t - mean) * torch.rsqrt(var + self.eps)).reshape(shp).movedim(-1, self.axis)
        if self.weight is not None:
            y = y * self.weight.reshape(self.view)
        if self.bias is not None:
            y = y + self.bias.reshape(self.view)
        return y


def _gn_slots(cfg):
    return ([("gamma", True)] if cfg.get("scale", True) else []) + \
           ([("beta", True)] if cfg.get("center", True) else [])


@register("GroupNormalization", slots=_gn_slots)
def group_norm(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axis = int(cfg.get("axis", -1)) % x.dim()
    c = int(x.shape[axis])
    slots = [n for n, _ in _gn_slots(cfg)]
    ws = take(spec, weights, [(n, (c,)) for n in slots])
    m = GroupNorm(int(cfg.get("groups", 32)), c, axis, x.dim(), float(cfg.get("epsilon", 1e-3)),
                  "beta" in slots, "gamma" in slots)
    _set_gamma_beta(m, slots, ws)
    return m


def _set_gamma_beta(m, slots, ws) -> None:
    """Copy Keras's gamma/beta (present per the layer's slots) into weight/bias."""
    got = dict(zip(slots, ws or []))
    if "gamma" in got:
        set_param(m.weight, got["gamma"])
    if "beta" in got:
        set_param(m.bias, got["beta"])
