"""Per-tensor statistics and histograms: ``weightviz.stats(source)`` -> :class:`StatsTable`.

Everything is computed in one streaming scan per tensor (see :mod:`weightviz.statistics.scan`):
bounded memory whatever the checkpoint size, float64 accumulation, statistics over
the *finite* values only (NaN and Inf are counted apart).  ``std`` is the population
standard deviation (``ddof=0``, as ``np.std``); ``zeros`` is the fraction of *all*
elements that are exactly zero; ``norm`` is the L2 norm of the finite values.

Flags (plain words, shown as badges):

``nan`` / ``inf``     the tensor holds NaN / ±Inf values;
``empty``             0 elements;
``single_value``      exactly one element;
``all_zero``          every element is 0;
``constant``          more than one element, all finite values equal (not all zero);
``dead_units``        output units that are entirely zero: rows (dim 0) of a ≥2-D weight
                      in torch layout, or last-axis columns of a Keras ``kernel``
                      (embedding tables are skipped: a zero padding row is normal);
``outliers``          the farthest finite value lies more than ``OUTLIER_SIGMA`` (10)
                      standard deviations from the mean (only with ≥ 32 finite values);
``integer`` / ``bool`` an integer or boolean buffer, not a weight distribution;
``complex``           complex values: statistics are of the magnitude;
``low_precision``     stored in 16 bits or fewer (float16, bfloat16, float8);
``quantized``         block-quantized (GGUF ``Q8_0``, ...; ``dtypes.block_size(dtype)``): dequantized values.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from .. import dtypes
from ..errors import WeightvizError, message
from .sources import as_checkpoint

OUTLIER_SIGMA = 10.0
PROGRESS_BYTES = 256 << 20      # progress bar by default above this many bytes
FLAGS = ("nan", "inf", "empty", "single_value", "all_zero", "constant", "dead_units",
         "outliers", "integer", "bool", "complex", "low_precision", "quantized")


@dataclass(frozen=True)
class Histogram:
    """Counts over ``len(counts)`` equal bins between ``edges[0]`` and ``edges[-1]``
    (the last bin includes its upper edge, as in ``np.histogram``).  Only finite
    values are counted; ``underflow``/``overflow`` count finite values outside a
    clipped range."""
    counts: np.ndarray
    edges: np.ndarray
    underflow: int = 0
    overflow: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """Approximate q-quantile (0..1) by linear interpolation inside the bins."""
        c = np.concatenate([[self.underflow], self.counts, [self.overflow]]).astype(np.float64)
        cum = np.cumsum(c)
        if cum[-1] == 0:
            return float("nan")
        target = q * cum[-1]
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(max(i, 1), len(self.counts))          # clamp into the real bins
        prev = cum[i - 1]
        inside = c[i]
        frac = 0.0 if inside == 0 else min(max((target - prev) / inside, 0.0), 1.0)
        return float(self.edges[i - 1] + frac * (self.edges[i] - self.edges[i - 1]))


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one tensor; attribute or item access (``s.mean`` or ``s["mean"]``)."""
    name: str
    dtype: str
    shape: tuple
    numel: int
    finite: int
    mean: float
    std: float
    min: float
    max: float
    absmax: float
    zeros: float
    nan: int
    inf: int
    norm: float
    dead_units: int
    histogram: Histogram = field(repr=False)
    flags: tuple = ()

    @property
    def counts(self) -> np.ndarray:
        return self.histogram.counts

    @property
    def edges(self) -> np.ndarray:
        return self.histogram.edges

    @property
    def underflow(self) -> int:
        return self.histogram.underflow

    @property
    def overflow(self) -> int:
        return self.histogram.overflow

    def __getitem__(self, key: str):
        if key in _KEYS:
            return getattr(self, key)
        raise KeyError(message(f"no statistic named {key!r}", expected=f"one of {', '.join(_KEYS)}"))

    def keys(self):
        return list(_KEYS)

    def to_dict(self) -> dict:
        """Scalar statistics and flags as a plain dict (no histogram)."""
        d = {k: getattr(self, k) for k in _KEYS if k not in ("histogram", "counts", "edges")}
        d["flags"] = ",".join(self.flags)
        return d

    def _row(self):
        return (self.name, self.dtype, self.shape, f"{self.numel:,}", self.mean, self.std, self.min,
                self.max, self.absmax, f"{self.zeros:.1%}" if self.numel else "-",
                self.nan, self.inf, " ".join(self.flags))

    def __repr__(self) -> str:
        from ..render import fmt_float, fmt_shape
        dt = self.dtype + (f" (blocks of {dtypes.block_size(self.dtype)})" if "quantized" in self.flags else "")
        parts = [f"{self.name}: {dt} {fmt_shape(self.shape)} n={self.numel}"]
        if self.finite:
            parts.append(f"μ={fmt_float(self.mean)} σ={fmt_float(self.std)} "
                         f"range=[{fmt_float(self.min)}, {fmt_float(self.max)}]")
        if self.nan or self.inf:
            parts.append(f"nan={self.nan} inf={self.inf}")
        if self.flags:
            parts.append("flags: " + " ".join(self.flags))
        return " ".join(parts)

    def _repr_html_(self) -> str:
        from ..render import Table
        return Table(_COLUMNS, [self._row()], align=_ALIGN, badges=len(_COLUMNS) - 1).to_html()


_KEYS = tuple(f.name for f in fields(TensorStats)) + ("counts", "edges", "underflow", "overflow")
_COLUMNS = ("tensor", "dtype", "shape", "numel", "mean", "std", "min", "max", "|max|",
            "zeros", "nan", "inf", "flags")
_ALIGN = "lllrrrrrrrrrl"


class StatsTable(Mapping):
    """Tensor name -> :class:`TensorStats`, in checkpoint order; renders as text and HTML."""

    def __init__(self, entries: dict, *, format: str | None = None, bins: int = 100):
        self._entries = dict(entries)
        self.format = format
        self.bins = bins

    def __getitem__(self, name: str) -> TensorStats:
        try:
            return self._entries[name]
        except KeyError:
            close = [k for k in self._entries if name.lower() in k.lower()][:5]
            raise KeyError(message(f"no tensor named {name!r} in this stats table",
                                   fix="list the names with list(table)"
                                   + (f"; close matches: {close}" if close else ""))) from None

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def summary(self) -> dict[str, int]:
        """Flag -> number of tensors carrying it (only flags that occur, in FLAGS order)."""
        out = {f: sum(f in s.flags for s in self._entries.values()) for f in FLAGS}
        return {f: n for f, n in out.items() if n}

    def flagged(self, flag: str | None = None) -> list[str]:
        """Names of tensors with any flag, or with the given flag."""
        if flag is not None and flag not in FLAGS:
            raise WeightvizError(message(f"unknown flag {flag!r}", expected=f"one of {', '.join(FLAGS)}"))
        return [n for n, s in self._entries.items() if (flag in s.flags if flag else s.flags)]

    def to_json(self, **kwargs) -> str:
        """Format, bins, flag counts and every tensor's statistics and histogram as JSON."""
        import json
        import math
        def plain(v):                      # NaN/inf as "nan"/"inf"/"-inf": valid JSON
            return str(v) if isinstance(v, float) and not math.isfinite(v) else (
                list(v) if isinstance(v, tuple) else v)
        tensors = [{**{k: plain(v) for k, v in s.to_dict().items()}, "flags": list(s.flags),
                    "histogram": {"counts": [int(c) for c in s.histogram.counts],
                                  "edges": [plain(float(e)) for e in s.histogram.edges]}}
                   for s in self._entries.values()]
        return json.dumps({"format": self.format, "bins": self.bins, "flagged": self.summary(),
                           "tensors": tensors}, **{"indent": 2, **kwargs})

    def to_pandas(self):
        """A pandas DataFrame, one row per tensor (index: tensor name)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(message(
                "StatsTable.to_pandas() needs pandas, which is not installed",
                fix="install it with `pip install pandas` (or `conda install pandas`), "
                    "or use the table directly: table[name].mean, list(table)",
                got="import pandas failed")) from None
        rows = [s.to_dict() for s in self._entries.values()]
        df = pd.DataFrame(rows)
        return df.set_index("name") if len(df) else df

    def _view(self):
        from ..render import Table, View, fmt_count
        total = sum(s.numel for s in self._entries.values())
        summary = [("tensors", fmt_count(len(self))), ("parameters", fmt_count(total))]
        counts = self.summary()
        summary.append(("flagged", ", ".join(f"{f} ({n})" for f, n in counts.items()) or "none"))
        rows = [s._row() for s in self._entries.values()]
        tables = [Table(_COLUMNS, rows, align=_ALIGN, badges=len(_COLUMNS) - 1)] if rows else []
        title = "Tensor statistics" + (f" ({self.format})" if self.format else "")
        return View(title, summary, tables)

    def __repr__(self) -> str:
        return self._view().to_text()

    def _repr_html_(self) -> str:
        return self._view().to_html()


# ---------------------------------------------------------------- the verbs

def _unit_axis(name: str, fmt: str | None, shape) -> str | None:
    leaf = name.replace("/", ".").rsplit(".", 1)[-1].split(":")[0]
    if len(shape) < 2 or "embed" in name.lower():
        return None
    if "kernel" in leaf or (fmt or "").lower().startswith("keras"):
        return "last"
    return "first"


def _stored_bytes(on_bytes, ratio: float):
    """Progress of a dequantized scan (float32 bytes) counted in the file's stored bytes."""
    return lambda n: on_bytes(round(n * ratio))


def tensor_stats(entry, *, bins: int = 100, range=None, fmt: str | None = None,  # noqa: A002
                 scanner=None, on_bytes=None) -> TensorStats:
    """Statistics of one TensorEntry; ``range=(lo, hi)`` clips the histogram."""
    from .scan import Scanner
    if scanner is None:
        with_own = Scanner()
        try:
            return tensor_stats(entry, bins=bins, range=range, fmt=fmt, scanner=with_own,
                                on_bytes=on_bytes)
        finally:
            with_own.close()
    axis = unit_axis(entry, fmt)
    from .scan import ReadFailed
    try:
        # GGUF blocks: a view decoded chunk by chunk; progress in stored (not float32) bytes
        src = entry.streamed() if callable(getattr(entry, "streamed", None)) else entry
        if on_bytes is not None and dtypes.block_size(entry.dtype):
            on_bytes = _stored_bytes(on_bytes, entry.nbytes / (4 * entry.numel or 1))
        r = scanner.scan(src, bins=bins, limits=range, unit_axis=axis, on_bytes=on_bytes)
    except (WeightvizError, MemoryError, KeyboardInterrupt):
        raise
    except ReadFailed as failed:                       # torch: meta tensors, truncated files ...
        exc = failed.args[0]
        raise WeightvizError(message(f"could not read tensor {entry.name!r}",
                                     expected="its data (in a complete file, or in memory)",
                                     fix="check the file is complete; meta-device tensors "
                                         "have no data to scan",
                                     got=f"{type(exc).__name__}: {exc}")) from exc
    except (OSError, ValueError, TypeError, RuntimeError, ArithmeticError) as exc:
        raise WeightvizError(message(
            f"the data of tensor {entry.name!r} was read, but its statistics failed",
            expected=f"statistics of any {entry.dtype} tensor of shape {tuple(entry.shape)}",
            fix="this is a weightviz bug: please report it with this message",
            got=f"{type(exc).__name__}: {exc}")) from exc
    return describe(entry, r)


def _kind(dt: str) -> str:
    return ("bool" if dt == "bool" else "complex" if dtypes.is_complex(dt)
            else "float" if dtypes.is_float(dt) else "integer")


def unit_axis(entry, fmt: str | None) -> str | None:
    """Which axis holds a weight's output units (for the dead-unit search), or None."""
    if _kind(entry.dtype) not in ("float", "complex"):
        return None
    return _unit_axis(entry.name, fmt, entry.shape)


def describe(entry, r) -> TensorStats:
    """A TensorEntry's :class:`TensorStats` from the scan's raw :class:`~weightviz.statistics.scan.Moments`."""
    dt = entry.dtype
    kind = _kind(dt)
    absmax = max(abs(r.min), abs(r.max)) if r.finite else float("nan")
    flags = []
    if r.nan:
        flags.append("nan")
    if r.inf:
        flags.append("inf")
    if r.numel == 0:
        flags.append("empty")
    if r.numel == 1:
        flags.append("single_value")
    if r.numel and r.zeros == r.numel:
        flags.append("all_zero")
    elif r.finite > 1 and r.min == r.max:
        flags.append("constant")
    if r.dead_units and r.zeros != r.numel:
        flags.append("dead_units")
    if (kind == "float" and r.finite >= 32 and r.std > 0
            and max(r.max - r.mean, r.mean - r.min) > OUTLIER_SIGMA * r.std):
        flags.append("outliers")
    if kind != "float":
        flags.append(kind)
    if dt in dtypes.LOW_PRECISION:
        flags.append("low_precision")
    if dtypes.block_size(dt):
        flags.append("quantized")
    return TensorStats(
        name=entry.name, dtype=dt, shape=tuple(entry.shape), numel=r.numel, finite=r.finite,
        mean=float(r.mean), std=float(r.std), min=float(r.min), max=float(r.max),
        absmax=float(absmax), zeros=(r.zeros / r.numel if r.numel else 0.0), nan=r.nan,
        inf=r.inf, norm=float(r.norm), dead_units=r.dead_units,
        histogram=Histogram(r.counts, r.edges, r.underflow, r.overflow), flags=tuple(flags))


def stats(source, *, bins: int = 100, progress=None, client=None, names=None, **open_options) -> StatsTable:
    """Per-tensor statistics and histograms of a checkpoint (see the module docstring).

    ``source``: a path, a Checkpoint, a state dict or an nn.Module.  ``progress``:
    True/False, or None to show a ``tqdm.auto`` bar only for scans above 256 MiB.
    ``client``: a ``dask.distributed.Client``: the scan runs on its workers, which open
    the files themselves (:mod:`weightviz.statistics.fanout`); the table is identical.
    ``names``: only these tensors (of a remote checkpoint, only their bytes are fetched).
    ``open_options`` (``storage_options=``, ``cache=``, ...) go to ``weightviz.open`` for a path
    or URL.
    """
    from .scan import Scanner
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise WeightvizError(message("bins must be a positive integer", got=repr(bins)))
    ckpt = as_checkpoint(source, **open_options)
    if names is not None:
        ckpt = _only(ckpt, [names] if isinstance(names, str) else list(names))
    total = sum(e.nbytes for e in ckpt.values())
    show = progress if progress is not None else total > PROGRESS_BYTES
    if client is not None:
        from .fanout import scan
        axes = {name: unit_axis(e, ckpt.format) for name, e in ckpt.items()}
        raw = scan(client, ckpt, bins=int(bins), axes=axes, show=bool(show))
        return StatsTable({name: describe(ckpt[name], r) for name, r in raw.items()},
                          format=ckpt.format, bins=int(bins))
    bar = None
    if show:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="weightviz.stats", leave=False)
    scanner = Scanner()
    out = {}
    try:
        for name, entry in ckpt.items():
            out[name] = tensor_stats(entry, bins=int(bins), fmt=ckpt.format, scanner=scanner,
                                     on_bytes=bar.update if bar is not None else None)
    finally:
        scanner.close()
        if bar is not None:
            bar.close()
    return StatsTable(out, format=ckpt.format, bins=int(bins))



def _only(ckpt, names: list):
    """The checkpoint restricted to ``names`` (in that order); unknown names raise KeyError."""
    from dataclasses import replace
    return replace(ckpt, entries={n: ckpt[n] for n in names})
