"""The front door: content sniffing, format=, helpful errors, and bad bytes (hypothesis)."""
from __future__ import annotations

import os
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightviz as wv
from weightviz import formats
from weightviz.errors import CorruptFileError, UnknownFormatError, WeightvizError

LFS = (b"version https://git-lfs.github.com/spec/v1\n"
       b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
       b"size 1338\n")
HTML = b"<!DOCTYPE html>\n<html lang='en'><head><title>Sign in</title></head><body>...</body></html>"


def test_lfs_pointer_named_as_such(tmp_path):
    p = tmp_path / "model.pth"
    p.write_bytes(LFS)
    with pytest.raises(UnknownFormatError) as err:
        wv.open(p)
    msg = str(err.value)
    assert "Git LFS pointer" in msg and "git lfs pull" in msg and "model.pth" in msg


def test_html_page_named_as_such(tmp_path):
    p = tmp_path / "model.pth"
    p.write_bytes(HTML)
    with pytest.raises(UnknownFormatError) as err:
        wv.open(p)
    assert "HTML page" in str(err.value) and "raw" in str(err.value)


def test_empty_file(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="empty"):
        wv.open(p)


def test_unknown_bytes_list_what_was_looked_for(tmp_path):
    p = tmp_path / "mystery.dat"
    p.write_bytes(b"\x00\x01garbage bytes here")
    with pytest.raises(UnknownFormatError) as err:
        wv.open(p)
    msg = str(err.value)
    assert "HDF5" in msg and "safetensors" in msg and "NumPy" in msg
    assert "00 01 67 61" in msg                      # the first bytes, in hex


def test_mislabelled_extension_is_named(tmp_path):
    p = tmp_path / "weights.npy"
    p.write_bytes(b"not really numpy at all")
    with pytest.raises(CorruptFileError, match=r"weights.npy is not a NumPy file") as err:
        wv.open(p)                            # the extension's reader explains what is wrong
    assert "\\x93NUMPY" in str(err.value) and "6e 6f 74 20" in str(err.value)
    p = tmp_path / "model.safetensors"
    p.write_bytes(b"\x40\x42\x0f\x00\x00\x00\x00\x00{}")
    with pytest.raises(CorruptFileError, match="runs past the end"):
        wv.open(p)


def test_plain_pickle_is_not_unpickled(tmp_path):
    p = tmp_path / "w.pkl"
    p.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(UnknownFormatError, match="plain Python pickle"):
        wv.open(p)


def test_format_override_and_bad_names(model_files, tmp_path):
    path, expected = model_files["safetensors"]
    assert len(wv.open(path, format="safetensors")) == len(expected)
    with pytest.raises(UnknownFormatError, match="unknown format name"):
        wv.open(path, format="pickle")
    with pytest.raises(WeightvizError):                   # forcing the wrong reader fails cleanly
        wv.open(path, format="numpy")
    with pytest.raises(WeightvizError):
        wv.open(path, format="hdf5")
    with pytest.raises(FileNotFoundError):
        wv.open(tmp_path / "nope.pt")


@pytest.mark.parametrize("label,fmt", [("pt", "torch"), ("torchscript", "torchscript"),
                                       ("safetensors", "safetensors"), ("npy", "numpy"),
                                       ("npz", "numpy"), ("h5", "hdf5"), ("sharded", "safetensors"),
                                       ("gguf", "gguf"), ("onnx", "onnx")])
def test_detect_by_content_not_extension(model_files, tmp_path, label, fmt):
    path, _ = model_files[label]
    if label == "sharded":
        assert formats.detect(path) == fmt
        return
    renamed = tmp_path / "renamed.bin"
    renamed.write_bytes(open(path, "rb").read())
    assert formats.detect(str(renamed)) == fmt


def test_registry_order_and_names():
    names = [r.format for r in formats.READERS]
    assert names == ["keras-h5", "hdf5", "keras", "numpy", "torchscript", "torch", "safetensors",
                     "torch-sharded", "keras-sharded", "keras-json", "gguf", "onnx",
                     "dcp", "dcp-safetensors", "deepspeed"]
    folders = [r for r in formats.READERS if not r.families]   # never sniffed on a file's bytes
    assert [r.format for r in folders] == ["dcp", "dcp-safetensors", "deepspeed"]
    assert names.index("keras-h5") < names.index("hdf5")
    assert {"torch", "torchscript", "safetensors", "numpy", "hdf5"} <= set(formats.available_formats())


def test_missing_reader_module_is_skipped(monkeypatch, model_files):
    from weightviz.formats import detection, registry
    readers = (registry.Reader("keras-h5", "no_such_module", ("hdf5",)),) + registry.READERS[1:]
    monkeypatch.setattr(registry, "READERS", readers)      # the table the readers are found in
    monkeypatch.setattr(detection, "READERS", readers)     # and the one the detection walks
    path, _ = model_files["h5"]
    assert wv.open(path).format == "hdf5"
    with pytest.raises(UnknownFormatError, match="not available"):
        wv.open(path, format="keras-h5")


def test_directory_without_weights(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(UnknownFormatError, match="directory"):
        wv.open(tmp_path)


DEMO = os.path.join(os.path.dirname(wv.__file__), "demo", "data")
DEEPSPEED = os.path.join(os.path.dirname(__file__), "fixtures", "deepspeed", "zero1", "checkpoint")


def test_folder_readers_by_name():
    """format= names the folder readers; detection gives the same names for their folders, and
    the routing takes the registry's rows (dcp_folder.folder_reader)."""
    from weightviz.formats import detection, registry
    from weightviz.formats.dcp_folder import folder_reader
    dcp = os.path.join(DEMO, "cnn_dcp_step1")
    assert formats.detect(dcp) == "dcp" and formats.detect(DEEPSPEED) == "deepspeed"
    assert folder_reader(dcp, os.listdir(dcp)) is registry.reader_by_name("dcp")
    assert detection.route_directory(DEEPSPEED)[0] is registry.reader_by_name("deepspeed")
    auto = wv.open(dcp)
    for path in (dcp, os.path.join(dcp, ".metadata")):
        ck = wv.open(path, format="dcp")
        assert ck.format == "dcp" and list(ck) == list(auto)
    assert wv.open(DEEPSPEED, format="deepspeed").format == "deepspeed-zero1"


@pytest.mark.parametrize("path,fmt,words", [
    ("deepspeed", "dcp", r"not a torch.distributed.checkpoint folder.*it is a 'deepspeed'.*format='deepspeed'"),
    ("cnn_dcp_step1", "deepspeed", r"not a DeepSpeed ZeRO.*it is a 'dcp'.*format='dcp'"),
    ("cnn_dcp_step1", "dcp-safetensors", r"it is a 'dcp' checkpoint"),
    ("cnn_lora", "dcp", r"cnn_lora is not a torch.distributed.checkpoint folder.*adapter_config.json"),
    ("cnn.pth", "dcp", r"cnn.pth is a file, not a local folder: format='dcp'"),
    ("cnn.safetensors", "deepspeed", r"is a file, not a local folder: format='deepspeed'"),
])
def test_the_wrong_folder_reader_is_a_clear_error(path, fmt, words):
    path = DEEPSPEED if path == "deepspeed" else os.path.join(DEMO, path)
    with pytest.raises(UnknownFormatError, match=words):
        wv.open(path, format=fmt)


def test_a_file_reader_on_a_folder_is_a_clear_error():
    with pytest.raises(UnknownFormatError, match=r"cnn_dcp_step1 is a folder: format='torch' reads "
                                                 r"one file\. Pass format='dcp'"):
        wv.open(os.path.join(DEMO, "cnn_dcp_step1"), format="torch")
    with pytest.raises(UnknownFormatError, match="is a folder: format='safetensors'"):
        wv.open(os.path.join(DEMO, "cnn_lora"), format="safetensors")


# ---------------------------------------------------------------- bad bytes
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LABELS = ["pt", "pt_legacy", "torchscript", "whole_model", "safetensors", "npy", "npz",
          "npz_compressed", "h5", "gguf", "onnx"]


def _must_fail_cleanly(path, **kw):
    try:
        ckpt = wv.open(path, **kw)
        for e in ckpt.values():          # a clean open must also read cleanly or fail cleanly
            e.numpy()
    except WeightvizError:
        pass


@FUZZ
@given(data=st.binary(max_size=600), ext=st.sampled_from([".pt", ".safetensors", ".npy", ".npz",
                                                          ".h5", ".bin", ".json", ".gguf",
                                                          ".onnx"]))
def test_random_bytes_raise_weightviz_errors_only(tmp_path, data, ext):
    p = tmp_path / f"f{ext}"
    p.write_bytes(data)
    _must_fail_cleanly(str(p))


@FUZZ
@given(label=st.sampled_from(LABELS), frac=st.floats(0.0, 1.0), prefix_magic=st.booleans())
def test_truncations_raise_weightviz_errors_only(tmp_path, model_files, label, frac, prefix_magic):
    path, _ = model_files[label]
    data = open(path, "rb").read()
    cut = int(len(data) * frac)
    cut = min(cut, len(data) - 1)
    p = tmp_path / ("t" + os.path.splitext(path)[1])
    p.write_bytes(data[:cut] if prefix_magic else data[:cut] + b"\x00" * 7)
    _must_fail_cleanly(str(p))


@FUZZ
@given(label=st.sampled_from(LABELS), pos=st.floats(0.0, 1.0), byte=st.integers(0, 255))
def test_bit_flips_raise_weightviz_errors_only(tmp_path, model_files, label, pos, byte):
    path, _ = model_files[label]
    data = bytearray(open(path, "rb").read())
    i = min(int(len(data) * pos), len(data) - 1)
    data[i] = byte
    p = tmp_path / ("b" + os.path.splitext(path)[1])
    p.write_bytes(bytes(data))
    _must_fail_cleanly(str(p))


def test_tar_archive_named_as_such(tmp_path):
    import tarfile
    (tmp_path / "inner.pt").write_bytes(b"x")
    with tarfile.open(tmp_path / "model.tar", "w") as t:
        t.add(tmp_path / "inner.pt", arcname="inner.pt")
    with pytest.raises(UnknownFormatError, match="tar archive"):
        wv.open(tmp_path / "model.tar")
