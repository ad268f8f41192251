"""PredictionExplorer: a slider over samples, the input drawn, each model's top-k outputs.

The model runs are done once, up front, by :mod:`weightviz.inference` (eval mode,
no gradients, mode restored); moving the slider only redraws.
"""
from __future__ import annotations

import numpy as np
import ipywidgets as w

from ..models import inference
from ..errors import WeightvizError, message
from ..render import esc, fmt_float
from ._base import Canvas, error_box, guarded, style_tag

BAR = "#4c72b0"
TRUE = "#1a7f37"


def _model_name(model, i: int) -> str:
    return type(model).__name__ if model is not None else f"model {i + 1}"


class PredictionExplorer(w.VBox):
    """Browse samples and what one or more models predict for them.

    ``explorer.sample`` (or the ``slider``) picks the sample; ``explorer.shown``
    holds what is drawn: per model a list of ``(class name, value)``, largest first;
    ``explorer.outputs`` the raw outputs per model, ``explorer.last_figure`` the Figure.
    With two models, ``explorer.layers`` is a "layer by layer" panel: opened, it runs
    :func:`weightviz.divergence` on the samples and shows where the models part.
    """

    def __init__(self, models, samples, *, names=None, labels=None, class_names=None,
                 top_k: int = 5):
        models = list(models)
        self.samples = inference.as_array(samples)
        self.n = int(self.samples.shape[0])
        names = list(names) if names is not None else [_model_name(m, i) for i, m in enumerate(models)]
        if len(names) != len(models):
            raise WeightvizError(message("predict() got a different number of names than models",
                                         expected=f"{len(models)} names", got=f"{len(names)}: {names}"))
        if len(set(names)) < len(names):
            names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
        self.names = names
        self.outputs = [inference.run(m, self.samples) for m in models]
        self.labels = None if labels is None else np.asarray(
            labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels).ravel()
        if self.labels is not None and len(self.labels) != self.n:
            raise WeightvizError(message("predict() got a different number of labels than samples",
                                         expected=f"{self.n} labels", got=str(len(self.labels))))
        self.class_names = list(class_names) if class_names is not None else None
        self.top_k = int(top_k)
        self.probabilities = all(inference.is_probability(o) for o in self.outputs)
        self.shown: list[list[tuple[str, float]]] = []
        self.last_error = None

        self.slider = w.IntSlider(value=0, min=0, max=self.n - 1, description="sample",
                                  continuous_update=False, layout=w.Layout(width="420px"),
                                  disabled=self.n == 1)
        self.title = w.HTML()
        self.title.add_class("wv-caption")
        self.diff = w.HTML()
        self.error = error_box()
        width = 2.6 + 3.4 * len(models)
        self.canvas = Canvas(width, 2.6, dpi=96)
        self.slider.observe(self._on_slider, names="value")
        header = w.HTML(style_tag() + self._header_html())
        #: samples where the first two models' top-1 classes differ
        self.disagreements = self._disagreements()
        self.next_disagreement = w.Button(
            description=f"next disagreement ({len(self.disagreements)})", icon="forward",
            layout=w.Layout(width="auto", display=None if self.disagreements else "none"),
            tooltip="jump to the next sample where the models' top classes differ")
        self.next_disagreement.on_click(self._on_next_disagreement)
        #: two models: the "layer by layer" panel (weightviz.divergence), else None
        self.layers = None
        rest = []
        if len(models) == 2:
            from ._layers import LayerDivergence
            self.layers = LayerDivergence(models[0], models[1], self.samples, self.names)
            rest = [self.layers]
        super().__init__([header, w.HBox([self.slider, self.next_disagreement]), self.title,
                          self.error, self.canvas.image, self.diff, *rest])
        self.add_class("wv-root")
        self.add_class("wv-prediction-explorer")
        self.canvas.image.add_class("wv-plot")
        self._draw(0)

    # -- public ---------------------------------------------------------------------
    @property
    def sample(self) -> int:
        return int(self.slider.value)

    @sample.setter
    def sample(self, i: int) -> None:
        if not 0 <= int(i) < self.n:
            raise IndexError(f"sample {i} is out of range: there are {self.n} samples (0..{self.n - 1})")
        self.slider.value = int(i)

    @property
    def last_figure(self):
        return self.canvas.figure

    def max_abs_difference(self, sample: int | None = None) -> float | None:
        """Largest |output difference| between the first two models (one sample or all)."""
        if len(self.outputs) < 2:
            return None
        a, b = self.outputs[0], self.outputs[1]
        if a.shape != b.shape:
            return float("nan")
        if sample is not None:
            a, b = a[sample], b[sample]
        return float(np.max(np.abs(a - b))) if a.size else 0.0

    def __repr__(self) -> str:
        m = len(self.outputs)
        return (f"PredictionExplorer({m} model{'s' if m != 1 else ''}, {self.n} "
                f"sample{'s' if self.n != 1 else ''}, sample={self.sample})")

    def _disagreements(self) -> list[int]:
        if len(self.outputs) < 2 or self.outputs[0].shape != self.outputs[1].shape:
            return []
        a = self.outputs[0].reshape(self.n, -1).argmax(axis=1)
        b = self.outputs[1].reshape(self.n, -1).argmax(axis=1)
        return [int(i) for i in np.flatnonzero(a != b)]

    @guarded("jump to the next disagreement")
    def _on_next_disagreement(self, _button=None) -> None:
        later = [i for i in self.disagreements if i > self.sample]
        target = (later or self.disagreements)[0]
        if target != self.sample:
            self.slider.value = target

    # -- drawing --------------------------------------------------------------------
    def _class(self, i: int) -> str:
        if self.class_names is not None and 0 <= i < len(self.class_names):
            return str(self.class_names[i])
        return str(i)

    def _header_html(self) -> str:
        what = "probability" if self.probabilities else "output"
        models = ", ".join(f"<b>{esc(n)}</b>" for n in self.names)
        return (f'<div class="wv-title">Predictions of {models} on {self.n} samples '
                f'<span style="color:#57606a">(top {self.top_k} {what} values, eval mode)</span></div>')

    def _on_slider(self, change):
        self._draw(int(change["new"]))

    @guarded("draw this sample")
    def _draw(self, i: int) -> None:
        x = self.samples[i]
        label = None if self.labels is None else int(self.labels[i])
        n_models = len(self.outputs)
        fig = self.canvas.clear()
        grid = fig.add_gridspec(1, 1 + n_models, width_ratios=[2.2] + [3.4] * n_models,
                                left=0.04, right=0.98, top=0.86, bottom=0.16, wspace=0.55)
        draw_input(fig.add_subplot(grid[0, 0]), x)
        self.shown = []
        for j, (name, out) in enumerate(zip(self.names, self.outputs)):
            top = inference.top_k(out[i], self.top_k)
            self.shown.append([(self._class(c), v) for c, v in top])
            ax = fig.add_subplot(grid[0, 1 + j])
            self._draw_bars(ax, name, top, label)
        self.canvas.show()
        truth = "" if label is None else f" · true class <b style='color:{TRUE}'>{esc(self._class(label))}</b>"
        pred = " · ".join(f"{esc(n)}: <b>{esc(s[0][0])}</b>" for n, s in zip(self.names, self.shown))
        self.title.value = f"<div>sample {i} of {self.n}{truth} · {pred}</div>"
        if n_models > 1:
            here, overall = self.max_abs_difference(i), self.max_abs_difference()
            agree = (self.n - len(self.disagreements)
                     if self.outputs[0].shape == self.outputs[1].shape else 0)
            self.diff.value = (
                f"<div>max |{esc(self.names[0])} − {esc(self.names[1])}|: <b>{fmt_float(here)}</b> "
                f"on this sample, <b>{fmt_float(overall)}</b> over all {self.n}; "
                f"top-1 agrees on {agree}/{self.n} samples</div>")

    def _value_text(self, v: float) -> str:
        if not self.probabilities:
            return fmt_float(v, 3)
        return "<0.1%" if 0 < v < 0.0005 else f"{v:.1%}"

    def _draw_bars(self, ax, name, top, label):
        ys = np.arange(len(top))[::-1]
        vals = [v for _, v in top]
        colours = [TRUE if (label is not None and c == label) else BAR for c, _ in top]
        ax.barh(ys, vals, color=colours, height=0.7)
        ax.set_yticks(ys, [self._class(c) for c, _ in top], fontsize=9)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        for y, v in zip(ys, vals):
            ax.text(max(v, 0), y, f" {self._value_text(v)}", va="center", fontsize=8)
        if self.probabilities:
            ax.set_xlim(0, 1.18)
        ax.spines[["top", "right"]].set_visible(False)


def draw_input(ax, x: np.ndarray) -> None:
    """One sample: an image for 2-D/3-D inputs (channels-last or -first), a line for a
    long 1-D sequence or a (T, F) sequence with few features, the values otherwise."""
    x = np.asarray(x, dtype=np.float64)
    kind, data = input_kind(x)
    if kind == "image":
        ax.imshow(data, cmap="gray" if data.ndim == 2 else None, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"input {'×'.join(map(str, x.shape))}", fontsize=10)
    elif kind == "sequence":
        ax.plot(data, linewidth=1)
        ax.set_title(f"input sequence {'×'.join(map(str, x.shape))}", fontsize=10)
        ax.tick_params(labelsize=8)
    else:
        flat = data.ravel()
        ax.bar(np.arange(flat.size), flat, color="#8c8c8c")
        ax.set_title(f"input values ({flat.size})", fontsize=10)
        ax.tick_params(labelsize=8)


def input_kind(x: np.ndarray) -> tuple[str, np.ndarray]:
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and min(x.shape[:2]) > 4:
        data = x[..., 0] if x.shape[-1] == 1 else x
    elif x.ndim == 3 and x.shape[0] in (1, 3) and min(x.shape[1:]) > 4:
        data = x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    elif x.ndim == 2 and x.shape[1] <= 8 and x.shape[0] > 2 * x.shape[1]:
        return "sequence", x
    elif x.ndim == 2:
        data = x
    elif x.ndim == 1 and x.size > 16:
        return "sequence", x
    else:
        return "values", x
    if data.ndim == 3:  # colour: scale into [0, 1] for imshow
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        data = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)
    return "image", data


def predict(model, samples, *, labels=None, class_names=None, top_k: int = 5, names=None,
            compare=None) -> PredictionExplorer:
    """A :class:`PredictionExplorer` for ``model`` (or a list of models) on ``samples``.

    ``compare=other_model`` (or ``model=[m1, m2]``) shows two models side by side with
    the largest absolute difference of their outputs, and a "layer by layer" panel
    (:func:`weightviz.divergence`) that names the first layer where they part.
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if compare is not None:
        models += list(compare) if isinstance(compare, (list, tuple)) else [compare]
    if not models:
        raise WeightvizError(message("predict() got no model", expected="a torch.nn.Module"))
    return PredictionExplorer(models, samples, names=names, labels=labels,
                              class_names=class_names, top_k=top_k)
