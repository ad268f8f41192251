"""weightviz: open, inspect, check and load neural-network weight files.

The public verbs live here and nothing else; each imports its module on first
use so ``import weightviz`` stays light (no torch, no matplotlib).  No module shares a
verb's name (``builders`` builds, ``statistics`` computes ``stats``), so importing any
submodule never rebinds a verb.
"""
from __future__ import annotations

from .errors import (CorruptFileError, MismatchError, UnknownFormatError,
                     UnsafeCheckpointError, UnsupportedLayerError, WeightvizError)

__version__ = "0.1.0"

__all__ = [
    "open", "build", "build_mlp", "check", "load", "merge", "stats", "diff", "divergence", "hist",
    "plot_overview", "browse", "predict", "WeightvizError", "UnknownFormatError", "CorruptFileError",
    "UnsafeCheckpointError", "UnsupportedLayerError", "MismatchError",
]


def open(path, *, format: str | None = None, **options):  # noqa: A001 - the verb users expect
    """Open a weight file lazily and safely; see :func:`weightviz.formats.open_checkpoint`."""
    from .formats import open_checkpoint
    return open_checkpoint(path, format=format, **options)


def build(source, **kwargs):
    from .models.builders import build as _build
    return _build(source, **kwargs)


def build_mlp(weights, biases=None, activations=None, **kwargs):
    from .models.builders import build_mlp as _build_mlp
    return _build_mlp(weights, biases, activations, **kwargs)


def check(model, source, **kwargs):
    """Check a checkpoint against a model (-> :class:`~weightviz.matching.report.Report`), or a
    LoRA/PEFT adapter against its base (-> :class:`~weightviz.adapters.AdapterReport`)."""
    from os import PathLike
    if isinstance(source, (str, PathLike)):      # opened once: its reader says if it is an adapter
        from .formats import open_checkpoint
        opened = open_checkpoint(source)
        adapter = opened.adapter is not None
        source = source if adapter else opened
    else:
        from .adapters import is_adapter
        adapter = is_adapter(source)
    if adapter:
        from .adapters import check_adapter
        return check_adapter(model, source, **kwargs)
    from .matching.match import check as _check
    return _check(model, source, **kwargs)


def load(model, source, *args, **kwargs):
    from .matching.match import load as _load
    return _load(model, source, *args, **kwargs)


def merge(base, adapter, dtype=None, **kwargs):
    """A lazy Checkpoint of ``base`` with a LoRA/PEFT ``adapter`` merged in (W + ΔW computed when
    a tensor is read, in ``dtype``, default the base's); see :func:`weightviz.adapters.merge`."""
    from .adapters import merge as _merge
    return _merge(base, adapter, dtype=dtype, **kwargs)


def stats(source, **kwargs):
    from .statistics.table import stats as _stats
    return _stats(source, **kwargs)


def diff(a, b, **kwargs):
    """Compare two checkpoints or models tensor by tensor; see :func:`weightviz.compare.tensordiff.diff`."""
    from .compare.tensordiff import diff as _diff
    return _diff(a, b, **kwargs)


def divergence(model_a, model_b, *inputs, **kwargs):
    """Run two models side by side and find the first layer where their outputs part;
    see :func:`weightviz.compare.layertrace.divergence`."""
    from .compare.layertrace import divergence as _divergence
    return _divergence(model_a, model_b, *inputs, **kwargs)


def hist(source, name, **kwargs):
    from .plots.weights import hist as _hist
    return _hist(source, name, **kwargs)


def plot_overview(source, **kwargs):
    from .plots.weights import plot_overview as _overview
    return _overview(source, **kwargs)


def browse(source, **kwargs):
    from .widgets import browse as _browse
    return _browse(source, **kwargs)


def predict(model, samples, **kwargs):
    from .widgets import predict as _predict
    return _predict(model, samples, **kwargs)
