"""The shipped demo material: files present and small, models load and still work."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest
import torch

from weightviz import demo
from weightviz.errors import WeightvizError

EXPECTED_FILES = [
    "cnn.onnx", "cnn.pth", "cnn.safetensors", "cnn_dcp_step1", "cnn_dcp_step2",   # DCP: notebook 11
    "cnn_finetuned.pth", "cnn_lora", "cnn_lora_merged_bf16.safetensors",
    "cnn_lora_r8", "cnn_lora_zero3", "cnn_mismatched.pth", "cnn_q4_0.gguf", "cnn_q8_0.gguf", "cnn_sharded",
    "cnn_training.pth",
    "keras2_model.h5", "keras2_model.json", "keras2_model_weights.h5", "keras2_predictions.npz",
    "keras_model.h5", "keras_model.json", "keras_model.keras", "keras_model.weights.h5",
    "keras_predictions.npz", "manifest.json",
    "mlp.npz", "mlp.pth", "mlp.safetensors", "mlp_biases.npy", "mlp_weights.npy",
]


@pytest.fixture(scope="module")
def fresh():
    """Fresh samples, not the training (seed 0) or the recorded test (seed 1) set."""
    return demo.images(600, seed=12345)


def _torch_load(name):
    return torch.load(demo.path(name), map_location="cpu", weights_only=True)


def test_files_are_shipped_and_small():
    assert demo.files() == EXPECTED_FILES
    def size(p):
        if os.path.isdir(p):
            return sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p))
        return os.path.getsize(p)
    sizes = {f: size(demo.path(f)) for f in demo.files()}
    assert all(s > 0 for s in sizes.values())
    assert max(sizes.values()) < 300_000
    assert sum(sizes.values()) < 1_700_000        # + two DCP folders of ~90 KB (notebook 11)
    assert os.path.isabs(demo.path("mlp.pth"))


def test_unknown_file_is_a_weightviz_error():
    with pytest.raises(WeightvizError, match="mlp.pth"):
        demo.path("nope.pth")
    with pytest.raises(WeightvizError):
        demo.path("../demo.py")
    with pytest.raises(WeightvizError):
        demo.path("..")


def test_manifest_lists_every_file():
    m = demo.manifest()
    listed = {f for part in ("mlp", "cnn", "finetune", "gguf", "onnx", "adapter", "keras3", "keras2", "sharded",
                             "dcp")
              for f in m[part]["files"]}
    assert listed | {"manifest.json"} == set(EXPECTED_FILES)
    assert m["data"]["classes"] == list(demo.CLASS_NAMES)
    assert m["mlp"]["activations"] == list(demo.MLP_ACTIVATIONS)


def test_import_stays_light():
    code = ("import sys, weightviz.demo as d; d.images(4, seed=0); "
            "print(sorted(m for m in ('torch', 'matplotlib', 'keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_images_are_deterministic_and_well_formed():
    x, y = demo.images(50, seed=7)
    x2, y2 = demo.images(50, seed=7)
    assert x.shape == (50, 16, 16, 1) and x.dtype == np.float32
    assert y.shape == (50,) and y.dtype == np.int64
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= set(range(len(demo.CLASS_NAMES)))
    x3, _ = demo.images(50, seed=8)
    assert not np.array_equal(x, x3)
    assert demo.images(0)[0].shape == (0, 16, 16, 1)
    # every class draws something brighter than the noise
    xc, yc = demo.images(200, seed=3, noise=0.0)
    for k in range(len(demo.CLASS_NAMES)):
        assert xc[yc == k].max() > 0.6


@pytest.mark.parametrize("cls, name", [("MLP", "mlp"), ("SmallCNN", "cnn")])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_state_dicts_load_strictly_and_reach_recorded_accuracy(cls, name, fmt, fresh):
    if fmt == "pth":
        sd = _torch_load(f"{name}.pth")
    else:
        from safetensors.torch import load_file
        sd = load_file(demo.path(f"{name}.safetensors"))
    model = getattr(demo, cls)()
    model.load_state_dict(sd, strict=True)
    model.eval()
    x, y = fresh
    with torch.no_grad():
        probs = model(x)
    assert probs.shape == (len(y), 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(y)), atol=1e-5)
    acc = float((probs.argmax(1).numpy() == y).mean())
    recorded = demo.manifest()[name]["accuracy"]
    assert recorded > 0.9
    assert acc >= recorded - 0.03, (acc, recorded)


@pytest.mark.parametrize("name", ["cnn_q8_0.gguf", "cnn_q4_0.gguf"])
def test_quantized_demo_loads_strictly_and_keeps_its_accuracy(name, fresh):
    """The GGUF demo files (cnn.pth quantized by the gguf package) load into SmallCNN through
    weightviz, dequantized, and predict about as well as the float model."""
    import weightviz as wv
    info = demo.manifest()["gguf"]
    ckpt = wv.open(demo.path(name))
    assert [n for n, e in ckpt.items() if wv.dtypes.block_size(e.dtype)] == info["quantized"][name]
    report = wv.check(demo.SmallCNN(), ckpt)
    assert report.fits and "2 dequantized tensors" in str(report).splitlines()[1]
    model = demo.SmallCNN()
    assert wv.load(model, ckpt).fits
    float_fc1 = _torch_load("cnn.pth")["fc1.weight"]
    err = float((model.fc1.weight.detach() - float_fc1).abs().max())
    assert 0 < err < (0.01 if "q8" in name else 0.1)          # quantized, not a copy
    x, y = fresh
    with torch.no_grad():
        acc = float((model(x).argmax(1).numpy() == y).mean())
    assert acc >= info["accuracy"][name] - 0.03
    assert info["accuracy"][name] >= demo.manifest()["cnn"]["accuracy"] - 0.02


def test_onnx_demo_is_the_trained_cnn_with_its_batchnorm_folded():
    """cnn.onnx (torch.onnx.export of cnn.pth): the unfolded weights equal cnn.pth's, and
    check names the folded BatchNorm rather than reporting bare missing tensors."""
    import weightviz as wv
    sd = _torch_load("cnn.pth")
    ckpt = wv.open(demo.path("cnn.onnx"))
    for name in ("conv2.weight", "fc1.weight", "fc2.bias"):
        assert np.array_equal(ckpt[name].numpy(), sd[name].numpy())
    model = demo.SmallCNN()
    model.load_state_dict(sd)
    report = wv.check(model, ckpt)
    notes = {row.name: row.note for row in report}
    assert "folded 'bn1'" in notes["bn1.running_var"] and "values checked" in " ".join(notes.values())
    assert report.counts == {"missing": 1, "folded": 6, "ok": 6}      # missing: the step counter


def test_models_accept_every_documented_layout(fresh):
    model = demo.MLP()
    model.load_state_dict(_torch_load("mlp.pth"))
    cnn = demo.models.SmallCNN()
    cnn.load_state_dict(_torch_load("cnn.pth"))
    cnn.eval()
    x = fresh[0][:5]
    for m in (model, cnn):
        ref = m(torch.from_numpy(x))
        for alt in (x, x[..., 0], x.reshape(5, 256), x.transpose(0, 3, 1, 2)):
            assert torch.allclose(m(alt), ref, atol=1e-6)
        with pytest.raises(WeightvizError, match="16, 16, 1"):
            m(x[0])


def _numpy_mlp(x, weights, biases, activations):
    h = x.reshape(len(x), -1).astype(np.float64)
    for w, b, act in zip(weights, biases, activations):
        h = h @ w + b
        if act == "relu":
            h = np.maximum(h, 0)
        elif act == "softmax":
            e = np.exp(h - h.max(1, keepdims=True))
            h = e / e.sum(1, keepdims=True)
        else:
            raise AssertionError(act)
    return h


def test_numpy_mlp_predicts_like_the_torch_mlp(fresh):
    # Our own files: allow_pickle=True is fine here, and only here.
    ws = np.load(demo.path("mlp_weights.npy"), allow_pickle=True)
    bs = np.load(demo.path("mlp_biases.npy"), allow_pickle=True)
    assert ws.dtype == object and bs.dtype == object and len(ws) == len(bs) == 3
    assert [w.shape for w in ws] == [(256, 64), (64, 32), (32, 10)]   # (in, out)
    assert [b.shape for b in bs] == [(64,), (32,), (10,)]
    with np.load(demo.path("mlp.npz"), allow_pickle=False) as z:
        assert sorted(z.files) == ["W0", "W1", "W2", "b0", "b1", "b2"]
        for i in range(3):
            assert np.array_equal(z[f"W{i}"], ws[i]) and np.array_equal(z[f"b{i}"], bs[i])
    x, y = fresh
    probs_np = _numpy_mlp(x, ws, bs, demo.MLP_ACTIVATIONS)
    model = demo.MLP()
    model.load_state_dict(_torch_load("mlp.pth"))
    model.eval()
    with torch.no_grad():
        probs_t = model(x).numpy()
    assert np.allclose(probs_np, probs_t, atol=1e-4)
    assert np.array_equal(probs_np.argmax(1), probs_t.argmax(1))


def test_npy_refuses_plain_numpy_loading():
    # The classic layout is a pickle inside the .npy: NumPy's safe default refuses it.
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(demo.path("mlp_weights.npy"))


def test_training_checkpoint():
    ck = _torch_load("cnn_training.pth")
    assert sorted(ck) == ["epoch", "loss", "model_state_dict", "optimizer_state_dict"]
    assert ck["epoch"] == demo.manifest()["cnn"]["training_checkpoint"]["epoch"]
    assert isinstance(ck["loss"], float) and np.isfinite(ck["loss"])
    demo.SmallCNN().load_state_dict(ck["model_state_dict"], strict=True)
    opt = ck["optimizer_state_dict"]
    assert set(opt) == {"state", "param_groups"}
    n_params = len(list(demo.SmallCNN().parameters()))
    assert len(opt["state"]) == n_params


def test_mismatched_checkpoint_plants_every_status():
    bad = _torch_load("cnn_mismatched.pth")
    good = _torch_load("cnn.pth")
    plan = demo.manifest()["mismatch"]
    assert all(k.startswith(plan["prefix"]) for k in bad)
    bad = {k[len(plan["prefix"]):]: v for k, v in bad.items()}
    for k in plan["missing"]:
        assert k in good and k not in bad
    for k in plan["unexpected"]:
        assert k in bad and k not in good
    for old, new in plan["renamed"].items():
        assert old in bad and new not in bad and torch.equal(bad[old], good[new])
    for k, shape in plan["shape"].items():
        assert list(bad[k].shape) == shape != list(good[k].shape)
    for k in plan["transposed"]:
        assert torch.equal(bad[k], good[k].t())
    for k, dt in plan["dtype"].items():
        assert str(bad[k].dtype) == f"torch.{dt}" and torch.equal(bad[k].float(), good[k])
    for k in plan["non_finite"]:
        assert int(torch.isnan(bad[k]).sum()) == 1
        assert torch.equal(torch.nan_to_num(bad[k]) != torch.nan_to_num(good[k]),
                           torch.isnan(bad[k]))
    untouched = set(good) - set(plan["missing"]) - set(plan["renamed"].values()) \
        - set(plan["shape"]) - set(plan["transposed"]) - set(plan["dtype"]) - set(plan["non_finite"])
    assert untouched          # some tensors still match as they are
    for k in untouched:
        assert torch.equal(bad[k], good[k])
    with pytest.raises(RuntimeError):
        demo.SmallCNN().load_state_dict(bad, strict=True)


@pytest.mark.parametrize("prefix, version", [("keras", "3."), ("keras2", "2.")])
def test_keras_files_are_real_and_predictions_consistent(prefix, version):
    part = "keras3" if prefix == "keras" else "keras2"
    info = demo.manifest()[part]
    assert info["keras_version"].startswith(version)
    with h5py.File(demo.path(f"{prefix}_model.h5"), "r") as h:
        assert h.attrs["keras_version"] == info["keras_version"]
        full_cfg = json.loads(h.attrs["model_config"])
    with open(demo.path(f"{prefix}_model.json"), encoding="utf-8") as fh:
        cfg = json.load(fh)
    assert cfg["class_name"] == full_cfg["class_name"] == "Sequential"
    layers = [layer["class_name"] for layer in cfg["config"]["layers"]]
    assert layers[-1] == "Dense" and "Conv2D" in layers and "Flatten" in layers
    if prefix == "keras":
        with zipfile.ZipFile(demo.path("keras_model.keras")) as z:
            assert {"config.json", "metadata.json", "model.weights.h5"} <= set(z.namelist())
        with h5py.File(demo.path("keras_model.weights.h5"), "r") as h:
            assert "layers" in h
    else:
        with h5py.File(demo.path("keras2_model_weights.h5"), "r") as h:
            assert "layer_names" in h.attrs
    with np.load(demo.path(f"{prefix}_predictions.npz"), allow_pickle=False) as z:
        x, y, probs = z["x"], z["y"], z["probs"]
    n = demo.manifest()["data"]["keras_predictions"]["n"]
    assert x.shape == (n, 16, 16, 1) and x.dtype == np.float32
    assert y.shape == (n,) and probs.shape == (n, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (probs.argmax(1) == y).mean() > 0.9
    # the stored inputs are exactly what demo.images() draws (same seed)
    xs, ys = demo.images(**demo.manifest()["data"]["keras_predictions"])
    assert np.allclose(x, xs, atol=1e-6) and np.array_equal(y, ys)
