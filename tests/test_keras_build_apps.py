"""Layers of Keras's own applications (ConvNeXt's LayerScale, InceptionResNetV2's
CustomScaleLayer, ...), custom_layers by class name with weights, the unsupported-layer
message, and float64 end to end. The convnext_block fixture is written by real Keras 3
(tests/fixtures/make_keras_models.py); its file forms are checked in test_keras_build.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weightviz  # noqa: E402
from weightviz.errors import MismatchError, UnsupportedLayerError  # noqa: E402
from weightviz.keras import build_from_checkpoint, build_model, supported_layers  # noqa: E402

from _keras_fixtures import FIX, TOL, arch, io, max_error, npz_weights  # noqa: E402
from _keras_fixtures import predict as outputs  # noqa: E402


class MyScale(torch.nn.Module):
    """A user's LayerScale stand-in: built from the config, weights through the hook."""

    def __init__(self, config):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.zeros(int(config["projection_dim"])))
        self.loaded = 0

    def load_keras_weights(self, arrays):
        (gamma,) = arrays
        with torch.no_grad():
            self.gamma.copy_(torch.from_numpy(gamma))
        self.loaded += 1

    def forward(self, x):
        return x * self.gamma


def test_application_layers_are_supported():
    have = set(supported_layers())
    for cls in ("LayerScale", "StochasticDepth", "CustomScaleLayer", "UnitNormalization",
                "RMSNormalization", "RandomFlip", "RandomRotation", "RandomZoom",
                "RandomTranslation", "RandomContrast", "RandomBrightness", "EinsumDense",
                "ReversibleEmbedding"):
        assert cls in have


@pytest.mark.parametrize("form", ["keras", "h5"])
def test_class_name_factory_replaces_every_layer_and_gets_its_weights(form):
    made = []

    def factory(config):
        made.append(config["name"])
        return MyScale(config)
    model = build_from_checkpoint(weightviz.open(str(FIX / f"convnext_block.{form}")),
                                  custom_layers={"LayerScale": factory})
    assert made == ["b0_layer_scale", "b1_layer_scale"]           # one entry, both layers
    assert all(isinstance(getattr(model, n), MyScale) and getattr(model, n).loaded == 1
               for n in made)
    assert max_error(model, io("convnext_block")) <= TOL


def test_name_entries_win_over_class_entries():
    data = io("convnext_block")
    with pytest.warns(UserWarning, match="'b1_layer_scale'"):      # its gamma is not loaded
        model = build_model(arch("convnext_block"), npz_weights(data),
                            custom_layers={"LayerScale": MyScale,
                                           "b1_layer_scale": torch.nn.Identity()})
    assert isinstance(model.b0_layer_scale, MyScale)
    assert isinstance(model.b1_layer_scale, torch.nn.Identity)
    assert max_error(model, data) > 1e-3                          # gamma dropped: it matters


def test_replacement_without_hook_warns_that_weights_are_not_loaded():
    data = io("convnext_block")
    with pytest.warns(UserWarning, match="'b0_layer_scale'.*load_keras_weights"):
        build_model(arch("convnext_block"), npz_weights(data),
                    custom_layers={"b0_layer_scale": torch.nn.Identity()})
    with warnings.catch_warnings():                               # no weights: nothing to say
        warnings.simplefilter("error")
        build_model(arch("convnext_block"), None, custom_layers={"LayerScale": MyScale})


def test_failing_hook_is_a_mismatch_error():
    class Bad(MyScale):
        def load_keras_weights(self, arrays):
            raise ValueError("wrong count")
    with pytest.raises(MismatchError, match="b0_layer_scale.*LayerScale.*\\(8,\\).*wrong count"):
        build_model(arch("convnext_block"), npz_weights(io("convnext_block")),
                    custom_layers={"LayerScale": Bad})


def test_unsupported_layer_message_names_class_and_both_custom_layers_forms():
    a = arch("convnext_block")
    for layer in a["config"]["layers"]:
        if layer["class_name"] == "LayerScale":
            layer["class_name"] = "FancyScale"
    with pytest.raises(UnsupportedLayerError) as e:
        build_model(a, None)
    msg = str(e.value)
    assert "layer 'b0_layer_scale' (FancyScale)" in msg and "'b1_layer_scale' (FancyScale)" in msg
    assert "FancyScale x2" in msg                                  # counted per class
    assert "custom_layers={'layer_name': module}" in msg
    assert "custom_layers={'FancyScale': lambda config: MyModule(config)}" in msg
    assert "load_keras_weights(arrays)" in msg and "layer.weights order" in msg
    model = build_model(a, npz_weights(io("convnext_block")), custom_layers={"FancyScale": MyScale})
    assert max_error(model, io("convnext_block")) <= TOL           # the advice works


@pytest.mark.parametrize("name", ["reshape", "convnext_block", "norm_embed", "einsum", "reversible"])
def test_float64_end_to_end(name):
    data = io(name)
    model = build_model(arch(name), npz_weights(data))
    y32 = outputs(model, data)
    model.double()
    y64 = outputs(model, data)                                     # NumPy inputs follow the module
    assert all(y.dtype == torch.float64 for y in y64)
    assert max(float((a.double() - b).abs().max()) for a, b in zip(y32, y64)) <= 1e-6
    assert max_error(model, data) <= TOL


def _seq(*layers, shape, dtype="float32"):
    entries = [{"class_name": "InputLayer", "config": {"name": "inp", "batch_shape": list(shape),
                                                       "dtype": dtype}}]
    entries += [{"class_name": c, "config": dict(cfg)} for c, cfg in layers]
    return {"class_name": "Sequential", "config": {"name": "m", "layers": entries},
            "keras_version": "3.15.1", "backend": "torch"}


def test_rescaling_casts_integer_images_to_the_module_dtype():
    a = _seq(("Rescaling", {"name": "r", "scale": 1 / 255, "offset": -0.5}),
             ("Dense", {"name": "d", "units": 2, "use_bias": False}), shape=(None, 3), dtype="uint8")
    k = np.arange(6, dtype="float32").reshape(3, 2)
    model = build_model(a, lambda n: [k] if n == "d" else [])
    x = np.array([[0, 128, 255]], dtype="uint8")
    expected = (x / 255 - 0.5) @ k
    assert model(x).dtype == torch.float32
    assert np.allclose(model(x).detach().numpy(), expected, atol=1e-5)
    model.double()
    y = model(x)
    assert y.dtype == torch.float64 and np.allclose(y.detach().numpy(), expected, atol=1e-12)
    assert "total params                6" in model.summary().to_text()   # constants: not weights


def test_unit_normalization_of_zeros_is_zero_like_keras():
    model = build_model(_seq(("UnitNormalization", {"name": "u", "axis": -1}), shape=(None, 3)), None)
    y = model(np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], "float32")).numpy()
    assert np.array_equal(y[0], [0, 0, 0]) and np.allclose(y[1], [0.6, 0.0, 0.8])


def test_layer_scale_wrong_weight_shape_is_a_mismatch_error():
    data = io("convnext_block")
    good = npz_weights(data)
    with pytest.raises(MismatchError, match="'gamma' of layer 'b0_layer_scale' \\(LayerScale\\)"):
        build_model(arch("convnext_block"),
                    lambda n: [np.ones(9, "float32")] if n == "b0_layer_scale" else good(n))


@pytest.mark.parametrize("eq,bias,x,out,kernel,bshape", [
    ("abc,cd->abd", "d", (1, 4, 6), (4, 5), (6, 5), (5,)),
    ("abc,cde->abde", "de", (1, 4, 6), (None, 2, 3), (6, 2, 3), (2, 3)),
    ("...b,bc->...c", "c", (1, 4, 5), 3, (5, 3), (3,)),
    ("ab...,bc->ac...", "c", (1, 4, 6), (5,), (4, 5), (5, 1)),      # the bias keeps Keras's 1
    ("abde,deg->abg", None, (1, 4, 2, 3), (None, 4), (2, 3, 4), None),
])
def test_einsum_shapes_are_the_ones_keras_saved(eq, bias, x, out, kernel, bshape):
    from weightviz.keras.layers.einsum import einsum_shapes
    assert einsum_shapes(eq, bias, x, out) == (kernel, bshape)


def test_einsum_fixture_weights_have_those_shapes():
    data = io("einsum")
    assert data["w:ed_right:1"].shape == (5, 1) and data["w:ed_heads:0"].shape == (6, 2, 3)


def test_quantized_einsum_dense_is_refused():
    a = arch("einsum")
    layer = next(l for l in a["config"]["layers"] if l["name"] == "ed_2d")
    layer["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                "config": {"name": "int8_from_float32"}}
    with pytest.raises(UnsupportedLayerError, match="'ed_2d' \\(EinsumDense\\) is quantized"):
        build_model(a, None)


def test_reversible_embedding_mask_zero_is_refused():
    a = arch("reversible")
    next(l for l in a["config"]["layers"] if l["name"] == "rev_tied")["config"]["mask_zero"] = True
    with pytest.raises(UnsupportedLayerError, match="'rev_tied' \\(ReversibleEmbedding\\) uses mask_zero"):
        build_model(a, None)


def test_reversible_embedding_reverse_call_shares_the_lookup_table():
    data = io("reversible")
    model = build_model(arch("reversible"), npz_weights(data))
    assert [n for n, _ in model.rev_tied.named_parameters()] == ["embeddings"]
    assert [n for n, _ in model.rev_untied.named_parameters()] == ["embeddings", "reverse_embeddings"]
    assert max_error(model, data) <= TOL
