"""AdapterReport: a LoRA adapter against its base, one row per adapted module.

Statuses (:data:`STATUSES`, problems first): ``empty`` (a tensor with no elements: DeepSpeed
ZeRO-3 saved it without gathering), ``not_found`` (no such module in the base),
``shape_differs`` (A, B or the DoRA magnitude does not fit the base layer), ``rank_differs``
(the stored rank is not the config's ``r`` / ``rank_pattern``, or A and B disagree),
``missing`` (a base module the config targets, with no weights in the adapter), ``untrained``
(lora_B all zero: PEFT's initial state, the module changes nothing) and ``ok``.

Numbers per row: ``rel_delta`` = ‖ΔW‖_F / ‖W‖_F (DoRA: the merged weight's change);
``sigma_max`` = ΔW's largest singular value; ``effective_rank`` = exp(H), H the entropy of
σ / Σσ (Roy & Vetterli 2007); ``merge_loss`` = per dtype, the share of ΔW's nonzero entries
that a merge in that dtype rounds away (the merged weight equals the base weight there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .. import render
from ..matching.names import fold

STATUSES = ("empty", "not_found", "shape_differs", "rank_differs", "missing", "untrained", "ok")
FITTING = ("ok", "untrained")
EMPTY_FIX = ("saved under DeepSpeed ZeRO-3 without gathering the parameters; save again with "
             "zero3_save_16bit_model (stage3_gather_16bit_weights_on_model_save: true) or inside "
             "deepspeed.zero.GatheredParameters(model.parameters())")


@dataclass
class AdapterRow:
    module: str                         # the adapter's module name (PEFT's base_model.model. dropped)
    status: str
    kind: str = ""                      # linear, conv1d, conv, embedding, saved
    base: str | None = None             # the base module it lands on
    rank: int | None = None
    alpha: float | None = None
    scale: float | None = None
    rel_delta: float | None = None
    sigma_max: float | None = None
    effective_rank: float | None = None
    merge_loss: dict | None = None      # {"bfloat16": share, "float16": share}
    shapes: dict = field(default_factory=dict)
    note: str = ""
    suggestion: str | None = None       # the base module a proposed rename lands it on
    order: int = 0
    changed: int = 0                    # ΔW's nonzero entries (merge-loss denominators)
    lost: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return self.status in FITTING

    def to_dict(self) -> dict:
        return {"module": self.module, "status": self.status, "kind": self.kind, "base": self.base,
                "rank": self.rank, "alpha": self.alpha, "scale": self.scale,
                "rel_delta": self.rel_delta, "sigma_max": self.sigma_max,
                "effective_rank": self.effective_rank, "merge_loss": self.merge_loss,
                "shapes": {k: list(v) for k, v in self.shapes.items()}, "note": self.note,
                "suggestion": self.suggestion}


class AdapterReport(render.Rendered):
    """Iterate for the rows; ``verdict`` is the one-line answer, ``fits`` whether the adapter
    loads onto this base as it is, ``counts()`` rows per status, ``unmatched_targets`` the
    config's targets that match no base module, ``rename_map()`` a proposed prefix mapping."""

    def __init__(self, rows: list[AdapterRow], *, info, base_label: str, adapter_label: str,
                 unmatched_targets=(), rename: dict | None = None, notes=()):
        self.rows = sorted(rows, key=lambda r: r.order)
        self.info = info
        self.base_label, self.adapter_label = base_label, adapter_label
        self.unmatched_targets = list(unmatched_targets)
        self._rename = dict(rename or {})
        self.notes = list(notes)
        self.verdict = verdict(self)

    def __iter__(self) -> Iterator[AdapterRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, module: str) -> AdapterRow:
        for r in self.rows:
            if module in (r.module, r.base):
                return r
        raise KeyError(f"no row for module {module!r} in this report")

    def by_status(self, status: str) -> list[AdapterRow]:
        return [r for r in self.rows if r.status == status]

    def counts(self) -> dict[str, int]:
        """Rows per status, only those present, problems first."""
        c = {s: 0 for s in STATUSES}
        for r in self.rows:
            c[r.status] += 1
        return {s: n for s, n in c.items() if n}

    @property
    def fits(self) -> bool:
        """True when every adapted module lands on a base layer it fits and nothing targeted is missing."""
        return all(r.fits for r in self.rows)

    def rename_map(self) -> dict[str, str]:
        """The prefix rules ``{adapter prefix: base prefix}`` that land the ``not_found`` modules;
        pass them back as ``rename=``."""
        return dict(self._rename)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "fits": self.fits, "counts": self.counts(),
                "adapter": repr(self.info), "unmatched_targets": self.unmatched_targets,
                "rename_map": self.rename_map(), "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows]}

    def view(self) -> render.View:
        return report_view(self)


# ---------------------------------------------------------------- the verdict
def _n(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def pct(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0 or x >= 0.01:
        return f"{x:.0%}"
    return f"{x:.1%}" if x >= 0.001 else "<0.1%"


def _spread(values, word: str) -> str | None:
    vals = sorted({v for v in values if v is not None})
    if not vals:
        return None
    f = render.fmt_float
    return f"{word} {f(float(vals[0]))}" if len(vals) == 1 else \
        f"{word}s {f(float(vals[0]))}–{f(float(vals[-1]))}"


def loss_clause(rows: list[AdapterRow]) -> str | None:
    out = []
    for dt, short in (("bfloat16", "bf16"), ("float16", "fp16")):
        have = [r for r in rows if dt in r.lost and r.changed]
        total = sum(r.changed for r in have)
        if not total:
            continue
        share = sum(r.lost[dt] for r in have) / total
        half = sum(1 for r in have if ((r.merge_loss or {}).get(dt) or 0) > 0.5)
        if not out:
            text = f"a {short} merge drops {pct(share)} of ΔW's entries"
            if half:
                text += f" (over half in {half} of {_n(len(have), 'module')})"
        else:
            text = f"{short} {pct(share)}"
        out.append(text)
    return ", ".join(out) if out else None


def verdict(rep: AdapterReport) -> str:
    rows = rep.rows
    adapted = [r for r in rows if r.status != "missing" and r.kind != "saved"]
    saved = [r for r in rows if r.kind == "saved"]
    bad = [r for r in rows if not r.fits]
    untrained = [r for r in rows if r.status == "untrained"]
    if not rows:
        return "the adapter holds no adapted modules"
    if not bad:
        head = ("the 1 adapted module fits" if len(adapted) == 1
                else f"all {len(adapted)} adapted modules fit")
        if saved:
            head = head.replace(" fit", f" and {_n(len(saved), 'saved module')} fit", 1)
        parts = [head]
        for vals, word in (([r.rank for r in adapted], "rank"), ([r.scale for r in adapted], "scale")):
            if (s := _spread(vals, word)) is not None:
                parts.append(s)
        if (loss := loss_clause(adapted)) is not None:
            parts.append(loss)
        text = "; ".join(parts)
        if untrained:
            text += (f"; but {len(untrained)} of {len(adapted)} {'is' if len(untrained) == 1 else 'are'} "
                     "untrained (a factor all zero: PEFT's initial state) and change nothing")
        return text + _unmatched(rep)
    counts: dict[str, int] = {}
    for r in bad:
        counts[r.status] = counts.get(r.status, 0) + 1
    what = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    in_adapter = [r for r in bad if r.status != "missing"]
    if in_adapter and len(in_adapter) == len(adapted) + len(saved) and set(counts) == {"not_found"}:
        text = f"none of the {_n(len(in_adapter), 'adapted module')} is in the base"
    elif in_adapter:
        text = (f"{len(in_adapter)} of {_n(len(adapted) + len(saved), 'module')} "
                f"{'does' if len(in_adapter) == 1 else 'do'} not fit: {what}")
    else:
        text = f"{_n(counts['missing'], 'targeted base module')} {'has' if counts['missing'] == 1 else 'have'} " \
               "no weights in the adapter (missing)"
    same = {r.note.split(":")[0] for r in in_adapter}
    if len(counts) == 1 and len(same) == 1 and "empty" not in counts and in_adapter:
        text += f" ({in_adapter[0].module + ': ' if len(in_adapter) == 1 else ''}{same.pop()})"
    if "empty" in counts:
        text += f"; the empty tensors were {EMPTY_FIX.split(';')[0]}"
    if rep.rename_map():
        landed = sum(1 for r in bad if r.suggestion)
        text += f"; rename={rep.rename_map()!r} lands {landed}"
    return text + _unmatched(rep)


def _unmatched(rep: AdapterReport) -> str:
    t = rep.unmatched_targets
    if not t:
        return ""
    return f"; {_n(len(t), 'target')} {'matches' if len(t) == 1 else 'match'} nothing in the base: {', '.join(t)}"


def headline_status(rep: AdapterReport) -> str:
    if rep.fits:
        return "warn" if rep.by_status("untrained") else "ok"
    return "bad"


# ---------------------------------------------------------------- display
def _cell(x, fmt=render.fmt_float) -> str:
    return "-" if x is None else fmt(x)


def report_view(rep: AdapterReport) -> render.View:
    ordered = sorted(rep.rows, key=lambda r: (STATUSES.index(r.status), r.order))
    cells = []
    for r in ordered:
        ml = r.merge_loss or {}
        note = r.note or (f"→ {r.suggestion}" if r.suggestion else "")
        cells.append([r.status, r.module, "", r.kind, _cell(r.rank, str), _cell(r.alpha),
                      _cell(r.scale), _cell(r.rel_delta), _cell(r.sigma_max),
                      _cell(r.effective_rank), pct(ml.get("bfloat16")) if ml else "-",
                      pct(ml.get("float16")) if ml else "-", note])
    cells = [[c[0], c[1], *c[3:]] for c in fold(cells)]
    table = render.Table(["status", "module", "kind", "rank", "alpha", "scale", "‖ΔW‖/‖W‖",
                          "σ_max", "eff. rank", "bf16 loss", "fp16 loss", "note"],
                         cells, align="lllrrrrrrrrl", badges=0)
    summary: list[tuple[str, object]] = [
        ("adapter", rep.info.summary() if rep.info is not None else rep.adapter_label),
        ("base", rep.base_label),
        ("counts", ", ".join(f"{s} {n}" for s, n in rep.counts().items()) or "-"),
    ]
    if rep.unmatched_targets:
        summary.append(("targets matching nothing", ", ".join(rep.unmatched_targets)))
    notes = list(rep.notes)
    if rep.rename_map():
        notes.append(f"suggested: rename={rep.rename_map()!r} (pass it to check_adapter / merge)")
    return render.View("Adapter check", summary, [table] if cells else [], notes,
                       headline=rep.verdict, headline_status=headline_status(rep))
