"""Ranged reads over HTTP(S) with the standard library: one keep-alive connection per thread and
host, redirects followed (the Hugging Face Hub answers ``/resolve/`` with a redirect to its CDN),
every reply checked before its body is read.

A ranged GET must come back ``206 Partial Content`` with a ``Content-Range`` naming exactly the
bytes asked for; a server that ignores ``Range`` (``200`` and the whole body) is refused at the
first read, the connection closed without reading the body (:class:`RangeIgnored`), unless the
caller opted in to a whole download (:meth:`HttpObject.stream_all`). Every socket operation has a
timeout, no reply body is read beyond what was asked for, and credentials never leave this module:
``user:pass@`` becomes a Basic ``Authorization`` header, headers are not carried to another host on
a redirect, and every message names the URL through :func:`redact`.
"""
from __future__ import annotations

import base64
import http.client
import re
import threading
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

from ..errors import CorruptFileError, WeightvizError, message

MAX_REDIRECTS = 5
PIECE = 1 << 20                         # bytes read from a socket at a time
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_KEEP = ("etag", "x-linked-etag", "x-linked-size", "x-repo-commit", "content-range", "accept-ranges",
         "last-modified")


def redact(url: str) -> str:
    """The URL with ``user:pass@`` and every query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(q.partition("=")[0] + ("=***" if "=" in q else "") for q in parts.query.split("&")
                     if q) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def bare(url: str) -> str:
    """scheme://host/path: the URL without credentials, query or fragment (a name to show)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


class RangeIgnored(WeightvizError):
    """The server answered a ranged request with the whole object."""


def _fail(what: str, display: str, *, fix: str, got: str) -> WeightvizError:
    return WeightvizError(message(f"{what}: {display}", fix=fix, got=got))


class HttpObject:
    """One object behind an ``http(s)://`` URL, read by byte range."""

    def __init__(self, url: str, *, headers: dict | None = None, timeout: float = 30.0, counter=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WeightvizError(message("not an http(s) URL", got=redact(url)))
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        if parts.username is not None:
            cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers.setdefault("Authorization", "Basic " + base64.b64encode(cred).decode())
        self.url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", parts.query, ""))
        self.display = redact(url)
        self.timeout = float(timeout)
        self.location = self.url          # where the last redirect chain ended (the CDN)
        self.seen: dict = {}              # headers kept from the first reply chain (ETag, commit, ...)
        self.counter = counter            # callable(requests, bytes)
        self._local = threading.local()

    # ---------------------------------------------------------------- connections
    def _conn(self, scheme: str, netloc: str, fresh: bool = False):
        pool = self._local.__dict__.setdefault("pool", {})
        key = (scheme, netloc)
        if fresh and key in pool:
            pool.pop(key).close()
        if key not in pool:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            pool[key] = cls(netloc, timeout=self.timeout)
        return pool[key]

    def close(self):
        for c in self._local.__dict__.get("pool", {}).values():
            c.close()
        self._local.__dict__["pool"] = {}

    def _send(self, url: str, headers: dict):
        parts = urlsplit(url)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        for attempt in (0, 1):
            conn = self._conn(parts.scheme, parts.netloc, fresh=attempt > 0)
            try:
                conn.request("GET", quote(target, safe="/%?&=:+,;@!$'()*~-._"), headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                conn.close()
                if attempt:
                    raise
            except TimeoutError:
                conn.close()
                raise _fail("no reply within the timeout", self.display, fix="retry, or raise "
                            "storage_options={'timeout': seconds}", got=f"{self.timeout:g} s") from None
            except OSError as exc:
                conn.close()
                raise _fail("cannot reach the server", self.display, fix="check the address and the network",
                            got=type(exc).__name__ + ": " + str(exc)[:120].replace(self.url, self.display)) from None
        raise AssertionError("unreachable")

    def _request(self, start: int, end: int | None):
        """(connection, response) for ``bytes=start-end`` (inclusive; None: to the end), after
        redirects; the response's body is not read yet."""
        for use_location in ((True, False) if self.location != self.url else (False,)):
            url = self.location if use_location else self.url
            origin = urlsplit(self.url).netloc
            for _ in range(MAX_REDIRECTS + 1):
                same = urlsplit(url).netloc == origin
                hdrs = dict(self.headers) if same else {k: v for k, v in self.headers.items()
                                                        if k.lower() not in ("authorization", "cookie")}
                hdrs["Range"] = f"bytes={start}-" + ("" if end is None else str(end))
                hdrs.setdefault("Accept-Encoding", "identity")
                hdrs.setdefault("User-Agent", "weightviz")
                conn, resp = self._send(url, hdrs)
                if self.counter:
                    self.counter(1, 0)
                for k in _KEEP:
                    if resp.getheader(k) is not None and k not in ("content-range",):
                        self.seen.setdefault(k, resp.getheader(k))
                if resp.status in (301, 302, 303, 307, 308) and resp.getheader("location"):
                    self._discard(conn, resp)
                    url = urljoin(url, resp.getheader("location"))
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise _fail("a redirect leads away from http(s)", self.display,
                                    fix="open the final address yourself", got=redact(url))
                    continue
                if resp.status in (403, 404, 410) and use_location:
                    self._discard(conn, resp)
                    break                          # an expired CDN link: start again from the URL
                if resp.status < 300:
                    self.location = url
                return conn, resp
            else:
                raise _fail("too many redirects", self.display, fix="open the final address",
                            got=f"more than {MAX_REDIRECTS}")
        return conn, resp

    @staticmethod
    def _discard(conn, resp):
        if int(resp.getheader("content-length") or 0) <= 65536:
            resp.read()
        else:
            conn.close()

    def _check(self, conn, resp, start: int, end: int | None):
        """(first, last, total) of a 206 reply; raises for anything else."""
        if resp.status == 206:
            m = _RANGE.fullmatch((resp.getheader("content-range") or "").strip())
            if not m:
                conn.close()
                raise CorruptFileError(message(f"the server's reply has no usable Content-Range: {self.display}",
                                               got=repr(resp.getheader("content-range"))[:80]))
            first, last = int(m.group(1)), int(m.group(2))
            total = int(m.group(3)) if m.group(3) != "*" else None
            if first != start or (end is not None and last > end) or last < first:
                conn.close()
                raise CorruptFileError(message(f"the server sent other bytes than asked for: {self.display}",
                                               expected=f"bytes {start}-{end}", got=f"bytes {first}-{last}"))
            return first, last, total
        if resp.status == 200:
            raise RangeIgnored(message(
                f"the server ignores byte ranges: {self.display}",
                expected="'206 Partial Content' to a ranged GET, so that only headers are read",
                fix="serve the file from a server that supports Range requests (nginx, S3, the Hub do), "
                    "or pass download=True to fetch the whole file on purpose",
                got=f"200 OK with the whole body ({resp.getheader('content-length') or 'unknown'} bytes); "
                    "nothing of it was read"))
        if resp.status == 416:
            return None
        body = resp.read(512) if int(resp.getheader("content-length") or 0) <= 512 else b""
        conn.close()
        if resp.status == 404:
            raise FileNotFoundError(f"not found (HTTP 404): {self.display}")
        fix = ("pass credentials: storage_options={'headers': {'Authorization': 'Bearer ...'}}"
               if resp.status in (401, 403) else "retry later, or check the address")
        raise _fail(f"the server answered HTTP {resp.status} {resp.reason}", self.display, fix=fix,
                    got=body[:120].decode("utf-8", "replace").strip() or f"HTTP {resp.status}")

    # ---------------------------------------------------------------- reads
    def probe(self, n: int) -> tuple[bytes, int]:
        """The first ``n`` bytes (fewer for a smaller object) and the object's size, in one request."""
        conn, resp = self._request(0, n - 1)
        try:
            got = self._check(conn, resp, 0, n - 1)
        except RangeIgnored:
            conn.close()
            raise
        if got is None:                                      # 416: an empty object
            resp.read()
            total = (_RANGE.fullmatch("bytes 0-0/" + (resp.getheader("content-range") or "/0").rpartition("/")[2]))
            return b"", int(total.group(3)) if total and total.group(3) != "*" else 0
        first, last, total = got
        data = self._body(conn, resp, last - first + 1)
        if total is None:
            raise CorruptFileError(message(f"the server does not say how large the object is: {self.display}",
                                           got=f"Content-Range {resp.getheader('content-range')!r}"))
        return data, total

    def read(self, start: int, n: int) -> bytes:
        """Exactly ``n`` bytes from ``start`` (the caller checked them against the size)."""
        if n <= 0:
            return b""
        out = bytearray()
        self.stream(start, n, lambda off, chunk: out.extend(chunk))
        return bytes(out)

    def stream(self, start: int, n: int, sink) -> None:
        """``sink(offset, bytes)`` for the ``n`` bytes from ``start``, a piece at a time."""
        conn, resp = self._request(start, start + n - 1)
        got = self._check(conn, resp, start, start + n - 1)
        if got is None or got[1] - got[0] + 1 != n:
            conn.close()
            raise CorruptFileError(message(f"the object is shorter than its header says: {self.display}",
                                           expected=f"bytes {start:,}-{start + n - 1:,}",
                                           got="HTTP 416" if got is None else f"bytes {got[0]:,}-{got[1]:,}"))
        self._body(conn, resp, n, sink, start)

    def stream_all(self, sink, limit: int, on_size=None) -> int:
        """The whole object, for a server that ignores ``Range`` (an explicit opt-in): its size
        (``on_size(size)`` is called once it is known, before the body is read)."""
        conn, resp = self._request(0, None)
        if resp.status not in (200, 206):
            self._check(conn, resp, 0, None)
        size = int(resp.getheader("content-length") or -1)
        if size < 0 or size > limit:
            conn.close()
            raise _fail("too large to download whole", self.display,
                        fix="raise download_limit= (bytes) or serve the file with Range support",
                        got=f"{size:,} bytes (limit {limit:,})" if size >= 0 else "no Content-Length")
        if on_size is not None:
            on_size(size)
        self._body(conn, resp, size, sink, 0)
        return size

    def _body(self, conn, resp, n: int, sink=None, offset: int = 0):
        length = resp.getheader("content-length")
        if length is not None and int(length) != n:
            conn.close()
            raise CorruptFileError(message(f"the reply's length is not what was asked for: {self.display}",
                                           expected=f"{n:,} bytes", got=f"Content-Length {length}"))
        parts, left = [], n
        buf = memoryview(bytearray(min(PIECE, n))) if sink is not None else None
        try:
            while left:
                if sink is None:
                    chunk = resp.read(min(PIECE, left))
                    got = len(chunk)
                else:                                # one reused buffer: no allocation per piece
                    got = resp.readinto(buf[:min(PIECE, left)])
                if not got:
                    break
                left -= got
                if self.counter:
                    self.counter(0, got)
                if sink is None:
                    parts.append(chunk)
                else:
                    sink(offset, buf[:got])
                    offset += got
        except TimeoutError:
            conn.close()
            raise _fail("the transfer stalled past the timeout", self.display, fix="retry, or raise "
                        "storage_options={'timeout': seconds}", got=f"{n - left:,} of {n:,} bytes") from None
        except (http.client.IncompleteRead, ConnectionError):
            left = left or 1
        if left:
            conn.close()
            raise CorruptFileError(message(f"the connection ended early: {self.display}",
                                           expected=f"{n:,} bytes", got=f"{n - left:,} bytes"))
        return b"".join(parts)
