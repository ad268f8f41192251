"""check()/load(): compare a checkpoint with a model, report, and load what safely fits.

Names are paired by :mod:`weightviz.matching.names` (exact, ``rename=``, wrapper prefixes,
``model.``, other prefixes proven by shapes; shape-order pairs only as a guess).
Headers are compared without reading data; data is read, one tensor at a time,
only for the NaN/Inf scan, for the precision a cast would lose, and for loading.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Mapping

import numpy as np

from .. import dtypes
from ..checkpoint import Checkpoint, TensorEntry
from ..errors import CorruptFileError, MismatchError, WeightvizError, capped, message
from .names import match_names, same_layer_guess, shape_order_guess
from .report import Report, Row, Status, verdict

_CHUNK = 1 << 22


# -- sources and models ---------------------------------------------------------------
def as_checkpoint(source) -> tuple[Checkpoint, list[str]]:
    """A Checkpoint from a path, a Checkpoint, a state dict or an nn.Module, plus the
    unwrapping done (for the report)."""
    if isinstance(source, Checkpoint):
        return source, _kept_apart(source)
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from ..formats import open_checkpoint
        ckpt = open_checkpoint(source)
        return ckpt, _kept_apart(ckpt)
    if hasattr(source, "state_dict") and callable(source.state_dict) and not isinstance(source, Mapping):
        source = source.state_dict()
    if not isinstance(source, Mapping):
        raise WeightvizError(message(
            f"cannot compare against a {type(source).__name__}",
            expected="a file path, a weightviz Checkpoint, a state dict or an nn.Module",
            fix="pass the checkpoint's path or its state dict", got=type(source).__name__))
    from ..formats._unwrap import unwrap
    tensors, extras, path = unwrap(source, _is_tensor, what="the state dict")
    entries = {k: _entry(k, v) for k, v in tensors.items()}
    ckpt = Checkpoint(entries, format="state dict", extras=extras,
                      metadata={"unwrapped": path} if path else {})
    return ckpt, _kept_apart(ckpt)


def _kept_apart(ckpt: Checkpoint) -> list[str]:
    """What unwrapping did, in words: the container opened and the entries set aside."""
    extras = sorted(map(str, ckpt.extras))
    kept = f" (kept apart: {capped(extras)})" if extras else ""
    path = ckpt.metadata.get("unwrapped") if isinstance(ckpt.metadata, dict) else None
    if path:
        return [f"unwrapped {path!r}{kept}"]
    return [f"kept apart: {capped(extras)}"] if extras else []


def _is_tensor(v) -> bool:
    if isinstance(v, np.ndarray):
        return v.dtype.kind in "biufc"
    return type(v).__module__.startswith("torch") and hasattr(v, "dtype") and hasattr(v, "shape")


def _entry(name: str, v) -> TensorEntry:
    dt = dtypes.from_numpy(v.dtype) if isinstance(v, np.ndarray) else dtypes.from_torch(v.dtype)
    return TensorEntry(name, tuple(v.shape), dt, loader=lambda v=v: v)


def resolve_model(model, kwargs: dict | None):
    """The nn.Module itself, or one built from an import path "pkg.module:Class"."""
    if isinstance(model, str):
        from .importpath import from_import_path
        return from_import_path(model, kwargs or {})
    if kwargs:
        raise WeightvizError(message("kwargs= was given with a model object",
                                     fix='pass kwargs only with an import path "pkg.module:Class"'))
    if not (hasattr(model, "state_dict") and hasattr(model, "load_state_dict")):
        raise WeightvizError(message(
            f"cannot check against a {type(model).__name__}", expected="a torch.nn.Module or "
            'an import path "pkg.module:Class"', got=repr(model)[:80]))
    return model


# -- data checks ----------------------------------------------------------------------
@contextlib.contextmanager
def reading(entry: TensorEntry):
    """Turn a failure while reading one tensor's data into a CorruptFileError naming it."""
    try:
        yield
    except WeightvizError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes a reader raise
        raise CorruptFileError(message(
            f"could not read the data of tensor {entry.name!r}",
            expected=f"{entry.numel:,} values of {entry.dtype}",
            fix="the file may be truncated or damaged; check it with `weightviz inspect`",
            got=f"{type(e).__name__}: {e}")) from e


def non_finite(entry: TensorEntry) -> tuple[int, int]:
    """(NaN count, Inf count) of a floating tensor, streamed in chunks."""
    if not (dtypes.is_float(entry.dtype) or dtypes.is_complex(entry.dtype)) or entry.numel == 0:
        return 0, 0
    with reading(entry):
        return _non_finite(entry)


def _non_finite(entry: TensorEntry) -> tuple[int, int]:
    if entry.dtype in ("float16", "float32", "float64") or dtypes.is_complex(entry.dtype):
        flat = np.ravel(entry.raw(), order="K")
        nan = inf = 0
        for i in range(0, flat.size, _CHUNK):
            part = flat[i:i + _CHUNK]
            nan += int(np.isnan(part).sum())
            inf += int(np.isinf(part).sum())
        return nan, inf
    t = entry.torch().float()
    return int(t.isnan().sum()), int(t.isinf().sum())


_WIDER = {"float16": ("float32", "float64"), "bfloat16": ("float32", "float64"),
          "float32": ("float64",), "int8": ("int16", "int32", "int64", "float16", "float32", "float64"),
          "uint8": ("int16", "int32", "int64", "float16", "float32", "float64"),
          "int16": ("int32", "int64", "float32", "float64"), "int32": ("int64", "float64")}


def cast_loss(entry: TensorEntry, target: str, read: bool = True) -> tuple[bool | None, float | None]:
    """(lossless?, max abs error) of casting the entry to ``target``; (None, None) unread."""
    if entry.dtype == "bool" or target in _WIDER.get(entry.dtype, ()) or (
            entry.dtype.startswith("float8") or dtypes.block_size(entry.dtype)) and target in ("float32", "float64"):
        return True, 0.0
    if not read:
        return None, None
    import torch
    with reading(entry):
        t = entry.torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = t.to(dtypes.to_torch(target)).to(t.dtype)
    wide = torch.complex128 if t.is_complex() else torch.float64
    a, b = t.to(wide), back.to(wide)
    same = (a == b) | (a.isnan() & b.isnan())
    diff = (a - b).abs().to(torch.float64)
    diff = torch.where(same, torch.zeros_like(diff), diff.nan_to_num(nan=float("inf")))
    err = float(diff.max()) if diff.numel() else 0.0
    return err == 0.0, err


# -- the comparison -------------------------------------------------------------------
def compare(model, ckpt: Checkpoint, *, rename=None, data: bool = True, guess: bool = False,
            fixes: list[str] = ()) -> tuple[list[Row], dict, list[str], list[str]]:
    """Rows in model order (unexpected after), the ckpt->model pairs, fixes, suggestions."""
    msd = model.state_dict()
    mshape = {k: tuple(v.shape) for k, v in msd.items()}
    mdtype = {k: dtypes.from_torch(v.dtype) for k, v in msd.items()}
    cnames, mnames = list(ckpt), list(msd)
    cshape = {k: ckpt[k].shape for k in cnames}
    pairs, rules = match_names(cnames, mnames, cshape, mshape, rename)
    if ckpt.format == "onnx" and data:          # exporter-renamed or transposed initializers
        from .onnx_fold import pair_by_values
        for c, (m, rule) in pair_by_values(ckpt, msd, pairs).items():
            pairs[c], rules[c] = m, rule
    used = set(pairs.values())
    fc, fm = [c for c in cnames if c not in pairs], [m for m in mnames if m not in used]
    guessed, how = shape_order_guess(fc, fm, cshape, mshape), "by shape order"
    if not guessed:
        guessed, how = same_layer_guess(fc, fm, cshape, mshape, pairs), "by layer and shape"
    suggestions = []
    if guess:
        for c, m in guessed.items():
            pairs[c], rules[c] = m, f"paired {how} (guess=True)"
    elif guessed:
        what = ("by identical shapes in the same order" if how == "by shape order"
                else "by identical shapes within their layers")
        many = len(guessed) > 1
        suggestions.append(f"{len(guessed)} unmatched name{'s pair' if many else ' pairs'} up {what}: "
                           f"load with guess=True or rename=report.rename_map()")
    fixes = list(fixes)
    by_rule: dict[str, int] = {}
    for c, r in rules.items():
        by_rule[r] = by_rule.get(r, 0) + 1
    fixes += [f"{r}: {n} name{'s' if n > 1 else ''}" for r, n in by_rule.items()]
    inv = {m: c for c, m in pairs.items()}
    guessed_inv = {m: c for c, m in guessed.items()}
    tied = _tied(msd)
    rows = []
    for i, m in enumerate(mnames):
        c = inv.get(m)
        if c is None:
            sug = guessed_inv.get(m) if not guess else None
            harmless = _harmless(m, mshape[m], tied.get(m), inv)
            note = ("not in the checkpoint" + (f"; harmless: {harmless}" if harmless else "")
                    + (f"; pairs with {sug!r} {how}" if sug else ""))
            rows.append(Row(m, Status.MISSING, model_shape=mshape[m], model_dtype=mdtype[m], note=note,
                            suggestion=sug, order=i, fits=bool(harmless)))
            continue
        rows.append(_matched_row(m, c, ckpt[c], mshape[m], mdtype[m], rules.get(c), data, i))
    for j, c in enumerate(cnames):
        if c in pairs:
            continue
        e = ckpt[c]
        sug = guessed.get(c) if not guess else None
        rows.append(Row(c, Status.UNEXPECTED, ckpt_name=c, ckpt_shape=e.shape, ckpt_dtype=e.dtype,
                        note="not in the model" + (f"; pairs with {sug!r} {how}" if sug else ""),
                        suggestion=sug, order=len(mnames) + j))
    casts: dict[str, int] = {}
    for r in rows:
        if r.status == "dtype_mismatch" and r.lossless:
            k = (f"dequantize {r.ckpt_dtype} → {r.model_dtype}" if dtypes.block_size(r.ckpt_dtype)
                 else f"lossless cast {r.ckpt_dtype} → {r.model_dtype}")
            casts[k] = casts.get(k, 0) + 1
    fixes += [f"{k}: {n} tensor{'s' if n > 1 else ''}" for k, n in casts.items()]
    n_t = sum(r.status == "transposed" for r in rows)
    if n_t:
        suggestions.append(f"{n_t} tensor{'s are' if n_t > 1 else ' is'} stored transposed: "
                           f"load with transpose=True")
    lossy = sum(r.status == "dtype_mismatch" and not r.lossless for r in rows)
    if lossy:
        suggestions.append(f"{lossy} tensor{'s need' if lossy > 1 else ' needs'} a lossy cast: "
                           f"load with cast=True")
    if ckpt.format == "onnx":                   # folded BatchNorms, exporter-made names
        from .onnx_fold import explain
        suggestions += explain(rows, ckpt, model, data)
    return rows, pairs, fixes, suggestions


def _tied(msd: dict) -> dict[str, list[str]]:
    """Model name -> the other names sharing its storage (tied weights)."""
    groups: dict[tuple, list[str]] = {}
    for k, v in msd.items():
        try:
            ptr = v.data_ptr()
        except Exception:  # noqa: BLE001 - tensors without storage (meta, sparse) are never tied
            continue
        if ptr:
            groups.setdefault((ptr, tuple(v.shape), tuple(v.stride()), v.dtype), []).append(k)
    return {k: [o for o in g if o != k] for g in groups.values() if len(g) > 1 for k in g}


def _harmless(name: str, shape: tuple, tied_to: list[str] | None, inv: dict) -> str:
    """Why a missing model tensor does not matter, or ''."""
    if name.endswith("num_batches_tracked") and shape == ():
        return "a BatchNorm step counter, kept as it is"
    present = [t for t in tied_to or () if t in inv]
    if present:
        return f"tied to {present[0]!r}, which is loaded"
    return ""


def _matched_row(m, c, e: TensorEntry, ms, md, rule, data, order) -> Row:
    row = Row(m, Status.RENAMED if rule else Status.OK, ckpt_name=c, ckpt_shape=e.shape,
              ckpt_dtype=e.dtype, model_shape=ms, model_dtype=md, rule=rule, order=order,
              note=f"rule: {rule}" if rule else "")
    notes = [row.note] if row.note else []
    if e.shape != ms:
        if len(ms) == 2 and e.shape == ms[::-1]:
            row.status = Status.TRANSPOSED
            notes.insert(0, f"stored as (in, out) = {e.shape}; the model wants (out, in)")
        else:
            row.status = Status.SHAPE_MISMATCH
            same = " (same number of values)" if e.numel == int(np.prod(ms)) else ""
            notes.insert(0, f"shape differs{same}")
            row.note = "; ".join(notes)
            return row
    nan, inf = non_finite(e) if data else (0, 0)
    if e.dtype != md:
        row.lossless, row.max_error = cast_loss(e, md, read=data)
        if row.status != Status.TRANSPOSED:
            row.status = Status.DTYPE_MISMATCH
        how = ("lossless" if row.lossless else "not checked (data not read)" if row.lossless is None
               else f"loses precision, max abs error {_err(row.max_error)}")
        if dtypes.block_size(e.dtype) and row.lossless:        # GGUF blocks: read as float32
            notes.insert(0, f"dequantized {e.dtype} (blocks of {dtypes.block_size(e.dtype)}) → {md}: "
                            "the quantization error is in the file")
        else:
            notes.insert(0, f"cast {e.dtype} → {md}: {how}")
    if nan or inf:
        row.status = Status.NON_FINITE
        notes.insert(0, f"holds {nan:,} NaN and {inf:,} Inf of {e.numel:,} values")
    row.fits = row.status in (Status.OK, Status.RENAMED) or (
        row.status == Status.DTYPE_MISMATCH and bool(row.lossless))
    row.note = "; ".join(notes)
    return row


def _err(x: float) -> str:
    from ..render import fmt_float
    return fmt_float(x)


# -- public verbs ---------------------------------------------------------------------
def check(model, source, *, rename: Mapping | Callable | None = None, kwargs: dict | None = None,
          data: bool | None = None) -> Report:
    """Compare ``source`` (path, Checkpoint, state dict or nn.Module) with ``model``
    (an nn.Module or an import path "pkg.module:Class" built with ``kwargs``).
    Changes nothing. ``data=False`` compares headers only (no NaN/Inf scan, cast
    precision unknown); the default reads the data of local files and not of remote ones
    (a URL: names, shapes and dtypes before anything is downloaded)."""
    model = resolve_model(model, kwargs)
    ckpt, fixes = as_checkpoint(source)
    if data is None:
        data = not (isinstance(ckpt.metadata, dict) and "remote" in ckpt.metadata)
    rows, _, fixes, sugg = compare(model, ckpt, rename=rename, data=data, fixes=fixes)
    n_model = sum(r.status != "unexpected" for r in rows)
    return Report(rows, verdict=verdict(rows, n_model), n_model=n_model, n_ckpt=len(ckpt),
                  source=ckpt.format, fixes=fixes, suggestions=sugg, model=model)


def load(model, source, *, strict: bool = True, transpose: bool = False, cast: bool = False,
         rename: Mapping | Callable | None = None, guess: bool = False,
         kwargs: dict | None = None) -> Report:
    """Load ``source`` into ``model`` and return the report (``report.model`` is the model).

    Applied automatically: unwrapping, prefix rules, lossless casts. Only when asked:
    ``transpose=True`` (2-D tensors stored (in, out)), ``cast=True`` (lossy casts),
    ``guess=True`` (names paired by shape order), ``rename=`` (your mapping, e.g.
    ``report.rename_map()``). Tensors holding NaN/Inf are never loaded.

    ``strict=True``: if any model tensor would stay untouched or the checkpoint has
    tensors the model lacks, raise :class:`MismatchError` (``.report``) and change
    nothing. ``strict=False``: load what fits; the report lists what was left untouched.
    """
    model = resolve_model(model, kwargs)
    ckpt, fixes = as_checkpoint(source)
    rows, _, fixes, sugg = compare(model, ckpt, rename=rename, guess=guess, fixes=fixes)
    for r in rows:
        same_dtype = r.ckpt_dtype == r.model_dtype or bool(r.lossless) or cast
        r.loaded = r.status in ("ok", "renamed") or (r.status == "dtype_mismatch" and same_dtype) or (
            r.status == "transposed" and transpose and same_dtype)
    acceptable = lambda r: r.loaded or (r.status == "missing" and r.fits)  # noqa: E731
    n_model = sum(r.status != "unexpected" for r in rows)
    left = [r for r in rows if not acceptable(r)]
    if strict and left:
        for r in rows:
            r.loaded = False
        report = Report(rows, verdict=verdict(rows, n_model), n_model=n_model, n_ckpt=len(ckpt),
                        source=ckpt.format, fixes=fixes, suggestions=sugg, mode="load", model=model)
        raise MismatchError(_strict_message(report, left), report)
    _apply(model, ckpt, [r for r in rows if r.loaded])
    # a suggestion the user already followed is no longer one
    taken = [k for k, on in (("transpose=True", transpose), ("cast=True", cast),
                             ("guess=True", guess)) if on]
    sugg = [s for s in sugg if not any(k in s for k in taken)]
    return Report(rows, verdict=verdict(rows, n_model, fit=acceptable, done=True), n_model=n_model,
                  n_ckpt=len(ckpt), source=ckpt.format, fixes=fixes, suggestions=sugg, mode="load",
                  model=model)


def _apply(model, ckpt: Checkpoint, rows: list[Row]) -> None:
    """Read every tensor first, then copy all at once: a read error changes nothing."""
    import torch
    sd = {}
    for r in rows:
        with reading(ckpt[r.ckpt_name]):
            t = ckpt[r.ckpt_name].torch()
        if r.ckpt_shape != r.model_shape:
            t = t.t()
        sd[r.name] = t.to(dtypes.to_torch(r.model_dtype)).contiguous()
    with torch.no_grad():
        result = model.load_state_dict(sd, strict=False)
    if result.unexpected_keys:  # pragma: no cover - compare() only passes model names
        raise WeightvizError(f"internal: unexpected keys {result.unexpected_keys}")


def _strict_message(report: Report, left: list[Row]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items())
    hints = []
    if any(r.status == "transposed" for r in left):
        hints.append("transpose=True for the transposed tensors")
    if any(r.lossless is False for r in left):
        hints.append("cast=True to accept lossy casts")
    if report.rename_map() != report.rename_map(guesses=False):
        hints.append("rename=err.report.rename_map() to apply the renames found")
    fits = sum(bool(r.fits) for r in report.rows if r.status not in ("unexpected", "missing"))
    if fits:
        hints.append(f"strict=False to load the {fits} tensor{'s' if fits > 1 else ''} that fit "
                     f"and leave the rest untouched")
    names = capped(f"{r.name} ({r.status})" for r in left)
    return message(f"the checkpoint does not fit the model, so nothing was loaded: {report.verdict}",
                   expected="every model tensor in the checkpoint with the same shape and a "
                            "lossless dtype, and no tensors the model lacks",
                   fix="See err.report for every tensor"
                       + ("; or load with " + "; or ".join(hints) if hints else ""),
                   got=f"{counts}. Not fitting: {names}")
