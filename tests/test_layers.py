"""The package's structure, read from its source: layers, import cycles, function length.

Dependencies run one way: core <- data and services <- compendium <- cli. Every
import statement (lazy ones inside functions included) is read with :mod:`ast`;
a module of a lower layer never imports one of a higher layer, and no two
modules import each other, directly or through others.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mdslam"

#: Layer of every module (a package's name covers its submodules unless listed).
LAYERS = {
    0: ["mdslam", "mdslam.flags", "mdslam.svr", "mdslam.slam", "mdslam.modelfile",
        "mdslam.spectra", "mdslam.preprocess", "mdslam.relations", "mdslam.validation",
        "mdslam.selection", "mdslam.crossmatch", "mdslam.catalogue", "mdslam.checks", "mdslam.constants",
        "mdslam.sampling", "mdslam.baselines", "mdslam.activity", "mdslam.utils"],
    1: ["mdslam.datasets", "mdslam.archive", "mdslam.mock", "mdslam.batch", "mdslam.slam_io",
        "mdslam.isochrones", "mdslam.plots", "mdslam.modelgrid", "mdslam.gridslam"],
    2: ["mdslam.compendium"],
    3: ["mdslam.cli", "mdslam.__main__"],
}
NAMES = {0: "core", 1: "data and services", 2: "compendium", 3: "cli"}
MAX_LINES = 80


def _modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


MODULES = _modules()


def layer_of(module: str) -> int | None:
    best = None
    for level, names in LAYERS.items():
        for n in names:
            if (module == n or module.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (level, len(n))
    return None if best is None else best[0]


def _targets(module: str, node: ast.AST) -> list[str]:
    pkg = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            tgt = ".".join(base + ([node.module] if node.module else []))
        else:
            tgt = node.module or ""
        outs = [tgt] + [f"{tgt}.{a.name}" for a in node.names]
    else:
        outs = [a.name for a in node.names]
    return [t for t in outs if t in MODULES and t != module]


def import_graph() -> dict[str, set[str]]:
    graph = collections.defaultdict(set)
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(name, node):
                    # a package re-exporting its own children is not a dependency between layers
                    if not (t.startswith(name + ".") or name.startswith(t + ".")):
                        graph[name].add(t)
    return graph


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"modules without a layer (add them to LAYERS): {missing}"


def test_imports_never_go_up_a_layer():
    bad = []
    for a, targets in import_graph().items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                bad.append(f"{a} ({NAMES[la]}) imports {b} ({NAMES[lb]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = import_graph()
    colour, cycles = {}, []

    def visit(v, path):
        colour[v] = 1
        for w in graph.get(v, ()):
            if colour.get(w) == 1:
                cycles.append(" -> ".join(path[path.index(w):] + [w]))
            elif w not in colour:
                visit(w, path + [w])
        colour[v] = 2

    for v in sorted(MODULES):
        if v not in colour:
            visit(v, [v])
    assert not cycles, "\n".join(cycles)


def test_functions_are_short_or_say_why():
    long = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) and \
                    isinstance(getattr(node.body[0], "value", None), ast.Constant) and \
                    isinstance(node.body[0].value.value, str) else None
                if doc is not None:  # the docstring teaches; only the code counts
                    n -= doc.end_lineno - doc.lineno + 1
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                reason = lines[first - 2].strip() if first >= 2 else ""
                if n > MAX_LINES and not reason.startswith("# long:"):
                    long.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "functions over 80 lines of code (docstring excluded) without a '# long: <why>' comment above them:\n" + "\n".join(long)


@pytest.mark.parametrize("old, new", [("mdslam.tracks", "mdslam.compendium.tracks"),
                                      ("mdslam.book", "mdslam.compendium.build"),
                                      ("mdslam.archive.inputs", "mdslam.compendium.inputs")])
def test_moved_modules_keep_their_old_names(old, new):
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)
