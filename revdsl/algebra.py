"""Sympy models of the elementwise functions a coupling formula may use.

sympy already knows exp, log, tanh, Abs, Max and Min. `sigmoid` and `gelu` are defined here so
that formulas print back as `torch.sigmoid`/`F.gelu` (not as their expansions) while the prover
still knows their facts: sigmoid is positive on the reals, gelu is x·Φ(x).
"""

from __future__ import annotations

import sympy


class sigmoid(sympy.Function):
    """1 / (1 + exp(-x)): real and strictly positive for real x."""

    nargs = 1

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_zero:
            return sympy.Rational(1, 2)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real  # type: ignore[no-any-return]

    def _eval_is_extended_real(self) -> bool | None:
        return self.args[0].is_extended_real  # type: ignore[no-any-return]

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_extended_real else None

    def _eval_is_finite(self) -> bool | None:
        return True if self.args[0].is_extended_real else None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 1 / (1 + sympy.exp(-x))

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return (1 / (1 + sympy.exp(-self.args[0])))._eval_evalf(prec)  # type: ignore[no-any-return]


class softplus(sympy.Function):
    """log(1 + exp(x)): real and strictly positive for real x. Kept as a function (not its
    expansion) so a formula prints as `F.softplus`, which does not overflow where exp would."""

    nargs = 1

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_zero:
            return sympy.log(2)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real  # type: ignore[no-any-return]

    def _eval_is_extended_real(self) -> bool | None:
        return self.args[0].is_extended_real  # type: ignore[no-any-return]

    def _eval_is_positive(self) -> bool | None:
        return True if self.args[0].is_extended_real else None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return sympy.log(1 + sympy.exp(x))

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return sympy.log(1 + sympy.exp(self.args[0]))._eval_evalf(prec)  # type: ignore[no-any-return]


class gelu(sympy.Function):
    """x · Φ(x) with Φ the standard normal CDF (the exact, erf-based GELU)."""

    nargs = 1

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_zero:
            return sympy.Integer(0)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real  # type: ignore[no-any-return]

    def _eval_rewrite_as_erf(self, x: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x = self.args[0]
        return (1 + sympy.erf(x / sympy.sqrt(2))) / 2 + x * sympy.exp(-(x**2) / 2) / sympy.sqrt(
            2 * sympy.pi
        )

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        x = self.args[0]
        return (x * (1 + sympy.erf(x / sympy.sqrt(2))) / 2)._eval_evalf(prec)  # type: ignore[no-any-return]


class softsign(sympy.Function):
    """x / (1 + |x|): real, in (-1, 1), strictly increasing, zero only at 0."""

    nargs = 1

    @classmethod
    def eval(cls, x: sympy.Expr) -> sympy.Expr | None:
        if x.is_zero:
            return sympy.Integer(0)
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real  # type: ignore[no-any-return]

    def _eval_is_finite(self) -> bool | None:
        return True if self.args[0].is_extended_real else None

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        return 1 / (1 + sympy.Abs(self.args[0])) ** 2

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        x = self.args[0]
        return (x / (1 + sympy.Abs(x)))._eval_evalf(prec)  # type: ignore[no-any-return]


class leaky_relu(sympy.Function):
    """leaky_relu(x, slope): x where x >= 0, slope * x below. With slope > 0 a strictly
    increasing bijection of the reals, undone by leaky_relu(y, 1 / slope)."""

    nargs = 2

    @classmethod
    def eval(cls, x: sympy.Expr, slope: sympy.Expr) -> sympy.Expr | None:
        if slope == 1 or x.is_nonnegative:
            return x
        if x.is_negative:
            return slope * x
        return None

    def _eval_is_real(self) -> bool | None:
        return self.args[0].is_real and self.args[1].is_real  # type: ignore[no-any-return]

    def _eval_is_extended_real(self) -> bool | None:
        return self._eval_is_real()

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        x, slope = self.args
        if argindex == 1:
            return sympy.Piecewise((1, x >= 0), (slope, True))
        return sympy.Piecewise((0, x >= 0), (x, True))

    def _eval_rewrite_as_Piecewise(self, x: sympy.Expr, slope: sympy.Expr,
                                   **kwargs: object) -> sympy.Expr:
        return sympy.Piecewise((x, x >= 0), (slope * x, True))

    def _eval_evalf(self, prec: int) -> sympy.Expr:
        return self.rewrite(sympy.Piecewise)._eval_evalf(prec)  # type: ignore[no-any-return]


def relu(x: sympy.Expr) -> sympy.Expr:
    return sympy.Max(sympy.Integer(0), x)


def clamp(x: sympy.Expr, lo: sympy.Expr | None, hi: sympy.Expr | None) -> sympy.Expr:
    out = x
    if lo is not None:
        out = sympy.Max(out, lo)
    if hi is not None:
        out = sympy.Min(out, hi)
    return out


# ---- ranges of the elementwise functions (for the prover's interval arithmetic) ---------------


def _interval(lo: object, hi: object, lo_open: bool, hi_open: bool) -> tuple:
    return (sympy.sympify(lo), sympy.sympify(hi), lo_open, hi_open)


def _monotone(f: object, lo: object, hi: object) -> object:
    """The range of an increasing function with values in (lo, hi), given its argument's."""
    def rule(x: tuple) -> tuple:
        a = f(x[0]) if not x[0].is_infinite else sympy.sympify(lo)  # type: ignore[operator]
        b = f(x[1]) if not x[1].is_infinite else sympy.sympify(hi)  # type: ignore[operator]
        return (a, b, x[2] or x[0].is_infinite, x[3] or x[1].is_infinite)
    return rule


def _abs_range(x: tuple) -> tuple:
    lo, hi, lo_open, hi_open = x
    if lo >= 0:
        return x
    if hi <= 0:
        return (-hi, -lo, hi_open, lo_open)
    top = max(-lo, hi)
    return (sympy.Integer(0), top, False, (-lo > hi and lo_open) or (hi >= -lo and hi_open))


def _log_range(x: tuple) -> tuple:
    lo, hi, lo_open, hi_open = x
    if lo < 0 or (lo == 0 and not lo_open):
        return (-sympy.oo, sympy.oo, True, True)  # log of something that may be <= 0
    new_lo = -sympy.oo if lo == 0 else sympy.log(lo)
    new_hi = sympy.oo if hi.is_infinite else sympy.log(hi)
    return (new_lo, new_hi, lo_open or lo == 0, hi_open or hi.is_infinite)


def _leaky_range(x: tuple, slope: tuple) -> tuple:
    s = slope[0]
    if not (slope[0] == slope[1] and bool(s > 0)):
        return (-sympy.oo, sympy.oo, True, True)
    f = _monotone(lambda v: v if v >= 0 else s * v, -sympy.oo, sympy.oo)
    return f(x)  # type: ignore[operator]


RANGES = {
    leaky_relu: _leaky_range,
    sympy.log: _log_range,
    softsign: _monotone(lambda v: v / (1 + abs(v)), -1, 1),
    sigmoid: _monotone(lambda v: 1 / (1 + sympy.exp(-v)), 0, 1),
    softplus: _monotone(lambda v: sympy.log(1 + sympy.exp(v)), 0, sympy.oo),
    sympy.tanh: _monotone(sympy.tanh, -1, 1),
    sympy.exp: _monotone(sympy.exp, 0, sympy.oo),
    sympy.Abs: _abs_range,
}
