"""The package works when installed non-editable: the grammar ships inside the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT, SPECS


def test_wheel_contains_grammar_and_compiles(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = wheels.glob("revdsl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "revdsl/grammars/revdsl.lark" in names
        assert "revdsl/runtime/engine.py" in names
        z.extractall(tmp_path / "site")
    out = tmp_path / "m.py"
    code = (
        "import revdsl, revdsl.parse, sys\n"
        f"assert revdsl.__file__.startswith({str(tmp_path / 'site')!r}), revdsl.__file__\n"
        "from importlib import resources\n"
        "assert resources.files('revdsl').joinpath('grammars', 'revdsl.lark').is_file()\n"
        "from revdsl.cli import main\n"
        f"sys.exit(main(['compile', {str(SPECS / 'rev_vit.rev')!r}, '-o', {str(out)!r}, '-q']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_text() == (ROOT / "tests" / "golden" / "rev_vit.py").read_text()
