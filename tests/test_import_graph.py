"""The shape of the code, checked from its source: no import cycle among the modules of siamese_core, and no private
name (``_x``) used outside the module that defines it.

Every ``import`` and ``from ... import`` counts, wherever it stands: at the top of a module, inside a function
(the lazy imports that keep ``import siamese_core`` cheap), or under ``if TYPE_CHECKING``. A function-level
import hides a cycle from Python at import time, not from the reader, so it counts here. The layers themselves
(cli → scale → judge → learn → runs → data → core) are import-linter's contract in pyproject.toml, run by
``./run.sh test`` as ``lint-imports``; this file needs nothing but the standard library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "siamese_core"
# code whose private names must stay private too: the library, the app, the benchmarks and the scripts
CHECKED = [ROOT / LIBRARY, ROOT / "app_pages", ROOT / "streamlit_app.py", ROOT / "bench", ROOT / "scripts"]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``siamese_core/data/store.py`` → ``siamese_core.data.store``; a package is its ``__init__``. Scripts in
    ``bench/`` and ``scripts/`` import their neighbours by bare name (their folder is first on sys.path)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] in ("bench", "scripts"):
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(where) -> list[Path]:
    out = []
    for w in where:
        out += [w] if w.is_file() else sorted(w.rglob("*.py"))
    return [p for p in out if "__pycache__" not in p.parts]


class Modules:
    """The modules under ``where`` (name → path) and which of them are packages."""

    def __init__(self, where, root: Path = ROOT):
        self.root = root
        self.paths = {module_name(p, root): p for p in python_files(where)}
        self.packages = {m for m, p in self.paths.items() if p.name == "__init__.py"}

    def imports(self, mod: str):
        """Yield (line, imported module, imported name or None, local name) for every import statement in ``mod``:
        ``from a.b import c`` gives (a.b.c, None, ...) when a.b.c is a module of ours, else (a.b, "c", ...)."""
        tree = ast.parse(self.paths[mod].read_text(), str(self.paths[mod]))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    yield node.lineno, a.name, None, a.asname or a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if mod in self.packages else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    local = a.asname or a.name
                    yield (node.lineno, sub, None, local) if sub in self.paths else (node.lineno, target, a.name, local)

    def graph(self, prefix: str) -> dict:
        """Module → {imported module: first line} over the modules whose name starts with ``prefix``."""
        g = {}
        for mod in self.paths:
            if mod == prefix or mod.startswith(prefix + "."):
                edges = g.setdefault(mod, {})
                for line, target, _, _ in self.imports(mod):
                    if target in self.paths and target != mod and (target == prefix or target.startswith(prefix + ".")):
                        edges.setdefault(target, line)
        return g


def find_cycle(graph: dict) -> list | None:
    """One import cycle as [m1, m2, ..., m1], or None (depth-first search, iterative)."""
    state = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def private_uses(modules: Modules) -> list[str]:
    """``file:line: what`` for every private name of one of our modules used from another module: ``from m import
    _x``, ``import m._x`` (a private module), or ``m._x`` where ``m`` is bound to one of our modules."""
    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    found = []
    for mod, path in modules.paths.items():
        where = path.relative_to(modules.root)
        bound = {}  # local name -> the module of ours it is bound to
        for line, target, name, local in modules.imports(mod):
            if target not in modules.paths:
                continue
            if private(target.rsplit(".", 1)[-1]) and target != mod:
                found.append(f"{where}:{line}: imports the private module {target}")
            if name is None:
                bound[local] = target if local != target.split(".")[0] else local
            elif private(name) and target != mod:
                found.append(f"{where}:{line}: imports the private name {name} from {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and private(node.attr):
                base, dotted = node.value, []
                while isinstance(base, ast.Attribute):
                    dotted.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id in bound:
                    target = ".".join([bound[base.id], *reversed(dotted)])
                    if target in modules.paths and target != mod:
                        found.append(f"{where}:{node.lineno}: uses the private name {target}.{node.attr}")
    return sorted(set(found))


@pytest.fixture(scope="module")
def modules() -> Modules:
    return Modules(CHECKED)


def test_the_library_has_no_import_cycle_not_even_through_function_level_imports(modules):
    graph = modules.graph(LIBRARY)
    assert len(graph) > 40, sorted(graph)  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_no_private_name_is_used_outside_its_module(modules):
    assert private_uses(modules) == []


# --- the guards themselves fail on a bad import (a checker that cannot fail checks nothing) --------------------

def _tree(tmp_path: Path, files: dict) -> Modules:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return Modules([tmp_path / "pkg"], root=tmp_path)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    mods = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/low/__init__.py": "",
                            "pkg/low/a.py": "def f():\n    from ..high import b\n",
                            "pkg/high.py": "from .low.a import f\n", "pkg/other.py": "import pkg.high\n"})
    assert find_cycle(mods.graph("pkg")) == ["pkg.high", "pkg.low.a", "pkg.high"]
    (tmp_path / "pkg/low/a.py").write_text("def f():\n    pass\n")
    assert find_cycle(Modules([tmp_path / "pkg"], root=tmp_path).graph("pkg")) is None


def test_each_kind_of_private_use_is_found(tmp_path):
    mods = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/_hidden.py": "X = 1\n",
                            "pkg/a.py": "def _helper():\n    pass\n\n\ndef public():\n    _helper()\n",
                            "pkg/b.py": "from .a import _helper\n",
                            "pkg/c.py": "from pkg import a\n\na._helper()\n",
                            "pkg/d.py": "import pkg.a as m\n\nm._helper()\n",
                            "pkg/e.py": "from pkg import _hidden\n",
                            "pkg/g.py": "from pkg._hidden import X\n",
                            "pkg/f.py": "from .a import public\n\npublic()\n"})
    found = private_uses(mods)
    assert [f.split(":")[0] for f in found] == ["pkg/b.py", "pkg/c.py", "pkg/d.py", "pkg/e.py", "pkg/g.py"], found
