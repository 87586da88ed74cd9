"""The module graph a reader can see (issue #15), checked with ``ast`` on the source.

- no function longer than 80 lines;
- rsgeo's own modules are imported at module level; an import of one inside a function
  needs a ``lazy: <why>`` comment on its line or the line above;
- no import cycle among the module-level imports;
- every import (module level or lazy) follows the layers written in CONTRIBUTING.md.

Each test lists every offender, not just the first.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "rsgeo"
MAX_LINES = 80


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: list[str]
    top: set[str] = field(default_factory=set)    # rsgeo modules imported at module level
    every: dict[str, int] = field(default_factory=dict)  # every rsgeo import -> line


def _name_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _module_level(tree: ast.Module):
    """Import nodes executed on import: not in a function, not under TYPE_CHECKING."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif not _is_type_checking(node):
            todo.extend(ast.iter_child_nodes(node))


def _functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _load() -> dict[str, Module]:
    mods = {}
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        mods[_name_of(path)] = Module(_name_of(path), path, ast.parse(text), text.splitlines())
    return mods


def _targets(mod: Module, node, known) -> list[str]:
    """rsgeo modules an import statement loads (``from a import b``: ``a.b`` if a module)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.name.split(".")
            if mod.path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            parent = ".".join(base + ([node.module] if node.module else []))
        else:
            parent = node.module or ""
        subs = [f"{parent}.{a.name}" for a in node.names if f"{parent}.{a.name}" in known]
        names = subs + ([parent] if len(subs) < len(node.names) else [])
    out = []
    for n in names:
        if n != "rsgeo" and not n.startswith("rsgeo."):
            continue
        while n not in known and "." in n:  # rsgeo.x.y where y is an attribute
            n = n.rsplit(".", 1)[0]
        if n != mod.name:
            out.append(n)
    return out


MODS = _load()
for _m in MODS.values():
    for _node in _module_level(_m.tree):
        _m.top.update(_targets(_m, _node, MODS))
    for _node in ast.walk(_m.tree):
        if isinstance(_node, (ast.Import, ast.ImportFrom)):
            for _t in _targets(_m, _node, MODS):
                _m.every.setdefault(_t, _node.lineno)


def _where(mod: Module, line: int) -> str:
    return f"{mod.path.relative_to(ROOT)}:{line}"


def test_no_function_over_80_lines():
    long = [f"{_where(m, f.lineno)} {f.name}: {f.end_lineno - f.lineno + 1} lines"
            for m in MODS.values() for f in _functions(m.tree)
            if f.end_lineno - f.lineno + 1 > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines:\n" + "\n".join(long)


def _says_lazy(lines: list[str], node) -> bool:
    """A ``lazy:`` comment on the import's lines, or on the line above it or above the run
    of import lines it closes (one comment may head a block of imports)."""
    if any("lazy:" in line for line in lines[node.lineno - 1:node.end_lineno]):
        return True
    i = node.lineno - 2
    while i >= 0:
        text = lines[i].strip()
        if "lazy:" in text:
            return True
        if not text.startswith(("from ", "import ", "#")):
            return False
        i -= 1
    return False


def test_lazy_comment_heads_a_block_of_imports():
    src = ["def f():", "    # lazy: keep --help fast", "    from rsgeo import a", "    from rsgeo import b",
           "", "    from rsgeo import c"]
    nodes = [n for n in ast.walk(ast.parse("\n".join(src))) if isinstance(n, ast.ImportFrom)]
    assert [_says_lazy(src, n) for n in sorted(nodes, key=lambda n: n.lineno)] == [True, True, False]


def test_rsgeo_imports_inside_functions_say_why():
    bad = []
    for m in MODS.values():
        seen = set()
        for f in _functions(m.tree):
            for node in ast.walk(f):
                if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in seen:
                    continue
                seen.add(id(node))
                if not _targets(m, node, MODS):
                    continue
                if not _says_lazy(m.lines, node):
                    bad.append(f"{_where(m, node.lineno)} {m.lines[node.lineno - 1].strip()}")
    assert not bad, ("rsgeo imports inside functions without a `# lazy: <why>` comment "
                     "(import at module level instead):\n" + "\n".join(bad))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    cycles = _cycles({m.name: m.top for m in MODS.values()})
    assert not cycles, "module-level import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def read_layers(text: str) -> list[list[str]]:
    """The numbered list between ``<!-- layers -->`` and ``<!-- /layers -->``, lowest first."""
    block = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", text, re.S)
    assert block, "CONTRIBUTING.md has no <!-- layers --> block"
    layers = []
    for line in block.group(1).splitlines():
        item = re.match(r"\s*\d+\.\s*(.+)", line)
        if item:
            layers.append([n.strip().strip("`") for n in item.group(1).split(",")])
    return layers


def _package(name: str) -> str:
    return name.split(".")[1] if "." in name else name


def test_imports_follow_the_layers_in_contributing():
    layers = read_layers((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    level = {pkg: i for i, names in enumerate(layers) for pkg in names}
    # the package root (``__version__``, OpenMP wait policy) is imported by everything
    unlisted = sorted({_package(m) for m in MODS if m != "rsgeo"} - set(level))
    assert not unlisted, f"packages missing from the layers in CONTRIBUTING.md: {unlisted}"
    bad = []
    for m in MODS.values():
        if m.name == "rsgeo":
            continue
        src = _package(m.name)
        for target, line in sorted(m.every.items()):
            dst = _package(target)
            if target == "rsgeo" or dst == src:
                continue
            if level[dst] >= level[src]:
                bad.append(f"{_where(m, line)} {m.name} (layer {level[src] + 1}: {src}) imports "
                           f"{target} (layer {level[dst] + 1}: {dst})")
    assert not bad, "imports against the layers in CONTRIBUTING.md:\n" + "\n".join(bad)


def test_the_no_room_errnos_are_defined_once():
    """Which OS errors mean "no room to write" (disk full, file size limit, quota): the CLI
    kept a copy of rsgeo.io.atomic's set so as not to import it at start-up, and the two
    could drift; both now take rsgeo.errors' (light: no rasterio, no torch)."""
    def names(node) -> list:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        return [getattr(t, "id", None) for t in targets]

    defined = [m.name for m in MODS.values() for node in m.tree.body if "NO_ROOM" in names(node)]
    assert defined == ["rsgeo.errors"], defined
    assert {"rsgeo.errors"} <= MODS["rsgeo.cli.app"].top & MODS["rsgeo.io.atomic"].top
