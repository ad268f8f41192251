"""LoRA / DoRA adapters against their base: check, numbers, lazy merge.

``check_adapter(base, adapter)`` -> :class:`AdapterReport` (one row per adapted module, a
status from :data:`STATUSES`, rank / alpha / scale, ‖ΔW‖/‖W‖, σ_max, effective rank and the
share of ΔW a bf16 / fp16 merge rounds away); ``merge(base, adapter, dtype=None)`` -> a lazy
:class:`~weightviz.checkpoint.Checkpoint` of W + ΔW; ``is_adapter(obj)``.

``modules`` groups the adapter's keys into modules and fits them to base layers, ``resolve``
lands names on the base (and proposes renames), ``plan`` makes the rows, ``delta`` holds the
arithmetic, ``report`` the result, ``merge`` the merged view, ``closeup`` one module's ΔW
(histogram, singular values) for pictures. Reading adapter files is the
front door's job (:mod:`weightviz.formats.adapter_file`).
"""
from __future__ import annotations

import os

from ..formats._peft_config import AdapterInfo
from .check import check_adapter
from .closeup import ModuleDelta, module_delta
from .merge import merge
from .report import STATUSES, AdapterReport, AdapterRow


def is_adapter(obj) -> bool:
    """True for a Checkpoint opened from an adapter, or a path to an adapter folder or file."""
    from ..checkpoint import Checkpoint
    if isinstance(obj, Checkpoint):
        return obj.adapter is not None
    if isinstance(obj, (str, os.PathLike)):
        return _is_adapter_path(os.fspath(obj))
    return False


def _is_adapter_path(path: str) -> bool:
    """A quick look: a folder holding an adapter config or weights, or a weight file whose
    names are a LoRA adapter's (a safetensors header, a torch file's listing)."""
    from ..formats import open_checkpoint
    from ..formats import sniff as _sniff
    from ..formats._peft_config import CONFIG_NAME
    from ..formats.adapter_file import WEIGHT_NAMES, naming_of
    if os.path.isdir(path):
        names = set(os.listdir(path))
        return CONFIG_NAME in names or any(w in names for w in WEIGHT_NAMES)
    if not os.path.isfile(path):
        return False
    if os.path.basename(path) in WEIGHT_NAMES:
        return True
    head = _sniff.read_head(path, 64)
    fmt = ("safetensors" if _sniff.is_safetensors(head, os.path.getsize(path))
           else "torch" if _sniff.is_zip(head) or _sniff.is_torch_legacy(head) else None)
    if fmt is None:
        return False
    try:
        ckpt = open_checkpoint(path, format=fmt)
    except Exception:        # noqa: BLE001 - unreadable as that format: not an adapter
        return False
    return naming_of(ckpt.entries) is not None


__all__ = ["AdapterInfo", "AdapterReport", "AdapterRow", "ModuleDelta", "STATUSES", "check_adapter",
           "is_adapter", "merge", "module_delta"]
