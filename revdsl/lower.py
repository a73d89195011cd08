"""Stage 2: ast.Spec -> ir.Program (elaboration).

A spec is a small program run at compile time. This stage interprets it: parameters (with `--set`
overrides), arithmetic, lists, `for`/`if`, and `repeat` all disappear, and what remains is the IR
of `revdsl.ir`: dataflow nodes with symbolic shapes, plain statements, and reversible segments made
of blocks of steps over named streams.

Checks here: names exist and are used as what they are (number, tensor, stream), ops exist and
get valid attributes, each op's shape rule holds, statements appear where they may (e.g. `streams`
only at a segment's start), and reversible blocks read only their segment's streams. Whether a step
can be undone is *not* decided here: that is the verifier's job (verify.py), so that it can report
every failure at once.
"""

from __future__ import annotations

import difflib
import itertools
import keyword
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import sympy

from revdsl import ast, catalogue, ir
from revdsl.catalogue import REQUIRED, Attr, OpDef, OpShapeError
from revdsl.errors import ShapeError, SpecNameError, SpecTypeError, SpecWarning
from revdsl.names import MODULE_ATTRIBUTES, module_globals, python_reserved
from revdsl.shapes import B, Shape, dim_symbol, to_expr
from revdsl.source import Span

# Names a submodule may not take: attributes of nn.Module and of the generated classes.
RESERVED = MODULE_ATTRIBUTES | {"torch", "nn", "F", "math"}

_CT_FUNCS: dict[str, Callable[..., Any]] = {
    "range": range, "len": len, "min": min, "max": max, "int": int, "float": float,
    "round": round, "abs": abs, "sum": sum, "bool": bool, "list": list,
    "floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt, "log2": math.log2,
}
# the builtins that take one list (and so a generator: `sum(f(i) for i in range(n))`)
_LIST_FUNCS = frozenset({"sum", "min", "max", "len", "list"})


# ---- elaboration-time values -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TVal:
    """A tensor value during elaboration."""

    node: ir.Node
    scope: int  # index of the scope it was defined in (to refuse reads across a segment wall)


@dataclass(eq=False)
class StreamSlot:
    """A live stream of the segment being elaborated."""

    name: str
    current: ir.StreamNode


@dataclass(eq=False)
class StreamArray:
    """`s` in `s[0]`, `s[1]`: indices -> stream names."""

    base: str
    names: dict[int, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Tomb:
    """A stream that a restructure consumed (reading it again is an error)."""

    name: str
    span: Span | None


@dataclass(eq=False)
class _Block:
    kind: str
    name: str | None
    span: Span | None
    steps: list[ir.Step] = field(default_factory=list)
    inputs: tuple[ir.StreamNode, ...] = ()
    modules: list[tuple[ir.OpNode, str, Span | None]] = field(default_factory=list)
    locals: list[tuple[str, ir.Node]] = field(default_factory=list)
    implicit: bool = False


@dataclass(eq=False)
class _Phase:
    name: str | None
    span: Span | None
    snapshot: dict[str, ir.StreamNode]
    steps: list[ir.Update | ir.Create] = field(default_factory=list)
    updated: dict[str, Span | None] = field(default_factory=dict)


@dataclass(eq=False)
class _Plain:
    name: str
    span: Span | None
    scope: int = 0
    first_id: int = 0  # nodes with smaller ids were created before the block: its inputs
    assigns: list[ir.Assign] = field(default_factory=list)
    modules: list[tuple[ir.OpNode, str, Span | None]] = field(default_factory=list)


@dataclass(eq=False)
class _Segment:
    key: str
    name: str | None
    span: Span | None
    scope: int
    entry: list[ir.Entry] = field(default_factory=list)
    entry_assign: list[ir.Assign] = field(default_factory=list)
    blocks: list[ir.Block] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    live: dict[str, StreamSlot] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    started: bool = False


class _Elaborator:
    def __init__(self, spec: ast.Spec, overrides: dict[str, Any],
                 given_as: str = "--set {name}") -> None:
        self.spec = spec
        self.given_as = given_as
        self.overrides = dict(overrides)
        self.used_overrides: set[str] = set()
        self._ids = itertools.count()
        self.scopes: list[dict[str, Any]] = [{}]
        self.params: list[ir.Param] = []
        self.options: list[ir.Option] = []
        self.inputs: list[ir.InputNode] = []
        self.items: list[ir.Item] = []
        self.model_modules: list[tuple[ir.OpNode, str, Span | None]] = []
        self.model_name: str | None = None
        self.output: tuple[str, ir.Node, Span | None] | None = None
        self.seg: _Segment | None = None
        self.blk: _Block | None = None
        self.phase: _Phase | None = None
        self.in_head = False
        self.head_used = False
        self.n_segments = 0
        self.entry_mode = False
        self.plain: _Plain | None = None
        self.n_plain = 0
        # tensor values local to a closed block (for the error when a later block reads them)
        self.block_locals: dict[str, Span | None] = {}
        self.warnings: list[SpecWarning] = []

    # ---- helpers ------------------------------------------------------------------------------

    _work = 0

    def nid(self) -> int:
        return next(self._ids)

    def lookup(self, name: str, span: Span | None) -> Any:
        for level in range(len(self.scopes) - 1, -1, -1):
            if name in self.scopes[level]:
                return self.scopes[level][name], level
        if name in self.block_locals:
            raise SpecNameError(
                f"'{name}' was computed inside the block at line {_line(self.block_locals[name])},"
                " and a block's values end with it",
                span,
                ["compute it inside the block that reads it (each block is undone on its own, "
                 "from its streams alone)"],
            )
        known = sorted({k for s in self.scopes for k in s} | set(_CT_FUNCS))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        if close:
            hint = [f"did you mean '{close[0]}'?"]
        elif self.seg is not None:
            hint = [f"if '{name}' is a stream, add it to the segment's `streams` "
                    "declaration; a block reads only its segment's streams and its own values"]
        else:
            hint = [f"if '{name}' is an input of the model, declare it with "
                    f"`input {name}: [B, ...]`"]
        raise SpecNameError(f"unknown name '{name}'", span, hint)

    def bind(self, name: str, value: Any, level: int | None = None) -> None:
        self.scopes[-1 if level is None else level][name] = value

    def bind_ct(self, name: str, value: Any) -> None:
        """Bind a compile-time value assigned inside a segment. Blocks are not lexical scopes
        for compile-time values (a `rate = 0.5` between two repeats is seen by the second): the
        name is rebound where it already lives, or else at the segment's level."""
        seg = self.seg
        assert seg is not None
        for level in range(len(self.scopes) - 1, -1, -1):
            if name in self.scopes[level]:
                self.scopes[level][name] = value
                return
        self.scopes[seg.scope if self.blk is not None else -1][name] = value

    def _check_ident(self, name: str, span: Span | None, what: str) -> None:
        """Refuse names that would break the generated Python (keywords, our own names)."""
        if what in ("layer", "segment"):
            taken = name in RESERVED
        elif what == "parameter":  # a constructor argument and an attribute of the model
            taken = name in module_globals() or name in MODULE_ATTRIBUTES or name in (
                "reversible", "checkpoint", "overrides", "fixed")
        else:  # the model's class name, values and streams: names in the generated file
            taken = name in module_globals() or python_reserved(name)
        if keyword.iskeyword(name) or taken or name.startswith("_"):
            raise SpecNameError(
                f"'{name}' cannot be used as a {what} name: the generated module uses it", span,
                ["choose another name"])

    # ---- statements ---------------------------------------------------------------------------

    def run(self) -> ir.Program:
        for stmt in self.spec.stmts:
            if self.output is not None:
                raise SpecTypeError("`output` must be the last statement of the spec", stmt.span,
                                    [f"the output was declared at line {_line(self.output[2])}"])
            self.stmt(stmt)
        unknown = set(self.overrides) - self.used_overrides
        if unknown:
            declared = [p.name for p in self.params]
            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, declared, n=1)
            raise SpecNameError(
                f"{self.given_as.format(name=name)}: the spec declares no parameter '{name}'",
                None,
                [f"did you mean '{close[0]}'?" if close else
                 "declared parameters: " + (", ".join(declared) or "none")],
            )
        if self.model_name is None:
            raise SpecNameError("the spec has no `model NAME` statement", self._first_span())
        if not self.inputs:
            raise SpecNameError("the spec declares no `input`", self._first_span())
        if self.output is None:
            raise SpecNameError("the spec has no `output NAME` statement", self._first_span())
        items = self._name_segments()
        model_modules = self._name_modules(self.model_modules, scope="model")
        args = {p.name: p for p in self.params if p.kind == "arg"}
        for name, node in model_modules:
            if name in args:  # the model keeps each argument as an attribute of that name
                raise SpecNameError(f"'{name}' names a layer and a model argument (line "
                                    f"{_line(args[name].span)})", node.span)
        taken = {name for name, _ in model_modules}
        for item in items:
            if isinstance(item, ir.Segment | ir.PlainBlock):
                if item.name in taken:
                    raise SpecNameError(
                        f"'{item.name}' names a segment or block and another part of the model",
                        item.span,
                    )
                taken.add(item.name)
        return ir.Program(
            name=self.model_name,
            source_name=self.spec.source_name,
            params=tuple(self.params),
            options=tuple(self.options),
            inputs=tuple(self.inputs),
            items=tuple(items),
            output=self.output[1],
            output_name=self.output[0],
            model_modules=tuple(model_modules),
            overrides=tuple(sorted(self.overrides.items())),
            warnings=tuple(self.warnings),
        )

    def _first_span(self) -> Span | None:
        for s in self.spec.stmts:
            if s.span is not None:
                return Span(s.span.source, 1, 1, 1, 2)
        if self.spec.source is not None:  # an empty spec: its first line
            return Span(self.spec.source, 1, 1, 1, 2)
        return None

    def stmts(self, body: ast.Body) -> None:
        for s in body.stmts:
            self.stmt(s)

    def stmt(self, s: ast.Stmt) -> None:
        method = getattr(self, "s_" + type(s).__name__)
        self._nest(s.span, 1)
        try:
            method(s)
        finally:
            self._depth -= 1

    def _top_only(self, s: ast.Stmt, what: str) -> None:
        if self.seg is not None or self.in_head or len(self.scopes) > 1 or self._loop_depth:
            raise SpecTypeError(f"{what} must be at the top level of the spec", s.span)

    _loop_depth = 0

    def s_ModelDecl(self, s: ast.ModelDecl) -> None:
        self._top_only(s, "`model`")
        if self.model_name is not None:
            raise SpecNameError("`model` is declared twice", s.span)
        if not s.name[0].isupper() and not s.name[0].isalpha():
            raise SpecNameError("the model name must start with a letter", s.span)
        self._check_ident(s.name, s.span, "model")
        self.model_name = s.name

    def s_ParamDecl(self, s: ast.ParamDecl) -> None:
        self._top_only(s, f"`{s.kind}`")
        self._check_ident(s.name, s.name_span, "parameter")
        if any(p.name == s.name for p in self.params):
            raise SpecNameError(f"parameter '{s.name}' is declared twice", s.name_span)
        default = self.ct(s.value)
        value = default
        if s.name in self.overrides:
            value = _coerce_override(self.given_as.format(name=s.name), self.overrides[s.name],
                                     default, s.name_span)
            self.used_overrides.add(s.name)
        if s.kind == "arg":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SpecTypeError(
                    f"model argument '{s.name}' must be a number, got {_kind(value)}", s.span
                )
            if isinstance(value, int):
                sym = sympy.Symbol(s.name, integer=True, positive=True)
            else:
                sym = sympy.Symbol(s.name, real=True, nonnegative=True)
            self.params.append(
                ir.Param(name=s.name, kind="arg", value=sym, default=value, symbol=sym,
                         span=s.span)
            )
            self.bind(s.name, sym)
        else:
            self.params.append(
                ir.Param(name=s.name, kind="param", value=value, default=default, span=s.span)
            )
            self.bind(s.name, value)

    def s_OptionDecl(self, s: ast.OptionDecl) -> None:
        self._top_only(s, "`option`")
        self._check_ident(s.name, s.span, "option")
        choices = self.ct(s.choices)
        if not isinstance(choices, list) or not choices:
            raise SpecTypeError("an option's choices must be a non-empty list", s.choices.span)
        for c in choices:
            if not isinstance(c, int | float | str) or isinstance(c, bool):
                raise SpecTypeError("option choices must be numbers or strings", s.choices.span)
        default = self.ct(s.default)
        if default not in choices:
            raise SpecTypeError(
                f"the default {default!r} is not one of the choices {choices!r}", s.default.span
            )
        sym = None
        if all(isinstance(c, int | float) for c in choices):
            sym = sympy.Symbol(s.name, positive=True)
        self.options.append(
            ir.Option(name=s.name, choices=tuple(choices), default=default, symbol=sym,
                      span=s.span)
        )
        self.bind(s.name, ir.RuntimeRef(s.name, sym))

    def s_InputDecl(self, s: ast.InputDecl) -> None:
        self._top_only(s, "`input`")
        self._check_ident(s.name, s.span, "input")
        dims: list[sympy.Expr] = []
        for d in s.dims:
            if isinstance(d, ast.Name) and not self._defined(d.id):
                dims.append(B if d.id == "B" else dim_symbol(d.id))
                continue
            v = self.ct(d)
            if isinstance(v, bool) or not isinstance(v, int | sympy.Expr):
                raise SpecTypeError(f"an input dimension must be an integer, got {_kind(v)}",
                                    d.span)
            dims.append(to_expr(v))
        if not dims or dims[0] != B:
            raise SpecTypeError("an input's first dimension must be the batch, `B`", s.span)
        node = ir.InputNode(id=self.nid(), shape=tuple(dims), span=s.span, name=s.name)
        self.inputs.append(node)
        self.bind(s.name, TVal(node, 0))

    def _defined(self, name: str) -> bool:
        return any(name in sc for sc in self.scopes)

    def s_OutputDecl(self, s: ast.OutputDecl) -> None:
        self._top_only(s, "`output`")
        value, _ = self.lookup(s.name, s.span)
        if not isinstance(value, TVal):
            raise SpecTypeError(f"the output must be a tensor, '{s.name}' is {_kind(value)}",
                                s.span)
        if self.output is not None:
            raise SpecNameError("`output` is declared twice", s.span)
        self.output = (s.name, value.node, s.span)

    def s_Head(self, s: ast.Head) -> None:
        self._top_only(s, "`head`")
        if self.head_used:
            raise SpecNameError("`head` appears twice", s.span)
        self.head_used = True
        self.in_head = True
        try:
            self.stmts(s.body)
        finally:
            self.in_head = False

    def s_For(self, s: ast.For) -> None:
        seq = self.ct(s.iter)
        if not isinstance(seq, list | tuple | range):
            raise SpecTypeError(f"`for` needs a list or range, got {_kind(seq)}", s.iter.span)
        self._loop_depth += 1
        try:
            for v in seq:
                self.work(s.span)
                self.bind(s.var, v)
                self.stmts(s.body)
        finally:
            self._loop_depth -= 1

    def s_If(self, s: ast.If) -> None:
        for cond, body in s.branches:
            if self.ct_bool(cond):
                self.stmts(body)
                return
        if s.other is not None:
            self.stmts(s.other)

    # -- assignments

    def s_Assign(self, s: ast.Assign) -> None:
        if self.seg is not None and not self.entry_mode:
            self._seg_assign(s)
            return
        value = self.ev(s.value)
        values = self._spread(value, len(s.targets), s)
        tensors = [v for v in values if isinstance(v, TVal)]
        for t in s.targets:
            if t.index is not None:
                raise SpecTypeError("only streams can be assigned by index", t.span)
        if tensors and len(tensors) != len(values):
            raise SpecTypeError("cannot mix tensors and numbers in one assignment", s.span)
        if (len(values) == 1 and isinstance(values[0], list) and values[0]
                and all(isinstance(v, TVal) for v in values[0])):
            # a list of tensors: one statement naming each element (h0, h1, ...)
            name = s.targets[0].name
            self._check_ident(name, s.targets[0].span, "value")
            self._emit(ir.Assign(targets=tuple(f"{name}{i}" for i in range(len(values[0]))),
                                 values=tuple(v.node for v in values[0]), head=self.in_head,
                                 span=s.span))
            self.bind(name, values[0])
            return
        if not tensors:
            for t, v in zip(s.targets, values, strict=True):
                self.bind(t.name, v)
            return
        for t in s.targets:
            self._check_ident(t.name, t.span, "value")
        nodes = tuple(v.node for v in tensors)
        self._emit(ir.Assign(targets=tuple(t.name for t in s.targets), values=nodes,
                             head=self.in_head, span=s.span))
        for t, v in zip(s.targets, tensors, strict=True):
            self.bind(t.name, v)

    def _emit(self, a: ir.Assign) -> None:
        if self.plain is not None:
            self.plain.assigns.append(a)
        else:
            self.items.append(a)

    def _spread(self, value: Any, n: int, s: ast.Stmt) -> list[Any]:
        if n == 1:
            if isinstance(value, tuple):
                raise SpecTypeError(f"this produces {len(value)} values; name each of them",
                                    s.span)
            return [value]
        if isinstance(value, tuple | list) and len(value) == n:
            return list(value)
        got = len(value) if isinstance(value, tuple | list) else 1
        raise SpecTypeError(f"{n} names but {got} value{'s' if got != 1 else ''}", s.span)

    def s_AugAssign(self, s: ast.AugAssign) -> None:
        if self.seg is not None:
            self._seg_aug(s)
            return
        cur, _ = self.lookup(s.target.name, s.target.span)
        rhs = self.ev(s.value)
        value = self.binop(s.op, cur, rhs, s.span)
        if not isinstance(value, TVal):
            self.bind(s.target.name, value)
            return
        self._emit(ir.Assign(targets=(s.target.name,), values=(value.node,),
                             head=self.in_head, span=s.span))
        self.bind(s.target.name, value)

    # ---- segments -----------------------------------------------------------------------------

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
        return blk

    def _close_block(self) -> None:
        blk, seg = self.blk, self.seg
        if blk is None or seg is None:
            return
        self.blk = None
        for name, value in self.scopes.pop().items():
            if isinstance(value, TVal) and not any(name in sc for sc in self.scopes):
                self.block_locals[name] = blk.span
        if not blk.steps:
            return
        outputs = tuple(seg.live[n].current for n in sorted(seg.live, key=lambda n: seg.order[n]))
        modules = self._name_modules(blk.modules, scope="block")
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
        for step in ph.steps:
            if isinstance(step, ir.Update):
                seg.live[step.target].current = step.after
        if ph.steps:
            blk.steps.append(ir.Phase(name=s.name, steps=tuple(ph.steps), span=s.span))

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
            self.scopes[seg.scope][n.stream] = _Tomb(n.stream, s.span)
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
            raise SpecNameError(
                f"stream '{t.name}' no longer exists: it was rearranged at line "
                f"{v.span.line if v.span else '?'}",
                t.span,
            )
        return t.name if isinstance(v, StreamSlot) else None

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

    # ---- expressions --------------------------------------------------------------------------

    def ct(self, e: ast.Expr) -> Any:
        """Evaluate an expression that must be a compile-time value."""
        v = self.ev(e)
        if isinstance(v, TVal | StreamArray | ir.RuntimeRef):
            raise SpecTypeError(f"expected a compile-time value here, got {_kind(v)}", e.span)
        return v

    def ct_bool(self, e: ast.Expr) -> bool:
        v = self.ct(e)
        return _truth(v, e.span)

    def ev(self, e: ast.Expr) -> Any:
        self._nest(e.span, 1)
        try:
            return getattr(self, "e_" + type(e).__name__)(e)
        finally:
            self._depth -= 1

    _depth = 0

    def _nest(self, span: Span | None, n: int) -> None:
        self._depth += n
        if self._depth > MAX_NESTING:
            self._depth = 0
            raise SpecTypeError(f"expressions and statements nest more than {MAX_NESTING} deep "
                                "here", span)

    def e_Number(self, e: ast.Number) -> Any:
        return _ct_check_value(e.value, e.span)

    def work(self, span: Span | None, n: int = 1) -> None:
        """Count unrolling work; a spec that unrolls without end gets an error, not a hang."""
        self._work += n
        if self._work > MAX_WORK:
            raise SpecTypeError(
                f"the spec unrolls to more than {MAX_WORK} loop iterations and operations; "
                "is a loop bound or a parameter far too large?", span)

    def e_String(self, e: ast.String) -> Any:
        return e.value

    def e_Bool(self, e: ast.Bool) -> Any:
        return e.value

    def e_Name(self, e: ast.Name) -> Any:
        value, level = self.lookup(e.id, e.span)
        if isinstance(value, StreamSlot):
            return TVal(self._read_stream(value.name, e.span), level)
        if isinstance(value, _Tomb):
            raise SpecNameError(
                f"stream '{value.name}' no longer exists: it was rearranged at line "
                f"{_line(value.span)}",
                e.span,
            )
        if isinstance(value, TVal) and self.seg is not None and not self.entry_mode:
            if level < self.seg.scope:
                raise SpecTypeError(
                    f"'{e.id}' is a value from outside the reversible segment; a block may read "
                    "only the segment's streams",
                    e.span,
                    ["bring it in as a stream (`streams ...`) or compute it inside the block"],
                )
        return value

    def e_ListExpr(self, e: ast.ListExpr) -> Any:
        return [self.ev(i) for i in e.items]

    def e_ListComp(self, e: ast.ListComp) -> Any:
        seq = self.ct(e.iter)
        if not isinstance(seq, list | tuple | range):
            raise SpecTypeError(f"cannot iterate over {_kind(seq)}", e.iter.span)
        out = []
        self.scopes.append({})
        try:
            for v in seq:
                self.work(e.span)
                self.bind(e.var, v)
                out.append(self.ev(e.elt))
        finally:
            self.scopes.pop()
        return out

    def e_GenCall(self, e: ast.GenCall) -> Any:
        if e.func not in _LIST_FUNCS:
            close = difflib.get_close_matches(e.func, list(_CT_FUNCS), n=1, cutoff=0.75)
            raise SpecNameError(
                f"'{e.func}' cannot take a generator: only {', '.join(sorted(_LIST_FUNCS))} do",
                e.span, [f"did you mean '{close[0]}'?"] if close else [])
        items = self.e_ListComp(ast.ListComp(elt=e.elt, var=e.var, iter=e.iter, span=e.span))
        return self.call_builtin(e.func, [items], {}, e.span)

    def e_Index(self, e: ast.Index) -> Any:
        base = self.ev(e.base)
        idx = self.ct(e.index)
        if isinstance(base, StreamArray):
            name = base.names.get(idx) if isinstance(idx, int) else None
            if name is None or self.seg is None or name not in self.seg.live:
                if name is not None and self.seg is not None:
                    tomb = self.scopes[self.seg.scope].get(name)
                    if isinstance(tomb, _Tomb):
                        raise SpecNameError(
                            f"stream {base.base}[{idx}] no longer exists: it was rearranged at "
                            f"line {_line(tomb.span)}",
                            e.span,
                        )
                raise SpecNameError(f"{base.base}[{idx}] is not a stream", e.span)
            return TVal(self._read_stream(name, e.span), self.seg.scope)
        if isinstance(base, list | tuple):
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise SpecTypeError(f"a list index must be an integer, got {_kind(idx)}",
                                    e.index.span)
            if not -len(base) <= idx < len(base):
                raise SpecTypeError(f"index {idx} is out of range for a list of {len(base)}",
                                    e.span)
            return base[idx]
        raise SpecTypeError(f"cannot index {_kind(base)}", e.span)

    def e_Slice(self, e: ast.Slice) -> Any:
        base = self.ct(e.base)
        lo = None if e.lower is None else self.ct(e.lower)
        hi = None if e.upper is None else self.ct(e.upper)
        if not isinstance(base, list | tuple):
            raise SpecTypeError(f"cannot slice {_kind(base)}", e.span)
        for v, part in ((lo, e.lower), (hi, e.upper)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise SpecTypeError(f"a slice bound must be an integer, got {_kind(v)}",
                                    part.span if part is not None else e.span)
        return list(base[lo:hi])

    def e_UnaryOp(self, e: ast.UnaryOp) -> Any:
        v = self.ev(e.operand)
        if e.op == "not":
            return not _truth(self._ct_only(v, e), e.span)
        if isinstance(v, TVal):
            if e.op == "+":
                return v
            return self.apply_op("neg", [v], {}, e.span)
        v = self._ct_only(v, e)
        if not isinstance(v, int | float | sympy.Expr) or isinstance(v, bool):
            raise SpecTypeError(f"cannot negate {_kind(v)}", e.span)
        return -v if e.op == "-" else v

    def _ct_only(self, v: Any, e: ast.Expr) -> Any:
        if isinstance(v, TVal | StreamArray | ir.RuntimeRef):
            raise SpecTypeError(f"expected a compile-time value here, got {_kind(v)}", e.span)
        return v

    def e_BinOp(self, e: ast.BinOp) -> Any:
        return self.binop(e.op, self.ev(e.left), self.ev(e.right), e.span)

    def binop(self, op: str, a: Any, b: Any, span: Span | None) -> Any:
        if isinstance(a, TVal) or isinstance(b, TVal):
            names = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
            if op in names:
                return self.apply_op(names[op], [a, b], {}, span)
            if op == "**":
                if isinstance(b, TVal):
                    raise SpecTypeError("the exponent of ** must be a number", span)
                return self.apply_op("pow", [a], {"exponent": b}, span)
            raise SpecTypeError(f"'{op}' is not defined for tensors", span)
        for v in (a, b):
            if isinstance(v, StreamArray | ir.RuntimeRef):
                raise SpecTypeError(f"'{op}' is not defined for {_kind(v)}", span)
        if op == "*" and isinstance(a, list) and isinstance(b, int) and not isinstance(b, bool):
            self.work(span, len(a) * max(b, 0))  # list repetition builds that many items
        elif op == "+" and isinstance(a, list) and isinstance(b, list):
            self.work(span, len(a) + len(b))
        return _ct_binop(op, a, b, span)

    def e_Compare(self, e: ast.Compare) -> Any:
        a = self._ct_only(self.ev(e.left), e.left)
        b = self._ct_only(self.ev(e.right), e.right)
        for v in (a, b):
            if isinstance(v, sympy.Expr) and v.free_symbols:
                raise SpecTypeError(
                    f"cannot compare {v}: it depends on a model argument or a free dimension, "
                    "which cannot decide the structure at compile time",
                    e.span,
                )
        try:
            if e.op == "in":
                return a in b
            if e.op == "not_in":
                return a not in b
            return _COMPARE[e.op](a, b)
        except TypeError:
            raise SpecTypeError(f"cannot compare {_kind(a)} with {_kind(b)}", e.span) from None

    def e_BoolOp(self, e: ast.BoolOp) -> Any:
        a = self.ct_bool(e.left)
        if e.op == "and":
            return a and self.ct_bool(e.right)
        return a or self.ct_bool(e.right)

    def e_IfExp(self, e: ast.IfExp) -> Any:
        return self.ev(e.then) if self.ct_bool(e.cond) else self.ev(e.other)

    def e_Call(self, e: ast.Call) -> Any:
        opdef = catalogue.get(e.func)
        args = [self.ev(a) for a in e.args]
        kwargs: dict[str, Any] = {}
        kw_spans: dict[str, Span | None] = {}
        for k in e.kwargs:
            if k.name in kwargs:
                raise SpecNameError(f"argument '{k.name}' is given twice", k.span)
            kwargs[k.name] = self.ev(k.value)
            kw_spans[k.name] = k.span
        has_tensor = any(isinstance(a, TVal) for a in args) or any(
            isinstance(v, TVal) for v in kwargs.values()
        )
        if e.func in _CT_FUNCS and not (opdef is not None and has_tensor) and e.func != "sum":
            if e.alias:
                raise SpecTypeError("only layers can be named with `as`", e.span)
            return self.call_builtin(e.func, args, kwargs, e.span)
        if e.func == "sum":
            return self.call_builtin("sum", args, kwargs, e.span)
        if opdef is None:
            pool = catalogue.names() if has_tensor else catalogue.names() + list(_CT_FUNCS)
            close = difflib.get_close_matches(e.func, pool, n=1, cutoff=0.75)
            raise SpecNameError(
                f"unknown op '{e.func}'", e.func_span or e.span,
                [f"did you mean '{close[0]}'?"] if close else
                ["`revdsl ops` lists the catalogue"],
            )
        return self.apply_op(e.func, args, kwargs, e.span, alias=e.alias, kw_spans=kw_spans,
                             arg_spans=[a.span for a in e.args])

    def call_builtin(self, func: str, args: list[Any], kwargs: dict[str, Any],
                     span: Span | None) -> Any:
        if func == "sum" and len(args) == 1 and isinstance(args[0], list) and any(
            isinstance(v, TVal) for v in args[0]
        ):
            items = args[0]
            if not items:
                raise SpecTypeError("sum of an empty list of tensors", span)
            acc = items[0]
            for v in items[1:]:
                acc = self.binop("+", acc, v, span)
            return acc
        for v in [*args, *kwargs.values()]:
            if isinstance(v, TVal | StreamArray | ir.RuntimeRef):
                if func == "len" and isinstance(v, StreamArray):
                    return len(v.names)
                raise SpecTypeError(f"{func}() takes compile-time values, got {_kind(v)}", span)
            if isinstance(v, sympy.Expr) and v.free_symbols and func in (
                "range", "int", "round", "len", "bool", "floor", "ceil"
            ):
                raise SpecTypeError(
                    f"{func}({v}) depends on a model argument or a free dimension", span
                )
        if func == "sum" and len(args) == 1 and isinstance(args[0], list):
            total: Any = 0
            for v in args[0]:
                total = _ct_binop("+", total, v, span)
            return total
        try:
            result = _CT_FUNCS[func](*args, **kwargs)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SpecTypeError(f"{func}(): {exc}", span) from None
        if isinstance(result, range):
            if len(result) > MAX_LIST:
                raise SpecTypeError(f"range of {len(result)} items is too long (at most "
                                    f"{MAX_LIST})", span)
            return list(result)
        return _ct_check_value(result, span)

    # ---- op application -----------------------------------------------------------------------

    def apply_op(self, name: str, args: list[Any], kwargs: dict[str, Any], span: Span | None,
                 alias: str | None = None, kw_spans: dict[str, Span | None] | None = None,
                 arg_spans: list[Span | None] | None = None, lenient: bool = False) -> Any:
        opdef = catalogue.get(name)
        assert opdef is not None, name
        self.work(span)
        kw_spans = kw_spans or {}
        arg_spans = arg_spans or [span] * len(args)
        # split positional arguments into tensor inputs and positional attributes
        if opdef.inputs == "*":
            n_in = sum(1 for a in args if isinstance(a, TVal | list))
            flat: list[Any] = []
            for a in args[:n_in]:
                flat.extend(a if isinstance(a, list) else [a])
            tensor_args, rest = flat, args[n_in:]
            if not tensor_args:
                raise SpecTypeError(f"{name}() needs at least one tensor", span)
        else:
            assert isinstance(opdef.inputs, int)
            tensor_args, rest = args[: opdef.inputs], args[opdef.inputs:]
            if len(tensor_args) < opdef.inputs:
                raise SpecTypeError(
                    f"{name}() takes {opdef.inputs} tensor input"
                    f"{'s' if opdef.inputs != 1 else ''}, got {len(tensor_args)}",
                    span,
                )
        if len(rest) > len(opdef.positional):
            raise SpecTypeError(f"{name}() got too many positional arguments", span)
        attrs_in = dict(zip(opdef.positional, rest, strict=False))
        for k, v in kwargs.items():
            if k in attrs_in:
                raise SpecNameError(f"{name}(): '{k}' is given twice", kw_spans.get(k, span))
            attrs_in[k] = v
        inputs: list[ir.Node] = []
        for i, a in enumerate(tensor_args):
            if isinstance(a, TVal):
                inputs.append(a.node)
            elif opdef.kind == "algebra" and isinstance(a, int | float) and not isinstance(a, bool):
                inputs.append(ir.ConstNode(id=self.nid(), shape=(), span=span, value=a))
            elif opdef.kind == "algebra" and isinstance(a, sympy.Expr):
                raise SpecTypeError(
                    f"{name}: a model argument cannot be mixed into tensor arithmetic", span
                )
            else:
                where = arg_spans[i] if i < len(arg_spans) else span
                raise SpecTypeError(f"{name}() input {i + 1} must be a tensor, got {_kind(a)}",
                                    where)
        attrs = self._check_attrs(opdef, attrs_in, span, kw_spans)
        shapes = [n.shape for n in inputs]
        problem = None
        try:
            for check in opdef.checks:
                msg = check(shapes, attrs)
                if msg:
                    raise OpShapeError(msg)
            out = opdef.shape(shapes, attrs)
        except OpShapeError as exc:
            if lenient and opdef.elementwise and self.seg is not None:
                out = shapes[0]
                problem = str(exc)
            else:
                raise ShapeError(f"{name}: {exc}", span) from None
        except (ArithmeticError, ValueError, TypeError, IndexError) as exc:
            # a shape rule meeting attribute values it has no message for: still the user's
            # input, so a positioned error rather than a traceback
            raise ShapeError(f"{name}: cannot be applied with these arguments ({exc})",
                             span) from None
        if opdef.has_module:
            self._check_ctor(opdef, shapes, attrs, span)
        n_out = opdef.n_outputs(attrs)
        out_shapes: tuple[Shape, ...]
        if n_out > 1:
            assert isinstance(out, tuple) and out and isinstance(out[0], tuple)
            out_shapes = tuple(out)  # type: ignore[arg-type]
            first: Shape = out_shapes[0]
        else:
            first = out  # type: ignore[assignment]
            out_shapes = (first,)
        if alias is not None:
            if not opdef.has_module:
                raise SpecTypeError(f"'{name}' has no parameters to name with `as`", span)
            self._check_ident(alias, span, "layer")
        attr_items = tuple(sorted(attrs.items()))
        if problem is not None:
            attr_items = (*attr_items, ("__problem__", problem))
        node = ir.OpNode(id=self.nid(), shape=first, span=span, op=name, inputs=tuple(inputs),
                         attrs=attr_items, module=alias, n_out=n_out, out_shapes=out_shapes)
        if opdef.has_module:
            base = alias or opdef.default_name or name
            record = (node, base, span)
            if self.blk is not None:
                self.blk.modules.append(record)
            elif self.seg is not None and not self.entry_mode:
                blk = self._ensure_block(span)
                blk.modules.append(record)
            elif self.plain is not None:
                self.plain.modules.append(record)
            else:
                self.model_modules.append(record)
        level = len(self.scopes) - 1
        if n_out > 1:
            return tuple(
                TVal(ir.OutNode(id=self.nid(), shape=s, span=span, source=node, index=i), level)
                for i, s in enumerate(out_shapes)
            )
        return TVal(node, level)

    def _check_attrs(self, opdef: OpDef, given: dict[str, Any], span: Span | None,
                     kw_spans: dict[str, Span | None]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in given.items():
            spec = opdef.attr(k)
            where = kw_spans.get(k, span)
            if spec is None:
                known = [a.name for a in opdef.attrs]
                close = difflib.get_close_matches(k, known, n=1)
                note = (f"did you mean '{close[0]}'?" if close else
                        ("it takes: " + ", ".join(known)) if known else "it takes no attributes")
                raise SpecNameError(f"{opdef.name}() has no attribute '{k}'", where, [note])
            out[k] = _check_attr(opdef, spec, v, where)
            self._check_domain(opdef, spec, out[k], where)
        for a in opdef.attrs:
            if a.name not in out:
                if a.default is REQUIRED:
                    raise SpecTypeError(f"{opdef.name}() needs '{a.name}'", span)
                out[a.name] = a.default
        return out

    def _check_ctor(self, opdef: OpDef, shapes: list[Shape], attrs: dict[str, Any],
                    span: Span | None) -> None:
        """A layer is built when the model is: its constructor may depend on model arguments
        but not on a free input size (`linear` over a dimension of size S)."""
        assert opdef.ctor is not None
        args = {p.symbol for p in self.params if p.symbol is not None}
        try:
            entries = opdef.ctor(shapes, attrs)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{opdef.name}: its layer cannot be built for these input shapes "
                             f"({exc}); a free input size cannot set a layer's size",
                             span) from None
        for entry in entries:
            values = entry[1] if isinstance(entry[1], tuple | list) else (entry[1],)
            for v in values:
                free = (v.free_symbols - args) if isinstance(v, sympy.Basic) else set()
                if free:
                    names = ", ".join(sorted(str(f) for f in free))
                    raise ShapeError(
                        f"{opdef.name}: its '{entry[0]}' would be {v}, which depends on the free "
                        f"input size {names}: a layer's size must be known when the model is "
                        "built", span, ["give the input that size (`input img: [B, 3, 224, 224]`)"
                                        " or apply the layer to a dimension of fixed size"])

    def _check_domain(self, opdef: OpDef, spec: Attr, v: Any, span: Span | None) -> None:
        """Refuse a number outside the attribute's domain (a drop rate of 1.5, an eps of 0).
        A value that depends on model arguments is checked at their default values."""
        if (spec.domain is None and spec.minimum is None) or isinstance(
                v, bool | str | ir.RuntimeRef) or v is None:
            return
        values = v if isinstance(v, tuple | list) else (v,)
        for x in values:
            shown = x
            if isinstance(x, sympy.Basic):
                x = x.subs({p.symbol: p.default for p in self.params if p.symbol is not None})
                if not x.is_number:
                    continue
                if not x.is_finite:
                    raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {shown} is not a finite "
                                        "number", span)
                x = float(x)
            if isinstance(x, int | float) and not math.isfinite(x):
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {x} is not a finite number",
                                    span)
            why = spec.out_of_domain(x)
            if why is None and spec.kind == "int" and spec.minimum is not None and (
                    x < spec.minimum):
                why = f"must be at least {spec.minimum}"
            if why:
                at = "" if shown is x or not isinstance(shown, sympy.Basic) else (
                    f" ({shown} at the model arguments' defaults)")
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' {why}, got {_num_text(x)}{at}",
                                    span)

    # ---- naming -------------------------------------------------------------------------------

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
        for node, _base, span in unique:
            if node.module is not None:
                if node.module in aliases:
                    raise SpecNameError(
                        f"two layers are named '{node.module}' in one {scope}", span
                    )
                aliases[node.module] = span
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


# ---- free helpers ----------------------------------------------------------------------------


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


def _num_text(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _line(span: Span | None) -> str:
    return str(span.line) if span is not None else "?"


def _kind(v: Any) -> str:
    if isinstance(v, TVal):
        return "a tensor"
    if isinstance(v, StreamArray):
        return "a list of streams"
    if isinstance(v, ir.RuntimeRef):
        return f"the call-time option '{v.name}'"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, sympy.Expr):
        return f"the symbolic value {v}"
    return type(v).__name__


def _truth(v: Any, span: Span | None) -> bool:
    if isinstance(v, sympy.Expr) and v.free_symbols:
        raise SpecTypeError(
            f"{v} depends on a model argument or a free dimension and cannot decide the structure",
            span,
        )
    if isinstance(v, TVal):
        raise SpecTypeError("a tensor cannot be used as a condition", span)
    return bool(v)


# compile-time values stay in a range a network can use: this keeps a typo such as
# `depth = 10 ** 100` or a `range(10 ** 9)` a clear error instead of a hang
MAX_INT = 2**53
MAX_LIST = 100_000
MAX_WORK = 200_000  # loop iterations and op applications while unrolling one spec
MAX_NESTING = 2_000  # nested expressions and statements (a 500-term sum is 500 deep)


def _ct_binop(op: str, a: Any, b: Any, span: Span | None) -> Any:
    if op == "**" and isinstance(a, int | float) and isinstance(b, int | float) and not (
        isinstance(a, bool) or isinstance(b, bool)
    ) and abs(a) > 1 and b > 64:
        raise SpecTypeError(f"{a} ** {b} is too large for a compile-time value", span)
    if op == "*" and isinstance(a, list) and isinstance(b, int) and len(a) * b > MAX_LIST:
        raise SpecTypeError(f"a list of {len(a) * b} items is too long (at most {MAX_LIST})",
                            span)
    try:
        out = _ct_binop_raw(op, a, b, span)
    except OverflowError:
        raise SpecTypeError(f"'{op}' overflows: the result is too large", span) from None
    return _ct_check_value(out, span)


def _ct_check_value(v: Any, span: Span | None) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        raise SpecTypeError(f"{v} is too large for a compile-time value (at most 2**53)", span)
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecTypeError(f"the value {v} is not a finite number", span)
    if isinstance(v, complex):
        raise SpecTypeError("the result is not a real number", span)
    if isinstance(v, sympy.Basic):
        if v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            raise SpecTypeError(f"the value {v} is not a finite number", span)
        if v.is_number and v.is_real is False:
            raise SpecTypeError("the result is not a real number", span)
    return v


def _ct_binop_raw(op: str, a: Any, b: Any, span: Span | None) -> Any:
    if isinstance(a, list) and isinstance(b, list) and op == "+":
        return a + b
    if isinstance(a, list) and isinstance(b, int) and op == "*":
        return a * b
    nums = (int, float, sympy.Expr)
    if not isinstance(a, nums) or not isinstance(b, nums) or isinstance(a, bool) or isinstance(
        b, bool
    ):
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        raise SpecTypeError(f"'{op}' is not defined for {_kind(a)} and {_kind(b)}", span)
    symbolic = isinstance(a, sympy.Expr) or isinstance(b, sympy.Expr)
    try:
        if symbolic:
            ea, eb = to_expr(a), to_expr(b)
            if op == "+":
                return ea + eb
            if op == "-":
                return ea - eb
            if op == "*":
                return ea * eb
            if op in ("/", "//", "%") and eb.is_zero:
                raise SpecTypeError("division by zero", span)
            if op == "/":
                return ea / eb
            if op == "//":
                return sympy.floor(ea / eb)
            if op == "%":
                return sympy.Mod(ea, eb)
            if op == "**":
                return ea**eb
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "//":
            return a // b
        if op == "%":
            return a % b
        if op == "**":
            return a**b
    except ZeroDivisionError:
        raise SpecTypeError("division by zero", span) from None
    raise SpecTypeError(f"unknown operator {op}", span)


def _check_attr(opdef: OpDef, spec: Attr, v: Any, span: Span | None) -> Any:
    if isinstance(v, ir.RuntimeRef):
        if not spec.runtime:
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' is fixed when the model is built; it cannot be "
                f"the call-time option '{v.name}'",
                span,
            )
        return v
    if isinstance(v, TVal):
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a {spec.kind}, not a tensor",
                            span)
    if v is None:
        if spec.default is None:
            return None
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' cannot be empty", span)
    if isinstance(v, sympy.Expr) and not v.is_number:
        if not spec.symbolic or spec.kind not in ("int", "float", "number"):
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' must be known at compile time; {v} depends on a "
                "model argument",
                span,
            )
        return v
    if isinstance(v, sympy.Expr):
        v = int(v) if v.is_Integer else float(v)
    k = spec.kind
    if k == "int":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be an integer, got "
                                f"{_kind(v)}", span)
        if spec.minimum is not None and v < spec.minimum:
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be at least {spec.minimum}, "
                                f"got {v}", span)
        if abs(v) > spec.maximum:
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {v} is too large (at most "
                                f"{spec.maximum})", span)
        return v
    if k in ("float", "number"):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a number, got "
                                f"{_kind(v)}", span)
        return float(v) if k == "float" else v
    if k == "bool":
        if not isinstance(v, bool):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be true or false", span)
        return v
    if k == "str":
        if not isinstance(v, str):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a string", span)
        if spec.choices is not None and v not in spec.choices:
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' must be one of "
                + ", ".join(repr(c) for c in spec.choices) + f", got {v!r}",
                span,
            )
        return v
    if k in ("ints", "floats"):
        elem = int if k == "ints" else (int, float)
        if isinstance(v, int | float) and not isinstance(v, bool):
            if k == "ints" and not isinstance(v, int):
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be integers", span)
            return v
        if isinstance(v, list | tuple) and all(
            isinstance(x, elem) and not isinstance(x, bool) for x in v
        ):
            return tuple(v)
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a list of "
                            f"{'integers' if k == 'ints' else 'numbers'}", span)
    raise AssertionError(k)


def _coerce_override(name: str, value: Any, default: Any, span: Span | None) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise SpecTypeError(
            f"{name}: expected {_kind(default)} like the default {default!r}, got "
            f"{value!r}",
            None,
        )
    return value


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


def eval_constant(expr: ast.Expr) -> Any:
    """The compile-time value of an expression that reads no spec names (a `--set` value or an
    override given from Python): numbers, strings, booleans, lists and their arithmetic."""
    return _Elaborator(ast.Spec(stmts=(), source_name="--set"), {}).ct(expr)


def lower(spec: ast.Spec, overrides: dict[str, Any] | None = None,
          given_as: str = "--set {name}") -> ir.Program:
    """Elaborate a parsed spec into the IR, applying `overrides` of its parameters. `given_as`
    says how the user gave an override, for messages (`--set depth`, or the Python API's
    `depth=` keyword)."""
    return _Elaborator(spec, overrides or {}, given_as).run()

