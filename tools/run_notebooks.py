"""Execute the notebooks in place to refresh their committed outputs.

    .venv/bin/python tools/run_notebooks.py                 # every notebooks/NN_*.ipynb
    .venv/bin/python tools/run_notebooks.py 02 05           # the ones whose names start so
    .venv/bin/python tools/run_notebooks.py --check         # run, report, write nothing

Each notebook runs top to bottom in a fresh kernel started from *this* Python
(the same environment ``pytest --nbval --nbval-current-env`` uses), with the
working directory set to ``notebooks/``. Cells tagged ``raises-exception`` may
raise; any other error stops that notebook and leaves its file untouched. Output
that strict nbval would trip over is refused too: anything written to stderr
(a warning) is reported and the file is not written.

To keep re-runs from churning the files: cell timing metadata is not recorded,
widget state is not stored, a widget view keeps the model id it had in the file
when its text is unchanged (the ids are random and the state is not saved anyway),
consecutive stream outputs are merged (as nbval compares them), and the traceback of
an expected error is cut to its last line (no local paths or line numbers in the
committed file; nbval compares only the exception's type and message).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
KERNEL = "weightviz-current-env"


def _kernel_manager():
    """A KernelManager whose only kernel is this Python (like nbval's --nbval-current-env)."""
    from ipykernel.kernelspec import get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import KernelManager

    class CurrentEnv(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if kernel_name != KERNEL:
                raise NoSuchKernel(kernel_name)
            return KernelSpec(resource_dir="", **get_kernel_dict())

    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=CurrentEnv())


def _stderr_cells(nb) -> list[int]:
    """Indexes (counting code cells from 0, as nbval does) of cells that wrote to stderr."""
    bad, k = [], 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if any(o.get("output_type") == "stream" and o.get("name") == "stderr" for o in cell.outputs):
            bad.append(k)
        k += 1
    return bad


WIDGET = "application/vnd.jupyter.widget-view+json"


def _merge_streams(outputs: list) -> list:
    out = []
    for o in outputs:
        if (o.get("output_type") == "stream" and out and out[-1].get("output_type") == "stream"
                and out[-1].get("name") == o.get("name")):
            out[-1]["text"] += o["text"]
        else:
            out.append(o)
    return out


def _tidy(nb, old) -> None:
    """Make the executed notebook ``nb`` stable against the file's previous version ``old``."""
    old_cells = {c.source: c for c in old.cells if c.cell_type == "code"}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = _merge_streams(cell.outputs)
        for o in cell.outputs:
            if o.get("output_type") == "error":
                o["traceback"] = [f"\x1b[0;31m{o['ename']}\x1b[0m: {o['evalue']}"]
        prev = old_cells.get(cell.source)
        if prev is None or len(prev.outputs) != len(cell.outputs):
            continue
        for o, p in zip(cell.outputs, prev.outputs):
            new_view, old_view = o.get("data", {}).get(WIDGET), p.get("data", {}).get(WIDGET)
            if new_view and old_view and o["data"].get("text/plain") == p["data"].get("text/plain"):
                new_view["model_id"] = old_view["model_id"]


def run(path: str, *, write: bool = True, timeout: int = 300) -> bool:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    name = os.path.basename(path)
    nb = nbformat.read(path, as_version=4)
    old = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, km=_kernel_manager(), timeout=timeout, record_timing=False,
        store_widget_state=False, resources={"metadata": {"path": NB_DIR}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        print(f"FAIL  {name}: a cell raised (not tagged raises-exception)\n{e}", file=sys.stderr)
        return False
    dt = time.perf_counter() - t0
    bad = _stderr_cells(nb)
    if bad:
        print(f"FAIL  {name}: stderr output in code cell(s) {bad}; strict nbval would fail, "
              "fix the warning first (file not written)", file=sys.stderr)
        return False
    # The kernelspec nbval and JupyterLab look for by default.
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python",
                                 "name": "python3"}
    nb.metadata.pop("widgets", None)
    _tidy(nb, old)
    if write:
        nbformat.write(nb, path)
    print(f"ok    {name}  {dt:5.1f} s{'' if write else '  (not written)'}")
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="run only notebooks whose names start with these")
    ap.add_argument("--check", action="store_true", help="execute but do not write the files")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    args = ap.parse_args(argv)
    names = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb") and f[:2].isdigit())
    if args.only:
        names = [n for n in names if n.startswith(tuple(args.only))]
    if not names:
        print("no notebooks matched", file=sys.stderr)
        return 2
    ok = [run(os.path.join(NB_DIR, n), write=not args.check, timeout=args.timeout) for n in names]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
