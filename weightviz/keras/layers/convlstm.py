"""ConvLSTM1D, ConvLSTM2D, ConvLSTM3D (Keras 3 ``conv_lstm.py``, tf-keras ``base_conv_lstm.py``).

What Keras computes per step (both implementations, checked in their source):
``x_g = conv(x_t, kernel_g, strides, padding, dilation_rate) + bias_g`` and
``h_g = conv(h_{t-1}, recurrent_kernel_g)`` with the recurrent convolution *always*
stride 1, padding 'same' and no dilation, whatever the layer's own settings; then the LSTM
update with gate order i, f, c, o (``kernel`` (*k, C, 4F), ``recurrent_kernel`` (*k, F, 4F),
``bias`` (4F,), each split in four along the last axis):
``c = f*c + i*act(x_c + h_c)``, ``h = o*act(c)`` (i, f, o through ``recurrent_activation``,
whose ``hard_sigmoid`` means 0.2x+0.5 in Keras 2 files, relu6(x+3)/6 in Keras 3).
'same' padding follows the TF rule (extra pixel at the end) for both convolutions.

The sequence semantics are the RNN converters': (N, T, *spatial, C) in (or (N, T, C, *spatial)
with ``data_format='channels_first'``), the last step or the whole sequence out (reversed when
``go_backwards``), ``return_state`` adds the final (h, c); ``initial_state`` is accepted, also
as Keras 2's recorded list call ``[x, h0, c0]``. ``stateful`` keeps no state between calls
(each call starts from zeros, as the other RNN converters); dropout, recurrent_dropout and
``unit_forget_bias`` (an initializer) do nothing at inference. A mask reaching a ConvLSTM
layer is refused before building (masks.py), as is Bidirectional(ConvLSTM) (rnn.py);
TimeDistributed(ConvLSTM) works like any wrapped layer (a batch of N*T sequences).
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import CorruptFileError, UnsupportedLayerError, message
from ..registry import bias_slots, register, set_param, take, tup
from .conv import CONV, pad_input
from .cudnn import seq_and_states

CLASSES = {"ConvLSTM1D": 1, "ConvLSTM2D": 2, "ConvLSTM3D": 3}


class KerasConvLSTM(nn.Module):
    """A Keras ConvLSTM layer; weights in torch conv layout (4F, C, *k) / (4F, F, *k)."""

    def __init__(self, rank, cin, filters, k, strides, dilation, padding, cl, act, rec_act,
                 use_bias, return_sequences, return_state, go_backwards, names):
        super().__init__()
        self.rank, self.filters, self.kernel_size = rank, filters, k
        self.stride, self.dilation, self.padding, self.cl = strides, dilation, padding, cl
        self.act, self.rec_act, self.names = act, rec_act, names
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards = go_backwards
        self.kernel = nn.Parameter(torch.zeros((4 * filters, cin) + k))
        self.recurrent_kernel = nn.Parameter(torch.zeros((4 * filters, filters) + k))
        self.bias = nn.Parameter(torch.zeros(4 * filters)) if use_bias else None

    def extra_repr(self) -> str:
        return (f"ConvLSTM{self.rank}D, filters={self.filters}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
                f"activation={self.names[0]}, recurrent_activation={self.names[1]}, "
                f"return_sequences={self.return_sequences}, return_state={self.return_state}, "
                f"go_backwards={self.go_backwards}"
                + ("" if self.cl else ", data_format='channels_first'"))

    def _state_in(self, s):                     # Keras layout -> channels-first
        return s.movedim(-1, 1) if self.cl else s

    def _out(self, y):                          # channels-first -> Keras layout
        return y.movedim(1, -1) if self.cl else y

    def recurrent_conv(self, h):
        """Keras's ``recurrent_conv``: stride 1, 'same' (TF rule), no dilation, no bias."""
        ones = (1,) * self.rank
        return CONV[self.rank](pad_input(h, "same", self.kernel_size, ones, ones),
                               self.recurrent_kernel)

    def forward(self, x, initial_state=None):
        x, initial_state = seq_and_states(x, initial_state)
        n, t_len = x.shape[0], x.shape[1]
        steps = x.reshape((n * t_len,) + tuple(x.shape[2:]))
        steps = self._state_in(steps)            # (N*T, C, *spatial)
        steps = pad_input(steps, self.padding, self.kernel_size, self.stride, self.dilation)
        conv = CONV[self.rank]
        xs = conv(steps, self.kernel, self.bias, self.stride, 0, self.dilation)
        xs = xs.reshape((n, t_len) + tuple(xs.shape[1:]))       # (N, T, 4F, *out)
        if self.go_backwards:
            xs = xs.flip(1)
        if initial_state is None:
            h = xs.new_zeros((n, self.filters) + tuple(xs.shape[3:]))
            c = h
        else:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
                else [initial_state]
            if len(states) != 2:
                raise CorruptFileError(message(
                    f"a ConvLSTM{self.rank}D layer gets {len(states)} initial state tensor(s)",
                    expected="two: [h, c]", fix="check that the architecture is unedited"))
            h, c = (self._state_in(s) for s in states)
        u = self.filters
        outs = []
        for t in range(t_len):
            z = xs[:, t] + self.recurrent_conv(h)
            i, f, cc, o = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
            c = self.rec_act(f) * c + self.rec_act(i) * self.act(cc)
            h = self.rec_act(o) * self.act(c)
            if self.return_sequences:
                outs.append(h)
        if self.return_sequences:
            seq = torch.stack(outs, 1)                               # (N, T, F, *out)
            out = seq.movedim(2, -1) if self.cl else seq
        else:
            out = self._out(h)
        if not self.return_state:
            return out
        return out, self._out(h), self._out(c)


def convlstm_slots(cfg) -> list[tuple[str, bool]]:
    return bias_slots(cfg, "kernel", "recurrent_kernel")


def _perm(rank):            # Keras (*k, in, out) -> torch (out, in, *k)
    return (rank + 1, rank) + tuple(range(rank))


@register("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", slots=convlstm_slots,
          tensor_kwargs=("initial_state",))
def convlstm(spec, x, kwargs, weights, ctx):
    rank = CLASSES[spec.class_name]
    cfg = spec.config
    x, _ = seq_and_states(x, None)
    where = f"layer {spec.path!r} ({spec.class_name})"
    if x.dim() != rank + 3:
        raise UnsupportedLayerError(message(
            f"{where} receives a rank-{x.dim()} input",
            expected=f"(batch, time, {rank} spatial dims, channels): rank {rank + 3}",
            got=str(tuple(x.shape))))
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise UnsupportedLayerError(message(f"data_format {fmt!r} of {where}",
                                            expected="'channels_last' or 'channels_first'"))
    cl = fmt == "channels_last"
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise UnsupportedLayerError(message(f"padding {padding!r} of {where}",
                                            expected="'valid' or 'same' (as Keras's ConvLSTM)",
                                            got=repr(cfg.get("padding"))))
    if cfg.get("time_major"):
        raise UnsupportedLayerError(message(f"{where} uses time_major=True",
                                            expected="batch-major (N, T, ...) sequences"))
    cin = int(x.shape[-1] if cl else x.shape[2])
    filters = int(cfg["filters"])
    k = tup(cfg["kernel_size"], rank)
    s = tup(cfg.get("strides", 1), rank)
    d = tup(cfg.get("dilation_rate", 1), rank)
    use_bias = cfg.get("use_bias", True)
    exp = [("kernel", k + (cin, 4 * filters)), ("recurrent_kernel", k + (filters, 4 * filters))]
    if use_bias:
        exp.append(("bias", (4 * filters,)))
    ws = take(spec, weights, exp)
    from ..activations import activation_name
    act_v = cfg.get("activation", "tanh")
    ra_v = cfg.get("recurrent_activation", "sigmoid" if ctx.major >= 3 else "hard_sigmoid")
    m = KerasConvLSTM(rank, cin, filters, k, s, d, padding, cl,
                      ctx.activation(act_v, where), ctx.activation(ra_v, where), use_bias,
                      bool(cfg.get("return_sequences", False)),
                      bool(cfg.get("return_state", False)), bool(cfg.get("go_backwards", False)),
                      (activation_name(act_v), activation_name(ra_v)))
    if ws:
        set_param(m.kernel, ws[0].transpose(_perm(rank)))
        set_param(m.recurrent_kernel, ws[1].transpose(_perm(rank)))
        if use_bias:
            set_param(m.bias, ws[2])
    return m
