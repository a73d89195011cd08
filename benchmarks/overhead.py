"""The reversible backward's overhead beyond its floor (issue 19, part 2).

Full recompute costs at least one extra forward, so the floor of a reversible training step is
the baseline's step plus one forward without grad. The overhead is what is left:

    overhead = (reversible step - baseline step) / (forward without grad)   (floor: 1.0)

One configuration per fresh process; inside it the three timings alternate round by round
(reversible step, baseline step, forward without grad) and each keeps the fastest of its
rounds' medians (the machine's noise only ever slows a run down).

    python benchmarks/overhead.py --spec specs/rev_vit.rev --set depth=6 --batch 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

MODES = ("reversible", "baseline", "checkpoint", "forward")


def measure(spec: str, sets: list[str], batch: int, rounds: int = 3, steps: int = 5,
            threads: int = 2, modes: tuple[str, ...] = MODES, chunks: int = 1
            ) -> dict[str, Any]:
    import torch

    import revdsl
    from revdsl.files import parse_sets

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = revdsl.load(spec, **parse_sets(sets)).create_model().train()
    size = int(parse_sets(sets).get("image", 224))
    x = torch.randn(batch, 3, size, size)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def median(fn: Any) -> float:
        fn()  # warm-up
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    got: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):  # the modes alternate, so that all of them see the same noise
        for mode in modes:
            model.reversible = mode in ("reversible", "chunked")
            model.checkpoint = mode == "checkpoint"
            model.set_recompute_chunks(chunks if mode == "chunked" else 1)
            got[mode].append(median(forward if mode == "forward" else step))
    best = {k: min(v) for k, v in got.items()}
    out: dict[str, Any] = {"spec": spec, "sets": sets, "batch": batch, **best, "rounds": got}
    if {"reversible", "baseline", "forward"} <= set(best):
        out["overhead"] = (best["reversible"] - best["baseline"]) / best["forward"]
        out["time_vs_baseline"] = best["reversible"] / best["baseline"]
    if {"checkpoint", "baseline", "forward"} <= set(best):
        # the same formula for per-block checkpointing, which also recomputes every block
        out["checkpoint_overhead"] = (best["checkpoint"] - best["baseline"]) / best["forward"]
    if {"chunked", "reversible"} <= set(best):  # what token-chunked recompute costs
        out["chunks"] = chunks
        out["chunk_cost"] = best["chunked"] / best["reversible"] - 1
        out["chunk_cost_rounds"] = [c / r - 1 for c, r in zip(got["chunked"], got["reversible"],
                                                              strict=True)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="specs/rev_vit.rev")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--chunks", type=int, default=0, help="time only the reversible step "
                   "and the same with set_recompute_chunks(N), alternating: the chunk cost")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    modes = ("reversible", "chunked") if args.chunks else MODES
    r = measure(args.spec, args.set, args.batch, args.rounds, args.steps, modes=modes,
                chunks=max(args.chunks, 1))
    if args.json:
        print(json.dumps(r))
    elif args.chunks:
        print(f"{args.spec} {' '.join(args.set)} batch {args.batch}: reversible "
              f"{r['reversible']:.4f} s, {args.chunks} chunks {r['chunked']:.4f} s: cost "
              f"{100 * r['chunk_cost']:+.1f}% (rounds: "
              + ", ".join(f"{100 * c:+.1f}%" for c in r["chunk_cost_rounds"]) + ")")
    else:
        print(f"{args.spec} {' '.join(args.set)} batch {args.batch}: reversible "
              f"{r['reversible']:.4f} s, baseline {r['baseline']:.4f} s, forward "
              f"{r['forward']:.4f} s: overhead {r['overhead']:.3f} (floor 1.0; per-block "
              f"checkpointing {r['checkpoint_overhead']:.3f}), "
              f"{r['time_vs_baseline']:.3f}x the baseline's step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
