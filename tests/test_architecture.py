"""The package's shape, as the design asks: modules of a few hundred lines, one job each,
imports flowing one way (formats -> checkpoint -> matching / models / statistics -> compare ->
plots -> widgets / CLI), and a package root of a few modules beside the rooms (ARCHITECTURE.md).

Every ``from . import`` / ``from .x import`` in a module, at the top or inside a function,
must point to a module on its own level or a lower one, and no chain of such imports may lead
back to where it started (a cycle means a piece sits in the wrong module).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "weightviz"
MAX_LINES = 400

# lowest first; a module may import from its own level and the ones before it.  A room
# (subpackage) has one level; a few leaf modules sit lower than their room (longest prefix wins).
LEVELS = [
    {"errors", "dtypes", "render", "formats.limits", "statistics.kernels", "statistics.chunks",
     "statistics.widen", "matching.importpath", "models.inference"},
    {"checkpoint", "matching.names"},
    {"formats"},
    {"keras", "matching", "demo"},
    {"models", "statistics"},
    {"compare", "adapters"},
    {"plots"},
    {"widgets", "cli", "inference", "demo_models", "__init__"},
]
# what the package root may hold besides the rooms: the verbs, the errors, Checkpoint, dtypes,
# the renderer, the CLI and two modules kept for import paths the notebooks show
ROOT_MODULES = {"__init__", "errors", "checkpoint", "dtypes", "render", "cli", "inference",
                "demo_models"}
MAX_ROOT_MODULES = 10


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


MODULES = {_module(p): p for p in SOURCES}


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the weightviz modules it imports (a name imported from a package that is not
    a module of its own, ``from .errors import message``, counts as its module)."""
    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name
    return {m: {owner(x) for x in _imports(p, m)} - {m, ""} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(root):
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_cycles():
    cycles = _cycles(_graph(MODULES))
    assert not cycles, f"modules that import each other (move the shared piece down): {cycles}"


def test_the_cycle_check_would_catch_a_function_level_cycle(tmp_path):
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import g\n")
    (tmp_path / "c.py").write_text("def g():\n    from . import a\n")
    (tmp_path / "d.py").write_text("from .a import x\n")
    mods = {p.stem: p for p in sorted(tmp_path.glob("*.py"))}
    assert _cycles(_graph(mods)) == [["a", "b", "c"]]


def test_no_module_shares_a_verb_name():
    import weightviz
    verbs = {n for n in weightviz.__all__ if n[0].islower()}
    clash = sorted(verbs & {m.split(".")[0] for m in MODULES})
    assert not clash, f"modules named like a public verb (import weightviz.X would rebind it): {clash}"


def test_importing_every_submodule_leaves_the_verbs_alone():
    code = ("import importlib, pkgutil, weightviz; before = {n: getattr(weightviz, n) for n in weightviz.__all__}; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(weightviz.__path__, 'weightviz.')]; "
            "changed = [n for n, v in before.items() if getattr(weightviz, n) is not v]; print(changed)")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_root_holds_only_what_every_room_uses():
    root = sorted(p.stem for p in ROOT.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules in the package root: give them a room"
    assert set(root) <= ROOT_MODULES, (
        f"new root modules {sorted(set(root) - ROOT_MODULES)}: put them in a room (ARCHITECTURE.md)")


def test_every_room_is_a_package_with_a_level():
    rooms = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    for room in rooms:
        assert any(room in names for names in LEVELS), f"room {room} has no level"
