"""Token-chunked recompute (model.set_recompute_chunks): row-wise steps (each token's update
depends on that token alone) are recomputed and backpropagated in chunks of tokens in the
reversible backward. The gradients must be those of one piece and of plain autograd, with
drop-path replayed per chunk; steps that mix tokens (attention) or draw per element (dropout)
are never chunked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import load_spec

CASES = {
    "rev_vit.rev": (dict(depth=2, dim=32, heads=2, image=32, patch=8), 32),
    "rev_mvit.rev": (dict(depth=3, transitions=[1], dim=16, heads=1, image=32), 32),
    "rev_vir.rev": (dict(depth=2, dim=32, heads=4, image=32, patch=8), 32),
    "rev_swin.rev": (dict(image=56, embed=16, depths=[2, 2], heads=[2, 4]), 56),
}


def _chunked_steps(model: torch.nn.Module) -> list[str]:
    return [s.fn for m in model.modules() for s in getattr(type(m), "STEPS", ())
            if getattr(s, "chunk", None) is not None]


def _grads(model: torch.nn.Module, x: torch.Tensor, chunks: int, reversible: bool
           ) -> list[torch.Tensor]:
    model.reversible = reversible
    model.set_recompute_chunks(chunks)
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(7)  # the same drop-path draws in every run
    model(xi).square().sum().backward()
    assert xi.grad is not None
    return [xi.grad, *[p.grad if p.grad is not None else torch.zeros_like(p)
                       for p in model.parameters()]]


@pytest.mark.parametrize("spec", sorted(CASES))
def test_chunked_recompute_gives_the_same_gradients(spec: str) -> None:
    over, size = CASES[spec]
    torch.manual_seed(0)
    model = load_spec(spec, **over).create_model(num_classes=5, drop_path_rate=0.3)
    model = model.double().train()
    assert _chunked_steps(model), "no row-wise step found to chunk"
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    whole = _grads(model, x, 1, True)
    plain = _grads(model, x, 1, False)
    for chunks in (2, 3, 1000):  # uneven pieces, and more chunks than tokens (empty pieces)
        got = _grads(model, x, chunks, True)
        for a, b, c in zip(got, whole, plain, strict=True):
            assert (a - b).abs().max().item() <= 1e-12 * (1 + b.abs().max().item())
            assert (a - c).abs().max().item() <= 1e-10 * (1 + c.abs().max().item())


def test_only_row_wise_steps_are_chunked() -> None:
    vit = load_spec("rev_vit.rev", **CASES["rev_vit.rev"][0]).create_model()
    assert _chunked_steps(vit) == ["f_mlp"] * 2  # the MLP half of each block, not attention
    with_dropout = load_spec("rev_vit.rev", **CASES["rev_vit.rev"][0], dropout=0.1)
    assert _chunked_steps(with_dropout.create_model()) == []  # per-element draws


BROADCAST = """
model T
param dim = 16
input tok: [B, 8, dim]
x = linear(tok, out=dim)
reversible body {
    streams x1, x2 = dup(x)
    repeat i in range(2) {
        x1 += mlp(layernorm(x2)) * mean(x2, dim=1, keepdim=true)
        x2 += mlp(layernorm(x1))
    }
}
z = concat(x1, x2, dim=-1)
output z
"""


def test_a_step_that_reads_across_tokens_is_not_chunked(tmp_path: Path) -> None:
    """An MLP update scaled by the mean over the tokens is not row-wise (each token's update
    reads every token): it stays in one piece, the plain MLP update beside it is chunked, and
    the gradients with chunks are plain autograd's."""
    import revdsl

    spec = tmp_path / "broadcast.rev"
    spec.write_text(BROADCAST)
    torch.manual_seed(0)
    model = revdsl.load(spec).create_model().double()
    assert [s.chunk for s in type(model.body.blocks[0]).STEPS] == [None, 1]
    x = torch.randn(3, 8, 16, dtype=torch.float64)
    got = []
    for reversible, chunks in ((True, 3), (False, 1)):
        model.reversible = reversible
        model.set_recompute_chunks(chunks)
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        model(xi).square().sum().backward()
        got.append([xi.grad, *[p.grad for p in model.parameters()]])
    for a, b in zip(*got, strict=True):
        assert (a - b).abs().max().item() <= 1e-10 * (1 + b.abs().max().item())


AFFINE = """
model A
param dim = 16
input tok: [B, 8, dim]
x = linear(tok, out=dim)
reversible body {
    streams x1, x2 = dup(x)
    repeat i in range(2) {
        x1 = x1 * exp(tanh(linear(x2, out=dim))) + mlp(layernorm(x2))
        x2 += drop_path(mlp(layernorm(x1)), rate=0.3)
    }
}
z = concat(x1, x2, dim=-1)
output z
"""


def test_an_affine_row_wise_step_is_chunked_too(tmp_path: Path) -> None:
    """A non-additive update (x1 * exp(s) + t: the backward needs the update's own graph) is
    chunked as well, beside an additive one with drop-path; gradients are plain autograd's."""
    import revdsl

    spec = tmp_path / "affine.rev"
    spec.write_text(AFFINE)
    torch.manual_seed(0)
    model = revdsl.load(spec).create_model().double().train()
    steps = type(model.body.blocks[0]).STEPS
    assert [(s.chunk, s.delta is None) for s in steps] == [(1, True), (1, False)]
    x = torch.randn(3, 8, 16, dtype=torch.float64)
    got = []
    for reversible, chunks in ((True, 3), (False, 1)):
        model.reversible = reversible
        model.set_recompute_chunks(chunks)
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        torch.manual_seed(5)
        model(xi).square().sum().backward()
        got.append([xi.grad, *[p.grad for p in model.parameters()]])
    for a, b in zip(*got, strict=True):
        assert (a - b).abs().max().item() <= 1e-10 * (1 + b.abs().max().item())


def test_chunks_must_be_a_positive_integer() -> None:
    model = load_spec("rev_vit.rev", **CASES["rev_vit.rev"][0]).create_model()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunks must be a positive integer"):
            model.set_recompute_chunks(bad)
