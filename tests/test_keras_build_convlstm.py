"""ConvLSTM1D/2D/3D: the real-Keras fixtures (convlstm: Keras 3.15.1; k2_convlstm: tf-keras
2.21) would catch a wrong mapping (negative controls), options that do nothing at inference
are ignored, and refusals are clear. Every file form is checked in test_keras_build.py."""
from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from weightviz.errors import MismatchError, UnsupportedLayerError  # noqa: E402
from weightviz.keras import build_model  # noqa: E402

from _keras_fixtures import TOL, arch, io  # noqa: E402


def npz_weights(data, change=None):
    def weights(layer):
        out, i = [], 0
        while f"w:{layer}:{i}" in data:
            out.append(data[f"w:{layer}:{i}"])
            i += 1
        return change(layer, out) if change else out
    return weights


def errors(model, data) -> list[float]:
    xs = [data[f"x{i}"] for i in range(sum(k.startswith("x") for k in data))]
    with torch.no_grad():
        ys = model(*xs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    return [float(np.abs(y.numpy().astype(np.float64) - data[f"y{i}"]).max())
            for i, y in enumerate(ys)]


def build(name, change=None, **kw):
    data = io(name)
    return build_model(kw.pop("architecture", None) or arch(name), npz_weights(data, change),
                       **kw), data


@pytest.mark.parametrize("name", ["convlstm", "k2_convlstm"])
def test_fixture_matches_and_params_equal_keras(name):
    model, data = build(name)
    assert max(errors(model, data)) <= TOL
    keras_params = sum(v.size for k, v in data.items() if k.startswith("w:"))
    assert sum(p.numel() for p in model.parameters()) == keras_params


def _swap_f_c(layer, ws):
    """Gate order i, c, f, o instead of Keras's i, f, c, o (last axis of every array)."""
    out = []
    for w in ws:
        i, f, c, o = np.split(w, 4, axis=-1)
        out.append(np.concatenate([i, c, f, o], axis=-1))
    return out


@pytest.mark.parametrize("name", ["convlstm", "k2_convlstm"])
def test_gate_order_matters(name):
    model, data = build(name, _swap_f_c)
    assert min(errors(model, data)) > 1e-3


def _same_extra_at_start(module):
    """Recurrent 'same' padding with the odd pixel at the start (not TF's end)."""
    def wrong(h):
        pads = []
        for k in reversed(module.kernel_size):
            total = k - 1
            pads += [total - total // 2, total // 2]
        return F.conv2d(F.pad(h, pads), module.recurrent_kernel)
    return wrong


@pytest.mark.parametrize("name,layer,outputs", [("convlstm", "cl2_same", [0, 1, 2]),
                                                ("k2_convlstm", "cl2_init", [0])])
def test_recurrent_same_padding_puts_the_extra_pixel_at_the_end(name, layer, outputs):
    """Even recurrent kernels ((3, 2) and (2, 3)) need asymmetric 'same' padding."""
    model, data = build(name)
    module = getattr(model, layer)
    module.recurrent_conv = _same_extra_at_start(module)
    errs = errors(model, data)
    assert min(errs[i] for i in outputs) > 1e-3


def test_recurrent_conv_ignores_the_layers_dilation():
    """k2_convlstm's cl1_valid has dilation_rate=2: Keras's recurrent conv does not dilate."""
    model, data = build("k2_convlstm")
    module = model.cl1_valid
    k, d = module.kernel_size[0], 2

    def dilated(h):
        total = (k - 1) * d
        return F.conv1d(F.pad(h, [total // 2, total - total // 2]), module.recurrent_kernel,
                        dilation=d)
    module.recurrent_conv = dilated
    errs = errors(model, data)
    assert errs[2] > 1e-3 and max(errs[:2]) <= TOL


def test_hard_sigmoid_meaning_follows_keras_version():
    """convlstm's cl2_same uses Keras 3's hard_sigmoid; k2_convlstm uses Keras 2's default."""
    model, data = build("convlstm", keras_version="2.15.0")
    errs = errors(model, data)
    assert min(errs[:3]) > 1e-3 and errs[3] <= TOL
    model, data = build("k2_convlstm", keras_version="3.0.0")
    assert min(errors(model, data)) > 1e-3


def test_keras2_initial_state_list_call_is_used():
    a = arch("k2_convlstm")
    layer = next(entry for entry in a["config"]["layers"] if entry["name"] == "cl2_init")
    layer["inbound_nodes"][0] = layer["inbound_nodes"][0][:1]          # drop [h, c]
    model, data = build("k2_convlstm", architecture=a)
    errs = errors(model, data)
    assert errs[0] > 1e-3 and max(errs[1:]) <= TOL


def _set(a, name, **cfg):
    next(entry for entry in a["config"]["layers"] if entry["name"] == name)["config"].update(cfg)


def test_inference_only_options_change_nothing():
    """stateful keeps no state between calls (as the other RNN converters); dropout,
    recurrent_dropout and unit_forget_bias do nothing at inference."""
    a = arch("convlstm")
    for name in ("cl2_same", "cl2_valid_cf"):
        _set(a, name, stateful=True, dropout=0.5, recurrent_dropout=0.3, unit_forget_bias=False)
    model, data = build("convlstm", architecture=a)
    assert max(errors(model, data)) <= TOL
    assert max(errors(model, data)) <= TOL                         # a second call: same


def seq(layer_cls, cfg, shape, *before, version="3.15.1"):
    layers = [{"class_name": "InputLayer",
               "config": {"name": "inp", "batch_shape": [None, *shape]}}]
    layers += [{"class_name": c, "config": dict(k)} for c, k in before]
    layers.append({"class_name": layer_cls, "config": {"name": "clstm", **cfg}})
    return {"class_name": "Sequential", "keras_version": version,
            "config": {"name": "m", "layers": layers}}


def test_wrong_weight_shape_names_the_layer():
    def transposed(layer, ws):
        return [np.swapaxes(ws[0], 0, 1)] + ws[1:] if layer == "cl2_same" else ws
    with pytest.raises(MismatchError) as e:
        build("convlstm", transposed)
    msg = str(e.value)
    assert "weight 'kernel' of layer 'cl2_same' (ConvLSTM2D) has the wrong shape" in msg
    assert "(3, 2, 2, 8)" in msg and "(2, 3, 2, 8)" in msg


def test_missing_bias_is_a_mismatch():
    with pytest.raises(MismatchError, match="'cl1_valid' \\(ConvLSTM1D\\) has 2 weight array"):
        build("k2_convlstm", lambda layer, ws: ws[:2] if layer == "cl1_valid" else ws)


@pytest.mark.parametrize("cfg,match", [({"padding": "causal"}, "padding 'causal'"),
                                       ({"data_format": "nhwc"}, "data_format 'nhwc'"),
                                       ({"activation": "my_act"}, "activation 'my_act'")])
def test_refused_options(cfg, match):
    base = {"filters": 2, "kernel_size": 3, "padding": "same"}
    with pytest.raises(UnsupportedLayerError, match=match):
        build_model(seq("ConvLSTM1D", {**base, **cfg}, (4, 6, 2)), None)


def test_wrong_input_rank_is_refused():
    with pytest.raises(UnsupportedLayerError, match="rank-4 input"):
        build_model(seq("ConvLSTM2D", {"filters": 2, "kernel_size": 3}, (4, 6, 2)), None)


def test_mask_reaching_convlstm_is_refused_before_building():
    asked = []
    a = seq("ConvLSTM1D", {"filters": 2, "kernel_size": 3}, (4, 6, 2),
            ("Masking", {"name": "mask", "mask_value": 0.0}))
    with pytest.raises(UnsupportedLayerError, match="'clstm' \\(ConvLSTM1D\\).*receives a mask"):
        build_model(a, lambda n: asked.append(n) or [])
    assert asked == []


def test_explicit_mask_keyword_is_refused():
    a = arch("convlstm")
    layer = next(entry for entry in a["config"]["layers"] if entry["name"] == "cl2_same")
    layer["inbound_nodes"][0]["kwargs"]["mask"] = layer["inbound_nodes"][0]["args"][0]
    with pytest.raises(UnsupportedLayerError, match="tensor for 'mask'"):
        build_model(a, None)


def test_bidirectional_convlstm_is_refused():
    inner = {"class_name": "ConvLSTM1D", "config": {"name": "c", "filters": 2, "kernel_size": 3}}
    with pytest.raises(UnsupportedLayerError, match="wraps a ConvLSTM1D"):
        build_model(seq("Bidirectional", {"layer": inner}, (4, 6, 2)), None)


def test_time_distributed_convlstm_is_the_layer_on_each_slice():
    """TimeDistributed(ConvLSTM1D) runs the layer on every slice of axis 1 (Keras's definition)."""
    gen = np.random.default_rng(5)
    cfg = {"filters": 2, "kernel_size": 2, "padding": "same", "return_sequences": True}
    ws = [gen.standard_normal((2, 3, 8)).astype("float32"),
          gen.standard_normal((2, 2, 8)).astype("float32") * 0.5,
          gen.standard_normal(8).astype("float32") * 0.5]
    inner = {"class_name": "ConvLSTM1D", "config": {"name": "c", **cfg}}
    td = build_model(seq("TimeDistributed", {"layer": inner}, (2, 4, 5, 3)), lambda n: ws)
    one = build_model(seq("ConvLSTM1D", cfg, (4, 5, 3)), lambda n: ws)
    x = gen.standard_normal((3, 2, 4, 5, 3)).astype("float32")
    with torch.no_grad():
        y = td(x).numpy()
        ref = np.stack([one(x[:, j]).numpy() for j in range(2)], 1)
    assert y.shape == (3, 2, 4, 5, 2) and np.abs(y - ref).max() < 1e-6


def test_convlstm3d_builds_with_keras_shapes():
    """ConvLSTM3D (no fixture: the same code as 1D/2D with rank 3): output and state shapes."""
    cfg = {"filters": 2, "kernel_size": [2, 3, 1], "strides": [1, 2, 1], "padding": "same",
           "return_sequences": True, "return_state": True}
    model = build_model(seq("ConvLSTM3D", cfg, (3, 4, 5, 2, 1)), None)
    y, h, c = model.clstm(torch.zeros((2, 3, 4, 5, 2, 1)))
    assert tuple(y.shape) == (2, 3, 4, 3, 2, 2)
    assert tuple(h.shape) == tuple(c.shape) == (2, 4, 3, 2, 2)
    assert sum(p.numel() for p in model.parameters()) == 6 * 1 * 8 + 6 * 2 * 8 + 8
