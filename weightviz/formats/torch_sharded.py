"""Sharded PyTorch checkpoints: ``pytorch_model.bin.index.json`` (Hugging Face's
``save_pretrained`` layout) with its ``*.bin`` / ``*.pt`` / ``*.pth`` shards.

The index is read like a safetensors index (:mod:`weightviz.formats._index`: size limit,
shards only from its own folder); each shard is read by :mod:`weightviz.formats.torch_file`
(``weights_only`` unpickling after a recording pass), and every tensor is checked against
the weight_map both ways."""
from __future__ import annotations

import os

from ..checkpoint import Checkpoint
from . import sniff as _sniff
from ._index import gather, load_index

SUFFIXES = (".bin.index.json", ".pt.index.json", ".pth.index.json")


def sniff(head: bytes, path) -> bool:
    return os.path.basename(str(path)).endswith(SUFFIXES) and _sniff.is_json(head)


def read(path, **options) -> Checkpoint:
    from .torch_file import read as read_shard
    path = os.fspath(path)
    wmap, shards, index_meta = load_index(path, "PyTorch sharded-checkpoint")
    entries = gather(path, wmap, shards, lambda p: dict(read_shard(p).entries))
    meta = {"shards": [os.path.basename(p) for p in shards]}
    if index_meta:
        meta["index_metadata"] = index_meta
    return Checkpoint(entries, "torch", path=path, metadata=meta)
