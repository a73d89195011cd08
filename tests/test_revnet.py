"""RevNet (specs/rev_net.rev) against the official code's structure (renmengye/revnet-public),
written out here independently of the spec."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import revdsl
from revdsl.pipeline import check_text
from revdsl.stats import stats
from tests.conftest import SPECS


def _official_count(units: list[int], widths: list[int], classes: int = 10) -> int:
    """Parameters as revnet_model.py builds them: init conv + BN; per unit F and G, each
    [BN] conv3x3 BN conv3x3 on half the channels (no biases; the very first F has no leading
    BN); final BN and the classifier."""
    def inner(cin: int, cout: int, bn1: bool = True) -> int:
        return (2 * cin if bn1 else 0) + 9 * cin * cout + 2 * cout + 9 * cout * cout

    total = 27 * widths[0] + 2 * widths[0]
    for s, n in enumerate(units):
        cin, c = widths[s] // 2, widths[s + 1] // 2
        total += inner(cin, c, bn1=s > 0) + inner(c, c)
        total += (n - 1) * 2 * inner(c, c)
    return total + 2 * widths[-1] + widths[-1] * classes + classes


@pytest.mark.parametrize("units, widths, paper", [
    ([3, 3, 3], [32, 32, 64, 112], 0.46e6),   # RevNet-38
    ([9, 9, 9], [32, 32, 64, 128], 1.73e6),   # RevNet-110
])
def test_parameter_counts_are_the_official_ones(units: list[int], widths: list[int],
                                                 paper: float) -> None:
    report = check_text((SPECS / "rev_net.rev").read_text(), "rev_net.rev",
                        dict(units=units, widths=widths))
    assert report.ok
    n = stats(report).params
    assert n == _official_count(units, widths)
    assert round(n / 1e4) * 1e4 == pytest.approx(paper, abs=5e3)  # the paper's rounded figure


def test_the_downsampling_unit_is_the_official_one() -> None:
    """down0: y1 = pad(avgpool(x1)) + F(x2) with F's first conv strided; y2 = pad(avgpool(x2))
    + G(y1); zero channels added on both sides."""
    model = revdsl.load(str(SPECS / "rev_net.rev"), image=16).create_model().double().eval()
    blk = model.down0
    x1, x2 = (torch.randn(2, 16, 16, 16, dtype=torch.float64) for _ in range(2))
    y1, y2 = blk(x1, x2)

    def bn_relu(x: torch.Tensor, bn: torch.nn.Module) -> torch.Tensor:
        return torch.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                       False, 0.0, 1e-3))

    def residual(x: torch.Tensor, bn1, conv1, bn2, conv2) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return conv2(bn_relu(conv1(bn_relu(x, bn1)), bn2))

    def shortcut(x: torch.Tensor) -> torch.Tensor:
        return F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, 8, 8))

    mods = dict(blk.named_children())
    bns = [m for n, m in mods.items() if "bn" in n]
    convs = [m for n, m in mods.items() if "conv" in n]
    assert convs[0].stride == (2, 2) and convs[0].bias is None
    want1 = shortcut(x1) + residual(x2, bns[0], convs[0], bns[1], convs[1])
    want2 = shortcut(x2) + residual(want1, bns[2], convs[2], bns[3], convs[3])
    assert torch.allclose(y1, want1, atol=1e-12) and torch.allclose(y2, want2, atol=1e-12)


def test_the_first_residual_function_skips_its_leading_norm() -> None:
    src = revdsl.compile_spec(str(SPECS / "rev_net.rev"))
    # the first block of the first stage: F = conv(bn-relu(conv(x2))): no BN before the conv
    first = src.split("class Block(", 1)[1].split("class ", 1)[0]
    assert "self.residual_conv1(x2)" in first, first
