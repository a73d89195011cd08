"""`revdsl viz`: draw a spec's graph with graphviz: what is reversible, what is stored, and why.

Built from the verifier's report and its networkx graph (`report.graph`): every coupling step is a
node on its stream's lane (edges of the stream's colour carry it from step to step; dashed edges
show what a step's functions read); segments, blocks, silos and their phases are clusters; stored
parts (stems, transitions, pruning blocks, heads) are orange clusters labelled with the bytes per
sample they keep. Runs of identical blocks collapse into one cluster labelled `× N` (`--expand`
draws them all). A step the verifier refuted is red and carries its reason, so an invalid spec still
draws. `.dot` output needs nothing; SVG, PNG and PDF need graphviz's `dot` program.
"""

from __future__ import annotations

import argparse
import html
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from revdsl import ir
from revdsl.errors import RevdslError
from revdsl.explain import describe_atom, display_formula
from revdsl.graph import flat_steps
from revdsl.verify import Report, StepProof, evaluate

GREEN, GREEN_LINE = "#e3f4e8", "#2e8b57"
ORANGE, ORANGE_LINE = "#fdebd3", "#d2691e"
RED, RED_LINE = "#fde0e0", "#c0392b"
GREY = "#f4f4f4"
SKIP = {"color": "#d2691e", "style": "bold", "constraint": "false", "fontcolor": "#d2691e"}
LANES = ["#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#ff7f0e"]


class VizError(RevdslError):
    """The picture cannot be rendered (no `dot`, unknown format)."""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _kib(report: Report, expr: Any, sizes: dict[str, int] | None = None) -> str:
    v = evaluate(expr, report.program, options=True)
    if sizes:
        v = v.subs({s: sizes[s.name] for s in v.free_symbols if s.name in sizes})
    if not v.is_number:
        return f"{v} B"
    n = float(v)
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _block_key(block: ir.Block) -> tuple[Any, ...]:
    """Blocks with equal keys draw the same (so runs of them can collapse)."""
    key: list[Any] = [block.kind, tuple(n.stream for n in block.inputs)]
    for step in flat_steps(block):
        if isinstance(step, ir.Restructure):
            key.append(("r", step.op, tuple(n.stream for n in step.inputs)))
        else:
            key.append((type(step).__name__, step.target, describe_atom(step.expr, 6)))
    return tuple(key)


class _Drawing:
    def __init__(self, report: Report, expand: bool, sizes: dict[str, int] | None = None
                 ) -> None:
        import graphviz

        self.report = report
        self.expand = expand
        self.sizes = dict(sizes or {})
        self.g = graphviz.Digraph(report.program.name, format="svg")
        self.g.attr(rankdir="TB", compound="true", fontname="Helvetica", fontsize="12",
                    nodesep="0.3", ranksep="0.3", newrank="true",
                    label=self._title(), labelloc="t")
        self.g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica",
                    fontsize="10", fillcolor="white", penwidth="1.2")
        self.g.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.6")
        self.colors: dict[str, str] = {}
        self.last: dict[str, str] = {}  # stream -> node that last wrote it
        self.prev: str | None = None  # last node of the previous part (for the main flow)
        self.count = 0
        self.names: dict[int, str] = {n.id: n.name for n in report.program.inputs}
        # value id -> (the drawn node that first computes it, the number of its part)
        self.defs: dict[int, tuple[str, int]] = {}
        self.parts = 0  # stored parts and segments drawn so far

    def _title(self) -> str:
        p = self.report.program
        status = ("every reversible step proved invertible" if self.report.ok else
                  f"{len(self.report.errors)} problem(s), drawn in red")
        import sympy

        used = set().union(*(sympy.sympify(b.bytes_per_sample).free_symbols
                             for b in self.report.boundaries))
        at = [f"{k} = {v}" for k, v in self.sizes.items()]
        at += [f"{o.name} = {o.default!r}" for o in p.options if o.symbol in used]
        where = f"\nbytes per sample at {', '.join(at)}" if at else ""
        return f"{p.name} ({Path(p.source_name).name}): {status}{where}"

    def kib(self, expr: Any) -> str:
        return _kib(self.report, expr, self.sizes)

    def nid(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def lane(self, stream: str) -> str:
        base = stream.rstrip("0123456789") or stream
        key = stream if base in ("x", "s") else base
        if key not in self.colors:
            self.colors[key] = LANES[len(self.colors) % len(LANES)]
        return self.colors[key]

    # -- parts
    def run(self) -> Any:
        self.legend()
        self.kept = {b.name: v for b, v in self.report.kept_evaluated()}
        boundaries = {b.name: b for b in self.report.boundaries}
        named = {i.name for i in self.report.program.items
                 if isinstance(i, ir.Segment | ir.PlainBlock)}
        loose: list[ir.Assign] = []
        kinds = [b for b in self.report.boundaries if b.name not in named]
        for item in self.report.program.items:
            if isinstance(item, ir.Assign):
                loose.append(item)
                continue
            if loose:
                self.loose(loose, kinds)
                loose = []
            if isinstance(item, ir.PlainBlock):
                self.stored_block(item, boundaries.get(item.name))
            else:
                self.segment(item, boundaries.get(item.name))
        if loose:
            self.loose(loose, kinds)
        return self.g

    def legend(self) -> None:
        """Every colour and line style the picture uses, with what it means."""
        with self.g.subgraph(name="cluster_legend") as c:
            c.attr(label="legend", style="rounded", color="#999999", fontsize="10")
            c.node("legend_rev", "reversible step\n(proved invertible)", fillcolor=GREEN,
                   color=GREEN_LINE)
            c.node("legend_store", "stored part\n(keeps bytes/sample)", fillcolor=ORANGE,
                   color=ORANGE_LINE)
            c.node("legend_bad", "refuted step\n(reason shown)", fillcolor=RED, color=RED_LINE)
            c.node("legend_perm", "rearrangement\n(chunk, cat, swap)", fillcolor=GREY,
                   color="#777777")
            c.edge("legend_rev", "legend_store", style="invis")
            c.edge("legend_store", "legend_bad", style="invis")
            c.edge("legend_bad", "legend_perm", style="invis")
            prev = "legend_perm"
            for key, text, attrs in (
                ("lane", "a stream, step to step\n(one colour per stream)",
                 {"color": LANES[0], "penwidth": "1.6"}),
                ("read", "a step's function\nreads another stream",
                 {"color": LANES[1], "style": "dashed", "arrowhead": "open"}),
                ("flow", "stored parts in order", {"color": "#555555"}),
                ("skip", "a value read again later\n(skip connection)",
                 {k: v for k, v in SKIP.items() if k != "constraint"}),
            ):
                a, b = f"legend_{key}_a", f"legend_{key}_b"
                c.node(a, "", shape="point", width="0.05")
                c.node(b, text, shape="plaintext", style="", fontsize="9")
                c.edge(prev, a, style="invis")
                c.edge(a, b, **attrs)
                prev = b

    def name(self, a: ir.Assign) -> None:
        for i, (t, v) in enumerate(zip(a.targets, a.values, strict=True)):
            # a list's elements are shown by their place in it (`skips[1]`)
            self.names[v.id] = t if a.list_name is None else f"{a.list_name}[{i}]"

    def label(self, a: ir.Assign) -> str:
        if a.list_name is not None:  # a list: `skips = [skips[0], x]`
            return f"{a.list_name} = [{', '.join(_text(v, self.names, 4) for v in a.values)}]"
        return f"{', '.join(a.targets)} = {self.describe(a.values)}"

    def define(self, node: str, values: Any) -> None:
        for v in values:
            self.defs.setdefault(v.id, (node, self.parts))

    def skips(self, node: str, values: Any) -> None:
        """Long edges into `node` from the parts before the previous one whose values it reads
        (a U-Net's skip connections, a value kept across segments)."""
        seen: set[int] = set()
        found: dict[str, list[str]] = {}
        stack = list(values)
        own = {v.id for v in values}
        while stack:
            n = stack.pop()
            if n.id in seen:
                continue
            seen.add(n.id)
            where = self.defs.get(n.id)
            if where is not None and n.id not in own:
                src, part = where
                if part < self.parts - 1:
                    found.setdefault(src, []).append(self.names.get(n.id, ""))
                continue
            if isinstance(n, ir.OpNode):
                stack.extend(n.inputs)
            elif isinstance(n, ir.OutNode):
                stack.append(n.source)
        for src, names in found.items():
            self.g.edge(src, node, label=_esc(", ".join(sorted(set(filter(None, names))))),
                        **SKIP)

    def describe(self, values: tuple[ir.Node, ...]) -> str:
        if len(values) > 1 and all(isinstance(v, ir.OutNode) for v in values):
            sources = {v.source.id for v in values}  # type: ignore[attr-defined]
            indices = [v.index for v in values]  # type: ignore[attr-defined]
            if len(sources) == 1 and indices == list(range(len(values))):
                # `a, b = op(...)`: the op once, not once per output
                return _clip(_text(values[0].source, self.names, 4), 64)  # type: ignore[attr-defined]
        return _clip(", ".join(_text(v, self.names, 4) for v in values), 64)

    def _flow(self, node: str) -> None:
        if self.prev is not None:
            self.g.edge(self.prev, node, color="#555555")
        self.prev = node

    def loose(self, assigns: list[ir.Assign], kinds: list[Any]) -> None:
        kind = kinds.pop(0) if kinds else None
        name = f"cluster_{self.nid('plain')}"
        title = kind.name if kind is not None else "statements"
        kept = ""
        if kind is not None:
            amount = self.kept[kind.name]
            kept = (f"keeps {self.kib(amount)}/sample" if amount != 0 else
                    "keeps nothing for the backward")
        with self.g.subgraph(name=name) as c:
            c.attr(label=f"{title} (stored)\n{kept}", style="rounded,filled", fillcolor=ORANGE,
                   color=ORANGE_LINE)
            self.parts += 1
            for a in assigns:
                text = self.label(a)
                node = self.nid("a")
                c.node(node, _esc(text), fillcolor="white", color=ORANGE_LINE)
                if a.list_name is None:  # (building a list computes nothing)
                    self.skips(node, a.values)
                self._flow(node)
                self.name(a)
                self.define(node, a.values)

    def stored_block(self, pb: ir.PlainBlock, b: Any) -> None:
        kept = ""
        if b:
            amount = self.kept[pb.name]
            kept = (f"keeps its inputs: {self.kib(amount)}/sample" if amount != 0 else
                    "keeps nothing more: its inputs are kept already")
        with self.g.subgraph(name=f"cluster_{pb.name}") as c:
            c.attr(label=f"block {pb.name} (stored, recomputed in the backward)\n{kept}",
                   style="rounded,filled", fillcolor=ORANGE, color=ORANGE_LINE)
            ins = ", ".join(self.names.get(n.id, "?") for n in pb.inputs)
            lines = []
            for a in pb.assigns:
                lines.append(self.label(a))
                self.name(a)
            node = self.nid("p")
            body = "\n".join(lines[:6] + (["..."] if len(lines) > 6 else []))
            c.node(node, _esc(f"from {ins}:\n{body}"), fillcolor="white", color=ORANGE_LINE)
        self.parts += 1
        self.skips(node, [v for a in pb.assigns for v in a.values])
        self._flow(node)
        self.define(node, [v for a in pb.assigns for v in a.values])

    def segment(self, seg: ir.Segment, b: Any) -> None:
        steps = {(s.block, s.index): s for s in self.report.steps if s.segment == seg.name}
        kept = f"keeps its outputs: {self.kib(self.kept[seg.name])}/sample" if b else ""
        blocks = f"{len(seg.blocks)} block{'s' if len(seg.blocks) != 1 else ''}"
        with self.g.subgraph(name=f"cluster_{seg.name}") as c:
            c.attr(label=f"reversible segment {seg.name}: {blocks}\n{kept}",
                   style="rounded,filled", fillcolor=GREEN, color=GREEN_LINE)
            entry = self.nid("e")
            c.node(entry, _esc("streams " + ", ".join(e.stream for e in seg.entry)),
                   shape="cds", fillcolor="white", color=GREEN_LINE)
            self.parts += 1
            self.skips(entry, [e.node for e in seg.entry])
            self._flow(entry)
            for e in seg.entry:
                self.last[e.stream] = entry
            runs = _runs(seg.blocks) if not self.expand else [[b] for b in seg.blocks]
            for run in runs:
                self.block(c, run, steps)
            out = self.nid("o")
            c.node(out, _esc("outputs " + ", ".join(n.stream for n in seg.exits)), shape="cds",
                   fillcolor="white", color=GREEN_LINE)
            for n in seg.exits:
                src = self.last.get(n.stream)
                if src:
                    self.g.edge(src, out, color=self.lane(n.stream), penwidth="1.6")
                self.names[n.id] = n.stream
            self.define(out, seg.exits)
            self.prev = out

    def block(self, parent: Any, run: list[ir.Block], steps: dict[tuple[int, int], StepProof]
              ) -> None:
        first = run[0]
        title = ("silo" if first.kind == "silo" else "block") + (
            f" {first.name}" if first.name else "")
        label = f"{title} \u00d7 {len(run)}" if len(run) > 1 else title
        bad = [k for b in run for k, _ in enumerate(flat_steps(b))
               if not steps[(b.index, k)].proved]
        with parent.subgraph(name=f"cluster_b{self.nid('b')}") as c:
            c.attr(label=label, style="rounded,filled", fillcolor="white",
                   color=RED_LINE if bad else GREEN_LINE)
            phases: dict[int, tuple[int, str]] = {}
            for st in first.steps:
                if isinstance(st, ir.Phase):
                    for u in st.steps:
                        phases[id(u)] = (id(st), st.name or "phase")

            def proof_for(k: int) -> StepProof:
                failed = [steps[(b.index, k)] for b in run if not steps[(b.index, k)].proved]
                return failed[0] if failed else steps[(first.index, k)]

            flat = list(enumerate(flat_steps(first)))
            for key, items in itertools.groupby(flat, key=lambda ks: phases.get(id(ks[1]))):
                if key is None:
                    for k, step in items:
                        self.step(c, step, proof_for(k))
                    continue
                with c.subgraph(name=f"cluster_ph{self.nid('h')}") as sub:
                    sub.attr(label=f"phase {key[1]}", style="dashed,rounded", color="#888888")
                    for k, step in items:
                        self.step(sub, step, proof_for(k))

    def step(self, c: Any, step: Any, proof: StepProof) -> None:
        node = self.nid("s")
        if isinstance(step, ir.Restructure):
            ins = ", ".join(n.stream for n in step.inputs)
            outs = ", ".join(n.stream for n in step.outputs)
            c.node(node, _esc(f"{outs} = {step.op}({ins})"), shape="box", fillcolor=GREY,
                   color="#777777")
            for n in step.inputs:
                if n.stream in self.last:
                    self.g.edge(self.last[n.stream], node, color=self.lane(n.stream))
            for n in step.outputs:
                self.last[n.stream] = node
            return
        ok = proof.proved
        if proof.kind == "create":
            text = f"new stream {proof.target} = {display_formula(proof)}"
        else:
            text = f"{proof.target} <- {display_formula(proof)}"
        fns = "; ".join(
            f"{'f' if len(proof.atoms) == 1 else f'f{i + 1}'} = {describe_atom(a, 3)}"
            for i, a in enumerate(proof.atoms))
        label = text + (f"\n{_clip(fns, 70)}" if fns else "")
        if not ok:
            label += f"\nNOT INVERTIBLE: {_clip(proof.reason, 90)}"
        c.node(node, _esc(label), fillcolor=GREEN if ok else RED,
               color=GREEN_LINE if ok else RED_LINE, penwidth="1.2" if ok else "2")
        target = proof.target
        if target in self.last:
            self.g.edge(self.last[target], node, color=self.lane(target), penwidth="1.6")
        for r in proof.reads:
            if r in self.last and self.last[r] != self.last.get(target):
                self.g.edge(self.last[r], node, color=self.lane(r), style="dashed",
                            arrowhead="open")
        self.last[target] = node


def _runs(blocks: tuple[ir.Block, ...]) -> list[list[ir.Block]]:
    runs: list[list[ir.Block]] = []
    for b in blocks:
        if runs and _block_key(runs[-1][0]) == _block_key(b):
            runs[-1].append(b)
        else:
            runs.append([b])
    return runs


def _text(n: ir.Node, names: dict[int, str], depth: int) -> str:
    """An expression as text, with already-named values shown by name."""
    if n.id in names:
        return names[n.id]
    if isinstance(n, ir.ConstNode):
        return repr(n.value)
    if isinstance(n, ir.OutNode):
        return f"{_text(n.source, names, depth)}[{n.index}]"
    if not isinstance(n, ir.OpNode):
        return describe_atom(n)
    if depth <= 0:
        return f"{n.op}(...)"
    args = [_text(c, names, depth - 1) for c in n.inputs]
    infix = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
    if n.op in infix and len(args) == 2:
        return f"{args[0]} {infix[n.op]} {args[1]}"
    return f"{n.op}({', '.join(args)})"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def draw(report: Report, expand: bool = False, sizes: dict[str, int] | None = None) -> Any:
    """The graphviz Digraph of a (possibly failed) verification report; byte counts are
    evaluated at `sizes` (free input dimensions) and the call-time options' defaults."""
    return _Drawing(report, expand, sizes).run()


FORMATS = ("svg", "png", "pdf", "dot")


def render(report: Report, out: Path, expand: bool = False,
           sizes: dict[str, int] | None = None) -> None:
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise VizError(f"cannot draw to '{out.suffix}': use .svg, .png, .pdf or .dot")
    from revdsl.files import check_output, write_atomically

    check_output(out, [report.program.source_name])
    g = draw(report, expand, sizes)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        write_atomically(out, g.source)
        return
    if shutil.which("dot") is None:
        raise VizError("graphviz's `dot` program is not installed (Debian: apt-get install "
                       "graphviz; scripts/setup.sh does it); .dot output works without it")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        g.format = fmt
        made = g.render(filename="picture", directory=tmp, cleanup=True)
        os.replace(made, out)


def cmd_viz(args: argparse.Namespace) -> int:
    from revdsl import sizes as sizes_mod
    from revdsl.files import parse_sets, read_spec
    from revdsl.pipeline import check_text

    report = check_text(read_spec(args.spec), args.spec, parse_sets(args.set))
    given = sizes_mod.parse_size_args(args.size)
    try:
        sizes = sizes_mod.first(sizes_mod.resolve(report.program, given))
    except sizes_mod.SizeError:
        if given:
            raise
        sizes = {}  # a free size nothing fixes: draw the byte counts as formulas
    render(report, Path(args.output), expand=args.expand, sizes=sizes)
    if not report.ok:
        from revdsl.errors import Diagnostics

        print(Diagnostics(report.errors).render(), file=sys.stderr)
        print(f"wrote {args.output}: the problems above are drawn in red", file=sys.stderr)
        return 1
    return 0


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("viz", help="draw the graph: reversible steps, stored parts, problems")
    spec_args(p)
    p.add_argument("-o", "--output", required=True, help="OUT.svg, .png, .pdf or .dot")
    p.add_argument("--expand", action="store_true", help="draw every block (no `× N` runs)")
    p.set_defaults(func=cmd_viz)
