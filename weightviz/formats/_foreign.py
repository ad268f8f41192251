"""Formats weightviz does not read, recognised so that the refusal names them.

A file no reader claims used to get one long message listing magic bytes. A user holding a
TFLite model or a joblib pickle needs one line instead: what the file is, that weightviz does
not read it, and how to get weights it does read. :func:`by_content` looks at signatures no
readable format starts with; :func:`by_name` looks at extensions and sibling files. Both run
only when no reader claimed the bytes, and the content check is skipped for an extension a
reader owns (a safetensors header length of 274 bytes starts like an MXNet file; the reader
the extension names explains a damaged file better). :func:`early` runs before anything else
so that an OpenVINO ``.xml`` is not called an HTML page. :func:`in_directory` names model
folders (SavedModel, Core ML packages). Each returns a :class:`Foreign` or None;
:func:`refusal` words the error.
"""
from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import UnknownFormatError, message

READS = "PyTorch, TorchScript, safetensors, NumPy, HDF5/Keras, GGUF, ONNX"


class Foreign(NamedTuple):
    what: str            # "a TFLite flatbuffer"
    format: str          # "TFLite": weightviz does not read <format>
    fix: str             # how to get a file weightviz reads


_TF_EXPORT = ("load it in TensorFlow and save the weights it holds (model.save_weights('w.weights.h5') "
              "for Keras, or tf2onnx to ONNX), then open that file")
_COMPRESSED = {
    b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
}


def by_content(head: bytes) -> Foreign | None:
    """A format recognised by its first bytes, or None."""
    if head[4:8] == b"TFL3":
        return Foreign("a TFLite flatbuffer", "TFLite",
                       "weights of a TFLite model are usually quantized for the device; open the model "
                       "it was converted from, or convert it with tflite2onnx and open the .onnx")
    if head[:8] == b"\x12\x01\x00\x00\x00\x00\x00\x00":
        return Foreign("an MXNet NDArray file (.params)", "MXNet",
                       "load it with mxnet.nd.load and save the arrays with numpy.savez, "
                       "or export the model to ONNX (mxnet.onnx.export_model)")
    for magic, codec in _COMPRESSED.items():
        if head.startswith(magic):
            joblib = " (joblib writes compressed pickles this way)" if codec in ("lz4", "gzip", "xz") else ""
            article = "an" if codec in ("lz4", "xz") else "a"
            return Foreign(f"{article} {codec}-compressed file{joblib}", f"{codec}-compressed files",
                           f"decompress it first; a joblib or plain pickle inside is not read either: load "
                           "it with joblib in a trusted environment and save the arrays with numpy.savez "
                           "or safetensors")
    if len(head) > 1 and head[0] == 0x78 and (0x7800 | head[1]) % 31 == 0:      # a zlib header
        return Foreign("a zlib-compressed stream (joblib's zlib compression)", "joblib/zlib files",
                       "load it with joblib in a trusted environment and save the arrays with "
                       "numpy.savez or safetensors")
    if head[:2] == b"ZF":                          # joblib < 0.10's own zlib container
        return Foreign("an old joblib compressed pickle (ZF header)", "joblib files",
                       "load it with joblib in a trusted environment and save the arrays with "
                       "numpy.savez or safetensors")
    if head[:1] == b"\x80" and b"joblib" in head[:4096]:
        return Foreign("a joblib pickle (scikit-learn and friends)", "joblib pickles",
                       "weightviz never unpickles arbitrary objects; load it with joblib in a trusted "
                       "environment and save the arrays with numpy.savez or safetensors")
    return early(head)


def early(head: bytes) -> Foreign | None:
    """What must be named before the generic checks (an XML file is otherwise 'an HTML page')."""
    low = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1024]
    if low.startswith(b"<?xml") and b"<net " in low:
        return Foreign("an OpenVINO IR model description (.xml)", "OpenVINO IR",
                       "its weights are in the .bin beside it, which only the .xml explains; convert "
                       "the model with openvino's tools to ONNX, or open the model it came from")
    return None


_EXTENSIONS = {
    ".tflite": Foreign("a TFLite model", "TFLite", "open the model it was converted from, or convert it "
                       "with tflite2onnx and open the .onnx"),
    ".mlmodel": Foreign("a Core ML model", "Core ML", "open the model it was converted from (coremltools "
                        "converts from PyTorch and TensorFlow, not back)"),
    ".pb": Foreign("a TensorFlow protobuf (frozen GraphDef or saved_model.pb)", "TensorFlow graphs",
                   _TF_EXPORT),
    ".caffemodel": Foreign("a Caffe model", "Caffe", "convert it to ONNX or PyTorch (e.g. caffe2onnx), "
                           "then open the converted file"),
    ".prototxt": Foreign("a Caffe network description (text)", "Caffe", "the weights are in the "
                         ".caffemodel; convert it to ONNX or PyTorch, then open the converted file"),
    ".pdmodel": Foreign("a PaddlePaddle program", "PaddlePaddle", "convert it with paddle2onnx, then "
                        "open the .onnx"),
    ".pdiparams": Foreign("PaddlePaddle parameters", "PaddlePaddle", "convert the model with paddle2onnx, "
                          "then open the .onnx"),
    ".pdparams": Foreign("a PaddlePaddle state dict (a pickle)", "PaddlePaddle", "load it with "
                         "paddle.load in a trusted environment and save the arrays with numpy.savez"),
    ".msgpack": Foreign("a Flax msgpack checkpoint", "Flax msgpack", "convert it with transformers' "
                        "load_flax_weights_in_pytorch_model, or flax.serialization.msgpack_restore and "
                        "numpy.savez, then open the result"),
    ".joblib": Foreign("a joblib pickle", "joblib pickles", "load it with joblib in a trusted environment "
                       "and save the arrays with numpy.savez or safetensors"),
}


def by_name(path: str) -> Foreign | None:
    """A format recognised by its name or its neighbours (when no reader claimed the bytes)."""
    name = os.path.basename(path).lower()
    folder = os.path.dirname(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    if ext == ".bin" and _is_openvino_xml(os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".xml")):
        return Foreign("OpenVINO IR weights (the .bin of an .xml model)", "OpenVINO IR",
                       "convert the model with openvino's tools to ONNX, or open the model it came from")
    if ext == ".index" or ".data-" in name and "-of-" in name:
        return Foreign("a TensorFlow checkpoint (tf.train.Checkpoint / Saver)", "TensorFlow checkpoints",
                       "restore it in TensorFlow and save the weights (model.save_weights('w.weights.h5')), "
                       "or read the variables with tf.train.load_checkpoint and numpy.savez them")
    if name.endswith("-symbol.json") or ext == ".params":
        return Foreign("an MXNet model file", "MXNet", "load it with mxnet and save the arrays with "
                       "numpy.savez, or export the model to ONNX")
    return _EXTENSIONS.get(ext)


def in_directory(path: str, names: list[str]) -> Foreign | None:
    """A model folder weightviz does not read, from the names in it."""
    if "saved_model.pb" in names or "saved_model.pbtxt" in names:
        return Foreign("a TensorFlow SavedModel folder", "TensorFlow SavedModel", _TF_EXPORT)
    if path.rstrip("/").lower().endswith(".mlpackage") or "Manifest.json" in names and "Data" in names:
        return Foreign("a Core ML package", "Core ML", "open the model it was converted from (coremltools "
                       "converts from PyTorch and TensorFlow, not back)")
    return None


def refusal(found: Foreign, path: str, got: str) -> UnknownFormatError:
    name = os.path.basename(os.path.normpath(path))
    return UnknownFormatError(message(
        f"{name} is {found.what}; weightviz does not read {found.format}",
        expected=f"a file weightviz reads ({READS})", fix=found.fix, got=got))


def _is_openvino_xml(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError:
        return False
    return early(head) is not None
