"""HTTP servers the remote tests read from, all on 127.0.0.1.

* :func:`nginx` — Debian's nginx started with a temporary configuration (``daemon off``,
  ``master_process off``, a free port, the access log in a file the tests count requests in).
  Besides plain files it answers like the Hugging Face Hub: ``/hub/resolve/main/<file>`` is a
  302 to ``/<file>`` carrying ``X-Repo-Commit`` and ``X-Linked-Etag``, and
  ``/hub/resolve/<commit>/<file>`` a 302 as well, so a test sees which revision the shards were
  asked at; ``/private/`` needs Basic auth (user ``u``, password ``secret-pass``).
* :func:`weightviz.demo.serve` — the package's own threaded server (Range, delay, or no Range).
* :func:`plain_http` — Python's ``SimpleHTTPRequestHandler``, which ignores ``Range``.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LINKED_ETAG = "4f1b2d3c4e5f60718293a4b5c6d7e8f901234567890abcdef0123456789abcd"
_LOG_FORMAT = "$request_method $request_uri $status $body_bytes_sent $http_range"


def nginx_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.path.exists(p)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    def __init__(self, root: str, work: str):
        self.root, self.work = root, work
        self.port = _free_port()
        self.log_path = os.path.join(work, "access.log")
        conf = os.path.join(work, "nginx.conf")
        with open(os.path.join(work, "htpasswd"), "w") as f:
            f.write("u:{PLAIN}secret-pass\n")
        temp = os.path.join(work, "tmp")
        os.makedirs(temp, exist_ok=True)
        with open(conf, "w") as f:
            f.write(f"""
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format counted '{_LOG_FORMAT}';
    access_log {self.log_path} counted;
    client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fcgi;
    uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        location ~ ^/hub/resolve/main/(.+)$ {{
            add_header X-Repo-Commit {COMMIT} always;
            add_header X-Linked-Etag '"{LINKED_ETAG}"' always;
            return 302 /$1;
        }}
        location ~ ^/hub/resolve/{COMMIT}/(.+)$ {{
            add_header X-Repo-Commit {COMMIT} always;
            return 302 /$1;
        }}
        location /private/ {{
            auth_basic "weights";
            auth_basic_user_file {work}/htpasswd;
        }}
    }}
}}
""")
        self.proc = subprocess.Popen([nginx_path(), "-c", conf, "-p", work], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx did not start: " + self.proc.stderr.read().decode()[-500:])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("nginx did not answer within 10 s")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def log(self) -> list[list[str]]:
        """The access log so far: [method, uri, status, bytes, range] per request."""
        time.sleep(0.05)                   # nginx writes the line after the reply
        with open(self.log_path) as f:
            return [line.split(" ", 4) for line in f.read().splitlines()]

    def mark(self) -> int:
        return len(self.log())

    def since(self, mark: int) -> list[list[str]]:
        return self.log()[mark:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def nginx(root: str, work: str):
    server = Nginx(root, work)
    try:
        yield server
    finally:
        server.stop()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Redirect(http.server.BaseHTTPRequestHandler):
    """Answers every GET with a 302 to the same path on ``target``."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def plain_http(root: str):
    """Python's own file server: it ignores Range and answers 200 with the whole file."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=root))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def redirecting(target: str):
    """A server on another port that redirects everything to ``target`` (another host:port)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    srv.target = target
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
