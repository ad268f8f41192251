"""Parent side of the hostile-file harness: runs cases in child processes under a time
limit per case and a memory limit (RLIMIT_AS), survives crashes and hangs, and checks
what the verbs reported against the contract.

Cheap cases share a child (it starts once: importing torch costs seconds); a case that
kills or hangs its child is charged with it and the rest run in a fresh child. Set
``WEIGHTVIZ_HOSTILE_ISOLATE=1`` to give every case its own process.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

from . import craft
from .catalog import Case, Either, Ok, Refuse

RUNNER = Path(__file__).with_name("runner.py")
TIMEOUT = float(os.environ.get("WEIGHTVIZ_HOSTILE_TIMEOUT", 25))
STARTUP = 90.0
MEMORY = int(os.environ.get("WEIGHTVIZ_HOSTILE_MEMORY", 2 << 30))   # RLIMIT_AS of the child
RSS_GROWTH = 1 << 30            # a case may not raise the child's peak RSS by more than this


def _limits(memory: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()
    return apply


def child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",       # the readers must pass weights_only explicitly
               PYTHONDONTWRITEBYTECODE="1", TQDM_DISABLE="1", MPLBACKEND="Agg")
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha256 (regular files) or its type (pipes, links, dirs)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                out[rel] = h.hexdigest()
            else:
                out[rel] = stat.filemode(st.st_mode)[0]
    return out


def run_cases(items: list[dict], work: Path, *, isolate: bool | None = None) -> dict[str, dict]:
    """Run ``items`` ({"name", "path", "verbs", "syspath"}) and return name -> result.
    A result is the runner's "done" event plus "stdout"/"stderr" sections of the child's
    output for that case, or {"fatal": why} for a crash or hang."""
    if isolate is None:
        isolate = os.environ.get("WEIGHTVIZ_HOSTILE_ISOLATE") == "1"
    heavy = {i["name"]: i.get("heavy", False) for i in items}
    limits = {i["name"]: i.get("timeout") for i in items}
    cwd = work / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    pending = list(items)
    round_no = 0
    while pending:
        round_no += 1
        batch = pending[:1] if isolate else pending
        spec, res_path = work / f"spec{round_no}.json", work / f"results{round_no}.jsonl"
        out_path, err_path = work / f"stdout{round_no}.txt", work / f"stderr{round_no}.txt"
        spec.write_text(json.dumps(batch))
        res_path.write_text("")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, str(RUNNER), str(spec), str(res_path)], cwd=cwd,
                                    stdout=out, stderr=err, env=child_env(), preexec_fn=_limits(MEMORY))
            current, since, seen = None, time.monotonic(), 0
            while True:
                rc = proc.poll()
                lines = res_path.read_text().split("\n")[:-1]     # complete lines only
                for line in lines[seen:]:
                    ev = json.loads(line)
                    if ev["event"] == "start":
                        current, since = ev["name"], time.monotonic()
                    else:
                        results[ev["name"]] = ev
                        current = None
                seen = len(lines)
                if rc is not None:
                    break
                limit = limits.get(current) or (TIMEOUT * (3 if heavy.get(current) else 1)) if current else STARTUP
                if time.monotonic() - since > limit:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                    rc = "timeout"
                    break
                time.sleep(0.05)
        stdout, stderr = _sections(out_path), _sections(err_path)
        if current is not None and current not in results:
            why = ("hung: no result in time" if rc == "timeout" else
                   f"the process died (exit status {rc}" + (f", signal {-rc})" if isinstance(rc, int) and rc < 0 else ")"))
            results[current] = {"fatal": why}
        elif rc not in (0, None) and current is None and not any(i["name"] in results for i in batch):
            for i in batch:               # died before the first case: charge them all
                results[i["name"]] = {"fatal": f"child failed to start (rc={rc}): {stderr.get('', '')[-2000:]}"}
        for i in batch:
            if i["name"] in results:
                results[i["name"]].setdefault("stdout", stdout.get(i["name"], ""))
                results[i["name"]].setdefault("stderr", stderr.get(i["name"], ""))
        pending = [i for i in pending if i["name"] not in results]
    return results


def _sections(path: Path) -> dict[str, str]:
    text = path.read_bytes().decode("utf-8", "replace")
    out, name = {"": ""}, ""
    for line in text.splitlines(keepends=True):
        m = re.match(r"=== case (\S+) ===$", line.strip())
        if m:
            name = m.group(1)
            out.setdefault(name, "")
        else:
            out[name] = out.get(name, "") + line
    return out


# ------------------------------------------------------------------ the contract
def _texts(result: dict) -> str:
    parts = [result.get("stdout", ""), result.get("stderr", "")]
    for v in result.get("verbs", {}).values():
        parts += [str(v.get(k, "")) for k in ("text", "html", "message", "stdout", "stderr", "metadata",
                                               "extras", "traceback", "causes", "names")]
    return "\n".join(parts)


def check_verb(verb: str, want, got: dict | None) -> str | None:
    """None if ``got`` (a runner verb record) meets ``want``; else why not."""
    if got is None:
        return "not run"
    st = got.get("status")
    if st == "missing":
        return got["message"]
    if st == "cli":
        rc, err = got["rc"], got["stderr"]
        if "Traceback (most recent call last)" in err + got["stdout"]:
            return f"the CLI printed a traceback (rc={rc}): {err[-600:]}"
        if isinstance(want, Ok) and rc != 0:
            return f"exit status {rc}, expected 0; stderr: {err[-400:]}"
        if isinstance(want, Refuse):
            if rc == 0:
                return f"exit status 0, expected a refusal ({want}); stdout: {got['stdout'][:300]}"
            if not re.search(want.keyword, err, re.I):
                return f"stderr lacks /{want.keyword}/: {err[-400:]}"
        if isinstance(want, Either) and rc != 0 and not err.strip():
            return f"exit status {rc} with nothing on stderr"
        return None
    if st == "error":
        desc = f"{got['cls']}: {got['message'][:500]}"
        if not got["weightviz"]:
            return f"raw exception escaped: {desc}\n{got.get('traceback', '')[-1500:]}"
        if re.search(r"MemoryError", got["message"] + " ".join(got["causes"])):
            return f"a limit was hit instead of checked: {desc} (causes {got['causes']})"
        if isinstance(want, Ok):
            return f"refused, expected success: {desc}"
        if isinstance(want, Refuse):
            if not set(want.errors) & set(got["mro"]):
                return f"raised {got['cls']}, expected {'|'.join(want.errors)}: {desc}"
            if not re.search(want.keyword, got["message"], re.I):
                return f"message lacks /{want.keyword}/: {desc}"
        return None
    # success
    if isinstance(want, Refuse):
        return f"succeeded, expected {want}" + (f" (format {got.get('format')}, {got.get('count')} tensors)"
                                               if verb == "open" else "")
    if isinstance(want, Ok):
        problems = []
        if verb == "open":
            if want.count is not None and got["count"] != want.count:
                problems.append(f"listed {got['count']} tensors, expected {want.count}")
            if want.format and got["format"] != want.format:
                problems.append(f"format {got['format']!r}, expected {want.format!r}")
            if want.lambdas and not got["lambdas"]:
                problems.append("metadata['lambda_layers'] does not name the Lambda layer(s)")
        if verb == "stats" and want.flags:
            missing = sorted(set(want.flags) - set(got["flags"]))
            if missing:
                problems.append(f"stats flags {missing} missing (got {got['flags']})")
        if want.html_probe and "html" in got:
            if want.html_probe in got["html"] or "<img" in got["html"].lower():
                problems.append("a hostile name/metadata string appears unescaped in _repr_html_")
            elif verb == "open" and got.get("count") and "&lt;img" not in got["html"]:
                problems.append("the hostile name does not appear (escaped) in _repr_html_")
        return "; ".join(problems) or None
    return None


def check_case(case: Case, result: dict, before: dict, after: dict, case_dir: Path) -> list[str]:
    """Every way ``result`` breaks the contract for ``case`` (empty list: it holds)."""
    problems = []
    if "fatal" in result:
        problems.append(f"{result['fatal']}; stderr: {result.get('stderr', '')[-1500:]}")
    if (case_dir / craft.MARKER).exists():
        problems.append("THE PAYLOAD RAN: the marker file exists")
    if before != after:
        added = sorted(set(after) - set(before))
        changed = sorted(k for k in before if after.get(k) != before[k])
        problems.append(f"the directory changed: added {added}, changed/removed {changed}")
    if result.get("rss_growth", 0) > RSS_GROWTH:
        problems.append(f"peak memory grew by {result['rss_growth'] / 2**20:.0f} MiB on this file")
    texts = _texts(result)
    if craft.SECRET in texts or "31337" in texts:
        problems.append("data from outside the file (the secret) appears in the output")
    for verb, got in result.get("verbs", {}).items():
        why = check_verb(verb, case.outcome(verb), got)
        if why:
            problems.append(f"{verb}: {why}")
    return problems
