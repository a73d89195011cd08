"""Print sympy expressions as Python source.

Two modes: `tensor=True` prints coupling formulas over tensors (torch.exp, torch.clamp, ...),
`tensor=False` prints scalar expressions such as attribute values that depend on model arguments
(`3 * drop_path_rate / 11`). Terms that mention `first` (the stream being updated) are printed
first, so formulas read `x1 + f` rather than `f + x1`.
"""

from __future__ import annotations

import sympy

from revdsl.algebra import gelu, leaky_relu, sigmoid, softplus, softsign

_PREC_ADD, _PREC_MUL, _PREC_NEG, _PREC_POW, _PREC_ATOM = 10, 20, 30, 40, 100


_TORCH_NAMED = {
    sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh", sympy.atanh: "atanh",
    sympy.asinh: "asinh", sympy.sinh: "sinh", sympy.cosh: "cosh", sympy.sqrt: "sqrt",
    sympy.erf: "erf", sympy.sign: "sign",
}


def py_expr(e: sympy.Basic, names: dict[sympy.Symbol, str] | None = None, *,
            tensor: bool = False, first: sympy.Symbol | None = None) -> str:
    return _Printer(names or {}, tensor, first).show(e)[0]


def math_text(e: sympy.Basic, names: dict[sympy.Symbol, str] | None = None, *,
              first: sympy.Symbol | None = None) -> str:
    """For people: `x1 * exp(f) + g`, `relu(x2)`, `sigmoid(f)` (no module prefixes)."""
    p = _Printer(names or {}, False, first)
    p.plain = True
    return p.show(e)[0]


def _num(n: sympy.Expr) -> str:
    if n.is_Integer:
        return str(int(n))
    f = float(n)
    if f == int(f) and abs(f) < 1e15:
        return f"{int(f)}.0"
    return repr(f)


class _Printer:
    def __init__(self, names: dict[sympy.Symbol, str], tensor: bool,
                 first: sympy.Symbol | None) -> None:
        self.names = names
        self.tensor = tensor
        self.first = first
        self.plain = False

    def wrap(self, e: sympy.Basic, prec: int, strict: bool = False) -> str:
        text, p = self.show(e)
        if p < prec or (strict and p == prec):
            return f"({text})"
        return text

    def show(self, e: sympy.Basic) -> tuple[str, int]:
        if isinstance(e, sympy.Symbol):
            return self.names.get(e, e.name), _PREC_ATOM
        if e.is_Number or isinstance(e, sympy.NumberSymbol):  # 2, 0.5, and constants: e, pi
            if isinstance(e, sympy.NumberSymbol) and self.plain:
                return str(e).replace("E", "e"), _PREC_ATOM
            text = _num(e)  # type: ignore[arg-type]
            return text, (_PREC_NEG if text.startswith("-") else _PREC_ATOM)
        if isinstance(e, sympy.Add):
            return self.add(e)
        if isinstance(e, sympy.Mul):
            return self.mul(e)
        if isinstance(e, sympy.Pow):
            return self.pow(e)
        return self.func(e)

    def _order(self, terms: list[sympy.Basic]) -> list[sympy.Basic]:
        """The updated stream first, constants last: `x1 * (f - 1) + g`."""
        def key(t: sympy.Basic) -> int:
            if self.first is not None and self.first in t.free_symbols:
                return 0
            return 2 if t.is_number else 1

        return sorted(terms, key=key)

    def add(self, e: sympy.Add) -> tuple[str, int]:
        terms = self._order(list(sympy.Add.make_args(e)))
        parts: list[str] = []
        for i, term in enumerate(terms):
            negative = term.as_coeff_Mul()[0].is_negative
            body = -term if negative else term
            if i == 0:
                parts.append(f"-{self.wrap(body, _PREC_NEG)}" if negative
                             else self.wrap(body, _PREC_ADD))
            elif negative:
                parts.append(f" - {self.wrap(body, _PREC_ADD, strict=True)}")
            else:
                parts.append(f" + {self.wrap(body, _PREC_ADD)}")
        return "".join(parts), _PREC_ADD

    def mul(self, e: sympy.Mul) -> tuple[str, int]:
        if e.as_coeff_Mul()[0].is_negative:
            return f"-{self.wrap(-e, _PREC_NEG)}", _PREC_NEG
        coeff, rest = e.as_coeff_Mul()
        num: list[str] = []
        den: list[str] = []
        factors = [f for f in self._order(list(sympy.Mul.make_args(rest))) if f != 1]
        if len(factors) == 1 and coeff == 1:
            return self.show(factors[0])
        for f in factors:
            if isinstance(f, sympy.Pow) and f.exp.is_negative and f.exp.is_Rational:
                base = f.base if f.exp == -1 else sympy.Pow(f.base, -f.exp)
                den.append(self.wrap(base, _PREC_MUL, strict=True))
            else:
                num.append(self.wrap(f, _PREC_MUL))
        if coeff != 1:
            if coeff.is_Rational and not coeff.is_Integer and abs(coeff.p) < 1000 and (
                coeff.q < 1000
            ):
                if coeff.p != 1:
                    num.append(str(coeff.p))
                den.insert(0, str(coeff.q))
            else:
                num.append(_num(coeff))  # after the tensor factors: `x1 * 2`
        if not num:
            num = ["1"]
        text = " * ".join(num)
        for d in den:
            text += f" / {d}"
        return text, _PREC_MUL

    def pow(self, e: sympy.Pow) -> tuple[str, int]:
        base, exp = e.base, e.exp
        if exp == sympy.Rational(1, 2):
            return self.call("sqrt", base)
        if exp == -1:
            return f"1 / {self.wrap(base, _PREC_MUL, strict=True)}", _PREC_MUL
        if exp.is_negative:
            return f"1 / {self.wrap(sympy.Pow(base, -exp), _PREC_MUL, strict=True)}", _PREC_MUL
        return f"{self.wrap(base, _PREC_POW, strict=True)} ** {self.wrap(exp, _PREC_POW)}", (
            _PREC_POW
        )

    def call(self, name: str, *args: sympy.Basic) -> tuple[str, int]:
        inner = ", ".join(self.show(a)[0] for a in args)
        if self.plain:
            return f"{name}({inner})", _PREC_ATOM
        if self.tensor:
            return f"torch.{name}({inner})", _PREC_ATOM
        return f"math.{name}({inner})", _PREC_ATOM

    def func(self, e: sympy.Basic) -> tuple[str, int]:
        f = e.func
        if f in _TORCH_NAMED:  # elementwise functions torch and math both name alike
            return self.call(_TORCH_NAMED[f], *e.args)
        if f == sympy.Abs:
            return self.call("abs", *e.args) if self.tensor else (
                f"abs({self.show(e.args[0])[0]})", _PREC_ATOM)
        if f == gelu and self.plain:
            return f"gelu({self.show(e.args[0])[0]})", _PREC_ATOM
        if f == sigmoid:
            return self.call("sigmoid", *e.args)
        if f == gelu:
            return f"F.gelu({self.show(e.args[0])[0]})", _PREC_ATOM
        if f == softplus:
            name = "softplus" if self.plain else "F.softplus"
            return f"{name}({self.show(e.args[0])[0]})", _PREC_ATOM
        if f == softsign:
            if self.plain:
                return f"softsign({self.show(e.args[0])[0]})", _PREC_ATOM
            return f"F.softsign({self.show(e.args[0])[0]})", _PREC_ATOM
        if f == leaky_relu:
            x, slope = (self.show(a)[0] for a in e.args)
            name = "leaky_relu" if self.plain else "F.leaky_relu"
            return f"{name}({x}, {slope})", _PREC_ATOM
        if f == sympy.floor:
            return f"math.floor({self.show(e.args[0])[0]})", _PREC_ATOM
        if f == sympy.ceiling:
            return f"math.ceil({self.show(e.args[0])[0]})", _PREC_ATOM
        if f in (sympy.Max, sympy.Min):
            return self.minmax(e)
        if f == sympy.Mod:
            a, b = e.args
            return f"{self.wrap(a, _PREC_MUL)} % {self.wrap(b, _PREC_MUL, strict=True)}", (
                _PREC_MUL
            )
        raise NotImplementedError(f"cannot print {f}")

    def minmax(self, e: sympy.Basic) -> tuple[str, int]:
        is_max = e.func == sympy.Max
        numbers = [a for a in e.args if a.is_number]
        others = [a for a in e.args if not a.is_number]
        if self.plain and len(e.args) == 2 and len(numbers) == 1 and not (is_max and 0 in e.args):
            kw = "min" if is_max else "max"
            return f"clamp({self.show(others[0])[0]}, {kw}={_num(numbers[0])})", _PREC_ATOM
        if not self.tensor:
            if is_max and len(e.args) == 2 and 0 in e.args:
                other = e.args[0] if e.args[1] == 0 else e.args[1]
                return f"relu({self.show(other)[0]})", _PREC_ATOM
            name = "max" if is_max else "min"
            return f"{name}({', '.join(self.show(a)[0] for a in e.args)})", _PREC_ATOM
        if len(others) == 1 and len(numbers) == 1:
            x, c = others[0], numbers[0]
            if is_max and c == 0:
                return f"torch.relu({self.show(x)[0]})", _PREC_ATOM
            kw = "min" if is_max else "max"
            return f"torch.clamp({self.show(x)[0]}, {kw}={_num(c)})", _PREC_ATOM
        name = "torch.maximum" if is_max else "torch.minimum"
        args = list(e.args)
        text = self.show(args[0])[0]
        for a in args[1:]:
            text = f"{name}({text}, {self.show(a)[0]})"
        return text, _PREC_ATOM
