"""Symbolic shapes.

A shape is a tuple of sympy expressions. The batch size is the symbol `B`; other dimensions that a
spec leaves open (an input's height when several sizes are allowed, a call-time keep rate, a model
argument such as `num_classes`) are symbols too, so one check covers every value they can take.
Equality of dimensions is proved with sympy (`same`), never assumed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import sympy

Shape = tuple[sympy.Expr, ...]

B = sympy.Symbol("B", integer=True, positive=True)


def dim_symbol(name: str) -> sympy.Symbol:
    """A free dimension (positive integer)."""
    return sympy.Symbol(name, integer=True, positive=True)


def to_expr(value: object) -> sympy.Expr:
    """A python number or sympy expression as a sympy expression (floats made exact)."""
    if isinstance(value, sympy.Basic):
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        return sympy.Integer(int(value))
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, float):
        return _exact(value)
    raise TypeError(f"not a dimension: {value!r}")


@functools.lru_cache(maxsize=4096)
def _exact(value: float) -> sympy.Expr:
    """A float as an exact rational (cached: nsimplify costs about half a millisecond)."""
    if value.is_integer():
        return sympy.Integer(int(value))
    return sympy.nsimplify(value, rational=True)


def shape(*dims: object) -> Shape:
    return tuple(to_expr(d) for d in dims)


def same(a: object, b: object) -> bool:
    """True when the two dimensions are provably equal for every value of their symbols."""
    return _same(to_expr(a), to_expr(b))


@functools.lru_cache(maxsize=4096)
def _same(ea: sympy.Expr, eb: sympy.Expr) -> bool:
    return ea == eb or is_zero(ea - eb)


def simp(e: object) -> sympy.Expr:
    """A tidy form of a dimension or size: numbers as they are, rational expressions cancelled,
    anything else left alone (no `simplify`: it is slow, see is_zero)."""
    ex = to_expr(e)
    if ex.is_number or ex.is_Symbol:
        return ex
    if ex.has(sympy.floor, sympy.ceiling, sympy.Mod, sympy.Max, sympy.Min, sympy.Function):
        return ex
    return sympy.cancel(ex)


def is_zero(e: sympy.Expr) -> bool:
    """Provably zero for all values of its symbols. Cheap tests first: `simplify` is costly
    (its first call alone imports sympy.physics)."""
    if e == 0:
        return True
    if e.is_number:
        return bool(e.is_zero)
    expanded = sympy.expand(e)
    if expanded == 0:
        return True
    if not expanded.has(sympy.floor, sympy.ceiling, sympy.Mod, sympy.Max, sympy.Min,
                        sympy.Function):
        return False  # a non-zero polynomial (or rational function) in its symbols
    if _nonzero_somewhere(e):
        return False  # a witness: refuted without simplify
    return bool(sympy.simplify(e) == 0)


_POINTS = 4


def _nonzero_somewhere(e: sympy.Expr) -> bool:
    """Whether `e` is visibly non-zero at a few points of its symbols' domains (integers for
    integer symbols, (0, 1) for positive ones: sizes and keep rates). A cheap refutation before
    `simplify`, which costs seconds on token counts such as Min(ceiling(r*(S**2/256 + 1)), ...);
    proving equality is still left to simplify."""
    syms = sorted(e.free_symbols, key=str)
    for k in range(_POINTS):
        point = {}
        for j, sym in enumerate(syms):
            if sym.is_integer:
                point[sym] = sympy.Integer(3 + 37 * k + 11 * j)
            elif sym.is_positive or sym.is_nonnegative:
                point[sym] = sympy.Rational(2 * k + j % 3 + 1, 9)
            else:
                point[sym] = sympy.Rational(4 * k - 7 + j, 5)
        try:
            v = e.subs(point)
            if v.is_number and v.is_finite and abs(float(v)) > 1e-12:
                return True
        except (TypeError, ValueError, ZeroDivisionError):
            continue
    return False


def same_shape(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


def broadcast(shapes: Iterable[Shape]) -> Shape | None:
    """The broadcast of several shapes (numpy rules), or None if they do not broadcast."""
    shapes = [tuple(s) for s in shapes]
    rank = max((len(s) for s in shapes), default=0)
    out: list[sympy.Expr] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        cur: sympy.Expr = sympy.Integer(1)
        for d in dims:
            if same(d, 1):
                continue
            if same(cur, 1):
                cur = d
            elif not same(cur, d):
                return None
        out.append(cur)
    return tuple(out)


def numel(s: Sequence[object]) -> sympy.Expr:
    n: sympy.Expr = sympy.Integer(1)
    for d in s:
        n = n * to_expr(d)
    return n


def per_sample(s: Sequence[object]) -> sympy.Expr:
    """Elements per sample: the product of the dims with the batch symbol divided out."""
    return simp(numel(s) / B) if numel(s).has(B) else numel(s)


def fmt_dim(d: object) -> str:
    e = to_expr(d)
    return str(e)


def fmt_shape(s: Sequence[object]) -> str:
    return "[" + ", ".join(fmt_dim(d) for d in s) + "]"


def is_concrete(d: object) -> bool:
    return bool(to_expr(d).is_number)


def as_int(d: object) -> int | None:
    e = to_expr(d)
    if e.is_Integer:
        return int(e)
    return None


def evaluate(expr: object, values: dict[str, object]) -> sympy.Expr:
    """Substitute named symbols (e.g. model-argument defaults, B=1) into an expression."""
    e = to_expr(expr)
    subs = {s: to_expr(values[s.name]) for s in e.free_symbols if s.name in values}
    return e.subs(subs) if subs else e


def fmt_bytes(size: sympy.Expr) -> str:
    """Bytes as people read them: 588.0 KiB, 2.3 MiB (a symbolic size is printed as is)."""
    if not size.is_number:
        return f"{size} bytes"
    n = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"

