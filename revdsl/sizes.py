"""Free input dimensions: which values they may take, and the values a command uses.

An input may leave a dimension symbolic (`input img: [B, 3, S, S]`): the verifier then checks
the spec for every S at once. To build tensors or to count MACs, a command needs numbers. Ops that
accept only some sizes say so in the catalogue (`OpDef.size_choices`, e.g. the token counts that
have a position table); the allowed values of a free dimension are found from those constraints.
`--size S=160` picks one; without it `stats` and `bench` use the largest allowed value and
`test` draws among all of them. No torch here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy

from revdsl import catalogue, ir
from revdsl.errors import RevdslError
from revdsl.shapes import B, to_expr

_SEARCH = 8192  # the largest size tried when matching a constraint


class SizeError(RevdslError):
    """A free input dimension has no value, or a value it cannot take."""


def free_dims(program: ir.Program) -> list[str]:
    """The symbols of the inputs' shapes other than the batch, in order of first appearance."""
    out: list[str] = []
    for node in program.inputs:
        for d in node.shape:
            for s in sorted(to_expr(d).free_symbols, key=str):
                if s != B and s.name not in out:
                    out.append(s.name)
    return out


def choices(program: ir.Program) -> dict[str, tuple[int, ...]]:
    """For each free dimension some op constrains: the values it may take (smallest first).

    A constraint says an expression of the input sizes must be one of some values; for a
    constraint on one free dimension, each allowed value is matched by the smallest positive
    size that gives it (e.g. a table for 197 tokens with 16-pixel patches: S = 224)."""
    free = set(free_dims(program))
    out: dict[str, set[int]] = {}
    for node in ir.op_nodes(program):
        opdef = catalogue.get(node.op)
        if opdef is None or opdef.size_choices is None:
            continue
        attrs = node.attr_dict
        expr, allowed = opdef.size_choices([c.shape for c in node.inputs], attrs)
        expr = to_expr(expr)
        symbols = [s for s in expr.free_symbols if s != B]
        if len(symbols) != 1 or symbols[0].name not in free:
            continue
        sym = symbols[0]
        fn = sympy.lambdify(sym, expr, modules="math")
        wanted = {int(v) for v in allowed}
        found: dict[int, int] = {}
        for n in range(1, _SEARCH + 1):
            try:
                v = fn(n)
            except (ValueError, ZeroDivisionError, OverflowError):
                continue
            if v in wanted and int(v) not in found:
                found[int(v)] = n
                if len(found) == len(wanted):
                    break
        values = set(found.values())
        prior = out.get(sym.name)
        out[sym.name] = values if prior is None else prior & values
    return {k: tuple(sorted(v)) for k, v in out.items()}


def parse_size_args(items: Sequence[str] | None) -> dict[str, int]:
    """`--size NAME=N` arguments."""
    out: dict[str, int] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier() or not value.isdigit() or int(value) < 1:
            raise SizeError(f"--size expects NAME=N with N a positive integer, got {item!r}")
        if name in out:
            raise SizeError(f"--size {name} is given twice")
        out[name] = int(value)
    return out


def resolve(program: ir.Program, given: dict[str, int] | None = None,
            every: bool = False) -> dict[str, tuple[int, ...]]:
    """The values each free dimension takes: the given one, or (without one) the largest allowed
    value (all of them with `every`). Raises SizeError for an unknown name, a value the spec does
    not allow, or a free dimension with neither a value nor a constraint."""
    given = dict(given or {})
    free = free_dims(program)
    allowed = choices(program)
    span = program.inputs[0].span if program.inputs else None
    for name in given:
        if name not in free:
            what = f"its free dimensions are {', '.join(free)}" if free else "it has none"
            raise SizeError(f"--size {name}: the spec's inputs have no dimension {name} ({what})")
    out: dict[str, tuple[int, ...]] = {}
    for name in free:
        options = allowed.get(name)
        if name in given:
            if options is not None and given[name] not in options:
                raise SizeError(
                    f"--size {name}={given[name]}: the spec accepts {name} in "
                    f"{', '.join(map(str, options))}", span)
            out[name] = (given[name],)
        elif options:
            out[name] = options if every else (options[-1],)
        else:
            raise SizeError(
                f"the input dimension {name} is free and nothing in the spec fixes its value",
                span, notes=(f"give it with --size {name}=N",))
    return out


def first(values: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """One value per dimension (the last listed: the largest)."""
    return {k: v[-1] for k, v in values.items()}
