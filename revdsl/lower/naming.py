"""Names of layers, segments and stored blocks: from the spec's `as` labels and names, else
the op's default name numbered in order; clashes are positioned errors."""

from __future__ import annotations

from dataclasses import replace

from revdsl import ir
from revdsl.errors import SpecNameError
from revdsl.source import Span


def _signature(node: ir.OpNode) -> tuple[object, ...]:
    return (node.op, node.attrs, tuple(tuple(str(d) for d in c.shape) for c in node.inputs))


def _describe(node: ir.OpNode) -> str:
    from revdsl.shapes import fmt_shape

    attrs = ", ".join(f"{k}={v}" for k, v in node.attrs)
    ins = ", ".join(fmt_shape(c.shape) for c in node.inputs)
    return f"{node.op}({ins}{', ' if attrs else ''}{attrs})"


def _where(span: Span | None) -> str:
    return str(span.line) if span is not None else "?"


class NamingMixin:
    """Naming of the elaborator (`self` is the `_Elaborator`)."""

    def _name_modules(self, records: list[tuple[ir.OpNode, str, Span | None]],
                      scope: str) -> list[tuple[str, ir.OpNode]]:
        seen_nodes: set[int] = set()
        unique = []
        for node, base, span in records:
            if node.id in seen_nodes:
                continue
            seen_nodes.add(node.id)
            unique.append((node, base, span))
        aliases: dict[str, Span | None] = {}
        first: dict[str, ir.OpNode] = {}
        for node, _base, span in unique:
            if node.module is not None:
                if node.module in aliases:
                    # the same name twice: one layer applied twice (tied weights), when the two
                    # calls build the same layer
                    other = first[node.module]
                    if _signature(other) != _signature(node):
                        raise SpecNameError(
                            f"two different layers are named '{node.module}' in one {scope} "
                            f"(line {_where(aliases[node.module])} builds "
                            f"{_describe(other)}, this one {_describe(node)})", span,
                            ["one name used twice shares one layer (tied weights): both calls "
                             "must build the same layer (op, attributes and input shape)"])
                    continue
                aliases[node.module] = span
                first[node.module] = node
        counts: dict[str, int] = {}
        for node, base, _ in unique:
            if node.module is None:
                counts[base] = counts.get(base, 0) + 1
        used = set(aliases)
        numbering: dict[str, int] = {}
        names = []
        for node, base, _ in unique:
            if node.module is not None:
                names.append((node.module, node))
                continue
            if counts[base] == 1 and base not in used:
                name = base
            else:
                k = numbering.get(base, 0)
                while True:
                    k += 1
                    name = f"{base}{k}"
                    if name not in used:
                        break
                numbering[base] = k
            used.add(name)
            names.append((name, node))
        return names

    def _name_segments(self) -> list[ir.Item]:
        items = self._name_plain_blocks(self.items)
        segs = [i for i in items if isinstance(i, ir.Segment)]
        given: dict[str, int] = {}
        for s in segs:
            if s.name:
                given[s.name] = given.get(s.name, 0) + 1
        counters: dict[str, int] = {}
        out: list[ir.Item] = []
        for item in items:
            if not isinstance(item, ir.Segment):
                out.append(item)
                continue
            base = item.name or "body"
            if item.name and given[item.name] == 1:
                name = item.name
            elif not item.name and sum(1 for s in segs if not s.name) == 1 and "body" not in given:
                name = "body"
            else:
                k = counters.get(base, 0)
                counters[base] = k + 1
                name = f"{base}{k}"
            out.append(replace(item, name=name))
        return out


    def _name_plain_blocks(self, items: list[ir.Item]) -> list[ir.Item]:
        counts: dict[str, int] = {}
        for i in items:
            if isinstance(i, ir.PlainBlock):
                counts[i.name] = counts.get(i.name, 0) + 1
        seen: dict[str, int] = {}
        out: list[ir.Item] = []
        for i in items:
            if isinstance(i, ir.PlainBlock) and counts[i.name] > 1:
                k = seen.get(i.name, 0)
                seen[i.name] = k + 1
                i = replace(i, name=f"{i.name}{k}")
            out.append(i)
        return out
