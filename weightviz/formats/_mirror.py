"""A sparse local mirror of a remote object: a file of the object's size in which only the byte
ranges read so far are filled in, with the list of those ranges.

Every byte fetched from a remote object lands here, at its own offset, so a tensor read remotely
is memory-mapped exactly like a local one (same offset, same dtype), the statistics scan streams
it through the page cache in bounded memory, and nothing is fetched twice. Without a cache folder
the mirror is a temporary file in a private temporary folder, removed with the mirror (only the
ranges read take disk space, the file being sparse); with ``cache=`` it is ``<key>.data`` beside
``<key>.json`` (the ranges held, the object's size and ETag), so a second look costs no request.

A fetch running in the background (a streamed tensor window) marks its bytes as they arrive;
:meth:`Mirror.wait` blocks a reader until a range is held, or raises the fetch's error.
"""
from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import threading
import weakref


class Mirror:
    def __init__(self, size: int, *, folder: str | None = None, key: str | None = None, info: dict | None = None):
        self.size = size
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.error: BaseException | None = None  # what stopped a background fetch
        self.have: list[list[int]] = []          # sorted, disjoint [start, stop) ranges
        self.meta_path = None
        self.info = dict(info or {})
        if folder:
            os.makedirs(folder, exist_ok=True)
            data = os.path.join(folder, key + ".data")
            self.meta_path = os.path.join(folder, key + ".json")
            self.file = open(data, "r+b" if os.path.exists(data) else "w+b")   # noqa: SIM115
        else:
            home = tempfile.mkdtemp(prefix="weightviz-remote-")
            data = os.path.join(home, (key or "object") + ".data")
            self.file = open(data, "w+b")                                       # noqa: SIM115
            weakref.finalize(self, shutil.rmtree, home, True)
        self.path = data
        if os.fstat(self.file.fileno()).st_size != size:
            self.file.truncate(size)
        self.fd = self.file.fileno()

    @classmethod
    def cached(cls, folder: str, key: str) -> Mirror | None:
        """The mirror a cache folder holds for ``key``, or None."""
        meta = os.path.join(folder, key + ".json")
        try:
            with open(meta, encoding="utf-8") as f:
                state = json.load(f)
            size = int(state["size"])
            have = [[int(a), int(b)] for a, b in state["have"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not os.path.exists(os.path.join(folder, key + ".data")):
            return None
        m = cls(size, folder=folder, key=key, info=state.get("info"))
        m.have = [r for r in have if 0 <= r[0] < r[1] <= size]
        return m

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The parts of [start, stop) not held yet."""
        with self.lock:
            return self._missing(start, stop)

    def _missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        out, pos = [], start
        i = max(bisect.bisect_right(self.have, [start, float("inf")]) - 1, 0)
        for a, b in self.have[i:]:
            if a >= stop:
                break
            if b <= pos:
                continue
            if a > pos:
                out.append((pos, a))
            pos = max(pos, b)
            if pos >= stop:
                break
        if pos < stop:
            out.append((pos, stop))
        return out

    def wait(self, start: int, stop: int) -> None:
        """Block until [start, stop) is held; raise what stopped the fetch if it failed."""
        with self.arrived:
            while self._missing(start, stop):
                if self.error is not None:
                    raise self.error
                self.arrived.wait(1.0)

    def fail(self, exc: BaseException) -> None:
        with self.arrived:
            self.error = exc
            self.arrived.notify_all()

    def write(self, offset: int, data) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def mark(self, start: int, stop: int, save: bool = True) -> None:
        """Record [start, stop) as held (after its bytes were written); ``save``: in the cache
        folder's list too (once per request, not per piece)."""
        if stop <= start:
            return
        with self.arrived:
            merged, placed = [], False
            for a, b in self.have:
                if b < start or a > stop:
                    if a > stop and not placed:
                        merged.append([start, stop])
                        placed = True
                    merged.append([a, b])
                else:
                    start, stop = min(a, start), max(b, stop)
            if not placed:
                merged.append([start, stop])
            self.have = sorted(merged)
            self.arrived.notify_all()
            if self.meta_path and save:
                self._save()

    def _save(self) -> None:
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"size": self.size, "have": self.have, "info": self.info}, f)
        os.replace(tmp, self.meta_path)

    def held(self) -> int:
        with self.lock:
            return sum(b - a for a, b in self.have)

    def pread(self, offset: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = os.pread(self.fd, n - len(out), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)
