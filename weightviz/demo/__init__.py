"""Demo material for the notebooks: a procedural image set and small trained models.

Everything here ships with the package (``weightviz/demo/data/``); nothing is
downloaded.  The files were written by ``tools/make_demo_data.py`` with real
torch, real Keras 3 and real tf-keras (Keras 2).

>>> from weightviz import demo
>>> x, y = demo.images(8, seed=0)        # x: float32 (8, 16, 16, 1) channels-last, y: int64 (8,)
>>> demo.CLASS_NAMES[y[0]]
'triangle'
>>> demo.path("mlp.pth")                 # absolute path of a shipped file; demo.files() lists them
'...weightviz/demo/data/mlp.pth'
>>> model = demo.MLP()                   # torch.nn.Module (torch is imported only now)

``demo.MLP`` and ``demo.SmallCNN`` live in :mod:`weightviz.demo.models` (also
reachable as ``demo.models``); they take channels-last ``(N, 16, 16, 1)``
float32 images like the Keras models do, and also ``(N, 16, 16)``,
``(N, 256)`` or channels-first ``(N, 1, 16, 16)``, as torch tensors or NumPy
arrays, and return softmax probabilities ``(N, 10)`` (``.logits(x)`` gives the
raw scores).  ``import weightviz.demo`` imports only NumPy.
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["CLASS_NAMES", "IMAGE_SHAPE", "MLP_ACTIVATIONS", "images", "path", "files",
           "manifest", "serve", "MLP", "SmallCNN", "KerasCNNPort", "models"]

#: The ten shape classes, indexed by label.
CLASS_NAMES = ("h-bar", "v-bar", "diag-down", "diag-up", "plus",
               "cross", "square", "circle", "triangle", "disk")

#: One image, channels-last (height, width, channels).
IMAGE_SHAPE = (16, 16, 1)

#: Activations of the shipped MLP, one per layer: ``y = act(x @ W + b)``.
MLP_ACTIVATIONS = ("relu", "relu", "softmax")

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def path(name: str) -> str:
    """Absolute path of the shipped demo file or folder ``name`` (see :func:`files`); the
    folders are adapters as PEFT saves them (``cnn_lora``)."""
    full = os.path.join(_DATA_DIR, name)
    if os.path.basename(name) != name or name in ("", ".", "..") or not os.path.exists(full):
        from ..errors import WeightvizError, capped, message
        raise WeightvizError(message(
            f"No demo file named {name!r}",
            expected=f"one of the shipped demo files: {capped(files(), limit=len(files()))}",
            fix="Pick a name from weightviz.demo.files()", got=repr(name)))
    return full


def files() -> list[str]:
    """Sorted names of the shipped demo files and folders."""
    return sorted(f for f in os.listdir(_DATA_DIR) if not f.startswith((".", "_")))


def manifest() -> dict:
    """What the demo files are: shapes, accuracies, activations, the planted mismatches."""
    with open(path("manifest.json"), encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------- the images

def _segment(px, py, ax, ay, bx, by):
    """Distance from points (px, py) to the segments a-b (all broadcastable)."""
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(px - ax - t * dx, py - ay - t * dy)


def _distance(label: int, u, v, r):
    """Distance field of class ``label`` in the shape's own coordinates (u right, v down)."""
    a = 0.8 * r                       # half-extent of the diagonals and the square
    if label == 0:
        return _segment(u, v, -r, 0.0, r, 0.0)
    if label == 1:
        return _segment(u, v, 0.0, -r, 0.0, r)
    if label == 2:
        return _segment(u, v, -a, -a, a, a)
    if label == 3:
        return _segment(u, v, -a, a, a, -a)
    if label == 4:
        return np.minimum(_distance(0, u, v, r), _distance(1, u, v, r))
    if label == 5:
        return np.minimum(_distance(2, u, v, r), _distance(3, u, v, r))
    if label == 6:
        return np.abs(np.maximum(np.abs(u), np.abs(v)) - a)
    if label == 7:
        return np.abs(np.hypot(u, v) - 0.9 * r)
    if label == 8:
        ang = np.deg2rad([-90.0, 30.0, 150.0])          # apex up (v grows downwards)
        xs, ys = [np.cos(t) * r for t in ang], [np.sin(t) * r for t in ang]
        return np.minimum.reduce([_segment(u, v, xs[i], ys[i], xs[i - 1], ys[i - 1])
                                  for i in range(3)])
    return np.maximum(np.hypot(u, v) - 0.7 * r, 0.0)      # 9: filled disk


def images(n: int = 64, seed: int = 0, *, noise: float = 1.0):
    """``n`` fresh labelled images, the same for the same ``(n, seed)`` on any machine.

    Returns ``(x, y)``: ``x`` float32 ``(n, 16, 16, 1)`` channels-last in ``[0, 1]``,
    ``y`` int64 ``(n,)`` indexing :data:`CLASS_NAMES`.  Each image draws one shape
    with a random shift (±1.5 px), size, stroke width, rotation (±12°), contrast
    and Gaussian pixel noise (scaled by ``noise``).
    """
    n = int(n)
    if n < 0:
        from ..errors import WeightvizError, message
        raise WeightvizError(message("images() needs a sample count of at least 0",
                                     fix="pass n >= 0", got=repr(n)))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASS_NAMES), size=n).astype(np.int64)
    cx = 8.0 + rng.uniform(-1.5, 1.5, n)
    cy = 8.0 + rng.uniform(-1.5, 1.5, n)
    r = rng.uniform(3.8, 5.8, n)
    width = rng.uniform(1.0, 2.0, n)
    theta = np.deg2rad(rng.uniform(-12.0, 12.0, n))
    contrast = rng.uniform(0.7, 1.0, n)
    sigma = noise * rng.uniform(0.05, 0.30, n)
    pixel_noise = rng.standard_normal((n, 16, 16))

    grid = np.arange(16) + 0.5
    gx, gy = grid[None, None, :], grid[None, :, None]           # (1, 1, W), (1, H, 1)
    x = np.empty((n, 16, 16), dtype=np.float64)
    for label in range(len(CLASS_NAMES)):
        k = np.flatnonzero(y == label)
        if k.size == 0:
            continue
        c, s = np.cos(theta[k])[:, None, None], np.sin(theta[k])[:, None, None]
        dx, dy = gx - cx[k][:, None, None], gy - cy[k][:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        d = _distance(label, u, v, r[k][:, None, None])
        x[k] = np.clip(width[k][:, None, None] / 2 + 0.5 - d, 0.0, 1.0)
    x = x * contrast[:, None, None] + sigma[:, None, None] * pixel_noise
    x = np.clip(x, 0.0, 1.0).astype(np.float32)[..., None]
    return x, y


def serve(folder: str | None = None, *, delay: float = 0.0, ranges: bool = True):
    """Serve ``folder`` (the demo files by default) over HTTP on 127.0.0.1, with byte ranges,
    in a background thread: a context manager with ``.url(name)`` and ``.requests``
    (:mod:`weightviz.demo.server`)."""
    from .server import serve as _serve
    return _serve(folder, delay=delay, ranges=ranges)


# --------------------------------------------------- the torch model classes

def __getattr__(name: str):
    # torch is imported only when a model class is asked for.
    if name in ("MLP", "SmallCNN", "KerasCNNPort", "models"):
        import importlib
        models = importlib.import_module(__name__ + ".models")   # not `from . import`: it would ask here again
        return models if name == "models" else getattr(models, name)
    raise AttributeError(f"module 'weightviz.demo' has no attribute {name!r}")
