"""weightviz.divergence: two models side by side, the first layer where they part, and why."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

import weightviz as wv
from weightviz import demo
from weightviz.errors import WeightvizError
from weightviz.compare.layertrace import DivergenceReport, divergence

KERAS = demo.path("keras_model.h5")


@pytest.fixture(scope="module")
def keras_cnn():
    return wv.build(KERAS)


@pytest.fixture(scope="module")
def images():
    return demo.images(8, seed=0)[0]


# -- CNN: the demo port with the flatten slip ------------------------------------------------
def test_flatten_slip_is_found_at_the_dense_after_flatten(keras_cnn, images):
    port = demo.KerasCNNPort(flatten="chw").load_keras(KERAS)
    r = divergence(keras_cnn, port, images)
    assert r.diverges and r.pairing == "by execution order"
    assert (r.first.name_a, r.first.name_b) == ("dense1", "dense1")
    assert "flatten order" in r.first.hint
    before = r.rows[:r.first.index - 1]
    assert [row.name_a for row in before] == ["conv1", "pool1", "conv2", "pool2"]
    assert all(row.within and row.permutation == "NHWC→NCHW" for row in before)
    assert repr(r).splitlines()[0].startswith("models part at layer 5: `dense1` ↔ `dense1`")


def test_fixed_port_matches_everywhere_and_matches_keras_predictions(keras_cnn, images):
    port = demo.KerasCNNPort(flatten="hwc").load_keras(KERAS)
    r = divergence(keras_cnn, port, images)
    assert not r.diverges and r.first is None
    assert len(r) == 7 and r.rows[-1].name_a == "output"
    assert all(row.within and row.max_abs_error <= 1e-5 for row in r)
    assert r["relu1"] is r["conv1"]                      # by either side's name
    assert repr(r).splitlines()[0].startswith("no divergence: 6 layers paired")
    stored = np.load(demo.path("keras_predictions.npz"))
    port.eval()
    with torch.no_grad():
        got = port(stored["x"]).numpy()
    assert np.abs(got - stored["probs"]).max() < 1e-5


# -- RNN: GRU gate blocks swapped --------------------------------------------------------------
class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.head(out[:, -1])


def _swap_rz(model):
    bad = copy.deepcopy(model)
    u = bad.gru.hidden_size
    with torch.no_grad():
        for name, p in bad.gru.named_parameters():
            r, z = p[:u].clone(), p[u:2 * u].clone()
            p[:u], p[u:2 * u] = z, r
    return bad


def test_gru_gate_order_slip_is_found_at_the_gru():
    torch.manual_seed(0)
    model = GRUNet()
    x = torch.randn(4, 7, 5)
    r = divergence(model, _swap_rz(model), x)
    assert r.pairing == "by name" and r.first.name_a == "gru" and r.first.index == 1
    assert "gate order" in r.first.hint
    same = divergence(model, copy.deepcopy(model), x)
    assert not same.diverges and [row.name_a for row in same] == ["gru", "head", "output"]


# -- MLP from arrays --------------------------------------------------------------------------
def _mlp_arrays():
    rng = np.random.default_rng(0)
    W = [rng.standard_normal(s).astype(np.float32) for s in ((12, 8), (8, 6), (6, 4))]
    b = [rng.standard_normal(s[1]).astype(np.float32) for s in ((12, 8), (8, 6), (6, 4))]
    return W, b


def _sequential(W, b):
    seq = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4),
                        nn.Softmax(dim=-1))
    with torch.no_grad():
        for lin, w, bias in zip(seq[::2], W, b):
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(bias))
    return seq


def test_build_mlp_against_a_hand_written_sequential():
    W, b = _mlp_arrays()
    built = wv.build_mlp(W, b, ["relu", "tanh", "softmax"])
    x = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)
    r = divergence(built, _sequential(W, b), x)
    assert not r.diverges and len(r) == 7
    assert [(row.name_a, row.name_b) for row in r][:3] == [("fc0", "0"), ("relu0", "1"), ("fc1", "2")]
    b2 = [v.copy() for v in b]
    b2[1][0] += 0.5
    bad = divergence(built, _sequential(W, b2), x)
    assert (bad.first.name_a, bad.first.name_b) == ("fc1", "2")
    assert "inputs agree" in bad.first.hint


# -- the other hints --------------------------------------------------------------------------
def test_batchnorm_epsilon_hint():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        a[1].running_var.fill_(0.01)
    b = copy.deepcopy(a)
    b[1].eps = 1e-3
    r = divergence(a, b, torch.randn(2, 1, 6, 6))
    assert r.first.name_a == "1" and "epsilon" in r.first.hint
    assert "1e-05 in a, 0.001 in b" in r.first.hint


def test_softmax_in_one_model_only():
    torch.manual_seed(0)
    logits = nn.Sequential(nn.Linear(4, 3))
    probs = nn.Sequential(copy.deepcopy(logits[0]), nn.Softmax(dim=-1))
    r = divergence(probs, logits, torch.randn(6, 4))
    assert r.first.name_a == "output" and "softmax in one model and not the other" in r.first.hint
    assert "model a applies it" in r.first.hint
    assert r.summary.startswith("models part at the final outputs")


def test_stride_2_conv_hint():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1))
    b = copy.deepcopy(a)
    b[0].padding = (0, 0)
    x = torch.randn(2, 1, 9, 9)              # 9 -> 5 with padding 1; (9 - 3) // 2 + 1 = 4 without
    with pytest.raises(WeightvizError, match="outputs cannot be compared"):
        divergence(a, b, x)
    b = nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), 0.0), copy.deepcopy(a[0]))
    b[1].padding = (0, 0)
    r = divergence(a, b, torch.randn(2, 1, 8, 8))
    assert r.first.name_a == "0" and "stride 2" in r.first.hint


def test_torchscript_trace_compares_final_outputs_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(3, 1, 4, 4)
    traced = torch.jit.trace(model.eval(), x)
    r = divergence(model, traced, x)
    assert not r.diverges and len(r) == 1 and r.rows[0].name_a == "output"
    assert any("TorchScript" in n and "only the final outputs" in n for n in r.notes)


# -- inputs, failures, NaN --------------------------------------------------------------------
def test_inputs_are_not_modified_and_modes_are_restored():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x.mul_(2))             # a careless model writing into its input

    a, b = InPlace(), InPlace()
    b.load_state_dict(a.state_dict())
    a.train()
    xt, xn = torch.randn(4, 3), np.random.default_rng(0).standard_normal((4, 3))
    keep_t, keep_n = xt.clone(), xn.copy()
    assert not divergence(a, b, xt).diverges and not divergence(a, b, xn).diverges
    assert torch.equal(xt, keep_t) and np.array_equal(xn, keep_n)
    assert a.training and b.training              # both were in training mode: restored


def test_a_model_that_raises_is_named():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("kaboom")

    with pytest.raises(WeightvizError, match=r"model b \(Boom\) raised RuntimeError.*kaboom"):
        divergence(nn.Sequential(nn.Linear(3, 2)), Boom(), torch.randn(2, 3))


def test_wrong_input_shape(keras_cnn):
    with pytest.raises(WeightvizError, match="model a .* raised"):
        divergence(keras_cnn, demo.KerasCNNPort(), np.zeros((2, 7), np.float32))


class Head(nn.Module):
    """A model whose output is a functional slice of its only layer."""

    def __init__(self, width, keep):
        super().__init__()
        self.fc, self.keep = nn.Linear(4, width), keep

    def forward(self, x):
        return self.fc(x)[:, :self.keep]


def test_no_pairable_layers_compares_final_outputs():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    r = divergence(Head(5, 2), Head(6, 2), x)
    assert r.pairing == "final outputs only" and len(r) == 1 and r.rows[0].name_a == "output"
    assert any("only the final outputs" in n for n in r.notes)
    assert "unpaired in a: fc" in "\n".join(r.notes)
    with pytest.raises(WeightvizError, match="outputs cannot be compared.*a \\(3, 2\\), b \\(3, 3\\)"):
        divergence(Head(5, 2), Head(6, 3), x)
    a = Head(5, 2)
    b = copy.deepcopy(a)
    b.keep = 3
    r = divergence(a, b, x)                       # the layers pair, the outputs do not
    assert r.rows[0].within and r.first.name_a == "output" and r.first.status == "shape"
    assert "output shapes differ" in r.summary


def test_nan_output_is_a_row_not_a_crash():
    a = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    b = copy.deepcopy(a)
    with torch.no_grad():
        b[0].bias[1] = float("nan")
    r = divergence(a, b, torch.randn(2, 3))
    assert r.first.name_a == "0" and r.first.status == "nan" and "NaN in b" in r.first.note
    assert r.first.max_abs_error != r.first.max_abs_error
    assert json.loads(r.to_json())["rows"][0]["max_abs_error"] == "nan"


# -- the report object ------------------------------------------------------------------------
def test_report_renders_deterministically(keras_cnn, images):
    port = demo.KerasCNNPort(flatten="chw").load_keras(KERAS)
    r1, r2 = divergence(keras_cnn, port, images), divergence(keras_cnn, port, images)
    assert isinstance(r1, DivergenceReport)
    text = repr(r1)
    assert text == repr(r2) and text.splitlines()[0] == r1.summary
    assert "hint: flatten order" in text.splitlines()[1] and "0x" not in text
    html = r1._repr_html_()
    assert "<table" in html and "dense1" in html
    d = json.loads(r1.to_json())
    assert d["diverges"] is True and d["first"] == 5 and len(d["rows"]) == len(r1) == 7
    assert [row.name_a for row in r1] == [row["name_a"] for row in d["rows"]]
    with pytest.raises(KeyError):
        r1["nope"]


def test_the_verb_is_the_module_function():
    assert wv.divergence.__doc__ and "layertrace" in wv.divergence.__doc__


def test_plot_and_names(keras_cnn, images):
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex
    import weightviz.plots
    from weightviz.render import COLOURS
    port = demo.KerasCNNPort(flatten="chw").load_keras(KERAS)
    r = divergence(keras_cnn, port, images, names=("keras", "port"))
    assert r.names == ("keras", "port") and "model a    keras" in repr(r)
    ax = weightviz.plots.divergence_plot(r)
    labels = ax.get_xticklabels()
    assert [lab.get_text() for lab in labels][3:5] == ["pool2", "dense1"]
    assert [to_hex(lab.get_color()) == COLOURS["bad"] for lab in labels] == [False] * 4 + [True] * 3
    bars = [p.get_height() for p in ax.patches]
    assert len(bars) == len(r) and max(bars[:4]) < r.atol < min(bars[4:])
    assert ax.get_title() == "models part at layer 5, dense1"
    plt.close(ax.figure)
    with pytest.raises(WeightvizError, match="two names"):
        divergence(keras_cnn, port, images, names=("keras",))
    with pytest.raises(WeightvizError, match="DivergenceReport"):
        weightviz.plots.divergence_plot(object())
