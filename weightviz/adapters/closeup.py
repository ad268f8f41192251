"""One adapted module up close, for pictures: ΔW's singular values (the r×r path) and the
histogram of its entries, computed block by block without keeping ΔW."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import WeightvizError, capped, message
from .check import module_factors
from .delta import spectrum
from .plan import make_plan

BLOCK = 1 << 20                # ΔW entries per block of the histogram passes


@dataclass
class ModuleDelta:
    """``module`` (the adapter's name), ``weight`` (the base tensor it changes), ``sigma``
    (ΔW's singular values, largest first), ``counts`` / ``edges`` (the histogram of ΔW's
    entries), ``numel``."""
    module: str
    weight: str
    sigma: np.ndarray
    counts: np.ndarray
    edges: np.ndarray
    numel: int

    def __repr__(self) -> str:
        top = f"{self.sigma[0]:.4g}" if self.sigma.size else "0"
        return (f"ModuleDelta({self.module!r} -> {self.weight!r}, rank {self.sigma.size}, "
                f"sigma_max {top}, {self.numel} entries)")


def module_delta(base, adapter, module: str, *, bins: int = 80, plan=None) -> ModuleDelta:
    """ΔW of ``module`` (the adapter's module name, or the base weight it lands on)."""
    import torch
    plan = plan if plan is not None else make_plan(base, adapter)
    work = next((w for w in plan.lora if module in (w.row.module, w.row.base, w.weight)), None)
    if work is None:
        raise WeightvizError(message(
            f"no adapted module {module!r} lands on this base",
            expected="one of the modules the adapter check lists as ok or untrained",
            fix="pick a name from [r.module for r in weightviz.check(base, adapter) if r.fits]",
            got=capped([w.row.module for w in plan.lora]) or "no module lands"))
    f = module_factors(plan, work)
    _, sig = spectrum(f)
    step = max(1, BLOCK // max(f.q, 1))
    lo, hi = np.inf, -np.inf
    for i0 in range(0, f.p, step):
        d = f.block(i0, min(f.p, i0 + step))
        lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
    if not lo < hi:
        lo, hi = (lo - 0.5, hi + 0.5) if np.isfinite(lo) else (-0.5, 0.5)
    counts = torch.zeros(bins, dtype=torch.float64)
    for i0 in range(0, f.p, step):
        d = f.block(i0, min(f.p, i0 + step)).double()
        counts += torch.histc(d, bins=bins, min=lo, max=hi)
    return ModuleDelta(work.row.module, work.weight, np.asarray(sig, dtype=float),
                       counts.numpy().astype(np.int64), np.linspace(lo, hi, bins + 1), f.p * f.q)
