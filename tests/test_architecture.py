"""The package's shape: imports run one way through the pipeline's stages, with no cycles, no
tool importing the CLI, and every module under 600 lines (see docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

from tests.conftest import ROOT

PKG = ROOT / "revdsl"

# each module's stage; a module may import only from its own stage or an earlier one
STAGES: list[tuple[str, ...]] = [
    # 0: foundations (no revdsl imports of a later kind); the runtime is a leaf torch library
    ("revdsl.source", "revdsl.algebra", "revdsl.shapes", "revdsl.runtime_src", "revdsl.version",
     "revdsl.runtime"),
    # 1: diagnostics, syntax tree, IR and naming rules
    ("revdsl.errors", "revdsl.ast", "revdsl.pyprint", "revdsl.names", "revdsl.ir",
     "revdsl.deep"),
    # 2: text -> AST, and the op catalogue
    ("revdsl.parse", "revdsl.catalogue"),
    # 3: AST -> IR
    ("revdsl.lower",),
    # 4: the graph view, proofs, verification and what they derive
    ("revdsl.graph", "revdsl.prover", "revdsl.explain", "revdsl.usage", "revdsl.memory",
     "revdsl.verify",
     "revdsl.sizes", "revdsl.strategies"),
    # 5: code generation
    ("revdsl.codegen",),
    # 6: the chain, in-process loading, files, reports
    ("revdsl.pipeline", "revdsl.loader", "revdsl.files", "revdsl.report", "revdsl.weights"),
    # 7: the tools
    ("revdsl.viz", "revdsl.stats", "revdsl.bench", "revdsl.measure", "revdsl.proptest",
     "revdsl.testing", "revdsl.reference", "revdsl.difftest", "revdsl.recipes", "revdsl.docs",
     "revdsl.plan", "revdsl.convert"),
    # 8: entry points
    ("revdsl.cli", "revdsl.__main__", "revdsl"),
]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(mod: str) -> int:
    best = None
    for i, group in enumerate(STAGES):
        for prefix in group:
            if mod == prefix or (prefix != "revdsl" and mod.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{mod} is in no stage: add it to STAGES"
    return best[0]


def _imports() -> nx.DiGraph:
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    for mod, path in modules.items():
        g.add_node(mod)
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module == "revdsl" or node.module.startswith("revdsl.")):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.append(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names if a.name.split(".")[0] == "revdsl"]
            for t in targets:
                if t != mod and t in modules:
                    g.add_edge(mod, t)
    return g


def test_imports_run_one_way() -> None:
    g = _imports()
    upward = [(a, b) for a, b in g.edges if _stage(b) > _stage(a)]
    assert not upward, "a module imports a later stage:\n" + "\n".join(
        f"  {a} (stage {_stage(a)}) -> {b} (stage {_stage(b)})" for a, b in upward)


def test_no_import_cycles() -> None:
    cycles = list(nx.simple_cycles(_imports()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_no_tool_imports_the_cli() -> None:
    g = _imports()
    assert list(g.predecessors("revdsl.cli")) in ([], ["revdsl.__main__"])


def test_compile_path_does_not_import_torch() -> None:
    # loading a model (loader) and reading checkpoints (weights) need torch; the compile
    # path (the CLI's compile and check, the stages before code generation) does not
    compile_path = [m for m in _imports() if _stage(m) <= 6 and not m.startswith("revdsl.runtime")
                    and m != "revdsl.loader" and not m.startswith("revdsl.weights")]
    for mod in compile_path:
        path = PKG.parent / (mod.replace(".", "/") + ".py")
        if not path.exists():
            path = PKG.parent / mod.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names} | {
            n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n == "torch" or n.startswith("torch.") for n in names), mod


def test_every_module_is_under_600_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long
