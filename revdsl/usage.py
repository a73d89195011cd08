"""Parts of a model that never reach its output: layers whose parameters get no gradient.

A layer whose result does not reach the output is almost always a mistake (a head that reads the
stem instead of the streams; reading only `x1` of a two-stream segment leaves the last block's G
unused), and it makes DistributedDataParallel need `find_unused_parameters`. The verifier reports
each such layer as a positioned warning (once per source position, however often a loop
repeats it): the model still compiles.
"""

from __future__ import annotations

import networkx as nx

from revdsl import catalogue, ir
from revdsl.errors import SpecWarning
from revdsl.source import Span


def unused_layers(program: ir.Program, g: nx.DiGraph) -> list[SpecWarning]:
    """One warning per source position of a parameterised layer that cannot affect the output."""
    used: set[int] = set()
    for out in (program.output, *(n for _, n in program.more_outputs)):
        used |= nx.ancestors(g, out.id) | {out.id}
    names = {node.id: name for name, node in program.model_modules}
    for item in program.items:
        for block in getattr(item, "blocks", ()):
            names.update((node.id, name) for name, node in block.modules)
        names.update((node.id, name) for name, node in getattr(item, "modules", ()))
    found: dict[tuple[int, int] | int, list[ir.OpNode]] = {}
    for node in ir.op_nodes(program):
        if node.id in used or node.id not in g:
            continue
        opdef = catalogue.get(node.op)
        if opdef is None or not opdef.has_module or not opdef.has_parameters(
                [c.shape for c in node.inputs], node.attr_dict):
            continue
        key = (node.span.line, node.span.column) if node.span is not None else node.id
        found.setdefault(key, []).append(node)
    out = []
    for nodes in found.values():
        first = nodes[0]
        label = names.get(first.id, first.module or first.op)
        times = f" ({len(nodes)} times, once per iteration)" if len(nodes) > 1 else ""
        out.append(SpecWarning(
            f"{first.op} '{label}'{times} never reaches the output `{program.output_name}`: "
            "its parameters get no gradient",
            first.span,
            ["use its result, or remove it (DistributedDataParallel would otherwise need "
             "find_unused_parameters=True)"],
        ))
    return sorted(out, key=_order)


def _order(w: SpecWarning) -> tuple[int, int]:
    span: Span | None = w.span
    return (span.line, span.column) if span is not None else (0, 0)


__all__ = ["unused_layers"]
