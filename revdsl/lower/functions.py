"""User functions: `def name(params) { statements; return values }`.

A function is expanded at each call, at compile time: its body runs in a new scope that sees its
parameters, its own values and the names visible where it was defined (lexical scoping: not the
caller's values, so a function called inside a reversible block cannot reach around its
arguments into the block's streams). Its statements only compute values (assignments, `for`,
`if`); the layers it creates are named after it (`ffn_fc1` for `linear(...) as fc1` inside `ffn`,
`ffn_mlp` for an unnamed mlp; `ffn(x) as ff2` names the call `ff2`). Recursion is refused, and an
error inside the body says which call reached it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revdsl import ast, catalogue
from revdsl.errors import RevdslError, SpecNameError, SpecTypeError
from revdsl.lower.consteval import _CT_FUNCS, _line
from revdsl.source import Span

# statements a function body may hold (they compute values; the rest build the model)
_BODY_STATEMENTS = (ast.Assign, ast.AugAssign, ast.For, ast.If)


@dataclass(frozen=True)
class Function:
    node: ast.FuncDef
    level: int  # the scope it was defined in
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """One call being expanded: names between the definition's scope and the call's own scope
    are hidden from the body."""

    name: str
    level: int  # the definition's scope
    scope: int  # the call's scope
    prefix: str  # layers created here are named `<prefix>_<name>`
    span: Span | None


class FunctionMixin:
    """Functions of the elaborator (`self` is the `_Elaborator`)."""

    calls: list[Frame]
    model_calls: dict[str, int]
    function_calls: dict[str, tuple[Span | None, list[Span | None]]]

    def s_FuncDef(self, s: ast.FuncDef) -> None:
        if self.seg is not None or self.in_head or self.plain is not None or self.calls:
            raise SpecTypeError("a function must be defined at the top level of the spec", s.span,
                                ["define it before the segment, block or head that calls it"])
        where = s.name_span or s.span
        if catalogue.get(s.name) is not None or s.name in _CT_FUNCS:
            raise SpecNameError(f"'{s.name}' is already an op or a built-in function; a "
                                "function may not take its name", where,
                                ["choose another name"])
        self._check_ident(s.name, where, "function")
        seen: set[str] = set()
        defaults: dict[str, Any] = {}
        for p in s.params:
            if p.name in seen:
                raise SpecNameError(f"parameter '{p.name}' is given twice", p.span)
            seen.add(p.name)
            self._check_ident(p.name, p.span, "parameter")
            if p.default is not None:
                defaults[p.name] = self.ct(p.default)
            elif defaults:
                raise SpecTypeError(f"parameter '{p.name}' without a default follows one with a "
                                    "default", p.span)
        _check_body(s.body, s.name)
        if not s.returns:
            raise SpecTypeError(f"function '{s.name}' returns nothing", s.span)
        self.bind(s.name, Function(s, len(self.scopes) - 1, defaults))

    def user_function(self, name: str) -> Function | None:
        """The function `name` refers to here, if it is one."""
        for level in range(len(self.scopes) - 1, -1, -1):
            if self.hidden(level):
                continue
            if name in self.scopes[level]:
                value = self.scopes[level][name]
                return value if isinstance(value, Function) else None
        return None

    def user_extern(self, name: str) -> Any:
        """The extern module `name` refers to here, if it is one."""
        from revdsl.lower.externs import Extern

        for level in range(len(self.scopes) - 1, -1, -1):
            if not self.hidden(level) and name in self.scopes[level]:
                value = self.scopes[level][name]
                return value if isinstance(value, Extern) else None
        return None

    def hidden(self, level: int) -> bool:
        """Whether scope `level` is out of reach of the function body being expanded."""
        return bool(self.calls) and self.calls[-1].level < level < self.calls[-1].scope

    def call_function(self, fn: Function, e: ast.Call, args: list[Any],
                      kwargs: dict[str, Any]) -> Any:
        d = fn.node
        if any(f.name == d.name for f in self.calls):
            chain = " -> ".join([*(f.name for f in self.calls), d.name])
            raise SpecTypeError(f"'{d.name}' calls itself ({chain}): functions are expanded at "
                                "compile time, so recursion is not allowed", e.span,
                                [f"'{d.name}' is defined at line {_line(d.span)}"])
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise SpecTypeError(f"'{d.name}' takes {len(names)} argument"
                                f"{'' if len(names) == 1 else 's'}, got {len(args)}", e.span,
                                [f"def {d.name}({', '.join(names)}) at line {_line(d.span)}"])
        bound = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k not in names:
                raise SpecNameError(f"'{d.name}' has no parameter '{k}'", e.span,
                                    [f"def {d.name}({', '.join(names)}) at line {_line(d.span)}"])
            if k in bound:
                raise SpecTypeError(f"argument '{k}' of '{d.name}' is given twice", e.span)
            bound[k] = v
        for p in d.params:
            if p.name not in bound:
                if p.name not in fn.defaults:
                    raise SpecTypeError(f"'{d.name}' needs argument '{p.name}'", e.span,
                                        [f"def {d.name}({', '.join(names)}) at line "
                                         f"{_line(d.span)}"])
                bound[p.name] = fn.defaults[p.name]
        prefix = e.alias or d.name
        if e.alias is not None:
            self._check_ident(e.alias, e.span, "layer")
        if self.calls:
            prefix = f"{self.calls[-1].prefix}_{prefix}"
        # the k-th call in one block (or stored part) is `name`, `name1`, `name2`, ...
        counts = self._call_counts()
        k = counts.get(prefix, 0)
        counts[prefix] = k + 1
        prefix = prefix if k == 0 else f"{prefix}{k}"
        self.function_calls.setdefault(d.name, (d.span, []))[1].append(e.span)
        self.scopes.append(dict(bound))
        self.calls.append(Frame(d.name, fn.level, len(self.scopes) - 1, prefix, e.span))
        try:
            for s in d.body:
                self.stmt(s)
            results = [self.ev(r) for r in d.returns]
        except RevdslError as exc:
            exc.notes = (*exc.notes, f"in function '{d.name}' (line {_line(d.span)}), called at "
                                     f"line {_line(e.span)}")
            raise
        finally:
            self.calls.pop()
            self.scopes.pop()
        return results[0] if len(results) == 1 else tuple(results)

    def _call_counts(self) -> dict[str, int]:
        """Calls so far, per function, in the part whose layers this call creates (a block, a
        stored block, the block a segment's next update opens, or the model)."""
        if self.blk is not None:
            return self.blk.calls
        if self.seg is not None and not self.entry_mode:
            return self.seg.next_block_calls.setdefault(len(self.seg.blocks), {})
        return self.plain.calls if self.plain is not None else self.model_calls

    def layer_base(self, base: str) -> str:
        """A layer's name inside a function: after the call (`ffn_fc1`)."""
        return f"{self.calls[-1].prefix}_{base}" if self.calls else base

    def fn_assign(self, s: ast.Assign) -> None:
        """`a, b = ...` in a function body: names in the call's scope, nothing emitted."""
        for t in s.targets:
            if t.index is not None:
                raise SpecTypeError("only a function's own names can be assigned in its body",
                                    t.span)
        values = self._spread(self.ev(s.value), len(s.targets), s)
        for t, v in zip(s.targets, values, strict=True):
            self.bind(t.name, v)

    def fn_aug(self, s: ast.AugAssign) -> None:
        if s.target.index is not None:
            raise SpecTypeError("only a function's own names can be assigned in its body",
                                s.target.span)
        old, _ = self.lookup(s.target.name, s.target.span)
        self.bind(s.target.name, self.binop(s.op, old, self.ev(s.value), s.span))


def _check_body(stmts: tuple[ast.Stmt, ...], name: str) -> None:
    for s in stmts:
        if not isinstance(s, _BODY_STATEMENTS):
            raise SpecTypeError(
                f"a {type(s).__name__.lower()} statement cannot be part of function '{name}'",
                s.span, ["a function computes values: assignments, `for` and `if`; `return` "
                         "gives its result"])
        if isinstance(s, ast.For):
            _check_body(s.body.stmts, name)
        elif isinstance(s, ast.If):
            for _, body in s.branches:
                _check_body(body.stmts, name)
            if s.other is not None:
                _check_body(s.other.stmts, name)
