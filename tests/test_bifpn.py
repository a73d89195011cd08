"""RevBiFPN: the reference sizes S0-S6, MACs, gradients equal to plain autograd with stochastic
depth on, BatchNorm statistics updated once per step, and memory that does not grow with silos."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from revdsl.measure import saved_bytes
from revdsl.pipeline import compile_text
from revdsl.stats import stats
from revdsl.testing import block_inverse_errors, gradient_errors
from tests.conftest import SPECS, load_spec

SIZES = {  # name: (--set values, reference parameter count from the authors' code and README)
    "S0": ({}, 3_419_196),
    "S1": ({"width": 4 / 3, "image": 256}, 5_110_000),
    "S2": ({"width": 2.0, "image": 256}, 10_600_000),
    "S3": ({"width": 8 / 3, "image": 288, "num_ext": 3}, 19_600_000),
    "S4": ({"width": 4.0, "image": 320, "num_ext": 4}, 48_700_000),
    "S5": ({"width": 16 / 3, "image": 352, "num_ext": 4}, 82_000_000),
    "S6": ({"width": 20 / 3, "image": 352, "num_ext": 5}, 142_307_972),
}


def _report(**overrides: object):  # type: ignore[no-untyped-def]
    return compile_text((SPECS / "rev_bifpn.rev").read_text(), "rev_bifpn.rev", overrides)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_reference_sizes(size: str) -> None:
    overrides, params = SIZES[size]
    st = stats(_report(**overrides).report)
    if params % 1000:
        assert st.params == params  # exact counts printed by the authors (thop)
    else:
        assert st.params == pytest.approx(params, rel=0.005)


def test_s0_macs_and_module_count() -> None:
    st = stats(_report().report)
    assert st.params == 3_419_196
    mod = load_spec("rev_bifpn.rev", image=64)
    model = mod.create_model().eval()
    assert sum(p.numel() for p in model.parameters()) == 3_419_196
    macs = 0

    def count(m: nn.Module, _i: object, o: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += o.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += o.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.register_forward_hook(count)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert stats(_report(image=64).report).macs == macs
    # at 224 px: 0.269 GMACs of convolutions and linear layers (thop's 0.308 adds BatchNorm
    # and bilinear upsampling)
    assert 0.26e9 < st.macs < 0.28e9


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_gradients_with_stochastic_depth(dtype: torch.dtype, tol: float) -> None:
    mod = load_spec("rev_bifpn.rev", image=64, stochastic_depth=0.2)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5).to(dtype)
    errs = gradient_errors(model, [torch.randn(3, 3, 64, 64, dtype=dtype)])
    assert errs["worst"] < tol, errs


def test_silo_blocks_invert() -> None:
    compiled = _report(image=64)
    mod = load_spec("rev_bifpn.rev", image=64)
    model = mod.create_model().double()
    errs = block_inverse_errors(model, compiled.program)
    assert len(errs) == 15 and max(errs) < 1e-12


def test_batchnorm_statistics_updated_once() -> None:
    mod = load_spec("rev_bifpn.rev", image=64)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5)
    rev, base = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(3, 3, 64, 64)
    for m, reversible in ((rev, True), (base, False)):
        m.reversible = reversible
        m.train()
        torch.manual_seed(1)
        m(x).sum().backward()
    a, b = rev.state_dict(), base.state_dict()
    buffers = [k for k in a if "running" in k or "num_batches" in k]
    assert len(buffers) > 700
    for k in buffers:
        assert torch.equal(a[k], b[k]), k
    assert all(int(a[k]) == 1 for k in buffers if "num_batches" in k)


def _saved(num_ext: int, reversible: bool) -> int:
    mod = load_spec("rev_bifpn.rev", image=64, num_ext=num_ext)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5)
    model.reversible = reversible
    model.train()
    return saved_bytes(model, torch.randn(2, 3, 64, 64))


def test_memory_does_not_grow_with_silos() -> None:
    rev = [_saved(n, True) for n in (1, 2, 4)]
    base = [_saved(n, False) for n in (1, 2, 4)]
    assert rev[0] == rev[1] == rev[2], rev
    assert base[0] < base[1] < base[2]
    assert base[2] > 20 * rev[2]


def test_stem_orders_channels_as_the_reference() -> None:
    """The reference stem (RevSpatialDownsample) puts pixel (dy, dx) of colour c in channel
    (dy*4 + dx)*3 + c; pixel_unshuffle's order (c*16 + dy*4 + dx) would feed each half of the
    first RevNet split different pixels (no weight permutation can fix that)."""
    import torch

    mod = load_spec("rev_bifpn.rev", image=64, num_ext=0, reps=1)
    x = torch.randn(2, 3, 64, 64)
    s0 = mod.space_to_depth(x, 4, pixel_major=True)
    for c in range(3):
        for dy in range(4):
            for dx in range(4):
                assert torch.equal(s0[:, (dy * 4 + dx) * 3 + c], x[:, c, dy::4, dx::4])
    from revdsl.runtime.layers import depth_to_space

    assert torch.equal(depth_to_space(s0, 4, pixel_major=True), x)
    assert "space_to_depth(x, 4, pixel_major=True)" in mod.__revdsl_source__
