"""weightviz.stats: numbers against NumPy float64 references on every awkward case."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import weightviz
from weightviz.statistics import scan as _scan
from weightviz.checkpoint import Checkpoint, DataLocation, TensorEntry
from weightviz.errors import WeightvizError
from weightviz.statistics import FLAGS, StatsTable, as_checkpoint, stats, tensor_stats


def reference(values, numel=None):
    """Float64 reference over the finite values (complex: magnitude)."""
    a = np.asarray(values)
    if a.dtype.kind == "c":
        a = np.abs(a.astype(np.complex128))
    a = a.astype(np.float64).ravel()
    fin = a[np.isfinite(a)]
    return dict(numel=a.size if numel is None else numel, finite=fin.size,
                nan=int(np.isnan(a).sum()), inf=int(np.isinf(a).sum()),
                zeros=(a == 0).sum() / a.size if a.size else 0.0,
                mean=fin.mean() if fin.size else np.nan, std=fin.std() if fin.size else np.nan,
                min=fin.min() if fin.size else np.nan, max=fin.max() if fin.size else np.nan,
                absmax=np.abs(fin).max() if fin.size else np.nan,
                norm=np.sqrt(np.sum(fin * fin)), fin=fin)


def check(s, ref, rtol=1e-9):
    for k in ("numel", "finite", "nan", "inf"):
        assert getattr(s, k) == ref[k], k
    assert s.zeros == pytest.approx(ref["zeros"], abs=1e-15)
    for k in ("mean", "std", "min", "max", "absmax", "norm"):
        want = ref[k]
        if np.isnan(want):
            assert np.isnan(getattr(s, k)), k
        else:
            scale = max(abs(want), ref["std"] if np.isfinite(ref["std"]) else 0, 1e-300)
            assert abs(getattr(s, k) - want) <= rtol * scale, (k, getattr(s, k), want)
    assert s.counts.sum() == ref["finite"]
    assert s.counts.sum() + s.underflow + s.overflow == ref["finite"]


def one(value, name="t", **kw):
    return stats({name: value}, **kw)[name]


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the multi-chunk (threaded, two-pass) path on small tensors."""
    monkeypatch.setattr(_scan, "CHUNK", 1000)


# ---------------------------------------------------------------- dtypes and edge cases

def test_float32_with_nan_and_inf_mix(small_chunks):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(10_007).astype(np.float32)
    a[[3, 500, 7000]] = np.nan
    a[[10, 2500]] = np.inf
    a[4000] = -np.inf
    a[100:130] = 0
    s = one(a)
    check(s, reference(a))
    assert s.nan == 3 and s.inf == 3
    assert {"nan", "inf"} <= set(s.flags)


def test_histogram_matches_numpy_and_keeps_the_maximum(small_chunks):
    rng = np.random.default_rng(1)
    a = rng.standard_normal(5000).astype(np.float32)
    s = one(a, bins=37)
    a64 = a.astype(np.float64)                     # edges are float64 (numpy: input dtype)
    counts, edges = np.histogram(a64, bins=37, range=(a64.min(), a64.max()))
    np.testing.assert_allclose(s.edges, edges)
    np.testing.assert_array_equal(s.counts, counts)
    assert s.counts[-1] >= 1                       # the maximum element is counted
    assert s.counts.sum() == a.size


def test_float16_sum_would_overflow_in_float16():
    a = np.full(10_000, 60000, np.float16)
    a[::2] = 65504
    with np.errstate(over="ignore"):
        assert not np.isfinite(a.sum())            # the trap this guards against
    s = one(a)
    check(s, reference(a))
    assert s.mean == pytest.approx(62752.0) and "low_precision" in s.flags


def test_bfloat16_from_torch_and_from_bits(small_chunks):
    t = (torch.randn(3001) * 3).bfloat16()
    t[5] = float("nan")
    s = one(t)
    check(s, reference(t.float().numpy()))
    assert "low_precision" in s.flags


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                                  "float8_e5m2fnuz", "float8_e8m0fnu"])
def test_fp8_table_matches_torch(name):
    dt = getattr(torch, name, None)
    if dt is None:
        pytest.skip(f"torch has no {name}")
    bits = torch.arange(256, dtype=torch.uint8)
    want = bits.view(dt).float().numpy()
    np.testing.assert_array_equal(_scan._fp8_table(name), want)


def test_fp8_tensor_stats():
    t = torch.randn(500).to(torch.float8_e4m3fn)
    s = one(t)
    check(s, reference(t.float().numpy()))
    assert "low_precision" in s.flags


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_integers_counted_and_flagged(dtype):
    a = np.arange(-5, 95).astype(dtype) if np.dtype(dtype).kind == "i" else np.arange(100).astype(dtype)
    s = one(a)
    check(s, reference(a))
    assert "integer" in s.flags and "outliers" not in s.flags


def test_bool_counted_and_flagged():
    a = np.array([True, False, True, True])
    s = one(a)
    check(s, reference(a))
    assert s.flags == ("bool",)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, ">c8"])
def test_complex_by_magnitude(dtype):
    a = (np.array([3 + 4j, 0, -1j, 1 + 1j, np.nan]) ).astype(dtype)
    s = one(a)
    check(s, reference(a), rtol=1e-6)
    assert s.max == pytest.approx(5.0) and "complex" in s.flags and s.nan == 1


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i4", ">f2", "<f8"])
def test_byte_orders(dtype):
    a = (np.linspace(-3, 7, 101)).astype(dtype)
    check(one(a), reference(a), rtol=1e-7)


def test_empty_and_zero_dim():
    table = stats({"empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5),
                   "none": np.zeros((2, 0), np.float16)})
    e = table["empty"]
    assert e.numel == 0 and e.finite == 0 and np.isnan(e.mean) and e.flags == ("empty",)
    assert e.counts.sum() == 0 and len(e.edges) == 101
    sc = table["scalar"]
    assert (sc.numel, sc.mean, sc.std, sc.min, sc.max) == (1, 2.5, 0.0, 2.5, 2.5)
    assert sc.flags == ("single_value",) and sc.counts.sum() == 1
    assert table["none"].flags == ("empty", "low_precision")


def test_constant_and_all_zero():
    table = stats({"c": np.full((4, 5), 0.25, np.float32), "z": np.zeros((3, 3), np.float32)})
    c = table["c"]
    assert c.flags == ("constant",) and c.std == 0
    counts, edges = np.histogram(np.full(20, 0.25), bins=100)
    np.testing.assert_array_equal(c.counts, counts)
    np.testing.assert_allclose(c.edges, edges)
    assert table["z"].flags == ("all_zero",) and table["z"].zeros == 1.0


def test_all_nonfinite():
    s = one(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert (s.finite, s.nan, s.inf) == (0, 1, 2) and np.isnan(s.mean)
    assert s.counts.sum() == 0 and {"nan", "inf"} <= set(s.flags)


def test_huge_float32_and_float64_do_not_overflow():
    a = np.array([3e38, 3e38, -3e38, 1.0], np.float32)
    check(one(a), reference(a))
    b = np.array([1e300, 1e300, -1e300, 0.5e300], np.float64)
    s = one(b)
    assert s.mean == pytest.approx((b / 1e300).mean() * 1e300)
    assert s.std == pytest.approx((b / 1e300).std() * 1e300)      # np.std(b) itself overflows
    assert s.norm == pytest.approx(np.linalg.norm(b / 1e300) * 1e300)


def test_variance_with_large_mean_is_exact(small_chunks):
    rng = np.random.default_rng(2)
    a = (1000 + 1e-3 * rng.standard_normal(20_000)).astype(np.float64)
    s = one(a)
    assert s.std == pytest.approx(a.std(), rel=1e-6)


# ---------------------------------------------------------------- flags

def test_dead_units_torch_rows_conv_filters_keras_columns(small_chunks):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 70)).astype(np.float32)
    w[[3, 17, 39]] = 0                             # rows straddle the 1000-element chunks
    conv = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    conv[2] = 0
    kernel = rng.standard_normal((30, 50)).astype(np.float32)
    kernel[:, 7] = 0
    emb = rng.standard_normal((10, 4)).astype(np.float32)
    emb[0] = 0
    table = stats({"fc.weight": w, "conv.weight": conv, "dense/kernel": kernel,
                   "tok_embeddings.weight": emb, "fc.bias": np.zeros(40, np.float32)})
    assert table["fc.weight"].dead_units == 3 and "dead_units" in table["fc.weight"].flags
    assert table["conv.weight"].dead_units == 1
    assert table["dense/kernel"].dead_units == 1
    assert "dead_units" not in table["tok_embeddings.weight"].flags
    assert table["fc.bias"].flags == ("all_zero",)


def test_dead_units_on_memmapped_file(tmp_path):
    w = np.random.default_rng(4).standard_normal((6, 5)).astype(np.float32)
    w[4] = 0
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc" + w.tobytes())
    e = TensorEntry("l.weight", w.shape, "float32", location=DataLocation(str(path), 3, np.dtype("<f4")))
    assert tensor_stats(e).dead_units == 1


def test_outliers_flag():
    rng = np.random.default_rng(5)
    a = rng.standard_normal(10_000).astype(np.float32)
    assert "outliers" not in one(a).flags
    a[5] = 200
    assert "outliers" in one(a).flags


def test_flags_are_known_words():
    table = stats({"a": np.array([np.nan, 1.0], np.float16), "b": np.zeros(3, bool)})
    for s in table.values():
        assert set(s.flags) <= set(FLAGS)


# ---------------------------------------------------------------- sources and memory maps

def _raw_file(tmp_path, arrays):
    path = tmp_path / "raw.bin"
    entries, off = {}, 0
    with open(path, "wb") as f:
        for name, (arr, dtype_name, order) in arrays.items():
            f.write(b"\0" * 5)                     # unaligned offsets on purpose
            off += 5
            data = np.asarray(arr)
            f.write(data.tobytes(order=order))
            entries[name] = TensorEntry(name, data.shape, dtype_name,
                                        location=DataLocation(str(path), off, data.dtype, order))
            off += data.nbytes
    return Checkpoint(entries, format="raw", path=str(path))


@pytest.mark.parametrize("release_above", [256 << 20, 0])   # 0: madvise every chunk
def test_memmapped_entries_multi_chunk(tmp_path, small_chunks, monkeypatch, release_above):
    monkeypatch.setattr(_scan, "RELEASE_BETWEEN_PASSES", release_above)
    rng = np.random.default_rng(6)
    f32 = rng.standard_normal((50, 90)).astype(np.float32)
    f32[7, 3] = np.nan
    be = rng.standard_normal(4321).astype(">f8")
    fo = rng.standard_normal((31, 47)).astype(np.float32)
    bf = torch.randn(2500).bfloat16()
    bf_bits = bf.view(torch.int16).numpy().view(np.uint16)
    ckpt = _raw_file(tmp_path, {"f32": (f32, "float32", "C"), "be": (be, "float64", "C"),
                                "fo": (fo, "float32", "F"), "bf": (bf_bits, "bfloat16", "C")})
    table = stats(ckpt)
    check(table["f32"], reference(f32))
    check(table["be"], reference(be))
    check(table["fo"], reference(fo))
    check(table["bf"], reference(bf.float().numpy()))
    assert table.format == "raw"


def test_module_and_checkpoint_sources():
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    table = stats(m)
    assert list(table) == list(m.state_dict())
    assert "integer" in table["1.num_batches_tracked"].flags
    check(table["0.weight"], reference(m[0].weight.detach().numpy()), rtol=1e-6)
    assert list(stats(as_checkpoint(m.state_dict()))) == list(table)


def test_path_source(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_file({"w": a}, str(tmp_path / "m.safetensors"))
    try:
        table = stats(str(tmp_path / "m.safetensors"))
    except (ImportError, AttributeError, WeightvizError) as exc:  # reader not there yet
        pytest.skip(f"safetensors reader unavailable: {exc}")
    check(table["w"], reference(a))


def test_bad_sources_raise_weightviz_errors():
    with pytest.raises(WeightvizError, match="cannot read tensors"):
        stats(42)
    with pytest.raises(WeightvizError, match="not numeric"):
        stats({"a": np.array(["text"])})
    with pytest.raises(WeightvizError, match="not a tensor"):
        stats({"a": "text"})
    with pytest.raises(WeightvizError, match="bins"):
        stats({"a": np.zeros(2)}, bins=0)


# ---------------------------------------------------------------- the table

def _table() -> StatsTable:
    return stats({"fc1.weight": np.array([[1.0, -2.0], [0.5, 0.25]], np.float32),
                  "fc1.bias": np.zeros(2, np.float32),
                  "bad": np.array([1.0, np.nan], np.float16)})


def test_item_and_attribute_access():
    t = _table()
    s = t["fc1.weight"]
    assert s.mean == s["mean"] == pytest.approx(-0.0625)
    assert s["counts"] is s.counts and s["underflow"] == 0
    assert set(s.keys()) >= {"numel", "mean", "std", "min", "max", "absmax", "zeros", "nan",
                             "inf", "norm", "histogram", "flags", "counts", "edges"}
    with pytest.raises(KeyError, match="mean"):
        s["average"]
    with pytest.raises(KeyError, match="fc1.weight"):
        t["fc1"]


GOLDEN = """\
Tensor statistics (state_dict)
  tensors     3
  parameters  8
  flagged     nan (1), all_zero (1), low_precision (1)

tensor      dtype    shape   numel     mean    std  min  max  |max|   zeros  nan  inf  flags
----------  -------  ------  -----  -------  -----  ---  ---  -----  ------  ---  ---  -----------------
fc1.weight  float32  (2, 2)      4  -0.0625  1.151   -2    1      2    0.0%    0    0
fc1.bias    float32  (2)         2        0      0    0    0      0  100.0%    0    0  all_zero
bad         float16  (2)         2        1      0    1    1      1    0.0%    1    0  nan low_precision"""


def test_text_repr_golden():
    assert repr(_table()) == GOLDEN


def test_html_has_badges_and_summary():
    t = _table()
    h = t._repr_html_()
    assert "<table" in h and "fc1.weight" in h
    assert ">all_zero</span>" in h and ">nan</span>" in h
    assert t.summary() == {"nan": 1, "all_zero": 1, "low_precision": 1}
    assert t.flagged() == ["fc1.bias", "bad"] and t.flagged("nan") == ["bad"]
    with pytest.raises(WeightvizError):
        t.flagged("nope")
    assert "fc1.weight" in repr(t["fc1.weight"]) and "<table" in t["bad"]._repr_html_()


def test_to_pandas_or_clear_import_error(monkeypatch):
    t = _table()
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        t.to_pandas()


def test_to_pandas_when_installed():
    pytest.importorskip("pandas")
    df = _table().to_pandas()
    assert list(df.index) == ["fc1.weight", "fc1.bias", "bad"]
    assert df.loc["bad", "nan"] == 1


def test_clipped_range_counts_under_and_overflow():
    a = np.arange(100, dtype=np.float32)
    e = as_checkpoint({"a": a})["a"]
    s = tensor_stats(e, bins=10, range=(10.0, 89.5))
    assert (s.underflow, s.overflow) == (10, 10)
    assert s.counts.sum() == 80
    np.testing.assert_array_equal(s.counts, np.histogram(a, 10, (10.0, 89.5))[0])
    assert s.histogram.quantile(0.5) == pytest.approx(49.5, abs=1.0)


def test_progress_bar_only_when_asked(capsys):
    sd = {"a": np.ones(10, np.float32)}
    stats(sd)
    assert capsys.readouterr().err == ""
    stats(sd, progress=True)
    assert "weightviz.stats" in capsys.readouterr().err


def test_verb_survives_submodule_import():
    import weightviz.statistics  # noqa: F401
    assert isinstance(weightviz.stats({"a": np.ones(3)}), StatsTable)


def test_stats_does_not_import_matplotlib():
    code = ("import sys, numpy as np, weightviz; weightviz.stats({'a': np.ones(3)}); "
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=0, max_dims=3, max_side=40),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=16)))
def test_random_arrays_match_reference(a):
    old = _scan.CHUNK
    _scan.CHUNK = 64
    try:
        s = one(a)
    finally:
        _scan.CHUNK = old
    check(s, reference(a), rtol=1e-7)


def test_float32_input_is_shifted_and_summed_in_float64(small_chunks):
    # float32 arithmetic on x - K would be off here (NumPy 2 keeps Python floats weak)
    a = np.concatenate([[2.0 ** 24], np.full(2999, 1.0), [3.0]]).astype(np.float32)
    s = one(a)
    ref = a.astype(np.float64)
    assert s.mean == pytest.approx(ref.mean(), rel=1e-13)
    assert s.std == pytest.approx(ref.std(), rel=1e-12)
    assert s.norm == pytest.approx(np.linalg.norm(ref), rel=1e-11)


def test_real_keras_file_matches_reference():
    from pathlib import Path
    path = Path(__file__).parent / "fixtures" / "keras_models" / "conv.h5"
    if not path.exists():
        pytest.skip("Keras fixture not present")
    ckpt = weightviz.open(str(path))
    table = stats(ckpt)
    assert list(table) == list(ckpt) and table.format == "keras-h5"
    for name, entry in ckpt.items():
        check(table[name], reference(entry.numpy()), rtol=1e-7)


def test_keras_layout_dead_columns_by_format():
    k = np.ones((6, 4), np.float32)
    k[:, 2] = 0                                   # one dead output unit (a column)
    ckpt = Checkpoint({"dense_1_W": TensorEntry("dense_1_W", k.shape, "float32", loader=lambda: k)},
                      format="keras-h5")
    assert stats(ckpt)["dense_1_W"].dead_units == 1


def test_numpy_fallback_without_fast_histogram(monkeypatch, small_chunks):
    a = np.random.default_rng(7).standard_normal(3000).astype(np.float32)
    want = one(a, bins=20)
    monkeypatch.setitem(sys.modules, "fast_histogram", None)
    got = one(a, bins=20)
    np.testing.assert_array_equal(got.counts, want.counts)
    assert got.mean == want.mean


def test_unreadable_tensors_raise_weightviz_errors():
    with pytest.raises(WeightvizError, match="could not read tensor 'a'"):
        stats({"a": torch.empty(3, device="meta")})
    with pytest.raises(WeightvizError, match="inner state dict"):
        stats({"a": {"b": torch.ones(2)}})


def _rss_anon_kib():
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/self/status")


def test_memmapped_scan_keeps_anonymous_memory_bounded(tmp_path):
    n = 12 << 20                                   # 48 MiB of float32 in the file
    path = tmp_path / "big.bin"
    mm = np.memmap(path, dtype="<f4", mode="w+", shape=(n,))
    mm[::4096] = np.arange(n // 4096, dtype=np.float32)
    mm.flush()
    del mm
    e = TensorEntry("w", (n // 1024, 1024), "float32",
                    location=DataLocation(str(path), 0, np.dtype("<f4")))
    tensor_stats(e)                                # warm buffers and imports
    before = _rss_anon_kib()
    s = tensor_stats(e)
    assert _rss_anon_kib() - before < 16 * 1024    # far below the 48 MiB tensor
    assert s.max == n // 4096 - 1 and s.counts.sum() == n


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_threaded_and_single_threaded_scans_agree(dtype):
    t = torch.randn(5003).to(getattr(torch, dtype))
    t[17] = float("nan")
    e = as_checkpoint({"w": t})["w"]
    one_thread, two_threads = _scan.Scanner(700, threads=1), _scan.Scanner(700, threads=2)
    try:
        a, b = one_thread.scan(e), two_threads.scan(e)
    finally:
        two_threads.close()
    assert two_threads.threads == 2
    np.testing.assert_array_equal(a.counts, b.counts)
    assert (a.nan, a.finite, a.zeros) == (b.nan, b.finite, b.zeros)
    assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-12)


# -- every valid tensor gives statistics (issue: 3e38 constants, (0, 2**62) shapes) -----------

@settings(max_examples=150, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.sampled_from([np.float32, np.float64]))
def test_any_finite_constant_gives_statistics(v, dtype):
    s = weightviz.stats({"c": np.full(37, v, dtype)})["c"]
    assert s.min == s.max == float(dtype(v)) and s.histogram.counts.sum() == 37
    assert s.histogram.edges[0] < s.histogram.edges[-1]
    assert s.flags == (("all_zero",) if v == 0 else ("constant",))


@settings(max_examples=150, deadline=None)
@given(st.floats(min_value=0, max_value=float(np.finfo(np.float32).max), allow_subnormal=True,
                 width=32, exclude_min=True),
       st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_any_range_width_gives_exact_histograms(width, start):
    lo = np.float32(start)
    hi = np.float32(min(float(lo) + float(width), float(np.finfo(np.float32).max)))
    if not hi > lo:
        return
    x = np.array([lo, hi, lo, np.float32((float(lo) + float(hi)) / 2)], np.float32)
    s = weightviz.stats({"x": x})["x"]
    assert s.histogram.counts.sum() == np.isfinite(x).sum() == 4
    assert (s.min, s.max) == (float(x.min()), float(x.max()))


@settings(max_examples=60, deadline=None)
@given(st.builds(lambda dims, i: dims[:i] + [0] + dims[i:],
                 st.lists(st.integers(min_value=0, max_value=2**62), max_size=3),
                 st.integers(min_value=0, max_value=3)))
def test_any_zero_element_shape_gives_statistics(tmp_path_factory, dims):
    import json
    import struct
    path = tmp_path_factory.mktemp("z") / "z.safetensors"
    head = json.dumps({"z": {"dtype": "F32", "shape": dims, "data_offsets": [0, 0]}}).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head)
    s = weightviz.stats(str(path))["z"]
    assert s.numel == 0 and s.flags == ("empty",) and s.shape == tuple(dims)
    assert weightviz.diff(str(path), str(path)).same


def test_an_unreadable_tensor_names_its_cause_not_the_binning():
    from weightviz.checkpoint import Checkpoint, TensorEntry

    def broken():
        raise OSError("disk on fire")
    ckpt = Checkpoint({"w": TensorEntry("w", (3,), "float32", loader=broken)}, format="test")
    with pytest.raises(weightviz.WeightvizError, match=r"could not read tensor 'w'.*OSError: disk on fire"):
        weightviz.stats(ckpt)


@pytest.mark.parametrize("case", ["normal", "ties on the edges", "float64 wide", "zeros and nan"])
def test_the_compiled_kernel_counts_what_the_numpy_kernels_count(monkeypatch, case):
    """The numba second pass (big tensors) against the NumPy one: identical histogram and
    counts, sums to the last bits; and both are np.histogram's counts on the finite range."""
    pytest.importorskip("numba")
    from weightviz.statistics import kernels as _kernels
    rng = np.random.default_rng(5)
    x = {"normal": lambda: rng.standard_normal(300_001).astype(np.float32),
         "ties on the edges": lambda: np.repeat(np.float32([-1, 0, 0.5, 2]), 70_001),
         "float64 wide": lambda: rng.standard_normal(200_000) * 1e30,
         "zeros and nan": lambda: np.where(rng.random(300_000) < 0.3, 0, rng.standard_normal(
             300_000)).astype(np.float32)}[case]()
    if case == "zeros and nan":
        x[7] = np.nan
    source = {"w.weight": x.reshape(-1, 1) if x.size % 2 else x.reshape(-1, 2)}
    monkeypatch.setattr(_kernels, "FUSED_MIN", 10**18)
    slow = weightviz.stats(source)["w.weight"]
    monkeypatch.setattr(_kernels, "FUSED_MIN", 0)
    fast = weightviz.stats(source)["w.weight"]
    np.testing.assert_array_equal(fast.histogram.counts, slow.histogram.counts)
    assert (fast.zeros, fast.nan, fast.finite, fast.dead_units) == (slow.zeros, slow.nan, slow.finite,
                                                                     slow.dead_units)
    for k in ("mean", "std", "norm", "min", "max"):
        assert getattr(fast, k) == pytest.approx(getattr(slow, k), rel=1e-12, abs=1e-300), k
    f = x[np.isfinite(x)].astype(np.float64)
    np.testing.assert_array_equal(fast.histogram.counts, np.histogram(f, 100, (f.min(), f.max()))[0])


def test_without_numba_the_numpy_kernels_run(monkeypatch):
    from weightviz.statistics import kernels as _kernels, scan as _scan
    monkeypatch.setattr(_kernels, "_FUSED", [False])
    pl = _scan.plan([(0.0, 1.0, False)], 10**9, (10**9,))
    assert not pl.fused and _kernels.fused() is None
    assert weightviz.stats({"x": np.arange(5.0)})["x"].histogram.counts.sum() == 5
