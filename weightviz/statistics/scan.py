"""Streaming kernels behind :mod:`weightviz.statistics`: one tensor, bounded memory.

A tensor is read through ``TensorEntry.raw()`` (a read-only memory map when the
bytes lie plainly in the file) in chunks of ``CHUNK`` elements.  Each chunk is
widened to native float32/float64 (:mod:`weightviz.statistics.widen`), then:

* :func:`first_pass`: finite min/max per chunk; :func:`plan` turns those into the
  histogram range, the shift and the dead-unit layout (a :class:`Plan`);
* :func:`second_pass`: zero/NaN/Inf counts, float64 sums of ``x-K`` and of its square (BLAS
  rows), the histogram over the finite range (``fast_histogram``; values on the upper
  edge added back) and per-unit zero counts (dead units), as a ``Part`` per chunk;
* :func:`merge`: the parts, in chunk order, into one tensor's :class:`Moments`.

:class:`Scanner` runs these steps on threads (a long tensor's chunks on a few, unless the
machine is overloaded); they also run chunk by chunk on other processes (the plan is plain
numbers) and merge to the same result.  Tensors of ``_kernels.FUSED_MIN`` elements or more
run the second pass as compiled loops (numba, when installed): same counts, sums equal to the
last bits, about 2x faster (``benchmarks/bench_stats.py``).  Mapped pages of tensors above
``RELEASE_BETWEEN_PASSES`` are released chunk by chunk (``madvise``), so resident memory
stays bounded even for a checkpoint larger than RAM.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels as _kernels
from .chunks import Chunks, ReadFailed, read  # noqa: F401  (ReadFailed: table.py)
from .kernels import finite_minmax, fused_moments, sum_rows, sumsq_rows, histogram1d
from .widen import Widener, _fp8_table  # noqa: F401  (_fp8_table: tests)
from ..errors import WeightvizError

CHUNK = 1 << 18              # elements per chunk: 1 MiB of float32, 2 MiB as float64
RELEASE_BETWEEN_PASSES = 256 << 20   # bigger tensors drop their mapped pages per chunk
THREADS = None               # threads for long tensors (None: CPUs, <= 4; 1 if overloaded)


@dataclass
class Moments:
    """Raw per-tensor results of a scan (plain numbers; statistics.py turns them into TensorStats)."""
    numel: int = 0
    finite: int = 0                 # counts of finite, NaN, Inf and zero elements
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    mean: float = float("nan")      # over finite values
    std: float = float("nan")
    min: float = float("nan")
    max: float = float("nan")
    norm: float = 0.0
    counts: np.ndarray | None = None
    edges: np.ndarray | None = None
    underflow: int = 0              # finite values outside a clipped range
    overflow: int = 0
    dead_units: int = 0             # units (rows/columns) entirely zero, of `units`
    units: int = 0


# ---------------------------------------------------------------- the scan

_COUNTS = ("zeros", "nan", "inf", "finite", "under", "over")
BLOCK = 64       # chunks per partial sum: merge() adds chunk sums block by block, so a block
                 # folded anywhere (another thread, a Dask worker) gives bit-identical totals


class Part:
    """Results of the second pass over one chunk, or several folded by :func:`fold`
    (``units``: a list of (first unit, zero counts) pieces).  Plain data: picklable."""
    __slots__ = ("zeros", "nan", "inf", "finite", "s1", "s2", "counts", "under", "over", "units")

    def __init__(self):
        self.zeros = self.nan = self.inf = self.finite = self.under = self.over = 0
        self.s1 = self.s2 = 0.0
        self.counts = None
        self.units = []

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


def fold(parts) -> Part:
    """Parts (in chunk order) added into one: counts exactly, float sums left to right."""
    out = Part()
    for p in parts:
        for k in _COUNTS:
            setattr(out, k, getattr(out, k) + getattr(p, k))
        out.s1, out.s2 = out.s1 + p.s1, out.s2 + p.s2
        if p.counts is not None:
            out.counts = p.counts.copy() if out.counts is None else out.counts + p.counts
        out.units.extend(p.units)
    return out


def blocks(parts) -> list[Part]:
    """Chunk parts folded per :data:`BLOCK` consecutive chunks (starting at chunk 0)."""
    return [fold(parts[i:i + BLOCK]) for i in range(0, len(parts), BLOCK)]


class _Buffers:
    """Per-worker scratch space: widening buffers, a float64 copy and a mask."""

    def __init__(self, chunk: int):
        self.chunk = chunk
        self.d64 = np.empty(chunk, np.float64)
        self.mask = np.empty(chunk, bool)
        self.idx = None                   # int32 bin indexes of the fused kernel, on first use
        self.widen = {}

    def widener(self, dtype: str, raw_dtype) -> Widener:
        key = (dtype, np.dtype(raw_dtype).str)
        w = self.widen.get(key)
        if w is None:
            w = self.widen[key] = Widener(dtype, raw_dtype, self.chunk)
        return w


@dataclass(frozen=True)
class Plan:
    """What the first pass fixes for the second: histogram range, the shift ``K`` (keeps
    the variance exact), a power-of-two ``scale`` for values near float64's limit, and the
    dead-unit layout.  Built by :func:`plan`; plain numbers, so it can be shipped to a
    worker process and the same plan gives the same counts anywhere."""
    bins: int
    hlo: float
    hhi: float
    K: float
    scale: float
    big: bool
    clipped: bool
    axis: str | None
    units: int
    per_unit: int
    lo: float
    hi: float
    fused: bool = False     # the compiled kernel (numba) runs the second pass


def _around(v: float) -> tuple[float, float]:
    """A range around a single value: NumPy's ``v ± 0.5`` where 0.5 still moves ``v``;
    at large magnitudes (3e38 - 0.5 == 3e38) a relative ``± |v|·2**-20`` instead, kept
    inside the float64 range."""
    pad = 0.5 if (v - 0.5 < v < v + 0.5) else abs(v) * 2.0 ** -20
    big = np.finfo(np.float64).max
    return max(v - pad, -big), min(v + pad, big)


def first_pass(buf: "_Buffers", flat: np.ndarray, dtype: str):
    """Pass A over one chunk of raw elements: (finite min, finite max, has non-finite)."""
    return finite_minmax(buf.widener(dtype, flat.dtype)(flat))


def plan(ranges, numel: int, shape: tuple, *, bins: int = 100, limits=None,
         unit_axis: str | None = None, transposed: bool = False, chunk: int = CHUNK) -> Plan:
    """Combine the first pass's per-chunk ranges into the :class:`Plan` of the second."""
    lo = min((r[0] for r in ranges), default=np.inf)
    hi = max((r[1] for r in ranges), default=-np.inf)
    has_finite = lo <= hi
    # histogram range: explicit, else finite [min, max] (numpy's +-0.5 when constant)
    hlo, hhi = ((float(limits[0]), float(limits[1])) if limits is not None
                else (lo, hi) if has_finite and lo < hi
                else _around(lo) if has_finite else (0.0, 1.0))
    if not hhi > hlo:
        hlo, hhi = _around(hlo)
    K = lo / 2 + hi / 2 if has_finite else 0.0
    big = has_finite and max(abs(lo), abs(hi)) > 1e150
    scale = 2.0 ** -int(np.log2(max(abs(lo), abs(hi)))) if big else 1.0
    # dead-unit search: zeros per output unit (rows, or last-axis columns)
    shape = tuple(reversed(shape)) if transposed else tuple(shape)
    axis = {"first": "last", "last": "first"}.get(unit_axis) if transposed else unit_axis
    units = (shape[0] if axis == "first" else shape[-1]) if len(shape) >= 2 else 0
    if axis is None or numel == 0 or units == 0 or (axis == "last" and units > chunk):
        axis, units = None, 0
    fused = (numel >= _kernels.FUSED_MIN and not big and limits is None
             and _kernels.fused() is not None)
    return Plan(bins=int(bins), hlo=hlo, hhi=hhi, K=K, scale=scale, big=big,
                clipped=limits is not None, axis=axis, units=units,
                per_unit=numel // units if units else 0, lo=lo, hi=hi, fused=fused)


def second_pass(buf: "_Buffers", flat: np.ndarray, dtype: str, start: int, rng, pl: Plan) -> "Part":
    """Pass B over one chunk (elements ``start:start + flat.size`` of the tensor, whose
    first-pass range is ``rng``): counts, shifted sums, histogram, zeros per unit."""
    cmn, cmx, nonfinite = rng
    p = Part()
    x = buf.widener(dtype, flat.dtype)(flat)
    m = x.size
    if pl.fused and not nonfinite and x.dtype.kind == "f" and _kernels.fused() is not None:
        if buf.idx is None:
            buf.idx = np.empty(buf.chunk, np.int32)
        p.zeros, p.s1, p.s2, p.counts = fused_moments(x, pl.K, pl.hlo - pl.K, pl.hhi - pl.K,
                                                      pl.bins, buf.idx)
        p.finite = m
        if p.zeros and pl.axis is not None:
            _zero_units(p, np.equal(x, 0, out=buf.mask[:m]), start, pl)
        return p
    zmask = np.equal(x, 0, out=buf.mask[:m])
    p.zeros = int(np.count_nonzero(zmask))
    if p.zeros and pl.axis is not None:
        _zero_units(p, zmask, start, pl)
    if nonfinite:
        fin = np.isfinite(x)
        p.nan = int(np.count_nonzero(np.isnan(x)))
        x = x[fin]
        p.inf = m - x.size - p.nan
        m = x.size
    p.finite = m
    if m:
        _moments(buf, x, p, pl, cmn, cmx)
    return p


def _zero_units(p: "Part", zmask: np.ndarray, start: int, pl: Plan) -> None:
    """Zeros per output unit of one chunk, for the dead-unit search."""
    m = zmask.size
    if pl.axis == "first":
        u0, u1 = start // pl.per_unit, (start + m - 1) // pl.per_unit
        cuts = np.arange(u0, u1 + 1) * pl.per_unit - start
        cuts[0] = 0
        p.units = [(u0, np.add.reduceat(zmask, cuts))]
    else:
        idx = (np.flatnonzero(zmask) + start) % pl.units
        p.units = [(0, np.bincount(idx, minlength=pl.units))]


def merge(parts, numel: int, pl: Plan, *, folded: bool = False) -> Moments:
    """One tensor's :class:`Moments` from its second-pass parts in chunk order, or from
    its :func:`blocks` (``folded=True``): the same numbers either way."""
    res = Moments(numel=int(numel), units=pl.units)
    if pl.lo <= pl.hi:
        res.min, res.max = pl.lo, pl.hi
    total = fold(parts if folded else blocks(list(parts)))
    res.zeros, res.nan, res.inf, res.finite = total.zeros, total.nan, total.inf, total.finite
    res.underflow, res.overflow = total.under, total.over
    s1, s2 = total.s1, total.s2
    counts = total.counts if total.counts is not None else np.zeros(pl.bins, np.float64)
    unit_zeros = np.zeros(pl.units, np.int64) if pl.units else None
    if unit_zeros is not None:
        for u0, z in total.units:
            unit_zeros[u0:u0 + z.size] += z
    if res.finite:
        n, K, scale = res.finite, pl.K, pl.scale
        md = s1 / n
        var = max(s2 / n - md * md, 0.0)
        res.mean = K + md / scale
        res.std = float(np.sqrt(var)) / scale
        sq = s2 + 2 * (K * scale) * s1 + n * (K * scale) ** 2
        res.norm = float(np.sqrt(max(sq, 0.0))) / scale
    if unit_zeros is not None:
        res.dead_units = int(np.count_nonzero(unit_zeros == pl.per_unit))
    res.counts = np.rint(counts).astype(np.int64)
    res.edges = np.linspace(pl.hlo, pl.hhi, pl.bins + 1)
    return res


def _moments(buf, x, p, pl: Plan, cmn, cmx):
    """Shifted float64 sums and the histogram of one chunk of finite values."""
    K, scale, bins, hlo, hhi = pl.K, pl.scale, pl.bins, pl.hlo, pl.hhi
    m = x.size
    d = buf.d64[:m]
    # dtype=float64: with NumPy 2 promotion a Python float would keep float32 math
    if pl.big:                             # tiny scale first, so nothing overflows
        np.multiply(x, scale, out=d, dtype=np.float64)
        np.subtract(d, K * scale, out=d)
    else:                                  # cast, then subtract in place: ~30% faster
        np.copyto(d, x)                    # than one mixed-dtype subtract
        np.subtract(d, K, out=d)
    p.s1 = sum_rows(d)
    if pl.clipped or pl.big:
        p.counts = histogram1d(x, bins, (hlo, hhi))
        if cmn <= hhi <= cmx:              # fast_histogram leaves out x == upper edge
            p.counts[-1] += np.count_nonzero(x == hhi)
    else:
        # bin the float64 copy d = x - K over the shifted range: fast_histogram reads
        # float64 without converting.  Subtracting K is monotonic, so every d lies in
        # [lo - K, hi - K]; only d == hi - K (left out by fast_histogram) is added back.
        top = hhi - K
        p.counts = histogram1d(d, bins, (hlo - K, top))
        if cmx >= hhi:
            p.counts[-1] += np.count_nonzero(d >= top)
    p.s2 = sumsq_rows(d)
    if pl.clipped:
        if cmn < hlo:
            p.under = int(np.count_nonzero(x < hlo))
        if cmx > hhi:
            p.over = int(np.count_nonzero(x > hhi))


class Scanner:
    """Runs the steps above for one tensor after another: read chunks, first pass, plan,
    second pass, merge.  Chunks of a long tensor run on a few threads (NumPy, BLAS and
    fast_histogram release the GIL).  Reuse one Scanner for many tensors."""

    def __init__(self, chunk: int | None = None, threads: int | None = None):
        import os
        import queue
        self.chunk = chunk = int(chunk or CHUNK)
        threads = threads or THREADS
        if threads is None:                   # on an overloaded machine extra threads
            try:                              # just queue for the GIL and a core
                cpus = len(os.sched_getaffinity(0))
                threads = cpus if os.getloadavg()[0] < 2 * cpus else 1
            except (AttributeError, OSError):
                threads = 1
        self.threads = max(1, min(int(threads), 4))
        self._pool = None
        self._free = queue.SimpleQueue()
        self._free.put(_Buffers(chunk))
        self._made = 1

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _map(self, fn, items):
        """``[fn(buffers, item) for item in items]``, on the pool when it pays."""
        fn = self._with_buffers(fn)
        if len(items) < 2 or self.threads == 1:
            return [fn(it) for it in items]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="weightviz-scan")
            while self._made < self.threads:
                self._free.put(_Buffers(self.chunk))
                self._made += 1
        # a few contiguous batches per thread, not one task per chunk: each task costs a
        # future and a GIL hand-over (~20 us), as much as a 1 MiB chunk's min/max
        n = max(1, min(len(items), 4 * self.threads))
        step = -(-len(items) // n)
        batches = [items[i:i + step] for i in range(0, len(items), step)]
        return [r for batch in self._pool.map(lambda b: [fn(it) for it in b], batches) for r in batch]

    def _with_buffers(self, fn):
        def run(item):
            buf = self._free.get()
            try:
                with np.errstate(all="ignore"):     # errstate is per thread
                    return fn(buf, item)
            finally:
                self._free.put(buf)
        return run

    def scan(self, entry, bins: int = 100, limits=None, unit_axis: str | None = None,
             on_bytes=None) -> Moments:
        """Statistics and histogram of one TensorEntry (see the module docstring)."""
        if entry.numel == 0:                 # nothing to read (NumPy may not even hold
            pl = plan([], 0, entry.shape, bins=bins, limits=limits)   # a shape like (0, 2**62))
            if on_bytes is not None:
                on_bytes(0)
            return merge([], 0, pl)
        try:
            raw = read(entry)
        except (WeightvizError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ReadFailed(exc) from exc
        with np.errstate(all="ignore"):      # inf - inf, overflowing squares: handled
            src = Chunks(raw, self.chunk)
            bounds, dtype, per_byte = src.bounds(), entry.dtype, raw.dtype.itemsize
            # a big tensor drops its mapped pages chunk by chunk in both passes; a smaller
            # one keeps them until its memory map is closed (one munmap, no madvise calls)
            release = raw.size * per_byte > RELEASE_BETWEEN_PASSES

            def pass_a(buf, ab):
                src.ready(*ab)
                r = first_pass(buf, src.flat[ab[0]:ab[1]], dtype)
                if release:
                    src.release(*ab)
                return r

            ranges = self._map(pass_a, bounds)
            pl = plan(ranges, int(raw.size), entry.shape, bins=bins, limits=limits,
                      unit_axis=unit_axis, transposed=src.transposed, chunk=self.chunk)

            def pass_b(buf, job):
                (a, b), rng = job
                p = second_pass(buf, src.flat[a:b], dtype, a, rng, pl)
                if release:
                    src.release(a, b)
                return p

            parts = self._map(pass_b, list(zip(bounds, ranges)))
            if on_bytes is not None:
                for a, b in bounds:
                    on_bytes((b - a) * per_byte)
                if not bounds:
                    on_bytes(0)
            return merge(parts, raw.size, pl)
