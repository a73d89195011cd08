"""Differential testing at a larger budget than the test suite's: random specs with compile-time
control flow around couplings, each compiled and compared with the reference evaluator
(outputs and gradients, reversible and plain mode, float64).

    python benchmarks/difftest.py --examples 2000 [--seed 1]

Prints the number of specs checked, the worst difference seen and the time; exits 1 (with the
spec) on the first difference above the tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings

from revdsl.difftest import compare, program_specs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tol", type=float, default=1e-9)
    args = p.parse_args(argv)
    worst = [0.0, 0]
    start = time.perf_counter()

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @seed(args.seed)
    @given(program_specs())
    def run(text: str) -> None:
        d = compare(text)
        worst[1] += 1
        worst[0] = max(worst[0], d.worst)
        assert d.worst < args.tol, f"{d}\n{text}"

    try:
        run()
    except AssertionError as exc:
        print(f"DIFFERENCE after {worst[1]} specs:\n{exc}")
        return 1
    seconds = time.perf_counter() - start
    print(f"{worst[1]} specs equal to the reference evaluator (worst relative difference "
          f"{worst[0]:.2e}, tolerance {args.tol:g}) in {seconds:.0f} s")
    from benchmarks.common import save

    save("difftest", {"command": f"python benchmarks/difftest.py --examples {args.examples}",
                      "specs": worst[1], "worst": worst[0], "tol": args.tol,
                      "seconds": round(seconds, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
