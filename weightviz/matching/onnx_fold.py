"""ONNX exports checked against the torch model they came from.

torch's exporters keep the state-dict names of most initializers, but not all:
constant folding renames some (``onnx::MatMul_123``: a Linear applied to a 3-D input is
stored transposed for MatMul), and eval-mode BatchNorm is folded into the Conv before it
(``onnx::Conv_29`` = ``conv1.weight * bn1.weight / sqrt(bn1.running_var + eps)``).
:func:`pair_by_values` pairs such tensors with their model tensors by identical values
(as stored, or transposed); :func:`explain` recognises folded BatchNorms (values checked)
and words the rows of exporter-made names. Both only read the few tensors left unpaired
by name.
"""
from __future__ import annotations

import re

import numpy as np

from .report import Status

RULE = "ONNX export name (paired by identical values)"
MAX_COMPARISONS = 10_000
EXPORTER_NAME = re.compile(r"^(onnx::|val_\d+$|_?v_\d+$|/)|::")


def _values(entry) -> np.ndarray | None:
    try:
        return np.asarray(entry.numpy(), dtype=np.float64)
    except Exception:  # noqa: BLE001 - an unreadable tensor simply pairs with nothing
        return None


def _model_values(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def pair_by_values(ckpt, msd: dict, pairs: dict) -> dict[str, tuple[str, str]]:
    """ckpt name -> (model name, rule) for unpaired tensors whose values equal exactly one
    unpaired model tensor's (same shape, or a 2-D tensor stored transposed). A constant
    tensor (a zero bias, a fresh BatchNorm's ones) pairs with nothing: equal values say
    nothing about which tensor it is."""
    used = set(pairs.values())
    free_c = [c for c in ckpt if c not in pairs and ckpt[c].numel]
    free_m = [m for m in msd if m not in used and msd[m].numel() and msd[m].is_floating_point()]
    hits: dict[str, list[str]] = {}
    budget, cache = MAX_COMPARISONS, {}
    for c in free_c:
        e = ckpt[c]
        for m in free_m:
            ms = tuple(msd[m].shape)
            if e.shape != ms and not (len(ms) == 2 and e.shape == ms[::-1]):
                continue
            budget -= 1
            if budget < 0:
                return _unique(hits)
            if c not in cache:
                cache[c] = _values(e)
            a = cache[c]
            if a is None or a.size < 2 or a.min() == a.max():     # a constant pairs with any twin
                break
            b = _model_values(msd[m])
            if np.array_equal(a if e.shape == ms else a.T, b):
                hits.setdefault(c, []).append(m)
    return _unique(hits)


def _unique(hits: dict) -> dict:
    claims: dict[str, int] = {}
    for ms in hits.values():
        for m in ms:
            claims[m] = claims.get(m, 0) + 1
    return {c: (ms[0], RULE) for c, ms in hits.items() if len(ms) == 1 and claims[ms[0]] == 1}


def explain(rows: list, ckpt, model, data: bool = True) -> list[str]:
    """Notes on the rows an ONNX export leaves unpaired; returns suggestion lines."""
    missing = {r.name: r for r in rows if r.status == "missing"}
    unexpected = {r.name: r for r in rows if r.status == "unexpected"}
    # checkpoint tensors that may hold a folded BatchNorm: unpaired ones, and paired ones
    # (the dynamo exporter keeps conv1.weight's name for the folded values)
    cands = {r.ckpt_name: r for r in rows if r.status in ("unexpected", "ok", "renamed") and r.ckpt_name}
    out = []
    if data:
        msd = model.state_dict()
        for bn in sorted({n.rsplit(".", 1)[0] for n in missing if n.endswith(".running_var")}):
            found = _folded(bn, ckpt, model, msd, cands)
            if not found:
                continue
            conv, w, b = found
            names = [x for x in (w, b) if x]
            into = " and ".join(map(repr, names))
            folded_rows = {}
            for x in names:
                what = "weight" if x == w else "bias"
                r = cands[x]
                note = (f"holds {conv}.{what} with BatchNorm {bn!r} folded in by the ONNX exporter "
                        f"(values checked); not loadable as it is")
                if r.status == "unexpected":            # merged into the model's row below
                    rows.remove(r)
                    folded_rows[f"{conv}.{what}"] = r
                else:                                   # the exporter kept the name
                    r.status, r.fits = Status.FOLDED, False
                    r.note = "; ".join(x for x in (note, r.note) if x)
            for n, r in missing.items():
                if n.startswith(bn + ".") and not n.endswith("num_batches_tracked"):
                    r.status, r.note = Status.FOLDED, f"the exporter folded {bn!r} into {into}"
                elif n in folded_rows:
                    c = folded_rows[n]
                    r.status, r.ckpt_name, r.ckpt_shape, r.ckpt_dtype = (Status.FOLDED, c.ckpt_name,
                                                                         c.ckpt_shape, c.ckpt_dtype)
                    r.note = f"exported with BatchNorm {bn!r} folded in (values checked); not loadable as it is"
            out.append(f"ONNX export: BatchNorm {bn!r} was folded into {conv!r} ({', '.join(names)}); "
                       f"those values differ from the model's and cannot be loaded back as they are")
    constants = set(ckpt.metadata.get("constant_names") or ())
    for n, r in unexpected.items():
        if not r.note.startswith("not in the model"):
            continue
        if EXPORTER_NAME.search(n) or n in constants:
            r.note = ("an exporter-made name (a folded or renamed constant), not a state-dict name; "
                      "its values match no model tensor" if data else
                      "an exporter-made name (a folded or renamed constant), not a state-dict name") + (
                      r.note[len("not in the model"):])
    return out


def _folded(bn: str, ckpt, model, msd: dict, cands: dict):
    """(conv prefix, folded weight name, folded bias name) if an unpaired checkpoint tensor
    equals some model weight with BatchNorm ``bn`` folded in."""
    try:
        eps = float(getattr(model.get_submodule(bn), "eps", 1e-5))
    except AttributeError:
        eps = 1e-5
    need = [f"{bn}.{k}" for k in ("running_mean", "running_var", "weight", "bias")]
    if not all(k in msd for k in need[:2]):
        return None
    mean, var = _model_values(msd[need[0]]), _model_values(msd[need[1]])
    gamma = _model_values(msd[need[2]]) if need[2] in msd else np.ones_like(var)
    beta = _model_values(msd[need[3]]) if need[3] in msd else np.zeros_like(var)
    scale = gamma / np.sqrt(var + eps)
    for m, t in msd.items():
        if not m.endswith(".weight") or t.dim() < 2 or t.shape[0] != scale.size or m.startswith(bn + "."):
            continue
        want = _model_values(t) * scale.reshape((-1,) + (1,) * (t.dim() - 1))
        for c, r in cands.items():
            if r.ckpt_shape != tuple(t.shape):
                continue
            got = _values(ckpt[c])
            if got is None or not np.allclose(got, want, rtol=1e-4, atol=1e-6):
                continue
            conv = m[:-len(".weight")]
            bias = _model_values(msd[conv + ".bias"]) if conv + ".bias" in msd else np.zeros_like(var)
            fb = (bias - mean) * scale + beta
            bname = next((c2 for c2, r2 in cands.items() if r2.ckpt_shape == fb.shape
                          and (v := _values(ckpt[c2])) is not None and np.allclose(v, fb, rtol=1e-4, atol=1e-6)),
                         None)
            return conv, c, bname
    return None
