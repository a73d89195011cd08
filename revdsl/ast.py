"""The typed AST: frozen dataclasses mirroring what the user wrote.

The AST is the parser's output and the elaborator's input (parse.py -> ast.Spec -> lower.py). It
keeps the surface syntax (loops, conditionals, parameter expressions) so that error messages can
point at what the user wrote. Spans do not take part in equality, so two ASTs parsed from
differently formatted texts compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from revdsl.source import Source, Span


def _span() -> Span | None:
    """A span field: not part of equality or repr."""
    return field(default=None, compare=False, repr=False)  # type: ignore[no-any-return]


# ---- expressions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Expr:
    """Base of all expressions."""

    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Number(Expr):
    value: int | float
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class String(Expr):
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Bool(Expr):
    value: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Name(Expr):
    id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListExpr(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListComp(Expr):
    """`[elt for var in iter]`."""

    elt: Expr
    var: str
    iter: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Index(Expr):
    base: Expr
    index: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Slice(Expr):
    base: Expr
    lower: Expr | None
    upper: Expr | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Keyword:
    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Expr):
    """`func(args, name=value, ...) [as alias]`; func is a builtin or a catalogue op."""

    func: str
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    alias: str | None = None
    func_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class GenCall(Expr):
    """`func(elt for var in iter)`, e.g. `sum(f(s[i]) for i in range(j))`."""

    func: str
    elt: Expr
    var: str
    iter: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class BinOp(Expr):
    """Arithmetic: op is one of + - * / // % **."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class UnaryOp(Expr):
    """op is '-', '+' or 'not'."""

    op: str
    operand: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Compare(Expr):
    """op is one of == != < <= > >= in not_in."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class BoolOp(Expr):
    """op is 'and' or 'or'."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class IfExp(Expr):
    """`(then if cond else other)`."""

    cond: Expr
    then: Expr
    other: Expr


# ---- statements -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """An assignment target: a name, or `name[index]` for an element of a stream list."""

    name: str
    index: Expr | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Stmt:
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDecl(Stmt):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamDecl(Stmt):
    """`param name = value` (compile time) or `arg name = value` (constructor argument)."""

    kind: str
    name: str
    value: Expr
    name_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionDecl(Stmt):
    """`option name: [choices] = default`, an argument of the model's forward."""

    name: str
    choices: Expr
    default: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class InputDecl(Stmt):
    name: str
    dims: tuple[Expr, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputDecl(Stmt):
    name: str
    more: tuple[str, ...] = ()  # `output a, b, c`: the names after the first


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign(Stmt):
    targets: tuple[Target, ...]
    value: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class AugAssign(Stmt):
    """`target op= value` with op one of + - * /."""

    target: Target
    op: str
    value: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Body:
    stmts: tuple[Stmt, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class For(Stmt):
    var: str
    iter: Expr
    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class If(Stmt):
    """`if c {..} elif c {..} else {..}`: branches in order, `other` for else."""

    branches: tuple[tuple[Expr, Body], ...]
    other: Body | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment(Stmt):
    """`reversible [name] { ... }`: a reversible segment."""

    name: str | None
    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockStmt(Stmt):
    """`block [name] {..}` (kind 'block') or `silo [name] {..}` (kind 'silo'): one block."""

    kind: str
    name: str | None
    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class Repeat(Stmt):
    """`repeat [var in] count {..}`: one block per iteration."""

    var: str | None
    count: Expr
    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase(Stmt):
    """`phase [name] {..}`: simultaneous (Jacobi) updates; every read sees the phase's inputs."""

    name: str | None
    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamsDecl(Stmt):
    """`streams a, b = expr`: a segment's streams, initialised from values outside it."""

    targets: tuple[Target, ...]
    value: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDecl(Stmt):
    """`stream s = expr`: a new stream computed from the others (an injective extension)."""

    target: Target
    value: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternDecl(Stmt):
    """`extern name "pkg.module.Class" : [dims], ... -> [dims], ...`: a user module."""

    name: str
    path: str
    inputs: tuple[tuple[Expr, ...], ...]
    outputs: tuple[tuple[Expr, ...], ...]
    path_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A function's parameter, with its default (a compile-time value) when given."""

    name: str
    default: Expr | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class FuncDef(Stmt):
    """`def name(params) { statements; return values }`: expanded at each call."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    returns: tuple[Expr, ...]
    name_span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Head(Stmt):
    """`head {..}`: the statements that make up `forward_head`."""

    body: Body


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """A whole spec file."""

    stmts: tuple[Stmt, ...]
    source_name: str
    source: Source | None = field(default=None, repr=False, compare=False)
