"""User modules for the extern tests: ordinary nn.Modules that revdsl knows only by import path."""

from __future__ import annotations

import torch
from torch import nn


class GatedMlp(nn.Module):
    """A gated MLP over the last dimension (a user's own layer, made reversible by a spec)."""

    def __init__(self, dim: int, hidden: int, gate_bias: bool = True) -> None:
        super().__init__()
        self.value = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden, bias=gate_bias)
        self.out = nn.Linear(hidden, dim)
        nn.init.normal_(self.out.weight, std=0.3)  # its own initialisation, kept by revdsl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.value(x) * torch.sigmoid(self.gate(x)))


class SplitHeads(nn.Module):
    """Two outputs of different widths from one input."""

    def __init__(self, dim: int, small: int) -> None:
        super().__init__()
        self.big = nn.Linear(dim, dim)
        self.small = nn.Linear(dim, small)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.big(x), self.small(x)
