"""Your own model classes, named by an import path ``"pkg.module:Class"``.

This imports and runs code *you* name (on the command line or in a call), never code named
by a file's contents; :mod:`weightviz.models.builders`, :mod:`weightviz.matching.match` and the CLI share it.
"""
from __future__ import annotations

import importlib
import os
import re

from ..errors import WeightvizError, capped, message

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(source) -> bool:
    return isinstance(source, str) and bool(_IMPORT_PATH.match(source)) and not os.path.exists(source)


def from_import_path(spec: str, kwargs: dict | None = None):
    """Instantiate ``"pkg.module:Class"`` (or ``"pkg.module:factory"``) with ``kwargs``.

    This imports and runs *your* code, named by you; nothing is imported from a file's contents.
    """
    if not is_import_path(spec):
        raise WeightvizError(message(f"{spec!r} is not an import path",
                                     expected='"pkg.module:Class", e.g. "torchvision.models:resnet18"',
                                     got=repr(spec)))
    mod_name, attr = spec.split(":", 1)
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise WeightvizError(message(f"cannot import module {mod_name!r} for {spec!r}",
                                     fix="check the spelling, and that the package is installed or the "
                                         "current directory holds it", got=f"{type(e).__name__}: {e}")) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            raise WeightvizError(message(f"module {mod_name!r} has no attribute {attr!r}",
                                         fix="name a class or factory function defined in that module",
                                         got=f"names there: {capped(public, 20)}"))
        obj = getattr(obj, part)
    if not callable(obj):
        raise WeightvizError(message(f"{spec!r} is not callable", expected="a class or a factory function"))
    try:
        model = obj(**(kwargs or {}))
    except TypeError as e:
        raise WeightvizError(message(f"could not build {spec!r} with kwargs {kwargs or {}}",
                                     fix="pass the constructor's arguments as kwargs (CLI: --kwargs JSON)",
                                     got=f"TypeError: {e}")) from e
    if not (hasattr(model, "state_dict") and hasattr(model, "load_state_dict")):
        raise WeightvizError(message(f"{spec!r} did not return a torch.nn.Module",
                                     got=type(model).__name__))
    return model
