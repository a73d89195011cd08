"""Parser: the grammar, the AST it builds, and syntax errors with positions."""

from __future__ import annotations

import pytest

from revdsl import ast
from revdsl.errors import SpecSyntaxError
from revdsl.parse import grammar_text, parse, parse_expr


def test_statements_and_expressions() -> None:
    spec = parse(
        "model M\nparam a = [1, 2][1:]\narg k = 3\noption mode: ['x', 'y'] = 'x'\n"
        "input img: [B, 3, 8, 8]\nx = f(img, k=2) as foo; y = (1 if a else 2)\n"
        "reversible r { streams p, q = dup(x)\n repeat i in range(2) { p += g(q) } }\n"
        "head { z = h(p) }\noutput z\n",
        "m.rev",
    )
    kinds = [type(s).__name__ for s in spec.stmts]
    assert kinds == ["ModelDecl", "ParamDecl", "ParamDecl", "OptionDecl", "InputDecl", "Assign",
                     "Assign", "Segment", "Head", "OutputDecl"]
    call = spec.stmts[5].value
    assert isinstance(call, ast.Call) and call.alias == "foo" and call.kwargs[0].name == "k"
    seg = spec.stmts[7]
    assert isinstance(seg, ast.Segment) and seg.name == "r"
    rep = seg.body.stmts[1]
    assert isinstance(rep, ast.Repeat) and rep.var == "i"
    assert isinstance(rep.body.stmts[0], ast.AugAssign) and rep.body.stmts[0].op == "+"


def test_spans_do_not_affect_equality() -> None:
    a = parse_expr("f(x,   2) + 3")
    b = parse_expr("f( x, 2 )+3")
    assert a == b
    assert a.span is not None and a.span.column == 1


def test_slices_know_which_bound() -> None:
    lo = parse_expr("a[1:]")
    hi = parse_expr("a[:1]")
    assert isinstance(lo, ast.Slice) and lo.lower is not None and lo.upper is None
    assert isinstance(hi, ast.Slice) and hi.lower is None and hi.upper is not None


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("model M\nparam = 3\n", 2, 7, "unexpected '='"),
        ("model M\nx = f(a,, b)\n", 2, 9, "unexpected ','"),
        ("model M\nparam a = 3 $\n", 2, 13, "unexpected character '$'"),
        ("model M\nreversible { x1 += f(x2)\n", 2, 25, "unexpected end of file"),
    ],
)
def test_syntax_errors_have_positions(text: str, line: int, col: int, words: str) -> None:
    with pytest.raises(SpecSyntaxError) as exc:
        parse(text, "bad.rev")
    err = exc.value
    assert err.span is not None
    assert (err.span.line, err.span.column) == (line, col)
    rendered = err.render()
    assert rendered.startswith(f"bad.rev:{line}:{col}: error: {words}")
    assert "^" in rendered.splitlines()[2]


def test_bare_conditional_expression_needs_parentheses() -> None:
    # `x = a if c else b` would be ambiguous with a following `if` statement
    with pytest.raises(SpecSyntaxError):
        parse("model M\nx = 1 if true else 2\n")


def test_grammar_is_the_repository_file() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "grammars" / "revdsl.lark").read_text()
    assert grammar_text() == text
