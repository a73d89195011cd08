"""Extern modules: a user's own `nn.Module`, declared with its import path and its shapes,

    extern gated "mypkg.layers.GatedMlp" : [B, N, C] -> [B, N, C]

and called like an op, `gated(h, dim=384, hidden=1536)`: the keyword arguments build it (numbers,
booleans, strings and lists of them, fixed at compile time). The declared shapes are matched
against the arguments' (a name such as N binds to the actual size, and must agree wherever it
appears) and give the result's shape. To the verifier it is an opaque function, like any layer:
inside a coupling it may compute anything of the other streams. The generated file imports it.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

import sympy

from revdsl import ast, catalogue, ir
from revdsl.errors import ShapeError, SpecNameError, SpecTypeError
from revdsl.lower.consteval import _CT_FUNCS, _kind
from revdsl.lower.values import TVal
from revdsl.shapes import B, fmt_shape, simp

_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class Extern:
    name: str
    path: str
    inputs: tuple[tuple[sympy.Expr, ...], ...]
    outputs: tuple[tuple[sympy.Expr, ...], ...]
    span: Any


class ExternMixin:
    """Extern modules of the elaborator (`self` is the `_Elaborator`)."""

    def s_ExternDecl(self, s: ast.ExternDecl) -> None:
        self._top_only(s, "`extern`")
        if catalogue.get(s.name) is not None or s.name in _CT_FUNCS:
            raise SpecNameError(f"'{s.name}' is already an op or a built-in function; an extern "
                                "module may not take its name", s.span, ["choose another name"])
        self._check_ident(s.name, s.span, "value")
        if not _PATH.fullmatch(s.path) or any(keyword.iskeyword(p) for p in s.path.split(".")):
            raise SpecNameError(f"'{s.path}' is not an import path: write it as "
                                "\"package.module.Class\"", s.path_span or s.span)
        what = f"a dimension of extern '{s.name}'"
        ins = tuple(tuple(self.declared_dims(d, what)) for d in s.inputs)
        outs = tuple(tuple(self.declared_dims(d, what)) for d in s.outputs)
        named = {x for shape in ins for d in shape for x in d.free_symbols}
        for shape, written in zip(outs, s.outputs, strict=True):
            for d, w in zip(shape, written, strict=True):
                loose = sorted(str(x) for x in d.free_symbols - named - {B})
                if loose and isinstance(w, ast.Name):
                    raise SpecNameError(f"the output dimension {loose[0]} of '{s.name}' does not "
                                        "appear in its inputs, so no call fixes it", w.span)
        self.bind(s.name, Extern(s.name, s.path, ins, outs, s.span))

    def apply_extern(self, ext: Extern, e: ast.Call, args: list[Any],
                     kwargs: dict[str, Any]) -> Any:
        if len(args) != len(ext.inputs) or not all(isinstance(a, TVal) for a in args):
            raise SpecTypeError(f"'{ext.name}' takes {len(ext.inputs)} tensor"
                                f"{'' if len(ext.inputs) == 1 else 's'} (as declared at line "
                                f"{ext.span.line if ext.span else '?'})", e.span)
        for k, v in kwargs.items():
            if not _plain(v):
                raise SpecTypeError(f"argument '{k}' of extern '{ext.name}' must be a number, "
                                    f"boolean, string or a list of them, got {_kind(v)}", e.span)
        bound: dict[sympy.Symbol, sympy.Expr] = {}
        for i, (want, tv) in enumerate(zip(ext.inputs, args, strict=True)):
            got = tv.node.shape
            if len(want) != len(got):
                raise ShapeError(f"'{ext.name}' input {i + 1}: declared {fmt_shape(want)}, got "
                                 f"{fmt_shape(got)}", e.span)
            for w, g in zip(want, got, strict=True):
                w = simp(w.subs(bound))
                if isinstance(w, sympy.Symbol) and w != B and w not in bound:
                    bound[w] = g
                elif simp(w - g) != 0:
                    raise ShapeError(f"'{ext.name}' input {i + 1}: declared "
                                     f"{fmt_shape(want)}, got {fmt_shape(got)}", e.span)
        outs = [tuple(simp(d.subs(bound)) for d in shape) for shape in ext.outputs]
        attrs = {"path": ext.path, "kwargs": tuple(sorted(kwargs.items())), "out": tuple(outs)}
        alias = e.alias
        if alias is not None:
            self._check_ident(alias, e.span, "layer")
        base = self.layer_base(alias or ext.name)
        if self.calls:
            alias = None
        node = ir.OpNode(id=self.nid(), shape=outs[0], span=e.span, op="extern",
                         inputs=tuple(a.node for a in args), attrs=tuple(sorted(attrs.items())),
                         module=alias, n_out=len(outs), out_shapes=tuple(outs), problem=None)
        self.record_module(node, base, e.span)
        level = len(self.scopes) - 1
        if len(outs) > 1:
            return tuple(TVal(ir.OutNode(id=self.nid(), shape=s, span=e.span, source=node,
                                         index=i), level) for i, s in enumerate(outs))
        return TVal(node, level)


def _plain(v: Any) -> bool:
    if isinstance(v, bool | int | float | str):
        return True
    if isinstance(v, sympy.Expr):
        return bool(v.is_number)
    if isinstance(v, list | tuple):
        return all(_plain(x) for x in v)
    return False
