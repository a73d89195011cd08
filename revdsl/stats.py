"""`revdsl stats`: parameters, MACs and training-memory predictions from shapes alone.

Everything here comes from the catalogue's rules applied to the elaborated program (no torch):

* parameters: each op's `params` rule, per part and in total;
* MACs: each op's `macs` rule (multiply-accumulates of linear layers, convolutions and attention
  products, the fvcore convention), per sample;
* memory: what the backward keeps per sample, in reversible mode (segment outputs, the inputs of
  recomputed blocks, what loose statements save) and in plain autograd (every op's saved tensors),
  from the verifier's boundary report.

Values that depend on a model argument or a call-time option are evaluated at their defaults;
`--set` changes compile-time parameters as for `compile`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl import ir
from revdsl.memory import op_costs
from revdsl.shapes import B, to_expr
from revdsl.verify import Report, evaluate


@dataclass
class Part:
    name: str
    kind: str
    params: int = 0
    macs: int = 0
    stored: int = 0  # bytes per sample kept for the backward, reversible mode
    baseline: int = 0  # bytes per sample kept by plain autograd
    ops: list[str] = field(default_factory=list)


@dataclass
class Stats:
    model: str
    parts: list[Part]
    batch: int = 1
    externs: list[str] = field(default_factory=list)  # user modules: not counted here

    @property
    def params(self) -> int:
        return sum(p.params for p in self.parts)

    @property
    def macs(self) -> int:
        return sum(p.macs for p in self.parts)

    @property
    def stored(self) -> int:
        return sum(p.stored for p in self.parts)

    @property
    def baseline(self) -> int:
        return sum(p.baseline for p in self.parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "batch": self.batch, "params": self.params,
            "macs_per_sample": self.macs, "uncounted_externs": self.externs,
            "stored_bytes_per_sample": {"reversible": self.stored, "baseline": self.baseline},
            "parts": [
                {"name": p.name, "kind": p.kind, "params": p.params, "macs_per_sample": p.macs,
                 "stored_bytes_per_sample": {"reversible": p.stored, "baseline": p.baseline}}
                for p in self.parts
            ],
        }


def _num(e: Any, program: ir.Program, sizes: dict[str, Any] | None = None) -> int:
    v = to_expr(e)
    if sizes:  # given sizes (and option values) first, then the defaults
        v = v.subs({s: to_expr(sizes[s.name]) for s in v.free_symbols if s.name in sizes})
    v = evaluate(v, program)
    v = v.subs(B, 1)
    if not v.is_number:
        raise ValueError(f"{e} depends on {sorted(str(s) for s in v.free_symbols)}")
    return int(sympy.floor(v + sympy.Rational(1, 2)))


def _tied(program: ir.Program) -> dict[int, int]:
    """Node id -> the node id of the layer it applies: one name given to two calls in one part
    is one layer (tied weights)."""
    out: dict[int, int] = {}
    scopes = [program.model_modules]
    for item in program.items:
        if isinstance(item, ir.Segment):
            scopes.extend(b.modules for b in item.blocks)
        elif isinstance(item, ir.PlainBlock):
            scopes.append(item.modules)
    for modules in scopes:
        first: dict[str, int] = {}
        for name, node in modules:
            out[node.id] = first.setdefault(name, node.id)
    return out


def _costs(nodes: list[ir.Node], modules: set[int], program: ir.Program,
           sizes: dict[str, int] | None, tied: dict[int, int]) -> tuple[int, int, list[str]]:
    params = macs = 0
    ops: list[str] = []
    for n in nodes:
        if not isinstance(n, ir.OpNode):
            continue
        p, m = op_costs(n)
        key = tied.get(n.id, n.id)
        if key not in modules:  # a layer applied twice has its parameters once
            params += _num(p, program, sizes)
            modules.add(key)
        macs += _num(m, program, sizes)
        ops.append(n.op)
    return params, macs, ops


def stats(report: Report, sizes: dict[str, int] | None = None) -> Stats:
    """Per-part costs of a verified program (symbolic sizes evaluated with `sizes`); the parts
    are the verifier's boundaries, so costs and memory describe the same pieces."""
    program = report.program
    seen: set[int] = {n.id for n in program.inputs}
    for seg in program.segments:
        seen.update(e.start.id for e in seg.entry)
    modules: set[int] = set()
    tied = _tied(program)
    parts: list[Part] = []
    for b, kept, base in zip(report.boundaries, report.kept(), report.kept(baseline=True),
                             strict=True):
        nodes: list[ir.Node] = []
        for root in b.roots:
            walked = ir.walk([root], stop=seen)
            if b.kind == "segment":
                # a layer used in several steps is counted in each step's MACs once per use
                seen.update(n.id for n in walked if not isinstance(n, ir.StreamNode))
            else:
                seen.update(n.id for n in walked)
            nodes.extend(walked)
        p, m, ops = _costs(nodes, modules, program, sizes, tied)
        parts.append(Part(
            name=b.name, kind=b.kind, params=p, macs=m, ops=ops,
            stored=_num(kept, program, sizes),
            baseline=_num(base, program, sizes),
        ))
    externs = sorted({str(n.attr_dict["path"]) for n in ir.op_nodes(program) if n.op == "extern"})
    return Stats(model=program.name, parts=parts, externs=externs)


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or suffix == "T":
            return f"{n:.2f}{suffix}{unit}" if suffix else f"{int(n)}{unit}"
        n /= 1000
    return f"{n:.2f}T{unit}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_table(st: Stats, batch: int = 1) -> str:
    rows = [("part", "kind", "params", "MACs/sample", "kept (reversible)", "kept (baseline)")]
    for p in st.parts:
        rows.append((p.name, p.kind, _human(p.params), _human(p.macs),
                     _mib(p.stored * batch), _mib(p.baseline * batch)))
    rows.append(("total", "", _human(st.params), _human(st.macs), _mib(st.stored * batch),
                 _mib(st.baseline * batch)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    ratio = st.baseline / st.stored if st.stored else float("inf")
    per = "per sample" if batch == 1 else f"for a batch of {batch}"
    lines.append(f"{st.model}: {st.params:,} parameters, {st.macs / 1e9:.3f} GMACs per sample; "
                 f"activations kept for the backward {per}: {_mib(st.stored * batch)} reversible "
                 f"vs {_mib(st.baseline * batch)} plain autograd ({ratio:.1f}x less)")
    if st.externs:
        lines.append("not counted: the parameters, MACs and activations of the extern modules "
                     f"{', '.join(st.externs)} (revdsl knows them only by import path)")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    from revdsl.files import parse_sets, read_spec
    from revdsl.pipeline import check_text

    report = check_text(read_spec(args.spec), args.spec, parse_sets(args.set))
    report.raise_if_failed()
    from revdsl import sizes as sizes_mod

    given = sizes_mod.parse_size_args(args.size)
    sizes = sizes_mod.first(sizes_mod.resolve(report.program, given))
    st = stats(report, sizes)
    st.batch = args.batch
    if args.json:
        json.dump({**st.as_dict(), "sizes": sizes}, sys.stdout, indent=2)
        print()
    else:
        print(format_table(st, args.batch))
        if sizes:
            allowed = sizes_mod.choices(report.program)
            for k, v in sizes.items():
                others = f" (allowed: {', '.join(map(str, allowed[k]))})" if k in allowed else ""
                print(f"input size {k} = {v}{others}; pick another with --size {k}=N")
    return 0


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("stats", help="parameters, MACs and predicted training memory (no torch)")
    spec_args(p)
    p.add_argument("--batch", type=int, default=1, help="memory for this batch size")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stats)
