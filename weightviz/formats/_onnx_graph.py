"""The messages of an ONNX ``ModelProto``, walked without trusting them (:mod:`._onnx_proto`).

Only the fields a listing needs are decoded; everything else (``raw_data`` above all) is
stepped over by its length, so listing a 1 GB model reads its structure, not its bytes.
Every varint is at most 10 bytes and below 2**64, every length must fit inside its
enclosing message, groups (wire types 3/4) and unknown wire types are refused, subgraphs
nest at most ``ONNX_MAX_GRAPH_DEPTH`` deep and node, tensor, dimension and name counts
are capped by :mod:`.limits`. Field numbers are onnx.proto's (onnx 1.23).

A tensor is described by a :class:`Tensor`: its dims and data type, and *where* its data
sits (``raw_data`` span, typed-field spans, external key/values): :mod:`.onnx_file`
turns that into lazily read entries.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ._onnx_proto import LEN, STRING_DATA, TYPED, VARINT, Buf, packed_varints, signed, typed_count
from .limits import ONNX_MAX_DIM_PARAM as MAX_DIM_PARAM
from .limits import ONNX_MAX_DIMS as MAX_DIMS
from .limits import ONNX_MAX_GRAPH_DEPTH as MAX_DEPTH
from .limits import ONNX_MAX_NODES as MAX_NODES
from .limits import ONNX_MAX_TENSORS as MAX_TENSORS


@dataclass
class Tensor:
    """One TensorProto, as found: nothing of its data is read."""
    name: str = ""
    dims: tuple = ()
    data_type: int = 0
    span: tuple = (0, 0)                 # the TensorProto message's own bytes
    raw: tuple | None = None             # (start, end) of raw_data
    typed: dict = field(default_factory=dict)     # field number -> element count
    strings: int = 0                     # string_data entries
    external: list = field(default_factory=list)  # [(key, value)]
    data_location: int = 0               # 1 = EXTERNAL
    segment: bool = False
    source: str = "initializer"          # or "constant"
    graph: str = ""                      # '' for the main graph, else the subgraph's path


@dataclass
class Value:
    name: str
    kind: str                            # 'tensor', 'sequence', 'map', ...
    elem_type: int = 0
    shape: tuple | None = None           # ints and dim_param strings, None if unknown


@dataclass
class Model:
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    opsets: list = field(default_factory=list)    # [(domain, version)]
    graph_name: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    tensors: list = field(default_factory=list)   # Tensor, file order, subgraphs after their node
    small_constants: int = 0
    ops: Counter = field(default_factory=Counter)
    nodes: int = 0
    subgraphs: int = 0
    sparse: int = 0                               # sparse initializers / Constant sparse_value
    has_graph: bool = False


# ---------------------------------------------------------------- messages

def parse_model(buf: Buf) -> Model:
    m = Model()
    graph = None
    for num, wire, v in buf.fields(0, buf.size):
        if num == 1:
            buf.need(wire, VARINT, "ir_version")
            m.ir_version = signed(v)
        elif num in (2, 3, 4) and wire == LEN:
            s = buf.text(v, "a producer/domain string", 4096)
            setattr(m, {2: "producer_name", 3: "producer_version", 4: "domain"}[num], s)
        elif num == 5 and wire == VARINT:
            m.model_version = signed(v)
        elif num == 7:
            buf.need(wire, LEN, "the graph")
            graph = v
        elif num == 8:
            buf.need(wire, LEN, "an opset_import")
            m.opsets.append(_opset(buf, v))
    if graph is not None:
        m.has_graph = True
        _Walk(buf, m).graph(graph, 0, "")
    return m


def _opset(buf: Buf, span) -> tuple[str, int]:
    domain, version = "", 0
    for num, wire, v in buf.fields(*span):
        if num == 1 and wire == LEN:
            domain = buf.text(v, "an opset domain", 4096)
        elif num == 2 and wire == VARINT:
            version = signed(v)
    return domain, version


class _Walk:
    def __init__(self, buf: Buf, model: Model):
        self.buf, self.m = buf, model

    def graph(self, span, depth: int, where: str):
        buf, m = self.buf, self.m
        if depth > MAX_DEPTH:
            raise buf.bad(f"subgraphs nest more than {MAX_DEPTH} deep", got="a nesting bomb")
        for num, wire, v in buf.fields(*span):
            if wire != LEN:
                continue
            if num == 1:
                self.node(v, depth, where)
            elif num == 5:
                self.add(self.tensor(v, "an initializer", where))
            elif num == 15:
                m.sparse += 1
            elif depth == 0 and num == 2:
                m.graph_name = buf.text(v, "the graph name")
            elif depth == 0 and num in (11, 12):
                (m.inputs if num == 11 else m.outputs).append(self.value(v))

    def add(self, t: Tensor):
        if len(self.m.tensors) >= MAX_TENSORS:
            raise self.buf.bad(f"more than {MAX_TENSORS:,} tensors")
        self.m.tensors.append(t)

    def node(self, span, depth: int, where: str):
        buf, m = self.buf, self.m
        m.nodes += 1
        if m.nodes > MAX_NODES:
            raise buf.bad(f"more than {MAX_NODES:,} nodes")
        op, domain, first_out, name, attrs = "", "", None, "", []
        for num, wire, v in buf.fields(*span):
            if wire != LEN:
                continue
            if num == 2 and first_out is None:
                first_out = buf.text(v, "a node output name")
            elif num == 3:
                name = buf.text(v, "a node name")
            elif num == 4:
                op = buf.text(v, "an op_type", 4096)
            elif num == 7:
                domain = buf.text(v, "a node domain", 4096)
            elif num == 5:
                attrs.append(v)
        m.ops[op if domain in ("", "ai.onnx") else f"{domain}::{op}"] += 1
        constant = op == "Constant" and domain in ("", "ai.onnx")
        for a in attrs:
            self.attribute(a, depth, where, name or first_out or op, first_out if constant else None)

    def attribute(self, span, depth: int, where: str, owner: str, const_out: str | None):
        buf = self.buf
        aname, tensor, graphs = "", None, []
        for num, wire, v in buf.fields(*span):
            if wire != LEN:
                continue
            if num == 1:
                aname = buf.text(v, "an attribute name")
            elif num == 5:
                tensor = v
            elif num in (6, 11):
                graphs.append(v)
            elif num == 22 and const_out is not None:
                self.m.sparse += 1
        if tensor is not None and const_out is not None and aname == "value":
            t = self.tensor(tensor, f"the value of Constant {const_out!r}", where)
            t.name, t.source = const_out or t.name, "constant"
            if weight_sized(t):
                self.add(t)
            else:
                self.m.small_constants += 1
        for i, g in enumerate(graphs):
            self.m.subgraphs += 1
            sub = f"{owner}.{aname}" + (f"[{i}]" if len(graphs) > 1 else "")
            self.graph(g, depth + 1, f"{where}/{sub}" if where else sub)

    def tensor(self, span, what: str, where: str) -> Tensor:
        buf = self.buf
        t = Tensor(span=span, graph=where)
        dims = []
        for num, wire, v in buf.fields(*span):
            if num == 1:
                if wire == VARINT:
                    dims.append(signed(v))
                else:
                    buf.need(wire, LEN, f"the dims of {what}")
                    dims.extend(signed(int(x)) for x in packed_varints(buf, v, what))
                if len(dims) > MAX_DIMS:
                    raise buf.bad(f"{what} has more than {MAX_DIMS} dimensions")
            elif num == 2:
                buf.need(wire, VARINT, f"the data_type of {what}")
                t.data_type = signed(v)
            elif num == 8:
                buf.need(wire, LEN, f"the name of {what}")
                t.name = buf.text(v, f"the name of {what}")
            elif num == 9:
                buf.need(wire, LEN, f"the raw_data of {what}")
                t.raw = v
            elif num in TYPED:
                fname, elem, width = TYPED[num]
                t.typed[num] = t.typed.get(num, 0) + typed_count(buf, wire, v, elem, width, what, fname)
            elif num == STRING_DATA:
                t.strings += 1
            elif num == 13:
                buf.need(wire, LEN, f"an external_data entry of {what}")
                t.external.append(self.entry(v, what))
            elif num == 14:
                buf.need(wire, VARINT, f"the data_location of {what}")
                t.data_location = signed(v)
            elif num == 3:
                t.segment = True
        if any(d < 0 for d in dims):
            raise buf.bad(f"{what} ({t.name!r}) has a negative dimension", got=f"dims {dims}")
        t.dims = tuple(dims)
        return t

    def entry(self, span, what: str) -> tuple[str, str]:
        key = value = ""
        for num, wire, v in self.buf.fields(*span):
            if num == 1 and wire == LEN:
                key = self.buf.text(v, f"an external_data key of {what}", 4096)
            elif num == 2 and wire == LEN:
                value = self.buf.text(v, f"an external_data value of {what}", 4096)
        return key, value

    def value(self, span) -> Value:
        buf = self.buf
        name, kind, elem, shape = "", "unknown", 0, None
        for num, wire, v in buf.fields(*span):
            if num == 1 and wire == LEN:
                name = buf.text(v, "a graph input/output name")
            elif num == 2 and wire == LEN:
                for tn, tw, tv in buf.fields(*v):
                    if tw != LEN:
                        continue
                    kind = {1: "tensor", 4: "sequence", 5: "map", 8: "sparse tensor", 9: "optional"}.get(tn, kind)
                    if tn == 1:
                        elem, shape = self.tensor_type(tv)
        return Value(name, kind, elem, shape)

    def tensor_type(self, span):
        buf, elem, shape = self.buf, 0, None
        for num, wire, v in buf.fields(*span):
            if num == 1 and wire == VARINT:
                elem = signed(v)
            elif num == 2 and wire == LEN:
                shape = []
                for dn, dw, dv in buf.fields(*v):
                    if dn != 1 or dw != LEN:
                        continue
                    if len(shape) >= MAX_DIMS:
                        raise buf.bad(f"a graph input/output has more than {MAX_DIMS} dimensions")
                    d = "?"
                    for n2, w2, v2 in buf.fields(*dv):
                        if n2 == 1 and w2 == VARINT:
                            d = signed(v2)
                        elif n2 == 2 and w2 == LEN:
                            d = buf.text(v2, "a dim_param", MAX_DIM_PARAM)
                    shape.append(d)
                shape = tuple(shape)
        return elem, shape


def weight_sized(t: Tensor) -> bool:
    """Whether a Constant node's tensor is listed: 2 or more dimensions, or a 1-D
    floating-point vector of 2 or more values (a bias), or 1,024 values or more. Shape
    vectors, axes, scalars and other small helpers are only counted."""
    n = 1
    for d in t.dims:
        n *= d
    return len(t.dims) >= 2 or n >= 1024 or (len(t.dims) == 1 and n >= 2 and t.data_type in FLOAT_CODES)


FLOAT_CODES = {1, 10, 11, 16, 17, 18, 19, 20, 24}


