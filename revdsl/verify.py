"""Stage 4: ir.Program (+ its graph) -> Report. The invertibility verifier.

For every reversible segment it walks the steps in execution order (a phase's updates run in a
topological order of what they read, readers first: `graph.phase_order`) and
discharges one obligation per step:

* Update of stream t to h(t, a1..ak): each atom a_i is an opaque function; the graph's ancestry
  (within the step) says which stream values it reads. Every read must be the current value of a
  stream other than t (a read of t, or of a value some update has since replaced, makes the update
  impossible to undo from the outputs). Every atom must broadcast to t's shape. Then the prover
  (prover.py) decides whether h is a bijection in t and derives the inverse.
* Create (a new stream from others): an injective extension; its reads are checked the same way.
* Restructure (chunk/cat/space_to_depth): a catalogued bijection.

Everything else (stems, stream duplication, transitions, pruning, heads) is a stored boundary:
the report lists what plain autograd keeps there, per sample. All failures are collected, so a user
sees every problem at once; unknown is never treated as proved.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx
import sympy

from revdsl import catalogue, ir
from revdsl.errors import (
    Diagnostics,
    NotInvertibleError,
    OpCheckError,
    RevdslError,
    ShapeError,
    SpecWarning,
)
from revdsl.explain import _display, _fn
from revdsl.graph import UndoNeeds, build_graph, flat_steps, stream_reads, undo_order
from revdsl.memory import Boundary, boundaries, evaluate
from revdsl.prover import Proof, T, prove_update
from revdsl.shapes import Shape, broadcast, fmt_shape, same_shape, simp, to_expr
from revdsl.source import Span
from revdsl.usage import unused_layers


@dataclass(frozen=True)
class StepProof:
    """The obligation of one step and how it was discharged."""

    segment: str
    block: int
    index: int  # position in the block's execution order (graph.flat_steps)
    kind: str  # 'update' | 'create' | 'restructure' | 'bijection' (a bijective layer)
    target: str
    span: Span | None
    verdict: str  # 'proved' | 'refuted' | 'unknown'
    reason: str
    step: ir.Update | ir.Create | ir.Restructure
    atoms: tuple[ir.Node, ...] = ()
    reads: tuple[str, ...] = ()
    formula: sympy.Expr | None = None  # h(t, a0..) in prover symbols
    proof: Proof | None = None
    phase: str | None = None
    errors: tuple[RevdslError, ...] = ()

    @property
    def proved(self) -> bool:
        return self.verdict == "proved" and not self.errors

    @property
    def inverse(self) -> sympy.Expr | None:
        return self.proof.inverse if self.proof else None


@dataclass(frozen=True)
class Report:
    program: ir.Program
    graph: nx.DiGraph = field(repr=False)
    steps: tuple[StepProof, ...]
    boundaries: tuple[Boundary, ...]
    checks: tuple[RevdslError, ...] = ()  # ops' own semantic checks that failed
    warnings: tuple[SpecWarning, ...] = ()  # legal but suspicious (unused layers)

    @property
    def errors(self) -> tuple[RevdslError, ...]:
        return tuple(e for s in self.steps for e in s.errors) + self.checks

    @property
    def ok(self) -> bool:
        return all(s.proved for s in self.steps) and not self.checks

    def step(self, segment: str, block: int, index: int) -> StepProof:
        return self._index[(segment, block, index)]

    @property
    def _index(self) -> dict[tuple[str, int, int], StepProof]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {(s.segment, s.block, s.index): s for s in self.steps}
            object.__setattr__(self, "_cache", cache)
        return cache

    def kept(self, baseline: bool = False) -> list[sympy.Expr]:
        """Per boundary (in order), the bytes per sample it adds to what the backward keeps in
        reversible mode (or under plain autograd): a value kept by an earlier part (a segment's
        outputs that a stored block reads, say) is counted there only."""
        out: list[sympy.Expr] = []
        counted: set[object] = set()
        for b in self.boundaries:
            total: sympy.Expr = sympy.Integer(0)
            for item in (b.baseline if baseline else b.stored):
                if item.node is not None:
                    if item.node in counted:
                        continue
                    counted.add(item.node)
                total = total + item.bytes_per_sample
            out.append(simp(total))
        return out

    def kept_evaluated(self) -> list[tuple[Boundary, sympy.Expr]]:
        """`kept()` per boundary at the model arguments' and call-time options' defaults: the
        one figure that `check`, `viz` and the generated docstring all print."""
        return [(b, evaluate(k, self.program))
                for b, k in zip(self.boundaries, self.kept(), strict=True)]

    def stored_bytes_per_sample(self, baseline: bool = False) -> sympy.Expr:
        """What the backward keeps per sample, each kept value counted once."""
        return simp(sum(self.kept(baseline), sympy.Integer(0)))

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise Diagnostics(self.errors)


def verify(program: ir.Program, graph: nx.DiGraph | None = None) -> Report:
    g = graph if graph is not None else build_graph(program)
    steps: list[StepProof] = []
    for seg in program.segments:
        steps.extend(_verify_segment(program, seg, g))
    if program.functions:  # an error inside a function's body says which calls reach it
        steps = [replace(s, errors=tuple(_in_function(program, e) for e in s.errors))
                 if s.errors else s for s in steps]
    return Report(program=program, graph=g, steps=tuple(steps),
                  boundaries=tuple(boundaries(program)), checks=tuple(op_checks(program)),
                  warnings=(*program.warnings, *unused_layers(program, g)))


def _in_function(program: ir.Program, e: RevdslError) -> RevdslError:
    note = program.in_function(e.span)
    if note is None:
        return e
    return type(e)(e.message, e.span, (*e.notes, note))


def op_checks(program: ir.Program) -> list[RevdslError]:
    """Run every op's own `verify` check (with the call-time options' choices)."""
    options = {o.name: o.choices for o in program.options}
    errors: list[RevdslError] = []
    for node in ir.op_nodes(program):
        opdef = catalogue.get(node.op)
        if opdef is None or opdef.verify is None:
            continue
        attrs = node.attr_dict
        problem = opdef.verify(attrs, options)
        if problem:
            errors.append(OpCheckError(problem, node.span))
    return errors


# ---- one segment ------------------------------------------------------------------------------


def _verify_segment(program: ir.Program, seg: ir.Segment, g: nx.DiGraph) -> list[StepProof]:
    current: dict[str, ir.StreamNode] = {e.stream: e.start for e in seg.entry}
    out: list[StepProof] = []
    for block in seg.blocks:
        first = len(out)
        since = {name: node.version for name, node in current.items()}
        seen = set(since.items())  # the stream values this block has had so far
        phase_of: dict[int, tuple[str | None, list[ir.Update | ir.Create]]] = {}
        for st in block.steps:
            if isinstance(st, ir.Phase):
                for u in st.steps:
                    phase_of[id(u)] = (st.name, list(st.steps))
        for k, step in enumerate(flat_steps(block)):
            phase = phase_of.get(id(step))
            if isinstance(step, ir.Restructure):
                opdef = catalogue.get(step.op)
                assert opdef is not None and opdef.inverse
                out.append(StepProof(
                    segment=seg.name, block=block.index, index=k, kind="restructure",
                    target=", ".join(n.stream for n in step.outputs), span=step.span,
                    verdict="proved",
                    reason=f"{step.op} only rearranges elements; {opdef.inverse} undoes it",
                    step=step,
                ))
                for n in step.inputs:
                    current.pop(n.stream, None)
                for n in step.outputs:
                    current[n.stream] = n
                    seen.add((n.stream, n.version))
                continue
            out.append(_verify_step(seg, block, k, step, current, g, phase, seen))
            current[step.target] = step.after
            seen.add((step.target, step.after.version))
        out[first:] = _schedule(block, out[first:], since)
    return out


def undo_needs(proofs: list[StepProof], since: dict[str, int]
               ) -> tuple[list[UndoNeeds], set[tuple[str, int]]]:
    """What undoing each step of one block takes and gives (for `graph.undo_order`), and the
    block's final values (what its outputs determine)."""
    cur = dict(since)
    needs: list[UndoNeeds] = []
    for sp in proofs:
        step = sp.step
        if isinstance(step, ir.Restructure):
            ins = tuple((n.stream, n.version) for n in step.inputs)
            outs = tuple((n.stream, n.version) for n in step.outputs)
            needs.append(UndoNeeds(produced=outs, reads=(), rebuilt=ins))
            for n in step.inputs:
                cur.pop(n.stream, None)
            cur.update((n.stream, n.version) for n in step.outputs)
            continue
        reads = tuple(read_value(r, cur) for r in sp.reads)
        after = (step.target, step.after.version)
        before = ((step.target, step.before.version),) if isinstance(step, ir.Update) else ()
        needs.append(UndoNeeds(produced=(after,), reads=reads, rebuilt=before))
        cur[step.target] = step.after.version
    return needs, set(cur.items())


def read_value(key: str, current: dict[str, int]) -> tuple[str, int]:
    """A step's read as (stream, version): `b` is b's current value, `b@2` an earlier one."""
    name, _, version = key.partition("@")
    return (name, int(version)) if version else (name, current[name])


def _schedule(block: ir.Block, proofs: list[StepProof], since: dict[str, int]
              ) -> list[StepProof]:
    """Decide, from what the block's outputs determine, whether its steps can be undone in some
    order: a read of a replaced value is refused only when no order recovers it (one error,
    at the first such read)."""
    if not any("@" in r for sp in proofs for r in sp.reads) or any(
            sp.errors for sp in proofs):
        return proofs
    needs, outputs = undo_needs(proofs, since)
    order, stuck = undo_order(needs, outputs)
    for i in _culprits(needs, outputs, order, stuck):
        sp = proofs[i]
        for key in sp.reads:
            if "@" not in key:
                continue
            value = read_value(key, {})
            rival = next(proofs[j] for j, n in enumerate(needs) if value in n.rebuilt)
            line = rival.span.line if rival.span else "?"
            what = (f"the update of {rival.target}" if rival.kind != "restructure"
                    else str(getattr(rival.step, "op", "a rearrangement")))
            reader = _reader(sp, value)
            via = _through_local(block, reader, next(
                n.id for n in ir.walk([reader]) if isinstance(n, ir.StreamNode)
                and (n.stream, n.version) == value))
            err = NotInvertibleError(
                f"the update of {sp.target} reads an earlier value of {value[0]}, which "
                f"{what} at line {line} replaced, and the block's outputs do not determine it: "
                "undoing that step needs what only undoing this one gives back",
                _read_span(sp, value),
                [f"{_fn(reader)} reads {value[0]}{via} as it was before line {line}",
                 "a step may read an earlier value of a stream when the block's outputs "
                 "determine it: undoing the later step must not need this one undone first"])
            out = list(proofs)
            out[i] = replace(sp, verdict="refuted", reason=err.message, errors=(err,))
            return out
    return proofs


def _culprits(needs: list[UndoNeeds], outputs: set[tuple[str, int]], order: list[int],
              stuck: list[int]) -> list[int]:
    """The stuck steps, those on a cycle of waiting first (a step that only waits for a cycle
    is its victim, not its cause)."""
    known = set(outputs)
    for i in order:
        known.difference_update(needs[i].produced)
        known.update(needs[i].rebuilt)
    waits = nx.DiGraph()
    waits.add_nodes_from(stuck)
    for i in stuck:
        for v in (*needs[i].produced, *needs[i].reads):
            if v not in known:
                waits.add_edges_from((i, j) for j in stuck if v in needs[j].rebuilt)
        for v in needs[i].produced:
            waits.add_edges_from((i, j) for j in stuck if j != i and v in needs[j].reads)
    cyclic = {i for c in nx.strongly_connected_components(waits) if len(c) > 1 for i in c}
    return sorted(stuck, key=lambda i: (i not in cyclic, i))


def _reader(sp: StepProof, value: tuple[str, int]) -> ir.Node:
    """The function (atom) of a step that reads the stream value `value`."""
    for a in sp.atoms:
        if any(isinstance(n, ir.StreamNode) and (n.stream, n.version) == value
               for n in ir.walk([a])):
            return a
    return sp.atoms[0]


def _read_span(sp: StepProof, value: tuple[str, int]) -> Span | None:
    return _reader(sp, value).span or sp.span


def _model(step: ir.Update | ir.Create) -> tuple[sympy.Expr, list[ir.Node]]:
    """The update formula over T (the old value) and atom symbols, and the atoms' nodes."""
    before = step.before if isinstance(step, ir.Update) else None
    atoms: list[ir.Node] = []
    index: dict[int, int] = {}
    memo: dict[int, sympy.Expr] = {}

    def atom(node: ir.Node) -> sympy.Expr:
        if node.id not in index:
            index[node.id] = len(atoms)
            atoms.append(node)
        return sympy.Symbol(f"a{index[node.id]}", real=True)

    def go(node: ir.Node) -> sympy.Expr:
        if node.id in memo:
            return memo[node.id]
        if before is not None and node is before:
            e: sympy.Expr = T
        elif isinstance(node, ir.ConstNode):
            e = to_expr(node.value)
        elif isinstance(node, ir.OpNode) and (
            (opdef := catalogue.get(node.op)) is not None and opdef.kind == "algebra"
        ):  # (a shape problem recorded on the node is reported separately)
            assert opdef.sympy_model is not None
            args = [go(c) for c in node.inputs]
            attrs = node.attr_dict
            e = opdef.sympy_model(*args, **attrs)
        else:
            e = atom(node)
        memo[node.id] = e
        return e

    return go(step.expr), atoms


def _verify_step(seg: ir.Segment, block: ir.Block, k: int, step: ir.Update | ir.Create,
                 current: dict[str, ir.StreamNode], g: nx.DiGraph,
                 phase: tuple[str | None, list[ir.Update | ir.Create]] | None,
                 seen: set[tuple[str, int]]) -> StepProof:
    kind = "update" if isinstance(step, ir.Update) else "create"
    bij = _bijective_layer(step)
    if bij is not None:  # `x = inv_conv1x1(x)`: a bijection by construction
        opdef = catalogue.get(bij.op)
        assert opdef is not None and opdef.bijective is not None
        return StepProof(
            segment=seg.name, block=block.index, index=k, kind="bijection", target=step.target,
            span=step.span, verdict="proved",
            reason=f"{bij.op} is a bijection by construction: {opdef.bijective}", step=step,
            atoms=(bij,), phase=phase[0] if phase else None)
    formula, atoms = _model(step)
    errors: list[RevdslError] = []
    lossy = _lossy_op(step)
    if lossy is not None:  # e.g. token pruning: say so, rather than the symptoms it causes
        # one error per discarding op, naming every stream it would update
        shared = [u.target for u in flat_steps(block) if isinstance(u, ir.Update)
                  and _lossy_op(u) is lossy]
        first = shared[0] == step.target if shared else True
        err = NotInvertibleError(
            f"{lossy.op} discards information, so a step that applies it to "
            f"{' and '.join(sorted(shared)) or step.target} cannot be undone",
            lossy.span or step.span,
            [f"put {lossy.op} in a stored `block` between reversible segments: it is "
             "recomputed there from its (stored) inputs; inside a coupling it may only "
             "read the other streams"],
        )
        return StepProof(
            segment=seg.name, block=block.index, index=k, kind=kind, target=step.target,
            span=step.span, verdict="refuted", reason=err.message, step=step,
            atoms=tuple(atoms), formula=formula, errors=(err,) if first else (),
        )
    target = step.target
    reads: dict[str, None] = {}
    # 1. what each opaque function reads (ancestry within the step, in the graph)
    for node in atoms:
        stream_ids = {node.id} if isinstance(node, ir.StreamNode) else stream_reads(g, node.id)
        for sid in sorted(stream_ids):
            d = g.nodes[sid]
            name, version = d["stream"], d["version"]
            where = node.span or step.span
            via = _through_local(block, node, sid)
            if name == target:
                errors.append(NotInvertibleError(
                    f"{target} is updated by a function that reads {target}, so the update "
                    "cannot be undone",
                    where,
                    [f"{_fn(node)} depends on {target}{via}"
                     + ("" if isinstance(step, ir.Update) and version == step.before.version
                        else " as it was before an earlier update"),
                     "a coupling step may read only the other streams"],
                ))
                continue
            cur = current.get(name)
            if (name, version) in seen and (cur is None or cur.version != version) and (
                    not _phase_rival(phase, name)):
                # an earlier value replaced in this block: kept if the outputs determine it
                reads[f"{name}@{version}"] = None  # (decided for the whole block: _schedule)
                continue
            if cur is None or cur.version != version:
                errors.append(_stale_read(step, node, name, version, cur, phase, via))
                continue
            reads[name] = None
    # 2. shapes: a coupling never changes its stream's shape
    if isinstance(step, ir.Update):
        errors.extend(_shape_errors(step, atoms))
    for node in ir.walk([step.expr], stop={n.id for n in atoms}):
        problem = node.problem if isinstance(node, ir.OpNode) else None
        if problem and not any(isinstance(e, ShapeError) for e in errors):
            errors.append(ShapeError(f"{target}: {problem}", node.span or step.span))
    proof = None
    if kind == "create":
        verdict = "proved" if not errors else "refuted"
        reason = ("a new stream computed from the others: dropped again in the inverse, "
                  "its gradient flows into what it read")
    elif errors:
        verdict, reason = "refuted", errors[0].message
    else:
        proof = prove_update(formula, len(atoms))
        verdict, reason = proof.verdict, proof.reason
        if not proof.proved:
            errors.append(NotInvertibleError(
                f"the update of {target} cannot be undone: {reason}"
                if proof.verdict == "refuted"
                else f"revdsl cannot prove that the update of {target} can be undone: {reason}",
                step.span,
                [f"update: {target} <- {_display(formula, target, atoms)}"],
            ))
    return StepProof(
        segment=seg.name, block=block.index, index=k, kind=kind, target=target, span=step.span,
        verdict=verdict, reason=reason, step=step, atoms=tuple(atoms), reads=tuple(reads),
        formula=formula, proof=proof, phase=phase[0] if phase else None, errors=tuple(errors),
    )


def _bijective_layer(step: ir.Update | ir.Create) -> ir.OpNode | None:
    """The layer when a step applies a bijective layer to the stream itself and nothing else."""
    if not isinstance(step, ir.Update) or not isinstance(step.expr, ir.OpNode):
        return None
    opdef = catalogue.get(step.expr.op)
    if opdef is None or opdef.bijective is None or step.expr.inputs != (step.before,):
        return None
    return step.expr


def _through_local(block: ir.Block, atom: ir.Node, stream_id: int) -> str:
    """`" through 'u' (line 5)"` when the atom reads the stream via a value named in the block."""
    inside = {n.id for n in ir.walk([atom])}
    for name, node in block.locals:
        if node.id in inside and node.id != atom.id and any(
            n.id == stream_id for n in ir.walk([node])
        ):
            line = f" (line {node.span.line})" if node.span else ""
            return f" through '{name}'{line}"
    return ""


def _lossy_op(step: ir.Update | ir.Create) -> ir.OpNode | None:
    """The first op in an update that discards information (`boundary_only`) about the stream
    it updates. Inside the function of a coupling, such an op is an ordinary function of the
    other streams (and a new stream is dropped again by the inverse): only one that reads the
    updated stream makes the step lossy."""
    if not isinstance(step, ir.Update):
        return None
    for n in ir.walk([step.expr]):
        if isinstance(n, ir.OpNode):
            opdef = catalogue.get(n.op)
            if opdef is not None and opdef.boundary_only and step.before.id in {
                    m.id for m in ir.walk(list(n.inputs))}:
                return n
    return None


def _phase_rival(phase: tuple[str | None, list[ir.Update | ir.Create]] | None,
                 name: str) -> bool:
    return phase is not None and any(u.target == name for u in phase[1])


def _stale_read(step: ir.Update | ir.Create, node: ir.Node, name: str, version: int,
                cur: ir.StreamNode | None,
                phase: tuple[str | None, list[ir.Update | ir.Create]] | None,
                via: str = "") -> RevdslError:
    where = node.span or step.span
    if cur is None:
        return NotInvertibleError(
            f"the update of {step.target} reads {name}, which no longer exists at this point",
            where,
        )
    if phase is not None:
        other = [u for u in phase[1] if u.target == name]
        if other:
            return NotInvertibleError(
                f"the update of {step.target} reads {name}, which this phase also updates "
                f"(line {other[0].span.line if other[0].span else '?'}), and the phase's updates "
                "read each other in a cycle, so the phase cannot be undone in any order",
                where,
                ["every update of a phase reads the values from before the phase; the phase can "
                 "be undone when no update reads, directly or through others, the stream it "
                 "updates"],
            )
    return NotInvertibleError(
        f"the update of {step.target} reads an earlier value of {name}, which a later update "
        "has replaced; it is not available when this step is undone",
        where,
        [f"{_fn(node)} reads {name}{via} as it was before an update"],
    )


def _shape_errors(step: ir.Update, atoms: list[ir.Node]) -> list[RevdslError]:
    target_shape = step.before.shape
    errs: list[RevdslError] = []
    whole = step.expr.shape
    for node in atoms:
        b = broadcast([node.shape, target_shape])
        if b is not None and same_shape(b, target_shape):
            continue
        culprit = _shape_culprit(node, target_shape)
        hint = []
        if culprit is not None:
            opdef = catalogue.get(culprit.op)
            if opdef is not None and opdef.coupling_hint is not None:
                msg = opdef.coupling_hint(culprit.attr_dict)
                if msg:
                    hint.append(msg)
        where = (culprit.span if culprit is not None else None) or node.span or step.span
        errs.append(ShapeError(
            f"the function applied to {step.target} has shape {fmt_shape(node.shape)}, but "
            f"{step.target} has shape {fmt_shape(target_shape)}: a reversible step cannot "
            "change a stream's shape",
            where,
            hint or ["a change of resolution, width or token count belongs in a stored "
                     "transition between reversible segments"],
        ))
        return errs
    if not same_shape(whole, target_shape) and not errs:
        errs.append(ShapeError(
            f"the new value of {step.target} has shape {fmt_shape(whole)}, but {step.target} "
            f"has shape {fmt_shape(target_shape)}",
            step.span,
        ))
    return errs


def _shape_culprit(node: ir.Node, target: Shape) -> ir.OpNode | None:
    """The first op (in dataflow order) whose output shape departs from the target shape."""
    for n in ir.walk([node]):
        if isinstance(n, ir.OpNode) and not same_shape(n.shape, target) and all(
            same_shape(c.shape, target) for c in n.inputs
        ):
            return n
    return None


# ---- stored boundaries ------------------------------------------------------------------------


def check(program: ir.Program) -> Report:
    """Verify and raise a Diagnostics error listing every failure."""
    report = verify(program)
    report.raise_if_failed()
    return report


__all__ = ["Boundary", "Report", "StepProof", "check", "verify"]
