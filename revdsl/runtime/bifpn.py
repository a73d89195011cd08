"""Runtime layers for RevBiFPN (copied into generated modules as needed).

MBConv (MobileNet v2/v3 inverted bottleneck) as RevBiFPN uses it: an optional 1x1 expansion,
a k x k depthwise convolution with stride, squeeze-excite, a 1x1 projection with BatchNorm and no
activation, stochastic depth per sample, and no identity skip (a reversible coupling supplies it).
Convolutions under a BatchNorm have no bias; BatchNorm uses eps 1e-3 (the reference's), and is the
recompute-aware BatchNorm2d, so running statistics are updated once per training step.
"""

from __future__ import annotations

import torch
from torch import nn

from revdsl.runtime.layers import BatchNorm2d, DropPath


class ConvBNAct(nn.Module):
    """Convolution (no bias) -> BatchNorm -> Hardswish (or no activation)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True, zero_init: bool = False,
                 eps: float = 1e-3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups,
                              bias=False)
        self.norm = BatchNorm2d(out_ch, eps=eps)
        if zero_init:
            nn.init.zeros_(self.norm.weight)
        self.act = nn.Hardswish() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(conv(hardswish(conv(mean over space of x))))."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.Hardswish()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted bottleneck: [1x1 expand] -> depthwise k x k (stride) -> [SE] -> 1x1 project."""

    def __init__(self, in_ch: int, out: int, kernel: int = 3, stride: int = 1,
                 expand: float = 1.0, se: float = 0.0, drop: float = 0.0,
                 zero_init: bool = False) -> None:
        super().__init__()
        mid = int(in_ch * expand)
        self.expand = ConvBNAct(in_ch, mid) if expand != 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.se = SqueezeExcite(mid, max(1, int(in_ch * se))) if 0 < se <= 1 else nn.Identity()
        self.project = ConvBNAct(mid, out, act=False, zero_init=zero_init)
        self.drop_path = DropPath(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.project(self.se(self.dw(self.expand(x)))))


def replicate_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Copies of x's channels, concatenated and cut to `channels` (RevBiFPN's stem input)."""
    reps = -(-channels // x.shape[1])
    return torch.cat([x] * reps, dim=1)[:, :channels]
