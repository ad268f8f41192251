"""The one decision of the front door: which reader gets these bytes (or which refusal).

:func:`detect` reads a file's first bytes once and decides in one straight pass:

1. a format that starts like no readable one (OpenVINO XML, ...) is refused by name;
2. clearly broken files (empty, a Git LFS pointer, HTML) get their own error;
3. the byte family (zip, HDF5, safetensors, JSON, ...) picks the sniffers that may claim the
   bytes, in the registry's order; the first that claims them wins;
4. else a foreign format known by its name or content is refused by name (TFLite, joblib, ...);
5. else the reader the extension names gets the file and explains what is wrong with it;
6. else an UnknownFormatError says what was looked for and what the first bytes are.

:func:`route_directory` decides for a folder: a training checkpoint (DCP, DeepSpeed), a PEFT
adapter, one sharded index or one weights file inside it, or a refusal. The byte tests live in
:mod:`.sniff`, the table of formats weightviz does not read in :mod:`._foreign`, the readers in
:mod:`.registry`; this module only decides.
"""
from __future__ import annotations

import os

from ..errors import UnknownFormatError, WeightvizError, capped, message
from . import _foreign
from . import sniff as _sniff
from . import source as _source
from .registry import EXTENSIONS, READERS, module, reader_by_name


def detect(path: str) -> str:
    """The format name the registry would use for ``path``: the first reader whose sniffer
    claims the bytes; else the reader the extension names (it then reports, as a
    CorruptFileError or UnknownFormatError, what is wrong with the bytes); else an
    UnknownFormatError listing what was looked for and the first bytes. A local folder: the
    folder reader's name (``dcp``, ``deepspeed``...), or that of the one file it opens."""
    if not _source.is_remote(path) and os.path.isdir(path):
        reader, target = route_directory(path)
        return reader.format if reader is not None else detect(target)
    size = _source.size(path)
    head = _sniff.read_head(path)
    if (found := _foreign.early(head)) is not None:
        raise _foreign.refusal(found, path, "first bytes " + _sniff.first_bytes(head))
    _sniff.diagnose(head, path, size)
    family = _sniff.family(head, path, size)
    for reader in READERS:
        if family not in reader.families:
            continue
        mod = module(reader)
        if mod is None:
            continue
        try:
            hit = getattr(mod, reader.sniff)(head, path)
        except WeightvizError:
            raise
        except Exception:        # a sniffer choking on odd bytes just means "not mine"
            hit = False
        if hit:
            return reader.format
    ext = extension(path)
    found = _foreign.by_name(path) or (None if ext in EXTENSIONS else _foreign.by_content(head))
    if found is not None:
        raise _foreign.refusal(found, path, "first bytes " + _sniff.first_bytes(head))
    if ext in EXTENSIONS and module(reader_by_name(EXTENSIONS[ext])) is not None:
        # extension second: the reader the name points to explains what is wrong with the bytes
        return EXTENSIONS[ext]
    raise _sniff.unknown(head, path)


def extension(path: str) -> str:
    """The extension that names a reader (``.weights.h5`` is HDF5, ``.weights.json`` a Keras index)."""
    name = os.path.basename(path).lower()
    if name.endswith(".weights.h5"):
        return ".h5"
    if name.endswith(".weights.json"):
        return ".weights.json"
    return os.path.splitext(name)[1]


INDEXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json", ".pth.index.json")


def route_directory(path: str):
    """``(reader, path)`` for a folder: a folder reader (DCP, DeepSpeed) with the folder, or
    ``(None, file)`` for the one file inside it to open (a PEFT adapter's weights, one sharded
    index, one safetensors file, one Keras sharded index); else the refusal."""
    names = sorted(os.listdir(path))
    from .dcp_folder import folder_reader        # training checkpoints: DCP, DeepSpeed ZeRO
    if (found := folder_reader(path, names)) is not None:
        return found, path
    if {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"} & set(names):
        from .adapter_file import weights_file     # a PEFT adapter folder: its weights, config beside
        return None, weights_file(path, names)
    index = [n for n in names if n.endswith(INDEXES)]
    single = [n for n in names if n.endswith(".safetensors")]
    keras_index = [n for n in names if n.endswith(".weights.json")]
    if len(index) == 1:
        return None, os.path.join(path, index[0])
    if not index and len(single) == 1:
        return None, os.path.join(path, single[0])
    if not index and not single and len(keras_index) == 1:
        return None, os.path.join(path, keras_index[0])
    if (found := _foreign.in_directory(path, names)) is not None:
        raise _foreign.refusal(found, path, "a directory holding " + capped(names))
    raise UnknownFormatError(message(
        f"{os.path.basename(os.path.normpath(path))} is a directory",
        expected="a weight file, or a directory holding exactly one *.safetensors.index.json, *.safetensors "
                 "or Keras *.weights.json",
        fix="pass the weight file inside it", got=capped(names) or "an empty directory"))


def check_folder(reader, path) -> None:
    """``format=`` named a folder reader (:func:`.registry.is_folder_reader`): ``path`` must be a
    local folder of that kind (a DCP folder may be named by its ``.metadata``); a file reader:
    ``path`` must not be a folder. Else a refusal that says what the path is and which
    ``format=`` fits it."""
    from .dcp_folder import folder_reader
    from .registry import is_folder_reader
    if not is_folder_reader(reader):
        if not _source.is_remote(path) and os.path.isdir(path):        # a file reader, a folder
            found = folder_reader(path, sorted(os.listdir(path)))
            raise UnknownFormatError(message(
                f"{os.path.basename(os.path.normpath(path))} is a folder: format="
                f"{reader.format!r} reads one file",
                fix=f"pass format={found.format!r}" if found else
                    "pass the weight file inside it, or leave format=None", got=str(path)))
        return
    kind = {"dcp": "torch.distributed.checkpoint folder (.metadata and *.distcp files)",
            "dcp-safetensors": "folder of DCP shard-*-model-*-of-*.safetensors files",
            "deepspeed": "DeepSpeed ZeRO global_step* folder (or the folder with its latest file)"}
    want = kind.get(reader.format, f"{reader.format} folder")
    where = os.path.basename(os.path.normpath(str(path)))
    if reader.format == "dcp" and where == ".metadata" and not _source.is_remote(path):
        path = os.path.dirname(os.path.abspath(path))
    if _source.is_remote(path) or not os.path.isdir(path):
        what = ("a remote object" if _source.is_remote(path)
                else "a file" if os.path.exists(path) else "not there")
        raise UnknownFormatError(message(
            f"{where} is {what}, not a local folder: format={reader.format!r} reads a {want}",
            fix="pass the checkpoint folder, or leave format=None to detect the file's format",
            got=getattr(getattr(path, "source", None), "display", None) or str(path)))
    names = sorted(os.listdir(path))
    found = folder_reader(path, names)
    if found is None or found.format != reader.format:
        raise UnknownFormatError(message(
            f"{where} is not a {want}" + (f"; it is a {found.format!r} checkpoint" if found else ""),
            fix=f"pass format={found.format!r}" if found else "pass the checkpoint folder itself, "
                "or leave format=None to detect what the folder holds",
            got=capped(names) or "an empty directory"))
