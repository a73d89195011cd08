"""The model class: constructor (layers, segments, stored blocks), forward_features,
forward_head and forward, the reconstruction-guard methods, and create_model()."""

from __future__ import annotations

import re
from typing import Any

import sympy

from revdsl import ir, sizes
from revdsl.catalogue import fmt_value
from revdsl.codegen.dedup import literal, member_of, type_name
from revdsl.codegen.emitter import Emitter, display_name
from revdsl.codegen.expr import (
    ExprEmitter,
    _indent,
    _later_references,
    _lit,
    _live_into,
    _options_in,
    _source_of,
    _tuple,
)
from revdsl.shapes import B


class ModelMixin:
    """The model class of the generator (`self` is the `_Generator`)."""

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
            sig = ", ".join(["self", *[f"{a.name}: {type_name(a.default)} = {_lit(a.default)}"
                                        for a in args], "reversible: bool = True"])
            e.line(f"def __init__({sig}) -> None:")
            with e.indented():
                e.line("super().__init__()")
                e.line("self.reversible = reversible")
                e.line("self.checkpoint = False")
                for a in args:
                    e.line(f"self.{a.name} = {a.name}")
                self._members(e)
                if self.externs:  # user modules keep their own initialisation
                    self.runtime.add("init_weights_outside")
                    classes = sorted(self.externs)
                    keep = f"({classes[0]},)" if len(classes) == 1 else f"({', '.join(classes)})"
                    e.line(f"init_weights_outside(self, {keep})")
                else:
                    e.line("self.apply(init_weights)")
            self._forwards(e)
            if p.segments:
                self._guard_methods(e)
        e.blank(2)
        params = [q for q in p.params if q.kind == "param"]
        e.line("# The compile-time parameters this file was generated with.")
        e.line("PARAMETERS = {" + ", ".join(f'"{q.name}": {_lit(q.value)}' for q in params)
               + "}")
        if p.segments:
            self.plan_constants(e)
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
                e.line('    f"{fixed[0]} is a compile-time parameter of this model "')
                e.line('    f"(here {PARAMETERS[fixed[0]]!r}); compile the spec again with "')
                e.line('    f"--set {fixed[0]}=... to change it"')
                e.line(")")
            e.line(f"return {p.name}(**overrides)")

    def _plan_methods(self, e: Emitter) -> None:
        self.runtime.update(("set_plan", "plan_blocks", "set_recompute_chunks"))
        e.blank()
        e.line("def set_plan(self, plan: dict[str, Any] | None) -> None:")
        with e.indented():
            e.docstring("Per reversible segment, which blocks run reversibly (True) and which "
                        "keep their\nactivations (False: no recompute); per stored block "
                        "(a transition), [True] to\nrecompute it or [False] to keep its "
                        "activations; None: all recomputed. Same weights\nand results.")
            e.line("set_plan(self, plan)")
        e.blank()
        e.line("def plan(self, batch: int, budget: float) -> dict[str, list[bool]]:")
        with e.indented():
            e.docstring("A plan for set_plan that spends up to `budget` bytes kept for the "
                        "backward\n(at this batch) on the blocks whose recompute costs the most "
                        "per byte\n(predictions: BLOCK_COSTS, KEPT_BYTES).")
            e.line("return plan_blocks(BLOCK_COSTS, KEPT_BYTES, batch, budget)")
        e.blank()
        e.line("def set_recompute_chunks(self, chunks: int = 1) -> None:")
        with e.indented():
            e.docstring("Recompute and backpropagate the row-wise steps (MLP, LayerNorm, "
                        "linear: each token\nalone; marked chunk=1 in STEPS) in `chunks` "
                        "pieces of tokens: the same gradients,\nthe working set of one piece.")
            e.line("set_recompute_chunks(self, chunks)")

    def plan_constants(self, e: Emitter) -> None:
        """Module-level predictions for the planner (after PARAMETERS)."""
        from revdsl.memory import block_costs

        costs = block_costs(self.program)
        kept = self.report.stored_bytes_per_sample()
        kept_n = int(kept) if getattr(kept, "is_number", False) else 0
        e.blank(2)
        e.line("# The planner's predictions (model.plan): per reversible segment, per block, the "
               "bytes per")
        e.line("# sample plain autograd keeps and the MACs per sample; and the bytes per sample "
               "kept when")
        e.line("# every block is reversible.")
        e.line("BLOCK_COSTS = {")
        with e.indented():
            for name, rows in costs.items():
                e.line(f"{name!r}: (")
                with e.indented():
                    for b_, m in rows:
                        e.line(f"({b_}, {m}),")
                e.line("),")
        e.line("}")
        e.line(f"KEPT_BYTES = {kept_n}")

    def _guard_methods(self, e: Emitter) -> None:
        self._plan_methods(e)
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

        built: set[str] = set()  # a name given to two calls is one layer (tied weights)

        def modules_in(values: tuple[ir.Node, ...]) -> None:
            for n in ir.walk(list(values)):
                if n.id in modules and n.id not in done:
                    done.add(n.id)
                    if modules[n.id] in built:
                        continue
                    built.add(modules[n.id])
                    assert isinstance(n, ir.OpNode)
                    e.line(f"self.{modules[n.id]} = {literal(member_of(modules[n.id], n))}")

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
                calls = self._instances(plans)
                if len(calls) == 1 and calls[0].startswith("*"):
                    e.line(calls[0][1:] + ",")  # one comprehension is the whole list
                else:
                    e.line("[")
                    with e.indented():
                        for call in calls:
                            e.line(call + ",")
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
        opt_sig = "".join(f", {o.name}: {type_name(o.default)} = {_lit(o.default)}"
                          for o in opts)
        inputs = ", ".join(n.name for n in p.inputs)
        # forward_features
        body = Emitter()
        ee = ExprEmitter(modules, names, taken=taken | {o.name for o in opts})
        with body.indented():
            self._statements(body, feats, ee)
        outputs = [p.output, *(n for _, n in p.more_outputs)]
        live = _live_into(head, ee.names) if head else list(dict.fromkeys(outputs))
        # an output computed before the head passes through it
        live += [n for n in outputs if n.id in ee.names and n not in live and head]
        feat_names = [names[n.id] for n in live]
        feat_opts = [o for o in opts if o.name in body.text()]
        e.blank()
        e.line(f"def forward_features(self, {inputs}"
               + "".join(f", {o.name}: {type_name(o.default)} = {_lit(o.default)}"
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
            hbody.line("return " + ", ".join(ee.names.get(n.id, feat_names[0]) for n in outputs))
        head_opts = [o for o in opts if re.search(rf"\b{o.name}\b", hbody.text())]
        e.blank()
        e.line(f"def forward_head(self, {', '.join(feat_names)}, pre_logits: bool = False"
               + "".join(f", {o.name}: {type_name(o.default)} = {_lit(o.default)}"
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
