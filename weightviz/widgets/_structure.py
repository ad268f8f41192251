"""The LayerBrowser's structure view: a heatmap (2-D weights) or kernel grid (convolutions)
drawn without matplotlib's renderer.

The image is the array :func:`weightviz.plots.images.heatmap_image` / ``kernel_grid_image``
return (at most 256 pixels a side), coloured with the same diverging colormap as the
matplotlib plots (symmetric around 0), PNG-encoded at zlib level 1 and scaled up in
the page with ``image-rendering: pixelated``; the title, shape, block size and the
colour scale are HTML next to it.  A matplotlib figure with a colorbar costs ~80 ms per
tensor (mostly text drawing); this costs a few ms, so a first visit stays under 100 ms.
"""
from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np

from ..render import esc, fmt_float

#: Largest size (CSS pixels) the image is shown at; heatmaps fill the whole box.
BOX_W, BOX_H = 440, 230


def _css(rgba) -> str:
    return "#%02x%02x%02x" % tuple(int(round(255 * c)) for c in rgba[:3])


def colour(img: np.ndarray, bad: str):
    """``img`` on the diverging colormap from -v to +v (v = the largest finite |value|) as
    a palette image (255 colours, NaN in ``bad``); also v and CSS gradient stops."""
    import matplotlib
    from PIL import Image

    from ..plots.images import diverging_limit
    from ..plots.weights import DIVERGING
    v = diverging_limit(img)
    cmap = matplotlib.colormaps[DIVERGING].resampled(255)
    with np.errstate(invalid="ignore"):
        idx = np.clip(np.rint((img + v) * (127 / v)), 0, 254)
    idx = np.where(np.isnan(img), 255, idx).astype(np.uint8)
    pal = cmap(np.arange(255), bytes=True)[:, :3]
    pal = np.vstack([pal, [int(bad[i:i + 2], 16) for i in (1, 3, 5)]]).astype(np.uint8)
    pic = Image.frombytes("P", (idx.shape[1], idx.shape[0]), np.ascontiguousarray(idx).tobytes())
    pic.putpalette(pal.tobytes())
    stops = [_css(cmap(x)) for x in np.linspace(0, 1, 11)]
    return pic, v, stops


def png(pic) -> bytes:
    buf = io.BytesIO()
    pic.save(buf, format="png", compress_level=1)
    return buf.getvalue()


def scale_html(v: float, stops: list[str]) -> str:
    """A horizontal colour bar labelled -v, 0, +v."""
    lab = "font-size:11px;color:#57606a;font-variant-numeric:tabular-nums"
    return ("<div style='display:flex;align-items:center;gap:6px;margin-top:2px'>"
            f"<span style='{lab}'>−{esc(fmt_float(v))}</span>"
            "<div style='position:relative;width:180px;height:10px;border:1px solid #d0d7de;"
            f"background:linear-gradient(to right,{','.join(stops)})'>"
            "<div style='position:absolute;left:50%;top:-3px;bottom:-3px;border-left:1px solid "
            "#57606a'></div></div>"
            f"<span style='{lab}'>+{esc(fmt_float(v))}</span>"
            f"<span style='{lab}'>(0 at the tick; white ≈ 0)</span></div>")


class StructureView:
    """Caption (HTML) + image (PNG) of the selected tensor's structure, cached per tensor."""

    def __init__(self, cache_size: int = 32):
        import ipywidgets as w
        self.caption = w.HTML(layout=w.Layout(width="100%"))
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.image.add_class("wv-structure")
        self.box = w.VBox([self.caption, self.image], layout=w.Layout(margin="6px 0 0 0"))
        self.box.add_class("wv-structure-view")
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()
        self.hits = 0
        self.kind: str | None = None          # 'heatmap', 'kernel_grid' or None (hidden)
        self.hide()

    def hide(self) -> None:
        self.kind = None
        self.box.layout.display = "none"
        self.image.value = b""
        self.caption.value = ""

    def show(self, ckpt, name: str, kind: str) -> bool:
        """Draw ``name`` as ``kind``; True when it came from the cache."""
        hit = self._cache.get(name) if self.cache_size else None
        cached = hit is not None
        if cached:
            self._cache.move_to_end(name)
            self.hits += 1
        else:
            hit = self._draw(ckpt, name, kind)
            if self.cache_size:
                self._cache[name] = hit
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        data, caption, (wpx, hpx) = hit
        self.image.value = data
        self.image.layout.width, self.image.layout.height = f"{wpx}px", f"{hpx}px"
        self.caption.value = caption
        self.box.layout.display = None
        self.kind = kind
        return cached

    def _draw(self, ckpt, name: str, kind: str):
        from ..plots import images
        if kind == "heatmap":
            img, lab = images.heatmap_image(ckpt, name)
            r, c = lab["shape"][0], int(np.prod(lab["shape"][1:]))
            axes = (f"rows: output units 0–{r - 1} · columns: "
                    f"{esc(lab['xlabel'])}s 0–{c - 1}")
            size = (BOX_W, BOX_H)                               # stretched, like aspect='auto'
            title = esc(lab["title"])
            pic, v, stops = colour(img, "#f6f8fa")
        else:
            img, lab = images.kernel_grid_image(ckpt, name)
            rows, cols = lab["grid"]
            axes = f"{rows}×{cols} grid, one tile per filter, read row by row"
            h, w_ = img.shape
            s = min(BOX_H / h, BOX_W / w_)                      # square pixels
            size = (max(1, round(w_ * s)), max(1, round(h * s)))
            title = "<br>".join(esc(t) for t in lab["title"].split("\n"))
            pic, v, stops = colour(img, lab["bad"])
        caption = (f"<div style='font-size:12px'><b>{title}</b></div>"
                   f"<div style='font-size:11px;color:#57606a'>{axes}</div>"
                   + scale_html(v, stops))
        return png(pic), caption, size

