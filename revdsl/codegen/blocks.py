"""Block classes: a reversible block's functions and its STEPS (the one executable encoding of
its updates and their proved inverses, which forward, inverse and the reversible backward all
run), and stored blocks outside segments."""

from __future__ import annotations

from typing import Any

import sympy

from revdsl import catalogue, ir
from revdsl.catalogue import OpDef, render_template
from revdsl.codegen.dedup import BlockCode, member_of
from revdsl.codegen.emitter import Emitter
from revdsl.codegen.expr import (
    ExprEmitter,
    _item_roots,
    _later_references,
    _options_in,
    _refs,
    _tuple,
)
from revdsl.explain import display_formula
from revdsl.graph import flat_steps, undo_order
from revdsl.prover import T, Y, atom_symbols
from revdsl.pyprint import py_expr
from revdsl.verify import StepProof, undo_needs


def _stochastic(opdef: OpDef, attrs: dict[str, Any]) -> bool:
    if opdef.stochastic:
        return True
    for a in opdef.attrs:
        v = attrs.get(a.name)
        if a.random and v is not None and (not isinstance(v, int | float) or v):
            return True
    return False


# attributes and methods every generated block class has (a step function may not take them)
_BLOCK_ATTRIBUTES = ("forward", "inverse", "STEPS", "INPUTS", "OUTPUTS", "STOCHASTIC")


class BlocksMixin:
    """Block classes of the generator (`self` is the `_Generator`)."""

    def _block_code(self, seg: ir.Segment, block: ir.Block) -> BlockCode:
        modules = {node.id: name for name, node in block.modules}
        self.block_modules = modules  # (for the STEPS entries of this block)
        options = self.options_of[seg.name]
        steps = [self.report.step(seg.name, block.index, k) for k, _ in
                 enumerate(flat_steps(block))]
        inputs = [n.stream for n in block.inputs]
        outputs = [n.stream for n in block.outputs]
        needs, final = undo_needs(steps, {n.stream: n.version for n in block.inputs})
        order, stuck = undo_order(needs, final)
        assert not stuck, "the verifier accepted a block it cannot undo"
        keep = _kept_values(steps, needs)
        # the functions of the steps, named after what they compute
        fns: list[tuple[StepProof, str, list[str], bool]] = []
        taken = set(modules.values()) | set(_BLOCK_ATTRIBUTES)
        for sp in steps:
            if sp.kind in ("restructure", "bijection"):
                continue
            if not sp.atoms:
                fns.append((sp, "", [], False))  # nothing to compute: y = h(t) alone
                continue
            fname = _fn_name(sp, modules, taken)
            taken.add(fname)
            sto = any(_stochastic(catalogue.get(n.op), n.attr_dict)  # type: ignore[arg-type]
                      for n in ir.walk(list(sp.atoms)) if isinstance(n, ir.OpNode))
            fns.append((sp, fname, _modules_used(sp, modules), sto))
        stochastic = any(sto for _, _, _, sto in fns)
        head = Emitter()
        doc = [f"{'Silo' if block.kind == 'silo' else 'Reversible block'} "
               f"({_where(block.span)}).", ""]
        doc += ["    " + _step_text(sp) for sp in steps]
        reverse = order == list(range(len(steps) - 1, -1, -1))
        doc += ["", "Undone (inverse derived by the verifier) in "
                + ("reverse order:" if reverse else "the order the outputs allow:")]
        doc += ["    " + _step_text(steps[k], inverse=True) for k in order]
        doc += ["", "STEPS below is the one executable form of these steps: forward(), "
                "inverse() and the", "reversible backward all run it."]
        head.docstring("\n".join(doc))
        head.blank()
        head.line(f"INPUTS = {_tuple(inputs)}")
        head.line(f"OUTPUTS = {_tuple(outputs)}")
        head.line(f"STOCHASTIC = {bool(stochastic)}")
        head.blank()
        tail = Emitter()
        for sp, fname, _, _ in fns:
            if not fname:
                continue
            reads = _params(sp.reads, set(options) | taken)
            for n in ir.walk(list(sp.atoms)):
                if isinstance(n, ir.OpNode):
                    self._need_op(n)
            tail.line(f"def {fname}(self{', ' if reads else ''}{', '.join(reads)}"
                      + (f", *, {', '.join(options)}" if options else "") + "):")
            with tail.indented():
                what = ("the new stream " + sp.target) if sp.kind == "create" else (
                    f"the update of {sp.target}")
                tail.docstring(
                    f"{'Functions' if len(sp.atoms) > 1 else 'Function'} of {what} "
                    f"({_where(sp.span)}): {', '.join(_atom_texts(sp))}."
                )
                names = {self._stream_node(sp, r).id: p for r, p in zip(sp.reads, reads)}
                ee = ExprEmitter(modules, names, taken=set(reads) | set(options))
                ee.prepare(tail, list(sp.atoms))
                tail.line("return " + ", ".join(ee.code(a) for a in sp.atoms))
            tail.blank()
        self.runtime.update(("forward_steps", "inverse_steps"))
        opt_sig = (", *, " + ", ".join(options)) if options else ""
        opt_call = "".join(f", {o}={o}" for o in options)
        tail.line(f"def forward(self, {', '.join(inputs)}{opt_sig}):")
        tail.line(f"    return forward_steps(self, {_tuple_code(inputs)}{opt_call})")
        tail.blank()
        tail.line(f"def inverse(self, {', '.join(outputs)}{opt_sig}):")
        with tail.indented():
            tail.docstring("Rebuild this block's inputs from its outputs (the proved inverses "
                           "in STEPS).")
            tail.line(f"return inverse_steps(self, {_tuple_code(outputs)}{opt_call})")
        tail.blank()
        tail.line("STEPS = (")
        with tail.indented():
            for k, sp in enumerate(steps):
                self._steps_entry(tail, sp, fns, keep.get(k))
        tail.line(")")
        if not reverse:
            tail.line(f"UNDO = {_index_tuple(order)}  "
                      "# steps that read replaced values wait for them")
        members = [member_of(name, node) for name, node in _once(block.modules)]
        return BlockCode(block=block, kind=block.kind, head=head.text(), tail=tail.text(),
                         members=members)

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
        seen: set[int] = set()  # a value under two names (`x1 = y1`) is returned once
        out = []
        for t, v in self._plain_finals(pb):
            if v.id in used and v.id not in seen:
                seen.add(v.id)
                out.append((t, v))
        return out

    def _read_after(self, pb: ir.PlainBlock) -> set[int]:
        """The values defined by `pb` that something after it reads (or the model outputs)."""
        items = list(self.program.items)
        mine = {v.id for a in pb.assigns for v in a.values}
        out = {n.id for n in (self.program.output, *(v for _, v in self.program.more_outputs))
               } & mine
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
        e = Emitter()
        e.docstring(f"A stored block ({_where(pb.span)}): not invertible, so in reversible "
                    "mode it is\nrecomputed from its inputs in the backward instead of "
                    "keeping its activations.")
        e.blank()
        e.line("STORED = True  # a unit of its own (e.g. for fully_shard), as reversible blocks")
        e.blank()
        head = e.text()
        e = Emitter()
        for _name, node in pb.modules:
            self._need_op(node)
        for a in pb.assigns:
            for n in ir.walk(list(a.values)):
                if isinstance(n, ir.OpNode):
                    self._need_op(n)
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
        members = [member_of(name, node) for name, node in _once(pb.modules)]
        return BlockCode(block=pb, kind="plain", head=head, tail=e.text(), members=members)

    def _stream_node(self, sp: StepProof, key: str) -> ir.StreamNode:
        stream, _, version = key.partition("@")
        found = []
        for a in sp.atoms:
            nodes = [a] if isinstance(a, ir.StreamNode) else [
                n for n in ir.walk([a]) if isinstance(n, ir.StreamNode)]
            found += [n for n in nodes if n.stream == stream]
        if version:  # an earlier value
            return next(n for n in found if n.version == int(version))
        return max(found, key=lambda n: n.version)

    def _steps_entry(self, e: Emitter, sp: StepProof, fns: list[Any],
                     keep: list[str] | None = None) -> None:
        if sp.kind == "bijection":  # a layer that undoes itself (its `inverse`)
            self.runtime.add("Bijection")
            self._need_op(sp.atoms[0])  # type: ignore[arg-type]
            e.line(f'Bijection("{sp.target}", "{self.block_modules[sp.atoms[0].id]}"),')
            return
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
            end = f", keep={_tuple(keep)})," if keep else "),"
            e.line(f"        inverse=lambda {', '.join(outs)}: {inv}{end}")
            return
        _, fname, mods, sto = next(x for x in fns if x[0] is sp)
        atoms = "".join(f", a{i}" for i in range(len(sp.atoms)))
        call = f'{"Create" if sp.kind == "create" else "Couple"}("{sp.target}", '
        rest = f"{_tuple(list(sp.reads))}, \"{fname}\", {_tuple(mods)}, {sto},"
        if len(call + rest) <= 88:  # (STEPS entries sit 8 spaces in)
            e.line(call + rest)
        else:  # the modules on lines of their own
            e.line(call + f"{_tuple(list(sp.reads))}, \"{fname}\",")
            with e.indented():
                if len(_tuple(mods)) + len(f", {sto},") <= 84:
                    e.line(f"{_tuple(mods)}, {sto},")
                else:
                    e.line("(")
                    with e.indented():
                        for m in mods:
                            e.line(f'"{m}",')
                    e.line(f"), {sto},")
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
            end = (f", keep=\"{keep[0]}\"" if keep else "") + (", chunk=1" if _rowwise(sp) else "")
            end += "),"
            if _delta_ok(sp):
                assert sp.proof.shift is not None
                delta = py_expr(sp.proof.shift, names, tensor=True)
                e.line(f"delta=lambda {atoms[2:]}: {delta}{end}")
            else:
                e.line(f"delta=None{end}")


def _rowwise(sp: StepProof) -> bool:
    """Whether an update's functions act on each token alone: [B, N, C] values throughout (no
    broadcast along the tokens) and every op row-wise (catalogue: layernorm, linear, mlp,
    drop_path, elementwise algebra; not attention), on values of rank 3 or more ([B, N, C],
    [B, H, W, C]) that differ at most in their last dim. The reversible backward may then
    recompute the step in chunks along dim 1 (`chunk=1`; model.set_recompute_chunks)."""
    step = sp.step
    shape = tuple(step.before.shape) if isinstance(step, ir.Update) else ()
    if not sp.atoms or len(shape) < 3:
        return False
    rows = shape[:-1]
    if any(tuple(a.shape) != tuple(step.before.shape) for a in sp.atoms):
        return False
    for n in ir.walk(list(sp.atoms)):
        if isinstance(n, ir.ConstNode) and not n.shape:
            continue
        if len(n.shape) != len(shape) or tuple(n.shape[:-1]) != rows:
            return False
        if isinstance(n, ir.OpNode):
            opdef = catalogue.get(n.op)
            if opdef is None or not opdef.is_rowwise(n.attr_dict):
                return False
    return True


def _once(modules: tuple[tuple[str, ir.OpNode], ...]) -> list[tuple[str, ir.OpNode]]:
    """Each layer once: a name given to two calls is one layer applied twice (tied weights)."""
    seen: set[str] = set()
    out = []
    for name, node in modules:
        if name not in seen:
            seen.add(name)
            out.append((name, node))
    return out


def _params(reads: tuple[str, ...], taken: set[str]) -> list[str]:
    """Parameter names of a step function: a stream's name, or `b_v0` for an earlier value."""
    out: list[str] = []
    for r in reads:
        name, _, version = r.partition("@")
        p = f"{name}_v{version}" if version else name
        while version and (p in taken or p in reads or p in out):
            p += "_"
        out.append(p)
    return out


def _kept_values(steps: list[StepProof], needs: list[Any]) -> dict[int, list[str]]:
    """Step index -> the key under which the forward keeps the value that step replaces, for
    every earlier value a later step reads."""
    out: dict[int, list[str]] = {}
    for sp in steps:
        for r in sp.reads:
            if "@" in r:
                name, _, version = r.partition("@")
                k = next(k for k, n in enumerate(needs) if (name, int(version)) in n.rebuilt)
                if r not in out.setdefault(k, []):
                    out[k].append(r)
    return out


def _modules_used(sp: StepProof, modules: dict[int, str]) -> list[str]:
    out: list[str] = []
    for n in ir.walk(list(sp.atoms)):
        if n.id in modules and modules[n.id] not in out:
            out.append(modules[n.id])
    return out


def _atom_names(sp: StepProof) -> dict[sympy.Symbol, str]:
    return {s: f"a{i}" for i, s in enumerate(atom_symbols(len(sp.atoms)))}


def _count(e: sympy.Expr, s: sympy.Symbol) -> int:
    return sum(1 for n in sympy.preorder_traversal(e) if n == s)


def _atom_texts(sp: StepProof) -> list[str]:
    from revdsl.explain import describe_atom

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
    if opdef.inverse_attrs is not None:
        attrs = opdef.inverse_attrs(attrs, len(step.inputs))
    return render_template(inv, outs, attrs)


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


def _where(span: Any) -> str:
    if span is None:
        return "spec"
    return f"spec line {span.line}"


def _fn_name(sp: StepProof, modules: dict[int, str], taken: set[str]) -> str:
    """A step function's name: `f_` and the first layer with parameters it applies (its `as`
    label, or its default name: `f_attn`, `f_mlp`), else the first layer, else `f`; numbered
    when taken."""
    first = None
    for n in _preorder(list(sp.atoms)):
        if isinstance(n, ir.OpNode) and n.id in modules:
            opdef = catalogue.get(n.op)
            if first is None:
                first = modules[n.id]
            if opdef is not None and opdef.has_parameters([c.shape for c in n.inputs],
                                                          n.attr_dict):
                first = modules[n.id]
                break
    base = f"f_{first}" if first else "f"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{k}"
    return name


def _preorder(roots: list[ir.Node]) -> list[ir.Node]:
    out: list[ir.Node] = []
    seen: set[int] = set()
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        out.append(n)
        stack.extend(reversed(ir.children(n)))
    return out


def _tuple_code(names: list[str]) -> str:
    return f"({names[0]},)" if len(names) == 1 else f"({', '.join(names)})"


def _index_tuple(items: list[int]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(map(str, items))})"
