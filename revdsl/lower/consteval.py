"""Compile-time evaluation: numbers, strings, lists and their arithmetic, names, calls of the
builtins (`range`, `len`, ...), with limits that end a runaway spec in a positioned error.

`ExprMixin` evaluates expressions for the elaborator (tensor values go to the op application of
`revdsl.lower.apply`); the free functions are the arithmetic of compile-time values."""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Callable
from typing import Any

import sympy

from revdsl import ast, catalogue, ir
from revdsl.errors import SpecNameError, SpecTypeError
from revdsl.lower.values import StreamArray, StreamSlot, TVal, _Tomb
from revdsl.shapes import to_expr
from revdsl.source import Span

_CT_FUNCS: dict[str, Callable[..., Any]] = {
    "range": range, "len": len, "min": min, "max": max, "int": int, "float": float,
    "round": round, "abs": abs, "sum": sum, "bool": bool, "list": list,
    "floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt, "log2": math.log2,
}
# the builtins that take one list (and so a generator: `sum(f(i) for i in range(n))`)
_LIST_FUNCS = frozenset({"sum", "min", "max", "len", "list"})

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}


class ExprMixin:
    """Expression evaluation of the elaborator (`self` is the `_Elaborator`)."""

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
            raise SpecNameError(value.message(), e.span)
        if isinstance(value, TVal) and self.seg is not None and not self.entry_mode:
            if level < self.seg.scope:
                # a conditioning input (a class or time embedding, say): carried through the
                # segment as a stream no step changes
                node = self.context_stream(e.id, value, e.span)  # type: ignore[attr-defined]
                return TVal(node, self.seg.scope)
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
                        raise SpecNameError(tomb.message(f"{base.base}[{idx}]"), e.span)
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
        fn = self.user_function(e.func)  # type: ignore[attr-defined]
        if fn is not None or self.user_extern(e.func) is not None:  # type: ignore[attr-defined]
            kw: dict[str, Any] = {}
            for k in e.kwargs:
                if k.name in kw:
                    raise SpecNameError(f"argument '{k.name}' is given twice", k.span)
                kw[k.name] = self.ev(k.value)
            args = [self.ev(a) for a in e.args]
            if fn is None:
                return self.apply_extern(  # type: ignore[attr-defined]
                    self.user_extern(e.func), e, args, kw)  # type: ignore[attr-defined]
            return self.call_function(fn, e, args, kw)  # type: ignore[attr-defined]
        opdef = catalogue.get(e.func)
        if opdef is not None and opdef.internal:
            opdef = None  # the compiler's own (a simultaneous assignment's permutation)
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
MAX_WORK = 50_000  # loop iterations and op applications while unrolling one spec (a
# depth-96 RevViT takes about 900)
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
