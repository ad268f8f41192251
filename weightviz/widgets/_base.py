"""What every weightviz widget shares: one reusable matplotlib figure rendered to PNG
bytes for an ``ipywidgets.Image``, and errors shown inside the widget.

Why PNG bytes in an Image widget rather than ``display(fig)`` in an ``Output``:
setting ``Image.value`` updates the view in place (no clear/redisplay flicker, none
of the blank-plot races design.md §5 warns about), and rendering with the Agg
canvas directly skips IPython's ``bbox_inches='tight'`` second draw;
``benchmarks/bench_widgets.py`` measures both.
"""
from __future__ import annotations

import functools
import io
import traceback

from ..render import esc

#: CSS shared by the widgets (class names are prefixed ``wv-``).
CSS = """
.wv-root { font-size: 13px; }
.wv-root .widget-html-content { line-height: 1.4; }
.wv-list select { font-family: var(--jp-code-font-family, monospace); font-size: 11.5px; }
.wv-card table { border-collapse: collapse; margin: 2px 0; }
.wv-card th, .wv-card td { padding: 1px 8px 1px 0; font-size: 12px; }
.wv-title { font-size: 14px; }
.wv-structure { image-rendering: pixelated; border: 1px solid #d0d7de; }
"""


class Canvas:
    """One matplotlib Figure reused for every redraw, rendered to PNG into an Image widget."""

    def __init__(self, width: float, height: float, dpi: int = 96, *, css_width: str | None = None,
                 cache_size: int = 0):
        import ipywidgets as w
        from collections import OrderedDict
        self.width, self.height, self.dpi = width, height, dpi
        self._figure = None
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        self.hits = 0
        self._layout = None          # (key, axes) of the reusable layout, see axes_for()
        # scale down with the output area, never up
        self.image = w.Image(format="png", layout=w.Layout(
            width=css_width or "100%", height="auto", max_width=f"{int(width * dpi)}px"))

    @property
    def figure(self):
        """The Figure (created on first use, with an Agg canvas; never registered with pyplot)."""
        if self._figure is None:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
            self._figure = Figure(figsize=(self.width, self.height), dpi=self.dpi)
            FigureCanvasAgg(self._figure)
        return self._figure

    def clear(self, height: float | None = None):
        """Clear the figure (optionally resizing its height) and return it for drawing."""
        fig = self.figure
        fig.clear()
        self._layout = None
        if height is not None and height != fig.get_figheight():
            fig.set_figheight(height)
        return fig

    def show(self) -> bytes:
        """Render the figure to PNG and put the bytes in the Image widget.

        One Agg draw, then a fast PNG encode (zlib level 1) of the RGBA buffer:
        ``print_png`` would encode at level 6, which costs as much as the draw itself."""
        from PIL import Image
        canvas = self.figure.canvas
        canvas.draw()
        w, h = canvas.get_width_height(physical=True)
        buf = io.BytesIO()
        Image.frombuffer("RGBA", (w, h), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
            buf, format="png", compress_level=1)
        data = buf.getvalue()
        self.image.value = data
        self.image.layout.display = None
        return data

    def axes_for(self, layout, make):
        """Axes for ``layout`` (a hashable description): the previous ones, emptied of
        their artists, when the layout is the same; else ``make(cleared figure)``.

        Keeping the Axes keeps their tick objects: a fresh Axes rebuilds every tick,
        which costs about a third of a small plot's drawing time."""
        if self._layout is not None and self._layout[0] == layout:
            axes, positions = self._layout[1], self._layout[2]
            for extra in [a for a in self.figure.axes if not any(a is b for b in axes)]:
                extra.remove()                       # e.g. a colorbar, which also shrank its Axes
            for ax, pos in zip(axes, positions):
                ax.set_position(pos)
                for artist in [*ax.patches, *ax.texts, *ax.lines, *ax.collections, *ax.images]:
                    artist.remove()
                if ax.get_legend() is not None:
                    ax.get_legend().remove()
                ax.set_title("")
                ax.relim()
                ax.autoscale(True)
            return axes
        axes = list(make(self.clear()))
        self._layout = (layout, axes, [ax.get_position(original=True).frozen() for ax in axes])
        return axes

    def render(self, key, draw, *, clear: bool = True) -> bool:
        """Show the PNG cached under ``key``, or clear the figure, ``draw(figure)`` and
        render it (then cache the bytes).  Returns True on a cache hit (nothing drawn:
        ``figure`` still holds the last drawing)."""
        data = self._cache.get(key) if self.cache_size else None
        if data is not None:
            self._cache.move_to_end(key)
            self.image.value = data
            self.image.layout.display = None
            self.hits += 1
            return True
        draw(self.clear() if clear else self.figure)
        data = self.show()
        if self.cache_size:
            self._cache[key] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return False

    def hide(self):
        self.image.layout.display = "none"
        self.image.value = b""


def error_html(exc: BaseException, where: str = "") -> str:
    """A red box with the error's type and message (the traceback folded below)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"{type(exc).__name__}: {exc}"
    return (
        '<div class="wv-error" style="border:1px solid #cf222e;background:#ffebe9;color:#82071e;'
        'border-radius:4px;padding:6px 10px;margin:4px 0;white-space:pre-wrap">'
        f"<b>weightviz could not {esc(where or 'update this view')}</b><br>{esc(head)}"
        f'<details><summary>traceback</summary><pre style="font-size:11px">{esc(tb)}</pre>'
        "</details></div>")


def guarded(where: str):
    """Decorate a widget callback: any exception is shown in the widget's ``error``
    HTML box and kept in ``last_error`` instead of being lost in the kernel log."""
    def wrap(method):
        @functools.wraps(method)
        def inner(self, *args, **kwargs):
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown to the user, not swallowed
                self.last_error = exc
                self.error.value = error_html(exc, where)
                self.error.layout.display = None
                return None
            self.last_error = None
            self.error.value = ""
            self.error.layout.display = "none"
            return result
        return inner
    return wrap


def error_box():
    import ipywidgets as w
    return w.HTML("", layout=w.Layout(display="none", width="100%"))


def style_tag() -> str:
    return f"<style>{CSS}</style>"


def short(text: str, limit: int = 40) -> str:
    """Deterministic truncation for reprs (keeps the end of long names)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def pin_text(ax, *, title_size, ylabel_px: float, xlabel_px: float) -> None:
    """Fix the title and axis-label positions (pixels from the Axes) so matplotlib need
    not measure every tick label to place them: a fifth of the drawing time."""
    box = ax.get_position()
    w_px, h_px = ax.figure.bbox.width * box.width, ax.figure.bbox.height * box.height
    ax.set_title(ax.get_title(), y=1.0, pad=4,
                 fontsize=title_size or ax.title.get_fontsize(), fontweight=ax.title.get_fontweight())
    ax.xaxis.set_label_coords(0.5, -xlabel_px / h_px)
    ax.yaxis.set_label_coords(-ylabel_px / w_px, 0.5)


def side_by_side(fig):
    """Two panels (3:2) under a caption, small labels: the compare and adapter views' layout."""
    axs = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2], "left": 0.1, "right": 0.985,
                                          "bottom": 0.2, "top": 0.86, "wspace": 0.3})
    return axs


def small_labels(axs) -> None:
    for ax in axs:
        ax.tick_params(labelsize=7.5)
        ax.title.set_size(8.5)
        ax.xaxis.label.set_size(8)
        ax.yaxis.label.set_size(8)
