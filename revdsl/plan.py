"""`revdsl plan SPEC --batch N --budget 2GiB`: which blocks of each reversible segment to keep
(their activations stored, no recompute) so that the memory kept for the backward stays within
a budget while the recompute saved is largest; the generated model takes the plan with
`model.set_plan(plan)` (the same choice as `model.plan(batch, budget)`, from the same
predictions: `revdsl stats`' bytes per block and MACs)."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

_UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6,
          "GB": 10**9}


def parse_bytes(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (write e.g. 512MiB or 20GiB)")
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def plan_for(report: Any, batch: int, budget: float) -> dict[str, Any]:
    from revdsl.memory import block_costs
    from revdsl.runtime.controls import plan_blocks

    costs = {k: tuple(v) for k, v in block_costs(report.program).items()}
    kept = report.stored_bytes_per_sample()
    kept_n = int(kept) if getattr(kept, "is_number", False) else 0
    plan = plan_blocks(costs, kept_n, batch, budget)
    predicted = batch * (kept_n + sum(size for name, rows in costs.items()
                                      for keep, (size, _) in zip(plan[name], rows, strict=True)
                                      if not keep))
    saved_macs = sum(macs for name, rows in costs.items()
                     for keep, (_, macs) in zip(plan[name], rows, strict=True) if not keep)
    total_macs = sum(macs for rows in costs.values() for _, macs in rows)
    return {"plan": plan, "batch": batch, "budget": budget, "predicted_bytes": predicted,
            "reversible_bytes": batch * kept_n, "recompute_saved": saved_macs / max(total_macs, 1)}


def cmd_plan(args: argparse.Namespace) -> int:
    from revdsl.errors import RevdslError
    from revdsl.files import parse_sets, read_spec
    from revdsl.pipeline import check_text

    try:
        budget = parse_bytes(args.budget)
    except ValueError as exc:
        raise RevdslError(f"--budget: {exc}") from None
    report = check_text(read_spec(args.spec), args.spec, parse_sets(args.set))
    report.raise_if_failed()
    out = plan_for(report, args.batch, budget)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    stored = {pb.name for pb in report.program.plain_blocks}
    for name, choice in out["plan"].items():
        kept = [i for i, c in enumerate(choice) if not c]
        if name in stored:
            print(f"{name}: {'keep its activations' if kept else 'recompute it'} (stored block)")
        else:
            print(f"{name}: keep blocks {kept or 'none'} of {len(choice)}")
    print(f"predicted memory kept for the backward at batch {args.batch}: "
          f"{out['predicted_bytes'] / 2**20:.1f} MiB (fully reversible "
          f"{out['reversible_bytes'] / 2**20:.1f} MiB; budget {args.budget}); recompute saved: "
          f"{100 * out['recompute_saved']:.0f}% of the recomputed MACs")
    if out["reversible_bytes"] > out["budget"]:
        print(f"warning: the budget is below what the fully reversible model keeps "
              f"({out['reversible_bytes'] / 2**20:.1f} MiB): a smaller batch would fit")
    print(f"use it: model.set_plan({out['plan']!r})")
    return 0


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("plan", help="choose which blocks keep their activations within a budget")
    spec_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--budget", required=True, help="memory kept for the backward, e.g. 20GiB")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
