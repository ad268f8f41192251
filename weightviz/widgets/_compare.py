"""The LayerBrowser's comparison view (``browse(a, compare=b)``): for the selected tensor,
its row of :func:`weightviz.diff` (status, max |a−b|, relative change, cosine) and the two
sides' histograms overlaid beside the histogram of their difference."""
from __future__ import annotations

import ipywidgets as w

from ..render import badges_html, esc, fmt_float, fmt_shape
from ._base import Canvas, side_by_side, small_labels


class CompareView:
    """``box`` (the widget), ``report`` (the DiffReport), ``show(name)``, ``caption``."""

    def __init__(self, ckpt, other, *, bins: int = 100, cache_size: int = 32):
        from ..compare.tensordiff import diff
        self.report = diff(ckpt, other, progress=False)
        self.bins = int(bins)
        self.caption = w.HTML()
        self.canvas = Canvas(6.0, 2.2, dpi=96, cache_size=cache_size)
        self.canvas.image.add_class("wv-diff")
        self.box = w.VBox([self.caption, self.canvas.image])
        self.shown: str | None = None

    def status(self, name: str) -> str | None:
        try:
            return self.report[name].status
        except KeyError:
            return None

    def show(self, name: str) -> None:
        from ..plots import weights as plots
        try:
            row = self.report[name]
        except KeyError:
            row = None
        if row is None or row.status in ("only_a", "only_b"):
            what = "no tensor of this name on the other side" if row is not None else "not compared"
            self.caption.value = (f"<div style='font-size:12px;margin-top:6px'>compare: "
                                  f"{badges_html(row.status) if row else ''} {esc(what)}</div>")
            self.canvas.hide()
            self.shown = None
            return
        bits = [badges_html(row.status)]
        if row.name_b != row.name:
            bits.append(f"b: <code>{esc(row.name_b)}</code>")
        if row.shape_a != row.shape_b:
            bits.append(f"{esc(fmt_shape(row.shape_a))} vs {esc(fmt_shape(row.shape_b))}")
        if row.max_abs == row.max_abs:
            bits += [f"max |a−b| {esc(fmt_float(row.max_abs))}",
                     f"relative change {esc(fmt_float(row.rel_change))}",
                     f"{row.frac_changed:.1%} of values changed"]
        if row.relation:
            bits.append(esc(row.relation))
        self.caption.value = (f"<div style='font-size:12px;margin-top:6px'>compare with "
                              f"{esc(self.report.b)}: {' · '.join(bits)}</div>")

        def draw(fig):
            axs = side_by_side(fig)
            plots.diff_hist(self.report, name, bins=self.bins, ax=axs)
            small_labels(axs)
        self.canvas.render(("diff", name), draw)
        self.shown = name
