"""The scan's per-chunk number crunching (:mod:`weightviz._scan` runs it): float64 sums by
BLAS rows, an exact histogram, the finite range of a chunk.  Plain NumPy in, plain numbers
out; no knowledge of tensors, files or threads."""
from __future__ import annotations

import numpy as np

_ROW = 8192      # BLAS dot on rows this short: OpenBLAS stays on one thread (it spins under load)
_ONES = np.ones(_ROW)                 # read-only row of ones for BLAS row sums
_ONES.flags.writeable = False
_vecdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("ij,ij->i", a, b))


def sum_rows(d: np.ndarray) -> float:
    """Float64 sum by BLAS matrix-vector products over 8192-element rows (faster than
    NumPy's pairwise sum of a float64 array; as accurate for these row lengths)."""
    k = d.size // _ROW * _ROW
    return float((d[:k].reshape(-1, _ROW) @ _ONES).sum()) + float(np.add.reduce(d[k:]))


def sumsq_rows(d: np.ndarray) -> float:
    """Float64 sum of squares by single-threaded BLAS dot products over 8192-element rows."""
    k = d.size // _ROW * _ROW
    rows = d[:k].reshape(-1, _ROW)
    return float(_vecdot(rows, rows).sum()) + float(np.dot(d[k:], d[k:]))

def histogram1d(x, bins, rng):
    """fast_histogram's histogram1d (values equal to the upper edge left out); a NumPy
    fallback with the same semantics when fast-histogram is not installed."""
    try:
        from fast_histogram import histogram1d as fast
    except ImportError:
        fast = None
    width = float(rng[1]) - float(rng[0])
    if width > 0 and not np.isfinite(bins / width):
        # a range of subnormal width: bins / width overflows, fast_histogram then indexes out of
        # bounds and crashes, np.histogram refuses (found by fuzzing); scale by width first
        t = (np.asarray(x, dtype=np.float64) - float(rng[0])) / width
        idx = (t[(t >= 0) & (t < 1)] * bins).astype(np.int64)
        return np.bincount(np.minimum(idx, bins - 1), minlength=bins).astype(np.float64)
    if fast is None:
        counts = np.histogram(x, bins, rng)[0].astype(np.float64)
        counts[-1] -= np.count_nonzero(x == rng[1])
        return counts
    return fast(x, bins, rng)


def finite_minmax(x: np.ndarray):
    """(min, max, has_nonfinite) over the finite values of a float chunk."""
    if x.size == 0:
        return np.inf, -np.inf, False
    mn = float(np.minimum.reduce(x))
    mx = float(np.maximum.reduce(x))
    if np.isfinite(mn) and np.isfinite(mx):
        return mn, mx, False
    f = x[np.isfinite(x)]
    if f.size == 0:
        return np.inf, -np.inf, True
    return float(f.min()), float(f.max()), True


def dot_rows(a: np.ndarray, b: np.ndarray) -> float:
    """Float64 dot product of two equal-length float64 vectors by single-threaded BLAS
    dot products over 8192-element rows (as :func:`sumsq_rows`)."""
    k = a.size // _ROW * _ROW
    return (float(_vecdot(a[:k].reshape(-1, _ROW), b[:k].reshape(-1, _ROW)).sum())
            + float(np.dot(a[k:], b[k:])))
