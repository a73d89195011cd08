"""RevViT end to end: gradients of the reversible backward equal plain autograd, the inputs it
rebuilds equal the forward's, the timm-style interface, and the reference parameter counts."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import grad_errors, load_spec, rel_err

SMALL = dict(dim=32, heads=2, image=32, patch=8, dropout=0.1)


def _model(depth: int, dtype: torch.dtype = torch.float64):  # type: ignore[no-untyped-def]
    mod = load_spec("rev_vit.rev", depth=depth, **SMALL)
    torch.manual_seed(0)
    return mod.create_model(num_classes=7, drop_path_rate=0.3).to(dtype)


@pytest.mark.parametrize("depth", [1, 2, 8])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_gradients_equal_plain_autograd(depth: int, dtype: torch.dtype, tol: float) -> None:
    model = _model(depth, dtype)
    x = torch.randn(4, 3, 32, 32, dtype=dtype)
    errs = grad_errors(model, [x])
    assert errs["worst"] < tol, errs
    # dropout and drop-path really are active: another seed gives other gradients
    from tests.conftest import train_step

    _, g1, _ = train_step(model, [x], False, seed=1)
    _, g2, _ = train_step(model, [x], False, seed=2)
    assert max(rel_err(g1[n], g2[n]) for n in g1) > 1e-3


def test_rebuilt_block_inputs_equal_the_forward() -> None:
    model = _model(8)
    model.train()
    trace: list = []
    model.body.trace = trace
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    model(x).sum().backward()
    model.body.trace = None
    fwd = [s for kind, s in trace if kind == "forward"]
    bwd = [s for kind, s in trace if kind == "backward"][::-1]
    assert len(fwd) == len(bwd) == 8
    worst = max(rel_err(b[k], f[k]) for f, b in zip(fwd, bwd) for k in f)
    assert worst < 1e-12, worst


def test_inverse_undoes_each_block() -> None:
    model = _model(3).eval()
    torch.manual_seed(0)
    x1 = torch.randn(2, 16, 32, dtype=torch.float64)
    x2 = torch.randn(2, 16, 32, dtype=torch.float64)
    with torch.no_grad():
        for block in model.body.blocks:
            y1, y2 = block(x1, x2)
            r1, r2 = block.inverse(y1, y2)
            assert rel_err(r1, x1) < 1e-13 and rel_err(r2, x2) < 1e-13


def test_global_rng_stream_is_undisturbed() -> None:
    model = _model(2, torch.float32)
    x = torch.randn(2, 3, 32, 32)
    after = []
    for rev in (True, False):
        model.reversible = rev
        torch.manual_seed(9)
        model(x).sum().backward()
        after.append(torch.rand(4))
    assert torch.equal(after[0], after[1])


def test_timm_interface() -> None:
    mod = load_spec("rev_vit.rev", depth=2, **SMALL)
    model = mod.create_model(num_classes=5)
    assert model.num_classes == 5 and model.reversible is True
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 16, 64)  # tokens of both streams, concatenated and normed
    assert model.forward_head(feats, pre_logits=True).shape == (2, 64)
    assert model.forward_head(feats).shape == (2, 5)
    assert model(x).shape == (2, 5)
    rates = [b.drop_path1.rate for b in mod.create_model(drop_path_rate=0.2).body.blocks]
    assert rates == pytest.approx([0.0, 0.2])
    with pytest.raises(TypeError, match="compile-time parameter"):
        mod.create_model(depth=4)


def test_no_grad_inference_matches() -> None:
    model = _model(2, torch.float32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model(x)
    model.reversible = False
    with torch.no_grad():
        b = model(x)
    assert torch.equal(a, b)


def _count(**overrides: object) -> int:
    mod = load_spec("rev_vit.rev", **overrides)
    with torch.device("meta"):
        model = mod.create_model()
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_revvit_s() -> None:
    n = _count()
    assert n == pytest.approx(22_433_000, rel=0.005), n


def test_parameter_count_revvit_b() -> None:
    n = _count(dim=768, heads=12)
    assert n == pytest.approx(87_340_000, rel=0.005), n
