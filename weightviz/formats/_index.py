"""Sharded-checkpoint indexes (``*.safetensors.index.json``, ``pytorch_model.bin.index.json``):
a ``weight_map`` of tensor name -> shard file, read as JSON under a size limit, with every
shard a plain file name in the index's own folder (``../`` and absolute paths refused)."""
from __future__ import annotations

import json
import os

from ..errors import CorruptFileError, UnknownFormatError, message
from . import source as _source
from .limits import SAFETENSORS_MAX_INDEX as MAX_INDEX


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def load_index(path: str, kind: str) -> tuple[dict, list[str], dict]:
    """(weight_map, shard paths in first-use order, the index's own metadata)."""
    name = os.path.basename(path)
    size = _source.size(path)
    if size > MAX_INDEX:
        raise CorruptFileError(message(f"{name} is larger than the 100 MB an index may be",
                                       expected=f"a {kind} index of a few MB",
                                       fix="check the file is the index", got=f"{size:,} bytes"))
    try:
        index = json.loads(_source.read_at(path, 0, size).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFileError(message(
            f"{name} is not valid JSON", expected=f"a {kind} index {{'metadata':..., 'weight_map':...}}",
            fix="download the index again", got=str(exc)[:200])) from None
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
        raise UnknownFormatError(message(
            f"{name} is JSON but not a {kind} index", expected="a 'weight_map' of tensor name -> shard file",
            fix="open the shard files, or the Keras JSON with format='keras-json'",
            got="keys " + ", ".join(map(str, index)) if isinstance(index, dict) else type(index).__name__))
    shards = list(dict.fromkeys(wmap.values()))
    if _source.is_remote(path):          # shards beside the index, on its host and revision
        return wmap, [_source.sibling(path, s, what="shard") for s in shards], _index_meta(index)
    folder = os.path.dirname(os.path.abspath(path))
    paths = []
    for shard in shards:
        if os.path.isabs(shard) or os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise CorruptFileError(message(
                f"{name} names a shard outside its own folder", expected="plain file names",
                fix="fix the index's weight_map", got=repr(shard)))
        spath = os.path.join(folder, shard)
        if not os.path.isfile(spath):
            raise CorruptFileError(message(
                f"shard {shard} listed in {name} is missing", expected=f"{len(shards)} shard files next to the index",
                fix="download every shard into the same folder", got=f"missing {shard}"))
        paths.append(spath)
    return wmap, paths, _index_meta(index)


def _index_meta(index: dict) -> dict:
    return index.get("metadata") if isinstance(index.get("metadata"), dict) else {}


def _read_remote(path: str, shard_paths: list, read_shard, learn_head: bool) -> list:
    """Remote shards read concurrently; with ``learn_head`` the first shard's header size
    sets the first read of the others (one request each when the headers are alike)."""
    name = os.path.basename(path)

    def one(spath):
        try:
            return read_shard(spath)
        except FileNotFoundError:
            shard = os.path.basename(spath)
            raise CorruptFileError(message(
                f"shard {shard} listed in {name} is missing", expected="every shard beside the index",
                fix="check the index and the shards belong together", got=f"not found: {shard}")) from None
    if not shard_paths:
        return []
    first = one(shard_paths[0])
    head = None
    if learn_head:
        n = _source.held(shard_paths[0])
        head = n + n // 32 + 2048 if n > 4096 else None
    return [first] + _source.parallel(one, shard_paths[1:], head=head)


def gather(path: str, wmap: dict, shard_paths: list[str], read_shard, learn_head: bool = False) -> dict:
    """Entries of every shard (``read_shard(path) -> {name: TensorEntry}``), checked
    against the weight_map both ways."""
    name = os.path.basename(path)
    entries = {}
    shard_entries = (_read_remote(path, shard_paths, read_shard, learn_head) if _source.is_remote(path)
                     else map(read_shard, shard_paths))
    for spath, found in zip(shard_paths, shard_entries):
        shard = os.path.basename(spath)
        for tname, entry in found.items():
            if wmap.get(tname) != shard:
                raise CorruptFileError(message(
                    f"shard {shard} holds tensor {tname!r} that {name} does not map to it",
                    expected="the index and the shards to agree", fix="download matching files",
                    got=f"weight_map[{tname!r}] = {wmap.get(tname)!r}"))
            entries[tname] = entry
    missing = [k for k in wmap if k not in entries]
    if missing:
        raise CorruptFileError(message(
            f"{len(missing)} tensors listed in {name} are not in their shards",
            expected="every weight_map entry to exist", fix="download matching files",
            got=", ".join(missing[:10])))
    return entries
