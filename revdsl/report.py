"""Human-readable text of a verification report (`revdsl check`)."""

from __future__ import annotations

from revdsl.codegen.generate import _bytes
from revdsl.verify import Report, display_formula, evaluate


def describe(report: Report, explain: bool = False) -> str:
    p = report.program
    lines = [f"{p.source_name}: model {p.name}: "
             + ("every reversible step proved invertible" if report.ok else
                f"{len(report.errors)} problem{'s' if len(report.errors) != 1 else ''}")]
    for b, kept in zip(report.boundaries, report.kept(), strict=True):
        size = _bytes(evaluate(kept, p, options=False))
        if b.kind == "segment":
            steps = [s for s in report.steps if s.segment == b.name]
            proved = sum(1 for s in steps if s.proved)
            kinds: dict[str, int] = {}
            for s in steps:
                if s.kind == "update" and s.proof is not None and s.proved:
                    k = "additive" if s.proof.additive else "affine"
                elif s.kind == "restructure":
                    k = "rearrangement"
                elif s.kind == "create":
                    k = "new stream"
                else:
                    k = s.verdict
                kinds[k] = kinds.get(k, 0) + 1
            detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            seg = next(s for s in p.segments if s.name == b.name)
            blocks = f"{len(seg.blocks)} block{'s' if len(seg.blocks) != 1 else ''}"
            lines.append(f"  {b.name}: reversible, {blocks}, {proved}/{len(steps)} "
                         f"steps proved ({detail}); stores its outputs: {size}/sample")
            if explain:
                for s in steps:
                    where = f"line {s.span.line}" if s.span else "?"
                    head = f"    block {s.block} step {s.index} ({where}): "
                    if s.kind == "update":
                        from revdsl.verify import describe_atom

                        fs = "; ".join(
                            f"{'f' if len(s.atoms) == 1 else f'f{i + 1}'} = {describe_atom(a)}"
                            for i, a in enumerate(s.atoms))
                        lines.append(head + f"{s.target} <- {display_formula(s)}   [{fs}]")
                        if s.inverse is not None:
                            lines.append(" " * len(head) + f"inverse: {s.target} <- "
                                         f"{display_formula(s, 'inverse')}   ({s.verdict}: "
                                         f"{s.reason})")
                        else:
                            lines.append(" " * len(head) + f"{s.verdict}: {s.reason}")
                    else:
                        lines.append(head + f"{s.kind} {s.target}: {s.verdict}: {s.reason}")
        else:
            ops = ", ".join(dict.fromkeys(b.ops)) or "-"
            how = "stored, recomputed in the backward" if b.recomputed else "stored boundary"
            lines.append(f"  {b.name} ({how}): {ops}; stores {size}/sample")
    return "\n".join(lines)
