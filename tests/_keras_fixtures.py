"""Reading the Keras fixtures of tests/fixtures/keras_models/ (written by real Keras, see
make_keras_models.py): sample inputs x0.., Keras's own predictions y0.., each layer's weights
w:<layer>:<i>, and the architecture JSON. Shared by the tests/test_keras_build*.py files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FIX = Path(__file__).parent / "fixtures" / "keras_models"
TOL = 1e-5


def io(name):
    with np.load(FIX / f"{name}_io.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def arch(name):
    return json.loads((FIX / f"{name}.json").read_text())


def npz_weights(data):
    """layer name -> its Keras weight arrays, in layer.weights order."""
    def weights(layer):
        out, i = [], 0
        while f"w:{layer}:{i}" in data:
            out.append(data[f"w:{layer}:{i}"])
            i += 1
        return out
    return weights


def predict(model, data):
    xs = [data[f"x{i}"] for i in range(sum(k.startswith("x") for k in data))]
    with torch.no_grad():
        ys = model(*xs)
    return ys if isinstance(ys, tuple) else (ys,)


def max_error(model, data) -> float:
    """Largest |torch - Keras| over every output (shapes must agree)."""
    ys = predict(model, data)
    refs = [data[f"y{i}"] for i in range(sum(k.startswith("y") for k in data))]
    assert len(ys) == len(refs)
    errs = []
    for y, r in zip(ys, refs):
        assert tuple(y.shape) == r.shape
        errs.append(float(np.abs(y.detach().numpy().astype(np.float64) - r).max()))
    return max(errs)
