"""Human-readable text of a verification report (`revdsl check`)."""

from __future__ import annotations

from typing import Any

from revdsl.explain import display_formula
from revdsl.shapes import fmt_bytes as _bytes
from revdsl.shapes import simp
from revdsl.verify import Report, evaluate


def describe(report: Report, explain: bool = False, sizes: dict[str, int] | None = None) -> str:
    """The `revdsl check` text. With free input sizes, byte figures are evaluated at `sizes`
    (each free size: the given value, or else the largest the spec allows), and a table gives
    the total at every allowed size; the symbolic forms appear only with `explain`."""
    from revdsl import sizes as free

    p = report.program
    lines = [f"{p.source_name}: model {p.name}: "
             + ("every reversible step proved invertible" if report.ok else
                f"{len(report.errors)} problem{'s' if len(report.errors) != 1 else ''}")]
    names = free.free_dims(p)
    at: dict[str, int] = {}
    if names:
        try:
            at = {k: v[0] for k, v in free.resolve(p, sizes or {}).items()}
        except free.SizeError:
            at = {}
        lines.append("  free input sizes: " + ", ".join(
            f"{k} = {at[k]}" if k in at else k for k in names)
            + (" (byte figures below at these values)" if at else ""))
    if any(o.symbol is not None for o in p.options):
        lines.append("  byte figures at the call-time options' defaults: " + ", ".join(
            f"{o.name}={o.default!r}" for o in p.options if o.symbol is not None))
    symbolic = dict(zip((b.name for b in report.boundaries), report.kept(), strict=True))
    for b, kept in report.kept_evaluated():
        size = _bytes(_at(kept, at))
        if explain and not symbolic[b.name].is_number:
            size += f" (symbolically {symbolic[b.name]} bytes)"
        if b.kind == "segment":
            steps = [s for s in report.steps if s.segment == b.name]
            proved = sum(1 for s in steps if s.proved)
            kinds: dict[str, int] = {}
            for s in steps:
                if s.kind == "update" and s.proof is not None and s.proved:
                    k = ("additive" if s.proof.additive else "affine"
                         if s.proof.scale is not None else "monotone")
                elif s.kind == "restructure":
                    k = "rearrangement"
                elif s.kind == "bijection" and s.proved:
                    k = "bijective layer"
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
                        from revdsl.explain import describe_atom

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
    if names:
        table = _size_table(report)
        if table:
            lines.append("  stored per sample at each allowed size: " + table)
    return "\n".join(lines)


def _at(expr: Any, sizes: dict[str, int]) -> Any:
    if not sizes or getattr(expr, "is_number", True):
        return expr
    subs = {s: sizes[s.name] for s in expr.free_symbols if s.name in sizes}
    return simp(expr.subs(subs))


def _size_table(report: Report) -> str:
    from revdsl import sizes as free

    try:
        every = free.resolve(report.program, {}, every=True)
    except free.SizeError:
        return ""
    if len(every) != 1:
        return ""
    (name, values), = every.items()
    total = evaluate(report.stored_bytes_per_sample(), report.program)
    return ", ".join(f"{name}={v}: {_bytes(_at(total, {name: v}))}" for v in values)
