"""The two-checkpoint :class:`DiffReport`: rows, the summary line, and their rendering.

:mod:`weightviz.compare.tensordiff` computes the rows; this module only describes and displays
them (text and HTML from :mod:`weightviz.render`, ``to_dict``/``to_json``).

Statuses, one per tensor name:

``same``            shapes and dtypes equal, every element within ``atol`` (NaN where NaN is);
``changed``         shapes and dtypes equal, some element differs by more than ``atol``;
``dtype_differs``   shapes equal, dtypes not (the values are still compared);
``shape_differs``   the shapes differ (a transpose of the same values is named in ``relation``);
``only_a`` / ``only_b``  the name has no partner on the other side.

``relation`` names the two conversion slips that look like changes: ``transposed``
(``b`` holds ``a``'s values with its axes reversed/permuted) and ``scalar multiple``
(``b = c·a`` to float precision, ``c ≠ 1``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Iterator

from .. import render
from ..errors import WeightvizError, message

STATUSES = ("same", "changed", "dtype_differs", "shape_differs", "only_a", "only_b")


@dataclass(frozen=True)
class DiffRow:
    """One tensor pair.  Numbers are float64 over the elements both sides hold (NaN when
    not comparable); ``frac_changed`` is the fraction with ``|a - b| > atol``."""
    name: str                        # a's name (b's for only_b)
    status: str
    name_b: str | None = None
    shape_a: tuple | None = None
    shape_b: tuple | None = None
    dtype_a: str | None = None
    dtype_b: str | None = None
    max_abs: float = math.nan        # max |a - b|
    rel_change: float = math.nan     # ||a - b|| / ||a||
    cosine: float = math.nan         # a·b / (||a|| ||b||)
    frac_changed: float = math.nan
    relation: str = ""               # "transposed", "scalar multiple ×0.5", ...
    rule: str = ""                   # how the names were paired, when not exactly
    nan_a: int = 0
    nan_b: int = 0
    order: int = 0                   # position in a (b-only rows after)

    @property
    def numel(self) -> int:
        shape = self.shape_a if self.shape_a is not None else self.shape_b
        return math.prod(shape) if shape is not None else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("shape_a", "shape_b"):
            d[k] = list(d[k]) if d[k] is not None else None
        for k in ("max_abs", "rel_change", "cosine", "frac_changed"):
            d[k] = None if math.isnan(d[k]) else d[k]
        return d

    def _cells(self):
        shape = (render.fmt_shape(self.shape_a) if self.shape_b in (None, self.shape_a)
                 else render.fmt_shape(self.shape_b) if self.shape_a is None
                 else f"{render.fmt_shape(self.shape_a)} vs {render.fmt_shape(self.shape_b)}")
        dtype = (self.dtype_a or self.dtype_b or "") if self.dtype_a in (None, self.dtype_b) or \
            self.dtype_b is None else f"{self.dtype_a} vs {self.dtype_b}"
        pct = "" if math.isnan(self.frac_changed) else f"{self.frac_changed:.1%}"
        note = "; ".join(x for x in (self.relation, self.rule and f"paired: {self.rule}",
                                     self.nan_a and f"{self.nan_a} NaN in a",
                                     self.nan_b and f"{self.nan_b} NaN in b",
                                     self.name_b not in (None, self.name) and f"b: {self.name_b}")
                         if x)
        num = lambda x: "" if math.isnan(x) else x   # noqa: E731  (blank: not compared)
        return (self.name, self.status, shape, dtype, num(self.max_abs), num(self.rel_change),
                fmt_cosine(self.cosine), pct, note)

    def __repr__(self) -> str:
        c = self._cells()
        nums = " ".join(f"{k}={render.fmt_float(v)}" for k, v in
                        (("max_abs", self.max_abs), ("rel_change", self.rel_change))
                        if not math.isnan(v))
        nums += f" cosine={fmt_cosine(self.cosine)}" if not math.isnan(self.cosine) else ""
        return " ".join(x for x in (f"{self.name}: {self.status}", c[2], c[3], nums, c[8]) if x)


_COLUMNS = ("tensor", "status", "shape", "dtype", "max |a−b|", "rel change", "cosine",
            "changed", "note")
_ALIGN = "lllrrrrrl"


class DiffReport:
    """Tensor pairs of two sources, in a's order (b-only names last).

    ``report.summary`` is the one-line answer; ``report[name]`` the row (either side's
    name); ``report.same`` is True when every pair is ``same``; ``counts``,
    ``changed()``, ``to_dict()``/``to_json()``; text and HTML displays."""

    def __init__(self, rows: list[DiffRow], *, a: str, b: str, atol: float, notes=(),
                 sources=None):
        self.rows = list(rows)
        self.sources = sources       # the two Checkpoints compared (for plots), or None
        self.a, self.b, self.atol = a, b, float(atol)
        self.notes = list(notes)
        self._by = {}
        for r in self.rows:
            self._by.setdefault(r.name, r)
            if r.name_b:
                self._by.setdefault(r.name_b, r)

    def __iter__(self) -> Iterator[DiffRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> DiffRow:
        try:
            return self._by[name]
        except KeyError:
            close = [k for k in self._by if name.lower() in k.lower()][:5]
            raise KeyError(message(f"no tensor named {name!r} in this diff",
                                   fix="list the names with [r.name for r in report]"
                                   + (f"; close matches: {close}" if close else ""))) from None

    @property
    def counts(self) -> dict[str, int]:
        """Status -> number of rows, in STATUSES order, only statuses that occur."""
        out = {s: sum(r.status == s for r in self.rows) for s in STATUSES}
        return {s: n for s, n in out.items() if n}

    @property
    def same(self) -> bool:
        return all(r.status == "same" for r in self.rows)

    def pair(self, name: str):
        """The two TensorEntry objects of the row ``name`` (either side's name)."""
        r = self[name]
        if self.sources is None or r.status in ("only_a", "only_b"):
            raise WeightvizError(message(f"{name!r} has no pair of tensors to show",
                                         got=f"status {r.status}"))
        return self.sources[0][r.name], self.sources[1][r.name_b]

    def changed(self) -> list[str]:
        """Names of the pairs that are not ``same`` (a's names; b's for only_b)."""
        return [r.name for r in self.rows if r.status != "same"]

    @property
    def summary(self) -> str:
        n, c = len(self.rows), self.counts
        if not n:
            return "nothing to compare: both sides are empty"
        paired = n - c.get("only_a", 0) - c.get("only_b", 0)
        if self.same:
            tol = f" (within atol={render.fmt_float(self.atol)})" if self.atol else ""
            return f"all {n} tensors the same{tol}"
        moved = [r for r in self.rows if r.status in ("changed", "dtype_differs")
                 and not math.isnan(r.rel_change)]
        n_changed = c.get("changed", 0) + c.get("dtype_differs", 0)
        parts = [f"{n_changed} of {paired} paired tensor{'s' if paired != 1 else ''} changed"
                 ] if n_changed else []
        if moved:
            top = max(moved, key=lambda r: r.rel_change)
            parts.append(f"largest relative change {render.fmt_float(top.rel_change, 2)} "
                         f"in `{top.name}`")
        slips = [r for r in self.rows if r.relation]
        if slips:
            kinds = sorted({r.relation.split(":")[0] for r in slips})
            parts.append(f"{len(slips)} look like conversion slips ({', '.join(kinds)})")
        for key, words in (("shape_differs", "with different shapes"), ("only_a", "only in a"),
                           ("only_b", "only in b")):
            if c.get(key):
                parts.append(f"{c[key]} {words}")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "same": self.same, "a": self.a, "b": self.b,
                "atol": self.atol, "counts": self.counts, "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows]}

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def view(self, *, all_rows: bool = True) -> render.View:
        rows = self.rows if all_rows else [r for r in self.rows if r.status != "same"]
        summary = [("a", self.a), ("b", self.b),
                   ("pairs", ", ".join(f"{s} ({n})" for s, n in self.counts.items()) or "none")]
        if self.atol:
            summary.append(("atol", render.fmt_float(self.atol)))
        tables = [render.Table(_COLUMNS, [r._cells() for r in rows], align=_ALIGN, badges=1)] \
            if rows else []
        return render.View("Checkpoint diff", summary, tables, notes=self.notes,
                           headline=self.summary,
                           headline_status="ok" if self.same else "warn")

    def __repr__(self) -> str:
        return self.view().to_text()

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return self.view().to_html()


def fmt_cosine(c: float) -> str:
    """Cosines near 1 with six decimals (four significant digits would show 0.99998 as 1)."""
    if math.isnan(c):
        return ""
    if c > 0.99:                       # '1' for anything that rounds to it: stable across BLAS
        text = f"{c:.6f}"
        return "1" if text == "1.000000" else text
    return render.fmt_float(c)


def bad_tolerance(atol) -> WeightvizError:
    return WeightvizError(message("atol must be a finite number ≥ 0",
                                  fix="pass e.g. atol=1e-6 (0 means exact)", got=repr(atol)))
