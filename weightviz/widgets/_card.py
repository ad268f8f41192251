"""The LayerBrowser's statistics card: one tensor's numbers as a small HTML grid, and
the line that says how it matched the model (when a model was given)."""
from __future__ import annotations

from ..render import badges_html, esc, fmt_count, fmt_float, fmt_shape


def tensor_card(name: str, entry, layer: str, s) -> str:
    """Name, layer/shape/dtype, mean ± std, range, |max|, norm, zeros, NaN/Inf, flags."""
    sub = " · ".join([f"layer {esc(layer)}", esc(fmt_shape(entry.shape)), esc(entry.dtype),
                      f"{fmt_count(s.numel)} values"])
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
