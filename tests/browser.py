"""Drive a real JupyterLab in Debian's Chromium (Playwright with executable_path).

Used by tests/test_browser.py. Everything runs on localhost; notebooks are copied
to a temporary folder first so running them never touches the committed files.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    env = os.environ.get("WEIGHTVIZ_CHROMIUM")
    for p in ([env] if env else []) + list(CHROMIUM_CANDIDATES):
        if p and Path(p).exists():
            return p
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def jupyterlab(root: Path, token: str = "weightviz-test"):
    """Start JupyterLab on 127.0.0.1 serving ``root``; yield its base URL."""
    port = _free_port()
    home = root / ".jupyter-home"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), PYTHONWARNINGS="ignore",
               # matplotlib's own font cache, made afresh: a stale shared one (written while an
               # installation's fonts were missing) makes every mathtext label warn on stderr
               MPLCONFIGDIR=str(home / "matplotlib"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.open_browser=False", "--LabApp.news_url=", "--ServerApp.allow_root=True",
           "--ServerApp.quit_button=False"]
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start: " + (root / "jupyterlab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def copy_notebooks(src: Path, dst: Path) -> list[str]:
    names = sorted(p.name for p in src.glob("*.ipynb"))
    for n in names:
        shutil.copy(src / n, dst / n)
    return names


def run_all(page, url: str, name: str, token: str = "weightviz-test", timeout_s: float = 120):
    """Open a notebook, clear its outputs, run all cells, wait until the kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.locator("#jp-main-statusbar").get_by_text("Idle").first.wait_for(timeout=60_000)
    _command(page, "Edit", "Clear Outputs of All Cells")
    _command(page, "Run", "Run All Cells")
    deadline = time.time() + timeout_s
    time.sleep(1.0)
    while time.time() < deadline:
        busy = page.locator(".jp-InputArea-prompt", has_text="[*]").count()
        if busy == 0 and page.locator(".jp-InputArea-prompt", has_text="[ ]").count() == 0:
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"{name}: cells still running after {timeout_s} s")
    time.sleep(1.0)  # let widget views render


def _command(page, menu: str, item: str):
    page.click(f"#jp-MainMenu >> text={menu}")
    page.click(f".lm-Menu-itemLabel:text-is('{item}')")


def error_outputs(page) -> list[str]:
    sel = ("[data-mime-type='application/vnd.jupyter.stderr'], "
           "[data-mime-type='application/vnd.jupyter.error']")
    return [e.inner_text()[:500] for e in page.locator(sel).all()]
