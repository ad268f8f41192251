"""CuDNNLSTM / CuDNNGRU (Keras 2 GPU-only layers) rebuilt as nn.LSTM / nn.GRU.

The fixture k2_cudnn (tests/fixtures/make_keras_models.py) was written by tf-keras 2.21 with
real CuDNN layers; its reference predictions come from tf-keras itself: the plain twin model
(LSTM/GRU with sigmoid gates, GRU reset_after=True) after tf-keras's loader converted the
CuDNN weights, cross-checked when the fixture was written against the CuDNN layers run on a
kernel that implements cuDNN's documented equations. test_keras_build.py checks every file
form; here: negative controls showing that the tests would catch each wrong mapping, and the
layer's edges (stateful, time_major, masks, wrong weights).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weightviz  # noqa: E402
from weightviz.errors import MismatchError, UnsupportedLayerError  # noqa: E402
from weightviz.keras import build_from_checkpoint, build_model  # noqa: E402
from tests.test_keras_build import io, npz_weights as weights_of  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "keras_models"
TOL = 1e-5


@pytest.fixture(scope="module")
def data():
    return io("k2_cudnn")


@pytest.fixture(scope="module")
def arch():
    return json.loads((FIX / "k2_cudnn.json").read_text())


def max_error(model, data) -> float:
    with torch.no_grad():
        ys = model(data["x0"])
    ys = ys if isinstance(ys, tuple) else (ys,)
    return max(float(np.abs(y.numpy().astype(np.float64) - data[f"y{i}"]).max())
               for i, y in enumerate(ys))


def built(data):
    model = build_from_checkpoint(weightviz.open(str(FIX / "k2_cudnn.h5")))
    assert max_error(model, data) <= TOL
    return model


def test_fixture_is_real_cudnn_layers(arch):
    classes = {la["class_name"] for la in arch["config"]["layers"]}
    inner = {la["config"]["layer"]["class_name"] for la in arch["config"]["layers"]
             if la["class_name"] == "Bidirectional"}
    assert {"CuDNNLSTM", "CuDNNGRU"} <= classes and inner == {"CuDNNLSTM", "CuDNNGRU"}
    assert arch["keras_version"].startswith("2.")


def test_modules_are_torch_lstm_gru_with_keras_param_count(data):
    model = built(data)
    assert isinstance(model.clstm_seq, torch.nn.LSTM) and isinstance(model.cgru_back, torch.nn.GRU)
    assert isinstance(model.bi_clstm.backward_layer, torch.nn.LSTM)
    keras_count = sum(v.size for k, v in data.items() if k.startswith("w:"))     # 710
    assert sum(p.numel() for p in model.parameters()) == keras_count
    assert f"total params                {keras_count}" in repr(model)
    assert "clstm_seq (CuDNNLSTM)" in repr(model)


@pytest.mark.parametrize("layer", ["clstm_seq", "cgru_state"])
def test_negative_control_dropping_recurrent_bias(data, layer):
    """Using only the input half of the 2*G*u bias is caught."""
    model = built(data)
    with torch.no_grad():
        getattr(model, layer).bias_hh_l0.zero_()
    assert max_error(model, data) > 1e-3


def test_negative_control_gru_biases_summed_like_lstm(data):
    """Summing the two GRU bias halves (right for LSTM) is wrong for GRU: the recurrent bias of
    the candidate sits inside r * (R h + b_Rh)."""
    model = built(data)
    with torch.no_grad():
        m = model.cgru_state
        m.bias_ih_l0 += m.bias_hh_l0
        m.bias_hh_l0.zero_()
    assert max_error(model, data) > 1e-3


def test_negative_control_plain_keras_kernel_layout(data):
    """Reading the CuDNN kernels as plain LSTM kernels (x @ kernel, h @ recurrent_kernel)
    instead of cuDNN's per-gate buffers is caught."""
    model = built(data)
    k, rk = data["w:clstm_seq:0"], data["w:clstm_seq:1"]
    with torch.no_grad():
        model.clstm_seq.weight_ih_l0.copy_(torch.from_numpy(np.ascontiguousarray(k.T)))
        model.clstm_seq.weight_hh_l0.copy_(torch.from_numpy(np.ascontiguousarray(rk.T)))
    assert max_error(model, data) > 1e-3


def test_negative_control_gru_gate_order(data):
    """Keras's z, r, h order kept as is (torch wants r, z, n) is caught."""
    model = built(data)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            p = getattr(model.cgru_state, name)
            u = p.shape[0] // 3
            p.copy_(torch.cat([p[u:2 * u], p[:u], p[2 * u:]]))
    assert max_error(model, data) > 1e-3


def test_keras_reported_raw_weights_give_keras_predictions(data, arch):
    model = build_model(arch, weights_of(data))
    assert max_error(model, data) <= TOL


def _edit(arch, layer, **changes):
    a = copy.deepcopy(arch)
    for la in a["config"]["layers"]:
        if la["name"] == layer:
            la["config"].update(changes)
    return a


def test_stateful_builds_stateless_like_the_other_rnns(data, arch):
    a = _edit(arch, "clstm_seq", stateful=True)
    a = _edit(a, "cgru_state", stateful=True)
    model = build_model(a, weights_of(data))
    assert max_error(model, data) <= TOL
    assert max_error(model, data) <= TOL                     # no state carried between calls


def test_time_major_refused(data, arch):
    with pytest.raises(UnsupportedLayerError, match="time_major=True"):
        build_model(_edit(arch, "cgru_back", time_major=True), weights_of(data))


def test_plain_lstm_bias_is_a_mismatch(data, arch):
    base = weights_of(data)

    def weights(layer):
        ws = base(layer)
        if layer == "clstm_seq":                  # what a plain LSTM would hold: 4u biases
            ws = ws[:2] + [ws[2][:20] + ws[2][20:]]
        return ws
    with pytest.raises(MismatchError, match=r"'bias' of layer 'clstm_seq' \(CuDNNLSTM\).*\(40,\)"):
        build_model(arch, weights)


def _masked_bidir(inner):
    layers = [
        {"class_name": "InputLayer", "config": {"name": "ids", "batch_input_shape": [None, 5],
                                                "dtype": "int32"}},
        {"class_name": "Embedding", "config": {"name": "emb", "input_dim": 10, "output_dim": 4,
                                               "mask_zero": True}},
        {"class_name": "Bidirectional", "config": {"name": "bi", "layer": {
            "class_name": inner, "config": {"name": "r", "units": 3}}}}]
    return {"class_name": "Sequential", "keras_version": "2.4.0", "backend": "tensorflow",
            "config": {"name": "m", "layers": layers}}


def test_mask_reaching_a_cudnn_layer_is_refused():
    """Keras's cuDNN layers raise on masks; so does the rebuilt one (never ignored)."""
    with pytest.raises(UnsupportedLayerError, match="CuDNNGRU layer receives a mask"):
        build_model(_masked_bidir("CuDNNGRU"), None)
    build_model(_masked_bidir("GRU"), None)                  # the plain GRU takes the mask


def test_mask_reaching_a_cudnn_layer_directly_is_refused_before_building():
    arch = _masked_bidir("CuDNNLSTM")
    arch["config"]["layers"][2] = {"class_name": "CuDNNLSTM", "config": {"name": "r", "units": 3}}
    with pytest.raises(UnsupportedLayerError, match="CuDNNLSTM"):
        build_model(arch, None)


def test_wrapped_in_time_distributed_uses_the_same_converter(data):
    arch = {"class_name": "Sequential", "keras_version": "2.4.0", "backend": "tensorflow",
            "config": {"name": "m", "layers": [
                {"class_name": "InputLayer", "config": {"name": "x",
                                                        "batch_input_shape": [None, 2, 6, 4]}},
                {"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
                    "class_name": "CuDNNLSTM", "config": {"name": "r", "units": 5}}}}]}}
    ws = [data[f"w:clstm_seq:{i}"] for i in range(3)]
    model = build_model(arch, lambda layer: ws if layer == "td" else [])
    ref = build_model(json.loads((FIX / "k2_cudnn.json").read_text()), weights_of(data))
    x = np.stack([data["x0"], data["x0"][::-1]], axis=1)     # (N, 2, T, F)
    with torch.no_grad():
        y = model(x)
        first = ref.clstm_seq(torch.from_numpy(data["x0"]))[:, -1]
    assert tuple(y.shape) == (3, 2, 5)
    assert torch.allclose(y[:, 0], first, atol=1e-6)


def keras_convert(class_name, kernel, recurrent_kernel, bias):
    """tf-keras hdf5_format._convert_rnn_weights (CuDNN -> plain), in NumPy."""
    g = 4 if class_name == "CuDNNLSTM" else 3
    k = np.hstack([b.T.reshape(b.shape, order="F") for b in np.hsplit(kernel, g)])
    rk = np.hstack([b.T for b in np.hsplit(recurrent_kernel, g)])
    b = np.sum(np.split(bias, 2), axis=0) if g == 4 else bias.reshape(2, -1)
    return [k, rk, b]


def test_plain_twin_with_keras_converted_weights_matches(data, arch):
    """The plain twin (LSTM/GRU reset_after, sigmoid gates) fed Keras's own CuDNN weight
    conversion goes through the KerasRNN converters, including a Keras 2 GRU called with
    initial_state (recorded as one call on [x, h]): same predictions."""
    twin = copy.deepcopy(arch)
    classes = {}
    for la in twin["config"]["layers"]:
        for cfg_entry in ([la["config"]["layer"]] if la["class_name"] == "Bidirectional" else [la]):
            cls = cfg_entry["class_name"]
            if cls.startswith("CuDNN"):
                classes[la["name"]] = cls
                cfg_entry["class_name"] = cls[len("CuDNN"):]
                cfg_entry["config"].update(recurrent_activation="sigmoid", activation="tanh",
                                           reset_after=True)
    base = weights_of(data)

    def weights(layer):
        ws = base(layer)
        if layer not in classes:
            return ws
        return [w for i in range(0, len(ws), 3) for w in keras_convert(classes[layer], *ws[i:i + 3])]
    model = build_model(twin, weights)
    assert type(model.clstm_seq).__name__ == "KerasRNN"
    assert max_error(model, data) <= TOL
