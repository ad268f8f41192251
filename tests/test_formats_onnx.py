"""ONNX: listing checked against the onnx package itself (names, shapes, dtypes, values),
raw_data memory-mapped, typed fields, external data, Constant nodes inside If branches,
the summary, check/load against the torch models the exports came from, stats, diff,
browse, sniffing, and the hostile files of tests/hostile/cases_onnx.py opened in process.

Fixtures: tests/fixtures/onnx, written by tools/make_onnx_fixtures.py.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import weightviz as wv
from weightviz.errors import CorruptFileError, WeightvizError

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from tests.hostile import cases_onnx  # noqa: E402
from tests.hostile.catalog import open_at_once  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "onnx"
ALL = sorted(p.name for p in FIX.glob("*.onnx"))


def _script():
    spec = importlib.util.spec_from_file_location("make_onnx_fixtures", ROOT / "tools" / "make_onnx_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reference(path: Path) -> dict:
    """What the onnx package holds: name -> TensorProto, for initializers (every graph) and
    weight-sized Constant values, in the order weightviz walks them."""
    out = {}

    def graph(g):
        for node in g.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    t, n = a.t, int(np.prod(a.t.dims))
                    if len(t.dims) >= 2 or n >= 1024 or (len(t.dims) == 1 and n >= 2 and t.data_type in
                                                         (1, 10, 11, 16, 17, 18, 19, 20, 24)):
                        out[node.output[0]] = t
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                    graph(sub)
        for t in g.initializer:
            out[t.name] = t

    graph(onnx.load(str(path), load_external_data=False).graph)
    return out


# ---------------------------------------------------------------- listing = onnx's own

@pytest.mark.parametrize("name", ALL)
def test_listing_and_values_agree_with_the_onnx_package(name):
    path = FIX / name
    ck, ref = wv.open(path), _reference(path)
    strings = [n for n, t in ref.items() if t.data_type == onnx.TensorProto.STRING]
    assert sorted(ck) == sorted(n for n in ref if n not in strings)
    assert sorted(ck.extras) == sorted(strings)
    for n, t in ref.items():
        if n in strings:
            continue
        e, want = ck[n], numpy_helper.to_array(t, base_dir=str(FIX))
        assert e.shape == tuple(t.dims) == want.shape, n
        assert e.dtype == onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name, n     # ml_dtypes' names
        if e.dtype == "int4":
            with pytest.raises(WeightvizError, match="int4"):
                e.numpy()
            continue
        got = e.numpy()
        if e.dtype == "bfloat16" or e.dtype.startswith("float8"):
            want = want.astype(np.float32)
        assert got.dtype == want.dtype, n
        np.testing.assert_array_equal(got, want, err_msg=n)


def test_file_order_and_exporter_names():
    ck = wv.open(FIX / "smallcnn.onnx")
    assert ck.format == "onnx"
    assert list(ck) == ["conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                        "onnx::Conv_29", "onnx::Conv_30"]
    assert {e.dtype for e in ck.values()} == {"float32"} and ck.num_params == 9802


def test_raw_data_is_memory_mapped_and_typed_fields_are_decoded():
    ck = wv.open(FIX / "smallcnn.onnx")
    for e in ck.values():
        assert isinstance(e.raw(), np.memmap) and e.location.path == str(FIX / "smallcnn.onnx")
    typed = wv.open(FIX / "typed.onnx")
    assert typed["w.raw_data"].location is not None and typed["w.float_data"].location is None
    assert typed["w.int64"].numpy().tolist() == [-3, 0, 7, 2**40, -(2**62)]
    assert typed["w.uint64"].numpy().tolist() == [0, 2**64 - 1]
    assert typed["w.int32"].numpy().tolist() == [[-1, 2], [-(2**31), 2**31 - 1]]
    assert typed["w.float8"].numpy().tolist() == [0.5, -2.0, 1.25, 448.0]
    assert typed["w.bool"].numpy().tolist() == [[True, False], [False, True]]
    assert typed["w.complex64"].numpy().tolist() == [1 + 2j, -3.5j]
    assert typed["w.empty"].shape == (0, 3) and typed["w.empty"].numpy().shape == (0, 3)
    assert typed["w.bfloat16"].raw().dtype == np.uint16
    import torch
    assert typed["w.bfloat16"].torch().dtype == torch.bfloat16


def test_unreadable_types_listed_strings_kept_apart():
    ck = wv.open(FIX / "typed.onnx")
    text = repr(ck)
    assert re.search(r"\n  not readable +int4 \(1\)\n", text)
    assert re.search(r"\n  kept apart +w\.names \(string tensor\)\n", text)
    assert ck["w.int4"].shape == (4,)
    for read in (ck["w.int4"].numpy, ck["w.int4"].raw):
        with pytest.raises(WeightvizError, match=r"stored as int4, packed several values to a byte"):
            read()


def test_summary_shows_the_graph_and_is_deterministic():
    ck = wv.open(FIX / "smallcnn.onnx")
    text = repr(ck)
    for label, value in (("ONNX", "ir_version 9, opsets ai.onnx 20"), ("producer", "pytorch 2.13"),
                         ("inputs", "x.1 float32 (1, 1, 16, 16)"), ("outputs", "27 float32 (1, 10)"),
                         ("nodes", "13 (Relu 3, Cast 2, Conv 2, MaxPool 2, Gemm 2, Flatten 1, Softmax 1)"),
                         ("tensors", "8 initializers, 0 from Constant nodes")):
        assert re.search(rf"\n  {label} +{re.escape(value)}", text), label
    assert text == repr(wv.open(FIX / "smallcnn.onnx")) and str(FIX) not in text
    assert "<table" in ck._repr_html_()
    meta = ck.metadata
    assert meta["opsets"] == {"ai.onnx": 20} and meta["op_types"]["Gemm"] == 2 and meta["nodes"] == 13
    assert meta["inputs"] == [("x.1", "float32", (1, 1, 16, 16))]
    typed = repr(wv.open(FIX / "typed.onnx"))
    assert "inputs        x float32 (batch, 4)" in typed


# ---------------------------------------------------------------- external data, constants

def test_external_data_is_mapped_from_the_data_file(tmp_path):
    ck = wv.open(FIX / "external.onnx")
    assert [e.location.path for e in ck.values()] == [str(FIX / "external.onnx.data")] * 3
    assert [e.location.offset for e in ck.values()] == [0, 96, 112]
    assert re.search(r"\n  external data +1 file: external\.onnx\.data\n", repr(ck))
    shutil.copy(FIX / "external.onnx", tmp_path / "external.onnx")        # the data file left behind
    lone = wv.open(tmp_path / "external.onnx")
    assert len(lone) == 3 and "(missing: external.onnx.data)" in repr(lone)
    with pytest.raises(CorruptFileError, match=r"external data file 'external\.onnx\.data' of tensor "
                                               r"'fc\.weight' in external\.onnx is missing"):
        lone["fc.weight"].numpy()


def test_constant_nodes_in_if_branches_are_listed():
    ck = wv.open(FIX / "constants.onnx")
    assert len(ck) == 8 and all(e.location is not None for e in ck.values())
    assert "If_0_else_branch__encoder.0.weight" in ck and "If_0_inner_then__encoder.0.bias" in ck
    assert not any("shape" in n or "alpha" in n for n in ck)            # small helpers only counted
    text = repr(ck)
    assert re.search(r"\n  tensors +0 initializers, 8 from Constant nodes \(4 small constants not listed\)\n", text)
    assert re.search(r"\n  nodes +22 \(Constant 16, Gemm 4, If 2\); 4 subgraphs\n", text)
    assert len(ck.metadata["constant_names"]) == 8


# ---------------------------------------------------------------- check / load against torch

def test_check_pairs_constant_node_weights_by_value():
    """Weights held only in If-branch Constant nodes pair with the model tensors holding
    the same values; the other branches' copies are named as exporter-made."""
    import torch
    from torch import nn
    ck = wv.open(FIX / "constants.onnx")
    model = nn.ModuleDict({"encoder": nn.ModuleList([nn.Linear(5, 3)])})
    with torch.no_grad():
        model["encoder"][0].weight.copy_(ck["If_0_then_branch__encoder.0.weight"].torch())
        model["encoder"][0].bias.copy_(ck["If_0_then_branch__encoder.0.bias"].torch())
    rows = {r.name: r for r in wv.check(model, ck).rows}
    assert rows["encoder.0.weight"].status == "renamed"
    assert rows["encoder.0.weight"].ckpt_name == "If_0_then_branch__encoder.0.weight"
    assert rows["If_0_else_branch__encoder.0.weight"].status == "unexpected"
    assert "exporter-made name" in rows["If_0_else_branch__encoder.0.weight"].note


def test_check_names_folded_batchnorm_and_keeps_state_dict_names():
    mk = _script()
    rep = wv.check(mk.smallcnn(), FIX / "smallcnn.onnx")
    st = {r.name: r for r in rep.rows}
    assert all(st[n].status == "ok" for n in ("conv2.weight", "fc1.weight", "fc2.bias"))
    assert "onnx::Conv_29" not in st and "onnx::Conv_30" not in st      # merged into the model's rows
    assert (st["conv1.weight"].status, st["conv1.weight"].ckpt_name) == ("folded", "onnx::Conv_29")
    assert (st["conv1.bias"].status, st["conv1.bias"].ckpt_name) == ("folded", "onnx::Conv_30")
    assert "BatchNorm 'bn1' folded in (values checked)" in st["conv1.weight"].note
    assert st["bn1.running_var"].status == "folded"
    assert "the exporter folded 'bn1' into 'onnx::Conv_29' and 'onnx::Conv_30'" in st["bn1.running_var"].note
    assert st["bn1.num_batches_tracked"].status == "missing" and st["bn1.num_batches_tracked"].fits
    assert rep.counts == {"missing": 1, "folded": 6, "ok": 6} and not rep.fits
    assert rep.verdict.startswith("6 of 13 model tensors were folded by the exporter")
    assert any("BatchNorm 'bn1' was folded into 'conv1'" in s for s in rep.suggestions)


def test_check_pairs_transposed_matmul_weights_by_value_and_loads_them():
    import torch
    mk = _script()
    rep = wv.check(mk.seq3d(), FIX / "linear3d.onnx")
    rows = {r.name: r for r in rep.rows}
    assert {n: r.status for n, r in rows.items()} == {"proj.weight": "transposed", "head.weight": "transposed",
                                                     "proj.bias": "ok"}
    assert rows["proj.weight"].ckpt_name.startswith("onnx::MatMul_") and "ONNX export name" in rows["proj.weight"].note
    # values pair only against the weights the file came from; the pairs then load any twin
    torch.manual_seed(1)
    fresh = type(mk.seq3d())()
    assert {r.status for r in wv.check(fresh, FIX / "linear3d.onnx").rows} == {"missing", "unexpected", "ok"}
    wv.load(fresh, FIX / "linear3d.onnx", transpose=True, rename=rep.rename_map())
    assert torch.equal(fresh.proj.weight, mk.seq3d().proj.weight)
    assert torch.equal(fresh.head.weight, mk.seq3d().head.weight)


def test_dynamo_export_folded_values_under_state_dict_names():
    if not (FIX / "convbn_dynamo.onnx").exists():
        pytest.skip("convbn_dynamo.onnx needs onnxscript to be written")
    rep = wv.check(_script().convbn(), FIX / "convbn_dynamo.onnx")
    rows = {r.name: r for r in rep.rows}
    assert rows["conv.weight"].status == "folded" and not rows["conv.weight"].fits
    assert "BatchNorm 'bn' folded in by the ONNX exporter (values checked)" in rows["conv.weight"].note
    assert rows["fc.weight"].fits and "exporter-made name" in rows["val_10"].note


def _same_model(a, b, name):
    """Two ONNX models the same: structure exactly (graph, names, shapes, dtypes, attributes,
    external-data keys) and tensor values within float32 rounding, since an exporter's
    constant folding (a BatchNorm into its Conv) depends on the CPU's vector path."""
    def tensors(m):
        out = list(m.graph.initializer)
        for node in m.graph.node:
            out += [at.t for at in node.attribute if at.HasField("t")]
        return out
    ta, tb = tensors(a), tensors(b)
    assert [t.name for t in ta] == [t.name for t in tb], name
    for x, y in zip(ta, tb):
        assert (list(x.dims), x.data_type) == (list(y.dims), y.data_type), (name, x.name)
        va, vb = numpy_helper.to_array(x), numpy_helper.to_array(y)
        if va.dtype.kind in "fc":
            np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {x.name}")
        else:                                            # integers, booleans, strings: exactly
            np.testing.assert_array_equal(va, vb, err_msg=f"{name}: {x.name}")
        for t in (x, y):                                 # values compared: now the rest, exactly
            for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                          "string_data", "uint64_data"):
                t.ClearField(field)
    a.producer_version = b.producer_version = ""          # the torch release that exported it
    assert a.SerializeToString() == b.SerializeToString(), name


def test_fixtures_come_from_their_script(tmp_path):
    """Rewritten by tools/make_onnx_fixtures.py, every fixture is the committed one: the same
    structure, and values equal within float32 rounding on any CPU."""
    mk = _script()
    mk.write_helper_models(str(tmp_path))
    for n in ("typed.onnx", "constants.onnx", "external.onnx"):
        _same_model(onnx.load(str(tmp_path / n)), onnx.load(str(FIX / n)), n)
    import torch
    mk.export(mk.smallcnn(), torch.zeros(1, 1, 16, 16), str(tmp_path / "smallcnn.onnx"))
    mk.export(mk.seq3d(), torch.zeros(1, 2, 8), str(tmp_path / "linear3d.onnx"))
    for n in ("smallcnn.onnx", "linear3d.onnx"):
        _same_model(onnx.load(str(tmp_path / n)), onnx.load(str(FIX / n)), n)
    assert wv.open(FIX / "smallcnn.onnx").metadata["producer"].startswith("pytorch")
    assert sum(p.stat().st_size for p in FIX.iterdir()) < 60_000


def test_the_fixture_comparison_sees_a_changed_value_and_a_changed_shape():
    a, b = onnx.load(str(FIX / "smallcnn.onnx")), onnx.load(str(FIX / "smallcnn.onnx"))
    _same_model(a, b, "itself")
    a, b = onnx.load(str(FIX / "smallcnn.onnx")), onnx.load(str(FIX / "smallcnn.onnx"))
    w = numpy_helper.to_array(a.graph.initializer[0]).copy()
    w.flat[0] += 1e-3
    a.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, a.graph.initializer[0].name))
    with pytest.raises(AssertionError):
        _same_model(a, b, "value")
    a = onnx.load(str(FIX / "smallcnn.onnx"))
    a.graph.node[0].name += "_renamed"
    with pytest.raises(AssertionError):
        _same_model(a, b, "structure")


# ---------------------------------------------------------------- verbs

def test_stats_diff_and_browse():
    st = wv.stats(FIX / "smallcnn.onnx", progress=False)
    ck = wv.open(FIX / "smallcnn.onnx")
    s = st["fc1.weight"]
    w = ck["fc1.weight"].numpy()
    assert s.numel == w.size and abs(s.mean - float(w.mean())) < 1e-6
    same = wv.diff(FIX / "smallcnn.onnx", FIX / "smallcnn.onnx")
    assert {r.status for r in same.rows} == {"same"} and len(same.rows) == 8
    d = wv.diff(FIX / "constants.onnx", FIX / "constants.onnx")
    assert len(d.rows) == 8
    with pytest.raises(WeightvizError, match="int4"):
        wv.stats(FIX / "typed.onnx", progress=False)
    pytest.importorskip("ipywidgets")
    b = wv.browse(FIX / "smallcnn.onnx")
    b.select("fc1.weight")
    assert b.last_error is None and "fc1.weight" in b.card.value


def test_sniffed_by_content_and_named_by_extension(tmp_path):
    from weightviz import formats
    p = tmp_path / "weights.bin"
    p.write_bytes((FIX / "smallcnn.onnx").read_bytes())
    assert formats.detect(str(p)) == "onnx" and len(wv.open(p)) == 8
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not an onnx file at all, just some words")
    with pytest.raises(CorruptFileError, match="not a valid ONNX file"):
        wv.open(junk)
    for other in ("safetensors", "gguf", "numpy"):
        with pytest.raises(WeightvizError):
            wv.open(FIX / "smallcnn.onnx", format=other)
    from weightviz.formats import sniff
    assert not sniff.is_onnx(b"\x08\x09" + b"\x00" * 30, 32)          # ir_version, then no graph
    assert not sniff.is_onnx(b"\x08\x09\x3a\xff\xff\xff\x7f", 7)       # graph longer than the file
    saved_model = b"\x08\x01\x12\xa0\x9c\x01" + b"\x0a" * 4090         # TF SavedModel: version, meta_graphs
    assert not sniff.is_onnx(saved_model, 20_000)
    assert all(sniff.is_onnx(sniff.read_head(str(FIX / n)), (FIX / n).stat().st_size) for n in ALL)


def test_listing_reads_structure_not_data(tmp_path, monkeypatch):
    """64 MiB of raw_data lists in the time of its protobuf structure: the walk reads a few
    windows around the tensor headers, never the data (nor maps it)."""
    from weightviz.formats import _onnx_proto
    from tests.hostile.cases_onnx import graph, model, tensor
    big = b"\0" * (16 << 20)
    p = tmp_path / "big.onnx"
    p.write_bytes(model(graph([tensor(f"w{i}", (4 << 20,), raw=big) for i in range(4)])))
    seen, read = [], _onnx_proto.Buf.read
    monkeypatch.setattr(_onnx_proto.Buf, "read", lambda self, a, b: seen.append(b - a) or read(self, a, b))
    t = time.perf_counter()
    ck = wv.open(p)
    assert time.perf_counter() - t < 0.2 and len(ck) == 4 and ck.nbytes == 64 << 20
    assert sum(seen) < 4096 and max(seen) <= 10
    np.testing.assert_array_equal(ck["w3"].raw()[-3:], np.zeros(3, np.float32))


def test_listing_imports_no_torch_and_no_onnx():
    code = ("import sys, weightviz as wv\n"
            f"c = wv.open({str(FIX / 'typed.onnx')!r})\n"
            "repr(c); [e.numpy() for n, e in c.items() if e.dtype not in ('int4', 'float8_e4m3fn')]\n"
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- hostile, in process

@pytest.mark.parametrize("case", [c for c in cases_onnx.CASES if not c.heavy], ids=lambda c: c.name)
def test_hostile_onnx_opens_or_refuses_at_once(case, tmp_path):
    open_at_once(case, tmp_path)


def test_constant_tensors_are_not_paired_by_value(tmp_path):
    """A zero bias under an exporter name equals every zero tensor of the model: no pairing."""
    import torch
    from onnx import helper, numpy_helper, save
    lin = torch.nn.Linear(4, 3)
    torch.nn.init.zeros_(lin.bias)
    w = numpy_helper.from_array(lin.weight.detach().numpy(), "onnx::Gemm_1")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "onnx::Gemm_2")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "onnx::Gemm_1", "onnx::Gemm_2"], ["y"], transB=1)],
                          "g", [helper.make_tensor_value_info("x", 1, [1, 4])],
                          [helper.make_tensor_value_info("y", 1, [1, 3])], [w, b])
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    rows = {r.name: r for r in wv.check(lin, tmp_path / "m.onnx").rows}
    assert rows["weight"].ckpt_name == "onnx::Gemm_1"                    # paired by its values
    assert rows["bias"].status == "missing" and rows["onnx::Gemm_2"].status == "unexpected"
