"""Model-level controls the generated model exposes: the reconstruction guard
(`set_reconstruction_guard`, `reconstruction_error`) and the memory plan (`set_plan`,
`plan_blocks`: which blocks of each reversible segment keep their activations instead of
being recomputed), and chunked recompute (`set_recompute_chunks`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from revdsl.runtime.engine import ReversibleSegment


def reconstruction_errors(model: nn.Module) -> dict[str, float | None]:
    """`model.reconstruction_error()`: each reversible segment's error at the last backward."""
    return {name: m.last_reconstruction_error for name, m in model.named_modules()
            if isinstance(m, ReversibleSegment)}


def set_reconstruction_guard(model: nn.Module, threshold: float | None = 1e-2) -> None:
    """`model.set_reconstruction_guard(...)`: turn the guard on (a threshold) or off (None)."""
    for m in model.modules():
        if isinstance(m, ReversibleSegment):
            m.guard = threshold
            m.last_reconstruction_error = None


def set_recompute_chunks(model: nn.Module, chunks: int = 1) -> None:
    """`model.set_recompute_chunks(n)`: recompute and backpropagate every row-wise step (one
    whose functions treat each token alone: MLP, LayerNorm, linear; not attention) in `n`
    chunks of tokens. Gradients are the same (summed over chunks); the backward's working set
    is that of one chunk. 1: in one piece."""
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise ValueError(f"chunks must be a positive integer, got {chunks!r}")
    for m in model.modules():
        if isinstance(m, ReversibleSegment):
            m.recompute_chunks = chunks


def set_plan(model: nn.Module, plan: dict[str, Any] | None) -> None:
    """`model.set_plan(plan)`: per reversible segment (by name), which blocks run reversibly
    (True: recomputed in the backward) and which keep their activations (False: plain autograd,
    no recompute); per stored block (a transition, by name), one entry: recomputed from its
    inputs (True) or its activations kept (False). None: everything recomputed. Weights and
    results do not change."""
    segments = {name: m for name, m in model.named_modules() if isinstance(m, ReversibleSegment)}
    stored = {name: m for name, m in model.named_children() if getattr(m, "STORED", False)}
    for name in plan or {}:
        if name not in segments and name not in stored:
            raise KeyError(f"no reversible segment or stored block {name!r} (segments: "
                           f"{', '.join(segments)}; stored blocks: {', '.join(stored) or '-'})")
    for name, seg in segments.items():
        choice = None if plan is None else plan.get(name)
        if choice is not None and len(choice) != len(seg.blocks):
            raise ValueError(f"the plan for segment {name!r} has {len(choice)} entries; it has "
                             f"{len(seg.blocks)} blocks")
        seg.plan = None if choice is None else tuple(bool(c) for c in choice)
    for name, block in stored.items():
        choice = None if plan is None else plan.get(name)
        if choice is not None and len(choice) != 1:
            raise ValueError(f"the plan for stored block {name!r} has {len(choice)} entries; "
                             "it takes one (recompute: True, keep: False)")
        block.recompute_planned = True if choice is None else bool(choice[0])


def plan_blocks(costs: dict[str, Any], kept: float, batch: int, budget: float
                ) -> dict[str, list[bool]]:
    """`model.plan(batch, budget)`: a plan for `set_plan` that keeps the activations of the
    blocks saving the most recompute per byte (`costs`: per segment, per block, the predicted
    bytes per sample plain autograd keeps and the MACs per sample, from the spec's shapes) for
    as long as the predicted memory kept for the backward, `batch * (kept + the kept blocks'
    bytes)`, stays within `budget` bytes. A budget below the fully reversible figure gives the
    fully reversible plan."""
    used = float(kept) * batch
    plan = {name: [True] * len(blocks) for name, blocks in costs.items()}
    order = sorted(((macs / max(size, 1.0), name, i, size)
                    for name, blocks in costs.items() for i, (size, macs) in enumerate(blocks)),
                   key=lambda t: (-t[0], t[1], t[2]))
    for _, name, i, size in order:
        if used + size * batch <= budget:
            plan[name][i] = False
            used += size * batch
    return plan
