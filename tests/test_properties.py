"""Property tests of the verifier against an independent oracle and against numerics.

Random programs of coupling steps (revdsl.testing.coupling_specs): the verifier must accept
exactly the ones the oracle calls invertible; what it proves must invert numerically when compiled
(float64) and give the same gradients as plain autograd; what it refutes must come with a concrete
reason (a self-read, a stale read, or a witness)."""

from __future__ import annotations

import torch
from hypothesis import given, settings

from revdsl.loader import load_source
from revdsl.pipeline import compile_text, elaborate
from revdsl.testing import (
    RandomSpec,
    block_inverse_errors,
    coupling_specs,
    gradient_errors,
    random_inputs,
)
from revdsl.verify import verify

STATS = {"examples": 0, "proved": 0, "refuted": 0}


@settings(max_examples=120)
@given(coupling_specs())
def test_verifier_agrees_with_oracle_and_numerics(spec: RandomSpec) -> None:
    STATS["examples"] += 1
    program = elaborate(spec.text, "random.rev")
    report = verify(program)
    assert report.ok == spec.valid, (spec.text, spec.expected,
                                     [e.render() for e in report.errors])
    if not report.ok:
        STATS["refuted"] += 1
        for step in report.steps:
            if step.proved:
                continue
            assert step.verdict != "unknown", step.reason
            reason_given = any(w in step.reason for w in ("reads", "shape")) or (
                step.proof is not None and step.proof.witness)
            assert reason_given, step.reason
        return
    STATS["proved"] += 1
    compiled = compile_text(spec.text, "random.rev")
    module = load_source(compiled.source)
    torch.manual_seed(0)
    model = module.create_model().double()
    errs = block_inverse_errors(model, compiled.program)
    assert max(errs) < 1e-9, (spec.text, errs)
    g = gradient_errors(model, random_inputs(compiled.program, batch=3))
    assert g["worst"] < 1e-9, (spec.text, g)


def test_property_run_saw_both_outcomes() -> None:
    # runs after the property above (file order): both kinds of program were exercised
    assert STATS["examples"] >= 100
    assert STATS["proved"] >= 20 and STATS["refuted"] >= 20, STATS
    print(f"\nproperty run: {STATS}")
