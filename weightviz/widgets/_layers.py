"""The PredictionExplorer's "layer by layer" panel for two models: ``weightviz.divergence``
on the explorer's samples, run when the panel is first opened, shown as its plot (each paired
layer's output error, the first layer beyond tolerance in red) above the report itself."""
from __future__ import annotations

import ipywidgets as w

from ..plots.diffs import divergence_plot
from ..compare.layertrace import divergence
from ..render import esc
from ._base import Canvas, error_box, guarded

MAX_SAMPLES = 256      # the layer-by-layer run uses at most this many of the samples


class LayerDivergence(w.VBox):
    """A toggle, and under it the :class:`~weightviz.compare.layertrace.DivergenceReport` of
    ``model_a`` against ``model_b`` on ``samples`` (``report`` once opened)."""

    def __init__(self, model_a, model_b, samples, names):
        self._models, self._samples, self._names = (model_a, model_b), samples, tuple(names)
        self.report = None
        self.last_error = None
        self.button = w.ToggleButton(
            value=False, description="layer by layer", icon="list", layout=w.Layout(width="auto"),
            tooltip="run both models with hooks on every layer and find the first layer where "
                    "their outputs part")
        self.error = error_box()
        self.caption = w.HTML()
        self.canvas = Canvas(7.4, 3.3, dpi=96)
        self.canvas.image.add_class("wv-layer-plot")
        self.table = w.HTML()
        self.body = w.VBox([self.caption, self.canvas.image, self.table],
                           layout=w.Layout(display="none"))
        self.button.observe(self._on_toggle, names="value")
        super().__init__([self.button, self.error, self.body])
        self.add_class("wv-layer-divergence")

    def show_report(self) -> None:
        """Show the panel (running the comparison the first time)."""
        self.button.value = True

    @guarded("compare the two models layer by layer")
    def _on_toggle(self, change) -> None:
        if not change["new"]:
            self.body.layout.display = "none"
            return
        if self.report is None:
            x = self._samples[:MAX_SAMPLES]
            self.report = divergence(*self._models, x, names=self._names)
            fig = self.canvas.clear()
            divergence_plot(self.report, ax=fig.add_axes([0.1, 0.3, 0.62, 0.6]))
            self.canvas.show()
            n = len(self._samples)
            used = f"all {n}" if n <= MAX_SAMPLES else f"the first {MAX_SAMPLES} of {n}"
            self.caption.value = (f"<div>{esc(self._names[0])} against {esc(self._names[1])}, "
                                  f"layer by layer, on {used} samples</div>")
            self.table.value = self.report._repr_html_()
        self.body.layout.display = None
