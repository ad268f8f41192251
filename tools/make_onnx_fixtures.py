"""Write tests/fixtures/onnx/: small ONNX files from torch's exporter and from onnx.helper.

Run from the repository root:

    .venv/bin/python tools/make_onnx_fixtures.py

(the two dynamo exports below need ``onnxscript`` importable too: ``pip install onnxscript``,
or run it with a venv that layers onnxscript over .venv's packages).

* ``smallcnn.onnx``    ``weightviz.demo_models.SmallCNN`` (seed 0, eval mode) through
  ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter: conv2 / fc1 / fc2 keep
  their state-dict names, conv1 comes out with bn1 folded in as ``onnx::Conv_*``;
* ``linear3d.onnx``    :class:`Seq3D` (seed 0) exported the same way: a Linear applied to a
  3-D input becomes a MatMul whose weight is stored transposed as ``onnx::MatMul_*``;
* ``convbn_dynamo.onnx`` :class:`ConvBN` (seed 0) through the dynamo exporter
  (``dynamo=True``; written only where ``onnxscript`` is installed): it keeps the name
  ``conv.weight`` for the values with ``bn`` folded in;
* ``detector_dynamic.onnx`` :class:`Detector` (seed 0) through the dynamo exporter with dynamic
  batch/height/width (``dynamic_shapes``; onnxscript needed too): six stride-2 levels whose
  predictions are flattened and concatenated, so torch names the output's anchor dimension
  with a 321-character expression (``((((width - 1)//2)) + 1)*...``), longer than the 256
  bytes weightviz once allowed a ``dim_param``. The exporter's per-node debug
  ``metadata_props`` (stack traces) and the intermediate ``value_info`` shapes are dropped
  with the onnx library to keep the file at ~6 KB; nothing else is touched;
* ``typed.onnx``       onnx.helper initializers in every typed field (``float_data``,
  ``int32_data`` for int8/uint8/int16/uint16/bool/float16/bfloat16/float8, ``int64_data``,
  ``double_data``, ``uint64_data``, complex), one in ``raw_data``, an empty one, an int4
  one (unreadable) and a string one (kept apart);
* ``external.onnx`` + ``external.onnx.data``: ``onnx.save(save_as_external_data=True,
  all_tensors_to_one_file=True, size_threshold=0)``;
* ``constants.onnx``   no initializers: weights in ``Constant`` nodes inside the branches
  of an ``If`` node, one branch holding a nested ``If`` (as real exported models do).

The onnx.helper files are deterministic (rerunning gives the same bytes); the torch
exports depend on the torch version (2.13 here) only through ``producer_version``.
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")


def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- torch exports

def smallcnn():
    import torch
    from weightviz.demo_models import SmallCNN
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():                      # non-trivial batch-norm statistics
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.2, 0.2)
    return model


def seq3d():
    import torch
    from torch import nn

    class Seq3D(nn.Module):
        """A token embedding projected by a Linear on (batch, time, features)."""

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 4)
            self.head = nn.Linear(4, 3, bias=False)

        def forward(self, x):
            return self.head(torch.relu(self.proj(x)))

    torch.manual_seed(0)
    return Seq3D().eval()


def convbn():
    import torch
    from torch import nn

    class ConvBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    model = ConvBN().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.uniform_(-0.5, 0.5)
    return model


def detector():
    import torch
    from torch import nn

    class Detector(nn.Module):
        """A six-level detector: each level's 1x1-conv predictions flattened and concatenated."""

        def __init__(self, levels: int = 6):
            super().__init__()
            self.stem = nn.Conv2d(1, 2, 3, stride=2, padding=1)
            self.down = nn.ModuleList(nn.Conv2d(2, 2, 3, stride=2, padding=1) for _ in range(levels - 1))
            self.head = nn.Conv2d(2, 3, 1)

        def forward(self, x):
            f = torch.relu(self.stem(x))
            outs = [self.head(f).reshape(x.shape[0], 3, -1)]
            for down in self.down:
                f = torch.relu(down(f))
                outs.append(self.head(f).reshape(x.shape[0], 3, -1))
            return torch.cat(outs, 2)

    torch.manual_seed(0)
    return Detector().eval()


def export_dynamic(model, path: str):
    """``model`` through the dynamo exporter with dynamic batch, height and width."""
    import contextlib
    import io
    import logging
    import onnx
    import torch
    from torch.export import Dim
    dims = {0: Dim("batch"), 2: Dim("height", min=32, max=4096), 3: Dim("width", min=32, max=4096)}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, (torch.zeros(1, 1, 64, 64),), dynamo=True, input_names=["x"],
                                 output_names=["y"], dynamic_shapes={"x": dims})
    proto = prog.model_proto
    for node in proto.graph.node:            # debug info only (~1 KB of stack trace a node)
        del node.metadata_props[:]
    del proto.graph.value_info[:]
    onnx.save(proto, path)


def export(model, x, path: str, dynamo: bool = False):
    import contextlib
    import io
    import torch
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, dynamo=dynamo)


# ---------------------------------------------------------------- onnx.helper models

def _model(graph, opset: int = 20):
    from onnx import helper
    m = helper.make_model(graph, producer_name="weightviz-fixtures", producer_version="1",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def typed_initializers() -> list:
    import ml_dtypes
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper
    r = rng()
    f = lambda *s: r.standard_normal(s).astype(np.float32)       # noqa: E731
    out = [
        helper.make_tensor("w.float_data", T.FLOAT, (3, 4), f(3, 4).ravel().tolist()),
        helper.make_tensor("w.int64", T.INT64, (5,), [-3, 0, 7, 2**40, -(2**62)]),
        helper.make_tensor("w.int32", T.INT32, (2, 2), [-1, 2, -(2**31), 2**31 - 1]),
        helper.make_tensor("w.int8", T.INT8, (4,), [-128, -1, 0, 127]),
        helper.make_tensor("w.uint8", T.UINT8, (4,), [0, 1, 128, 255]),
        helper.make_tensor("w.int16", T.INT16, (3,), [-32768, 5, 32767]),
        helper.make_tensor("w.uint16", T.UINT16, (3,), [0, 40000, 65535]),
        helper.make_tensor("w.bool", T.BOOL, (2, 2), [True, False, False, True]),
        helper.make_tensor("w.float16", T.FLOAT16, (2, 3), f(2, 3).astype(np.float16)),
        helper.make_tensor("w.bfloat16", T.BFLOAT16, (4,), f(4).astype(ml_dtypes.bfloat16)),
        helper.make_tensor("w.float8", T.FLOAT8E4M3FN, (4,), [0.5, -2.0, 1.25, 448.0]),
        helper.make_tensor("w.double", T.DOUBLE, (2, 2), [1e-300, -2.5, 3.0, 1e300]),
        helper.make_tensor("w.uint64", T.UINT64, (2,), [0, 2**64 - 1]),
        helper.make_tensor("w.uint32", T.UINT32, (2,), [1, 2**32 - 1]),
        helper.make_tensor("w.complex64", T.COMPLEX64, (2,), [1 + 2j, -3.5j]),
        numpy_helper.from_array(f(2, 5), "w.raw_data"),
        helper.make_tensor("w.empty", T.FLOAT, (0, 3), []),
        helper.make_tensor("w.int4", T.INT4, (4,), [1, -2, 3, -8]),
        helper.make_tensor("w.names", T.STRING, (2,), [b"alpha", b"beta"]),
    ]
    return out


def typed_model():
    from onnx import TensorProto as T
    from onnx import helper
    inits = typed_initializers()
    g = helper.make_graph([helper.make_node("Add", ["x", "w.float_data"], ["y"], name="add")], "typed",
                          [helper.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                          [helper.make_tensor_value_info("y", T.FLOAT, ["batch", 4])], inits)
    return _model(g)


def external_model():
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper
    r = rng()
    w = numpy_helper.from_array(r.standard_normal((4, 6)).astype(np.float32), "fc.weight")
    b = numpy_helper.from_array(r.standard_normal(4).astype(np.float32), "fc.bias")
    h = numpy_helper.from_array(r.standard_normal((4, 4)).astype(np.float16), "head.weight")
    nodes = [helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], transB=1, name="fc"),
             helper.make_node("Cast", ["h"], ["h16"], to=T.FLOAT16),
             helper.make_node("MatMul", ["h16", "head.weight"], ["y"], name="head")]
    g = helper.make_graph(nodes, "external", [helper.make_tensor_value_info("x", T.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", T.FLOAT16, [1, 4])], [w, b, h])
    return _model(g)


def constants_model():
    """Weights only in Constant nodes inside If branches (and a nested If)."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper
    r = rng()

    def const(name, arr):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_value"))

    def branch(tag, nested=None):
        w = r.standard_normal((3, 5)).astype(np.float32)
        b = r.standard_normal(3).astype(np.float32)
        nodes = [const(f"If_0_{tag}__encoder.0.weight", w), const(f"If_0_{tag}__encoder.0.bias", b),
                 const(f"If_0_{tag}__shape", np.array([1, 3], np.int64)),
                 helper.make_node("Constant", [], [f"If_0_{tag}__alpha"], value_float=0.5)]
        if nested is not None:
            nodes.append(nested)
        nodes.append(helper.make_node("Gemm", ["x", f"If_0_{tag}__encoder.0.weight", f"If_0_{tag}__encoder.0.bias"],
                                      [f"{tag}_out"], transB=1))
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"{tag}_out", T.FLOAT, [1, 3])])

    inner = helper.make_node("If", ["cond"], ["inner_out"], name="If_1",
                             then_branch=branch("inner_then"), else_branch=branch("inner_else"))
    top = helper.make_node("If", ["cond"], ["y"], name="If_0",
                           then_branch=branch("then_branch"), else_branch=branch("else_branch", inner))
    g = helper.make_graph([top], "constants",
                          [helper.make_tensor_value_info("x", T.FLOAT, [1, 5]),
                           helper.make_tensor_value_info("cond", T.BOOL, [])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [1, 3])])
    return _model(g)


def write_helper_models(out: str):
    import onnx
    onnx.save(typed_model(), os.path.join(out, "typed.onnx"))
    onnx.save(constants_model(), os.path.join(out, "constants.onnx"))
    data = os.path.join(out, "external.onnx.data")
    if os.path.exists(data):             # onnx.save appends to an existing data file
        os.remove(data)
    onnx.save(external_model(), os.path.join(out, "external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.onnx.data", size_threshold=0)


def main(argv) -> int:
    import torch
    out = argv[0] if argv else OUT
    os.makedirs(out, exist_ok=True)
    export(smallcnn(), torch.zeros(1, 1, 16, 16), os.path.join(out, "smallcnn.onnx"))
    export(seq3d(), torch.zeros(1, 2, 8), os.path.join(out, "linear3d.onnx"))
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError:
        print("onnxscript is not installed: convbn_dynamo.onnx and detector_dynamic.onnx not written")
    else:
        path = os.path.join(out, "convbn_dynamo.onnx")
        export(convbn(), torch.zeros(1, 1, 5, 5), path, dynamo=True)
        if os.path.exists(path + ".data") and not os.path.getsize(path + ".data"):
            os.remove(path + ".data")    # the exporter leaves an empty, unreferenced data file
        export_dynamic(detector(), os.path.join(out, "detector_dynamic.onnx"))
    write_helper_models(out)
    for name in sorted(os.listdir(out)):
        print(f"{name:24s} {os.path.getsize(os.path.join(out, name)):7,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
