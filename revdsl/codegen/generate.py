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

from revdsl import catalogue, ir
from revdsl.codegen.blocks import BlocksMixin
from revdsl.codegen.dedup import BlockCode, DedupMixin, Template
from revdsl.codegen.emitter import Emitter
from revdsl.codegen.expr import _segment_options
from revdsl.codegen.header import HeaderMixin
from revdsl.codegen.model import ModelMixin
from revdsl.graph import flat_steps
from revdsl.verify import Report


def generate(program: ir.Program, report: Report) -> str:
    report.raise_if_failed()
    return _Generator(program, report).run()


class _Generator(HeaderMixin, BlocksMixin, DedupMixin, ModelMixin):
    def __init__(self, program: ir.Program, report: Report) -> None:
        self.program = program
        self.report = report
        self.runtime: set[str] = {"ReversibleSegment", "init_weights", "Couple", "check_input"}
        self.externs: set[str] = set()  # user modules (import paths of their classes)
        self.templates: list[Template] = []
        self.segment_plans: dict[str, list[tuple[Template, BlockCode]]] = {}
        self.options_of: dict[str, list[str]] = {}

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
        model = Emitter()
        self._model(model)
        rest = Emitter()
        self._runtime(rest)
        for t in self.templates:
            rest.blank(2)
            rest.raw(self._template_source(t))
        rest.blank(2)
        rest.raw(model.text())
        e = Emitter()
        self._header(e, rest.text())
        e.blank()
        e.raw(rest.text())
        return e.wrapped()
