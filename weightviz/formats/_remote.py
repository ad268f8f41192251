"""Remote objects read by byte range: :class:`Session` (the options, counters and pinned revision
shared by every object of one ``open``), :class:`RemoteSource` (one object: its size, ranged reads
through a sparse local :class:`~._mirror.Mirror`, a seekable file object, memory-mappable windows)
and the two transports: :class:`~._http.HttpObject` for ``http(s)://`` and fsspec for every other
scheme (``s3://`` with s3fs, ``gs://`` with gcsfs, ``hf://`` with huggingface_hub, ``memory://``).
"""
from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

from ..errors import CorruptFileError, WeightvizError, message
from ._http import HttpObject, RangeIgnored, bare, redact
from ._mirror import Mirror

HEAD = 4096                  # the first read of an object: enough for every sniffer
BLOCK = 64 << 10             # a file object's read granularity (zip directories, HDF5, ONNX)
PART = 32 << 20              # one ranged GET of a tensor window (streamed 1 MiB at a time)
THREADS = 8                  # concurrent requests of one window / one index's shards
GAP = 64 << 10               # missing ranges closer than this are fetched in one request
STREAM = 64 << 20            # a window this large is streamed: scanned while it arrives
MAX_READ = 256 << 20         # the most one in-memory read may ask for
DOWNLOAD_LIMIT = 2 << 30     # a whole download (a server without Range, inline ONNX) stops here
PROGRESS = 256 << 20         # a whole download this large shows a progress bar (progress=None)
OWN_OPTIONS = ("headers", "timeout", "block_size")
EXTRAS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub",
          "az": "adlfs", "abfs": "adlfs"}


class Session:
    """What the objects of one ``open`` share: options, cache folder, counters, the pinned commit."""

    def __init__(self, storage_options: dict | None = None, cache: str | None = None,
                 download: bool = False, download_limit: int | None = None, progress: bool | None = None):
        self.storage_options = dict(storage_options or {})
        self.progress = progress
        self.cache = None if cache is None else str(cache)
        self.download = bool(download)
        self.download_limit = int(download_limit or DOWNLOAD_LIMIT)
        self.requests = 0
        self.bytes = 0
        self.commit: str | None = None
        self.sources: dict[str, RemoteSource] = {}
        self._lock = threading.Lock()
        self.block = int(self.storage_options.get("block_size") or BLOCK)

    def count(self, requests: int, nbytes: int) -> None:
        with self._lock:
            self.requests += requests
            self.bytes += nbytes

    def source(self, url: str) -> RemoteSource:
        with self._lock:
            src = self.sources.get(url)
            if src is None:
                src = self.sources[url] = RemoteSource(url, self)
            return src

    def bar(self, total: int, what: str):
        """``update(nbytes)`` of a ``tqdm.auto`` bar in bytes for a whole download (shown above
        PROGRESS bytes, or as ``progress=`` says; callable from several threads) and its
        ``close``; (None, None) when none is shown."""
        if not (self.progress if self.progress is not None else total > PROGRESS):
            return None, None
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {what}",
                   leave=False)
        lock = threading.Lock()

        def update(n: int) -> None:
            with lock:
                bar.update(n)
        return update, bar.close

    def args(self) -> tuple:
        """What a Dask worker needs to open the same objects itself."""
        return (self.storage_options, self.cache, self.download, self.download_limit)


class _Fsspec:
    """An object behind any fsspec URL; ranges by ``cat_file``, lengths checked."""

    def __init__(self, url: str, options: dict, counter):
        scheme = url.split("://", 1)[0].lower()
        try:
            from fsspec.core import url_to_fs
            self.fs, self.path = url_to_fs(url, **{k: v for k, v in options.items() if k not in OWN_OPTIONS})
        except ImportError as exc:
            pkg = EXTRAS.get(scheme, getattr(exc, "name", None) or "the package fsspec names")
            raise WeightvizError(message(
                f"reading {scheme}:// URLs needs {pkg}, which is not installed",
                fix=f"pip install {pkg}  (or pip install 'weightviz[remote]')", got=f"{type(exc).__name__}")) from None
        except ValueError as exc:
            raise WeightvizError(message(f"{scheme}:// is not a scheme fsspec knows",
                                         fix="use http(s)://, s3://, gs://, hf://, memory:// or a local path",
                                         got=str(exc)[:120])) from None
        self.display, self.counter, self.seen = redact(url), counter, {}

    def probe(self, n: int) -> tuple[bytes, int]:
        try:
            info = self.fs.info(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"not found: {self.display}") from None
        self.counter(1, 0)
        for k in ("ETag", "etag", "md5Hash", "lfs"):
            if info.get(k):
                self.seen["etag"] = str(info[k].get("sha256") if isinstance(info[k], dict) else info[k])
                break
        size = int(info.get("size") or 0)
        return self.read(0, min(n, size)), size

    def read(self, start: int, n: int) -> bytes:
        if n <= 0:
            return b""
        data = self.fs.cat_file(self.path, start=start, end=start + n)
        self.counter(1, len(data))
        if len(data) != n:
            raise CorruptFileError(message(f"a ranged read came back with other bytes than asked for: {self.display}",
                                           expected=f"{n:,} bytes from {start:,}", got=f"{len(data):,} bytes"))
        return data

    def stream(self, start: int, n: int, sink) -> None:
        for off in range(start, start + n, PART):
            sink(off, self.read(off, min(PART, start + n - off)))

    def close(self):
        pass


class RemoteSource:
    """One remote object. ``name`` (scheme://host/path) is what messages show; ``display`` adds the
    query with its values redacted; nothing here ever shows credentials."""

    def __init__(self, url: str, session: Session):
        self.url, self.session = url, session
        self.name, self.display = bare(url), redact(url)
        scheme = url.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            opts = session.storage_options
            self.transport = HttpObject(url, headers=opts.get("headers"), timeout=opts.get("timeout", 30),
                                        counter=session.count)
        else:
            self.transport = _Fsspec(url, session.storage_options, session.count)
        self.mirror: Mirror | None = None
        self._lock = threading.Lock()
        self.key = hashlib.sha256(self.name.encode()).hexdigest()[:32]

    # ---------------------------------------------------------------- size and identity
    def _start(self, head: int = HEAD) -> Mirror:
        with self._lock:
            if self.mirror is not None:
                return self.mirror
            folder = self.session.cache
            m = Mirror.cached(folder, self.key) if folder else None
            if m is None:
                try:
                    head, size = self.transport.probe(max(head, 8))
                except RangeIgnored:
                    if not self.session.download:
                        raise
                    m = self._download(folder)
                else:
                    m = Mirror(size, folder=folder, key=self.key, info=self._info())
                    m.write(0, head)
                    m.mark(0, len(head))
            self.mirror = m
            commit = m.info.get("commit")
            if commit and self.session.commit is None:
                self.session.commit = commit
            return m

    def _download(self, folder) -> Mirror:
        """The whole object, for a server that ignores Range (download=True)."""
        import tempfile
        spool = tempfile.TemporaryFile()          # noqa: SIM115 - the size is known only at the end
        bar = {}

        def sink(off, chunk):
            spool.write(chunk)
            if bar.get("update"):
                bar["update"](len(chunk))

        def on_size(n):
            bar["update"], bar["close"] = self.session.bar(n, self.name.rpartition("/")[2])
        try:
            size = self.transport.stream_all(sink, self.session.download_limit, on_size=on_size)
        finally:
            if bar.get("close"):
                bar["close"]()
        m = Mirror(size, folder=folder, key=self.key, info={**self._info(), "whole": True})
        spool.seek(0)
        for off in range(0, size, PART):
            m.write(off, spool.read(PART))
        spool.close()
        m.mark(0, size)
        return m

    def _info(self) -> dict:
        seen = getattr(self.transport, "seen", {})
        out = {"etag": seen.get("x-linked-etag") or seen.get("etag"), "commit": seen.get("x-repo-commit"),
               "linked_size": seen.get("x-linked-size")}
        return {k: v for k, v in out.items() if v}

    @property
    def size(self) -> int:
        return self._start().size

    @property
    def info(self) -> dict:
        return dict(self._start().info)

    # ---------------------------------------------------------------- reads
    def _bounds(self, offset: int, n: int) -> None:
        size = self.size
        if offset < 0 or n < 0 or offset + n > size:
            raise CorruptFileError(message(
                f"a read past the end of the object: {self.display}",
                expected=f"bytes within its {size:,}", got=f"{n:,} bytes at {offset:,}"))

    def fetch(self, offset: int, n: int, *, align: int = 1, threads: int = 1, progress=None,
              background: bool = False) -> None:
        """Make sure [offset, offset + n) is in the mirror: missing ranges (widened to ``align``,
        joined across gaps under GAP) fetched by ranged reads, ``threads`` at a time.
        ``background``: return at once, the requests running on their own threads, marking their
        bytes as they arrive (:meth:`Mirror.wait`; a failure is raised there)."""
        m = self._start()
        self._bounds(offset, n)
        a = offset // align * align
        b = min(m.size, -(-(offset + n) // align) * align)
        runs: list[list[int]] = []
        for s, e in m.missing(a, b):
            if runs and s - runs[-1][1] < GAP:
                runs[-1][1] = e
            else:
                runs.append([s, e])
        pieces = [(s, min(e, s + PART) - s) for s0, e in runs for s in range(s0, e, PART)]
        if not pieces:
            return
        m.error = None

        def one(piece):
            s, k = piece

            def sink(off, chunk):
                m.write(off, chunk)
                if background:
                    m.mark(off, off + len(chunk), save=False)
                if progress is not None:
                    progress(len(chunk))
            try:
                self.transport.stream(s, k, sink)
            except BaseException as exc:
                if background:
                    m.fail(exc)
                raise
            m.mark(s, s + k)
        if background:
            pool = ThreadPoolExecutor(min(threads, len(pieces)), thread_name_prefix="weightviz-fetch")
            for p in pieces:
                pool.submit(one, p)
            pool.shutdown(wait=False)
        elif threads <= 1 or len(pieces) == 1:
            for p in pieces:
                one(p)
        else:
            with ThreadPoolExecutor(min(threads, len(pieces))) as pool:
                list(pool.map(one, pieces))

    def read(self, offset: int, n: int, *, align: int = 1) -> bytes:
        """Exactly ``n`` bytes at ``offset`` (checked against the size first)."""
        if n > MAX_READ:
            raise CorruptFileError(message(f"a header read of {n:,} bytes is over the {MAX_READ >> 20} MiB "
                                           f"limit: {self.display}", got=f"{n:,} bytes at {offset:,}"))
        self.fetch(offset, n, align=align)
        return self.mirror.pread(offset, n)

    def window(self, offset: int, n: int, progress=None, stream: bool = False):
        """(file object, offset) holding [offset, offset + n), fetched if needed: for np.memmap.
        ``stream``: (file object, offset, wait), a range of STREAM bytes or more being fetched in
        the background; ``wait(a, b)`` blocks until its bytes [a, b) (from ``offset``) are in
        (None when all were there on return): a scan reads a chunk as soon as it has arrived."""
        if not (stream and n >= STREAM):
            self.fetch(offset, n, threads=THREADS, progress=progress)
            return (self.mirror.file, offset, None) if stream else (self.mirror.file, offset)
        self.fetch(offset, n, threads=THREADS, progress=progress, background=True)
        m = self.mirror

        def wait(a: int, b: int) -> None:
            m.wait(offset + a, offset + min(b, n))
        return m.file, offset, wait

    def open(self) -> RemoteFile:
        return RemoteFile(self)

    def close(self):
        self.transport.close()


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file object over a remote object: reads fetch whole blocks of
    ``block_size`` (64 KiB) into the mirror, so zipfile, h5py and the protobuf / GGUF walkers
    work on it unchanged and a second read of the same bytes costs nothing."""

    def __init__(self, source: RemoteSource):
        super().__init__()
        self.source, self.pos, self.name = source, 0, source.name

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.source.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def readinto(self, b) -> int:
        n = min(len(b), max(self.source.size - self.pos, 0))
        if n <= 0:
            return 0
        data = self.source.read(self.pos, n, align=self.source.session.block)
        b[:n] = data
        self.pos += n
        return n

    def read(self, n=-1):
        if n is None or n < 0:
            n = max(self.source.size - self.pos, 0)
        buf = bytearray(min(n, max(self.source.size - self.pos, 0)))
        got = self.readinto(buf)
        return bytes(buf[:got])

    def fileno(self):
        raise io.UnsupportedOperation("a remote object has no file descriptor")
