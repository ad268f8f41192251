"""The weightviz command, run as a real subprocess: output and exit codes 0 / 1 / 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

MODELS = textwrap.dedent("""
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.head = nn.Linear(8, classes)
""")


def run(*args, cwd):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-m", "weightviz.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "mymodels.py").write_text(MODELS)
    torch.manual_seed(0)
    sd = {"body.weight": torch.randn(8, 4), "body.bias": torch.randn(8),
          "head.weight": torch.randn(10, 8), "head.bias": torch.randn(10)}
    torch.save(sd, d / "fits.pt")
    torch.save({"module." + k: v for k, v in sd.items()}, d / "dp.pt")
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint at all" * 10)
    return d


def test_inspect(work):
    p = run("inspect", "fits.pt", cwd=work)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Checkpoint (torch)") and "head.weight" not in p.stderr
    assert "(10, 8)" in p.stdout and "parameters  130" in p.stdout


def test_inspect_bad_and_missing_file(work):
    p = run("inspect", "garbage.pt", cwd=work)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr
    p = run("inspect", "nope.pt", cwd=work)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "nope.pt" in p.stderr


def test_check_fits_exit_0(work):
    p = run("check", "dp.pt", "--model", "mymodels:Net", cwd=work)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[:2] == [
        "Check report", "all 4 tensors fit after renaming: strip 'module.' (DataParallel/DDP)"]


def test_check_mismatch_exit_1_text_and_json(work):
    p = run("check", "fits.pt", "--model", "mymodels:Net", "--kwargs", '{"classes": 3}', cwd=work)
    assert p.returncode == 1, p.stderr
    assert "only the classifier head differs (10 → 3 classes): expected when fine-tuning" in p.stdout
    p = run("check", "fits.pt", "--model", "mymodels:Net", "--kwargs", '{"classes": 3}', "--json", cwd=work)
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["fits"] is False and d["counts"] == {"shape_mismatch": 2, "ok": 2}


def test_check_headers_only(work):
    torch.save({"body.weight": torch.full((8, 4), float("nan")), "body.bias": torch.zeros(8),
                "head.weight": torch.zeros(10, 8), "head.bias": torch.zeros(10)}, work / "nan.pt")
    p = run("check", "nan.pt", "--model", "mymodels:Net", cwd=work)
    assert p.returncode == 1 and "non_finite" in p.stdout
    p = run("check", "nan.pt", "--model", "mymodels:Net", "--headers-only", cwd=work)
    assert p.returncode == 0 and "all 4 tensors fit" in p.stdout


def test_check_same_text_as_repr(work):
    import weightviz as wv
    sys.path.insert(0, str(work))
    try:
        import mymodels
        expected = repr(wv.check(mymodels.Net(classes=5), wv.open(work / "fits.pt")))
    finally:
        sys.path.remove(str(work))
    p = run("check", "fits.pt", "--model", "mymodels:Net", "--kwargs", '{"classes": 5}', cwd=work)
    assert p.stdout == expected + "\n"


@pytest.mark.parametrize("args, text", [
    (["check", "fits.pt", "--model", "mymodels:Net", "--kwargs", "{classes: 3}"], "not valid JSON"),
    (["check", "fits.pt", "--model", "mymodels:Net", "--kwargs", "[1]"], "must be a JSON object"),
    (["check", "fits.pt", "--model", "mymodels:Nope"], "has no attribute"),
    (["check", "fits.pt", "--model", "nosuchmodule_xyz:Net"], "cannot import module"),
    (["check", "fits.pt"], "--model"),
    (["check", "garbage.pt", "--model", "mymodels:Net"], "error: "),
    ([], "usage"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_usage_exit_2(work, args, text):
    p = run(*args, cwd=work)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert text in p.stderr and "Traceback" not in p.stderr


def test_console_script_is_installed(work):
    exe = Path(sys.executable).with_name("weightviz")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    p = subprocess.run([str(exe), "check", "dp.pt", "--model", "mymodels:Net"], cwd=work,
                       capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert p.returncode == 0, p.stderr


def test_stats_command_fails_on_named_flags(tmp_path):
    """A training job refusing to publish a checkpoint with NaN in it: exit 1 and the
    tensor named on stderr; clean flags exit 0; --json parses; bad flags and files exit 2."""
    torch.manual_seed(0)
    sd = {"fc.weight": torch.randn(8, 4), "fc.bias": torch.zeros(8), "head.weight": torch.randn(3, 8)}
    torch.save(sd, tmp_path / "ok.pt")
    sd["head.weight"][1, 2] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    ok = run("stats", "ok.pt", "--fail-on", "nan,inf", cwd=tmp_path)
    assert ok.returncode == 0 and "Tensor statistics (torch)" in ok.stdout and ok.stderr == ""
    bad = run("stats", "nan.pt", "--fail-on", "nan,inf,dead", cwd=tmp_path)
    assert bad.returncode == 1 and "fail-on nan: 1 tensor (head.weight)" in bad.stderr
    zero = run("stats", "ok.pt", "--fail-on", "zero", cwd=tmp_path)           # the short form
    assert zero.returncode == 1 and "fail-on all_zero: 1 tensor (fc.bias)" in zero.stderr
    assert run("stats", "nan.pt", cwd=tmp_path).returncode == 0               # no --fail-on
    js = json.loads(run("stats", "nan.pt", "--json", cwd=tmp_path).stdout)
    row = next(t for t in js["tensors"] if t["name"] == "head.weight")
    assert js["flagged"] == {"nan": 1, "all_zero": 1} and row["nan"] == 1 and row["flags"] == ["nan"]
    assert sum(row["histogram"]["counts"]) == 23 and len(row["histogram"]["edges"]) == 101
    unknown = run("stats", "ok.pt", "--fail-on", "nan,bogus", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown flag(s) bogus" in unknown.stderr
    missing = run("stats", "nope.pt", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
