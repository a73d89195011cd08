"""Generated code: golden files for every spec (byte for byte), determinism, and that it
imports nothing but torch and the standard library (REVDSL_UPDATE_GOLDENS=1 rewrites goldens)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import revdsl
from tests.conftest import GOLDEN, SPECS, golden

ALL_SPECS = sorted(p.name for p in SPECS.glob("*.rev"))


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_golden(spec: str) -> None:
    source = revdsl.compile_spec(str(SPECS / spec))
    golden(GOLDEN / (Path(spec).stem + ".py"), source)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_deterministic_and_standalone(spec: str, tmp_path: Path) -> None:
    a = revdsl.compile_spec(str(SPECS / spec))
    # the same spec from another path and working folder: same bytes
    copy = tmp_path / spec
    copy.write_text((SPECS / spec).read_text())
    b = revdsl.compile_spec(str(copy))
    assert a == b
    tree = ast.parse(a)
    allowed = set(sys.stdlib_module_names) | {"torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {n.name.split(".")[0] for n in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= allowed, roots
    assert "revdsl" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def test_generated_code_passes_the_house_lint() -> None:
    """The goldens (so every shipped spec's output) pass ruff with the project's configuration."""
    import shutil
    import subprocess

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "--no-cache", str(GOLDEN)], capture_output=True,
                         text=True, cwd=GOLDEN.parent.parent)
    assert out.returncode == 0, out.stdout + out.stderr
