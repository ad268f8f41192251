"""What the statistics verbs accept, as a Checkpoint: a path, a Checkpoint, a state dict
(name -> tensor or array) or an nn.Module."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import dtypes
from ..errors import WeightvizError, message


def as_checkpoint(source, **open_options):
    """A Checkpoint from a path or URL, a Checkpoint, a state dict or an nn.Module."""
    import os
    from ..checkpoint import Checkpoint
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..formats import open_checkpoint
        return open_checkpoint(source, **open_options)
    fmt = "state_dict"
    if not isinstance(source, Mapping) and callable(getattr(source, "state_dict", None)):
        source, fmt = source.state_dict(), "module"
    if not isinstance(source, Mapping) or type(source).__name__ == "StatsTable":
        raise WeightvizError(message(
            "cannot read tensors from this object",
            expected="a file path, a weightviz Checkpoint, a state dict (name -> tensor or "
                     "array) or a torch.nn.Module",
            got=type(source).__name__))
    entries = {}
    for name, value in source.items():
        entries[str(name)] = _entry(str(name), value)
    return Checkpoint(entries, format=fmt)


def _entry(name: str, value):
    from ..checkpoint import TensorEntry
    if isinstance(value, (np.ndarray, np.generic, int, float, complex)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise WeightvizError(message(f"tensor {name!r} is not numeric", got=str(arr.dtype)))
        return TensorEntry(name, arr.shape, dtypes.from_numpy(arr.dtype), loader=lambda: arr)
    if hasattr(value, "detach") and hasattr(value, "dtype") and hasattr(value, "shape"):
        return TensorEntry(name, tuple(value.shape), dtypes.from_torch(value.dtype),
                           loader=lambda: value)
    raise WeightvizError(message(f"value of {name!r} is not a tensor or array",
                                 expected="torch.Tensor or numpy.ndarray",
                                 fix="For a nested checkpoint pass the inner state dict (e.g. "
                                     "obj['state_dict']) or the file path, which is unwrapped",
                                 got=type(value).__name__))
