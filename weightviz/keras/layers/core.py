"""Core layers: Dense, activations, train-only noise, reshaping, Embedding, Masking."""
from __future__ import annotations

import torch
from torch import nn

from ...errors import CorruptFileError, UnsupportedLayerError, message
from ..registry import register, set_param, take


class Fn(nn.Module):
    """A weightless layer: a function of its input (kept printable through ``text``)."""

    def __init__(self, fn, text: str = ""):
        super().__init__()
        self.fn, self.text = fn, text

    def forward(self, x):
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.text


class Dense(nn.Linear):
    """Keras Dense: ``act(x @ kernel + bias)`` on the last axis (any rank)."""

    def __init__(self, fin: int, fout: int, bias: bool, act, act_name: str):
        import warnings
        with warnings.catch_warnings():      # zero-width input: torch warns its init is a no-op
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(fin, fout, bias=bias)
        self.act, self.act_name = act, act_name

    def forward(self, x):
        return self.act(super().forward(x))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.act_name}"


@register("Dense", slots=lambda c: [("kernel", True)] + ([("bias", True)] if c.get("use_bias", True) else []))
def dense(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    fin, units = int(x.shape[-1]), int(cfg.get("units", cfg.get("output_dim")))   # Keras 1
    if units < 1:
        raise CorruptFileError(message(f"layer {spec.path!r} (Dense) has {units} units",
                                       expected="a positive number of units, as Keras requires",
                                       fix="the config is damaged: re-save the model", got=f"units={units}"))
    use_bias = cfg.get("use_bias", True)
    exp = [("kernel", (fin, units))] + ([("bias", (units,))] if use_bias else [])
    ws = take(spec, weights, exp)
    act = ctx.activation(cfg.get("activation"), f"layer {spec.path!r}")
    from ..activations import activation_name
    m = Dense(fin, units, use_bias, act, activation_name(cfg.get("activation")))
    if ws:
        set_param(m.weight, ws[0].T)
        if use_bias:
            set_param(m.bias, ws[1])
    return m


@register("Activation")
def activation(spec, x, kwargs, weights, ctx):
    from ..activations import activation_name
    a = spec.config.get("activation")
    return Fn(ctx.activation(a, f"layer {spec.path!r}"), activation_name(a))


@register("ReLU")
def relu(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    mx, slope, th = cfg.get("max_value"), float(cfg.get("negative_slope") or 0.0), float(cfg.get("threshold") or 0.0)

    def f(t):
        y = torch.where(t > th, t, torch.zeros_like(t))
        if mx is not None:
            y = y.clamp(0.0, float(mx))
        return y - slope * torch.relu(th - t) if slope else y
    return Fn(f, f"max_value={mx}, negative_slope={slope}, threshold={th}")


@register("LeakyReLU")
def leaky_relu(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
    slope = 0.3 if slope is None else float(slope)
    return Fn(lambda t: torch.nn.functional.leaky_relu(t, slope), f"negative_slope={slope}")


@register("ELU")
def elu(spec, x, kwargs, weights, ctx):
    alpha = float(spec.config.get("alpha", 1.0))
    return Fn(lambda t: torch.nn.functional.elu(t, alpha), f"alpha={alpha}")


@register("ThresholdedReLU")
def thresholded_relu(spec, x, kwargs, weights, ctx):
    theta = float(spec.config.get("theta", 1.0))
    return Fn(lambda t: torch.where(t > theta, t, torch.zeros_like(t)), f"theta={theta}")


@register("Softmax")
def softmax(spec, x, kwargs, weights, ctx):
    axis = spec.config.get("axis", -1)
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    if len(axes) == 1:
        return Fn(lambda t: t.softmax(dim=axes[0]), f"axis={axes[0]}")
    return Fn(lambda t: torch.exp(t - torch.logsumexp(t, dim=axes, keepdim=True)), f"axis={axes}")


class PReLU(nn.Module):
    def __init__(self, alpha_shape):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(alpha_shape))

    def forward(self, x):
        return torch.where(x >= 0, x, self.alpha * x)


@register("PReLU", slots=[("alpha", True)])
def prelu(spec, x, kwargs, weights, ctx):
    shape = list(x.shape[1:])
    for ax in spec.config.get("shared_axes") or []:
        shape[ax - 1] = 1
    ws = take(spec, weights, [("alpha", tuple(shape))])
    m = PReLU(tuple(shape))
    if ws:
        set_param(m.alpha, ws[0])
    return m


NOISE = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
         "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")


@register(*NOISE)
def identity(spec, x, kwargs, weights, ctx):
    return Fn(lambda t: t, "identity at inference")


@register("Flatten")
def flatten(spec, x, kwargs, weights, ctx):
    if spec.config.get("data_format") == "channels_first" and x.dim() > 2:
        # Keras moves channels last before flattening (formats.md §4.4)
        return Fn(lambda t: t.movedim(1, -1).reshape(t.shape[0], -1), "channels_first -> last")
    return Fn(lambda t: t.reshape(t.shape[0], -1), "channels-last (H, W, C) order")


@register("Reshape")
def reshape(spec, x, kwargs, weights, ctx):
    target = tuple(int(d) for d in spec.config["target_shape"])
    return Fn(lambda t: t.reshape((t.shape[0],) + target), f"target_shape={target}")


@register("Permute")
def permute(spec, x, kwargs, weights, ctx):
    dims = tuple(int(d) for d in spec.config["dims"])
    return Fn(lambda t: t.permute((0,) + dims), f"dims={dims}")


@register("RepeatVector")
def repeat_vector(spec, x, kwargs, weights, ctx):
    n = int(spec.config["n"])
    return Fn(lambda t: t.unsqueeze(1).expand(t.shape[0], n, t.shape[1]), f"n={n}")


class Embedding(nn.Embedding):
    def forward(self, x):
        return super().forward(x.long())

    def compute_mask(self, x):
        return x != 0


@register("Embedding", slots=[("embeddings", True)])
def embedding(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    n, d = int(cfg["input_dim"]), int(cfg["output_dim"])
    ws = take(spec, weights, [("embeddings", (n, d))])
    m = Embedding(n, d)
    if ws:
        set_param(m.weight, ws[0])
    return m


@register("Masking")
def masking(spec, x, kwargs, weights, ctx):
    return Masking(float(spec.config.get("mask_value", 0.0)))


class Masking(Fn):
    """Zeroes the steps whose features all equal ``mask_value``, and masks them."""

    def __init__(self, value: float):
        super().__init__(None, f"mask_value={value}")
        self.value = value

    def compute_mask(self, x):
        return (x != self.value).any(dim=-1)

    def forward(self, x):
        return x * self.compute_mask(x).unsqueeze(-1).to(x.dtype)


@register("InputLayer")
def input_layer(spec, x, kwargs, weights, ctx):
    return Fn(lambda t: t, "model input")


def _custom_check(module, spec):
    if not isinstance(module, nn.Module) and not callable(module):
        raise UnsupportedLayerError(message(
            f"custom_layers[{spec.name!r}] is not a torch module",
            expected="an nn.Module (or a callable) that replaces the layer",
            got=type(module).__name__))
    return module if isinstance(module, nn.Module) else Fn(module, getattr(module, "__name__", ""))



@register("Identity")
def identity_layer(spec, x, kwargs, weights, ctx):
    return Fn(lambda t: t, "identity")


class Rescaling(nn.Module):
    """``x * scale + offset`` in the module's dtype (float32, or float64 after ``.double()``);
    integer images are cast to it first, as Keras casts them to the layer's compute dtype."""

    def __init__(self, scale, offset, text: str):
        super().__init__()
        self.text = text
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32), persistent=False)

    def forward(self, x):
        x = x.to(self.scale.dtype) if not x.is_floating_point() else x
        return x * self.scale + self.offset

    def extra_repr(self) -> str:
        return self.text


@register("Rescaling")
def rescaling(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    return Rescaling(cfg.get("scale", 1.0), cfg.get("offset", 0.0),
                     f"scale={cfg.get('scale')}, offset={cfg.get('offset')}")


class Normalization(nn.Module):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse (Keras preprocessing layer)."""

    def __init__(self, shape, view, invert):
        super().__init__()
        self.view, self.invert = view, invert
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("variance", torch.ones(shape))

    def forward(self, x):
        mean, std = self.mean.reshape(self.view), self.variance.reshape(self.view).sqrt().clamp(min=1e-7)
        return mean + x * std if self.invert else (x - mean) / std


def _norm_slots(cfg):
    if cfg.get("mean") is not None:
        return []
    return [("mean", False), ("variance", False), ("count", False)]


@register("Normalization", slots=_norm_slots)
def normalization(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    axis = cfg.get("axis", -1)
    axes = [axis] if isinstance(axis, int) else list(axis or [])
    keep = sorted(a % x.dim() for a in axes)
    shape = tuple(int(x.shape[a]) for a in keep)
    view = tuple(int(x.shape[d]) if d in keep else 1 for d in range(x.dim()))
    m = Normalization(shape, view, bool(cfg.get("invert", False)))
    if cfg.get("mean") is not None:
        mean = torch.as_tensor(cfg["mean"], dtype=torch.float32)
        var = torch.as_tensor(cfg["variance"], dtype=torch.float32)
        with torch.no_grad():
            m.mean.copy_(torch.broadcast_to(mean, shape))
            m.variance.copy_(torch.broadcast_to(var, shape))
        return m
    ws = take(spec, weights, [("mean", shape), ("variance", shape), ("count", ())])
    if ws:
        set_param(m.mean, ws[0])
        set_param(m.variance, ws[1])
    return m
