"""weightviz.diff: every status planted, numbers against NumPy, streaming, formats, CLI, plots."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import weightviz as wv
from weightviz import demo
from weightviz.cli import main
from weightviz.errors import WeightvizError

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _base():
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "conv.bias": torch.randn(8, generator=g),
            "fc.weight": torch.randn(10, 72, generator=g), "fc.bias": torch.randn(10, generator=g),
            "sq.weight": torch.randn(6, 6, generator=g), "scale.weight": torch.randn(40, generator=g),
            "gone.weight": torch.randn(3, generator=g), "steps": torch.tensor(7)}


def _planted():
    a = _base()
    b = {k: v.clone() for k, v in a.items()}
    b["conv.bias"][3] += 0.5                              # changed: one element
    b["fc.weight"] = b["fc.weight"].t().contiguous()      # shape_differs, a transpose
    b["sq.weight"] = b["sq.weight"].t().contiguous()      # same shape, transposed
    b["scale.weight"] = b["scale.weight"] * 0.5           # a scalar multiple
    b["fc.bias"] = b["fc.bias"].double()                  # dtype_differs, same values
    del b["gone.weight"]                                  # only_a
    b["new.weight"] = torch.zeros(2)                      # only_b
    return a, b


def test_every_status_is_planted_and_found():
    a, b = _planted()
    r = wv.diff(a, b)
    status = {row.name: row.status for row in r}
    assert status == {"conv.weight": "same", "conv.bias": "changed", "fc.weight": "shape_differs",
                      "fc.bias": "dtype_differs", "sq.weight": "changed", "scale.weight": "changed",
                      "gone.weight": "only_a", "steps": "same", "new.weight": "only_b"}
    assert r["fc.weight"].relation == "transposed: same values"
    assert r["sq.weight"].relation == "transposed: b.T equals a"
    assert r["scale.weight"].relation == "scalar multiple: b = 0.5·a"
    assert r["conv.bias"].relation == "" and r["conv.bias"].frac_changed == pytest.approx(1 / 8)
    assert r["fc.bias"].max_abs == 0 and r["fc.bias"].cosine == 1
    assert not r.same and r.counts == {"same": 2, "changed": 3, "dtype_differs": 1,
                                       "shape_differs": 1, "only_a": 1, "only_b": 1}
    assert r.summary.startswith("4 of 7 paired tensors changed; largest relative change")
    assert "3 look like conversion slips (scalar multiple, transposed)" in r.summary
    assert r.summary.endswith("1 with different shapes; 1 only in a; 1 only in b")
    assert [row.name for row in r][-1] == "new.weight"      # b-only rows last


def test_numbers_match_numpy_in_float64():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 70)).astype(np.float32)
    b = a + rng.normal(scale=1e-3, size=a.shape).astype(np.float32) * (rng.random(a.shape) < 0.3)
    row = wv.diff({"w": a}, {"w": b}, atol=1e-4, chunk=1000)["w"]  # many chunks, odd boundaries
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = a64 - b64
    assert row.max_abs == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert row.rel_change == pytest.approx(np.linalg.norm(d) / np.linalg.norm(a64), rel=1e-10)
    cos = a64.ravel() @ b64.ravel() / np.linalg.norm(a64) / np.linalg.norm(b64)
    assert row.cosine == pytest.approx(cos, rel=1e-12)
    assert row.frac_changed == np.count_nonzero(np.abs(d) > 1e-4) / d.size
    assert row.status == "changed"


def test_atol_makes_small_changes_same():
    a = {"w": np.zeros(5, np.float32)}
    b = {"w": np.full(5, 1e-7, np.float32)}
    assert wv.diff(a, b)["w"].status == "changed"
    r = wv.diff(a, b, atol=1e-6)
    assert r.same and r.summary == "all 1 tensors the same (within atol=1e-06)"


def test_nan_on_one_side_is_a_row_that_says_so():
    a = {"w": np.array([1.0, np.nan, 3.0, np.inf], np.float32)}
    b = {"w": np.array([1.0, np.nan, np.nan, np.inf], np.float32)}
    row = wv.diff(a, b)["w"]
    assert row.status == "changed" and row.nan_a == 1 and row.nan_b == 2
    assert row.frac_changed == 0.25 and row.max_abs == 0       # over the comparable pairs
    assert "2 NaN in b" in repr(row)
    assert wv.diff(a, a).same                                  # NaN where NaN is: the same


def test_non_contiguous_tensors_compare_in_logical_order(tmp_path):
    w = torch.randn(64, 48)
    torch.save({"w": w.t()}, tmp_path / "t.pth")               # a strided view in the file
    r = wv.diff(str(tmp_path / "t.pth"), {"w": w.t().contiguous()}, chunk=100)
    assert r.same, r


def test_chunk_size_does_not_change_the_numbers():
    a, b = _planted()
    small, big = wv.diff(a, b, chunk=7), wv.diff(a, b)
    for x, y in zip(small, big):
        assert x.status == y.status and x.relation == y.relation
        for k in ("max_abs", "rel_change", "cosine", "frac_changed"):
            u, v = getattr(x, k), getattr(y, k)
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v, rel=1e-12, abs=1e-15)


def test_sources_are_never_modified():
    a, b = _planted()
    before = {k: v.clone() for k, v in b.items()}
    wv.diff(a, b)
    assert all(torch.equal(before[k], b[k]) for k in b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.bool_]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)))
def test_a_source_against_itself_is_all_same(arr):
    r = wv.diff({"t": arr, "u": arr.T}, {"t": arr.copy(), "u": arr.T.copy()}, chunk=5)
    assert r.same, repr(r)
    assert r.summary == "all 2 tensors the same"


def test_the_same_weights_in_three_formats_and_a_built_model():
    assert wv.diff(demo.path("cnn.pth"), demo.path("cnn.safetensors")).same
    assert wv.diff(demo.path("cnn.pth"), demo.SmallCNN().state_dict()).counts.get("changed")
    model = wv.build(demo.path("keras_model.h5"))
    r = wv.diff(model, demo.path("keras_model.h5"))         # Keras names -> torch names, layouts
    assert r.same and len(r) == 8
    assert any("compared as the torch model weightviz builds" in n for n in r.notes)
    r = wv.diff(demo.path("keras_model.weights.h5"), demo.path("keras_model.keras"))
    assert r.same and r["conv1/kernel"].name == "conv1/vars/0"   # Keras 3 vars/<i> paired


def test_a_fine_tune_moves_only_the_classifier():
    r = wv.diff(demo.path("cnn.pth"), demo.path("cnn_finetuned.pth"))
    assert r.changed() == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert "largest relative change" in r.summary and "`fc2.weight`" in r.summary


def test_names_pair_through_prefixes_and_rename():
    a, _ = _planted()
    wrapped = {f"module.{k}": v for k, v in a.items()}
    r = wv.diff(a, wrapped)
    assert r.same and r["module.conv.weight"].name == "conv.weight"
    assert "DataParallel" in r["conv.weight"].rule
    odd = {"x" + k: v for k, v in a.items()}
    assert wv.diff(a, odd, rename=lambda n: "x" + n).same
    assert wv.diff(a, odd, rename={k: "x" + k for k in a}).same


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(WeightvizError, match="no tensor name in common"):
        wv.diff({"a": np.ones(2)}, {"b": np.ones(2)})
    with pytest.raises(WeightvizError, match="atol must be a finite number"):
        wv.diff({"a": np.ones(2)}, {"a": np.ones(2)}, atol=-1)
    with pytest.raises(WeightvizError, match="rename= must map"):
        wv.diff({"a": np.ones(2)}, {"a": np.ones(2)}, rename=3)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightvizError, match="side b could not be read"):
        wv.diff({"a": np.ones(2)}, str(bad))


def test_report_displays_and_serialises():
    a, b = _planted()
    r = wv.diff(a, b)
    text = repr(r)
    assert text.splitlines()[1] == r.summary and text == repr(wv.diff(a, b))   # deterministic
    assert "0x" not in text and "<table" in r._repr_html_()
    d = json.loads(r.to_json())
    assert d["same"] is False and d["counts"]["only_b"] == 1
    assert d["rows"][0]["shape_a"] == [8, 3, 3, 3] and d["rows"][-1]["max_abs"] is None
    assert r["new.weight"].status == "only_b"
    with pytest.raises(KeyError, match="close matches"):
        r["conv"]


def test_golden_text():
    a = {"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32), "b": np.zeros(2, np.float32)}
    b = {"w": np.array([1.0, 2.0, 3.0, 5.0], np.float32), "b": np.zeros(2, np.float32)}
    assert repr(wv.diff(a, b)) == """\
Checkpoint diff
1 of 2 paired tensors changed; largest relative change 0.18 in `w`
  a      state dict
  b      state dict
  pairs  same (1), changed (1)

tensor  status   shape    dtype  max |a−b|  rel change    cosine  changed  note
------  -------  -----  -------  ---------  ----------  --------  -------  ----
w       changed  (4)    float32          1      0.1826  0.993999    25.0%
b       same     (2)    float32          0           0         1     0.0%"""


def test_cli_exit_codes_and_json(capsys, tmp_path):
    assert main(["diff", demo.path("cnn.pth"), demo.path("cnn.safetensors")]) == 0
    assert "all 13 tensors the same" in capsys.readouterr().out
    assert main(["diff", demo.path("cnn.pth"), demo.path("cnn_finetuned.pth"), "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["counts"] == {"same": 9, "changed": 4}
    assert main(["diff", demo.path("cnn.pth"), demo.path("cnn_finetuned.pth"),
                 "--changed-only", "--atol", "1"]) == 0
    assert main(["diff", demo.path("cnn.pth"), str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["diff", "a", "b", "--atol", "nan"])
    assert e.value.code == 2


def test_plots_show_every_tensor_and_one_pair():
    from weightviz import plots
    r = wv.diff(demo.path("cnn.pth"), demo.path("cnn_finetuned.pth"))
    ax = plots.diff_overview(r)
    assert len(ax.get_xticklabels()) == 13 and "9 same, 4 changed" in ax.get_title()
    assert sum(len(c.patches) for c in ax.containers) == 13     # one bar per tensor
    axs = plots.diff_hist(r, "fc2.weight")
    assert len(axs) == 2 and "a − b" in axs[1].get_title()
    assert len(axs[0].get_legend().get_texts()) == 2
    a, b = _planted()
    axs = plots.diff_hist(a, "fc.weight", b)                   # two sources: diffed first
    assert "shapes differ" in axs[1].texts[0].get_text()
    import matplotlib.pyplot as plt
    plt.close("all")
