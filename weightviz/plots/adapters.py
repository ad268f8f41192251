"""Matplotlib views of a LoRA adapter against its base (re-exported by :mod:`weightviz.plots`):
every adapted module's relative change ‖ΔW‖/‖W‖ beside the share of ΔW a bf16 / fp16 merge
rounds away; and one module's ΔW histogram beside its singular values.

Like the other plots: ``ax=`` in, what was drawn on out; no ``plt.show()``.
"""
from __future__ import annotations

import numpy as np

from ..errors import WeightvizError, message
from ..render import COLOURS

_LOSS_COLOURS = {"bfloat16": "#cf222e", "float16": "#0969da"}


def _rows(report):
    from ..adapters import AdapterReport
    if not isinstance(report, AdapterReport):
        raise WeightvizError(message(
            "adapter_overview needs an AdapterReport",
            fix="adapter_overview(weightviz.check(base, 'adapter_dir/'))", got=type(report).__name__))
    return [r for r in report if r.rel_delta is not None]


def adapter_overview(report, *, ax=None, max_labels: int = 60):
    """Two panels, one bar per adapted module in the adapter's order: the relative change
    ‖ΔW‖_F / ‖W‖_F (log scale when it spans decades) and the share of ΔW's entries a merge in bfloat16 / float16
    rounds away.  ``ax``: a pair of Axes, or None for a new figure.  Returns the pair."""
    import matplotlib.pyplot as plt
    rows = _rows(report)
    if not rows:
        raise WeightvizError(message(
            "no adapted module has numbers to plot",
            expected="modules that fit the base (status ok or untrained)",
            fix="look at the report's rows: the adapter does not land on this base", got=repr(report.verdict)))
    n = len(rows)
    if ax is None:
        _fig, ax = plt.subplots(1, 2, figsize=(min(max(7.0, 0.25 * n + 4), 14.0), 3.4),
                                layout="constrained")
    left, right = ax
    x = np.arange(n)
    rel = np.array([r.rel_delta for r in rows], dtype=float)
    floor = max(rel[rel > 0].min() / 10, 1e-12) if (rel > 0).any() else 1e-8
    colours = [COLOURS["ok"] if r.status == "ok" else COLOURS["info"] for r in rows]
    left.bar(x, np.maximum(rel, floor), color=colours, width=0.8)
    if rel.max() > 100 * floor * 10:          # a log scale only where the changes span decades
        left.set_yscale("log")
    left.set_ylabel("‖ΔW‖ / ‖W‖")
    left.set_title("relative change per module")
    width = 0.4
    for i, dt in enumerate(("bfloat16", "float16")):
        share = np.array([100 * (r.merge_loss or {}).get(dt, np.nan) for r in rows], dtype=float)
        right.bar(x + (i - 0.5) * width, np.nan_to_num(share), width=width, color=_LOSS_COLOURS[dt],
                  label=f"{dt} merge")
    right.set_ylabel("% of ΔW's entries lost")
    right.set_title("what a merge rounds away")
    right.legend(fontsize=8, frameon=False)
    labels = [r.module for r in rows]
    for a in (left, right):
        a.set_xlim(-0.6, n - 0.4)
        if n <= max_labels:
            a.set_xticks(x, labels, rotation=90 if n > 6 else 0, fontsize=8)
        else:
            a.set_xticks([])
            a.set_xlabel(f"{n} modules")
    return ax


def delta_panels(delta, *, ax=None, bins: int = 80):
    """One adapted module: the histogram of ΔW's entries (log counts) and ΔW's singular values
    (the r×r spectrum).  ``delta``: a :class:`~weightviz.adapters.closeup.ModuleDelta`
    (``weightviz.adapters.module_delta(base, adapter, module)``).  Returns the pair of Axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _fig, ax = plt.subplots(1, 2, figsize=(8.0, 2.8), layout="constrained",
                                gridspec_kw={"width_ratios": [3, 2]})
    left, right = ax
    counts, edges = delta.counts, delta.edges
    if counts is not None and counts.sum() > 0:
        left.stairs(counts, edges, fill=True, color=COLOURS["changed"], alpha=0.85)
        left.set_yscale("log")
    left.set_title(f"ΔW of {delta.module}", fontsize=9)
    left.set_xlabel("ΔW entry")
    left.set_ylabel("count")
    sig = np.asarray(delta.sigma, dtype=float)
    right.bar(np.arange(1, sig.size + 1), sig, color=COLOURS["renamed"], width=0.7)
    right.set_title(f"singular values (rank {sig.size})", fontsize=9)
    right.set_xlabel("i")
    right.set_ylabel("σᵢ")
    if sig.size <= 32:
        right.set_xticks(np.arange(1, sig.size + 1))
    return ax
