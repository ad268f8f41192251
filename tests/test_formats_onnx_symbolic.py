"""ONNX symbolic dimensions: a detector exported by torch's dynamo exporter with dynamic
height/width names its output's anchor dimension with a 321-character expression. The file
opens (``onnx.load`` and ``onnx.checker`` accept it too), its initializers are the onnx
package's, the expression is kept whole in the metadata and shortened only in the summary;
a ``dim_param`` over 64 KiB is still refused as corrupt.

Fixture: tests/fixtures/onnx/detector_dynamic.onnx, written by tools/make_onnx_fixtures.py
(``detector()`` / ``export_dynamic()``).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import weightviz as wv
from weightviz.errors import CorruptFileError

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from tests.hostile.cases_onnx import graph, model, output, tensor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "tests" / "fixtures" / "onnx" / "detector_dynamic.onnx"


def _long_dims(proto) -> list[str]:
    return [d.dim_param for v in list(proto.graph.input) + list(proto.graph.output)
            for d in v.type.tensor_type.shape.dim if len(d.dim_param) > 256]


def test_torch_export_with_a_long_symbolic_dim_opens_with_onnx_s_initializers():
    proto = onnx.load(str(PATH))
    onnx.checker.check_model(proto, full_check=True)
    (expr,) = _long_dims(proto)                        # the anchor count of the output 'y'
    assert 300 < len(expr) < 400 and expr.startswith("((((width - 1)//2)) + 1)*")
    ck = wv.open(PATH)
    assert ck.format == "onnx"
    ref = {t.name: t for t in proto.graph.initializer}
    assert list(ck) == list(ref)
    for name, t in ref.items():
        want = numpy_helper.to_array(t)
        e = ck[name]
        assert e.shape == tuple(t.dims) == want.shape, name
        assert e.dtype == want.dtype.name, name
        np.testing.assert_allclose(e.numpy(), want, rtol=1e-6, atol=1e-7, err_msg=name)
    assert "stem.weight" in ck and ck["head.weight"].shape == (3, 2, 1, 1)
    # kept whole in the metadata, shortened for display
    assert ck.metadata["outputs"] == [("y", "float32", ("batch", 3, expr))]
    assert ck.metadata["inputs"] == [("x", "float32", ("batch", 1, "height", "width"))]
    text = repr(ck)
    line = re.search(r"\n  outputs +(.*)\n", text).group(1)
    assert line == f"y float32 (batch, 3, {expr[:59]}…)"
    assert expr not in text and expr not in ck._repr_html_()
    assert re.search(r"\n  inputs +x float32 \(batch, 1, height, width\)\n", text)


def _one_output(tmp_path: Path, dim: str) -> Path:
    p = tmp_path / "model.onnx"
    p.write_bytes(model(graph([tensor(raw=b"\0" * 16)]) + output("y", ["batch", dim])))
    return p


def test_dim_param_bound_is_64_kib(tmp_path):
    ok = wv.open(_one_output(tmp_path, "n" * (64 << 10)))
    assert len(ok) == 1 and len(ok.metadata["outputs"][0][2][1]) == 64 << 10
    assert len(repr(ok)) < 2000                          # shown shortened
    with pytest.raises(CorruptFileError, match=r"a dim_param is 65,537 bytes long \(at most 65,536\)"):
        wv.open(_one_output(tmp_path, "n" * ((64 << 10) + 1)))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model(graph([tensor(raw=b"\0" * 16)]) + output("y", [b"\xff\xfe"])))
    with pytest.raises(CorruptFileError, match=r"a dim_param is not UTF-8"):
        wv.open(bad)


def test_fixture_comes_from_its_script(tmp_path):
    """Rewritten by torch's dynamo exporter: the same bytes but for producer_version."""
    pytest.importorskip("onnxscript")
    spec = importlib.util.spec_from_file_location("make_onnx_fixtures", ROOT / "tools" / "make_onnx_fixtures.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    mk.export_dynamic(mk.detector(), str(tmp_path / "d.onnx"))
    a, b = onnx.load(str(tmp_path / "d.onnx")), onnx.load(str(PATH))
    a.producer_version = b.producer_version = ""
    assert a.SerializeToString() == b.SerializeToString()
    assert PATH.stat().st_size < 8_000
