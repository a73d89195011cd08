"""Memory: with the reversible backward, what is kept for backward and the peak of a training
step do not grow with depth; with plain autograd both grow linearly (two measures, see
revdsl/measure.py)."""

from __future__ import annotations

import itertools

import torch

from revdsl.measure import measure
from tests.conftest import load_spec

DEPTHS = (2, 4, 8, 16)


def _measure(depth: int, reversible: bool):  # type: ignore[no-untyped-def]
    mod = load_spec("rev_vit.rev", dim=64, heads=2, image=64, patch=8, depth=depth)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=10, drop_path_rate=0.1)
    model.reversible = reversible
    x = torch.randn(16, 3, 64, 64)
    return measure(model, x)


def test_reversible_memory_is_flat_and_baseline_linear() -> None:
    rev = {d: _measure(d, True) for d in DEPTHS}
    base = {d: _measure(d, False) for d in DEPTHS}
    for d in DEPTHS:
        assert abs(rev[d].saved / rev[2].saved - 1) < 0.05, (d, rev[d], rev[2])
        assert abs(rev[d].peak / rev[2].peak - 1) < 0.05, (d, rev[d], rev[2])
    # plain autograd: every block adds the same amount
    for field in ("saved", "peak"):
        per_block = [(getattr(base[b], field) - getattr(base[a], field)) / (b - a)
                     for a, b in itertools.pairwise(DEPTHS)]
        assert min(per_block) > 0
        assert max(per_block) / min(per_block) < 1.1, (field, per_block)
    # and at depth 16 the reversible step needs a fraction of the baseline
    assert rev[16].saved * 10 < base[16].saved
    assert rev[16].peak * 4 < base[16].peak
