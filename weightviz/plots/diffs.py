"""Matplotlib views of a comparison (re-exported by :mod:`weightviz.plots`): of a
:class:`~weightviz.compare.diffreport.DiffReport`, the relative change of every tensor in model order
and one tensor's two histograms overlaid beside the histogram of their difference; of a
:class:`~weightviz.compare.layertrace.DivergenceReport`, each paired layer's output error.

Like the other plots: ``ax=`` in, what was drawn on out; no ``plt.show()``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import WeightvizError, message
from ..render import COLOURS, fmt_float, fmt_shape

_MARK = {"only_a": "a only", "only_b": "b only", "shape_differs": "shape"}


def _report(report_or_a, b=None, **kwargs):
    from ..compare.diffreport import DiffReport
    if isinstance(report_or_a, DiffReport):
        if b is not None:
            raise WeightvizError(message("pass a DiffReport, or two sources a and b, not both",
                                         got="a DiffReport and a second source"))
        return report_or_a
    if b is None:
        raise WeightvizError(message("a diff plot needs a DiffReport or two sources",
                                     fix="diff_overview(weightviz.diff(a, b)) or diff_overview(a, b)",
                                     got=type(report_or_a).__name__))
    from ..compare.tensordiff import diff
    return diff(report_or_a, b, **kwargs)


def diff_overview(report, b=None, *, ax=None, max_labels: int = 60, **diff_kwargs):
    """Relative change ``||a - b|| / ||a||`` of every tensor, in a's order, on a log scale.

    ``report``: a DiffReport, or the first of two sources (``b`` the second, compared with
    ``diff_kwargs``).  Unchanged tensors sit on the floor line in green; tensors that
    cannot be compared (only on one side, different shapes) are marked at the top."""
    import matplotlib.pyplot as plt
    rep = _report(report, b, **diff_kwargs)
    rows = list(rep.rows)
    n = len(rows)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(min(max(6.0, 0.12 * n + 2.5), 14.0), 3.8),
                                layout="constrained")
    rel = np.array([r.rel_change for r in rows], dtype=float)
    moved = rel[np.isfinite(rel) & (rel > 0)]
    floor = moved.min() / 10 if moved.size else 1e-8
    top = max(moved.max() * 3 if moved.size else 1.0, floor * 100)
    x = np.arange(n)
    for status in ("same", "changed", "dtype_differs"):
        idx = [i for i, r in enumerate(rows) if r.status == status and math.isfinite(r.rel_change)]
        if idx:
            y = np.where(rel[idx] > 0, rel[idx], floor)
            ax.bar(x[idx], y - floor / 2, bottom=floor / 2, width=0.8, color=COLOURS[status],
                   label=status.replace("_", " "))
    odd = [i for i, r in enumerate(rows) if r.status in _MARK or not math.isfinite(r.rel_change)]
    for i in odd:
        r = rows[i]
        ax.scatter([i], [top / 1.6], marker="x", s=30, color=COLOURS.get(r.status, "#cf222e"), zorder=3)
        ax.text(i, top / 1.25, _MARK.get(r.status, "nan"), rotation=90, ha="center", va="bottom",
                fontsize=6.5, color=COLOURS.get(r.status, "#cf222e"))
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, top * 4)
    ax.axhline(floor, color="#d0d7de", lw=0.6, ls=":", zorder=0)
    ax.set_xlim(-0.6, max(n - 0.4, 0.6))
    step = max(1, math.ceil(n / max_labels))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([rows[i].name for i in ticks], rotation=90, fontsize=7 if n <= 60 else 6)
    for i, lab in zip(ticks, ax.get_xticklabels()):
        if rows[i].status != "same":
            lab.set_color(COLOURS.get(rows[i].status, "#cf222e"))
    ax.set_ylabel("‖a − b‖ / ‖a‖ (log)")
    c = rep.counts
    ax.set_title(f"{n} tensors: {c.get('same', 0)} same, "
                 f"{c.get('changed', 0) + c.get('dtype_differs', 0)} changed"
                 + (f", {len(odd)} not comparable" if odd else ""), fontsize=10)
    ax.grid(axis="y", which="major", color="#eaeef2", lw=0.6)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return ax


def diff_hist(report, name: str, b=None, *, bins: int = 100, ax=None, **diff_kwargs):
    """One tensor on both sides: the two histograms overlaid on a common range (left) and
    the histogram of ``a - b`` (right).  ``report``: a DiffReport (or the first of two
    sources, ``b`` the second); ``name``: either side's tensor name.  ``ax``: None (a new
    figure) or two Axes; returns the two Axes."""
    import matplotlib.pyplot as plt
    from ..statistics.table import tensor_stats
    from ..compare.tensordiff import difference_histogram
    rep = _report(report, b, **diff_kwargs)
    row = rep[name]
    ea, eb = rep.pair(name)
    if ax is None:
        _fig, axs = plt.subplots(1, 2, figsize=(8.6, 3.0), layout="constrained",
                                 gridspec_kw={"width_ratios": [3, 2]})
    else:
        axs = list(ax)
        if len(axs) != 2:
            raise WeightvizError(message("diff_hist draws on two Axes", got=f"{len(axs)} Axes"))
    sa, sb = tensor_stats(ea), tensor_stats(eb)
    lo = min(v for v in (sa.min, sb.min, math.inf) if math.isfinite(v))
    hi = max(v for v in (sa.max, sb.max, -math.inf) if math.isfinite(v))
    if not (lo < hi):
        lo, hi = (lo - 0.5, hi + 0.5) if math.isfinite(lo) else (0.0, 1.0)
    left = axs[0]
    for s, e, colour, side in ((sa, ea, "C0", "a"), (sb, eb, "C3", "b")):
        h = tensor_stats(e, bins=bins, range=(lo, hi)).histogram
        left.stairs(h.counts, h.edges, fill=True, alpha=0.45, color=colour,
                    label=f"{side}: {e.name} ({e.dtype})")
        left.stairs(h.counts, h.edges, color=colour, lw=0.8)
    left.set_title(f"{row.name}  ·  {fmt_shape(ea.shape)}", fontsize=9)
    left.set_xlabel("value")
    left.set_ylabel("count")
    left.legend(loc="upper left", fontsize=7, frameon=False)
    right = axs[1]
    if tuple(ea.shape) == tuple(eb.shape):
        counts, edges = difference_histogram(ea, eb, bins=min(bins, 60))
        right.stairs(counts, edges, fill=True, color=COLOURS.get(row.status, "#57606a"), alpha=0.85)
        right.set_title(f"a − b: max |a−b| {fmt_float(row.max_abs)}, "
                        f"{row.frac_changed:.1%} changed", fontsize=9)
        right.set_xlabel("difference")
    else:
        right.text(0.5, 0.5, f"shapes differ:\n{fmt_shape(ea.shape)} vs {fmt_shape(eb.shape)}"
                   + (f"\n{row.relation}" if row.relation else ""),
                   ha="center", va="center", transform=right.transAxes, fontsize=9)
        right.set_axis_off()
    return np.array(axs, dtype=object) if ax is None else ax


def divergence_plot(report, *, ax=None):
    """Max abs error of each paired layer's output in execution order (log scale), the final
    outputs last: layers within tolerance in green, beyond it in red, the first one where the
    models part annotated with its name; the dashed line is ``atol``.  ``report``: a
    :class:`~weightviz.compare.layertrace.DivergenceReport`.  Returns the Axes."""
    import matplotlib.pyplot as plt
    from ..compare.layertrace import DivergenceReport
    if not isinstance(report, DivergenceReport):
        raise WeightvizError(message("divergence_plot draws a DivergenceReport",
                                     fix="divergence_plot(weightviz.divergence(model_a, model_b, x))",
                                     got=type(report).__name__))
    rows = list(report.rows)
    n = len(rows)
    if ax is None:
        _fig, ax = plt.subplots(figsize=(min(max(5.0, 0.45 * n + 2.5), 12.0), 3.4),
                                layout="constrained")
    err = np.array([r.max_abs_error for r in rows], dtype=float)
    seen = err[np.isfinite(err) & (err > 0)]
    floor = min(report.atol / 10, seen.min() / 10 if seen.size else 1.0) if report.atol > 0 else (
        seen.min() / 10 if seen.size else 1e-8)
    top = max(seen.max() * 3 if seen.size else 1.0, report.atol * 100, floor * 100)
    x = np.arange(n)
    for ok, label, colour in ((True, "within tolerance", COLOURS["ok"]),
                              (False, "beyond tolerance", COLOURS["bad"])):
        idx = [i for i, r in enumerate(rows) if r.within == ok and math.isfinite(err[i])]
        if idx:
            y = np.where(err[idx] > 0, err[idx], floor)
            ax.bar(x[idx], y - floor / 2, bottom=floor / 2, width=0.7, color=colour, label=label)
    for i, r in enumerate(rows):
        if not math.isfinite(err[i]):
            ax.scatter([i], [top / 1.6], marker="x", s=30, color=COLOURS["bad"], zorder=3)
            ax.text(i, top / 1.25, r.status, rotation=90, ha="center", va="bottom", fontsize=7,
                    color=COLOURS["bad"])
    if report.atol > 0:
        ax.axhline(report.atol, color="#57606a", lw=0.8, ls="--", zorder=0, label="atol")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, top * 4)
    ax.set_xlim(-0.6, max(n - 0.4, 0.6))
    ax.set_xticks(x)
    ax.set_xticklabels([r.name_a if r.name_a == r.name_b else f"{r.name_a} ↔ {r.name_b}"
                        for r in rows], rotation=60, ha="right", fontsize=8)
    first = report.first
    for i, lab in enumerate(ax.get_xticklabels()):
        if not rows[i].within:
            lab.set_color(COLOURS["bad"])
    ax.set_ylabel("max |a − b| (log)")
    where = (None if first is None else "the final outputs" if first.index == n
             else f"layer {first.index}, {first.name_a}")
    ax.set_title(f"models part at {where}" if first is not None else
                 f"no divergence in {n} compared outputs", fontsize=10,
                 color=COLOURS["bad"] if first is not None else COLOURS["ok"])
    ax.grid(axis="y", which="major", color="#eaeef2", lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return ax
