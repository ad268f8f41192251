"""Files of formats weightviz does not read are refused in one line that names the format
(and how to get a file it reads), not with a list of magic bytes. Where the format's own
writer is installable here (joblib with lz4/zlib/gzip, Python's gzip around torch.save) the
files come from it; TFLite, MXNet, OpenVINO and TensorFlow files are the bytes those
writers start with (their frameworks are not installable here)."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

import weightviz as wv
from weightviz.errors import UnknownFormatError

joblib = pytest.importorskip("joblib")


def _refused(path) -> str:
    with pytest.raises(UnknownFormatError) as err:
        wv.open(path)
    return str(err.value)


def _first_line(text: str) -> str:
    return text.split(". Expected", 1)[0]


@pytest.mark.parametrize("compress,what", [(("lz4", 3), "an lz4-compressed file"),
                                            (("zlib", 3), "a zlib-compressed stream"),
                                            (("gzip", 3), "a gzip-compressed file"),
                                            (("xz", 3), "an xz-compressed file"),
                                            (0, "a joblib pickle")])
def test_joblib_files_written_by_joblib(tmp_path, compress, what):
    if compress and compress[0] == "lz4":
        pytest.importorskip("lz4")
    path = tmp_path / "model.pkl"
    joblib.dump({"coef": np.arange(6.0).reshape(2, 3), "intercept": np.zeros(2)}, path, compress=compress)
    msg = _refused(path)
    assert _first_line(msg).startswith(f"model.pkl is {what}"), msg
    assert "weightviz does not read" in msg and "numpy.savez" in msg
    assert "\\x89HDF" not in msg and "\\x93NUMPY" not in msg      # no list of magic bytes
    assert len(msg) < 600


def test_gzipped_torch_save_says_decompress(tmp_path):
    raw = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, raw)
    gz = tmp_path / "w.pt.gz"
    gz.write_bytes(gzip.compress(raw.read_bytes()))
    msg = _refused(gz)
    assert _first_line(msg).startswith("w.pt.gz is a gzip-compressed file") and "decompress it first" in msg.lower()


@pytest.mark.parametrize("name,head,what", [
    ("model.tflite", b"\x1c\x00\x00\x00TFL3\x14\x00", "a TFLite model"),
    ("model", b"\x1c\x00\x00\x00TFL3\x14\x00", "a TFLite flatbuffer"),            # by content
    ("net-0000.params", b"\x12\x01\x00\x00\x00\x00\x00\x00\x00", "an MXNet model file"),
    ("net.nd", b"\x12\x01\x00\x00\x00\x00\x00\x00\x00", "an MXNet NDArray file"),
    ("frozen_graph.pb", b"\n\x0f\n\x05input\x12\x0bPlaceholder", "a TensorFlow protobuf"),
    ("model.mlmodel", b"\x08\x04\x12\x10", "a Core ML model"),
    ("deploy.caffemodel", b"\n\x06LeNet\x12", "a Caffe model"),
    ("inference.pdmodel", b"\n\x05\x12\x03", "a PaddlePaddle program"),
    ("flax_model.msgpack", b"\x81\xa6params", "a Flax msgpack checkpoint"),
    ("model.ckpt.index", b"\x00\x00\x00\x00", "a TensorFlow checkpoint"),
    ("model.ckpt.data-00000-of-00001", b"\x00\x00\x00\x00", "a TensorFlow checkpoint"),
])
def test_foreign_formats_named_in_one_line(tmp_path, name, head, what):
    path = tmp_path / name
    path.write_bytes(head + bytes(64))
    msg = _refused(path)
    assert _first_line(msg).startswith(f"{name} is {what}"), msg
    assert "weightviz does not read" in msg and "Got: first bytes" in msg


def test_openvino_pair_is_named_not_called_html(tmp_path):
    xml = tmp_path / "model.xml"
    xml.write_text('<?xml version="1.0"?>\n<net name="torch-jit-export" version="11">\n<layers/></net>\n')
    (tmp_path / "model.bin").write_bytes(np.ones(16, np.float32).tobytes())
    assert _first_line(_refused(xml)).startswith("model.xml is an OpenVINO IR model description")
    assert _first_line(_refused(tmp_path / "model.bin")).startswith("model.bin is OpenVINO IR weights")


def test_model_folders_are_named(tmp_path):
    sm = tmp_path / "saved"
    (sm / "variables").mkdir(parents=True)
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    assert _first_line(_refused(sm)).startswith("saved is a TensorFlow SavedModel folder")
    pkg = tmp_path / "Model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    assert _first_line(_refused(pkg)).startswith("Model.mlpackage is a Core ML package")


def test_readable_formats_are_not_taken_for_foreign_ones(tmp_path):
    """A safetensors header of 274 bytes starts with the MXNet magic's bytes: the reader, not
    the refusal, gets such a file."""
    import json
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (0x112 - len(header))          # writers pad to 8 bytes; the format does not
    path = tmp_path / "w.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    assert path.read_bytes()[:8] == b"\x12\x01\x00\x00\x00\x00\x00\x00"
    assert list(wv.open(path)) == ["w"]
    plain = tmp_path / "w.bin"                       # a .bin beside an unrelated .xml
    torch.save({"w": torch.ones(1)}, plain)
    (tmp_path / "w.xml").write_text("<?xml version='1.0'?><config/>")
    assert list(wv.open(plain)) == ["w"]
    os.remove(tmp_path / "w.xml")
