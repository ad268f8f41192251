"""The Keras -> torch builder reproduces Keras's own predictions (max abs error <= 1e-5).

Fixtures: tests/fixtures/keras_models/, written by tests/fixtures/make_keras_models.py with
Keras 3.15.1 (torch backend) and tf-keras 2.21 (TensorFlow; the ``k2_*`` models). Every model
is checked in every file form it was saved in, through the real readers
(file -> weightviz.open -> build_from_checkpoint), and once with the weights Keras itself
reported (``w:<layer>:<i>`` in the *_io.npz) through build_model. No Keras at test time.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weightviz  # noqa: E402
from weightviz.keras import build_from_checkpoint, build_model  # noqa: E402

from _keras_fixtures import FIX, TOL, io, max_error, npz_weights, predict  # noqa: E402
K3 = ["activations", "conv", "pool", "rnn", "merge", "norm_embed", "reshape", "sequential", "mha",
      "masked", "attention", "convlstm", "convnext_block", "einsum", "reversible"]
K2 = ["k2_tfops", "k2_masked", "k2_rnn", "k2_conv_pool", "k2_merge", "k2_sequential", "k2_activations",
      "k2_attention", "k2_cudnn", "k2_convlstm"]

FORMS = ([(m, "keras") for m in K3] + [(m, "h5") for m in K3] + [(m, "json+weights.h5") for m in K3]
         + [(m, "h5") for m in K2] + [(m, "json+weights_h5") for m in K2])


def open_form(name, form):
    if form in ("keras", "h5"):
        return weightviz.open(str(FIX / f"{name}.{form}")), None
    weights = FIX / (f"{name}.weights.h5" if form == "json+weights.h5" else f"{name}_weights.h5")
    return weightviz.open(str(FIX / f"{name}.json")), weightviz.open(str(weights))


@pytest.mark.parametrize("name,form", FORMS, ids=[f"{m}-{f}" for m, f in FORMS])
def test_file_forms_match_keras(name, form):
    ckpt, wckpt = open_form(name, form)
    model = build_from_checkpoint(ckpt, wckpt)
    assert max_error(model, io(name)) <= TOL


@pytest.mark.parametrize("name", K3 + K2)
def test_keras_reported_weights_match_keras(name):
    data = io(name)
    arch = json.loads((FIX / f"{name}.json").read_text())
    model = build_model(arch, npz_weights(data))
    assert max_error(model, data) <= TOL


def test_layer_names_are_submodules_and_inputs_positional():
    model = build_from_checkpoint(weightviz.open(str(FIX / "conv.keras")))
    names = dict(model.named_children())
    for layer in ("c_same_s2", "dw", "sep2", "ct_same", "c1_causal", "c3_same", "head2"):
        assert layer in names
    data = io("conv")
    ys = model(data["x0"], data["x1"], data["x2"])          # NumPy in, positional, tuple out
    assert isinstance(ys, tuple) and len(ys) == 3
    with pytest.raises(TypeError, match="takes 3 input"):
        model(data["x0"])


def test_single_output_is_a_tensor_and_weights_none_builds():
    data = io("sequential")
    arch = json.loads((FIX / "sequential.json").read_text())
    model = build_model(arch, None)
    y = model(data["x0"])
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == data["y0"].shape


def test_nested_model_weight_orders_both_accepted():
    """Trainable-first (legacy HDF5 / tf.keras model.weights) and depth-first (Keras 3) lists
    for a nested model with BatchNormalization give the same, correct model."""
    data = io("merge")
    arch = json.loads((FIX / "merge.json").read_text())
    base = npz_weights(data)

    def trainable_first(layer):
        ws = base(layer)
        if layer != "inner_seq":
            return ws
        # depth-first: is_d k,b | is_bn g,b,mm,mv | is_d2 k,b -> trainables then the 2 stats
        return ws[0:2] + ws[2:4] + ws[6:8] + ws[4:6]
    model = build_model(arch, trainable_first)
    assert max_error(model, data) <= TOL


def test_hard_sigmoid_meaning_follows_keras_version():
    """Keras 2 files use 0.2x+0.5; building the same file as Keras 3 must differ."""
    data = io("k2_rnn")
    arch = json.loads((FIX / "k2_rnn.json").read_text())
    assert arch["keras_version"].startswith("2.")
    good = build_model(arch, npz_weights(data))
    assert max_error(good, data) <= TOL
    wrong = build_model(arch, npz_weights(data), keras_version="3.0.0")
    assert max_error(wrong, data) > 1e-3


def test_legacy_dialects_keras1_entries_and_bare_list_sequential():
    """Keras 1 three-element inbound entries and the Keras <= 2.2.2 bare-list Sequential."""
    data = io("k2_merge")
    arch = json.loads((FIX / "k2_merge.json").read_text())

    def strip(x):
        if isinstance(x, list) and len(x) == 4 and isinstance(x[0], str) and isinstance(x[3], dict):
            return x[:3]
        return [strip(v) for v in x] if isinstance(x, list) else (
            {k: strip(v) for k, v in x.items()} if isinstance(x, dict) else x)
    arch = strip(arch)
    assert max_error(build_model(arch, npz_weights(data)), data) <= TOL

    data = io("k2_sequential")
    arch = json.loads((FIX / "k2_sequential.json").read_text())
    layers = arch["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer"
    layers[1]["config"]["batch_input_shape"] = layers[0]["config"]["batch_input_shape"]
    arch["config"] = layers[1:]                                  # bare list, no InputLayer
    assert max_error(build_model(arch, npz_weights(data)), data) <= TOL


@pytest.mark.parametrize("name", ["masked", "k2_masked"])
def test_masks_matter_in_the_masked_fixtures(name):
    """Without Keras's masking the same weights predict differently (the fixtures would catch
    a builder that ignored mask_zero / Masking)."""
    data = io(name)
    arch = json.loads((FIX / f"{name}.json").read_text())
    for layer in arch["config"]["layers"]:
        if layer["class_name"] == "Embedding":
            layer["config"]["mask_zero"] = False
        for node in layer["inbound_nodes"]:
            if isinstance(node, dict):
                node["kwargs"].pop("mask", None)
        if layer["class_name"] == "Masking":             # same values, but no mask
            layer["class_name"] = "Activation"
            layer["config"] = {"name": layer["config"]["name"], "activation": "linear"}
    model = build_model(arch, npz_weights(data))
    assert max_error(model, data) > 1e-3


@pytest.mark.parametrize("source,weights", [("rnn.keras", None), ("k2_merge.h5", None),
                                            ("conv.json", "conv.weights.h5"),
                                            ("k2_conv_pool.json", "k2_conv_pool_weights.h5")])
def test_public_build_verb(source, weights):
    """weightviz.build(file, weights=...) goes through the readers and this builder."""
    model = weightviz.build(str(FIX / source), weights=str(FIX / weights) if weights else None)
    assert max_error(model, io(source.split(".")[0])) <= TOL


def output_errors(model, data) -> list[float]:
    return [float(np.abs(y.numpy().astype(np.float64) - data[f"y{i}"]).max())
            for i, y in enumerate(predict(model, data))]


def _layer(arch, name):
    return next(entry for entry in arch["config"]["layers"] if entry["name"] == name)


@pytest.mark.parametrize("name", ["attention", "k2_attention"])
def test_attention_fixture_options_matter(name):
    """Outputs: att_dot (causal, masked, scaled self-attention), att_concat (value mask),
    masked pooling of add_att (query mask), add_scores and its attention scores. Dropping the
    masks, the causal mask or a scale changes the outputs that depend on it, so the fixtures
    would catch each."""
    data = io(name)
    arch = json.loads((FIX / f"{name}.json").read_text())
    base = output_errors(build_model(arch, npz_weights(data)), data)
    assert max(base) <= TOL

    no_mask = json.loads(json.dumps(arch))
    _layer(no_mask, "emb")["config"]["mask_zero"] = False
    for node in _layer(no_mask, "gap")["inbound_nodes"]:
        if isinstance(node, dict):
            node["kwargs"].pop("mask", None)                 # Keras 3's explicit pooling mask
    errs = output_errors(build_model(no_mask, npz_weights(data)), data)
    assert min(errs) > 1e-3                                  # every output uses a mask

    no_causal = json.loads(json.dumps(arch))
    text = json.dumps(_layer(no_causal, "att_dot")["inbound_nodes"])
    assert '"use_causal_mask": true' in text
    _layer(no_causal, "att_dot")["inbound_nodes"] = json.loads(
        text.replace('"use_causal_mask": true', '"use_causal_mask": false'))
    errs = output_errors(build_model(no_causal, npz_weights(data)), data)
    assert errs[0] > 1e-3 and max(errs[1:]) <= TOL

    def unit_scale(layer):
        ws = npz_weights(data)(layer)
        return [np.ones_like(w) for w in ws[:1]] + ws[1:] if layer in ("att_dot", "add_att") else ws
    errs = output_errors(build_model(arch, unit_scale), data)
    assert errs[0] > 1e-4 and errs[2] > 1e-4


def test_keras2_causal_config_key_means_use_causal_mask():
    """Keras 2.4-2.9 stored ``Attention(causal=True)`` in the config instead of the call."""
    data = io("k2_attention")
    arch = json.loads((FIX / "k2_attention.json").read_text())
    layer = _layer(arch, "att_dot")
    for entry in layer["inbound_nodes"][0]:
        entry[3].pop("use_causal_mask")
    layer["config"]["causal"] = True
    assert max(output_errors(build_model(arch, npz_weights(data)), data)) <= TOL


def test_attention_explicit_mask_keyword():
    """A Keras 3 config may pass ``mask=[query_mask, value_mask]`` explicitly."""
    data = io("attention")
    arch = json.loads((FIX / "attention.json").read_text())
    _layer(arch, "emb")["config"]["mask_zero"] = False          # no implicit masks at all
    ref = {"class_name": "__keras_tensor__",
           "config": {"shape": [None, 5], "dtype": "bool", "keras_history": ["not_equal", 0, 0]}}
    _layer(arch, "att_dot")["inbound_nodes"][0]["kwargs"]["mask"] = [ref, ref]
    errs = output_errors(build_model(arch, npz_weights(data)), data)
    assert errs[0] <= TOL                                    # att_dot: masks given explicitly
    assert errs[1] > 1e-3                                    # att_concat: no mask any more


def test_attention_scores_are_a_second_output():
    model = build_from_checkpoint(weightviz.open(str(FIX / "k2_attention.h5")))
    data = io("k2_attention")
    ys = predict(model, data)
    scores = ys[4].numpy()
    assert scores.shape == (3, 6, 5)
    assert np.allclose(scores.sum(-1), 1.0, atol=1e-6)
    assert np.all(scores[0, :, :2] < 1e-6)                   # padded value steps get no weight
    assert "[(None, 6, 4), (None, 6, 5)]" in repr(model)
