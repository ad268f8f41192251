"""ONNX models (``.onnx``): weights listed from the protobuf structure, data read on request.

**What is listed.** Every ``graph.initializer`` (subgraph initializers too), and the tensors
of ``Constant`` nodes that look like weights, in the main graph and inside subgraphs
(``If`` branches, ``Loop``/``Scan`` bodies: node attributes of type GRAPH/GRAPHS, nested
at most ``ONNX_MAX_GRAPH_DEPTH`` deep): a Constant is listed, under its output name, when
its tensor has 2 or more dimensions, or is a 1-D floating-point vector of 2 or more values
(a bias), or has 1,024 values or more (:func:`._onnx_graph.weight_sized`); shape vectors,
axes and scalars are only counted. The summary says how many tensors came from Constant
nodes. A name seen twice (a subgraph reusing one) gets ``#2``, ``#3``.

**Data.** ``raw_data`` is memory-mapped in place (a :class:`DataLocation`, like
safetensors); typed fields (``float_data``, ``int32_data``, ``int64_data``,
``double_data``, ``uint64_data``) are decoded when asked for. Dtypes get weightviz's
canonical names; ``int4``/``uint4``/``int2``/``uint2``/``float4e2m1``/``float6*`` are
listed and named in an error on read; string tensors are kept apart (``ckpt.extras``).

**External data** (``data_location == EXTERNAL``): only the keys ``location``, ``offset``,
``length`` and ``checksum`` are accepted (others: CVE-2026-34445); the location must be a
relative path inside the model's folder, with no ``..`` and no symbolic link leading out
(CVE-2022-25882, CVE-2024-27318, CVE-2026-27489), and a regular file; ``offset + length``
is checked against its size when listing (and no two tensors may share bytes), and the
bytes are memory-mapped when read. A data file that is not there is listed; reading the
tensor names the file expected. A ``checksum`` is accepted, not verified.

**Safety.** The protobuf is walked by :mod:`._onnx_graph` through a small read window of
:mod:`._onnx_proto` (bounded; listing reads the structure, never the tensor bytes); no
``onnx.load``, no graph execution, no custom-op library: the ``onnx`` package is not
needed to list or read. ``weightviz.check`` pairs exporter-renamed or transposed weights
and names folded BatchNorms (:mod:`weightviz.matching.onnx_fold`).
"""
from __future__ import annotations

import os
import re
from collections import Counter
from math import prod

import numpy as np

from .. import dtypes
from ..checkpoint import Checkpoint, DataLocation, TensorEntry, _empty
from ..errors import CorruptFileError, UnsafeCheckpointError, WeightvizError, capped, message
from . import _onnx_graph as _graph
from . import _onnx_proto as _proto
from . import sniff as _sniff
from . import source as _source
from .limits import ONNX_MAX_EXTERNAL_FILES as MAX_EXTERNAL_FILES

# TensorProto.DataType -> (weightviz dtype, readable); unreadable ones keep ONNX's name
TYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
         8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
         14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8_e4m3fn",
         18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz", 21: "uint4", 22: "int4",
         23: "float4e2m1", 24: "float8_e8m0fnu", 25: "uint2", 26: "int2", 27: "float6e2m3",
         28: "float6e3m2"}
UNREADABLE = {"uint4", "int4", "float4e2m1", "uint2", "int2", "float6e2m3", "float6e3m2"}
# the typed field each dtype is stored in (onnx.proto's comments)
FIELD = {"float32": 4, "complex64": 4, "int64": 7, "float64": 10, "complex128": 10,
         "uint32": 11, "uint64": 11}
EXTERNAL_KEYS = ("location", "offset", "length", "checksum")


def sniff(head: bytes, path) -> bool:
    return _sniff.is_onnx(head, _source.size(path))


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    buf = _proto.open_buf(path)
    try:
        model = _graph.parse_model(buf)
        if not model.has_graph or model.ir_version <= 0:
            raise buf.bad("it has no graph" if model.ir_version > 0 else "it has no ir_version",
                          got=f"ir_version {model.ir_version}, {len(model.opsets)} opset imports, "
                              f"{'a' if model.has_graph else 'no'} graph")
        r = _Reader(path, buf)
        for t in model.tensors:
            r.add(t)
        r.no_overlaps()
    finally:
        buf.close()
    return Checkpoint(r.entries, "onnx", path=path, extras=r.extras,
                      metadata=_metadata(model, r))


class _Reader:
    def __init__(self, path: str, buf):
        self.path, self.buf, self.name = path, buf, os.path.basename(path)
        self.folder = os.path.dirname(os.path.abspath(path))
        self.entries, self.extras, self.kept = {}, {}, {}
        self.files: dict[str, bool] = {}          # external file -> exists
        self.sources = Counter()
        self.constants: list[str] = []            # entry names that came from Constant nodes
        self.spans: list[tuple] = []               # (external file, start, end, name)

    def add(self, t):
        name = t.name or f"initializer_{len(self.entries)}"
        if name in self.entries or name in self.extras:
            if t.source == "initializer" and not t.graph:
                raise self.buf.bad(f"the initializer name {name!r} appears twice in the graph")
            k = 2
            while f"{name}#{k}" in self.entries:
                k += 1
            name = f"{name}#{k}"
        what = f"tensor {name!r}"
        if t.data_type not in TYPES:
            raise self.buf.bad(f"{what} has an unknown data_type {t.data_type}",
                               got=f"data_type {t.data_type}; known: 1-28")
        dtype = TYPES[t.data_type]
        if t.data_location not in (0, 1):
            raise self.buf.bad(f"{what} has data_location {t.data_location}", got="0 DEFAULT or 1 EXTERNAL")
        if t.external and t.data_location != 1:
            raise self.buf.bad(f"{what} has external_data keys but data_location is not EXTERNAL")
        present = [s for s, on in (("raw_data", t.raw is not None), ("typed fields", bool(t.typed)),
                                   ("string_data", bool(t.strings)), ("external data", t.data_location == 1))
                   if on]
        if len(present) > 1 or len(t.typed) > 1:
            raise self.buf.bad(f"{what} holds its data twice: {', '.join(present)}"
                               + (f" (fields {sorted(t.typed)})" if len(t.typed) > 1 else ""))
        self.sources[t.source] += 1
        if dtype == "string":
            self.extras[name] = f"a string tensor of {t.strings:,} values"
            self.kept[name] = "string tensor"
            return
        self.entries[name] = self.entry(name, t, dtype)
        if t.source == "constant":
            self.constants.append(name)

    def entry(self, name: str, t, dtype: str) -> TensorEntry:
        shape, numel, what = t.dims, prod(t.dims), f"tensor {name!r}"
        if t.segment:
            return TensorEntry(name, shape, dtype, loader=_refuse(self.name, name, "a segmented TensorProto "
                               "(the segment field), which weightviz does not read"))
        if dtype in UNREADABLE:
            return TensorEntry(name, shape, dtype, loader=_refuse(
                self.name, name, f"{dtype}, packed several values to a byte, which weightviz cannot read yet"))
        nbytes = numel * dtypes.itemsize(dtype)
        view = dtypes.numpy_view_dtype(dtype)
        if t.data_location == 1:
            return self.external(name, t, dtype, nbytes, view)
        if t.raw is not None:
            a, b = t.raw
            if b - a != nbytes:
                raise self.buf.bad(f"{what} declares {numel:,} values of {dtype} ({nbytes:,} bytes) but its "
                                   f"raw_data holds {b - a:,} bytes", got=f"dims {list(shape)}")
            return TensorEntry(name, shape, dtype, location=DataLocation(self.path, a, view))
        if t.typed:
            num, count = next(iter(t.typed.items()))
            want = FIELD.get(dtype, 5)
            if num != want:
                raise self.buf.bad(f"{what} is {dtype} but holds its values in {_proto.TYPED[num][0]}",
                                   got=f"expected {_proto.TYPED[want][0]}")
            per = 2 if dtypes.is_complex(dtype) else 1
            if count != numel * per:
                raise self.buf.bad(f"{what} declares {numel:,} values of {dtype} but its "
                                   f"{_proto.TYPED[num][0]} holds {count:,}", got=f"dims {list(shape)}")
            return TensorEntry(name, shape, dtype, loader=lambda: _typed(self.path, t, dtype, name))
        if numel:
            raise self.buf.bad(f"{what} declares {numel:,} values but holds no data",
                               got=f"dims {list(shape)}, no raw_data, typed field or external data")
        return TensorEntry(name, shape, dtype, loader=lambda: _empty(name, shape, view))

    def external(self, name: str, t, dtype: str, nbytes: int, view) -> TensorEntry:
        keys: dict[str, str] = {}
        for k, v in t.external:
            if k not in EXTERNAL_KEYS:
                raise UnsafeCheckpointError(message(
                    f"{self.name}: tensor {name!r} has an unknown external_data key {k!r}",
                    expected="only " + ", ".join(EXTERNAL_KEYS),
                    fix="re-save the model with onnx.save(..., save_as_external_data=True); crafted keys "
                        "overwrote onnx's own ExternalDataInfo attributes (CVE-2026-34445)",
                    got=f"keys {capped([repr(k) for k, _ in t.external])}"), needs=[k])
            if k in keys:
                raise self.buf.bad(f"tensor {name!r} repeats the external_data key {k!r}")
            keys[k] = v
        loc = keys.get("location", "")
        offset, length = _number(self.buf, name, keys, "offset", 0), _number(self.buf, name, keys, "length", None)
        if length is not None and length != nbytes:
            raise self.buf.bad(f"tensor {name!r} declares {nbytes:,} bytes of {dtype} but its external "
                               f"length is {length:,}", got=f"dims {list(t.dims)}")
        data = self.resolve(name, loc)
        if data not in self.files and len(self.files) >= MAX_EXTERNAL_FILES:
            raise self.buf.bad(f"the model names more than {MAX_EXTERNAL_FILES:,} external data files")
        self.files[data] = self.files[data] if data in self.files else _source.exists(data)
        if not self.files[data]:
            return TensorEntry(name, t.dims, dtype, loader=_missing(self.name, name, loc))
        if not _source.is_remote(data) and not os.path.isfile(data):
            raise UnsafeCheckpointError(message(
                f"{self.name}: the external data of tensor {name!r} is not a regular file",
                expected="a plain data file next to the model", fix="replace it with the real data file",
                got=f"location {loc!r}"), needs=["external data"])
        size = _source.size(data)
        if offset + nbytes > size:
            raise self.buf.bad(f"tensor {name!r} ({nbytes:,} bytes at offset {offset:,}) ends past the end "
                               f"of its {size:,}-byte external data file {loc!r}",
                               got="a truncated data file or a lying offset/length")
        if nbytes:
            self.spans.append((data, offset, offset + nbytes, name))
        return TensorEntry(name, t.dims, dtype, location=DataLocation(data, offset, view))

    def no_overlaps(self):
        """External tensors may not share bytes (one 1 GB region claimed by 10,000 tensors
        would make a 10 TB checkpoint of one file)."""
        spans = sorted(self.spans)
        for (f0, _a, e0, n0), (f1, b1, _e1, n1) in zip(spans, spans[1:]):
            if f0 == f1 and b1 < e0:
                raise self.buf.bad(f"tensors {n0!r} and {n1!r} overlap in their external data file "
                                   f"(bytes {b1:,}-{e0:,})", got="overlapping offset/length")

    def resolve(self, name: str, loc: str) -> str:
        """The data file's path, proven inside the model's folder (links resolved)."""
        if _source.is_remote(self.path):    # a plain name beside the model, same host and revision
            return _source.sibling(self.path, loc, what="external data file")
        parts = re.split(r"[\\/]", loc)
        why = ("it is empty" if not loc.strip() else "it is an absolute path" if
               os.path.isabs(loc) or loc[:1] in "/\\" or re.match(r"^[A-Za-z]:", loc) else
               "it goes up with '..'" if ".." in parts else "it holds a NUL byte" if "\0" in loc else "")
        if not why:
            full = os.path.join(self.folder, *[p for p in parts if p not in ("", ".")])
            real, home = os.path.realpath(full), os.path.realpath(self.folder)
            if os.path.commonpath([real, home]) == home and real != home:
                return real
            why = "a symbolic link leads out of the model's folder"
        raise UnsafeCheckpointError(message(
            f"{self.name}: tensor {name!r} points its external data outside the model's folder: {why}",
            expected="a relative path to a file inside the folder holding the .onnx file",
            fix="keep the .onnx file and its data file together and re-save with onnx.save(..., "
                "location='model.onnx.data'); onnx itself refuses such paths (CVE-2022-25882, "
                "CVE-2024-27318, CVE-2026-27489)", got=f"location {loc!r}"), needs=["outside file"])


def _number(buf, name: str, keys: dict, key: str, default):
    if key not in keys:
        return default
    v = keys[key].strip()
    if not v.isdigit() or len(v) > 20:
        raise buf.bad(f"tensor {name!r} has a non-numeric external_data {key}", got=repr(keys[key])[:60])
    return int(v)


def _refuse(file: str, name: str, why: str):
    def load():
        raise WeightvizError(message(
            f"tensor {name!r} in {file} is stored as {why}",
            expected="float, integer, bool, float8 or complex data",
            fix="its name, shape and dtype are listed; to read its values convert the model with the "
                "onnx package (onnx.numpy_helper.to_array) or re-export it without packed sub-byte types",
            got=why.split(",")[0]))
    return load


def _missing(file: str, name: str, loc: str):
    def load():
        raise CorruptFileError(message(
            f"the external data file {loc!r} of tensor {name!r} in {file} is missing",
            expected=f"{loc} next to {file}",
            fix="copy the data file that came with the model into its folder (onnx.save writes it "
                "beside the .onnx file)", got=f"no file {loc!r}"))
    return load


def _typed(path: str, t, dtype: str, name: str) -> np.ndarray:
    """A tensor held in a typed field, decoded from the file now."""
    buf = _proto.open_buf(path)
    try:
        num, vals = _proto.typed_values(buf, t)
    except ValueError as exc:
        raise buf.bad(f"the typed data of tensor {name!r}: {exc}") from None
    finally:
        buf.close()
    if num == 4:
        arr = vals.view("<c8") if dtype == "complex64" else vals
    elif num == 10:
        arr = vals.view("<c16") if dtype == "complex128" else vals
    elif num == 7:
        arr = vals.view(np.int64)
    elif num == 11:
        arr = vals.astype(np.uint32) if dtype == "uint32" else vals
    else:                                       # int32_data: small ints and 8/16-bit patterns
        ints = vals.view(np.int64)
        if dtype in ("float16", "bfloat16"):
            bits = (ints & 0xFFFF).astype(np.uint16)
            arr = bits.view(np.float16) if dtype == "float16" else bits
        elif dtype.startswith("float8"):
            arr = (ints & 0xFF).astype(np.uint8)
        elif dtype == "bool":
            arr = ints != 0
        else:
            arr = ints.astype(dtype)
    return arr.reshape(t.dims)


# ---------------------------------------------------------------- metadata

def _clean(s: str, width: int = 80) -> str:
    s = "".join(c if c.isprintable() else "?" for c in str(s))
    return s if len(s) <= width else s[:width - 1] + "…"


def _value(v) -> str:
    if v.kind != "tensor":
        return f"{_clean(v.name, 60)} ({v.kind})"
    shape = "?" if v.shape is None else "(" + ", ".join(_clean(d, 60) if isinstance(d, str) else str(d)
                                                          for d in v.shape) + ("," if len(v.shape) == 1 else "") + ")"
    return f"{_clean(v.name, 60)} {TYPES.get(v.elem_type, f'type {v.elem_type}')} {shape}"


def _metadata(m, r: _Reader) -> dict:
    opsets = {(d or "ai.onnx"): v for d, v in m.opsets}
    show = {"ONNX": f"ir_version {m.ir_version}, opsets "
                    + (", ".join(f"{_clean(d, 40)} {v}" for d, v in opsets.items()) or "none")}
    producer = " ".join(x for x in (m.producer_name, m.producer_version) if x)
    if producer:
        show["producer"] = _clean(producer)
    for label, values in (("inputs", m.inputs), ("outputs", m.outputs)):
        if values:
            shown = [_value(v) for v in values[:5]]
            show[label] = "; ".join(shown) + (f"; and {len(values) - 5} more" if len(values) > 5 else "")
    top = m.ops.most_common()
    ops = ", ".join(f"{_clean(op, 40)} {n}" for op, n in top[:8]) + (f", and {len(top) - 8} more op types"
                                                                      if len(top) > 8 else "")
    show["nodes"] = f"{m.nodes:,}" + (f" ({ops})" if ops else "") + (
        f"; {m.subgraphs:,} subgraphs" if m.subgraphs else "")
    init, const = r.sources["initializer"], r.sources["constant"]
    show["tensors"] = (f"{init:,} initializers, {const:,} from Constant nodes"
                       + (f" ({m.small_constants:,} small constants not listed)" if m.small_constants else ""))
    if m.sparse:
        show["sparse tensors"] = f"{m.sparse:,} (not listed)"
    folder = os.path.realpath(r.folder)
    files = {os.path.basename(p) if _source.is_remote(p) else os.path.relpath(p, folder): ok
             for p, ok in r.files.items()}
    if files:
        gone = [f for f, ok in files.items() if not ok]
        show["external data"] = (f"{len(files)} file{'s' if len(files) > 1 else ''}: {capped(sorted(files), 5)}"
                                 + (f" (missing: {capped(sorted(gone), 5)})" if gone else ""))
    odd = Counter(e.dtype for e in r.entries.values() if e.dtype in UNREADABLE)
    if odd:
        show["not readable"] = ", ".join(f"{d} ({n})" for d, n in sorted(odd.items()))
    return {"ir_version": m.ir_version, "producer": producer, "opsets": opsets,
            "model_version": m.model_version, "graph_name": m.graph_name,
            "inputs": [(v.name, TYPES.get(v.elem_type), v.shape) for v in m.inputs],
            "outputs": [(v.name, TYPES.get(v.elem_type), v.shape) for v in m.outputs],
            "op_types": dict(top), "nodes": m.nodes, "subgraphs": m.subgraphs,
            "initializers": init, "constants": const, "small_constants": m.small_constants,
            "external_files": sorted(files), "kept_apart": dict(r.kept), "constant_names": list(r.constants),
            # the data files, counted in the summary's 'file' bytes (render.file_bytes reads 'shards')
            "shards": sorted(f for f, ok in files.items() if ok),
            "display": show}
