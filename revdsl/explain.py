"""Readable text of what the verifier works with: an opaque function (`describe_atom`:
`drop_path(attention(layernorm(x2)))`) and a step's formula or proved inverse
(`display_formula`: `x1 + f`), for diagnostics, `check --explain`, pictures and the generated
docstrings."""

from __future__ import annotations

from typing import Any

import sympy

from revdsl import ir
from revdsl.prover import T, atom_symbols


def _fn(node: ir.Node) -> str:
    if isinstance(node, ir.OpNode):
        return f"{node.op}(...)" + (f" at line {node.span.line}" if node.span else "")
    if isinstance(node, ir.StreamNode):
        return node.stream
    if isinstance(node, ir.OutNode):
        return f"{node.source.op}(...)"
    return "the function"


def describe_atom(node: ir.Node, limit: int = 4) -> str:
    """A short readable form of an opaque function: `drop_path(attention(layernorm(x2)))`."""
    if isinstance(node, ir.StreamNode):
        return node.stream
    if isinstance(node, ir.InputNode):
        return node.name
    if isinstance(node, ir.ConstNode):
        return repr(node.value)
    if isinstance(node, ir.OutNode):
        return f"{describe_atom(node.source, limit)}[{node.index}]"
    assert isinstance(node, ir.OpNode)
    if limit <= 0:
        return f"{node.op}(...)"
    args = ", ".join(describe_atom(c, limit - 1) for c in node.inputs)
    return f"{node.op}({args})"


def _display(formula: sympy.Expr, target: str, atoms: list[ir.Node] | tuple[ir.Node, ...],
             old: sympy.Symbol = T) -> str:
    from revdsl.pyprint import math_text

    names = {old: target}
    for i, sym in enumerate(atom_symbols(len(atoms))):
        names[sym] = f"f{i + 1}" if len(atoms) > 1 else "f"
    return math_text(formula, names, first=old)


def display_formula(sp: Any, which: str = "forward") -> str:
    """`x1 + f` style text of a step proof's (`verify.StepProof`) forward formula or its proved
    inverse."""
    if sp.kind == "bijection":
        op = sp.atoms[0].op  # type: ignore[attr-defined]
        return f"{op}({sp.target})" if which == "forward" else f"{op}.inverse({sp.target})"
    if sp.formula is None:
        return ""
    if which == "forward":
        return _display(sp.formula, sp.target, sp.atoms)
    assert sp.inverse is not None
    from revdsl.prover import Y

    return _display(sp.inverse, sp.target, sp.atoms, old=Y)
