"""The LayerBrowser's adapter view (``browse(base, adapter=...)``): the adapted modules are
marked in the list; for a selected one, its row of the adapter check (status, rank, scale,
‖ΔW‖/‖W‖, σ_max, what a bf16 / fp16 merge rounds away) and ΔW's histogram beside its
singular values."""
from __future__ import annotations

import ipywidgets as w

from ..render import badges_html, esc, fmt_float
from ._base import Canvas, side_by_side, small_labels


_SHORT = {"bfloat16": "bf16", "float16": "fp16"}


def _pct(x) -> str:
    return "–" if x is None else ("<0.1%" if 0 < x < 0.001 else f"{x:.1%}")


class AdapterView:
    """``box`` (the widget), ``report`` (the AdapterReport), ``row(name)``, ``show(name)``,
    ``caption``, ``shown`` (the module drawn last)."""

    def __init__(self, base, adapter, *, bins: int = 80, cache_size: int = 32):
        from ..adapters import check_adapter
        from ..adapters.plan import make_plan
        self.plan = make_plan(base, adapter)
        self.report = check_adapter(base, self.plan.adapter)
        self._rows = {}                       # base tensor name -> the adapter's row
        for work in self.plan.lora:
            self._rows[work.weight] = work.row
        for row in self.plan.rows:            # rows that do not land: empty, shapes, ranks
            for name in (f"{row.base}.weight", row.base) if row.base else ():
                if name in base and name not in self._rows:
                    self._rows[name] = row
                    break
        for name in self.plan.saved:          # modules_to_save: replaced whole
            self._rows.setdefault(name, None)
        self._by_module = {r.module: r for r in self.report}   # with the check's numbers
        self.base, self.adapter = base, self.plan.adapter
        self.bins = int(bins)
        self.verdict = w.HTML(f"<div style='font-size:12px;margin:6px 0 2px'>adapter: "
                              f"{esc(self.report.verdict)}</div>")
        self.caption = w.HTML()
        self.canvas = Canvas(6.0, 2.2, dpi=96, cache_size=cache_size)
        self.canvas.image.add_class("wv-adapter")
        self.box = w.VBox([self.verdict, self.caption, self.canvas.image])
        self.shown: str | None = None

    def row(self, name: str):
        """The adapter check's row of the module that changes base tensor ``name``, or None."""
        r = self._rows.get(name)
        return None if r is None else self._by_module.get(r.module, r)

    def status(self, name: str) -> str | None:
        r = self.row(name)
        return None if r is None else r.status

    def show(self, name: str) -> None:
        r = self.row(name)
        if r is None:
            what = ("replaced whole by the adapter (modules_to_save)" if name in self._rows
                    else "not adapted")
            self.caption.value = f"<div style='font-size:12px;color:#57606a'>{esc(what)}</div>"
            self.canvas.hide()
            self.shown = None
            return
        bits = [badges_html(r.status), f"<code>{esc(r.module)}</code>"]
        if r.rank is not None:
            bits.append(f"rank {r.rank} · scale {esc(fmt_float(r.scale))}")
        if r.rel_delta is not None:
            bits.append(f"‖ΔW‖/‖W‖ {esc(fmt_float(r.rel_delta))}")
        if r.sigma_max is not None:
            bits.append(f"σ_max {esc(fmt_float(r.sigma_max))}")
        if r.merge_loss:
            bits.append("merge drops " + ", ".join(f"{_pct(v)} in {_SHORT.get(k, k)}"
                                                   for k, v in r.merge_loss.items()))
        self.caption.value = f"<div style='font-size:12px'>{' · '.join(bits)}</div>"
        if not r.fits:
            self.canvas.hide()
            self.shown = None
            return

        def draw(fig):
            from ..adapters.closeup import module_delta
            from ..plots.adapters import delta_panels
            axs = side_by_side(fig)
            delta_panels(module_delta(self.base, self.adapter, r.module, bins=self.bins,
                                      plan=self.plan), ax=axs)
            small_labels(axs)
        self.canvas.render(("adapter", name), draw)
        self.shown = r.module
