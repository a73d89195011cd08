"""Property tests of the verifier against an independent oracle and against numerics.

Random specs (revdsl.testing.any_specs: coupling programs, multi-scale silos, segments joined by
stored transitions), half of them with one planted fault: the verifier must accept exactly the
ones the oracle calls invertible, reject the others at the line of each fault with the expected
reason, and list the stored transitions. What it proves must invert numerically when compiled
(float64), with the same gradients as plain autograd."""

from __future__ import annotations

from collections import Counter

import torch
from hypothesis import given, settings

from revdsl.errors import Diagnostics, RevdslError
from revdsl.loader import load_source
from revdsl.pipeline import compile_text, elaborate
from revdsl.testing import (
    RandomSpec,
    any_specs,
    block_inverse_errors,
    gradient_errors,
    invalid_specs,
    random_inputs,
)
from revdsl.verify import verify

STATS: Counter[str] = Counter()


def _errors(spec: RandomSpec) -> tuple[bool, list[RevdslError], object]:
    try:
        report = verify(elaborate(spec.text, "random.rev"))
    except RevdslError as exc:  # some faults are caught while elaborating (a scale updated twice)
        return False, list(exc) if isinstance(exc, Diagnostics) else [exc], None
    return report.ok, list(report.errors), report


@settings(max_examples=300)
@given(any_specs())
def test_verifier_agrees_with_oracle_and_numerics(spec: RandomSpec) -> None:
    STATS["examples"] += 1
    ok, errors, report = _errors(spec)
    rendered = [e.render() for e in errors]
    assert ok == spec.valid, (spec.text, spec.expected, rendered)
    for line, phrase in spec.reasons:
        assert any(e.span is not None and e.span.line == line and phrase in e.message
                   for e in errors), (spec.text, line, phrase, rendered)
    if not ok:
        STATS[f"refuted {spec.family}"] += 1
        return
    STATS[f"proved {spec.family}"] += 1
    transitions = [b for b in report.boundaries if b.kind == "transition"]  # type: ignore[attr-defined]
    assert len(transitions) == spec.transitions, spec.text
    compiled = compile_text(spec.text, "random.rev")
    module = load_source(compiled.source)
    torch.manual_seed(0)
    model = module.create_model().double()
    errs = block_inverse_errors(model, compiled.program)
    assert max(errs) < 1e-9, (spec.text, errs)
    g = gradient_errors(model, random_inputs(compiled.program, batch=3),
                        program=compiled.program)
    assert g["worst"] < 1e-9, (spec.text, g)


@settings(max_examples=40)
@given(invalid_specs())
def test_invalid_strategy_gives_reasons(spec: RandomSpec) -> None:
    assert not spec.valid and spec.reasons and len(spec.reasons) == len(spec.expected)
    ok, errors, _ = _errors(spec)
    assert not ok and errors


def test_property_run_saw_every_outcome() -> None:
    # runs after the property above (file order): every family, both outcomes
    assert STATS["examples"] >= 300
    for family in ("coupling", "silo", "transition"):
        assert STATS[f"proved {family}"] >= 10, STATS
        assert STATS[f"refuted {family}"] >= 5, STATS
    print(f"\nproperty run: {dict(STATS)}")
