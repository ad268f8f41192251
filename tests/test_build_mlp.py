"""build_mlp: the seed's NumPy MLP (y = act(x @ W + b), W is (in, out)) as a torch module."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import weightviz as wv
from weightviz.errors import WeightvizError

SIZES = [(5, 16), (16, 8), (8, 3)]
ACTS = ["relu", "tanh", "softmax"]


def seeded_net(seed=0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    W = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in sizes]
    b = [rng.standard_normal(s[1]).astype(np.float32) * 0.1 for s in sizes]
    return W, b


NP_ACTS = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softmax": lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True),
    "log_softmax": lambda x: (x - x.max(-1, keepdims=True)) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "linear": lambda x: x,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
}


def numpy_forward(x, W, b, acts):
    for w, bb, a in zip(W, b, acts):
        x = NP_ACTS[a](x @ w + bb)
    return x


def predict(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


X = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)


def object_array(arrays):
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def test_lists_predict_like_numpy():
    W, b = seeded_net()
    model = wv.build_mlp(W, b, activations=ACTS)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)
    assert [n for n, _ in model.named_children()] == ["fc0", "relu0", "fc1", "tanh1", "fc2", "softmax2"]
    assert model.fc0.weight.shape == (16, 5) and model.fc0.weight.dtype == torch.float32
    assert torch.equal(model.fc1.weight, torch.from_numpy(W[1].T.copy()))


def test_npy_object_arrays_predict_like_numpy(tmp_path):
    """The seed's files: np.save of a list of differently shaped arrays (object arrays)."""
    W, b = seeded_net(seed=2)
    np.save(tmp_path / "weights.npy", object_array(W), allow_pickle=True)
    np.save(tmp_path / "biases.npy", object_array(b), allow_pickle=True)
    model = wv.build_mlp(str(tmp_path / "weights.npy"), tmp_path / "biases.npy", activations=ACTS)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)


def test_npy_object_arrays_many_layers_keep_their_order(tmp_path):
    sizes = [(5, 5 + i) if i == 0 else (4 + i, 5 + i) for i in range(12)]
    W, b = seeded_net(seed=12, sizes=sizes)
    np.save(tmp_path / "w.npy", object_array(W), allow_pickle=True)
    np.save(tmp_path / "b.npy", object_array(b), allow_pickle=True)
    acts = ["tanh"] * 12
    model = wv.build_mlp(tmp_path / "w.npy", tmp_path / "b.npy", activations=acts)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, acts), atol=1e-6, rtol=0)


def test_npz_named_pairs_predict_like_numpy(tmp_path):
    W, b = seeded_net(seed=3)
    path = tmp_path / "mlp.npz"
    # deliberately in a scrambled order, with numbers past 9 sorting wrongly as text
    arrays = {f"W{i}": w for i, w in enumerate(W)} | {f"b{i}": bb for i, bb in enumerate(b)}
    np.savez(path, **dict(sorted(arrays.items(), reverse=True)))
    model = wv.build_mlp(path, activations=ACTS)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)


def test_npz_positional_arrays(tmp_path):
    W, b = seeded_net(seed=4)
    path = tmp_path / "pos.npz"
    np.savez(path, *[a for pair in zip(W, b) for a in pair])  # arr_0 = W0, arr_1 = b0, ...
    model = wv.build_mlp(str(path), activations=ACTS)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)


def test_npz_many_layers_natural_order(tmp_path):
    sizes = [(5, 5)] * 11 + [(5, 2)]
    W, b = seeded_net(seed=5, sizes=sizes)
    acts = ["tanh"] * 11 + ["linear"]
    path = tmp_path / "deep.npz"
    np.savez(path, **{f"weight_{i}": w for i, w in enumerate(W)}, **{f"bias_{i}": x for i, x in enumerate(b)})
    model = wv.build_mlp(path, activations=acts)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, acts), atol=1e-6, rtol=0)


def test_separate_npz_files(tmp_path):
    W, b = seeded_net(seed=6)
    np.savez(tmp_path / "w.npz", *W)
    np.savez(tmp_path / "b.npz", *b)
    model = wv.build_mlp(tmp_path / "w.npz", tmp_path / "b.npz", activations=ACTS)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)


@pytest.mark.parametrize("act", sorted(NP_ACTS))
def test_each_activation(act):
    W, b = seeded_net(seed=7)
    acts = [act, act, act]
    model = wv.build_mlp(W, b, activations=acts)
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, b, acts), atol=2e-6, rtol=1e-5)


def test_gelu_none_identity_and_module():
    W, b = seeded_net(seed=8)
    model = wv.build_mlp(W, b, activations=["gelu", None, nn.Tanh()])
    assert [type(m).__name__ for m in model] == ["Linear", "GELU", "Linear", "Linear", "Tanh"]
    model2 = wv.build_mlp(W, b, activations=["identity", "linear", "Linear"])
    np.testing.assert_allclose(predict(model2, X), X @ W[0] @ W[1] @ W[2] + (b[0] @ W[1] + b[1]) @ W[2] + b[2],
                               atol=1e-5)


def test_torch_tensors_float64_and_row_biases():
    W, b = seeded_net(seed=9)
    W64 = [torch.from_numpy(w.astype(np.float64)) for w in W]
    b_rows = [x.reshape(1, -1) for x in b]  # (1, out) biases, as some NumPy code keeps them
    model = wv.build_mlp(W64, b_rows, activations=ACTS, dtype="float64")
    assert model.fc0.weight.dtype == torch.float64
    out = model(torch.from_numpy(X.astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(out, numpy_forward(X.astype(np.float64), [w.numpy() for w in W64], b, ACTS),
                               atol=1e-6)


def test_no_biases():
    W, _ = seeded_net(seed=10)
    model = wv.build_mlp(W, None, activations=ACTS)
    assert model.fc0.bias is None
    zeros = [np.zeros(w.shape[1], np.float32) for w in W]
    np.testing.assert_allclose(predict(model, X), numpy_forward(X, W, zeros, ACTS), atol=1e-6)


def test_loaded_into_check():
    """A built MLP is an ordinary module: check() sees its Linear layout."""
    W, b = seeded_net(seed=11)
    model = wv.build_mlp(W, b, activations=ACTS)
    sd = {f"fc{i}.weight": w for i, w in enumerate(W)} | {f"fc{i}.bias": x for i, x in enumerate(b)}
    r = wv.check(model, sd)
    assert r.counts == {"transposed": 3, "ok": 3}  # the seed's (in, out) layout
    m2 = wv.build_mlp([w * 0 for w in W], [x * 0 for x in b], activations=ACTS)
    wv.load(m2, sd, transpose=True)
    np.testing.assert_allclose(predict(m2, X), numpy_forward(X, W, b, ACTS), atol=1e-6, rtol=0)


# -- errors -----------------------------------------------------------------------------
def test_chain_mismatch_names_layers_and_shapes():
    W, b = seeded_net(sizes=[(5, 64), (64, 32), (64, 3)])
    with pytest.raises(WeightvizError, match=r"layer 2 expects 64 inputs, layer 1 gives 32") as ei:
        wv.build_mlp(W, b, activations=ACTS)
    assert "(64, 32)" in str(ei.value) and "(64, 3)" in str(ei.value)


def test_wrong_number_of_activations():
    W, b = seeded_net()
    with pytest.raises(WeightvizError, match="2 activations given for 3 layers"):
        wv.build_mlp(W, b, activations=["relu", "relu"])
    with pytest.raises(WeightvizError, match="one activation per layer"):
        wv.build_mlp(W, b)
    with pytest.raises(WeightvizError, match="one activation per layer"):
        wv.build_mlp(W, b, activations="relu")


def test_bias_errors():
    W, b = seeded_net()
    with pytest.raises(WeightvizError, match="2 biases given for 3 weight arrays"):
        wv.build_mlp(W, b[:2], activations=ACTS)
    bad = list(b)
    bad[1] = np.zeros(9, np.float32)
    with pytest.raises(WeightvizError, match=r"layer 1: the bias does not fit.*\(8,\).*\(9,\)"):
        wv.build_mlp(W, bad, activations=ACTS)


def test_non_2d_weight_and_unknown_activation():
    W, b = seeded_net()
    with pytest.raises(WeightvizError, match="layer 1: the weight array is not a 2-D"):
        wv.build_mlp([W[0], W[1].reshape(-1), W[2]], b, activations=ACTS)
    with pytest.raises(WeightvizError, match="unknown activation 'relu7' for layer 2"):
        wv.build_mlp(W, b, activations=["relu", "relu", "relu7"])
    with pytest.raises(WeightvizError, match="no weight arrays"):
        wv.build_mlp([], [], activations=[])


def test_npz_unpaired_numbers(tmp_path):
    W, b = seeded_net()
    np.savez(tmp_path / "x.npz", W0=W[0], W1=W[1], b0=b[0], b2=b[1])
    with pytest.raises(WeightvizError, match="do not pair up"):
        wv.build_mlp(tmp_path / "x.npz", activations=["relu", "relu"])


# -- build(): import paths and files --------------------------------------------------------
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "keras_io"


def test_build_from_import_path_with_weights(tmp_path):
    src = nn.Linear(4, 3)
    torch.save(src.state_dict(), tmp_path / "lin.pt")
    model = wv.build("torch.nn:Linear", kwargs={"in_features": 4, "out_features": 3}, weights=tmp_path / "lin.pt")
    assert isinstance(model, nn.Linear) and torch.equal(model.weight, src.weight)
    with pytest.raises(wv.MismatchError, match="does not fit"):
        wv.build("torch.nn:Linear", kwargs={"in_features": 5, "out_features": 3}, weights=tmp_path / "lin.pt")
    fresh = wv.build("torch.nn:Linear", kwargs={"in_features": 2, "out_features": 2})
    assert isinstance(fresh, nn.Linear)


def test_build_refuses_a_weights_only_file(tmp_path):
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(WeightvizError, match="carries no architecture") as ei:
        wv.build(tmp_path / "w.pt")
    assert "build_mlp" in str(ei.value)
    with pytest.raises(WeightvizError, match="kwargs= only applies to an import path"):
        wv.build(tmp_path / "w.pt", kwargs={"a": 1})


@pytest.mark.skipif(not (FIXTURES / "k2_model.json").exists(), reason="Keras fixtures not generated")
def test_build_delegates_keras_files_to_the_keras_builder():
    """The Keras builder has its own tests; here: build() hands JSON + weights and full files over."""
    m1 = wv.build(FIXTURES / "k2_model.json", weights=str(FIXTURES / "k2_weights.h5"))
    m2 = wv.build(str(FIXTURES / "k2_model.h5"))
    assert isinstance(m1, nn.Module) and isinstance(m2, nn.Module)
    n1 = sum(p.numel() for p in m1.state_dict().values())
    assert n1 == sum(p.numel() for p in m2.state_dict().values()) > 0
