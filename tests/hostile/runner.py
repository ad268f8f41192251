"""Child process of the hostile-file harness: runs weightviz's public verbs on a list of
files and reports what happened, one JSON line per event, to a results file.

    python runner.py SPEC.json RESULTS.jsonl

SPEC is a list of {"name", "path", "verbs", "syspath"}. For each case it writes
{"event": "start"} before touching the file and {"event": "done", "verbs": {...}} after,
so the parent can tell which case crashed or hung the process. Every exception is
caught and described (class, MRO, message, causes); nothing here decides pass/fail.
Run by tests/hostile/harness.py under time and memory limits, with an empty working
directory, and with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set to prove the readers pass
weights_only explicitly.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import time
import traceback

TEXT_CAP = 400_000


def _cap(s) -> str:
    s = str(s)
    return s if len(s) <= TEXT_CAP else s[:TEXT_CAP] + f"... [{len(s) - TEXT_CAP} chars cut]"


def describe(exc: BaseException) -> dict:
    import weightviz
    causes, c = [], exc.__cause__ or exc.__context__
    while c is not None and len(causes) < 5:
        causes.append(f"{type(c).__name__}: {str(c)[:300]}")
        c = c.__cause__ or c.__context__
    return {"status": "error", "cls": type(exc).__name__,
            "mro": [k.__name__ for k in type(exc).__mro__],
            "weightviz": isinstance(exc, weightviz.WeightvizError),
            "message": _cap(exc), "causes": causes,
            "traceback": _cap("".join(traceback.format_exception(exc))[-4000:])}


def v_open(path):
    import weightviz as wv
    ck = wv.open(path)
    shapes = [(n, list(e.shape), e.dtype) for n, e in ck.items()]
    lam = ck.metadata.get("lambda_layers") if isinstance(ck.metadata, dict) else None
    return {"status": "ok", "format": ck.format, "count": len(ck), "names": [s[0] for s in shapes[:50]],
            "lambdas": list(lam) if lam else [], "text": _cap(repr(ck)), "html": _cap(ck._repr_html_()),
            "metadata": _cap(repr(ck.metadata)), "extras": _cap(repr(ck.extras)),
            "num_params": ck.num_params}


def v_stats(path):
    import weightviz as wv
    from weightviz.statistics import FLAGS
    st = wv.stats(path, progress=False)
    return {"status": "ok", "count": len(st), "flags": sorted(f for f in FLAGS if st.flagged(f)),
            "text": _cap(repr(st)), "html": _cap(st._repr_html_())}


def v_check(path):
    import torch
    import weightviz as wv
    rep = wv.check(torch.nn.Linear(2, 2), path)
    return {"status": "ok", "text": _cap(repr(rep)), "html": _cap(rep._repr_html_())}


def v_load(path):
    import torch
    import weightviz as wv
    rep = wv.load(torch.nn.Linear(2, 2), path, strict=False)
    return {"status": "ok", "text": _cap(repr(rep)), "html": _cap(rep._repr_html_())}


def v_build(path):
    import weightviz as wv
    model = wv.build(path)
    return {"status": "ok", "text": _cap(repr(model))}


def v_inspect(path):
    try:
        from weightviz.cli import main
    except ModuleNotFoundError as exc:
        if exc.name == "weightviz.cli":
            return {"status": "missing", "message": "weightviz.cli does not exist"}
        raise
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["inspect", str(path)])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return {"status": "cli", "rc": int(rc or 0), "stdout": _cap(out.getvalue()), "stderr": _cap(err.getvalue())}


def v_browse(path):
    """The notebook layer browser: every HTML fragment it would send to the browser."""
    import ipywidgets
    import weightviz as wv
    b = wv.browse(path)
    html, stack, seen = [], [b], set()
    while stack and len(seen) < 10_000:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (ipywidgets.HTML, ipywidgets.HTMLMath)):
            html.append(x.value)
        stack.extend(c for c in getattr(x, "children", ()) if isinstance(c, ipywidgets.Widget))
    return {"status": "ok", "text": _cap(repr(b)), "html": _cap("\n".join(html))}


VERBS = {"browse": v_browse, "open": v_open, "stats": v_stats, "check": v_check, "load": v_load, "build": v_build, "inspect": v_inspect}


def main(spec_path: str, results_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    import torch
    torch.set_num_threads(1)
    import weightviz  # noqa: F401 - import cost paid before the first case's clock starts
    with open(results_path, "a", buffering=1) as res:
        for case in spec:
            print(f"=== case {case['name']} ===", flush=True)
            print(f"=== case {case['name']} ===", file=sys.stderr, flush=True)
            res.write(json.dumps({"event": "start", "name": case["name"]}) + "\n")
            res.flush()
            if case.get("syspath"):
                sys.path.insert(0, os.path.dirname(case["path"]))
            verbs = {}
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            t0 = time.monotonic()
            for verb in case["verbs"]:
                try:
                    verbs[verb] = VERBS[verb](case["path"])
                except SystemExit as exc:
                    verbs[verb] = {"status": "error", "cls": "SystemExit", "mro": ["SystemExit"],
                                   "weightviz": False, "message": str(exc.code), "causes": [], "traceback": ""}
                except BaseException as exc:  # noqa: BLE001 - everything is reported, nothing decided here
                    verbs[verb] = describe(exc)
            if case.get("syspath"):
                sys.path.remove(os.path.dirname(case["path"]))
                sys.modules.pop("evilmod", None)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            res.write(json.dumps({"event": "done", "name": case["name"], "verbs": verbs, "rss_growth": rss - rss0,
                                  "seconds": round(time.monotonic() - t0, 3)}) + "\n")
            res.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
