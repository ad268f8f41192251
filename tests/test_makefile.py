"""The README's first command, `make lab`, started for real: as root it passes --allow-root
(JupyterLab refuses root without it), the server answers, and its URL with the token is
printed for a browser-less machine."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = ROOT / ".venv" / "bin" / "jupyter"

pytestmark = pytest.mark.skipif(shutil.which("make") is None or not JUPYTER.exists(),
                                reason="needs make and the project's .venv (make test builds it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_passes_allow_root_only_for_root():
    def dry(uid):
        out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab", f"USER_ID={uid}"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return next(line for line in out.stdout.splitlines() if "jupyter lab" in line)
    assert "--allow-root" in dry(0)
    assert "--allow-root" not in dry(1000)


def test_make_lab_starts_a_server_that_answers(tmp_path):
    """A user on a machine without a browser copies the URL with its token from the log and
    the server answers with it. The log goes to a file that is polled with a deadline, so a
    server that never prints the URL fails the test with its log instead of blocking the run
    (Jupyter prints the token only when it generated it: a token passed in prints as '...')."""
    port = _free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    args = f"LAB_ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --LabApp.news_url="
    log_path = tmp_path / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["make", "-o", ".venv/.installed", "lab", args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = re.compile(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]{{16,}})")
    try:
        deadline, found, text = time.monotonic() + 120, None, ""
        while found is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            text = log_path.read_text(errors="replace")
            found = url.search(text)
        assert found, f"make lab printed no URL with a token (exit {proc.poll()}):\n{text[-3000:]}"
        status = f"http://127.0.0.1:{port}/api/status?token={found.group(1)}"
        with urllib.request.urlopen(status, timeout=30) as r:
            assert r.status == 200
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
