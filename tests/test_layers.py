"""The packages form layers that import one way, and no module imports itself through others.

    npu (the specification) < sim < rtl < runtime < compiler < sweep < cli

A module may import from its own package and from packages below it, never from one above; imports
inside functions count as much as those at the top of a file.  No cycle of imports exists between
modules, lazy ones included.  Parsed from the source, so a test that cannot import a module still
checks it.
"""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("npu", "sim", "rtl", "runtime", "compiler", "sweep", "cli")


def modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[tuple[str, int]]:
    """(module of this project, line) for every import statement in the file, resolved to the deepest module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            parts = t.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add((".".join(parts), node.lineno))
    return found


def import_graph() -> tuple[nx.DiGraph, dict]:
    known = modules()
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for name, path in known.items():
        for target, line in imports(name, path, known):
            g.add_edge(name, target, line=line)
    return g, known


def test_packages_import_downwards_only():
    g, known = import_graph()
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = [f"{known[a].relative_to(ROOT)}:{g.edges[a, b]['line']} imports {b}"
              for a, b in g.edges if rank[b.split(".")[0]] > rank[a.split(".")[0]]]
    assert not upward, "imports that point up the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    g, _ = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"modules that import each other (directly or through others): {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions, so the two tests above can fail."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from compiler.driver import compile_graph\n")
    known = modules()
    assert ("compiler.driver", 2) in imports("npu.m", src, known)
