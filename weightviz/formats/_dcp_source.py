"""Reading a DCP tensor: its chunks' ``torch.save`` spans, checked and placed at their offsets.

:class:`DcpSource` is what every loader of a DCP checkpoint holds: the folder and the checked
metadata (picklable, for Dask), and a memo of the archive layouts and ``data.pkl`` recordings
already seen (the chunks of a checkpoint repeat a handful: a chunk whose bytes match a known
layout, CRCs aside, is read in one ``preadv`` straight into its place in the tensor).
One tensor is assembled at a time. (Reading the next tensor ahead on a thread was tried:
with the GIL held by the parsing, it slowed a statistics scan down by about 10 %.)
"""
from __future__ import annotations

import os
from functools import partial

from .. import dtypes
from ..errors import CorruptFileError
from . import _tiling
from ._tiling import assemble
from ._torch_span import MEMO_MAX, array, bad, read_into, read_span
from ._unpickle import TensorRecord


class DcpSource:
    """The folder and checked metadata of a DCP checkpoint; ``load(key)`` assembles one tensor."""

    def __init__(self, folder, md):
        self.folder, self.md = folder, md
        self._memo: dict = {}             # layouts and data.pkl recordings seen (see _torch_span)

    def __getstate__(self):
        return {"folder": self.folder, "md": self.md}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._memo = {}

    def load(self, key: str):
        """The tensor ``key`` as raw bits (bf16 as uint16 ...), assembled from its chunks."""
        item = self.md.tensors[key]
        fds: dict[str, int] = {}
        try:
            parts = []
            for c in item.chunks:
                span = self.md.spans.get((key, c.offsets))
                if span is None:
                    continue
                path = os.path.join(self.folder, span.file)
                if span.file not in fds:
                    fds[span.file] = os.open(path, os.O_RDONLY)
                parts.append((c, partial(_fill, fds[span.file], path, span, item, c, self._memo)))
            return assemble(item.shape, dtypes.numpy_view_dtype(item.dtype), parts)
        except FileNotFoundError as exc:
            raise bad(exc.filename or self.folder, "the file is gone since the checkpoint was "
                      "opened", tensor=key) from None
        except ValueError as exc:           # np.memmap past a file truncated since
            if isinstance(exc, CorruptFileError):
                raise
            raise bad(self.folder, "a chunk could not be read", tensor=key,
                      got=str(exc)[:200]) from None
        finally:
            for fd in fds.values():
                os.close(fd)


def _fill(fd, path, span, item, chunk, memo, dest):
    """One chunk's values, checked against .metadata, into ``dest`` (or returned)."""
    if dest is not None:
        fast = read_into(fd, span.offset, span.length, dest, memo)
        if (fast is not None and memo.get(("plain", fast[1])) is True
                and fast[0].dtype == item.dtype and tuple(fast[0].size) == chunk.sizes):
            return dest                        # a layout seen before: one preadv, checked
    obj, up, locs = read_span(fd, path, span.offset, span.length, tensor=item.name, memo=memo)
    plain = memo.get(("plain", up))                  # keyed by the recording itself
    if plain is None:
        from .torch_file import _torch_global_ok
        plain = (isinstance(obj, TensorRecord) and not up.classes
                 and all(map(_torch_global_ok, up.globals)))
        if len(memo) < 2 * MEMO_MAX:
            memo[("plain", up)] = plain
    if not plain:
        raise bad(path, f"chunk {_tiling.box(chunk)} does not hold a plain tensor",
                  got=f"{type(obj).__name__}; globals {up.globals[:6]}", tensor=item.name)
    if tuple(obj.size) != tuple(chunk.sizes) or obj.dtype != item.dtype:
        raise bad(path, f"chunk {_tiling.box(chunk)} holds a {obj.dtype} tensor of shape "
                  f"{tuple(obj.size)}, but .metadata says {item.dtype} {tuple(chunk.sizes)}",
                  tensor=item.name)
    return array(fd, path, obj, locs, tensor=item.name, dest=dest)
