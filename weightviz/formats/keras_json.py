"""Keras architecture JSON (``model.to_json()``, Keras 1/2/3): a Checkpoint with an
``architecture`` and no tensors. Parsed with ``json`` only; nothing is deserialised."""
from __future__ import annotations

import os

from ..checkpoint import Checkpoint
from ..errors import CorruptFileError, message
from . import keras_common as kc


def sniff(head: bytes, path: str) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start.startswith(b"{"):
        return False
    window = head[:65536]
    return (b'"class_name"' in window and b'"config"' in window and b'"weight_map"' not in window
            and b'"__metadata__"' not in window)


def parse(data: bytes, path, *, what="Keras architecture JSON", keras_version=None, backend=None):
    """(normalised architecture, raw top-level object) from JSON bytes."""
    raw = kc.load_json(data, what=what, path=path)
    return kc.normalise(raw, path=path, what=what, keras_version=keras_version, backend=backend), raw


def metadata(arch: dict, raw, layout: str) -> dict:
    meta = {"layout": layout, "keras_version": arch["keras_version"], "backend": arch["backend"],
            "keras_major": kc.keras_major(raw, arch["keras_version"], arch=arch),
            "model_name": arch["config"].get("name") if isinstance(arch["config"], dict) else None,
            "lambda_layers": kc.find_lambdas(arch)}
    return {k: v for k, v in meta.items() if v is not None}


def read(path, **options) -> Checkpoint:
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > kc.MAX_JSON_BYTES:
            raise CorruptFileError(message(f"{path} is too large to be a Keras architecture JSON",
                                           expected=f"at most {kc.MAX_JSON_BYTES} bytes",
                                           got=f"{size} bytes"))
        with open(path, "rb") as f:
            data = f.read(kc.MAX_JSON_BYTES + 1)
    except OSError as e:
        raise CorruptFileError(message(f"cannot read {path}", got=str(e))) from None
    arch, raw = parse(data, path)
    return Checkpoint({}, "keras-json", path, arch, metadata(arch, raw, "keras-json"), {}, {})
