"""Pairing, comparing and explaining the layers of two traced models (for :mod:`weightviz.compare.layertrace`).

:func:`pair_records` pairs the two models' unit records (by name, else by a monotonic
alignment over execution order), :func:`compare` measures one pair under the layouts its
shapes allow, :func:`hint` words the usual porting slip behind the first divergence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACTS = ("relu", "softmax", "sigmoid", "tanh")


@dataclass(eq=False)
class Rec:
    name: str
    module: object
    inp: object            # float64 ndarray or None
    out: np.ndarray
    passthrough: bool


# -- comparing ----------------------------------------------------------------------------
_LABELS = {4: ("NHWC→NCHW", "NCHW→NHWC"), 5: ("NDHWC→NCDHW", "NCDHW→NDHWC")}


def layouts(sa: tuple, sb: tuple) -> list:
    """(label, axes applied to a) for each way a's shape becomes b's."""
    c = [("identity", None)] if sa == sb else []
    n = len(sa)
    if len(sb) == n and 3 <= n <= 5:
        to_first, to_last = (0, n - 1, *range(1, n - 1)), (0, *range(2, n), 1)
        if n == 3:
            if sa != sb and tuple(sa[i] for i in to_first) == sb:
                c.append(("(N,L,C)↔(N,C,L)", to_first))
        else:
            for label, p in zip(_LABELS[n], (to_first, to_last)):
                if tuple(sa[i] for i in p) == sb:
                    c.append((label, p))
    return c


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "sigmoid":
        return 0.5 * (1 + np.tanh(0.5 * x))
    if name == "tanh":
        return np.tanh(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def errors(a, b, atol, rtol):
    if np.isnan(a).any() or np.isnan(b).any():
        side = " and ".join(s for s, v in (("a", a), ("b", b)) if np.isnan(v).any())
        return math.nan, math.nan, False, f"NaN in {side}'s output"
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(a - b)
        d[a == b] = 0
        mx = float(d.max()) if d.size else 0.0
        na, nd = float(np.linalg.norm(a)), float(np.linalg.norm(d))
        rel = (0.0 if nd == 0 else math.inf) if na == 0 else nd / na
        ok = bool(np.all(d <= atol + rtol * np.abs(a)))
    return mx, (rel if rel == rel else math.inf), ok, ""


def compare(a, b, atol, rtol, *, acts=True):
    """The best (score, label, activation, errors) over layouts (and activations): score 3 =
    values agree, 2 = agree after an activation, 1 = shapes only; None when incompatible."""
    found = []
    for label, p in layouts(a.shape, b.shape):
        ap = a if p is None else a.transpose(p)
        e = errors(ap, b, atol, rtol)
        found.append((3 if e[2] else 1, label, None, e))
        if not e[2] and acts and not e[3]:
            found += [(2, label, f"{name}({side})", ea) for name in ACTS
                      for side, x, y in (("b", ap, _act(name, b)), ("a", _act(name, ap), b))
                      for ea in [errors(x, y, atol, rtol)] if ea[2]]
    if not found:
        return None
    return max(found, key=lambda c: (c[0], -c[3][0] if c[3][0] == c[3][0] else -math.inf,
                                     c[1] == "identity"))


def _align(ra, rb, score):
    """Monotonic pairs (i, j) maximising the summed scores; earliest candidates first."""
    n, m = len(ra), len(rb)
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            s = score(i, j)
            best[i][j] = max(best[i + 1][j], best[i][j + 1], s + best[i + 1][j + 1] if s else 0)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        s = score(i, j)
        if s and s + best[i + 1][j + 1] == best[i][j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j + 1] == best[i][j]:
            j += 1
        else:
            i += 1
    return pairs


def pair_records(ra, rb, atol, rtol):
    """(pairing word, [(rec a, rec b, comparison)], skipped names)."""
    names_a, names_b = [r.name for r in ra], [r.name for r in rb]
    by_b = {r.name: r for r in rb}
    if ra and sorted(names_a) == sorted(names_b) and all(
            layouts(r.out.shape, by_b[r.name].out.shape) for r in ra):
        pairs, skipped = [], []
        for r in ra:
            o = by_b[r.name]
            if r.passthrough and o.passthrough:
                skipped.append(r.name)
            else:
                pairs.append((r, o, compare(r.out, o.out, atol, rtol)))
        return "by name", pairs, skipped
    fa, fb = [r for r in ra if not r.passthrough], [r for r in rb if not r.passthrough]
    cache: dict = {}

    def score(i, j):
        if (i, j) not in cache:
            cache[i, j] = compare(fa[i].out, fb[j].out, atol, rtol)
        c = cache[i, j]
        return c[0] if c else 0
    pairs = [(fa[i], fb[j], cache[i, j]) for i, j in _align(fa, fb, score)]
    skipped = [r.name for r in ra + rb if r.passthrough]
    return "by execution order", pairs, skipped


# -- hints --------------------------------------------------------------------------------
def kind(mod) -> str:
    name = type(mod).__name__
    k = getattr(mod, "kind", None)
    return f"{name}:{k}" if isinstance(k, str) else name


def _flatten_order(a, b, ra, rb, i_a, i_b) -> bool:
    """a's and b's inputs (N, F) hold the same values with positions and channels swapped."""
    if a is None or b is None or a.shape != b.shape or a.ndim != 2 or np.allclose(a, b):
        return False
    for recs, idx, x, y, p in ((ra, i_a, a, b, (0, 3, 1, 2)), (rb, i_b, b, a, (0, 2, 3, 1))):
        prev = next((r.out.shape for r in reversed(recs[:idx]) if r.out.ndim == 4
                     and int(np.prod(r.out.shape[1:])) == x.shape[1]), None)
        if prev and np.allclose(x.reshape(prev).transpose(p).reshape(x.shape), y, atol=1e-5, rtol=1e-4):
            return True
    return bool(np.allclose(np.sort(a, axis=1), np.sort(b, axis=1), atol=1e-5, rtol=1e-4))


def hint(row, ra_rec, rb_rec, ra, rb, outs) -> str:
    if ra_rec is None:                     # the final outputs
        a, b = outs
    else:
        a, b = ra_rec.out, rb_rec.out
    if a.shape == b.shape and a.ndim >= 1 and a.size:
        for x, y, has, lacks in ((a, b, "a", "b"), (b, a, "b", "a")):
            if np.all(x >= 0) and np.allclose(x.sum(-1), 1, atol=1e-4) and \
                    np.allclose(_act("softmax", y), x, atol=1e-5, rtol=1e-4):
                return (f"softmax in one model and not the other: model {has} applies it, "
                        f"model {lacks} returns raw scores")
    if ra_rec is None:
        return ("the last paired layers agree but the outputs do not: the difference is in code "
                "after them (a functional op in forward)") if len(outs) and row.index > 1 else ""
    kinds = kind(ra_rec.module) + " " + kind(rb_rec.module)
    ia, ib = ra_rec.inp, rb_rec.inp
    pos = [next(i for i, r in enumerate(recs) if r is rec) for recs, rec in ((ra, ra_rec), (rb, rb_rec))]
    if ("Linear" in kinds or "Dense" in kinds) and _flatten_order(ia, ib, ra, rb, *pos):
        return ("flatten order: the inputs hold the same values in another order — Keras flattens "
                "(H, W, C), torch (C, H, W); permute to channels-last before flattening")
    agree = ia is not None and ib is not None and any(
        errors(ia if p is None else ia.transpose(p), ib, 1e-5, 1e-4)[2]
        for _, p in layouts(ia.shape, ib.shape))
    if "GRU" in kinds:
        return ("GRU gate order: Keras stores gates z, r, h, torch r, z, n — swap the first two "
                "gate blocks (and reset_after=True matches torch)")
    if "LSTM" in kinds:
        return ("LSTM gates: Keras i, f, c, o = torch i, f, g, o — check the kernel transposes "
                "(in, 4u) → (4u, in) and that b_ih + b_hh equals the Keras bias")
    if "Norm" in kinds:
        ea, eb = getattr(ra_rec.module, "eps", None), getattr(rb_rec.module, "eps", None)
        if ea is not None and eb is not None and ea != eb:
            return (f"normalisation epsilon differs: {ea:g} in a, {eb:g} in b (Keras BatchNorm "
                    "defaults to 1e-3, torch to 1e-5)")
        return "normalisation differs: check the running mean/variance were copied and the epsilon"
    strides = [s for m in (ra_rec.module, rb_rec.module) for s in np.ravel(getattr(m, "stride", 1))]
    if "Conv" in kinds and any(int(s) > 1 for s in strides):
        return ("'same' padding with stride 2 is asymmetric in Keras/TF (the extra row/column "
                "goes at the end): pad with F.pad(x, (0, 1, 0, 1)) instead of padding=1")
    if agree:
        return (f"the inputs agree, the outputs do not: this layer's weights or settings differ "
                f"({kind(ra_rec.module)} vs {kind(rb_rec.module)})")
    return "the inputs already differ: something between the hooked layers (a functional op) differs"
