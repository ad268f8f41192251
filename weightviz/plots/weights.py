"""Matplotlib views of checkpoint weights: histograms, a model overview, heatmaps, kernel grids.

Every function takes ``ax=`` and returns what it drew on; none calls ``plt.show()``
or touches pyplot's "current" figure/axes.  When ``ax`` is None a new figure is made
with ``plt.subplots`` (a pyplot-managed figure), so in Jupyter (``%matplotlib inline``)
it displays at the end of the cell like any pandas/seaborn plot; close it with
``plt.close(ax.figure)`` when drawing many in a loop.  Histograms are drawn with
``ax.stairs`` over counts precomputed by :mod:`weightviz.statistics` (one streaming scan).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import WeightvizError, message
from .images import _source, diverging_limit, select
from .images import heatmap_image, kernel_grid_image  # noqa: F401  (plots' public names too)
from .diffs import diff_hist, diff_overview, divergence_plot  # noqa: F401  (here too)
from ..render import fmt_float, fmt_shape

FINE_BINS = 4096          # clip= percentiles: two refining histograms, range / 4096**2
DIVERGING = "RdBu_r"      # colormap of heatmaps and kernel grids, symmetric around 0
PROBLEM_FLAGS = ("nan", "inf", "all_zero", "constant", "dead_units", "outliers")


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _clip_range(clip) -> tuple[float, float] | None:
    if clip is None or clip is False:
        return None
    if clip is True:
        return (0.5, 99.5)
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not 0 <= lo < hi <= 100:
        raise WeightvizError(message("clip must be a pair of percentiles",
                                     expected="(low, high) with 0 <= low < high <= 100, or True "
                                              "for (0.5, 99.5)", got=repr(clip)))
    return lo, hi


def _tensor_hist(ckpt, table, name, bins, pct):
    from ..statistics.table import tensor_stats
    if ckpt is None:
        s = table[name]
        if pct is not None:
            raise WeightvizError(message(
                "clip= needs the tensor data, but a StatsTable holds only histograms",
                fix="pass the checkpoint (path, Checkpoint, state dict or module) instead"))
        return s, None
    entry = ckpt[name]
    s = tensor_stats(entry, bins=bins, fmt=ckpt.format)
    if pct is None or not s.finite or s.min == s.max:
        return s, None
    fine = tensor_stats(entry, bins=FINE_BINS, fmt=ckpt.format).histogram

    def quantile(q):           # refine inside the fine bin holding it: range / FINE_BINS**2
        est = fine.quantile(q)
        i = int(np.clip(np.searchsorted(fine.edges, est, side="right") - 1, 0, FINE_BINS - 1))
        sub = tensor_stats(entry, bins=FINE_BINS, range=(fine.edges[i], fine.edges[i + 1]),
                           fmt=ckpt.format).histogram
        return sub.quantile(q)
    lo, hi = quantile(pct[0] / 100), quantile(pct[1] / 100)
    if not hi > lo:
        return s, None
    return tensor_stats(entry, bins=bins, range=(lo, hi), fmt=ckpt.format), pct


def _note(s, pct) -> str:
    lines = [f"n = {s.numel:,}"]
    if s.finite:
        lines.append(f"mean {fmt_float(s.mean)}, std {fmt_float(s.std)}")
    zero_n = round(s.zeros * s.numel)
    lines.append(f"zeros: {zero_n:,} ({s.zeros:.1%})" if s.numel else "zeros: 0")
    if s.dead_units:
        lines.append(f"dead units: {s.dead_units:,}")
    if s.nan:
        lines.append(f"NaN: {s.nan:,}")
    if s.inf:
        lines.append(f"Inf: {s.inf:,}")
    if pct is not None:
        lines.append(f"clipped to {fmt_float(pct[0])}–{fmt_float(pct[1])} pct: "
                     f"{s.underflow:,} below, {s.overflow:,} above")
    return "\n".join(lines)


def _special(s) -> str | None:
    if s.numel == 0:
        return "empty tensor (0 values)"
    if not s.finite:
        return f"no finite values (NaN: {s.nan:,}, Inf: {s.inf:,})"
    if s.finite == 1:
        return f"single value: {fmt_float(s.min)}"
    if s.min == s.max:
        return f"constant: all {s.finite:,} finite values = {fmt_float(s.min)}"
    return None


def _draw_hist(ax, s, pct, log, colour, alpha, annotate_at):
    special = _special(s)
    if s.numel and s.finite:
        ax.stairs(s.counts, s.edges, fill=True, color=colour, alpha=alpha,
                  label=f"{s.name} ({s.dtype} {fmt_shape(s.shape)})")
    if special:
        ax.text(0.02, 0.97, special, transform=ax.transAxes, ha="left", va="top",
                fontsize=8.5, color="#57606a", gid="weightviz-special", wrap=True)
    ax.text(0.98, annotate_at, _note(s, pct), transform=ax.transAxes, ha="right", va="top",
            fontsize=7.5, color=colour, gid="weightviz-note",
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#d0d7de", alpha=0.85))


def hist(source, name_or_layer: str, *, bins: int = 100, log: bool = False, clip=None,
         ax=None):
    """Histogram of a tensor, or of a layer's weight and bias (drawn separately).

    ``name_or_layer``: a tensor name ('fc1.weight', 'dense/kernel') or a layer prefix
    ('fc1', 'dense'); a layer draws its weight/kernel and bias.  ``log``: log-scaled
    counts.  ``clip``: (low, high) percentiles (True = (0.5, 99.5)) to zoom past
    outliers; the clipped counts are annotated.  NaN/Inf/zero counts are annotated;
    empty, constant and single-value tensors get a note in the axes.

    ``ax=None``: a new figure with one panel per tensor; returns the Axes (one tensor)
    or an array of Axes.  ``ax`` an Axes: every tensor drawn on it in its own colour
    (with a legend); returns it.  ``ax`` a sequence of Axes: one tensor on each.
    """
    ckpt, table = _source(source)
    names = select(ckpt if ckpt is not None else table, name_or_layer,
                   ckpt.layers() if ckpt is not None else None)
    pct = _clip_range(clip)
    items = [_tensor_hist(ckpt, table, n, int(bins), pct) for n in names]
    if ax is None:
        k = len(items)
        _fig, axs = _plt().subplots(1, k, figsize=(4.6 if k == 1 else 3.8 * k, 3.2),
                                    squeeze=False, layout="constrained")
        axes = list(axs[0])
    elif hasattr(ax, "stairs"):
        axes = [ax] * len(items)
    else:
        axes = list(ax)
        if len(axes) != len(items):
            raise WeightvizError(message(
                f"{name_or_layer!r} selects {len(items)} tensors but {len(axes)} Axes were given",
                expected=f"{len(items)} Axes, one Axes, or ax=None", got=str(names)))
    shared = len(set(map(id, axes))) < len(axes)
    for i, ((s, p), a) in enumerate(zip(items, axes)):
        colour = f"C{i}"
        _draw_hist(a, s, p, log, colour, 0.55 if shared else 0.85,
                   0.98 - (0.27 * i if shared else 0))
        if not shared:
            a.set_title(f"{s.name}  ·  {s.dtype} {fmt_shape(s.shape)}", fontsize=9)
    from matplotlib.ticker import MaxNLocator
    for a in dict.fromkeys(axes):
        a.set_xlabel("value")
        a.set_ylabel("count (log)" if log else "count")
        a.xaxis.set_major_locator(MaxNLocator(5))
        top = max([int(s.counts.max()) for (s, _), b in zip(items, axes) if b is a and s.finite]
                  or [1])
        if log:
            a.set_yscale("log")
            a.set_ylim(0.7, max(top, 1) * 10 ** (0.45 * max(np.log10(max(top, 1)), 1)))
        else:                                  # headroom for the notes
            a.set_ylim(0, top * (1.5 if shared and len(items) > 1 else 1.4))
        if shared and len(items) > 1:
            a.legend(loc="upper left", fontsize=7, frameon=False)
            a.set_title(f"{name_or_layer}", fontsize=9)
    if ax is None:
        return axes[0] if len(axes) == 1 else np.array(axes, dtype=object)
    return ax


def plot_overview(source, ax=None, *, max_labels: int = 60):
    """The whole model on one Axes: std and |max| of every float tensor, in checkpoint
    order, on a log scale; tensors with problem flags (NaN, Inf, all-zero, constant,
    dead units, outliers) are ringed in red with red tick labels.  Tick labels are
    thinned to about ``max_labels`` (flagged tensors always labelled).  ``source`` may
    be a StatsTable (no rescan).  Integer/bool buffers and empty tensors are left out
    (counted in the title)."""
    from ..statistics.table import StatsTable, stats
    table = source if isinstance(source, StatsTable) else stats(source)
    rows = [s for s in table.values()
            if s.numel and not ({"integer", "bool"} & set(s.flags))]
    skipped = len(table) - len(rows)
    n = len(rows)
    if ax is None:
        _fig, ax = _plt().subplots(figsize=(min(max(6.0, 0.1 * n + 2.5), 14.0), 4.2),
                                   layout="constrained")
    x = np.arange(n)
    std = np.array([s.std for s in rows], dtype=float)
    amax = np.array([s.absmax for s in rows], dtype=float)
    positive = np.concatenate([std, amax])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    floor = positive.min() / 10 if positive.size else 1e-3
    bad = np.array([bool(set(s.flags) & set(PROBLEM_FLAGS)) for s in rows], dtype=bool)

    def shown(v):
        return np.where(np.isfinite(v) & (v > 0), v, floor)
    marker = "o" if n <= 150 else "."
    ax.plot(x, shown(amax), marker=marker, ms=3, lw=0.8, color="C1", label="|max|")
    ax.plot(x, shown(std), marker=marker, ms=3, lw=0.8, color="C0", label="std")
    if bad.any():
        ax.scatter(x[bad], shown(amax)[bad], s=60, facecolors="none", edgecolors="#cf222e",
                   linewidths=1.4, zorder=3, label="flagged")
    ax.set_yscale("log")
    ax.axhline(floor, color="#d0d7de", lw=0.6, ls=":", zorder=0)
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))
    step = max(1, math.ceil(n / max_labels))
    ticks = sorted(set(range(0, n, step)) | (set(np.flatnonzero(bad)) if bad.sum() <= max_labels else set()))
    ax.set_xticks(ticks)
    ax.set_xticklabels([rows[i].name for i in ticks], rotation=90,
                       fontsize=7 if n <= 60 else 6)
    for i, lab in zip(ticks, ax.get_xticklabels()):
        if bad[i]:
            lab.set_color("#cf222e")
    title = f"{n} tensors: std and |max| per tensor"
    if skipped:
        title += f" ({skipped} integer/bool/empty left out)"
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("value (log)")
    ax.grid(axis="y", which="major", color="#eaeef2", lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if not n:
        ax.text(0.5, 0.5, "no float tensors", transform=ax.transAxes, ha="center")
    return ax


def _diverging(ax, img, title, extent=None, bad="#f6f8fa"):
    import matplotlib
    v = diverging_limit(img)
    cmap = matplotlib.colormaps[DIVERGING].with_extremes(bad=bad)
    im = ax.imshow(img, cmap=cmap, vmin=-v, vmax=v, aspect="auto", interpolation="nearest",
                   extent=extent)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    ax.set_title(title, fontsize=9)
    return im


def heatmap(source, name: str, ax=None, *, max_size: int = 256):
    """A 2-D weight as an image (rows = output units in torch layout), block-averaged
    down to at most ``max_size`` pixels a side, read in bounded row slices. 1-D
    tensors show as one row; >2-D are flattened to (dim 0, rest)."""
    img, lab = heatmap_image(source, name, max_size=max_size)
    if ax is None:
        _fig, ax = _plt().subplots(figsize=(5.5, 4.2), layout="constrained")
    _diverging(ax, img, lab["title"], extent=lab["extent"])
    ax.set_xlabel(lab["xlabel"])
    ax.set_ylabel(lab["ylabel"])
    return ax


def kernel_grid(source, name: str, ax=None, *, n: int = 64, layout: str | None = None,
                reduce: str = "mean"):
    """Conv kernels as an image grid: the first ``n`` filters, each averaged over its input
    channels (``reduce='mean'``) or its first channel (``'first'``).  ``layout``: 'torch'
    (O, I, [D,] H, W) or 'keras' ([D,] H, W, I, O); None picks 'keras' for a tensor named
    like a Keras kernel ('conv/kernel') or from a Keras file, else 'torch'.  3-D kernels
    (1-D convolutions) show as one-row images; 3-D convolutions are averaged over depth."""
    img, lab = kernel_grid_image(source, name, n=n, layout=layout, reduce=reduce)
    if ax is None:
        _fig, ax = _plt().subplots(figsize=(5.0, 4.6), layout="constrained")
    _diverging(ax, img, lab["title"], bad=lab["bad"])
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
