"""The README's first command, `make lab`, started for real: as root it passes --allow-root
(JupyterLab refuses root without it), the server answers, and its URL with the token is
printed for a browser-less machine."""
from __future__ import annotations

import os
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
    port, token = _free_port(), "weightviz-make-lab-test"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    args = (f"LAB_ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
            f"--IdentityProvider.token={token}")
    proc = subprocess.Popen(["make", "-o", ".venv/.installed", "lab", args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"127.0.0.1:{port}/lab?token={token}" in line:
                break
        log = "".join(lines)
        assert f"http://127.0.0.1:{port}/lab?token={token}" in log, log[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                    timeout=30) as r:
            assert r.status == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
