"""MismatchView: a Report with its verdict on top, a status filter, problems first.

The table itself is the report's own (:func:`weightviz.matching.report.report_view`) for the
rows that pass the filter, so the widget, the notebook HTML and the CLI agree.
"""
from __future__ import annotations

import ipywidgets as w

from ..render import COLOURS, esc
from ..matching.report import DISPLAY_ORDER, Report, headline_status, report_view
from ._base import error_box, guarded, style_tag

PROBLEMS = tuple(s for s in DISPLAY_ORDER if s not in ("ok", "renamed"))


class MismatchView(w.VBox):
    """``view.toggles[status].value`` switches a status on or off (all present ones
    are on at first); ``view.shown`` holds the rows listed, problems first."""

    def __init__(self, report: Report):
        self.report = report
        self.last_error = None
        counts = report.counts
        self.statuses = [s for s in DISPLAY_ORDER if s in counts]
        status = headline_status(report)
        colour = COLOURS.get(status, COLOURS["info"])
        self.verdict = w.HTML(
            f'{style_tag()}<div class="wv-title" style="border-left:4px solid {colour};'
            f'padding:4px 10px;background:#f6f8fa"><b style="color:{colour}">{esc(report.verdict)}</b>'
            f'<div style="color:#57606a;font-size:12px">{report.n_model} model tensors, '
            f'{report.n_ckpt} checkpoint tensors ({esc(report.source)})</div></div>')
        self.toggles = {
            s: w.ToggleButton(value=True, description=f"{s} ({counts[s]})",
                              tooltip=f"show the {s} rows",
                              style={"text_color": COLOURS.get(s, COLOURS["info"]),
                                     "font_weight": "bold"},
                              layout=w.Layout(width="auto"))
            for s in self.statuses}
        self.problems_only = w.Button(description="problems only", layout=w.Layout(width="auto"),
                                      disabled=not any(s in PROBLEMS for s in self.statuses))
        self.show_all = w.Button(description="all", layout=w.Layout(width="auto"))
        self.table = w.HTML(layout=w.Layout(max_height="420px", overflow="auto"))
        self.notes = w.HTML()
        self.error = error_box()
        self.shown = []
        for t in self.toggles.values():
            t.observe(self._on_toggle, names="value")
        self.problems_only.on_click(lambda _: self.show(*(s for s in self.statuses if s in PROBLEMS)))
        self.show_all.on_click(lambda _: self.show())
        bar = w.HBox([w.Label("show:"), *self.toggles.values(), self.problems_only, self.show_all],
                     layout=w.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([self.verdict, bar, self.error, self.table, self.notes])
        self.add_class("wv-root")
        self.add_class("wv-mismatch-view")
        self._refresh()

    @property
    def visible_statuses(self) -> tuple:
        return tuple(s for s in self.statuses if self.toggles[s].value)

    def show(self, *statuses: str) -> None:
        """Show only rows with these statuses (no argument: all)."""
        unknown = [s for s in statuses if s not in DISPLAY_ORDER]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; expected one of {', '.join(DISPLAY_ORDER)}")
        want = set(statuses) if statuses else set(self.statuses)
        self._batch = True
        try:
            for s, t in self.toggles.items():
                t.value = s in want
        finally:
            self._batch = False
        self._refresh()

    def _on_toggle(self, change):
        if not getattr(self, "_batch", False):
            self._refresh()

    @guarded("filter the report")
    def _refresh(self) -> None:
        keep = set(self.visible_statuses)
        rows = [r for r in self.report.rows if r.status.value in keep]
        sub = Report(rows, verdict=self.report.verdict, n_model=self.report.n_model,
                     n_ckpt=self.report.n_ckpt, source=self.report.source, mode=self.report.mode)
        view = report_view(sub)
        order = {s: i for i, s in enumerate(DISPLAY_ORDER)}
        self.shown = sorted(rows, key=lambda r: (order[r.status.value], r.order))
        self.table.value = ('<div class="wv-card">' + "".join(t.to_html() for t in view.tables)
                            + "</div>") if rows else "<i>no rows with the chosen statuses</i>"
        notes = [*(f"fixed: {f}" for f in self.report.fixes),
                 *(f"suggestion: {s}" for s in self.report.suggestions)]
        self.notes.value = "".join(f"<div style='font-size:12px'>{esc(n)}</div>" for n in notes)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={n}" for s, n in self.report.counts.items())
        return f"MismatchView({len(self.report)} rows: {counts})"


def mismatch_view(report: Report) -> MismatchView:
    """An interactive view of a :class:`~weightviz.matching.report.Report` (see :class:`MismatchView`)."""
    if not isinstance(report, Report):
        from ..errors import WeightvizError, message
        raise WeightvizError(message("mismatch_view() needs a Report",
                                     expected="the result of weightviz.check(model, source) or weightviz.load(...)",
                                     got=type(report).__name__))
    return MismatchView(report)
