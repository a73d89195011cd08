"""Block classes shared by identical blocks, decided on data before anything is rendered.

Each block is planned as a `BlockCode`: the text of its class body around the constructor (which
holds no constructor values) and its layers as `Member`s (class and constructor arguments, as
data). Blocks whose plans agree in everything but argument values share one class (`Template`);
an argument becomes a class parameter exactly where the instances' values differ or depend on a
model argument, an optional argument at its default in every instance is left out, and the rest
are literals. Instances render as constructor calls, and a run of instances whose parameters are
affine in their position renders as one comprehension (`[Block(rate=r * i / 11) for i in
range(12)]`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl import catalogue, ir
from revdsl.catalogue import fmt_value
from revdsl.names import module_globals
from revdsl.shapes import is_zero

MISSING: Any = object()  # an argument without a default (always written)


@dataclass(frozen=True)
class Arg:
    """One constructor argument: `default` is MISSING for a required one; an optional one is
    written as `name=value` only where its value differs from its default."""

    name: str
    value: Any
    default: Any = MISSING
    positional: bool = False

    @property
    def at_default(self) -> bool:
        return self.default is not MISSING and same_value(self.value, self.default)


@dataclass(frozen=True)
class Member:
    """A layer of a block: `self.<attr> = <cls>(<args>)`."""

    attr: str
    cls: str
    args: tuple[Arg, ...]


def member_of(attr: str, node: ir.OpNode) -> Member:
    """The layer an op application builds, from its catalogue entry's constructor rule."""
    opdef = catalogue.get(node.op)
    assert opdef is not None and opdef.ctor is not None and opdef.module is not None
    attrs = node.attr_dict
    entries = opdef.ctor([c.shape for c in node.inputs], attrs)
    args = tuple(
        Arg(e[0], plain_value(e[1]), e[2] if len(e) > 2 else MISSING,
            positional=len(e) <= 2 and i < opdef.ctor_positional)
        for i, e in enumerate(entries)
    )
    return Member(attr, opdef.module_class(attrs), args)


def call_code(m: Member, code: Callable[[int, Arg], str | None]) -> str:
    """`Cls(args)` with each argument's code from `code(index, arg)` (None: left out)."""
    parts = []
    for k, a in enumerate(m.args):
        text = code(k, a)
        if text is not None:
            parts.append(text if a.positional else f"{a.name}={text}")
    return f"{m.cls}({', '.join(parts)})"


def literal(m: Member) -> str:
    """The constructor call with every value written out (optional ones only if not default)."""
    return call_code(m, lambda k, a: None if a.at_default else fmt_value(a.value))


@dataclass
class BlockCode:
    """A block's plan: class body before and after the constructor, and its layers."""

    block: ir.Block | ir.PlainBlock
    kind: str  # 'block', 'silo' or 'plain'
    head: str  # docstring and class constants
    tail: str  # methods (and STEPS)
    members: list[Member]

    @property
    def signature(self) -> tuple[Any, ...]:
        """What must agree for two blocks to share a class: everything but argument values."""
        return (self.kind, self.head, self.tail, tuple(
            (m.attr, m.cls, tuple((a.name, a.positional, a.default is MISSING,
                                   None if a.default is MISSING else repr(a.default))
                                  for a in m.args))
            for m in self.members))


Slot = tuple[int, int]  # (member index, argument index)


@dataclass
class Template:
    name: str
    code: BlockCode  # the first instance's plan (all instances share its signature)
    instances: list[BlockCode] = field(default_factory=list)
    params: list[tuple[str, list[Slot]]] = field(default_factory=list)  # parameter -> slots
    omitted: set[Slot] = field(default_factory=set)  # optional, at its default everywhere

    @property
    def kind(self) -> str:
        return self.code.kind


class DedupMixin:
    """Templates of the generator (`self` is the `_Generator`)."""

    templates: list[Template]

    def _template_for(self, code: BlockCode) -> Template:
        for t in self.templates:
            if t.code.signature == code.signature:
                t.instances.append(code)
                return t
        block = code.block
        if isinstance(block, ir.PlainBlock):
            base = camel(block.label)
        else:
            base = camel(block.name) if block.name else (
                "Silo" if code.kind == "silo" else "Block")
        count = sum(1 for t in self.templates if re.fullmatch(base + r"\d*", t.name))
        name = base if count == 0 else f"{base}{count + 1}"
        taken = self._class_names_taken()
        while name in taken or any(t.name == name for t in self.templates):
            count += 1
            name = f"{base}{count + 1}"
        t = Template(name=name, code=code, instances=[code])
        self.templates.append(t)
        return t

    def _class_names_taken(self) -> set[str]:
        """Names a block class may not take: the model's class, the file's globals, and the
        constructor's arguments (the model's __init__ names the block classes)."""
        p = self.program  # type: ignore[attr-defined]
        return {p.name, *module_globals(), *(q.name for q in p.params),
                *(o.name for o in p.options), *(i.name for i in p.inputs)}

    def _finish_template(self, t: Template) -> None:
        """Decide, slot by slot, between left out, literal and class parameter."""
        slots = [(mi, ai) for mi, m in enumerate(t.code.members) for ai in range(len(m.args))]

        def arg(inst: BlockCode, s: Slot) -> Arg:
            return inst.members[s[0]].args[s[1]]

        t.omitted = {s for s in slots if all(arg(i, s).at_default for i in t.instances)}
        varying = []
        for s in slots:
            if s in t.omitted:
                continue
            values = [arg(i, s).value for i in t.instances]
            # a value that depends on a model argument is a parameter even when it is the same
            # in every instance: the block class cannot name the model's arguments
            if symbolic(values[0]) or any(not same_value(v, values[0]) for v in values[1:]):
                varying.append(s)
        groups: list[list[Slot]] = []
        for s in varying:
            vec = [arg(i, s).value for i in t.instances]
            for g in groups:
                other = [arg(i, g[0]).value for i in t.instances]
                if all(same_value(a, b) for a, b in zip(vec, other, strict=True)) and (
                        arg(t.code, g[0]).name == arg(t.code, s).name):
                    g.append(s)
                    break
            else:
                groups.append([s])
        used: set[str] = set()
        t.params = []
        for g in groups:
            base = name = arg(t.code, g[0]).name
            k = 1
            while name in used or name == "self":
                k += 1
                name = f"{base}{k}"
            used.add(name)
            t.params.append((name, g))

    def _template_source(self, t: Template) -> str:
        param_of = {s: name for name, g in t.params for s in g}
        lines = [f"class {t.name}(nn.Module):"]
        lines += ["    " + ln if ln else "" for ln in t.code.head.splitlines()]
        sig = "".join(f", {name}: {type_name(t.code.members[g[0][0]].args[g[0][1]].value)}"
                      for name, g in t.params)
        lines.append("")
        lines.append(f"    def __init__(self{sig}) -> None:")
        lines.append("        super().__init__()")
        for mi, m in enumerate(t.code.members):
            def code(k: int, a: Arg, mi: int = mi) -> str | None:
                s = (mi, k)
                if s in t.omitted:
                    return None
                return param_of.get(s, fmt_value(a.value))
            lines.append(f"        self.{m.attr} = {call_code(m, code)}")
        lines.append("")
        lines += ["    " + ln if ln else "" for ln in t.code.tail.splitlines()]
        return "\n".join(lines).rstrip() + "\n"

    def _instance(self, t: Template, code: BlockCode) -> str:
        args = ", ".join(f"{name}={fmt_value(code.members[g[0][0]].args[g[0][1]].value)}"
                         for name, g in t.params)
        return f"{t.name}({args})"

    def _instances(self, plans: list[tuple[Template, BlockCode]]) -> list[str]:
        """The instances of a list of blocks as list items: consecutive instances of one class
        whose parameters are affine in their position become one starred comprehension."""
        out: list[str] = []
        k = 0
        while k < len(plans):
            t = plans[k][0]
            end = k
            while end + 1 < len(plans) and plans[end + 1][0] is t:
                end += 1
            run = [code for _, code in plans[k:end + 1]]
            comp = self._comprehension(t, run) if len(run) > 2 or (
                len(run) == 2 and k == 0 and end == len(plans) - 1) else None
            if comp is not None:
                out.append("*" + comp)
            else:
                out.extend(self._instance(t, c) for c in run)
            k = end + 1
        return out

    def _comprehension(self, t: Template, run: list[BlockCode]) -> str | None:
        i = sympy.Symbol("i", integer=True, nonnegative=True)
        args = []
        uses_i = False
        for name, g in t.params:
            values = [c.members[g[0][0]].args[g[0][1]].value for c in run]
            expr = affine_in_position(values, i)
            if expr is None:
                return None
            uses_i = uses_i or (isinstance(expr, sympy.Basic) and i in expr.free_symbols)
            args.append(f"{name}={fmt_value(expr)}")
        var = "i" if uses_i else "_"
        return f"[{t.name}({', '.join(args)}) for {var} in range({len(run)})]"


def affine_in_position(values: list[Any], i: sympy.Symbol) -> Any:
    """`v0 + i * d` when the values are exactly that for i = 0, 1, ... (None otherwise); a
    constant run gives the constant. Floats qualify only when all equal (an affine formula in
    floats need not reproduce each value bit for bit)."""
    if all(same_value(v, values[0]) for v in values[1:]):
        return values[0]
    exact = []
    for v in values:
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # 0.0 and the like are exact
        if isinstance(v, bool) or not isinstance(v, sympy.Basic | int):
            return None
        exact.append(v)
    values = exact
    v0 = sympy.sympify(values[0])
    d = sympy.sympify(values[1]) - v0
    if not all(is_zero(sympy.sympify(v) - v0 - k * d) for k, v in enumerate(values)):
        return None
    expr = v0 + i * d
    factored = sympy.factor(expr)
    return factored if len(str(factored)) < len(str(expr)) else expr


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) or isinstance(b, tuple | list):
        return (isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b)
                and all(same_value(x, y) for x, y in zip(a, b)))
    if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
        return is_zero(sympy.sympify(a) - sympy.sympify(b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def symbolic(v: Any) -> bool:
    if isinstance(v, tuple | list):
        return any(symbolic(x) for x in v)
    return isinstance(v, sympy.Basic) and bool(v.free_symbols)


def plain_value(v: Any) -> Any:
    if isinstance(v, sympy.Basic) and v.is_number:
        return int(v) if v.is_Integer else float(v)
    return v


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, tuple | list):
        return "tuple"
    if isinstance(v, sympy.Basic):
        return "int" if v.is_integer else "float"
    return "Any"


def camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)
