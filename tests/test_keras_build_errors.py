"""Refusals are early and clear: Lambda, unknown layers, masks, wrong weights; and the
config dialects / sanitised names the builder must survive. No Keras at test time."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from weightviz.errors import (CorruptFileError, MismatchError, UnsafeCheckpointError,  # noqa: E402
                              UnsupportedLayerError)
from weightviz.keras import build_model, supported_layers  # noqa: E402
from weightviz.keras.layers.conv import same_pads  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "keras_models"


def seq(*layers, version="3.15.1", shape=(None, 4), dtype="float32"):
    entries = [{"class_name": "InputLayer", "config": {"name": "inp", "batch_shape": list(shape),
                                                       "dtype": dtype}}]
    entries += [{"class_name": c, "config": dict(cfg)} for c, cfg in layers]
    return {"class_name": "Sequential", "config": {"name": "m", "layers": entries},
            "keras_version": version, "backend": "torch"}


class Spy:
    """A weights callable that records every layer it was asked for."""

    def __init__(self):
        self.asked = []

    def __call__(self, name):
        self.asked.append(name)
        return []


LAMBDA = ("Lambda", {"name": "lam", "function": {"class_name": "__lambda__",
                                                 "config": {"value": "4wEAAAAAAAAA"}}})


def test_lambda_is_refused_before_anything_is_built():
    spy = Spy()
    with pytest.raises(UnsafeCheckpointError) as e:
        build_model(seq(("Dense", {"name": "d", "units": 3}), LAMBDA), spy)
    msg = str(e.value)
    assert "'lam' (Lambda) at position #2 of model 'm'" in msg and "custom_layers" in msg
    assert spy.asked == []                                    # no weights read, nothing built
    assert e.value.needs


def test_lambda_replaced_by_custom_module():
    arch = seq(("Dense", {"name": "d", "units": 3, "use_bias": False}), LAMBDA)
    k = np.arange(12, dtype="float32").reshape(4, 3)
    model = build_model(arch, lambda n: [k] if n == "d" else [],
                        custom_layers={"lam": torch.nn.Tanh()})
    x = np.ones((2, 4), "float32")
    assert np.allclose(model(x).detach().numpy(), np.tanh(x @ k), atol=1e-6)
    assert isinstance(model.lam, torch.nn.Tanh)


def test_keras2_list_form_lambda_also_refused():
    arch = {"class_name": "Model", "keras_version": "2.4.0", "backend": "tensorflow",
            "config": {"name": "f", "input_layers": [["i", 0, 0]], "output_layers": [["l", 0, 0]],
                       "layers": [
                           {"class_name": "InputLayer", "name": "i", "inbound_nodes": [],
                            "config": {"name": "i", "batch_input_shape": [None, 3]}},
                           {"class_name": "Lambda", "name": "l", "inbound_nodes": [[["i", 0, 0, {}]]],
                            "config": {"name": "l", "function": ["4wEAAAAA", None, None],
                                       "function_type": "lambda"}}]}}
    with pytest.raises(UnsafeCheckpointError, match="'l' \\(Lambda\\) at position #1 of model 'f'"):
        build_model(arch, None)


def test_unsupported_layers_listed_with_class_and_position_early():
    spy = Spy()
    arch = seq(("Dense", {"name": "d", "units": 3}), ("LocallyConnected2D", {"name": "clstm"}),
               ("TFOpLambda", {"name": "tf.signal.fft", "function": "signal.fft"}))
    with pytest.raises(UnsupportedLayerError) as e:
        build_model(arch, spy)
    msg = str(e.value)
    assert "'clstm' (LocallyConnected2D) at position #2 of model 'm'" in msg
    assert "'tf.signal.fft' (TFOpLambda) at position #3 of model 'm' calls tf.signal.fft" in msg
    assert "2 problem(s)" in msg
    assert spy.asked == []


def test_unsupported_inside_nested_model_and_wrapper():
    inner = seq(("LocallyConnected2D", {"name": "deep"}))
    arch = seq(("Sequential", inner["config"]),
               ("TimeDistributed", {"name": "td", "layer": {"class_name": "Foo",
                                                            "config": {"name": "foo"}}}))
    with pytest.raises(UnsupportedLayerError) as e:
        build_model(arch, None)
    assert "'deep' (LocallyConnected2D) at position #1 of model 'm'" in str(e.value)
    assert "wrapped Foo" in str(e.value)


def test_unknown_activation_is_unsupported():
    with pytest.raises(UnsupportedLayerError, match="activation 'my_act'"):
        build_model(seq(("Dense", {"name": "d", "units": 2, "activation": "my_act"})), None)


def test_masks_reaching_unreproduced_layers_are_refused():
    emb = ("Embedding", {"name": "emb", "input_dim": 10, "output_dim": 4, "mask_zero": True})
    td = ("TimeDistributed", {"name": "td", "layer": {"class_name": "Dense",
                                                      "config": {"name": "d", "units": 2}}})
    with pytest.raises(UnsupportedLayerError, match="'td' \\(TimeDistributed\\).*receives a mask"):
        build_model(seq(emb, ("Dropout", {"name": "dr"}), td, shape=(None, 5), dtype="int32"), None)
    inner = seq(("LSTM", {"name": "l", "units": 2}))["config"]
    with pytest.raises(UnsupportedLayerError, match="receives a mask"):
        build_model(seq(emb, ("Sequential", inner), shape=(None, 5), dtype="int32"), None)
    # a mask dropped (Flatten, Conv1D) before anything uses it changes nothing in Keras
    m = build_model(seq(emb, ("Conv1D", {"name": "c", "filters": 2, "kernel_size": 2}),
                        ("LSTM", {"name": "l", "units": 2}), shape=(None, 5), dtype="int32"), None)
    assert tuple(m(np.zeros((1, 5), "int32")).shape) == (1, 2)


def test_unsupported_call_option_is_refused():
    data = json.loads((FIX / "mha.json").read_text())
    layer = next(l for l in data["config"]["layers"] if l["name"] == "mha")
    layer["inbound_nodes"][0]["kwargs"]["return_attention_scores"] = True
    with pytest.raises(UnsupportedLayerError, match="return_attention_scores=True"):
        build_model(data, None)


def test_wrong_weights_raise_mismatch_naming_the_layer():
    arch = seq(("Dense", {"name": "d", "units": 3}))
    with pytest.raises(MismatchError, match="'kernel' of layer 'd' \\(Dense\\).*Expected \\(4, 3\\)"):
        build_model(arch, lambda n: [np.zeros((5, 3), "float32"), np.zeros(3, "float32")])
    with pytest.raises(MismatchError, match="has 1 weight array"):
        build_model(arch, lambda n: [np.zeros((4, 3), "float32")])


def test_broken_graph_is_a_corrupt_file_error():
    arch = json.loads((FIX / "merge.json").read_text())
    arch["config"]["layers"][2]["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["nope", 0, 0]
    with pytest.raises(CorruptFileError, match="unknown layer 'nope'"):
        build_model(arch, None)
    with pytest.raises(CorruptFileError):
        build_model({"class_name": "MyModel", "config": {}}, None)


def test_names_torch_rejects_are_sanitised():
    arch = seq(("Dense", {"name": "block.1/dense", "units": 2}), ("Dense", {"name": "forward", "units": 2}),
               ("Dense", {"name": "training", "units": 2}), ("Dense", {"name": "1st", "units": 2}))
    model = build_model(arch, None)
    names = [n for n, _ in model.named_children()]
    assert names == ["block_1_dense", "forward_", "training_", "layer_1st"]
    assert "block.1/dense (Dense) as .block_1_dense" in repr(model)


def test_same_padding_rule_is_asymmetric_with_stride():
    assert same_pads(7, 3, 2, 1) == (1, 1)
    assert same_pads(8, 3, 2, 1) == (0, 1)                 # the silent-error case of formats §4.3
    assert same_pads(5, 4, 1, 1) == (1, 2)


def test_supported_layers_lists_the_families():
    names = set(supported_layers())
    for cls in ("Dense", "Conv2D", "DepthwiseConv2D", "SeparableConv1D", "Conv1DTranspose",
                "AveragePooling3D", "GlobalMaxPooling2D", "ZeroPadding2D", "Cropping3D",
                "UpSampling2D", "BatchNormalization", "LayerNormalization", "Embedding",
                "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed", "Dot",
                "MultiHeadAttention", "Attention", "AdditiveAttention", "PReLU", "Sequential",
                "Functional"):
        assert cls in names
    assert "Lambda" not in names


class Named:
    """A checkpoint-entry-like weight: a name and .numpy()."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def numpy(self):
        return self.value


def test_nested_weights_matched_by_name_when_shapes_cannot_tell():
    """A frozen layer's weights move to the tail in legacy HDF5 files; with equal shapes only
    the names can tell the orders apart (formats.md §1.1, trap 6)."""
    inner = {"name": "inner", "layers": [
        {"class_name": "InputLayer", "config": {"name": "ii", "batch_shape": [None, 3]}},
        {"class_name": "Dense", "config": {"name": "a", "units": 3, "trainable": False}},
        {"class_name": "Dense", "config": {"name": "b", "units": 3}}]}
    arch = seq(("Sequential", inner), shape=(None, 3))
    rng = np.random.default_rng(0)
    ka, kb = rng.standard_normal((3, 3)).astype("float32"), rng.standard_normal((3, 3)).astype("float32")
    ba, bb = rng.standard_normal(3).astype("float32"), rng.standard_normal(3).astype("float32")
    legacy = [Named("inner/b/kernel:0", kb), Named("inner/b/bias:0", bb),
              Named("inner/a/kernel:0", ka), Named("inner/a/bias:0", ba)]     # trainable first
    model = build_model(arch, lambda name: legacy if name == "inner" else [])
    x = rng.standard_normal((2, 3)).astype("float32")
    expected = (x @ ka + ba) @ kb + bb
    assert np.abs(model(x).detach().numpy() - expected).max() < 1e-5


def test_custom_layers_by_class_name_take_a_factory():
    lam2 = ("Lambda", {"name": "lam2", "function": LAMBDA[1]["function"]})
    made = []

    def factory(config):
        made.append(config["name"])
        return torch.nn.Tanh()
    arch = seq(("Dense", {"name": "d", "units": 4, "use_bias": False}), LAMBDA, lam2)
    k = np.eye(4, dtype="float32")
    model = build_model(arch, lambda n: [k] if n == "d" else [], custom_layers={"Lambda": factory})
    assert made == ["lam", "lam2"]
    x = np.full((1, 4), 0.5, "float32")
    assert np.allclose(model(x).detach().numpy(), np.tanh(np.tanh(x)), atol=1e-6)


def _attention_arch(name="attention"):
    return json.loads((FIX / f"{name}.json").read_text())


def _io_weights(name="attention"):
    with np.load(FIX / f"{name}_io.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}

    def weights(layer):
        return [data[k] for k in sorted(k for k in data if k.startswith(f"w:{layer}:"))]
    return weights


@pytest.mark.parametrize("layer,bad,shape", [("add_att", [np.ones(3, "float32")], "(4,)"),
                                             ("att_dot", [np.ones(1, "float32")], "()"),
                                             ("att_concat", [np.ones((), "float32")], "2:")])
def test_attention_wrong_weights_are_mismatch_errors(layer, bad, shape):
    good = _io_weights()
    with pytest.raises(MismatchError, match=f"'{layer}'.*Attention") as e:
        build_model(_attention_arch(), lambda name: bad if name == layer else good(name))
    assert shape in str(e.value)


def test_attention_config_and_call_errors_are_clear():
    arch = _attention_arch("k2_attention")
    next(l for l in arch["config"]["layers"] if l["name"] == "att_dot")["config"]["score_mode"] = "cos"
    with pytest.raises(CorruptFileError, match="'att_dot' \\(Attention\\) has score_mode='cos'"):
        build_model(arch, None)
    arch = _attention_arch("k2_attention")                     # called on one tensor
    layer = next(l for l in arch["config"]["layers"] if l["name"] == "att_concat")
    layer["inbound_nodes"][0] = layer["inbound_nodes"][0][:1]
    with pytest.raises(CorruptFileError, match="not called on \\[query, value\\]"):
        build_model(arch, None)


def test_attention_unknown_call_option_still_refused():
    arch = _attention_arch()
    layer = next(l for l in arch["config"]["layers"] if l["name"] == "att_dot")
    layer["inbound_nodes"][0]["kwargs"]["something_new"] = True
    with pytest.raises(UnsupportedLayerError, match="'att_dot' \\(Attention\\).*something_new=True"):
        build_model(arch, None)


def test_masks_still_refused_for_multi_head_attention():
    arch = _attention_arch("k2_attention")
    layer = next(l for l in arch["config"]["layers"] if l["name"] == "att_dot")
    layer["class_name"] = "MultiHeadAttention"
    layer["config"] = {"name": "att_dot", "num_heads": 1, "key_dim": 2}
    layer["inbound_nodes"] = [[["emb", 0, 0, {"value": ["emb", 0, 0]}]]]
    with pytest.raises(UnsupportedLayerError, match="'att_dot' \\(MultiHeadAttention\\).*receives a mask"):
        build_model(arch, None)
