"""Hostile and broken ONNX files: varints and lengths that lie, truncations, nesting bombs,
declared dims out of proportion to the data, wrong data types, and external data that
tries to leave the model's folder (``../``, absolute paths, symbolic links, a FIFO),
runs past its data file or carries keys onnx never wrote (CVE-2026-34445). Files are
built field by field with the tiny protobuf encoder below; valid ones come from
tests/fixtures/onnx (tools/make_onnx_fixtures.py)."""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from .catalog import Case, Either, Ok, Refuse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "onnx"
CORRUPT, UNSAFE = "CorruptFileError", "UnsafeCheckpointError"
XSS = "<img src=x onerror=alert(1)>"
FLOAT, FLOAT16, INT64 = 1, 10, 7


def vint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(num: int, wire: int) -> bytes:
    return vint(num << 3 | wire)


def f_int(num: int, v: int) -> bytes:
    return key(num, 0) + vint(v)


def f_bytes(num: int, b) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return key(num, 2) + vint(len(b)) + b


def tensor(name="w", dims=(4,), dtype: int = FLOAT, raw: bytes | None = None, floats=None,
           external=None, extra: bytes = b"") -> bytes:
    """A TensorProto: dims unpacked (as onnx writes them), then type, name, data."""
    body = b"".join(f_int(1, d) for d in dims) + f_int(2, dtype)
    if floats is not None:
        body += f_bytes(4, struct.pack(f"<{len(floats)}f", *floats))
    body += f_bytes(8, name)
    if raw is not None:
        body += f_bytes(9, raw)
    if external is not None:
        body += b"".join(f_bytes(13, f_bytes(1, k) + f_bytes(2, v)) for k, v in external) + f_int(14, 1)
    return body + extra


def graph(inits=(), nodes=(), name="g") -> bytes:
    return b"".join(f_bytes(1, n) for n in nodes) + f_bytes(2, name) + b"".join(f_bytes(5, t) for t in inits)


def model(g: bytes | None, ir: int = 9, opset: int = 20) -> bytes:
    out = f_int(1, ir) + f_bytes(2, "hostile")
    if g is not None:
        out += f_bytes(7, g)
    return out + f_bytes(8, f_bytes(1, "") + f_int(2, opset))


def one(raw_len: int = 16, **kw) -> bytes:
    return model(graph([tensor(raw=b"\0" * raw_len, **kw)]))


def output(name: str, dims) -> bytes:
    """A graph output (ValueInfoProto) of float tensors; a str or bytes dim is a dim_param."""
    shape = b"".join(f_bytes(1, f_bytes(2, d) if isinstance(d, (str, bytes)) else f_int(1, d)) for d in dims)
    return f_bytes(12, f_bytes(1, name) + f_bytes(2, f_bytes(1, f_int(1, FLOAT) + f_bytes(2, shape))))


def if_bomb(depth: int) -> bytes:
    """``depth`` If nodes, each holding the next in its then_branch."""
    node = f_bytes(4, "Relu")
    for _ in range(depth):
        attr = f_bytes(1, "then_branch") + f_int(20, 5) + f_bytes(6, f_bytes(1, node))
        node = f_bytes(4, "If") + f_bytes(5, attr)
    return model(graph(nodes=[node]))


def raw(data: bytes, name: str = "model.onnx"):
    def make(d: Path):
        (d / name).write_bytes(data)
    return make


def external(location: str, *, keys=(), offset="0", length="16", data: bytes | None = b"\0" * 16,
             data_name: str = "model.onnx.data", link: str | None = None, fifo: bool = False):
    """model.onnx whose one tensor (4 float32) lives in an external file."""
    ext = [("location", location), ("offset", offset), ("length", length), *keys]

    def make(d: Path):
        (d / "model.onnx").write_bytes(model(graph([tensor(external=ext)])))
        if data is not None:
            (d / data_name).write_bytes(data)
        if link is not None:
            os.symlink(link, d / location.split("/")[0])
        if fifo:
            os.mkfifo(d / location)
    return make


def overlap(d: Path):
    """1,000 tensors all claiming the same 16 bytes of one data file."""
    ext = [("location", "model.onnx.data"), ("offset", "0"), ("length", "16")]
    (d / "model.onnx").write_bytes(model(graph([tensor(f"w{i}", external=ext) for i in range(1000)])))
    (d / "model.onnx.data").write_bytes(b"\0" * 16)


def fixture(src: str, name: str = "model.onnx", cut: float | None = None):
    def make(d: Path):
        data = (FIXTURES / src).read_bytes()
        (d / name).write_bytes(data if cut is None else data[:int(len(data) * cut)])
        if src == "external.onnx":
            shutil.copy(FIXTURES / "external.onnx.data", d / "external.onnx.data")
    return make


def nasty(d: Path):
    vals = [1.0, float("nan"), float("inf"), -2.0]
    (d / "nasty.onnx").write_bytes(model(graph([
        tensor("nan_inf", (4,), raw=struct.pack("<4f", *vals)),
        tensor("half", (2,), FLOAT16, raw=struct.pack("<2e", 1.0, 2.0)),
        tensor("empty", (0, 8))])))


def xss(d: Path):
    (d / "xss.onnx").write_bytes(model(graph([tensor(XSS, raw=b"\0" * 16), tensor("fc.weight", raw=b"\0" * 16)],
                                             name=XSS)))


BIG = 2 ** 62
LONG_VARINT = key(1, 0) + b"\xff" * 11 + b"\x01"
OVERFLOW = b"\xff" * 9 + b"\x7f"                     # ten bytes, value >= 2**64

CASES: list[Case] = [
    # ---- sizes: dims, lengths and varints out of proportion to the file
    Case("onnx_dims_2e40_cubed", "size", "model.onnx", raw(one(dims=(2 ** 40,) * 3)), Refuse(CORRUPT, r"raw_data holds")),
    Case("onnx_dims_2e62_no_data", "size", "model.onnx", raw(model(graph([tensor(dims=(BIG,))]))),
         Refuse(CORRUPT, r"holds no data")),
    Case("onnx_float_data_fewer_than_dims", "size", "model.onnx",
         raw(model(graph([tensor(dims=(10 ** 9,), floats=[1.0, 2.0])]))), Refuse(CORRUPT, r"holds 2")),
    Case("onnx_negative_dim", "size", "model.onnx", raw(one(dims=(-4,))), Refuse(CORRUPT, r"negative")),
    Case("onnx_40_dims", "size", "model.onnx", raw(one(dims=(1,) * 40, raw_len=4)), Refuse(CORRUPT, r"dimensions")),
    Case("onnx_graph_length_2e40", "size", "model.onnx", raw(f_int(1, 9) + key(7, 2) + vint(2 ** 40) + b"\0" * 64),
         Refuse(CORRUPT, r"past the end")),
    Case("onnx_raw_data_length_past_tensor", "size", "model.onnx",
         raw(model(graph([f_int(1, 4) + f_int(2, 1) + key(9, 2) + vint(2 ** 30) + b"\0" * 16]))),
         Refuse(CORRUPT, r"past the end")),
    Case("onnx_varint_11_bytes", "size", "model.onnx", raw(f_int(1, 9) + f_bytes(7, LONG_VARINT) + f_bytes(8, b"")),
         Refuse(CORRUPT, r"longer than 10 bytes")),
    Case("onnx_varint_overflow", "size", "model.onnx", raw(f_int(1, 9) + f_bytes(7, key(1, 0) + OVERFLOW)),
         Refuse(CORRUPT, r"overflows 64 bits")),
    Case("onnx_if_nested_100_deep", "size", "model.onnx", raw(if_bomb(100)), Refuse(CORRUPT, r"nest more than")),
    Case("onnx_if_nested_20_deep", "size", "model.onnx", raw(if_bomb(20)), Ok(count=0)),
    # a symbolic dim: torch writes ~330-byte expressions (tools/make_onnx_fixtures.py); 64 KiB is the bound
    Case("onnx_dim_param_64k_plus_1", "size", "model.onnx",
         raw(model(graph([tensor(raw=b"\0" * 16)]) + output("y", ["b", "n" * (64 * 1024 + 1)]))),
         Refuse(CORRUPT, r"a dim_param is 65,537 bytes long \(at most 65,536\)")),
    Case("onnx_dim_param_64k", "size", "model.onnx",
         raw(model(graph([tensor(raw=b"\0" * 16)]) + output("y", ["b", "n" * (64 * 1024)]))), Ok(count=1)),
    # ---- outside: external data leaving the model's folder, lying offsets, crafted keys
    Case("onnx_external_dotdot", "outside", "model.onnx", external("../model.onnx.data"), Refuse(UNSAFE, r"outside")),
    Case("onnx_external_dotdot_inner", "outside", "model.onnx", external("sub/../../x.data"), Refuse(UNSAFE, r"outside")),
    Case("onnx_external_absolute", "outside", "model.onnx", external("/etc/passwd"), Refuse(UNSAFE, r"absolute")),
    Case("onnx_external_symlink_out", "outside", "model.onnx", external("link.data", link="/etc/passwd"),
         Refuse(UNSAFE, r"link leads out")),
    Case("onnx_external_symlinked_folder", "outside", "model.onnx", external("etc/passwd", link="/etc"),
         Refuse(UNSAFE, r"link leads out")),
    Case("onnx_external_fifo", "outside", "model.onnx", external("pipe.data", data=None, fifo=True),
         Refuse(UNSAFE, r"not a regular file")),
    Case("onnx_external_unknown_key", "outside", "model.onnx",
         external("model.onnx.data", keys=[("basepath", "/etc")]), Refuse(UNSAFE, r"unknown external_data key")),
    Case("onnx_external_offset_past_data", "outside", "model.onnx", external("model.onnx.data", offset=str(2 ** 40)),
         Refuse(CORRUPT, r"past the end")),
    Case("onnx_external_length_lie", "outside", "model.onnx", external("model.onnx.data", length="4096"),
         Refuse(CORRUPT, r"external length")),
    Case("onnx_external_offset_not_a_number", "outside", "model.onnx", external("model.onnx.data", offset="-1"),
         Refuse(CORRUPT, r"non-numeric")),
    Case("onnx_external_overlap_amplification", "outside", "model.onnx", overlap, Refuse(CORRUPT, r"overlap")),
    Case("onnx_external_missing_file", "outside", "model.onnx", external("model.onnx.data", data=None), Ok(count=1),
         verbs={"stats": Refuse(CORRUPT, r"missing"), "browse": Either("listed, data missing"),
                "check": Either("listed"), "load": Either("listed")}),
    # ---- broken: truncations, wire types, data types, duplicates
    Case("truncated_onnx_10pct", "broken", "model.onnx", fixture("smallcnn.onnx", cut=0.1), Refuse(CORRUPT, r"past the end")),
    Case("truncated_onnx_50pct", "broken", "model.onnx", fixture("smallcnn.onnx", cut=0.5), Refuse(CORRUPT, r"past the end")),
    Case("truncated_onnx_99pct", "broken", "model.onnx", fixture("smallcnn.onnx", cut=0.99),
         Refuse(CORRUPT, r"past the end|varint")),
    Case("onnx_wire_type_group", "broken", "model.onnx", raw(f_int(1, 9) + key(7, 3) + b"\0" * 8), Refuse(CORRUPT, r"wire type 3")),
    Case("onnx_field_number_zero", "broken", "model.onnx", raw(model(graph([b"\x00\x01" + tensor(raw=b"\0" * 16)]))),
         Refuse(CORRUPT, r"field number 0")),
    Case("onnx_unknown_data_type", "broken", "model.onnx", raw(one(dtype=99)), Refuse(CORRUPT, r"unknown data_type 99")),
    Case("onnx_data_type_undefined", "broken", "model.onnx", raw(one(dtype=0)), Refuse(CORRUPT, r"unknown data_type 0")),
    Case("onnx_data_type_as_string", "broken", "model.onnx",
         raw(model(graph([f_int(1, 4) + f_bytes(2, "FLOAT") + f_bytes(9, b"\0" * 16)]))), Refuse(CORRUPT, r"wire type")),
    Case("onnx_no_graph", "broken", "model.onnx", raw(model(None)), Refuse(CORRUPT, r"no graph")),
    Case("onnx_duplicate_initializer", "broken", "model.onnx",
         raw(model(graph([tensor(raw=b"\0" * 16), tensor(raw=b"\0" * 16)]))), Refuse(CORRUPT, r"twice")),
    Case("onnx_raw_and_float_data", "broken", "model.onnx",
         raw(model(graph([tensor(raw=b"\0" * 16, floats=[1.0] * 4)]))), Refuse(CORRUPT, r"twice")),
    Case("onnx_float_data_ragged", "broken", "model.onnx",
         raw(model(graph([f_int(1, 2) + f_int(2, 1) + f_bytes(4, b"\0" * 7) + f_bytes(8, "w")]))),
         Refuse(CORRUPT, r"whole number")),
    Case("onnx_int64_data_for_float", "broken", "model.onnx",
         raw(model(graph([f_int(1, 1) + f_int(2, 1) + f_bytes(7, vint(5)) + f_bytes(8, "w")]))),
         Refuse(CORRUPT, r"holds its values in int64_data")),
    Case("onnx_tensor_name_not_utf8", "broken", "model.onnx", raw(model(graph([tensor(name=b"\xff\xfe", raw=b"\0" * 16)]))),
         Refuse(CORRUPT, r"UTF-8")),
    Case("onnx_unterminated_varint", "broken", "model.onnx", raw(f_int(1, 9) + f_bytes(7, b"") + b"\x80\x80"),
         Refuse(CORRUPT, r"varint")),
    # ---- misleading names, nasty values, hostile names
    Case("onnx_named_bin", "misleading", "model.bin", fixture("smallcnn.onnx", "model.bin"), Ok(format="onnx", count=8)),
    Case("onnx_external_fixture", "misleading", "model.onnx", fixture("external.onnx"), Ok(format="onnx", count=3)),
    Case("onnx_constants_in_if_branches", "nasty", "model.onnx", fixture("constants.onnx"), Ok(format="onnx", count=8)),
    Case("onnx_nasty_values", "nasty", "nasty.onnx", nasty, Ok(count=3, flags=("nan", "inf", "empty", "low_precision"))),
    Case("onnx_hostile_names", "escape", "xss.onnx", xss, Ok(count=2, html_probe=XSS)),
]
