"""Convolutions: Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1D/2D/3DTranspose.

Modules take Keras-layout tensors (channels-last unless the layer says channels_first) and
work channels-first inside. 'same' padding is computed per input size at run time with the
TF rule (extra pixel at the end, formats.md §4.3); 'causal' left-pads by (k-1)*d; transposed
'same'/'valid' outputs are cropped/extended by hand (torch padding cannot express k=3, s=2).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..registry import bias_slots, channels_last, register, set_param, take, tup

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) for one spatial dim."""
    out = -(-size // s)
    k_eff = (k - 1) * d + 1
    total = max((out - 1) * s + k_eff - size, 0)
    return total // 2, total - total // 2


def pad_input(x, padding: str, k: tuple, s: tuple, d: tuple, value: float = 0.0):
    """Pad a channels-first tensor for Keras 'same'/'causal' padding (no-op for 'valid')."""
    if padding == "valid":
        return x
    rank = len(k)
    pads: list[int] = []
    for i in reversed(range(rank)):               # F.pad wants the last dim first
        if padding == "causal":
            pads += [(k[i] - 1) * d[i], 0]
        else:
            pads += list(same_pads(x.shape[2 + i], k[i], s[i], d[i]))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)


class KerasConv(nn.Module):
    """Conv/Depthwise/Separable convolution with Keras padding and layout."""

    def __init__(self, rank, weight_shape, bias_n, stride, dilation, groups, padding, cl, act,
                 pointwise_shape=None):
        super().__init__()
        self.rank, self.stride, self.dilation, self.groups = rank, stride, dilation, groups
        self.padding, self.cl, self.act = padding, cl, act
        self.kernel_size = tuple(weight_shape[2:])
        self.weight = nn.Parameter(torch.zeros(weight_shape))
        self.pointwise = nn.Parameter(torch.zeros(pointwise_shape)) if pointwise_shape else None
        self.bias = nn.Parameter(torch.zeros(bias_n)) if bias_n else None

    def forward(self, x):
        if self.cl:
            x = x.movedim(-1, 1)
        x = pad_input(x, self.padding, self.kernel_size, self.stride, self.dilation)
        conv = CONV[self.rank]
        if self.pointwise is None:
            y = conv(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        else:
            y = conv(x, self.weight, None, self.stride, 0, self.dilation, self.groups)
            y = conv(y, self.pointwise, self.bias)
        y = self.act(y)
        return y.movedim(1, -1) if self.cl else y

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"dilation={self.dilation}, groups={self.groups}")


def _common(spec, x, rank, ctx):
    cfg = spec.config
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same", "causal"):
        raise UnsupportedLayerError(message(f"padding {padding!r} of layer {spec.path!r}",
                                            expected="'valid', 'same' or 'causal'"))
    cl = channels_last(cfg)
    cin = int(x.shape[-1] if cl else x.shape[1])
    k = tup(cfg["kernel_size"], rank)
    s = tup(cfg.get("strides", 1), rank)
    d = tup(cfg.get("dilation_rate", 1), rank)
    act = ctx.activation(cfg.get("activation"), f"layer {spec.path!r}")
    return cfg, padding, cl, cin, k, s, d, act


def _perm_in(rank):       # Keras (k..., in, out) -> torch (out, in, k...)
    return (rank + 1, rank) + tuple(range(rank))


@register("Conv1D", "Conv2D", "Conv3D", slots=lambda c: bias_slots(c, "kernel"))
def conv(spec, x, kwargs, weights, ctx):
    rank = int(spec.class_name[-2])
    cfg, padding, cl, cin, k, s, d, act = _common(spec, x, rank, ctx)
    g, out = int(cfg.get("groups", 1)), int(cfg["filters"])
    use_bias = cfg.get("use_bias", True)
    ws = take(spec, weights, [("kernel", k + (cin // g, out))] + ([("bias", (out,))] if use_bias else []))
    m = KerasConv(rank, (out, cin // g) + k, out if use_bias else 0, s, d, g, padding, cl, act)
    if ws:
        set_param(m.weight, ws[0].transpose(_perm_in(rank)))
        if use_bias:
            set_param(m.bias, ws[1])
    return m


def _depthwise_weight(w, rank):
    # (k..., in, dm) -> (in*dm, 1, k...); output channel c*dm + m
    cin, dm = w.shape[-2], w.shape[-1]
    perm = (rank, rank + 1) + tuple(range(rank))
    return w.transpose(perm).reshape((cin * dm, 1) + w.shape[:rank])


@register("DepthwiseConv1D", "DepthwiseConv2D", slots=lambda c: bias_slots(c, "kernel"))
def depthwise(spec, x, kwargs, weights, ctx):
    rank = int(spec.class_name[-2])
    cfg, padding, cl, cin, k, s, d, act = _common(spec, x, rank, ctx)
    dm = int(cfg.get("depth_multiplier", 1))
    use_bias = cfg.get("use_bias", True)
    ws = take(spec, weights, [("kernel", k + (cin, dm))] + ([("bias", (cin * dm,))] if use_bias else []))
    m = KerasConv(rank, (cin * dm, 1) + k, cin * dm if use_bias else 0, s, d, cin, padding, cl, act)
    if ws:
        set_param(m.weight, _depthwise_weight(ws[0], rank))
        if use_bias:
            set_param(m.bias, ws[1])
    return m


@register("SeparableConv1D", "SeparableConv2D", slots=lambda c: bias_slots(c, "depthwise_kernel", "pointwise_kernel"))
def separable(spec, x, kwargs, weights, ctx):
    rank = int(spec.class_name[-2])
    cfg, padding, cl, cin, k, s, d, act = _common(spec, x, rank, ctx)
    dm, out = int(cfg.get("depth_multiplier", 1)), int(cfg["filters"])
    use_bias = cfg.get("use_bias", True)
    exp = [("depthwise_kernel", k + (cin, dm)), ("pointwise_kernel", (1,) * rank + (cin * dm, out))]
    ws = take(spec, weights, exp + ([("bias", (out,))] if use_bias else []))
    m = KerasConv(rank, (cin * dm, 1) + k, out if use_bias else 0, s, d, cin, padding, cl, act,
                  pointwise_shape=(out, cin * dm) + (1,) * rank)
    if ws:
        set_param(m.weight, _depthwise_weight(ws[0], rank))
        set_param(m.pointwise, ws[1].transpose(_perm_in(rank)))
        if use_bias:
            set_param(m.bias, ws[2])
    return m


class KerasConvTranspose(nn.Module):
    def __init__(self, rank, weight_shape, bias_n, stride, dilation, padding, out_pad, cl, act):
        super().__init__()
        self.rank, self.stride, self.dilation = rank, stride, dilation
        self.padding, self.out_pad, self.cl, self.act = padding, out_pad, cl, act
        self.kernel_size = tuple(weight_shape[2:])
        self.weight = nn.Parameter(torch.zeros(weight_shape))
        self.bias = nn.Parameter(torch.zeros(bias_n)) if bias_n else None

    def _target(self, size: int, i: int) -> tuple[int, int]:
        """(start, length) of the Keras output inside torch's full (padding=0) output."""
        k, s, d = self.kernel_size[i], self.stride[i], self.dilation[i]
        k_eff = (k - 1) * d + 1
        if self.out_pad is None:
            if self.padding == "valid":
                return 0, (size - 1) * s + max(k_eff, s)
            return max(k_eff - s, 0) // 2, size * s
        pad = 0 if self.padding == "valid" else k_eff // 2
        return pad, (size - 1) * s + k_eff - 2 * pad + self.out_pad[i]

    def forward(self, x):
        if self.cl:
            x = x.movedim(-1, 1)
        y = CONVT[self.rank](x, self.weight, None, self.stride, 0, 0, 1, self.dilation)
        for i in range(self.rank):
            start, length = self._target(x.shape[2 + i], i)
            y = y.narrow(2 + i, start, min(length, y.shape[2 + i] - start))
            if y.shape[2 + i] < length:          # Keras output is longer: zeros at the end
                pads = [0, 0] * (self.rank - 1 - i) + [0, length - y.shape[2 + i]]
                y = F.pad(y, pads)
        if self.bias is not None:
            y = y + self.bias.reshape((1, -1) + (1,) * self.rank)
        y = self.act(y)
        return y.movedim(1, -1) if self.cl else y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}"


@register("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
          slots=lambda c: bias_slots(c, "kernel"))
def conv_transpose(spec, x, kwargs, weights, ctx):
    rank = int(spec.class_name.replace("Transpose", "")[-2])
    cfg, padding, cl, cin, k, s, d, act = _common(spec, x, rank, ctx)
    if int(cfg.get("groups", 1)) != 1:
        raise UnsupportedLayerError(message(f"grouped transposed convolution {spec.path!r}",
                                            expected="groups=1"))
    out = int(cfg["filters"])
    op = cfg.get("output_padding")
    op = None if op is None else tup(op, rank)
    use_bias = cfg.get("use_bias", True)
    ws = take(spec, weights, [("kernel", k + (out, cin))] + ([("bias", (out,))] if use_bias else []))
    m = KerasConvTranspose(rank, (cin, out) + k, out if use_bias else 0, s, d, padding, op, cl, act)
    if ws:
        set_param(m.weight, ws[0].transpose(_perm_in(rank)))
        if use_bias:
            set_param(m.bias, ws[1])
    return m
