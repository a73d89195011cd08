"""Generate a standalone PyTorch module from a verified program.

Input: an `ir.Program` and its `verify.Report` (every step proved). Output: Python source that
imports only torch and the standard library:

    header (spec, revdsl version, parameters)
    module docstring (what is reversible, what is stored, usage)
    imports
    the runtime definitions it needs (engine, op classes), copied from revdsl/runtime
    one class per distinct block (its functions, forward, the proved inverse, and STEPS for the
        engine), constructor arguments for what differs between instances
    the model class (forward_features / forward_head / forward) and create_model()

Deterministic: no timestamps, ids or dict orders that depend on hashing; the same program gives
the same bytes. Only names validated as identifiers and numbers from the spec reach the output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl import __version__, catalogue, ir, runtime_src, sizes
from revdsl.catalogue import OpDef, fmt_value, render_template
from revdsl.codegen.emitter import Emitter, display_name
from revdsl.graph import flat_steps
from revdsl.names import module_globals
from revdsl.prover import T, Y, atom_symbols
from revdsl.pyprint import py_expr
from revdsl.shapes import B, fmt_bytes, fmt_shape, is_zero
from revdsl.verify import Report, StepProof, display_formula

_SLOT = "\x00"  # a constructor value: literal, or a class argument where instances differ
_OPT = "\x02"  # an optional keyword argument: `, name=value`, left out where all are default
_MISSING = object()


def generate(program: ir.Program, report: Report) -> str:
    report.raise_if_failed()
    return _Generator(program, report).run()


# ---- expression emission ----------------------------------------------------------------------


class ExprEmitter:
    """Emits code for a DAG of IR nodes. Nodes in `names` are referenced by variable; a node used
    more than once is bound to a temporary first (so a layer never runs twice)."""

    def __init__(self, modules: dict[int, str], names: dict[int, str], ctor_slot: Any = None,
                 taken: set[str] | None = None) -> None:
        self.modules = modules
        self.names = names
        self.taken = taken if taken is not None else set(names.values())

    def fresh(self, base: str) -> str:
        base = re.sub(r"\W", "_", base)
        if base not in self.taken:
            self.taken.add(base)
            return base
        k = 1
        while f"{base}_{k}" in self.taken:
            k += 1
        self.taken.add(f"{base}_{k}")
        return f"{base}_{k}"

    def prepare(self, e: Emitter, roots: list[ir.Node]) -> None:
        """Bind nodes used more than once (below the roots) to temporaries."""
        uses: dict[int, int] = {}
        order = ir.walk(roots, stop=set(self.names))
        for n in order:
            for c in ir.children(n):
                uses[c.id] = uses.get(c.id, 0) + 1
        for n in order:
            if n.id in self.names or uses.get(n.id, 0) < 2:
                continue
            if isinstance(n, ir.ConstNode | ir.InputNode | ir.StreamNode):
                continue
            if isinstance(n, ir.OpNode) and n.n_out > 1:
                outs = [self.fresh(f"_{n.op}{i}") for i in range(n.n_out)]
                e.line(f"{', '.join(outs)} = {self.code(n)}")
                self.names[n.id] = "(" + ", ".join(outs) + ")"
                continue
            name = self.fresh("_" + (n.op if isinstance(n, ir.OpNode) else "v"))
            e.line(f"{name} = {self.code(n)}")
            self.names[n.id] = name

    def code(self, n: ir.Node, prec: int = 0) -> str:
        if n.id in self.names:
            return self.names[n.id]
        if isinstance(n, ir.ConstNode):
            text = fmt_value(n.value)
            return f"({text})" if text.startswith("-") and prec > 0 else text
        if isinstance(n, ir.OutNode):
            src = self.names.get(n.source.id)
            if src is not None and src.startswith("("):
                return src[1:-1].split(", ")[n.index]
            return f"{self.code(n.source, 100)}[{n.index}]"
        assert isinstance(n, ir.OpNode), n
        opdef = catalogue.get(n.op)
        assert opdef is not None
        attrs = {k: v for k, v in n.attrs if not k.startswith("__")}
        if opdef.has_module:
            args = [self.code(c) for c in n.inputs]
            args += [f"{k}={fmt_value(attrs[k])}" for k in opdef.call_kwargs]
            return f"self.{self.modules[n.id]}({', '.join(args)})"
        p = opdef.precedence
        args = []
        for i, c in enumerate(n.inputs):
            # left operands bind at the op's level, right ones strictly tighter
            args.append(self.code(c, p if i == 0 else p + 1))
        text = render_template(opdef, args, attrs)
        if p < prec:
            return f"({text})"
        return text


# ---- blocks -----------------------------------------------------------------------------------


@dataclass
class BlockCode:
    block: ir.Block
    text: str  # class body with ctor values replaced by slots
    slots: list[tuple[str, Any]]  # (name, value) per slot
    kind: str


@dataclass
class Template:
    name: str
    kind: str
    text: str
    instances: list[BlockCode] = field(default_factory=list)
    args: list[tuple[str, list[int]]] = field(default_factory=list)  # arg name -> slots
    omitted: set[int] = field(default_factory=set)  # optional slots at their default everywhere


def _stochastic(opdef: OpDef, attrs: dict[str, Any]) -> bool:
    if opdef.stochastic:
        return True
    for a in opdef.attrs:
        v = attrs.get(a.name)
        if a.random and v is not None and (not isinstance(v, int | float) or v):
            return True
    return False


class _Generator:
    def __init__(self, program: ir.Program, report: Report) -> None:
        self.program = program
        self.report = report
        self.runtime: set[str] = {"ReversibleSegment", "init_weights", "Couple", "check_input"}
        self.templates: list[Template] = []
        self.segment_plans: dict[str, list[tuple[Template, BlockCode]]] = {}
        self.options_of: dict[str, list[str]] = {}

    # -- driver
    def run(self) -> str:
        for seg in self.program.segments:
            self.options_of[seg.name] = _segment_options(seg)
            plans = []
            for block in seg.blocks:
                code = self._block_code(seg, block)
                plans.append((self._template_for(code), code))
            self.segment_plans[seg.name] = plans
        self.plain_plans: dict[str, tuple[Template, BlockCode]] = {}
        for pb in self.program.plain_blocks:
            code = self._plain_code(pb)
            self.plain_plans[pb.name] = (self._template_for(code), code)
            self.runtime.add("run_stored")
        for t in self.templates:
            self._finish_template(t)
        for _name, node in self.program.model_modules:
            self._need_op(node)
        for seg in self.program.segments:
            for a in seg.entry_assign:
                for n in ir.walk(list(a.values)):
                    if isinstance(n, ir.OpNode):
                        self._need_op(n)
            for block in seg.blocks:
                for st in flat_steps(block):
                    if isinstance(st, ir.Restructure):  # the op and its inverse
                        for name in (st.op, catalogue.get(st.op).inverse):  # type: ignore[union-attr]
                            opdef = catalogue.get(name or "")
                            if opdef is not None:
                                self.runtime.update(opdef.runtime)
        for item in self.program.items:
            if isinstance(item, ir.Assign):
                for n in ir.walk(list(item.values)):
                    if isinstance(n, ir.OpNode):
                        self._need_op(n)
        if self.program.options:
            self.runtime.add("check_option")
        e = Emitter()
        self._header(e)
        body = Emitter()
        self._model(body)
        self._runtime(e)
        for t in self.templates:
            e.blank(2)
            e.raw(self._template_source(t))
        e.blank(2)
        e.raw(body.text())
        return e.text()

    def _need_op(self, node: ir.OpNode) -> None:
        opdef = catalogue.get(node.op)
        assert opdef is not None
        if opdef.module:
            cls = opdef.module_class(dict(node.attrs))
            if not cls.startswith("nn."):
                self.runtime.add(cls)
        self.runtime.update(opdef.runtime)

    # -- header and runtime
    def _header(self, e: Emitter) -> None:
        p = self.program
        spec = display_name(p.source_name)
        e.line(f"# Generated by revdsl {__version__} from {spec} (model {p.name}). Do not edit:")
        e.line("# change the spec and run `revdsl compile` again.")
        params = [q for q in p.params if q.kind == "param"]
        if params:
            e.line("# Parameters: " + ", ".join(f"{q.name}={_lit(q.value)}" for q in params))
        if p.overrides:
            e.line("# Overridden with --set: " + ", ".join(k for k, _ in p.overrides))
        e.line(f'"""{p.name}: generated by revdsl from {spec}.')
        e.line("")
        for line in self._summary():
            e.line(line)
        e.line('"""')
        e.blank()
        e.line("from __future__ import annotations")
        e.blank()
        e.line("import contextlib")
        e.line("import math")
        e.line("import threading")
        e.line("import warnings")
        e.line("from typing import Any, NamedTuple")
        e.blank()
        e.line("import torch")
        e.line("import torch.nn.functional as F  # noqa: N812")
        e.line("import torch.utils.checkpoint")
        e.line("from torch import nn")

    def _summary(self) -> list[str]:
        p = self.program
        lines = ["Reversible segments (activations are rebuilt in the backward, not stored):"]
        for seg in p.segments:
            streams = ", ".join(n.stream for n in seg.exits)
            lines.append(f"  {seg.name}: {len(seg.blocks)} blocks over streams {streams}; "
                         "every step proved invertible:")
            seen: set[str] = set()
            for sp in self.report.steps:
                if sp.segment != seg.name or sp.kind != "update":
                    continue
                fwd = display_formula(sp)
                inv = display_formula(sp, "inverse")
                text = f"    {sp.target} <- {fwd}   (undone by {sp.target} <- {inv})"
                if text not in seen:
                    seen.add(text)
                    lines.append(text)
        lines.append("Stored for the backward, per sample (float32, model-argument defaults):")
        for b, size in self.report.kept_evaluated():
            lines.append(f"  {b.name}: {fmt_bytes(size)}")
        lines.append("")
        lines.append("Usage:")
        shape = fmt_shape(p.inputs[0].shape)
        lines.append("    model = create_model()")
        lines.append(f"    out = model({p.inputs[0].name})   # {p.inputs[0].name}: {shape}")
        lines.append("    model.reversible = False   # same parameters, plain autograd")
        return lines

    def _runtime(self, e: Emitter) -> None:
        defs = runtime_src.collect(self.runtime)
        e.blank(2)
        e.line("# " + "-" * 20 + " revdsl runtime (copied from revdsl/runtime) " + "-" * 20)
        for d in defs:
            e.blank(2) if d.source.startswith(("class ", "def ", "@")) else e.blank()
            e.raw(d.source)

    # -- blocks
    def _block_code(self, seg: ir.Segment, block: ir.Block) -> BlockCode:
        modules = {node.id: name for name, node in block.modules}
        options = self.options_of[seg.name]
        slots: list[tuple[str, Any]] = []
        e = Emitter()
        steps = [self.report.step(seg.name, block.index, k) for k, _ in
                 enumerate(flat_steps(block))]
        inputs = [n.stream for n in block.inputs]
        outputs = [n.stream for n in block.outputs]
        stochastic = False
        # docstring
        doc = [f"{'Silo' if block.kind == 'silo' else 'Reversible block'} "
               f"({_where(block.span)}).", ""]
        for sp in steps:
            doc.append("    " + _step_text(sp))
        doc += ["", "Undone (inverse derived by the verifier) in reverse order:"]
        for sp in reversed(steps):
            doc.append("    " + _step_text(sp, inverse=True))
        e.docstring("\n".join(doc))
        e.blank()
        e.line(f"INPUTS = {_tuple(inputs)}")
        e.line(f"OUTPUTS = {_tuple(outputs)}")
        # constructor
        ctor = Emitter()
        with ctor.indented():
            ctor.line("super().__init__()")
            for name, node in block.modules:
                ctor.line(f"self.{name} = {self._ctor(node, slots)}")
        # functions
        fns: list[tuple[StepProof, str, list[str], bool]] = []
        methods = Emitter()
        fn_index = 0
        for sp in steps:
            if sp.kind == "restructure":
                continue
            if not sp.atoms:
                fns.append((sp, "", [], False))  # nothing to compute: y = h(t) alone
                continue
            fn_index += 1
            fname = f"f{fn_index}"
            mods = _modules_used(sp, modules)
            sto = any(_stochastic(catalogue.get(n.op), n.attr_dict)  # type: ignore[arg-type]
                      for n in ir.walk(list(sp.atoms)) if isinstance(n, ir.OpNode))
            stochastic = stochastic or sto
            fns.append((sp, fname, mods, sto))
            reads = list(sp.reads)
            for n in ir.walk(list(sp.atoms)):
                if isinstance(n, ir.OpNode):
                    self._need_op(n)
            methods.blank()
            methods.line(f"def {fname}(self{', ' if reads else ''}{', '.join(reads)}"
                         + (f", *, {', '.join(options)}" if options else "") + "):")
            with methods.indented():
                what = ("the new stream " + sp.target) if sp.kind == "create" else (
                    f"the update of {sp.target}")
                methods.docstring(
                    f"{'Functions' if len(sp.atoms) > 1 else 'Function'} of {what} "
                    f"({_where(sp.span)}): {', '.join(_atom_texts(sp))}."
                )
                names = {self._stream_node(sp, r).id: r for r in reads}
                ee = ExprEmitter(modules, names, taken=set(reads) | set(options))
                ee.prepare(methods, list(sp.atoms))
                codes = [ee.code(a) for a in sp.atoms]
                methods.line("return " + ", ".join(codes))
        e.line(f"STOCHASTIC = {bool(stochastic)}")
        e.blank()
        e.line("def __init__(self) -> None:")
        e.raw(ctor.text())
        e.blank()
        e.raw(methods.text())
        # forward and inverse
        opts_call = ", ".join(f"{o}={o}" for o in options)
        opt_sig = (", *, " + ", ".join(options)) if options else ""
        e.blank()
        e.line(f"def forward(self, {', '.join(inputs)}{opt_sig}):")
        with e.indented():
            for sp in steps:
                self._forward_step(e, sp, fns, opts_call)
            e.line(f"return {', '.join(outputs)}")
        e.blank()
        e.line(f"def inverse(self, {', '.join(outputs)}{opt_sig}):")
        with e.indented():
            e.docstring("Rebuild this block's inputs from its outputs (the proved inverse).")
            for sp in reversed(steps):
                self._inverse_step(e, sp, fns, opts_call)
            e.line(f"return {', '.join(inputs)}")
        e.blank()
        e.line("STEPS = (")
        with e.indented():
            for sp in steps:
                self._steps_entry(e, sp, fns)
        e.line(")")
        kind = block.kind
        return BlockCode(block=block, text=e.text(), slots=slots, kind=kind)

    @property
    def _declared(self) -> dict[int, str]:
        """The name each statement value was given in the spec (for block parameters)."""
        cache = self.__dict__.get("_declared_cache")
        if cache is None:
            cache = {n.id: n.name for n in self.program.inputs}
            for item in self.program.items:
                assigns: tuple[ir.Assign, ...] = ()
                if isinstance(item, ir.Assign):
                    assigns = (item,)
                elif isinstance(item, ir.PlainBlock):
                    assigns = item.assigns
                else:
                    assigns = item.entry_assign
                    for x in item.exits:
                        cache[x.id] = x.stream
                for a in assigns:
                    for t, v in zip(a.targets, a.values, strict=True):
                        cache.setdefault(v.id, t)
            self.__dict__["_declared_cache"] = cache
        return cache

    @staticmethod
    def _plain_finals(pb: ir.PlainBlock) -> list[tuple[str, ir.Node]]:
        """The values the block's names hold at its end."""
        final: dict[str, ir.Node] = {}
        for a in pb.assigns:
            for t, v in zip(a.targets, a.values, strict=True):
                final.pop(t, None)
                final[t] = v
        return list(final.items())

    def _plain_outputs(self, pb: ir.PlainBlock) -> list[tuple[str, ir.Node]]:
        """The block's final values that something after it reads (its outputs)."""
        used = self._read_after(pb)
        return [(t, v) for t, v in self._plain_finals(pb) if v.id in used]

    def _read_after(self, pb: ir.PlainBlock) -> set[int]:
        """The values defined by `pb` that something after it reads (or the model outputs)."""
        items = list(self.program.items)
        mine = {v.id for a in pb.assigns for v in a.values}
        out = {self.program.output.id} & mine
        for item in items[items.index(pb) + 1:]:
            out.update(n.id for n in _refs(_item_roots(item), mine))
        return out

    def _plain_code(self, pb: ir.PlainBlock) -> BlockCode:
        modules = {node.id: name for name, node in pb.modules}
        options = _options_in([v for a in pb.assigns for v in a.values])
        params: list[str] = []
        names: dict[int, str] = {}
        for n in pb.inputs:
            base = self._declared.get(n.id, "x")
            name = base
            k = 1
            while name in params:
                k += 1
                name = f"{base}_{k}"
            params.append(name)
            names[n.id] = name
        slots: list[tuple[str, Any]] = []
        e = Emitter()
        e.docstring(f"A stored block ({_where(pb.span)}): not invertible, so in reversible "
                    "mode it is\nrecomputed from its inputs in the backward instead of "
                    "keeping its activations.")
        e.blank()
        ctor = Emitter()
        with ctor.indented():
            ctor.line("super().__init__()")
            for name, node in pb.modules:
                ctor.line(f"self.{name} = {self._ctor(node, slots)}")
                self._need_op(node)
        for a in pb.assigns:
            for n in ir.walk(list(a.values)):
                if isinstance(n, ir.OpNode):
                    self._need_op(n)
        e.line("def __init__(self) -> None:")
        e.raw(ctor.text())
        e.blank()
        opt_sig = (", *, " + ", ".join(options)) if options else ""
        e.line(f"def forward(self, {', '.join(params)}{opt_sig}):")
        body = Emitter()
        with body.indented():
            ee = ExprEmitter(modules, dict(names), taken=set(params) | set(options))
            named = set(names) | {v.id for a in pb.assigns for v in a.values}
            later = _later_references(list(pb.assigns), named)
            for k, a in enumerate(pb.assigns):
                self._assign(body, a, ee, later[k])
            outs = [ee.names[v.id] for _, v in self._plain_outputs(pb)]
            body.line(f"return {', '.join(outs)}")
        e.raw(body.text())
        return BlockCode(block=pb, text=e.text(), slots=slots, kind="plain")  # type: ignore[arg-type]

    def _stream_node(self, sp: StepProof, stream: str) -> ir.StreamNode:
        for a in sp.atoms:
            nodes = [a] if isinstance(a, ir.StreamNode) else [
                n for n in ir.walk([a]) if isinstance(n, ir.StreamNode)]
            for n in nodes:
                if n.stream == stream:
                    return n
        raise AssertionError(stream)

    def _ctor(self, node: ir.OpNode, slots: list[tuple[str, Any]]) -> str:
        """The constructor call with every value as a slot (filled in per template)."""
        opdef = catalogue.get(node.op)
        assert opdef is not None and opdef.ctor is not None and opdef.module is not None
        attrs = {k: v for k, v in node.attrs if not k.startswith("__")}
        entries = opdef.ctor([c.shape for c in node.inputs], attrs)
        text = ""
        for i, entry in enumerate(entries):
            name, value = entry[0], entry[1]
            default = entry[2] if len(entry) > 2 else _MISSING
            slots.append((name, _plain(value), default))
            k = len(slots) - 1
            if default is not _MISSING:
                text += f"{_OPT}{k}{_OPT}"
                continue
            slot = f"{_SLOT}{k}{_SLOT}"
            part = slot if i < opdef.ctor_positional else f"{name}={slot}"
            text += (", " if text else "") + part
        return f"{opdef.module_class(attrs)}({text})"

    def _ctor_literal(self, node: ir.OpNode) -> str:
        slots: list[tuple[str, Any]] = []
        text = self._ctor(node, slots)
        return _render_slots(text, slots, {k: fmt_value(v[1]) for k, v in enumerate(slots)},
                             {k for k, v in enumerate(slots) if _is_default(v)})

    def _call(self, fname: str, sp: StepProof, opts_call: str) -> str:
        args = list(sp.reads) + ([opts_call] if opts_call else [])
        return f"self.{fname}({', '.join(args)})"

    def _forward_step(self, e: Emitter, sp: StepProof, fns: list[Any], opts: str) -> None:
        if sp.kind == "restructure":
            step = sp.step
            assert isinstance(step, ir.Restructure)
            opdef = catalogue.get(step.op)
            assert opdef is not None
            code = render_template(opdef, [n.stream for n in step.inputs], dict(step.attrs))
            e.line(f"{', '.join(n.stream for n in step.outputs)} = {code}")
            return
        fname = next(f for s, f, _, _ in fns if s is sp)
        call = self._call(fname, sp, opts) if fname else ""
        if sp.kind == "create":
            combine = py_expr(sp.formula, _atom_names(sp), tensor=True)
            if len(sp.atoms) == 1 and combine == "a0":
                e.line(f"{sp.target} = {call}")
            else:
                e.line(f"{_unpack(sp)} = {call}")
                e.line(f"{sp.target} = {combine}")
            return
        names = {T: sp.target, **_atom_names(sp)}
        formula = sp.formula
        assert formula is not None
        if not sp.atoms:
            e.line(f"{sp.target} = {py_expr(formula, names, tensor=True, first=T)}")
        elif len(sp.atoms) == 1 and _count(formula, atom_symbols(1)[0]) == 1:
            names[atom_symbols(1)[0]] = call
            e.line(f"{sp.target} = {py_expr(formula, names, tensor=True, first=T)}")
        else:
            e.line(f"{_unpack(sp)} = {call}")
            e.line(f"{sp.target} = {py_expr(formula, names, tensor=True, first=T)}")

    def _inverse_step(self, e: Emitter, sp: StepProof, fns: list[Any], opts: str) -> None:
        if sp.kind == "restructure":
            step = sp.step
            assert isinstance(step, ir.Restructure)
            code = _inverse_code(step, [n.stream for n in step.outputs])
            e.line(f"{', '.join(n.stream for n in step.inputs)} = {code}")
            return
        if sp.kind == "create":
            e.line(f"del {sp.target}  # a created stream is simply dropped")
            return
        fname = next(f for s, f, _, _ in fns if s is sp)
        call = self._call(fname, sp, opts) if fname else ""
        inv = sp.inverse
        assert inv is not None
        names = {Y: sp.target, **_atom_names(sp)}
        if not sp.atoms:
            e.line(f"{sp.target} = {py_expr(inv, names, tensor=True, first=Y)}")
        elif len(sp.atoms) == 1 and _count(inv, atom_symbols(1)[0]) == 1:
            names[atom_symbols(1)[0]] = call
            e.line(f"{sp.target} = {py_expr(inv, names, tensor=True, first=Y)}")
        else:
            e.line(f"{_unpack(sp)} = {call}")
            e.line(f"{sp.target} = {py_expr(inv, names, tensor=True, first=Y)}")

    def _steps_entry(self, e: Emitter, sp: StepProof, fns: list[Any]) -> None:
        if sp.kind == "restructure":
            step = sp.step
            assert isinstance(step, ir.Restructure)
            self.runtime.add("Permute")
            opdef = catalogue.get(step.op)
            assert opdef is not None
            ins = [n.stream for n in step.inputs]
            outs = [n.stream for n in step.outputs]
            fwd = render_template(opdef, ins, dict(step.attrs))
            inv = _inverse_code(step, outs)
            e.line(f"Permute(inputs={_tuple(ins)}, outputs={_tuple(outs)},")
            e.line(f"        forward=lambda {', '.join(ins)}: {fwd},")
            e.line(f"        inverse=lambda {', '.join(outs)}: {inv}),")
            return
        _, fname, mods, sto = next(x for x in fns if x[0] is sp)
        atoms = "".join(f", a{i}" for i in range(len(sp.atoms)))
        head = (f'{"Create" if sp.kind == "create" else "Couple"}("{sp.target}", '
                f"{_tuple(list(sp.reads))}, \"{fname}\", {_tuple(mods)}, {sto},")
        e.line(head)
        with e.indented():
            names = _atom_names(sp)
            names_t = {T: "t", **names}
            if sp.kind == "create":
                self.runtime.add("Create")
                combine = py_expr(sp.formula, names, tensor=True)
                e.line(f"combine=lambda {atoms[2:]}: {combine}),")
                return
            assert sp.proof is not None and sp.formula is not None and sp.inverse is not None
            fwd = py_expr(sp.formula, names_t, tensor=True, first=T)
            inv = py_expr(sp.inverse, {Y: "y", **names}, tensor=True, first=Y)
            e.line(f"forward=lambda t{atoms}: {fwd},")
            e.line(f"inverse=lambda y{atoms}: {inv},")
            if _delta_ok(sp):
                assert sp.proof.shift is not None
                delta = py_expr(sp.proof.shift, names, tensor=True)
                e.line(f"delta=lambda {atoms[2:]}: {delta}),")
            else:
                e.line("delta=None),")

    # -- templates
    def _template_for(self, code: BlockCode) -> Template:
        for t in self.templates:
            if t.text == code.text and t.kind == code.kind:
                t.instances.append(code)
                return t
        if code.kind == "plain":
            base = _camel(code.block.label)  # type: ignore[union-attr]
        else:
            base = _camel(code.block.name) if code.block.name else (
                "Silo" if code.kind == "silo" else "Block")
        count = sum(1 for t in self.templates if re.fullmatch(base + r"\d*", t.name))
        name = base if count == 0 else f"{base}{count + 1}"
        taken = self._class_names_taken()
        while name in taken or any(t.name == name for t in self.templates):
            count += 1
            name = f"{base}{count + 1}"
        t = Template(name=name, kind=code.kind, text=code.text, instances=[code])
        self.templates.append(t)
        return t

    def _class_names_taken(self) -> set[str]:
        """Names a block class may not take: the model's class, the file's globals, and the
        constructor's arguments (the model's __init__ names the block classes)."""
        p = self.program
        return {p.name, *module_globals(), *(q.name for q in p.params),
                *(o.name for o in p.options), *(i.name for i in p.inputs)}

    def _finish_template(self, t: Template) -> None:
        n_slots = len(t.instances[0].slots)
        t.omitted = {k for k in range(n_slots)
                     if all(_is_default(inst.slots[k]) for inst in t.instances)}
        varying: list[int] = []
        for k in range(n_slots):
            if k in t.omitted:
                continue
            values = [inst.slots[k][1] for inst in t.instances]
            # a value that depends on a model argument is a constructor argument even when it is
            # the same in every instance: the block class cannot name the model's arguments
            if _symbolic(values[0]) or any(not _same(v, values[0]) for v in values[1:]):
                varying.append(k)
        groups: list[list[int]] = []
        for k in varying:
            vec = [inst.slots[k][1] for inst in t.instances]
            for g in groups:
                other = [inst.slots[g[0]][1] for inst in t.instances]
                if all(_same(a, b) for a, b in zip(vec, other, strict=True)) and (
                    t.instances[0].slots[g[0]][0] == t.instances[0].slots[k][0]
                ):
                    g.append(k)
                    break
            else:
                groups.append([k])
        base_names = [t.instances[0].slots[g[0]][0] for g in groups]
        args = []
        used: set[str] = set()
        for g, base in zip(groups, base_names, strict=True):
            name = base
            k = 1
            while name in used or name in ("self",):
                k += 1
                name = f"{base}{k}"
            used.add(name)
            args.append((name, g))
        t.args = args

    def _template_source(self, t: Template) -> str:
        inst = t.instances[0]
        slot_code: dict[int, str] = {k: fmt_value(v[1]) for k, v in enumerate(inst.slots)}
        params = []
        for name, g in t.args:
            for k in g:
                slot_code[k] = name
            params.append(f"{name}: {_type_name(inst.slots[g[0]][1])}")
        text = _render_slots(t.text, inst.slots, slot_code, t.omitted)
        text = text.replace("def __init__(self) -> None:",
                            f"def __init__(self{''.join(', ' + p for p in params)}) -> None:")
        return f"class {t.name}(nn.Module):\n" + _indent(text, 1)

    def _instance(self, t: Template, code: BlockCode) -> str:
        args = ", ".join(f"{name}={fmt_value(code.slots[g[0]][1])}" for name, g in t.args)
        return f"{t.name}({args})"

    # -- model
    def _model(self, e: Emitter) -> None:
        p = self.program
        args = p.args
        e.line(f"class {p.name}(nn.Module):")
        with e.indented():
            e.docstring(
                f"{p.name} (from {display_name(p.source_name)}).\n\n"
                "`reversible` (default True): run the reversible segments with activations "
                "rebuilt in the\nbackward. False: plain autograd (stores everything), the same "
                "parameters and math.\n`checkpoint`: with reversible=False, wrap each block in "
                "torch.utils.checkpoint."
            )
            e.blank()
            sig = ", ".join(["self", *[f"{a.name}: {_type_name(a.default)} = {_lit(a.default)}"
                                        for a in args], "reversible: bool = True"])
            e.line(f"def __init__({sig}) -> None:")
            with e.indented():
                e.line("super().__init__()")
                e.line("self.reversible = reversible")
                e.line("self.checkpoint = False")
                for a in args:
                    e.line(f"self.{a.name} = {a.name}")
                self._members(e)
                e.line("self.apply(init_weights)")
            self._forwards(e)
            if p.segments:
                self._guard_methods(e)
        e.blank(2)
        params = [q for q in p.params if q.kind == "param"]
        e.line("# The compile-time parameters this file was generated with.")
        e.line("PARAMETERS = {" + ", ".join(f'"{q.name}": {_lit(q.value)}' for q in params)
               + "}")
        e.blank(2)
        e.line(f"def create_model(**overrides: Any) -> {p.name}:")
        with e.indented():
            keys = ", ".join([a.name for a in args] + ["reversible"])
            e.docstring(
                f"Build {p.name}. Keywords: {keys}.\n\n"
                "Compile-time parameters (PARAMETERS) are fixed in this file: to change one, "
                "compile the\nspec again with `revdsl compile SPEC --set NAME=VALUE`."
            )
            e.line("fixed = sorted(set(overrides) & set(PARAMETERS))")
            e.line("if fixed:")
            with e.indented():
                e.line("raise TypeError(")
                e.line('    f"{fixed[0]} is a compile-time parameter of this model (here '
                       '{PARAMETERS[fixed[0]]!r}); "')
                e.line('    f"compile the spec again with --set {fixed[0]}=... to change it"')
                e.line(")")
            e.line(f"return {p.name}(**overrides)")

    def _guard_methods(self, e: Emitter) -> None:
        self.runtime.update(("reconstruction_errors", "set_reconstruction_guard"))
        e.blank()
        e.line("def reconstruction_error(self) -> dict[str, float | None]:")
        with e.indented():
            e.docstring("Per reversible segment: the largest relative error of its rebuilt "
                        "inputs at the last\nbackward (None until the guard is on and a "
                        "backward ran; see set_reconstruction_guard).")
            e.line("return reconstruction_errors(self)")
        e.blank()
        e.line("def set_reconstruction_guard(self, threshold: float | None = 1e-2) -> None:")
        with e.indented():
            e.docstring("Compare each segment's rebuilt inputs with the real ones in every "
                        "backward and warn past\n`threshold` (0: measure only; None: off). "
                        "It keeps each segment's inputs alive until the\nbackward.")
            e.line("set_reconstruction_guard(self, threshold)")

    def _members(self, e: Emitter) -> None:
        p = self.program
        modules = {node.id: name for name, node in p.model_modules}
        done: set[int] = set()

        def modules_in(values: tuple[ir.Node, ...]) -> None:
            for n in ir.walk(list(values)):
                if n.id in modules and n.id not in done:
                    done.add(n.id)
                    assert isinstance(n, ir.OpNode)
                    e.line(f"self.{modules[n.id]} = {self._ctor_literal(n)}")

        for item in p.items:
            if isinstance(item, ir.Assign):
                modules_in(item.values)
                continue
            if isinstance(item, ir.PlainBlock):
                t, code = self.plain_plans[item.name]
                e.line(f"self.{item.name} = {self._instance(t, code)}")
                continue
            for a in item.entry_assign:
                modules_in(a.values)
            plans = self.segment_plans[item.name]
            e.line(f"self.{item.name} = ReversibleSegment(")
            with e.indented():
                distinct = {id(t) for t, _ in plans}
                if len(distinct) == 1 and not plans[0][0].args:
                    e.line(f"[{plans[0][0].name}() for _ in range({len(plans)})],")
                else:
                    e.line("[")
                    with e.indented():
                        for t, code in plans:
                            e.line(self._instance(t, code) + ",")
                    e.line("],")
                e.line(f"inputs={_tuple([x.stream for x in item.entry])},")
                e.line(f"outputs={_tuple([x.stream for x in item.exits])},")
            e.line(")")

    @property
    def _named(self) -> set[int]:
        """Nodes that get a variable in the model's forward (statement values, streams)."""
        p = self.program
        out = {n.id for n in p.inputs}
        for item in p.items:
            if isinstance(item, ir.Assign):
                out.update(n.id for n in item.values)
            elif isinstance(item, ir.PlainBlock):
                out.update(n.id for _, n in self._plain_finals(item))
            else:
                for a in item.entry_assign:
                    out.update(n.id for n in a.values)
                out.update(x.id for x in item.exits)
        return out

    def _forwards(self, e: Emitter) -> None:
        p = self.program
        modules = {node.id: name for name, node in p.model_modules}
        names: dict[int, str] = {n.id: n.name for n in p.inputs}
        taken = set(names.values())
        def is_head(i: ir.Item) -> bool:
            return isinstance(i, ir.Assign | ir.PlainBlock) and i.head

        feats = [i for i in p.items if not is_head(i)]
        head = [i for i in p.items if is_head(i)]
        opts = [o for o in p.options]
        opt_sig = "".join(f", {o.name}: {_type_name(o.default)} = {_lit(o.default)}"
                          for o in opts)
        inputs = ", ".join(n.name for n in p.inputs)
        # forward_features
        body = Emitter()
        ee = ExprEmitter(modules, names, taken=taken | {o.name for o in opts})
        with body.indented():
            self._statements(body, feats, ee)
        live = _live_into(head, ee.names) if head else [p.output]
        feat_names = [names[n.id] for n in live]
        feat_opts = [o for o in opts if o.name in body.text()]
        e.blank()
        e.line(f"def forward_features(self, {inputs}"
               + "".join(f", {o.name}: {_type_name(o.default)} = {_lit(o.default)}"
                         for o in feat_opts) + "):")
        with e.indented():
            e.docstring("Everything before the head.")
            free = sizes.free_dims(p)
            allowed = {k: v for k, v in sizes.choices(p).items() if k in free}
            if free:
                e.line("_sizes: dict[str, int] = {}  # the free input sizes the inputs give")
            for n in p.inputs:
                dims = ", ".join(_dim_code(d) for d in n.shape)
                dims += "," if len(n.shape) == 1 else ""
                extra = ""
                if free:
                    extra = ", _sizes" + (f", {fmt_value_dict(allowed)}" if allowed else "")
                e.line(f"check_input({n.name!r}, {n.name}, ({dims}){extra})")
            e.raw(_indent(body.text(), 1))
            e.line(f"return {', '.join(feat_names)}")
        # forward_head
        hbody = Emitter()
        with hbody.indented():
            if head:
                self._statements(hbody, head[:-1], ee)
                last = head[-1]
                out = p.output
                if isinstance(last, ir.Assign) and isinstance(out, ir.OpNode) and (
                    last.values == (out,) and out.inputs
                ):
                    x = out.inputs[0]
                    if x.id not in ee.names:
                        var = ee.fresh("features")
                        ee.prepare(hbody, [x])
                        hbody.line(f"{var} = {ee.code(x)}")
                        ee.names[x.id] = var
                    hbody.line("if pre_logits:")
                    hbody.line(f"    return {ee.names[x.id]}")
                self._statements(hbody, [last], ee)
            hbody.line(f"return {ee.names.get(p.output.id, feat_names[0])}")
        head_opts = [o for o in opts if re.search(rf"\b{o.name}\b", hbody.text())]
        e.blank()
        e.line(f"def forward_head(self, {', '.join(feat_names)}, pre_logits: bool = False"
               + "".join(f", {o.name}: {_type_name(o.default)} = {_lit(o.default)}"
                         for o in head_opts) + "):")
        with e.indented():
            e.docstring("The head: pooling and classifier (`pre_logits` stops before the "
                        "classifier).")
            e.raw(_indent(hbody.text(), 1))
        # forward
        e.blank()
        e.line(f"def forward(self, {inputs}{opt_sig}):")
        with e.indented():
            for o in opts:
                e.line(f"check_option({o.name!r}, {o.name}, {_lit(tuple(o.choices))})")
            fo = "".join(f", {o.name}={o.name}" for o in feat_opts)
            ho = "".join(f", {o.name}={o.name}" for o in head_opts)
            if len(feat_names) == 1:
                e.line(f"x = self.forward_features({inputs}{fo})")
                e.line(f"return self.forward_head(x{ho})")
            else:
                e.line(f"features = self.forward_features({inputs}{fo})")
                e.line(f"return self.forward_head(*features{ho})")

    def _statements(self, e: Emitter, items: list[ir.Item], ee: ExprEmitter) -> None:
        later = _later_references(items, self._named)
        for k, item in enumerate(items):
            if isinstance(item, ir.Segment):
                self._segment_call(e, item, ee)
                continue
            if isinstance(item, ir.PlainBlock):
                self._plain_call(e, item, ee, later[k])
                continue
            self._assign(e, item, ee, later[k])

    def _plain_call(self, e: Emitter, pb: ir.PlainBlock, ee: ExprEmitter, later: set[int]) -> None:
        args = [ee.code(n) for n in pb.inputs]
        options = _options_in([v for a in pb.assigns for v in a.values])
        opts = "".join(f", {o}={o}" for o in options)
        outs = self._plain_outputs(pb)
        targets = []
        for name, node in outs:
            var = name
            old = [nid for nid, v in ee.names.items() if v == name and nid != node.id]
            if any(nid in later for nid in old):
                var = ee.fresh(name)
            else:
                for nid in old:
                    del ee.names[nid]
            targets.append((var, node))
            ee.taken.add(var)
        e.line(f"{', '.join(v for v, _ in targets)} = run_stored(self.{pb.name}, "
               f"{', '.join(args)}, recompute=self.reversible or self.checkpoint{opts})")
        for var, node in targets:
            ee.names[node.id] = var

    def _assign(self, e: Emitter, a: ir.Assign, ee: ExprEmitter, later: set[int]) -> None:
        src = _source_of(list(a.values))
        if src is not None and len(a.values) > 1:
            ee.prepare(e, list(src.inputs))
            code = ee.code(src)
        else:
            ee.prepare(e, list(a.values))
            code = ", ".join(ee.code(n) for n in a.values)
        targets = []
        for name, node in zip(a.targets, a.values, strict=True):
            var = name
            old = [nid for nid, v in ee.names.items() if v == name and nid != node.id]
            if any(nid in later for nid in old):
                var = ee.fresh(name)  # the old value is still needed below
            else:
                for nid in old:
                    del ee.names[nid]
            targets.append((var, node))
            ee.taken.add(var)
        e.line(f"{', '.join(v for v, _ in targets)} = {code}")
        for var, node in targets:
            ee.names[node.id] = var

    def _segment_call(self, e: Emitter, seg: ir.Segment, ee: ExprEmitter) -> None:
        for a in seg.entry_assign:
            self._assign(e, a, ee, set())
        for entry in seg.entry:
            ee.names[entry.start.id] = entry.stream
        ins = ", ".join(x.stream for x in seg.entry)
        outs = [x.stream for x in seg.exits]
        opts = "".join(f", {o}={o}" for o in self.options_of[seg.name])
        targets = ", ".join(outs) + ("," if len(outs) == 1 else "")  # the segment returns a tuple
        e.line(f"{targets} = self.{seg.name}({ins}, reversible=self.reversible, "
               f"checkpoint=self.checkpoint{opts})")
        for x in seg.exits:
            for nid in [nid for nid, v in ee.names.items() if v == x.stream]:
                del ee.names[nid]
            ee.names[x.id] = x.stream


# ---- helpers ----------------------------------------------------------------------------------


def _segment_options(seg: ir.Segment) -> list[str]:
    found: list[str] = []
    for block in seg.blocks:
        for _name, node in block.modules:
            for _k, v in node.attrs:
                if isinstance(v, ir.RuntimeRef) and v.name not in found:
                    found.append(v.name)
        for step in flat_steps(block):
            if isinstance(step, ir.Restructure):
                continue
            for n in ir.walk([step.expr]):
                if isinstance(n, ir.OpNode):
                    for _k, v in n.attrs:
                        if isinstance(v, ir.RuntimeRef) and v.name not in found:
                            found.append(v.name)
    return sorted(found)


def _options_in(roots: list[ir.Node]) -> list[str]:
    found: list[str] = []
    for n in ir.walk(roots):
        if isinstance(n, ir.OpNode):
            for _k, v in n.attrs:
                if isinstance(v, ir.RuntimeRef) and v.name not in found:
                    found.append(v.name)
    return sorted(found)


def _modules_used(sp: StepProof, modules: dict[int, str]) -> list[str]:
    out: list[str] = []
    for n in ir.walk(list(sp.atoms)):
        if n.id in modules and modules[n.id] not in out:
            out.append(modules[n.id])
    return out


def _atom_names(sp: StepProof) -> dict[sympy.Symbol, str]:
    return {s: f"a{i}" for i, s in enumerate(atom_symbols(len(sp.atoms)))}


def _unpack(sp: StepProof) -> str:
    names = [f"a{i}" for i in range(len(sp.atoms))]
    return ", ".join(names) + ("," if len(names) == 1 else "")


def _count(e: sympy.Expr, s: sympy.Symbol) -> int:
    return sum(1 for n in sympy.preorder_traversal(e) if n == s)


def _atom_texts(sp: StepProof) -> list[str]:
    from revdsl.verify import describe_atom

    return [describe_atom(a) for a in sp.atoms]


def _step_text(sp: StepProof, inverse: bool = False) -> str:
    if sp.kind == "restructure":
        step = sp.step
        assert isinstance(step, ir.Restructure)
        ins = ", ".join(n.stream for n in step.inputs)
        outs = ", ".join(n.stream for n in step.outputs)
        if inverse:
            opdef = catalogue.get(step.op)
            return f"{ins} = {opdef.inverse if opdef else '?'}({outs})"
        return f"{outs} = {step.op}({ins})"
    if sp.kind == "create":
        return f"drop {sp.target}" if inverse else (
            f"{sp.target} = {display_formula(sp)}   (new stream)")
    text = display_formula(sp, "inverse" if inverse else "forward")
    atoms = "; ".join(f"{'f' if len(sp.atoms) == 1 else f'f{i + 1}'} = {t}"
                      for i, t in enumerate(_atom_texts(sp)))
    return f"{sp.target} = {text}" + ("" if inverse else f"   where {atoms}")


def _inverse_code(step: ir.Restructure, outs: list[str]) -> str:
    opdef = catalogue.get(step.op)
    assert opdef is not None and opdef.inverse is not None
    inv = catalogue.get(opdef.inverse)
    assert inv is not None
    attrs = dict(step.attrs)
    if step.op == "chunk":
        return render_template(inv, outs, {"dim": attrs["dim"]})
    if step.op in ("cat", "concat"):
        return render_template(inv, outs, {"chunks": len(step.inputs), "dim": attrs["dim"]})
    return render_template(inv, outs, attrs)


def _source_of(nodes: list[ir.Node]) -> ir.OpNode | None:
    if nodes and all(isinstance(n, ir.OutNode) for n in nodes):
        src = nodes[0].source  # type: ignore[union-attr]
        if all(n.source is src and n.index == i  # type: ignore[union-attr]
               for i, n in enumerate(nodes)) and src.n_out == len(nodes):
            return src
    return None


def _refs(roots: list[ir.Node], defined: set[int] | dict[int, str]) -> list[ir.Node]:
    """The already-defined values a statement reads: walking from its roots (themselves
    included), stopping at, and recording, every node in `defined`."""
    out: list[ir.Node] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        if n.id in defined:
            out.append(n)
            continue
        stack.extend(reversed(ir.children(n)))
    return out


def _item_roots(item: ir.Item) -> list[ir.Node]:
    if isinstance(item, ir.Assign):
        return list(item.values)
    if isinstance(item, ir.PlainBlock):
        return list(item.inputs)
    return [v for a in item.entry_assign for v in a.values]


def _live_into(head: list[ir.Item], names: dict[int, str]) -> list[ir.Node]:
    """Values computed before the head that the head reads (in order of first use)."""
    out: list[ir.Node] = []
    for item in head:
        for n in _refs(_item_roots(item), names):
            if n not in out:
                out.append(n)
    return out


def _later_references(items: list[ir.Item], named: set[int]) -> list[set[int]]:
    """For each statement, the defined values that statements after it read."""
    reads = [{n.id for n in _refs(_item_roots(item), named)} for item in items]
    out = []
    for k in range(len(items)):
        later: set[int] = set()
        for r in reads[k + 1:]:
            later |= r
        out.append(later)
    return out


def _is_default(slot: tuple[str, Any, Any]) -> bool:
    return slot[2] is not _MISSING and _same(slot[1], slot[2])


def _render_slots(text: str, slots: list[tuple[str, Any, Any]], code: dict[int, str],
                  omitted: set[int]) -> str:
    def opt(m: re.Match[str]) -> str:
        k = int(m.group(1))
        return "" if k in omitted else f", {slots[k][0]}={code[k]}"

    text = re.sub(_OPT + r"(\d+)" + _OPT, opt, text)
    text = re.sub(_SLOT + r"(\d+)" + _SLOT, lambda m: code[int(m.group(1))], text)
    return text.replace("(, ", "(")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple | list) or isinstance(b, tuple | list):
        return (isinstance(a, tuple | list) and isinstance(b, tuple | list) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, sympy.Basic) or isinstance(b, sympy.Basic):
        return is_zero(sympy.sympify(a) - sympy.sympify(b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _delta_ok(sp: StepProof) -> bool:
    """Whether the backward may differentiate the additive shift alone (y = t + shift). Only
    when the shift reads every function output the update reads: an update that simplifies
    (`x1*g + x1*(1-g) + f` is `x1 + f`) still differentiates as written, so every module it
    calls gets its (zero) gradient, as under plain autograd."""
    if not (sp.proof is not None and sp.proof.additive and sp.atoms):
        return False
    assert sp.proof.shift is not None and sp.formula is not None
    used = set(atom_symbols(len(sp.atoms))) & sp.formula.free_symbols
    return used <= sp.proof.shift.free_symbols


def _dim_code(d: Any) -> str:
    """A dimension as check_input takes it: a number, None (the batch, or an expression of
    several sizes) or the name of one free size."""
    e = sympy.sympify(d)
    if e.is_number:
        return str(int(e))
    if isinstance(e, sympy.Symbol) and e != B:
        return repr(e.name)
    return "None"


def fmt_value_dict(d: dict[str, tuple[int, ...]]) -> str:
    return "{" + ", ".join(f"{k!r}: {fmt_value(tuple(v))}" for k, v in d.items()) + "}"


def _symbolic(v: Any) -> bool:
    if isinstance(v, tuple | list):
        return any(_symbolic(x) for x in v)
    return isinstance(v, sympy.Basic) and bool(v.free_symbols)


def _plain(v: Any) -> Any:
    if isinstance(v, sympy.Basic) and v.is_number:
        return int(v) if v.is_Integer else float(v)
    return v


def _type_name(v: Any) -> str:
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


def _lit(v: Any) -> str:
    if isinstance(v, list):
        v = tuple(v)
    return fmt_value(v)


def _tuple(items: list[str]) -> str:
    inner = ", ".join(f'"{x}"' for x in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


def _indent(text: str, levels: int) -> str:
    pad = "    " * levels
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def _where(span: Any) -> str:
    if span is None:
        return "spec"
    return f"spec line {span.line}"
