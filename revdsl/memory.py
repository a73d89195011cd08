"""What the backward keeps: the stored boundaries of a program (stems, stage transitions, heads,
stored blocks and each segment's outputs) and the bytes per sample they keep, in reversible
mode and under plain autograd, as symbolic expressions of the batch-free sizes. `revdsl stats`,
`check`, `viz` and the generated docstring all print these figures (through `Report.kept`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl import catalogue, ir
from revdsl.graph import flat_steps
from revdsl.shapes import Shape, per_sample, simp, to_expr
from revdsl.source import Span

BYTES_PER_ELEMENT = 4  # float32 activations


@dataclass(frozen=True)
class Stored:
    what: str
    shape: Shape
    bytes_per_sample: sympy.Expr
    node: int | None = None  # the value kept, when it is a named one (counted once overall)


@dataclass(frozen=True)
class Boundary:
    """A part of the model and what the backward keeps of it.

    `stored`: what the generated module keeps per sample in reversible mode; `baseline`: what
    plain autograd keeps (every activation). For a segment, the first is its outputs; for a
    named block, its inputs (it is recomputed); for loose statements, what their ops save."""

    kind: str  # 'stem' | 'transition' | 'head' | 'segment'
    name: str
    span: Span | None
    ops: tuple[str, ...]
    stored: tuple[Stored, ...]
    note: str = ""
    baseline: tuple[Stored, ...] = ()
    roots: tuple[ir.Node, ...] = field(default=(), repr=False)  # the values it computes
    recomputed: bool = False  # a named block: its inputs are kept, it runs again in the backward

    @property
    def bytes_per_sample(self) -> sympy.Expr:
        return _total(self.stored)

    @property
    def baseline_bytes_per_sample(self) -> sympy.Expr:
        return _total(self.baseline)


def _total(items: tuple[Stored, ...]) -> sympy.Expr:
    total: sympy.Expr = sympy.Integer(0)
    for s in items:
        total = total + s.bytes_per_sample
    return simp(total)


def boundaries(program: ir.Program) -> list[Boundary]:
    """What is stored for the backward, part by part, in reversible mode and in plain autograd."""
    out: list[Boundary] = []
    seen: set[int] = {n.id for n in program.inputs}
    region: list[ir.Assign] = []
    kind_of_region = "stem"

    def flush(kind: str) -> None:
        nonlocal region
        if not region:
            return
        roots = [v for a in region for v in a.values]
        ops, stored = _stored_by(roots, seen)
        name = kind if kind != "transition" else f"transition after {last_segment}"
        out.append(Boundary(kind=kind, name=name, span=region[0].span, ops=tuple(ops),
                            stored=tuple(stored), baseline=tuple(stored), roots=tuple(roots)))
        region = []

    last_segment = ""
    for item, kind in program.regions():
        if isinstance(item, ir.Assign):
            region.append(item)
            kind_of_region = kind
            continue
        flush(kind_of_region)
        if isinstance(item, ir.PlainBlock):
            roots = [v for a in item.assigns for v in a.values]
            ops, baseline = _stored_by(roots, seen)
            kept = tuple(
                Stored(f"input of {item.name}", n.shape, per_sample(n.shape) * BYTES_PER_ELEMENT,
                       node=n.id)
                for n in item.inputs
            )
            out.append(Boundary(
                kind=kind, name=item.name, span=item.span, ops=tuple(ops),
                stored=kept, baseline=tuple(baseline),
                note="recomputed from its inputs in the backward", roots=tuple(roots),
                recomputed=True,
            ))
            continue
        entry_roots = [v for a in item.entry_assign for v in a.values]
        entry_ops, entry_saved = _stored_by(entry_roots, seen)
        for e in item.entry:
            seen.add(e.start.id)
        stored = tuple(
            Stored(f"{n.stream} (segment output)", n.shape,
                   per_sample(n.shape) * BYTES_PER_ELEMENT, node=n.id)
            for n in item.exits
        )
        baseline = list(entry_saved)
        step_roots: list[ir.Node] = list(entry_roots)
        for block in item.blocks:
            for step in flat_steps(block):
                if isinstance(step, ir.Restructure):
                    continue
                _ops, saved = _stored_by([step.expr], set(seen))
                baseline.extend(saved)
                step_roots.append(step.expr)
        out.append(Boundary(
            kind="segment", name=item.name, span=item.span, ops=tuple(entry_ops),
            stored=tuple(entry_saved) + stored,
            note=f"{len(item.blocks)} reversible blocks; only the outputs are kept",
            baseline=tuple(baseline), roots=tuple(step_roots),
        ))
        for n in item.exits:
            seen.add(n.id)
        last_segment = item.name
    flush(kind_of_region)
    return out


def _stored_by(roots: list[ir.Node], seen: set[int]) -> tuple[list[str], list[Stored]]:
    """The ops under `roots` not yet counted, and what plain autograd saves for them."""
    ops: list[str] = []
    stored: list[Stored] = []
    for node in ir.walk(roots, stop=seen):
        seen.add(node.id)
        if not isinstance(node, ir.OpNode):
            continue
        opdef = catalogue.get(node.op)
        assert opdef is not None
        ops.append(node.op)
        in_shapes = [c.shape for c in node.inputs]
        attrs = node.attr_dict
        for shape in opdef.saved(in_shapes, list(node.out_shapes), attrs):
            stored.append(Stored(node.op, tuple(shape), per_sample(shape) * BYTES_PER_ELEMENT))
    return ops, stored


def evaluate(expr: Any, program: ir.Program, options: bool = True) -> sympy.Expr:
    """Substitute model-argument defaults (and, with `options`, call-time option defaults)."""
    e = to_expr(expr)
    values: dict[sympy.Symbol, Any] = {}
    for p in program.params:
        if p.symbol is not None:
            values[p.symbol] = to_expr(p.default)
    if options:
        for o in program.options:
            if o.symbol is not None:
                values[o.symbol] = to_expr(o.default)
    return simp(e.subs(values))
