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


def test_explorer_shows_two_models_layer_by_layer(images):
    """Two models: the 'layer by layer' panel runs divergence once, when opened, and shows
    where a port with the flatten slip parts from the Keras model; cnn vs mlp cannot pair
    and says so inside the widget."""
    x, _ = images
    keras = wv.build(demo.path("keras_model.h5"))
    port = demo.KerasCNNPort(flatten="chw").load_keras(demo.path("keras_model.h5"))
    e = predict(keras, x, compare=port, names=["keras", "port"])
    assert e.layers is not None and e.layers.report is None        # nothing run yet
    assert e.layers.body.layout.display == "none"
    e.layers.show_report()
    r = e.layers.report
    assert r is not None and r.first.name_a == "dense1" and r.names == ("keras", "port")
    assert e.layers.body.layout.display is None and "flatten order" in e.layers.table.value
    assert "keras against port, layer by layer, on all 16 samples" in e.layers.caption.value
    ax = e.layers.canvas.figure.axes[0]
    assert "models part at layer 5, dense1" in ax.get_title()
    assert e.layers.canvas.image.value[:4] == b"\x89PNG"
    e.layers.button.value = False
    assert e.layers.body.layout.display == "none"
    e.layers.show_report()
    assert e.layers.report is r                                  # computed once
    assert predict(keras, x).layers is None


def test_explorer_layer_panel_error_stays_in_the_panel(cnn, images):
    x, _ = images
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].size, 3))
    e = predict(cnn, x, compare=other)                     # nothing pairs, outputs differ
    e.layers.show_report()
    assert e.layers.report is None and "outputs cannot be compared" in e.layers.error.value
    assert isinstance(e.layers.last_error, WeightvizError)


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
    import html
    assert html.escape(report.verdict, quote=True) in v.children[0].value      # verdict on top
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


# ------------------------------------------------------------------ LayerBrowser

@pytest.fixture(scope="module")
def cnn_ckpt():
    return wv.open(demo.path("cnn.pth"))


def test_browser_repr_and_first_selection(cnn_ckpt):
    b = browse(cnn_ckpt)
    assert isinstance(b, LayerBrowser)
    first = next(n for n in cnn_ckpt if len(cnn_ckpt[n].shape) >= 2)   # a weight, not a bias
    assert b.selected == first
    assert repr(b) == f"LayerBrowser({len(cnn_ckpt)} tensors, selected={first!r})"
    assert b._repr_mimebundle_()["text/plain"] == repr(b)
    assert b.last_error is None, b.last_error
    assert first in b.card.value and "mean" in b.card.value
    assert bytes(b.hist_canvas.image.value).startswith(b"\x89PNG")


def test_browser_select_updates_card_and_histogram(cnn_ckpt):
    b = browse(cnn_ckpt)
    b.select("conv1.weight")
    card, heights, png = b.card.value, _hist_heights(b.last_figure), bytes(b.hist_canvas.image.value)
    assert b.shown_panels == ["conv1.weight", "conv1.bias"]
    assert heights[0] == pytest.approx(cnn_ckpt["conv1.weight"].numel)   # every value counted
    assert b.structure.kind == "kernel_grid" and "filters 1–" in b.structure.caption.value
    grid = bytes(b.structure.image.value)
    assert grid.startswith(b"\x89PNG")
    b.select("fc1.weight")
    assert b.selected == "fc1.weight" and "fc1.weight" in b.card.value and b.card.value != card
    assert _hist_heights(b.last_figure) != heights
    assert bytes(b.hist_canvas.image.value) != png
    assert b.structure.kind == "heatmap" and "fc1.weight" in b.structure.caption.value
    assert bytes(b.structure.image.value) not in (grid, b"")
    assert repr(b).endswith("selected='fc1.weight')")
    b.select("bn1.running_mean")
    assert b.shown_panels == ["bn1.running_mean"] and b.structure.kind is None
    assert b.structure.box.layout.display == "none"
    with pytest.raises(KeyError, match="no tensor named"):
        b.select("nope")


def test_browser_list_click_is_the_same_as_select(cnn_ckpt):
    b = browse(cnn_ckpt)
    target = [v for _, v in b.tensor_list.options if v[1] == "fc2.weight"][0]
    b.tensor_list.value = target          # what a click in the front end does
    assert b.selected == "fc2.weight" and "fc2.weight" in b.card.value


def test_browser_log_and_clip_toggles_redraw(cnn_ckpt):
    b = browse(cnn_ckpt)
    b.select("fc1.weight")
    before = bytes(b.hist_canvas.image.value)
    b.log_toggle.value = True
    assert b.last_figure.axes[0].get_yscale() == "log"
    assert bytes(b.hist_canvas.image.value) != before
    b.clip_toggle.value = True
    assert b.last_error is None, b.last_error


def test_browser_filter_reduces_the_list(cnn_ckpt):
    b = browse(cnn_ckpt)
    n = len(b.tensor_list.options)
    b.filter.value = "conv"
    assert 0 < len(b.visible) < n and all("conv" in v for v in b.visible)
    assert "of %d tensors" % n in b.count.value
    b.filter.value = "no-such-thing"
    assert b.visible == []
    b.select("fc1.bias")                   # selecting a hidden tensor clears the filter
    assert b.filter.value == "" and b.selected == "fc1.bias"


def test_browser_lists_shapes_dtypes_and_flags():
    sd = {"a.weight": np.ones((4, 3), np.float32), "a.bias": np.array([0, 1, np.nan], np.float32),
          "b.weight": np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32),
          "c.weight": np.random.default_rng(1).normal(size=(2, 3))}
    b = browse(sd)
    labels = {v[1]: lab for lab, v in b.tensor_list.options}
    assert "(4, 3)" in labels["a.weight"] and "(2, 3) float64" in labels["c.weight"]
    assert "float32" not in labels["a.weight"] and "float32 unless shown" in b.header.value
    assert "⚑const" in labels["a.weight"] and "⚑nan" in labels["a.bias"]
    # the flag column sits left of the name: a narrow list cuts the shape, never the flags
    assert labels["a.bias"].index("⚑") < labels["a.bias"].index("a.bias")
    assert len({lab.index(n) for n, lab in labels.items()}) == 1    # names stay aligned
    assert "nth-child(1)" in b.list_style.value   # flagged rows coloured
    b.filter.value = "nan"                        # the filter also matches flags
    assert b.visible == ["a.bias"]
    b.filter.value = "constant"                   # by their full names too
    assert b.visible == ["a.weight"]


def test_browser_is_lazy_for_big_checkpoints(cnn_ckpt, monkeypatch):
    import weightviz.statistics as st
    calls = []
    real = st.tensor_stats
    monkeypatch.setattr(st, "tensor_stats", lambda e, **k: calls.append(e.name) or real(e, **k))
    b = browse(cnn_ckpt, eager=False)
    first = list(cnn_ckpt)[0]
    assert set(calls) <= {first, "conv1.bias"}          # only what the first view shows
    b.select("fc2.weight")
    b.select("conv1.weight")
    n = len(calls)
    b.select("fc2.weight")                               # cached: no new scan
    assert len(calls) == n


def test_browser_status_colours_with_a_model():
    model = demo.SmallCNN()
    b = browse(demo.path("cnn_mismatched.pth"), model=model)
    assert b.report is not None and b.report.verdict in b.header.value
    statuses = set(b.status.values())
    assert "shape_mismatch" in statuses and "non_finite" in statuses
    labels = [lab for lab, _ in b.tensor_list.options]
    assert any(lab.startswith("≠ ") for lab in labels)                  # the status mark
    assert any(lab.startswith("✗ ") and "(missing)" in lab for lab in labels)
    from weightviz.render import COLOURS
    assert COLOURS["shape_mismatch"] in b.list_style.value
    bad = next(n for n, s in b.status.items() if s == "shape_mismatch")
    b.select(bad)
    assert "shape_mismatch" in b.card.value and "match:" in b.card.value
    b.select(b.missing[0])
    assert "missing from the checkpoint" in b.card.value and b.shown_panels == []
    b.filter.value = "unexpected"
    assert b.visible and all(b.status.get(n) == "unexpected" for n in b.visible)


def test_browser_error_in_callback_is_shown(cnn_ckpt):
    from weightviz.checkpoint import Checkpoint, TensorEntry

    def boom():
        raise OSError("disk went away")
    entries = dict(cnn_ckpt.entries)
    entries["broken.weight"] = TensorEntry("broken.weight", (3, 3), "float32", loader=boom)
    b = browse(Checkpoint(entries, format="test"), eager=False)
    b.select("broken.weight")
    assert b.last_error is not None
    assert "disk went away" in b.error.value and b.error.layout.display != "none"
    b.select("fc1.weight")
    assert b.last_error is None and b.error.value == ""


def test_browser_scans_a_large_tensor_in_the_background(cnn_ckpt, monkeypatch):
    """Above BACKGROUND_BYTES a first visit shows the header card at once and the
    statistics when the worker thread is done; a failure there lands in the error box."""
    import threading
    from weightviz.checkpoint import Checkpoint, TensorEntry
    from weightviz.widgets import browser as browser_module
    monkeypatch.setattr(browser_module, "BACKGROUND_BYTES", 4096)
    gate = threading.Event()
    big = np.arange(4096, dtype=np.float32).reshape(64, 64)

    def slow():
        gate.wait(10)
        return big
    entries = dict(cnn_ckpt.entries)
    entries["big.weight"] = TensorEntry("big.weight", (64, 64), "float32", loader=slow)
    entries["bad.weight"] = TensorEntry("bad.weight", (64, 64), "float32",
                                        loader=lambda: (_ for _ in ()).throw(OSError("disk went away")))
    b = browse(Checkpoint(entries, format="test"), eager=False)
    b.select("big.weight")
    assert b.scanning == "big.weight" and "computing statistics of 16.0 KiB" in b.card.value
    assert "mean" not in b.card.value and b.hist_canvas.image.layout.display == "none"
    gate.set()
    b.wait(10)
    assert b.scanning is None and "mean ± std" in b.card.value and "4095" in b.card.value
    assert b.shown_panels == ["big.weight"] and b.hist_canvas.image.layout.display is None
    assert b.structure.kind == "heatmap"
    b.select("fc2.weight")                                     # small: in the foreground
    assert b.scanning is None and "mean ± std" in b.card.value
    b.select("big.weight")                                     # cached now: no thread
    assert b.scanning is None and "mean ± std" in b.card.value
    b.select("bad.weight")
    b.wait(10)
    assert "disk went away" in b.error.value and isinstance(b.last_error, Exception)


def test_importing_the_widgets_imports_neither_matplotlib_nor_torch():
    import subprocess
    import sys
    code = ("import sys, weightviz, weightviz.widgets; "
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]" and out.stderr == ""


def test_top_level_verbs_delegate(cnn, images, cnn_ckpt):
    x, _ = images
    assert isinstance(wv.browse(cnn_ckpt), LayerBrowser)
    assert isinstance(wv.predict(cnn, x[:2]), PredictionExplorer)


def test_explorer_jumps_to_disagreements(cnn, images):
    x, _ = images
    noisy = demo.SmallCNN()
    noisy.load_state_dict(cnn.state_dict())
    with torch.no_grad():
        noisy.fc2.bias[0] += 50.0              # now it says "h-bar" for almost everything
    e = predict(cnn, x, compare=noisy)
    want = [i for i in range(len(x)) if e.outputs[0][i].argmax() != e.outputs[1][i].argmax()]
    assert e.disagreements == want and want
    assert f"top-1 agrees on {len(x) - len(want)}/{len(x)}" in e.diff.value
    e.next_disagreement.click()
    assert e.sample == (want[0] if want[0] > 0 else want[1 % len(want)])
    assert predict(cnn, x).next_disagreement.layout.display == "none"


def test_reused_axes_draw_the_same_pixels_as_fresh_ones(cnn_ckpt):
    """The browser reuses its Axes between tensors; the PNG must not depend on history."""
    walked = browse(cnn_ckpt, cache=0)
    for name in ("conv1.weight", "fc1.weight", "conv2.weight", "fc2.weight", "fc1.weight"):
        walked.select(name)
    fresh = browse(cnn_ckpt, cache=0)
    fresh.select("fc1.weight")
    assert bytes(walked.hist_canvas.image.value) == bytes(fresh.hist_canvas.image.value)
    assert bytes(walked.structure.image.value) == bytes(fresh.structure.image.value)
    assert walked.structure.caption.value == fresh.structure.caption.value


def test_png_cache_returns_to_a_tensor_without_drawing(cnn_ckpt):
    b = browse(cnn_ckpt)
    b.select("fc1.weight")
    png = bytes(b.hist_canvas.image.value)
    b.select("fc2.weight")
    hits = b.hist_canvas.hits
    b.select("fc1.weight")
    assert b.hist_canvas.hits == hits + 1 and bytes(b.hist_canvas.image.value) == png
    assert b.shown_panels == ["fc1.weight", "fc1.bias"]


def test_structure_colours_are_symmetric_around_zero_with_nan_in_the_bad_colour():
    import io

    from PIL import Image

    from weightviz.widgets._structure import colour, png
    img = np.array([[-2.0, 0.0, 2.0, np.nan], [-1.0, 0.5, 1.0, 0.0]])
    pic, v, stops = colour(img, "#afb8c1")
    assert v == 2.0 and len(stops) == 11
    idx = np.asarray(Image.open(io.BytesIO(png(pic))))
    assert idx[0].tolist() == [0, 127, 254, 255] and idx[1, 0] == 64 and idx[1, 2] == 190
    pal = np.asarray(pic.getpalette()[:768]).reshape(-1, 3)
    assert pal[255].tolist() == [0xaf, 0xb8, 0xc1]
    assert pal[0][2] > pal[0][0] and pal[254][0] > pal[254][2]     # blue below 0, red above


def test_browser_compares_with_a_second_source():
    b = browse(demo.path("cnn.pth"), compare=demo.path("cnn_finetuned.pth"))
    assert "4 of 13 paired tensors changed" in b.header.value
    labels = {v[1]: lab for lab, v in b.tensor_list.options}
    assert labels["fc2.weight"].startswith("• Δ") and labels["conv1.weight"].startswith("•   ")
    b.filter.value = "changed"
    assert b.visible == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    b.select("fc2.weight")
    assert b.compare.shown == "fc2.weight" and b.compare.canvas.image.value[:4] == b"\x89PNG"
    assert "changed" in b.compare.caption.value and "relative change 0.06468" in b.compare.caption.value
    b.filter.value = ""
    b.select("conv1.weight")
    assert "same" in b.compare.caption.value


def test_browser_compare_shows_what_has_no_partner():
    a = {"x.weight": np.ones((3, 3), np.float32), "y.weight": np.zeros(2, np.float32)}
    b = browse(a, compare={"x.weight": np.ones((3, 3), np.float32)})
    b.select("y.weight")
    assert "only_a" in b.compare.caption.value and b.compare.shown is None
