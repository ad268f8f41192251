"""The package's shape, as the design asks: modules of a few hundred lines, one job each,
imports flowing one way (formats -> checkpoint -> build/match -> stats -> plots -> widgets/CLI).

Every ``from . import`` / ``from .x import`` in a module, at the top or inside a function,
must point to a module on its own level or a lower one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "weightviz"
MAX_LINES = 400

# lowest first; a module may import from its own level and the ones before it
LEVELS = [
    {"errors", "dtypes", "render", "_widen", "formats.limits"},
    {"checkpoint", "names"},
    {"formats"},
    {"keras", "build", "match", "report", "inference", "demo", "demo_models", "_scan"},
    {"stats"},
    {"images", "plots"},
    {"widgets", "cli", "__init__"},
]


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts) or "__init__"


def _level(mod: str) -> int:
    for depth in range(mod.count(".") + 1, 0, -1):          # longest known prefix wins
        prefix = ".".join(mod.split(".")[:depth])
        for i, names in enumerate(LEVELS):
            if prefix in names:
                return i
    raise AssertionError(f"weightviz.{mod} has no level in tests/test_architecture.py: add it")


def _imports(path: Path, mod: str) -> set[str]:
    pkg = mod.split(".") if path.name == "__init__.py" and mod != "__init__" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - (node.level - 1)]
            if node.module:
                out.add(".".join(base + node.module.split(".")))
            else:
                out.update(".".join(base + [a.name]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("weightviz."):
            out.add(node.module.removeprefix("weightviz."))
    return {m for m in out if m}


SOURCES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_a_few_hundred_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines: split it by job"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
    mod = _module(path)
    mine = _level(mod)
    upward = sorted(m for m in _imports(path, mod) if _level(m) > mine)
    assert not upward, f"weightviz.{mod} (level {mine}) imports higher levels: {upward}"


def test_the_check_would_catch_an_upward_import(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from ..plots import hist\n    from . import sniff\n")
    got = _imports(src, "formats.x")
    assert got == {"plots", "formats.sniff"}
    assert _level("plots") > _level("formats.x")
