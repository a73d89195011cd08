"""The memory plan: which blocks of a reversible segment keep their activations (no recompute)
and which are rebuilt in the backward. Same weights, same gradients as plain autograd; what is
kept for the backward follows the plan and stays within the budget the planner was given."""

from __future__ import annotations

import sys

import pytest
import torch

from revdsl.measure import saved_bytes
from revdsl.testing import gradient_errors, random_inputs
from tests.conftest import SPECS, load_spec

VIT = dict(depth=4, dim=32, heads=2, image=32, patch=8)


def _model() -> torch.nn.Module:
    mod = load_spec("rev_vit.rev", **VIT)
    torch.manual_seed(0)
    return mod.create_model(num_classes=10, drop_path_rate=0.1)


@pytest.mark.parametrize("plan", [[False, True, True, False], [True, False, False, True],
                                  [False] * 4, [True] * 4])
def test_any_plan_gives_plain_autograds_gradients(plan: list[bool]) -> None:
    from revdsl.pipeline import compile_text

    program = compile_text((SPECS / "rev_vit.rev").read_text(), "rev_vit.rev", VIT).program
    model = _model().double()
    model.set_plan({"body": plan})
    g = gradient_errors(model, random_inputs(program, batch=3))
    assert g["worst"] < 1e-9, (plan, g)


def test_the_plan_spends_the_budget_on_kept_blocks() -> None:
    model = _model().train()
    x = torch.randn(4, 3, 32, 32)
    generated = sys.modules[type(model).__module__]  # the predictions, module constants
    costs = generated.BLOCK_COSTS["body"]
    full_rev = generated.KEPT_BYTES * 4
    kept = []
    for k in range(len(costs) + 1):
        budget = full_rev + sum(b for b, _ in costs[:k]) * 4 + 1
        plan = model.plan(batch=4, budget=budget)
        assert sum(not c for c in plan["body"]) == k, (k, plan)  # equal blocks: one per step
        model.set_plan(plan)
        kept.append(saved_bytes(model, x))
        assert kept[-1] <= budget * 1.1, (k, kept[-1], budget)  # (the prediction is within 10%)
    assert kept == sorted(kept) and kept[0] < kept[-1]
    model.set_plan(None)
    assert saved_bytes(model, x) == kept[0]
    with pytest.raises(ValueError, match="has 2 entries"):
        model.set_plan({"body": [True, False]})
    with pytest.raises(KeyError, match="no reversible segment or stored block 'trunk'"):
        model.set_plan({"trunk": [True] * 4})


def test_revdsl_plan_prints_the_plan_the_model_makes(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from revdsl.cli import main

    model = _model()
    generated = sys.modules[type(model).__module__]
    budget = generated.KEPT_BYTES * 4 + 2 * max(b for b, _ in generated.BLOCK_COSTS["body"]) * 4 + 1
    sets = [x for k, v in VIT.items() for x in ("--set", f"{k}={v}")]
    assert main(["plan", str(SPECS / "rev_vit.rev"), *sets, "--batch", "4",
                 "--budget", str(budget), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"] == model.plan(batch=4, budget=budget)
    assert sum(not c for c in out["plan"]["body"]) == 2
    assert main(["plan", str(SPECS / "rev_vit.rev"), "--budget", "lots"]) == 1
    assert "not a size" in capsys.readouterr().err


def test_a_stored_block_can_keep_its_activations() -> None:
    """Rev-MViT's stage transition (a stored block, recomputed from its inputs by default) is a
    plan entry of its own: kept, it stores its activations (more bytes) and is not recomputed;
    the gradients stay plain autograd's either way."""
    from revdsl.pipeline import compile_text

    over = dict(depth=3, transitions=[1], dim=16, heads=1, image=32)
    program = compile_text((SPECS / "rev_mvit.rev").read_text(), "rev_mvit.rev", over).program
    mod = load_spec("rev_mvit.rev", **over)
    assert set(mod.BLOCK_COSTS) == {"stage0", "transition", "stage1"}
    assert len(mod.BLOCK_COSTS["transition"]) == 1
    torch.manual_seed(0)
    model = mod.create_model(num_classes=10).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    saved = {}
    for keep in (False, True):
        model.set_plan({"transition": [not keep]})
        saved[keep] = saved_bytes(model, x)
        g = gradient_errors(model, random_inputs(program, batch=2))
        assert g["worst"] < 1e-9, (keep, g)
    assert saved[True] > saved[False]
    budget = (mod.KEPT_BYTES + mod.BLOCK_COSTS["transition"][0][0]) * 2 + 1
    plan = model.plan(batch=2, budget=budget)
    assert plan["transition"] in ([False], [True])
    with pytest.raises(ValueError, match="takes one"):
        model.set_plan({"transition": [True, False]})
