"""Widgets: set the controls' values (or call the programmatic API) and assert on what changed."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ipywidgets")

import weightviz as wv  # noqa: E402
from weightviz import demo, inference  # noqa: E402
from weightviz.errors import WeightvizError  # noqa: E402
from weightviz.widgets import (LayerBrowser, MismatchView, PredictionExplorer,  # noqa: E402
                               browse, mismatch_view, predict)
from weightviz.widgets.explorer import input_kind  # noqa: E402


@pytest.fixture(scope="module")
def cnn():
    m = demo.SmallCNN()
    m.load_state_dict(torch.load(demo.path("cnn.pth"), weights_only=True))
    return m


@pytest.fixture(scope="module")
def mlp():
    m = demo.MLP()
    m.load_state_dict(torch.load(demo.path("mlp.pth"), weights_only=True))
    return m


@pytest.fixture(scope="module")
def images():
    return demo.images(16, seed=3)


def _hist_heights(fig) -> list[float]:
    """Summed bar/step heights per Axes of a histogram figure."""
    out = []
    for ax in fig.axes:
        total = 0.0
        for p in ax.patches:
            if hasattr(p, "get_data"):            # StepPatch (ax.stairs)
                total += float(np.nansum(p.get_data().values))
            else:                                  # Rectangle (ax.bar)
                total += float(p.get_height())
        for c in ax.containers:
            pass
        out.append(total)
    return out


# ------------------------------------------------------------------ inference

def test_top_k_orders_largest_first_and_keeps_ties_stable():
    assert inference.top_k(np.array([0.1, 0.5, 0.5, 0.2]), 3) == [(1, 0.5), (2, 0.5), (3, 0.2)]


def test_is_probability():
    assert inference.is_probability(np.array([[0.2, 0.8], [1.0, 0.0]]))
    assert not inference.is_probability(np.array([[2.0, -1.0]]))


def test_run_uses_eval_mode_and_restores_training(cnn, images):
    x, _ = images
    cnn.train()
    cnn.bn1.eval()   # a mixed state must come back exactly
    out = inference.run(cnn, x)
    assert cnn.training and not cnn.bn1.training and cnn.dropout.training
    cnn.eval()
    with torch.no_grad():
        ref = cnn(torch.from_numpy(x)).double().numpy()
    cnn.train()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


def test_run_rejects_non_batches(cnn):
    with pytest.raises(WeightvizError, match="batch"):
        inference.run(cnn, np.float32(3.0))
    with pytest.raises(WeightvizError, match="torch model"):
        inference.run(object(), np.zeros((2, 3)))


# ------------------------------------------------------------------ PredictionExplorer

def test_explorer_repr_and_top_k(cnn, images):
    x, y = images
    e = predict(cnn, x, labels=y, class_names=demo.CLASS_NAMES, top_k=3)
    assert isinstance(e, PredictionExplorer)
    assert repr(e) == "PredictionExplorer(1 model, 16 samples, sample=0)"
    assert e._repr_mimebundle_()["text/plain"] == repr(e)
    assert len(e.shown) == 1 and len(e.shown[0]) == 3
    assert e.shown[0][0][0] == demo.CLASS_NAMES[int(np.argmax(e.outputs[0][0]))]
    assert e.last_error is None and bytes(e.canvas.image.value).startswith(b"\x89PNG")


def test_explorer_slider_changes_the_prediction(cnn, images):
    x, y = images
    e = predict(cnn, torch.from_numpy(x), labels=y, class_names=demo.CLASS_NAMES)
    other = next(i for i in range(len(y)) if y[i] != y[0])
    before_png, before = e.canvas.image.value, e.shown
    e.slider.value = other
    assert e.sample == other and repr(e).endswith(f"sample={other})")
    assert e.shown != before and e.shown[0][0][0] == demo.CLASS_NAMES[y[other]]
    assert e.canvas.image.value != before_png
    assert f"sample {other} of 16" in e.title.value


def test_explorer_compares_two_models(cnn, mlp, images):
    x, y = images
    a = predict([cnn, mlp], x, names=["cnn", "mlp"], class_names=demo.CLASS_NAMES)
    b = predict(cnn, x, compare=mlp, class_names=demo.CLASS_NAMES)
    assert repr(a) == "PredictionExplorer(2 models, 16 samples, sample=0)"
    assert b.names == ["SmallCNN", "MLP"] and len(b.shown) == 2
    want = float(np.max(np.abs(a.outputs[0] - a.outputs[1])))
    assert a.max_abs_difference() == pytest.approx(want)
    assert "max |cnn − mlp|" in a.diff.value
    same = predict(cnn, x, compare=cnn)
    assert same.names == ["SmallCNN (1)", "SmallCNN (2)"] and same.max_abs_difference() == 0.0


def test_explorer_error_in_callback_is_shown_in_the_widget(cnn, images):
    x, _ = images
    e = predict(cnn, x)
    e.outputs[0] = e.outputs[0][:2]            # break the data behind the view
    e.slider.value = 5
    assert isinstance(e.last_error, IndexError)
    assert "IndexError" in e.error.value and e.error.layout.display != "none"
    e.slider.value = 1                         # a good draw clears the box
    assert e.last_error is None and e.error.value == ""


def test_explorer_rejects_bad_arguments(cnn, images):
    x, y = images
    with pytest.raises(WeightvizError, match="labels"):
        predict(cnn, x, labels=y[:3])
    with pytest.raises(WeightvizError, match="names"):
        predict(cnn, x, names=["a", "b"])
    with pytest.raises(IndexError):
        predict(cnn, x).sample = 99


@pytest.mark.parametrize("shape,kind", [((16, 16, 1), "image"), ((3, 20, 20), "image"),
                                        ((28, 28), "image"), ((100,), "sequence"),
                                        ((50, 3), "sequence"), ((6,), "values")])
def test_input_kinds(shape, kind):
    assert input_kind(np.zeros(shape))[0] == kind


def test_explorer_draws_sequences_and_values():
    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 4))
    e = predict(seq, np.random.default_rng(0).normal(size=(5, 20, 2)).astype("float32"), top_k=2)
    assert e.last_error is None and not e.probabilities
    assert e.last_figure.axes[0].lines      # the sequence is a line plot
    vals = predict(torch.nn.Linear(3, 2), np.ones((2, 3), dtype="float32"))
    assert vals.last_error is None and vals.last_figure.axes[0].patches


# ------------------------------------------------------------------ MismatchView

@pytest.fixture(scope="module")
def report():
    return wv.check(demo.SmallCNN(), demo.path("cnn_mismatched.pth"))


def test_mismatch_view_verdict_on_top_problems_first(report):
    v = mismatch_view(report)
    assert isinstance(v, MismatchView)
    assert report.verdict.replace("'", "&#x27;") in v.children[0].value or report.verdict in v.children[0].value
    order = ["non_finite", "shape_mismatch", "missing", "unexpected", "transposed",
             "dtype_mismatch", "renamed", "ok"]
    ranks = [order.index(r.status.value) for r in v.shown]
    assert ranks == sorted(ranks) and len(v.shown) == len(report)
    assert v.shown[0].status != "ok"
    assert repr(v).startswith(f"MismatchView({len(report)} rows: ")


def test_mismatch_view_status_filter(report):
    v = mismatch_view(report)
    n_renamed = len(report.by_status("renamed"))
    assert n_renamed
    v.toggles["renamed"].value = False
    assert len(v.shown) == len(report) - n_renamed
    assert all(r.status != "renamed" for r in v.shown)
    v.show("missing")
    assert {r.status.value for r in v.shown} == {"missing"}
    assert v.toggles["missing"].value and not v.toggles["unexpected"].value
    v.problems_only.click()
    assert all(r.status.value not in ("ok", "renamed") for r in v.shown) and v.shown
    v.show_all.click()
    assert len(v.shown) == len(report)
    with pytest.raises(ValueError, match="unknown status"):
        v.show("bogus")


def test_mismatch_view_needs_a_report():
    with pytest.raises(WeightvizError, match="Report"):
        mismatch_view({"a": 1})
