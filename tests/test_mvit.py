"""Rev-MViT: the official Rev-MViT-B size and cost, gradients equal to plain autograd on a small
config (drop-path on), transitions stored and recomputed, memory flat inside a stage, and the
headline use `revdsl compile specs/rev_mvit.rev -o model.py` on a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from revdsl.measure import saved_bytes
from revdsl.pipeline import compile_text
from revdsl.stats import stats
from revdsl.testing import gradient_errors
from tests.conftest import ROOT, SPECS, load_spec

SMALL = dict(image=32, dim=8, kv_stride=2, transitions=[1, 3])


def _report(**overrides: object):  # type: ignore[no-untyped-def]
    return compile_text((SPECS / "rev_mvit.rev").read_text(), "rev_mvit.rev", overrides)


def test_official_size_and_cost() -> None:
    st = stats(_report().report)
    assert 39_000_000 <= st.params <= 40_000_000 and st.params == 39_689_320
    assert 8.6e9 <= st.macs <= 8.7e9, st.macs
    mod = load_spec("rev_mvit.rev")
    with torch.device("meta"):
        model = mod.create_model()
    assert sum(p.numel() for p in model.parameters()) == st.params


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, **kwargs):  # type: ignore[no-untyped-def]
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def test_mac_rules_match_torch_counter() -> None:
    compiled = _report(depth=6, **SMALL)
    mod = load_spec("rev_mvit.rev", depth=6, **SMALL)
    model = mod.create_model().eval()
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping={op: _sdpa_cpu}) as fc:
        model(torch.randn(1, 3, 32, 32))
    assert stats(compiled.report).macs == fc.get_total_flops() // 2


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("depth", [4, 8])
def test_gradients_equal_plain_autograd(dtype: torch.dtype, tol: float, depth: int) -> None:
    mod = load_spec("rev_mvit.rev", depth=depth, **SMALL)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5, drop_path_rate=0.3).to(dtype)
    errs = gradient_errors(model, [torch.randn(3, 3, 32, 32, dtype=dtype)])
    assert errs["worst"] < tol, errs


def test_mvitv2_options_and_max_residual() -> None:
    mod = load_spec("rev_mvit.rev", depth=6, rel_pos=True, residual_pooling=True,
                    residual="max", **SMALL)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5, drop_path_rate=0.3).double()
    assert hasattr(model.stage2.blocks[0].attn, "rel_pos_h")
    errs = gradient_errors(model, [torch.randn(2, 3, 32, 32, dtype=torch.float64)])
    assert errs["worst"] < 1e-10, errs


def test_verifier_reports_transitions_as_stored() -> None:
    report = _report().report
    kinds = [(b.name, b.kind) for b in report.boundaries]
    assert kinds == [("stem", "stem"), ("stage0", "segment"), ("transition0", "transition"),
                     ("stage1", "segment"), ("transition1", "transition"),
                     ("stage2", "segment"), ("transition2", "transition"),
                     ("stage3", "segment"), ("head", "head")]
    t0 = next(b for b in report.boundaries if b.name == "transition0")
    assert [s.what for s in t0.stored] == ["input of transition0"] * 2
    assert "recomputed" in t0.note


def _saved_per_sample(depth: int, transitions: list[int], reversible: bool) -> float:
    mod = load_spec("rev_mvit.rev", image=32, dim=8, kv_stride=2, depth=depth,
                    transitions=transitions)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5)
    model.reversible = reversible
    model.train()
    return saved_bytes(model, torch.randn(4, 3, 32, 32)) / 4


def test_memory_flat_inside_a_stage() -> None:
    # transitions at the same blocks; the last stage grows from 1 to 9 reversible blocks
    rev = [_saved_per_sample(d, [1, 3], True) for d in (5, 9, 13)]
    base = [_saved_per_sample(d, [1, 3], False) for d in (5, 9, 13)]
    assert rev[0] == rev[1] == rev[2], rev
    assert base[0] < base[1] < base[2]
    assert base[2] > 5 * rev[2]


def test_headline_compile_then_import(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    proc = subprocess.run([sys.executable, "-m", "revdsl", "compile", str(SPECS / "rev_mvit.rev"),
                           "-o", str(out), "--set", "image=64"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    code = (
        "import torch, model\n"
        "m = model.create_model(num_classes=10)\n"
        "x = torch.randn(2, 3, 64, 64)\n"
        "y = m(x)\n"
        "y.sum().backward()\n"
        "assert y.shape == (2, 10)\n"
        "assert all(p.grad is not None for p in m.parameters())\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
