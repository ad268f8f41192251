"""Every format weightviz can write, read back the same way: names, shapes, dtypes, counts, data."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import weightviz as wv
from _model_formats import FORMATS
from weightviz import dtypes

FORMAT_NAME = {"pt": "torch", "pt_legacy": "torch", "torchscript": "torchscript",
               "whole_model": "torch", "safetensors": "safetensors", "sharded": "safetensors",
               "npy": "numpy", "npz": "numpy", "npz_compressed": "numpy", "h5": "hdf5", "gguf": "gguf",
               "onnx": "onnx"}
ORDERED = {"pt", "pt_legacy", "torchscript", "whole_model", "npy", "npz", "npz_compressed", "gguf", "onnx"}


@pytest.mark.parametrize("label", FORMATS)
def test_lists_exactly_the_model_weights(model_files, label):
    path, expected = model_files[label]
    ckpt = wv.open(path)
    assert ckpt.format == FORMAT_NAME[label]
    if label in ORDERED:
        assert list(ckpt) == list(expected)
    else:
        assert sorted(ckpt) == sorted(expected)
    for name, t in expected.items():
        e = ckpt[name]
        assert e.shape == tuple(t.shape), name
        assert e.dtype == dtypes.from_torch(t.dtype), name
    assert ckpt.num_params == sum(t.numel() for t in expected.values())
    assert len(ckpt) == len(expected)


@pytest.mark.parametrize("label", FORMATS)
def test_data_round_trips_exactly(model_files, label):
    path, expected = model_files[label]
    ckpt = wv.open(path)
    for name, t in expected.items():
        got = ckpt[name].torch()
        assert got.dtype == t.dtype, name
        assert torch.equal(got.view(torch.uint8) if t.dtype.itemsize == 1 else got,
                           t.view(torch.uint8) if t.dtype.itemsize == 1 else t), name
        want = t.float().numpy() if t.dtype in (torch.bfloat16, torch.float8_e4m3fn) else t.numpy()
        np.testing.assert_array_equal(ckpt[name].numpy(), want)


@pytest.mark.parametrize("label", FORMATS)
def test_repr_is_deterministic_and_has_no_path(model_files, label):
    path, _ = model_files[label]
    a, b = repr(wv.open(path)), repr(wv.open(path))
    assert a == b
    assert os.path.dirname(path) not in a
    assert "<table" in wv.open(path)._repr_html_()


@pytest.mark.parametrize("label", FORMATS)
def test_input_file_is_never_written(model_files, label):
    path, _ = model_files[label]
    before = open(path, "rb").read(), os.stat(path).st_mtime_ns
    ckpt = wv.open(path)
    for e in ckpt.values():
        e.numpy()
    assert (open(path, "rb").read(), os.stat(path).st_mtime_ns) == before


@pytest.mark.parametrize("label", ["safetensors", "sharded", "npy", "npz", "npz_compressed", "h5", "gguf", "onnx"])
def test_opening_does_not_import_torch(model_files, label):
    path, _ = model_files[label]
    code = ("import sys, weightviz as wv\n"
            f"c = wv.open({path!r})\n"
            "shapes = [(n, e.shape, e.dtype) for n, e in c.items()]\n"
            "[e.numpy() for e in c.values() if e.dtype == 'float32']\n"
            "repr(c)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(len(shapes))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 0


@pytest.mark.parametrize("label", ["safetensors", "npy", "npz", "h5", "pt", "gguf", "onnx"])
def test_locations_point_at_the_data(model_files, label):
    """Readers expose memory-mappable byte positions where the bytes lie plainly in the file."""
    path, expected = model_files[label]
    ckpt = wv.open(path)
    located = [e for e in ckpt.values() if e.location is not None]
    if label in ("safetensors", "npz", "h5", "gguf", "onnx"):
        assert len(located) == len(ckpt)
    for e in located:
        raw = e.raw()
        assert isinstance(raw, np.memmap)
        assert raw.shape == e.shape


def test_summaries_label_weight_bytes_and_file_bytes(tmp_path):
    """'weights' counts the tensors' bytes, 'file' the bytes on disk (every shard and the
    index): a Keras full-model .h5 is mostly optimizer state and config."""
    import numpy as np
    from safetensors.numpy import save_file
    from weightviz import demo
    text = repr(wv.open(demo.path("keras_model.keras")))
    assert "  weights       38.3 KiB\n" in text and "(weights are 25% of it)" in text
    a, b = np.zeros((64, 64), np.float32), np.ones(256, np.float32)
    save_file({"a": a}, str(tmp_path / "m-1.safetensors"))
    save_file({"b": b}, str(tmp_path / "m-2.safetensors"))
    (tmp_path / "m.safetensors.index.json").write_text(
        '{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}')
    ckpt = wv.open(tmp_path / "m.safetensors.index.json")
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    from weightviz.render import file_bytes
    assert file_bytes(ckpt) == on_disk and ckpt.nbytes == a.nbytes + b.nbytes
    assert "weights are" not in repr(ckpt)
    from weightviz.statistics import as_checkpoint
    assert file_bytes(as_checkpoint({"x": np.zeros(3)})) is None
