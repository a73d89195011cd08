"""Reversible segments while elaborating: streams, blocks, `repeat`, phases and silos, the
steps (updates, new streams, rearrangements) and stored blocks outside segments."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from revdsl import ast, catalogue, ir
from revdsl.errors import SpecNameError, SpecTypeError, SpecWarning
from revdsl.lower.consteval import MAX_WORK, _kind, _line
from revdsl.lower.permute import PermuteMixin
from revdsl.lower.values import (
    StreamArray,
    StreamSlot,
    TVal,
    _Block,
    _Phase,
    _Plain,
    _Segment,
    _Tomb,
)
from revdsl.shapes import Shape
from revdsl.source import Span


class SegmentMixin(PermuteMixin):
    """Segment, block and step statements of the elaborator (`self` is the `_Elaborator`)."""

    def s_Segment(self, s: ast.Segment) -> None:
        if self.seg is not None:
            raise SpecTypeError("reversible segments cannot be nested", s.span)
        if self.in_head:
            raise SpecTypeError("a reversible segment cannot be inside `head`", s.span)
        if self.plain is not None:
            raise SpecTypeError("a reversible segment cannot be inside a block", s.span)
        if s.name is not None:
            self._check_ident(s.name, s.span, "segment")
        key = f"seg{self.n_segments}"
        self.n_segments += 1
        self.scopes.append({})
        self.seg = _Segment(key=key, name=s.name, span=s.span, scope=len(self.scopes) - 1)
        try:
            self.stmts(s.body)
            self._close_block()
            seg = self.seg
            if not seg.entry:
                raise SpecTypeError(
                    "this segment declares no streams: start it with `streams a, b = ...`",
                    s.span,
                )
            indexed = {
                name: (arr.base, idx)
                for arr in self.scopes[seg.scope].values() if isinstance(arr, StreamArray)
                for idx, name in arr.names.items()
            }
            if seg.blocks:
                exits = tuple(
                    seg.live[n].current for n in sorted(seg.live, key=lambda n: seg.order[n])
                )
                self.items.append(
                    ir.Segment(
                        name=s.name or "", entry=tuple(seg.entry),
                        entry_assign=tuple(seg.entry_assign), blocks=tuple(seg.blocks),
                        exits=exits, span=s.span,
                    )
                )
                final: list[tuple[str, ir.Node]] = [(n.stream, n) for n in exits]
            else:
                # no reversible blocks (e.g. a stage that is only its transition): the streams
                # keep their initial values, computed by ordinary statements
                self.warnings.append(SpecWarning(
                    f"segment '{s.name or key}' has no reversible steps (a `repeat` that runs "
                    "0 times?): its streams pass through unchanged", s.span))
                self.items.extend(seg.entry_assign)
                final = [(e.stream, e.node) for e in seg.entry]
        finally:
            self.scopes.pop()
            self.seg = None
        # the streams' final values are ordinary values after the segment
        arrays: dict[str, dict[int, TVal]] = {}
        for stream, node in final:
            tv = TVal(node, len(self.scopes) - 1)
            if stream in indexed:
                base, idx = indexed[stream]
                arrays.setdefault(base, {})[idx] = tv
            else:
                self.bind(stream, tv)
        for base, elems in arrays.items():
            self.bind(base, [elems[i] for i in sorted(elems)])

    def _need_seg(self, s: ast.Stmt, what: str) -> _Segment:
        if self.seg is None:
            raise SpecTypeError(f"{what} can only appear inside a `reversible` segment", s.span)
        return self.seg

    def s_StreamsDecl(self, s: ast.StreamsDecl) -> None:
        seg = self._need_seg(s, "`streams`")
        if seg.started or self.blk is not None:
            raise SpecTypeError("`streams` must come before the segment's first step", s.span)
        # the initial values are computed outside the segment
        self.entry_mode = True
        saved = self.scopes
        self.scopes = self.scopes[: seg.scope]
        try:
            value = self.ev(s.value)
        finally:
            self.scopes = saved
            self.entry_mode = False
        values = self._spread(value, len(s.targets), s)
        for v in values:
            if not isinstance(v, TVal):
                raise SpecTypeError(f"a stream must start from a tensor, got {_kind(v)}", s.span)
        names = []
        for t, v in zip(s.targets, values, strict=True):
            name = self._stream_name(t, create=True)
            start = self._new_stream(seg, name, v.node.shape, t.span)
            seg.entry.append(ir.Entry(stream=name, node=v.node, start=start))
            names.append(name)
        seg.entry_assign.append(
            ir.Assign(targets=tuple(names), values=tuple(v.node for v in values), span=s.span)
        )

    def _stream_name(self, t: ast.Target, create: bool) -> str:
        seg = self.seg
        assert seg is not None
        if t.index is None:
            self._check_ident(t.name, t.span, "stream")
            return t.name
        idx = self.ct(t.index)
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise SpecTypeError("a stream index must be a non-negative integer", t.index.span)
        self._check_ident(t.name, t.span, "stream")
        arr = self.scopes[seg.scope].get(t.name)
        if arr is None and create:
            arr = StreamArray(t.name)
            self.scopes[seg.scope][t.name] = arr
        if not isinstance(arr, StreamArray):
            raise SpecTypeError(f"'{t.name}' is not a list of streams", t.span)
        name = arr.names.get(idx)
        if name is None:
            if not create:
                raise SpecNameError(
                    f"{t.name}[{idx}] is not a stream; create it with `stream {t.name}[{idx}] = "
                    "...`",
                    t.span,
                )
            name = f"{t.name}{idx}"
            arr.names[idx] = name
        return name

    def _new_stream(self, seg: _Segment, name: str, shape: Shape,
                    span: Span | None) -> ir.StreamNode:
        if name in seg.live:
            raise SpecNameError(f"stream '{name}' already exists", span)
        existing = self.scopes[seg.scope].get(name)
        if existing is not None and not isinstance(existing, StreamSlot | _Tomb):
            raise SpecNameError(f"'{name}' is already used for something else", span)
        version = seg.versions.get(name, -1) + 1
        seg.versions[name] = version
        seg.order.setdefault(name, len(seg.order))
        node = ir.StreamNode(id=self.nid(), shape=shape, span=span, segment=seg.key,
                             stream=name, version=version)
        slot = StreamSlot(name, node)
        seg.live[name] = slot
        seg.shapes[name] = shape
        self.scopes[seg.scope][name] = slot
        return node

    def _open_block(self, kind: str, name: str | None, span: Span | None,
                    implicit: bool = False) -> _Block:
        seg = self.seg
        assert seg is not None
        if not seg.entry:
            raise SpecTypeError(
                "declare the segment's streams (`streams a, b = ...`) before its steps", span
            )
        seg.started = True
        blk = _Block(kind=kind, name=name, span=span, implicit=implicit)
        blk.inputs = tuple(seg.live[n].current for n in sorted(seg.live,
                                                                key=lambda n: seg.order[n]))
        self.blk = blk
        self.scopes.append({})
        pending, self._pending = self._pending, None
        if pending is not None:
            # values computed between blocks, before any step changed a stream: the block
            # that follows computes them (with their layers) as its own
            modules, values, local = pending
            blk.modules.extend(modules)
            blk.locals.extend(local)
            self.scopes[-1].update(values)
        return blk

    def _close_block(self) -> None:
        blk, seg = self.blk, self.seg
        if blk is None or seg is None:
            return
        self.blk = None
        scope = self.scopes.pop()
        if not blk.steps and blk.implicit and (blk.modules or blk.locals):
            values = {k: v for k, v in scope.items() if isinstance(v, TVal)}
            self._pending = (list(blk.modules), values, list(blk.locals))
            return
        for name, value in scope.items():
            if isinstance(value, TVal) and not any(name in sc for sc in self.scopes):
                self.block_locals[name] = (value.node.span, blk.span)
        if not blk.steps:
            return
        outputs = tuple(seg.live[n].current for n in sorted(seg.live, key=lambda n: seg.order[n]))
        # numbered in the order the steps run, listed (and so built) in the spec's order
        named = {id(node): name for name, node in
                 self._name_modules(_in_step_order(blk), scope="block")}
        modules = []
        for node, _, _ in blk.modules:
            if id(node) in named:
                modules.append((named.pop(id(node)), node))
        seg.blocks.append(
            ir.Block(kind=blk.kind, name=blk.name, index=len(seg.blocks), steps=tuple(blk.steps),
                     inputs=blk.inputs, outputs=outputs, modules=tuple(modules),
                     locals=tuple(blk.locals), span=blk.span)
        )

    def _ensure_block(self, span: Span | None) -> _Block:
        if self.blk is None:
            return self._open_block("block", None, span, implicit=True)
        return self.blk

    def s_BlockStmt(self, s: ast.BlockStmt) -> None:
        if self.seg is None and s.kind == "block":
            self._plain_block(s)
            return
        self._need_seg(s, f"`{s.kind}`")
        if self.blk is not None and not self.blk.implicit:
            raise SpecTypeError(f"a `{s.kind}` cannot be inside another block", s.span)
        if s.name is not None:
            self._check_ident(s.name, s.span, s.kind)
        self._close_block()
        self._open_block(s.kind, s.name, s.span)
        try:
            self.stmts(s.body)
        finally:
            self._close_block()

    def _plain_block(self, s: ast.BlockStmt) -> None:
        if self.plain is not None:
            raise SpecTypeError("blocks cannot be nested", s.span)
        if s.name is None:
            raise SpecNameError("a block outside a reversible segment needs a name: "
                                "`block transition { ... }`", s.span)
        self._check_ident(s.name, s.span, "layer")
        self.plain = _Plain(name=s.name, span=s.span, scope=len(self.scopes),
                            first_id=self.nid())
        self.scopes.append({})
        try:
            self.stmts(s.body)
            scope = self.scopes[-1]
        finally:
            self.scopes.pop()
            plain, self.plain = self.plain, None
        # names assigned in the block stay visible after it (its outputs)
        for name, value in scope.items():
            if isinstance(value, TVal):
                value = TVal(value.node, len(self.scopes) - 1)
            self.bind(name, value)
        if not plain.assigns:
            return
        modules = self._name_modules(plain.modules, scope="block")
        self.items.append(ir.PlainBlock(name=plain.name, label=plain.name,
                                        assigns=tuple(plain.assigns), modules=tuple(modules),
                                        inputs=_outer_inputs(plain), head=self.in_head,
                                        span=s.span))

    def s_Repeat(self, s: ast.Repeat) -> None:
        self._need_seg(s, "`repeat`")
        if self.blk is not None and not self.blk.implicit:
            raise SpecTypeError("`repeat` cannot be inside a block", s.span)
        count = self.ct(s.count)
        if isinstance(count, int) and not isinstance(count, bool):
            if count > MAX_WORK:
                raise SpecTypeError(
                    f"`repeat {count}` unrolls to more than {MAX_WORK} blocks; is a loop bound or "
                    "a parameter far too large?", s.count.span)
            seq: Iterable[Any] = range(count)
        elif isinstance(count, list | range):
            seq = count
        else:
            raise SpecTypeError(f"`repeat` needs a count or a list, got {_kind(count)}",
                                s.count.span)
        self._close_block()
        for v in seq:
            self.work(s.span)
            self._open_block("block", None, s.span)
            try:
                if s.var is not None:
                    self.bind(s.var, v)
                self.stmts(s.body)
            finally:
                self._close_block()

    def s_Phase(self, s: ast.Phase) -> None:
        seg = self._need_seg(s, "`phase`")
        if self.phase is not None:
            raise SpecTypeError("phases cannot be nested", s.span)
        blk = self._ensure_block(s.span)
        ph = _Phase(name=s.name, span=s.span,
                    snapshot={n: slot.current for n, slot in seg.live.items()})
        self.phase = ph
        try:
            self.stmts(s.body)
        finally:
            self.phase = None
        self._finish_phase(blk, ph)

    def _finish_phase(self, blk: _Block, ph: _Phase, written: bool = True) -> None:
        """After a phase: its updates become the streams' values, and its steps the block's
        (a phase the compiler made for a single update is that update alone)."""
        seg = self.seg
        assert seg is not None
        for step in ph.steps:
            if isinstance(step, ir.Update):
                seg.live[step.target].current = step.after
        if len(ph.steps) == 1 and not written:
            blk.steps.append(ph.steps[0])
        elif ph.steps:
            blk.steps.append(ir.Phase(name=ph.name, steps=tuple(ph.steps), span=ph.span))

    def s_StreamDecl(self, s: ast.StreamDecl) -> None:
        seg = self._need_seg(s, "`stream`")
        blk = self._ensure_block(s.span)
        value = self.ev(s.value)
        if not isinstance(value, TVal):
            raise SpecTypeError(f"a stream must be a tensor, got {_kind(value)}", s.value.span)
        name = self._stream_name(s.target, create=True)
        if name in seg.live:
            raise SpecNameError(f"stream '{name}' already exists", s.target.span)
        if self.phase is not None:
            # created streams become visible after the phase, like every other update
            version = seg.versions.get(name, -1) + 1
            node = ir.StreamNode(id=self.nid(), shape=value.node.shape, span=s.target.span,
                                 segment=seg.key, stream=name, version=version)
            step = ir.Create(target=name, after=node, expr=value.node, span=s.span)
            self.phase.steps.append(step)
            self.phase.updated[name] = s.span
            seg.versions[name] = version
            seg.order.setdefault(name, len(seg.order))
            slot = StreamSlot(name, node)
            seg.live[name] = slot
            seg.shapes[name] = node.shape
            self.scopes[seg.scope][name] = slot
            return
        node = self._new_stream(seg, name, value.node.shape, s.target.span)
        blk.steps.append(ir.Create(target=name, after=node, expr=value.node, span=s.span))

    def _seg_aug(self, s: ast.AugAssign) -> None:
        seg = self.seg
        assert seg is not None
        target = self._target_stream(s.target)
        if target is None and s.target.index is not None:
            self._stream_name(s.target, create=False)  # raises: "s[1] is not a stream; ..."
        if target is None and s.target.index is None and self._defined(s.target.name):
            cur, _ = self.lookup(s.target.name, s.target.span)
            if not isinstance(cur, TVal | StreamArray | ir.RuntimeRef):
                # a compile-time value (`c *= 4`): arithmetic, not a step
                self.bind_ct(s.target.name, self.binop(s.op, cur, self.ct(s.value), s.span))
                return
        if target is None:
            raise SpecTypeError(
                f"'{s.target.name}' is not a stream of this segment; only streams can be "
                f"updated with {s.op}=",
                s.target.span,
            )
        blk = self._ensure_block(s.span)
        before = self._read_stream(target, s.target.span)
        rhs = self.ev(s.value)
        op = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[s.op]
        expr = self.apply_op(op, [TVal(before, seg.scope), rhs], {}, s.span, lenient=True)
        self._update(blk, target, before, expr.node, s.op + "=", s.span)

    def _seg_assign(self, s: ast.Assign) -> None:
        seg = self.seg
        assert seg is not None
        value = self.ev(s.value)
        values = self._spread(value, len(s.targets), s)
        if not any(isinstance(v, TVal) for v in values):
            for t, v in zip(s.targets, values, strict=True):
                if t.index is not None or isinstance(self.scopes[seg.scope].get(t.name),
                                                     StreamSlot):
                    raise SpecTypeError("a stream can only be given a tensor", s.span)
                self.bind_ct(t.name, v)
            return
        blk = self._ensure_block(s.span)
        # a bijective rearrangement of streams (chunk, cat, space_to_depth)?
        src = _source_op(values)
        if src is not None:
            opdef = catalogue.get(src.op)
            if opdef and opdef.kind == "structural" and opdef.inverse and src.inputs and all(
                isinstance(n, ir.StreamNode) for n in src.inputs
            ):
                self._restructure(blk, s, src, values)
                return
        targets = [self._target_stream(t) for t in s.targets]
        if len(s.targets) > 1 and all(targets) and all(isinstance(v, TVal) for v in values):
            self._simultaneous(blk, s, [t for t in targets if t], values)
            return
        for t, v in zip(s.targets, values, strict=True):
            if not isinstance(v, TVal):
                raise SpecTypeError("cannot mix tensors and numbers in one assignment", s.span)
            target = self._target_stream(t)
            if target is not None:
                before = self._read_stream(target, t.span)
                self._update(blk, target, before, v.node, "=", s.span)
            else:
                if t.index is not None:
                    self._stream_name(t, create=False)  # raises the "not a stream" error
                self._check_ident(t.name, t.span, "value")
                self.bind(t.name, v)
                blk.locals.append((t.name, v.node))


    def _restructure(self, blk: _Block, s: ast.Assign, src: ir.OpNode, values: list[Any]) -> None:
        seg = self.seg
        assert seg is not None
        if self.phase is not None:
            raise SpecTypeError("streams cannot be rearranged inside a phase", s.span)
        ins: list[ir.StreamNode] = []
        for n in src.inputs:
            assert isinstance(n, ir.StreamNode)
            slot = seg.live.get(n.stream)
            if slot is None or slot.current is not n:
                raise SpecTypeError(f"'{n.stream}' is rearranged from a stale value", s.span)
            ins.append(n)
        if len({n.stream for n in ins}) != len(ins):
            raise SpecTypeError("a stream cannot be used twice in one rearrangement", s.span)
        for n in ins:
            del seg.live[n.stream]
        into = tuple(t.name if t.index is None else f"{t.name}[{self.ct(t.index)}]"
                     for t in s.targets)
        for n in ins:
            self.scopes[seg.scope][n.stream] = _Tomb(n.stream, s.span, src.op, into)
        outs = []
        for t, v in zip(s.targets, values, strict=True):
            name = self._stream_name(t, create=True)
            outs.append(self._new_stream(seg, name, v.node.shape, t.span))
        blk.steps.append(
            ir.Restructure(op=src.op, attrs=src.attrs, inputs=tuple(ins), outputs=tuple(outs),
                           span=s.span)
        )

    def _target_stream(self, t: ast.Target) -> str | None:
        seg = self.seg
        assert seg is not None
        if t.index is not None:
            arr = self.scopes[seg.scope].get(t.name)
            if not isinstance(arr, StreamArray):
                return None
            idx = self.ct(t.index)
            name = arr.names.get(idx)
            if name is None or name not in seg.live:
                return None
            return name
        v = self.scopes[seg.scope].get(t.name)
        if isinstance(v, _Tomb):
            raise SpecNameError(v.message(), t.span)
        return t.name if isinstance(v, StreamSlot) else None

    def context_stream(self, name: str, value: TVal, span: Span | None) -> ir.StreamNode:
        """The stream that carries an outside value `name` read inside a block (a conditioning
        input): added to the segment's entry and to every block's inputs and outputs, and never
        updated, so each block reads it and passes it on unchanged (its gradient gathers every
        block's contribution)."""
        seg = self.seg
        assert seg is not None
        if value.node.id in seg.context:
            return seg.live[seg.context[value.node.id]].current
        stream = name
        while stream in seg.live or stream in self.scopes[seg.scope]:
            stream += "_"
        start = self._new_stream(seg, stream, value.node.shape, span)
        seg.entry.append(ir.Entry(stream=stream, node=value.node, start=start))
        seg.entry_assign.append(ir.Assign(targets=(stream,), values=(value.node,), span=span))
        seg.context[value.node.id] = stream
        seg.blocks[:] = [replace(b, inputs=(*b.inputs, start), outputs=(*b.outputs, start))
                         for b in seg.blocks]
        if self.blk is not None:
            self.blk.inputs = (*self.blk.inputs, start)
        return start

    def _read_stream(self, name: str, span: Span | None) -> ir.StreamNode:
        seg = self.seg
        assert seg is not None
        if self.phase is not None:
            node = self.phase.snapshot.get(name)
            if node is None:
                raise SpecNameError(
                    f"stream '{name}' is created in this phase and cannot be read in it", span
                )
            return node
        return seg.live[name].current

    def _update(self, blk: _Block, target: str, before: ir.StreamNode, expr: ir.Node,
                written: str, span: Span | None) -> None:
        seg = self.seg
        assert seg is not None
        if target in seg.context.values():
            raise SpecTypeError(
                f"'{target}' is a value from outside the segment that its blocks read (a "
                "conditioning input): it cannot be changed inside the segment", span,
                ["compute a new value instead, or bring it in as a stream (`streams ...`)"])
        version = seg.versions[target] + 1
        seg.versions[target] = version
        after = ir.StreamNode(id=self.nid(), shape=before.shape, span=span, segment=seg.key,
                              stream=target, version=version)
        step = ir.Update(target=target, before=before, after=after, expr=expr, written=written,
                         span=span)
        if self.phase is not None:
            if target in self.phase.updated:
                raise SpecTypeError(
                    f"'{target}' is updated twice in one phase (first at line "
                    f"{_line(self.phase.updated[target])})",
                    span,
                )
            self.phase.updated[target] = span
            self.phase.steps.append(step)
            return
        seg.live[target].current = after
        blk.steps.append(step)


def _outer_inputs(plain: _Plain) -> tuple[ir.Node, ...]:
    """The values a block reads that were created before it (in order of first use)."""
    found: dict[int, ir.Node] = {}
    seen: set[int] = set()
    stack = [v for a in reversed(plain.assigns) for v in reversed(a.values)]
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.id < plain.first_id:
            found.setdefault(n.id, n)
            continue
        stack.extend(reversed(ir.children(n)))
    return tuple(found.values())


def _source_op(values: list[Any]) -> ir.OpNode | None:
    """The single op all values come from (its outputs, in order), if there is one."""
    nodes = [v.node for v in values if isinstance(v, TVal)]
    if len(nodes) != len(values) or not nodes:
        return None
    if len(nodes) == 1 and isinstance(nodes[0], ir.OpNode) and nodes[0].n_out == 1:
        return nodes[0]
    if all(isinstance(n, ir.OutNode) for n in nodes):
        src = nodes[0].source  # type: ignore[union-attr]
        if all(n.source is src and n.index == i  # type: ignore[union-attr]
               for i, n in enumerate(nodes)) and src.n_out == len(nodes):
            return src
    return None


def _in_step_order(blk: _Block) -> list[tuple[ir.OpNode, str, Span | None]]:
    """A block's layers in the order its steps run (a phase runs its updates last written
    first), so that default names number them as the code reads (`mbconv1` runs first)."""
    order: dict[int, int] = {}
    for st in blk.steps:
        inner = list(reversed(st.steps)) if isinstance(st, ir.Phase) else [st]
        for step in inner:
            if isinstance(step, ir.Restructure):
                continue
            for n in ir.walk([step.expr]):
                order.setdefault(n.id, len(order))
    return sorted(blk.modules, key=lambda r: order.get(r[0].id, len(order)))


