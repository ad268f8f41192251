"""Jupyter widgets composing weightviz's readers, statistics, plots and reports.

``browse(source, model=None)`` -> :class:`LayerBrowser`; ``predict(model, samples)``
-> :class:`PredictionExplorer`; ``mismatch_view(report)`` -> :class:`MismatchView`.
They hold no logic of their own: statistics come from :mod:`weightviz.stats`, plots
from :mod:`weightviz.plots`, model runs from :mod:`weightviz.inference`.
Importing this package imports ipywidgets; matplotlib and torch load on first draw/run.
"""
from __future__ import annotations

from .browser import LayerBrowser, browse
from .explorer import PredictionExplorer, predict
from .mismatch import MismatchView, mismatch_view

__all__ = ["browse", "predict", "mismatch_view", "LayerBrowser", "PredictionExplorer",
           "MismatchView"]
