"""The layering of docs/architecture.md, checked on the real import graph (module-level and lazy imports):
no module imports upward, no import cycle between modules, and `embedflow --help` imports nothing heavy.
Fast: nothing here imports TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

HEAVY = ("tensorflow", "keras", "sklearn", "matplotlib")


def test_layers_contract_holds():
    """import-linter's layers contract in pyproject.toml: a module imports only the layers below its own."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--no-cache"], cwd=ROOT,  # reads [tool.importlinter] in pyproject.toml
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"import-linter found imports that break the layers:\n{r.stdout}\n{r.stderr}"
    assert "1 kept, 0 broken" in r.stdout, r.stdout


def import_cycles(package: str = "embedflow") -> list[list[str]]:
    """Every strongly connected component of more than one module in the package's import graph (Tarjan)."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(root: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        work = [(root, iter(edges.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_between_modules():
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: a package whose two modules import each other is reported."""
    pkg = tmp_path / "cyclic_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x  # a lazy import counts too\n")
    (pkg / "c.py").write_text("from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("cyclic_pkg") == [["cyclic_pkg.a", "cyclic_pkg.b"]]


HELP_PROBE = r"""
import sys
sys.argv = ["embedflow", *sys.argv[1:]]
from embedflow.cli import run
try:
    run()
except SystemExit:
    pass
print("HEAVY:" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & set(%r))), file=sys.stderr)
""" % (HEAVY,)


@pytest.mark.parametrize("args", [["--help"], ["embed", "--help"], ["fit", "--help"], ["neighbors", "--help"]])
def test_help_imports_nothing_heavy(args):
    r = subprocess.run([sys.executable, "-c", HELP_PROBE, *args], capture_output=True, text=True, timeout=120)
    assert "Usage" in r.stdout, r.stdout + r.stderr
    assert "HEAVY:\n" in r.stderr, f"`embedflow {' '.join(args)}` imported {r.stderr.split('HEAVY:')[-1].strip()}"
