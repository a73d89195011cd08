"""Stage 3: ir.Program -> networkx.DiGraph (a view of the IR, never its source of truth).

Nodes are keyed by IR node id (ints) plus a few synthetic keys for rearrangements. Every node
carries `kind` ('input', 'stream', 'op', 'out', 'const', 'restructure'), `label`, `op`, `shape`
(symbolic), `span` (source position), and where it lives: `region` ('stem', 'segment',
'transition', 'head'), `segment`, `block` and `step` (indices) when inside a segment. Edges go from
producer to consumer; `kind` on an edge is 'data', 'update' (an update's value becoming the
stream's next version), 'entry' or 'restructure'.

The verifier asks ancestry questions of it ("which stream values does this function read?");
`revdsl viz` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from revdsl import ir
from revdsl.shapes import fmt_shape


def build_graph(program: ir.Program) -> nx.DiGraph:
    g = nx.DiGraph(name=program.name)
    seen: set[int] = set()

    def add_tree(roots: Iterable[ir.Node], **where: Any) -> None:
        for node in ir.walk(list(roots), stop=seen):
            seen.add(node.id)
            _add_node(g, node, **where)
            for child in ir.children(node):
                if child.id not in g:
                    _add_node(g, child, **where)
                g.add_edge(child.id, node.id, kind="data")

    for inp in program.inputs:
        _add_node(g, inp, region="stem")
        seen.add(inp.id)
    segments_seen = 0
    for item, region in program.regions():
        if isinstance(item, ir.Assign | ir.PlainBlock):
            if isinstance(item, ir.PlainBlock):
                for a in item.assigns:
                    add_tree(a.values, region=region, group=item.name)
            else:
                add_tree(item.values, region=region)
            continue
        seg_index = segments_seen
        segments_seen += 1
        for a in item.entry_assign:
            add_tree(a.values, region="stem" if seg_index == 0 else "transition")
        for e in item.entry:
            _add_node(g, e.start, region="segment", segment=item.name, block=-1, step=-1)
            seen.add(e.start.id)
            g.add_edge(e.node.id, e.start.id, kind="entry")
        for block in item.blocks:
            for k, step in enumerate(flat_steps(block)):
                where = {"region": "segment", "segment": item.name, "block": block.index,
                         "step": k}
                if isinstance(step, ir.Restructure):
                    key = f"{item.name}.{block.index}.{k}.{step.op}"
                    g.add_node(key, kind="restructure", label=step.op, op=step.op,
                               shape=None, span=step.span, **where)
                    for n in step.inputs:
                        g.add_edge(n.id, key, kind="restructure")
                    for n in step.outputs:
                        _add_node(g, n, **where)
                        seen.add(n.id)
                        g.add_edge(key, n.id, kind="restructure")
                    continue
                add_tree([step.expr], **where)
                _add_node(g, step.after, **where)
                seen.add(step.after.id)
                g.add_edge(step.expr.id, step.after.id, kind="update")
    return g


def flat_steps(block: ir.Block) -> list[ir.Update | ir.Create | ir.Restructure]:
    """A block's steps in execution order. Every update of a phase reads the values from before
    the phase, so each must run before the updates of the streams it reads: a phase runs in a
    topological order of its read graph (readers first; among updates free to run, the one
    written last first). A phase whose reads form a cycle cannot be ordered: its remaining
    updates follow in reverse written order, and the verifier reports the cycle."""
    out: list[ir.Update | ir.Create | ir.Restructure] = []
    for step in block.steps:
        if isinstance(step, ir.Phase):
            out.extend(phase_order(list(step.steps)))
        else:
            out.append(step)
    return out


def phase_order(steps: list[ir.Update | ir.Create]) -> list[ir.Update | ir.Create]:
    targets = {s.target: i for i, s in enumerate(steps)}
    reads = []
    for s in steps:
        names = {n.stream for n in ir.walk([s.expr]) if isinstance(n, ir.StreamNode)}
        reads.append({targets[n] for n in names if n in targets and targets[n] != steps.index(s)})
    readers = [sum(1 for r in reads if i in r) for i in range(len(steps))]
    done: list[int] = []
    left = set(range(len(steps)))
    while left:
        free = [i for i in left if readers[i] == 0]
        if not free:  # a cycle: the rest as written, last first
            done.extend(sorted(left, reverse=True))
            break
        i = max(free)
        done.append(i)
        left.discard(i)
        for j in reads[i]:
            readers[j] -= 1
    return [steps[i] for i in done]


def _add_node(g: nx.DiGraph, node: ir.Node, **where: Any) -> None:
    if node.id in g and g.nodes[node.id].get("kind"):
        return
    attrs: dict[str, Any] = {"shape": node.shape, "span": node.span, **where}
    if isinstance(node, ir.InputNode):
        attrs.update(kind="input", label=node.name, op=None)
    elif isinstance(node, ir.StreamNode):
        attrs.update(kind="stream", label=f"{node.stream}@{node.version}", op=None,
                     stream=node.stream, version=node.version)
    elif isinstance(node, ir.OpNode):
        attrs.update(kind="op", label=node.op, op=node.op)
    elif isinstance(node, ir.OutNode):
        attrs.update(kind="out", label=f"{node.source.op}[{node.index}]", op=None)
    elif isinstance(node, ir.ConstNode):
        attrs.update(kind="const", label=repr(node.value), op=None)
    g.add_node(node.id, **attrs)


def stream_reads(g: nx.DiGraph, node_id: int) -> set[int]:
    """The stream values a node depends on within its step: ancestors, stopping at streams."""
    # a walk up the predecessors that stops at stream nodes (linear in the step's size; a
    # filtered networkx view would cost the whole graph's size per query)
    kinds = g.nodes
    if kinds[node_id].get("kind") == "stream":
        return set()
    found: set[int] = set()
    seen = {node_id}
    stack = [node_id]
    while stack:
        for p in g.predecessors(stack.pop()):
            if p in seen:
                continue
            seen.add(p)
            if kinds[p].get("kind") == "stream":
                found.add(p)
            else:
                stack.append(p)
    return found


def describe(g: nx.DiGraph, node_id: int) -> str:
    d = g.nodes[node_id]
    shape = d.get("shape")
    return f"{d.get('label')} {fmt_shape(shape) if shape is not None else ''}".strip()


Value = tuple[str, int]  # (stream, version)


@dataclass(frozen=True)
class UndoNeeds:
    """What undoing one step takes and gives: the values it rebuilds from (`produced`: the
    step's results) and reads (`reads`), and the values it rebuilds (`rebuilt`)."""

    produced: tuple[Value, ...]
    reads: tuple[Value, ...]
    rebuilt: tuple[Value, ...]


def undo_order(steps: list[UndoNeeds], outputs: set[Value]) -> tuple[list[int], list[int]]:
    """An order in which a block's steps can be undone from its outputs, and the steps that
    cannot be undone in any order (empty when the block is invertible).

    Availability is decided by what the outputs determine, not by the written order: a step can
    be undone once every value it produced and every value it reads is known, and no step still
    to be undone reads what it produced (that value is about to be replaced, and its gradient is
    complete only then). Undoing it makes its rebuilt values known. Among the steps ready at a
    time the latest written goes first, so a block without stale reads is undone in exact
    reverse order."""
    known = set(outputs)
    left = set(range(len(steps)))
    order: list[int] = []
    while left:
        needed = {v for j in left for v in steps[j].reads}
        ready = [i for i in left
                 if all(v in known for v in (*steps[i].produced, *steps[i].reads))
                 and not any(v in needed for v in steps[i].produced)]
        if not ready:
            return order, sorted(left)
        i = max(ready)
        order.append(i)
        left.discard(i)
        known.difference_update(steps[i].produced)
        known.update(steps[i].rebuilt)
    return order, []
