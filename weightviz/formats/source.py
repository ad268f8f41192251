"""The byte-source layer under the readers: a local path (memory-mapped, read with ``open``) or a
remote object (ranged reads), behind the same few functions.

A remote object travels through the readers as a :class:`RemotePath`: a ``str`` whose value is
``scheme://host/path`` (no credentials, no query: safe to show, and ``os.path.basename`` gives
the file name the readers' messages and extension checks use) and which carries its
:class:`~._remote.RemoteSource`. Readers call :func:`size`, :func:`open_file`, :func:`read_at`
and :func:`sibling` instead of ``os.path.getsize`` / ``open`` / ``os.path.join``; a tensor's
:class:`~weightviz.checkpoint.DataLocation` keeps the RemotePath, whose :meth:`RemotePath.window`
fetches the tensor's byte range into the local mirror when ``raw()`` maps it. A RemotePath
pickles as its URL and options, so a Dask worker opens the object itself.
"""
from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import CorruptFileError, message
from ._remote import THREADS, RemoteSource, Session

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RESOLVE = re.compile(r"(/resolve/)([^/]+)(/)")
SMALL = 4 << 20              # a remote object this small is fetched whole when a sniffer probes it


class RemotePath(str):
    """A remote object's name (``scheme://host/path``) with its source attached."""

    source: RemoteSource

    def __new__(cls, source: RemoteSource):
        self = super().__new__(cls, source.name)
        self.source = source
        return self

    def window(self, offset: int, n: int, stream: bool = False):
        """(file object, offset) of a local mirror holding these bytes (fetched now if needed);
        ``stream``: (file object, offset, wait), see :meth:`~._remote.RemoteSource.window`."""
        return self.source.window(offset, n, stream=stream)

    def __reduce__(self):
        return _reopen, (self.source.url, *self.source.session.args())

    def __repr__(self):
        return f"RemotePath({self.source.display!r})"


def _reopen(url, storage_options, cache, download, download_limit):
    return RemotePath(Session(storage_options, cache, download, download_limit).source(url))


def is_url(path) -> bool:
    return isinstance(path, str) and not isinstance(path, RemotePath) and bool(_URL.match(path))


def is_remote(path) -> bool:
    return isinstance(path, RemotePath)


def remote(url: str, *, storage_options: dict | None = None, cache=None, download: bool = False,
           download_limit: int | None = None, progress: bool | None = None) -> RemotePath | str:
    """The RemotePath of ``url`` (nothing is fetched yet); a ``file://`` URL becomes its local path.
    ``progress``: a bar for whole downloads (None: above 256 MiB)."""
    if url.lower().startswith("file://"):
        return unquote(urlsplit(url).path)
    session = Session(storage_options, None if cache is None else os.fspath(cache), download, download_limit,
                      progress)
    return RemotePath(session.source(url))


# ---------------------------------------------------------------- what the readers call
def size(path) -> int:
    return path.source.size if isinstance(path, RemotePath) else os.path.getsize(path)


def open_file(path):
    """A binary, seekable, read-only file object."""
    return path.source.open() if isinstance(path, RemotePath) else open(path, "rb")  # noqa: SIM115


def read_at(path, offset: int, n: int) -> bytes:
    """Up to ``n`` bytes at ``offset`` (fewer only at the end of the object)."""
    if isinstance(path, RemotePath):
        n = max(min(n, path.source.size - offset), 0)
        return path.source.read(offset, n)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def head(path, n: int = 4096) -> bytes:
    return read_at(path, 0, n)


def identity(path) -> tuple:
    """What changes when the object does: (name, size, mtime or ETag)."""
    if isinstance(path, RemotePath):
        return (str(path), path.source.size, path.source.info.get("etag"))
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def exists(path) -> bool:
    if isinstance(path, RemotePath):
        try:
            path.source.size
        except FileNotFoundError:
            return False
        return True
    return os.path.exists(path)


def sibling(path: RemotePath, name: str, *, what: str = "file") -> RemotePath:
    """The object ``name`` beside ``path`` (a shard of an index): a plain file name only, in the
    same folder on the same host, on the revision the first object was served from."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or ":" in name
            or name.startswith("~") or _URL.match(name) or any(ord(c) < 32 for c in name)):
        raise CorruptFileError(message(
            f"{os.path.basename(path)} names a {what} outside its own folder",
            expected="plain file names beside it (no '..', no absolute paths, no URLs or other hosts)",
            fix="fix the index, or open the file by its own URL", got=repr(name)[:200]))
    src = path.source
    parts = urlsplit(src.url)
    folder = parts.path.rpartition("/")[0]
    commit = src.session.commit
    if commit and re.fullmatch(r"[0-9a-f]{40}", commit):
        folder = _RESOLVE.sub(lambda m: m.group(1) + commit + m.group(3), folder + "/", count=1)[:-1]
    url = urlunsplit((parts.scheme, parts.netloc, folder + "/" + quote(name), parts.query, ""))
    return RemotePath(src.session.source(url))


def prefetch_offsets(path, offsets, n: int) -> None:
    """For a remote object, ``n`` bytes at each offset fetched at once (a small object whole,
    else concurrently), so that a sniffer's scattered probes cost one round trip."""
    if not isinstance(path, RemotePath) or not offsets:
        return
    src = path.source
    if src.size <= SMALL:
        src.fetch(0, src.size)
        return
    parallel(lambda off: src.fetch(off, min(n, src.size - off)), list(offsets), remote=True)


def memmap(path, dtype, offset: int, shape, order: str = "C"):
    """A read-only memory map of ``shape`` elements at ``offset`` (a remote range fetched first)."""
    import numpy as np
    target = path
    if isinstance(path, RemotePath):
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        target, offset = path.window(offset, n)
    return np.memmap(target, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def local_copy(path) -> str:
    """A local file holding the whole object (a remote one fetched whole, up to the download
    limit): for readers that hand the file to another process (HDF5's sandboxed worker)."""
    if not isinstance(path, RemotePath):
        return path
    src = path.source
    if src.size > src.session.download_limit:
        raise CorruptFileError(message(
            f"{os.path.basename(path)} must be read whole, and its {src.size:,} bytes are over the limit",
            expected=f"at most {src.session.download_limit:,} bytes (download_limit=)",
            fix="pass download_limit= (bytes) to allow it, or download the file and open it locally",
            got=f"{src.size:,} bytes"))
    left = sum(b - a for a, b in src._start().missing(0, src.size))
    update, close = src.session.bar(left, os.path.basename(path)) if left else (None, None)
    try:
        src.fetch(0, src.size, threads=THREADS, progress=update)
    finally:
        if close is not None:
            close()
    return src.mirror.path


def private_folder(path) -> str:
    """A new private local folder, removed when the remote session of ``path`` goes."""
    import shutil
    import tempfile
    import weakref
    folder = tempfile.mkdtemp(prefix="weightviz-remote-")
    weakref.finalize(path.source.session, shutil.rmtree, folder, True)
    return folder


def whole_into(folder: str, named) -> None:
    """Remote objects fetched whole (as :func:`local_copy`, all of them within the download limit)
    into ``folder`` as real files (no links) under the given names; ``named``: [(file name,
    RemotePath)]. A missing object is left out, for the reader to name."""
    import shutil

    def size_of(item):
        try:
            return item[1].source.size
        except FileNotFoundError:
            return None
    sizes = parallel(size_of, list(named), remote=True)
    present = [item for item, n in zip(named, sizes) if n is not None]
    total, limit = sum(n for n in sizes if n), (present[0][1].source.session.download_limit if present else 0)
    if total > limit:
        raise CorruptFileError(message(
            f"{os.path.basename(present[0][1])} and the files beside it must be read whole, and their "
            f"{total:,} bytes are over the limit", expected=f"at most {limit:,} bytes (download_limit=)",
            fix="pass download_limit= (bytes) to allow it, or download the files and open them locally",
            got=f"{total:,} bytes in {len(present)} files"))

    def place(item):
        name, path = item
        src, dst = local_copy(path), os.path.join(folder, name)
        if os.path.lexists(dst):
            os.remove(dst)
        if path.source.session.cache is None:        # a private mirror, never written again: link it
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copyfile(src, dst)
    parallel(place, present, remote=True)


def held(path) -> int:
    """Bytes of a remote object read so far (0 for a local path)."""
    return path.source.mirror.held() if isinstance(path, RemotePath) and path.source.mirror else 0


def parallel(fn, paths, *, head: int | None = None, remote: bool = False) -> list:
    """``[fn(p) for p in paths]``, concurrently for remote objects (the shards of an index),
    each first read being ``head`` bytes when given (a header size learnt from a first shard)."""
    if not paths or not (remote or isinstance(paths[0], RemotePath)):
        return [fn(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    def one(p):
        if head is not None and isinstance(p, RemotePath):
            try:
                p.source._start(head)
            except FileNotFoundError:
                pass                              # the reader says which shard is missing
        return fn(p)
    with ThreadPoolExecutor(min(THREADS * 4, len(paths))) as pool:
        return list(pool.map(one, paths))


def summary(path) -> dict | None:
    """What the open cost, for the checkpoint's metadata: None for a local path."""
    if not isinstance(path, RemotePath):
        return None
    s = path.source.session
    objects = [x for x in s.sources.values() if x.mirror is not None]
    info = path.source.info
    out = {"url": path.source.display, "objects": len(objects), "size": sum(x.mirror.size for x in objects),
           "requests": s.requests, "bytes": s.bytes}
    out.update({k: v for k, v in info.items() if k in ("etag", "commit")})
    return out
