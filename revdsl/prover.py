"""Symbolic invertibility proofs for one coupling update.

An update replaces a stream's value t by y = h(t, a1, ..., ak), where the a's ("atoms") are the
outputs of opaque sub-networks that read other streams. The update can be undone, whatever the
sub-networks compute, exactly when h is a bijection of the reals in t for every value of the a's.
`prove_update` decides that with sympy and returns one of:

* proved: h is affine in t, h = s(a)·t + b(a), and s is provably non-zero for every real a
  (sympy's assumptions: exp(.) > 0, sigmoid(.) + eps > 0, max(|.|, eps) > 0, c != 0, ...).
  The inverse t = h⁻¹(y, a) is obtained by solving y = h(t, a) for t and is checked by
  substitution both ways. (A non-affine h that is provably strictly monotone and unbounded with a
  unique closed-form solution is accepted too.)
* refuted, with a concrete witness: values of the atoms that make the scale zero (so two values of
  t give the same output), two values of t with equal outputs, a change of monotonicity (a
  continuous function that goes down then up repeats values), or a bound h never crosses.
* unknown: neither; never treated as proved.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
from dataclasses import dataclass, field

import sympy

from revdsl.shapes import is_zero

T = sympy.Symbol("t", real=True)
Y = sympy.Symbol("y", real=True)


def atom_symbols(n: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sympy.Symbol(f"a{i}", real=True) for i in range(n))


@dataclass(frozen=True)
class Proof:
    verdict: str  # 'proved' | 'refuted' | 'unknown'
    formula: sympy.Expr  # h(t, a0..)
    reason: str
    inverse: sympy.Expr | None = None  # t as a function of y and the atoms
    scale: sympy.Expr | None = None  # dh/dt when h is affine in t
    shift: sympy.Expr | None = None  # h - scale*t when affine
    witness: dict[str, str] = field(default_factory=dict)

    @property
    def proved(self) -> bool:
        return self.verdict == "proved"

    @property
    def additive(self) -> bool:
        """y = t + shift(a): the backward passes t's gradient straight through."""
        return self.proved and self.scale is not None and self.scale == 1


def prove_update(formula: sympy.Expr, n_atoms: int) -> Proof:
    """Decide whether y = formula(t, a0..a{n-1}) is a bijection in t for all real atoms."""
    return _prove(formula, n_atoms)


@functools.lru_cache(maxsize=512)
def _prove(h: sympy.Expr, n_atoms: int) -> Proof:
    token = _N_ATOMS.set(n_atoms)
    try:
        return _decide(h, n_atoms)
    finally:
        _N_ATOMS.reset(token)


def _decide(h: sympy.Expr, n_atoms: int) -> Proof:
    atoms = atom_symbols(n_atoms)
    if T not in h.free_symbols:
        return Proof(
            "refuted", h,
            "the new value does not depend on the old one, so the old value is lost",
            witness={"t": "0 and 1", "both give": _show(h)},
        )
    scale = _simplest(sympy.diff(h, T))
    if T not in scale.free_symbols:
        shift = _simplest(h - scale * T)
        if T not in shift.free_symbols:
            return _affine(h, scale, shift, atoms)
    return _nonlinear(h, atoms)


# ---- affine updates ---------------------------------------------------------------------------


def _simplest(e: sympy.Expr) -> sympy.Expr:
    """`e` as sympy builds it when that is already free of t-dependence questions, else
    simplified (simplify is slow, so only when the cheap form still mentions t)."""
    if T not in e.free_symbols:
        return e
    expanded = sympy.expand(e)
    if T not in expanded.free_symbols:
        return expanded
    return sympy.simplify(e)


def _nonzero(e: sympy.Expr) -> bool:
    if e.is_positive or e.is_negative or e.is_nonzero:
        return True
    return excludes_zero(value_range(e))


# ---- ranges -----------------------------------------------------------------------------------
#
# The range of an expression over all real values of the atoms, by interval arithmetic: each
# function contributes its range (sigmoid (0, 1), tanh (-1, 1), exp (0, oo), an even power
# [0, oo), ...), so `1 - sigmoid(s)`, `tanh(s) + 2` or `s*s + 0.1` are proved non-zero, and
# `tanh(s) + 0.5` is not. An interval is (low, high, low_open, high_open); sympy's oo for
# unbounded ends. Sound but not complete: a range that cannot be bounded is the whole line.

Interval = tuple[sympy.Expr, sympy.Expr, bool, bool]
_ALL: Interval = (-sympy.oo, sympy.oo, True, True)


def value_range(e: sympy.Expr) -> Interval:
    from revdsl.algebra import RANGES

    if e.is_number:
        v = sympy.nsimplify(e) if e.is_Float else e
        return (v, v, False, False) if v.is_real else _ALL
    if isinstance(e, sympy.Symbol):
        return _ALL
    if isinstance(e, sympy.Add):
        out = value_range(e.args[0])
        for a in e.args[1:]:
            out = _add(out, value_range(a))
        return out
    if isinstance(e, sympy.Mul):
        out = value_range(e.args[0])
        for a in e.args[1:]:
            out = _mul(out, value_range(a))
        return out
    if isinstance(e, sympy.Pow) and e.exp.is_Integer:
        n = int(e.exp)
        base = value_range(e.base)
        if n > 0:
            out = base
            for _ in range(n - 1):
                out = _mul(out, base)
            if n % 2 == 0:  # an even power is never negative, whatever the base
                lo, hi, lo_open, hi_open = out
                if bool(lo < 0):
                    lo, lo_open = sympy.Integer(0), not _contains_zero(base)
                out = (lo, hi, lo_open, hi_open)
            return out
        if n == -1 and excludes_zero(base):
            return _reciprocal(base)
        return _ALL
    rule = RANGES.get(e.func)
    if rule is not None:
        return rule(*[value_range(a) for a in e.args])
    if e.func in (sympy.Max, sympy.Min):
        parts = [value_range(a) for a in e.args]
        pick = max if e.func is sympy.Max else min
        lo = pick(parts, key=lambda p: p[0])
        hi = pick(parts, key=lambda p: p[1])
        return (lo[0], hi[1], lo[2], hi[3])
    return _ALL


def excludes_zero(r: Interval) -> bool:
    lo, hi, lo_open, hi_open = r
    return bool((lo > 0) or (lo == 0 and lo_open) or (hi < 0) or (hi == 0 and hi_open))


def _contains_zero(r: Interval) -> bool:
    return not excludes_zero(r)


def _add(a: Interval, b: Interval) -> Interval:
    return (a[0] + b[0], a[1] + b[1], a[2] or b[2], a[3] or b[3])


def _mul(a: Interval, b: Interval) -> Interval:
    corners = []
    for x, xo in ((a[0], a[2]), (a[1], a[3])):
        for y, yo in ((b[0], b[2]), (b[1], b[3])):
            if (x.is_zero and y.is_infinite) or (y.is_zero and x.is_infinite):
                # 0 * oo: the product can be anything of the right sign there
                return _ALL if not (excludes_zero(a) and excludes_zero(b)) else (
                    _sign_only(a, b))
            corners.append((x * y, xo or yo))
    lo = min(corners, key=lambda c: (c[0], not c[1]))
    hi = max(corners, key=lambda c: (c[0], c[1]))
    return (lo[0], hi[0], lo[1], hi[1])


def _sign_only(a: Interval, b: Interval) -> Interval:
    positive = (a[0] >= 0) == (b[0] >= 0)
    return (sympy.Integer(0), sympy.oo, True, True) if positive else (
        -sympy.oo, sympy.Integer(0), True, True)


def _reciprocal(r: Interval) -> Interval:
    lo, hi, lo_open, hi_open = r
    new_lo = 1 / hi if not hi.is_infinite else sympy.Integer(0)
    new_hi = 1 / lo if not lo.is_infinite else sympy.Integer(0)
    return (new_lo, new_hi, hi_open or hi.is_infinite, lo_open or lo.is_infinite)


def _affine(h: sympy.Expr, scale: sympy.Expr, shift: sympy.Expr,
            atoms: tuple[sympy.Symbol, ...]) -> Proof:
    if scale.is_zero:
        return Proof("refuted", h, "the update multiplies the old value by zero",
                     scale=scale, shift=shift)
    if _nonzero(scale):
        inverse = _solve(h, scale, shift)
        how = _why_nonzero(scale)
        return Proof(
            "proved", h,
            f"affine in the old value with scale {_show(scale)}, which is {how}; "
            "so the old value is recovered uniquely",
            inverse=inverse, scale=scale, shift=shift,
        )
    zero = _find_zero(scale, atoms)
    if zero is not None:
        subs = ", ".join(f"{k} = {v}" for k, v in zero.items())
        return Proof(
            "refuted", h,
            f"the scale {_show(scale)} of the old value is zero when {subs}; then every old "
            "value gives the same result",
            scale=scale, shift=shift, witness={**zero, "scale": "0"},
        )
    return Proof(
        "unknown", h,
        f"cannot prove that the scale {_show(scale)} of the old value is never zero",
        scale=scale, shift=shift,
    )


def _solve(h: sympy.Expr, scale: sympy.Expr, shift: sympy.Expr) -> sympy.Expr:
    """Solve y = h(t) for t.

    The affine solution (y - shift) / scale is cross-checked against `sympy.solve` and by
    substitution both ways (h(inverse(y)) = y and inverse(h(t)) = t); the derivation must agree
    before the proof is accepted.
    """
    direct = (Y - shift) / scale
    # substitution both ways is a complete proof that `direct` inverts h; sympy.solve is an
    # independent derivation, cross-checked when the scale is not a constant (for a constant
    # scale the affine solution is the whole story, and solve costs a slow first import)
    assert is_zero(h.subs(T, direct) - Y), h
    assert is_zero(direct.subs(Y, h) - T), h
    if scale.is_number:
        return direct
    try:
        sols = sympy.solve(sympy.Eq(h, Y), T, dict=False)
    except (NotImplementedError, TypeError):
        sols = []
    solved = [s for s in sols if T not in s.free_symbols] if isinstance(sols, list) else []
    # substitution both ways above is the proof; solve is only a second opinion (it may fail
    # or return an equivalent form it cannot simplify, e.g. with float coefficients)
    del solved
    return direct


def _why_nonzero(scale: sympy.Expr) -> str:
    if scale.is_number:
        return "a non-zero constant"
    if not (scale.is_positive or scale.is_negative or scale.is_nonzero):
        lo, hi, lo_open, hi_open = value_range(scale)
        return (f"in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}{')' if hi_open else ']'} "
                "for every value of the functions (so never zero)")
    if scale.is_positive:
        return "positive for every value of the functions"
    if scale.is_negative:
        return "negative for every value of the functions"
    return "never zero"


_CANDIDATES = (0, 1, -1, sympy.Rational(1, 2), -sympy.Rational(1, 2), 2, -2, 3, -3)


def _find_zero(expr: sympy.Expr, atoms: tuple[sympy.Symbol, ...]) -> dict[str, str] | None:
    from revdsl.algebra import softplus

    # solve over elementary functions: softplus as log(1 + exp(x))
    expr = expr.replace(softplus, lambda x: sympy.log(1 + sympy.exp(x)))
    free = [a for a in atoms if a in expr.free_symbols]
    if not free:
        return None
    # solve for one atom with the others at simple values
    for a in free:
        others = [o for o in free if o is not a]
        for values in itertools.product((0, 1), repeat=len(others)):
            e = expr.subs(dict(zip(others, values, strict=True)))
            try:
                sols = sympy.solveset(e, a, domain=sympy.S.Reals)
            except (NotImplementedError, TypeError, ValueError):
                sols = sympy.S.EmptySet
            if isinstance(sols, sympy.FiniteSet) and sols:
                root = sorted(sols, key=lambda r: (abs(sympy.N(r)), str(r)))[0]
                assignment = {**dict(zip(others, values, strict=True)), a: root}
                if sympy.simplify(expr.subs(assignment)) == 0:
                    return {_show(k): _show(v) for k, v in sorted(assignment.items(),
                                                                  key=lambda kv: str(kv[0]))}
    for values in itertools.product(_CANDIDATES, repeat=len(free)):
        assignment = dict(zip(free, values, strict=True))
        if sympy.simplify(expr.subs(assignment)) == 0:
            return {_show(k): _show(v) for k, v in assignment.items()}
    return None


# ---- non-affine updates -----------------------------------------------------------------------


def _peel(e: sympy.Expr, z: sympy.Expr, layers: list[str]) -> sympy.Expr | None:
    """Undo e(t) = z layer by layer when e is a chain of bijections of the reals in t: a shift
    by functions of the others, a provably non-zero scale, an odd power (undone by the real
    root: sign(z) * |z|**(1/n); sympy's own root of a negative number is complex) and
    leaky_relu with a positive slope (undone by leaky_relu with the reciprocal slope). Each layer
    is strictly monotone and onto, so their composition is a bijection: the inverse is exact.
    None when e is not such a chain."""
    from revdsl.algebra import leaky_relu

    if e == T:
        return z
    if T not in e.free_symbols:
        return None
    if isinstance(e, sympy.Add | sympy.Mul):
        inner = [a for a in e.args if T in a.free_symbols]
        if len(inner) != 1:
            return None
        rest = e.func(*[a for a in e.args if T not in a.free_symbols])
        if isinstance(e, sympy.Add):
            return _peel(inner[0], z - rest, layers)
        if not _nonzero(rest):
            return None
        return _peel(inner[0], z / rest, layers)
    if isinstance(e, sympy.Pow) and e.exp.is_Integer and int(e.exp) % 2 == 1 and e.exp > 1:
        n = int(e.exp)
        layers.append({3: "cube", 5: "fifth", 7: "seventh"}.get(n, f"{n}th") + " power")
        return _peel(e.base, sympy.sign(z) * sympy.Abs(z) ** sympy.Rational(1, n), layers)
    if isinstance(e, leaky_relu) and e.args[1].is_number and e.args[1] > 0:
        layers.append("leaky_relu")
        return _peel(e.args[0], leaky_relu(z, 1 / e.args[1]), layers)
    return None


def _monotone_chain(h: sympy.Expr) -> Proof | None:
    layers: list[str] = []
    inverse = _peel(h, Y, layers)
    if inverse is None:
        expanded = sympy.expand(h)
        layers = []
        inverse = _peel(expanded, Y, layers) if expanded != h else None
    if inverse is None or not layers:
        return None
    for t in (sympy.Rational(-7, 3), 0, sympy.Rational(5, 2)):  # the inverse undoes h
        check = inverse.subs(Y, h.subs(T, t)).subs({a: sympy.Rational(1, 3) for a in
                                                     h.free_symbols - {T}})
        if abs(float(check) - float(t)) > 1e-12:
            return None
    roots = [x for x in layers if x.endswith("power")]
    how = ", then ".join(f"the real {x.split()[0]} root" if x.endswith("power")
                         else "leaky_relu with the reciprocal slope" for x in layers)
    return Proof("proved", h, f"a chain of strictly monotone bijections of the old value "
                 f"({', then '.join(reversed(layers))}) and functions of the others: undone by "
                 f"{how}" + (" (badly conditioned near 0, where small old values are lost in "
                             "floating point)" if roots else ""),
                 inverse=inverse)


def _nonlinear(h: sympy.Expr, atoms: tuple[sympy.Symbol, ...]) -> Proof:
    chain = _monotone_chain(h)
    if chain is not None:
        return chain
    base = {a: 0 for a in atoms}
    h0 = h.subs(base)
    # smallest magnitudes first, so a witness reads `0 and -1/2` rather than `-4 and -7/2`
    grid = sorted((sympy.Rational(k, 2) for k in range(-8, 9)), key=lambda r: (abs(r), r))
    # 1. two old values with exactly the same result
    seen: dict[str, sympy.Expr] = {}
    values = {}
    for t in grid:
        v = sympy.simplify(h0.subs(T, t))
        values[t] = v
        if v.has(sympy.nan, sympy.zoo):
            continue
        key = str(sympy.nsimplify(v)) if v.is_number else str(v)
        if key in seen and sympy.simplify(v - h0.subs(T, seen[key])) == 0:
            t1, t2 = sorted((seen[key], t))
            return Proof(
                "refuted", h,
                f"not one-to-one: old values {t1} and {t2} give the same result "
                f"({_show(v)}) when the functions are 0",
                witness={"t1": str(seen[key]), "t2": str(t), "value": _show(v)},
            )
        seen[key] = t
    continuous = not _has_singularity(h)
    # 2. a continuous function that goes down and then up (or up then down) repeats values
    if continuous:
        fine = [sympy.Rational(k, 8) for k in range(-32, 33)]
        vals = [sympy.N(h0.subs(T, t), 40) for t in fine]
        if all(v.is_real for v in vals):
            for i in range(len(fine) - 2):
                d1 = vals[i + 1] - vals[i]
                d2 = vals[i + 2] - vals[i + 1]
                if abs(d1) > 1e-30 and abs(d2) > 1e-30 and (d1 > 0) != (d2 > 0):
                    t1, t2, t3 = fine[i], fine[i + 1], fine[i + 2]
                    return Proof(
                        "refuted", h,
                        f"not monotonic in the old value: with the functions at 0, the results "
                        f"for old values {t1}, {t2}, {t3} go {'up' if d1 > 0 else 'down'} then "
                        f"{'up' if d2 > 0 else 'down'}, so some result comes from two old values",
                        witness={"t": f"{t1}, {t2}, {t3}"},
                    )
    # 3. provably monotone: bijective if unbounded both ways and solvable in closed form
    d = sympy.simplify(sympy.diff(h, T))
    if continuous and (d.is_positive or d.is_negative):
        lo = sympy.limit(h0, T, -sympy.oo)
        hi = sympy.limit(h0, T, sympy.oo)
        if lo.is_finite or hi.is_finite:
            bound = lo if lo.is_finite else hi
            return Proof(
                "refuted", h,
                f"not onto: with the functions at 0 the result never passes {_show(bound)}, "
                "so values beyond it have no old value",
                witness={"bound": _show(bound)},
            )
        try:
            sols = [s for s in sympy.solve(sympy.Eq(h, Y), T) if not s.has(sympy.I)]
        except (NotImplementedError, TypeError):
            sols = []
        if len(sols) == 1 and _real_everywhere(sols[0]):
            return Proof("proved", h, "strictly monotone and unbounded, with a closed-form "
                         "inverse", inverse=sols[0])
        return Proof("unknown", h, "strictly monotone, but revdsl found no closed-form inverse")
    return Proof(
        "unknown", h,
        "the update is not affine in the old value and revdsl could not decide whether it can "
        "be undone",
    )


def _real_everywhere(e: sympy.Expr) -> bool:
    """No fractional powers: torch would return NaN for a negative base where the real root is
    meant (a cube root, say), so such a closed form is not usable as an inverse."""
    return not any(
        isinstance(n, sympy.Pow) and not n.exp.is_integer for n in sympy.preorder_traversal(e)
    )


def _has_singularity(h: sympy.Expr) -> bool:
    for node in sympy.preorder_traversal(h):
        if isinstance(node, sympy.Pow) and node.exp.is_negative and T in node.base.free_symbols:
            return True
        if isinstance(node, sympy.log | sympy.Function) and node.func in (sympy.log,) and (
            T in node.free_symbols
        ):
            return True
        if isinstance(node, sympy.Pow) and not node.exp.is_integer and T in node.base.free_symbols:
            return True
    return False


def _show(e: object) -> str:
    """Atoms print as the verifier names them (f, or f1, f2, ...), the old value as t."""
    from revdsl.pyprint import math_text

    if not isinstance(e, sympy.Basic):
        return str(e)
    try:
        return math_text(e, _atom_names(e))
    except NotImplementedError:  # a function the printer has no name for: a diagnostic must
        return str(e)            # still come out (a witness such as atanh(0.5))


def _atom_names(e: sympy.Basic) -> dict[sympy.Symbol, str]:
    n = _N_ATOMS.get()
    names: dict[sympy.Symbol, str] = {}
    for i, sym in enumerate(atom_symbols(n)):
        names[sym] = "f" if n == 1 else f"f{i + 1}"
    return names


_N_ATOMS: contextvars.ContextVar[int] = contextvars.ContextVar("n_atoms", default=1)
