"""Stage 1: text -> ast.Spec.

Parses with the Lark grammar in `grammars/revdsl.lark` (LALR, positions propagated) and turns the
parse tree into the frozen dataclasses of `revdsl.ast`. Lark's trees never leave this module.
Syntax errors become `SpecSyntaxError` with the position and the expected tokens in words. This
stage checks only syntax; names, types and shapes are the elaborator's business.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from revdsl import ast
from revdsl.errors import SpecSyntaxError
from revdsl.source import Source, Span, span_from_meta, span_from_token

GRAMMAR_NAME = "revdsl.lark"


def grammar_text() -> str:
    """The grammar, from the installed package or, in a source checkout, from `grammars/`."""
    packaged = resources.files("revdsl").joinpath("grammars", GRAMMAR_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parent.parent / "grammars" / GRAMMAR_NAME
    return checkout.read_text(encoding="utf-8")


@functools.cache
def _parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        start=["start", "expr"],
        cache=_cache_path(),
    )


def _cache_path() -> str | bool:
    """Where lark keeps its analysed grammar between runs (a temp file; False if unwritable)."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(grammar_text().encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir())
    if not os.access(folder, os.W_OK):
        return False
    return str(folder / f"revdsl-grammar-{digest}.lark.cache")


def parse(text: str, name: str = "<spec>") -> ast.Spec:
    """Parse a whole spec."""
    source = Source(name, text)
    tree = _run(source, "start")
    stmts = _ToAst(source).transform(tree)
    return ast.Spec(stmts=tuple(stmts), source_name=name, source=source)


def parse_expr(text: str, name: str = "<expr>") -> ast.Expr:
    """Parse one expression (used for `--set NAME=VALUE`)."""
    source = Source(name, text)
    tree = _run(source, "expr")
    return _ToAst(source).transform(tree)  # type: ignore[no-any-return]


def _run(source: Source, start: str) -> Tree:
    try:
        return _parser().parse(source.text, start=start)
    except UnexpectedInput as exc:
        raise _syntax_error(source, exc) from None


# ---- syntax errors ----------------------------------------------------------------------------

_TOKEN_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "AUGOP": "'+=', '-=', '*=' or '/='",
    "COMP_OP": "a comparison",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "SEMICOLON": "';'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "DOUBLESLASH": "'//'",
    "PERCENT": "'%'",
    "DOUBLESTAR": "'**'",
    "$END": "the end of the file",
}


def _word(terminal: str) -> str:
    if terminal in _TOKEN_WORDS:
        return _TOKEN_WORDS[terminal]
    if terminal.isupper() and terminal.isalpha():
        return f"'{terminal.lower()}'"  # keywords: lark names them after their text
    return terminal


def _expected(names: set[str]) -> str:
    words = sorted({_word(n) for n in names if not n.startswith("__")})
    if not words:
        return ""
    if len(words) > 6:
        keep = [w for w in words if w in ("a name", "a number", "'{'", "'}'", "'('", "')'")]
        words = keep or words[:6]
        return "expected " + ", ".join(words) + ", ..."
    return "expected " + " or ".join(words) if len(words) <= 2 else "expected one of " + ", ".join(
        words
    )


def _syntax_error(source: Source, exc: UnexpectedInput) -> SpecSyntaxError:
    line = exc.line if exc.line and exc.line > 0 else max(1, source.text.count("\n") + 1)
    col = exc.column if exc.column and exc.column > 0 else 1
    if isinstance(exc, UnexpectedCharacters):
        ch = source.text[exc.pos_in_stream] if exc.pos_in_stream < len(source.text) else ""
        what = f"unexpected character {ch!r}"
        span = Span(source, line, col, line, col + 1)
        expected = ""
    elif isinstance(exc, UnexpectedEOF):
        what = "unexpected end of file"
        last = source.text.rstrip().splitlines() or [""]
        line = len(last)
        col = len(last[-1]) + 1
        span = Span(source, line, col, line, col + 1)
        expected = _expected(set(exc.expected))
    else:
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        if tok.type == "$END":
            what = "unexpected end of file"
            last = source.text.rstrip().splitlines() or [""]
            line, col = len(last), len(last[-1]) + 1
            span = Span(source, line, col, line, col + 1)
        else:
            what = f"unexpected {_describe(tok)}"
            span = span_from_token(source, tok)
        expected = _expected(set(exc.expected))
    message = what + (f"; {expected}" if expected else "")
    return SpecSyntaxError(message, span)


def _describe(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"'{tok}'"


# ---- tree -> AST ------------------------------------------------------------------------------


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


@v_args(meta=True)
class _ToAst(Transformer):
    """Turns lark's tree into `revdsl.ast` nodes (no semantic checks here)."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source

    def _span(self, meta: Any) -> Span | None:
        return span_from_meta(self.source, meta)

    def _tok(self, tok: Token) -> Span:
        return span_from_token(self.source, tok)

    # -- top level
    def start(self, meta: Any, children: list[Any]) -> list[ast.Stmt]:
        return [c for c in children if isinstance(c, ast.Stmt)]

    def body(self, meta: Any, children: list[Any]) -> ast.Body:
        return ast.Body(
            stmts=tuple(c for c in children if isinstance(c, ast.Stmt)), span=self._span(meta)
        )

    def model_decl(self, meta: Any, ch: list[Any]) -> ast.ModelDecl:
        return ast.ModelDecl(name=str(ch[0]), span=self._span(meta))

    def param_decl(self, meta: Any, ch: list[Any]) -> ast.ParamDecl:
        return ast.ParamDecl(
            kind="param", name=str(ch[0]), value=ch[1], span=self._span(meta),
            name_span=self._tok(ch[0]),
        )

    def arg_decl(self, meta: Any, ch: list[Any]) -> ast.ParamDecl:
        return ast.ParamDecl(
            kind="arg", name=str(ch[0]), value=ch[1], span=self._span(meta),
            name_span=self._tok(ch[0]),
        )

    def option_decl(self, meta: Any, ch: list[Any]) -> ast.OptionDecl:
        return ast.OptionDecl(name=str(ch[0]), choices=ch[1], default=ch[2], span=self._span(meta))

    def input_decl(self, meta: Any, ch: list[Any]) -> ast.InputDecl:
        return ast.InputDecl(name=str(ch[0]), dims=tuple(ch[1:]), span=self._span(meta))

    def output_decl(self, meta: Any, ch: list[Any]) -> ast.OutputDecl:
        return ast.OutputDecl(name=str(ch[0]), more=tuple(str(c) for c in ch[1:]),
                              span=self._span(meta))

    # -- statements
    def target(self, meta: Any, ch: list[Any]) -> ast.Target:
        return ast.Target(name=str(ch[0]), span=self._span(meta))

    def index_target(self, meta: Any, ch: list[Any]) -> ast.Target:
        return ast.Target(name=str(ch[0]), index=ch[1], span=self._span(meta))

    def assign(self, meta: Any, ch: list[Any]) -> ast.Assign:
        return ast.Assign(targets=tuple(ch[:-1]), value=ch[-1], span=self._span(meta))

    def aug_assign(self, meta: Any, ch: list[Any]) -> ast.AugAssign:
        return ast.AugAssign(target=ch[0], op=str(ch[1])[0], value=ch[2], span=self._span(meta))

    def for_stmt(self, meta: Any, ch: list[Any]) -> ast.For:
        return ast.For(var=str(ch[0]), iter=ch[1], body=ch[2], span=self._span(meta))

    def elif_clause(self, meta: Any, ch: list[Any]) -> tuple[ast.Expr, ast.Body]:
        return (ch[0], ch[1])

    def else_clause(self, meta: Any, ch: list[Any]) -> ast.Body:
        return ch[0]  # type: ignore[no-any-return]

    def if_stmt(self, meta: Any, ch: list[Any]) -> ast.If:
        branches = [(ch[0], ch[1])]
        other = None
        for c in ch[2:]:
            if isinstance(c, tuple):
                branches.append(c)
            else:
                other = c
        return ast.If(branches=tuple(branches), other=other, span=self._span(meta))

    def _named_body(self, ch: list[Any]) -> tuple[str | None, ast.Body]:
        if len(ch) == 2:
            return str(ch[0]), ch[1]
        return None, ch[0]

    def segment(self, meta: Any, ch: list[Any]) -> ast.Segment:
        name, body = self._named_body(ch)
        return ast.Segment(name=name, body=body, span=self._span(meta))

    def block_stmt(self, meta: Any, ch: list[Any]) -> ast.BlockStmt:
        name, body = self._named_body(ch)
        return ast.BlockStmt(kind="block", name=name, body=body, span=self._span(meta))

    def silo_stmt(self, meta: Any, ch: list[Any]) -> ast.BlockStmt:
        name, body = self._named_body(ch)
        return ast.BlockStmt(kind="silo", name=name, body=body, span=self._span(meta))

    def phase_stmt(self, meta: Any, ch: list[Any]) -> ast.Phase:
        name, body = self._named_body(ch)
        return ast.Phase(name=name, body=body, span=self._span(meta))

    def repeat_var(self, meta: Any, ch: list[Any]) -> ast.Repeat:
        return ast.Repeat(var=str(ch[0]), count=ch[1], body=ch[2], span=self._span(meta))

    def repeat_stmt(self, meta: Any, ch: list[Any]) -> ast.Repeat:
        return ast.Repeat(var=None, count=ch[0], body=ch[1], span=self._span(meta))

    def streams_decl(self, meta: Any, ch: list[Any]) -> ast.StreamsDecl:
        return ast.StreamsDecl(targets=tuple(ch[:-1]), value=ch[-1], span=self._span(meta))

    def stream_decl(self, meta: Any, ch: list[Any]) -> ast.StreamDecl:
        return ast.StreamDecl(target=ch[0], value=ch[1], span=self._span(meta))

    def head_stmt(self, meta: Any, ch: list[Any]) -> ast.Head:
        return ast.Head(body=ch[0], span=self._span(meta))

    def extern_shape(self, meta: Any, ch: list[Any]) -> tuple[ast.Expr, ...]:
        return tuple(ch)

    def extern_shapes(self, meta: Any, ch: list[Any]) -> list[tuple[ast.Expr, ...]]:
        return list(ch)

    def extern_decl(self, meta: Any, ch: list[Any]) -> ast.ExternDecl:
        return ast.ExternDecl(name=str(ch[0]), path=str(ch[1])[1:-1], inputs=tuple(ch[2]),
                              outputs=tuple(ch[3]), path_span=self._tok(ch[1]),
                              span=self._span(meta))

    def func_param(self, meta: Any, ch: list[Any]) -> ast.Param:
        return ast.Param(name=str(ch[0]), default=ch[1] if len(ch) > 1 else None,
                         span=self._span(meta))

    def func_params(self, meta: Any, ch: list[Any]) -> list[ast.Param]:
        return [c for c in ch if isinstance(c, ast.Param)]

    def func_body(self, meta: Any, ch: list[Any]) -> tuple[list[ast.Stmt], list[ast.Expr]]:
        stmts = [c for c in ch if isinstance(c, ast.Stmt)]
        returns = [c for c in ch if isinstance(c, ast.Expr)]
        return stmts, returns

    def func_def(self, meta: Any, ch: list[Any]) -> ast.FuncDef:
        name = ch[0]
        params = ch[1] or []
        stmts, returns = ch[2]
        return ast.FuncDef(name=str(name), params=tuple(params), body=tuple(stmts),
                           returns=tuple(returns), name_span=self._tok(name),
                           span=self._span(meta))

    # -- expressions
    def number(self, meta: Any, ch: list[Any]) -> ast.Number:
        return ast.Number(value=_number(str(ch[0])), text=str(ch[0]), span=self._span(meta))

    def string(self, meta: Any, ch: list[Any]) -> ast.String:
        return ast.String(value=str(ch[0])[1:-1], span=self._span(meta))

    def true(self, meta: Any, ch: list[Any]) -> ast.Bool:
        return ast.Bool(value=True, span=self._span(meta))

    def false(self, meta: Any, ch: list[Any]) -> ast.Bool:
        return ast.Bool(value=False, span=self._span(meta))

    def name(self, meta: Any, ch: list[Any]) -> ast.Name:
        return ast.Name(id=str(ch[0]), span=self._span(meta))

    def list(self, meta: Any, ch: list[Any]) -> ast.ListExpr:
        return ast.ListExpr(items=tuple(ch), span=self._span(meta))

    def listcomp(self, meta: Any, ch: list[Any]) -> ast.ListComp:
        return ast.ListComp(elt=ch[0], var=str(ch[1]), iter=ch[2], span=self._span(meta))

    def index(self, meta: Any, ch: list[Any]) -> ast.Index:
        return ast.Index(base=ch[0], index=ch[1], span=self._span(meta))

    def slice_both(self, meta: Any, ch: list[Any]) -> ast.Slice:
        return ast.Slice(base=ch[0], lower=ch[1], upper=ch[2], span=self._span(meta))

    def slice_lower(self, meta: Any, ch: list[Any]) -> ast.Slice:
        return ast.Slice(base=ch[0], lower=ch[1], upper=None, span=self._span(meta))

    def slice_upper(self, meta: Any, ch: list[Any]) -> ast.Slice:
        return ast.Slice(base=ch[0], lower=None, upper=ch[1], span=self._span(meta))

    def alias(self, meta: Any, ch: list[Any]) -> str:
        return str(ch[0])

    def arguments(self, meta: Any, ch: list[Any]) -> list[Any]:
        return ch

    def kwarg(self, meta: Any, ch: list[Any]) -> ast.Keyword:
        return ast.Keyword(name=str(ch[0]), value=ch[1], span=self._span(meta))

    def call(self, meta: Any, ch: list[Any]) -> ast.Call:
        func = ch[0]
        args: list[ast.Expr] = []
        kwargs: list[ast.Keyword] = []
        alias = None
        for c in ch[1:]:
            if isinstance(c, list):
                for a in c:
                    (kwargs if isinstance(a, ast.Keyword) else args).append(a)
            elif isinstance(c, str):
                alias = c
        return ast.Call(
            func=str(func), args=tuple(args), kwargs=tuple(kwargs), alias=alias,
            span=self._span(meta), func_span=self._tok(func),
        )

    def gencall(self, meta: Any, ch: list[Any]) -> ast.GenCall:
        return ast.GenCall(
            func=str(ch[0]), elt=ch[1], var=str(ch[2]), iter=ch[3], span=self._span(meta)
        )

    def _bin(op: str):  # type: ignore[no-untyped-def]
        def method(self: _ToAst, meta: Any, ch: list[Any]) -> ast.BinOp:
            return ast.BinOp(op=op, left=ch[0], right=ch[1], span=self._span(meta))

        return method

    add = _bin("+")
    sub = _bin("-")
    mul = _bin("*")
    truediv = _bin("/")
    floordiv = _bin("//")
    mod = _bin("%")
    pow = _bin("**")

    def neg(self, meta: Any, ch: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp(op="-", operand=ch[0], span=self._span(meta))

    def pos(self, meta: Any, ch: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp(op="+", operand=ch[0], span=self._span(meta))

    def not_op(self, meta: Any, ch: list[Any]) -> ast.UnaryOp:
        return ast.UnaryOp(op="not", operand=ch[0], span=self._span(meta))

    def compare(self, meta: Any, ch: list[Any]) -> ast.Compare:
        return ast.Compare(op=str(ch[1]), left=ch[0], right=ch[2], span=self._span(meta))

    def contains(self, meta: Any, ch: list[Any]) -> ast.Compare:
        return ast.Compare(op="in", left=ch[0], right=ch[1], span=self._span(meta))

    def not_contains(self, meta: Any, ch: list[Any]) -> ast.Compare:
        return ast.Compare(op="not_in", left=ch[0], right=ch[1], span=self._span(meta))

    def and_op(self, meta: Any, ch: list[Any]) -> ast.BoolOp:
        return ast.BoolOp(op="and", left=ch[0], right=ch[1], span=self._span(meta))

    def or_op(self, meta: Any, ch: list[Any]) -> ast.BoolOp:
        return ast.BoolOp(op="or", left=ch[0], right=ch[1], span=self._span(meta))

    def ifexp(self, meta: Any, ch: list[Any]) -> ast.IfExp:
        return ast.IfExp(then=ch[0], cond=ch[1], other=ch[2], span=self._span(meta))

