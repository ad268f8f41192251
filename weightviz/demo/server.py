"""A small HTTP server for the notebooks: a folder served on 127.0.0.1 with byte ranges, so
that opening a checkpoint by URL can be shown offline.

>>> from weightviz import demo
>>> with demo.serve() as server:                 # the demo folder, a free port, a background thread
...     ck = wv.open(server.url("cnn.safetensors"))
...     server.requests                          # what was asked: [(path, range, status, bytes)]

It answers ``GET``/``HEAD`` for files in the folder and its subfolders (no listing, no hidden
names, nothing above it),
one ``Range: bytes=a-b`` per request (``206`` with ``Content-Range``, ``416`` past the end),
an ``ETag``, and ``delay=`` seconds before every reply (to show what latency costs).
``ranges=False`` makes it ignore ``Range`` like a naive server does.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "weightviz-demo"

    def log_message(self, *args):                # quiet: the notebook shows what it means to
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        srv = self.server
        if srv.delay:
            time.sleep(srv.delay)
        name = unquote(urlsplit(self.path).path).lstrip("/")
        full = os.path.join(srv.root, *name.split("/"))
        if (not name or "\\" in name or any(not p or p.startswith(".") for p in name.split("/"))
                or not os.path.isfile(full) or not os.path.realpath(full).startswith(srv.root + os.sep)):
            return self._reply(404, b"not found", name)
        size = os.path.getsize(full)
        start, stop, status = 0, size, 200
        m = _RANGE.fullmatch(self.headers.get("Range", "").strip()) if srv.ranges else None
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                stop = min(int(m.group(2)) + 1, size) if m.group(2) else size
            else:
                start, stop = max(size - int(m.group(2)), 0), size
            if start >= size or stop <= start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                srv.log(name, self.headers.get("Range"), 416, 0)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        self.send_header("ETag", '"' + srv.etag(full) + '"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        sent = 0
        if body:
            with open(full, "rb") as f:
                f.seek(start)
                left = stop - start
                try:
                    while left:
                        chunk = f.read(min(1 << 20, left))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
        srv.log(name, self.headers.get("Range"), status, sent)

    def _reply(self, status: int, text: bytes, name: str):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)
        self.server.log(name, self.headers.get("Range"), status, len(text))


class Server(ThreadingHTTPServer):
    """A running server; ``url(name)`` is a file's address, ``requests`` what was asked."""

    daemon_threads = True
    request_queue_size = 256         # many concurrent ranged reads (an index's shards) at once

    def __init__(self, root: str, *, delay: float = 0.0, ranges: bool = True):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.delay, self.ranges = os.path.realpath(root), float(delay), ranges
        self.requests: list[tuple] = []
        self._etags: dict = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="weightviz-demo-server", daemon=True)
        self._thread.start()

    def etag(self, full: str) -> str:
        """The file's SHA-1 (of its first 64 MiB and its size), as a strong ETag."""
        st = os.stat(full)
        key = (full, st.st_size, st.st_mtime_ns)
        if key not in self._etags:
            h = hashlib.sha1(str(st.st_size).encode())
            with open(full, "rb") as f:
                h.update(f.read(64 << 20))
            self._etags[key] = h.hexdigest()
        return self._etags[key]

    def handle_error(self, request, client_address):
        pass                         # a client that hung up mid-reply (on purpose: a refused body)

    def log(self, name, rng, status, sent):
        with self._lock:
            self.requests.append((name, rng, status, sent))

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{quote(name)}"

    def anonymize(self, text) -> str:
        """``text`` (or an object's repr) with this server's address, whose port changes from run
        to run, written ``http://demo-server``: for output that must not change."""
        text = text if isinstance(text, str) else repr(text)
        return text.replace(f"http://127.0.0.1:{self.server_address[1]}", "http://demo-server")

    @property
    def bytes_sent(self) -> int:
        return sum(r[3] for r in self.requests)

    def close(self):
        self.shutdown()
        self.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve(folder: str | None = None, *, delay: float = 0.0, ranges: bool = True) -> Server:
    """Serve ``folder`` (the demo files by default) on 127.0.0.1 in a background thread."""
    if folder is None:
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    return Server(folder, delay=delay, ranges=ranges)


def copy_to(folder: str, names) -> str:
    """Copy demo files into ``folder`` (to serve a selection); returns the folder."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    for n in names:
        shutil.copy(os.path.join(src, n), os.path.join(folder, n))
    return folder
