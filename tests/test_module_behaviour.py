"""Generated modules behave like ordinary nn.Modules, or refuse clearly: never a wrong gradient.

Mode switches between forward and backward, hooks, double backward, vanishing scales, batch 0,
pickling across processes, the reconstruction guard, and `revdsl test`'s handling of overflow and
of gradients that are zero in exact arithmetic. Reversible results are compared with plain
autograd on the same model (the reference evaluator's comparisons are in test_reference.py)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import revdsl
from revdsl.cli import main
from tests.conftest import ROOT, SPECS, load_spec

VIT = dict(depth=3, dim=32, heads=2, image=32, patch=8)


def vit(**over: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_spec("rev_vit.rev", **VIT).create_model(**over).double()


def grads_after(model: torch.nn.Module, x: torch.Tensor, reversible: bool, between: Any = None,
                seed: int = 3) -> dict[str, torch.Tensor]:
    model.reversible = reversible
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(x).square().mean()
    if between is not None:
        between(model)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    scale = max(v.abs().max().item() for v in b.values())
    return max((a[k] - b[k]).abs().max().item() for k in a) / scale


X = torch.randn(2, 3, 32, 32, dtype=torch.float64)

MLP = """model Mlp2
input x: [B, 4, 8]
reversible r {
    streams a, b = dup(x)
    a += mlp(layernorm(b), ratio=2)
    b += mlp(layernorm(a), ratio=2)
}
y = concat(a, b, dim=-1)
output y
"""


# ---- 1: double backward ------------------------------------------------------------------------


def test_double_backward_is_refused_in_reversible_mode_and_works_in_plain() -> None:
    torch.manual_seed(0)
    model = revdsl.load(MLP).create_model().double()  # (torch's CPU attention has no 2nd order)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    model.reversible = True
    loss = model(x).square().mean()
    with pytest.raises(RuntimeError, match=r"model.reversible = False"):
        torch.autograd.grad(loss, params, create_graph=True)
    model.reversible = False
    loss = model(x).square().mean()
    g = torch.autograd.grad(loss, params, create_graph=True)
    sum(x.square().sum() for x in g).backward()
    assert params[1].grad is not None and torch.isfinite(params[1].grad).all()


# ---- 2: mode switches between forward and backward -----------------------------------------


@pytest.mark.parametrize("switch", ["eval", "train"])
def test_mode_switch_between_forward_and_backward(switch: str) -> None:
    model = vit(drop_path_rate=0.5)

    def between(m: torch.nn.Module) -> None:
        getattr(m, switch)()

    rev = grads_after(model, X, True, between)
    plain = grads_after(model, X, False, between)
    assert worst(rev, plain) < 1e-10


def test_stored_block_recompute_uses_the_forward_mode() -> None:
    torch.manual_seed(0)
    model = load_spec("rev_mvit.rev", depth=3, transitions=[1], dim=16, heads=1,
                      image=32).create_model(drop_path_rate=0.5).double()
    rev = grads_after(model, X, True, lambda m: m.eval())
    plain = grads_after(model, X, False, lambda m: m.eval())
    assert worst(rev, plain) < 1e-10


# ---- 3: hooks ---------------------------------------------------------------------------------


def test_block_hooks_fire_once_in_the_forward_in_both_modes() -> None:
    for mode in (True, False):
        model = vit()
        calls: list[str] = []
        block = model.body.blocks[1]
        block.register_forward_pre_hook(lambda m, a, c=calls: c.append("pre"))
        block.register_forward_hook(lambda m, a, o, c=calls: c.append("post"))
        block.register_full_backward_hook(lambda m, gi, go, c=calls: c.append("backward"))
        model.reversible = mode
        model(X).square().mean().backward()
        assert calls == ["pre", "post", "backward"], (mode, calls)


def test_block_backward_hook_sees_and_may_change_gradients() -> None:
    seen: dict[bool, list[torch.Size]] = {}
    results = {}
    for mode in (True, False):
        model = vit()
        shapes: list[torch.Size] = []

        def hook(m: Any, gin: Any, gout: Any, shapes: list[torch.Size] = shapes) -> Any:
            shapes.extend(g.shape for g in gin)
            return tuple(g * 2 for g in gin)

        model.body.blocks[1].register_full_backward_hook(hook)
        results[mode] = grads_after(model, X, mode)
        seen[mode] = shapes
    assert seen[True] == seen[False]
    assert worst(results[True], results[False]) < 1e-10


def test_output_changing_block_hook_is_refused() -> None:
    model = vit()
    model.body.blocks[0].register_forward_hook(lambda m, a, o: tuple(t * 2 for t in o))
    model.reversible = True
    with pytest.raises(RuntimeError, match="cannot honour hooks that change"):
        model(X).sum().backward()
    model.reversible = False  # plain mode honours it, as any module does
    model(X).sum().backward()


def test_submodule_hooks_do_not_fire_again_in_the_recompute() -> None:
    counts: dict[bool, int] = {}
    grads = {}
    for mode in (True, False):
        model = vit()
        n = [0]

        def stateful(m: Any, a: Any, o: torch.Tensor, n: list[int] = n) -> None:
            n[0] += 1  # a stateful hook (e.g. an activation statistic)

        for blk in model.body.blocks:
            blk.mlp.register_forward_hook(stateful)
        grads[mode] = grads_after(model, X, mode)
        counts[mode] = n[0]
    assert counts[True] == counts[False] == 3
    assert worst(grads[True], grads[False]) < 1e-10


# ---- 4: vanishing scales ------------------------------------------------------------------------

SIGMOID = """model Sig
input x: [B, 4, 8]
reversible r {
    streams a, b = dup(x)
    a = a * sigmoid(linear(b, out=8)) + linear(b, out=8)
    b = b * sigmoid(linear(a, out=8)) + linear(a, out=8)
}
y = concat(a, b, dim=-1)
output y
"""


def test_vanishing_scale_is_an_error_naming_the_step() -> None:
    torch.manual_seed(0)
    model = revdsl.load(SIGMOID).create_model()
    x = torch.randn(2, 4, 8) * 3000
    model.reversible = False
    model(x).square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()
    model.reversible = True
    with pytest.raises(FloatingPointError, match=r"update of '[ab]'.*non-finite"):
        model(x).square().mean().backward()


# ---- 5: batch 0, pickling, export ----------------------------------------------------------------

SMALL = {
    "rev_vit.rev": (VIT, 32),
    "rev_vir.rev": (dict(depth=2, dim=32, heads=4, image=32, patch=8), 32),
    "rev_mvit.rev": (dict(depth=3, transitions=[1], dim=16, heads=1, image=32), 32),
    "rev_supervit.rev": (dict(depth=3, dim=32, heads=2, sizes=[32, 48], prune_at=[1]), 48),
    "rev_bifpn.rev": (dict(image=64, num_ext=0, reps=1), 64),
    "rev_swin.rev": (dict(image=56, embed=16, depths=[2, 2], heads=[2, 4]), 56),
    "rev_net.rev": (dict(image=16, units=[2, 2, 2], widths=[8, 8, 16, 24]), 16),
}


@pytest.mark.parametrize("spec", sorted(SMALL))
def test_batch_zero(spec: str) -> None:
    over, size = SMALL[spec]
    model = load_spec(spec, **over).create_model()
    for mode in (True, False):
        model.reversible = mode
        y = model(torch.randn(0, 3, size, size))
        assert y.shape[0] == 0
        y.sum().backward()


def test_loaded_model_pickles_across_processes(tmp_path: Path) -> None:
    mod = revdsl.load(SPECS / "rev_vit.rev", **VIT)
    model = mod.create_model().eval()
    x = torch.randn(1, 3, 32, 32)
    torch.save({"model": model, "x": x, "y": model(x)}, tmp_path / "m.pt")
    code = (f"import torch; d = torch.load({str(tmp_path / 'm.pt')!r}, weights_only=False); "
            "assert torch.allclose(d['model'](d['x']), d['y']); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ---- the reconstruction guard --------------------------------------------------------------------


def test_reconstruction_guard_measures_and_warns() -> None:
    model = vit()
    assert model.reconstruction_error() == {"body": None}
    model.set_reconstruction_guard(1e-3)
    model(X).square().mean().backward()
    err = model.reconstruction_error()["body"]
    assert err is not None and err < 1e-12
    steep = revdsl.load(Path(ROOT / "tests/data/steep.rev").read_text()).create_model()
    torch.manual_seed(0)
    for p in steep.parameters():
        torch.nn.init.normal_(p, std=1.0)
    steep.set_reconstruction_guard(1e-4)
    with pytest.warns(RuntimeWarning, match="rebuilt its inputs with relative error"):
        steep(torch.randn(2, 4, 16)).square().mean().backward()
    assert steep.reconstruction_error()["r"] > 1e-4
    steep.set_reconstruction_guard(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steep(torch.randn(2, 4, 16)).square().mean().backward()
    assert steep.reconstruction_error()["r"] is None


# ---- 6: revdsl test -----------------------------------------------------------------------------

OVERFLOW = """model Over
input x: [B, 4, 8]
reversible r {
    streams a, b = dup(x)
    repeat 6 {
        a = a * exp(linear(b, out=8)) + linear(b, out=8)
        b = b * exp(linear(a, out=8)) + linear(a, out=8)
    }
}
y = concat(a, b, dim=-1)
output y
"""


def test_revdsl_test_skips_overflow_instead_of_failing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    spec = tmp_path / "over.rev"
    spec.write_text(OVERFLOW)
    code = main(["test", str(spec), "--examples", "6", "--dtype", "float32", "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "6 examples" in out, out
    assert "where plain autograd itself overflowed" in out and "inf" not in out


def test_revdsl_test_names_the_tensor_and_replays(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    steep = str(ROOT / "tests/data/steep.rev")
    assert main(["test", steep, "--dtype", "float32", "-q"]) == 1
    out = capsys.readouterr().out
    replay = next(line for line in out.splitlines() if line.startswith("replay it:"))
    args = replay.split("revdsl ", 1)[1].split()
    assert main([*args, "-q"]) == 1
    again = capsys.readouterr().out
    assert "minimal failing example: batch=1" in again


@pytest.mark.parametrize("spec", sorted(SMALL))
def test_export_for_inference(spec: str) -> None:
    over, size = SMALL[spec]
    model = load_spec(spec, **over).create_model().eval()
    x = torch.randn(2, 3, size, size)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x), atol=1e-5)


def test_loaded_model_copies_as_usual() -> None:
    """Pickling a loaded model carries its source; copy.copy and copy.deepcopy stay ordinary
    in-process copies (an unpicklable hook does not stop them; copy.copy is shallow)."""
    import copy

    model = revdsl.load(SPECS / "rev_vit.rev", **VIT).create_model().eval()
    model.body.blocks[0].register_forward_hook(lambda m, a, o: None)
    deep = copy.deepcopy(model)
    assert deep.body is not model.body and len(deep.body.blocks[0]._forward_hooks) == 1
    assert copy.copy(model).body is model.body
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(deep(x), model(x))
