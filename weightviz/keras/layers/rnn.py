"""SimpleRNN, LSTM, GRU (reset_after True and False), Bidirectional (also of CuDNNLSTM/GRU).

One explicit time loop implements Keras's cells exactly, with any activation and
recurrent_activation (so Keras 2's slope-0.2 ``hard_sigmoid`` and GRU ``reset_after=False``,
which has no ``nn.GRU`` twin, are exact). Weights keep Keras's layout (``kernel`` (in, G*u),
``recurrent_kernel`` (u, G*u), ``bias``) and gate order (LSTM i,f,c,o; GRU z,r,h).

Output semantics (formats.md §4.6): ``return_sequences=False`` gives the last step;
``go_backwards`` output stays reversed; Bidirectional flips the backward sequence back and
uses each direction's final state. With a Keras mask, masked steps carry the previous state
and output forward (zeros as output inside Bidirectional with return_sequences), as Keras.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..registry import register, set_param, take
from .cudnn import CUDNN, make_cudnn, seq_and_states

GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
KINDS = {"SimpleRNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU"}


def rnn_slots(cfg) -> list[tuple[str, bool]]:
    return [("kernel", True), ("recurrent_kernel", True)] + (
        [("bias", True)] if cfg.get("use_bias", True) else [])


class KerasRNN(nn.Module):
    def __init__(self, kind, fin, units, act, rec_act, use_bias, reset_after, return_sequences,
                 return_state, go_backwards, act_names=("tanh", "sigmoid")):
        super().__init__()
        g = GATES[kind]
        self.kind, self.units, self.act, self.rec_act = kind, units, act, rec_act
        self.reset_after, self.return_sequences = reset_after, return_sequences
        self.return_state, self.go_backwards, self.act_names = return_state, go_backwards, act_names
        self.kernel = nn.Parameter(torch.zeros(fin, g * units))
        self.recurrent_kernel = nn.Parameter(torch.zeros(units, g * units))
        bias_shape = (2, g * units) if (kind == "GRU" and reset_after) else (g * units,)
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if use_bias else None

    def extra_repr(self) -> str:
        return (f"{self.kind}, units={self.units}, activation={self.act_names[0]}, "
                f"recurrent_activation={self.act_names[1]}, return_sequences={self.return_sequences}"
                f", return_state={self.return_state}, go_backwards={self.go_backwards}"
                + (f", reset_after={self.reset_after}" if self.kind == "GRU" else ""))

    zero_output_for_mask = False            # Bidirectional sets it when returning sequences

    def forward(self, x, initial_state=None, mask=None):
        x, initial_state = seq_and_states(x, initial_state)
        n, t_len, _ = x.shape
        u = self.units
        b_in = b_rec = None
        if self.bias is not None:
            if self.bias.dim() == 2:
                b_in, b_rec = self.bias[0], self.bias[1]
            else:
                b_in = self.bias
        xs = x @ self.kernel
        if b_in is not None:
            xs = xs + b_in
        if self.go_backwards:
            xs = xs.flip(1)
        if mask is not None:
            mask = (mask.flip(1) if self.go_backwards else mask).bool().unsqueeze(-1)
        if initial_state is None:
            states = [x.new_zeros(n, u)] * (2 if self.kind == "LSTM" else 1)
        else:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        h = states[0]
        c = states[1] if self.kind == "LSTM" else None
        rk = self.recurrent_kernel
        outs = []
        prev = x.new_zeros(n, u)
        for t in range(t_len):
            xt = xs[:, t]
            h_old, c_old = h, c
            if self.kind == "SimpleRNN":
                h = self.act(xt + h @ rk)
            elif self.kind == "LSTM":
                z = xt + h @ rk
                i, f, cc, o = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
                c = self.rec_act(f) * c + self.rec_act(i) * self.act(cc)
                h = self.rec_act(o) * self.act(c)
            elif self.reset_after:
                inner = h @ rk
                if b_rec is not None:
                    inner = inner + b_rec
                z = self.rec_act(xt[:, :u] + inner[:, :u])
                r = self.rec_act(xt[:, u:2 * u] + inner[:, u:2 * u])
                hh = self.act(xt[:, 2 * u:] + r * inner[:, 2 * u:])
                h = z * h + (1 - z) * hh
            else:                                  # reset_after=False: reset before the matmul
                zr = xt[:, :2 * u] + h @ rk[:, :2 * u]
                z, r = self.rec_act(zr[:, :u]), self.rec_act(zr[:, u:])
                hh = self.act(xt[:, 2 * u:] + (r * h) @ rk[:, 2 * u:])
                h = z * h + (1 - z) * hh
            out_t = h
            if mask is not None:                 # Keras: masked steps keep state and output
                mt = mask[:, t]
                out_t = torch.where(mt, h, torch.zeros_like(h) if self.zero_output_for_mask else prev)
                h = torch.where(mt, h, h_old)
                if c is not None:
                    c = torch.where(mt, c, c_old)
                prev = out_t
            if self.return_sequences:
                outs.append(out_t)
        out = torch.stack(outs, 1) if self.return_sequences else out_t
        if not self.return_state:
            return out
        return (out, h, c) if self.kind == "LSTM" else (out, h)


def _check_cfg(spec, cfg):
    if cfg.get("time_major"):
        raise UnsupportedLayerError(message(f"layer {spec.path!r} uses time_major=True",
                                            expected="batch-major (N, T, F) sequences"))


def make_rnn(spec, cfg, class_name, fin, weights, ctx, *, go_backwards=None, return_state=None):
    kind = KINDS[class_name]
    _check_cfg(spec, cfg)
    units = int(cfg["units"])
    g = GATES[kind]
    use_bias = cfg.get("use_bias", True)
    default_ra = True if ctx.major >= 3 else None
    reset_after = bool(cfg.get("reset_after", default_ra if default_ra is not None else False))
    if kind != "GRU":
        reset_after = False
    bias_shape = (2, g * units) if (kind == "GRU" and reset_after) else (g * units,)
    exp = [("kernel", (fin, g * units)), ("recurrent_kernel", (units, g * units))]
    if use_bias:
        exp.append(("bias", bias_shape))
    ws = take(spec, weights, exp)
    where = f"layer {spec.path!r}"
    act_v = cfg.get("activation", "tanh")
    ra_default = "sigmoid" if ctx.major >= 3 else "hard_sigmoid"
    ra_v = cfg.get("recurrent_activation", ra_default)
    act = ctx.activation(act_v, where)
    rec_act = ctx.activation(ra_v, where) if kind != "SimpleRNN" else None
    from ..activations import activation_name
    m = KerasRNN(kind, fin, units, act, rec_act, use_bias, reset_after,
                 bool(cfg.get("return_sequences", False)),
                 bool(cfg.get("return_state", False)) if return_state is None else return_state,
                 bool(cfg.get("go_backwards", False)) if go_backwards is None else go_backwards,
                 (activation_name(act_v), activation_name(ra_v) if kind != "SimpleRNN" else "-"))
    if ws:
        set_param(m.kernel, ws[0])
        set_param(m.recurrent_kernel, ws[1])
        if use_bias:
            set_param(m.bias, ws[2])
    return m


@register("SimpleRNN", "LSTM", "GRU", slots=rnn_slots, tensor_kwargs=("initial_state", "mask"))
def rnn(spec, x, kwargs, weights, ctx):
    x, _ = seq_and_states(x, None)
    return make_rnn(spec, spec.config, spec.class_name, int(x.shape[-1]), weights, ctx)


def _inner(cfg_entry):
    return cfg_entry.get("class_name"), cfg_entry.get("config") or {}


def bidir_parts(cfg):
    fwd_cls, fwd_cfg = _inner(cfg["layer"])
    if cfg.get("backward_layer"):
        bwd_cls, bwd_cfg = _inner(cfg["backward_layer"])
    else:
        bwd_cls, bwd_cfg = fwd_cls, copy.deepcopy(fwd_cfg)
        bwd_cfg["go_backwards"] = not fwd_cfg.get("go_backwards", False)
    return (fwd_cls, fwd_cfg), (bwd_cls, bwd_cfg)


def bidir_slots(cfg):
    (fc, fcfg), (bc, bcfg) = bidir_parts(cfg)
    return rnn_slots(fcfg) + rnn_slots(bcfg)


class Bidirectional(nn.Module):
    def __init__(self, forward_layer, backward_layer, merge_mode, return_sequences, return_state):
        super().__init__()
        self.forward_layer, self.backward_layer = forward_layer, backward_layer
        self.merge_mode, self.return_sequences = merge_mode, return_sequences
        self.return_state = return_state

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode}"

    def forward(self, x, initial_state=None, mask=None):
        x, initial_state = seq_and_states(x, initial_state)
        fs = bs = None
        if initial_state is not None:
            half = len(initial_state) // 2
            fs, bs = initial_state[:half], initial_state[half:]
        yf, yb = self.forward_layer(x, fs, mask), self.backward_layer(x, bs, mask)
        sf, sb = (), ()
        if self.return_state:
            yf, sf = yf[0], tuple(yf[1:])
            yb, sb = yb[0], tuple(yb[1:])
        if self.return_sequences:
            yb = yb.flip(1)
        mode = self.merge_mode
        if mode == "concat":
            y = torch.cat([yf, yb], dim=-1)
        elif mode == "sum":
            y = yf + yb
        elif mode == "mul":
            y = yf * yb
        elif mode == "ave":
            y = (yf + yb) / 2
        else:
            y = (yf, yb)
        if not self.return_state:
            return y
        return (tuple(y) if isinstance(y, tuple) else (y,)) + sf + sb


@register("Bidirectional", slots=bidir_slots, tensor_kwargs=("initial_state", "mask"))
def bidirectional(spec, x, kwargs, weights, ctx):
    cfg = spec.config
    (fc, fcfg), (bc, bcfg) = bidir_parts(cfg)
    for cls in (fc, bc):
        if cls not in KINDS and cls not in CUDNN:
            raise UnsupportedLayerError(message(
                f"layer {spec.path!r} (Bidirectional) wraps a {cls}",
                expected="SimpleRNN, LSTM, GRU, CuDNNLSTM or CuDNNGRU inside Bidirectional",
                fix="supply a replacement with custom_layers={name: module}"))
    nf = len(rnn_slots(fcfg))
    wf, wb = (None, None) if weights is None else (weights[:nf], weights[nf:])
    fin = int(seq_and_states(x, None)[0].shape[-1])
    rs = bool(fcfg.get("return_state", False))
    fwd = (make_cudnn if fc in CUDNN else make_rnn)(spec, fcfg, fc, fin, wf, ctx, return_state=rs)
    bwd = (make_cudnn if bc in CUDNN else make_rnn)(spec, bcfg, bc, fin, wb, ctx, return_state=rs)
    mode = cfg.get("merge_mode", "concat")
    if mode not in ("concat", "sum", "mul", "ave", None):
        raise UnsupportedLayerError(message(f"merge_mode {mode!r} of layer {spec.path!r}",
                                            expected="concat, sum, mul, ave or None"))
    seqs = bool(fcfg.get("return_sequences", False))
    fwd.zero_output_for_mask = bwd.zero_output_for_mask = seqs     # as Keras's Bidirectional
    return Bidirectional(fwd, bwd, mode, seqs, rs)
