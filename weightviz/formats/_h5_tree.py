"""One open Keras HDF5 file's objects by path, for one reader call: each link, attribute type
and dataset header checked once (by the checks of :mod:`keras_safe_h5`) and kept; ``prewalk``
does it for a whole tree ahead, while the string worker reads the layers' names."""
from __future__ import annotations

from .keras_safe_h5 import (_open_hard, _stored_type, _wrap, as_names, corrupt, dataset_head, h5,
                            names_attr)


class Tree:
    """One open file's objects by path (``"dense/dense/kernel:0"``) for one reader call: each link,
    attribute type and dataset header is checked once, by keras_safe_h5's checks, and kept if it passes
    (a failure is not: the reader works it out again and reports it). ``prewalk``: all ahead."""

    def __init__(self, f, path, file_size=None):
        self.path, self.file_size = path, file_size
        self.ids, self.objs, self.kinds, self.heads, self.memo = {"": f.id}, {"": f}, {}, {}, {}
        self.skey = None                          # the file's key for the string worker's answers

    @staticmethod
    def key(base: str, relpath: str) -> str:
        """The path ``get(base, relpath)`` gives, worked out without opening anything."""
        return "/".join(c for c in f"{base}/{relpath}".split("/") if c)

    def get(self, base: str, relpath: str) -> str:
        """The path of ``relpath`` under the object at ``base``, checked as ``safe_get`` does."""
        ids, oid, key, comps = self.ids, self._oid(base), base, [c for c in relpath.split("/") if c]
        for i, comp in enumerate(comps):
            key = f"{key}/{comp}" if key else comp
            if key not in ids and i == len(comps) - 1 and key in self.heads:
                return key                                  # a dataset checked in full (and let go)
            oid = ids[key] if key in ids else ids.setdefault(key, _open_hard(oid, comp, relpath, self.path))
        if key != base and key not in self.kinds:
            kind = h5.h5i.get_type(oid)
            if kind not in (h5.h5i.GROUP, h5.h5i.DATASET):
                raise corrupt(f"the HDF5 entry {relpath!r} is neither a group nor a dataset", self.path)
            self.kinds[key] = kind
        return key

    def obj(self, key: str):                      # the h5py object at a path get() returned
        o = self.objs.get(key)
        return o if o is not None else self.objs.setdefault(key, _wrap(self._oid(key), key, self.path))

    def _oid(self, key: str):     # the low-level id at ``key``, opened again if it was let go
        if key not in self.ids:
            self.ids[key] = _open_hard(self._oid(key.rpartition("/")[0]), key.rpartition("/")[2], key, self.path)
        return self.ids[key]

    def _kept(self, what, obj, name, work):
        m = self.memo.get((what, id(obj), name))
        if m is None or m[0] is not obj:          # obj is kept with it: its id() is not reused
            m = self.memo[(what, id(obj), name)] = (obj, work())
        return m[1]

    def names(self, key: str, name: str) -> list[str]:
        """``names_attr`` of the group at ``key``: read ahead by the string worker (see
        ``_h5_sandbox.prefetch``, by path) when it was, without opening the group."""
        from . import _h5_sandbox
        if self.skey is None:
            self.skey = _h5_sandbox.file_key(self.objs[""], self.path)
        v = _h5_sandbox.ahead(self.skey, "/" + key, name)     # an object's HDF5 name: "/" + key
        if v is _h5_sandbox._MEMO:
            return names_attr(self.obj(key), name, self.path, self)
        return as_names(v, name, self.path)

    def has(self, obj, name: str) -> bool:        # name in obj.attrs (known once its type is)
        m = self.memo.get(("type", id(obj), name))
        return m[1] is not None if m and m[0] is obj else self._kept("has", obj, name, lambda: name in obj.attrs)

    def stored(self, obj, name: str):
        """``_stored_type(obj, name)``, checked once."""
        return self._kept("type", obj, name, lambda: _stored_type(obj, name, self.path))

    def head(self, key: str, where: str) -> tuple:   # dataset_head (where: its name in messages)
        if key not in self.heads:
            d = self._oid(key) if self.kinds.get(key) == h5.h5i.DATASET else self.obj(key)   # a group fails
            self.heads[key] = dataset_head(d, where, path=self.path, file_size=self.file_size, ds=self._oid(key))
        return self.heads[key]

    def prewalk(self, base: str, limit: int = 200_000, depth: int = 8) -> None:
        """Do ahead, quietly (nothing raised, only successes kept), what a reader of the groups under
        ``base`` asks for: each object below (hard links), each dataset's header; no attribute is
        read. Runs while the string worker reads the groups' names."""
        try:
            todo = [(self.get("", base), 0)]
        except Exception:  # noqa: BLE001 - the reader reports it
            return
        h5i, h5o, hard, ids, kinds = h5.h5i, h5.h5o, h5.h5l.TYPE_HARD, self.ids, self.kinds
        group, dataset = h5i.GROUP, h5i.DATASET
        while todo and limit > 0:
            key, level = todo.pop()
            links: list = []
            try:
                ids[key].links.iterate(lambda n, i: links.append((n, i.type)), info=True)
            except Exception:  # noqa: BLE001
                continue
            limit -= len(links)
            for raw, ltype in links:
                try:
                    k = f"{key}/{raw.decode('utf-8')}" if key else raw.decode("utf-8")
                    oid = ids.get(k)
                    if oid is None and ltype == hard:          # what _open_hard keeps, as it would
                        oid = h5o.open(ids[key], raw)
                        kind = h5i.get_type(oid)
                        if kind not in (group, dataset):     # (a named type: the reader's error)
                            continue
                        ids[k], kinds[k] = oid, kind
                    kind = kinds.get(k)
                    if kind == group:
                        if level < depth:
                            todo.append((k, level + 1))
                    elif kind == dataset and k not in self.heads:     # then let go: ~5 kB each
                        self.heads[k] = dataset_head(oid, k, path=self.path, file_size=self.file_size)
                        del ids[k]
                except Exception:  # noqa: BLE001 - worked out again, and reported, when asked
                    continue
