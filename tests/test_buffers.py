"""Buffer reuse in the reversible backward (revdsl/runtime/buffers.py): a block writes rebuilt
streams into the buffers of the outputs they were rebuilt from and sums gradients in place,
when the engine alone holds those buffers, and frees an additive update's value once its
inverse has used it. These tests check that it never writes into a tensor someone else can
read (a kept segment output, a gradient a hook has seen, aliased gradients, views), that the
gradients stay plain autograd's, and that the reuse does lower the peak."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import revdsl
from revdsl.measure import peak_bytes
from tests.conftest import load_spec

VIT = dict(depth=4, dim=32, heads=2, image=32, patch=8)

# `a += b`: the gradient reaching b is a's own gradient (an alias); chunk/cat: views
ALIAS = """model T
input x: [B, 4, 8]
reversible r {
    streams a, b = dup(x)
    repeat 3 {
        a += b
        b += linear(a, out=8)
        a += mlp(layernorm(b))
    }
}
y = concat(a, b, dim=-1)
output y
"""


def _grads(model: torch.nn.Module, x: torch.Tensor, reversible: bool, **kw: Any
           ) -> list[torch.Tensor]:
    model.reversible = reversible
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    model(xi).square().sum().backward(**kw)
    assert xi.grad is not None
    return [xi.grad, *[p.grad for p in model.parameters() if p.grad is not None]]


def _same(got: list[torch.Tensor], want: list[torch.Tensor], tol: float = 1e-10) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() <= tol * (1 + b.abs().max().item())


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return load_spec("rev_vit.rev", **VIT).create_model(num_classes=5, drop_path_rate=0.2
                                                        ).double().train()


def test_a_kept_segment_output_is_not_overwritten() -> None:
    model = _vit()
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    seg = next(m for m in model.modules() if type(m).__name__ == "ReversibleSegment")
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = seg.register_forward_hook(
        lambda m, i, out: kept.extend((o, o.detach().clone()) for o in out))
    got = _grads(model, x, True)
    handle.remove()
    assert kept
    for o, before in kept:  # the user's view of the features is what the forward computed
        assert torch.equal(o, before)
    _same(got, _grads(model, x, False))


@pytest.mark.parametrize("chunks,kind", [(1, "full"), (2, "full"), (1, "pre"), (2, "pre")])
def test_gradients_a_hook_has_seen_stay_as_they_were(chunks: int, kind: str) -> None:
    model = _vit()
    model.set_recompute_chunks(chunks)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(_m: Any, gin: Any, gout: Any) -> None:
        seen.extend((g, g.clone()) for g in (*gin, *gout) if g is not None)

    def keep_pre(_m: Any, gout: Any) -> None:
        seen.extend((g, g.clone()) for g in gout if g is not None)

    blocks = [m for m in model.modules() if hasattr(type(m), "STEPS")]
    handles = [b.register_full_backward_hook(keep) if kind == "full" else
               b.register_full_backward_pre_hook(keep_pre) for b in blocks[1::2]]
    got = _grads(model, x, True)
    for h in handles:
        h.remove()
    assert len(seen) >= len(blocks)
    for g, at_hook in seen:
        assert torch.equal(g, at_hook)
    _same(got, _grads(model, x, False))


def test_aliased_and_viewed_gradients_stay_plain_autograds(tmp_path: Path) -> None:
    path = tmp_path / "alias.rev"
    path.write_text(ALIAS)
    torch.manual_seed(0)
    model = revdsl.load(path).create_model().double().train()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    _same(_grads(model, x, True), _grads(model, x, False))
    revnet = load_spec("rev_net.rev", image=16, units=[2, 2, 2], widths=[8, 8, 16, 24]
                       ).create_model(num_classes=3).double().train()  # chunk/cat, BatchNorm
    xr = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    _same(_grads(revnet, xr, True), _grads(revnet, xr, False))


def test_backward_twice_with_retain_graph_and_under_users_saved_tensor_hooks() -> None:
    model = _vit()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain = _grads(model, x, False)
    model.reversible = True
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    loss = model(xi).square().sum()
    loss.backward(retain_graph=True)
    loss.backward()  # the second pass undoes the blocks from the same (unwritten) outputs
    assert xi.grad is not None
    _same([xi.grad, *[p.grad for p in model.parameters() if p.grad is not None]],
          [2 * g for g in plain])
    with torch.autograd.graph.save_on_cpu():  # the user's hooks apply; no value is freed
        _same(_grads(model, x, True), plain)


def test_reuse_lowers_the_peak() -> None:
    """With reuse off (the runtime's ownership checks answering no), the peak of a training
    step grows by at least two stream-sized buffers: rebuilt streams and summed gradients
    then live beside the outputs and gradients the autograd engine still holds."""
    torch.manual_seed(0)
    mod = load_spec("rev_vit.rev", depth=3, dim=96, heads=2, image=64, patch=8)
    model = mod.create_model(num_classes=5).train()
    x = torch.randn(8, 3, 64, 64)
    stream = 8 * 64 * 96 * 4  # batch x tokens x width, float32
    on, _ = peak_bytes(model, x)
    saved = mod._sole, mod._alone, mod._free
    try:
        mod._sole = lambda *a: False
        mod._alone = lambda t: False
        mod._free = lambda *a: None
        off, _ = peak_bytes(model, x)
    finally:
        mod._sole, mod._alone, mod._free = saved
    assert off - on >= 2 * stream, (off, on, stream)
