"""Run every notebook in a real JupyterLab driven by Debian's Chromium (Playwright).

Asserts per notebook: "Run All" finishes, no error or stderr output is shown.
For each LayerBrowser on a page: it renders, clicking another tensor in its list
changes the histogram image. For each PredictionExplorer: moving its slider changes
the prediction shown. For each MismatchView: "problems only" shortens the table. Screenshots go to ``artifacts/browser/`` (gitignored).

Skipped (with the reason) when Chromium or Playwright is missing. Set
``WEIGHTVIZ_BROWSER_NOTEBOOKS=/some/dir`` to run other notebooks than ``notebooks/``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from browser import chromium_path, copy_notebooks, jupyterlab, run_all

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = Path(os.environ.get("WEIGHTVIZ_BROWSER_NOTEBOOKS", ROOT / "notebooks"))
ARTIFACTS = ROOT / "artifacts" / "browser"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))

if chromium_path() is None:
    pytest.skip("no Chromium found (/usr/bin/chromium; set WEIGHTVIZ_CHROMIUM); "
                "`apt-get install chromium` to run the browser test", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("playwright is not installed (pip install playwright; no browser download "
                "needed, the test uses Debian's Chromium)", allow_module_level=True)

TOKEN = "weightviz-test"        # the harness's default
EXERCISED: dict[str, int] = {"LayerBrowser": 0, "PredictionExplorer": 0, "MismatchView": 0}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    copy_notebooks(NOTEBOOKS, root)
    # render every cell (no virtual scrolling), so DOM cells map to notebook cells
    tracker = root / ".jupyter-home" / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with jupyterlab(root) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield SimpleNamespace(browser=browser, url=url, root=root, page=None)
        finally:
            browser.close()


def _fresh_page(lab):
    """A new tab on an empty JupyterLab workspace, so the page holds one notebook only."""
    if lab.page is not None:
        lab.page.close(run_before_unload=False)
    for f in (lab.root / ".jupyter-home" / "workspaces").glob("*"):
        f.unlink()
    lab.page = lab.browser.new_page(viewport={"width": 1400, "height": 1000})
    return lab.page


def _wait_change(get, before, timeout_s: float = 20.0):
    deadline = time.time() + timeout_s
    value = get()
    while value == before and time.time() < deadline:
        time.sleep(0.2)
        value = get()
    return value


def _image_src(locator) -> str:
    return locator.evaluate("el => el.currentSrc || el.src || ''")


def _exercise_browsers(page, stem: str):
    for k, lb in enumerate(page.locator(".jp-NotebookPanel:visible .wv-layer-browser").all()):
        lb.scroll_into_view_if_needed()
        img = lb.locator("img.wv-hist")
        img.wait_for(state="visible", timeout=30_000)
        options = lb.locator("select option")
        assert options.count() >= 2, f"{stem}: LayerBrowser lists {options.count()} tensors"
        box = lb.locator(".wv-card")
        assert box.inner_text().strip(), f"{stem}: LayerBrowser shows no statistics card"
        lb.screenshot(path=str(ARTIFACTS / f"{stem}-layerbrowser{k}-before.png"))
        before, card = _image_src(img), box.inner_text()
        options.nth(1).click()
        after = _wait_change(lambda: _image_src(img), before)
        assert after != before, f"{stem}: selecting another layer did not change the histogram"
        assert box.inner_text() != card, f"{stem}: the statistics card did not change"
        assert not lb.locator(".wv-error").count(), lb.locator(".wv-error").first.inner_text()
        lb.screenshot(path=str(ARTIFACTS / f"{stem}-layerbrowser{k}-after.png"))
        EXERCISED["LayerBrowser"] += 1


def _exercise_explorers(page, stem: str):
    for k, ex in enumerate(page.locator(".jp-NotebookPanel:visible .wv-prediction-explorer").all()):
        ex.scroll_into_view_if_needed()
        caption = ex.locator(".wv-caption")
        caption.wait_for(state="visible", timeout=30_000)
        img = ex.locator("img.wv-plot")
        ex.screenshot(path=str(ARTIFACTS / f"{stem}-explorer{k}-before.png"))
        before, before_img = caption.inner_text(), _image_src(img)
        handle = ex.locator(".noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        after = _wait_change(lambda: caption.inner_text(), before)
        assert after != before, f"{stem}: moving the slider did not change the prediction"
        assert re.search(r"sample [1-9]", after), after
        deadline = time.time() + 10     # let the three key presses settle
        while "sample 3 of" not in caption.inner_text() and time.time() < deadline:
            time.sleep(0.2)
        assert _wait_change(lambda: _image_src(img), before_img) != before_img
        ex.screenshot(path=str(ARTIFACTS / f"{stem}-explorer{k}-after.png"))
        EXERCISED["PredictionExplorer"] += 1


def _unexpected_errors(page, name: str) -> list[str]:
    """Error/stderr outputs of cells not tagged ``raises-exception`` (those show an error on
    purpose; JupyterLab's Run All goes on past them, as nbval does)."""
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    allowed = [bool({"raises-exception", "nbval-raises-exception"} & set(c.get("metadata", {}).get("tags", [])))
               for c in nb["cells"]]
    cells = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell")
    if cells.count() != len(allowed):            # cannot map DOM cells to notebook cells
        return [f"{cells.count()} cells on the page, {len(allowed)} in the file"]
    sel = ("[data-mime-type='application/vnd.jupyter.stderr'], "
           "[data-mime-type='application/vnd.jupyter.error']")
    out = []
    for i, ok in enumerate(allowed):
        if ok:       # JupyterLab renders an error as stderr text: the whole cell is allowed
            continue
        for e in cells.nth(i).locator(sel).all():
            out.append(f"cell {i}: " + e.inner_text()[:500])
    return out


def _exercise_mismatch_views(page, stem: str):
    for k, mv in enumerate(page.locator(".jp-NotebookPanel:visible .wv-mismatch-view").all()):
        mv.scroll_into_view_if_needed()
        table = mv.locator("table.weightviz").first
        table.wait_for(state="visible", timeout=30_000)
        statuses = lambda: set(table.locator("tbody tr td:first-child").all_inner_texts())  # noqa: E731
        shown = statuses()
        mv.get_by_role("button", name="all", exact=True).click()     # the notebook may have filtered
        deadline = time.time() + 20
        while statuses() == shown and len(shown) < len(mv.locator(".widget-toggle-button").all()) \
                and time.time() < deadline:
            time.sleep(0.2)
        mv.screenshot(path=str(ARTIFACTS / f"{stem}-mismatch{k}-before.png"))
        before = statuses()
        mv.get_by_role("button", name="problems only").click()
        deadline = time.time() + 20
        while statuses() == before and time.time() < deadline:
            time.sleep(0.2)
        after = statuses()
        assert after and after < before and not after & {"ok", "renamed"}, \
            f"{stem}: 'problems only' did not filter the report: {sorted(before)} -> {sorted(after)}"
        mv.screenshot(path=str(ARTIFACTS / f"{stem}-mismatch{k}-after.png"))
        EXERCISED["MismatchView"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_jupyterlab(lab, name):
    stem = Path(name).stem
    page = _fresh_page(lab)
    run_all(page, lab.url, name, timeout_s=150)
    page.screenshot(path=str(ARTIFACTS / f"{stem}.png"), full_page=True)
    errors = _unexpected_errors(page, name)
    assert not errors, f"{name}: error/stderr outputs after Run All:\n" + "\n---\n".join(errors)
    _exercise_browsers(page, stem)
    _exercise_explorers(page, stem)
    _exercise_mismatch_views(page, stem)
    errors = _unexpected_errors(page, name)
    assert not errors, f"{name}: error/stderr outputs after using the widgets:\n" + "\n---\n".join(errors)


@pytest.fixture(autouse=True)
def _stop_kernels(request):
    """Shut the notebook's kernel down after its test (the tab stays open, idle)."""
    yield
    if "lab" not in request.fixturenames:
        return
    url = request.getfixturevalue("lab").url
    try:
        with urllib.request.urlopen(f"{url}/api/sessions?token={TOKEN}", timeout=10) as r:
            sessions = json.load(r)
        for sess in sessions:
            req = urllib.request.Request(f"{url}/api/sessions/{sess['id']}?token={TOKEN}",
                                         method="DELETE")
            urllib.request.urlopen(req, timeout=20).close()
    except OSError:
        pass


def test_widgets_were_exercised(lab):
    """The notebooks must show at least one LayerBrowser and one PredictionExplorer."""
    if not NAMES:
        pytest.fail(f"no notebooks in {NOTEBOOKS}")
    missing = [k for k, n in EXERCISED.items() if n == 0]
    assert not missing, f"no notebook displayed a {' or '.join(missing)} (checked {len(NAMES)} notebooks)"
