"""merge(): base + adapter as a lazy Checkpoint; W + ΔW is computed when a tensor is read.

Names are the base's. An adapted weight reads as PEFT's ``merge_and_unload()`` leaves it (see
:mod:`weightviz.adapters.delta`), in ``dtype`` (default: the base tensor's own); a
``modules_to_save`` layer (and an embedding copy PEFT saved beside its adapter) reads as the
adapter's tensor; everything else is the base's entry, passed through (cast on read when
``dtype`` is given, as loading the base with ``torch_dtype=dtype`` would). Nothing is written.
"""
from __future__ import annotations

from functools import partial

from .. import dtypes
from ..checkpoint import Checkpoint, TensorEntry
from ..errors import MismatchError, capped, message
from .plan import make_plan
from .report import AdapterReport

MERGEABLE = ("ok", "untrained", "missing")


def merge(base, adapter, dtype=None, *, rename=None, safe_merge: bool = False) -> Checkpoint:
    """A lazy Checkpoint of ``base`` with ``adapter`` merged in.

    ``dtype``: a torch dtype or its name (``"bfloat16"``) for every floating tensor; None keeps
    each base tensor's dtype (a bf16 base gives PEFT's bf16 merge, bit for bit).
    ``safe_merge=True`` rounds as ``merge_and_unload(safe_merge=True)`` does (ΔW cast first).
    Raises :class:`~weightviz.errors.MismatchError` (``.report`` holds the check) when a module
    does not land or fit: merging it would fail in PEFT too.
    """
    plan = make_plan(base, adapter, rename=rename)
    bad = [r for r in plan.rows if r.status not in MERGEABLE]
    if bad:
        report = AdapterReport(plan.rows, info=plan.info, base_label=plan.base_label,
                               adapter_label=plan.adapter_label, unmatched_targets=plan.unmatched,
                               rename=plan.rules if rename is None else None, notes=plan.notes)
        raise MismatchError(message(
            f"cannot merge: {report.verdict}",
            expected="every adapted module landing on a base layer it fits",
            fix="see .report (weightviz.adapters.check_adapter shows the same rows)"
                + (f"; pass rename={report.rename_map()!r}" if report.rename_map() else ""),
            got=capped(f"{r.module} ({r.status})" for r in bad)), report=report)
    for w in plan.lora:
        dt = plan.base.entries[w.weight].dtype
        if not dtypes.is_float(dt) or dt in dtypes.QUANTIZED:
            plan.unmergeable.append(f"{w.row.module} (the base weight is {dt}: dequantize it first)")
    if plan.unmergeable:
        from ..errors import WeightvizError
        raise WeightvizError(message(
            "cannot merge these modules into this base",
            expected="floating-point base weights, and a bias in every base layer whose adapter has "
                     "lora_bias=True (PEFT refuses to merge a lora_B bias into a layer without one)",
            fix="use the adapter unmerged (PeftModel), give those layers a zero bias, or load a "
                "floating-point copy of the base",
            got=capped(plan.unmergeable)))
    want = _dtype(dtype)
    works = {w.weight: w for w in plan.lora}
    entries: dict[str, TensorEntry] = {}
    for name, e in plan.base.entries.items():
        src = plan.saved.get(name, e)
        floating = all(dtypes.is_float(t.dtype) and t.dtype not in dtypes.QUANTIZED for t in (e, src))
        target = (want or dtypes.to_torch(e.dtype)) if floating else None    # the base's dtype
        work = works.get(name)
        if name in plan.bias and target is not None and plan.bias[name][1].scale is not None:
            lb, row = plan.bias[name]
            entries[name] = TensorEntry(name, e.shape, dtypes.from_torch(target),
                                        loader=partial(_bias, src, lb, row.scale, target))
        elif work is not None and work.row.scale is not None and target is not None:
            entries[name] = TensorEntry(name, e.shape, dtypes.from_torch(target),
                                        loader=partial(_merged, plan, work, src, target, safe_merge))
        elif target is not None and (src is not e or want is not None):
            entries[name] = TensorEntry(name, src.shape, dtypes.from_torch(target),
                                        loader=partial(_cast, src, target))
        elif src is not e:
            entries[name] = TensorEntry(name, src.shape, src.dtype, loader=src.torch)
        else:
            entries[name] = e
    meta = {"merged": f"{plan.adapter_label} into {plan.base_label}",
            "note": f"merged view: {len(works)} weights read as W + ΔW ({plan.info.summary()})"}
    return Checkpoint(entries, format="merged", metadata=meta)


def _merged(plan, work, entry, target, safe_merge):
    from .check import module_factors
    from .delta import merged
    return merged(entry, module_factors(plan, work, safe_merge=safe_merge), target)


def _bias(entry, lora_bias, scale, target):
    """PEFT's ``bias.data += lora_B.bias * scaling``: computed in float32, rounded once."""
    import torch
    b = entry.torch()
    lb = lora_bias.torch().to(torch.promote_types(lora_bias.torch().dtype, torch.float32))
    return (b.to(target).to(lb.dtype) + lb * scale).to(target)


def _cast(entry, target):
    t = entry.torch()
    return t if t.dtype == target else t.to(target)


def _dtype(dtype):
    if dtype is None:
        return None
    import torch
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in dtypes.FLOATS:
        from ..errors import WeightvizError
        raise WeightvizError(message(f"dtype {dtype!r} is not a floating dtype",
                                     expected="bfloat16, float16, float32 or float64 (a torch dtype or its name)",
                                     got=repr(dtype)))
    return dtypes.to_torch(name)
