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
from typing import Any

import sympy

from revdsl import ast, ir
from revdsl.errors import SpecNameError, SpecTypeError, SpecWarning
from revdsl.lower.apply import ApplyMixin
from revdsl.lower.consteval import _CT_FUNCS, ExprMixin, _coerce_override, _kind, _line
from revdsl.lower.externs import ExternMixin
from revdsl.lower.functions import Frame, FunctionMixin
from revdsl.lower.naming import NamingMixin
from revdsl.lower.segments import SegmentMixin
from revdsl.lower.values import TVal, _Block, _Phase, _Plain, _Segment
from revdsl.names import MODULE_ATTRIBUTES, module_globals, python_reserved
from revdsl.shapes import B, dim_symbol, to_expr
from revdsl.source import Span

# Names a submodule may not take: attributes of nn.Module and of the generated classes.
RESERVED = MODULE_ATTRIBUTES | {"torch", "nn", "F", "math"}


class _Elaborator(ExprMixin, SegmentMixin, ApplyMixin, NamingMixin, FunctionMixin,
                  ExternMixin):
    """Runs a spec at compile time into an `ir.Program` (statements here; expressions, segments,
    op application and naming in the mixins of this package)."""

    def __init__(self, spec: ast.Spec, overrides: dict[str, Any],
                 given_as: str = "--set {name}") -> None:
        self.spec = spec
        self.given_as = given_as
        self.overrides = dict(overrides)
        self.used_overrides: set[str] = set()
        self._ids = itertools.count()
        self.scopes: list[dict[str, Any]] = [{}]
        self.calls: list[Frame] = []  # user functions being expanded, innermost last
        self.function_calls: dict[str, tuple[Span | None, list[Span | None]]] = {}
        self.model_calls: dict[str, int] = {}  # user-function calls outside blocks, by name
        self.params: list[ir.Param] = []
        self.options: list[ir.Option] = []
        self.inputs: list[ir.InputNode] = []
        self.items: list[ir.Item] = []
        self.model_modules: list[tuple[ir.OpNode, str, Span | None]] = []
        self.model_name: str | None = None
        self.output: tuple[str, ir.Node, Span | None] | None = None
        self.more_outputs: tuple[tuple[str, ir.Node], ...] = ()
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
        self.block_locals: dict[str, tuple[Span | None, Span | None]] = {}
        # values (and their layers) computed in a segment before a block, handed to that block
        self._pending: tuple[list[Any], dict[str, Any], list[Any]] | None = None
        self.warnings: list[SpecWarning] = []
        # limits: unrolling work done, loops entered, expression/statement nesting
        self._work = 0
        self._loop_depth = 0
        self._depth = 0

    # ---- helpers ------------------------------------------------------------------------------

    def nid(self) -> int:
        return next(self._ids)

    def lookup(self, name: str, span: Span | None) -> Any:
        for level in range(len(self.scopes) - 1, -1, -1):
            if name in self.scopes[level] and not self.hidden(level):
                return self.scopes[level][name], level
        if self.calls:
            raise SpecNameError(
                f"unknown name '{name}' in function '{self.calls[-1].name}'", span,
                ["a function sees its parameters, its own values and the names defined before "
                 "it at the top level; pass anything else as an argument"])
        if name in self.block_locals:
            made, block = self.block_locals[name]
            raise SpecNameError(
                f"'{name}' (computed at line {_line(made)}) belongs to the block at line "
                f"{_line(block)}; a block cannot read another block's values",
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
            more_outputs=self.more_outputs,
            model_modules=tuple(model_modules),
            overrides=tuple(sorted(self.overrides.items())),
            warnings=tuple(self.warnings),
            functions=tuple((name, where, tuple(calls))
                            for name, (where, calls) in self.function_calls.items()),
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
        dims = self.declared_dims(s.dims)
        if not dims or dims[0] != B:
            raise SpecTypeError("an input's first dimension must be the batch, `B`", s.span)
        node = ir.InputNode(id=self.nid(), shape=tuple(dims), span=s.span, name=s.name)
        self.inputs.append(node)
        self.bind(s.name, TVal(node, 0))

    def declared_dims(self, dims: tuple[ast.Expr, ...], what: str = "an input dimension"
                      ) -> list[sympy.Expr]:
        """The dimensions of a declared shape (an input, an extern's inputs and outputs): a name
        defined nowhere is a free size (`B` the batch), anything else a positive integer."""
        out: list[sympy.Expr] = []
        for d in dims:
            if isinstance(d, ast.Name) and not self._defined(d.id):
                out.append(B if d.id == "B" else dim_symbol(d.id))
                continue
            v = self.ct(d)
            if isinstance(v, bool) or not isinstance(v, int | sympy.Expr):
                raise SpecTypeError(f"{what} must be an integer, got {_kind(v)}", d.span)
            e = to_expr(v)
            if e.is_number and (not e.is_integer or e < 1):
                raise SpecTypeError(f"{what} must be a positive integer, got {e}", d.span)
            out.append(e)
        return out

    def _defined(self, name: str) -> bool:
        return any(name in sc for sc in self.scopes)

    def s_OutputDecl(self, s: ast.OutputDecl) -> None:
        self._top_only(s, "`output`")
        nodes = []
        for name in (s.name, *s.more):
            value, _ = self.lookup(name, s.span)
            if not isinstance(value, TVal):
                raise SpecTypeError(f"an output must be a tensor, '{name}' is {_kind(value)}",
                                    s.span)
            if name in (s.name, *s.more)[: len(nodes)]:
                raise SpecNameError(f"'{name}' is an output twice", s.span)
            nodes.append(value.node)
        if self.output is not None:
            raise SpecNameError("`output` is declared twice", s.span)
        self.output = (s.name, nodes[0], s.span)
        self.more_outputs = tuple(zip(s.more, nodes[1:], strict=True))

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
        if self.calls:
            self.fn_assign(s)
            return
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
                                 list_name=name, span=s.span))
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
        if self.calls:
            self.fn_aug(s)
            return
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
