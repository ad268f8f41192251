"""Checkpoint: a lazy, read-only mapping of tensor name -> TensorEntry.

Readers (``weightviz.formats``) build these from headers only; tensor data is
read when a caller asks for it (``entry.numpy()``, ``entry.torch()``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable, Iterator

import numpy as np

from . import dtypes


@dataclass(frozen=True)
class DataLocation:
    """Where a tensor's raw bytes sit inside a plain file, so they can be memory-mapped.

    ``path`` is a local path, or a remote object's name with a ``window(offset, nbytes)``
    method (``weightviz.formats.source.RemotePath``) that fetches the bytes into a local
    mirror and says where to map them.

    ``dtype`` is the NumPy dtype of the stored bits (byte order included; bf16/fp8 as
    unsigned ints of the same width), ``order`` is 'C' or 'F'.
    """
    path: str
    offset: int
    dtype: np.dtype
    order: str = "C"


class TensorEntry:
    """One tensor's header (name, shape, dtype, nbytes); data is read only on request."""

    __slots__ = ("name", "shape", "dtype", "location", "_loader")

    def __init__(self, name: str, shape, dtype: str, *,
                 loader: Callable[[], Any] | None = None,
                 location: DataLocation | None = None):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.location = location
        self._loader = loader

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return dtypes.nbytes(self.dtype, self.numel)

    def raw(self, *, stream: bool = False) -> np.ndarray:
        """The stored values as a NumPy array: a read-only memory map when the bytes lie
        plainly in the file; bf16/fp8 come as their raw uint16/uint8 bit patterns.

        ``stream`` (for the statistics scan): a large remote tensor's map may come back before
        its bytes have arrived, with a ``wait(a, b)`` attribute that blocks until bytes [a, b)
        of it are there; read nothing of it before waiting for it."""
        if self.location is not None:
            loc = self.location
            if self.numel == 0:
                return _empty(self.name, self.shape, loc.dtype)
            target, offset, wait = loc.path, loc.offset, None
            window = getattr(target, "window", None)     # a remote object: its bytes fetched
            if window is not None:                       # into a local mirror at the same offset
                n = self.numel * np.dtype(loc.dtype).itemsize
                target, offset, *rest = window(offset, n, stream=True) if stream else window(offset, n)
                wait = rest[0] if rest else None
            arr = np.memmap(target, dtype=loc.dtype, mode="r", offset=offset,
                            shape=self.shape, order=loc.order)
            if wait is not None:
                arr.wait = wait
            return arr
        value = self._load()
        if isinstance(value, np.ndarray):
            return value
        t = value.detach().cpu()
        if self.dtype == "bfloat16":
            import torch
            return t.view(torch.int16).numpy().view(np.uint16)
        if self.dtype.startswith("float8"):
            import torch
            return t.view(torch.uint8).numpy()
        return t.numpy()

    def numpy(self) -> np.ndarray:
        """The tensor as a NumPy array (a copy). bfloat16 and float8 are widened to
        float32, since NumPy has no such dtypes."""
        if self.location is None:
            value = self._load()
            if not isinstance(value, np.ndarray):
                t = value.detach().cpu()
                if self.dtype == "bfloat16" or self.dtype.startswith("float8"):
                    t = t.float()
                return t.numpy().copy()
            arr = value
        else:
            arr = self.raw()
        if self.dtype == "bfloat16":
            return (arr.astype(np.uint32) << 16).view(np.float32).reshape(self.shape)
        if self.dtype.startswith("float8"):
            import torch
            bits = torch.from_numpy(np.array(arr, copy=True, order="C"))
            return bits.view(dtypes.to_torch(self.dtype)).float().numpy()
        return np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True)

    def torch(self):
        """The tensor as a torch.Tensor in its stored dtype (imports torch)."""
        import torch
        if self.location is None:
            value = self._load()
            if isinstance(value, torch.Tensor):
                return value
        else:
            value = self.raw()
        if self.dtype == "bfloat16" or self.dtype.startswith("float8"):
            bits = torch.from_numpy(np.array(value, copy=True, order="C"))
            return bits.view(dtypes.to_torch(self.dtype)).reshape(self.shape)
        # np.array, not np.ascontiguousarray: the latter turns 0-d scalars into shape (1,)
        return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("="), order="C", copy=True))

    def _load(self):
        if self._loader is None:
            raise RuntimeError(f"tensor {self.name!r} has no data source")
        return self._loader()

    def __repr__(self) -> str:
        shape = "×".join(map(str, self.shape)) or "scalar"
        return f"TensorEntry({self.name!r}, shape={shape}, dtype={self.dtype})"


@dataclass(eq=False)
class Checkpoint(Mapping):
    """The model weights of one file, in the file's own order.

    ``extras`` holds what was kept apart (optimizer state, epoch, ...);
    ``architecture`` the parsed Keras config when the file carries one;
    ``groups`` maps a layer name to its tensor names in the framework's own
    weight order (Keras files), when the reader knows it; ``adapter`` describes a
    LoRA adapter (method, rank, alpha, targets) and is None for ordinary checkpoints.
    """
    entries: dict[str, TensorEntry]
    format: str
    path: str | None = None
    architecture: dict | None = None
    metadata: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)
    groups: dict[str, list[str]] | None = None
    adapter: Any = None          # a LoRA adapter's AdapterInfo (weightviz.formats.adapter_file)

    def __getitem__(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            from .errors import message
            close = [k for k in self.entries if name.lower() in k.lower()][:5]
            raise KeyError(message(
                f"no tensor named {name!r} in this {self.format} checkpoint",
                fix="list the names with list(ckpt)" + (f"; close matches: {close}" if close else ""),
            )) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_params(self) -> int:
        """Total number of elements over all tensors."""
        return sum(e.numel for e in self.entries.values())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def layers(self) -> dict[str, list[str]]:
        """Layer name -> tensor names, in file order."""
        if self.groups is not None:
            return {k: list(v) for k, v in self.groups.items()}
        out: dict[str, list[str]] = {}
        for name in self.entries:
            out.setdefault(layer_of(name), []).append(name)
        return out

    def layer_weights(self, layer: str) -> list[TensorEntry]:
        """The tensors of one layer in the framework's own order (Keras: ``layer.weights``)."""
        return [self.entries[n] for n in self.layers().get(layer, [])]

    def state_dict(self) -> dict:
        """All tensors as torch tensors (reads every tensor)."""
        return {k: e.torch() for k, e in self.entries.items()}

    def __repr__(self) -> str:
        from .render import checkpoint_view
        return checkpoint_view(self).to_text()

    def _repr_html_(self) -> str:
        from .render import checkpoint_view
        return checkpoint_view(self).to_html()


def _empty(name: str, shape: tuple, dtype) -> np.ndarray:
    """An empty array of ``shape``; NumPy refuses shapes such as (0, 2**62) (their other
    dimensions overflow its byte count), which a header may declare."""
    try:
        return np.empty(shape, dtype=dtype)
    except ValueError as exc:
        from .errors import WeightvizError, message
        raise WeightvizError(message(
            f"tensor {name!r} has no elements, but NumPy cannot hold an array of its shape",
            expected="dimensions whose product with the item size fits in 63 bits, even "
                     "beside a zero",
            fix="its statistics and comparisons need no data (weightviz.stats lists it as "
                "empty); to use it, rebuild it with np.empty((0, ...)) of a smaller shape",
            got=f"shape {shape}: {exc}")) from None


def layer_of(name: str) -> str:
    """The layer a tensor name belongs to: everything before its last '.' or '/'."""
    cut = max(name.rfind("."), name.rfind("/"))
    return name[:cut] if cut > 0 else name
