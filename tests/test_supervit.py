"""SuperViT: sizes and keep rates chosen per call, the paper's MACs, the DeiT-S size, pruning as
stored boundaries (never inside a coupling), gradients equal to plain autograd for every
(size, keep rate), and the training recipe."""

from __future__ import annotations

import random
import re

import pytest
import sympy
import torch

from revdsl.pipeline import compile_text
from revdsl.recipes import supervit_step
from revdsl.stats import stats
from revdsl.testing import gradient_errors
from tests.conftest import SPECS, load_spec

SMALL = dict(dim=32, heads=2, depth=6, prune_at=[2, 4], sizes=[16, 24, 32], patch=8)


def _compiled():  # type: ignore[no-untyped-def]
    return compile_text((SPECS / "rev_supervit.rev").read_text(), "rev_supervit.rev")


# the paper's table (GMACs), rows 128/160/192/224 px, columns keep rate 0.5/0.7/1
PAPER = {128: (0.74, 0.97, 1.44), 160: (1.16, 1.51, 2.27), 192: (1.67, 2.19, 3.32),
         224: (2.30, 3.01, 4.60)}


def test_macs_follow_the_paper_table() -> None:
    report = _compiled().report
    for size, row in PAPER.items():
        for rate, expected in zip((0.5, 0.7, 1.0), row, strict=True):
            got = stats(report, {"S": size, "keep_rate": rate}).macs / 1e9
            assert got == pytest.approx(expected, abs=0.006), (size, rate, got)


def test_size() -> None:
    st = stats(_compiled().report, {"S": 224})
    # SuperViT on DeiT-S is 22,170,088 (22.17M: DeiT-S plus three more position tables); the
    # two-stream head (LN(2C), Linear(2C -> 1000)) adds 384,768
    assert st.params == 22_170_088 + 384_768
    assert st.params - 384_768 == pytest.approx(22_170_000, rel=0.01)


def test_pruning_points_are_stored_boundaries() -> None:
    report = _compiled().report
    prunes = [b for b in report.boundaries if b.name.startswith("prune")]
    assert [b.name for b in prunes] == ["prune0", "prune1", "prune2"]
    assert all(b.kind == "transition" and "recomputed" in b.note for b in prunes)
    # what the later ones keep depends on the keep rate: fewer tokens reach them
    later = prunes[1].bytes_per_sample
    symbols = {s.name: s for s in later.free_symbols}
    assert set(symbols) == {"keep_rate", "S"}
    at = {r: later.subs({symbols["keep_rate"]: sympy.nsimplify(r), symbols["S"]: 224})
          for r in (0.5, 1.0)}
    assert at[0.5] < at[1.0]


@pytest.mark.parametrize("size", [16, 24, 32])
@pytest.mark.parametrize("rate", [0.5, 0.7, 1.0])
def test_gradients_for_every_size_and_rate(size: int, rate: float) -> None:
    mod = load_spec("rev_supervit.rev", **SMALL)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5, drop_path_rate=0.3).double()
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    errs = gradient_errors(model, [x], keep_rate=rate)
    assert errs["worst"] < 1e-10, errs
    model.float()
    errs = gradient_errors(model, [x.float()], keep_rate=rate)
    assert errs["worst"] < 1e-4, errs


def test_tokens_fall_with_the_keep_rate() -> None:
    mod = load_spec("rev_supervit.rev", **SMALL)
    model = mod.create_model(num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        full = model.forward_features(x, keep_rate=1.0)
        half = model.forward_features(x, keep_rate=0.5)
    assert full.shape[1] == 17
    # 17 -> 1 + ceil(0.5 * 17) = 10 -> 1 + ceil(0.5 * 10) = 6
    assert half.shape[1] == 6


def test_unsupported_size_and_rate() -> None:
    model = load_spec("rev_supervit.rev", **SMALL).create_model()
    with pytest.raises(ValueError, match="S must be one of 16, 24, 32"):
        model(torch.randn(1, 3, 40, 40))
    message = "keep_rate must be one of 0.5, 0.7, 1.0; got 0.6"
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.randn(1, 3, 32, 32), keep_rate=0.6)


def test_training_recipe_accumulates_four_subnetworks() -> None:
    mod = load_spec("rev_supervit.rev", **SMALL)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5)
    images = torch.randn(4, 3, 32, 32)
    targets = torch.randint(0, 5, (4,))
    torch.manual_seed(1)
    losses = supervit_step(model, images, targets, sizes=[16, 24, 32], rng=random.Random(0))
    assert set(losses) == {"full", "full_pruned", "small", "small_pruned"}
    assert all(v == v and v >= 0 for v in losses.values())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # every size's position table that was used got a gradient, and so did the blocks
    assert "pos_embed.tables.2" in grads and any(".blocks." in n for n in grads)
    # the same step in plain autograd gives the same gradients
    model.zero_grad(set_to_none=True)
    model.reversible = False
    torch.manual_seed(1)
    supervit_step(model, images, targets, sizes=[16, 24, 32], rng=random.Random(0))
    for n, g in grads.items():
        assert torch.allclose(model.get_parameter(n).grad, g, rtol=1e-4, atol=1e-6), n
