"""Attention (Luong dot-product / concat) and AdditiveAttention (Bahdanau), Keras 2 and 3.

Called Keras-style on ``[query, value]`` or ``[query, value, key]`` (key defaults to value):

- ``Attention``: scores = ``query @ key^T`` (times the scalar ``scale`` when ``use_scale``), or
  with ``score_mode="concat"`` ``concat_score_weight * sum(tanh(scale * (q + k)), -1)``;
- ``AdditiveAttention``: scores = ``sum(scale * tanh(q + k), -1)`` (``scale`` a vector of the
  feature size when ``use_scale``, the default).

Then, as Keras does: masked-out scores (value mask, causal mask) get ``-1e9`` added, softmax
over the value axis, weights @ value, and the query mask zeroes the masked query steps. The
causal mask comes from the ``use_causal_mask`` call argument (Keras >= 2.10, Keras 3) or the
older Keras 2 ``causal`` config key. Masks come as Keras passes them, ``mask=[query_mask,
value_mask(, key_mask)]`` (the key mask is unused, as in Keras). ``return_attention_scores``
makes the layer return ``(output, attention weights)``. Dropout only acts in training, so it
is an identity here.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import CorruptFileError, message
from ..registry import register, set_param, take


class DenseAttention(nn.Module):
    """Keras Attention / AdditiveAttention on tensors in Keras layout (N, T, dim)."""

    def __init__(self, additive: bool, score_mode: str, scale_shape, concat: bool,
                 causal: bool):
        super().__init__()
        self.additive, self.score_mode, self.causal = additive, score_mode, causal
        self.scale = nn.Parameter(torch.ones(scale_shape)) if scale_shape is not None else None
        self.concat_score_weight = nn.Parameter(torch.ones(())) if concat else None

    def scores(self, q, k):
        if self.additive:
            t = torch.tanh(q.unsqueeze(-2) + k.unsqueeze(-3))
            return (t * self.scale if self.scale is not None else t).sum(dim=-1)
        if self.score_mode == "dot":
            s = torch.matmul(q, k.transpose(-2, -1))
            return s * self.scale if self.scale is not None else s
        qk = q.unsqueeze(-2) + k.unsqueeze(-3)                  # concat: (N, Tq, Tv, dim)
        if self.scale is not None:
            qk = self.scale * qk
        return self.concat_score_weight * torch.tanh(qk).sum(dim=-1)

    def forward(self, inputs, mask=None, use_causal_mask=False, return_attention_scores=False,
                training=None):
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        q_mask = _bool(mask[0]) if mask else None
        v_mask = _bool(mask[1]) if mask and len(mask) > 1 else None
        scores = self.scores(q, k)
        keep = v_mask.unsqueeze(-2) if v_mask is not None else None      # (N, 1, Tv)
        if self.causal or use_causal_mask:
            tq, tv = scores.shape[-2], scores.shape[-1]
            causal = torch.ones(tq, tv, dtype=torch.bool, device=scores.device).tril()
            keep = causal if keep is None else keep & causal
        if keep is not None:                                   # Keras: scores - 1e9 there
            scores = torch.where(keep, scores, scores - 1.0e9)
        weights = scores.softmax(dim=-1)
        out = torch.matmul(weights, v)
        if q_mask is not None:
            out = torch.where(q_mask.unsqueeze(-1), out, torch.zeros_like(out))
        return (out, weights) if return_attention_scores else out

    def extra_repr(self) -> str:
        kind = "additive" if self.additive else self.score_mode
        return (f"score={kind}, use_scale={self.scale is not None}"
                + (", causal=True" if self.causal else ""))


def _bool(m):
    if m is None or m.dtype == torch.bool:
        return m
    return m != 0


def _attention_slots(cfg):
    out = [("scale", True)] if cfg.get("use_scale", False) else []
    if cfg.get("score_mode", "dot") == "concat":
        out.append(("concat_score_weight", True))
    return out


def _additive_slots(cfg):
    return [("scale", True)] if cfg.get("use_scale", True) else []


def _inputs(spec, x):
    if not (isinstance(x, (list, tuple)) and len(x) in (2, 3)
            and all(isinstance(t, torch.Tensor) for t in x)):
        raise CorruptFileError(message(
            f"layer {spec.path!r} ({spec.class_name}) is not called on [query, value] or "
            "[query, value, key]", expected="a list of 2 or 3 tensors",
            fix="check the architecture's inbound nodes for this layer",
            got=f"{type(x).__name__} of {len(x) if isinstance(x, (list, tuple)) else 1}"))
    return list(x)


def _build(spec, x, weights, additive: bool, dim: int):
    cfg = spec.config
    score_mode = "dot" if additive else cfg.get("score_mode", "dot")
    if score_mode not in ("dot", "concat"):
        raise CorruptFileError(message(
            f"layer {spec.path!r} ({spec.class_name}) has score_mode={score_mode!r}",
            expected="'dot' or 'concat'", fix="check the architecture JSON"))
    use_scale = bool(cfg.get("use_scale", additive))
    concat = score_mode == "concat"
    scale_shape = ((dim,) if additive else ()) if use_scale else None
    exp = ([("scale", scale_shape)] if use_scale else []) + (
        [("concat_score_weight", ())] if concat else [])
    ws = take(spec, weights, exp)
    m = DenseAttention(additive, score_mode, scale_shape, concat, bool(cfg.get("causal", False)))
    if ws:
        it = iter(ws)
        if use_scale:
            set_param(m.scale, next(it))
        if concat:
            set_param(m.concat_score_weight, next(it))
    return m


CALL = dict(tensor_kwargs=("mask",),
            const_kwargs=("mask", "use_causal_mask", "return_attention_scores"))


@register("Attention", slots=_attention_slots, **CALL)
def attention(spec, x, kwargs, weights, ctx):
    q = _inputs(spec, x)[0]
    return _build(spec, x, weights, False, int(q.shape[-1]))


@register("AdditiveAttention", slots=_additive_slots, **CALL)
def additive_attention(spec, x, kwargs, weights, ctx):
    xs = _inputs(spec, x)
    # the scale vector has the feature size: Keras 3 takes it from the query, tf-keras from
    # the value (both must equal the key's for q + k to broadcast)
    ref = xs[1] if ctx.major < 3 else xs[0]
    return _build(spec, x, weights, True, int(ref.shape[-1]))
