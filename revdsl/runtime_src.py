"""Copy runtime definitions (revdsl/runtime/*.py) into generated modules.

The runtime files are ordinary Python, tested directly. Code generation must not import torch, so
their source is read as text and parsed with the standard `ast` module: each top-level class,
function and assignment is a definition; `collect` returns the source of the requested ones plus
everything they refer to, in a fixed order (file order, then line), so output is deterministic.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from importlib import resources

# In dependency order: a later file may use an earlier one's definitions.
RUNTIME_FILES = (
    "hooks.py", "buffers.py", "engine.py", "blocks.py", "checks.py", "stored.py", "controls.py",
    "layers.py", "mvit.py", "retention.py", "supervit.py", "bifpn.py", "swin.py",
)


@dataclass(frozen=True)
class Definition:
    name: str
    file_index: int
    line: int
    source: str
    refs: frozenset[str]


@functools.cache
def definitions() -> dict[str, Definition]:
    out: dict[str, Definition] = {}
    pkg = resources.files("revdsl").joinpath("runtime")
    for index, fname in enumerate(RUNTIME_FILES):
        path = pkg.joinpath(fname)
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            if not names:
                continue
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            source = "\n".join(lines[first - 1: node.end_lineno])
            refs = frozenset(
                n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            )
            for name in names:
                assert name not in out, f"runtime definition {name} appears twice"
                out[name] = Definition(name, index, node.lineno, source, refs)
    return out


def collect(roots: set[str]) -> list[Definition]:
    """The requested definitions and their dependencies, in file and line order."""
    defs = definitions()
    missing = roots - set(defs)
    assert not missing, f"unknown runtime definitions: {sorted(missing)}"
    todo = list(roots)
    keep: set[str] = set()
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(r for r in defs[name].refs if r in defs and r not in keep)
    return sorted((defs[n] for n in keep), key=lambda d: (d.file_index, d.line))
