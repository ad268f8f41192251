"""CuDNNLSTM and CuDNNGRU (Keras 2 / tf.keras 1.x-2.x GPU-only layers) as ``nn.LSTM`` / ``nn.GRU``.

What the cuDNN layers compute (tf-keras ``cudnn_lstm.py`` / ``cudnn_gru.py``, Keras >= 2.1.3):
tanh activation, sigmoid gates, two bias sets (input and recurrent, both added), GRU with the
reset gate applied after the recurrent matmul (``reset_after=True``). torch's ``nn.LSTM`` and
``nn.GRU`` are exact twins of those cuDNN cells, with the same two biases, so the parameter
count equals Keras's.

The weight layout is the trap. Keras stores ``kernel`` (in, G*u), ``recurrent_kernel``
(u, G*u) and ``bias`` (2*G*u,), but hands each gate's block to cuDNN *flattened without a
transpose* (``canonical_to_params(..., transpose_weights=False)``), and cuDNN reads that buffer
as a row-major (u, in) matrix W (output = W @ x). So a gate's torch weight is the Keras block's
C-order buffer reshaped to (u, in) (not its transpose), and a recurrent block is used as it is.
This is the conversion tf-keras's own HDF5 loader applies when it loads CuDNN weights into a
plain LSTM/GRU (``hdf5_format._convert_rnn_weights``: per gate ``k.T.reshape(k.shape, 'F')``
for kernels, ``k.T`` for recurrent kernels, LSTM biases summed, GRU biases reshaped (2, 3u)).
Gate order: Keras LSTM i,f,c,o = torch i,f,g,o; Keras GRU z,r,h -> torch r,z,n.

The cuDNN layers reject masks (Keras raises "Masking is not supported for CuDNN RNNs");
``stateful`` keeps no state between calls, as the other RNN converters.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import UnsupportedLayerError, message
from ..registry import register, take

CUDNN = {"CuDNNLSTM": ("LSTM", 4), "CuDNNGRU": ("GRU", 3)}


def cudnn_slots(cfg) -> list[tuple[str, bool]]:
    return [("kernel", True), ("recurrent_kernel", True), ("bias", True)]


def seq_and_states(x, initial_state):
    """Keras 2 records ``rnn(x, initial_state=s)`` as one call on the list ``[x, *s]``."""
    if isinstance(x, (list, tuple)):
        return x[0], (list(x[1:]) or initial_state)
    return x, initial_state


def _blocks(a, g):
    u = a.shape[1] // g
    return [a[:, j * u:(j + 1) * u] for j in range(g)]


def torch_weights(kind: str, kernel, recurrent_kernel, bias) -> dict:
    """Keras cuDNN arrays -> ``weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0``."""
    g = 4 if kind == "LSTM" else 3
    u = recurrent_kernel.shape[0]
    fin = kernel.shape[0]
    w_ih = [np.ascontiguousarray(k).reshape(u, fin) for k in _blocks(kernel, g)]  # cuDNN buffer
    w_hh = [np.ascontiguousarray(k) for k in _blocks(recurrent_kernel, g)]
    b_ih = [bias[j * u:(j + 1) * u] for j in range(g)]
    b_hh = [bias[(g + j) * u:(g + j + 1) * u] for j in range(g)]
    order = [0, 1, 2, 3] if kind == "LSTM" else [1, 0, 2]           # GRU: z,r,h -> r,z,n
    return {name: np.concatenate([parts[j] for j in order], axis=0)
            for name, parts in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh),
                                ("bias_ih_l0", b_ih), ("bias_hh_l0", b_hh))}


class _CuDNNMixin:
    """Keras call semantics around torch's recurrent forward: (N, T, F) in, last step or
    the sequence out (reversed when ``go_backwards``), final states when ``return_state``."""

    def _setup(self, class_name, return_sequences, return_state, go_backwards):
        self.class_name, self.return_sequences = class_name, return_sequences
        self.return_state, self.go_backwards = return_state, go_backwards

    def extra_repr(self) -> str:
        return (f"{self.class_name}, {super().extra_repr()}, return_sequences="
                f"{self.return_sequences}, return_state={self.return_state}, "
                f"go_backwards={self.go_backwards}")

    def forward(self, x, initial_state=None, mask=None):
        if mask is not None:
            raise UnsupportedLayerError(message(
                f"a {self.class_name} layer receives a mask",
                expected="no mask: Keras's cuDNN layers refuse masks ('Masking is not supported "
                         "for CuDNN RNNs')",
                fix="rebuild with mask_zero=False / without Masking, or replace the layer with "
                    "custom_layers={name: module}", got="a masked input"))
        x, initial_state = seq_and_states(x, initial_state)
        if self.go_backwards:
            x = x.flip(1)
        hx = None
        if initial_state is not None:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
                else [initial_state]
            states = [s.unsqueeze(0).contiguous() for s in states]
            hx = tuple(states) if self.is_lstm else states[0]
        out, st = super().forward(x, hx)
        y = out if self.return_sequences else out[:, -1]
        if not self.return_state:
            return y
        return (y, st[0][0], st[1][0]) if self.is_lstm else (y, st[0])


class CuDNNLSTM(_CuDNNMixin, nn.LSTM):
    is_lstm = True


class CuDNNGRU(_CuDNNMixin, nn.GRU):
    is_lstm = False


def make_cudnn(spec, cfg, class_name, fin, weights, ctx, *, go_backwards=None, return_state=None):
    kind, g = CUDNN[class_name]
    if cfg.get("time_major"):
        raise UnsupportedLayerError(message(f"layer {spec.path!r} uses time_major=True",
                                            expected="batch-major (N, T, F) sequences"))
    units = int(cfg["units"])
    ws = take(spec, weights, [("kernel", (fin, g * units)), ("recurrent_kernel", (units, g * units)),
                              ("bias", (2 * g * units,))])
    cls = CuDNNLSTM if kind == "LSTM" else CuDNNGRU
    m = cls(fin, units, batch_first=True)
    m._setup(class_name, bool(cfg.get("return_sequences", False)),
             bool(cfg.get("return_state", False)) if return_state is None else return_state,
             bool(cfg.get("go_backwards", False)) if go_backwards is None else go_backwards)
    if ws:
        with torch.no_grad():
            for name, value in torch_weights(kind, *ws).items():
                getattr(m, name).copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
    return m


@register("CuDNNLSTM", "CuDNNGRU", slots=cudnn_slots, tensor_kwargs=("initial_state",))
def cudnn_rnn(spec, x, kwargs, weights, ctx):
    x, _ = seq_and_states(x, None)
    return make_cudnn(spec, spec.config, spec.class_name, int(x.shape[-1]), weights, ctx)
