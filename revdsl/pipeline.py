"""The stages chained: text -> AST -> IR -> graph -> report -> source.

Each function stops at a stage and returns its result; `RevdslError`s propagate to the caller
(the CLI prints them, `revdsl.load` raises them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revdsl import ir
from revdsl.deep import run_deep
from revdsl.lower import lower
from revdsl.parse import parse
from revdsl.verify import Report, verify


@dataclass(frozen=True)
class Compiled:
    program: ir.Program
    report: Report
    source: str | None = None


def read_spec(path: str | Path) -> tuple[str, str]:
    p = Path(path)
    return p.read_text(encoding="utf-8"), str(path)


GIVEN_AS_SET = "--set {name}"
GIVEN_AS_KEYWORD = "keyword argument '{name}'"


def elaborate(text: str, name: str, overrides: dict[str, Any] | None = None,
              given_as: str = GIVEN_AS_SET) -> ir.Program:
    return run_deep(lambda: lower(parse(text, name), overrides, given_as))


def check_text(text: str, name: str, overrides: dict[str, Any] | None = None,
               given_as: str = GIVEN_AS_SET) -> Report:
    return run_deep(lambda: verify(elaborate(text, name, overrides, given_as)))


def compile_text(text: str, name: str, overrides: dict[str, Any] | None = None,
                 given_as: str = GIVEN_AS_SET) -> Compiled:
    from revdsl.codegen.generate import generate

    def run() -> Compiled:
        program = elaborate(text, name, overrides, given_as)
        report = verify(program)
        report.raise_if_failed()
        return Compiled(program, report, generate(program, report))

    return run_deep(run)
