"""One renderer for text and HTML: reprs, widgets and the CLI all print these views.

A :class:`View` is a title, a few summary lines, optional tables and notes. It
renders to aligned plain text (``to_text``) and to escaped HTML (``to_html``)
from the same data, so the terminal and the notebook never disagree.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Sequence

# status / flag -> colour used in HTML (text output stays uncoloured)
COLOURS = {
    "ok": "#1a7f37", "renamed": "#0969da", "dtype_mismatch": "#9a6700",
    "transposed": "#9a6700", "missing": "#cf222e", "unexpected": "#8250df",
    "shape_mismatch": "#cf222e", "non_finite": "#cf222e", "folded": "#8250df",
    "warn": "#9a6700", "bad": "#cf222e", "info": "#57606a",
    # tensor statistics flags (weightviz.stats)
    "nan": "#cf222e", "inf": "#cf222e", "all_zero": "#cf222e", "dead_units": "#cf222e",
    "constant": "#9a6700", "outliers": "#9a6700", "single_value": "#57606a",
    "empty": "#57606a", "integer": "#57606a", "bool": "#57606a", "complex": "#57606a",
    "low_precision": "#57606a", "quantized": "#57606a",
    # weightviz.diff statuses
    "same": "#1a7f37", "changed": "#9a6700", "dtype_differs": "#9a6700",
    "shape_differs": "#cf222e", "only_a": "#cf222e", "only_b": "#8250df",
    # LoRA adapter statuses (weightviz.check(base, adapter))
    "not_found": "#cf222e", "rank_differs": "#cf222e", "untrained": "#9a6700",
}


@dataclass
class Table:
    columns: Sequence[str]
    rows: list[Sequence[object]]
    align: str | None = None          # one char per column: 'l' or 'r'
    badges: int | None = None         # index of a column whose cells are status/flag words
    max_rows: int = 40                # longer tables are folded: head and tail kept
    title: str | None = None

    def _folded(self):
        rows = self.rows
        if len(rows) <= self.max_rows:
            return rows, 0
        keep = self.max_rows // 2
        return rows[:keep] + [None] + rows[-keep:], len(rows) - 2 * keep

    def to_text(self) -> str:
        rows, hidden = self._folded()
        cells = [[str(c) for c in self.columns]] + [
            [fmt_cell(c) for c in r] for r in rows if r is not None]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        align = self.align or "l" * len(self.columns)

        def line(r):
            return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                             for c, w, a in zip(r, widths, align)).rstrip()
        out = [self.title] if self.title else []
        out += [line(cells[0]), "  ".join("-" * w for w in widths)]
        body = iter(cells[1:])
        for r in rows:
            out.append(f"… {hidden} more rows …" if r is None else line(next(body)))
        return "\n".join(out)

    def to_html(self) -> str:
        rows, hidden = self._folded()
        align = self.align or "l" * len(self.columns)
        style = lambda a: ' style="text-align:right"' if a == "r" else ' style="text-align:left"'
        head = "".join(f"<th{style(a)}>{esc(c)}</th>" for c, a in zip(self.columns, align))
        body = []
        for r in rows:
            if r is None:
                body.append(f'<tr><td colspan="{len(self.columns)}" style="text-align:center;'
                            f'color:#57606a">… {hidden} more rows …</td></tr>')
                continue
            tds = []
            for i, (c, a) in enumerate(zip(r, align)):
                inner = badges_html(c) if i == self.badges else esc(fmt_cell(c))
                tds.append(f"<td{style(a)}>{inner}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        cap = f"<caption style='text-align:left'><b>{esc(self.title)}</b></caption>" if self.title else ""
        return (f'<table class="weightviz">{cap}<thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(body)}</tbody></table>")


@dataclass
class View:
    title: str
    summary: list[tuple[str, object]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headline: str | None = None       # e.g. a report's verdict
    headline_status: str = "info"

    def to_text(self) -> str:
        out = [self.title]
        if self.headline:
            out.append(self.headline)
        if self.summary:
            w = max(len(k) for k, _ in self.summary)
            out += [f"  {k.ljust(w)}  {fmt_cell(v)}" for k, v in self.summary]
        for t in self.tables:
            out += ["", t.to_text()]
        if self.notes:
            out += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_html(self) -> str:
        parts = [f'<div class="weightviz-view"><b>{esc(self.title)}</b>']
        if self.headline:
            colour = COLOURS.get(self.headline_status, COLOURS["info"])
            parts.append(f'<div style="color:{colour};font-weight:bold">{esc(self.headline)}</div>')
        if self.summary:
            parts.append("<table>" + "".join(
                f"<tr><th style='text-align:left'>{esc(k)}</th><td style='text-align:left'>"
                f"{esc(fmt_cell(v))}</td></tr>" for k, v in self.summary) + "</table>")
        parts += [t.to_html() for t in self.tables]
        parts += [f"<div><i>note:</i> {esc(n)}</div>" for n in self.notes]
        return "".join(parts) + "</div>"

    __str__ = to_text

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()


class Rendered:
    """A result that displays itself from one View: ``view()`` gives it, ``__repr__`` is its
    text, ``_repr_html_`` its HTML, ``to_json()`` dumps ``to_dict()``."""

    def view(self) -> View:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def to_json(self, **kwargs) -> str:
        import json
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def __repr__(self) -> str:
        return self.view().to_text()

    def __str__(self) -> str:
        return self.view().to_text()

    def _repr_html_(self) -> str:
        return self.view().to_html()


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def badges_html(cell: object) -> str:
    words = [w for w in str(cell).replace(",", " ").split() if w]
    return " ".join(
        f'<span style="background:{COLOURS.get(w, COLOURS["warn"])};color:white;'
        f'border-radius:3px;padding:0 4px;font-size:85%">{esc(w)}</span>' for w in words)


def fmt_cell(v: object) -> str:
    if isinstance(v, float):
        return fmt_float(v)
    if isinstance(v, tuple):
        return fmt_shape(v)
    return str(v)


def fmt_float(x: float, digits: int = 4) -> str:
    """Deterministic short float: 4 significant digits, 'nan'/'inf' spelled plainly."""
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_shape(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape else "()"


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def file_bytes(ckpt) -> int | None:
    """Bytes of the file(s) a checkpoint was read from (every shard and the index), or None."""
    import os
    path = getattr(ckpt, "path", None)
    meta = ckpt.metadata if isinstance(ckpt.metadata, dict) else {}
    remote = meta.get("remote")
    if isinstance(remote, dict) and isinstance(remote.get("size"), int):
        return remote["size"]                    # a remote object: the sizes its server gave
    if not path or not os.path.isfile(path):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    shards = [os.path.join(folder, s) for s in meta.get("shards", ()) if isinstance(s, str)]
    try:
        return os.path.getsize(path) + sum(os.path.getsize(p) for p in shards if os.path.isfile(p))
    except OSError:
        return None


def checkpoint_view(ckpt) -> View:
    """The summary of a Checkpoint: format, counts, bytes, dtypes, tensors grouped by layer."""
    from collections import Counter
    dts = Counter(e.dtype for e in ckpt.entries.values())
    summary = [
        ("format", ckpt.format),
        ("tensors", fmt_count(len(ckpt))),
        ("parameters", fmt_count(ckpt.num_params)),
        ("weights", fmt_bytes(ckpt.nbytes)),
    ]
    on_disk = file_bytes(ckpt)
    if on_disk is not None:
        share = ckpt.nbytes / on_disk if on_disk else 1.0
        summary.append(("file", fmt_bytes(on_disk) + (f" (weights are {share:.0%} of it)"
                                                      if share < 0.5 and ckpt.nbytes else "")))
    summary += [
        ("dtypes", ", ".join(f"{d} ({n})" for d, n in sorted(dts.items())) or "-"),
    ]
    if ckpt.architecture is not None:
        summary.append(("architecture", ckpt.architecture.get("class_name", "yes")))
    if getattr(ckpt, "adapter", None) is not None:
        summary.append(("adapter", ckpt.adapter.summary()))
    meta = ckpt.metadata if isinstance(ckpt.metadata, dict) else {}
    if meta.get("unwrapped"):
        summary.append(("weights from", meta["unwrapped"]))
    if ckpt.extras:
        kept = meta.get("kept_apart") or {}
        summary.append(("kept apart", ", ".join(
            f"{k} ({kept[k]})" if kept.get(k) else k for k in sorted(map(str, ckpt.extras)))))
    if meta.get("note"):
        summary.append(("note", meta["note"]))
    if isinstance(meta.get("display"), dict):     # a reader's own summary lines (GGUF: architecture, ...)
        summary += [(str(k), str(v)) for k, v in meta["display"].items()]
    rows = []
    for layer, names in ckpt.layers().items():
        for i, n in enumerate(names):
            e = ckpt.entries[n]
            rows.append((layer if i == 0 else "", n[len(layer):].lstrip("./") or n,
                         e.shape, e.dtype, fmt_count(e.numel)))
    tables = [Table(["layer", "tensor", "shape", "dtype", "params"], rows, align="lllrr")] if rows else []
    return View(f"Checkpoint ({ckpt.format})", summary, tables)
