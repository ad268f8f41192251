"""The front door: :func:`open_checkpoint`, one straight pass from a path or URL to a Checkpoint.

1. **byte source** (:mod:`.source`): a local path, or a URL whose bytes come by ranged reads;
2. **detection** (:mod:`.detection`): the one module that decides which reader gets the bytes,
   or which refusal they get (a folder: which file or folder reader);
3. **reader** (:mod:`.registry` names them): ``read(path, **options) -> Checkpoint`` from the
   headers, tensor data when asked.

Each reader module exposes ``sniff(head: bytes, path) -> bool`` and
``read(path, **options) -> Checkpoint`` (a module serving two formats names its functions in
:data:`READERS`); ``format=`` picks a reader by name and skips detection.
"""
from __future__ import annotations

import os

from ..errors import CorruptFileError, UnknownFormatError, WeightvizError, message
from . import source as _source
from .detection import check_folder, detect, route_directory
from .registry import (EXTENSIONS, FORMATS, READERS, Reader, available_formats,  # noqa: F401
                       module as _module, reader_by_name as _reader_by_name)


def _call_read(reader: Reader, path: str, options: dict):
    mod = _module(reader)
    if mod is None:
        raise UnknownFormatError(message(
            f"the {reader.format!r} reader is not available in this installation",
            fix="update weightviz", got=f"missing module weightviz.formats.{reader.module}"))
    check_folder(reader, path)             # format='dcp' / 'deepspeed': a folder of that kind
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


def _open_directory(path: str, options: dict):
    reader, target = route_directory(path)
    if reader is not None:
        return _call_read(reader, target, options)
    return open_checkpoint(target, **options)


def open_checkpoint(path, *, format: str | None = None, storage_options: dict | None = None,
                    cache=None, download: bool = False, download_limit: int | None = None,
                    progress: bool | None = None, **options):
    """Open a weight file lazily and safely and return a :class:`~weightviz.checkpoint.Checkpoint`.

    ``format`` forces a reader: one of ``'torch', 'torchscript', 'safetensors', 'numpy',
    'hdf5', 'keras-h5', 'keras', 'keras-sharded', 'keras-json', 'gguf', 'onnx'``, or for a
    training-checkpoint folder ``'dcp', 'dcp-safetensors', 'deepspeed'``. Without it the file's
    first bytes decide (the extension only serves to word the error when nothing matches). Reader options
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
          for f in ("keras-h5", "hdf5", "keras", "keras-sharded")}


def _open_remote(path, format, options):
    """A remote object: the same detection and readers, over ranged reads."""
    if not _source.exists(path):
        raise FileNotFoundError(f"not found: {path.source.display}")
    reader = _reader_by_name(format if format is not None else detect(path))
    if reader.format in _WHOLE:         # HDF5 strings are read in a sandboxed process, from a file
        if reader.format == "keras-sharded":                  # the index and its HDF5 shards,
            from .keras_sharded import local_folder           # into one private folder
            local = local_folder(path)
        else:
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
