"""The structural half of an adapter check, shared by check_adapter and merge: the adapter's
modules landed on the base (names, shapes, ranks, targets), one row each, without any ΔW
arithmetic. Only lora_B is read (is it all zero?) and kohya's scalar alphas."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes
from ..render import fmt_shape
from ..checkpoint import Checkpoint
from ..errors import WeightvizError, message
from ..formats._peft_config import METHODS, target_hits, target_matches
from .modules import Module, empty_tensors, fit, group
from .report import EMPTY_FIX, AdapterRow
from .resolve import COMPONENTS, Resolver, apply_rename, inverse


@dataclass
class Work:
    row: AdapterRow
    module: Module
    weight: str                 # the base weight's tensor name
    transposed: bool


@dataclass
class Plan:
    info: object
    adapter: Checkpoint
    base: Checkpoint
    rows: list = field(default_factory=list)
    lora: list = field(default_factory=list)           # Work for the LoRA rows that land
    saved: dict = field(default_factory=dict)          # base tensor name -> adapter entry
    bias: dict = field(default_factory=dict)           # base bias name -> (lora_B.bias, row)
    unmergeable: list = field(default_factory=list)    # loads, but PEFT refuses to merge it
    unmatched: list = field(default_factory=list)
    rules: dict = field(default_factory=dict)          # proposed prefix rules
    notes: list = field(default_factory=list)
    base_label: str = ""
    adapter_label: str = ""


def open_adapter(adapter) -> Checkpoint:
    """A Checkpoint with ``.adapter`` from a path or a Checkpoint."""
    if isinstance(adapter, Checkpoint):
        ckpt = adapter
    elif isinstance(adapter, (str, os.PathLike)):
        from ..formats import open_checkpoint
        ckpt = open_checkpoint(adapter)
    else:
        raise WeightvizError(message(
            f"cannot read an adapter from a {type(adapter).__name__}",
            expected="a PEFT adapter folder, an adapter file (PEFT, diffusers, kohya) or a "
                     "Checkpoint opened from one",
            fix="pass the folder model.save_pretrained() wrote", got=type(adapter).__name__))
    if getattr(ckpt, "adapter", None) is None:
        raise WeightvizError(message(
            "this checkpoint is not a LoRA adapter",
            expected="lora_A / lora_B (or lora_down / lora_up) tensors, with adapter_config.json "
                     "beside a PEFT file",
            fix="pass the adapter folder or file; to compare two ordinary checkpoints use weightviz.diff",
            got=f"{len(ckpt)} tensors such as {next(iter(ckpt.entries), 'none')!r}"))
    if ckpt.adapter.method not in METHODS:
        raise WeightvizError(message(
            f"this is a {ckpt.adapter.peft_type or ckpt.adapter.method} adapter",
            expected="a LoRA or DoRA adapter (peft_type LORA)",
            fix="weightviz.open lists its tensors; only LoRA / DoRA are checked and merged",
            got=repr(ckpt.adapter.peft_type)))
    return ckpt


def _label(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.path.basename(os.fspath(src).rstrip("/\\")) or os.fspath(src)
    if isinstance(src, Checkpoint):
        return f"Checkpoint ({src.format})"
    if not isinstance(src, Mapping) and callable(getattr(src, "state_dict", None)):
        return f"{type(src).__name__} (nn.Module)"
    return "state dict"


def open_base(base) -> tuple[Checkpoint, set | None]:
    """The base as a Checkpoint, and the names of its Conv1D modules when it is a model."""
    from ..statistics import as_checkpoint
    conv1d = None
    if not isinstance(base, (Mapping, Checkpoint, str, os.PathLike)) and callable(
            getattr(base, "named_modules", None)):
        if hasattr(base, "peft_config") and callable(getattr(base, "get_base_model", None)):
            base = _unwrapped_peft(base.get_base_model())
            return as_checkpoint(base[0]), base[1]
        conv1d = {n for n, m in base.named_modules() if type(m).__name__ == "Conv1D"}
    return as_checkpoint(base), conv1d


def _unwrapped_peft(model) -> tuple[dict, set]:
    """A PeftModel's base weights: LoRA layers set aside, ``base_layer`` / ``original_module``
    wrappers read through (its modules_to_save copies are the adapter's, not the base's)."""
    def name(n):
        return n.replace(".base_layer.", ".").replace(".original_module.", ".").replace(".base_layer", "")
    sd = {}
    for k, v in model.state_dict().items():
        if ".lora_" in k or ".modules_to_save." in k:
            continue
        sd[name(k)] = v
    return sd, {name(n) for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}


def make_plan(base, adapter, *, rename=None) -> Plan:
    ad = open_adapter(adapter)
    base_ck, conv1d = open_base(base)
    info = ad.adapter
    plan = Plan(info, ad, base_ck, base_label=f"{_label(base)}, {len(base_ck)} tensors",
                adapter_label=_label(adapter))
    mods = group(ad, info.naming)
    res = Resolver(base_ck.entries, info.naming)
    landed: dict[str, str] = {}
    for m in mods:
        n = apply_rename(m.name, rename)
        target = res.structural(n)[0]
        if target is not None:
            landed[m.name] = target
    rest = [m.name for m in mods if m.name not in landed]
    proposals, plan.rules = res.propose(rest, set(landed.values())) if rest else ({}, {})
    has_cfg = info.source in ("adapter_config.json", "lora_adapter_metadata")
    alpha_default = False
    for m in mods:
        row = AdapterRow(m.name, "ok", order=m.order, base=landed.get(m.name))
        plan.rows.append(row)
        if empty := empty_tensors(m):
            row.status = "empty"
            row.kind = "saved" if not m.is_lora else ""
            row.note = (f"{len(empty)} tensor{'s' if len(empty) > 1 else ''} with no elements "
                        "(torch.Size([0])): ZeRO-3 saved it without gathering")
            if (fix := f"empty tensors: {EMPTY_FIX}") not in plan.notes:
                plan.notes.append(fix)
            continue
        if row.base is None:
            row.status, row.suggestion = "not_found", proposals.get(m.name)
            row.kind = "saved" if not m.is_lora else ("embedding" if m.embedding else "")
            row.note = "not in the base" + (f"; a rename lands it on {row.suggestion}" if row.suggestion else "")
            continue
        if not m.is_lora:
            _saved(plan, row, m, res)
            continue
        alpha_default |= _lora_row(plan, row, m, res, conv1d, has_cfg)
    if alpha_default:
        plan.notes.append("modules without a stored alpha use alpha = rank (scale 1), as kohya's "
                          "and diffusers' loaders assume")
    if info.notes:
        plan.notes.extend(n for n in info.notes if n not in plan.notes and not alpha_default)
    _missing(plan, res, landed, proposals, rename)
    where = {n.rpartition(".")[0]: i for i, n in enumerate(base_ck.entries)}
    for r in plan.rows:               # the base model's order; what does not land after it
        r.order = where.get(r.base or r.suggestion or "", len(where) + r.order)
    return plan


def _lora_row(plan: Plan, row: AdapterRow, m: Module, res: Resolver, conv1d, has_cfg: bool) -> bool:
    """Fill the row of a LoRA module that landed on a base module: shapes, rank, alpha, scale,
    untrained; queue it for the numbers. True when its alpha was assumed (= rank)."""
    info = plan.info
    cinfo, key = info.component(m.name), _peft_key(m.name, info)
    base_ck = plan.base
    alpha_default = False
    if m.A is None or m.B is None:
        row.status = "missing"
        row.note = ("lora_B absent: PEFT keeps its zeros, the module changes nothing" if m.B is None
                    else "lora_A absent: PEFT keeps a random lora_A; with the trained lora_B "
                         "the module's output is noise")
        return False
    wname = res.weight(row.base)
    if wname is None:
        row.status, row.note = "not_found", f"the base module {row.base} has no .weight"
        return False
    w = base_ck.entries[wname]
    row.shapes = {"lora_A": m.A.shape, "lora_B": m.B.shape, "base": w.shape}
    f = fit(m, w.shape, fan_in_fan_out=cinfo.fan_in_fan_out,
            conv1d=None if conv1d is None else row.base in conv1d)
    row.kind, row.rank = f.kind, m.rank
    notes = []
    if f.problems:
        row.status, row.note = f.problems[0]
        return False
    r_cfg = cinfo.rank_for(key) if has_cfg else None
    if r_cfg is not None and r_cfg != m.rank:
        row.status = "rank_differs"
        src = "the config's r is" if r_cfg == cinfo.r else "its rank_pattern gives"
        row.note = f"stored rank {m.rank}, but {src} {r_cfg}: PEFT fails to load it (size mismatch)"
        return False
    if has_cfg:
        row.alpha = cinfo.alpha_for(key)
    elif m.alpha is not None and m.alpha.numel == 1:
        row.alpha = float(np.asarray(m.alpha.numpy()).reshape(-1)[0])
    else:
        row.alpha, alpha_default = float(m.rank), True
    row.scale = cinfo.scale_for(r_cfg or m.rank, row.alpha)
    if has_cfg and cinfo.target_modules and not target_matches(cinfo, key):
        notes.append("not matched by target_modules: PEFT would not load it")
    if m.copy:
        notes.append(_copy_note(plan, m, row, res))
    if m.bias is not None:                 # lora_bias=True: s · lora_B.bias joins the base bias
        b = base_ck.entries.get(row.base + ".bias")
        if b is None or b.shape != m.bias.shape:
            notes.append("lora_B has a bias (lora_bias=True) but the base layer has no bias of its "
                         "shape: PEFT cannot merge it")
            plan.unmergeable.append(f"{row.module} (lora_bias=True, the base layer has no bias)")
        else:
            plan.bias[row.base + ".bias"] = (m.bias, row)
    if not dtypes.is_float(w.dtype) or w.dtype in dtypes.QUANTIZED:
        notes.append(f"base weight stored as {w.dtype}: ΔW numbers skipped")
    elif (zero := _zero_factor(m)) is not None:
        row.status = "untrained"
        notes.insert(0, f"{zero} is all zero (PEFT's initial state): ΔW = 0")
    plan.lora.append(Work(row, m, wname, f.transposed))
    row.note = "; ".join(n for n in notes if n)
    return alpha_default


def _zero_factor(m: Module) -> str | None:
    """The factor that is all zero, if one is: ΔW = 0. PEFT starts lora_B (for embeddings
    lora_embedding_A) at zero, so such a module was never trained."""
    order = (("A", m.A), ("B", m.B)) if m.embedding else (("B", m.B), ("A", m.A))
    for which, t in order:
        if not np.any(t.numpy()):
            return ("lora_embedding_" if m.embedding else "lora_") + which
    return None


def _peft_key(name: str, info) -> str:
    """The module name PEFT matched targets and patterns against (inside its component)."""
    comp, dot, rest = name.partition(".")
    if dot and (comp in dict(info.components) or (info.naming == "diffusers" and comp in COMPONENTS)):
        return rest
    return name


def _saved(plan: Plan, row: AdapterRow, m: Module, res: Resolver) -> None:
    """A modules_to_save layer: each stored tensor against the base's."""
    row.kind = "saved"
    bad = []
    for suffix, entry in m.saved.items():
        bname = f"{row.base}.{suffix}"
        b = plan.base.entries.get(bname)
        row.shapes[suffix] = entry.shape
        if b is None:
            bad.append(("not_found", f"the base has no {bname}"))
        elif b.shape != entry.shape:
            bad.append(("shape_differs", f"{suffix} {fmt_shape(entry.shape)}, the base's {fmt_shape(b.shape)}"))
        else:
            plan.saved[bname] = entry
    if bad:
        row.status = bad[0][0]
        row.note = "; ".join(n for _, n in bad)
    else:
        row.note = "stored whole (modules_to_save): replaces the base's"


def _copy_note(plan: Plan, m: Module, row: AdapterRow, res: Resolver) -> str:
    out = []
    for t, entry in m.copy.items():
        bname = f"{row.base}.{t}"
        b = plan.base.entries.get(bname)
        if b is not None and b.shape == entry.shape:
            plan.saved[bname] = entry
        else:
            out.append(f"its saved base_layer.{t} {fmt_shape(entry.shape)} does not fit the base's "
                       f"{fmt_shape(b.shape) if b is not None else 'absent tensor'}")
    return "; ".join(out) or "carries its own copy of the base weight (save_embedding_layers): " \
                            "PEFT loads it over the base's"


def _missing(plan: Plan, res: Resolver, landed: dict, proposals: dict, rename) -> None:
    """Rows for base modules the config targets with no weights in the adapter, and the
    targets that match no base module at all."""
    info = plan.info
    if info.naming == "kohya" or info.source not in ("adapter_config.json", "lora_adapter_metadata"):
        return
    taken = set(landed.values()) | set(proposals.values())
    back = inverse(rename if rename is not None else plan.rules)
    comps = [c for c, _ in info.components]
    first = next((n.partition(".")[0] for n in landed if n.partition(".")[0] in comps), None)
    seen: dict[str, list[str]] = {}
    order = len(plan.rows)
    for module, names in res.layers.items():
        w = plan.base.entries.get(module + ".weight")
        if w is None or len(w.shape) < 2:
            continue
        name = back(module)
        comp, dot, inner = name.partition(".")
        if dot and comp in comps:
            cinfo, key = info.component(name), inner
        elif first is not None:
            cinfo, key, name = info.component(first), name, f"{first}.{name}"
        else:
            cinfo, key = info, name
        seen.setdefault(id(cinfo), [cinfo, []])[1].append(key)
        if module in taken or not target_matches(cinfo, key) and not _all_linear(cinfo, key, w):
            continue
        order += 1
        kind = "conv" if len(w.shape) > 2 else "embedding" if "embed" in module else "linear"
        plan.rows.append(AdapterRow(name, "missing", kind=kind, base=module, order=order, shapes={"base": w.shape},
                                    note="targeted by the config, no weights in the adapter: "
                                         "PEFT leaves it untrained"))
    for cinfo, keys in seen.values():
        t = cinfo.target_modules
        if isinstance(t, str):
            if t != "all-linear" and not any(target_matches(cinfo, k) for k in keys):
                plan.unmatched.append(repr(t))
        elif t:
            plan.unmatched.extend(x for x in t if not any(target_hits(cinfo, x, k) for k in keys))


def _all_linear(cinfo, key: str, w) -> bool:
    """PEFT's 'all-linear': every Linear but the output layer (read from names and shapes)."""
    if cinfo.target_modules != "all-linear" or len(w.shape) != 2:
        return False
    last = key.rsplit(".", 1)[-1]
    return last not in ("lm_head", "embed_out", "output", "score", "classifier") and "embed" not in key \
        and last not in ("wte", "wpe")
