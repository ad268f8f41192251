"""The LayerBrowser's HTML pieces: the header (what the checkpoint holds, the match verdict,
the comparison's summary), the legend under the list, the statistics card of one tensor
as a small grid, and the line that says how it matched the model (when a model was given)."""
from __future__ import annotations

from ..render import COLOURS, badges_html, esc, fmt_bytes, fmt_count, fmt_float, fmt_shape

#: Flags that colour a list row (the others, like ``integer``, are shown but not coloured).
# the list's flag column is narrow: long flag names get a short form (the card spells them out)
SHORT_FLAGS = {"single_value": "one", "all_zero": "zero", "constant": "const", "dead_units": "dead",
               "outliers": "outl", "integer": "int", "complex": "cplx", "low_precision": "lowp"}
WARN_FLAGS = frozenset({"nan", "inf", "all_zero", "constant", "dead_units", "outliers", "empty"})

MARKS = {"ok": "✓", "missing": "✗", "unexpected": "+", "shape_mismatch": "≠", "transposed": "⇄",
         "dtype_mismatch": "~", "renamed": "→", "non_finite": "!", "folded": "⊕"}


def header_html(c, common_dtype, report, compare) -> str:
    """Format, counts, bytes, the common dtype; the match verdict; the diff summary."""
    bits = [f"{fmt_count(len(c))} tensors", f"{fmt_count(c.num_params)} parameters",
            fmt_bytes(c.nbytes)] + ([f"{common_dtype} unless shown"] if common_dtype else [])
    head = f"<b>LayerBrowser</b> · {esc(c.format)} · " + " · ".join(bits)
    if report is not None:
        from ..matching.report import headline_status
        colour = COLOURS.get(headline_status(report), COLOURS["info"])
        head += f"<div style='color:{colour};font-weight:bold'>{esc(report.verdict)}</div>"
    if compare is not None:
        same = compare.report.same
        head += (f"<div style='color:{COLOURS['ok' if same else 'warn']};font-weight:bold'>"
                 f"compared with {esc(compare.report.b)}: {esc(compare.report.summary)}</div>")
    return f"<div class='wv-title' style='margin-bottom:6px'>{head}</div>"


def legend_html(report, status: dict, missing: list, eager: bool, compare, adapter=None) -> str:
    """What the list's marks and colours mean."""
    if adapter is not None:
        return (legend_html(report, status, missing, eager, compare)[:-len("</div>")]
                + " · ◆ changed by the adapter (filter: adapted)</div>")
    if compare is not None:
        return ("<div style='font-size:11px;color:#57606a'>Δ differs from "
                f"{esc(compare.report.b)} (filter: changed, shape_differs, only_a); "
                "⚑ first statistics flag</div>")
    if report is None:
        when = ("" if eager else "; statistics are computed (and flags shown) as "
                "tensors are selected")
        return ("<div style='font-size:11px;color:#57606a'>⚑ first statistics flag (+N more: see "
                f"the card); orange rows are worth a look{when}</div>")
    seen = set(status.values()) | ({"missing"} if missing else set())
    items = " ".join(f"<span style='color:{COLOURS.get(s, '#000')}'>{MARKS[s]} {s}</span>"
                     for s in MARKS if s in seen)
    return f"<div style='font-size:11px'>{items}</div>"


def tensor_card(name: str, entry, layer: str, s) -> str:
    """Name, layer/shape/dtype, mean ± std, range, |max|, norm, zeros, NaN/Inf, flags
    (``s`` None: the header's facts only, while the statistics are computed)."""
    sub = " · ".join([f"layer {esc(layer)}", esc(fmt_shape(entry.shape)), esc(entry.dtype),
                      f"{fmt_count(entry.numel)} values"])
    if s is None:
        return (f"<div style='font-size:14px'><b>{esc(name)}</b></div>"
                f"<div style='color:#57606a;font-size:12px;margin-bottom:4px'>{sub}</div>")
    pairs = []
    if s.finite:
        pairs += [("mean ± std", f"{fmt_float(s.mean)} ± {fmt_float(s.std)}"),
                  ("min … max", f"{fmt_float(s.min)} … {fmt_float(s.max)}"),
                  ("|max|", fmt_float(s.absmax)), ("L2 norm", fmt_float(s.norm))]
    pairs += [("zeros", f"{s.zeros:.1%}"), ("NaN / Inf", f"{s.nan} / {s.inf}")]
    if s.dead_units:
        pairs.append(("dead units", str(s.dead_units)))
    cells = "".join(f"<span style='color:#57606a'>{esc(k)}</span><span>{esc(v)}</span>"
                    for k, v in pairs)
    html = (f"<div style='font-size:14px'><b>{esc(name)}</b></div>"
            f"<div style='color:#57606a;font-size:12px;margin-bottom:4px'>{sub}</div>"
            "<div style='display:grid;grid-template-columns:max-content max-content "
            "max-content max-content;gap:1px 14px;font-size:12px;"
            f"font-variant-numeric:tabular-nums'>{cells}</div>")
    if s.flags:
        html += f"<div style='margin-top:4px'>flags: {badges_html(' '.join(s.flags))}</div>"
    return html


def status_line(name: str, status: str | None, report) -> str:
    """'match: <status> · model name · model shape dtype · note' for one checkpoint tensor."""
    if status is None:
        return ""
    row = next(r for r in report if r.ckpt_name == name)
    bits = [badges_html(status)]
    if row.model_shape is not None and row.name != name:
        bits.append(f"model name <code>{esc(row.name)}</code>")
    if row.model_shape is not None:
        bits.append(f"model {esc(fmt_shape(row.model_shape))} {esc(row.model_dtype)}")
    if row.note:
        bits.append(esc(row.note))
    return f"<div style='margin-top:4px;font-size:12px'>match: {' · '.join(bits)}</div>"
