"""LayerBrowser: a filterable list of a checkpoint's tensors; the selected one gets its
statistics card, its layer's weight and bias histograms, and a heatmap (2-D) or a
kernel grid (convolutions).

Statistics come from :mod:`weightviz.stats` (computed per tensor on first selection
and cached; a small checkpoint is scanned up front so the list shows every flag),
plots from :mod:`weightviz.plots`, match status from :func:`weightviz.matching.match.check`.
The histogram Figure is reused and rendered to PNG (see :mod:`._base`); the heatmap /
kernel grid is coloured pixels plus an HTML caption (see :mod:`._structure`).
"""
from __future__ import annotations

import re
import uuid

import ipywidgets as w

from ..checkpoint import Checkpoint
from ..errors import WeightvizError, message
from ..render import COLOURS, View, badges_html, esc, fmt_bytes, fmt_shape
from ._structure import StructureView
from ._base import Canvas, error_box, guarded, pin_text, short, style_tag
from ._background import Background
from ._card import MARKS, SHORT_FLAGS, WARN_FLAGS, header_html, legend_html, status_line, tensor_card

#: Scan every tensor when the browser opens if the checkpoint holds at most this many bytes.
EAGER_BYTES = 32 << 20

#: A selected tensor (with its layer's bias) of more bytes than this whose statistics are not
#: cached yet is scanned on a background thread: its card shows the header at once, the
#: statistics and plots when the scan ends (``browser.wait()`` waits for it).
BACKGROUND_BYTES = 16 << 20


def _leaf(name: str) -> str:
    return re.split(r"[./]", name)[-1].split(":")[0]


class LayerBrowser(w.VBox):
    """Browse a checkpoint layer by layer.

    Programmatic use: ``select(name)``, ``selected``, ``tensor_list`` (the Select), ``filter.value = "conv"``,
    ``log_toggle.value`` / ``clip_toggle.value``; ``compare`` / ``adapter`` (their views, when
    asked for: ``adapter.caption``, ``adapter.shown``); what is shown: ``card.value`` (HTML),
    ``last_figure`` (the histogram Figure as last drawn), ``structure`` (the heatmap or
    kernel grid: ``.kind`` 'heatmap' / 'kernel_grid' / None, ``.image`` the PNG widget,
    ``.caption`` its HTML), ``shown_panels`` (tensor names drawn as histograms), ``last_error``.
    Rendered PNGs are cached per tensor and toggle state (``cache`` entries; 0 turns the
    cache off), so a revisit shows the earlier image without drawing: the figures then
    still hold the last *drawn* tensor.  ``eager`` (default: checkpoints up to 32 MiB)
    scans every tensor when the browser opens, so the list shows every flag and
    ``check(model, ...)`` also looks for NaN/Inf; otherwise only selected tensors are read,
    large ones on a background thread (``scanning``, ``wait()``).
    """

    def __init__(self, source, *, model=None, compare=None, adapter=None, bins: int = 100,
                 eager: bool | None = None, rows: int = 20, cache: int = 32):
        from ..statistics.sources import as_checkpoint
        self.ckpt: Checkpoint = as_checkpoint(source)
        self.bins = int(bins)
        self.names = list(self.ckpt)
        from collections import Counter
        common = Counter(e.dtype for e in self.ckpt.values()).most_common(1)
        self._common_dtype = common[0][0] if common else None
        self._stats: dict = {}
        self._background = Background()     # the scan of a large tensor
        self._layers = self.ckpt.layers()   # grouped once: ~7 ms per call on 5,000 tensors
        self._layer_of = {n: layer for layer, ns in self._layers.items() for n in ns}
        self.last_error = None
        self.shown_panels: list[str] = []
        self.eager = self.ckpt.nbytes <= EAGER_BYTES if eager is None else bool(eager)
        if self.eager and self.names:
            from ..statistics.table import stats
            self._stats.update(stats(self.ckpt, bins=self.bins, progress=False))

        self.report = None
        self.status: dict[str, str] = {}      # checkpoint name -> match status
        self.missing: list[str] = []          # model names the checkpoint lacks
        if model is not None:
            from ..matching.match import check
            self.report = check(model, self.ckpt, data=self.eager)
            for row in self.report:
                if row.ckpt_name is not None:
                    self.status[row.ckpt_name] = row.status.value
                elif row.status in ("missing", "folded"):
                    self.missing.append(row.name)

        self.compare = self.adapter = None   # a CompareView / AdapterView when asked for
        if compare is not None:
            from ._compare import CompareView
            self.compare = CompareView(self.ckpt, compare, bins=self.bins, cache_size=cache)
        if adapter is not None:
            from ._adapter import AdapterView
            self.adapter = AdapterView(self.ckpt, adapter, cache_size=cache)
        self._views = [v for v in (self.compare, self.adapter) if v is not None]
        self._cls = "wv-lb-" + uuid.uuid4().hex[:10]
        self.header = w.HTML(style_tag() + header_html(self.ckpt, self._common_dtype, self.report,
                                                       self.compare))
        self.filter = w.Text(placeholder="filter: name, shape, dtype, flag or status",
                             continuous_update=True, layout=w.Layout(width="100%"))
        n_items = len(self.names) + len(self.missing)
        self.tensor_list = w.Select(options=[], rows=max(6, min(int(rows), n_items)),
                                    layout=w.Layout(width="100%"))
        self.tensor_list.add_class(self._cls)
        self.count = w.HTML()
        self.list_style = w.HTML()
        self.card = w.HTML(layout=w.Layout(width="100%"))
        self.card.add_class("wv-card")
        self.log_toggle = w.ToggleButton(value=False, description="log counts", icon="signal",
                                  layout=w.Layout(width="auto"))
        self.clip_toggle = w.ToggleButton(value=False, description="clip outliers", icon="compress",
                                   layout=w.Layout(width="auto"))
        self.error = error_box()
        # rendered PNGs are kept per (tensor, toggles): going back to a tensor costs nothing
        self.hist_canvas = Canvas(6.0, 2.3, dpi=96, cache_size=cache)
        self.structure = StructureView(cache_size=cache)

        left = w.VBox([self.filter, self.count, self.tensor_list, self.list_style],
                      layout=w.Layout(width="360px", min_width="240px", flex="0 1 auto",
                                      margin="0 10px 0 0"))
        left.add_class("wv-list")
        right = w.VBox([self.error, self.card, w.HBox([self.log_toggle, self.clip_toggle]),
                        self.hist_canvas.image] + [v.box for v in self._views] + [self.structure.box],
                       layout=w.Layout(flex="1 1 0%", min_width="0", max_width="600px",
                                       overflow="hidden"))
        super().__init__([self.header, w.HBox([left, right], layout=w.Layout(width="100%"))])
        self.add_class("wv-root")
        self.add_class("wv-layer-browser")
        self.hist_canvas.image.add_class("wv-hist")

        self.filter.observe(self._on_filter, names="value")
        self.tensor_list.observe(self._on_select, names="value")
        self.log_toggle.observe(self._on_toggle, names="value")
        self.clip_toggle.observe(self._on_toggle, names="value")
        self._refill()
        if self.tensor_list.options:    # open on the first weight matrix or kernel, if any
            keys = [v for _, v in self.tensor_list.options]
            self.tensor_list.value = next(
                (k for k in keys if k[0] == "ckpt" and len(self.ckpt[k[1]].shape) >= 2), keys[0])

    # -- public ---------------------------------------------------------------------
    @property
    def selected(self) -> str | None:
        v = self.tensor_list.value
        return None if v is None else v[1]

    def select(self, name: str) -> None:
        """Show tensor ``name`` (clears a filter that hides it)."""
        key = ("ckpt", name) if name in self.ckpt else ("model", name) if name in self.missing else None
        if key is None:
            close = [n for n in self.names if name.lower() in n.lower()][:5]
            raise KeyError(message(f"no tensor named {name!r} in this browser",
                                   fix="pick one of browser.names" + (f"; close matches: {close}" if close else "")))
        if key not in {v for _, v in self.tensor_list.options}:
            self.filter.value = ""
        self.tensor_list.value = key

    def wait(self, timeout: float | None = None) -> "LayerBrowser":
        """Wait for the background scan of a large tensor, if one runs (see
        ``BACKGROUND_BYTES``); its results are then shown.  Returns the browser."""
        self._background.wait(timeout)
        return self

    @property
    def scanning(self) -> str | None:
        """The tensor whose statistics are being computed in the background, or None."""
        key = self._background.running
        return None if key is None else key[1]

    def tensor_stats(self, name: str):
        """The statistics of one tensor (computed on first use, then cached)."""
        if name not in self._stats:
            from ..statistics.table import tensor_stats
            self._stats[name] = tensor_stats(self.ckpt[name], bins=self.bins, fmt=self.ckpt.format)
        return self._stats[name]

    @property
    def last_figure(self):
        return self.hist_canvas.figure

    @property
    def visible(self) -> list[str]:
        """Names currently listed (after the filter)."""
        return [v[1] for _, v in self.tensor_list.options]

    def __repr__(self) -> str:
        sel = self.selected
        n = len(self.names)
        return (f"LayerBrowser({n} tensor{'s' if n != 1 else ''}, "
                f"selected={None if sel is None else repr(short(sel))})")

    # -- the list -------------------------------------------------------------------
    def _flag_tag(self, name: str) -> str:
        """The list's flag column: the first flag, short, and '+N' for more (the card
        lists them all).  It sits left of the name, so a narrow list never hides it."""
        s = self._stats.get(name)
        if s is None or not s.flags:
            return ""
        more = f"+{len(s.flags) - 1}" if len(s.flags) > 1 else ""
        return f"⚑{SHORT_FLAGS.get(s.flags[0], s.flags[0])}{more}"

    def _label(self, name: str, width: int, shape_width: int, flag_width: int) -> str:
        pad = f"{'':{flag_width}} " if flag_width else ""
        if name in self.missing:
            gap = " " + "  " * len(self._views)
            return f"{MARKS['missing']}{gap}{pad}{name.ljust(width)}  (missing)"
        e = self.ckpt[name]
        mark = MARKS.get(self.status.get(name), "•") if self.report is not None else "•"
        flags = f"{self._flag_tag(name):{flag_width}} " if flag_width else ""
        dtype = "" if e.dtype == self._common_dtype else f" {e.dtype}"   # only the odd ones out
        if self.compare is not None:         # a narrow column: Δ where the other side differs
            mark += " Δ" if self.compare.status(name) not in (None, "same") else "  "
        if self.adapter is not None:         # and ◆ where the adapter changes the tensor
            mark += " ◆" if name in self.adapter._rows else "  "
        return f"{mark} {flags}{name.ljust(width)} {fmt_shape(e.shape):>{shape_width}}{dtype}"

    def _matches(self, key, label: str, term: str) -> bool:
        status = "missing" if key[0] == "model" else self.status.get(key[1], "")
        s = self._stats.get(key[1]) if key[0] == "ckpt" else None
        moved = [v.status(key[1]) or "" for v in self._views]
        return (term in label.lower() or (bool(status) and term in status)
                or (s is not None and any(term in f for f in s.flags))
                or any(term in m for m in moved) or (term == "adapted" and self.adapter is not None
                                                     and key[1] in self.adapter._rows))

    def _refill(self) -> None:
        everything = [("ckpt", n) for n in self.names] + [("model", n) for n in self.missing]
        width = min(max((len(v[1]) for v in everything), default=0), 24)
        shape_width = max((len(fmt_shape(e.shape)) for e in self.ckpt.values()), default=2)
        flag_width = max((len(self._flag_tag(n)) for n in self.names), default=0)
        term = self.filter.value.strip().lower()
        opts = []
        for key in everything:
            label = self._label(key[1], width, shape_width, flag_width)
            if not term or self._matches(key, label, term):
                opts.append((label, key))
        current = self.tensor_list.value
        self._quiet = True
        try:
            self.tensor_list.options = opts
            if current is not None and current in [v for _, v in opts]:
                self.tensor_list.value = current
        finally:
            self._quiet = False
        shown = len(opts)
        total = len(everything)
        self.count.value = (f"<span style='color:#57606a;font-size:12px'>{shown} of {total} tensors"
                            + (f" match '{esc(term)}'" if term else "") + "</span>")
        rules = []
        for i, (_, key) in enumerate(opts, start=1):
            st = "missing" if key[0] == "model" else self.status.get(key[1])
            s = self._stats.get(key[1]) if key[0] == "ckpt" else None
            colour = COLOURS.get(st) if st and st != "ok" else (
                COLOURS["warn"] if s is not None and WARN_FLAGS.intersection(s.flags) else None)
            if colour:
                rules.append(f".{self._cls} option:nth-child({i}){{color:{colour}}}")
        self.list_style.value = f"<style>{''.join(rules)}</style>" + self._legend_html()

    def _legend_html(self) -> str:
        return legend_html(self.report, self.status, self.missing, self.eager, self.compare, self.adapter)

    # -- callbacks ------------------------------------------------------------------
    @guarded("filter the list")
    def _on_filter(self, change) -> None:
        self._refill()

    def _on_select(self, change) -> None:
        if getattr(self, "_quiet", False) or change["new"] is None:
            return
        self._show(change["new"])

    def _on_toggle(self, change) -> None:
        if self.tensor_list.value is not None:
            self._show(self.tensor_list.value, structure=False)

    # -- drawing --------------------------------------------------------------------
    @guarded("show this tensor")
    def _show(self, key, structure: bool = True) -> None:
        kind, name = key
        if kind == "model":
            self._show_missing(name)
            return
        todo = [p for p in self._panels(name) if p not in self._stats]
        if todo and sum(self.ckpt[p].nbytes for p in todo) > BACKGROUND_BYTES:
            self._in_background(key, todo, structure)
            return
        s = self.tensor_stats(name)
        self.card.value = self._card_html(name, s)
        self._draw_hist(name)
        for v in self._views:
            v.show(name)
        if structure:
            self._draw_structure(name)

    def _in_background(self, key, todo, structure) -> None:
        """The header card now; the statistics (and plots) when a worker thread has them."""
        self.card.value = self._card_html(key[1], None)
        self.hist_canvas.hide()
        self.structure.hide()
        self._background.submit(key, lambda: self._scan_then_show(key, todo, structure))

    @guarded("compute this tensor's statistics")
    def _scan_then_show(self, key, todo, structure) -> None:
        for p in todo:
            self.tensor_stats(p)
        if self.tensor_list.value == key:            # still selected: show it all
            self._show(key, structure)
            self._refill()                           # the row may have gained a flag

    def _panels(self, name: str) -> list[str]:
        """The selected tensor, or its layer's weight and bias when it is one of them."""
        from ..plots.images import select
        layer = self._layer_of.get(name)
        if layer is None or layer == name:
            return [name]
        pair = select(self.names, layer, self._layers)
        return pair if name in pair else [name]

    def _draw_hist(self, name: str) -> None:
        from ..plots import weights as plots
        from ..statistics.table import StatsTable
        panels = self._panels(name)
        log, clip = self.log_toggle.value, self.clip_toggle.value

        from matplotlib.ticker import MaxNLocator, NullFormatter

        def draw(fig):
            # unclipped histograms come from the cached statistics (no rescan); clipping
            # needs percentiles of the data, so plots.hist reads the tensor then
            source = self.ckpt if clip else StatsTable(
                {p: self.tensor_stats(p) for p in panels}, format=self.ckpt.format, bins=self.bins)
            # fixed margins: tight_layout would cost more than the drawing itself
            axes = self.hist_canvas.axes_for((len(panels), log), lambda f: f.subplots(
                1, len(panels), squeeze=False, gridspec_kw={
                    "width_ratios": [3, 2][:len(panels)], "left": 0.1, "right": 0.985,
                    "bottom": 0.17, "top": 0.9, "wspace": 0.3})[0])
            for ax, p in zip(axes, panels):
                plots.hist(source, p, bins=self.bins, log=log, clip=clip, ax=ax)
                ax.tick_params(labelsize=8)
                if not log:        # fewer tick labels: text is most of the drawing time
                    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
                ax.xaxis.label.set_size(8)
                ax.yaxis.label.set_size(8)
                if log:            # minor labels like 4×10^0 crowd a short log axis
                    ax.yaxis.set_minor_formatter(NullFormatter())
                pin_text(ax, title_size=8.5, ylabel_px=36, xlabel_px=26)
                if p == name and len(panels) > 1:
                    ax.title.set_fontweight("bold")

        self.hist_canvas.render(("hist", name, log, clip), draw, clear=False)
        self.shown_panels = panels

    def _draw_structure(self, name: str) -> None:
        e = self.ckpt[name]
        nd = len(e.shape)
        if nd == 2 and min(e.shape) > 1:
            self.structure.show(self.ckpt, name, "heatmap")
        elif nd in (3, 4, 5) and min(e.shape) > 0 and _leaf(name) in ("weight", "kernel"):
            self.structure.show(self.ckpt, name, "kernel_grid")
        else:
            self.structure.hide()

    def _card_html(self, name: str, s) -> str:
        html = tensor_card(name, self.ckpt[name], self._layer_of.get(name, name), s)
        if s is None:
            html += (f"<div style='color:#57606a;font-size:12px'>computing statistics of "
                     f"{esc(fmt_bytes(self.ckpt[name].nbytes))}…</div>")
        if self.report is not None:
            html += status_line(name, self.status.get(name), self.report)
        return f"<div style='padding:2px 0 6px'>{html}</div>"

    def _show_missing(self, name: str) -> None:
        row = next(r for r in self.report if r.name == name and r.ckpt_name is None)
        summary = [("status", "missing from the checkpoint"),
                   ("model shape", fmt_shape(row.model_shape or ())), ("model dtype", row.model_dtype)]
        if row.suggestion:
            summary.append(("closest checkpoint name", row.suggestion))
        if row.note:
            summary.append(("note", row.note))
        self.card.value = View(name, summary).to_html() + f"<div>{badges_html('missing')}</div>"
        self.hist_canvas.hide()
        self.structure.hide()
        for v in self._views:
            v.show(name)
        self.shown_panels = []


def browse(source, *, model=None, **options) -> LayerBrowser:
    """A :class:`LayerBrowser` over ``source`` (path, Checkpoint, state dict or nn.Module),
    coloured by match status when ``model`` is given; ``compare=`` another checkpoint shows the
    diff, ``adapter=`` a LoRA adapter of ``source`` marks and explains the modules it changes."""
    if isinstance(source, LayerBrowser):
        raise WeightvizError(message("browse() got a LayerBrowser", expected="a path, a Checkpoint, "
                                     "a state dict or a torch.nn.Module"))
    return LayerBrowser(source, model=model, **options)
