"""Sharded-checkpoint indexes (``*.safetensors.index.json``, ``pytorch_model.bin.index.json``):
a ``weight_map`` of tensor name -> shard file, read as JSON under a size limit, with every
shard a plain file name in the index's own folder (``../`` and absolute paths refused)."""
from __future__ import annotations

import json
import os

from ..errors import CorruptFileError, UnknownFormatError, message
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
    if os.path.getsize(path) > MAX_INDEX:
        raise CorruptFileError(message(f"{name} is larger than the 100 MB an index may be",
                                       expected=f"a {kind} index of a few MB",
                                       fix="check the file is the index", got=f"{os.path.getsize(path):,} bytes"))
    try:
        with open(path, "rb") as f:
            index = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_duplicates)
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
    folder = os.path.dirname(os.path.abspath(path))
    shards = list(dict.fromkeys(wmap.values()))
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
    meta = index.get("metadata") if isinstance(index.get("metadata"), dict) else {}
    return wmap, paths, meta


def gather(path: str, wmap: dict, shard_paths: list[str], read_shard) -> dict:
    """Entries of every shard (``read_shard(path) -> {name: TensorEntry}``), checked
    against the weight_map both ways."""
    name = os.path.basename(path)
    entries = {}
    for spath in shard_paths:
        shard = os.path.basename(spath)
        for tname, entry in read_shard(spath).items():
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
