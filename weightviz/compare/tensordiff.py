"""``weightviz.diff(a, b)``: two checkpoints (or models) compared tensor by tensor.

Sources are anything :func:`weightviz.stats` reads: a path in any format, a
``Checkpoint``, a state dict, an ``nn.Module``.  Names pair exactly, then through
``rename=`` (a-name -> b-name, a mapping or a callable), then by the fixes
:func:`weightviz.check` knows (wrapper segments such as ``module.``, a leading
``model.`` or another common prefix).  A Keras file with an architecture, against a
torch-named side, is compared as the torch model weightviz builds from it (names and
layouts converted: the report says so).

Each pair is streamed in chunks of ``CHUNK`` elements, both sides in the same
(C) element order, widened to float64; only sums, a maximum and a count are kept,
so the extra memory is a few chunk buffers whatever the tensor size.  Per pair:
max ``|a - b|``, ``||a - b|| / ||a||``, cosine ``a·b / (||a|| ||b||)`` and the fraction
of elements with ``|a - b| > atol``; NaN at the same place on both sides counts as
the same.  A scalar multiple falls out of the same sums (``1 - cos`` at float
rounding); a transpose is tried for square matrices that changed and for shapes that
are a permutation of each other.  See :mod:`weightviz.compare.diffreport` for the statuses.
"""
from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Mapping

import numpy as np

from ..statistics.kernels import dot_rows, sumsq_rows
from ..statistics.widen import Widener
from ..checkpoint import Checkpoint
from .diffreport import DiffReport, DiffRow, bad_tolerance
from ..errors import WeightvizError, capped, message
from ..matching.names import match_names

CHUNK = 1 << 18
PROGRESS_BYTES = 256 << 20          # a bar by default when both sides hold more than this
SCALAR_COS = 1e-9                   # 1 - cosine below this: the same direction


# ---------------------------------------------------------------- sources

def _side(source, which: str) -> tuple[Checkpoint, str, list[str]]:
    """The Checkpoint of one side, a deterministic label, and notes (unwrapping)."""
    from ..matching.match import as_checkpoint
    if isinstance(source, (str, os.PathLike)):
        label = os.path.basename(os.fspath(source).rstrip("/\\")) or os.fspath(source)
    elif isinstance(source, Checkpoint):
        label = f"Checkpoint ({source.format})"
    elif not isinstance(source, Mapping) and callable(getattr(source, "state_dict", None)):
        label = f"{type(source).__name__} (nn.Module)"
    else:
        label = "state dict"
    try:
        ckpt, notes = as_checkpoint(source)
    except WeightvizError as exc:
        raise WeightvizError(f"diff: side {which} could not be read.\n{exc}") from exc
    return ckpt, label, [f"{which}: {n}" for n in notes]


def _torch_named(ckpt: Checkpoint) -> bool:
    return bool(len(ckpt)) and not any("/" in n for n in ckpt)


def _via_torch(ckpt: Checkpoint, other: Checkpoint, which: str) -> tuple[Checkpoint, list[str]]:
    """A Keras checkpoint with an architecture, against torch names: its built model's weights."""
    if not (str(ckpt.format).startswith("keras") and ckpt.architecture is not None
            and not _torch_named(ckpt) and _torch_named(other)):
        return ckpt, []
    from ..models.builders import build
    from ..matching.match import as_checkpoint
    model = build(ckpt)
    built, _ = as_checkpoint(model)
    return built, [f"{which}: Keras weights compared as the torch model weightviz builds from "
                   f"them ({ckpt.format}: names and layouts converted)"]


_VARS = re.compile(r"^(.*)/vars/(\d+)$")


def _keras_positions(names_a, names_b, shapes_a, shapes_b, pairs, rules) -> None:
    """Keras 3 ``.weights.h5`` names its weights ``layer/vars/<i>``; other Keras files
    ``layer/kernel``...  Pair the i-th weight of a layer with ``layer/vars/<i>`` (same shape)."""
    used = set(pairs.values())
    fa = [n for n in names_a if n not in pairs]
    fb = [n for n in names_b if n not in used]

    def keys(names):
        out, seen = {}, {}
        for n in names:
            m = _VARS.match(n)
            if m:
                out[(m.group(1), int(m.group(2)))] = n
            elif "/" in n:
                layer = n.rsplit("/", 1)[0]
                i = seen[layer] = seen.get(layer, -1) + 1
                out[(layer, i)] = n
        return out
    ka, kb = keys(fa), keys(fb)
    if not any(_VARS.match(n) for n in fa + fb):
        return
    for k, n in ka.items():
        m = kb.get(k)
        if m is not None and shapes_a[n] == shapes_b[m] and (_VARS.match(n) or _VARS.match(m)):
            pairs[n], rules[n] = m, "Keras 3 layer/vars/<i> by position in its layer"


# ---------------------------------------------------------------- streaming

def _pieces(raw: np.ndarray, chunk: int):
    """Flat pieces of ``raw`` in C order, each at most ``chunk`` elements (a view when
    the array is C-contiguous, else a bounded copy of a block of rows)."""
    if raw.ndim == 0:
        yield raw.reshape(1)
        return
    if raw.flags.c_contiguous:
        flat = raw.reshape(-1)
        for s in range(0, flat.size, chunk):
            yield flat[s:s + chunk]
        return
    row = math.prod(raw.shape[1:])
    if row <= chunk or raw.ndim == 1:
        step = max(1, chunk // max(row, 1))
        for i in range(0, raw.shape[0], step):
            yield np.ascontiguousarray(raw[i:i + step]).reshape(-1)
    else:
        for i in range(raw.shape[0]):
            yield from _pieces(raw[i], chunk)


def _aligned(ia, ib):
    """Pairs of equal-length slices from two piece streams of the same total length."""
    xa = xb = None
    pa = pb = 0
    while True:
        if xa is None or pa == xa.size:
            xa, pa = next(ia, None), 0
        if xb is None or pb == xb.size:
            xb, pb = next(ib, None), 0
        if xa is None or xb is None:
            return
        n = min(xa.size - pa, xb.size - pb)
        yield xa[pa:pa + n], xb[pb:pb + n]
        pa, pb = pa + n, pb + n


def _real(raw: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    """Complex arrays compare as their (real, imaginary) pairs."""
    if raw.dtype.kind == "c":
        f = np.float32 if raw.dtype.itemsize <= 8 else np.float64
        return np.ascontiguousarray(raw).view(f), np.dtype(f).name
    return raw, dtype


class _Sums:
    """Float64 running sums of one pair (a·a, b·b, a·b, (a-b)², max |a-b|, counts)."""

    def __init__(self, chunk: int):
        self.aa = self.bb = self.ab = self.dd = 0.0
        self.max = 0.0
        self.changed = self.n = self.nan_a = self.nan_b = 0
        self.a64, self.b64 = np.empty(chunk), np.empty(chunk)

    def add(self, x: np.ndarray, y: np.ndarray, atol: float) -> None:
        m = x.size
        a, b = self.a64[:m], self.b64[:m]
        np.copyto(a, x)
        np.copyto(b, y)
        aa, bb = sumsq_rows(a), sumsq_rows(b)
        if not (math.isfinite(aa) and math.isfinite(bb)):
            self._add_nonfinite(a, b, atol)
            return
        self.aa, self.bb, self.ab = self.aa + aa, self.bb + bb, self.ab + dot_rows(a, b)
        np.subtract(a, b, out=a)
        self.dd += sumsq_rows(a)
        np.abs(a, out=a)
        if m:
            self.max = max(self.max, float(a.max()))
        self.changed += int(np.count_nonzero(a > atol))
        self.n += m

    def _add_nonfinite(self, a, b, atol) -> None:
        na, nb = np.isnan(a), np.isnan(b)
        self.nan_a, self.nan_b = self.nan_a + int(na.sum()), self.nan_b + int(nb.sum())
        fin = np.isfinite(a) & np.isfinite(b)
        # NaN where NaN is, or the same infinity: the same element
        same_special = (na & nb) | (~fin & ~na & ~nb & (a == b))
        self.changed += int(np.count_nonzero(~fin & ~same_special))
        self.n += a.size
        fa, fb = a[fin], b[fin]
        self.aa, self.bb, self.ab = self.aa + float(fa @ fa), self.bb + float(fb @ fb), self.ab + float(fa @ fb)
        d = np.abs(fa - fb)
        self.dd += float(d @ d)
        if d.size:
            self.max = max(self.max, float(d.max()))
        self.changed += int(np.count_nonzero(d > atol))

    def numbers(self) -> dict:
        na, nb = math.sqrt(self.aa), math.sqrt(self.bb)
        rel = math.sqrt(self.dd) / na if na else (0.0 if self.dd == 0 else math.inf)
        cos = self.ab / (na * nb) if na and nb else (1.0 if na == nb else 0.0)
        if self.changed == 0 and self.dd == 0:
            cos = 1.0                          # not 1 - 1 ulp: equal tensors show 1
        return {"max_abs": self.max if self.n else math.nan, "rel_change": rel if self.n else math.nan,
                "cosine": min(cos, 1.0) if self.n else math.nan,
                "frac_changed": self.changed / self.n if self.n else 0.0,
                "nan_a": self.nan_a, "nan_b": self.nan_b}


def _compare(ra, da, rb, db, atol, chunk, on_bytes=None) -> _Sums:
    """Stream two arrays of one shape (``da``/``db``: weightviz dtype names)."""
    ra, da = _real(ra, da)
    rb, db = _real(rb, db)
    wa, wb = Widener(da, ra.dtype, chunk), Widener(db, rb.dtype, chunk)
    s = _Sums(chunk)
    per = ra.dtype.itemsize + rb.dtype.itemsize
    with np.errstate(all="ignore"):
        for x, y in _aligned(_pieces(ra, chunk), _pieces(rb, chunk)):
            s.add(wa(x), wb(y), atol)
            if on_bytes is not None:
                on_bytes(x.size * per)
    return s


def _permutations(sa: tuple, sb: tuple):
    """Axis orders p with ``b.transpose(p).shape == a.shape``, reversed axes first."""
    if len(sa) < 2 or len(sa) != len(sb) or sorted(sa) != sorted(sb) or len(sa) > 5:
        return []
    rev = tuple(reversed(range(len(sb))))
    perms = [p for p in itertools.permutations(range(len(sb)))
             if tuple(sb[i] for i in p) == tuple(sa) and p != tuple(range(len(sb)))]
    return sorted(perms, key=lambda p: p != rev)[:3]


# ---------------------------------------------------------------- one pair

def _read(entry, which: str):
    try:
        return entry.raw()
    except WeightvizError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightvizError(message(f"diff: could not read tensor {entry.name!r} of side {which}",
                                     expected="its data (in a complete file, or in memory)",
                                     fix="check the file is complete",
                                     got=f"{type(exc).__name__}: {exc}")) from exc


def _pair(name, ea, eb, rule, order, atol, chunk, on_bytes) -> DiffRow:
    base = dict(name=name, name_b=eb.name, shape_a=tuple(ea.shape), shape_b=tuple(eb.shape),
                dtype_a=ea.dtype, dtype_b=eb.dtype, rule=rule or "", order=order)
    if ea.numel == 0 or eb.numel == 0:         # nothing to read (nor to compare)
        if on_bytes is not None:
            on_bytes(ea.nbytes + eb.nbytes)
        status = ("shape_differs" if tuple(ea.shape) != tuple(eb.shape) else
                  "dtype_differs" if ea.dtype != eb.dtype else "same")
        return DiffRow(status=status, frac_changed=0.0, **base)
    ra, rb = _read(ea, "a"), _read(eb, "b")
    if tuple(ea.shape) != tuple(eb.shape):
        for p in _permutations(tuple(ea.shape), tuple(eb.shape)):
            s = _compare(ra, ea.dtype, np.transpose(rb, p), eb.dtype, atol, chunk)
            if s.changed == 0:
                what = ("transposed" if p == tuple(reversed(range(len(p))))
                        else f"axes permuted {tuple(p)}")
                return DiffRow(status="shape_differs", relation=f"{what}: same values",
                               **base, **s.numbers())
        if on_bytes is not None:
            on_bytes(ea.nbytes + eb.nbytes)
        return DiffRow(status="shape_differs", **base)
    s = _compare(ra, ea.dtype, rb, eb.dtype, atol, chunk, on_bytes)
    nums = s.numbers()
    status = ("dtype_differs" if ea.dtype != eb.dtype
              else "same" if s.changed == 0 else "changed")
    relation = ""
    if s.changed and s.n:
        c = s.ab / s.aa if s.aa else math.nan      # b ≈ c·a: the least-squares c
        if (math.isfinite(c) and abs(c - 1) > 1e-6 and c != 0
                and 1 - nums["cosine"] < SCALAR_COS):
            relation = f"scalar multiple: b = {c:.4g}·a"
        elif len(ea.shape) == 2 and ea.shape[0] == ea.shape[1] > 1:
            t = _compare(ra, ea.dtype, rb.T, eb.dtype, atol, chunk)
            if t.changed == 0:
                relation = "transposed: b.T equals a"
    return DiffRow(status=status, relation=relation, **base, **nums)


def difference_histogram(ea, eb, bins: int = 100, chunk: int | None = None):
    """Counts and edges of ``a - b`` over its finite range (two streamed passes)."""
    from ..statistics.kernels import histogram1d
    chunk = int(chunk or CHUNK)
    if tuple(ea.shape) != tuple(eb.shape):
        raise WeightvizError(message("a difference needs two tensors of one shape",
                                     got=f"{tuple(ea.shape)} and {tuple(eb.shape)}"))

    def differences():
        ra, da = _real(_read(ea, "a"), ea.dtype)
        rb, db = _real(_read(eb, "b"), eb.dtype)
        wa, wb = Widener(da, ra.dtype, chunk), Widener(db, rb.dtype, chunk)
        for x, y in _aligned(_pieces(ra, chunk), _pieces(rb, chunk)):
            d = np.subtract(wa(x), wb(y), dtype=np.float64)
            yield d[np.isfinite(d)]

    lo, hi = math.inf, -math.inf
    with np.errstate(all="ignore"):
        for d in differences():
            if d.size:
                lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
        if lo > hi:
            lo, hi = 0.0, 1.0
        if lo == hi:                     # numpy's +-0.5, widened where 0.5 rounds away
            pad = max(0.5, abs(lo) * 1e-6)
            lo, hi = lo - pad, hi + pad
        counts = np.zeros(bins, np.int64)
        for d in differences():
            c = histogram1d(d, bins, (lo, hi))
            c[-1] += np.count_nonzero(d == hi)
            counts += np.rint(c).astype(np.int64)
    return counts, np.linspace(lo, hi, bins + 1)


# ---------------------------------------------------------------- the verb

def diff(a, b, *, rename=None, atol: float = 0.0, progress=None, chunk: int | None = None) -> DiffReport:
    """Compare two sources tensor by tensor -> :class:`~weightviz.compare.diffreport.DiffReport`.

    ``rename``: a-name -> b-name (mapping or callable), tried after exact names.
    ``atol``: elements closer than this count as unchanged.  ``progress``: True/False, or
    None for a ``tqdm.auto`` bar only above 256 MiB.  The sources are never modified.
    """
    try:
        atol = float(atol)
    except (TypeError, ValueError):
        raise bad_tolerance(atol) from None
    if not (math.isfinite(atol) and atol >= 0):
        raise bad_tolerance(atol)
    if rename is not None and not (callable(rename) or isinstance(rename, Mapping)):
        raise WeightvizError(message("rename= must map a-names to b-names",
                                     expected="a dict {a name: b name} or a callable",
                                     got=type(rename).__name__))
    chunk = int(chunk or CHUNK)
    ca, label_a, notes = _side(a, "a")
    cb, label_b, notes_b = _side(b, "b")
    ca, more_a = _via_torch(ca, cb, "a")
    cb, more_b = _via_torch(cb, ca, "b")
    notes += notes_b + more_a + more_b
    names_a, names_b = list(ca), list(cb)
    shapes_a = {n: tuple(ca[n].shape) for n in names_a}
    shapes_b = {n: tuple(cb[n].shape) for n in names_b}
    pairs, rules = match_names(names_a, names_b, shapes_a, shapes_b, rename)
    _keras_positions(names_a, names_b, shapes_a, shapes_b, pairs, rules)
    if names_a and names_b and not pairs:
        raise WeightvizError(message(
            "diff: the two sources have no tensor name in common",
            expected="the same names, or names that pair after stripping a prefix",
            fix="pass rename= (a dict or a function from a-names to b-names); for a Keras "
                "weights-only file, build the model first: diff(weightviz.build(json, "
                "weights=file), other)",
            got=f"a: {capped(names_a, 4)}; b: {capped(names_b, 4)}"))
    total = sum(ca[n].nbytes + cb[m].nbytes for n, m in pairs.items())
    show = progress if progress is not None else total > PROGRESS_BYTES
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="weightviz.diff", leave=False)
    rows = []
    try:
        for i, n in enumerate(names_a):
            m = pairs.get(n)
            if m is None:
                e = ca[n]
                rows.append(DiffRow(name=n, status="only_a", shape_a=tuple(e.shape),
                                    dtype_a=e.dtype, order=i))
                continue
            rows.append(_pair(n, ca[n], cb[m], rules.get(n), i, atol, chunk,
                              bar.update if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    used = set(pairs.values())
    for j, m in enumerate(names_b):
        if m not in used:
            e = cb[m]
            rows.append(DiffRow(name=m, status="only_b", shape_b=tuple(e.shape), dtype_b=e.dtype,
                                order=len(names_a) + j))
    return DiffReport(rows, a=label_a, b=label_b, atol=atol, notes=notes, sources=(ca, cb))
