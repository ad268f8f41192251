"""Tensor pictures as plain arrays, before any drawing: which tensors a request names,
a 2-D weight's block-mean heatmap and a convolution's filter grid.

:mod:`weightviz.plots` draws these with matplotlib; the layer browser colours the same
arrays itself (a palette PNG), so both show identical pixels and this module needs no
matplotlib.  Big tensors are read in bounded row slices.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import WeightvizError, message
from ..render import fmt_shape

MAX_PANELS = 6            # a layer with neither weight nor bias: this many of its tensors


def _leaf(name: str) -> str:
    return name.replace("/", ".").rsplit(".", 1)[-1].split(":")[0]


def _source(source):
    """(checkpoint or None, StatsTable or None) for any accepted source."""
    from ..statistics.sources import as_checkpoint
    from ..statistics.table import StatsTable
    if isinstance(source, StatsTable):
        return None, source
    return as_checkpoint(source), None


def select(names, name_or_layer: str, layers: dict | None = None) -> list[str]:
    """Tensor names a histogram request refers to: the tensor itself, or a layer's
    weight/kernel and bias (when it has neither: up to MAX_PANELS of its tensors)."""
    names = list(names)
    if name_or_layer in names:
        return [name_or_layer]
    key = name_or_layer.rstrip("./")
    members = (layers or {}).get(key) or [
        n for n in names if n.startswith(key + ".") or n.startswith(key + "/")]
    if not members:
        close = [n for n in names if key.lower() in n.lower()][:5]
        raise WeightvizError(message(
            f"no tensor or layer named {name_or_layer!r}",
            expected="a tensor name (e.g. 'fc1.weight') or a layer prefix (e.g. 'fc1', 'dense')",
            fix="list the names with list(weightviz.open(path))"
                + (f"; close matches: {close}" if close else "")))
    weight = [m for m in members if _leaf(m) in ("weight", "kernel")]
    bias = [m for m in members if _leaf(m) == "bias"]
    if weight or bias:
        return weight[:1] + bias[:1]
    return members[:MAX_PANELS]


def _tensor(source, name: str):
    ckpt, table = _source(source)
    if ckpt is None:
        raise WeightvizError(message("this plot needs the tensor data, not a StatsTable",
                                     fix="pass the checkpoint, state dict or module"))
    if name not in ckpt:
        picked = select(ckpt, name, ckpt.layers())
        name = picked[0]
    return ckpt, ckpt[name]


def diverging_limit(img) -> float:
    """The colour limit of a diverging view: the largest finite |value| (1 when none)."""
    finite = np.abs(img[np.isfinite(img)])
    v = float(finite.max()) if finite.size else 1.0
    return v if v > 0 else 1.0


def heatmap_image(source, name: str, *, max_size: int = 256):
    """:func:`heatmap`'s data undrawn: the block means (NaN: no finite value in a block) and
    a dict: ``title xlabel ylabel extent``, the tensor's ``shape``, ``block`` (rows, cols)."""
    from ..statistics.scan import Widener
    ckpt, e = _tensor(source, name)
    shape = e.shape
    if len(shape) == 0 or e.numel == 0:
        raise WeightvizError(message(f"cannot draw {e.name!r} as a heatmap",
                                     expected="a tensor with at least one element and one axis",
                                     got=f"shape {fmt_shape(shape)}"))
    r, c = (1, shape[0]) if len(shape) == 1 else (shape[0], e.numel // shape[0])
    br, bc = math.ceil(r / max_size), math.ceil(c / max_size)
    raw = e.raw().reshape(r, c)
    rows_per_read = max(br, (max(1, (4 << 20) // max(c, 1)) // br) * br)
    widen = Widener(e.dtype, raw.dtype, rows_per_read * c)
    out_c = math.ceil(c / bc)
    img = np.empty((math.ceil(r / br), out_c))
    for i in range(0, r, rows_per_read):
        part = np.ascontiguousarray(raw[i:i + rows_per_read])
        vals = widen(part.reshape(-1)).reshape(part.shape[0], c)
        block = _block_mean(vals, br, bc) if br * bc > 1 else vals.astype(np.float64)
        img[i // br: i // br + block.shape[0]] = block
    note = f" · block mean {br}×{bc}" if br * bc > 1 else ""
    return img, {"title": f"{e.name}  ·  {fmt_shape(shape)}{note}", "shape": shape, "block": (br, bc),
                 "extent": (-0.5, c - 0.5, r - 0.5, -0.5), "ylabel": "output unit" if len(shape) > 1 else "",
                 "xlabel": "input" if len(shape) == 2 else "flattened input"}


def _block_mean(vals: np.ndarray, br: int, bc: int) -> np.ndarray:
    """Mean of the finite values in each br×bc block (NaN where a block has none);
    ragged edge blocks average what they hold."""
    r, c = vals.shape
    fin = np.isfinite(vals)
    if fin.all():              # the usual case: block sums along columns, then rows
        rs, cs = np.arange(0, r, br), np.arange(0, c, bc)
        sums = np.add.reduceat(np.add.reduceat(vals, cs, axis=1, dtype=np.float64), rs, axis=0)
        return sums / (np.diff(rs, append=r)[:, None] * np.diff(cs, append=c)[None, :])
    v = np.where(fin, vals, 0)
    pr, pc = math.ceil(r / br) * br, math.ceil(c / bc) * bc
    if (pr, pc) != (r, c):
        v = np.pad(v, ((0, pr - r), (0, pc - c)))
        fin = np.pad(fin, ((0, pr - r), (0, pc - c)))
    sums = v.reshape(pr // br, br, pc // bc, bc).sum(axis=(1, 3), dtype=np.float64)
    counts = fin.reshape(pr // br, br, pc // bc, bc).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def kernel_grid_image(source, name: str, *, n: int = 64, layout: str | None = None,
                      reduce: str = "mean"):
    """:func:`kernel_grid`'s data undrawn: the tiles (NaN between them) and a dict:
    ``title``, ``grid`` (rows, cols) and ``bad`` (the colour between the tiles)."""
    ckpt, e = _tensor(source, name)
    if layout is None:
        layout = "keras" if (_leaf(e.name).endswith("kernel")
                             or (ckpt.format or "").lower().startswith("keras")) else "torch"
    if layout not in ("torch", "keras") or reduce not in ("mean", "first"):
        raise WeightvizError(message("unknown layout or reduce option",
                                     expected="layout 'torch' or 'keras', reduce 'mean' or 'first'",
                                     got=f"layout={layout!r}, reduce={reduce!r}"))
    if len(e.shape) not in (3, 4, 5) or e.numel == 0:
        raise WeightvizError(message(f"{e.name!r} is not a convolution kernel",
                                     expected="a 3-D, 4-D or 5-D weight",
                                     got=f"shape {fmt_shape(e.shape)}"))
    w = e.numpy()
    if np.iscomplexobj(w):
        w = np.abs(w)
    w = w.astype(np.float64)
    if layout == "keras":                        # [D,] H, W, I, O  ->  O, I, [D,] H, W
        w = np.moveaxis(w, (-1, -2), (0, 1))
    if w.ndim == 3:
        w = w[:, :, None, :]
    elif w.ndim == 5:
        w = w.mean(axis=2)
    out_ch, in_ch, h, wd = w.shape
    k = min(int(n), out_ch)
    tiles = w[:k].mean(axis=1) if reduce == "mean" else w[:k, 0]
    cols = math.ceil(math.sqrt(k * wd / max(h, 1))) if h > 1 else math.ceil(math.sqrt(k))
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    canvas = np.full((rows * (h + 1) - 1, cols * (wd + 1) - 1), np.nan)
    for i in range(k):
        r0, c0 = (i // cols) * (h + 1), (i % cols) * (wd + 1)
        canvas[r0:r0 + h, c0:c0 + wd] = tiles[i]
    how = "mean of" if reduce == "mean" else "first of"
    chans = "the input channel" if in_ch == 1 else f"{how} {in_ch} input channels"
    return canvas, {"title": f"{e.name}: filters 1–{k} of {out_ch}\n({chans}, {layout} layout)",
                    "grid": (rows, cols), "bad": "#afb8c1"}
