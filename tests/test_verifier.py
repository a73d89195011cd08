"""The verifier: a corpus of invalid specs with golden diagnostics (every rejection reason), and
valid specs that must compile, invert numerically and match plain autograd."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from revdsl.errors import RevdslError
from revdsl.loader import load_source
from revdsl.pipeline import compile_text, elaborate
from revdsl.testing import block_inverse_errors, gradient_errors, random_inputs
from revdsl.verify import verify
from tests.conftest import golden

HERE = Path(__file__).resolve().parent / "verifier"
INVALID = sorted(p.stem for p in (HERE / "invalid").glob("*.rev"))
VALID = sorted(p.stem for p in (HERE / "valid").glob("*.rev"))


def test_corpus_sizes() -> None:
    assert len(INVALID) >= 30 and len(VALID) >= 15


def _diagnostics(name: str) -> str:
    text = (HERE / "invalid" / f"{name}.rev").read_text()
    try:
        report = verify(elaborate(text, f"invalid/{name}.rev"))
        report.raise_if_failed()
    except RevdslError as exc:
        return exc.render() + "\n"
    raise AssertionError(f"{name} was accepted")


@pytest.mark.parametrize("name", INVALID)
def test_invalid_golden(name: str) -> None:
    out = _diagnostics(name)
    assert out.startswith(f"invalid/{name}.rev:")
    golden(HERE / "invalid" / f"{name}.err", out)


def test_all_failures_are_reported_at_once() -> None:
    out = _diagnostics("several_errors")
    assert out.count(": error:") == 3 and out.rstrip().endswith("3 errors")


def test_refutations_carry_a_concrete_reason() -> None:
    text = (HERE / "invalid" / "scale_unconstrained.rev").read_text()
    report = verify(elaborate(text, "x.rev"))
    (step,) = [s for s in report.steps if not s.proved]
    assert step.verdict == "refuted" and step.proof is not None
    assert step.proof.witness == {"f": "0", "scale": "0"}


@pytest.mark.parametrize("name", VALID)
def test_valid_compiles_and_inverts(name: str) -> None:
    text = (HERE / "valid" / f"{name}.rev").read_text()
    compiled = compile_text(text, f"valid/{name}.rev")
    assert compiled.report.ok
    mod = load_source(compiled.source)
    torch.manual_seed(0)
    model = mod.create_model().double()
    errs = block_inverse_errors(model, compiled.program)
    assert errs and max(errs) < 1e-9, errs
    inputs = random_inputs(compiled.program, batch=3, sizes={"H": 8, "W": 8})
    g = gradient_errors(model, inputs)
    assert g["worst"] < 1e-9, g


def test_affine_inverse_is_the_derived_one() -> None:
    text = (HERE / "valid" / "affine_sigmoid_eps.rev").read_text()
    source = compile_text(text, "a.rev").source
    assert source is not None
    # the reconstruction comes from the proof: (y - b) / (sigmoid(s) + eps)
    assert "inverse=lambda y, a0, a1: (y - a1) / (torch.sigmoid(a0) + 0.001)" in source
