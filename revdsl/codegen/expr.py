"""Expressions of the generated code: a DAG of IR nodes as Python, and the small queries the
other emitters ask of statements (which values they read, which options they use)."""

from __future__ import annotations

import re
from typing import Any

from revdsl import catalogue, ir
from revdsl.catalogue import fmt_value, render_template
from revdsl.codegen.emitter import Emitter
from revdsl.graph import flat_steps


class ExprEmitter:
    """Emits code for a DAG of IR nodes. Nodes in `names` are referenced by variable; a node used
    more than once is bound to a temporary first (so a layer never runs twice)."""

    def __init__(self, modules: dict[int, str], names: dict[int, str], ctor_slot: Any = None,
                 taken: set[str] | None = None) -> None:
        self.modules = modules
        self.names = names
        self.taken = taken if taken is not None else set(names.values())

    def fresh(self, base: str) -> str:
        base = re.sub(r"\W", "_", base)
        if base not in self.taken:
            self.taken.add(base)
            return base
        k = 1
        while f"{base}_{k}" in self.taken:
            k += 1
        self.taken.add(f"{base}_{k}")
        return f"{base}_{k}"

    def prepare(self, e: Emitter, roots: list[ir.Node]) -> None:
        """Bind nodes used more than once (below the roots) to temporaries."""
        uses: dict[int, int] = {}
        order = ir.walk(roots, stop=set(self.names))
        for n in order:
            for c in ir.children(n):
                uses[c.id] = uses.get(c.id, 0) + 1
        for n in order:
            if n.id in self.names or uses.get(n.id, 0) < 2:
                continue
            if isinstance(n, ir.ConstNode | ir.InputNode | ir.StreamNode):
                continue
            if isinstance(n, ir.OpNode) and n.n_out > 1:
                outs = [self.fresh(f"_{n.op}{i}") for i in range(n.n_out)]
                e.line(f"{', '.join(outs)} = {self.code(n)}")
                self.names[n.id] = "(" + ", ".join(outs) + ")"
                continue
            name = self.fresh("_" + (n.op if isinstance(n, ir.OpNode) else "v"))
            e.line(f"{name} = {self.code(n)}")
            self.names[n.id] = name

    def code(self, n: ir.Node, prec: int = 0) -> str:
        if n.id in self.names:
            return self.names[n.id]
        if isinstance(n, ir.ConstNode):
            if hasattr(n.value, "free_symbols") and n.value.free_symbols:
                from revdsl.pyprint import py_expr  # a model argument: the model keeps it

                names = {s: f"self.{s.name}" for s in n.value.free_symbols}
                return f"({py_expr(n.value, names)})"
            text = fmt_value(n.value)
            return f"({text})" if text.startswith("-") and prec > 0 else text
        if isinstance(n, ir.OutNode):
            src = self.names.get(n.source.id)
            if src is not None and src.startswith("("):
                return src[1:-1].split(", ")[n.index]
            return f"{self.code(n.source, 100)}[{n.index}]"
        assert isinstance(n, ir.OpNode), n
        opdef = catalogue.get(n.op)
        assert opdef is not None
        attrs = n.attr_dict
        if opdef.has_module:
            args = [self.code(c) for c in n.inputs]
            args += [f"{k}={fmt_value(attrs[k])}" for k in opdef.call_kwargs]
            return f"self.{self.modules[n.id]}({', '.join(args)})"
        p = opdef.precedence
        args = []
        for i, c in enumerate(n.inputs):
            # left operands bind at the op's level, right ones strictly tighter
            args.append(self.code(c, p if i == 0 else p + 1))
        text = render_template(opdef, args, attrs)
        if p < prec:
            return f"({text})"
        return text


def _segment_options(seg: ir.Segment) -> list[str]:
    found: list[str] = []
    for block in seg.blocks:
        for _name, node in block.modules:
            for _k, v in node.attrs:
                if isinstance(v, ir.RuntimeRef) and v.name not in found:
                    found.append(v.name)
        for step in flat_steps(block):
            if isinstance(step, ir.Restructure):
                continue
            for n in ir.walk([step.expr]):
                if isinstance(n, ir.OpNode):
                    for _k, v in n.attrs:
                        if isinstance(v, ir.RuntimeRef) and v.name not in found:
                            found.append(v.name)
    return sorted(found)


def _options_in(roots: list[ir.Node]) -> list[str]:
    found: list[str] = []
    for n in ir.walk(roots):
        if isinstance(n, ir.OpNode):
            for _k, v in n.attrs:
                if isinstance(v, ir.RuntimeRef) and v.name not in found:
                    found.append(v.name)
    return sorted(found)


def _source_of(nodes: list[ir.Node]) -> ir.OpNode | None:
    if nodes and all(isinstance(n, ir.OutNode) for n in nodes):
        src = nodes[0].source  # type: ignore[union-attr]
        if all(n.source is src and n.index == i  # type: ignore[union-attr]
               for i, n in enumerate(nodes)) and src.n_out == len(nodes):
            return src
    return None


def _refs(roots: list[ir.Node], defined: set[int] | dict[int, str]) -> list[ir.Node]:
    """The already-defined values a statement reads: walking from its roots (themselves
    included), stopping at, and recording, every node in `defined`."""
    out: list[ir.Node] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.id in defined:
            out.append(n)
            continue
        stack.extend(reversed(ir.children(n)))
    return out


def _item_roots(item: ir.Item) -> list[ir.Node]:
    if isinstance(item, ir.Assign):
        return list(item.values)
    if isinstance(item, ir.PlainBlock):
        return list(item.inputs)
    return [v for a in item.entry_assign for v in a.values]


def _live_into(head: list[ir.Item], names: dict[int, str]) -> list[ir.Node]:
    """Values computed before the head that the head reads (in order of first use)."""
    out: list[ir.Node] = []
    for item in head:
        for n in _refs(_item_roots(item), names):
            if n not in out:
                out.append(n)
    return out


def _later_references(items: list[ir.Item], named: set[int]) -> list[set[int]]:
    """For each statement, the defined values that statements after it read."""
    reads = [{n.id for n in _refs(_item_roots(item), named)} for item in items]
    out = []
    for k in range(len(items)):
        later: set[int] = set()
        for r in reads[k + 1:]:
            later |= r
        out.append(later)
    return out


def _lit(v: Any) -> str:
    if isinstance(v, list):
        v = tuple(v)
    return fmt_value(v)


def _tuple(items: list[str]) -> str:
    inner = ", ".join(f'"{x}"' for x in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


def _indent(text: str, levels: int) -> str:
    pad = "    " * levels
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())
