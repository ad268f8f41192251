"""The one exception family weightviz raises for anything a user can act on.

Every message follows one template: what happened (and where) -> what was
expected -> how to fix it -> what was received.  Use :func:`message` to build
it so the wording stays uniform.
"""
from __future__ import annotations

from typing import Iterable


class WeightvizError(Exception):
    """Base class of every error weightviz raises on purpose."""


class UnknownFormatError(WeightvizError, ValueError):
    """No reader recognised the file's bytes."""


class CorruptFileError(WeightvizError, ValueError):
    """The format was recognised but the file is truncated or malformed."""


class UnsafeCheckpointError(WeightvizError):
    """Reading the file would need code execution (pickle globals, Keras Lambda, TorchScript)."""

    def __init__(self, msg: str, *, needs: Iterable[str] = ()):
        super().__init__(msg)
        self.needs = tuple(needs)


class UnsupportedLayerError(WeightvizError, NotImplementedError):
    """A Keras layer with no torch twin yet."""


class MismatchError(WeightvizError, ValueError):
    """A strict load failed; ``.report`` holds the full report."""

    def __init__(self, msg: str, report=None):
        super().__init__(msg)
        self.report = report


def message(what: str, *, expected: str | None = None, fix: str | None = None,
            got: str | None = None) -> str:
    """Compose an error message from the four parts of the house template."""
    parts = [what.rstrip(".") + "."]
    if expected:
        parts.append(f"Expected {expected.rstrip('.')}.")
    if fix:
        fix = fix.rstrip(".")
        parts.append(fix[:1].upper() + fix[1:] + ".")
    if got:
        parts.append(f"Got: {got}")
    return " ".join(parts)


def capped(items: Iterable[str], limit: int = 10) -> str:
    """Join a list for a message, at most ``limit`` items then 'and N more'."""
    items = list(items)
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", and {len(items) - limit} more"
    return shown
