"""weightviz.plots: asserted on the artists drawn (heights, labels, annotations), not pixels."""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import StepPatch  # noqa: E402

import weightviz as wv  # noqa: E402
from weightviz import plots  # noqa: E402
from weightviz.errors import WeightvizError  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def stairs(ax):
    return [p for p in ax.patches if isinstance(p, StepPatch)]


def texts(ax, gid):
    return [t.get_text() for t in ax.texts if t.get_gid() == gid]


@pytest.fixture
def sd():
    torch.manual_seed(0)
    w = torch.randn(20, 30)
    w[4] = 0
    w[0, 0] = float("nan")
    w[1, 1] = float("inf")
    return {"fc1.weight": w, "fc1.bias": torch.randn(20), "fc2.weight": torch.randn(5, 20),
            "fc2.bias": torch.zeros(5), "bn.running_mean": torch.zeros(5),
            "bn.num_batches_tracked": torch.tensor(3)}


def test_layer_draws_weight_and_bias_in_separate_panels(sd):
    axes = wv.hist(sd, "fc1")
    assert len(axes) == 2 and axes[0].figure is axes[1].figure
    (w,), (b,) = stairs(axes[0]), stairs(axes[1])
    assert w.get_data().values.sum() == 600 - 2          # finite values only
    assert b.get_data().values.sum() == 20
    assert "fc1.weight" in axes[0].get_title() and "fc1.bias" in axes[1].get_title()
    note = texts(axes[0], "weightviz-note")[0]
    assert "NaN: 1" in note and "Inf: 1" in note and "zeros: 30 (5.0%)" in note
    assert "dead units: 1" in note
    assert axes[0].get_xlabel() == "value" and axes[0].get_ylabel() == "count"


def test_single_tensor_returns_one_axes_and_keeps_the_max(sd):
    ax = wv.hist(sd, "fc2.weight", bins=17)
    (st,) = stairs(ax)
    vals, edges = st.get_data().values, st.get_data().edges
    assert len(vals) == 17 and vals.sum() == 100
    assert edges[-1] == pytest.approx(float(sd["fc2.weight"].max()))


def test_given_ax_overlays_in_colours_and_returns_it(sd):
    fig, ax = plt.subplots()
    out = wv.hist(sd, "fc1", ax=ax, log=True)
    assert out is ax
    drawn = stairs(ax)
    assert [p.get_label().split()[0] for p in drawn] == ["fc1.weight", "fc1.bias"]
    assert drawn[0].get_facecolor() != drawn[1].get_facecolor()
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "count (log)"
    assert ax.get_legend() is not None


def test_sequence_of_axes_and_mismatch(sd):
    fig, axs = plt.subplots(1, 2)
    wv.hist(sd, "fc1", ax=axs)
    assert len(stairs(axs[0])) == len(stairs(axs[1])) == 1
    with pytest.raises(WeightvizError, match="2 tensors but 3 Axes"):
        wv.hist(sd, "fc1", ax=list(plt.subplots(1, 3)[1]))


def test_clip_to_percentiles_shows_clipped_counts():
    a = np.concatenate([np.random.default_rng(0).standard_normal(10_000), [1e4, -1e4]])
    ax = wv.hist({"w": a}, "w", clip=(0.5, 99.5))
    (st,) = stairs(ax)
    note = texts(ax, "weightviz-note")[0]
    assert "clipped to 0.5–99.5 pct" in note
    below = int(note.split("pct: ")[1].split(" below")[0].replace(",", ""))
    above = int(note.split("below, ")[1].split(" above")[0].replace(",", ""))
    assert st.get_data().values.sum() + below + above == a.size
    assert 40 <= below <= 70 and 40 <= above <= 70
    assert st.get_data().edges[-1] < 10                   # the outliers are out of view
    with pytest.raises(WeightvizError, match="percentiles"):
        wv.hist({"w": a}, "w", clip=(50, 10))


def test_empty_constant_single_and_nonfinite_get_a_note():
    src = {"e": np.zeros((0, 4), np.float32), "c": np.full(10, 0.3), "s": np.array(1.5),
           "n": np.array([np.nan, np.inf])}
    ax = wv.hist(src, "e")
    assert stairs(ax) == [] and texts(ax, "weightviz-special") == ["empty tensor (0 values)"]
    ax = wv.hist(src, "c")
    assert stairs(ax)[0].get_data().values.sum() == 10
    assert texts(ax, "weightviz-special") == ["constant: all 10 finite values = 0.3"]
    assert texts(wv.hist(src, "s"), "weightviz-special") == ["single value: 1.5"]
    ax = wv.hist(src, "n")
    assert texts(ax, "weightviz-special") == ["no finite values (NaN: 1, Inf: 1)"]


def test_keras_style_names_and_unknown_names():
    src = {"dense/kernel": np.ones((3, 2)), "dense/bias": np.zeros(2), "conv/kernel": np.ones((3, 3, 1, 2))}
    axes = wv.hist(src, "dense")
    assert [a.get_title().split()[0] for a in axes] == ["dense/kernel", "dense/bias"]
    with pytest.raises(WeightvizError, match="close matches"):
        wv.hist(src, "dens")


def test_stats_table_source_avoids_rescanning(sd):
    table = wv.stats(sd)
    ax = wv.hist(table, "fc2.weight")
    assert stairs(ax)[0].get_data().values.sum() == 100
    with pytest.raises(WeightvizError, match="clip"):
        wv.hist(table, "fc2.weight", clip=True)


def test_overview_marks_flagged_tensors(sd):
    ax = wv.plot_overview(sd)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "bn.running_mean"]
    red = [t.get_text() for t in ax.get_xticklabels() if t.get_color() == "#cf222e"]
    assert red == ["fc1.weight", "fc2.bias", "bn.running_mean"]
    assert ax.get_yscale() == "log" and "1 integer/bool/empty left out" in ax.get_title()
    assert {l.get_label() for l in ax.get_lines()} >= {"std", "|max|"}


def test_overview_thins_labels_for_hundreds_of_tensors():
    big = {f"l{i}.weight": np.random.default_rng(i).standard_normal(50) for i in range(400)}
    big["l123.weight"][:] = 0
    ax = wv.plot_overview(wv.stats(big), max_labels=40)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 40 <= len(labels) <= 42 and "l123.weight" in labels


def test_heatmap_block_averages_big_weights():
    w = np.arange(600 * 1000, dtype=np.float32).reshape(600, 1000)
    ax = plots.heatmap({"w": w}, "w", max_size=100)
    (im,) = ax.get_images()
    arr = im.get_array()
    assert arr.shape == (100, 100)
    assert arr[0, 0] == pytest.approx(w[:6, :10].mean())
    assert "block mean 6×10" in ax.get_title()


def test_heatmap_uneven_blocks_and_dead_row():
    w = np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32)
    w[3] = 0
    ax = plots.heatmap({"fc.weight": w}, "fc", max_size=3)
    arr = ax.get_images()[0].get_array()
    assert arr.shape == (3, 3)
    assert arr[2, 2] == pytest.approx(w[6:, 4:].mean())


def test_kernel_grid_torch_and_keras_layouts():
    rng = np.random.default_rng(2)
    oihw = rng.standard_normal((10, 3, 5, 5)).astype(np.float32)
    ax = plots.kernel_grid({"conv.weight": oihw}, "conv.weight", n=4)
    img = ax.get_images()[0].get_array()
    assert img.shape == (2 * 6 - 1, 2 * 6 - 1)
    np.testing.assert_allclose(img[:5, 6:11], oihw[1].mean(axis=0), rtol=1e-6)
    assert "filters 1–4 of 10" in ax.get_title() and "torch layout" in ax.get_title()
    hwio = np.transpose(oihw, (2, 3, 1, 0))
    ax2 = plots.kernel_grid({"conv/kernel": hwio}, "conv/kernel", n=4)
    np.testing.assert_allclose(ax2.get_images()[0].get_array().filled(np.nan),
                               img.filled(np.nan), rtol=1e-6)
    ax3 = plots.kernel_grid({"c": oihw}, "c", n=4, reduce="first")
    np.testing.assert_allclose(ax3.get_images()[0].get_array()[:5, :5], oihw[0, 0], rtol=1e-6)
    with pytest.raises(WeightvizError, match="not a convolution kernel"):
        plots.kernel_grid({"w": np.ones((3, 3))}, "w")


def test_ax_given_uses_no_pyplot_state():
    fig = matplotlib.figure.Figure()
    ax = fig.add_subplot()
    before = plt.get_fignums()
    wv.hist({"w": np.arange(10.0)}, "w", ax=ax)
    plots.heatmap({"w": np.ones((4, 4))}, "w", ax=ax)
    assert plt.get_fignums() == before


def test_plots_module_does_not_show(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show called"))
    wv.hist({"w": np.arange(10.0)}, "w")
    wv.plot_overview({"w": np.arange(10.0)})


def test_import_weightviz_stays_light():
    code = "import sys, weightviz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kernel_grid_on_a_real_keras_file():
    from pathlib import Path
    path = Path(__file__).parent / "fixtures" / "keras_models" / "conv.h5"
    if not path.exists():
        pytest.skip("Keras fixture not present")
    ckpt = wv.open(str(path))
    ax = plots.kernel_grid(ckpt, "c_same_s2/kernel")        # (3, 3, 3, 4) HWIO: 4 filters
    assert "filters 1–4 of 4" in ax.get_title() and "keras layout" in ax.get_title()
    hwio = ckpt["c_same_s2/kernel"].numpy()
    np.testing.assert_allclose(ax.get_images()[0].get_array()[:3, :3],
                               hwio[:, :, :, 0].mean(axis=2), rtol=1e-6)
    axes = wv.hist(ckpt, "c_same_s2")
    assert [a.get_title().split()[0] for a in axes] == ["c_same_s2/kernel", "c_same_s2/bias"]


def test_heatmap_block_mean_matches_nanmean_with_ragged_edges():
    import warnings

    from weightviz.plots.images import _block_mean
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1001, 999)).astype(np.float32)
    x[3, 5] = np.nan
    x[1000, :] = np.inf                       # a last block row with no finite value
    padded = np.full((1004, 1000), np.nan)
    padded[:1001, :999] = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmean(padded.reshape(251, 4, 250, 4), axis=(1, 3))
    got = _block_mean(x, 4, 4)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_heatmap_block_mean_fast_path_for_finite_data_matches_reshape_mean():
    from weightviz.plots.images import _block_mean
    x = np.random.default_rng(3).standard_normal((1001, 999)).astype(np.float32)
    padded = np.full((1004, 1000), np.nan)
    padded[:1001, :999] = x
    ref = np.nanmean(padded.reshape(251, 4, 250, 4), axis=(1, 3))   # ragged edge blocks too
    np.testing.assert_allclose(_block_mean(x, 4, 4), ref, rtol=1e-6, atol=1e-7)


def test_heatmap_image_is_what_heatmap_draws():
    w = np.random.default_rng(4).standard_normal((40, 30)).astype(np.float32)
    img, lab = plots.heatmap_image({"fc.weight": w}, "fc.weight", max_size=16)
    ax = plots.heatmap({"fc.weight": w}, "fc.weight", max_size=16)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), img)
    assert ax.get_title() == lab["title"] and lab["block"] == (3, 2)
