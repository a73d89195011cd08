"""Shared test helpers: compile specs in-process (cached), hypothesis profiles, golden files."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GOLDEN = Path(__file__).resolve().parent / "golden"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

UPDATE_GOLDENS = os.environ.get("REVDSL_UPDATE_GOLDENS") == "1"


@functools.cache
def _load(spec: str, items: tuple[tuple[str, Any], ...]):  # type: ignore[no-untyped-def]
    import revdsl

    return revdsl.load(str(SPECS / spec),
                       **{k: list(v) if isinstance(v, tuple) else v for k, v in items})


def load_spec(spec: str, **overrides: Any):  # type: ignore[no-untyped-def]
    """The generated module of specs/<spec> with `--set`-style overrides (cached)."""
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                          for k, v in overrides.items()))
    return _load(spec, frozen)


def golden(path: Path, text: str) -> None:
    """Compare `text` with a golden file byte for byte (REVDSL_UPDATE_GOLDENS=1 rewrites it)."""
    if UPDATE_GOLDENS or not path.exists():
        if not UPDATE_GOLDENS:
            pytest.fail(f"golden file {path} is missing; run with REVDSL_UPDATE_GOLDENS=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        import difflib

        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            str(path), "generated", n=2))
        pytest.fail(f"output differs from {path} (REVDSL_UPDATE_GOLDENS=1 to accept):\n"
                    + diff[:6000])


def rel_err(a, b, floor: float = 0.0) -> float:  # type: ignore[no-untyped-def]
    """max |a - b| / max(max |b|, floor) (see revdsl.testing.rel_err)."""
    from revdsl.testing import rel_err as _rel

    return _rel(a, b, floor)


def train_step(model, inputs, rev: bool, seed: int = 1234, **options: Any):  # type: ignore[no-untyped-def]
    """One forward+backward with a fixed seed; returns (output, param grads, input grads)."""
    import torch

    model.reversible = rev
    model.train()
    model.zero_grad(set_to_none=True)
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    torch.manual_seed(seed)
    out = model(*inputs, **options)
    loss = out.float().square().mean() if isinstance(out, torch.Tensor) else sum(
        o.float().square().mean() for o in out)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return out.detach().clone(), grads, [x.grad.detach().clone() for x in inputs
                                         if x.grad is not None]


def grad_errors(model, inputs, **options: Any) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Relative errors of the reversible backward against plain autograd (same seed)."""
    out_r, g_r, x_r = train_step(model, inputs, True, **options)
    out_b, g_b, x_b = train_step(model, inputs, False, **options)
    assert set(g_r) == set(g_b), set(g_r) ^ set(g_b)
    errs = {"output": rel_err(out_r, out_b)}
    from revdsl.testing import grad_floor

    floor = grad_floor(g_b)
    errs["params"] = max(rel_err(g_r[n], g_b[n], floor) for n in g_b)
    errs["input"] = max((rel_err(a, b) for a, b in zip(x_r, x_b)), default=0.0)
    errs["worst"] = max(errs.values())
    return errs
