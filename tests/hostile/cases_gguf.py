"""Hostile and broken GGUF files: 64-bit counts and lengths out of proportion to the file,
truncations, out-of-file and overlapping tensor offsets, unknown and removed tensor types,
alignment lies, nested arrays, and a long metadata array that ``gguf.GGUFReader`` would
walk element by element (weightviz steps over it). Files are built byte by byte with
:func:`build`; valid ones come from tests/fixtures/gguf (the gguf package's GGUFWriter)."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

from .catalog import Case, Either, Ok, Refuse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gguf"
CORRUPT = "CorruptFileError"
XSS = "<img src=x onerror=alert(1)>"
F32, F16, Q8_0, Q8_K = 0, 1, 8, 15
U8, U32, F32V, STR, ARR = 0, 4, 6, 8, 9


def s(text) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def u32(key, v: int) -> bytes:
    return kv(key, U32, struct.pack("<I", v))


def string(key, v: str) -> bytes:
    return kv(key, STR, s(v))


def info(name, ne, ttype: int = F32, offset: int = 0) -> bytes:
    return s(name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne) + struct.pack("<IQ", ttype, offset)


def build(kvs=(), infos=(), data: bytes = b"", *, version: int = 3, n_kv=None, n_tensors=None,
          alignment: int = 32) -> bytes:
    """A GGUF file: preamble (counts default to the lists' lengths), key/values, tensor
    infos, padding to ``alignment`` and ``data``."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % alignment) + data


ARCH = string("general.architecture", "llama")


def one_f32(ne=(4,), **kw) -> bytes:
    """An honest file with one F32 tensor of shape ``ne`` (ggml order)."""
    n = 1
    for d in ne:
        n *= d
    return build([ARCH], [info("w", ne)], struct.pack(f"<{n}f", *range(n)), **kw)


def raw(data: bytes, name: str = "model.gguf"):
    def make(d: Path):
        (d / name).write_bytes(data)
    return make


def fixture(src: str, name: str = "model.gguf", cut: float | None = None):
    def make(d: Path):
        if cut is None:
            shutil.copy(FIXTURES / src, d / name)
        else:
            data = (FIXTURES / src).read_bytes()
            (d / name).write_bytes(data[:int(len(data) * cut)])
    return make


def nested(depth: int) -> bytes:
    body = struct.pack("<IQ", U8, 0)
    for _ in range(depth):
        body = struct.pack("<IQ", ARR, 1) + body
    return kv("x.nested", ARR, body)


def nasty(d: Path):
    vals = [1.0, float("nan"), float("inf"), -2.0] + [0.5] * 28
    q8 = (struct.pack("<e", 0.01) + bytes(range(32))) * 2           # two Q8_0 blocks
    data = struct.pack("<32f", *vals) + struct.pack("<4e", 1.0, 2.0, 3.0, 4.0) + b"\0" * 24 + q8 + b"\0" * 28
    (d / "nasty.gguf").write_bytes(build([ARCH], [
        info("nan_inf", (32,)), info("f16", (4,), F16, 128), info("empty", (0, 8), F32, 160),
        info("q8", (64,), Q8_0, 160)], data))


def many(d: Path):
    n = 10_000
    infos = [info(f"blk.{i // 10}.t{i % 10}.weight", (8,), F32, 32 * i) for i in range(n)]
    (d / "many.gguf").write_bytes(build([ARCH], infos, b"\0" * (32 * n)))


def xss(d: Path):
    (d / "xss.gguf").write_bytes(build(
        [string("general.architecture", XSS), string("general.name", XSS), string(XSS, XSS)],
        [info(XSS, (4,)), info("fc.weight", (4,), F32, 32)], b"\0" * 64))


BIG = 2 ** 63
U8_ARRAY = kv("tokenizer.ggml.token_type", ARR, struct.pack("<IQ", U8, 4 << 20) + b"\1" * (4 << 20))

CASES: list[Case] = [
    # ---- sizes: 64-bit counts and lengths against a small file
    Case("gguf_kv_count_2e63", "size", "model.gguf", raw(build([ARCH], n_kv=BIG)), Refuse(CORRUPT, r"key/values")),
    Case("gguf_tensor_count_2e63", "size", "model.gguf", raw(build([ARCH], n_tensors=BIG)), Refuse(CORRUPT, r"tensors")),
    Case("gguf_key_length_2e63", "size", "model.gguf",
         raw(build([struct.pack("<Q", BIG) + b"general.architecture"])), Refuse(CORRUPT, r"key|long")),
    Case("gguf_string_value_2e63", "size", "model.gguf",
         raw(build([kv("general.name", STR, struct.pack("<Q", BIG - 1) + b"x" * 64)])), Refuse(CORRUPT, r"past the end")),
    Case("gguf_u8_array_2e62", "size", "model.gguf",
         raw(build([kv("x.a", ARR, struct.pack("<IQ", U8, 2 ** 62) + b"\0" * 64)])), Refuse(CORRUPT, r"array")),
    Case("gguf_string_array_2e40", "size", "model.gguf",
         raw(build([kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 2 ** 40) + s("a") * 8)])),
         Refuse(CORRUPT, r"array")),
    Case("gguf_string_array_lying_length", "size", "model.gguf",
         raw(build([kv("tokenizer.ggml.tokens", ARR, struct.pack("<IQ", STR, 40) + s("a") * 20
                       + struct.pack("<Q", 2 ** 50) + s("b") * 19)])), Refuse(CORRUPT, r"array|past")),
    Case("gguf_arrays_nested_100_deep", "size", "model.gguf", raw(build([ARCH, nested(100)])),
         Refuse(CORRUPT, r"nests arrays")),
    Case("gguf_dims_2e40_cubed", "size", "model.gguf", raw(build([ARCH], [info("w", (2 ** 40,) * 3)], b"\0" * 64)),
         Refuse(CORRUPT, r"past the end")),
    Case("gguf_dim_2e63", "size", "model.gguf", raw(build([ARCH], [info("w", (4, BIG))], b"\0" * 64)),
         Refuse(CORRUPT, r"2\*\*63")),
    Case("gguf_n_dims_4e9", "size", "model.gguf", raw(build([ARCH], [s("w") + struct.pack("<I", 2 ** 32 - 1)])),
         Refuse(CORRUPT, r"dimensions")),
    Case("gguf_tensor_offset_past_eof", "size", "model.gguf",
         raw(build([ARCH], [info("w", (4,), F32, 2 ** 40)], b"\0" * 16)), Refuse(CORRUPT, r"past the end")),
    Case("gguf_overlapping_tensors", "size", "model.gguf",
         raw(build([ARCH], [info("a", (16,)), info("b", (16,), F32, 32)], b"\0" * 128)), Refuse(CORRUPT, r"overlap")),
    Case("gguf_4m_element_u8_array", "size", "model.gguf", raw(build([ARCH, U8_ARRAY], [info("w", (4,))], b"\0" * 16)),
         Ok(count=1)),
    Case("gguf_10k_tensors", "size", "many.gguf", many, Ok(count=10_000), heavy=True),
    # ---- broken: truncations, unknown / removed types, alignment lies, versions, names
    Case("gguf_shorter_than_preamble", "broken", "model.gguf", raw(b"GGUF\3\0\0\0"), Refuse(CORRUPT, r"preamble")),
    Case("truncated_gguf_10pct", "broken", "model.gguf", fixture("tiny-q8_0.gguf", cut=0.1),
         Refuse(CORRUPT, r"past the end|truncat")),
    Case("truncated_gguf_50pct", "broken", "model.gguf", fixture("tiny-q8_0.gguf", cut=0.5),
         Refuse(CORRUPT, r"past the end|truncat")),
    Case("truncated_gguf_99pct", "broken", "model.gguf", fixture("tiny-q8_0.gguf", cut=0.99),
         Refuse(CORRUPT, r"past the end|truncat")),
    Case("gguf_unknown_tensor_type", "broken", "model.gguf", raw(build([ARCH], [info("w", (32,), 99)], b"\0" * 64)),
         Refuse(CORRUPT, r"unknown ggml type 99")),
    Case("gguf_removed_tensor_type_q4_0_4_4", "broken", "model.gguf",
         raw(build([ARCH], [info("w", (32,), 31)], b"\0" * 64)), Refuse(CORRUPT, r"removed")),
    Case("gguf_unknown_value_type", "broken", "model.gguf", raw(build([kv("x.y", 13, b"\0" * 8)])),
         Refuse(CORRUPT, r"unknown value type")),
    Case("gguf_alignment_not_power_of_two", "broken", "model.gguf",
         raw(build([ARCH, u32("general.alignment", 48)], [info("w", (4,))], b"\0" * 16, alignment=48)),
         Refuse(CORRUPT, r"alignment")),
    Case("gguf_alignment_zero", "broken", "model.gguf", raw(build([ARCH, u32("general.alignment", 0)], [info("w", (4,))],
                                                                  b"\0" * 16)), Refuse(CORRUPT, r"alignment")),
    Case("gguf_alignment_as_string", "broken", "model.gguf",
         raw(build([ARCH, string("general.alignment", "64")], [info("w", (4,))], b"\0" * 16)),
         Refuse(CORRUPT, r"alignment")),
    Case("gguf_alignment_lie", "broken", "model.gguf",
         raw(build([ARCH, u32("general.alignment", 64)], [info("a", (8,)), info("b", (8,), F32, 32)], b"\0" * 128,
                   alignment=64)), Refuse(CORRUPT, r"alignment")),
    Case("gguf_version_1", "broken", "model.gguf", raw(one_f32(version=1)), Refuse(CORRUPT, r"version 1")),
    Case("gguf_version_99", "broken", "model.gguf", raw(one_f32(version=99)), Refuse(CORRUPT, r"version 99")),
    Case("gguf_row_not_whole_blocks", "broken", "model.gguf",
         raw(build([ARCH], [info("w", (33,), Q8_0)], b"\0" * 64)), Refuse(CORRUPT, r"blocks")),
    Case("gguf_duplicate_tensor_names", "broken", "model.gguf",
         raw(build([ARCH], [info("w", (4,)), info("w", (4,), F32, 32)], b"\0" * 64)), Refuse(CORRUPT, r"twice")),
    Case("gguf_duplicate_keys", "broken", "model.gguf", raw(build([ARCH, ARCH])), Refuse(CORRUPT, r"twice")),
    Case("gguf_tensor_name_not_utf8", "broken", "model.gguf",
         raw(build([ARCH], [info(b"\xff\xfe", (4,))], b"\0" * 16)), Refuse(CORRUPT, r"UTF-8")),
    Case("gguf_too_many_dims", "broken", "model.gguf", raw(build([ARCH], [info("w", (1,) * 5)], b"\0" * 16)),
         Refuse(CORRUPT, r"dimensions")),
    # ---- misleading names, nasty values, hostile names
    Case("gguf_named_pt", "misleading", "model.pt", fixture("tiny-f32.gguf", "model.pt"), Ok(format="gguf", count=6)),
    Case("gguf_nasty_values", "nasty", "nasty.gguf", nasty,
         Ok(count=4, flags=("nan", "inf", "empty", "low_precision", "quantized"))),
    Case("gguf_q8_k_not_dequantizable", "nasty", "model.gguf", fixture("tiny-mixed.gguf"), Ok(count=6),
         verbs={"stats": Refuse("WeightvizError", r"cannot dequantize"), "browse": Either("listed, stats refused")}),
    Case("gguf_big_endian", "nasty", "model.gguf", fixture("tiny-be.gguf"), Ok(count=3),
         verbs={"stats": Refuse("WeightvizError", r"big-endian"), "browse": Either("listed, stats refused")}),
    Case("gguf_hostile_names_metadata", "escape", "xss.gguf", xss, Ok(count=2, html_probe=XSS)),
]
