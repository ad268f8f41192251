"""An adapter shown: the layer browser's adapter= view, the adapter plots, the module close-up and
the command line, on the demo LoRA (trained and saved by PEFT, see tools/make_demo_adapter.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ipywidgets")

import weightviz as wv  # noqa: E402
from weightviz import demo  # noqa: E402
from weightviz.adapters import module_delta  # noqa: E402
from weightviz.errors import WeightvizError  # noqa: E402

BASE, LORA = demo.path("cnn.pth"), demo.path("cnn_lora")


@pytest.fixture(scope="module")
def browser():
    return wv.browse(BASE, adapter=LORA)


def test_browser_marks_the_adapted_tensors(browser):
    marked = [v[1] for label, v in browser.tensor_list.options if "◆" in label]
    assert marked == ["conv2.weight", "fc1.weight", "fc2.weight"]
    assert "◆ changed by the adapter" in browser.list_style.value
    browser.filter.value = "adapted"
    assert browser.visible == marked
    browser.filter.value = ""


def test_browser_shows_the_selected_modules_row_and_delta(browser):
    browser.select("fc1.weight")
    assert browser.adapter.shown == "fc1"
    cap = browser.adapter.caption.value
    assert ">ok<" in cap and "rank 4" in cap and "scale 2" in cap and "bf16" in cap
    assert browser.adapter.canvas.image.layout.display != "none"
    browser.select("bn1.weight")
    assert browser.adapter.shown is None and "not adapted" in browser.adapter.caption.value


def test_browser_with_a_broken_adapter_shows_the_status_and_no_picture():
    b = wv.browse(BASE, adapter=demo.path("cnn_lora_zero3"))
    b.select("conv2.weight")
    assert ">empty<" in b.adapter.caption.value and b.adapter.shown is None
    assert "empty" in b.adapter.verdict.value


def test_module_delta_equals_the_dense_delta():
    delta = module_delta(BASE, LORA, "fc1")
    sd = wv.open(LORA)
    a = sd["base_model.model.fc1.lora_A.weight"].numpy().astype(np.float64)
    b = sd["base_model.model.fc1.lora_B.weight"].numpy().astype(np.float64)
    dense = 2.0 * b @ a                                   # scale = alpha / r = 8 / 4
    assert delta.numel == dense.size and delta.counts.sum() == dense.size
    sig = np.linalg.svd(dense, compute_uv=False)[:4]
    np.testing.assert_allclose(delta.sigma, sig, rtol=1e-5)
    assert delta.edges[0] == pytest.approx(dense.min(), rel=1e-5)
    assert delta.edges[-1] == pytest.approx(dense.max(), rel=1e-5)
    assert module_delta(BASE, LORA, "fc1.weight").module == "fc1"      # the base name works too
    with pytest.raises(WeightvizError, match="conv9"):
        module_delta(BASE, LORA, "conv9")


def test_adapter_plots_draw_one_bar_per_module():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    report = wv.check(BASE, LORA)
    left, right = wv.plots.adapter_overview(report)
    assert len(left.patches) == 3 and [t.get_text() for t in left.get_xticklabels()] == ["conv2", "fc1", "fc2"]
    heights = [p.get_height() for p in left.patches]
    assert heights == pytest.approx([r.rel_delta for r in report])
    assert len(right.patches) == 6                         # bf16 and fp16 per module
    assert right.patches[0].get_height() == pytest.approx(100 * report["conv2"].merge_loss["bfloat16"])
    left, right = wv.plots.delta_panels(module_delta(BASE, LORA, "conv2"))
    assert len(right.patches) == 4
    plt.close("all")
    with pytest.raises(WeightvizError, match="AdapterReport"):
        wv.plots.adapter_overview(wv.check(demo.SmallCNN(), BASE))
    with pytest.raises(WeightvizError, match="no adapted module"):
        wv.plots.adapter_overview(wv.check(BASE, demo.path("cnn_lora_zero3")))


def _cli(*args):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "weightviz.cli", *map(str, args)], capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=120)


def test_cli_checks_an_adapter_against_its_base():
    ok = _cli("check", LORA, "--base", BASE)
    assert ok.returncode == 0, ok.stderr
    assert "all 3 adapted modules fit" in ok.stdout
    bad = _cli("check", demo.path("cnn_lora_r8"), "--base", BASE, "--json")
    assert bad.returncode == 1
    assert {r["status"] for r in json.loads(bad.stdout)["rows"]} == {"rank_differs"}
    by_class = _cli("check", LORA, "--model", "weightviz.demo.models:SmallCNN")   # the model is the base
    assert by_class.returncode == 0 and "all 3 adapted modules fit" in by_class.stdout
    missing = _cli("check", LORA, "--base", "no/such/base.pth")
    assert missing.returncode == 2 and "no/such/base.pth" in missing.stderr
