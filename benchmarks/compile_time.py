"""Compile time of every shipped spec: `revdsl compile` in-process (parse, lower, verify,
generate), best of 5 after one warm-up, and `revdsl check` the same way.

    python benchmarks/compile_time.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    from revdsl.pipeline import check_text, compile_text

    print(f"{'spec':22s} {'compile (s)':>12s} {'check (s)':>10s}")
    for spec in sorted((ROOT / "specs").glob("*.rev")):
        text = spec.read_text()
        c = best(lambda: compile_text(text, spec.name))  # noqa: B023
        k = best(lambda: check_text(text, spec.name))  # noqa: B023
        print(f"{spec.name:22s} {c:12.3f} {k:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
