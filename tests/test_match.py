"""check()/load(): the checkpoint-versus-model report, safe fixes, strict loads.

Checkpoints are real: state_dict()s of real torch modules (DataParallel and
torch.compile wrappers included), saved with torch.save where a file is needed.
Golden report texts live in tests/golden/; refresh them with
WEIGHTVIZ_UPDATE_GOLDEN=1.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightviz as wv
from weightviz import render
from weightviz.checkpoint import Checkpoint, DataLocation, TensorEntry
from weightviz.matching.match import non_finite
from weightviz.matching.names import fold
from weightviz.matching.report import STATUSES

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; WEIGHTVIZ_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("WEIGHTVIZ_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; create it with WEIGHTVIZ_UPDATE_GOLDEN=1")
    assert text + "\n" == path.read_text(encoding="utf-8"), \
        f"report text differs from {path}; rerun with WEIGHTVIZ_UPDATE_GOLDEN=1 if the change is intended"


def has_reader(fmt: str) -> bool:
    try:
        from weightviz.formats import available_formats
    except ImportError:
        return False
    return fmt in available_formats()


needs_torch_reader = pytest.mark.skipif(not has_reader("torch"), reason="torch reader not available")


class Net(nn.Module):
    """A small classifier: 3 blocks, batch norm, a head."""

    def __init__(self, classes: int = 10, width: int = 6):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(3)])
        self.bn = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        for b in self.blocks:
            x = torch.relu(b(x))
        return self.head(self.bn(x))


def make(classes=10, seed=0, **kw) -> Net:
    torch.manual_seed(seed)
    m = Net(classes, **kw)
    with torch.no_grad():  # non-trivial running stats so buffers matter
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.num_batches_tracked.fill_(7)
    return m.eval()


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model, snap) -> bool:
    sd = model.state_dict()
    return sd.keys() == snap.keys() and all(
        sd[k].dtype == snap[k].dtype and torch.equal(sd[k], snap[k]) for k in sd)


X = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
N = 13  # tensors in Net's state_dict


# -- the plain cases ----------------------------------------------------------------
def test_exact_fit():
    r = wv.check(make(), make(seed=1).state_dict())
    assert r.fits and r.verdict == f"all {N} tensors fit"
    assert r.counts == {"ok": N}
    assert [row.status for row in r][:1] == ["ok"] and len(r) == N


def test_check_changes_nothing():
    m = make()
    snap = snapshot(m)
    wv.check(m, make(seed=1).state_dict())
    assert same_state(m, snap)


def test_dataparallel_prefix_loads_and_predicts_like_original():
    src = make(seed=3)
    sd = nn.DataParallel(src).state_dict()  # CPU: wraps without devices
    assert all(k.startswith("module.") for k in sd)
    r = wv.check(make(), sd)
    assert r.counts == {"renamed": N} and r.fits
    assert r["head.weight"].ckpt_name == "module.head.weight"
    assert "strip 'module.'" in r["head.weight"].rule and "DataParallel" in r["head.weight"].rule
    assert r.verdict.startswith(f"all {N} tensors fit after renaming: strip 'module.'")
    m = make()
    rep = wv.load(m, sd)
    assert rep.loaded and not rep.untouched
    assert torch.equal(m(X), src(X)) and same_state(m, snapshot(src))


def test_torch_compile_prefix():
    src = make(seed=4)
    try:
        sd = torch.compile(src).state_dict()
        made_by = "torch.compile"
    except Exception:  # pragma: no cover - torch.compile unavailable: build the names
        sd = OrderedDict(("_orig_mod." + k, v) for k, v in src.state_dict().items())
        made_by = "hand-built"
    assert all(k.startswith("_orig_mod.") for k in sd), made_by
    m = make()
    r = wv.load(m, sd)
    assert r.counts == {"renamed": N}
    assert "torch.compile" in r["blocks.0.weight"].rule
    assert torch.equal(m(X), src(X))


def test_model_wrapped_checkpoint_plain():
    """The reverse rule: the model carries a prefix the checkpoint lacks."""
    src = make(seed=5)
    wrapped = nn.DataParallel(make())
    r = wv.load(wrapped, src.state_dict())
    assert r.counts == {"renamed": N}
    assert r["module.head.bias"].rule.startswith("add 'module.'")
    assert torch.equal(wrapped.module(X), src(X))


def test_dataparallel_of_compiled():
    src = make(seed=6)
    sd = OrderedDict(("module._orig_mod." + k, v) for k, v in src.state_dict().items())
    r = wv.check(make(), sd)
    assert r.fits and "strip 'module.'" in r["bn.bias"].rule and "strip '_orig_mod.'" in r["bn.bias"].rule


def test_lightning_checkpoint_model_prefix_and_unwrap():
    src = make(seed=7)
    ckpt = {"state_dict": {"model." + k: v for k, v in src.state_dict().items()},
            "epoch": 3, "global_step": 120, "optimizer_states": [{}]}
    m = make()
    r = wv.load(m, ckpt)
    assert r.counts == {"renamed": N}
    assert "strip 'model.'" in r["head.weight"].rule
    assert any("unwrapped 'state_dict'" in f and "epoch" in f for f in r.fixes)
    assert torch.equal(m(X), src(X))


def test_other_leading_prefix_found_by_shapes():
    src = make(seed=8)
    sd = {"backbone." + k: v for k, v in src.state_dict().items()}
    r = wv.check(make(), sd)
    assert r.fits and r.counts == {"renamed": N}
    assert r["head.weight"].rule.startswith("strip 'backbone.'")


def test_training_checkpoint_dict():
    src = make(seed=9)
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9)
    src(X).sum().backward()
    opt.step()
    ckpt = {"model_state_dict": src.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "epoch": 5, "loss": 0.25}
    m = make()
    r = wv.load(m, ckpt)
    assert r.counts == {"ok": N} and r.verdict == f"all {N} tensors loaded"
    assert r.fixes and r.fixes[0].startswith("unwrapped 'model_state_dict' (kept apart: epoch, loss")
    assert torch.equal(m(X), src(X))


@needs_torch_reader
def test_training_checkpoint_file(tmp_path):
    src = make(seed=10)
    opt = torch.optim.Adam(src.parameters())
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": src.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "epoch": 2}, path)
    before = path.read_bytes()
    m = make()
    r = wv.load(m, str(path))
    assert r.fits and r.counts == {"ok": N}
    assert torch.equal(m(X), src(X))
    assert path.read_bytes() == before


@needs_torch_reader
def test_dataparallel_file(tmp_path):
    src = make(seed=11)
    path = tmp_path / "dp.pt"
    torch.save(nn.DataParallel(src).state_dict(), path)
    m = make()
    r = wv.load(m, path)
    assert r.counts == {"renamed": N}
    assert torch.equal(m(X), src(X))


def test_head_with_other_class_count():
    r = wv.check(make(classes=10), make(classes=1000).state_dict())
    assert r.verdict == "only the classifier head differs (1000 → 10 classes): expected when fine-tuning"
    assert r.counts == {"ok": N - 2, "shape_mismatch": 2}
    assert {row.name for row in r.by_status("shape_mismatch")} == {"head.weight", "head.bias"}
    assert r["head.weight"].ckpt_shape == (1000, 6) and r["head.weight"].model_shape == (10, 6)
    assert not r.fits
    # rows: problems first
    assert [cells[0] for cells in r.view().tables[0].rows][:2] == ["shape_mismatch"] * 2


def test_head_fine_tuning_workflow_strict_false():
    pre = make(classes=1000, seed=12)
    m = make(classes=10)
    head_before = m.head.weight.detach().clone()
    r = wv.load(m, pre.state_dict(), strict=False)
    assert sorted(r.untouched) == ["head.bias", "head.weight"]
    assert torch.equal(m.head.weight, head_before)
    assert torch.equal(m.blocks[0].weight, pre.blocks[0].weight)
    assert "LEFT UNTOUCHED" in repr(r) and "2: head.weight, head.bias" in repr(r)


def test_missing_key():
    sd = make(seed=1).state_dict()
    del sd["bn.running_var"]
    r = wv.check(make(), sd)
    assert r["bn.running_var"].status == "missing"
    assert r.counts == {"ok": N - 1, "missing": 1}
    assert r.verdict == f"1 of {N} model tensors are missing from the checkpoint: they would stay as initialised"


def test_unexpected_key():
    sd = make(seed=1).state_dict()
    sd["aux.weight"] = torch.zeros(3, 6)
    r = wv.check(make(), sd)
    assert r["aux.weight"].status == "unexpected" and r["aux.weight"].model_shape is None
    assert r.verdict == f"all {N} model tensors fit; the checkpoint has 1 more the model does not use"
    assert not r.fits
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError):
        wv.load(m, sd)
    assert same_state(m, snap)
    r2 = wv.load(m, sd, strict=False)
    assert not r2.untouched and len(r2.loaded) == N


def test_transposed_linear():
    src = make(seed=13)
    sd = src.state_dict()
    sd["head.weight"] = sd["head.weight"].T.contiguous()  # (in, out): the Keras/NumPy layout
    r = wv.check(make(), sd)
    row = r["head.weight"]
    assert row.status == "transposed" and row.ckpt_shape == (6, 10) and row.model_shape == (10, 6)
    assert r.verdict == ("1 tensor is stored transposed, the (in, out) layout of Keras/NumPy: "
                         "load with transpose=True")
    assert any("transpose=True" in s for s in r.suggestions)
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError, match="transpose=True"):
        wv.load(m, sd)
    assert same_state(m, snap)
    r2 = wv.load(m, sd, transpose=True)
    assert r2["head.weight"].loaded
    assert torch.equal(m(X), src(X))


def test_square_matrix_is_not_called_transposed():
    sd = make(seed=1).state_dict()
    sd["blocks.0.weight"] = sd["blocks.0.weight"].T.contiguous()
    assert wv.check(make(), sd)["blocks.0.weight"].status == "ok"


def test_float64_tensor_lossy():
    sd = make(seed=1).state_dict()
    w64 = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sd["blocks.1.weight"] = w64
    r = wv.check(make(), sd)
    row = r["blocks.1.weight"]
    expected = float((w64 - w64.float().double()).abs().max())
    assert row.status == "dtype_mismatch" and row.lossless is False
    assert row.max_error == pytest.approx(expected) and 0 < expected < 1e-6
    assert f"max abs error {render.fmt_float(expected)}" in row.note
    assert r.verdict == (f"1 tensor needs a lossy cast (float64 → float32, max abs error "
                         f"{render.fmt_float(expected)}): load with cast=True to accept it")
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError, match="cast=True"):
        wv.load(m, sd)
    assert same_state(m, snap)
    wv.load(m, sd, cast=True)
    assert m.blocks[1].weight.dtype == torch.float32
    assert torch.equal(m.blocks[1].weight, w64.float())


def test_float64_holding_float32_values_is_lossless_and_loads():
    src = make(seed=14)
    sd = {k: (v.double() if v.is_floating_point() else v) for k, v in src.state_dict().items()}
    r = wv.check(make(), sd)
    assert r.fits and r.counts == {"ok": 1, "dtype_mismatch": N - 1}
    assert all(row.lossless and row.max_error == 0 for row in r.by_status("dtype_mismatch"))
    assert r.verdict == f"all {N} tensors fit with {N - 1} lossless casts"
    m = make()
    wv.load(m, sd)
    assert torch.equal(m(X), src(X)) and m.head.weight.dtype == torch.float32


def test_float16_widening_is_lossless_without_reading():
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in make().state_dict().items()}
    ents = {k: TensorEntry(k, v.shape, str(v.dtype)[6:], loader=_boom) for k, v in sd.items()}
    r = wv.check(make(), Checkpoint(ents, format="test"), data=False)
    assert r.fits and all(row.lossless for row in r.by_status("dtype_mismatch"))


def _boom():
    raise AssertionError("data was read")


def test_headers_only_reads_no_data():
    sd = make().state_dict()
    ents = {k: TensorEntry(k, v.shape, str(v.dtype)[6:], loader=_boom) for k, v in sd.items()}
    ents["extra"] = TensorEntry("extra", (2,), "float32", loader=_boom)
    r = wv.check(make(), Checkpoint(ents, format="test"), data=False)
    assert r.counts == {"ok": N, "unexpected": 1}


def test_non_finite_scan_reads_each_tensor_once():
    sd = make().state_dict()
    reads = {}

    def loader(k, v):
        def f():
            reads[k] = reads.get(k, 0) + 1
            return v
        return f
    ents = {k: TensorEntry(k, v.shape, str(v.dtype)[6:], loader=loader(k, v)) for k, v in sd.items()}
    wv.check(make(), Checkpoint(ents, format="test"))
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    assert reads == {k: 1 for k in floats}


def test_nan_tensor():
    sd = make(seed=1).state_dict()
    sd["blocks.2.bias"][1] = float("nan")
    sd["blocks.2.bias"][3] = float("inf")
    r = wv.check(make(), sd)
    row = r["blocks.2.bias"]
    assert row.status == "non_finite" and "1 NaN and 1 Inf of 6 values" in row.note
    assert r.verdict == "1 tensor holds NaN or Inf: loading it would poison the model"
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError):
        wv.load(m, sd)
    assert same_state(m, snap)
    r2 = wv.load(m, sd, strict=False)
    assert r2.untouched == ["blocks.2.bias"]
    assert torch.equal(m.blocks[2].bias, snap["blocks.2.bias"])


def test_non_finite_streams_a_memory_mapped_tensor(tmp_path):
    a = np.arange(24, dtype="<f4").reshape(4, 6)
    a[2, 3] = np.nan
    a[0, 0] = -np.inf
    path = tmp_path / "raw.bin"
    path.write_bytes(b"\0" * 16 + a.tobytes(order="F"))
    e = TensorEntry("t", (4, 6), "float32", location=DataLocation(str(path), 16, np.dtype("<f4"), "F"))
    assert non_finite(e) == (1, 1)
    assert non_finite(TensorEntry("b", (2,), "bfloat16", loader=lambda: torch.tensor(
        [float("nan"), 1.0], dtype=torch.bfloat16))) == (1, 0)


def test_nothing_would_load():
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1))
    r = wv.check(make(), other.state_dict())
    assert r.verdict == "nothing would load: the model would stay random"
    assert r.counts == {"missing": N, "unexpected": 4}
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError, match="nothing would load") as ei:
        wv.load(m, other.state_dict())
    assert same_state(m, snap)
    assert ei.value.report.counts == r.counts


def test_shape_order_pairs_suggested_and_applied_only_when_asked():
    src = nn.Sequential(OrderedDict(fc1=nn.Linear(4, 8), act=nn.ReLU(), fc2=nn.Linear(8, 3)))

    class Renamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.out(torch.relu(self.inp(x)))

    m = Renamed()
    r = wv.check(m, src.state_dict())
    assert r.verdict == "nothing would load: the model would stay random"
    assert r.rename_map() == {"fc1.weight": "inp.weight", "fc1.bias": "inp.bias",
                              "fc2.weight": "out.weight", "fc2.bias": "out.bias"}
    assert r.rename_map(guesses=False) == {}
    assert r["inp.weight"].suggestion == "fc1.weight"
    assert any("guess=True" in s for s in r.suggestions)
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError):
        wv.load(m, src.state_dict())
    assert same_state(m, snap)
    x = torch.randn(2, 4)
    r2 = wv.load(m, src.state_dict(), guess=True)
    assert r2.counts == {"renamed": 4} and torch.equal(m(x), src(x))
    m2 = Renamed()
    r3 = wv.load(m2, src.state_dict(), rename=r.rename_map())
    assert r3["out.bias"].rule == "your rename= mapping" and torch.equal(m2(x), src(x))
    m3 = Renamed()
    wv.load(m3, src.state_dict(), rename=lambda k: {"fc1": "inp", "fc2": "out"}[k.split(".")[0]]
            + "." + k.split(".")[1])
    assert torch.equal(m3(x), src(x))


def test_same_layer_and_shape_pair_suggested_through_the_prefix_rule():
    # a renamed BatchNorm weight (old 'gamma' naming) inside a DataParallel checkpoint,
    # next to an extra tensor of another shape: the whole-order guess fails, the layer one holds
    src = make(seed=3)
    sd = OrderedDict((k.replace("bn.weight", "bn.gamma") if k.startswith("module.bn.") else k, v)
                     for k, v in nn.DataParallel(src).state_dict().items())
    sd["module.aux.weight"] = torch.zeros(3, 5)
    r = wv.check(make(), sd)
    assert r["bn.weight"].status == "missing" and r["bn.weight"].suggestion == "module.bn.gamma"
    assert "by layer and shape" in r["bn.weight"].note
    assert r.rename_map()["module.bn.gamma"] == "bn.weight"
    assert "module.aux.weight" not in r.rename_map()
    m = make()
    wv.load(m, sd, guess=True, strict=False)
    assert torch.equal(m(X), src(X))


def test_rename_map_is_usable_in_code():
    src = make(seed=15)
    sd = nn.DataParallel(src).state_dict()
    mapping = wv.check(make(), sd).rename_map()
    assert mapping["module.head.weight"] == "head.weight"
    m = make()
    m.load_state_dict({mapping.get(k, k): v for k, v in sd.items()})
    assert torch.equal(m(X), src(X))


def test_strict_failure_leaves_model_exactly_as_it_was():
    """Many problems at once, most tensors fitting: still nothing is touched."""
    sd = make(classes=7, seed=16).state_dict()
    sd["blocks.0.weight"] = sd["blocks.0.weight"].double() + 1e-12
    sd["blocks.1.bias"][0] = float("nan")
    sd["extra"] = torch.ones(1)
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.MismatchError) as ei:
        wv.load(m, sd)
    assert same_state(m, snap)
    msg = str(ei.value)
    assert "nothing was loaded" in msg and "strict=False" in msg and "Got:" in msg
    assert isinstance(ei.value, ValueError)
    rep = ei.value.report
    assert rep.counts == {"ok": 9, "unexpected": 1, "shape_mismatch": 2, "dtype_mismatch": 1,
                          "non_finite": 1}
    assert rep.loaded == []


# -- import paths ---------------------------------------------------------------------
def test_model_from_import_path():
    src = nn.Linear(4, 2)
    r = wv.load("torch.nn:Linear", src.state_dict(), kwargs={"in_features": 4, "out_features": 2})
    assert isinstance(r.model, nn.Linear) and torch.equal(r.model.weight, src.weight)
    r2 = wv.check("torch.nn:Linear", src.state_dict(), kwargs={"in_features": 3, "out_features": 2})
    assert r2["weight"].status == "shape_mismatch"


@pytest.mark.parametrize("spec, match", [
    ("no_such_pkg_xyz.mod:Net", "cannot import module"),
    ("torch.nn:NoSuchClass", "has no attribute"),
    ("torch.nn:Linear", "could not build"),
])
def test_bad_import_paths(spec, match):
    with pytest.raises(wv.WeightvizError, match=match):
        wv.check(spec, {})


def test_bad_source_and_model():
    with pytest.raises(wv.WeightvizError, match="cannot compare against a int"):
        wv.check(make(), 3)
    with pytest.raises(wv.WeightvizError, match="cannot check against"):
        wv.check(object(), {})


def test_module_as_source():
    src = make(seed=17)
    m = make()
    wv.load(m, src)
    assert torch.equal(m(X), src(X))


def test_numpy_state_dict_and_checkpoint_entries():
    src = make(seed=18)
    sd = {k: v.numpy() for k, v in src.state_dict().items()}
    m = make()
    assert wv.check(m, sd).fits
    wv.load(m, sd)
    assert torch.equal(m(X), src(X))
    ck = Checkpoint({k: TensorEntry(k, a.shape, str(a.dtype), loader=lambda a=a: a) for k, a in sd.items()},
                    format="test")
    m2 = make()
    wv.load(m2, ck)
    assert torch.equal(m2(X), src(X))


# -- display ----------------------------------------------------------------------------
class Deep(nn.Module):
    def __init__(self, n=12):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict({"attn": nn.Linear(4, 4), "mlp": nn.Linear(4, 4)}) for _ in range(n))
        self.head = nn.Linear(4, 5)


def test_folding_repeated_layers():
    torch.manual_seed(0)
    r = wv.check(Deep(), Deep().state_dict())
    text = repr(r)
    assert "layers.{0..11}.attn.weight" in text and "layers.{0..11}.mlp.bias" in text
    assert "layers.3." not in text
    sd = Deep().state_dict()
    del sd["layers.5.attn.weight"]
    text = repr(wv.check(Deep(), sd))
    assert "layers.{0..4,6..11}.attn.weight" in text and "layers.5.attn.weight" in text


def test_fold_nested_and_checkpoint_names():
    cells = [["renamed", f"b.{i}.l.{j}.w", f"module.b.{i}.l.{j}.w", "x"] for i in range(3) for j in range(2)]
    assert fold(cells) == [["renamed", "b.{0..2}.l.{0,1}.w", "module.b.{0..2}.l.{0,1}.w", "x"]]
    assert fold([["ok", "a.1.w", "", ""], ["ok", "a.3.w", "", ""]]) == [["ok", "a.{1,3}.w", "", ""]]


def test_repr_is_deterministic_and_html_coloured():
    sd = make(classes=3, seed=1).state_dict()
    sd["extra"] = torch.zeros(2)
    r1, r2 = wv.check(make(), sd), wv.check(make(), sd)
    assert repr(r1) == repr(r2) and "0x" not in repr(r1)
    html = r1._repr_html_()
    assert render.COLOURS["shape_mismatch"] in html and render.COLOURS["unexpected"] in html
    assert "only 11 of 13 model tensors would load" in html


def test_to_dict_and_json():
    sd = make(seed=1).state_dict()
    del sd["head.bias"]
    r = wv.check(make(), sd)
    d = json.loads(r.to_json())
    assert d["verdict"] == r.verdict and d["fits"] is False
    assert d["counts"] == {"ok": N - 1, "missing": 1}
    row = next(x for x in d["rows"] if x["name"] == "head.bias")
    assert row["status"] == "missing" and row["model_shape"] == [10] and row["checkpoint_shape"] is None
    assert d["model_tensors"] == N and d["checkpoint_tensors"] == N - 1


def test_golden_mixed_report():
    torch.manual_seed(0)
    src = make(classes=4, seed=19)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    sd["module.blocks.0.weight"] = torch.linspace(-1, 1, 36, dtype=torch.float64).reshape(6, 6) / 3
    sd["module.blocks.1.bias"] = torch.tensor([0, float("nan"), 0, 0, float("inf"), 0])
    del sd["module.bn.num_batches_tracked"]
    sd["module.aux.weight"] = torch.zeros(2, 6)
    r = wv.check(make(), {"model_state_dict": sd, "epoch": 4})
    golden("check_mixed.txt", repr(r))
    m = make()
    rl = wv.load(m, {"model_state_dict": sd, "epoch": 4}, strict=False, cast=True)
    golden("load_mixed.txt", repr(rl))
    torch.manual_seed(0)
    golden("check_deep.txt", repr(wv.check(Deep(), {"_orig_mod." + k: v for k, v in Deep().state_dict().items()})))


# -- invariants -----------------------------------------------------------------------
class FakeModel:
    """Duck-typed model: check() needs only state_dict()."""

    def __init__(self, sd):
        self.sd = sd

    def state_dict(self):
        return dict(self.sd)

    def load_state_dict(self, sd, strict=True):  # pragma: no cover - check only
        raise AssertionError


NAMES = [f"{a}.{i}.{b}" for a in ("enc", "dec") for i in range(3) for b in ("weight", "bias")] + ["head.weight"]
SHAPES = [(2, 3), (3, 2), (4,), (2, 2), (5,), ()]


@st.composite
def model_and_ckpt(draw):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=8, unique=True))
    model = {n: torch.zeros(draw(st.sampled_from(SHAPES))) for n in names}
    ckpt = {}
    for n, t in model.items():
        op = draw(st.sampled_from(["same", "drop", "prefix", "shape", "transpose", "dtype", "nan"]))
        if op == "drop":
            continue
        if op == "prefix":
            ckpt["module." + n] = t
        elif op == "shape":
            ckpt[n] = torch.zeros(7)
        elif op == "transpose" and t.dim() == 2:
            ckpt[n] = t.T.contiguous()
        elif op == "dtype":
            ckpt[n] = t.double() + 0.1
        elif op == "nan" and t.numel():
            ckpt[n] = torch.full(t.shape, float("nan"))
        else:
            ckpt[n] = t.clone()
    extra = draw(st.lists(st.sampled_from(["x.weight", "y.bias", "module.z", "enc.9.weight"]),
                          unique=True, max_size=3))
    for e in extra:
        ckpt[e] = torch.ones(draw(st.sampled_from(SHAPES)))
    return model, ckpt


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_and_ckpt())
def test_every_name_in_exactly_one_row(mc):
    model, ckpt = mc
    r = wv.check(FakeModel(model), ckpt)
    model_rows = [row.name for row in r if row.status != "unexpected"]
    assert sorted(model_rows) == sorted(model)                       # each model name once
    ck_rows = [row.ckpt_name for row in r if row.ckpt_name is not None]
    assert sorted(ck_rows) == sorted(ckpt)                           # each checkpoint name once
    c = r.counts
    assert set(c) <= set(STATUSES) and sum(c.values()) == len(r)
    assert (c.get("ok", 0) + c.get("renamed", 0) + c.get("shape_mismatch", 0) + c.get("dtype_mismatch", 0)
            + c.get("transposed", 0) + c.get("non_finite", 0) + c.get("missing", 0)) == len(model)
    assert c.get("unexpected", 0) + len(model) - c.get("missing", 0) == len(ckpt)
    assert r.fits == (c.get("unexpected", 0) == 0 and all(row.fits for row in r))
    assert r.verdict and "\n" not in r.verdict
    json.loads(r.to_json())
    if model and not ckpt:
        assert r.verdict == "nothing would load: the model would stay random"


def test_old_batchnorm_checkpoint_without_step_counter_loads_strictly():
    src = make(seed=20)
    sd = src.state_dict()
    del sd["bn.num_batches_tracked"]
    r = wv.check(make(), sd)
    assert r["bn.num_batches_tracked"].status == "missing" and r.fits
    assert r.verdict == f"all {N - 1} tensors fit (1 missing but harmless: BatchNorm step counters)"
    m = make()
    r2 = wv.load(m, sd)
    assert r2.untouched == ["bn.num_batches_tracked"] and torch.equal(m(X), src(X))


def _expand(name: str) -> list[str]:
    """layers.{0..2,5}.w -> the names it stands for."""
    import re
    m = re.search(r"\{([^}]*)\}", name)
    if not m:
        return [name]
    nums = []
    for part in m.group(1).split(","):
        a, _, b = part.partition("..")
        nums += range(int(a), int(b or a) + 1)
    return [x for n in nums for x in _expand(name[:m.start()] + str(n) + name[m.end():])]


@settings(max_examples=80, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 12), st.integers(0, 3), st.sampled_from(["w", "b"])), max_size=40),
       st.booleans())
def test_fold_loses_no_name(triples, prefixed):
    names = [f"blocks.{i}.sub.{j}.{t}" for i, j, t in sorted(triples)]
    cells = [["ok", n, ("module." + n) if prefixed else "", "(2) float32"] for n in names]
    folded = fold(cells)
    expanded = [x for c in folded for x in _expand(c[1])]
    assert sorted(expanded) == sorted(names)
    if prefixed:
        assert sorted(x for c in folded for x in _expand(c[2])) == sorted("module." + n for n in names)
    assert len(folded) <= len(cells)


def test_golden_html_and_load_dict():
    sd = make(classes=4, seed=21).state_dict()
    sd["blocks.0.bias"] = sd["blocks.0.bias"].half()
    r = wv.check(make(), {"model." + k: v for k, v in sd.items()})
    golden("check_head.html", r._repr_html_())
    rl = wv.load(make(), {"model." + k: v for k, v in sd.items()}, strict=False)
    d = json.loads(rl.to_json())
    assert sorted(d["untouched"]) == ["head.bias", "head.weight"] and len(d["loaded"]) == N - 2
    assert d["rename_map"]["model.bn.bias"] == "bn.bias"
    assert rl.verdict == r.verdict == ("only the classifier head differs (4 → 10 classes): "
                                       "expected when fine-tuning")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight  # tied, as language models do


def test_tied_weight_missing_from_checkpoint_is_harmless():
    """safetensors drops the second name of tied weights; loading the first fills both."""
    src = Tied()
    sd = {k: v for k, v in src.state_dict().items() if k != "out.weight"}
    m = Tied()
    r = wv.check(m, sd)
    assert r["out.weight"].status == "missing" and "tied to 'emb.weight'" in r["out.weight"].note
    assert r.fits and r.verdict == "the 1 tensor fits (1 missing but harmless: tied weights)"
    wv.load(m, sd)
    assert torch.equal(m.out.weight, src.emb.weight) and m.out.weight.data_ptr() == m.emb.weight.data_ptr()
    # the untied case is a real miss
    del sd["emb.weight"]
    assert wv.check(Tied(), sd).verdict == "nothing would load: the model would stay random"


def test_read_failure_is_a_corrupt_file_error_and_changes_nothing():
    sd = make(seed=22).state_dict()

    def broken():
        raise OSError("short read")
    ents = {k: TensorEntry(k, v.shape, str(v.dtype)[6:], loader=lambda v=v: v) for k, v in sd.items()}
    ents["head.weight"] = TensorEntry("head.weight", (10, 6), "float32", loader=broken)
    ck = Checkpoint(ents, format="test")
    with pytest.raises(wv.CorruptFileError, match="could not read the data of tensor 'head.weight'.*short read"):
        wv.check(make(), ck)
    assert wv.check(make(), ck, data=False).fits  # headers alone are fine
    m = make()
    snap = snapshot(m)
    with pytest.raises(wv.CorruptFileError):
        wv.load(m, ck, strict=False)
    assert same_state(m, snap)


def module_from(sd: dict) -> nn.Module:
    """A real nn.Module whose state_dict has exactly these names and shapes."""
    root = nn.Module()
    for name, t in sd.items():
        *path, leaf = name.split(".")
        mod = root
        for p in path:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.register_parameter(leaf, nn.Parameter(torch.randn(t.shape), requires_grad=False))
    return root


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_and_ckpt(), st.booleans())
def test_load_all_or_nothing(mc, strict):
    """strict: either everything that the report calls loaded is loaded, or nothing changed;
    strict=False: loaded names hold the checkpoint's values, untouched ones their old values."""
    model_sd, ckpt = mc
    m = module_from(model_sd)
    snap = snapshot(m)
    try:
        r = wv.load(m, ckpt, strict=strict)
    except wv.MismatchError as e:
        assert strict and not e.report.fits and same_state(m, snap)
        return
    now = m.state_dict()
    for row in r:
        if row.status == "unexpected":
            continue
        if row.loaded:
            assert torch.equal(now[row.name], ckpt[row.ckpt_name].to(now[row.name].dtype))
        else:
            assert torch.equal(now[row.name], snap[row.name]), row
    if strict:
        assert all(row.loaded or row.fits for row in r if row.status != "unexpected")
