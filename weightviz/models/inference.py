"""Running samples through a model: eval mode, no gradients, top-k.

The logic behind :func:`weightviz.predict` (the widget in
:mod:`weightviz.widgets.explorer` only draws what this returns).  Kept out of a
module named ``predict`` on purpose: ``import weightviz.predict`` would replace
the ``weightviz.predict`` verb with the module.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import WeightvizError, message


def as_array(samples) -> np.ndarray:
    """A batch of samples as a NumPy array (torch tensors are detached and copied)."""
    if hasattr(samples, "detach") and hasattr(samples, "cpu"):
        samples = samples.detach().cpu().numpy()
    try:
        arr = np.asarray(samples)
    except Exception as exc:  # ragged lists and the like
        raise WeightvizError(message(
            "could not read the samples as one array",
            expected="a NumPy array or torch tensor with the batch on axis 0",
            got=f"{type(samples).__name__} ({exc})")) from None
    if arr.ndim == 0 or arr.shape[0] == 0 or arr.dtype.kind not in "biuf":
        raise WeightvizError(message(
            "the samples are not a batch of numbers",
            expected="a numeric array with at least one sample on axis 0, e.g. shape (N, 16, 16, 1)",
            fix="add the batch dimension with x[None] for a single sample",
            got=f"shape {arr.shape}, dtype {arr.dtype}"))
    return arr


@contextmanager
def eval_mode(model):
    """Put every submodule in eval mode, under ``torch.no_grad``; restore each one's mode after."""
    import torch
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for m, training in modes:
            m.training = training


def run(model, samples, *, batch_size: int = 256) -> np.ndarray:
    """Outputs of ``model`` on ``samples`` as a float64 array ``(N, ...)``.

    The model runs in eval mode under ``torch.no_grad`` and is put back in the
    mode it was in.  Float samples are cast to the model's floating dtype.  A
    model returning a tuple/list contributes its first element, a dict its first value.
    """
    import torch
    if not isinstance(model, torch.nn.Module):
        raise WeightvizError(message(
            "predict() needs a torch model",
            expected="a torch.nn.Module (e.g. from weightviz.build or your own class)",
            got=type(model).__name__))
    arr = as_array(samples)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outs = []
    with eval_mode(model):
        for start in range(0, arr.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(arr[start:start + batch_size]))
            if x.is_floating_point():
                x = x.to(dtype)
            y = model(x.to(device))
            if isinstance(y, dict):
                y = next(iter(y.values()))
            if isinstance(y, (tuple, list)):
                y = y[0]
            outs.append(y.detach().cpu().double().numpy())
    out = np.concatenate(outs, axis=0)
    if out.shape[0] != arr.shape[0]:
        raise WeightvizError(message(
            "the model returned a different number of outputs than samples",
            expected=f"{arr.shape[0]} rows (one per sample)", got=f"output shape {out.shape}"))
    return out


def is_probability(outputs: np.ndarray) -> bool:
    """True when every row is non-negative and sums to 1 (softmax outputs)."""
    o = outputs.reshape(outputs.shape[0], -1)
    return bool(o.size and np.all(o >= 0) and np.allclose(o.sum(axis=1), 1.0, atol=1e-4))


def top_k(row: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """``(index, value)`` of the ``k`` largest values of one output row, largest first
    (ties keep the lower index first)."""
    flat = np.asarray(row, dtype=np.float64).ravel()
    order = np.argsort(-flat, kind="stable")[:max(int(k), 1)]
    return [(int(i), float(flat[i])) for i in order]
