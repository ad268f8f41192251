"""The chunk source of a scan: a raw array's flat chunks in memory order.

A Fortran-ordered array (a transposed view saved as is) is read in its own memory order,
so the chunks stay contiguous.  For an array backed by a memory map, :meth:`Chunks.release`
drops the pages of chunks already read (``madvise(MADV_DONTNEED)``) so that resident memory
stays bounded on a tensor larger than RAM.  A remote tensor being streamed into its mirror
(``raw.wait``, see ``TensorEntry.raw(stream=True)``) is read a chunk at a time as it arrives:
:meth:`Chunks.ready` waits for a chunk's bytes, :func:`read` asks for such a map.
"""
from __future__ import annotations

import mmap

import numpy as np

from ..errors import WeightvizError

_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)


class ReadFailed(Exception):
    """The tensor's data could not be read (its cause is the reader's exception)."""


class Chunks:
    """Flat chunks of a raw array in memory order; releases mapped pages when asked."""

    def __init__(self, raw: np.ndarray, chunk: int):
        self._wait = getattr(raw, "wait", None)
        if self._wait is not None and not (raw.flags.c_contiguous or raw.flags.f_contiguous):
            self._wait(0, raw.nbytes)             # copied below: every byte needed first
            self._wait = None
        if raw.flags.c_contiguous:
            self.flat, self.transposed = raw.reshape(-1), False
        elif raw.flags.f_contiguous:
            self.flat, self.transposed = raw.T.reshape(-1), True
        else:
            self.flat, self.transposed = np.ascontiguousarray(raw).reshape(-1), False
        self.chunk, self.n = chunk, self.flat.size
        mm = getattr(raw, "_mmap", None)
        self._mm = mm if (mm is not None and _DONTNEED is not None) else None
        if self._mm is not None:              # where the array starts inside the mapping
            base = np.frombuffer(mm, dtype=np.uint8)
            self._delta = self.flat.__array_interface__["data"][0] - base.__array_interface__["data"][0]
            del base
        self.itemsize = self.flat.dtype.itemsize

    def bounds(self):
        n, c = self.n, self.chunk
        return [(i, min(i + c, n)) for i in range(0, n, c)]

    def ready(self, start: int, stop: int) -> None:
        """Block until elements [start, stop) have arrived (a streamed remote tensor)."""
        if self._wait is not None:
            try:
                self._wait(start * self.itemsize, stop * self.itemsize)
            except (WeightvizError, MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:              # the fetch failed: as if raw() had
                raise ReadFailed(exc) from exc

    def release(self, start: int, stop: int):
        """Drop the pages of elements [start, stop) from this process (file pages only)."""
        if self._mm is None:
            return
        page = mmap.PAGESIZE
        a0 = (self._delta + start * self.itemsize) // page * page
        b0 = ((self._delta + stop * self.itemsize) // page * page if stop < self.n
              else len(self._mm))
        if b0 > a0:
            try:
                self._mm.madvise(_DONTNEED, a0, b0 - a0)
            except (OSError, ValueError):
                self._mm = None


def read(entry) -> np.ndarray:
    """``entry.raw()``; a remote tensor's as a streamed map (scanned while it arrives)."""
    loc = getattr(entry, "location", None)
    if loc is not None and getattr(loc.path, "window", None) is not None:
        return entry.raw(stream=True)
    return entry.raw()
