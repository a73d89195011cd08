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
from revdsl.shapes import B, Shape, per_sample, simp, to_expr
from revdsl.source import Span

BYTES_PER_ELEMENT = 4  # float32 activations


@dataclass(frozen=True)
class Stored:
    what: str
    shape: Shape
    bytes_per_sample: sympy.Expr
    # the value kept, when it is a value of the program (counted once overall, however many
    # ops keep it: the allocator holds one storage); None for an op's own new tensors
    node: Any = None


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
    counted: set[Any] = set()
    for s in items:
        if s.node is not None:
            if s.node in counted:
                continue
            counted.add(s.node)
        total = total + s.bytes_per_sample
    return simp(total)


def boundaries(program: ir.Program) -> list[Boundary]:
    """What is stored for the backward, part by part, in reversible mode and in plain autograd."""
    out: list[Boundary] = []
    _NEEDS_GRAD.clear()
    _STREAM_FROM.clear()
    _STORAGE.clear()
    for seg in program.segments:  # what each stream value is computed from
        for e in seg.entry:
            _STREAM_FROM[e.start.id] = [e.node]
            _STORAGE[e.start.id] = e.node
        for block in seg.blocks:
            for step in flat_steps(block):
                if isinstance(step, ir.Restructure):
                    opdef = catalogue.get(step.op)
                    for k, n in enumerate(step.outputs):
                        _STREAM_FROM[n.id] = list(step.inputs)
                        if opdef is not None and opdef.views_input:
                            # a renaming keeps each stream's storage; chunk's pieces share one
                            _STORAGE[n.id] = step.inputs[k] if step.op == "rename" \
                                else step.inputs[0]
                else:
                    _STREAM_FROM[step.after.id] = [step.expr]
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
                       node=value_key(storage_of(n)))
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
        # a segment that autograd does not track (no parameters, inputs without gradient)
        # runs as plain code and keeps nothing
        tracked = any(_needs_grad(n) for n in (*item.exits, *(e.start for e in item.entry)))
        stored = tuple(
            Stored(f"{n.stream} (segment output)", n.shape,
                   per_sample(n.shape) * BYTES_PER_ELEMENT, node=value_key(storage_of(n)))
            for n in item.exits if tracked
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
    """The ops under `roots` not yet counted, and what plain autograd saves for them: an op
    whose result needs no gradient saves nothing; a saved input or output is the program's
    value (`Stored.node` says which, so it is counted once); a new tensor is the op's own."""
    ops: list[str] = []
    stored: list[Stored] = []
    for node in ir.walk(roots, stop=seen):
        seen.add(node.id)
        if not isinstance(node, ir.OpNode):
            continue
        opdef = catalogue.get(node.op)
        assert opdef is not None
        ops.append(node.op)
        if not _needs_grad(node):
            continue
        in_shapes = [c.shape for c in node.inputs]
        attrs = node.attr_dict
        for item in opdef.saved(in_shapes, list(node.out_shapes), attrs):
            if isinstance(item, catalogue.Ref):
                if item.when is not None and not _needs_grad(node.inputs[item.when]):
                    continue
                if item.side == "in":
                    value = storage_of(node.inputs[item.index])
                    if isinstance(value, ir.ConstNode):
                        continue  # a number: nothing kept
                    shape, key = value.shape, value_key(value)
                else:
                    shape, key = node.out_shapes[item.index], (node.id, item.index)
                stored.append(Stored(node.op, tuple(shape),
                                     per_sample(shape) * BYTES_PER_ELEMENT, node=key))
            elif isinstance(item, catalogue.Buffer):
                stored.append(Stored(node.op, tuple(item.shape),
                                     per_sample(item.shape) * item.itemsize))
            else:
                stored.append(Stored(node.op, tuple(item), per_sample(item) * BYTES_PER_ELEMENT))
    return ops, stored


def block_costs(program: ir.Program) -> dict[str, list[tuple[int, int]]]:
    """Per reversible segment, per block: (the bytes per sample plain autograd keeps for it,
    its MACs per sample), at the model arguments' and options' defaults: what keeping a block's
    activations costs and what it saves (its recompute) for the memory planner. A stored block
    recomputed in the backward (a stage transition) is one more entry, under its name, with one
    row: what keeping its activations (no recompute) costs and saves."""
    parts = boundaries(program)  # (also fills the views and gradient tables _stored_by reads)
    out: dict[str, list[tuple[int, int]]] = {}
    plain = {pb.name: pb for pb in program.plain_blocks}
    for b in parts:
        if not b.recomputed or b.name not in plain:
            continue
        size = evaluate(sum((x.bytes_per_sample for x in b.baseline), sympy.Integer(0)), program)
        macs = sympy.Integer(0)
        for n in ir.walk(list(b.roots), stop={x.id for x in plain[b.name].inputs}):
            if isinstance(n, ir.OpNode):
                macs = macs + op_costs(n)[1]
        out[b.name] = [(_int(size), _int(evaluate(macs, program)))]
    for seg in program.segments:
        rows = []
        for block in seg.blocks:
            steps = [s for s in flat_steps(block) if not isinstance(s, ir.Restructure)]
            seen = {n.id for n in block.inputs}
            _ops, saved = _stored_by([s.expr for s in steps], seen)
            size = evaluate(sum((s.bytes_per_sample for s in saved), sympy.Integer(0)), program)
            macs = sympy.Integer(0)
            for n in ir.walk([s.expr for s in steps], stop={x.id for x in block.inputs}):
                if isinstance(n, ir.OpNode):
                    macs = macs + op_costs(n)[1]
            rows.append((_int(size), _int(evaluate(macs, program))))
        out[seg.name] = rows
    return out


def op_costs(node: ir.OpNode) -> tuple[sympy.Expr, sympy.Expr]:
    """(parameters, MACs per sample) of one op application, from its catalogue entry. An op
    whose parameters are known only once it is built (an extern module) counts 0 here."""
    opdef = catalogue.get(node.op)
    assert opdef is not None
    attrs = node.attr_dict
    shapes = [c.shape for c in node.inputs]
    params: sympy.Expr = sympy.Integer(0)
    if opdef.has_module:
        try:
            params = to_expr(opdef.params(shapes, attrs))
        except (KeyError, TypeError, ValueError):
            params = sympy.Integer(0)
    macs = to_expr(opdef.macs(shapes, list(node.out_shapes), attrs))
    return params, macs / B if macs.has(B) else macs


def _int(v: Any) -> int:
    v = sympy.sympify(v)
    return int(v) if v.is_number else 0


def value_key(node: ir.Node) -> tuple[int, int]:
    """One key per value of the program: an op's k-th result is (op id, k)."""
    if isinstance(node, ir.OutNode):
        return (node.source.id, node.index)
    return (node.id, 0)


def _needs_grad(node: ir.Node) -> bool:
    """Whether autograd tracks `node` in training: it depends on a parameter or on a stream
    (the inputs of a model need no gradient; numbers and the like neither)."""
    memo = _NEEDS_GRAD
    if node.id in memo:
        return memo[node.id]
    if isinstance(node, ir.StreamNode):
        memo[node.id] = True  # (a stream value is defined once; this guards the recursion)
        out = any(_needs_grad(n) for n in _STREAM_FROM.get(node.id, [node]) if n is not node) \
            if node.id in _STREAM_FROM else True
    elif isinstance(node, ir.OutNode):
        out = _needs_grad(node.source)
    elif isinstance(node, ir.OpNode):
        opdef = catalogue.get(node.op)
        out = (opdef is not None and opdef.has_parameters([c.shape for c in node.inputs],
                                                          node.attr_dict)
               ) or any(_needs_grad(c) for c in node.inputs)
    else:
        out = False
    memo[node.id] = out
    return out


_NEEDS_GRAD: dict[int, bool] = {}
_STREAM_FROM: dict[int, list[ir.Node]] = {}
_STORAGE: dict[int, ir.Node] = {}  # a value -> the value whose storage it is (views, aliases)


def storage_of(node: ir.Node) -> ir.Node:
    """The value whose storage `node` is: itself, or (for a stream that starts as a copy, a
    chunk piece, dup's copies) the value it views."""
    while True:
        if node.id in _STORAGE:
            node = _STORAGE[node.id]
        elif isinstance(node, ir.OutNode) and (
                (opdef := catalogue.get(node.source.op)) is not None and opdef.views_input):
            node = node.source.inputs[0]
        else:
            return node


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
