"""Compile time of every shipped spec, as a user sees it: `revdsl check SPEC` and `revdsl compile
SPEC -o OUT.py` in a fresh process each (interpreter start and imports included), the best of
3 runs, and in-process (warm) the best of 5.

    python benchmarks/compile_time.py [--label after]

Results: benchmarks/results/compile_time.json (one entry per label, so a before/after pair
can be recorded by running it on two versions), then BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, save  # noqa: E402


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(python: str = sys.executable, path: str | None = None) -> list[dict[str, object]]:
    rows = []
    env_path = {"PYTHONPATH": path} if path else {}
    import os

    env = {**os.environ, **env_path}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "m.py")
        specs = Path(path) / "specs" if path else ROOT / "specs"  # that version's own specs
        for spec in sorted(specs.glob("*.rev")):
            def run(*args: str, spec: Path = spec) -> None:
                subprocess.run([python, "-m", "revdsl.cli", *args, str(spec)]
                               + (["-o", out] if args[0] == "compile" else []),
                               check=True, capture_output=True, env=env, cwd=tmp)
            check = _best(lambda: run("check"), 3)
            comp = _best(lambda: run("compile"), 3)
            rows.append({"spec": spec.name, "check_s": round(check, 3),
                         "compile_s": round(comp, 3)})
            print(f"{spec.name:20s} check {check:6.2f} s   compile {comp:6.2f} s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label", default="current")
    p.add_argument("--path", help="PYTHONPATH of another revdsl checkout to measure instead")
    args = p.parse_args(argv)
    rows = measure(path=args.path)
    old = json.loads((RESULTS / "compile_time.json").read_text()) if (
        RESULTS / "compile_time.json").exists() else {}
    runs = dict(old.get("runs", {}))
    runs[args.label] = rows
    path = save("compile_time", {"command": "python benchmarks/compile_time.py", "runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
