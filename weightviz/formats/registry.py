"""The readers weightviz has, by name: which module reads a format, which byte families its
sniffer may claim, and which extension names it (the second chance). Reader modules are
imported lazily by name, so a missing or broken module never stops the others, and opening a
safetensors/NumPy/HDF5 file never imports torch.

Order matters: the Keras HDF5 reader gets the first chance at HDF5 files (it decides by root
attributes / groups) and the plain HDF5 tree reader is the fallback; ``.keras`` zips go to the
Keras reader before the npz and torch readers look at a zip (npz first: its test is cheaper,
and a zip of ``.npy`` members without ``data.pkl`` is never a torch file);
``*.safetensors.index.json`` and then a Keras sharded-weights index (a ``weight_map`` of
``/.../vars`` groups) are claimed before other JSON goes to the Keras JSON reader.

The folder readers (training checkpoints: DCP, DCP's sharded safetensors, DeepSpeed ZeRO) claim
no byte family, so sniffing never tries them on a file's bytes; a folder is routed to them by
:func:`.dcp_folder.folder_reader` (which returns their rows), or by ``format=``. Their
``sniff`` names a test of the folder's file names.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

from ..errors import UnknownFormatError, message

PACKAGE = __name__.rpartition(".")[0]


class Reader(NamedTuple):
    format: str          # the name users pass as format=
    module: str          # module under weightviz.formats
    families: tuple      # byte families (sniff.family) it may claim: only those readers are imported
    sniff: str = "sniff"
    read: str = "read"


READERS: tuple[Reader, ...] = (
    Reader("keras-h5", "keras_h5", ("hdf5",)),
    Reader("hdf5", "hdf5_file", ("hdf5",)),
    Reader("keras", "keras_zip", ("zip",)),
    Reader("numpy", "numpy_file", ("npy", "zip")),
    Reader("torchscript", "torch_file", ("zip",), "sniff_torchscript", "read_torchscript"),
    Reader("torch", "torch_file", ("zip", "torch-legacy")),
    Reader("safetensors", "safetensors_file", ("safetensors", "json")),
    Reader("torch-sharded", "torch_sharded", ("json",)),
    Reader("keras-sharded", "keras_sharded", ("json",)),
    Reader("keras-json", "keras_json", ("json",)),
    Reader("gguf", "gguf_file", ("gguf",)),
    Reader("onnx", "onnx_file", ("onnx",)),
    # folders: never sniffed on bytes (no family)
    Reader("dcp", "dcp_folder", (), "is_dcp_folder"),
    Reader("dcp-safetensors", "dcp_folder", (), "is_hf_folder", "read_hf"),
    Reader("deepspeed", "deepspeed_folder", (), "is_step_folder"),
)
FORMATS = tuple(r.format for r in READERS)

# extension -> reader tried when no content sniffer claims the file (second chance)
EXTENSIONS = {
    ".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch", ".tar": "torch",
    ".safetensors": "safetensors", ".npy": "numpy", ".npz": "numpy",
    ".h5": "hdf5", ".hdf5": "hdf5", ".keras": "keras", ".json": "keras-json",
    ".weights.json": "keras-sharded", ".gguf": "gguf", ".onnx": "onnx",
}


def module(reader: Reader):
    try:
        return importlib.import_module(f"{PACKAGE}.{reader.module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{PACKAGE}.{reader.module}":
            return None          # that reader is not written (yet): skip it
        raise


def is_folder_reader(reader: Reader) -> bool:
    """A reader of a training-checkpoint folder (DCP, DeepSpeed): it claims no byte family."""
    return not reader.families


def available_formats() -> list[str]:
    """Format names whose reader module can be imported."""
    return [r.format for r in READERS if module(r) is not None]


def reader_by_name(name: str) -> Reader:
    for r in READERS:
        if r.format == name:
            return r
    raise UnknownFormatError(message(
        f"unknown format name {name!r}", expected="one of " + ", ".join(FORMATS),
        fix="pass one of those names as format=, or leave format=None to detect it", got=repr(name)))
