"""The `revdsl` command line.

    revdsl compile SPEC -o OUT.py [--set NAME=VALUE ...]
    revdsl check SPEC [--set ...] [--explain]
    revdsl ops
    revdsl convert SPEC CHECKPOINT --from slowfast -o weights.pt

Errors print as `path:line:col: error: ...` with the source line and a caret, exit status 1, and
no traceback (`--traceback` shows it). `compile` writes its output atomically: on any error the
output file is neither created nor changed. The compile path never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from revdsl.errors import RevdslError
from revdsl.files import UsageError, check_output, parse_sets, read_spec, write_atomically
from revdsl.version import __version__

__all__ = ["UsageError", "main", "parse_sets", "write_atomically"]


def print_warnings(warnings: Sequence[RevdslError]) -> None:
    for w in warnings:
        print(w.render(), file=sys.stderr)


def cmd_compile(args: argparse.Namespace) -> int:
    from revdsl.pipeline import compile_text

    overrides = parse_sets(args.set)
    out = Path(args.output)
    check_output(out, [args.spec])
    compiled = compile_text(read_spec(args.spec), args.spec, overrides)
    assert compiled.source is not None
    print_warnings(compiled.report.warnings)
    write_atomically(out, compiled.source)
    if not args.quiet:
        report = compiled.report
        n = sum(1 for s in report.steps)
        print(f"{args.spec}: {compiled.program.name}: {n} steps proved invertible; wrote {out}",
              file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from revdsl.pipeline import check_text
    from revdsl.report import describe

    overrides = parse_sets(args.set)
    report = check_text(read_spec(args.spec), args.spec, overrides)
    from revdsl.sizes import parse_size_args

    print(describe(report, explain=args.explain, sizes=parse_size_args(args.size)))
    print_warnings(report.warnings)
    if not report.ok:
        from revdsl.errors import Diagnostics

        raise Diagnostics(report.errors)
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from revdsl import catalogue

    if args.markdown:
        from revdsl.docs import ops_markdown

        print(ops_markdown(), end="")
        return 0

    for name in catalogue.names():
        op = catalogue.get(name)
        assert op is not None
        print(f"{name:16s} {op.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="revdsl",
        description="Compile declarative reversible-network specs into standalone PyTorch "
        "modules, proving every reversible step invertible first.",
    )
    p.add_argument("--version", action="version", version=f"revdsl {__version__}")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def spec_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("spec", help="the .rev spec file")
        sp.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="override a spec parameter (repeatable)")
        sp.add_argument("--size", action="append", metavar="DIM=N",
                        help="a value for a free input size (`input img: [B, 3, S, S]`)")

    c = sub.add_parser("compile", help="verify a spec and write the PyTorch module")
    spec_args(c)
    c.add_argument("-o", "--output", required=True, help="the .py file to write")
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    c.set_defaults(func=cmd_compile)

    k = sub.add_parser("check", help="verify a spec: what is reversible, what is stored")
    spec_args(k)
    k.add_argument("--explain", action="store_true",
                   help="print each step's forward formula and its proved inverse")
    k.set_defaults(func=cmd_check)

    o = sub.add_parser("ops", help="list the op catalogue")
    o.add_argument("--markdown", action="store_true",
                   help="the op reference of docs/language.md (signatures, kinds, domains)")
    o.set_defaults(func=cmd_ops)
    for extra in _extra_commands():
        extra(sub, spec_args)
    return p


def _extra_commands() -> list[Any]:
    """Commands defined in their own modules (viz, stats, test, bench): each module has an
    `add_command(sub, spec_args)`; the CLI imports them, they never import the CLI."""
    from revdsl import bench, convert, plan, proptest, stats, viz

    return [viz.add_command, stats.add_command, proptest.add_command, bench.add_command,
            plan.add_command, convert.add_command]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RevdslError as exc:
        if args.traceback:
            raise
        where = "revdsl" if exc.span is None else None
        print(exc.render(where), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
