"""GGUF (llama.cpp): listing, PyTorch-order shapes, dtypes, block byte counts, metadata,
dequantized data (the gguf package's own), stats, check/load, diff, browse, and the
hostile files of tests/hostile/cases_gguf.py opened in process.

Fixtures: tests/fixtures/gguf, written by tools/make_gguf_fixtures.py with gguf.GGUFWriter.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import weightviz as wv
from weightviz import dtypes
from weightviz.errors import CorruptFileError, UnsafeCheckpointError, WeightvizError
from weightviz.formats import gguf_file

gguf = pytest.importorskip("gguf")
from gguf import quants  # noqa: E402

from tests.hostile import cases_gguf  # noqa: E402
from tests.hostile.catalog import open_at_once  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "gguf"
ALL = sorted(p.name for p in FIX.glob("*.gguf"))
NAMES = ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight",
         "output_norm.weight", "output.weight"]
SHAPES = [(8, 32), (32,), (32, 32), (64, 32), (32,), (8, 32)]


def _originals() -> dict:
    ck = wv.open(FIX / "tiny-f32.gguf")
    return {n: e.numpy() for n, e in ck.items()}


def _reader_tensors(path):
    return {t.name: t for t in gguf.GGUFReader(path, "r").tensors}


# ---------------------------------------------------------------- listing

def test_lists_names_shapes_dtypes_in_file_order():
    ck = wv.open(FIX / "tiny-q8_0.gguf")
    assert ck.format == "gguf" and list(ck) == NAMES
    assert [e.shape for e in ck.values()] == SHAPES
    assert [e.dtype for e in ck.values()] == ["Q8_0", "float32", "Q8_0", "Q8_0", "float32", "Q8_0"]
    assert [wv.open(FIX / f"tiny-{q}.gguf")["blk.0.ffn_up.weight"].dtype
            for q in ("f32", "f16", "q8_0", "q4_0")] == ["float32", "float16", "Q8_0", "Q4_0"]


@pytest.mark.parametrize("name", ALL)
def test_listing_agrees_with_gguf_reader(name):
    """Names, ggml types, shapes (reversed: ggml's ne[0] is the last PyTorch dim), bytes and
    data offsets: the same as the gguf package's own GGUFReader lists."""
    path = FIX / name
    ck, ref = wv.open(path), _reader_tensors(path)
    assert list(ck) == list(ref)
    for n, t in ref.items():
        e = ck[n]
        assert e.shape == tuple(reversed(t.shape.tolist())), n
        assert e.nbytes == t.n_bytes and e.numel == t.n_elements, n
        start = e.location.offset if e.location is not None else e.blocks.start
        assert start == t.data_offset, n
        assert e.dtype == gguf_file.PLAIN.get(t.tensor_type.name, t.tensor_type.name), n


@pytest.mark.parametrize("name", ALL)
def test_metadata_agrees_with_gguf_reader(name):
    path = FIX / name
    kv = wv.open(path).metadata["kv"]
    fields = {k: f for k, f in gguf.GGUFReader(path, "r").fields.items() if not k.startswith("GGUF.")}
    assert list(kv) == list(fields)
    for k, f in fields.items():
        v = kv[k]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            assert len(v) if isinstance(v, list) else v.count == len(f.data), k
            if isinstance(v, list):
                assert v == f.contents(), k
        elif f.types[0] == gguf.GGUFValueType.FLOAT32:
            assert np.float32(v) == np.float32(f.contents()), k
        else:
            assert v == f.contents(), k


def test_nbytes_and_num_params_count_blocks():
    ck = wv.open(FIX / "tiny-q8_0.gguf")
    numel = {n: int(np.prod(s)) for n, s in zip(NAMES, SHAPES)}
    want = sum(numel[n] // 32 * 34 if ck[n].dtype == "Q8_0" else numel[n] * 4 for n in NAMES)
    assert ck.nbytes == want == 4064
    assert ck.num_params == sum(numel.values()) == 3648
    q4 = wv.open(FIX / "tiny-q4_0.gguf")
    assert q4["blk.0.ffn_up.weight"].nbytes == 2048 // 32 * 18
    assert re.search(r"\n  (size|weights) +4\.0 KiB\n", repr(ck))


def test_quantized_dtype_table_matches_gguf():
    want = {t.name: tuple(gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
            if gguf.GGML_QUANT_SIZES[t][0] > 1}
    assert dtypes.QUANTIZED == want
    assert dtypes.nbytes("Q4_K", 512) == 288 and dtypes.block_size("Q6_K") == 256
    assert dtypes.is_float("Q8_0") and dtypes.block_size("float32") is None


def test_metadata_is_shown_and_tokenizer_only_counted():
    ck = wv.open(FIX / "tiny-q8_0.gguf")
    text, html = repr(ck), ck._repr_html_()
    for label, value in (("architecture", "llama"), ("context length", "128"), ("file type", "Q8_0 (7)"),
                         ("quantization version", "2"), ("tokenizer", "llama, 8 tokens"),
                         ("model name", "weightviz tiny llama")):
        assert re.search(rf"\n  {label} +{re.escape(value)}\n", text), label
    assert text == repr(wv.open(FIX / "tiny-q8_0.gguf"))             # deterministic
    assert str(FIX) not in text
    for token in ("▁weight", "</s>", "messages"):                      # tokens, chat template: not dumped
        assert token not in text and token not in html
    kv = ck.metadata["kv"]
    assert kv["tokenizer.ggml.tokens"] == ("STRING", 8)                # an Array(type, count)
    assert kv["llama.context_length"] == 128 and ck.metadata["kv_types"]["general.file_type"] == "UINT32"
    assert ck.metadata["alignment"] == 32 and ck.metadata["byte_order"] == "little"


# ---------------------------------------------------------------- data

def test_plain_types_are_memory_mapped_and_exact():
    orig = _originals()
    f16 = wv.open(FIX / "tiny-f16.gguf")
    for n, e in f16.items():
        assert e.location is not None and isinstance(e.raw(), np.memmap)
        np.testing.assert_array_equal(e.numpy(), orig[n].astype(e.dtype))
    be = wv.open(FIX / "tiny-be.gguf")
    np.testing.assert_array_equal(be["token_embd.weight"].numpy(), orig["token_embd.weight"])
    assert be.metadata["byte_order"] == "big"


@pytest.mark.parametrize("q,bound", [("q8_0", 1 / 127), ("q4_0", 1 / 7)])
def test_dequantized_values_close_to_float_originals(q, bound):
    """Each value within its block's quantization step (|max| / 127 for Q8_0, / 8 for Q4_0)."""
    orig, ck = _originals(), wv.open(FIX / f"tiny-{q}.gguf")
    for n, e in ck.items():
        got, want = e.numpy(), orig[n]
        assert got.dtype == np.float32 and got.shape == want.shape
        if e.dtype == "float32":
            np.testing.assert_array_equal(got, want)
            continue
        amax = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True)
        err = np.abs(got.reshape(-1, 32) - want.reshape(-1, 32))
        assert (err <= amax * bound * 1.01 + 1e-7).all(), n
        assert e.torch().dtype.is_floating_point and tuple(e.torch().shape) == want.shape


@pytest.mark.parametrize("name", ALL)
def test_dequantization_is_the_gguf_packages_own(name):
    path = FIX / name
    ck, ref = wv.open(path), _reader_tensors(path)
    for n, e in ck.items():
        if e.dtype not in dtypes.QUANTIZED or not e.readable or e.blocks.big_endian:
            continue
        want = quants.dequantize(ref[n].data, ref[n].tensor_type).reshape(e.shape)
        np.testing.assert_array_equal(e.numpy(), want)
        flat = want.reshape(-1)
        for a, b in ((0, 1), (3, 70), (31, 33), (100, e.numel), (e.numel - 5, e.numel)):
            np.testing.assert_array_equal(e.blocks.elements(a, b), flat[a:b])


def test_type_gguf_cannot_dequantize_is_listed_and_named_on_read():
    ck = wv.open(FIX / "tiny-mixed.gguf")
    e = ck["blk.0.attn_k.weight"]
    assert (e.dtype, e.shape, e.nbytes, e.block_size, e.readable) == ("Q8_K", (2, 256), 2 * 292, 256, False)
    assert re.search(r"not dequantizable +Q8_K \(1\)", repr(ck))
    for read in (e.numpy, e.raw, e.torch):
        with pytest.raises(WeightvizError, match=r"Q8_K, which the gguf package .* cannot dequantize"):
            read()
    with pytest.raises(WeightvizError, match="cannot dequantize"):
        wv.stats(ck, progress=False)
    assert ck["blk.0.attn_v.weight"].dtype == "bfloat16" and ck["rope_freqs.weight"].numpy().tolist() == [0, 1, 2, 3]
    with pytest.raises(WeightvizError, match="big-endian"):
        wv.open(FIX / "tiny-be.gguf")["output.weight"].numpy()


# ---------------------------------------------------------------- verbs

def test_stats_flag_quantized_with_block_size():
    st = wv.stats(FIX / "tiny-q8_0.gguf", progress=False)
    s = st["blk.0.ffn_up.weight"]
    assert "quantized" in s.flags and dtypes.block_size(s.dtype) == 32 and "Q8_0 (blocks of 32)" in repr(s)
    assert "quantized" not in st["output_norm.weight"].flags
    assert st.flagged("quantized") == ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_up.weight",
                                       "output.weight"]
    ref = wv.stats(FIX / "tiny-f32.gguf", progress=False)["blk.0.ffn_up.weight"]
    assert abs(s.mean - ref.mean) < 1e-3 and abs(s.std - ref.std) < 1e-3
    assert "quantized" in repr(st) and "quantized" in st._repr_html_()
    from weightviz.statistics import tensor_stats
    ck, seen = wv.open(FIX / "tiny-q8_0.gguf"), []
    for e in ck.values():                                  # progress counts stored bytes
        tensor_stats(e, on_bytes=seen.append)
    assert sum(seen) == ck.nbytes


def test_stats_streamed_view_gives_the_same_numbers(monkeypatch):
    """A big quantized tensor is scanned through slices of whole blocks (bounded memory):
    with every tensor streamed and chunks that cut blocks, the numbers do not change."""
    from weightviz.statistics.scan import Scanner
    from weightviz.statistics import tensor_stats
    e = wv.open(FIX / "tiny-q4_0.gguf")["blk.0.ffn_up.weight"]
    whole = tensor_stats(e, scanner=Scanner(chunk=100, threads=1))
    monkeypatch.setattr(gguf_file, "STREAM_BYTES", 0)
    assert type(e.streamed()).__name__ == "_ScanView"
    for threads in (1, 3):
        part = tensor_stats(e, scanner=Scanner(chunk=100, threads=threads))
        assert part.to_dict() == whole.to_dict()
        np.testing.assert_array_equal(part.counts, whole.counts)


def _model():
    import torch
    from torch import nn
    blk = nn.ModuleDict({"attn_norm": nn.RMSNorm(32), "attn_q": nn.Linear(32, 32, bias=False),
                         "ffn_up": nn.Linear(32, 64, bias=False)})
    return nn.ModuleDict({"token_embd": nn.Embedding(8, 32), "blk": nn.ModuleList([blk]),
                          "output_norm": nn.RMSNorm(32), "output": nn.Linear(32, 8, bias=False)}).to(torch.float32)


def test_check_and_load_against_a_torch_model_with_gguf_names():
    model = _model()
    rep = wv.check(model, FIX / "tiny-f32.gguf")
    assert {r.status for r in rep.rows} == {"ok"} and len(rep.rows) == 6
    q8 = wv.check(model, FIX / "tiny-q8_0.gguf")
    assert {r.status for r in q8.rows} <= {"ok", "dtype_mismatch"}
    wv.load(model, FIX / "tiny-q8_0.gguf")
    orig = _originals()
    got = model["blk"][0]["ffn_up"].weight.detach().numpy()
    assert np.abs(got - orig["blk.0.ffn_up.weight"]).max() < 0.01


def test_diff_against_itself_and_across_quantizations():
    same = wv.diff(FIX / "tiny-q8_0.gguf", FIX / "tiny-q8_0.gguf")
    assert {r.status for r in same.rows} == {"same"} and len(same.rows) == 6
    d = wv.diff(FIX / "tiny-f32.gguf", FIX / "tiny-q8_0.gguf")
    rows = {r.name: r for r in d.rows}
    assert rows["output_norm.weight"].status == "same"
    assert rows["blk.0.ffn_up.weight"].status in ("changed", "dtype_differs")


def test_browse_lists_and_selects_a_quantized_tensor():
    pytest.importorskip("ipywidgets")
    b = wv.browse(FIX / "tiny-q4_0.gguf")
    b.select("blk.0.ffn_up.weight")
    assert b.last_error is None and "Q4_0" in b.card.value and "quantized" in b.card.value


def test_sniffed_by_content_and_named_by_extension(tmp_path):
    from weightviz import formats
    p = tmp_path / "weights.bin"
    p.write_bytes((FIX / "tiny-f32.gguf").read_bytes())
    assert formats.detect(str(p)) == "gguf" and len(wv.open(p)) == 6
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a gguf file at all, just some words")
    with pytest.raises(CorruptFileError, match="missing the GGUF magic"):
        wv.open(junk)
    with pytest.raises(WeightvizError):
        wv.open(FIX / "tiny-f32.gguf", format="safetensors")


def test_listing_imports_no_torch():
    code = ("import sys, weightviz as wv\n"
            f"c = wv.open({str(FIX / 'tiny-q8_0.gguf')!r})\n"
            "repr(c); [e.numpy() for e in c.values()]\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def _same_gguf(a_path, b_path):
    """Two GGUF files the same: every metadata field and tensor info exactly, tensor values
    within rounding (a quantizer's float arithmetic may round differently on another CPU's
    vector path: one quantization step at most)."""
    from gguf.quants import dequantize
    a, b = gguf.GGUFReader(str(a_path)), gguf.GGUFReader(str(b_path))
    fa = {k: (f.types, [bytes(p) for p in f.parts]) for k, f in a.fields.items() if not k.startswith("GGUF.")}
    fb = {k: (f.types, [bytes(p) for p in f.parts]) for k, f in b.fields.items() if not k.startswith("GGUF.")}
    assert fa == fb, sorted(set(fa) ^ set(fb)) or "a metadata value differs"
    assert [(t.name, t.tensor_type, list(t.shape), int(t.data_offset) - int(a.data_offset)) for t in a.tensors] == \
           [(t.name, t.tensor_type, list(t.shape), int(t.data_offset) - int(b.data_offset)) for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        if ta.tensor_type in (gguf.GGMLQuantizationType.Q8_K, gguf.GGMLQuantizationType.I32):
            assert bytes(ta.data) == bytes(tb.data), ta.name          # raw codes / integers
            continue
        va = dequantize(ta.data, ta.tensor_type).astype(np.float64)
        vb = dequantize(tb.data, tb.tensor_type).astype(np.float64)
        quantized = ta.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                           gguf.GGMLQuantizationType.BF16)
        atol = np.abs(vb).max() / 100 if quantized else 0.0
        np.testing.assert_allclose(va, vb, rtol=1e-6, atol=atol, err_msg=ta.name)


def test_fixtures_come_from_their_script(tmp_path):
    """tools/make_gguf_fixtures.py rewrites the committed files: the same header on any CPU,
    values within one quantization step."""
    spec = importlib.util.spec_from_file_location("make_gguf_fixtures", ROOT / "tools" / "make_gguf_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_model(str(tmp_path / "q8.gguf"), gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)
    mod.write_mixed(str(tmp_path / "mixed.gguf"))
    _same_gguf(tmp_path / "q8.gguf", FIX / "tiny-q8_0.gguf")
    _same_gguf(tmp_path / "mixed.gguf", FIX / "tiny-mixed.gguf")
    assert all((FIX / n).stat().st_size < 20_000 for n in ALL)


def test_the_gguf_comparison_sees_a_changed_value(tmp_path):
    bad = tmp_path / "bad.gguf"
    data = bytearray((FIX / "tiny-f32.gguf").read_bytes())
    data[-4:] = np.float32(1e3).tobytes()                 # the last tensor's last value
    bad.write_bytes(bytes(data))
    _same_gguf(FIX / "tiny-f32.gguf", FIX / "tiny-f32.gguf")
    with pytest.raises(AssertionError):
        _same_gguf(bad, FIX / "tiny-f32.gguf")


# ---------------------------------------------------------------- hostile, in process

@pytest.mark.parametrize("case", [c for c in cases_gguf.CASES if not c.heavy], ids=lambda c: c.name)
def test_hostile_gguf_opens_or_refuses_at_once(case, tmp_path):
    open_at_once(case, tmp_path)


def test_long_metadata_array_is_stepped_over(tmp_path):
    """GGUFReader builds one NumPy view per array element in Python (4M elements: minutes);
    the header parser steps over a numeric array in one move."""
    p = tmp_path / "m.gguf"
    p.write_bytes(cases_gguf.build([cases_gguf.ARCH, cases_gguf.U8_ARRAY], [cases_gguf.info("w", (4,))], b"\0" * 16))
    t = time.perf_counter()
    ck = wv.open(p)
    assert time.perf_counter() - t < 0.5
    assert ck.metadata["kv"]["tokenizer.ggml.token_type"] == ("UINT8", 4 << 20)


# ---------------------------------------------------------------- split models

def _write_split(folder, n_tensors=5, per_part=2):
    """A model split by the gguf package's own writer (as llama.cpp's gguf-split names parts)."""
    w = gguf.GGUFWriter(str(folder / "m.gguf"), "llama", split_max_tensors=per_part)
    w.add_context_length(64)
    for i in range(n_tensors):
        w.add_tensor(f"blk.{i}.w", np.full((4, 32), i, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(folder.glob("m-*-of-*.gguf"))


def test_any_part_of_a_split_model_opens_the_whole_model(tmp_path):
    parts = _write_split(tmp_path)
    assert [p.name for p in parts] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for part in parts:
        ck = wv.open(part)
        assert list(ck) == [f"blk.{i}.w" for i in range(5)]
        assert [float(ck[f"blk.{i}.w"].numpy()[0, 0]) for i in range(5)] == [0, 1, 2, 3, 4]
        text = repr(ck)
        assert "3 files, all read: m-00001-of-00003.gguf … m-00003-of-00003.gguf" in text
        assert "context length  64" in text                    # the first part's metadata
    files = sum(p.stat().st_size for p in parts)
    assert wv.render.file_bytes(wv.open(parts[1])) == files
    assert wv.stats(parts[0])["blk.4.w"].mean == 4.0


def test_one_part_alone_with_shards_false(tmp_path):
    parts = _write_split(tmp_path)
    ck = wv.open(parts[1], shards=False)
    assert list(ck) == ["blk.2.w", "blk.3.w"]
    assert ck.metadata["display"]["split"] == "part 2 of 3 (this part only)"


def test_split_model_with_a_part_missing_or_mixed_up_is_refused(tmp_path):
    parts = _write_split(tmp_path)
    parts[2].rename(tmp_path / "elsewhere.gguf")
    with pytest.raises(CorruptFileError, match=r"part 1 of a GGUF model split in 3 files.*1 of them is not"
                                               r".*shards=False.*missing m-00003-of-00003.gguf"):
        wv.open(parts[0])
    (tmp_path / "elsewhere.gguf").rename(parts[2])
    swapped = tmp_path / "swap.gguf"
    parts[1].rename(swapped)
    parts[2].rename(parts[1])
    swapped.rename(parts[2])
    with pytest.raises(CorruptFileError, match="does not say it is part 2 of 3"):
        wv.open(parts[0])
    renamed = tmp_path / "model.gguf"
    parts[0].rename(renamed)
    with pytest.raises(CorruptFileError, match="its name does not say which"):
        wv.open(renamed)


def test_split_part_linked_from_outside_the_folder_is_refused(tmp_path):
    outside, inside = tmp_path / "outside", tmp_path / "model"
    outside.mkdir()
    inside.mkdir()
    parts = _write_split(outside)
    for p in parts[:2]:
        p.rename(inside / p.name)
    (inside / parts[2].name).symlink_to(parts[2])
    with pytest.raises(UnsafeCheckpointError, match="link leading out of its folder"):
        wv.open(inside / parts[0].name)
