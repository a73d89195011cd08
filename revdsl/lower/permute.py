"""Simultaneous assignments of streams: `x1, x2 = [x2, x1]` (a permutation) and Feistel-style
`x1, x2 = [x2, x1 + F(x2)]` (an update, then a permutation). Every value reads the streams as
they were before the statement; each is matched with the stream it carries forward."""

from __future__ import annotations

from typing import Any

from revdsl import ast, catalogue, ir
from revdsl.errors import SpecTypeError
from revdsl.lower.values import _Block, _Phase


class PermuteMixin:
    """Simultaneous stream assignments of the elaborator (`self` is the `_Elaborator`)."""

    def _simultaneous(self, blk: _Block, s: ast.Assign, targets: list[str],
                      values: list[Any]) -> None:
        """`x1, x2 = [x2, x1 + f(x2)]`: every value reads the streams as they were before the
        statement. Each value is matched with the stream it carries forward (a stream itself,
        or the one stream it transforms that no other value takes); the transformations become
        one phase of updates (all reading the starting values), followed by a renaming of the
        streams onto the targets (a permutation, undone by the inverse permutation)."""
        seg = self.seg
        assert seg is not None
        if self.phase is not None:
            raise SpecTypeError("streams cannot be permuted inside a phase", s.span)
        if len(set(targets)) != len(targets):
            dup = next(t for t in targets if targets.count(t) > 1)
            raise SpecTypeError(f"stream '{dup}' is assigned twice in one statement", s.span)
        live = {slot.current.id: name for name, slot in seg.live.items()}
        sources: list[str | None] = [
            live.get(v.node.id) if live.get(v.node.id) in targets else None for v in values]
        taken = {x for x in sources if x}
        if len(taken) != sum(1 for x in sources if x):
            dup = next(x for x in sources if x and sources.count(x) > 1)
            lost = sorted(set(targets) - taken)
            given = " and ".join(t for t, x in zip(targets, sources, strict=True) if x == dup)
            raise SpecTypeError(
                f"'{dup}' is given to {given}: the old value of {', '.join(lost)} is lost", s.span)
        for i, v in enumerate(values):
            if sources[i] is not None:
                continue
            reads = sorted({live[n.id] for n in ir.walk([v.node])
                            if isinstance(n, ir.StreamNode) and n.id in live})
            free = [r for r in reads if r in targets and r not in taken]
            direct = [r for r in _direct_streams(v.node, live) if r in free]
            if len(free) > 1 and len(direct) == 1:
                free = direct  # the stream the value transforms elementwise (t in t + f(...))
            elif len(free) > 1 and targets[i] in free:
                free = [targets[i]]  # a stream that keeps its name carries itself forward
            if len(free) != 1:
                lost = sorted(set(targets) - taken - set(reads))
                why = (f"it reads none of the streams this assignment frees ({', '.join(lost)})"
                       if not free else
                       f"it could carry forward any of {', '.join(free)}")
                raise SpecTypeError(
                    f"the value given to '{targets[i]}' cannot be undone: {why}", s.span,
                    ["each value must be a stream, or transform exactly one stream that no "
                     "other value takes (`x1, x2 = [x2, x1 + f(x2)]`)"])
            sources[i] = free[0]
            taken.add(free[0])
        if set(taken) != set(targets):
            lost = sorted(set(targets) - taken)
            raise SpecTypeError(f"the old value of {', '.join(lost)} is lost by this assignment",
                                s.span)
        updates = [(src, v) for src, v in zip(sources, values, strict=True)
                   if seg.live[src].current.id != v.node.id]  # type: ignore[index]
        if updates:
            phase = _Phase(name=None, span=s.span,
                           snapshot={n: slot.current for n, slot in seg.live.items()})
            self.phase = phase
            try:
                for src, v in updates:
                    assert src is not None
                    self._update(blk, src, phase.snapshot[src], v.node, "=", s.span)
            finally:
                self.phase = None
            self._finish_phase(blk, phase, written=False)
        if sources == targets:
            return  # every stream keeps its name
        ins = [seg.live[src].current for src in sources]  # type: ignore[index]
        for n in ins:
            del seg.live[n.stream]
        outs = [self._new_stream(seg, t, n.shape, s.span)
                for t, n in zip(targets, ins, strict=True)]
        blk.steps.append(ir.Restructure(op="rename", attrs=(), inputs=tuple(ins),
                                        outputs=tuple(outs), span=s.span))


def _direct_streams(node: ir.Node, live: dict[int, str]) -> list[str]:
    """The streams a value reaches through elementwise algebra alone (not through a layer):
    the stream an update transforms, `t` in `t * s(u) + f(u)`."""
    found: list[str] = []
    stack = [node]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if isinstance(n, ir.StreamNode) and n.id in live:
            if live[n.id] not in found:
                found.append(live[n.id])
        elif isinstance(n, ir.OpNode):
            opdef = catalogue.get(n.op)
            if opdef is not None and opdef.kind == "algebra":
                stack.extend(n.inputs)
    return found
