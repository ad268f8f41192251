"""Readers, one per format, behind one front door: :func:`open_checkpoint`.

Each reader module exposes ``sniff(head: bytes, path) -> bool`` and
``read(path, **options) -> Checkpoint`` (a module serving two formats names
its functions in :data:`READERS`). The registry tries content first (magic
bytes), the extension second; ``format=`` picks a reader by name.

Reader modules are imported lazily by name, so a missing or broken module
never stops the others, and opening a safetensors/NumPy/HDF5 file never
imports torch. Order matters: the Keras HDF5 reader gets the first chance at
HDF5 files (it decides by root attributes / groups) and the plain HDF5 tree
reader is the fallback; ``.keras`` zips go to the Keras reader before the npz
and torch readers look at a zip (npz first: its test is cheaper, and a zip of
``.npy`` members without ``data.pkl`` is never a torch file); ``*.safetensors.index.json`` and then a
Keras sharded-weights index (a ``weight_map`` of ``/.../vars`` groups) are claimed before other JSON
goes to the Keras JSON reader.
"""
from __future__ import annotations

import importlib
import os
from typing import NamedTuple

from ..errors import CorruptFileError, UnknownFormatError, WeightvizError, capped, message
from . import _foreign
from . import source as _source
from . import sniff as _sniff


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
)
FORMATS = tuple(r.format for r in READERS)

# extension -> reader tried when no content sniffer claims the file (second chance)
EXTENSIONS = {
    ".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch", ".tar": "torch",
    ".safetensors": "safetensors", ".npy": "numpy", ".npz": "numpy",
    ".h5": "hdf5", ".hdf5": "hdf5", ".keras": "keras", ".json": "keras-json",
    ".weights.json": "keras-sharded", ".gguf": "gguf", ".onnx": "onnx",
}


def _module(reader: Reader):
    try:
        return importlib.import_module(f"{__name__}.{reader.module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{reader.module}":
            return None          # that reader is not written (yet): skip it
        raise


def available_formats() -> list[str]:
    """Format names whose reader module can be imported."""
    return [r.format for r in READERS if _module(r) is not None]


def _reader_by_name(name: str) -> Reader:
    for r in READERS:
        if r.format == name:
            return r
    raise UnknownFormatError(message(
        f"unknown format name {name!r}", expected="one of " + ", ".join(FORMATS),
        fix="pass one of those names as format=, or leave format=None to detect it", got=repr(name)))


def _call_read(reader: Reader, path: str, options: dict):
    mod = _module(reader)
    if mod is None:
        raise UnknownFormatError(message(
            f"the {reader.format!r} reader is not available in this installation",
            fix="update weightviz", got=f"missing module weightviz.formats.{reader.module}"))
    try:
        return getattr(mod, reader.read)(path, **options)
    except WeightvizError:
        raise
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except RecursionError as exc:
        raise CorruptFileError(message(
            f"{os.path.basename(path)} nests its contents too deeply to read safely",
            expected=f"a {reader.format} file of ordinary depth", got=type(exc).__name__)) from exc
    except Exception as exc:     # last line of defence: raw library errors never escape for bad input
        raise CorruptFileError(message(
            f"{os.path.basename(path)} could not be read as {reader.format}",
            expected=f"a complete, well-formed {reader.format} file",
            fix="check the file is complete (re-download it) or pick another reader with format=",
            got=f"{type(exc).__name__}: {str(exc)[:300]}")) from exc


def detect(path: str) -> str:
    """The format name the registry would use for ``path``: the first reader whose sniffer
    claims the bytes; else the reader the extension names (it then reports, as a
    CorruptFileError or UnknownFormatError, what is wrong with the bytes); else an
    UnknownFormatError listing what was looked for and the first bytes."""
    size = _source.size(path)
    head = _sniff.read_head(path)
    if (found := _foreign.early(head)) is not None:
        raise _foreign.refusal(found, path, "first bytes " + _sniff.first_bytes(head))
    _sniff.diagnose(head, path, size)
    family = _sniff.family(head, path, size)
    for reader in READERS:
        if family not in reader.families:
            continue
        mod = _module(reader)
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
    ext = _extension(path)
    found = _foreign.by_name(path) or (None if ext in EXTENSIONS else _foreign.by_content(head))
    if found is not None:
        raise _foreign.refusal(found, path, "first bytes " + _sniff.first_bytes(head))
    if ext in EXTENSIONS and _module(_reader_by_name(EXTENSIONS[ext])) is not None:
        # extension second: the reader the name points to explains what is wrong with the bytes
        return EXTENSIONS[ext]
    raise _sniff.unknown(head, path)


def _extension(path: str) -> str:
    name = os.path.basename(path).lower()
    if name.endswith(".weights.h5"):
        return ".h5"
    if name.endswith(".weights.json"):
        return ".weights.json"
    return os.path.splitext(name)[1]


def _open_directory(path: str, options: dict):
    names = sorted(os.listdir(path))
    from .dcp_folder import folder_reader        # training checkpoints: DCP, DeepSpeed ZeRO
    if (found := folder_reader(path, names)) is not None:
        return _call_read(Reader(*found), path, options)
    if {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"} & set(names):
        from .adapter_file import weights_file     # a PEFT adapter folder: its weights, config beside
        return open_checkpoint(weights_file(path, names), **options)
    index = [n for n in names if n.endswith((".safetensors.index.json", ".bin.index.json",
                                              ".pt.index.json", ".pth.index.json"))]
    single = [n for n in names if n.endswith(".safetensors")]
    keras_index = [n for n in names if n.endswith(".weights.json")]
    if len(index) == 1:
        return open_checkpoint(os.path.join(path, index[0]), **options)
    if not index and len(single) == 1:
        return open_checkpoint(os.path.join(path, single[0]), **options)
    if not index and not single and len(keras_index) == 1:
        return open_checkpoint(os.path.join(path, keras_index[0]), **options)
    if (found := _foreign.in_directory(path, names)) is not None:
        raise _foreign.refusal(found, path, "a directory holding " + capped(names))
    raise UnknownFormatError(message(
        f"{os.path.basename(os.path.normpath(path))} is a directory",
        expected="a weight file, or a directory holding exactly one *.safetensors.index.json, *.safetensors "
                 "or Keras *.weights.json",
        fix="pass the weight file inside it", got=capped(names) or "an empty directory"))


def open_checkpoint(path, *, format: str | None = None, storage_options: dict | None = None,
                    cache=None, download: bool = False, download_limit: int | None = None,
                    progress: bool | None = None, **options):
    """Open a weight file lazily and safely and return a :class:`~weightviz.checkpoint.Checkpoint`.

    ``format`` forces a reader: one of ``'torch', 'torchscript', 'safetensors', 'numpy',
    'hdf5', 'keras-h5', 'keras', 'keras-sharded', 'keras-json', 'gguf', 'onnx'``. Without it the file's first bytes decide
    (the extension only serves to word the error when nothing matches). Reader options
    (``**options``) are passed on to the chosen reader.

    ``path`` may be a URL (``https://``, ``s3://``, ``gs://``, ``hf://``, ``memory://`` ...): the
    headers are read by byte range, tensor data when asked for (:mod:`.source`).
    ``storage_options`` go to the transport (``headers``, ``timeout``, ``block_size``, or
    fsspec's options: credentials, endpoints); ``cache`` is a folder that keeps what was read
    (a second look costs nothing); ``download=True`` fetches a whole object from a server that
    ignores ``Range`` (up to ``download_limit`` bytes, 2 GiB by default) instead of refusing it;
    ``progress`` shows a ``tqdm.auto`` bar in bytes for such a whole download (and an HDF5 file,
    fetched whole): None (the default) above 256 MiB, True always, False never.
    """
    if _source.is_url(path):
        path = _source.remote(path, storage_options=storage_options, cache=cache, download=download,
                              download_limit=download_limit, progress=progress)
    path = os.fspath(path)
    if _source.is_remote(path):
        ckpt = _open_remote(path, format, options)
        return ckpt
    if format is None and os.path.basename(path) == ".metadata":     # a DCP checkpoint's metadata
        path = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and format is None:
        return _open_directory(path, options)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if format is not None:
        reader = _reader_by_name(format)
    else:
        reader = _reader_by_name(detect(path))
    ckpt = _call_read(reader, path, options)
    if format is None and reader.format in ("safetensors", "torch"):
        from .adapter_file import attach           # LoRA keys: a PEFT / diffusers / kohya adapter
        ckpt = attach(ckpt, path)
    return ckpt


_WHOLE = {f: "HDF5 files are read whole: their strings are read by a sandboxed process from a local file"
          for f in ("keras-h5", "hdf5", "keras")}


def _open_remote(path, format, options):
    """A remote object: the same detection and readers, over ranged reads."""
    if not _source.exists(path):
        raise FileNotFoundError(f"not found: {path.source.display}")
    reader = _reader_by_name(format if format is not None else detect(path))
    if reader.format == "keras-sharded":
        raise UnknownFormatError(message(
            f"{os.path.basename(path)} is a Keras sharded-weights index, not read remotely yet",
            fix="download the index and its shards into one folder and open the index there",
            got=path.source.display))
    if reader.format in _WHOLE:         # HDF5 strings are read in a sandboxed process, from a file
        local = _source.local_copy(path)
        if format is None and reader.format == "hdf5":        # Keras or plain: the HDF5 sniffers
            reader = _reader_by_name(detect(local))           # open the file itself
        ckpt = _call_read(reader, local, options)
        ckpt.path = path
        ckpt.metadata = {**ckpt.metadata, "read_whole": _WHOLE[reader.format]}
    else:
        ckpt = _call_read(reader, path, options)
    cost = _source.summary(path)
    if cost is not None and isinstance(ckpt.metadata, dict):
        from ..render import fmt_bytes
        ckpt.metadata = {**ckpt.metadata, "remote": cost}
        tag = ", ".join(f"{k} {cost[k][:16]}" for k in ("commit", "etag") if cost.get(k))
        display = dict(ckpt.metadata.get("display") or {})
        display["source"] = cost["url"] + (f" ({tag})" if tag else "")
        display["listing read"] = (f"{cost['requests']} requests, {fmt_bytes(cost['bytes'])} of "
                                   f"{fmt_bytes(cost['size'])} in {cost['objects']} object"
                                   + ("s" if cost["objects"] != 1 else ""))
        ckpt.metadata["display"] = display
    return ckpt
