"""Write weightviz/demo/data/: the demo models, trained for real, in every format.

Run from the repository root:

    .venv/bin/python tools/make_demo_data.py            # torch part, then both Keras parts

The torch part runs in the project's environment (torch, numpy, safetensors).
The Keras parts run this same script in other interpreters, because Keras and
TensorFlow are fixture tools the package never imports:

    --keras3-python PY   Keras 3 (run with KERAS_BACKEND=torch)
                         default: .tools-venv-keras3/bin/python
    --keras2-python PY   tf-keras, i.e. real Keras 2 (TensorFlow)
                         default: .tools-venv-tf/bin/python
    --only torch|finetune|gguf|onnx|keras3|keras2   run one part (in the current interpreter)

Each part adds its section to demo/data/manifest.json.  Training is seeded;
the data come from weightviz.demo.images(), so notebooks can draw fresh
samples of the same distribution.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from weightviz import demo  # noqa: E402  (NumPy only)

OUT = os.path.join(ROOT, "weightviz", "demo", "data")
TRAIN = dict(n=6000, seed=0)      # training samples
TEST = dict(n=2000, seed=1)       # held-out samples for the recorded accuracies
PRED = dict(n=32, seed=2)         # samples whose Keras predictions are stored


def out(name):
    return os.path.join(OUT, name)


def update_manifest(section, info):
    path = out("manifest.json")
    data = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    data["data"] = {"train": TRAIN, "test": TEST, "keras_predictions": PRED,
                    "classes": list(demo.CLASS_NAMES), "image_shape": list(demo.IMAGE_SHAPE)}
    data[section] = info
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(dict(sorted(data.items())), fh, indent=1, sort_keys=False)
        fh.write("\n")
    for here, dirs, files in os.walk(OUT):   # safetensors writes 0600; ship readable files
        for d in dirs:
            os.chmod(os.path.join(here, d), 0o755)
        for f in files:
            os.chmod(os.path.join(here, f), 0o644)


# ------------------------------------------------------------------ torch part

def train_torch(model, x, y, *, epochs, lr, seed):
    import torch
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    loss = None
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model.logits(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return opt, float(loss.detach())


def accuracy_torch(model, x, y):
    import torch
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def mismatched_state_dict(sd):
    """The CNN's weights as a careless training run might have saved them.

    Each change plants one status of the mismatch report (see manifest "mismatch").
    """
    import torch
    gen = torch.Generator().manual_seed(5)
    bad = {}
    for k, v in sd.items():
        v = v.clone()
        if k == "conv2.bias":                      # missing: dropped
            continue
        if k == "bn1.weight":                      # renamed: same tensor, other name
            k = "bn1.gamma"
        elif k == "fc2.weight":                    # shape: a 7-class head
            v = torch.randn(7, v.shape[1], generator=gen) * 0.1
        elif k == "fc2.bias":
            v = torch.zeros(7)
        elif k == "fc1.weight":                    # transposed: stored (in, out)
            v = v.t().contiguous()
        elif k == "conv1.weight":                  # dtype: float64
            v = v.double()
        elif k == "conv2.weight":                  # non-finite: one NaN
            v.view(-1)[3] = float("nan")
        bad["module." + k] = v
    bad["module.aux_head.weight"] = torch.randn(3, 5, generator=gen)   # unexpected
    plan = {
        "prefix": "module.",
        "missing": ["conv2.bias"],
        "unexpected": ["aux_head.weight"],
        "renamed": {"bn1.gamma": "bn1.weight"},
        "shape": {"fc2.weight": [7, 32], "fc2.bias": [7]},
        "transposed": ["fc1.weight"],
        "dtype": {"conv1.weight": "float64"},
        "non_finite": ["conv2.weight"],
    }
    return bad, plan


def torch_part():
    import torch
    from safetensors.torch import save_file
    from weightviz.demo.models import MLP, SmallCNN

    torch.set_num_threads(2)
    x, y = demo.images(**TRAIN)
    xt, yt = demo.images(**TEST)
    os.makedirs(OUT, exist_ok=True)
    info = {}

    # MLP: .pth, .safetensors, classic object .npy pair, .npz
    torch.manual_seed(0)
    mlp = MLP()
    train_torch(mlp, x, y, epochs=20, lr=3e-3, seed=0)
    mlp.eval()
    acc = accuracy_torch(mlp, xt, yt)
    sd = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    torch.save(sd, out("mlp.pth"))
    save_file(sd, out("mlp.safetensors"),
              metadata={"model": "weightviz.demo.MLP", "activations": ",".join(demo.MLP_ACTIVATIONS)})
    layers = ["fc1", "fc2", "fc3"]
    ws = [sd[f"{n}.weight"].numpy().T.copy() for n in layers]     # (in, out)
    bs = [sd[f"{n}.bias"].numpy().copy() for n in layers]
    # The seed's classic layout: np.save of a Python list of arrays of different
    # shapes -> a 1-D object array (a pickle inside the .npy).
    w_obj = np.empty(len(ws), dtype=object)
    b_obj = np.empty(len(bs), dtype=object)
    w_obj[:], b_obj[:] = ws, bs
    np.save(out("mlp_weights.npy"), w_obj, allow_pickle=True)
    np.save(out("mlp_biases.npy"), b_obj, allow_pickle=True)
    np.savez(out("mlp.npz"), **{f"{p}{i}": a for i, (w, b) in enumerate(zip(ws, bs))
                                for p, a in (("W", w), ("b", b))})
    info["mlp"] = {
        "class": "weightviz.demo.MLP", "accuracy": round(acc, 4),
        "activations": list(demo.MLP_ACTIVATIONS),
        "files": ["mlp.pth", "mlp.safetensors", "mlp_weights.npy", "mlp_biases.npy", "mlp.npz"],
        "npy_layout": "object arrays of per-layer arrays; W (in, out), y = act(x @ W + b)",
        "npz_keys": "W0, b0, W1, b1, W2, b2 (W (in, out))",
        "weight_shapes": [list(w.shape) for w in ws], "bias_shapes": [list(b.shape) for b in bs],
        "num_params": int(sum(v.numel() for v in sd.values())),
    }
    print(f"MLP test accuracy {acc:.4f}")

    # SmallCNN: .pth, .safetensors, a training checkpoint, a mismatched checkpoint
    torch.manual_seed(1)
    cnn = SmallCNN()
    epochs = 12
    opt, last_loss = train_torch(cnn, x, y, epochs=epochs, lr=3e-3, seed=1)
    cnn.eval()
    acc = accuracy_torch(cnn, xt, yt)
    sd = {k: v.detach().clone() for k, v in cnn.state_dict().items()}
    torch.save(sd, out("cnn.pth"))
    save_file(sd, out("cnn.safetensors"), metadata={"model": "weightviz.demo.SmallCNN"})
    torch.save({"model_state_dict": sd, "optimizer_state_dict": opt.state_dict(),
                "epoch": epochs, "loss": round(last_loss, 6)}, out("cnn_training.pth"))
    bad, plan = mismatched_state_dict(sd)
    torch.save(bad, out("cnn_mismatched.pth"))
    info["cnn"] = {
        "class": "weightviz.demo.SmallCNN", "accuracy": round(acc, 4),
        "files": ["cnn.pth", "cnn.safetensors", "cnn_training.pth", "cnn_mismatched.pth"],
        "training_checkpoint": {"file": "cnn_training.pth", "epoch": epochs,
                                "keys": ["model_state_dict", "optimizer_state_dict", "epoch", "loss"]},
        "num_params": int(sum(v.numel() for k, v in sd.items() if "running" not in k
                              and "num_batches" not in k)),
    }
    info["mismatch"] = dict(file="cnn_mismatched.pth", model="weightviz.demo.SmallCNN", **plan)
    print(f"CNN test accuracy {acc:.4f}")
    for key in ("mlp", "cnn", "mismatch"):
        update_manifest(key, info[key])


def finetune_part():
    """cnn_finetuned.pth: cnn.pth fine-tuned for a few steps on a subset, convolutions and
    BatchNorm frozen (eval mode), so only the classifier moves: the diff demo."""
    import torch
    from weightviz.demo.models import SmallCNN

    torch.set_num_threads(2)
    torch.manual_seed(3)
    cnn = SmallCNN()
    cnn.load_state_dict(torch.load(out("cnn.pth"), weights_only=True))
    frozen = ("conv1", "bn1", "conv2")
    for name, p in cnn.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
    x, y = demo.images(n=512, seed=3)
    keep = y < 5                                   # a subset: the first five classes only
    xt, yt = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
    opt = torch.optim.SGD([p for p in cnn.parameters() if p.requires_grad], lr=0.5)
    gen = torch.Generator().manual_seed(3)
    cnn.eval()                                     # BatchNorm statistics stay as they were
    steps = 0
    for idx in torch.randperm(len(xt), generator=gen).split(32)[:8]:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(cnn.logits(xt[idx]), yt[idx]).backward()
        opt.step()
        steps += 1
    sd = {k: v.detach().clone() for k, v in cnn.state_dict().items()}
    torch.save(sd, out("cnn_finetuned.pth"))
    xe, ye = demo.images(**TEST)
    acc = accuracy_torch(cnn, xe, ye)
    update_manifest("finetune", {"files": ["cnn_finetuned.pth"], "base": "cnn.pth", "steps": steps,
                                 "batch": 32, "classes": [0, 1, 2, 3, 4], "frozen": list(frozen),
                                 "accuracy": round(acc, 4)})
    print(f"fine-tuned CNN test accuracy {acc:.4f} after {steps} steps")


def gguf_part():
    """cnn_q8_0.gguf and cnn_q4_0.gguf: cnn.pth quantized by the gguf package itself, as
    llama.cpp does: weights whose rows are whole 32-element blocks (fc1, fc2) in Q8_0 / Q4_0,
    the rest (convolutions, biases, BatchNorm) kept in F32 / I64; state-dict names."""
    import gguf
    import torch
    from gguf import quants
    from weightviz.demo.models import SmallCNN

    sd = torch.load(out("cnn.pth"), weights_only=True)
    xe, ye = demo.images(**TEST)
    info = {"files": [], "source": "cnn.pth", "quantized": {}, "accuracy": {}}
    for qname in ("Q8_0", "Q4_0"):
        qtype = gguf.GGMLQuantizationType[qname]
        name = f"cnn_{qname.lower()}.gguf"
        w = gguf.GGUFWriter(out(name), "weightviz-cnn")
        w.add_name("weightviz demo SmallCNN")
        w.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qname}"])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        back, quantized = {}, []
        for k, v in sd.items():
            a = v.numpy()
            if a.ndim == 2 and a.shape[-1] % 32 == 0:
                q = quants.quantize(a, qtype)
                w.add_tensor(k, q, raw_shape=q.shape, raw_dtype=qtype)
                back[k] = torch.from_numpy(quants.dequantize(q, qtype).reshape(a.shape))
                quantized.append(k)
            else:
                w.add_tensor(k, a)
                back[k] = v
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        cnn = SmallCNN()
        cnn.load_state_dict(back)
        cnn.eval()
        info["files"].append(name)
        info["quantized"][name] = quantized
        info["accuracy"][name] = round(accuracy_torch(cnn, xe, ye), 4)
    update_manifest("gguf", info)
    print(f"GGUF demo files, test accuracy {info['accuracy']}")


def onnx_part():
    """cnn.onnx: cnn.pth exported by torch.onnx.export (the TorchScript exporter, eval mode),
    so BatchNorm is folded into conv1 as exporters do; its outputs on the recorded test
    samples are compared with the torch model's."""
    import contextlib
    import io
    import warnings

    import torch
    from weightviz.demo.models import SmallCNN

    cnn = SmallCNN()
    cnn.load_state_dict(torch.load(out("cnn.pth"), weights_only=True))
    cnn.eval()
    x = torch.from_numpy(demo.images(n=1, seed=0)[0])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (x,), out("cnn.onnx"), dynamo=False, input_names=["image"],
                          output_names=["probabilities"], dynamic_axes={"image": {0: "batch"}})
    update_manifest("onnx", {"files": ["cnn.onnx"], "source": "cnn.pth",
                             "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
                             "folded": "bn1 into conv1 (constant folding in eval mode)"})
    print("ONNX demo file written")


# ------------------------------------------------------------------ Keras parts

def keras_model(keras):
    """The same small CNN in Keras 2 and Keras 3 (Sequential, channels-last)."""
    layers = keras.layers
    return keras.Sequential([
        keras.Input(shape=demo.IMAGE_SHAPE, name="image"),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(2, name="pool1"),
        layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        layers.MaxPooling2D(2, name="pool2"),
        layers.Flatten(name="flatten"),
        layers.Dense(32, activation="relu", name="dense1"),
        layers.Dropout(0.2, name="dropout"),
        layers.Dense(len(demo.CLASS_NAMES), activation="softmax", name="predictions"),
    ], name="demo_cnn")


def train_keras(keras, model, seed):
    keras.utils.set_random_seed(seed)
    x, y = demo.images(**TRAIN)
    xt, yt = demo.images(**TEST)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=8, verbose=0, shuffle=True)
    probs = np.asarray(model.predict(xt, verbose=0))
    return float((probs.argmax(1) == yt).mean())


def save_predictions(model, name):
    x, y = demo.images(**PRED)
    probs = np.asarray(model.predict(x, verbose=0)).astype(np.float32)
    np.savez(out(name), x=x, y=y, probs=probs)


def check_reloads(keras, loaders, name):
    """Each saved form, loaded back by Keras itself, predicts what was stored."""
    with np.load(out(name)) as z:
        x, probs = z["x"], z["probs"]
    for what, load in loaders.items():
        got = np.asarray(load().predict(x, verbose=0))
        err = float(np.abs(got - probs).max())
        assert err < 1e-5, (what, err)
        print(f"  reloaded {what}: max |diff| {err:.1e}")


def keras3_part():
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    model = keras_model(keras)
    acc = train_keras(keras, model, seed=3)
    with open(out("keras_model.json"), "w", encoding="utf-8") as fh:
        fh.write(model.to_json())
    model.save_weights(out("keras_model.weights.h5"))
    model.save(out("keras_model.h5"), include_optimizer=False)   # legacy HDF5 full model
    model.save(out("keras_model.keras"))
    save_predictions(model, "keras_predictions.npz")

    def from_json():
        m = keras.models.model_from_json(open(out("keras_model.json"), encoding="utf-8").read())
        m.load_weights(out("keras_model.weights.h5"))
        return m
    check_reloads(keras, {
        "json + weights.h5": from_json,
        ".h5": lambda: keras.models.load_model(out("keras_model.h5"), compile=False),
        ".keras": lambda: keras.models.load_model(out("keras_model.keras"), compile=False),
    }, "keras_predictions.npz")
    update_manifest("keras3", {
        "keras_version": keras.__version__, "backend": "torch", "accuracy": round(acc, 4),
        "files": ["keras_model.json", "keras_model.weights.h5", "keras_model.h5",
                  "keras_model.keras", "keras_predictions.npz"],
        "predictions": "keras_predictions.npz: x (32, 16, 16, 1), y (32,), probs (32, 10)",
        "num_params": int(model.count_params()),
    })
    print(f"Keras 3 test accuracy {acc:.4f}")


def keras2_part():
    import tf_keras as keras
    model = keras_model(keras)
    acc = train_keras(keras, model, seed=4)
    with open(out("keras2_model.json"), "w", encoding="utf-8") as fh:
        fh.write(model.to_json())
    model.save_weights(out("keras2_model_weights.h5"), save_format="h5")   # legacy weights-only
    model.save(out("keras2_model.h5"), save_format="h5")                   # legacy full model
    save_predictions(model, "keras2_predictions.npz")

    def from_json():
        m = keras.models.model_from_json(open(out("keras2_model.json"), encoding="utf-8").read())
        m.load_weights(out("keras2_model_weights.h5"))
        return m
    check_reloads(keras, {
        "json + weights.h5": from_json,
        ".h5": lambda: keras.models.load_model(out("keras2_model.h5"), compile=False),
    }, "keras2_predictions.npz")
    update_manifest("keras2", {
        "keras_version": keras.__version__, "writer": "tf_keras (TensorFlow)",
        "accuracy": round(acc, 4),
        "files": ["keras2_model.json", "keras2_model_weights.h5", "keras2_model.h5",
                  "keras2_predictions.npz"],
        "predictions": "keras2_predictions.npz: x (32, 16, 16, 1), y (32,), probs (32, 10)",
        "num_params": int(model.count_params()),
    })
    print(f"Keras 2 test accuracy {acc:.4f}")


def adapter_part():
    """cnn_lora*/ and cnn_lora_merged_bf16.safetensors, trained and saved by PEFT
    (tools/make_demo_adapter.py)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_demo_adapter
    make_demo_adapter.main()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["torch", "finetune", "gguf", "onnx", "adapter", "keras3", "keras2"])
    ap.add_argument("--keras3-python", default=os.path.join(ROOT, ".tools-venv-keras3/bin/python"))
    ap.add_argument("--keras2-python", default=os.path.join(ROOT, ".tools-venv-tf/bin/python"))
    args = ap.parse_args(argv)
    if args.only:
        {"torch": torch_part, "finetune": finetune_part, "gguf": gguf_part, "onnx": onnx_part, "keras3": keras3_part,
         "keras2": keras2_part, "adapter": adapter_part}[args.only]()
        return
    torch_part()
    finetune_part()
    gguf_part()
    onnx_part()
    adapter_part()
    env = dict(os.environ, KERAS_BACKEND="torch", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
    for part, py in (("keras3", args.keras3_python), ("keras2", args.keras2_python)):
        subprocess.run([py, os.path.abspath(__file__), "--only", part], check=True, env=env)
    sizes = {f: os.path.getsize(out(f)) for f in demo.files()}
    print(f"{len(sizes)} files, {sum(sizes.values()) / 1e6:.3f} MB in all")


if __name__ == "__main__":
    main()
