"""divergence(): run two models on the same inputs and find the first layer where they part.

Both models run in eval mode under ``torch.no_grad`` (their modes are restored after) on
copies of the inputs, with a forward hook on every *unit*: a module with no children, or a
direct child of a weightviz Keras-built model (one Keras layer).  Each unit call records its
first input tensor and its first output tensor (an RNN's ``(output, h_n)`` gives ``output``).
The models' own outputs are compared last, as the ``output`` pair.

**Pairing.**  When both models have the same unit names and each name's outputs have
compatible shapes, units pair by name.  Otherwise they pair by execution order: a
monotonic alignment (dynamic programming) that only pairs outputs of compatible shapes and
prefers pairs whose values agree, then pairs that agree after an activation one side runs
inside the layer and the other as a separate module or a functional call (Keras folds
``relu``/``softmax`` into ``Dense``/``Conv2D``), then pairs of compatible shape alone (the
earliest candidate first).  Units that only reshape or pass through their input (Flatten,
Dropout in eval mode, Identity) are left out of the alignment; in name pairing a pair is left
out when both sides only reshape.  A TorchScript module cannot be hooked: then only the final
outputs are compared, and the report says so.

**Permutations.**  Two outputs are compatible when their shapes are equal or when one is the
other's channels-last <-> channels-first permutation: ``NHWC→NCHW`` / ``NCHW→NHWC`` for 4-D
(``NDHWC``... for 5-D) and, for 3-D conv1d-like outputs only when the shapes require it,
``(N,L,C)↔(N,C,L)``.  Each candidate permutation is applied to model a's output and the one
with the smallest error is kept (ties keep ``identity``); the row names it.

**Errors.**  Per pair: max abs error, relative error ``‖a−b‖/‖a‖`` in float64, and whether
``|b − a| <= atol + rtol·|a|`` everywhere (model a is the reference).  A NaN in either
output makes the row ``nan`` (beyond tolerance, never a crash).  ``report.first`` is the
first pair beyond tolerance; it carries a one-line hint when a usual porting slip fits.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from .. import render
from ..errors import WeightvizError, capped, message
from ..models.inference import eval_mode
from .layerpairs import Rec, compare, hint, kind, pair_records

__all__ = ["divergence", "DivergenceReport", "LayerPair"]

@dataclass
class LayerPair:
    """One paired layer (or the final ``output`` pair) of a :class:`DivergenceReport`."""
    index: int
    name_a: str
    name_b: str
    type_a: str
    type_b: str
    shape_a: tuple
    shape_b: tuple
    permutation: str = "identity"     # applied to a's output before comparing
    activation: str | None = None     # e.g. "relu(b)": applied to one side's output first
    max_abs_error: float = math.nan
    rel_error: float = math.nan
    within: bool = False
    status: str = "diverges"          # ok / diverges / nan / shape
    note: str = ""
    hint: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape_a"], d["shape_b"] = list(self.shape_a), list(self.shape_b)
        for k in ("max_abs_error", "rel_error"):
            if not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


class DivergenceReport:
    """Layer-by-layer comparison of two models on the same inputs.

    ``rows`` (:class:`LayerPair`, execution order, ``output`` last), ``first`` (the first row
    beyond tolerance, or None), ``diverges``, ``summary``; ``report["name"]`` finds a row by
    either side's layer name.
    """

    def __init__(self, rows, *, pairing: str, atol: float, rtol: float, names=("a", "b"),
                 notes=()):
        self.rows, self.pairing, self.atol, self.rtol = list(rows), pairing, atol, rtol
        self.names, self.notes = tuple(names), list(notes)
        self.first = next((r for r in self.rows if not r.within), None)

    @property
    def diverges(self) -> bool:
        return self.first is not None

    @property
    def summary(self) -> str:
        f = self.first
        if f is not None:
            err = "NaN in an output" if f.status == "nan" else (
                "output shapes differ" if f.status == "shape" else
                f"max abs error {render.fmt_float(f.max_abs_error)}")
            where = "at the final outputs" if f.index == len(self.rows) else f"at layer {f.index}"
            return f"models part {where}: `{f.name_a}` ↔ `{f.name_b}` ({err})"
        worst = max(self.rows, key=lambda r: r.max_abs_error)
        n, err = len(self.rows) - 1, render.fmt_float(worst.max_abs_error)
        if n == 0:
            return f"no divergence in the final outputs (no layers paired), largest error {err}"
        return (f"no divergence: {n} layer{'s' if n != 1 else ''} paired, largest error "
                f"{err} at `{worst.name_a}`")

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerPair:
        for key in ("name_a", "name_b"):
            for r in self.rows:
                if getattr(r, key) == name:
                    return r
        raise KeyError(f"no paired layer named {name!r} in this report")

    def to_dict(self) -> dict:
        return {"summary": self.summary, "diverges": self.diverges,
                "first": None if self.first is None else self.first.index,
                "hint": self.first.hint if self.first is not None else "",
                "pairing": self.pairing, "atol": self.atol, "rtol": self.rtol,
                "models": list(self.names), "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows]}

    def to_json(self, **kwargs) -> str:
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def view(self) -> render.View:
        cells = [(r.index, r.name_a, r.name_b, r.shape_a, r.shape_b,
                  r.permutation + (f" + {r.activation}" if r.activation else ""),
                  r.max_abs_error, r.rel_error, r.status if not r.note else f"{r.status}: {r.note}")
                 for r in self.rows]
        table = render.Table(["#", "a", "b", "shape a", "shape b", "layout", "max abs err",
                              "rel err", "status"], cells, align="rlllllrrl")
        first = self.first
        summary = [("model a", self.names[0]), ("model b", self.names[1]),
                   ("pairing", self.pairing),
                   ("tolerance", f"atol {render.fmt_float(self.atol)}, rtol {render.fmt_float(self.rtol)}")]
        return render.View(self.summary, summary, [table], self.notes,
                           headline=f"hint: {first.hint}" if first is not None and first.hint else None,
                           headline_status="bad" if first is not None else "ok")

    def __repr__(self) -> str:
        return self.view().to_text()

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return self.view().to_html()


# -- running ------------------------------------------------------------------------------
def _first_tensor(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def _np(t):
    return None if t is None else t.detach().cpu().to(dtype=_f64(t)).numpy().copy()


def _f64(t):
    import torch
    return torch.complex128 if t.is_complex() else torch.float64


def _units(root):
    out = []

    def walk(prefix, mod, keras_parent):
        kids = list(mod.named_children())
        if prefix and (not kids or keras_parent):
            out.append((prefix, mod))
            return
        if not kids:
            out.append(("(model)", mod))
            return
        keras = hasattr(mod, "keras_name") and hasattr(mod, "_calls")
        for n, k in kids:
            walk(f"{prefix}.{n}" if prefix else n, k, keras)
    walk("", root, False)
    return out


def _prepare(model, inputs):
    """Fresh tensors for one model: copies, float inputs cast to the model's float dtype."""
    import torch
    params = list(model.parameters())
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    device = params[0].device if params else torch.device("cpu")
    out = []
    for x in inputs:
        if not isinstance(x, torch.Tensor):
            arr = np.array(x, copy=True) if isinstance(x, (np.ndarray, list, tuple)) else x
            if not (isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf"):
                out.append(x)
                continue
            x = torch.from_numpy(arr)
        x = x.detach().clone()
        out.append((x.to(dtype) if x.is_floating_point() else x).to(device))
    return out


def _trace(model, inputs, side: str):
    import torch
    if not isinstance(model, torch.nn.Module):
        raise WeightvizError(message(
            f"divergence(): model {side} is not a torch model",
            expected="a torch.nn.Module (weightviz.build, build_mlp, your own class, TorchScript)",
            got=type(model).__name__))
    script = isinstance(model, torch.jit.ScriptModule)
    recs, handles, calls = [], [], {}

    def hook(name):
        def fn(mod, args, output):
            t = _first_tensor(output)
            if t is None:
                return
            k = calls[name] = calls.get(name, 0) + 1
            i = _first_tensor(args)
            same = (i is not None and i.numel() == t.numel() and i.dtype == t.dtype
                    and torch.equal(i.reshape(-1), t.reshape(-1)))
            recs.append(Rec(name if k == 1 else f"{name} (call {k})", mod, _np(i), _np(t), same))
        return fn
    if not script:
        handles = [m.register_forward_hook(hook(n)) for n, m in _units(model)]
    try:
        with eval_mode(model):
            out = model(*_prepare(model, inputs))
    except WeightvizError:
        raise
    except Exception as e:
        shapes = ", ".join(str(tuple(getattr(x, "shape", ()))) for x in inputs)
        raise WeightvizError(message(
            f"divergence(): model {side} ({type(model).__name__}) raised {type(e).__name__} "
            "on the inputs",
            expected="inputs both models accept (count, shape and dtype)",
            fix=f"check that model {side} runs on these inputs by itself",
            got=f"input shape(s) {shapes}: {type(e).__name__}: {str(e)[:300]}")) from e
    finally:
        for h in handles:
            h.remove()
    t = _first_tensor(out)
    if t is None:
        raise WeightvizError(message(f"divergence(): model {side} returned no tensor",
                                     expected="a tensor, or a tuple/list/dict holding one",
                                     got=type(out).__name__))
    return recs, _np(t), script


# -- the verb -----------------------------------------------------------------------------
def divergence(model_a, model_b, *inputs, atol: float = 1e-5, rtol: float = 1e-4,
               names=None) -> DivergenceReport:
    """Run ``model_a`` and ``model_b`` on the same ``inputs`` (torch tensors or NumPy arrays,
    one positional argument per model input; never modified) and compare them layer by layer.
    ``names``: what to call the two models in the report (default: their class names).

    Returns a :class:`DivergenceReport`: paired layers in execution order, the final outputs
    last, ``first`` = the first pair beyond ``|b - a| <= atol + rtol * |a|`` with a hint.
    Raises :class:`WeightvizError` when a model fails on the inputs, or when nothing pairs and
    the final outputs' shapes differ too.  See the module docstring for pairing rules.
    """
    if not inputs:
        raise WeightvizError(message("divergence() needs inputs to run the models on",
                                     expected="divergence(model_a, model_b, x), x a batch of samples",
                                     got="no inputs"))
    ra, out_a, script_a = _trace(model_a, inputs, "a")
    rb, out_b, script_b = _trace(model_b, inputs, "b")
    notes = [f"model {s} is TorchScript: its layers cannot be hooked, only the final outputs were "
             "compared" for s, sc in (("a", script_a), ("b", script_b)) if sc]
    if script_a or script_b:
        ra, rb = [], []
    pairing, pairs, skipped = pair_records(ra, rb, atol, rtol) if ra and rb else ("final outputs only", [], [])
    if not pairs and not (script_a or script_b):
        pairing = "final outputs only"
        notes.append("no layers could be paired (no outputs of matching shapes): only the final "
                     "outputs were compared")
    final = compare(out_a, out_b, atol, rtol, acts=False)
    if final is None and not pairs:
        raise WeightvizError(message(
            "divergence(): the two models' outputs cannot be compared",
            expected="outputs of the same shape (or a channels-last/first permutation of it)",
            got=f"a {tuple(out_a.shape)}, b {tuple(out_b.shape)}"))
    rows = []
    for x, y, c in pairs + [(None, None, final)]:
        sa, sb = (x.out.shape, y.out.shape) if x is not None else (out_a.shape, out_b.shape)
        row = LayerPair(len(rows) + 1, x.name if x else "output", y.name if y else "output",
                        kind(x.module) if x else type(model_a).__name__,
                        kind(y.module) if y else type(model_b).__name__, tuple(sa), tuple(sb))
        if c is None:
            row.status, row.note = "shape", "output shapes cannot be matched"
        else:
            _, row.permutation, row.activation, (mx, rel, ok, note) = c
            row.max_abs_error, row.rel_error, row.within, row.note = mx, rel, ok, note
            row.status = "ok" if ok else ("nan" if note else "diverges")
        rows.append(row)
    first = next((r for r in rows if not r.within), None)
    if first is not None:
        k = first.index - 1
        x, y = (pairs[k][0], pairs[k][1]) if k < len(pairs) else (None, None)
        first.hint = "" if first.status in ("nan", "shape") else hint(first, x, y, ra, rb, (out_a, out_b))
    if skipped:
        notes.append(f"left out (reshape or pass-through only): {capped(sorted(set(skipped)))}")
    used_a, used_b = {id(p[0]) for p in pairs}, {id(p[1]) for p in pairs}
    for side, recs, used in (("a", ra, used_a), ("b", rb, used_b)):
        left = [r.name for r in recs if id(r) not in used and r.name not in skipped]
        if left:
            notes.append(f"unpaired in {side}: {capped(left)}")
    if names is None:
        names = (type(model_a).__name__, type(model_b).__name__)
    elif len(names) != 2:
        raise WeightvizError(message("divergence(names=...) names the two models",
                                     expected="two names, e.g. ('keras', 'port')", got=repr(names)))
    return DivergenceReport(rows, pairing=pairing, atol=atol, rtol=rtol, names=names, notes=notes)
