"""Every command the README (and docs/, and the examples' docstrings) shows runs as written.

The commands are extracted, not listed here: shell lines in code blocks (`revdsl ...`,
`python ...`, `bash ...`), commands quoted inline in the text, and the `python` lines of the
examples' docstrings. Each runs from the root of a fresh copy of the repository's files (so that
the files a command writes do not land in the checkout), with the installed environment's
`revdsl` and `python` first on PATH, and must exit 0. Python code blocks run as scripts.

A command is not run only for a reason written down in SKIP (the long ones, and this suite
itself), or when it is a usage template (`revdsl compile SPEC -o OUT.py`: upper-case
placeholders or `[optional]` parts) or a command name in prose (`revdsl viz`). A command added
to the README later is covered without touching this file; a stale SKIP entry fails.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# commands that are not run, each with its reason
SKIP = {
    "bash scripts/test.sh": "runs this test suite itself (CI runs it)",
    "bash scripts/run.sh": "creates a new virtual environment (minutes); its compile half is "
                           "the golden tests, its set-up half is CI's",
    "python benchmarks/run.py": "the full benchmark suite, about 100 minutes",
    "python benchmarks/run.py --quick": "every suite at tiny sizes: about 5 minutes on 2 cores "
                                        "(each configuration in fresh processes)",
    "python benchmarks/run.py --only vit_depth families": "two benchmark suites, ~20 minutes, "
                                                          "and rewrites BENCHMARKS.md",
    "python examples/train_digits.py": "trains two models for about 2 minutes",
    "python benchmarks/run.py --repeats 3 --only chunked": "a benchmark suite at RevViT-B size, "
                                                           "about 11 minutes",
    "python benchmarks/run.py --only examples": "about 2.5 minutes: the digits training run "
                                                "and every DDP/FSDP2 check, which "
                                                "tests/test_ecosystem.py runs",
    "python examples/train_digits.py --model revnet": "trains two RevNets for about 45 s; "
                                                      "tests/test_revnet.py checks the model",
    "bash benchmarks/gpu.sh": "the GPU checks at full size (5-8 minutes on a CUDA device, far "
                              "longer on CPU); `bash benchmarks/gpu.sh --quick --device cpu` "
                              "runs them at tiny sizes",
    "python benchmarks/difftest.py --examples 2000": "about 90 s; tests/test_reference.py runs "
                                                     "the same comparison on 150 random specs",
}

_CKPT = "needs an official checkpoint (a download); tests/test_weights.py runs the command on " \
        "checkpoints in the official formats"
SKIP.update({cmd: _CKPT for cmd in (
    "revdsl convert specs/rev_vit.rev REV_VIT_S.pyth --from slowfast -o rev_vit_s.pt",
    "revdsl convert specs/rev_vit.rev REV_VIT_B.pyth --from slowfast -o rev_vit_b.pt --set "
    "dim=768 --set heads=12",
    "revdsl convert specs/rev_mvit.rev REV_MVIT_B_16_CONV.pyth --from slowfast -o rev_mvit_b.pt",
    "revdsl convert specs/rev_bifpn.rev revbifpn_s3.pth --from revbifpn -o s3.pt --set width=8/3 "
    "--set image=288 --set num_ext=3 --set stochastic_depth=0.05",
    "revdsl convert specs/rev_vit.rev rev_vit_s.pt --to slowfast -o REV_VIT_S_finetuned.pyth",
)})

# commands shown failing on purpose, with the exit status they must give
EXIT = {
    "revdsl test tests/data/steep.rev --dtype float32": 1,  # the README's ill-conditioned example
}

SOURCES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
_SHELL = re.compile(r"^(revdsl|python|bash)\s")
_PLACEHOLDER = re.compile(r"\b(SPEC|OUT|N|GiB|DIM|NAME|VALUE|CHECKPOINT)\b|\[(--|[A-Z])")


def _strip_comment(line: str) -> str:
    # a `#` preceded by whitespace starts a comment (none of our commands quote one)
    return re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()


def shell_commands(text: str) -> list[str]:
    """Shell lines of the code blocks, and commands quoted inline in the prose."""
    found: list[str] = []
    for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S):
        if m.group(1) in ("", "bash", "sh", "console", "shell"):
            lines = m.group(2).replace("\\\n", " ").splitlines()
            found.extend(_strip_comment(ln) for ln in lines if _SHELL.match(ln))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for m in re.finditer(r"`([^`]+)`", prose):
        cmd = " ".join(m.group(1).split())
        if _SHELL.match(cmd):
            found.append(cmd)
    return list(dict.fromkeys(found))


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def docstring_commands(path: Path) -> list[str]:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    doc = doc.replace("\\\n", " ")
    return [_strip_comment(" ".join(ln.split())) for ln in doc.splitlines()
            if ln.strip().startswith("python ")]


def classify(cmd: str) -> str | None:
    """None: run it; otherwise why not."""
    if cmd in SKIP:
        return SKIP[cmd]
    if _PLACEHOLDER.search(cmd.split(" ", 1)[1] if " " in cmd else ""):
        return "a usage template"
    if re.fullmatch(r"revdsl \w+", cmd) and cmd != "revdsl ops":
        return "a command name in prose"
    return None


def all_commands() -> list[tuple[str, str]]:
    out = []
    for src in SOURCES:
        out.extend((src, c) for c in shell_commands((ROOT / src).read_text()))
    for ex in sorted((ROOT / "examples").glob("*.py")):
        out.extend((str(ex.relative_to(ROOT)), c) for c in docstring_commands(ex))
    first: dict[str, str] = {}
    for src, cmd in out:
        first.setdefault(cmd, src)  # a command shown in several places runs once
    return [(src, cmd) for cmd, src in first.items()]


COMMANDS = all_commands()
RUN = [(s, c) for s, c in COMMANDS if classify(c) is None]
PYTHON = [(src, i, block) for src in SOURCES
          for i, block in enumerate(python_blocks((ROOT / src).read_text()))]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's tracked and new files (not .venv, not build outputs)."""
    dest = tmp_path_factory.mktemp("checkout")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


def test_the_readme_shows_commands_and_every_skip_is_still_there() -> None:
    assert len(RUN) >= 5, RUN
    shown = {c for _, c in COMMANDS}
    stale = set(SKIP) - shown
    assert not stale, f"SKIP lists commands no document shows any more: {sorted(stale)}"


@pytest.mark.parametrize("src, cmd", RUN, ids=[c[:60] for _, c in RUN])
def test_command_runs_as_written(src: str, cmd: str, checkout: Path) -> None:
    out = subprocess.run(["bash", "-c", cmd], cwd=checkout, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == EXIT.get(cmd, 0), (f"{src}: `{cmd}` exited {out.returncode}\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


@pytest.mark.parametrize("src, index, code", PYTHON, ids=[f"{s}#{i}" for s, i, _ in PYTHON])
def test_python_snippet_runs(src: str, index: int, code: str, checkout: Path) -> None:
    out = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{src} python block {index}:\n{out.stderr[-3000:]}"
