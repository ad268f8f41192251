"""check_adapter(): the plan's rows, with ΔW's numbers for every module that lands."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .. import dtypes
from .delta import SCAN_ELEMENTS, effective_rank, factors, scan, spectrum
from .plan import Work, make_plan
from .report import AdapterReport


def check_adapter(base, adapter, *, rename=None, merge_loss: bool = True, numbers: bool = True,
                  safe_merge: bool = False, block: int = SCAN_ELEMENTS,
                  workers: int | None = None) -> AdapterReport:
    """Check a LoRA / DoRA adapter against its base model; changes nothing.

    ``base``: an ``nn.Module``, a checkpoint path, a ``Checkpoint`` or a state dict.
    ``adapter``: a PEFT folder, an ``adapter_model.safetensors`` / ``.bin`` (config beside it),
    a diffusers or kohya LoRA file, or a Checkpoint opened from one.
    ``rename``: ``{adapter prefix: base prefix}`` (or a callable) for adapter names that do not
    land, e.g. the report's own ``rename_map()``.
    ``merge_loss=False`` skips the elementwise pass over the base weights (the share of ΔW a
    16-bit merge rounds away) but still reads them for ‖W‖; ``numbers=False`` reads no base data.
    ``safe_merge=True``: the loss of ``merge_and_unload(safe_merge=True)``, which rounds ΔW to
    the weight's dtype before adding it (PEFT's Embedding always does).
    ``workers``: modules scanned side by side, each on one torch thread (default: torch's
    thread count); independent threads degrade gently on a busy machine, where torch's own
    intra-op threads wait for each other at every operation.
    """
    plan = make_plan(base, adapter, rename=rename)
    if numbers:
        run_all(plan.lora, lambda w: _numbers(plan, w, merge_loss=merge_loss, block=block,
                                              safe_merge=safe_merge), workers)
    notes = list(plan.notes)
    if numbers and plan.lora:
        notes.append("‖ΔW‖/‖W‖: Frobenius norms; σ_max and eff. rank (exp of the entropy of σ/Σσ) "
                     "from r×r QR cores; bf16 / fp16 loss: share of ΔW's nonzero entries a merge "
                     "in that dtype rounds away, merging as PEFT does")
    return AdapterReport(plan.rows, info=plan.info, base_label=plan.base_label,
                         adapter_label=plan.adapter_label, unmatched_targets=plan.unmatched,
                         rename=plan.rules if rename is None else None, notes=notes)


def run_all(works: list, fn, workers: int | None) -> None:
    """``fn(work)`` for every module, the largest first, on ``workers`` threads with torch
    held to one intra-op thread meanwhile (restored after)."""
    import torch
    works = sorted(works, key=lambda w: -w.module.B.shape[0] * w.module.A.numel)
    workers = torch.get_num_threads() if workers is None else workers
    if workers <= 1 or len(works) < 2:
        for w in works:
            fn(w)
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(min(workers, len(works))) as ex:
            for _ in ex.map(fn, works):
                pass
    finally:
        torch.set_num_threads(before)


def module_factors(plan, work: Work, *, safe_merge: bool = False):
    """The Factors of one landed module (A, B and the DoRA magnitude read)."""
    m = work.module
    mag = m.magnitude.torch() if m.magnitude is not None else None
    return factors(m.A.torch(), m.B.torch(), work.row.scale, transposed=work.transposed, magnitude=mag,
                   cast_delta=safe_merge or m.embedding)


def _numbers(plan, work: Work, *, merge_loss: bool, block: int, safe_merge: bool) -> None:
    row = work.row
    w = plan.base.entries[work.weight]
    if row.scale is None or not dtypes.is_float(w.dtype) or w.dtype in dtypes.QUANTIZED:
        return
    f = module_factors(plan, work, safe_merge=safe_merge)
    fro, sig = spectrum(f)
    row.sigma_max = float(sig[0]) if len(sig) else 0.0
    row.effective_rank = effective_rank(sig)
    if row.status == "untrained" and f.magnitude is None:
        row.rel_delta = 0.0
        return
    out = scan(w, f, merge_loss=merge_loss, block=block)
    change = out.get("change_norm", fro)
    row.rel_delta = change / out["w_norm"] if out["w_norm"] else None
    row.changed = out["changed"]
    if merge_loss:
        row.lost = out["lost_counts"]
        row.merge_loss = out["lost"]
