"""Keras masks (``Embedding(mask_zero=True)``, ``Masking``) reproduced at run time.

Keras attaches a boolean (N, T) mask to the tensors these layers produce and carries it
through layers that support masking (Keras 3 and tf-keras alike: Dense, activations,
dropout/noise, normalisations, merge layers, and RNNs with ``return_sequences``); any other
layer drops it. Layers that *use* it:
- SimpleRNN / LSTM / GRU / Bidirectional skip masked steps (state and output carried over;
  Bidirectional's layers output zeros there when returning sequences) — trap 8;
- GlobalAveragePooling1D averages over unmasked steps only;
- Attention / AdditiveAttention get ``mask=[query_mask, value_mask, ...]`` (one per input, as
  Keras passes them): the value mask hides value steps, the query mask zeroes output steps,
  and the output carries the query's mask.
Masks reaching MultiHeadAttention, TimeDistributed, CuDNNLSTM/GRU, ConvLSTM1D/2D/3D, a nested
model, or a Concatenate along a non-feature axis are refused (UnsupportedLayerError) before
building.
"""
from __future__ import annotations

from ..errors import UnsupportedLayerError, message
from .config import LayerSpec, ModelSpec, Ref, _walk_refs, call_order
from .registry import Context

PROPAGATE = {"Dense", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
             "ThresholdedReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
             "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
             "ActivityRegularization", "BatchNormalization", "LayerNormalization",
             "GroupNormalization", "Add", "Subtract", "Multiply", "Average", "Maximum",
             "Minimum", "Concatenate", "UnitNormalization"}
RNNS = {"SimpleRNN", "LSTM", "GRU", "Bidirectional"}
POOL = {"GlobalAveragePooling1D", "GlobalAvgPool1D"}
ATTENTION = {"Attention", "AdditiveAttention"}
REFUSE = {"MultiHeadAttention", "TimeDistributed",
          "CuDNNLSTM", "CuDNNGRU",                  # cuDNN kernels take no mask (Keras refuses too)
          "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}  # Keras would skip masked steps: not modelled


def mode(sp: LayerSpec, ctx: Context) -> str:
    """How a call treats masks: produce | propagate | rnn | pool | attention | drop."""
    if ctx.custom_key(sp) is not None:
        return "propagate"                         # like Keras's Lambda default
    if sp.class_name == "Masking" or (sp.class_name == "Embedding" and sp.config.get("mask_zero")):
        return "produce"
    if sp.class_name in RNNS:
        return "rnn"
    if sp.class_name in POOL:
        return "pool"
    if sp.class_name in ATTENTION:
        return "attention"
    return "propagate" if sp.class_name in PROPAGATE else "drop"


def _where(sp: LayerSpec, model: ModelSpec) -> str:
    return (f"layer {sp.name!r} ({sp.class_name}) at position #{sp.index} of model "
            f"{model.path.rstrip('/') or model.name!r}")


def check(model: ModelSpec, ctx: Context) -> bool:
    """Refuse masks reaching layers whose masked behaviour is not reproduced; True when the
    model produces any mask (so the runtime mask bookkeeping is needed)."""
    masked: set = set()
    any_mask = False
    for sp, k in call_order(model):
        node = sp.nodes[k]
        refs = [Ref(r.layer, r.node, r.tensor) for r in _walk_refs(node.args)]
        got = any(r in masked for r in refs)
        m = mode(sp, ctx)
        if got and (sp.inner is not None or sp.class_name in REFUSE or (
                sp.class_name == "Concatenate" and sp.config.get("axis", -1) != -1)):
            raise UnsupportedLayerError(message(
                f"{_where(sp, model)} receives a mask (from Embedding(mask_zero=True) or "
                "Masking); Keras's masked behaviour there is not reproduced by weightviz",
                expected="masks reaching only RNN, Bidirectional, GlobalAveragePooling1D, "
                         "Attention, AdditiveAttention or mask-transparent layers",
                fix="rebuild with mask_zero=False if your inputs carry no padding, or replace "
                    "the layer with custom_layers={name: module}",
                got="a masked input"))
        if sp.inner is not None:
            check(sp.inner, ctx)
        out = m == "produce" or (got and m == "propagate") or (
            got and m == "rnn" and _returns_sequences(sp)) or (
            m == "attention" and bool(refs) and refs[0] in masked)
        any_mask = any_mask or m == "produce"
        if out:
            masked.add(Ref(sp.name, k, 0))
            if sp.class_name == "Bidirectional" and sp.config.get("merge_mode", "concat") is None:
                masked.add(Ref(sp.name, k, 1))
    return any_mask


def _returns_sequences(sp: LayerSpec) -> bool:
    cfg = sp.config.get("layer", {}).get("config", {}) if sp.class_name == "Bidirectional" \
        else sp.config
    return bool(cfg.get("return_sequences", False))


def input_mask(masks: list):
    """AND of the masks of a call's inputs (None when none has one)."""
    ms = [m for m in masks if m is not None]
    if not ms:
        return None
    out = ms[0]
    for m in ms[1:]:
        out = out & m
    return out


def output_masks(call_mode: str, module, x, m_in, out, returns_sequences: bool):
    """The masks of a call's outputs, as a list aligned with its output tensors (for
    ``attention``, ``m_in`` is the query's mask: Keras's compute_mask returns it)."""
    n = len(out) if isinstance(out, (tuple, list)) else 1
    if call_mode == "produce":
        return [module.compute_mask(x)] + [None] * (n - 1)
    if m_in is None or call_mode in ("drop", "pool"):
        return [None] * n
    if call_mode == "rnn":
        if not returns_sequences:
            return [None] * n
        two = isinstance(out, tuple) and getattr(module, "merge_mode", "") is None
        return ([m_in, m_in] if two else [m_in]) + [None] * (n - (2 if two else 1))
    return [m_in] + [None] * (n - 1)
