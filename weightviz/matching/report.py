"""The checkpoint-versus-model Report: rows, verdict, counts and their rendering.

:mod:`weightviz.matching.match` builds a :class:`Report`; this module only describes and
displays it (text and HTML from :mod:`weightviz.render`, ``to_dict``/``to_json``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Iterator

from .. import dtypes, render
from ..checkpoint import layer_of
from .names import fold
from ..errors import capped


class Status(str, Enum):
    """What happened to one tensor name. Compares equal to its plain string."""
    OK = "ok"
    MISSING = "missing"                # the model has it, the checkpoint does not
    UNEXPECTED = "unexpected"          # the checkpoint has it, the model does not
    SHAPE_MISMATCH = "shape_mismatch"
    TRANSPOSED = "transposed"          # 2-D, shape exactly reversed: the (in, out) layout
    DTYPE_MISMATCH = "dtype_mismatch"  # loadable by a cast; .lossless / .max_error say how well
    RENAMED = "renamed"                # matched after a rename rule (.rule names it)
    NON_FINITE = "non_finite"          # the checkpoint tensor holds NaN or Inf
    FOLDED = "folded"                  # an exporter folded it into another tensor (BatchNorm into
                                       # the Conv before it): .ckpt_name holds the folded values

    def __str__(self) -> str:
        return self.value

    __format__ = lambda self, spec: format(self.value, spec)  # noqa: E731


STATUSES = tuple(s.value for s in Status)
# display order: problems first, the quietly fine last
DISPLAY_ORDER = ("non_finite", "shape_mismatch", "missing", "unexpected", "folded", "transposed",
                 "dtype_mismatch", "renamed", "ok")


@dataclass
class Row:
    """One tensor name. ``name`` is the model's name (the checkpoint's for ``unexpected``)."""
    name: str
    status: Status
    ckpt_name: str | None = None
    ckpt_shape: tuple | None = None
    ckpt_dtype: str | None = None
    model_shape: tuple | None = None
    model_dtype: str | None = None
    note: str = ""
    rule: str | None = None          # the rename rule that matched (renamed rows)
    suggestion: str | None = None    # a likely counterpart name (missing/unexpected rows)
    lossless: bool | None = None     # dtype_mismatch: would the cast keep every value?
    max_error: float | None = None   # dtype_mismatch: max abs error the cast introduces
    fits: bool = False               # would load as is (ok, renamed, lossless cast)
    loaded: bool | None = None       # set by load(): was the model tensor replaced?
    order: int = 0

    def to_dict(self) -> dict:
        err = self.max_error
        if err is not None and not math.isfinite(err):
            err = str(err)
        return {
            "name": self.name, "status": self.status.value, "checkpoint_name": self.ckpt_name,
            "checkpoint_shape": None if self.ckpt_shape is None else list(self.ckpt_shape),
            "checkpoint_dtype": self.ckpt_dtype,
            "model_shape": None if self.model_shape is None else list(self.model_shape),
            "model_dtype": self.model_dtype, "note": self.note, "rule": self.rule,
            "suggestion": self.suggestion, "lossless": self.lossless, "max_error": err,
            "fits": self.fits, "loaded": self.loaded,
        }


class Report(render.Rendered):
    """Checkpoint versus model, one row per tensor name on either side.

    Iterate it for the rows; ``verdict`` is the one-line answer, ``counts`` the
    rows per status, ``fits`` whether a strict load would succeed as is,
    ``fixes`` what was (or would be) fixed automatically, ``suggestions`` what
    needs the user's say-so, :meth:`rename_map` a mapping to keep in code.
    After :func:`weightviz.load`, ``loaded``/``untouched`` list model names, and
    ``model`` is the model (handy when it was built from an import path).
    """

    def __init__(self, rows: list[Row], *, verdict: str, n_model: int, n_ckpt: int,
                 source: str, fixes: list[str] = (), suggestions: list[str] = (),
                 mode: str = "check", model=None):
        self.rows = list(rows)
        self.verdict = verdict
        self.n_model, self.n_ckpt, self.source = n_model, n_ckpt, source
        self.fixes, self.suggestions = list(fixes), list(suggestions)
        self.mode = mode
        self.model = model

    # -- the rows ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> Row:
        """The row of a model name (or, failing that, of a checkpoint name)."""
        for r in self.rows:
            if r.name == name:
                return r
        for r in self.rows:
            if r.ckpt_name == name:
                return r
        raise KeyError(f"no row named {name!r} in this report")

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.status == status]

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, only the statuses present, problems first (:data:`DISPLAY_ORDER`)."""
        out = {s: 0 for s in DISPLAY_ORDER}
        for r in self.rows:
            out[r.status.value] += 1
        return {s: n for s, n in out.items() if n}

    @property
    def fits(self) -> bool:
        """True when every name on both sides fits: a strict load succeeds as is."""
        return all(r.fits for r in self.rows)

    @property
    def loaded(self) -> list[str]:
        return [r.name for r in self.rows if r.loaded]

    @property
    def untouched(self) -> list[str]:
        """Model names load() left as they were (empty before a load)."""
        return [r.name for r in self.rows if r.loaded is False and r.status != "unexpected"]

    def rename_map(self, *, guesses: bool = True) -> dict[str, str]:
        """``{checkpoint name: model name}`` for every rename found, to keep in code::

            sd = {mapping.get(k, k): v for k, v in sd.items()}

        or to pass back as ``weightviz.load(model, source, rename=mapping)``.
        ``guesses=False`` leaves out the pairs matched only by shape order.
        """
        out = {r.ckpt_name: r.name for r in self.rows
               if r.ckpt_name is not None and r.model_shape is not None and r.ckpt_name != r.name}
        if guesses:
            out.update({r.suggestion: r.name for r in self.rows
                        if r.status == "missing" and r.suggestion})
        return out

    # -- scripts ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"verdict": self.verdict, "fits": self.fits, "counts": self.counts,
             "model_tensors": self.n_model, "checkpoint_tensors": self.n_ckpt,
             "source": self.source, "fixes": self.fixes, "suggestions": self.suggestions,
             "rename_map": self.rename_map(), "rows": [r.to_dict() for r in self.rows]}
        if self.mode == "load":
            d["loaded"], d["untouched"] = self.loaded, self.untouched
        return d

    # -- display ----------------------------------------------------------------------
    def view(self) -> render.View:
        return report_view(self)


# -- verdict --------------------------------------------------------------------------
def verdict(rows: list[Row], n_model: int, *, fit=None, done: bool = False) -> str:
    """The one-line answer for a list of rows in model order.

    ``fit(row)`` says whether a row counts as fitting (default ``row.fits``);
    ``done=True`` words it for a load that happened ("loaded" for "would load").
    """
    fit = fit or (lambda r: r.fits)
    model_rows = [r for r in rows if r.status != "unexpected"]
    extra = [r for r in rows if r.status == "unexpected"]
    bad = [r for r in model_rows if not fit(r)]
    loadable = sum(fit(r) and r.status != "missing" for r in model_rows)
    if n_model == 0:
        return ("the model has no tensors: nothing to load" if not extra else
                f"the model has no tensors; the checkpoint's {_n(len(extra), 'tensor')} would be ignored")
    if loadable == 0:
        return ("nothing loaded: the model stays as it was (random if freshly built)" if done
                else "nothing would load: the model would stay random")
    if not bad:
        how = []
        casts = [r for r in model_rows if r.status == "dtype_mismatch"]
        lossy = sum(not r.lossless for r in casts)
        deq = sum(bool(r.lossless and dtypes.block_size(r.ckpt_dtype)) for r in casts)
        if deq:
            how.append(f"with {_n(deq, 'dequantized tensor')}")
        if casts and lossy + deq < len(casts):
            how.append(f"with {_n(len(casts) - lossy - deq, 'lossless cast')}")
        if lossy:
            how.append(f"with {_n(lossy, 'lossy cast')}")
        n_t = sum(r.status == "transposed" for r in model_rows)
        if n_t:
            how.append(f"with {n_t} transposed")
        rules = sorted({r.rule for r in model_rows if r.rule and r.status != "missing"})
        if rules:
            how.append("after renaming: " + "; ".join(rules))
        skipped = [r for r in model_rows if r.status == "missing"]
        k, kind = n_model - len(skipped), "model tensor" if extra else "tensor"
        if k == 1:
            head = f"the 1 {kind} {'loaded' if done else 'fits'}"
        else:
            head = f"all {k} {kind}s {'loaded' if done else 'fit'}"
        head += (" " + ", ".join(how)) if how else ""
        if skipped:
            why = sorted({"tied weights" if "tied to" in r.note else "BatchNorm step counters"
                          for r in skipped})
            head += f" ({len(skipped)} missing but harmless: {', '.join(why)})"
        if extra:
            head += f"; the checkpoint has {len(extra)} more the model does not use"
        return head
    kinds = {r.status.value for r in bad}
    head = _head_change(bad, model_rows)
    if head and not extra:
        return head
    if kinds == {"transposed"} and not extra:
        return (f"{_n(len(bad), 'tensor')} {_is(len(bad))} stored transposed, the (in, out) "
                f"layout of Keras/NumPy: load with transpose=True")
    if kinds == {"dtype_mismatch"} and not extra:
        pairs = sorted({f"{r.ckpt_dtype} → {r.model_dtype}" for r in bad})
        worst = max((r.max_error for r in bad if r.max_error is not None), default=None)
        err = f", max abs error {render.fmt_float(worst)}" if worst is not None else ""
        return (f"{_n(len(bad), 'tensor')} need{'s' if len(bad) == 1 else ''} a lossy cast "
                f"({', '.join(pairs)}{err}): load with cast=True to accept it")
    if kinds == {"non_finite"} and not extra:
        return (f"{_n(len(bad), 'tensor')} hold{'s' if len(bad) == 1 else ''} NaN or Inf: "
                f"loading {'it' if len(bad) == 1 else 'them'} would poison the model")
    if kinds == {"folded"} and not extra:
        return (f"{len(bad)} of {n_model} model tensors were folded by the exporter (a BatchNorm into "
                f"the layer before it) and cannot be loaded back; the other {loadable} "
                f"{'loaded' if done else 'would load'}: open the checkpoint it was exported from")
    if kinds == {"missing"} and not extra:
        return (f"{len(bad)} of {n_model} model tensors are missing from the checkpoint: "
                f"they {'stay' if done else 'would stay'} as initialised")
    return (f"only {loadable} of {n_model} model tensors {'loaded' if done else 'would load'}: "
            + _problems(bad + extra))


def _head_change(bad: list[Row], model_rows: list[Row]) -> str | None:
    """The fine-tuning case: only the last layer's first dimension (classes) differs."""
    if not all(r.status == "shape_mismatch" for r in bad):
        return None
    layers = {layer_of(r.name) for r in bad}
    last = layer_of(max(model_rows, key=lambda r: r.order).name)
    if layers != {last}:
        return None
    pairs = set()
    for r in bad:
        c, m = r.ckpt_shape, r.model_shape
        if len(c) != len(m) or len(c) == 0 or c[1:] != m[1:]:
            return None
        pairs.add((c[0], m[0]))
    if len(pairs) != 1:
        return None
    (a, b), = pairs
    return f"only the classifier head differs ({a} → {b} classes): expected when fine-tuning"


def _problems(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: DISPLAY_ORDER.index(kv[0])))


def _n(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _is(n: int) -> str:
    return "is" if n == 1 else "are"


def headline_status(report: Report) -> str:
    if report.fits:
        return "ok"
    if report.verdict.startswith(("nothing", "only ")) and "classifier head" not in report.verdict:
        return "bad"
    return "warn"


# -- rendering ------------------------------------------------------------------------
def _tensor_cell(shape, dtype) -> str:
    if shape is None:
        return "-"
    return f"{render.fmt_shape(shape)} {dtype}"


def report_view(report: Report) -> render.View:
    ordered = sorted(report.rows, key=lambda r: (DISPLAY_ORDER.index(r.status.value), r.order))
    show_ckpt = any(r.ckpt_name and r.ckpt_name != r.name for r in ordered)
    cells = []
    for r in ordered:
        note = r.note
        if report.mode == "load" and r.status != "unexpected":
            note = ("loaded" if r.loaded else "LEFT UNTOUCHED") + (f"; {note}" if note else "")
        ck = r.ckpt_name if (r.ckpt_name and r.ckpt_name != r.name) else ""
        cells.append([r.status.value, r.name, ck, _tensor_cell(r.ckpt_shape, r.ckpt_dtype),
                      _tensor_cell(r.model_shape, r.model_dtype), note])
    cells = fold(cells)
    if show_ckpt:
        cols, align = ["status", "tensor", "checkpoint name", "checkpoint", "model", "note"], "llllll"
    else:
        cols, align = ["status", "tensor", "checkpoint", "model", "note"], "lllll"
        cells = [[c[0], c[1], *c[3:]] for c in cells]
    table = render.Table(cols, cells, align=align, badges=0)
    counts = ", ".join(f"{s} {n}" for s, n in report.counts.items()) or "-"
    summary: list[tuple[str, object]] = [
        ("model", _n(report.n_model, "tensor")),
        ("checkpoint", f"{_n(report.n_ckpt, 'tensor')} ({report.source})"),
        ("counts", counts),
    ]
    if report.mode == "load":
        summary.append(("loaded", f"{len(report.loaded)} of {report.n_model} model tensors"))
        if report.untouched:
            summary.append(("LEFT UNTOUCHED", f"{len(report.untouched)}: " + capped(report.untouched)))
    done = "fixed" if report.mode == "load" else "auto fix"
    notes = [f"{done}: {f}" for f in report.fixes] + [f"suggested: {s}" for s in report.suggestions]
    title = "Load report" if report.mode == "load" else "Check report"
    return render.View(title, summary, [table] if cells else [], notes,
                       headline=report.verdict, headline_status=headline_status(report))
